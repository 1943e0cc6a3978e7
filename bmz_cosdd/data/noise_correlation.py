"""Spatial correlation of the noise along x and y, measured from noisy images alone.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bmz_cosdd.errors import UserError

__all__ = ["NoiseCorrelation", "RESIDUAL_GAIN", "axis_residual", "correlation_reach", "estimate_noise_correlation",
           "estimate_noise_variance", "noise_variance_by_signal",
           "examined_images"]

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


@dataclass(frozen=True)
class NoiseCorrelation:
    """The noise correlation along x and y and what it implies.

    Attributes
    ----------
    correlation_x, correlation_y : tuple of float
        Correlation of the noise at lags 1..max_lag along x (along a row) and
        along y (along a column); 0 for pixel-independent noise.
    threshold : float
        Correlation above which the noise counts as correlated.
    direction : {"x", "y", "none"}
        The axis with the larger absolute correlation over lags 1-3, or
        ``"none"`` when neither exceeds the threshold (pixel-independent noise).
    length_x, length_y : int
        Correlation length in pixels along each axis: the largest lag up to
        which the absolute correlation stays above the threshold (single lags
        below it are bridged, two in a row end the run; 0 when lags 1-3 are all
        below it). Equal to ``max_lag`` when the correlation persists further.
    max_lag : int
        Largest lag examined.
    """

    correlation_x: tuple[float, ...]
    correlation_y: tuple[float, ...]
    threshold: float
    direction: str
    length_x: int
    length_y: int
    max_lag: int

    def correlation(self, axis: str) -> np.ndarray:
        """Correlation at lags 1..max_lag along ``axis`` ("x" or "y")."""
        return np.asarray(self.correlation_x if axis == "x" else self.correlation_y)

    def length(self, axis: str) -> int:
        """Correlation length in pixels along ``axis``."""
        return self.length_x if axis == "x" else self.length_y

    def score(self, axis: str) -> float:
        """Largest absolute correlation over lags 1-3 along ``axis``."""
        return float(np.max(np.abs(self.correlation(axis)[: min(DECISION_LAGS, self.max_lag)])))

    @property
    def pixel_independent(self) -> bool:
        """True when neither axis shows correlation above the threshold."""
        return self.direction == "none"

    @property
    def cross_correlated(self) -> str | None:
        """The other axis when the noise is correlated along both, else None."""
        if self.pixel_independent:
            return None
        other = "y" if self.direction == "x" else "x"
        return other if self.score(other) > self.threshold else None

    def describe(self) -> str:
        """One sentence on what was measured, for the user."""
        n_dec = min(DECISION_LAGS, self.max_lag)
        if self.pixel_independent:
            return (
                f"noise looks pixel-independent: the largest residual autocorrelation at {_lags(n_dec)} is"
                f" {self.score('x'):.2f} along x and {self.score('y'):.2f} along y,"
                f" below the threshold {self.threshold:g}"
            )
        axis = self.direction
        other = "y" if axis == "x" else "x"
        reach = self.length(axis)
        shown = min(max(reach + 1, 2), self.max_lag, 8)
        text = (
            f"noise correlated along {axis} ({'rows' if axis == 'x' else 'columns'}): residual autocorrelation"
            f" {_fmt(self.correlation(axis)[:shown])} at {_lags(shown)} along {axis} vs"
            f" {_fmt(self.correlation(other)[:n_dec])} along {other}; correlation length {reach} px"
        )
        if reach == self.max_lag:
            text += f" (it persists to the largest lag examined, {self.max_lag})"
        if self.cross_correlated:
            text += f"; also correlated along {other} (up to {self.score(other):.2f} at {_lags(n_dec)})"
        return text

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "direction": self.direction,
            "threshold": self.threshold,
            "correlation_length_px": {"x": self.length_x, "y": self.length_y},
            "correlation_x": [round(v, 5) for v in self.correlation_x],
            "correlation_y": [round(v, 5) for v in self.correlation_y],
            "max_lag": self.max_lag,
        }


def _fmt(values: Sequence[float]) -> str:
    # Rounding first avoids printing tiny negatives as "-0.00".
    return ", ".join(f"{round(float(v), 2) + 0.0:.2f}" for v in values)


def _lags(n: int) -> str:
    return "lag 1" if n == 1 else f"lags 1-{n}"


# Variance of the residual per unit variance of noise that is independent along the prediction axis.
RESIDUAL_GAIN = 1.0 + float(np.sum(_PREDICTOR**2))


def axis_residual(img: np.ndarray, axis: int) -> np.ndarray:
    """Residual of a 2-D image against the prediction of each pixel from its neighbours along ``axis``.

    ``axis`` 0 predicts from the pixels 1 and 2 rows above and below, 1 from
    those 1 and 2 columns left and right (a cubic interpolation, the pixel
    itself excluded); the two border pixels on each side along ``axis`` are
    dropped. Signal that is locally cubic along ``axis`` cancels; noise that
    is independent along ``axis`` keeps its structure across it, with its
    variance multiplied by :data:`RESIDUAL_GAIN`.
    """
    from scipy import ndimage

    resid = img - ndimage.convolve1d(img, _PREDICTOR, axis=axis, mode="reflect")
    edge = len(_PREDICTOR) // 2
    return resid[edge:-edge, :] if axis == 0 else resid[:, edge:-edge]


def _residual_correlation(img: np.ndarray, axis: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of the residuals along ``axis`` (0: y, 1: x) at lags 1..max_lag, and pair counts.

    The residual is taken against a prediction along the OTHER axis, so noise
    that is independent along ``axis`` gives zero correlation.
    """
    resid = axis_residual(img, 1 - axis)
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
    """Measure the noise correlation along x and y and decide the noise direction.

    For each image and channel the residual against a prediction from the
    pixel's neighbours along one axis is correlated along the other axis (see
    the module docstring). Correlations are averaged over channels and images,
    weighted by the number of pixel pairs, on :func:`examined_images`.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Noisy images (or noise alone), each (C, Y, X) or (Y, X). Any offset
        and scale; normalising first is not needed.
    max_lag : int, default 16
        Largest lag examined.
    threshold : float, default 0.1
        Correlation above which the noise counts as correlated.

    Returns
    -------
    NoiseCorrelation

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

    sums = {axis: np.zeros(max_lag) for axis in (0, 1)}
    weights = {axis: np.zeros(max_lag) for axis in (0, 1)}
    for crop in arrays:
        for channel in crop:
            for axis in (0, 1):
                corr, count = _residual_correlation(channel, axis, max_lag)
                sums[axis] += corr * count
                weights[axis] += count
    corr_y, corr_x = (
        np.divide(sums[axis], weights[axis], out=np.zeros(max_lag), where=weights[axis] > 0) for axis in (0, 1)
    )
    n_dec = min(DECISION_LAGS, max_lag)
    score_x, score_y = (float(np.max(np.abs(c[:n_dec]))) for c in (corr_x, corr_y))
    if max(score_x, score_y) <= threshold:
        direction = "none"
    else:
        direction = "x" if score_x >= score_y else "y"
    return NoiseCorrelation(
        correlation_x=tuple(float(v) for v in corr_x),
        correlation_y=tuple(float(v) for v in corr_y),
        threshold=float(threshold),
        direction=direction,
        length_x=correlation_reach(corr_x, threshold),
        length_y=correlation_reach(corr_y, threshold),
        max_lag=max_lag,
    )


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
