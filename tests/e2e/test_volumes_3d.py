"""3-D end to end: every method family trains on ZYX volumes with --spatial-dims 3, predicts
volumes, and packages with z axes that bioimageio.core validates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.export.rdf import read_package_descr
from bmz_cosdd.inference.predictor import load_run, predict_files, predict_image
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.noise_models.workflow import fit_noise_model
from bmz_cosdd.training.session import train
from helpers import assert_one_line_error, run_cli, tiny_blind_spot_config, tiny_config

SHAPE = (24, 32, 32)


def _clean_volume(rng: np.random.Generator) -> np.ndarray:
    """Smooth blobs in 3-D, 100 to 1000 counts."""
    field = ndimage.gaussian_filter(rng.random(SHAPE), 2.0)
    field = (field - field.min()) / np.ptp(field)
    return 100.0 + 900.0 * field


def _noisy(rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
    """Poisson-Gaussian noise plus a row-correlated (along X) component."""
    pixel = 2.0 * rng.poisson(clean / 2.0) + rng.normal(0.0, 10.0, clean.shape)
    rows = ndimage.uniform_filter1d(rng.normal(0.0, 30.0, clean.shape), 5, axis=-1)
    return (pixel + rows).astype(np.float32)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """Two noisy 24 x 32 x 32 volumes as one SZYX TIFF, and a TYX calibration stack."""
    folder = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(5)
    clean = np.stack([_clean_volume(rng) for _ in range(2)])
    write_tiff(folder / "volumes.tif", np.stack([_noisy(rng, c) for c in clean]), "SZYX")
    flat = np.full((32, 32), 500.0) + 400.0 * np.linspace(-1, 1, 32)[None, :]
    calibration = np.stack([2.0 * rng.poisson(flat / 2.0) + rng.normal(0, 10.0, flat.shape) for _ in range(12)])
    write_tiff(folder / "calibration.tif", calibration.astype(np.float32), "TYX")
    return folder


def _volume_data(volumes: Path) -> dict:
    return {"paths": [str(volumes / "volumes.tif")], "axes": "SZYX", "spatial_dims": 3, "crop_size": 16,
            "val_fraction": 0.5, "val_crops": 2}


def _package_axes(package: Path) -> list[str]:
    descr = read_package_descr(package)
    return [str(a.id) for a in descr.inputs[0].axes]


def test_cosdd_trains_predicts_and_packages_volumes_along_z(volumes, tmp_path, capsys) -> None:
    config = tiny_config(volumes / "volumes.tif", max_steps=2, steps_per_epoch=2)
    config["model"]["direction"] = "z"
    config["data"] = _volume_data(volumes)
    run = tmp_path / "run"
    train(config, run, progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["spatial_dims"] == 3

    trained = load_run(run, device="cpu")
    volume = np.asarray(np.random.default_rng(0).normal(500, 50, (1, 20, 28, 36)), dtype=np.float32)
    options = PredictOptions(estimator="direct")
    whole = predict_image(trained, volume, options, tile=4096)["direct"]
    tiled = predict_image(trained, volume, options, tile=24)["direct"]
    assert whole.shape == volume.shape
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-3)
    mmse = predict_image(trained, volume, PredictOptions(samples=2, sample_batch=2))
    assert mmse["mmse"].shape == mmse["std"].shape == volume.shape

    written = predict_files(trained, [volumes / "volumes.tif"], "SZYX", tmp_path / "out",
                            PredictOptions(samples=2, sample_batch=2))
    from bmz_cosdd.data.io import read_array

    assert read_array(written[0]).shape == (2, *SHAPE)

    package = tmp_path / "cosdd3d.zip"
    code, out, err = run_cli(["package", run, "--out", package, "--samples", 2, "--sample-batch", 2], capsys)
    assert code == 0, err
    assert _package_axes(package) == ["batch", "channel", "z", "y", "x"]
    descr = read_package_descr(package)
    assert "3d" in descr.tags
    code, out, err = run_cli(["predict", package, volumes / "volumes.tif", "--axes", "SZYX", "--out", tmp_path / "pkg"],
                             capsys)
    assert code == 0, err
    assert read_array(tmp_path / "pkg" / "volumes_mmse.tif").shape == (2, *SHAPE)


def test_n2v_trains_and_packages_volumes(volumes, tmp_path, capsys) -> None:
    config = tiny_blind_spot_config("n2v", volumes / "volumes.tif", max_steps=2, steps_per_epoch=2)
    config["model"].update(depth=1, features=4)
    config["data"] = _volume_data(volumes)
    run = tmp_path / "n2v"
    train(config, run, progress=False)
    package = tmp_path / "n2v3d.zip"
    code, out, err = run_cli(["package", run, "--out", package], capsys)
    assert code == 0, err
    assert _package_axes(package) == ["batch", "channel", "z", "y", "x"]


def test_hdn_and_divnoising_train_and_package_volumes(volumes, tmp_path, capsys) -> None:
    fitted = fit_noise_model(tmp_path / "nm.npz", calibration=volumes / "calibration.tif", steps=200)
    shapes = {"divnoising": {"depth": 1, "features": 4, "latent": 4},
              "hdn": {"n_levels": 2, "latent_channels": [4], "features": 4, "blocks_per_level": 1}}
    for method, model in shapes.items():
        config = {"method": method, "model": {**model, "noise_model": str(fitted.path), "halo": 4},
                  "data": _volume_data(volumes),
                  "train": {"batch_size": 2, "max_steps": 2, "steps_per_epoch": 2, "seed": 0}}
        run = tmp_path / method
        train(config, run, progress=False)
        trained = load_run(run, device="cpu")
        volume = np.full((1, 12, 16, 16), 500.0, dtype=np.float32)
        out = predict_image(trained, volume, PredictOptions(samples=2, sample_batch=2), tile=8 + 2 * 4)
        assert out["mmse"].shape == volume.shape and np.isfinite(out["mmse"]).all()
    # Both share the sampling model; HDN's ladder VAE is packaged (and validated by bioimageio.core).
    package = tmp_path / "hdn.zip"
    code, out, err = run_cli(["package", tmp_path / "hdn", "--out", package, "--samples", 2, "--sample-batch", 2],
                             capsys)
    assert code == 0, err
    assert _package_axes(package) == ["batch", "channel", "z", "y", "x"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--axes", "SYX", "--spatial-dims", "3"], "no Z axis"),
        (["--axes", "SZYX", "--direction", "z"], "--direction z needs volumes"),
        (["--axes", "SZYX", "--crop-depth", "8"], "crop_depth"),
        (["--axes", "SZYX", "--spatial-dims", "4"], "spatial_dims must be 2"),
    ],
)
def test_bad_3d_settings_are_one_line_errors(volumes, noisy_stack, tmp_path, capsys, extra, message) -> None:
    data = noisy_stack if extra[1] == "SYX" else volumes / "volumes.tif"
    code, out, err = run_cli(["train", "cosdd", data, "--out", tmp_path / "run", "--preset", "tiny",
                              "--max-steps", 1, *extra], capsys)
    assert_one_line_error(code, out, err, message)
