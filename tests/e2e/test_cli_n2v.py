"""The N2V family from the command line: train, predict, and the bad inputs of the issue."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import yaml

from helpers import assert_one_line_error, run_cli

TINY = ["--axes", "SYX", "--crop-size", "32", "--val-fraction", "0.25", "--val-crops", "4", "--batch-size", "2",
        "--max-steps", "3", "--steps-per-epoch", "3", "--depth", "1", "--features", "4", "--quiet"]


def test_train_n2v2_then_predict(tmp_path, noisy_stack, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "n2v2", noisy_stack, "--out", run, *TINY], capsys)
    assert code == 0, err
    assert "n2v2: 3 steps" in err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["blur_pool"] is True and config["model"]["replacement"] == "median"
    code, out, err = run_cli(["predict", run, noisy_stack, "--axes", "SYX", "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    denoised = tifffile.imread(tmp_path / "out" / "noisy_denoised.tif")
    assert denoised.shape == tifffile.imread(noisy_stack).shape and denoised.dtype == np.float32


def test_psf_n2v_predicts_the_deconvolution_on_request(tmp_path, noisy_stack, capsys):
    run = tmp_path / "run"
    psf = tmp_path / "psf.tif"
    yy, xx = np.mgrid[-4:5, -4:5]
    tifffile.imwrite(psf, np.exp(-(yy**2 + xx**2) / 4.0).astype(np.float32))
    code, _, err = run_cli(["train", "psf-n2v", noisy_stack, "--out", run, "--psf-file", psf, *TINY], capsys)
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["psf_size"] == 9
    code, _, err = run_cli(["predict", run, noisy_stack, "--axes", "SYX", "--estimator", "deconvolved",
                            "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    for name in ("noisy_denoised.tif", "noisy_deconvolved.tif"):
        assert (tmp_path / "out" / name).is_file()


def test_structn2v_auto_prints_its_choice(tmp_path, noisy_stack, capsys):
    code, _, err = run_cli(["train", "structn2v", noisy_stack, "--out", tmp_path / "run", *TINY], capsys)
    assert code == 0, err
    assert "struct mask (auto)" in err
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["struct_mask"]
    assert recorded is None or recorded.split(":")[0] in ("x", "y")


def _bad(tmp_path, noisy_stack):
    psf3d = tmp_path / "psf3d.tif"
    tifffile.imwrite(psf3d, np.ones((3, 5, 5), np.float32))
    psf0 = tmp_path / "psf0.npy"
    np.save(psf0, np.zeros((5, 5)))
    struct = ["train", "structn2v", noisy_stack, "--out", tmp_path / "r", *TINY]
    psf = ["train", "psf-n2v", noisy_stack, "--out", tmp_path / "r", *TINY]
    n2v = ["train", "n2v", noisy_stack, "--out", tmp_path / "r", *TINY]
    return {
        "even span": (struct + ["--struct-mask", "x:8"], "odd"),
        "span larger than the crop": (struct + ["--struct-mask", "y:41"], "crop"),
        "unknown mask axis": (struct + ["--struct-mask", "z:3"], "axis"),
        "psf not 2-D": (psf + ["--psf-file", psf3d], "2-D"),
        "psf sums to zero": (psf + ["--psf-file", psf0], "sum"),
        "psf missing": (psf + ["--psf-file", tmp_path / "none.tif"], "none.tif"),
        "masked fraction zero": (n2v + ["--masked-fraction", "0"], "model.masked_fraction"),
        "masked fraction too big": (n2v + ["--masked-fraction", "0.6"], "model.masked_fraction"),
        "even window": (n2v + ["--window", "4"], "window"),
    }


@pytest.mark.parametrize("case", [
    "even span", "span larger than the crop", "unknown mask axis", "psf not 2-D", "psf sums to zero",
    "psf missing", "masked fraction zero", "masked fraction too big", "even window",
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, noisy_stack, capsys, case):
    args, words = _bad(tmp_path, noisy_stack)[case]
    assert_one_line_error(*run_cli(args, capsys), words)
    assert not (tmp_path / "r").exists()


def test_help_lists_the_family(capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    for name in ("cosdd", "n2v", "n2v2", "structn2v", "psf-n2v"):
        assert name in out
    code, out, _ = run_cli(["train", "psf-n2v", "--help"], capsys)
    assert code == 0 and "--psf-sigma" in out and "--positivity" in out and "--masked-fraction" in out
