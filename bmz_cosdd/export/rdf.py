"""Build a bioimage.io model package (model description format 0.5) for any method.

The description is built with bioimageio.spec's Python classes (never hand-written
YAML). The package's test outputs are produced by running its own TorchScript weights
through bioimageio.core's prediction pipeline, so pre- and postprocessing are exactly
core's and ``bioimageio.core.test_model`` reproduces them at its default tolerance.

Conventions of the package
--------------------------
- One input ``input`` with axes ``batch, channel, y, x`` (``batch, channel, z, y, x``
  for a 3-D model; spec 0.5 normalises the
  single letters ``b`` and ``c`` to ``batch`` and ``channel``; consumers such as
  deepImageJ map them back to ``b`` and ``c``).
- Outputs in the order of :attr:`PackageContent.outputs`: intensity outputs (``mmse``,
  ``denoised``) and ``std`` share the input's axes; ``samples`` has the axes
  ``batch, index, channel, [z,] y, x``. Spatial output axes reference the input's axes and
  carry the halo.
- Preprocessing ``fixed_zero_mean_unit_variance`` with the training statistics and
  postprocessing ``scale_linear`` back to raw intensities. bioimageio.core and
  deepImageJ (JDLL) both compute ``(x - mean) / (std + 1e-6)``; the package therefore
  stores ``std - 1e-6`` so that consumers divide by exactly the training ``std``, and the
  postprocessing multiplies by the training ``std``. The round trip is exact.
- The scripted module takes the normalised ``(B, C, [Z,] Y, X)`` float32 input and returns
  one tensor (one output) or a tuple of tensors in the order of ``outputs``.

Examples
--------
>>> content = PackageContent(...)                        # doctest: +SKIP
>>> build_package(content, Path("model.bioimageio.zip"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import tempfile
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, NoReturn, Sequence

import numpy as np

from bmz_cosdd.errors import UserError

#: Output names a stochastic model may offer, in this order; the first given is the main one.
STOCHASTIC_OUTPUTS = ("mmse", "std", "samples")
#: The one output a deterministic model may have (PSF-N2V can ship its deconvolution instead).
DETERMINISTIC_OUTPUTS = ("denoised", "deconvolved")
#: What bioimageio.core and JDLL add to ``std`` in ``fixed_zero_mean_unit_variance``.
CORE_STD_EPS = 1e-6
#: Highest ONNX opset deepImageJ runs.
MAX_ONNX_OPSET = 18
#: File name of the description inside a package.
RDF_NAME = "rdf.yaml"

INPUT_ID = "input"
_COVER_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_+\- ()]{5,128}$")
_RELEASE = re.compile(r"^\d+(\.\d+){1,2}$")
_VALIDATION_HEADING = re.compile(r"^\s{0,3}#+.*validation", re.IGNORECASE | re.MULTILINE)
# GitHub's rule for user names: 1-39 letters, digits or single hyphens, not starting or ending with a hyphen.
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")


def check_github_user(name: Any, option: str = "--maintainer") -> str:
    """``name`` stripped, if it is a well-formed GitHub user name; else a one-line UserError naming ``option``.

    Checked here, offline: bioimageio.spec would look an unknown name up on the GitHub API (see
    :func:`offline_bioimageio`, which lets the names that pass this check through as known).
    """
    text = str(name).strip() if name is not None else ""
    if text.startswith("@"):
        text = text[1:]
    if not _GITHUB_USER.match(text):
        raise UserError(
            f"{option} {str(name)!r} is not a GitHub user name (1-39 letters, digits or single hyphens, not"
            " starting or ending with a hyphen)"
        )
    return text


@dataclass
class Author:
    """A person credited in the package (``github_user`` only if known: it is looked up online)."""

    name: str
    affiliation: str | None = None
    github_user: str | None = None
    orcid: str | None = None


@dataclass
class Maintainer:
    """Who answers for the package on bioimage.io: a GitHub user name (checked offline) and optionally a name."""

    github_user: str
    name: str | None = None


@dataclass
class PackageContent:
    """Everything a package holds, independent of the method that made it.

    Parameters
    ----------
    name, description
        Human-readable name (letters, digits, ``_+-()`` and spaces, 5-128 characters)
        and one-paragraph description.
    authors
        Creators of the package.
    version
        Version of the model (not of this library), e.g. ``"1.0"``.
    license
        SPDX identifier, e.g. ``"MIT"``.
    tags
        Free tags, e.g. ``["denoising", "2d"]``.
    cite
        ``(text, doi)`` pairs.
    documentation
        Markdown model card; must contain a heading with "Validation".
    covers
        Cover images (png, jpg or gif).
    n_channels
        Channels of input and outputs.
    size_min, size_step, halo
        Spatial (y and x, and z in 3-D) sizes accepted are ``size_min + k * size_step``;
        ``halo`` pixels each side of a tile are context. ``size_min - 2 * halo >= 1``.
    mean, std
        Per-channel training statistics (raw intensities, float64).
    outputs
        Subset, in order, of ``["mmse", "std", "samples"]``, or one of ``["denoised"]``, ``["deconvolved"]``.
    n_samples
        Size of the ``index`` axis of ``samples`` (required with ``samples``).
    test_input
        ``.npy`` of raw intensities, shape ``(1, C, Y, X)`` (``(1, C, Z, Y, X)`` in 3-D),
        float32; its spatial sizes must be sizes the model accepts.
    torchscript
        Scripted module: normalised ``(B, C, Y, X)`` in, a tensor or a tuple of tensors
        (in the order of ``outputs``, in normalised units) out.
    state_dict
        ``torch.save``'d state dict of the same module (tensors only: it is loaded with
        ``weights_only=True``), or None.
    architecture_source, architecture_callable, architecture_kwargs
        A self-contained Python file (imports only torch and the standard library)
        defining ``architecture_callable``; ``callable(**architecture_kwargs)`` builds
        the module the state dict belongs to. Required with ``state_dict``.
    onnx
        ONNX export of the same computation (opset <= 18), or None.
    pytorch_version
        Plain release the weights were made with, e.g. ``"2.13.0"`` (``+cpu`` is stripped).
    config
        Goes to ``config["bmz_cosdd"]`` (training config, statistics, sampling settings);
        plain YAML values only.
    git_repo
        Source repository URL, or None.
    attachments
        Extra files shipped in the package (e.g. the run's config), or none.
    spatial_dims
        2 (axes y, x) or 3 (axes z, y, x).
    maintainers
        Who maintains the package on bioimage.io (GitHub users); none: spec warns that it names no maintainer.
    """

    name: str
    description: str
    authors: list[Author]
    version: str
    license: str
    tags: list[str]
    cite: list[tuple[str, str]]
    documentation: Path
    covers: list[Path]
    n_channels: int
    size_min: int
    size_step: int
    halo: int
    mean: list[float]
    std: list[float]
    outputs: list[str]
    n_samples: int | None
    test_input: Path
    torchscript: Path
    state_dict: Path | None
    architecture_source: Path | None
    architecture_callable: str | None
    architecture_kwargs: dict
    onnx: Path | None
    pytorch_version: str
    config: dict
    git_repo: str | None = None
    attachments: list[Path] = field(default_factory=list)
    spatial_dims: int = 2
    maintainers: list[Maintainer] = field(default_factory=list)

    @property
    def spatial_axes(self) -> tuple[str, ...]:
        """The package's spatial axis ids, slowest first."""
        return ("z", "y", "x")[3 - self.spatial_dims:]


# --------------------------------------------------------------------------- checks


def _fail(msg: str) -> NoReturn:
    raise ValueError(msg)


def _plain_release(version: str) -> str:
    release = str(version).split("+", 1)[0]
    if not _RELEASE.match(release):
        _fail(f"pytorch_version must be a plain release such as '2.13.0', got {version!r}")
    return release


def _yaml_value(value: Any, where: str) -> Any:
    """Return ``value`` as plain YAML data (dict/list/str/int/float/bool/None)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(f"{where}: non-finite number {value!r} cannot go into the package")
        return value
    if isinstance(value, np.generic):
        return _yaml_value(value.item(), where)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                _fail(f"{where}: key {k!r} is not a string")
            out[k] = _yaml_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_yaml_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _yaml_value(value.tolist(), where)
    _fail(f"{where}: {type(value).__name__} is not a plain YAML value")


def _check_file(path: Path | None, what: str, suffixes: Sequence[str] | None = None) -> Path:
    if path is None or not Path(path).is_file():
        _fail(f"{what} not found: {path}")
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        _fail(f"{what} must be one of {', '.join(suffixes)}: {path}")
    return path


def _onnx_opset(path: Path) -> int:
    try:
        import onnx
    except ImportError:
        _fail("onnx weights need the 'onnx' package (pip install onnx onnxruntime)")

    model = onnx.load(str(path), load_external_data=False)
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not opsets:
        _fail(f"onnx file has no default-domain opset: {path}")
    return int(opsets[0])


def check_content(content: PackageContent) -> None:
    """Raise ValueError with one line for the first problem in ``content``."""
    c = content
    if not _NAME_CHARS.match(c.name):
        _fail(f"name must be 5-128 letters, digits, spaces or _+-(): {c.name!r}")
    if c.n_channels < 1:
        _fail(f"n_channels must be >= 1, got {c.n_channels}")
    if c.spatial_dims not in (2, 3):
        _fail(f"spatial_dims must be 2 or 3, got {c.spatial_dims}")
    if c.size_step < 1 or c.size_min < 1 or c.halo < 0:
        _fail(f"size_min and size_step must be >= 1 and halo >= 0, got {c.size_min}, {c.size_step}, {c.halo}")
    if c.size_min - 2 * c.halo < 1:
        _fail(f"size_min - 2*halo must be >= 1 (bioimage.io rule), got {c.size_min} - 2*{c.halo}")
    if len(c.mean) != c.n_channels or len(c.std) != c.n_channels:
        _fail(f"mean and std need {c.n_channels} values, got {len(c.mean)} and {len(c.std)}")
    for s in c.std:
        if not (math.isfinite(s) and s >= 2 * CORE_STD_EPS):
            _fail(f"std must be finite and >= {2 * CORE_STD_EPS} (core adds {CORE_STD_EPS}), got {s}")
    for m in c.mean:
        if not math.isfinite(m):
            _fail(f"mean must be finite, got {m}")
    outs = list(c.outputs)
    if not (len(outs) == 1 and outs[0] in DETERMINISTIC_OUTPUTS):
        if not outs or len(set(outs)) != len(outs) or any(o not in STOCHASTIC_OUTPUTS for o in outs):
            _fail(
                f"outputs must be a subset of {list(STOCHASTIC_OUTPUTS)} or one of {list(DETERMINISTIC_OUTPUTS)},"
                f" got {outs}"
            )
    if "samples" in outs:
        if c.n_samples is None or c.n_samples < 1:
            _fail(f"n_samples must be >= 1 with a 'samples' output, got {c.n_samples}")
    doc = _check_file(c.documentation, "documentation", (".md",))
    if not _VALIDATION_HEADING.search(doc.read_text(encoding="utf-8")):
        _fail(f"documentation needs a markdown heading with 'Validation': {doc}")
    for cover in c.covers:
        _check_file(cover, "cover", _COVER_SUFFIXES)
    for att in c.attachments:
        _check_file(att, "attachment")
    _check_file(c.test_input, "test input", (".npy",))
    arr = np.load(c.test_input, allow_pickle=False)
    if arr.ndim != 2 + c.spatial_dims or arr.shape[0] != 1 or arr.shape[1] != c.n_channels:
        layout = ", ".join(a.upper() for a in c.spatial_axes)
        _fail(f"test input must have shape (1, {c.n_channels}, {layout}), got {arr.shape}")
    if arr.dtype != np.float32:
        _fail(f"test input must be float32, got {arr.dtype}")
    if not np.isfinite(arr).all():
        _fail("test input contains NaN or infinite values")
    for size in arr.shape[2:]:
        if size < c.size_min or (size - c.size_min) % c.size_step:
            _fail(f"test input spatial sizes must be {c.size_min} + k*{c.size_step}, got {arr.shape[2:]}")
    _check_file(c.torchscript, "torchscript weights")
    _plain_release(c.pytorch_version)
    if c.state_dict is not None:
        _check_file(c.state_dict, "state dict")
        _check_file(c.architecture_source, "architecture source", (".py",))
        if not c.architecture_callable or not c.architecture_callable.isidentifier():
            _fail(f"architecture_callable must be a Python identifier, got {c.architecture_callable!r}")
        import torch

        try:
            state = torch.load(c.state_dict, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure means the same thing here
            _fail(f"state dict does not load with weights_only=True: {type(e).__name__}: {e}".splitlines()[0])
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            _fail("state dict must map parameter names to tensors only")
    if c.onnx is not None:
        _check_file(c.onnx, "onnx weights", (".onnx",))
        opset = _onnx_opset(c.onnx)
        if opset > MAX_ONNX_OPSET:
            _fail(f"onnx opset must be <= {MAX_ONNX_OPSET} (deepImageJ), got {opset}")
    for person in [*c.authors, *c.maintainers]:
        if person.github_user is not None or isinstance(person, Maintainer):
            try:
                clean = check_github_user(person.github_user, "github_user")
            except UserError as e:
                _fail(str(e))
            if clean != person.github_user:
                _fail(f"github_user {person.github_user!r} must be given as {clean!r}")
    for text, doi in c.cite:
        if not text or not doi:
            _fail(f"cite entries need text and doi, got {(text, doi)!r}")
    _yaml_value(c.config, "config")
    _yaml_value(c.architecture_kwargs, "architecture_kwargs")


# --------------------------------------------------------------------------- description


@contextmanager
def offline_bioimageio(github_users: Sequence[str] = ()) -> Iterator[None]:
    """Keep bioimageio.spec and bioimageio.core off the network while inside.

    Everything a local package needs is read from the package itself, but spec, when it
    performs IO checks (which ``bioimageio.core.test_model`` always forces), also

    - sends a request to every URL in the description (``git_repo``, cite ``url``); a
      failure is only a warning, but a black-holed network costs ``http_timeout``
      (10 s) per request;
    - looks every author's ``github_user`` up on the GitHub API; offline that raises.

    Inside this context every synchronous httpx request (spec's only HTTP client) fails
    at once with ``httpx.ConnectError``, and the ``github_users`` given count as known.
    The patch is process-wide: do not run other HTTP work in other threads meanwhile.
    """
    import httpx

    saved_handle = httpx.HTTPTransport.handle_request

    def refuse(self: Any, request: Any) -> Any:
        raise httpx.ConnectError(f"offline: bmz-cosdd does not contact {request.url.host}", request=request)

    try:
        from bioimageio.spec._internal import field_validation as fv

        known: set[str] = fv.KNOWN_GITHUB_USERS
    except (ImportError, AttributeError):  # pragma: no cover - other spec versions
        known = set()
    added = {u.lower() for u in github_users if u and u.lower() not in known}
    known.update(added)
    httpx.HTTPTransport.handle_request = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        httpx.HTTPTransport.handle_request = saved_handle  # type: ignore[method-assign]
        known.difference_update(added)


def _github_users(content: PackageContent) -> list[str]:
    return [a.github_user for a in [*content.authors, *content.maintainers] if a.github_user]


def _maintainer(v0_5: Any, maintainer: Maintainer) -> Any:
    """Only the fields given (spec writes explicit None values into the YAML)."""
    extra = {"name": maintainer.name} if maintainer.name else {}
    return v0_5.Maintainer(github_user=maintainer.github_user, **extra)


def _author(v0_5: Any, author: Author) -> Any:
    """Only the fields given (spec writes explicit None values into the YAML)."""
    fields = {k: getattr(author, k) for k in ("affiliation", "github_user", "orcid")}
    return v0_5.Author(name=author.name, **{k: v for k, v in fields.items() if v})


@contextmanager
def quiet_bioimageio() -> Iterator[None]:
    """Silence bioimageio's loguru logging (DEBUG by default) while inside."""
    from loguru import logger

    logger.disable("bioimageio")
    try:
        yield
    finally:
        logger.enable("bioimageio")


def _channel_names(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _spatial_output_axes(v0_5: Any, halo: int, spatial_axes: Sequence[str]) -> list:
    axes = []
    for aid in spatial_axes:
        size = v0_5.SizeReference(tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId(aid))
        if halo > 0:
            axes.append(v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(aid), size=size, halo=halo))
        else:
            axes.append(v0_5.SpaceOutputAxis(id=v0_5.AxisId(aid), size=size))
    return axes


def _scale_linear(v0_5: Any, gain: Sequence[float], offset: Sequence[float]) -> list:
    """``x * gain + offset`` per channel (nothing if it is the identity)."""
    if all(g == 1.0 for g in gain) and all(o == 0.0 for o in offset):
        return []
    if len(gain) == 1:
        kwargs = v0_5.ScaleLinearKwargs(gain=float(gain[0]), offset=float(offset[0]))
    else:
        kwargs = v0_5.ScaleLinearAlongAxisKwargs(
            axis=v0_5.AxisId("channel"), gain=[float(g) for g in gain], offset=[float(o) for o in offset]
        )
    return [v0_5.ScaleLinearDescr(kwargs=kwargs)]


def _preprocessing(v0_5: Any, mean: Sequence[float], std: Sequence[float]) -> list:
    # core and JDLL divide by (std + 1e-6): store std - 1e-6 so they divide by std.
    stored = [float(s) - CORE_STD_EPS for s in std]
    if len(mean) == 1:
        kwargs = v0_5.FixedZeroMeanUnitVarianceKwargs(mean=float(mean[0]), std=stored[0])
    else:
        kwargs = v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            axis=v0_5.AxisId("channel"), mean=[float(m) for m in mean], std=stored
        )
    return [v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=kwargs)]


