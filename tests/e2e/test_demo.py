"""The demo, the README's main job, end to end with a tiny budget."""

import os
import subprocess
import sys

import pytest

from bmz_cosdd.demo import run_demo


@pytest.mark.slow
def test_demo_inspects_trains_and_denoises(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", steps=1000, budget=3, samples=3, package=False, progress=False,
                      say=lines.append)
    assert result.under_trained and any("under-trained" in line and "--budget" in line for line in lines)
    assert result.direction == "x"  # measured from the data (row-correlated stripes), as inspect does
    assert result.steps > 0  # 3 s of training: plumbing only; the README gives the 180 s figures
    assert 15 < result.psnr_noisy < 30 and 0 < result.ssim_noisy < 1 and 0 < result.ssim_mmse < 1
    for path in (result.figure, result.denoised, result.noise_report, result.noise_report.with_suffix(".json")):
        assert path.is_file(), path
    assert any(line.startswith("inspect: noise correlated along x") for line in lines)


@pytest.mark.slow
def test_demo_as_typed_packages_and_validates(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "bmz_cosdd", "demo", "--out", "demo_output", "--steps", "40",
                           "--samples", "4", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo_output" / "demo.zip").is_file()
    assert "bioimageio.core's test passed" in done.stdout
    assert "measured cost: one 512 x 512 image (4 posterior samples and their mean) took" in done.stdout
    assert "deepImageJ" in done.stdout and "ilastik" in done.stdout and "bioimageio.core.predict" in done.stdout
    assert "trained 40 steps" in done.stdout


@pytest.mark.parametrize("option, value, message", [
    ("--steps", "0", "--steps must be at least 1, got 0"),
    ("--samples", "0", "--samples must be at least 1, got 0"),
    ("--budget", "0", "--budget must be a positive number of seconds, got 0.0"),
])
def test_demo_refuses_bad_settings_before_writing_anything(tmp_path, option, value, message):
    done = subprocess.run([sys.executable, "-m", "bmz_cosdd", "demo", "--out", "demo_output", option, value],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {message}", done.stderr
    assert not (tmp_path / "demo_output").exists()
