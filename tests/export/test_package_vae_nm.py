"""DivNoising and HDN packages: the same sampling export as COSDD, validated by bioimageio.core."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")

# trains DivNoising and HDN runs and packages them, each validated by bioimageio.core
pytestmark = pytest.mark.slow

from bmz_cosdd.data.io import write_tiff  # noqa: E402
from bmz_cosdd.data.synthetic import make_clean  # noqa: E402
from bmz_cosdd.errors import UserError  # noqa: E402
from bmz_cosdd.export.package import package_run  # noqa: E402
from bmz_cosdd.artifacts.package_reader import read_package_descr  # noqa: E402
from bmz_cosdd.inference.predictor import load_run  # noqa: E402
from bmz_cosdd.methods.base import ExportOptions, PredictOptions  # noqa: E402
from bmz_cosdd.api import fit_noise_model  # noqa: E402
from bmz_cosdd.training.session import train  # noqa: E402

CITATIONS = {"divnoising": "10.48550/arXiv.2006.06072", "hdn": "10.48550/arXiv.2104.01374"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae_nm")
    rng = np.random.default_rng(0)
    clean = 100 + 900 * make_clean("blobs", 5, (64, 64), seed=1)
    noisy = (2.0 * rng.poisson(clean / 2.0) + rng.normal(0, 10, clean.shape)).astype(np.float32)
    write_tiff(root / "calib.tif", np.stack([(2.0 * rng.poisson(clean[0] / 2.0) + rng.normal(0, 10, clean[0].shape))
                                             for _ in range(10)]).astype(np.float32), "TYX")
    write_tiff(root / "train.tif", noisy[1:], "SYX")
    fit_noise_model(root / "nm.npz", calibration=root / "calib.tif", steps=100)
    models = {
        "divnoising": {"depth": 2, "features": 8, "latent": 8, "halo": 8},
        "hdn": {"n_levels": 3, "latent_channels": [4], "features": 8, "blocks_per_level": 1, "deactivate_levels": [1],
                "halo": 8},
    }
    for method, model in models.items():
        config = {"method": method, "model": {**model, "noise_model": str(root / "nm.npz")},
                  "data": {"paths": [str(root / "train.tif")], "axes": "SYX", "crop_size": 32, "val_fraction": 0.25},
                  "train": {"batch_size": 2, "max_steps": 4, "steps_per_epoch": 2}}
        train(config, root / method, progress=False)
    return root


@pytest.mark.parametrize("method", list(CITATIONS))
def test_package_validates_and_reproduces_the_framework(runs, tmp_path, method):
    out = tmp_path / f"{method}.zip"
    result = package_run(runs / method, out, ExportOptions(samples=4, sample_batch=2, seed=3), say=lambda m: None, force=True)
    assert result.validation and all(r.passed for r in result.validation), result.validation
    descr = read_package_descr(out)
    assert len(descr.inputs) == 1 and [str(o.id) for o in descr.outputs] == ["mmse"]
    assert any(str(c.doi) == CITATIONS[method] for c in descr.cite)
    with zipfile.ZipFile(out) as zf:
        card = zf.read(next(n for n in zf.namelist() if n.endswith("README.md"))).decode()
        name = next(n for n in zf.namelist() if "torchscript" in n)
        zf.extract(name, tmp_path)
    assert "calibration stack calib.tif" in card and CITATIONS[method] in card
    assert descr.config.model_dump()["bmz_cosdd"]["training"]["model"]["noise_model_kind"] == "gmm"
    scripted = torch.jit.load(str(tmp_path / name))
    trained = load_run(runs / method)
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        ours = trained.method.predict(trained.model, x, PredictOptions(samples=4, sample_batch=2, seed=3))["mmse"]
        torch.testing.assert_close(scripted(x), ours, rtol=1e-5, atol=1e-5)


def test_map_is_not_packaged(runs, tmp_path):
    with pytest.raises(UserError, match="mmse"):
        package_run(runs / "divnoising", tmp_path / "x.zip", ExportOptions(estimator="map"), say=lambda m: None, force=True)
    assert not (tmp_path / "x.zip").exists()
