"""A tiny trained COSDD run becomes a package that bioimageio.core validates at default tolerance."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")

from bmz_cosdd.errors import UserError  # noqa: E402
from bmz_cosdd.export.package import PackageMeta, package_run  # noqa: E402
from bmz_cosdd.inference.predictor import load_run  # noqa: E402
from bmz_cosdd.methods.base import ExportOptions, PredictOptions  # noqa: E402


@pytest.fixture(scope="module")
def package(trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "cosdd.zip"
    meta = PackageMeta(name="tiny COSDD", description="test package", authors=[{"name": "Test Person"}])
    result = package_run(trained_run, out, ExportOptions(samples=8, sample_batch=3, seed=7), meta, say=lambda m: None, force=True)
    assert all(r.passed for r in result.validation), result.validation
    assert {r.weight_format for r in result.validation} >= {"torchscript", "pytorch_state_dict"}
    return out


@pytest.mark.slow
def test_default_package_has_one_input_one_output_bcyx(package):
    from bmz_cosdd.artifacts.package_reader import read_package_descr

    descr = read_package_descr(package)
    assert len(descr.inputs) == 1 and len(descr.outputs) == 1
    for tensor in (descr.inputs[0], descr.outputs[0]):
        # spec 0.5.12 stores the batch and channel ids as "batch" and "channel" (consumers map them to b, c)
        assert "".join(str(a.id)[0] for a in tensor.axes) == "bcyx"
        assert [a.type for a in tensor.axes] == ["batch", "channel", "space", "space"]
    assert descr.weights.torchscript is not None and descr.weights.pytorch_state_dict is not None
    assert str(descr.weights.torchscript.pytorch_version) == torch.__version__.split("+")[0]
    stored = descr.config.model_dump()["bmz_cosdd"]
    assert stored["method"] == "cosdd" and stored["export"]["seed"] == 7 and stored["normalisation"]["std"]


@pytest.mark.slow
def test_the_card_states_the_measured_cost_of_a_512_image(package):
    from bmz_cosdd.artifacts.package_reader import read_package_descr

    timing = read_package_descr(package).config.model_dump()["bmz_cosdd"]["cpu_time_512"]
    assert timing["shape"] == [1, 1, 512, 512] and timing["samples"] == 8
    assert timing["cpu_s"] > 0 and timing["wall_s"] > 0 and timing["threads"] >= 1
    with zipfile.ZipFile(package) as zf:
        card = zf.read(next(n for n in zf.namelist() if n.endswith("README.md"))).decode()
    speed = card.split("## Speed")[1].split("##")[0]
    assert f"one 512 x 512 image (8 posterior samples and their mean) took {timing['cpu_s']:.1f} CPU-seconds" in speed


@pytest.mark.slow
def test_scripted_mmse_equals_in_framework_mmse(package, trained_run, tmp_path):
    with zipfile.ZipFile(package) as zf:
        name = next(n for n in zf.namelist() if "torchscript" in n)
        zf.extract(name, tmp_path)
    scripted = torch.jit.load(str(tmp_path / name))
    trained = load_run(trained_run)
    x = torch.randn(1, 1, 48, 64)
    with torch.no_grad():
        exported = scripted(x)
        ours = trained.method.predict(trained.model, x, PredictOptions(samples=8, sample_batch=3, seed=7))["mmse"]
    torch.testing.assert_close(exported, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_give_identical_outputs(package, tmp_path):
    with zipfile.ZipFile(package) as zf:
        name = next(n for n in zf.namelist() if "torchscript" in n)
        zf.extract(name, tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(1, 1, 48, 48)).astype(np.float32))
    code = (
        "import sys, numpy as np, torch; m = torch.jit.load(sys.argv[1]); "
        "x = torch.from_numpy(np.load(sys.argv[2])); np.save(sys.argv[3], m(x).detach().numpy()); "
        "np.save(sys.argv[3] + '.again.npy', m(x).detach().numpy())"
    )
    for i in (1, 2):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name), str(tmp_path / "x.npy"),
                        str(tmp_path / f"y{i}.npy")], check=True, timeout=120)
    y1, y2 = np.load(tmp_path / "y1.npy"), np.load(tmp_path / "y2.npy")
    assert np.array_equal(y1, y2)
    assert np.array_equal(y1, np.load(tmp_path / "y1.npy.again.npy"))


def test_packaging_failure_leaves_nothing(trained_run, tmp_path, monkeypatch):
    import bmz_cosdd.export.validate as validate
    from bmz_cosdd.export.validate import FormatResult

    monkeypatch.setattr(validate, "validate_package",
                        lambda path, device=None: [FormatResult("torchscript", False, ["mismatch"])])
    out = tmp_path / "model.zip"
    out.write_bytes(b"old")
    with pytest.raises(UserError, match="failed bioimageio.core's test"):
        package_run(trained_run, out, ExportOptions(samples=2), say=lambda m: None, force=True)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


def test_bad_export_options(trained_run, tmp_path):
    with pytest.raises(UserError, match="unsupported outputs"):
        package_run(trained_run, tmp_path / "m.zip", ExportOptions(outputs=("std",)), say=lambda m: None, force=True)
    with pytest.raises(UserError, match=".zip"):
        package_run(trained_run, tmp_path / "m.tar", ExportOptions(), say=lambda m: None, force=True)
    assert not list(tmp_path.iterdir())


def _seam_profile(image: np.ndarray) -> np.ndarray:
    """Mean absolute step between neighbouring columns and rows (a seam is a spike)."""
    return np.concatenate([np.abs(np.diff(image, axis=-1)).mean(axis=-2), np.abs(np.diff(image, axis=-2)).mean(axis=-1)])


@pytest.mark.slow
def test_predict_through_package_in_blocks_has_no_seams(package, noisy_stack, tmp_path):
    import tifffile

    from bmz_cosdd.data.io import write_tiff
    from bmz_cosdd.zoo.package_prediction import predict_files_with_package

    image = np.tile(tifffile.imread(noisy_stack)[0], (4, 4))[:180, :170]  # larger than one block
    path = tmp_path / "big.tif"
    write_tiff(path, image, "YX")
    whole = predict_files_with_package(package, [path], "YX", tmp_path / "whole", block=1024)
    blocked = predict_files_with_package(package, [path], "YX", tmp_path / "blocked", block=96)
    a, b = tifffile.imread(whole[0]), tifffile.imread(blocked[0])
    assert a.shape == b.shape == image.shape
    assert np.isfinite(b).all()
    # no spike in the neighbour differences where blocks meet
    assert _seam_profile(b).max() < 1.5 * _seam_profile(a).max()
    assert np.abs(a - b).mean() < 0.25 * np.abs(image - a).mean()


@pytest.mark.slow
def test_bad_packages_and_formats(package, tmp_path, noisy_stack, capsys):
    from bmz_cosdd.cli import main
    from helpers import write_zip

    def run(args):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        return exc.value.code, capsys.readouterr().err

    not_zip = tmp_path / "notzip.zip"
    not_zip.write_text("hello")
    evil = write_zip(tmp_path / "evil.zip", {"../evil.txt": "x", "rdf.yaml": "type: model"})
    no_model = write_zip(tmp_path / "nomodel.zip", {"readme.txt": "x"})
    tiny = tmp_path / "tiny.tif"
    from bmz_cosdd.data.io import write_tiff

    write_tiff(tiny, np.ones((8, 8), np.float32), "YX")
    cases = [
        (["validate", not_zip], "zip"),
        (["validate", evil], "escape"),
        (["validate", no_model], "model"),
        (["predict", package, noisy_stack, "--axes", "SYX", "--weight-format", "keras", "--out", tmp_path / "o"],
         "unknown weight format"),
        (["package", tmp_path / "no_run", "--out", tmp_path / "m.zip"], "no such run folder"),
    ]
    for args, words in cases:
        code, err = run(args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and words in err.lower(), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.zip").exists()
    # an image under the model's minimum size is extended by reflection, as a run folder does, and cropped back
    import tifffile

    from bmz_cosdd.zoo.package_prediction import predict_files_with_package

    written = predict_files_with_package(package, [tiny], "YX", tmp_path / "small")
    out = tifffile.imread(written[0])
    assert out.shape == (8, 8) and np.isfinite(out).all()


@pytest.mark.slow
def test_train_from_package_starts_from_its_weights(package, noisy_stack, tmp_path):
    from bmz_cosdd.artifacts.package_reader import read_training_state
    from bmz_cosdd.artifacts.run_folder import RunFolder
    from bmz_cosdd.training.checkpoints import load_checkpoint
    from bmz_cosdd.training.session import train
    from helpers import tiny_config

    state = read_training_state(package)
    config = tiny_config(noisy_stack, max_steps=1, lr=1e-12)
    config["model"] = {"preset": "tiny"}  # replaced by the package's architecture
    train(config, tmp_path / "ft", progress=False, init_from=package)
    weights = load_checkpoint(RunFolder(tmp_path / "ft").last)["model"]
    for key, value in state["model"].items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="not a zip|zip"):
        bad = tmp_path / "bad.zip"
        bad.write_text("x")
        train(config, tmp_path / "ft2", progress=False, init_from=bad)


@pytest.mark.slow
def test_direct_estimator_package_with_onnx(trained_run, tmp_path):
    out = tmp_path / "direct.zip"
    result = package_run(trained_run, out, ExportOptions(estimator="direct"), say=lambda m: None, force=True)
    assert out.is_file()
    assert all(r.passed for r in result.validation), result.validation
    tested = {r.weight_format for r in result.validation}
    assert {"torchscript", "pytorch_state_dict"} <= tested
    # the direct estimator is deterministic: its ONNX export reproduces the test output and ships
    assert "onnx" in tested, result.notes
    assert not any("ONNX left out" in n for n in result.notes)


@pytest.mark.slow
def test_std_and_samples_outputs_validate(trained_run, tmp_path):
    from bmz_cosdd.artifacts.package_reader import read_package_descr

    out = tmp_path / "samples.zip"
    result = package_run(trained_run, out, ExportOptions(outputs=("mmse", "std", "samples"), samples=4),
                         say=lambda m: None, force=True)
    assert all(r.passed for r in result.validation), result.validation
    descr = read_package_descr(out)
    assert [str(o.id) for o in descr.outputs] == ["mmse", "std", "samples"]
    assert [str(a.id) for a in descr.outputs[2].axes][:3] == ["batch", "index", "channel"]


@pytest.mark.slow
def test_scripted_weights_avoid_ops_torch_2_0_cannot_load(package, tmp_path):
    """deepImageJ runs libtorch 2.0: scripted code must not compile F.interpolate (it drags in new ops)."""
    with zipfile.ZipFile(package) as zf:
        name = next(n for n in zf.namelist() if "torchscript" in n)
        code = b"".join(zf.read(n) for n in [name])
    with zipfile.ZipFile(io.BytesIO(code)) as inner:
        text = "".join(inner.read(n).decode(errors="ignore") for n in inner.namelist() if n.endswith(".py"))
    assert "upsample_bilinear2d" in text
    for op in ("_upsample_lanczos2d_aa", "_upsample_bicubic2d_aa", "interpolate", "aten::Generator", "Generator("):
        assert op not in text, op
