"""bmz-cosdd evaluate: PSNR and SSIM against scikit-image, file pairing, table, JSON and the PNG panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bmz_cosdd.analysis.evaluation_report import PANEL_CELL_INCHES, PANEL_DPI, evaluate, pair_files
from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.analysis.metrics import psnr, ssim
from helpers import assert_one_line_error, run_cli

WANG = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _clean(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    phases = rng.uniform(0, 6, size=(n, 1, 1))
    return (100 + 50 * np.sin(x / 7 + phases) * np.cos(y / 9 - phases)).astype(np.float32)


def _noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return (clean + np.random.default_rng(seed).normal(0, sigma, clean.shape)).astype(np.float32)


def test_psnr_and_ssim_equal_scikit_image():
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 200, (48, 40))
    prediction = target + rng.normal(0, 20, target.shape)
    for data_range in (None, 255.0):
        expected_range = target.max() - target.min() if data_range is None else data_range
        assert psnr(prediction, target, data_range) == pytest.approx(
            peak_signal_noise_ratio(target, prediction, data_range=expected_range), abs=1e-10)
        assert ssim(prediction, target, data_range) == pytest.approx(
            structural_similarity(prediction, target, data_range=expected_range, **WANG), abs=1e-10)
    channels = rng.uniform(0, 1, (2, 32, 32))
    noisy_channels = channels + rng.normal(0, 0.1, channels.shape)
    assert ssim(noisy_channels, channels, 1.0) == pytest.approx(
        structural_similarity(noisy_channels, channels, data_range=1.0, channel_axis=0, **WANG), abs=1e-10)


def test_ssim_of_constant_images_is_the_closed_form():
    # Constant images have no variance: SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1), C1 = (0.01 L)^2.
    c1, c2, data_range = 0.3, 0.5, 1.0
    big_c1 = (0.01 * data_range) ** 2
    expected = (2 * c1 * c2 + big_c1) / (c1**2 + c2**2 + big_c1)
    assert ssim(np.full((20, 20), c1), np.full((20, 20), c2), data_range) == pytest.approx(expected, abs=1e-10)


def test_identical_images_and_bad_shapes():
    image = _clean(1)[0]
    assert psnr(image, image) == float("inf")
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(image, image[:-1])
    with pytest.raises(ValueError, match="at least 11 x 11"):
        ssim(image[:10, :10], image[:10, :10])


def test_pairing_by_name_and_by_stem_prefix(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in ("a.tif", "b.tif", "b_2.tif"):
        write_tiff(gt / name, np.zeros((12, 12)), "YX")
    for name in ("a_mmse.tif", "a_direct.tif", "a_std.tif", "b.tif", "b_2_mmse.tif"):
        write_tiff(pred / name, np.zeros((12, 12)), "YX")
    pairs = [(p.name, t.name) for p, t, _ in pair_files(pred, gt)]
    assert pairs == [("a_direct.tif", "a.tif"), ("a_mmse.tif", "a.tif"), ("b.tif", "b.tif"),
                     ("b_2_mmse.tif", "b_2.tif")]
    assert [p.name for p, _, _ in pair_files(pred, gt, pattern="*_mmse.tif")] == ["a_mmse.tif", "b_2_mmse.tif"]
    # Two single files pair whatever their names.
    assert pair_files(pred / "b.tif", gt / "a.tif")[0][:2] == (pred / "b.tif", gt / "a.tif")
    # So do a folder with one matching prediction and one target file (predict's output against its truth).
    write_tiff(tmp_path / "clean.tif", np.zeros((12, 12)), "YX")
    assert pair_files(pred, tmp_path / "clean.tif", pattern="a_mmse*")[0][:2] == (pred / "a_mmse.tif",
                                                                                  tmp_path / "clean.tif")


@pytest.fixture()
def stacks(tmp_path) -> dict[str, Path]:
    """Folders of SYX stacks (3 images of 64 x 64): clean targets, noisy inputs and two predictions of each."""
    clean = _clean()
    noisy = _noisy(clean, 20, 1)
    folders = {k: tmp_path / k for k in ("gt", "noisy", "pred")}
    write_tiff(folders["gt"] / "a.tif", clean, "SYX")
    write_tiff(folders["noisy"] / "a.tif", noisy, "SYX")
    write_tiff(folders["pred"] / "a_mmse.tif", _noisy(clean, 4, 2), "SYX")
    write_tiff(folders["pred"] / "a_direct.tif", _noisy(clean, 8, 3), "SYX")
    write_tiff(folders["pred"] / "a_std.tif", np.ones_like(clean), "SYX")
    return folders


def test_evaluate_rows_for_every_sample_and_prediction(stacks):
    result = evaluate(stacks["pred"], stacks["gt"], axes="SYX", noisy=stacks["noisy"])
    assert [r.image for r in result.rows] == [f"a_direct.tif[{i}]" for i in range(3)] + [
        f"a_mmse.tif[{i}]" for i in range(3)]
    assert [r.target for r in result.rows] == [f"a.tif[{i}]" for i in range(3)] * 2
    clean = _clean()
    first = result.rows[3]
    data_range = float(clean[0].max()) - float(clean[0].min())
    assert first.data_range == pytest.approx(data_range)
    assert first.psnr == pytest.approx(psnr(_noisy(clean, 4, 2)[0], clean[0], data_range), abs=1e-10)
    assert first.ssim > first.noisy_ssim and first.psnr > first.noisy_psnr + 10
    assert result.means()["psnr"] == pytest.approx(np.mean([r.psnr for r in result.rows]))
    fixed = evaluate(stacks["pred"] / "a_mmse.tif", stacks["gt"], axes="SYX", data_range=100.0)
    assert fixed.data_range_rule == "fixed: 100" and {r.data_range for r in fixed.rows} == {100.0}


def test_cli_prints_the_table_and_writes_json_and_panel(stacks, tmp_path, capsys):
    out_json, out_png = tmp_path / "out" / "scores.json", tmp_path / "out" / "panel.png"
    code, out, err = run_cli(["evaluate", stacks["pred"], stacks["gt"], "--axes", "SYX", "--pattern", "*_mmse.tif",
                              "--noisy", stacks["noisy"], "--json", out_json, "--panel", out_png, "--crop", "48"],
                             capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "target max - min" in lines[0]
    assert lines[1].split() == ["image", "PSNR", "dB", "SSIM", "data", "range", "noisy", "PSNR", "dB", "noisy", "SSIM"]
    assert [line.split()[0] for line in lines[3:6]] == [f"a_mmse.tif[{i}]" for i in range(3)]
    assert lines[-2].startswith("mean of 3") and lines[-1].startswith("residual check")

    report = json.loads(out_json.read_text())
    assert report["data_range_rule"] == "per image: target max - min"
    assert len(report["images"]) == 3 and report["mean"]["n_images"] == 3
    row = report["images"][0]
    assert set(row) == {"image", "target", "psnr_db", "ssim", "mse", "data_range", "noisy_psnr_db", "noisy_ssim"}
    assert float(lines[3].split()[1]) == pytest.approx(row["psnr_db"], abs=0.006)
    assert report["mean"]["psnr_db"] == pytest.approx(np.mean([r["psnr_db"] for r in report["images"]]))

    from PIL import Image

    pixels = np.asarray(Image.open(out_png).convert("RGB"), dtype=np.float64)
    width, height = PANEL_CELL_INCHES
    assert pixels.shape[:2] == (round(3 * height * PANEL_DPI), round(4 * width * PANEL_DPI))
    assert pixels.std() > 20
    assert not list(out_png.parent.glob(".*.tmp"))


def test_identical_images_give_infinite_psnr_in_valid_json(stacks, tmp_path, capsys):
    out_json = tmp_path / "scores.json"
    code, out, err = run_cli(["evaluate", stacks["gt"] / "a.tif", stacks["gt"] / "a.tif", "--axes", "SYX",
                              "--json", out_json], capsys)
    assert code == 0, err
    assert "inf" in out.splitlines()[3]
    report = json.loads(out_json.read_text())
    assert report["mean"]["psnr_db"] == "inf" and report["mean"]["ssim"] == pytest.approx(1.0)


def _bad_cases(stacks: dict[str, Path]) -> dict[str, tuple[list, str]]:
    write_tiff(stacks["pred"] / "c_mmse.tif", _clean(), "SYX")
    short = stacks["pred"].parent / "short.tif"
    write_tiff(short, _clean(2), "SYX")
    nan = stacks["pred"].parent / "nan.tif"
    values = _clean()
    values[1, 3, 3] = np.nan
    write_tiff(nan, values, "SYX")
    return {
        "no target": ([stacks["pred"], stacks["gt"]], "c_mmse.tif"),
        "shape": ([short, stacks["gt"] / "a.tif"], "short.tif and a.tif differ in shape"),
        "nan": ([nan, stacks["gt"] / "a.tif"], "NaN"),
        "missing": ([stacks["pred"] / "zzz.tif", stacks["gt"]], "no such file"),
    }


@pytest.mark.parametrize("case", ["no target", "shape", "nan", "missing"])
def test_bad_input_is_one_line_and_writes_nothing(stacks, tmp_path, capsys, case):
    args, words = _bad_cases(stacks)[case]
    out_json, out_png = tmp_path / "out" / "scores.json", tmp_path / "out" / "panel.png"
    code, out, err = run_cli(["evaluate", *args, "--axes", "SYX", "--json", out_json, "--panel", out_png], capsys)
    assert_one_line_error(code, out, err, words)
    assert not (tmp_path / "out").exists()


def test_help_names_the_verb(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "evaluate" in out
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert code == 0 and "--data-range" in out and "--panel" in out and "--noisy" in out
