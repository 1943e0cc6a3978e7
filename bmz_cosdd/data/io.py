"""Reading images (TIFF, NPY, PNG) into 2-D samples or volumes, and atomic writing.

Every write in the project goes through the atomic helpers here: the data are
written to a temporary file in the destination folder, then moved into place
with :func:`os.replace`, so a crash never leaves a half-written file behind
and never destroys the previous version.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile

from bmz_cosdd.data.axes import parse_axes, to_samples
from bmz_cosdd.data.physical_sizes import check_spatial_axes, tiff_metadata
from bmz_cosdd.errors import UserError

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".npy", ".png")

# ImageJ hyperstacks store (T, Z, C, Y, X) in this order; other layouts use plain TIFF.
_IMAGEJ_ORDER = "TZCYX"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def find_files(path: str | Path, pattern: str = "*") -> list[Path]:
    """List the image files named by a path.

    Parameters
    ----------
    path : str or pathlib.Path
        A file, or a folder to search.
    pattern : str, default "*"
        Glob pattern applied inside a folder (ignored for a file).

    Returns
    -------
    list of pathlib.Path
        ``[path]`` for a file; for a folder the sorted matching files whose
        suffix is one of ``SUPPORTED_SUFFIXES``.

    Raises
    ------
    UserError
        If the path does not exist, a file has an unsupported suffix, or a
        folder holds no matching files.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"no such file or folder: {path}")
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise UserError(
                f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
            )
        return [path]
    files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise UserError(f"no files matching '{pattern}' in {path} (supported types: {', '.join(SUPPORTED_SUFFIXES)})")
    return files


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        if im.mode == "P":  # palette: expand to the colours it stands for
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        return np.asarray(im)