_OUTPUT_TEXT = {
    "mmse": "MMSE estimate: mean of the posterior samples (raw intensities)",
    "denoised": "Denoised image (raw intensities)",
    "deconvolved": "Denoised and deconvolved image, before the PSF (raw intensities)",
    "std": "Pixel-wise standard deviation of the posterior samples",
    "samples": "Posterior samples along the index axis (raw intensities)",
}


def _describe(content: PackageContent, files: dict[str, Path], with_test_outputs: bool) -> Any:
    """The ModelDescr of ``content`` whose files are the staged ``files``."""
    from bioimageio.spec.model import v0_5

    c = content
    F = v0_5.FileDescr
    channel_names = _channel_names(c.n_channels)
    f32 = v0_5.IntervalOrRatioDataDescr(type="float32")

    input_axes = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(id=v0_5.AxisId("channel"), channel_names=channel_names),
        *[
            v0_5.SpaceInputAxis(
                id=v0_5.AxisId(aid), size=v0_5.ParameterizedSize(min=c.size_min, step=c.size_step)
            )
            for aid in c.spatial_axes
        ],
    ]
    inputs = [
        v0_5.InputTensorDescr(
            id=v0_5.TensorId(INPUT_ID),
            description="Raw noisy image (intensities as recorded)",
            axes=input_axes,
            test_tensor=F(source=files["test_input"]),
            sample_tensor=F(source=files["sample_input"]),
            data=f32,
            preprocessing=_preprocessing(v0_5, c.mean, c.std),
        )
    ]

    outputs = []
    for name in c.outputs:
        axes: list = [v0_5.BatchAxis()]
        if name == "samples":
            axes.append(v0_5.IndexOutputAxis(id=v0_5.AxisId("index"), size=int(c.n_samples)))
        axes.append(v0_5.ChannelAxis(id=v0_5.AxisId("channel"), channel_names=channel_names))
        axes.extend(_spatial_output_axes(v0_5, c.halo, c.spatial_axes))
        offset = [0.0] * c.n_channels if name == "std" else list(c.mean)
        outputs.append(
            v0_5.OutputTensorDescr(
                id=v0_5.TensorId(name),
                description=_OUTPUT_TEXT[name],
                axes=axes,
                test_tensor=F(source=files[f"test_output_{name}"]) if with_test_outputs else None,
                sample_tensor=F(source=files[f"sample_output_{name}"]) if with_test_outputs else None,
                data=f32,
                postprocessing=_scale_linear(v0_5, list(c.std), offset),
            )
        )

    pytorch_version = v0_5.Version(_plain_release(c.pytorch_version))
    has_sd = c.state_dict is not None
    weights: dict[str, Any] = {
        "torchscript": v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"],
            pytorch_version=pytorch_version,
            parent="pytorch_state_dict" if has_sd else None,
        )
    }
    if has_sd:
        weights["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
            source=files["state_dict"],
            architecture=v0_5.ArchitectureFromFileDescr(
                source=files["architecture_source"],
                callable=v0_5.Identifier(c.architecture_callable),
                kwargs=_yaml_value(c.architecture_kwargs, "architecture_kwargs"),
            ),
            pytorch_version=pytorch_version,
        )
    if c.onnx is not None:
        weights["onnx"] = v0_5.OnnxWeightsDescr(
            source=files["onnx"],
            opset_version=_onnx_opset(c.onnx),
            parent="pytorch_state_dict" if has_sd else "torchscript",
        )

    optional: dict[str, Any] = {}
    if c.git_repo:
        optional["git_repo"] = v0_5.HttpUrl(c.git_repo)
    if files["attachments"]:
        optional["attachments"] = [F(source=p) for p in files["attachments"]]
    if c.maintainers:
        optional["maintainers"] = [_maintainer(v0_5, m) for m in c.maintainers]
    return v0_5.ModelDescr(
        name=c.name,
        description=c.description,
        authors=[_author(v0_5, a) for a in c.authors],
        version=v0_5.Version(str(c.version)),
        license=v0_5.LicenseId(c.license),
        tags=list(c.tags),
        cite=[v0_5.CiteEntry(text=t, doi=v0_5.Doi(d)) for t, d in c.cite],
        documentation=F(source=files["documentation"]),
        covers=[F(source=p) for p in files["covers"]],
        **optional,
        inputs=inputs,
        outputs=outputs,
        weights=v0_5.WeightsDescr(**weights),
        config=v0_5.Config(
            bioimageio=v0_5.BioimageioConfig(),
            bmz_cosdd=_yaml_value(c.config, "config"),
        ),
    )


