"""Stacks as microscopes record them: 16 planes with a z step 4 times the pixel size, trained, predicted and
packaged in 3-D from a user's folder with relative paths (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from bmz_cosdd.artifacts.package_reader import read_package_descr
from bmz_cosdd.data.io import read_array
from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.methods.base import PredictOptions

PLANES, SIDE = 16, 64


def bmz(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bmz_cosdd", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A user's folder with ``stack.tif``: 16 x 64 x 64, ImageJ metadata z 2 um, pixels 0.5 um."""
    folder = tmp_path_factory.mktemp("thin")
    noisy = make_dataset("blobs", "row_correlated", n=1, shape=(PLANES, SIDE, SIDE), seed=4).noisy[0]
    tifffile.imwrite(folder / "stack.tif", noisy.astype(np.float32), imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    return folder


def _z_axis(package: Path) -> tuple[int, int, int]:
    """(min, step, halo) of the package's z axis."""
    descr = read_package_descr(package)
    z_in = next(a for a in descr.inputs[0].axes if str(a.id) == "z")
    z_out = next(a for a in descr.outputs[0].axes if str(a.id) == "z")
    return int(z_in.size.min), int(z_in.size.step), int(getattr(z_out, "halo", 0))


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [
    ("n2v", ["--features", "8"]),
    ("cosdd", ["--preset", "tiny", "--direction", "x"]),
])
def test_a_16_plane_stack_trains_predicts_and_packages(folder, method, extra):
    run = f"runs/{method}"
    done = bmz("train", method, "stack.tif", "--axes", "ZYX", "--spatial-dims", 3, "--crop-size", 32,
               "--crop-depth", PLANES, "--max-steps", 2, "--val-fraction", 0.5, "--quiet", "--out", run, *extra,
               cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "z layout (auto): z step 4 x the pixel size, 16-plane stack" in done.stderr
    recorded = yaml.safe_load((folder / run / "config.yaml").read_text())["model"]
    assert recorded["z_pool"] is not None and recorded["z_kernel"] is not None

    done = bmz("predict", run, "stack.tif", "--axes", "ZYX", "--samples", 2, "--out", f"out_{method}", cwd=folder)
    assert done.returncode == 0, done.stderr
    written = [Path(line) for line in done.stdout.splitlines() if line.endswith(".tif")]
    assert read_array(folder / written[0]).shape == (PLANES, SIDE, SIDE)

    package = f"{method}.zip"
    done = bmz("package", run, "--out", package, "--samples", 2, "--force", cwd=folder)
    assert done.returncode == 0, done.stderr
    low, step, halo = _z_axis(folder / package)
    assert low <= PLANES and low - 2 * halo >= 1 and step >= 1  # the package takes the stack it was trained on
    done = bmz("predict", package, "stack.tif", "--axes", "ZYX", "--out", f"pkg_{method}", cwd=folder)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_tiles_along_z_give_the_whole_prediction(folder):
    """An anisotropic N2V (exact halo per axis) predicts the same tiled along z, y and x as in one piece."""
    run = folder / "runs" / "n2v_tiles"
    done = bmz("train", "n2v", "stack.tif", "--axes", "ZYX", "--spatial-dims", 3, "--crop-size", 32,
               "--crop-depth", 8, "--max-steps", 2, "--val-fraction", 0.5, "--features", 8, "--no-batch-norm",
               "--quiet", "--out", run.relative_to(folder), cwd=folder)
    assert done.returncode == 0, done.stderr
    trained = load_run(run)
    step, halo = trained.method.size_step(trained.model), trained.method.halo(trained.model)
    assert step[0] < step[1] and halo[0] < halo[1]  # z step 4 px: less pooling and context along z
    volume = np.asarray(tifffile.imread(folder / "stack.tif"))[None]
    whole = predict_image(trained, volume, PredictOptions(), tile=4096)["denoised"]
    tile = tuple(2 * -(-h // s) * s + 2 * s for h, s in zip(halo, step))  # two steps kept per tile and axis
    tiled = predict_image(trained, volume, PredictOptions(), tile=tile)["denoised"]
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4 * float(np.std(whole)))
    done = bmz("predict", run.relative_to(folder), "stack.tif", "--axes", "ZYX", "--tile",
               ",".join(map(str, tile)), "--out", "tiled", cwd=folder)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(read_array(folder / "tiled" / "stack_denoised.tif"), whole[0], rtol=1e-4,
                               atol=1e-4 * float(np.std(whole)))


@pytest.mark.slow
def test_a_2_plane_deep_crop_trains_and_packages(folder):
    """Without z pooling a 3-D network takes crops 2 planes deep; its package still takes the whole stack."""
    done = bmz("train", "n2v", "stack.tif", "--axes", "ZYX", "--spatial-dims", 3, "--crop-size", 32,
               "--crop-depth", 2, "--z-pool", "0,0", "--z-kernel", "3,1,1", "--max-steps", 2, "--val-fraction", 0.5,
               "--features", 8, "--quiet", "--out", "runs/two_planes", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "z layout (auto)" not in done.stderr  # given by hand
    done = bmz("package", "runs/two_planes", "--out", "two_planes.zip", "--force", cwd=folder)
    assert done.returncode == 0, done.stderr
    low, step, halo = _z_axis(folder / "two_planes.zip")
    # no z pooling: step 1; z context only from the finest level's four 3-deep convolutions (2 down, 2 up)
    assert (step, halo, low) == (1, 4, 9)


@pytest.mark.slow
def test_the_noise_model_vaes_take_a_16_plane_stack(folder):
    """DivNoising and HDN on the thin stack as a user chains them: a quick N2V, a noise model bootstrapped from its
    prediction, then each VAE trained, predicted, packaged (bioimageio.core validates) and run from its package."""
    done = bmz("train", "n2v", "stack.tif", "--axes", "ZYX", "--spatial-dims", 3, "--crop-size", 32,
               "--crop-depth", 8, "--max-steps", 60, "--val-fraction", 0.5, "--features", 8, "--quiet",
               "--out", "runs/n2v_boot", cwd=folder)
    assert done.returncode == 0, done.stderr
    done = bmz("noise-model", "fit", "stack.tif", "--axes", "ZYX", "--bootstrap", "runs/n2v_boot",
               "--out", "nm.npz", cwd=folder)
    assert done.returncode == 0, done.stderr
    shapes = {"divnoising": ["--depth", 2, "--features", 8, "--latent", 4],
              "hdn": ["--n-levels", 2, "--features", 8, "--blocks-per-level", 1]}
    for method, extra in shapes.items():
        run = f"runs/{method}"
        done = bmz("train", method, "stack.tif", "--axes", "ZYX", "--spatial-dims", 3, "--crop-size", 32,
                   "--crop-depth", PLANES, "--max-steps", 2, "--val-fraction", 0.5, "--noise-model", "nm.npz",
                   "--quiet", "--out", run, *extra, cwd=folder)
        assert done.returncode == 0, done.stderr
        assert "z layout (auto): z step 4 x the pixel size, 16-plane stack" in done.stderr
        recorded = yaml.safe_load((folder / run / "config.yaml").read_text())["model"]
        assert recorded["z_pool"] is not None and recorded["z_halo"] is not None

        done = bmz("predict", run, "stack.tif", "--axes", "ZYX", "--samples", 2, "--out", f"out_{method}",
                   cwd=folder)
        assert done.returncode == 0, done.stderr
        written = [Path(line) for line in done.stdout.splitlines() if line.endswith(".tif")]
        assert written and read_array(folder / written[0]).shape == (PLANES, SIDE, SIDE)

        package = f"{method}.zip"
        done = bmz("package", run, "--out", package, "--samples", 2, "--sample-batch", 2, "--force", cwd=folder)
        assert done.returncode == 0, done.stderr
        low, step, halo = _z_axis(folder / package)
        assert low <= PLANES and step >= 1
        done = bmz("predict", package, "stack.tif", "--axes", "ZYX", "--out", f"pkg_{method}", cwd=folder)
        assert done.returncode == 0, done.stderr
        written = [Path(line) for line in done.stdout.splitlines() if line.endswith(".tif")]
        assert written and read_array(folder / written[0]).shape == (PLANES, SIDE, SIDE)
