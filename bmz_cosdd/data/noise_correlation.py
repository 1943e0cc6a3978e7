"""Spatial correlation of the noise along x and y (and z in volumes), measured from noisy images alone.

This is the one estimator behind ``bmz-cosdd inspect``, COSDD's
``--direction auto`` and StructN2V's ``--struct-mask auto``.

To measure the noise correlation along x it takes, for every pixel, the residual
against a prediction from its neighbours in the SAME COLUMN (a cubic
interpolation from the pixels 1 and 2 rows away, the pixel itself excluded),
and correlates residuals along the rows; along y the roles are swapped. If the
noise is independent across x (white noise, or noise correlated only along y)
the residuals of different columns share no noise, so their correlation along x
is exactly zero: the prediction adds no bias toward either axis and needs no
white-noise correction. If the noise is independent across rows, the
correlation of the residuals along x equals the noise's own. Image structure
that is locally cubic along the prediction axis cancels, and large residuals
(edges, thin filaments) are clipped to 3 robust standard deviations so that what
remains does not dominate. The same holds when the input is already noise (a
dark frame, an empty region, or the residual against a denoiser's prediction).

On volumes (C, Z, Y, X) of at least :data:`MIN_PLANES` planes the correlation
along z (across planes) is measured too, with the same estimator turned by a
right angle: the residual against the prediction of each pixel from its
neighbours along an in-plane axis (y, or x where the noise is more correlated
along y than along x), correlated across planes. The prediction never reaches
into another plane, so it cannot make residuals of neighbouring planes share
noise; noise independent along the prediction axis (or with a separable
correlation, a z part times an in-plane part) gives exactly its own
correlation along z, and white noise exactly zero. The prediction axis is the
in-plane axis less correlated because a sum of parts (stripes along y plus
noise correlated along z) is not separable: a prediction along the stripes
would cancel part of them and overstate the z share. (A prediction along z from
the planes 1 and 2 away, the analogue of a 2-D image's, would be wrong: every
residual would then hold the noise of its four neighbouring planes, correlated
along z by construction.) What the in-plane prediction leaves of the signal
(structure that is not locally cubic) is smooth along z where the signal is, and
leaks into the z correlation exactly as it leaks into the x correlation of a 2-D
image, kept small by the same clipping; an offset of a whole plane (illumination
drift between planes) cancels, as the prediction weights sum to 1. Lags along z
are counted in planes, up to one less than the planes of the thickest examined
block (at most 32 planes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bmz_cosdd.errors import UserError

__all__ = ["NoiseCorrelation", "RESIDUAL_GAIN", "MIN_PLANES", "axis_residual", "correlation_reach",
           "estimate_noise_correlation", "estimate_noise_variance", "noise_variance_by_signal",
           "examined_images", "examined_volumes"]

AXES = ("x", "y")
# Predicts a pixel from the pixels at offsets -2, -1, +1, +2 along one axis; exact for cubics.
_PREDICTOR = np.array([-1.0, 4.0, 0.0, 4.0, -1.0]) / 6.0
_CLIP_SIGMAS = 3.0
# Lags examined jointly for the decision: a period-4 pattern (-a, -a, +a, +a) has
# zero correlation at lag 1 but a strong one at lag 2.
DECISION_LAGS = 3
# Bounds on the data examined, so that large training sets stay fast.
_MAX_IMAGES = 8
_MAX_SIDE = 512
#: Fewest Z planes of a volume on which the correlation along z is measured (lags 1-3 are then defined).
MIN_PLANES = DECISION_LAGS + 1
# Volumes: up to 4, each as its central block of up to 32 planes and 256 x 256 pixels (about 2 M voxels).
_MAX_VOLUMES = 4
_MAX_PLANES = 32
_MAX_SIDE_3D = 256
# Where each axis runs, for the user.
_AXIS_NAMES = {"x": "rows", "y": "columns", "z": "across planes"}


@dataclass(frozen=True)
class NoiseCorrelation:
    """The noise correlation along x, y and (for volumes) z, and what it implies.

    Attributes
    ----------
    correlation_x, correlation_y : tuple of float
        Correlation of the noise at lags 1..max_lag along x (along a row) and
        along y (along a column); 0 for pixel-independent noise.
    threshold : float
        Correlation above which the noise counts as correlated.
    direction : {"x", "y", "z", "none"}
        The axis with the largest absolute correlation over lags 1-3 (ties go
        to x, then y), or ``"none"`` when no axis exceeds the threshold
        (pixel-independent noise). ``"z"`` only where z was measured.
    length_x, length_y : int
        Correlation length in pixels along each axis: the largest lag up to
        which the absolute correlation stays above the threshold (single lags
        below it are bridged, two in a row end the run; 0 when lags 1-3 are all
        below it). Equal to ``max_lag`` when the correlation persists further.
    max_lag : int
        Largest lag examined.
    correlation_z : tuple of float or None
        Correlation across Z planes at lags 1..n (n = ``max_lag``, or fewer
        where the volumes have fewer planes: the lags measured); None when no
        volume of at least :data:`MIN_PLANES` planes was given (2-D images).
    length_z : int or None
        Correlation length along z in planes (as ``length_x``; equal to the
        number of lags measured when the correlation persists further); None
        when z was not measured.
    """

    correlation_x: tuple[float, ...]
    correlation_y: tuple[float, ...]
    threshold: float
    direction: str
    length_x: int
    length_y: int
    max_lag: int
    correlation_z: tuple[float, ...] | None = None
    length_z: int | None = None

    @property
    def axes(self) -> tuple[str, ...]:
        """The axes measured: ``("x", "y")``, plus ``"z"`` for volumes."""
        return AXES if self.correlation_z is None else (*AXES, "z")

    def correlation(self, axis: str) -> np.ndarray:
        """Correlation at lags 1..n along ``axis`` ("x", "y" or, where measured, "z")."""
        if axis == "z":
            if self.correlation_z is None:
                raise ValueError("the correlation along z was not measured (no volume of at least"
                                 f" {MIN_PLANES} planes)")
            return np.asarray(self.correlation_z)
        return np.asarray(self.correlation_x if axis == "x" else self.correlation_y)

    def lags(self, axis: str) -> int:
        """Number of lags measured along ``axis`` (``max_lag``, or fewer along z for short volumes)."""
        return len(self.correlation(axis))

    def length(self, axis: str) -> int:
        """Correlation length along ``axis``, in pixels (planes along z)."""
        if axis == "z":
            self.correlation("z")  # raises if not measured
            return int(self.length_z or 0)
        return self.length_x if axis == "x" else self.length_y

    def score(self, axis: str) -> float:
        """Largest absolute correlation over lags 1-3 along ``axis``."""
        return float(np.max(np.abs(self.correlation(axis)[:DECISION_LAGS])))

    @property
    def pixel_independent(self) -> bool:
        """True when no axis shows correlation above the threshold."""
        return self.direction == "none"

    @property
    def cross_correlated(self) -> str | None:
        """The other axes along which the noise is correlated too (e.g. ``"y"``, ``"x and z"``), else None."""
        if self.pixel_independent:
            return None
        others = [a for a in self.axes if a != self.direction and self.score(a) > self.threshold]
        return " and ".join(others) or None

    def in_plane(self) -> NoiseCorrelation:
        """The same measurement with z left out and the direction decided among x and y only.

        For what acts within a Z plane only (e.g. StructN2V's blind mask), which cannot
        act on a correlation across planes.
        """
        if self.correlation_z is None:
            return self
        scores = {axis: self.score(axis) for axis in AXES}
        return replace(self, correlation_z=None, length_z=None, direction=_decide(scores, self.threshold))

    def describe(self) -> str:
        """One sentence on what was measured, for the user."""
        n_dec = min(DECISION_LAGS, self.max_lag)
        if self.pixel_independent:
            scores = _join([f"{self.score(a):.2f} along {a}" for a in self.axes])
            return (
                f"noise looks pixel-independent: the largest residual autocorrelation at {_lags(n_dec)} is"
                f" {scores}, below the threshold {self.threshold:g}"
            )
        axis = self.direction
        others = [a for a in self.axes if a != axis]
        reach = self.length(axis)
        shown = min(max(reach + 1, 2), self.lags(axis), 8)
        versus = _join([f"{_fmt(self.correlation(a)[:n_dec])} along {a}" for a in others])
        text = (
            f"noise correlated along {axis} ({_AXIS_NAMES[axis]}): residual autocorrelation"
            f" {_fmt(self.correlation(axis)[:shown])} at {_lags(shown)} along {axis} vs {versus};"
            f" correlation length {reach} {_unit(axis)}"
        )
        if reach == self.lags(axis):
            text += f" (it persists to the largest lag examined, {self.lags(axis)})"
        if self.cross_correlated:
            also = max(self.score(a) for a in others)
            text += f"; also correlated along {self.cross_correlated} (up to {also:.2f} at {_lags(n_dec)})"
        return text

    def describe_axis(self, axis: str) -> str:
        """The profile along one axis, e.g. ``0.50, 0.25, 0.12, 0.06 at lags 1-4; correlation length 2 planes``."""
        reach = self.length(axis)
        shown = min(max(reach + 1, 4), self.lags(axis), 8)
        text = f"{_fmt(self.correlation(axis)[:shown])} at {_lags(shown)}; correlation length {reach} {_unit(axis)}"
        if reach == self.lags(axis):
            text += f" (it persists to the largest lag examined, {self.lags(axis)})"
        return text

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``correlation_z`` and a ``z`` length only where z was measured)."""
        lengths = {"x": self.length_x, "y": self.length_y}
        out: dict[str, object] = {
            "direction": self.direction,
            "threshold": self.threshold,
            "correlation_length_px": lengths,
            "correlation_x": [round(v, 5) for v in self.correlation_x],
            "correlation_y": [round(v, 5) for v in self.correlation_y],
        }
        if self.correlation_z is not None:
            lengths["z"] = self.length("z")
            out["correlation_z"] = [round(v, 5) for v in self.correlation_z]
        out["max_lag"] = self.max_lag
        return out


def _decide(scores: dict[str, float], threshold: float) -> str:
    """The axis of the largest score (ties: the first, in the order x, y, z), or "none" if none exceeds threshold."""
    axis = max(scores, key=lambda a: scores[a])
    return axis if scores[axis] > threshold else "none"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _unit(axis: str) -> str:
    return "planes" if axis == "z" else "px"


def _fmt(values: Sequence[float]) -> str:
    # Rounding first avoids printing tiny negatives as "-0.00".
    return ", ".join(f"{round(float(v), 2) + 0.0:.2f}" for v in values)


def _lags(n: int) -> str:
    return "lag 1" if n == 1 else f"lags 1-{n}"


# Variance of the residual per unit variance of noise that is independent along the prediction axis.
RESIDUAL_GAIN = 1.0 + float(np.sum(_PREDICTOR**2))


def axis_residual(img: np.ndarray, axis: int) -> np.ndarray:
    """Residual of an image against the prediction of each pixel from its neighbours along ``axis``.

    ``img`` is (Y, X), or any array whose last two axes are Y and X (e.g. a
    volume's planes, (Z, Y, X)): each plane is treated alone. ``axis`` 0 predicts
    from the pixels 1 and 2 rows above and below, 1 from those 1 and 2 columns
    left and right (a cubic interpolation, the pixel itself excluded); the two
    border pixels on each side along ``axis`` are dropped. Signal that is
    locally cubic along ``axis`` cancels; noise that is independent along
    ``axis`` keeps its structure across it, with its variance multiplied by
    :data:`RESIDUAL_GAIN`.
    """
    from scipy import ndimage

    along = img.ndim - 2 + axis
    resid = img - ndimage.convolve1d(img, _PREDICTOR, axis=along, mode="reflect")
    edge = len(_PREDICTOR) // 2
    return resid[..., edge:-edge, :] if axis == 0 else resid[..., edge:-edge]


def _clipped(resid: np.ndarray) -> np.ndarray:
    """Residuals clipped at 3 robust standard deviations (1.4826 MAD), so that edges do not dominate."""
    spread = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    if spread > 0:
        resid = np.clip(resid, -_CLIP_SIGMAS * spread, _CLIP_SIGMAS * spread)
    return resid


def _lagged_correlation(resid: np.ndarray, axis: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of ``resid`` with itself shifted along ``axis`` by 1..max_lag, and the pair counts
    (0 beyond the axis's length)."""
    power = float(np.mean(resid * resid))
    corr = np.zeros(max_lag)
    count = np.zeros(max_lag)
    if power <= 0:
        return corr, count
    length = resid.shape[axis]
    before = [slice(None)] * resid.ndim
    after = [slice(None)] * resid.ndim
    for lag in range(1, min(max_lag, length - 1) + 1):
        before[axis], after[axis] = slice(None, -lag), slice(lag, None)
        prod = resid[tuple(before)] * resid[tuple(after)]
        corr[lag - 1] = float(prod.mean()) / power
        count[lag - 1] = prod.size
    return corr, count


def _residual_correlation(img: np.ndarray, axis: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of the residuals along ``axis`` (0: y, 1: x) at lags 1..max_lag, and pair counts.

    The residual is taken against a prediction along the OTHER axis, so noise
    that is independent along ``axis`` gives zero correlation.
    """
    return _lagged_correlation(_clipped(axis_residual(img, 1 - axis)), axis, max_lag)


def _plane_correlation(volume: np.ndarray, predict_axis: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation across the planes of a (Z, Y, X) volume at lags 1..max_lag, and pair counts.

    The residual of each pixel is taken against its prediction from its
    neighbours along ``predict_axis`` (0: y, 1: x) within its own plane (see
    the module docstring): no plane enters another's prediction, so noise
    independent along ``predict_axis`` gives its own correlation along z, and
    white noise zero.
    """
    return _lagged_correlation(_clipped(axis_residual(volume, predict_axis)), 0, max_lag)


def examined_images(images: Sequence[np.ndarray], min_side: int = 1, max_images: int = _MAX_IMAGES) -> list[np.ndarray]:
    """What the noise is measured on: up to ``max_images`` (8) evenly spaced images of at least ``min_side`` pixels a side,
    each cropped to its central 512 x 512 pixels, as (C, Y, X) float64 (bounds that keep large data fast).
    A volume (C, Z, Y, X) counts as its Z planes.

    Raises
    ------
    UserError
        For an image that is not (C, Y, X), (Y, X) or (C, Z, Y, X), or crops holding NaN or infinite values.
    """
    arrays = [np.asarray(im) for im in images]
    arrays = [a[None] if a.ndim == 2 else a for a in arrays]
    arrays = [plane for a in arrays for plane in (np.moveaxis(a, 1, 0) if a.ndim == 4 else [a])]
    for a in arrays:
        if a.ndim != 3:
            raise UserError(f"the noise is measured on 2-D images, (C, Y, X) or (Y, X); got shape {a.shape}")
    arrays = [a for a in arrays if min(a.shape[-2:]) >= min_side]
    if len(arrays) > max_images:
        picks = np.linspace(0, len(arrays) - 1, max_images).round().astype(int)
        arrays = [arrays[i] for i in picks]
    crops = []
    for a in arrays:
        y0 = max(0, (a.shape[1] - _MAX_SIDE) // 2)
        x0 = max(0, (a.shape[2] - _MAX_SIDE) // 2)
        crop = np.ascontiguousarray(a[:, y0 : y0 + _MAX_SIDE, x0 : x0 + _MAX_SIDE], dtype=np.float64)
        if not np.all(np.isfinite(crop)):
            raise UserError("the images contain NaN or infinite values; cannot measure the noise")
        crops.append(crop)
    return crops


def examined_volumes(
    images: Sequence[np.ndarray], min_planes: int = MIN_PLANES, min_side: int = 1, max_volumes: int = _MAX_VOLUMES
) -> list[np.ndarray]:
    """The volumes the correlation along z is measured on.

    Up to ``max_volumes`` (4) evenly spaced volumes of at least ``min_planes``
    planes and ``min_side`` pixels a side, each as its central block of up to
    32 contiguous planes and 256 x 256 pixels, (C, Z, Y, X) float64 (bounds that
    keep large data fast; contiguous, because the correlation runs across
    neighbouring planes). 2-D images (C, Y, X) or (Y, X) and thinner volumes are
    skipped.

    Raises
    ------
    UserError
        For blocks holding NaN or infinite values.
    """
    arrays = [np.asarray(a) for a in images]
    arrays = [a for a in arrays if a.ndim == 4 and a.shape[1] >= min_planes and min(a.shape[-2:]) >= min_side]
    if len(arrays) > max_volumes:
        picks = np.linspace(0, len(arrays) - 1, max_volumes).round().astype(int)
        arrays = [arrays[i] for i in picks]
    blocks = []
    for a in arrays:
        starts = [max(0, (size - bound) // 2) for size, bound in zip(a.shape[1:], (_MAX_PLANES, _MAX_SIDE_3D,
                                                                                    _MAX_SIDE_3D))]
        z0, y0, x0 = starts
        block = np.ascontiguousarray(
            a[:, z0 : z0 + _MAX_PLANES, y0 : y0 + _MAX_SIDE_3D, x0 : x0 + _MAX_SIDE_3D], dtype=np.float64
        )
        if not np.all(np.isfinite(block)):
            raise UserError("the images contain NaN or infinite values; cannot measure the noise")
        blocks.append(block)
    return blocks


def correlation_reach(correlation: np.ndarray, threshold: float) -> int:
    """Largest lag covered by the correlation (0 if lags 1-3 are all below ``threshold``).

    The run starts at the first lag <= 3 above the threshold (lags 1..3 count
    jointly) and continues over single lags below it, so that a period-4 pattern,
    correlated at even lags only, is followed; two lags in a row below the
    threshold end it.
    """
    above = np.abs(np.asarray(correlation)) > threshold
    first = next((i for i in range(min(DECISION_LAGS, len(above))) if above[i]), None)
    if first is None:
        return 0
    reach = first + 1
    for lag in range(first + 2, len(above) + 1):
        if above[lag - 1]:
            reach = lag
        elif lag - reach >= 2:
            break
    return reach


def estimate_noise_correlation(
    images: Sequence[np.ndarray], max_lag: int = 16, threshold: float = 0.1
) -> NoiseCorrelation:
    """Measure the noise correlation along x, y and (for volumes) z, and decide the noise direction.

    For each image and channel the residual against a prediction from the
    pixel's neighbours along one axis is correlated along the other axis (see
    the module docstring), on :func:`examined_images` (a volume's planes). For
    volumes of at least :data:`MIN_PLANES` planes the residual against a
    prediction within each plane is correlated across planes, on
    :func:`examined_volumes`; the prediction runs along y, or along x where the
    noise is more correlated along y than along x (exact for noise independent
    along the prediction axis, or of separable correlation). Correlations are
    averaged over channels and images, weighted by the number of pixel pairs.

    The direction is the axis, among those measured, with the largest absolute
    correlation over lags 1-3, if that exceeds ``threshold`` (ties go to x, then
    y, then z); else ``"none"``.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Noisy images (or noise alone), each (C, Y, X) or (Y, X), or volumes
        (C, Z, Y, X). Any offset and scale; normalising first is not needed.
    max_lag : int, default 16
        Largest lag examined, in pixels (planes along z; along z at most one
        less than the planes of the thickest examined block).
    threshold : float, default 0.1
        Correlation above which the noise counts as correlated.

    Returns
    -------
    NoiseCorrelation
        With ``correlation_z`` None unless a volume of at least
        :data:`MIN_PLANES` planes was given.

    Raises
    ------
    UserError
        If there are no images of at least 5 x 5 pixels, or they contain NaN
        or infinite values.
    ValueError
        For ``max_lag < 1`` or a threshold outside (0, 1).

    Examples
    --------
    >>> from bmz_cosdd.data.synthetic import make_dataset
    >>> data = make_dataset("blobs", "row_correlated", n=2, shape=(96, 96), seed=0)
    >>> estimate_noise_correlation(list(data.noisy)).direction
    'x'
    """
    if max_lag < 1:
        raise ValueError(f"max_lag must be >= 1, got {max_lag}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    arrays = examined_images(images, min_side=len(_PREDICTOR))
    if not arrays:
        raise UserError("no image of at least 5 x 5 pixels to measure the noise correlation on")

    corr_y, corr_x = (
        _pooled([_residual_correlation(channel, axis, max_lag) for crop in arrays for channel in crop], max_lag)
        for axis in (0, 1)
    )
    scores = {axis: float(np.max(np.abs(c[:DECISION_LAGS]))) for axis, c in (("x", corr_x), ("y", corr_y))}
    corr_z = None
    volumes = examined_volumes(images, min_side=len(_PREDICTOR))
    if volumes:
        predict_axis = 1 if scores["y"] > scores["x"] else 0  # along the in-plane axis less correlated
        measured = [_plane_correlation(channel, predict_axis, max_lag) for block in volumes for channel in block]
        corr_z = _pooled(measured, max_lag)[: min(max_lag, max(block.shape[1] for block in volumes) - 1)]
        scores["z"] = float(np.max(np.abs(corr_z[:DECISION_LAGS])))
    return NoiseCorrelation(
        correlation_x=tuple(float(v) for v in corr_x),
        correlation_y=tuple(float(v) for v in corr_y),
        threshold=float(threshold),
        direction=_decide(scores, threshold),
        length_x=correlation_reach(corr_x, threshold),
        length_y=correlation_reach(corr_y, threshold),
        max_lag=max_lag,
        correlation_z=None if corr_z is None else tuple(float(v) for v in corr_z),
        length_z=None if corr_z is None else correlation_reach(corr_z, threshold),
    )


def _pooled(measured: Sequence[tuple[np.ndarray, np.ndarray]], max_lag: int) -> np.ndarray:
    """The mean of per-array correlations at each lag, weighted by their pair counts (0 where none)."""
    sums, weights = np.zeros(max_lag), np.zeros(max_lag)
    for corr, count in measured:
        sums += corr * count
        weights += count
    return np.divide(sums, weights, out=np.zeros(max_lag), where=weights > 0)


def _across_axis(direction: str) -> int:
    """The image axis (0: y, 1: x) along which a pixel is predicted to leave its noise: across the correlation."""
    return 1 if direction == "y" else 0


def noise_variance_by_signal(
    images: Sequence[np.ndarray], direction: str = "none", signals: Sequence[np.ndarray] | None = None, bins: int = 16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise variance of noisy images in signal bins, measured from the images alone.

    Every pixel is predicted from its neighbours across the noise correlation (from the
    pixels 1 and 2 rows away for noise correlated along x or pixel-independent noise,
    1 and 2 columns away for noise correlated along y); the residual holds the noise
    times :data:`RESIDUAL_GAIN` plus what of the image is not locally cubic. Its robust
    variance (1.4826 MAD, squared) is taken in ``bins`` quantile bins of the signal, so
    that signal-dependent noise and the edges of bright structures do not mix.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Noisy images, (C, Y, X) or (Y, X), any units; used as given (no cropping).
    direction : {"x", "y", "z", "none"}, default "none"
        Noise direction; ``z`` and ``none`` predict along y.
    signals : sequence of numpy.ndarray, optional
        The signal to bin by, aligned with ``images`` (e.g. a prediction); default: a
        Gaussian smoothing (sigma 2 px) of each image.
    bins : int, default 16
        Signal bins (fewer when quantiles coincide).

    Returns
    -------
    centres, variances, counts : numpy.ndarray
        Mean signal, noise variance (the images' units squared) and pixel count per bin.
    """
    from scipy import ndimage

    axis = _across_axis(direction)
    edge = len(_PREDICTOR) // 2
    trim = (slice(edge, -edge), slice(None)) if axis == 0 else (slice(None), slice(edge, -edge))
    residuals, levels = [], []
    for index, image in enumerate(images):
        image = np.asarray(image, dtype=np.float64)
        image = image[None] if image.ndim == 2 else image
        signal = None if signals is None else np.asarray(signals[index], dtype=np.float64).reshape(image.shape)
        for c, channel in enumerate(image):
            residuals.append(axis_residual(channel, axis).ravel())
            level = ndimage.gaussian_filter(channel, 2.0, mode="reflect") if signal is None else signal[c]
            levels.append(level[trim].ravel())
    resid, level = np.concatenate(residuals), np.concatenate(levels)
    edges = np.unique(np.quantile(level, np.linspace(0.0, 1.0, bins + 1)))
    index = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, max(len(edges) - 2, 0))
    centres, variances, counts = [], [], []
    for b in np.unique(index):
        chosen = index == b
        values = resid[chosen]
        mad = float(np.median(np.abs(values - np.median(values))))
        centres.append(float(level[chosen].mean()))
        variances.append((1.4826 * mad) ** 2 / RESIDUAL_GAIN)
        counts.append(int(values.size))
    return np.array(centres), np.array(variances), np.array(counts)


def estimate_noise_variance(images: Sequence[np.ndarray], direction: str = "none", bins: int = 16) -> float:
    """Mean noise variance of noisy images, measured from the images alone.

    The count-weighted mean of :func:`noise_variance_by_signal` over up to 32 images
    bounded as in :func:`examined_images`. On the paper's noise recipes applied to real
    tiles (:mod:`bmz_cosdd.data.real_images`) it lies within about 25 % of the true
    variance (higher where textures remain).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Noisy images, (C, Y, X), (Y, X) or volumes (C, Z, Y, X) (their Z planes), any units.
    direction : {"x", "y", "z", "none"}, default "none"
        Noise direction; ``z`` and ``none`` predict along y.
    bins : int, default 16
        Signal bins.

    Returns
    -------
    float
        The variance in the images' units squared, pooled over channels.

    Raises
    ------
    UserError
        If no image has at least 5 x 5 pixels.
    """
    arrays = examined_images(images, min_side=len(_PREDICTOR), max_images=4 * _MAX_IMAGES)
    if not arrays:
        raise UserError("no image of at least 5 x 5 pixels to measure the noise variance on")
    _, variances, counts = noise_variance_by_signal(arrays, direction, bins=bins)
    return float(np.sum(variances * counts) / np.sum(counts))