# --------------------------------------------------------------------------- staging


def _stage(content: PackageContent, stage: Path) -> dict[str, Any]:
    """Copy the content's files into ``stage`` under the names they get in the package."""
    c = content
    files: dict[str, Any] = {}

    def put(key: str, src: Path, name: str) -> None:
        dst = stage / name
        shutil.copyfile(src, dst)
        files[key] = dst

    put("documentation", c.documentation, "README.md")
    files["covers"] = []
    for i, cover in enumerate(c.covers):
        dst = stage / f"cover{i}{Path(cover).suffix.lower()}"
        shutil.copyfile(cover, dst)
        files["covers"].append(dst)
    files["attachments"] = []
    att_dir = stage / "attachments"
    for att in c.attachments:
        att_dir.mkdir(exist_ok=True)
        dst = att_dir / Path(att).name
        if dst.exists():
            _fail(f"two attachments are named {Path(att).name}")
        shutil.copyfile(att, dst)
        files["attachments"].append(dst)
    put("torchscript", c.torchscript, "weights_torchscript.pt")
    if c.state_dict is not None:
        put("state_dict", c.state_dict, "weights_state_dict.pt")
        put("architecture_source", c.architecture_source, Path(c.architecture_source).name)
    if c.onnx is not None:
        put("onnx", c.onnx, "weights.onnx")

    arr = np.ascontiguousarray(np.load(c.test_input, allow_pickle=False), dtype=np.float32)
    files["test_input"] = _save_npy(stage / "test_input.npy", arr)
    files["sample_input"] = _save_tif(stage / "sample_input.tif", arr)
    return files


