"""The method-agnostic package builder, with a tiny scripted stand-in for a sampling model.

The stand-in behaves like COSDD's exported module as far as packaging is concerned: it
takes a normalised (B, C, Y, X) input, runs a 3x3 convolution and averages N noisy
draws made IN THE GRAPH (``torch.manual_seed`` inside ``forward``, noise drawn on the
CPU then moved to the input's device), so bioimageio.core reproduces it exactly.
``tests/zoo/test_validate.py`` loads the helpers of this file.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import write_zip
import torch
import yaml

pytest.importorskip("bioimageio.core")

from bmz_cosdd.errors import UserError  # noqa: E402
from bmz_cosdd.artifacts.package_reader import read_package_descr  # noqa: E402
from bmz_cosdd.export import package_zip  # noqa: E402
from bmz_cosdd.export.package_content import Author, PackageContent, check_content  # noqa: E402
from bmz_cosdd.export.package_zip import build_package  # noqa: E402

STANDIN_SOURCE = '''\
"""Stand-ins for a sampling denoiser (bmz-cosdd tests): torch only, self-contained."""
from typing import List, Tuple

import torch
from torch import nn


class StandIn(nn.Module):
    """3x3 conv plus seeded Gaussian noise, averaged over ``n_samples`` draws."""

    def __init__(self, n_channels: int = 1, n_samples: int = 4, seed: int = 0, noise: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(n_channels, n_channels, 3, padding=1)
        self.n_samples = n_samples
        self.seed = seed
        self.noise = noise

    def draws(self, x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(self.seed)
        y = self.conv(x)
        out: List[torch.Tensor] = []
        for _ in range(self.n_samples):
            eps = torch.randn(y.shape, dtype=y.dtype)  # on the CPU: same stream on every device
            out.append(y + self.noise * eps.to(x.device))
        return torch.stack(out, dim=1)  # (B, N, C, Y, X)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.draws(x).mean(dim=1)


class StandInFull(StandIn):
    """Outputs mmse, std and the samples (B, N, C, Y, X)."""

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.draws(x)
        return s.mean(dim=1), s.std(dim=1), s


class StandInBuffer(nn.Module):
    """Noise from a fixed buffer (no RNG at run time): the ONNX-friendly variant."""

    def __init__(self, n_channels: int = 1, n_samples: int = 4, max_size: int = 96, noise: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(n_channels, n_channels, 3, padding=1)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("eps", torch.randn(n_samples, n_channels, max_size, max_size, generator=g))
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps[:, :, : x.shape[2], : x.shape[3]]
        return self.conv(x) + self.noise * eps.mean(dim=0, keepdim=True)


class Identity(nn.Module):
    """Returns its input: the package's pre/postprocessing must then be an exact round trip."""

    def __init__(self, n_channels: int = 1):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale[None, :, None, None]
