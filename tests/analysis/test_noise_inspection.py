"""bmz-cosdd inspect: recommendations on noise of known structure, the 2-D map, variance against signal, the PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bmz_cosdd.analysis.noise_inspection import (
    inspect_noise,
    noise_from_dark,
    noise_from_smoothing,
    parse_region,
)
from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.errors import UserError
from helpers import assert_one_line_error, assert_readable_png, run_cli, tiny_config

# noise recipe -> (direction, struct mask axis, pixel noise model fits)
KNOWN = {
    "row_correlated": ("x", "x", False),
    "column_checkerboard": ("y", "y", False),
    "poisson_gaussian": ("none", None, True),
}


def _stack(folder: Path, noise: str, seed: int = 5, **params) -> Path:
    # Held-out data: another seed and image kind than the estimator's own tests.
    data = make_dataset("cells", noise, n=3, shape=(160, 160), seed=seed, **params)
    path = folder / f"{noise}.tif"
    write_tiff(path, (data.noisy * 1000 + 100).astype(np.float32), "SYX")
    return path


@pytest.mark.parametrize("noise", sorted(KNOWN))
def test_recommendations_for_known_noise(tmp_path, capsys, noise):
    direction, mask_axis, fits = KNOWN[noise]
    out = tmp_path / "report.png"
    code, stdout, err = run_cli(["inspect", _stack(tmp_path, noise), "--axes", "SYX", "--out", out], capsys)
    assert code == 0, err
    lines = {line.split()[0]: line for line in stdout.splitlines() if line.startswith("  ")}
    assert f"--direction {direction}" in lines["cosdd"]
    if mask_axis is None:
        assert "--struct-mask none" in lines["structn2v"]
    else:
        assert f"--struct-mask {mask_axis}:" in lines["structn2v"]
    assert ("pixel noise model: fits" in stdout) is fits
    assert lines["divnoising"].split()[1].startswith("suited" if fits else "not")

    report = json.loads(out.with_suffix(".json").read_text())
    assert report["noise_correlation"]["direction"] == direction
    assert report["recommendation"]["cosdd"].startswith(f"--direction {direction}")
    if mask_axis is not None:
        span = int(report["recommendation"]["structn2v"].split(":")[1].split()[0])
        assert span >= 3 and span % 2 == 1
        assert report["noise_correlation"]["correlation_length_px"][mask_axis] >= 1
    assert_readable_png(out, min_height=600, min_width=1000)
    assert not list(tmp_path.glob(".*.tmp"))


def test_variance_against_signal_recovers_the_camera_gain(tmp_path):
    # row_correlated in intensity I = 1000 s + 100: var = 1e6 (0.002 s + 0.02^2 + blurred stripes)
    # = 2 I + 400 - 200 + 1e6 * 0.025^2 * sum(k^2) for the Gaussian blur k of sigma 1 (sum k^2 = 0.2821).
    data = make_dataset("cells", "row_correlated", n=3, shape=(256, 256), seed=7)
    images = [(x * 1000 + 100)[None] for x in data.noisy.astype(np.float64)]
    report = inspect_noise(noise_from_smoothing(images))
    dep = report.dependence
    assert dep.dependent is True
    assert dep.gain == pytest.approx(2.0, rel=0.15)
    expected_offset = 200 + 1e6 * 0.025**2 * 0.2821
    assert dep.offset == pytest.approx(expected_offset, abs=150)

    white = [np.random.default_rng(1).normal(500, 10, size=(1, 200, 200))]
    flat = inspect_noise(noise_from_smoothing(white)).dependence
    assert flat.dependent is False
    assert np.median(flat.variance) == pytest.approx(100, rel=0.1)


def test_autocorrelation_map_of_a_known_process():
    # Dark frames whose noise is a moving sum over 3 rows: correlation 2/3 at dy=1, 1/3 at dy=2, 0 elsewhere.
    rng = np.random.default_rng(2)
    white = rng.normal(size=(2, 258, 256))
    frames = [(w[:-2] + w[1:-1] + w[2:]) * 5 + 100 for w in white]
    report = inspect_noise(noise_from_dark(frames), max_lag=4)
    m = report.autocorrelation
    assert m.shape == (9, 9) and m[4, 4] == pytest.approx(1.0)
    np.testing.assert_allclose([m[5, 4], m[6, 4], m[3, 4], m[4, 5], m[5, 5]], [2 / 3, 1 / 3, 2 / 3, 0, 0], atol=0.03)
    assert report.correlation.direction == "y" and report.correlation.length_y == 2
    assert report.dependence.dependent is None  # dark frames: one signal level
    assert report.dependence.variance[0] == pytest.approx(75, rel=0.1)  # 3 * 5^2


def test_dark_frames_and_region_sources(tmp_path, capsys):
    rng = np.random.default_rng(3)
    dark = rng.normal(100, 4, size=(3, 128, 128)) + rng.normal(0, 4, size=(1, 1, 128))  # column offsets per frame
    write_tiff(tmp_path / "dark.tif", dark.astype(np.float32), "SYX")
    data = _stack(tmp_path, "poisson_gaussian")
    code, stdout, err = run_cli(["inspect", data, "--axes", "SYX", "--dark", tmp_path / "dark.tif",
                                 "--out", tmp_path / "dark.png"], capsys)
    assert code == 0, err
    assert "dark frame" in stdout and "--direction y" in stdout

    code, stdout, err = run_cli(["inspect", data, "--axes", "SYX", "--region", "0:40,0:160",
                                 "--out", tmp_path / "region.png"], capsys)
    assert code == 0, err
    assert "empty region 0:40,0:160" in stdout
    assert json.loads((tmp_path / "region.json").read_text())["source"]["kind"] == "region"


@pytest.mark.slow
def test_cosdd_direction_auto_and_inspect_with_a_run(tmp_path, capsys):
    data = make_dataset("blobs", "poisson_gaussian", n=4, shape=(48, 48), seed=3)
    path = tmp_path / "pg.tif"
    write_tiff(path, data.noisy, "SYX")
    config = tiny_config(path)
    config["model"]["direction"] = "auto"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "cosdd", "--config", tmp_path / "c.yaml", "--out", run, "--quiet"], capsys)
    assert code == 0, err
    assert "noise direction (auto): none" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["direction"] == "none"
    assert "noise direction (auto): none" in (run / "notes.txt").read_text()

    code, stdout, err = run_cli(["inspect", path, "--axes", "SYX", "--run", run, "--samples", "2",
                                 "--out", tmp_path / "run.png"], capsys)
    assert code == 0, err
    assert "residual against the prediction of run run (cosdd" in stdout
    assert_readable_png(tmp_path / "run.png", min_height=600, min_width=1000)


def test_parse_region():
    assert parse_region("10:20, 0:5") == (slice(10, 20), slice(0, 5))
    for bad in ("10:20", "a:b,0:5", "5:5,0:5", "0:4:2,0:5"):
        with pytest.raises(UserError, match="Y0:Y1,X0:X1"):
            parse_region(bad)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--region", "0:20,0:20", "--dark", "DATA"], "one noise source"),
        (["--out", "report.txt"], ".png"),
        (["--region", "0:500,0:20"], "outside"),
        (["--region", "0:8,0:8"], "too small"),
        (["--smooth-sigma", "0"], "smooth-sigma"),
        (["--threshold", "2"], "threshold"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch, extra, words):
    monkeypatch.chdir(tmp_path)  # the default report path
    data = _stack(tmp_path, "poisson_gaussian")
    extra = [str(data) if e == "DATA" else e for e in extra]
    code, out, err = run_cli(["inspect", data, "--axes", "SYX", *extra], capsys)
    assert_one_line_error(code, out, err, words)
    assert not list(tmp_path.glob("*.png"))
