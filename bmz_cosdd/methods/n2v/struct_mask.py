"""StructN2V blind masks: parsing, formatting and estimating them from the noise.

A struct mask is a small boolean 2-D array with odd sides, centred on the
masked pixel; StructN2V hides every True pixel of it from the network so that
noise correlated along a row (``"x:SPAN"``) or a column (``"y:SPAN"``) cannot
be predicted from the masked pixel's neighbours.

:func:`estimate_struct_mask` chooses the mask from the data. To measure the
noise correlation along x it takes, for every pixel, the residual against a
prediction from its neighbours in the SAME COLUMN (a cubic interpolation from
the pixels 1 and 2 rows away, the pixel itself excluded), and correlates
residuals along the rows; along y the roles are swapped. If the noise is
independent across x (white noise, or noise correlated only along y) the
residuals of different columns share no noise, so their correlation along x is
exactly zero: the smoothing adds no bias toward either axis and needs no
white-noise correction. Image structure that is locally cubic along the
interpolation axis cancels, and large residuals (edges, thin filaments) are
clipped to 3 robust standard deviations so that what remains does not dominate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bmz_cosdd.errors import UserError

__all__ = [
    "MaskChoice",
    "estimate_struct_mask",
    "format_struct_mask",
    "mask_from_axis",
    "parse_struct_mask",
]

_FILE_SUFFIXES = (".npy", ".tif", ".tiff", ".txt")
_AXES = ("x", "y")

# Predicts a pixel from the pixels at offsets -2, -1, +1, +2 along one axis; exact for cubics.
_PREDICTOR = np.array([-1.0, 4.0, 0.0, 4.0, -1.0]) / 6.0
_CLIP_SIGMAS = 3.0
# Lags examined jointly for the decision: a period-4 pattern (-a, -a, +a, +a) has
# zero correlation at lag 1 but a strong one at lag 2.
_DECISION_LAGS = 3
# Bounds on the data examined, so that large training sets stay fast.
_MAX_IMAGES = 8
_MAX_SIDE = 512


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
    if axis not in _AXES:
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
    if axis not in _AXES:
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
        Estimated noise autocorrelation along x at lags 1..max_lag (its
        excess over white noise, which is zero by construction).
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


def _residual_correlation(img: np.ndarray, axis: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of the residuals along ``axis`` (0: y, 1: x) at lags 1..max_lag, and pair counts.

    The residual is taken against a prediction along the OTHER axis, so noise
    that is independent along ``axis`` gives zero correlation.
    """
    from scipy import ndimage

    other = 1 - axis
    resid = img - ndimage.convolve1d(img, _PREDICTOR, axis=other, mode="reflect")
    edge = len(_PREDICTOR) // 2
    resid = resid[edge:-edge, :] if other == 0 else resid[:, edge:-edge]
    spread = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    if spread > 0:
        resid = np.clip(resid, -_CLIP_SIGMAS * spread, _CLIP_SIGMAS * spread)
    power = float(np.mean(resid * resid))
    corr = np.zeros(max_lag)
    count = np.zeros(max_lag)
    if power <= 0:
        return corr, count
    length = resid.shape[axis]
    for lag in range(1, min(max_lag, length - 1) + 1):
        if axis == 1:
            prod = resid[:, :-lag] * resid[:, lag:]
        else:
            prod = resid[:-lag, :] * resid[lag:, :]
        corr[lag - 1] = float(prod.mean()) / power
        count[lag - 1] = prod.size
    return corr, count