def _save_npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return path


def _save_tif(path: Path, arr: np.ndarray) -> Path:
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(arr, dtype=np.float32))
    return path


@contextmanager
def _rng_preserved() -> Iterator[None]:
    """Seed like core's test (0 everywhere) and give the caller its RNG states back."""
    import torch

    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def predict_whole(descr: Any, sample: Any, weight_format: str, devices: list[str] | None) -> Any:
    """bioimageio.core's test procedure for one sample: pre-process, predict the whole sample
    (no halo padding, no cropping), post-process. Returns core's output sample."""
    from bioimageio.core import create_prediction_pipeline

    with create_prediction_pipeline(bioimageio_model=descr, weight_format=weight_format, devices=devices) as pp:
        pp.apply_preprocessing(sample)
        result = pp.predict_sample_without_blocking(
            sample,
            skip_preprocessing=True,
            skip_postprocessing=True,
            skip_input_padding=True,
            skip_output_cropping=True,
        )
        pp.apply_postprocessing(result)
    return result


def _core_outputs(descr: Any) -> dict[str, np.ndarray]:
    """Run the test input through core's pipeline with the torchscript weights.

    The steps mirror bioimageio.core's reproducibility test: preprocessing, prediction
    without padding or cropping, postprocessing.
    """
    from bioimageio.core.digest_spec import get_test_input_sample

    sample = get_test_input_sample(descr)
    with _rng_preserved():
        result = predict_whole(descr, sample, "torchscript", ["cpu"])

    arrays = {}
    for out in descr.outputs:
        tensor = result.members.get(out.id)
        if tensor is None:
            _fail(f"the torchscript module gave no tensor for output '{out.id}'")
        dims = [str(a.id) for a in out.axes]
        if [str(d) for d in tensor.dims] != dims:
            _fail(f"output '{out.id}' has axes {list(tensor.dims)}, expected {dims}")
        arr = np.asarray(tensor.data.values, dtype=np.float32)
        if not np.isfinite(arr).all():
            _fail(f"output '{out.id}' of the test input contains NaN or infinite values")
        arrays[str(out.id)] = arr
    return arrays


