"""bmz-cosdd inspect on volumes: the correlation along z, the variance fit over the whole volume, the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bmz_cosdd.analysis.noise_inspection import (
    inspect_noise,
    noise_from_dark,
    noise_from_smoothing,
    predictions_of_run,
    write_noise_report,
)
from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_clean
from helpers import assert_readable_png

SHAPE = (24, 64, 64)  # Z, Y, X


def _along_z(rng: np.random.Generator, shape: tuple[int, ...] = SHAPE, rho: float = 0.5) -> np.ndarray:
    """Unit-variance AR(1) noise along the first axis (z): correlation rho ** lag across planes, none within."""
    white = rng.standard_normal(shape)
    out = np.empty_like(white)
    out[0] = white[0]
    for z in range(1, shape[0]):
        out[z] = rho * out[z - 1] + np.sqrt(1 - rho**2) * white[z]
    return out


def _volume(noise: np.ndarray) -> np.ndarray:
    """(Z, Y, X) smooth blobs in camera-like units plus ``noise`` of standard deviation 100 (variance 1e4)."""
    return 100 + 1000 * make_clean("blobs", 1, SHAPE, seed=3)[0] + 100 * noise


def test_inspect_a_volume_with_noise_correlated_along_z(tmp_path):
    report = inspect_noise(noise_from_smoothing([_volume(_along_z(np.random.default_rng(0)))[None]]))
    found = report.correlation
    assert found.direction == "z" and found.correlation_z[0] == pytest.approx(0.5, abs=0.05)
    assert max(abs(v) for v in found.correlation_x[:3] + found.correlation_y[:3]) < 0.05
    assert report.advice["cosdd"].startswith("--direction z")
    assert "correlated along z over" in report.pixel_noise_model and "planes" in report.pixel_noise_model

    lines = report.summary_lines()
    assert lines[0].endswith("(1 volume(s) of 24 planes)")
    assert lines[1].startswith("correlation: noise correlated along z (across planes)")
    assert lines[2].startswith("correlation along z (across planes): 0.5")

    # The variance fit pools every voxel of the volume: all planes, less the 2 rows either side the in-plane
    # residual needs; the noise is independent along y, so the residual gives its variance exactly.
    dependence = report.dependence
    assert sum(dependence.counts) == SHAPE[0] * (SHAPE[1] - 4) * SHAPE[2]
    assert dependence.dependent is False
    assert np.average(dependence.variance, weights=dependence.counts) == pytest.approx(1e4, rel=0.1)

    as_dict = report.to_dict()
    assert as_dict["source"]["planes"] == [24]
    assert as_dict["noise_correlation"]["direction"] == "z"
    assert as_dict["noise_correlation"]["correlation_length_px"]["z"] == found.length_z >= 1
    json.dumps(as_dict)
    write_noise_report(report, tmp_path / "volume.png")
    assert_readable_png(tmp_path / "volume.png", min_height=600, min_width=1000)


def test_inspect_a_volume_with_noise_correlated_along_x():
    noise = np.swapaxes(_along_z(np.random.default_rng(1), (SHAPE[2], SHAPE[1], SHAPE[0])), 0, 2)  # AR along x
    report = inspect_noise(noise_from_smoothing([_volume(noise)[None]]))
    assert report.correlation.direction == "x", report.correlation.describe()
    assert max(abs(v) for v in report.correlation.correlation_z[:3]) < 0.05
    assert report.advice["cosdd"].startswith("--direction x")


def test_two_dimensional_report_has_no_z():
    rng = np.random.default_rng(2)
    report = inspect_noise(noise_from_smoothing([rng.normal(500, 10, size=(1, 96, 96))]))
    assert report.correlation.correlation_z is None
    assert not any("along z" in line for line in report.summary_lines())
    assert report.summary_lines()[0].endswith("(1 image(s))")
    as_dict = report.to_dict()
    assert "planes" not in as_dict["source"] and "correlation_z" not in as_dict["noise_correlation"]


def test_dark_volumes():
    # Dark frames stacked along z with noise correlated between frames (e.g. a slow drift per pixel).
    rng = np.random.default_rng(3)
    dark = 100 + 5 * _along_z(rng, (16, 48, 48), rho=0.6)
    report = inspect_noise(noise_from_dark([dark[None]]), max_lag=4)
    assert report.correlation.direction == "z"
    assert report.correlation.correlation_z[0] == pytest.approx(0.6, abs=0.05)
    assert report.dependence.dependent is None and report.dependence.variance[0] == pytest.approx(25, rel=0.1)


def test_a_two_dimensional_run_predicts_volumes_plane_by_plane(monkeypatch):
    from bmz_cosdd.inference import predictor

    seen = []

    def fake_predict(trained, image, options):
        seen.append(image.shape)
        return {"mmse": image * 0.5}

    method = SimpleNamespace(estimators=["mmse"], name="fake")
    for dims, shapes in ((2, [(1, 8, 8)] * 5), (3, [(1, 5, 8, 8)])):
        trained = SimpleNamespace(method=method, step=3, config=SimpleNamespace(data=SimpleNamespace(spatial_dims=dims)))
        monkeypatch.setattr(predictor, "load_run", lambda run, trained=trained: trained)
        monkeypatch.setattr(predictor, "predict_image", fake_predict)
        seen.clear()
        volume = np.arange(5 * 64, dtype=np.float64).reshape(1, 5, 8, 8)
        (out,), _ = predictions_of_run("run", [volume], samples=1)
        assert seen == shapes and out.shape == volume.shape and out.dtype == np.float64
        np.testing.assert_allclose(out, volume * 0.5)


def test_cli_inspect_volume_from_a_fresh_folder(tmp_path):
    write_tiff(tmp_path / "vol.tif", _volume(_along_z(np.random.default_rng(4))).astype(np.float32), "ZYX")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "bmz_cosdd", "inspect", "vol.tif", "--axes", "ZYX",
                           "--out", "report/noise.png"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    z_line = next(line for line in lines if line.startswith("correlation along z (across planes): "))
    assert float(z_line.split(": ")[1].split(",")[0]) == pytest.approx(0.5, abs=0.05)
    assert any(line.split()[:2] == ["cosdd", "--direction"] and line.split()[2] == "z" for line in lines)
    report = json.loads((tmp_path / "report" / "noise.json").read_text())
    assert report["noise_correlation"]["direction"] == "z" and report["source"]["planes"] == [24]
    assert (tmp_path / "report" / "noise.png").is_file()
