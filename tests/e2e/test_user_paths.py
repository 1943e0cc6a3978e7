"""The user's path as typed: `bmz-cosdd` in a shell, in the user's own folder, with relative paths, on files that move.

Every command here runs as a subprocess from a fresh working directory, as a user types it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset

# every test runs bmz-cosdd as a subprocess (a fresh interpreter per command)
pytestmark = pytest.mark.slow

TINY = ["--preset", "tiny", "--n-levels", "2", "--features", "8", "--crop-size", "32", "--batch-size", "2",
        "--direction", "x", "--quiet"]


def bmz(*args: object, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``bmz-cosdd ARGS`` as a shell would run it, in ``cwd``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bmz_cosdd", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess, words: str) -> None:
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A user's folder with ``data/noisy.tif`` (six 48 x 48 images, row-correlated noise)."""
    data = make_dataset("blobs", "row_correlated", n=6, shape=(48, 48), seed=5)
    write_tiff(tmp_path / "data" / "noisy.tif", data.noisy, "SYX")
    return tmp_path


def test_bad_values_are_one_line_and_write_nothing(folder):
    for args, words in [
        (["--lr", "nan"], "train.lr: expected a finite number"),
        (["--max-steps", "-3"], "train.max_steps: must be at least 1, got -3"),
        (["--seed", "-1"], "train.seed"),
        (["--context-dropout", "inf"], "model.context_dropout"),
    ]:
        one_line_error(bmz("train", "cosdd", "data/noisy.tif", "--axes", "SYX", *args, "--out", "runs/x",
                           cwd=folder), words)
    (folder / "bad.yaml").write_text("train:\n  max_steps: .inf\n  batch_size: .nan\n")
    one_line_error(bmz("train", "cosdd", "data/noisy.tif", "--axes", "SYX", "--config", "bad.yaml", cwd=folder),
                   "expected a finite number")  # the first of max_steps: .inf and batch_size: .nan
    (folder / "a_file").write_text("not a folder")
    one_line_error(bmz("train", "cosdd", "data/noisy.tif", "--axes", "SYX", "--max-steps", 2, "--out", "a_file",
                       cwd=folder), "is a file")
    assert not (folder / "runs").exists() and (folder / "a_file").read_text() == "not a folder"
    for verb in (["inspect", "data/noisy.tif", "--axes", "SYX", "--out", "a_file/report.png"],
                 ["noise-model", "fit", "--calibration", "data/noisy.tif", "--axes", "SYX", "--out", "a_file/nm.npz"],
                 ["evaluate", "data/noisy.tif", "data/noisy.tif", "--axes", "SYX", "--json", "a_file/scores.json"]):
        one_line_error(bmz(*verb, cwd=folder), "a_file: a file is in the way of a folder")
    assert (folder / "a_file").read_text() == "not a folder"
    one_line_error(bmz("predict", "runs/x", "data/noisy.tif", "--samplez", 3, cwd=folder), "No such option: --samplez")
    one_line_error(bmz("inspect", cwd=folder), "Missing argument")


def test_moved_run_with_deleted_data_packages_and_predicts_from_elsewhere(tmp_path):
    laptop, cluster = tmp_path / "laptop", tmp_path / "cluster"
    data = make_dataset("blobs", "row_correlated", n=6, shape=(48, 48), seed=5)
    write_tiff(cluster / "data" / "noisy.tif", data.noisy, "SYX")
    done = bmz("train", "cosdd", "data/noisy.tif", "--axes", "SYX", *TINY, "--max-steps", 4, "--out", "runs/my run",
               cwd=cluster)
    assert done.returncode == 0, done.stderr
    config = (cluster / "runs" / "my run" / "config.yaml").read_text()
    assert "data/noisy.tif" in config and str(cluster / "data" / "noisy.tif") in config  # as typed and resolved
    laptop.mkdir()
    shutil.move(cluster / "runs", laptop / "runs")
    write_tiff(laptop / "new" / "img.tif", data.noisy[:2], "SYX")
    shutil.rmtree(cluster)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = bmz("package", "../laptop/runs/my run", "--out", "pkg/model.zip", "--samples", 2, "--force", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "pkg" / "model.zip").is_file() and "Traceback" not in done.stderr
    assert "measured cost: one 512 x 512 image (2 posterior samples and their mean) took" in done.stdout
    done = bmz("predict", "runs/my run", "new/img.tif", "--axes", "SYX", "--samples", 2, "--out", "out", cwd=laptop)
    assert done.returncode == 0, done.stderr
    assert (laptop / "out" / "img_mmse.tif").is_file()
    # Resuming needs the training data: gone, so one line saying which.
    done = bmz("train", "cosdd", "--resume", "--out", "runs/my run", "--max-steps", 6, cwd=laptop)
    one_line_error(done, "no such file or folder")


