"""Pixels clipped at either end of the data's range: one rule, warned about with their fraction and left out,
in `noise-model fit` (calibration and bootstrap) and in `inspect`'s variance against the signal."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile

from bmz_cosdd.analysis.noise_inspection import noise_from_predictions, noise_from_smoothing, signal_dependence
from bmz_cosdd.data.clipping import CLIPPED_FRACTION, clipped_pixels
from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_clean
from bmz_cosdd.noise_models import load_noise_model
from bmz_cosdd.noise_models.sources import bootstrap_pairs, calibration_pairs
from helpers import run_cli

GAIN, READ = 2.0, 10.0


def _noisy(rng, s):
    return (GAIN * rng.poisson(s / GAIN) + rng.normal(0, READ, s.shape)).astype(np.float32)


def _clipped_at_zero(frames: np.ndarray, fraction: float) -> np.ndarray:
    """``frames`` shifted down so that ``fraction`` of them fall below 0, then cut at 0 (a camera offset removed)."""
    return np.maximum(frames - np.quantile(frames, fraction), 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return 100 + 900 * make_clean("blobs", 1, (48, 48), seed=2)[0]


def _percent(err: str, end: str) -> float:
    match = re.search(rf"([\d.]+)% of the \w+ pixels of channel 0 are [^;]*{end}", err)
    assert match, err
    return float(match.group(1))


def test_the_rule(scene):
    rng = np.random.default_rng(0)
    frames = np.stack([_noisy(rng, scene) for _ in range(4)])[:, None]  # (N, C=1, Y, X)
    masks, ends = clipped_pixels(list(frames))
    assert ends == [] and not any(m.any() for m in masks)  # continuous data reach their extremes once
    counts = np.round(frames)  # integer counts: a handful of pixels at each extreme, not a fraction
    assert clipped_pixels(list(counts))[1] == []
    cut = np.clip(frames, np.quantile(frames, 0.2), np.quantile(frames, 0.99))
    masks, ends = clipped_pixels(list(cut))
    assert [(e.end, e.channel) for e in ends] == [("minimum", 0), ("maximum", 0)]
    assert ends[0].fraction == pytest.approx(0.2, abs=0.01) and ends[1].fraction == pytest.approx(0.01, abs=0.002)
    assert sum(int(m.sum()) for m in masks) == int((cut == cut.min()).sum() + (cut == cut.max()).sum())
    few = frames.copy()
    few.flat[: int(CLIPPED_FRACTION * few.size) - 1] = few.min()  # with the minimum itself: at the threshold
    assert clipped_pixels(list(few))[1] == []


def test_calibration_clipped_at_zero_is_warned_about_and_left_out(scene, tmp_path, capsys):
    rng = np.random.default_rng(3)
    frames = _clipped_at_zero(np.stack([_noisy(rng, scene) for _ in range(5)]), 0.29)
    write_tiff(tmp_path / "zero.tif", frames, "TYX")
    code, _, err = run_cli(["noise-model", "fit", "--calibration", tmp_path / "zero.tif", "--steps", "20",
                            "--out", tmp_path / "m.npz"], capsys)
    assert code == 0, err
    assert "warning:" in err and "clipped at the data's minimum (value 0)" in err
    assert _percent(err, "minimum") == pytest.approx(100 * (frames == 0).mean(), abs=0.01)
    assert 28.5 < _percent(err, "minimum") < 29.5
    assert "saturated" not in err
    pairs = calibration_pairs(tmp_path / "zero.tif")
    assert pairs.observation.min() > 0  # no clipped pixel enters the fit ...
    at_zero = (frames == 0).any(axis=0)
    assert pairs.observation.size == 5 * int((~at_zero).sum())  # ... nor any frame of a position that holds one
    info = load_noise_model(tmp_path / "m.npz").info
    assert info["clipped_low_left_out"] == pytest.approx(at_zero.mean()) and info["saturated_left_out"] == 0


def test_both_ends_and_the_top_alone(scene, tmp_path, capsys):
    rng = np.random.default_rng(4)
    frames = np.stack([_noisy(rng, scene) for _ in range(5)])
    both = np.minimum(_clipped_at_zero(frames, 0.05), 700.0)
    write_tiff(tmp_path / "both.tif", both, "TYX")
    code, _, err = run_cli(["noise-model", "fit", "--calibration", tmp_path / "both.tif", "--steps", "20",
                            "--out", tmp_path / "b.npz"], capsys)
    assert code == 0, err
    assert _percent(err, "minimum") == pytest.approx(100 * (both == 0).mean(), abs=0.01)
    assert _percent(err, "maximum") == pytest.approx(100 * (both == 700).mean(), abs=0.01)
    pairs = calibration_pairs(tmp_path / "both.tif")
    assert 0 < pairs.observation.min() and pairs.observation.max() < 700
    top = np.minimum(frames, 800.0)
    write_tiff(tmp_path / "top.tif", top, "TYX")
    code, _, err = run_cli(["noise-model", "fit", "--calibration", tmp_path / "top.tif", "--steps", "20",
                            "--out", tmp_path / "t.npz"], capsys)
    assert code == 0, err
    assert "saturated" in err and "value 800" in err and "minimum" not in err
    assert _percent(err, "maximum") == pytest.approx(100 * (top == 800).mean(), abs=0.01)
    assert load_noise_model(tmp_path / "t.npz").info["saturated_left_out"] > 0


def test_bootstrap_leaves_clipped_noisy_pixels_out(scene, tmp_path, monkeypatch):
    """The signal is a model's prediction; here the true scene stands in for it."""
    rng = np.random.default_rng(5)
    noisy = _clipped_at_zero(np.stack([_noisy(rng, scene) for _ in range(3)]), 0.29)
    write_tiff(tmp_path / "noisy.tif", noisy, "SYX")
    shift = float(np.quantile(np.stack([_noisy(np.random.default_rng(5), scene) for _ in range(3)]), 0.29))
    denoised = tmp_path / "noisy_denoised.tif"
    write_tiff(denoised, np.stack([scene - shift] * 3).astype(np.float32), "SYX")
    pairs = bootstrap_pairs([tmp_path / "noisy.tif"], [denoised], "SYX", "run")
    assert len(pairs.warnings) == 1 and "noisy pixels" in pairs.warnings[0] and "minimum" in pairs.warnings[0]
    assert pairs.observation.min() > 0 and pairs.observation.size == int((noisy > 0).sum())
    assert pairs.signal.shape == pairs.observation.shape