# --------------------------------------------------------------------------- package


def build_package(content: PackageContent, out_zip: Path, work_dir: Path | None = None) -> Path:
    """Write the bioimage.io package of ``content`` to ``out_zip`` and return its path.

    The zip appears atomically (written next to ``out_zip`` under a temporary name, then
    renamed); on any failure nothing is left behind and an existing ``out_zip`` is kept.

    Parameters
    ----------
    content
        What goes into the package.
    out_zip
        Destination, conventionally ``*.bioimageio.zip``.
    work_dir
        Folder for the temporary staging directory (default: the system's).

    Raises
    ------
    ValueError
        When ``content`` breaks a rule (one line naming it).
    """
    from bioimageio.spec import ValidationContext, save_bioimageio_package

    check_content(content)
    out_zip = Path(out_zip).absolute()
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    partial = out_zip.parent / f".{out_zip.name}.{uuid.uuid4().hex[:8]}.partial"

    with tempfile.TemporaryDirectory(prefix="bmz-package-", dir=work_dir) as tmp:
        stage = Path(tmp)
        try:
            with offline_bioimageio(_github_users(content)), quiet_bioimageio():
                files = _stage(content, stage)
                with ValidationContext(root=stage, perform_io_checks=True, log_warnings=False):
                    draft = _describe(content, files, with_test_outputs=False)
                for name, arr in _core_outputs(draft).items():
                    files[f"test_output_{name}"] = _save_npy(stage / f"test_output_{name}.npy", arr)
                    files[f"sample_output_{name}"] = _save_tif(stage / f"sample_output_{name}.tif", arr)
                with ValidationContext(root=stage, perform_io_checks=True, log_warnings=False):
                    descr = _describe(content, files, with_test_outputs=True)
                save_bioimageio_package(descr, output_path=partial)
            os.replace(partial, out_zip)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return out_zip


