"""Sampling views: PSNR of the mean of k samples, the sampling PNG, and predict --save-samples / --target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bmz_cosdd.analysis.sampling_view import mean_of_k_psnr, write_sampling_view
from bmz_cosdd.analysis.metrics import psnr
from helpers import assert_one_line_error, assert_readable_png, run_cli, tiny_blind_spot_config


@pytest.fixture(scope="module")
def n2v_run(tmp_path_factory, noisy_stack) -> Path:
    """A deterministic method's run (tiny N2V, 6 steps)."""
    from bmz_cosdd.training.session import train

    run = tmp_path_factory.mktemp("runs") / "n2v"
    train(tiny_blind_spot_config("n2v", noisy_stack), run, progress=False)
    return run


def test_mean_of_k_psnr_is_exact_for_known_offsets():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 50, size=(2, 16, 16))
    sign = np.where(np.indices(target.shape).sum(0) % 2 == 0, 1.0, -1.0)  # +-1: MSE = offset**2
    offsets = np.array([3.0, -1.0, 2.0, 4.0, 0.5, 1.0, -2.0, 6.0, 1.5, 5.0, 2.5, 0.25])
    samples = (target + offsets[:, None, None, None] * sign).astype(np.float32)
    data_range = target.max() - target.min()
    rows = mean_of_k_psnr(samples, target)
    assert [k for k, _ in rows] == [1, 10, 12]  # 100 > N is left out, N is added
    for k, value in rows:
        expected = 10 * np.log10(data_range**2 / offsets[:k].mean() ** 2)
        assert value == pytest.approx(expected, abs=1e-4)  # float32 samples
    (k2, fixed), (k12, _) = mean_of_k_psnr(samples, target, ks=(2,), data_range=100.0)
    assert (k2, k12) == (2, 12) and fixed == pytest.approx(10 * np.log10(100.0**2 / 1.0**2), abs=1e-4)
    with pytest.raises(ValueError):
        mean_of_k_psnr(samples, target[0])


def test_sampling_view_crops_large_multichannel_images(tmp_path):
    rng = np.random.default_rng(1)
    clean = np.sin(np.linspace(0, 6, 400))[None, None, :] * np.ones((2, 300, 1)) * 10
    samples = clean + rng.normal(0, 1, size=(5, 2, 300, 400))
    path = write_sampling_view(tmp_path / "view.png", clean + rng.normal(0, 3, clean.shape), samples,
                               samples.mean(0), samples.std(0), crop=64, title="big.tif")
    assert_readable_png(path)
    with_target = write_sampling_view(tmp_path / "target.png", clean[0], samples[:, 0], samples[:, 0].mean(0),
                                      samples[:, 0].std(0), target=clean[0], crop=None)
    assert_readable_png(with_target)


def test_predict_save_samples_with_target_writes_view_json_and_table(tmp_path, trained_run, noisy_stack, capsys):
    clean_path = noisy_stack.parent / "clean.npy"  # one input and one target: paired directly
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", trained_run, noisy_stack, "--axes", "SYX", "--samples", "12",
                                 "--sample-batch", "6", "--save-samples", "--target", clean_path, "--out", out], capsys)
    assert code == 0, err
    with tifffile.TiffFile(out / "noisy_samples.tif") as tif:
        samples = tif.asarray()
        assert tif.series[0].axes.startswith("Q")
    clean = np.load(clean_path)
    assert samples.shape == (12, *clean.shape)
    assert_readable_png(out / "noisy_sampling.png")
    summary = json.loads((out / "noisy_sampling.json").read_text())
    assert [row["k"] for row in summary["mean_of_k"]] == [1, 10, 12]
    assert summary["samples"] == 12 and summary["images"] == 4 and summary["target"] == "clean.npy"
    # the first 10 saved samples reproduce the k = 10 PSNR (per image, then the mean over the file's images)
    from_tiff = np.mean([psnr(samples[:10, i].astype(np.float64).mean(0), clean[i]) for i in range(len(clean))])
    assert summary["mean_of_k"][1]["psnr_db"] == pytest.approx(from_tiff, rel=1e-9)
    assert summary["psnr_db"]["mean of 10"] == pytest.approx(from_tiff, rel=1e-9)
    mmse = tifffile.imread(out / "noisy_mmse.tif")
    assert summary["psnr_db"]["mmse"] == pytest.approx(summary["psnr_db"]["mean of 12"], abs=1e-3)
    assert mmse.shape == clean.shape
    assert "mean of 10" in stdout and "noisy.tif" in stdout and str(out / "noisy_sampling.png") in stdout

    # --target alone keeps the samples for the view and the table but does not write them
    code, stdout, err = run_cli(["predict", trained_run, noisy_stack, "--axes", "SYX", "--samples", "3",
                                 "--target", clean_path, "--out", tmp_path / "only_target"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "only_target").iterdir())
    assert names == ["noisy_mmse.tif", "noisy_sampling.json", "noisy_sampling.png", "noisy_std.tif"]
    assert "mean of 3" in stdout and "mean of 10" not in stdout


def test_deterministic_method_skips_the_view_with_one_message(tmp_path, n2v_run, noisy_stack, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["predict", n2v_run, noisy_stack, "--axes", "SYX", "--save-samples",
                                 "--out", out], capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if "deterministic" in line] == [
        "n2v (denoised) is deterministic: it returns no posterior samples, so no sampling view is written"]
    assert sorted(p.name for p in out.iterdir()) == ["noisy_denoised.tif"]
    code, stdout, err = run_cli(["predict", n2v_run, noisy_stack, "--axes", "SYX", "--target",
                                 noisy_stack.parent / "clean.npy", "--out", out], capsys)
    assert code == 0, err
    assert "deterministic" in err and "denoised" in stdout.splitlines()[-2]
    assert np.isfinite(float(stdout.splitlines()[-1].split()[-1]))


def test_unpaired_or_mismatched_target_is_one_line_error(tmp_path, trained_run, noisy_stack, capsys):
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("other.npy", "another.npy"):
        np.save(targets / name, np.ones((4, 48, 48), np.float32))
    out = tmp_path / "out"
    args = ["predict", trained_run, noisy_stack, "--axes", "SYX", "--samples", "2", "--out", out, "--target"]
    assert_one_line_error(*run_cli(args + [targets], capsys), "no target for noisy.tif")
    small = tmp_path / "small.npy"
    np.save(small, np.ones((4, 40, 48), np.float32))
    assert_one_line_error(*run_cli(args + [small], capsys), "shape")
    assert not out.exists()
