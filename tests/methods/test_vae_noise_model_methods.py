"""DivNoising and HDN: noise models from a calibration stack or a bootstrap, training, MAP, packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_clean
from bmz_cosdd.errors import TrainingDiverged
from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.noise_models import load_noise_model
from bmz_cosdd.api import fit_noise_model
from bmz_cosdd.training.session import train
from helpers import assert_one_line_error, run_cli, tiny_blind_spot_config

GAIN, READ = 2.0, 10.0


def _noisy(rng, s):
    return (GAIN * rng.poisson(s / GAIN) + rng.normal(0, READ, s.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """A calibration stack (20 frames of a static scene) and 4 noisy training images, raw counts 100-1000."""
    # fitting the noise model takes 500 steps: the tests that use it are marked slow
    folder = tmp_path_factory.mktemp("camera")
    rng = np.random.default_rng(0)
    clean = 100 + 900 * make_clean("blobs", 5, (64, 64), seed=1)
    write_tiff(folder / "calib.tif", np.stack([_noisy(rng, clean[0]) for _ in range(20)]), "TYX")
    write_tiff(folder / "train.tif", _noisy(rng, clean[1:]), "SYX")
    fitted = fit_noise_model(folder / "nm.npz", calibration=folder / "calib.tif", steps=500)
    return folder, fitted


def _config(method: str, data: Path, noise_model: Path, **model) -> dict:
    shapes = {
        "divnoising": {"depth": 2, "features": 8, "latent": 8},
        "hdn": {"n_levels": 3, "latent_channels": [4], "features": 8, "blocks_per_level": 1},
    }[method]
    return {
        "method": method,
        "model": {**shapes, "noise_model": str(noise_model), **model},
        "data": {"paths": [str(data)], "axes": "SYX", "crop_size": 32, "val_fraction": 0.25, "val_crops": 4},
        "train": {"batch_size": 2, "max_steps": 6, "steps_per_epoch": 3, "seed": 0},
    }


@pytest.mark.slow
def test_calibration_fit_writes_model_and_plot_with_provenance(camera):
    folder, fitted = camera
    model = load_noise_model(fitted.path)
    assert fitted.plot.is_file() and fitted.plot.stat().st_size > 1000
    assert model.info["source"] == "calibration" and model.info["frames"] == 20
    with torch.no_grad():
        mean, var = model.mean_variance(torch.tensor([300.0, 700.0]).view(1, 1, 2, 1).double())
    truth = GAIN * np.array([300.0, 700.0]) + READ**2
    np.testing.assert_allclose(var.flatten().numpy(), truth, rtol=0.15)
    np.testing.assert_allclose(mean.flatten().numpy(), [300.0, 700.0], rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["divnoising", "hdn"])
def test_method_trains_through_the_noise_model_and_records_it(camera, tmp_path, method):
    folder, fitted = camera
    extra = {"deactivate_levels": [1]} if method == "hdn" else {}
    train(_config(method, folder / "train.tif", fitted.path, **extra), tmp_path / "run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert saved["noise_model_kind"] == "gmm" and saved["noise_model_info"]["source"] == "calibration"
    trained = load_run(tmp_path / "run")
    image = np.asarray(__import__("tifffile").imread(folder / "train.tif"))[0][None]
    estimators = trained.method.estimators
    out = predict_image(trained, image, PredictOptions(estimator=estimators[-1], samples=4, sample_batch=2))
    assert out["mmse"].shape == image.shape and np.isfinite(out["mmse"]).all()
    if method == "divnoising":
        assert estimators == ("mmse", "map") and out["map"].shape == image.shape
    else:
        assert trained.model.use_mean == [True, False, False]
        assert trained.model.vae.deactivated == [True, False, False]


@pytest.mark.slow
def test_noise_model_is_part_of_the_checkpoint(camera, tmp_path):
    """The run no longer needs the noise model file: resume works after it is gone."""
    from bmz_cosdd.training.session import resume

    folder, fitted = camera
    copy = tmp_path / "nm.npz"
    copy.write_bytes(fitted.path.read_bytes())
    config = _config("hdn", folder / "train.tif", copy)
    config["train"]["max_steps"] = 3
    train(config, tmp_path / "run", progress=False)
    copy.unlink()
    result = resume(tmp_path / "run", {"max_steps": 6}, progress=False)
    assert result.steps == 6


@pytest.mark.slow
def test_posterior_collapse_stops_with_a_clear_message(camera, tmp_path):
    folder, fitted = camera
    config = _config("divnoising", folder / "train.tif", fitted.path, kl_anneal_steps=0, collapse_kl=1e6)
    with pytest.raises(TrainingDiverged, match="posterior collapse"):
        train(config, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_bootstrap_from_a_tiny_n2v_run(camera, tmp_path, capsys):
    folder, _ = camera
    train(tiny_blind_spot_config("n2v", folder / "train.tif"), tmp_path / "n2v", progress=False)
    code, out, err = run_cli(["noise-model", "fit", folder / "train.tif", "--bootstrap", tmp_path / "n2v",
                              "--axes", "SYX", "--steps", "50", "--out", tmp_path / "boot.npz"], capsys)
    assert code == 0, err
    model = load_noise_model(tmp_path / "boot.npz")
    assert model.info["source"] == "bootstrap" and model.info["model"] == "n2v"
    assert (tmp_path / "boot.png").is_file() and "boot.npz" in out


def _bad_cases(folder: Path, fitted: Path, tmp: Path) -> dict[str, tuple[list, str]]:
    one = tmp / "one.tif"
    write_tiff(one, np.ones((1, 16, 16), np.float32) * 5, "TYX")
    text = tmp / "nm.npz"
    text.write_text("not a model")
    scaled = tmp / "scaled.tif"
    write_tiff(scaled, np.asarray(__import__("tifffile").imread(folder / "train.tif")) / 1000.0, "SYX")
    two = tmp / "two.tif"
    write_tiff(two, np.stack([np.asarray(__import__("tifffile").imread(folder / "train.tif"))] * 2, 1), "SCYX")
    train = ["train", "divnoising", "--depth", "1", "--features", "4", "--latent", "4", "--max-steps", "1",
             "--crop-size", "32", "--val-fraction", "0.25", "--out", tmp / "r", "--quiet"]
    return {
        "one frame": (["noise-model", "fit", "--calibration", one, "--out", tmp / "m.npz"], "at least 2 frames"),
        "not a noise model": (train + [folder / "train.tif", "--axes", "SYX", "--noise-model", text],
                              "not a bmz-cosdd noise model"),
        "other units": (train + [scaled, "--axes", "SYX", "--noise-model", fitted], "units"),
        "other channels": (train + [two, "--axes", "SCYX", "--noise-model", fitted], "channel"),
        "no noise model": (train + [folder / "train.tif", "--axes", "SYX"], "--noise-model"),
        "both sources": (["noise-model", "fit", folder / "train.tif", "--calibration", folder / "calib.tif",
                          "--bootstrap", tmp, "--out", tmp / "m.npz"], "either"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", ["one frame", "not a noise model", "other units", "other channels",
                                  "no noise model", "both sources"])
def test_bad_input_is_one_line_and_exit_code_2(camera, tmp_path, capsys, case):
    folder, fitted = camera
    args, words = _bad_cases(folder, fitted.path, tmp_path)[case]
    assert_one_line_error(*run_cli(args, capsys), words)
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.npz").exists()


def test_saturated_calibration_pixels_are_left_out_with_a_warning(tmp_path, capsys):
    rng = np.random.default_rng(3)
    scene = 100 + 900 * make_clean("blobs", 1, (48, 48), seed=2)[0]
    frames = np.minimum(np.stack([_noisy(rng, scene) for _ in range(5)]), 800.0)
    write_tiff(tmp_path / "sat.tif", frames, "TYX")
    code, _, err = run_cli(["noise-model", "fit", "--calibration", tmp_path / "sat.tif", "--steps", "20",
                            "--out", tmp_path / "m.npz"], capsys)
    assert code == 0, err
    assert "saturated" in err and "%" in err
    assert load_noise_model(tmp_path / "m.npz").info["saturated_left_out"] > 0