# --------------------------------------------------------------------------- reading


def check_zip_members(path: Path) -> list[str]:
    """Member names of the zip at ``path``; UserError if any would escape its folder when extracted."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"package not found: {path}")
    if not path.is_file():
        raise UserError(f"package is not a file: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"package is not a zip file: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"package is not a readable zip file: {path} ({e})") from None
    for name in names:
        p = PurePosixPath(name.replace("\\", "/"))
        if (
            p.is_absolute()
            or name.startswith(("/", "\\"))
            or re.match(r"^[A-Za-z]:", name)
            or ".." in p.parts
        ):
            raise UserError(f"package {path.name} has a member that escapes its folder: {name!r}")
    return names


def read_package_descr(path: Path) -> Any:
    """Load the model description of a package zip, offline.

    Raises
    ------
    bmz_cosdd.errors.UserError
        If ``path`` is not a file, not a zip, has members escaping its folder (absolute
        paths or ``..``), names a file outside itself (a URL, an absolute path, ``..``; checked
        before spec reads anything, see :func:`bmz_cosdd.export.package_trust.check_files_inside`),
        or is not a valid bioimage.io model.
    """
    from bioimageio.spec import InvalidDescr, ValidationContext, load_description
    from bioimageio.spec.model import v0_5

    from bmz_cosdd.export.package_trust import check_files_inside

    path = Path(path)
    names = check_zip_members(path)
    if RDF_NAME not in names and "bioimageio.yaml" not in names:
        raise UserError(f"package {path.name} has no rdf.yaml: not a bioimage.io model package")
    check_files_inside(path)
    try:
        with offline_bioimageio(), quiet_bioimageio(), ValidationContext(perform_io_checks=False, log_warnings=False):
            descr = load_description(path, perform_io_checks=False)
    except Exception as e:  # noqa: BLE001 - spec raises many kinds for broken files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"package {path.name} is not a bioimage.io model: {first}") from None
    if isinstance(descr, InvalidDescr):
        errors = [e for d in descr.validation_summary.details for e in d.errors]
        first = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else "invalid description"
        raise UserError(f"package {path.name} is not a valid bioimage.io model: {first.splitlines()[0]}")
    if not isinstance(descr, v0_5.ModelDescr):
        raise UserError(f"package {path.name} is not a bioimage.io model (format 0.5): type {descr.type!r}")
    return descr
