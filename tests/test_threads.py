"""Threads that fit the machine: affinity, cgroup quota, SLURM, --threads."""

from __future__ import annotations

import os
import subprocess
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
