"""3-D end to end: every method family trains on ZYX volumes with --spatial-dims 3, predicts
volumes, and packages with z axes that bioimageio.core validates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from bmz_cosdd.data.io import read_array, write_tiff
from bmz_cosdd.data.synthetic import make_dataset, row_correlated
from bmz_cosdd.artifacts.package_reader import read_package_descr
from bmz_cosdd.inference.predictor import load_run, predict_files, predict_image
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.api import fit_noise_model
from bmz_cosdd.training.session import train
from helpers import assert_one_line_error, run_cli, tiny_blind_spot_config, tiny_config

SHAPE = (24, 32, 32)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """Two noisy 24 x 32 x 32 volumes (row-correlated noise) as one SZYX TIFF, and a TYX
    calibration stack of the same camera (12 frames of a static ramp)."""
    folder = tmp_path_factory.mktemp("volumes")
    data = make_dataset("blobs", "row_correlated", n=2, shape=SHAPE, seed=5)
    write_tiff(folder / "volumes.tif", data.noisy, "SZYX")
    ramp = np.broadcast_to(np.linspace(0.05, 1.0, 32), (12, 32, 32))
    calibration = row_correlated(ramp, np.random.default_rng(0), blur_sigma=0.0)
    write_tiff(folder / "calibration.tif", calibration.astype(np.float32), "TYX")
    return folder


def _volume_data(volumes: Path) -> dict:
    return {"paths": [str(volumes / "volumes.tif")], "axes": "SZYX", "spatial_dims": 3, "crop_size": 16,
            "val_fraction": 0.5, "val_crops": 2}


def _package_axes(package: Path) -> list[str]:
    descr = read_package_descr(package)
    return [str(a.id) for a in descr.inputs[0].axes]


@pytest.mark.slow
def test_cosdd_trains_predicts_and_packages_volumes_along_z(volumes, tmp_path, capsys) -> None:
    config = tiny_config(volumes / "volumes.tif", max_steps=2, steps_per_epoch=2)
    config["model"]["direction"] = "z"
    config["data"] = _volume_data(volumes)
    run = tmp_path / "run"
    train(config, run, progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["spatial_dims"] == 3

    trained = load_run(run, device="cpu")
    volume = np.asarray(np.random.default_rng(0).normal(0.5, 0.1, (1, 20, 28, 36)), dtype=np.float32)
    options = PredictOptions(estimator="direct")
    whole = predict_image(trained, volume, options, tile=4096)["direct"]
    tiled = predict_image(trained, volume, options, tile=24)["direct"]
    assert whole.shape == volume.shape
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-3)
    mmse = predict_image(trained, volume, PredictOptions(samples=2, sample_batch=2))
    assert mmse["mmse"].shape == mmse["std"].shape == volume.shape

    written = predict_files(trained, [volumes / "volumes.tif"], "SZYX", tmp_path / "out",
                            PredictOptions(samples=2, sample_batch=2))
    assert read_array(written[0]).shape == (2, *SHAPE)

    package = tmp_path / "cosdd3d.zip"
    code, out, err = run_cli(["package", run, "--out", package, "--samples", 2, "--sample-batch", 2, "--force"], capsys)
    assert code == 0, err
    assert _package_axes(package) == ["batch", "channel", "z", "y", "x"]
    descr = read_package_descr(package)
    assert "3d" in descr.tags
    code, out, err = run_cli(["predict", package, volumes / "volumes.tif", "--axes", "SZYX", "--out", tmp_path / "pkg"],
                             capsys)
    assert code == 0, err
    assert read_array(tmp_path / "pkg" / "volumes_mmse.tif").shape == (2, *SHAPE)


@pytest.mark.slow
def test_n2v_trains_and_packages_volumes(volumes, tmp_path, capsys) -> None:
    config = tiny_blind_spot_config("n2v", volumes / "volumes.tif", max_steps=2, steps_per_epoch=2)
    config["model"].update(depth=1, features=4)
    config["data"] = _volume_data(volumes)
    run = tmp_path / "n2v"
    train(config, run, progress=False)
    package = tmp_path / "n2v3d.zip"
    code, out, err = run_cli(["package", run, "--out", package, "--force"], capsys)
    assert code == 0, err
    assert _package_axes(package) == ["batch", "channel", "z", "y", "x"]


@pytest.mark.slow
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
        volume = np.full((1, 12, 16, 16), 0.5, dtype=np.float32)
        out = predict_image(trained, volume, PredictOptions(samples=2, sample_batch=2), tile=8 + 2 * 4)
        assert out["mmse"].shape == volume.shape and np.isfinite(out["mmse"]).all()
    # Both share the sampling model; HDN's ladder VAE is packaged (and validated by bioimageio.core).
    package = tmp_path / "hdn.zip"
    code, out, err = run_cli(["package", tmp_path / "hdn", "--out", package, "--samples", 2, "--sample-batch", 2, "--force"],
                             capsys)
    assert code == 0, err
    assert _package_axes(package) == ["batch", "channel", "z", "y", "x"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--axes", "SYX", "--spatial-dims", "3"], "no Z axis"),
        (["--axes", "SZYX", "--direction", "z"], "--direction z needs volumes"),
        (["--axes", "SZYX", "--crop-depth", "8"], "crop_depth"),
        (["--axes", "SZYX", "--spatial-dims", "4"], "data.spatial_dims: must be 2 or 3, got 4"),
    ],
)
def test_bad_3d_settings_are_one_line_errors(volumes, noisy_stack, tmp_path, capsys, extra, message) -> None:
    data = noisy_stack if extra[1] == "SYX" else volumes / "volumes.tif"
    code, out, err = run_cli(["train", "cosdd", data, "--out", tmp_path / "run", "--preset", "tiny",
                              "--max-steps", 1, *extra], capsys)
    assert_one_line_error(code, out, err, message)