def read_array(path: Path) -> np.ndarray:
    """Read one image file into a numpy array.

    Parameters
    ----------
    path : pathlib.Path
        A ``.tif``/``.tiff`` (tifffile), ``.npy`` (numpy, no pickles) or ``.png``
        (Pillow; an RGB image becomes ``(Y, X, 3)``) file.

    Returns
    -------
    numpy.ndarray
        The array as stored in the file.

    Raises
    ------
    UserError
        If the file type is unsupported or the file cannot be read.
    """
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[np.ndarray, str | None, dict[str, float]]:
    """:func:`read_array`, plus the axes and pixel sizes a TIFF records (None and {} for other files)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:  # what tifffile.imread does, keeping the file open for metadata
                return np.asarray(tif.asarray()), *tiff_metadata(tif)
        if suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False)), None, {}
        if suffix == ".png":
            return _read_png(path), None, {}
    except Exception as exc:  # any reader failure is a problem with the user's file
        raise UserError(f"cannot read {path}: {_first_line(exc)}") from exc
    raise UserError(f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(SUPPORTED_SUFFIXES)}")


def read_with_axes(path: Path, axes: str, source: str | None = None) -> tuple[np.ndarray, str]:
    """Read ``path`` and check ``axes`` against the array and against the axes and pixel
    sizes the file itself records (:func:`~bmz_cosdd.data.physical_sizes.check_spatial_axes`).

    Returns the array and the parsed (upper-case) axes; errors name ``source``
    (default: the file name) in one line.
    """
    raw, own_axes, sizes = _read(Path(path))
    name = source or Path(path).name
    parsed = parse_axes(axes, raw.ndim, name, shape=raw.shape)
    check_spatial_axes(name, parsed, own_axes, sizes)
    return raw, parsed


@dataclass
class Image:
    """One sample of a dataset: a 2-D image or a volume.

    Attributes
    ----------
    data : numpy.ndarray
        Pixels, shape ``(C, Y, X)`` or ``(C, Z, Y, X)``, float32.
    source : str
        Where it came from, e.g. ``"cells.tif[3]"``.
    """

    data: np.ndarray
    source: str


def _unique_files(paths: Sequence[str | Path], pattern: str) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        for f in find_files(p, pattern):
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files


def _source_names(files: list[Path]) -> list[str]:
    """File names, or the paths as given where two files share a name."""
    names = [f.name for f in files]
    return [str(f) if names.count(f.name) > 1 else f.name for f in files]


def load_images(paths: Sequence[str | Path], pattern: str, axes: str, spatial_dims: int = 2) -> list[Image]:
    """Read image files and split them into 2-D samples or volumes.

    Parameters
    ----------
    paths : sequence of str or pathlib.Path
        Files and/or folders; folders are searched with ``pattern``. A file named
        twice is read once.
    pattern : str
        Glob pattern used inside folders, e.g. ``"*.tif"``.
    axes : str
        Axes of every file, e.g. ``"SYX"`` (see :mod:`bmz_cosdd.data.axes`).
    spatial_dims : {2, 3}, default 2
        2: every ``Z`` slice, ``T`` frame and ``S`` sample is a 2-D image
        ``(C, Y, X)``. 3: every ``S`` sample and ``T`` frame is a volume
        ``(C, Z, Y, X)``; the axes must contain ``Z``.

    Returns
    -------
    list of Image
        One :class:`Image` per sample, float32, in file order. Images of
        different sizes are allowed.

    Raises
    ------
    UserError
        For missing or unreadable files, axes that do not fit a file, NaN or
        Inf pixels, or a constant image; and where a TIFF's own metadata show
        that the axes named Y and X are not the image plane (see
        :func:`bmz_cosdd.data.physical_sizes.check_spatial_axes`).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = _unique_files(paths, pattern)
    images: list[Image] = []
    for file, name in zip(files, _source_names(files)):
        raw, parsed = read_with_axes(file, axes, name)
        if raw.dtype.kind not in "biuf":
            raise UserError(f"{name}: unsupported pixel type {raw.dtype}; expected integer or float pixels")
        samples = to_samples(raw, parsed, spatial_dims, source=name).astype(np.float32)
        if samples.size == 0:
            raise UserError(f"{name}: the file holds no pixels (shape {raw.shape})")
        finite = np.isfinite(samples)
        if not finite.all():
            n_nan = int(np.isnan(samples).sum())
            n_inf = int(samples.size - finite.sum()) - n_nan
            raise UserError(f"{name}: {n_nan} NaN and {n_inf} Inf pixels (out of {samples.size}); clean the data first")
        many = len(samples) > 1
        for i, sample in enumerate(samples):
            source = f"{name}[{i}]" if many else name
            lo, hi = sample.min(), sample.max()
            if lo == hi:
                raise UserError(f"{source}: the image is constant (every pixel is {float(lo):g})")
            images.append(Image(data=np.ascontiguousarray(sample), source=source))
    return images


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(fh)`` to a temporary sibling file, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fh = open(tmp, "xb")  # exclusive create; the umask sets permissions as for any new file
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` atomically (temporary file in the same folder + ``os.replace``).

    Parent folders are created. If writing fails the previous file, if any, is untouched.
    """
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _imagej_compatible(axes: str, shape: tuple[int, ...]) -> bool:
    positions = [_IMAGEJ_ORDER.find(a) for a in axes]
    in_order = -1 not in positions and positions == sorted(positions)
    # ImageJ readers drop axes of size 1, which would change the shape read back.
    no_singletons = all(n > 1 for a, n in zip(axes, shape) if a not in "YX")
    return in_order and no_singletons


def write_tiff(path: Path, array: np.ndarray, axes: str) -> None:
    """Write a float32 TIFF with its axes recorded, atomically.

    Parameters
    ----------
    path : pathlib.Path
        Destination; parent folders are created.
    array : numpy.ndarray
        Pixels; converted to float32.
    axes : str
        Axes of ``array`` (e.g. ``"SYX"``). When they form an ImageJ hyperstack
        (a subsequence of ``TZCYX`` with no axis but Y and X of size 1, since
        ImageJ would drop it) the file is ImageJ-compatible; otherwise it is a
        plain TIFF with ``{'axes': ...}`` in its metadata. Either way
        ``tifffile.imread`` returns the array's shape and
        ``tifffile.TiffFile(path).series[0].axes`` the axes. A leading ``Q``
        (tifffile's "other" axis) marks a stack of posterior samples.
    """
    data = np.ascontiguousarray(array, dtype=np.float32)
    if axes[:1].upper() == "Q":
        parsed = "Q" + parse_axes(axes[1:], data.ndim - 1, str(path), shape=data.shape[1:])
    else:
        parsed = parse_axes(axes, data.ndim, str(path), shape=data.shape)
    if _imagej_compatible(parsed, data.shape):
        kwargs: dict = {"imagej": True, "metadata": {"axes": parsed}}
    else:
        kwargs = {"metadata": {"axes": parsed}}
    # Never let tifffile guess RGB from a dimension of size 3 or 4.
    kwargs["photometric"] = "minisblack"
    _atomic_write(Path(path), lambda fh: tifffile.imwrite(fh, data, **kwargs))