def _central_crop(img: np.ndarray) -> np.ndarray:
    height, width = img.shape[-2:]
    y0 = max(0, (height - _MAX_SIDE) // 2)
    x0 = max(0, (width - _MAX_SIDE) // 2)
    return img[..., y0 : y0 + _MAX_SIDE, x0 : x0 + _MAX_SIDE]


def _fmt(values: Sequence[float]) -> str:
    # Rounding first avoids printing tiny negatives as "-0.00".
    return ", ".join(f"{round(float(v), 2) + 0.0:.2f}" for v in values)


def _lags(n: int) -> str:
    return "lag 1" if n == 1 else f"lags 1-{n}"


def _mask_reach(excess: np.ndarray, threshold: float) -> int:
    """Largest lag covered by the correlation.

    The run starts at the first lag <= 3 above the threshold (lags 1..3 count
    jointly) and continues over single lags below it, so that a period-4 pattern,
    correlated at even lags only, is followed; two lags in a row below the
    threshold end it.
    """
    above = np.abs(excess) > threshold
    first = next((i for i in range(min(_DECISION_LAGS, len(above))) if above[i]), None)
    if first is None:
        return 0
    reach = first + 1
    for lag in range(first + 2, len(above) + 1):
        if above[lag - 1]:
            reach = lag
        elif lag - reach >= 2:
            break
    return reach


def estimate_struct_mask(
    images: Sequence[np.ndarray], crop_size: int, max_lag: int = 16, threshold: float = 0.1
) -> MaskChoice:
    """Choose StructN2V's blind mask from the noise autocorrelation of training images.

    For each image and channel, the residual against a prediction from the
    pixel's neighbours along one axis is correlated along the other axis (see
    the module docstring); this is zero for pixel-independent noise whatever
    the smoothing, so the values are the excess correlation directly.
    Correlations are averaged over channels and images. Up to 8 evenly spaced
    images are used, each cropped to its central 512 x 512 pixels.

    The axis is the one with the larger absolute correlation over lags 1-3
    (a column pattern -a, -a, +a, +a shows at lag 2, not lag 1). If neither
    exceeds ``threshold`` there is no mask. Otherwise the span is ``2 * L + 1``,
    where L is the largest lag up to which the absolute correlation stays above
    ``threshold`` (single lags below it are bridged, two in a row end it),
    capped so that the span is odd and at most ``crop_size - 1``.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Normalised training images, each (C, Y, X) (or (Y, X)), float.
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
    if max_lag < 1:
        raise ValueError(f"max_lag must be >= 1, got {max_lag}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    arrays = [np.asarray(im) for im in images]
    arrays = [a[None] if a.ndim == 2 else a for a in arrays]
    for a in arrays:
        if a.ndim != 3:
            raise UserError(f"struct mask estimation needs (C, Y, X) images, got shape {a.shape}")
    arrays = [a for a in arrays if min(a.shape[-2:]) >= len(_PREDICTOR)]
    if not arrays:
        raise UserError("no training image of at least 5 x 5 pixels to estimate the struct mask from")
    if len(arrays) > _MAX_IMAGES:
        picks = np.linspace(0, len(arrays) - 1, _MAX_IMAGES).round().astype(int)
        arrays = [arrays[i] for i in picks]

    sums = {axis: np.zeros(max_lag) for axis in (0, 1)}
    weights = {axis: np.zeros(max_lag) for axis in (0, 1)}
    for a in arrays:
        crop = _central_crop(a).astype(np.float64)
        if not np.all(np.isfinite(crop)):
            raise UserError("training images contain NaN or infinite values; cannot estimate the struct mask")
        for channel in crop:
            for axis in (0, 1):
                corr, count = _residual_correlation(channel, axis, max_lag)
                sums[axis] += corr * count
                weights[axis] += count
    corr_y, corr_x = (
        np.divide(sums[axis], weights[axis], out=np.zeros(max_lag), where=weights[axis] > 0) for axis in (0, 1)
    )
    excess = {"x": corr_x, "y": corr_y}
    n_dec = min(_DECISION_LAGS, max_lag)
    score = {axis: float(np.max(np.abs(excess[axis][:n_dec]))) for axis in _AXES}
    listed = {axis: [round(float(v), 4) for v in excess[axis]] for axis in _AXES}

    if max(score.values()) <= threshold:
        reason = (
            f"noise looks pixel-independent: the largest residual autocorrelation at {_lags(n_dec)} is"
            f" {score['x']:.2f} along x and {score['y']:.2f} along y, below the threshold {threshold:g};"
            " N2V's blind spot suffices"
        )
        return MaskChoice("none", None, 1, listed["x"], listed["y"], reason)

    axis = "x" if score["x"] >= score["y"] else "y"
    other = "y" if axis == "x" else "x"
    reach = _mask_reach(excess[axis], threshold)
    largest = crop_size - 1 if crop_size % 2 == 0 else crop_size - 2
    span = max(1, min(2 * reach + 1, largest))
    hidden = (span - 1) // 2
    shown = min(max(reach + 1, 2), max_lag, 8)
    reason = (
        f"noise correlated along {axis}: residual autocorrelation {_fmt(excess[axis][:shown])} at"
        f" {_lags(shown)} along {axis} vs {_fmt(excess[other][:n_dec])} along {other};"
        f" blind mask {axis}:{span} hides lags up to {hidden}"
    )
    if hidden < reach:
        reason += f" (capped by the crop size {crop_size}; the correlation reaches lag {reach})"
    elif reach == max_lag:
        reason += f" (the correlation persists to the largest lag examined, {max_lag})"
    if score[other] > threshold:
        reason += (
            f". The noise is also correlated along {other} (up to {score[other]:.2f} at {_lags(n_dec)}),"
            " which a line mask does not hide"
        )
    return MaskChoice(f"{axis}:{span}", axis, span, listed["x"], listed["y"], reason)
