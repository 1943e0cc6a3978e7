"""Physical pixel sizes and axes a TIFF file records about itself, and the check that uses them.

A volume given as a stack of 2-D images with its axes in the wrong order (or an
XZ/YZ reslice) trains a 2-D denoiser on anisotropic pixels, which silently
gives poor results. When a file says what its axes are (``series.axes`` of
tifffile, e.g. ``ZYX`` for an ImageJ hyperstack) and/or how large its pixels
are (ImageJ ``spacing`` and ``unit`` with the X/YResolution tags, OME-TIFF
``PhysicalSizeX/Y/Z``, or the plain TIFF resolution tags with an inch or
centimetre unit), :func:`check_spatial_axes` compares that with the axes the
user gave. Metadata that are missing or cannot be understood mean no check.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import tifffile

from bmz_cosdd.errors import UserError

# Most a Y pixel may differ from an X pixel (either way) before the image counts as anisotropic.
MAX_YX_RATIO = 2.0

_MICROMETRES_PER_UNIT = {
    "um": 1.0,
    "µm": 1.0,  # micro sign
    "μm": 1.0,  # Greek mu
    "\\u00b5m": 1.0,  # as ImageJ escapes it in the description
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "å": 1e-4,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "inch": 25400.0,
}
# TIFF ResolutionUnit: 2 inch (the default when the tag is absent), 3 centimetre; 1 (none) is unknown.
_RESOLUTION_UNITS = {2: "inch", 3: "cm"}


def _micrometres(value: float | str | None, unit: object) -> float | None:
    """``value`` in ``unit`` as micrometres, or None if either is unusable."""
    scale = None if unit is None else _MICROMETRES_PER_UNIT.get(str(unit).strip().lower())
    if scale is None or value is None:
        return None
    try:
        size = float(value) * scale
    except (TypeError, ValueError):
        return None
    return size if math.isfinite(size) and size > 0 else None


def _pixel_size(tags: tifffile.TiffTags, name: str, unit: object) -> float | None:
    """Pixel size from a ``XResolution``/``YResolution`` tag (pixels per unit)."""
    tag = tags.get(name)
    if tag is None:
        return None
    try:
        numerator, denominator = tag.value
        return _micrometres(denominator / numerator, unit)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _ome_sizes(xml: str) -> dict[str, float]:
    root = ElementTree.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    sizes = {}
    for axis in "XYZ":
        size = _micrometres(pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if size is not None:
            sizes[axis] = size
    return sizes


def _tiff_sizes(tif: tifffile.TiffFile) -> dict[str, float]:
    if tif.is_ome and tif.ome_metadata:
        return _ome_sizes(tif.ome_metadata)
    tags = tif.pages[0].tags
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = meta.get("unit")
        sizes = {"Z": _micrometres(meta.get("spacing"), unit)}
    else:
        unit_tag = tags.get("ResolutionUnit")
        unit = _RESOLUTION_UNITS.get(int(unit_tag.value) if unit_tag is not None else 2)
        sizes = {}
    sizes["X"] = _pixel_size(tags, "XResolution", unit)
    sizes["Y"] = _pixel_size(tags, "YResolution", unit)
    return {axis: size for axis, size in sizes.items() if size is not None}


def tiff_metadata(tif: tifffile.TiffFile) -> tuple[str | None, dict[str, float]]:
    """Axes and physical pixel sizes of an open TIFF's first series.

    Parameters
    ----------
    tif : tifffile.TiffFile
        An open file.

    Returns
    -------
    axes : str or None
        tifffile's ``series[0].axes`` (one letter per dimension of
        ``tif.asarray()``, e.g. ``"ZYX"``), or None if unknown.
    sizes : dict of str to float
        Pixel size in micrometres per axis letter of the file (``"X"``, ``"Y"``,
        ``"Z"``), only for the sizes recorded with a known unit; empty if none.
    """
    # Metadata never make a readable file unreadable: anything odd means "unknown".
    try:
        axes = str(tif.series[0].axes).upper() or None
    except Exception:
        axes = None
    try:
        sizes = _tiff_sizes(tif)
    except Exception:
        sizes = {}
    return axes, sizes


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def read_physical_sizes(path: str | Path) -> dict[str, float]:
    """Physical pixel sizes a file records, in micrometres per axis letter.

    Parameters
    ----------
    path : str or pathlib.Path
        Any image file; only TIFF files carry sizes.

    Returns
    -------
    dict of str to float
        E.g. ``{"X": 0.1, "Y": 0.1, "Z": 2.0}`` for an ImageJ hyperstack with a
        z spacing; only the sizes known with a unit, ``{}`` when none are known,
        the file is not a TIFF or cannot be read.
    """
    path = Path(path)
    if not _is_tiff(path):
        return {}
    try:
        with tifffile.TiffFile(path) as tif:
            return tiff_metadata(tif)[1]
    except Exception:
        return {}


def file_axes(path: str | Path) -> str | None:
    """The axes a TIFF file records for its first series (tifffile letters), or None if unknown.

    Examples
    --------
    An ImageJ hyperstack of 5 slices gives ``"ZYX"``; a plain multi-page TIFF ``"QYX"`` or ``"IYX"``.
    """
    path = Path(path)
    if not _is_tiff(path):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            return tiff_metadata(tif)[0]
    except Exception:
        return None


def _format_um(size: float) -> str:
    return f"{size:.4g} um"


def check_spatial_axes(source: str, user_axes: str, file_axes: str | None, sizes: dict[str, float]) -> None:
    """Refuse axes that put a file's depth, or anisotropic pixels, on the image plane.

    Parameters
    ----------
    source : str
        File name for the messages.
    user_axes : str
        Parsed axes the user gave (see :func:`bmz_cosdd.data.axes.parse_axes`).
    file_axes : str or None
        The file's own axes (:func:`file_axes`), one letter per dimension; None
        (or a different length) when unknown, which skips the checks.
    sizes : dict of str to float
        The file's pixel sizes by the file's own axis letters (:func:`read_physical_sizes`).

    Raises
    ------
    UserError
        If the user names Y or X the dimension the file calls Z, or if the
        dimensions named Y and X have pixel sizes more than ``MAX_YX_RATIO`` apart.
    """
    if file_axes is None or len(file_axes) != len(user_axes):
        return
    for i, (theirs, ours) in enumerate(zip(file_axes, user_axes)):
        if theirs == "Z" and ours in "YX":
            # tifffile's other letters (Q, I, S for RGB samples...) are no axes to suggest.
            example = f", e.g. '{file_axes}'" if set(file_axes) <= set("TCZYX") else ""
            raise UserError(
                f"{source}: the file says axis {i} is Z but --axes names it {ours} (axes '{user_axes}',"
                f" the file's own '{file_axes}'); name the axes so Z is Z{example}"
            )
    size_y, size_x = (sizes.get(file_axes[user_axes.index(a)]) for a in "YX")
    if size_y is None or size_x is None:
        return
    if max(size_y, size_x) > MAX_YX_RATIO * min(size_y, size_x):
        raise UserError(
            f"{source}: pixel size along Y is {_format_um(size_y)} but along X {_format_um(size_x)} (anisotropic):"
            " an XZ/YZ reslice or axes given in the wrong order? name the axes so Z is Z"
        )