'''

SIZE = 64  # test image side
SIZE_MIN, SIZE_STEP, HALO = 16, 8, 4


def standin_module(folder: Path):
    """Write the stand-in source to ``folder`` and import it (a fresh module per folder)."""
    path = folder / "standin_arch.py"
    path.write_text(STANDIN_SOURCE)
    name = f"bmz_standin_{abs(hash(str(folder)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module, path


def make_content(
    folder: Path,
    cls_name: str = "StandIn",
    outputs: tuple[str, ...] = ("mmse",),
    n_channels: int = 1,
    n_samples: int = 4,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    onnx: bool = False,
    state_dict: bool = True,
) -> PackageContent:
    """Script a stand-in into ``folder`` and describe it as package content."""
    folder.mkdir(parents=True, exist_ok=True)
    module, source = standin_module(folder)
    kwargs = {"n_channels": n_channels}
    if cls_name != "Identity":
        kwargs["n_samples"] = n_samples
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = getattr(module, cls_name)(**kwargs).eval()
    torch.jit.script(net).save(str(folder / "ts.pt"))
    torch.save(net.state_dict(), folder / "sd.pt")
    onnx_path = None
    if onnx:
        onnx_path = folder / "weights.onnx"
        dyn = {0: "b", 2: "y", 3: "x"}
        with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated (still works)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                net, (torch.zeros(1, n_channels, SIZE, SIZE),), str(onnx_path), opset_version=17, dynamo=False,
                input_names=["input"], output_names=["output"], dynamic_axes={"input": dyn, "output": dyn},
            )
    mean = mean if mean is not None else [100.0 + 10 * i for i in range(n_channels)]
    std = std if std is not None else [20.0 + 5 * i for i in range(n_channels)]
    rng = np.random.default_rng(0)
    raw = np.asarray(mean)[None, :, None, None] + np.asarray(std)[None, :, None, None] * rng.standard_normal(
        (1, n_channels, SIZE, SIZE)
    )
    np.save(folder / "test_input.npy", raw.astype(np.float32))
    (folder / "README.md").write_text("# Stand-in\n\nA test model.\n\n## Validation\n\nNone, it is a test.\n")
    from PIL import Image

    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(folder / "cover.png")
    return PackageContent(
        name="Stand-in denoiser",
        description="A tiny stand-in for a sampling denoiser (tests only).",
        authors=[Author(name="Test Person", affiliation="Nowhere")],
        version="0.1.0",
        license="MIT",
        tags=["denoising", "test"],
        cite=[("Salmon & Krull, WACV 2025", "10.48550/arXiv.2310.07887")],
        documentation=folder / "README.md",
        covers=[folder / "cover.png"],
        n_channels=n_channels,
        size_min=SIZE_MIN,
        size_step=SIZE_STEP,
        halo=HALO,
        mean=mean,
        std=std,
        outputs=list(outputs),
        n_samples=n_samples if "samples" in outputs else None,
        test_input=folder / "test_input.npy",
        torchscript=folder / "ts.pt",
        state_dict=folder / "sd.pt" if state_dict else None,
        architecture_source=source if state_dict else None,
        architecture_callable=cls_name if state_dict else None,
        architecture_kwargs=kwargs,
        onnx=onnx_path,
        pytorch_version=torch.__version__,
        config={"method": "stand-in", "samples": n_samples, "stats": {"mean": mean, "std": std}},
    )


def rdf_of(package: Path) -> dict:
    with zipfile.ZipFile(package) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


def block_network(monkeypatch) -> list:
    """Make every socket connection fail; return the list of attempts."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    return block_network(monkeypatch)


@pytest.fixture(scope="module")
def default_package(tmp_path_factory) -> tuple[PackageContent, Path]:
    folder = tmp_path_factory.mktemp("default")
    content = make_content(folder / "src")
    return content, build_package(content, folder / "standin.bioimageio.zip")


# --------------------------------------------------------------------------- building


def test_default_package_has_one_input_one_output_bcyx(default_package):
    content, package = default_package
    descr = read_package_descr(package)
    assert len(descr.inputs) == 1 and len(descr.outputs) == 1
    assert str(descr.outputs[0].id) == "mmse"
    # spec 0.5 normalises the ids b and c to batch and channel; consumers map them back
    for tensor in (descr.inputs[0], descr.outputs[0]):
        assert [str(a.id) for a in tensor.axes] == ["batch", "channel", "y", "x"]
        assert "".join(str(a.id)[0] for a in tensor.axes) == "bcyx"
    size = descr.inputs[0].axes[2].size
    assert (size.min, size.step) == (SIZE_MIN, SIZE_STEP)
    assert [a.halo for a in descr.outputs[0].axes[2:]] == [HALO, HALO]
    assert str(descr.outputs[0].axes[2].size.tensor_id) == "input"
    assert descr.weights.torchscript is not None and descr.weights.pytorch_state_dict is not None
    assert descr.weights.onnx is None
    assert str(descr.weights.torchscript.pytorch_version) == torch.__version__.split("+")[0]
    assert descr.weights.torchscript.parent == "pytorch_state_dict"
    assert descr.weights.pytorch_state_dict.parent is None
    assert str(descr.weights.pytorch_state_dict.architecture.callable) == "StandIn"
    assert descr.config.bmz_cosdd["method"] == "stand-in"
    assert not descr.config.bioimageio.reproducibility_tolerance  # default tolerance, never loosened
    assert all(a.github_user is None for a in descr.authors)


def test_package_files_and_test_tensors(default_package):
    content, package = default_package
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        test_input = np.load(zf.open("test_input.npy"))
        test_output = np.load(zf.open("test_output_mmse.npy"))
    assert {"rdf.yaml", "README.md", "cover0.png", "weights_torchscript.pt", "weights_state_dict.pt",
            "standin_arch.py", "test_input.npy", "sample_input.tif", "test_output_mmse.npy",
            "sample_output_mmse.tif"} <= names
    assert test_input.dtype == test_output.dtype == np.float32
    assert test_output.shape == test_input.shape == (1, 1, SIZE, SIZE)
    np.testing.assert_array_equal(test_input, np.load(content.test_input))
    # the sample input (deepImageJ's check) is the test input
    import tifffile

    with zipfile.ZipFile(package) as zf:
        sample = tifffile.imread(zf.open("sample_input.tif"))
    np.testing.assert_array_equal(sample.reshape(test_input.shape), test_input)
    # the output is the stand-in's, in raw intensities
    module, _ = standin_module(content.torchscript.parent)
    net = module.StandIn(n_channels=1, n_samples=4)
    net.load_state_dict(torch.load(content.state_dict, weights_only=True))
    normalised = (torch.from_numpy(test_input).double() - 100.0) / 20.0
    with torch.no_grad(), torch.random.fork_rng():
        expected = net(normalised.float()).double() * 20.0 + 100.0
    np.testing.assert_allclose(test_output, expected.numpy(), rtol=1e-5, atol=1e-4)


def test_preprocessing_undoes_core_eps(default_package):
    _, package = default_package
    meta = rdf_of(package)
    pre = [p for p in meta["inputs"][0]["preprocessing"] if p["id"] == "fixed_zero_mean_unit_variance"]
    assert pre[0]["kwargs"]["mean"] == 100.0
    # core computes (x - mean) / (std + 1e-6): the stored std is the training std minus 1e-6
    assert pre[0]["kwargs"]["std"] == pytest.approx(20.0 - 1e-6, abs=1e-12)
    post = [p for p in meta["outputs"][0]["postprocessing"] if p["id"] == "scale_linear"]
    assert post[0]["kwargs"] == {"gain": 20.0, "offset": 100.0}
    assert meta["inputs"][0]["data"]["type"] == meta["outputs"][0]["data"]["type"] == "float32"


def test_identity_round_trip_is_exact_per_channel(tmp_path):
    """With per-channel statistics an identity model gives back its input through core."""
    content = make_content(tmp_path / "src", "Identity", outputs=("denoised",), n_channels=2,
                           mean=[1000.0, 3.0], std=[250.0, 0.01])
    package = build_package(content, tmp_path / "identity.zip")
    meta = rdf_of(package)
    pre = meta["inputs"][0]["preprocessing"][1]["kwargs"]
    assert pre["axis"] == "channel" and pre["std"] == pytest.approx([250.0 - 1e-6, 0.01 - 1e-6], abs=1e-12)
    with zipfile.ZipFile(package) as zf:
        x = np.load(zf.open("test_input.npy"))
        y = np.load(zf.open("test_output_denoised.npy"))
    np.testing.assert_allclose(y, x, rtol=2e-6, atol=0)


def test_full_outputs_with_index_axis(tmp_path):
    content = make_content(tmp_path / "src", "StandInFull", outputs=("mmse", "std", "samples"), n_samples=3)
    package = build_package(content, tmp_path / "full.zip")
    descr = read_package_descr(package)
    assert [str(t.id) for t in descr.outputs] == ["mmse", "std", "samples"]
    samples = descr.outputs[2]
    assert [str(a.id) for a in samples.axes] == ["batch", "index", "channel", "y", "x"]
    assert samples.axes[1].size == 3
    meta = rdf_of(package)
    gains = {o["id"]: o["postprocessing"][0]["kwargs"] for o in meta["outputs"]}
    assert gains == {"mmse": {"gain": 20.0, "offset": 100.0}, "std": {"gain": 20.0, "offset": 0.0},
                     "samples": {"gain": 20.0, "offset": 100.0}}
    with zipfile.ZipFile(package) as zf:
        mmse, std, s = (np.load(zf.open(f"test_output_{k}.npy")) for k in ("mmse", "std", "samples"))
    assert s.shape == (1, 3, 1, SIZE, SIZE)
    np.testing.assert_allclose(s.mean(axis=1), mmse, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(s.std(axis=1, ddof=1), std, rtol=1e-3, atol=1e-3)


def test_build_keeps_callers_rng(tmp_path):
    content = make_content(tmp_path / "src")
    torch.manual_seed(123)
    np.random.seed(5)
    expected_t, expected_n = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(5)
    build_package(content, tmp_path / "m.zip")
    assert torch.equal(torch.rand(3), expected_t)
    assert np.array_equal(np.random.rand(3), expected_n)


def test_offline_with_github_user_and_git_repo(tmp_path, _offline):
    content = make_content(tmp_path / "src")
    content = replace(content, authors=[Author("Test Person", github_user="no-such-user-bmz-cosdd")],
                      git_repo="https://github.com/example-org/bmz-cosdd")
    package = build_package(content, tmp_path / "m.zip")
    meta = rdf_of(package)
    assert meta["authors"] == [{"name": "Test Person", "github_user": "no-such-user-bmz-cosdd"}]
    assert meta["git_repo"] == "https://github.com/example-org/bmz-cosdd"
    assert _offline == []  # not one connection attempted


# --------------------------------------------------------------------------- content rules


@pytest.mark.parametrize("size_min, halo, ok", [(16, 7, True), (16, 8, False), (8, 4, False), (9, 4, True)])
def test_min_minus_two_halo_at_least_one(tmp_path, size_min, halo, ok, default_package):
    content = replace(default_package[0], size_min=size_min, size_step=1, halo=halo)
    if ok:
        check_content(content)
    else:
        with pytest.raises(ValueError, match="2\\*halo"):
            check_content(content)


def test_halo_rule_enforced_by_build_package(tmp_path, default_package):
    content = replace(default_package[0], size_min=8, size_step=8, halo=4)
    with pytest.raises(ValueError, match="2\\*halo"):
        build_package(content, tmp_path / "m.zip")
    assert not list(tmp_path.iterdir())


def test_content_rules(tmp_path, default_package):
    base = default_package[0]
    bad_doc = tmp_path / "doc.md"
    bad_doc.write_text("# Model\n\nno such section\n")
    wrong_shape = tmp_path / "x.npy"
    np.save(wrong_shape, np.zeros((1, 1, 60, 64), np.float32))
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.zeros(1), "meta": {"step": 3}}, pickled)
    pickled_obj = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(1), "opt": object.__new__(Author)}, pickled_obj)
    cases = [
        (dict(std=[1e-6]), "std must be"),
        (dict(mean=[1.0, 2.0]), "mean and std"),
        (dict(outputs=["std", "mmse", "mmse"]), "outputs"),
        (dict(outputs=["denoised", "std"]), "outputs"),
        (dict(outputs=["mmse", "samples"], n_samples=None), "n_samples"),
        (dict(documentation=bad_doc), "Validation"),
        (dict(test_input=wrong_shape), "k\\*8"),
        (dict(pytorch_version="latest"), "plain release"),
        (dict(state_dict=pickled_obj), "weights_only"),
        (dict(state_dict=pickled), "tensors only"),
        (dict(name="x/y"), "name"),
        (dict(config={"path": object()}), "plain YAML"),
        (dict(torchscript=tmp_path / "missing.pt"), "not found"),
    ]
    for change, words in cases:
        with pytest.raises(ValueError, match=words):
            check_content(replace(base, **change))
    check_content(replace(base, pytorch_version="2.13.0+cpu", config={"p": Path("a"), "t": (1, 2)}))


def test_failed_build_leaves_nothing(tmp_path, default_package, monkeypatch):
    import bioimageio.spec._package as spec_package

    content = default_package[0]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "model.zip").write_bytes(b"old")
    work = tmp_path / "work"
    real_write_zip = spec_package.write_zip

    def write_half_then_fail(path, content, **kwargs):
        real_write_zip(path, dict(list(content.items())[:3]), **kwargs)
        assert Path(path).exists() and Path(path).parent == out_dir
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(spec_package, "write_zip", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        build_package(content, out_dir / "model.zip", work_dir=work)
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.zip"]
    assert (out_dir / "model.zip").read_bytes() == b"old"
    assert not list(work.iterdir())  # the staging folder is gone too

    monkeypatch.setattr(package_zip, "core_test_outputs", lambda descr: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        build_package(content, out_dir / "new.zip", work_dir=work)
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.zip"]
    assert not list(work.iterdir())


# --------------------------------------------------------------------------- reading


def test_read_package_descr_rejects_bad_files(tmp_path, default_package):
    _, good = default_package
    not_zip = tmp_path / "notzip.zip"
    not_zip.write_text("hello")
    evil = write_zip(tmp_path / "evil.zip", {"rdf.yaml": "type: model", "../evil": "x"})
    absolute = tmp_path / "absolute.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        info = zipfile.ZipInfo("rdf.yaml")
        zf.writestr(info, "type: model")
        info = zipfile.ZipInfo("x")
        info.filename = "/etc/evil"
        zf.writestr(info, "x")
    nested_evil = write_zip(tmp_path / "nested.zip", {"rdf.yaml": "type: model", "a/../../evil": "x"})
    no_rdf = write_zip(tmp_path / "nordf.zip", {"readme.txt": "x"})
    broken_rdf = tmp_path / "broken.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken_rdf, "w") as zf:
        for name in src.namelist():
            data = src.read(name)
            if name == "rdf.yaml":
                data = data.replace(b"type: model", b"type: modell")
            zf.writestr(name, data)
    cases = [
        (tmp_path / "missing.zip", "not found"),
        (tmp_path, "not a file"),
        (not_zip, "not a zip"),
        (evil, "escapes"),
        (absolute, "escapes"),
        (nested_evil, "escapes"),
        (no_rdf, "model"),
        (broken_rdf, "not a (valid )?bioimage.io model"),
    ]
    for path, words in cases:
        with pytest.raises(UserError, match=words) as exc:
            read_package_descr(path)
        assert len(str(exc.value).splitlines()) == 1, str(exc.value)
    assert str(read_package_descr(good).name) == "Stand-in denoiser"
