"""StructN2V blind masks: parsing, formatting and estimating them from the noise.

A struct mask is a small boolean 2-D array with odd sides, centred on the
masked pixel; StructN2V hides every True pixel of it from the network so that
noise correlated along a row (``"x:SPAN"``) or a column (``"y:SPAN"``) cannot
be predicted from the masked pixel's neighbours.

:func:`estimate_struct_mask` chooses the mask from the noise correlation that
:mod:`bmz_cosdd.data.noise_correlation` measures (the one estimator shared with
``bmz-cosdd inspect`` and COSDD's ``--direction auto``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bmz_cosdd.data.noise_correlation import AXES, NoiseCorrelation, estimate_noise_correlation
from bmz_cosdd.errors import UserError

__all__ = [
    "MaskChoice",
    "estimate_struct_mask",
    "format_struct_mask",
    "mask_for",
    "mask_from_axis",
    "parse_struct_mask",
]

_FILE_SUFFIXES = (".npy", ".tif", ".tiff", ".txt")


def mask_from_axis(axis: str, span: int) -> np.ndarray:
    """A line mask through the centre.

    Parameters
    ----------
    axis : {"x", "y"}
        ``"x"`` masks a horizontal line (along a row), ``"y"`` a vertical one.
    span : int
        Odd length of the line, >= 1.

    Returns
    -------
    numpy.ndarray
        All-True bool array of shape ``(1, span)`` for x or ``(span, 1)`` for y.

    Raises
    ------
    UserError
        For an unknown axis or a span that is not a positive odd integer.
    """
    if axis not in AXES:
        raise UserError(f"struct mask axis must be 'x' or 'y', got '{axis}'")
    _check_span(span)
    shape = (1, span) if axis == "x" else (span, 1)
    return np.ones(shape, dtype=bool)


def _check_span(span: int) -> None:
    if span < 1:
        raise UserError(f"struct mask span must be >= 1, got {span}")
    if span % 2 == 0:
        raise UserError(f"struct mask span must be odd, got {span}")


def _parse_axis_span(spec: str, crop_size: int) -> np.ndarray:
    axis, _, span_text = spec.partition(":")
    axis, span_text = axis.strip().lower(), span_text.strip()
    if axis not in AXES:
        raise UserError(f"unknown struct mask axis '{axis}' in '{spec}'; use 'x:SPAN' or 'y:SPAN'")
    try:
        span = int(span_text)
    except ValueError:
        raise UserError(f"struct mask span must be an integer, got '{span_text}' in '{spec}'") from None
    _check_span(span)
    if span > crop_size:
        raise UserError(f"struct mask span {span} is larger than the crop size {crop_size}")
    return mask_from_axis(axis, span)


def _load_mask_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"struct mask file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        if suffix == ".txt":
            return np.loadtxt(path, ndmin=2)
        import tifffile

        return np.asarray(tifffile.imread(path))
    except Exception as exc:  # any reader failure is the file's fault
        detail = " ".join(str(exc).split())
        raise UserError(f"could not read struct mask file {path}: {detail}") from None


def _validate_mask(values: Any, crop_size: int, source: str) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except ValueError:
        raise UserError(f"struct mask {source} is not a rectangular array") from None
    if arr.dtype == object:
        raise UserError(f"struct mask {source} is not a rectangular array of 0/1 values")
    # TIFF readers may add leading singleton axes.
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise UserError(f"struct mask {source} must be a 2-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise UserError(f"struct mask {source} must hold 0/1 values, got dtype {arr.dtype}")
    if arr.size == 0 or not np.all((arr == 0) | (arr == 1)):
        raise UserError(f"struct mask {source} must hold only 0/1 values")
    height, width = arr.shape
    if height % 2 == 0 or width % 2 == 0:
        raise UserError(f"struct mask dimensions must be odd, got {height}x{width}")
    if max(height, width) > crop_size:
        raise UserError(f"struct mask of size {height}x{width} is larger than the crop size {crop_size}")
    mask = arr.astype(bool)
    mask[height // 2, width // 2] = True  # the centre is N2V's blind spot, always masked
    return mask


def parse_struct_mask(spec: Any, crop_size: int) -> np.ndarray | None:
    """Turn a struct mask specification into a boolean array.

    Parameters
    ----------
    spec : None, str, pathlib.Path, list of lists or numpy.ndarray
        ``None`` or ``"none"``: no mask. ``"x:9"`` / ``"y:17"``: a line of
        that odd span along x (a row) or y (a column). A list of lists of 0/1
        (e.g. from a YAML config) or a 2-D array. A path to a ``.npy``,
        ``.tif``/``.tiff`` or ``.txt`` (``numpy.loadtxt``) file holding a
        small 2-D 0/1 array. ``"auto"`` must be resolved by the caller first
        (see :func:`estimate_struct_mask`).
    crop_size : int
        Side of the training crops; no side of the mask may exceed it.

    Returns
    -------
    numpy.ndarray or None
        bool array with odd height and width whose centre is True (it is set
        if the given mask leaves it out), or None for no mask.

    Raises
    ------
    UserError
        For a malformed specification, an unknown axis, an even or
        non-positive span, a mask larger than ``crop_size``, values other than
        0/1, an array that is not 2-D, or a missing or unreadable file.
    ValueError
        If ``spec`` is ``"auto"``.
    """
    if spec is None:
        return None
    if isinstance(spec, (str, Path)):
        text = str(spec).strip()
        if text.lower() == "none":
            return None
        if text.lower() == "auto":
            raise ValueError("struct mask 'auto' must be resolved with estimate_struct_mask before parsing")
        if isinstance(spec, Path) or text.lower().endswith(_FILE_SUFFIXES):
            path = Path(text)
            return _validate_mask(_load_mask_file(path), crop_size, f"file {path}")
        if ":" in text:
            return _parse_axis_span(text, crop_size)
        raise UserError(
            f"struct mask '{text}' is not 'none', 'x:SPAN', 'y:SPAN' or a .npy/.tif/.tiff/.txt file"
        )
    if isinstance(spec, (list, tuple, np.ndarray)):
        return _validate_mask(spec, crop_size, "array")
    raise UserError(f"struct mask must be a string, a path or a list of lists, got {type(spec).__name__}")


def format_struct_mask(mask: np.ndarray | None) -> str:
    """A short text form of a struct mask.

    Parameters
    ----------
    mask : numpy.ndarray or None
        A mask as returned by :func:`parse_struct_mask`.

    Returns
    -------
    str
        ``"none"``, ``"x:9"`` / ``"y:17"`` for all-True line masks, otherwise
        e.g. ``"3x3 mask [[0,1,0],[1,1,1],[0,1,0]]"``.
    """
    if mask is None:
        return "none"
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 2 and m.all():
        if m.shape[0] == 1:
            return f"x:{m.shape[1]}"
        if m.shape[1] == 1:
            return f"y:{m.shape[0]}"
    rows = ",".join("[" + ",".join(str(int(v)) for v in row) + "]" for row in np.atleast_2d(m))
    height, width = np.atleast_2d(m).shape
    return f"{height}x{width} mask [{rows}]"


@dataclass
class MaskChoice:
    """The blind mask chosen by :func:`estimate_struct_mask` and why.

    Attributes
    ----------
    spec : str
        ``"x:SPAN"``, ``"y:SPAN"`` or ``"none"``; a valid input of :func:`parse_struct_mask`.
    axis : str or None
        ``"x"``, ``"y"`` or None for no mask.
    span : int
        Length of the line mask; 1 when there is no mask.
    correlation_x : list of float
        Estimated noise autocorrelation along x at lags 1..max_lag (zero for
        pixel-independent noise by construction).
    correlation_y : list of float
        The same along y.
    reason : str
        What was measured and why this mask, for the user.
    """

    spec: str
    axis: str | None
    span: int
    correlation_x: list[float]
    correlation_y: list[float]
    reason: str


def mask_for(noise: NoiseCorrelation, crop_size: int) -> MaskChoice:
    """The line mask that hides the measured noise correlation.

    The span is ``2 * L + 1`` for the correlation length L along the noise
    direction, capped so that it is odd and at most ``crop_size - 1``; no mask
    for pixel-independent noise.

    Parameters
    ----------
    noise : NoiseCorrelation
        From :func:`bmz_cosdd.data.noise_correlation.estimate_noise_correlation`.
    crop_size : int
        Side of the training crops.

    Returns
    -------
    MaskChoice
    """
    across_planes = noise.direction == "z"
    noise = noise.in_plane()  # a blind mask lies within one plane: it cannot hide a correlation across planes
    listed = {axis: [round(float(v), 4) for v in noise.correlation(axis)] for axis in AXES}
    planes = ("; the noise is also correlated along z (across planes), which a blind mask within a plane cannot"
              " hide (COSDD --direction z models it)") if across_planes else ""
    if noise.pixel_independent:
        reason = f"{noise.describe()}; N2V's blind spot suffices" + planes
        return MaskChoice("none", None, 1, listed["x"], listed["y"], reason)
    axis = noise.direction
    reach = noise.length(axis)
    largest = crop_size - 1 if crop_size % 2 == 0 else crop_size - 2
    span = max(1, min(2 * reach + 1, largest))
    hidden = (span - 1) // 2
    reason = f"{noise.describe()}; blind mask {axis}:{span} hides lags up to {hidden}"
    if hidden < reach:
        reason += f" (capped by the crop size {crop_size}; the correlation reaches lag {reach})"
    if noise.cross_correlated:
        reason += f"; a line mask does not hide the correlation along {noise.cross_correlated}"
    reason += planes
    return MaskChoice(f"{axis}:{span}", axis, span, listed["x"], listed["y"], reason)


def estimate_struct_mask(
    images: Sequence[np.ndarray], crop_size: int, max_lag: int = 16, threshold: float = 0.1
) -> MaskChoice:
    """Choose StructN2V's blind mask from the noise autocorrelation of training images.

    Measures the correlation with
    :func:`bmz_cosdd.data.noise_correlation.estimate_noise_correlation` (the
    estimator ``bmz-cosdd inspect`` and COSDD's ``--direction auto`` use) and
    turns it into a line mask with :func:`mask_for`.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Training images, each (C, Y, X) (or (Y, X)), float.
    crop_size : int
        Side of the training crops.
    max_lag : int, default 16
        Largest lag examined.
    threshold : float, default 0.1
        Correlation above which the noise counts as correlated.

    Returns
    -------
    MaskChoice

    Raises
    ------
    UserError
        If there are no images of at least 5 x 5 pixels, or they contain NaN
        or infinite values.
    ValueError
        For ``max_lag < 1`` or a threshold outside (0, 1).
    """
    return mask_for(estimate_noise_correlation(images, max_lag, threshold), crop_size)
