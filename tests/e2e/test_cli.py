"""The command line end to end: train a tiny model, predict, and every bad input of the COSDD issue."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from bmz_cosdd.data.io import write_tiff
from helpers import assert_one_line_error, run_cli, tiny_config


def tiny_yaml(tmp_path: Path, data: Path, **train) -> Path:
    config = tiny_config(data, **train)
    config["data"].pop("paths")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_train_then_predict_writes_tiffs_with_input_axes(tmp_path, noisy_stack, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "cosdd", noisy_stack, "--config", tiny_yaml(tmp_path, noisy_stack), "--axes", "SYX",
         "--max-steps", "3", "--out", run, "--quiet"], capsys)
    assert code == 0, err
    assert "3 steps" in err and (run / "checkpoints" / "best.pt").is_file()
    out_dir = tmp_path / "denoised"
    code, out, err = run_cli(
        ["predict", run, noisy_stack, "--axes", "SYX", "--samples", "4", "--save-samples", "--out", out_dir], capsys)
    assert code == 0, err
    noisy = tifffile.imread(noisy_stack)
    mmse = tifffile.imread(out_dir / "noisy_mmse.tif")
    std = tifffile.imread(out_dir / "noisy_std.tif")
    samples = tifffile.imread(out_dir / "noisy_samples.tif")
    assert mmse.shape == noisy.shape == std.shape and mmse.dtype == np.float32
    assert samples.shape == (4, *noisy.shape)
    np.testing.assert_allclose(samples.mean(0), mmse, rtol=1e-4, atol=1e-4 * np.abs(mmse).max())
    assert np.all(std >= 0) and std.mean() > 0
    # outputs are in raw intensities, not normalised units
    assert abs(mmse.mean() - noisy.mean()) < 0.5 * noisy.std()
    code, out, err = run_cli(["predict", run, noisy_stack, "--axes", "SYX", "--estimator", "direct", "--out", out_dir], capsys)
    assert code == 0, err
    assert tifffile.imread(out_dir / "noisy_direct.tif").shape == noisy.shape


@pytest.mark.slow
def test_resume_from_the_cli(tmp_path, noisy_stack, capsys):
    run = tmp_path / "run"
    config = tiny_yaml(tmp_path, noisy_stack)
    assert run_cli(["train", "cosdd", noisy_stack, "--config", config, "--max-steps", "3", "--out", run, "--quiet"], capsys)[0] == 0
    code, _, err = run_cli(["train", "cosdd", "--resume", "--out", run, "--max-steps", "6", "--quiet"], capsys)
    assert code == 0, err
    assert "6 steps" in err


def _bad(tmp_path: Path, noisy_stack: Path) -> dict[str, tuple[list, str]]:
    """Each bad input: CLI arguments and the words the one-line message must contain."""
    nan = tmp_path / "nan.tif"
    arr = tifffile.imread(noisy_stack).copy()
    arr[0, 3, 4] = np.nan
    write_tiff(nan, arr, "SYX")
    const = tmp_path / "const.npy"
    np.save(const, np.ones((2, 64, 64), np.float32))
    small = tmp_path / "small.tif"
    write_tiff(small, np.random.default_rng(0).normal(size=(3, 20, 20)).astype(np.float32), "SYX")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_text(yaml.safe_dump(tiny_config(noisy_stack)))
    config = tiny_yaml(tmp_path, noisy_stack)
    train = ["train", "cosdd", "--config", config, "--out", tmp_path / "r", "--quiet"]
    return {
        "missing path": (train + [tmp_path / "nope.tif"], "no such file or folder"),
        "no matching files": (train + [empty, "--pattern", "*.tif"], "no files matching"),
        "axes do not fit": (train + [noisy_stack, "--axes", "YX"], "axes"),
        "nan pixels": (train + [nan], "NaN"),
        "image smaller than crop": (train + [small], "crop size"),
        "constant image": (train + [const], "constant"),
        "unknown preset": (train + [noisy_stack, "--preset", "huge"], "unknown preset"),
        "unknown direction": (train + [noisy_stack, "--direction", "w"], "model.direction: must be x, y, z, none or auto"),
        "run without checkpoint": (["predict", no_ckpt, noisy_stack, "--axes", "SYX"], "no checkpoint"),
        "not a run folder": (["predict", empty, noisy_stack], "not a run folder"),
        "missing run": (["predict", tmp_path / "ghost", noisy_stack], "no such run folder"),
        "bad config file": (["train", "cosdd", noisy_stack, "--config", tmp_path / "none.yaml"], "config file not found"),
        "unknown config key": (train + [noisy_stack, "--max-steps", "0"], "train.max_steps: must be at least 1, got 0"),
    }


CASES = [
    "missing path", "no matching files", "axes do not fit", "nan pixels", "image smaller than crop",
    "constant image", "unknown preset", "unknown direction", "run without checkpoint", "not a run folder",
    "missing run", "bad config file", "unknown config key",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, noisy_stack, capsys, case):
    args, words = _bad(tmp_path, noisy_stack)[case]
    assert_one_line_error(*run_cli(args, capsys), words)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_predict_error_leaves_existing_outputs_untouched(tmp_path, trained_run, noisy_stack, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    existing = out_dir / "noisy_mmse.tif"
    existing.write_bytes(b"precious")
    bad = tmp_path / "two_channels.tif"
    write_tiff(bad, np.ones((2, 48, 48), np.float32) + np.arange(48, dtype=np.float32), "CYX")
    flat = tmp_path / "flat.tif"
    write_tiff(flat, np.ones((48, 48), np.float32), "YX")
    # the first input is fine, the second does not fit the axes: nothing is written
    code, _, err = run_cli(["predict", trained_run, noisy_stack, flat, "--axes", "SYX", "--out", out_dir], capsys)
    assert code == 2 and "axes" in err.lower()
    code, _, err = run_cli(["predict", trained_run, bad, "--axes", "CYX", "--out", out_dir], capsys)
    assert code == 2 and "channel" in err
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in out_dir.iterdir()) == ["noisy_mmse.tif"]


@pytest.mark.slow
def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bmz_cosdd", "train", "cosdd", str(tmp_path / "missing"), "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no such file or folder")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_lists_every_verb(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for verb in ("train", "predict", "demo"):
        assert verb in out
    code, out, _ = run_cli(["train", "cosdd", "--help"], capsys)
    assert code == 0 and "--direction" in out and "--preset" in out and "--max-time" in out