def test_a_quoted_tilde_is_the_home_folder(folder, tmp_path):
    """``"~/data/x.tif"`` reaches the program unexpanded when quoted: every path option expands it."""
    home = tmp_path / "home with space"
    shutil.copytree(folder / "data", home / "data")
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "bmz_cosdd", "inspect", "~/data/noisy.tif", "--axes", "SYX",
                           "--out", "~/reports/noise.png"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (home / "reports" / "noise.png").is_file() and (home / "reports" / "noise.json").is_file()
    assert not (folder / "~").exists()


def test_a_runs_config_yaml_is_a_valid_config_for_a_new_run(folder, trained_run):
    """config.yaml records the library version and the resolved data paths; --config takes it as it is."""
    shutil.copy(trained_run / "config.yaml", folder / "again.yaml")
    done = bmz("train", "cosdd", "--config", "again.yaml", "--max-steps", 1, "--quiet", "--out", "runs/again",
               cwd=folder)
    assert done.returncode == 0, done.stderr
    assert (folder / "runs" / "again" / "checkpoints").is_dir()


def test_same_stem_inputs_are_refused_before_any_work(folder, trained_run):
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    shutil.copy(folder / "data" / "noisy.tif", folder / "a" / "img.tif")
    shutil.copy(folder / "data" / "noisy.tif", folder / "b" / "img.tif")
    done = bmz("predict", trained_run, "a/img.tif", "b/img.tif", "--axes", "SYX", "--out", "out", cwd=folder)
    one_line_error(done, "a/img.tif and b/img.tif would write the same output names")
    assert not (folder / "out").exists()


def _long_training(folder: Path, out: str, seconds: float = 120) -> subprocess.Popen:
    """``bmz-cosdd train`` that would run for hours, started in ``folder``, once its first checkpoint exists."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bmz_cosdd", "train", "cosdd", "data/noisy.tif", "--axes", "SYX", *TINY,
         "--max-steps", "100000", "--steps-per-epoch", "2", "--out", out],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    checkpoint = folder / out / "checkpoints" / "last.pt"
    end = time.monotonic() + seconds
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, f"{checkpoint} never appeared"
        time.sleep(0.1)
    return process


def test_one_writer_per_run_folder_and_a_stale_lock_is_taken_over(folder):
    first = _long_training(folder, "runs/shared")
    try:
        second = bmz("train", "cosdd", "data/noisy.tif", "--axes", "SYX", *TINY, "--max-steps", 2,
                     "--out", "runs/shared", cwd=folder)
        one_line_error(second, "is in use")
        resumed = bmz("train", "cosdd", "--resume", "--out", "runs/shared", "--max-steps", 100, cwd=folder)
        one_line_error(resumed, "is in use")
    finally:
        first.kill()  # no clean-up: the lock stays behind, held by a dead process
        first.communicate()
    lock = json.loads((folder / "runs" / "shared" / ".lock").read_text())
    assert lock["pid"] == first.pid
    step = json.loads(subprocess.run(
        [sys.executable, "-c", "import torch, sys; print(torch.load(sys.argv[1], weights_only=True)['step'])",
         folder / "runs" / "shared" / "checkpoints" / "last.pt"], capture_output=True, text=True).stdout)
    resumed = bmz("train", "cosdd", "--resume", "--out", "runs/shared", "--max-steps", step + 2, cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    assert not (folder / "runs" / "shared" / ".lock").exists()


def test_ctrl_c_saves_a_checkpoint_and_exits_130(folder):
    process = _long_training(folder, "runs/stopped")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted: checkpoint saved; continue with: bmz-cosdd train cosdd --resume --out runs/stopped" in err
    assert "Traceback" not in err
    assert not (folder / "runs" / "stopped" / ".lock").exists()
    assert np.isfinite(json.loads((folder / "runs" / "stopped" / "metrics.jsonl").read_text().splitlines()[-1])["loss"])


def test_auto_preset_says_what_it_chose_for_the_budget_and_records_it(folder):
    """No --preset: the measured curves choose for the device and the limit; the run says which and why."""
    done = bmz("train", "cosdd", "data/noisy.tif", "--axes", "SYX", "--max-time", 20, "--max-steps", 3,
               "--crop-size", 32, "--batch-size", 2, "--direction", "x", "--quiet", "--out", "runs/auto", cwd=folder)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("preset (auto): "))
    assert line.startswith("preset (auto): tiny, the cheapest preset: the budget (20 s or 3 steps, about")
    assert "evaluate_synthetic" in line
    config = (folder / "runs" / "auto" / "config.yaml").read_text()
    assert "preset: tiny" in config and "preset_auto: true" in config and "preset_reason: " in config
    assert line[len("preset (auto): "):] in (folder / "runs" / "auto" / "notes.txt").read_text()