def test_inspect_variance_fit_leaves_clipped_pixels_out(tmp_path, capsys):
    rng = np.random.default_rng(6)
    clean = 100 + 900 * make_clean("blobs", 1, (256, 256), seed=3)[0]
    raw = _noisy(rng, clean)
    shift = float(np.quantile(raw, 0.29))
    noisy = np.maximum(raw - shift, 0.0)
    clipped = noisy == 0
    # noise = noisy - the true signal: every unclipped pixel, and no clipped one, enters the variance bins
    dependence = signal_dependence(noise_from_predictions([noisy[None]], [(clean - shift)[None]], "truth"))
    assert sum(dependence.counts) == int((~clipped).sum())
    assert len(dependence.clipped) == 1 and "clipped at the data's minimum" in dependence.clipped[0]
    assert f"{clipped.mean():.2%}" in dependence.clipped[0]
    # the default source (residuals across the noise): the clipped pixels and the residuals they enter are out
    smooth = signal_dependence(noise_from_smoothing([noisy[None]]), "none")
    assert sum(smooth.counts) <= int((~clipped[2:-2]).sum()) and smooth.clipped == dependence.clipped
    clean_run = signal_dependence(noise_from_predictions([raw[None]], [clean[None]], "truth"))
    assert clean_run.clipped == [] and sum(clean_run.counts) == raw.size

    tifffile.imwrite(tmp_path / "img.tif", noisy.astype(np.float32))
    code, out, err = run_cli(["inspect", tmp_path / "img.tif", "--axes", "YX", "--out", tmp_path / "r.png"], capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and f"{clipped.mean():.2%}" in warned[0] and "variance fit" in warned[0]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["signal_dependence"]["clipped"] == [warned[0][len("warning: "):]]
