"""N2V, N2V2, StructN2V and PSF-N2V through the shared trainer, predictor and packaging."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.errors import UserError
from bmz_cosdd.analysis.metrics import psnr
from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.methods.registry import get_method
from bmz_cosdd.artifacts.run_folder import RunFolder
from bmz_cosdd.training.checkpoints import load_checkpoint
from bmz_cosdd.training.session import build_config, resume, train
from helpers import tiny_blind_spot_config, yx_grid

FAMILY = ("n2v", "n2v2", "structn2v", "psf-n2v")


@pytest.fixture(scope="module")
def pg_data(tmp_path_factory):
    """Poisson-Gaussian (pixel-independent) noise on blob images, with the clean truth."""
    data = make_dataset("blobs", "poisson_gaussian", n=8, shape=(64, 64), seed=5)
    folder = tmp_path_factory.mktemp("pg")
    write_tiff(folder / "noisy.tif", data.noisy, "SYX")
    return folder / "noisy.tif", data


def test_variants_are_the_same_method_with_their_defaults():
    n2v, n2v2, struct, psf = (get_method(m) for m in FAMILY)
    c1 = n2v.config_from_dict({})
    c2 = n2v2.config_from_dict({})
    assert (c1.blur_pool, c1.top_skip, c1.replacement) == (False, True, "neighbour")
    assert (c2.blur_pool, c2.top_skip, c2.replacement) == (True, False, "median")
    assert struct.config_from_dict({}).struct_mask == "auto"
    cp = psf.config_from_dict({})
    assert cp.psf_sigma == 1.0 and cp.positivity == 1.0
    assert psf.estimators == ("denoised", "deconvolved") and n2v.estimators == ("denoised",)
    assert type(n2v) is type(psf)  # one implementation, four settings


@pytest.mark.parametrize(
    "values, words",
    [
        ({"masked_fraction": 0.0}, "model.masked_fraction: must be greater than 0"),
        ({"masked_fraction": 0.7}, "model.masked_fraction: must be at most 0.5"),
        ({"window": 4}, "window"),
        ({"replacement": "mean"}, "replacement"),
        ({"psf_sigma": -1}, "model.psf_sigma: must be greater than 0"),
        ({"kernel_size": 2}, "kernel_size"),
    ],
)
def test_bad_settings_are_one_line(values, words):
    with pytest.raises(UserError, match=words):
        get_method("n2v").config_from_dict(values)


@pytest.mark.slow
def test_n2v_beats_the_noisy_psnr_on_poisson_gaussian_data(pg_data, tmp_path):
    path, data = pg_data
    config = tiny_blind_spot_config("n2v", path, {"features": 16}, max_steps=300, steps_per_epoch=100, lr=2e-3,
                                    batch_size=8)
    config["data"]["crop_size"] = 48
    train(config, tmp_path / "run", progress=False)
    trained = load_run(tmp_path / "run")
    noisy_db, denoised_db = [], []
    for i in range(len(data.noisy)):
        out = predict_image(trained, data.noisy[i][None])["denoised"][0]
        noisy_db.append(psnr(data.noisy[i], data.clean[i], data_range=1.0))
        denoised_db.append(psnr(out, data.clean[i], data_range=1.0))
    assert np.mean(denoised_db) > np.mean(noisy_db) + 3.0, (np.mean(noisy_db), np.mean(denoised_db))


# one variant in the fast tier, all four in the slow one (each trains two runs)
@pytest.mark.parametrize("method", [m if m == "n2v2" else pytest.param(m, marks=pytest.mark.slow) for m in FAMILY])
def test_each_variant_trains_resumes_exactly_and_tiles_exactly(method, noisy_stack, tmp_path):
    config = tiny_blind_spot_config(method, noisy_stack, {"psf_sigma": 1.0} if method == "psf-n2v" else None)
    train(config, tmp_path / "full", progress=False)
    train({**config, "train": {**config["train"], "max_steps": 3}}, tmp_path / "half", progress=False)
    resume(tmp_path / "half", {"max_steps": 6}, progress=False)
    full = load_checkpoint(RunFolder(tmp_path / "full").last)["model"]
    half = load_checkpoint(RunFolder(tmp_path / "half").last)["model"]
    for key in full:
        torch.testing.assert_close(full[key], half[key], rtol=0, atol=0, msg=key)

    trained = load_run(tmp_path / "full")
    image = np.random.default_rng(1).normal(100, 10, size=(1, 70, 90)).astype(np.float32)
    options = PredictOptions(estimator=trained.method.estimators[-1])
    whole = predict_image(trained, image, options, tile=4096)
    step, halo = yx_grid(trained)
    tiled = predict_image(trained, image, options, tile=step * 2 + 2 * -(-halo // step) * step)
    assert set(whole) == ({"denoised", "deconvolved"} if method == "psf-n2v" else {"denoised"})
    for name in whole:
        np.testing.assert_allclose(tiled[name], whole[name], rtol=1e-4, atol=1e-3 * float(np.std(whole[name])))


def test_structn2v_auto_mask_is_resolved_recorded_and_told(tmp_path):
    data = make_dataset("mixed", "row_correlated", n=4, shape=(64, 64), seed=2, stripe_sigma=0.15, blur_sigma=3.0)
    path = tmp_path / "rows.tif"
    write_tiff(path, data.noisy, "SYX")
    said = []
    train(tiny_blind_spot_config("structn2v", path, max_steps=1), tmp_path / "run", progress=False,
          say=said.append)
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["struct_mask"]
    assert recorded.startswith("x:") and int(recorded[2:]) >= 3
    said = [line for line in said if not line.startswith("threads: ")]
    assert len(said) == 1 and recorded in said[0] and "auto" in said[0]
    assert recorded in (tmp_path / "run" / "notes.txt").read_text()
    trained = load_run(tmp_path / "run")
    assert len(trained.model.masker.blind_offsets) == int(recorded[2:]) - 1


def test_span_larger_than_the_crop_is_refused_before_training(noisy_stack, tmp_path):
    config = tiny_blind_spot_config("structn2v", noisy_stack, {"struct_mask": "x:41"})
    with pytest.raises(UserError, match="crop"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_psf_n2v_positivity_floor_is_the_normalised_background(noisy_stack, tmp_path):
    config = tiny_blind_spot_config("psf-n2v", noisy_stack, {"background": 0.05}, max_steps=1)
    train(config, tmp_path / "run", progress=False)
    trained = load_run(tmp_path / "run")
    stats = trained.stats
    expected = (0.05 - stats.mean[0]) / stats.std[0]
    assert float(trained.model.positivity_floor[0]) == pytest.approx(expected, rel=1e-6)
    kernel = trained.model.net.psf.kernel
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6) and kernel.shape[-1] == trained.config.model.psf_size


def test_method_training_defaults_apply_unless_given(noisy_stack):
    config = build_config(tiny_blind_spot_config("n2v", noisy_stack))
    assert config.train.lr == pytest.approx(4e-4)
    config = build_config(tiny_blind_spot_config("psf-n2v", noisy_stack, lr=3e-3))
    assert config.train.lr == pytest.approx(3e-3)
    assert build_config({"method": "cosdd", "data": {"paths": ["x"]}, "train": {"max_steps": 1}}).train.lr == 1e-3
    assert dataclasses.is_dataclass(config.model)
