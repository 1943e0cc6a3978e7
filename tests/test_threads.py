"""Threads that fit the machine: affinity, cgroup quota, SLURM, --threads."""

from __future__ import annotations

import os
import subprocess
import time
import sys

import pytest
import torch

from bmz_cosdd import threads
from bmz_cosdd.errors import UserError


def test_cgroup_v2_quota_of_the_process_own_group(tmp_path):
    (tmp_path / "proc").write_text("0::/job/42\n")
    (tmp_path / "job" / "42").mkdir(parents=True)
    (tmp_path / "job" / "42" / "cpu.max").write_text("200000 100000\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, tmp_path / "proc") == 2.0


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, tmp_path / "none") == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(tmp_path, tmp_path / "none") is None
    assert threads.cgroup_cpu_quota(tmp_path / "empty", tmp_path / "none") is None


def test_the_smallest_limit_wins(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")
    count, why = threads.usable_cpus()
    assert count == 1 and "quota of 1.5" in why
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert threads.usable_cpus() == (1, "SLURM_CPUS_PER_TASK=1")


def test_configure_threads_order(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == "1 thread (--threads)" and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.configure_threads() == "2 threads (OMP_NUM_THREADS)"
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(threads, "usable_cpus", lambda: (3, "a cgroup CPU quota of 3"))
        monkeypatch.setattr(threads, "busy_cpus", lambda cpus: 0.0)
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
        assert threads.configure_threads() == "3 threads (a cgroup CPU quota of 3)"
        with pytest.raises(UserError, match="--threads must be at least 1"):
            threads.configure_threads(0)
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_cli_threads_option_and_sleeping_openmp(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    code = ("import sys, os; from bmz_cosdd.cli import main; import torch\n"
            "sys.argv = ['bmz-cosdd']\n"
            "try:\n    main(['inspect', '--help', '--threads', '1'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OMP_WAIT_POLICY'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("PASSIVE")
    bad = subprocess.run([sys.executable, "-m", "bmz_cosdd", "inspect", "x.tif", "--threads", "0"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --threads must be at least 1, got 0", bad.stderr


STAT = """cpu  300 0 100 1500 0 0 0 0 0 0
cpu0 100 0 50 850 0 0 0 0 0 0
cpu1 200 0 50 650 0 0 0 0 0 0
intr 12345
"""


def test_cpu_times_and_the_busy_cpus_of_others(tmp_path):
    (tmp_path / "stat").write_text(STAT)
    times = threads._cpu_times(tmp_path / "stat")
    assert times == {0: (150, 1000), 1: (250, 900)}
    # 100 ticks (1 s) later: cpu0 busy 90 of 100 ticks, cpu1 10 of 100; this process used 0.5 CPU-s meanwhile.
    later = {0: (240, 1100), 1: (260, 1000)}
    assert threads._others_busy((0.0, 2.0, times), (1.0, 2.5, later), {0, 1}) == pytest.approx(0.5)
    assert threads._others_busy((0.0, 2.0, times), (1.0, 2.0, later), {0}) == pytest.approx(0.9)
    assert threads._others_busy((0.0, 2.0, times), (1.0, 4.0, later), {0, 1}) == 0.0  # never below 0
    assert threads._others_busy((0.0, 2.0, times), (1.0, 2.0, later), {0, 7}) is None  # a CPU the table lacks
    assert threads.busy_cpus({0}, stat=tmp_path / "missing") is None
    measured = threads.busy_cpus(os.sched_getaffinity(0))
    assert measured is not None and 0.0 <= measured <= len(os.sched_getaffinity(0))


def test_the_cpus_others_keep_busy_are_left_out(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "busy_cpus", lambda cpus: 1.2)
    assert threads.free_cpus(4, "4 CPUs") == (3, "4 CPUs, less 1.2 busy with other processes when it started")
    assert threads.free_cpus(2, "a quota of 2")[0] == 2  # a quota below the free CPUs stays
    monkeypatch.setattr(threads, "busy_cpus", lambda cpus: 3.9)
    assert threads.free_cpus(4, "4 CPUs")[0] == 1  # at least one
    monkeypatch.setattr(threads, "busy_cpus", lambda cpus: None)
    assert threads.free_cpus(4, "4 CPUs") == (4, "4 CPUs")  # no load table: the usable CPUs
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads, "usable_cpus", lambda: (4, "4 CPUs"))
        monkeypatch.setattr(threads, "busy_cpus", lambda cpus: 2.0)
        assert threads.configure_threads() == (
            "2 threads (4 CPUs, less 2.0 busy with other processes when it started)")
        assert threads.threads_in_use() == (2, "4 CPUs, less 2.0 busy with other processes when it started")
        torch.set_num_threads(3)
        assert threads.threads_in_use() == (3, "set by the caller")
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_a_job_started_beside_a_busy_process_takes_the_cpus_left(tmp_path, noisy_stack):
    """As typed, without OMP_NUM_THREADS or --threads: a CPU-bound process already runs, so the
    training's thread count leaves its CPU out and its notes say why."""
    if threads.usable_cpus()[0] < 2:
        pytest.skip("one usable CPU: nothing to leave out")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)
        done = subprocess.run([sys.executable, "-m", "bmz_cosdd", "train", "n2v", str(noisy_stack), "--axes", "SYX",
                               "--crop-size", "16", "--features", "4", "--max-steps", "1", "--out", "run"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        hog.kill()
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("threads: "))
    assert "busy with other processes when it started" in line, line
    assert line in (tmp_path / "run" / "notes.txt").read_text()
