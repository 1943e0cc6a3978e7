"""Every method of the N2V family becomes a package that bioimageio.core validates at default tolerance."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")

# trains four runs and packages them, each validated by bioimageio.core
pytestmark = pytest.mark.slow

from bmz_cosdd.data.io import write_tiff  # noqa: E402
from bmz_cosdd.data.synthetic import make_dataset  # noqa: E402
from bmz_cosdd.errors import UserError  # noqa: E402
from bmz_cosdd.export.package import PackageMeta, package_run  # noqa: E402
from bmz_cosdd.artifacts.package_reader import read_package_descr  # noqa: E402
from bmz_cosdd.inference.predictor import load_run, predict_image  # noqa: E402
from bmz_cosdd.methods.base import ExportOptions, PredictOptions  # noqa: E402
from bmz_cosdd.training.session import train  # noqa: E402
from bmz_cosdd.zoo.package_prediction import PackagePredictor  # noqa: E402
from helpers import tiny_blind_spot_config, yx_grid  # noqa: E402

CITATIONS = {
    "n2v": "10.48550/arXiv.1811.10980",
    "n2v2": "10.48550/arXiv.2211.08512",
    "structn2v": "10.1109/ISBI45749.2020.9098336",
    "psf-n2v": "10.48550/arXiv.2008.08414",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run per method on 80x80 images (a depth-2 U-Net needs tiles of at least 60 px)."""
    root = tmp_path_factory.mktemp("n2v_runs")
    data = make_dataset("blobs", "row_correlated", n=4, shape=(80, 80), seed=4)
    write_tiff(root / "noisy.tif", data.noisy, "SYX")
    for method in CITATIONS:
        model = {"struct_mask": "x:5"} if method == "structn2v" else None
        train(tiny_blind_spot_config(method, root / "noisy.tif", model), root / method, progress=False)
    return root


def _weights(package, fmt, tmp_path):
    with zipfile.ZipFile(package) as zf:
        name = next(n for n in zf.namelist() if fmt in n)
        zf.extract(name, tmp_path)
    return tmp_path / name


@pytest.mark.parametrize("method", list(CITATIONS))
def test_package_validates_with_one_input_one_output_and_its_card(method, runs, tmp_path):
    out = tmp_path / f"{method}.zip"
    result = package_run(runs / method, out, ExportOptions(), PackageMeta(name=f"tiny {method}"), say=lambda m: None, force=True)
    assert result.validation and all(r.passed for r in result.validation), result.validation
    assert {"torchscript", "pytorch_state_dict"} <= set(result.weight_formats)
    # Deterministic networks ship ONNX when it reproduces the test output (it does for these ops).
    assert "onnx" in result.weight_formats, result.notes
    descr = read_package_descr(out)
    assert len(descr.inputs) == 1 and len(descr.outputs) == 1 and str(descr.outputs[0].id) == "denoised"
    trained = load_run(runs / method)
    step, halo = yx_grid(trained)
    size = descr.inputs[0].axes[2].size
    assert size.step == step == 4  # depth 2
    assert size.min >= 2 * halo + 1 and size.min % step == 0
    assert descr.outputs[0].axes[2].halo >= halo
    assert any(str(c.doi) == CITATIONS[method] for c in descr.cite)
    with zipfile.ZipFile(out) as zf:
        card = zf.read(next(n for n in zf.namelist() if n.endswith("README.md"))).decode()
    assert CITATIONS[method] in card and "$" not in card.replace("$ ", "")

    scripted = torch.jit.load(str(_weights(out, "torchscript", tmp_path)))
    x = torch.randn(1, 1, 40, 52)
    with torch.no_grad():
        ours = trained.method.predict(trained.model, x, PredictOptions())["denoised"]
        torch.testing.assert_close(scripted(x), ours, rtol=1e-5, atol=1e-5)
    # an image that fits in one block: the package (through bioimageio.core) and the run predict it alike
    image = 100 + 20 * make_dataset("blobs", "row_correlated", n=1, shape=(70, 90), seed=5).noisy[:1]
    with PackagePredictor(out) as predictor:
        theirs = predictor.predict(image.astype(np.float32))["denoised"]
    ours = predict_image(trained, image.astype(np.float32))["denoised"]
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5 * np.abs(ours).max())


def test_psf_n2v_can_ship_its_deconvolution(runs, tmp_path):
    out = tmp_path / "deconv.zip"
    result = package_run(runs / "psf-n2v", out, ExportOptions(estimator="deconvolved"), say=lambda m: None, force=True)
    assert all(r.passed for r in result.validation)
    descr = read_package_descr(out)
    assert [str(o.id) for o in descr.outputs] == ["deconvolved"]
    trained = load_run(runs / "psf-n2v")
    scripted = torch.jit.load(str(_weights(out, "torchscript", tmp_path)))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        ours = trained.method.predict(trained.model, x, PredictOptions(estimator="deconvolved"))["deconvolved"]
        torch.testing.assert_close(scripted(x), ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options, words", [
    (ExportOptions(estimator="mmse"), "no estimator"),
    (ExportOptions(outputs=("mmse", "std")), "one output"),
])
def test_bad_export_options_are_one_line(runs, tmp_path, options, words):
    with pytest.raises(UserError, match=words):
        package_run(runs / "n2v", tmp_path / "x.zip", options, say=lambda m: None, force=True)
    assert not (tmp_path / "x.zip").exists()


def test_state_dict_weights_rebuild_without_bmz_cosdd(runs, tmp_path):
    """The bundled architecture source alone rebuilds the network (what core does for state-dict weights)."""
    import importlib.util
    import sys

    out = tmp_path / "n2v2.zip"
    package_run(runs / "n2v2", out, validate=False, say=lambda m: None, force=True)
    descr = read_package_descr(out)
    sd = descr.weights.pytorch_state_dict
    source = _weights(out, "architecture", tmp_path)
    spec = importlib.util.spec_from_file_location("bundled_arch", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bundled_arch"] = module
    try:
        spec.loader.exec_module(module)
        net = getattr(module, str(sd.architecture.callable))(**sd.architecture.kwargs)
    finally:
        del sys.modules["bundled_arch"]
    net.load_state_dict(torch.load(_weights(out, "state_dict", tmp_path), weights_only=True))
    assert "bmz_cosdd" not in source.read_text().split('"""', 2)[2].split("# ----")[0]
    trained = load_run(runs / "n2v2")
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 32, 32)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), trained.model.net(x))


def test_images_smaller_than_the_receptive_field_still_package(tmp_path):
    """PSF-N2V's depth-3 U-Net needs 136 px; trained on 48 x 48 images, its stored test image is padded."""
    data = make_dataset("blobs", "poisson_gaussian", n=4, shape=(48, 48), seed=2)
    write_tiff(tmp_path / "small.tif", data.noisy, "SYX")
    config = tiny_blind_spot_config("psf-n2v", tmp_path / "small.tif", {"depth": 3}, max_steps=2)
    config["data"]["crop_size"] = 48
    train(config, tmp_path / "run", progress=False)
    (tmp_path / "small.tif").unlink()  # the run keeps its own test image
    out = tmp_path / "psf.zip"
    result = package_run(tmp_path / "run", out, ExportOptions(), say=lambda m: None, force=True)
    assert all(r.passed for r in result.validation), result.validation
    descr = read_package_descr(out)
    size_min = descr.inputs[0].axes[2].size.min
    assert size_min > 48
    with zipfile.ZipFile(out) as zf:
        card = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".md"))
    assert "extended by reflection to the model's minimum size" in card
