"""What a bioimage.io package holds, independent of the method that made it, and its checks.

:class:`PackageContent` names every file and number a package is built from;
:func:`check_content` holds it to the rules of bioimage.io and of the consumers (deepImageJ's
ONNX opset, core's ``std`` epsilon) before anything is built, one line per problem.
:mod:`bmz_cosdd.export.describe` turns it into the description and
:mod:`bmz_cosdd.export.package_zip` into the zip.

Examples
--------
Not run as doctests: a content needs a trained model's weights and test input (the tests
make a stand-in, see ``tests/export/test_rdf.py``).

>>> content = PackageContent(...)   # doctest: +SKIP
>>> check_content(content)          # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Sequence

import numpy as np

from bmz_cosdd.data.axes import per_axis
from bmz_cosdd.errors import UserError

#: Output names a stochastic model may offer, in this order; the first given is the main one.
STOCHASTIC_OUTPUTS = ("mmse", "std", "samples")
#: The one output a deterministic model may have (PSF-N2V can ship its deconvolution instead).
DETERMINISTIC_OUTPUTS = ("denoised", "deconvolved")
#: What bioimageio.core and JDLL add to ``std`` in ``fixed_zero_mean_unit_variance``.
CORE_STD_EPS = 1e-6
#: Highest ONNX opset deepImageJ runs.
MAX_ONNX_OPSET = 18

_COVER_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_+\- ()]{5,128}$")
_RELEASE = re.compile(r"^\d+(\.\d+){1,2}$")
_VALIDATION_HEADING = re.compile(r"^\s{0,3}#+.*validation", re.IGNORECASE | re.MULTILINE)
# GitHub's rule for user names: 1-39 letters, digits or single hyphens, not starting or ending with a hyphen.
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")


def check_github_user(name: Any, option: str = "--maintainer") -> str:
    """``name`` stripped, if it is a well-formed GitHub user name; else a one-line UserError naming ``option``.

    Checked here, offline: bioimageio.spec would look an unknown name up on the GitHub API (see
    :func:`bmz_cosdd.artifacts.offline_bioimageio.offline_bioimageio`, which lets the names that pass this check through as known).
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
        ``halo`` pixels each side of a tile are context. ``size_min - 2 * halo >= 1``. Each is
        one int for every spatial axis or one per axis in the order of ``spatial_axes`` (an
        anisotropic volume model has a smaller minimum, step and halo along z).
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
    size_min: int | tuple[int, ...]
    size_step: int | tuple[int, ...]
    halo: int | tuple[int, ...]
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

    @property
    def mins(self) -> tuple[int, ...]:
        """``size_min`` per spatial axis (order of :attr:`spatial_axes`)."""
        return per_axis(self.size_min, self.spatial_dims)

    @property
    def steps(self) -> tuple[int, ...]:
        """``size_step`` per spatial axis."""
        return per_axis(self.size_step, self.spatial_dims)

    @property
    def halos(self) -> tuple[int, ...]:
        """``halo`` per spatial axis."""
        return per_axis(self.halo, self.spatial_dims)


# --------------------------------------------------------------------------- checks


def _fail(msg: str) -> NoReturn:
    raise ValueError(msg)


def plain_release(version: str) -> str:
    """The plain release of a torch version (``"2.13.0+cpu"`` -> ``"2.13.0"``).

    Parameters
    ----------
    version
        A torch version string.

    Returns
    -------
    str
        The release without its local part.

    Raises
    ------
    ValueError
        If what is left is not a plain release such as ``2.13.0``.
    """
    release = str(version).split("+", 1)[0]
    if not _RELEASE.match(release):
        _fail(f"pytorch_version must be a plain release such as '2.13.0', got {version!r}")
    return release


def yaml_value(value: Any, where: str) -> Any:
    """Return ``value`` as plain YAML data (dict/list/str/int/float/bool/None).

    Parameters
    ----------
    value
        Nested dicts, lists and tuples of plain values, NumPy scalars and arrays, and paths.
    where
        Its name, for the error message (e.g. ``"config"``).

    Returns
    -------
    Any
        The same data as plain YAML values (paths as strings, arrays as lists).

    Raises
    ------
    ValueError
        One line naming the first value that cannot go into the package (a non-finite
        number, a key that is not a string, or another type).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(f"{where}: non-finite number {value!r} cannot go into the package")
        return value
    if isinstance(value, np.generic):
        return yaml_value(value.item(), where)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                _fail(f"{where}: key {k!r} is not a string")
            out[k] = yaml_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [yaml_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return yaml_value(value.tolist(), where)
    _fail(f"{where}: {type(value).__name__} is not a plain YAML value")


def _check_file(path: Path | None, what: str, suffixes: Sequence[str] | None = None) -> Path:
    if path is None or not Path(path).is_file():
        _fail(f"{what} not found: {path}")
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        _fail(f"{what} must be one of {', '.join(suffixes)}: {path}")
    return path


def onnx_opset(path: Path) -> int:
    """The default-domain opset of the ONNX file at ``path`` (ValueError in one line if it has none)."""
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
    """Raise ValueError with one line for the first problem in ``content``.

    Parameters
    ----------
    content
        What a package is to hold; its files are opened (the test input, the state dict
        with ``weights_only=True``, the ONNX file's header) but nothing is run.

    Raises
    ------
    ValueError
        One line naming the first rule ``content`` breaks.
    """
    c = content
    if not _NAME_CHARS.match(c.name):
        _fail(f"name must be 5-128 letters, digits, spaces or _+-(): {c.name!r}")
    if c.n_channels < 1:
        _fail(f"n_channels must be >= 1, got {c.n_channels}")
    if c.spatial_dims not in (2, 3):
        _fail(f"spatial_dims must be 2 or 3, got {c.spatial_dims}")
    try:
        grid = list(zip(c.mins, c.steps, c.halos))
    except ValueError as exc:
        _fail(f"size_min, size_step and halo need 1 or {c.spatial_dims} values: {exc}")
    for low, step, halo in grid:
        if step < 1 or low < 1 or halo < 0:
            _fail(f"size_min and size_step must be >= 1 and halo >= 0, got {c.size_min}, {c.size_step}, {c.halo}")
        if low - 2 * halo < 1:
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
    for size, low, step in zip(arr.shape[2:], c.mins, c.steps):
        if size < low or (size - low) % step:
            _fail(f"test input spatial sizes must be {c.size_min} + k*{c.size_step}, got {arr.shape[2:]}")
    _check_file(c.torchscript, "torchscript weights")
    plain_release(c.pytorch_version)
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
        opset = onnx_opset(c.onnx)
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
    yaml_value(c.config, "config")
    yaml_value(c.architecture_kwargs, "architecture_kwargs")

