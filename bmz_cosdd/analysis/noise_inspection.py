"""What the noise looks like: spatial correlation, signal dependence and the settings they call for.

``bmz-cosdd inspect`` estimates the noise from the data alone and reports

- the 2-D spatial autocorrelation of a noise estimate (within planes, for volumes),
- the correlation along x and y (and z, across the planes of volumes) with the
  correlation length, measured by
  :func:`bmz_cosdd.data.noise_correlation.estimate_noise_correlation` (the
  estimator behind COSDD's ``--direction auto`` and StructN2V's
  ``--struct-mask auto``, so the report and those options always agree),
- the noise variance against the signal (for volumes, over every voxel of the
  examined blocks),
- and every method's advice for this noise (``Method.advise``).

Volumes (axes with ``Z``, at least
:data:`~bmz_cosdd.data.noise_correlation.MIN_PLANES` planes) are examined as
their central blocks of contiguous planes
(:func:`~bmz_cosdd.data.noise_correlation.examined_volumes`); every noise
estimate below is then made within each plane, so that none mixes planes.

Where the noise estimate comes from (:class:`NoiseSource`):

``smooth`` (default)
    noise = image - Gaussian smoothing of the image; signal = the smoothing.
``run``
    noise = image - a trained run's prediction; signal = the prediction.
``dark``
    dark frames (no light): noise = frame - its mean; one signal level only.
``region``
    an empty region of each image: noise = region - its mean; one signal level only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bmz_cosdd.data.clipping import clipped_pixels
from bmz_cosdd.data.noise_correlation import (
    RESIDUAL_GAIN,
    NoiseCorrelation,
    axis_residual,
    estimate_noise_correlation,
    examined_images,
    examined_volumes,
)
from bmz_cosdd.errors import UserError

__all__ = [
    "NoiseSource",
    "SignalDependence",
    "NoiseReport",
    "noise_from_smoothing",
    "noise_from_predictions",
    "noise_from_dark",
    "noise_from_region",
    "parse_region",
    "inspect_noise",
    "write_noise_report",
]

_CLIP_SIGMAS = 3.0
_VARIANCE_BINS = 16
# Predicted variance at the 90th vs the 10th percentile of the signal beyond which
# the noise counts as signal-dependent.
_DEPENDENCE_RATIO = 1.25


@dataclass
class NoiseSource:
    """A noise estimate and, where known, the signal under it.

    Attributes
    ----------
    kind : str
        ``smooth``, ``run``, ``dark`` or ``region``.
    description : str
        How the noise was estimated, for the report.
    noisy : list of numpy.ndarray
        The images the noise came from, (C, Y, X) float64, or blocks of volumes
        (C, Z, Y, X) (shown in the report).
    noise : list of numpy.ndarray
        Noise estimates aligned with ``noisy``, float64, zero mean.
    signal : list of numpy.ndarray or None
        Signal estimates aligned with ``noise``; None when there is only one level.
    correlation_input : list of numpy.ndarray
        What the correlation estimator is given: the noisy images themselves for
        ``smooth`` (it removes the signal in its own unbiased way), else the noise.
    flat : list of numpy.ndarray or None
        Per image, ([Z,] Y, X) bool: the pixels whose noise estimate is trusted (a
        smoothing residual also holds edges and thin structures; only the
        flatter half of each image is used). None: every pixel.
    holds_signal : bool
        The noise estimate still holds image structure, so the variance is
        measured on the residual against a prediction along the axis across
        the noise correlation instead (exact for noise independent along it).
    """

    kind: str
    description: str
    noisy: list[np.ndarray]
    noise: list[np.ndarray]
    signal: list[np.ndarray] | None
    correlation_input: list[np.ndarray]
    flat: list[np.ndarray] | None = None
    holds_signal: bool = False

    def trusted(self, index: int) -> np.ndarray:
        """([Z,] Y, X) bool mask of image ``index``'s trusted pixels."""
        if self.flat is None:
            return np.ones(self.noise[index].shape[1:], dtype=bool)
        return self.flat[index]

    @property
    def volumes(self) -> bool:
        """True when the arrays are blocks of volumes (C, Z, Y, X)."""
        return self.noise[0].ndim == 4

    def count(self) -> str:
        """What the noise was measured on, e.g. ``3 image(s)`` or ``1 volume(s) of 24 planes``."""
        if not self.volumes:
            return f"{len(self.noise)} image(s)"
        planes = sorted({a.shape[1] for a in self.noise})
        span = str(planes[0]) if len(planes) == 1 else f"{planes[0]}-{planes[-1]}"
        return f"{len(self.noise)} volume(s) of {span} planes"


def _bounded(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The arrays the noise is measured on: volumes of enough planes as their central blocks
    (:func:`~bmz_cosdd.data.noise_correlation.examined_volumes`), else 2-D images or a volume's planes
    (:func:`~bmz_cosdd.data.noise_correlation.examined_images`)."""
    arrays = examined_volumes(images) or examined_images(images)
    if not arrays:
        raise UserError("no images to inspect")
    return arrays


def _in_plane(array: np.ndarray, sigma: float) -> tuple[float, ...]:
    """Gaussian sigmas for ``array`` (.., Y, X) that smooth within each Y-X plane only."""
    return (0.0,) * (array.ndim - 2) + (sigma, sigma)


def _in_plane_slope(channel: np.ndarray, sigma: float) -> np.ndarray:
    """Gradient magnitude of a (Y, X) image, or of every plane of a (Z, Y, X) volume, at scale ``sigma``."""
    from scipy import ndimage

    planes = channel.reshape(-1, *channel.shape[-2:])
    return np.stack([ndimage.gaussian_gradient_magnitude(p, sigma) for p in planes]).reshape(channel.shape)


def noise_from_smoothing(images: Sequence[np.ndarray], sigma: float = 2.0) -> NoiseSource:
    """Noise as the residual against a Gaussian smoothing of each image.

    Volumes are smoothed within each plane (sigma 0 along Z), so that the
    signal estimate does not mix planes: noise correlated along z stays in the
    residual, and coarse Z steps do not blur the signal.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Noisy images, (C, Y, X) or (Y, X), or volumes (C, Z, Y, X), raw intensities.
    sigma : float, default 2.0
        Standard deviation of the Gaussian in pixels.

    Returns
    -------
    NoiseSource
    """
    from scipy import ndimage

    if sigma <= 0:
        raise UserError(f"--smooth-sigma must be positive, got {sigma}")
    noisy = _bounded(images)
    signal = [ndimage.gaussian_filter(a, sigma=_in_plane(a, sigma), mode="reflect") for a in noisy]
    noise = [a - s for a, s in zip(noisy, signal)]
    flat = []
    for s in signal:
        # Edges leak into the residual; keep the half of the image (volume) with the weakest gradient.
        slope = sum(_in_plane_slope(c, sigma) / max(float(c.std()), 1e-12) for c in s)
        flat.append(slope <= np.median(slope))
    return NoiseSource(
        "smooth", f"residual against a Gaussian smoothing (sigma {sigma:g} px), flatter half of each image",
        noisy, noise, signal, noisy, flat, holds_signal=True,
    )


def noise_from_predictions(images: Sequence[np.ndarray], predictions: Sequence[np.ndarray], name: str) -> NoiseSource:
    """Noise as the residual against a denoiser's predictions (``images`` and ``predictions`` aligned)."""
    noisy = [np.asarray(a, dtype=np.float64) for a in images]
    signal = [np.asarray(p, dtype=np.float64) for p in predictions]
    for a, p in zip(noisy, signal):
        if a.shape != p.shape:
            raise ValueError(f"prediction shape {p.shape} differs from the image's {a.shape}")
    noise = [a - p for a, p in zip(noisy, signal)]
    return NoiseSource("run", f"residual against the prediction of {name}", noisy, noise, signal, noise)


def noise_from_dark(frames: Sequence[np.ndarray]) -> NoiseSource:
    """Noise from dark frames (acquired without light): each frame (each plane of a volume) minus its own mean,
    per channel."""
    dark = _bounded(frames)
    noise = [a - a.mean(axis=(-2, -1), keepdims=True) for a in dark]
    what = "dark volume(s), each plane" if dark[0].ndim == 4 else "dark frame(s), each"
    return NoiseSource("dark", f"{len(dark)} {what} minus its mean", dark, noise, None, noise)


def parse_region(text: str) -> tuple[slice, slice]:
    """``"Y0:Y1,X0:X1"`` (pixel bounds, end excluded) as two slices."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        bounds = [tuple(int(v) for v in p.split(":")) for p in parts]
    except ValueError:
        bounds = []
    if len(bounds) != 2 or any(len(b) != 2 or b[0] < 0 or b[1] <= b[0] for b in bounds):
        raise UserError(f"--region must be Y0:Y1,X0:X1 with 0 <= start < end, got {text!r}")
    (y0, y1), (x0, x1) = bounds
    return slice(y0, y1), slice(x0, x1)


def noise_from_region(images: Sequence[np.ndarray], region: str) -> NoiseSource:
    """Noise from a region of each image that holds no structure (e.g. background): region minus its mean
    (for volumes, the region of every plane, each minus its mean)."""
    ys, xs = parse_region(region)
    crops = []
    for a in images:
        a = np.asarray(a, dtype=np.float64)
        a = a[None] if a.ndim == 2 else a
        if ys.stop > a.shape[-2] or xs.stop > a.shape[-1]:
            raise UserError(f"--region {region} lies outside an image of {a.shape[-2]} x {a.shape[-1]} px")
        crops.append(a[..., ys, xs])
    if min(crops[0].shape[-2:]) < 16:
        raise UserError(f"--region {region} is too small; give at least 16 x 16 px")
    noisy = _bounded(crops)
    noise = [a - a.mean(axis=(-2, -1), keepdims=True) for a in noisy]
    return NoiseSource("region", f"empty region {region} of each image, minus its mean", noisy, noise, None, noise)


@dataclass
class SignalDependence:
    """Noise variance against signal and its straight-line fit ``variance = gain * signal + offset``.

    Attributes
    ----------
    signal, variance : list of float
        Bin centres (mean signal) and robust noise variance per bin, raw units.
    counts : list of int
        Pixels per bin.
    gain, offset : float
        Weighted least-squares fit; for Poisson-Gaussian noise ``gain`` is the
        camera gain (intensity units per photon) and ``offset`` the read-noise
        variance at zero signal.
    ratio : float
        Fitted variance at the 90th percentile of the signal over that at the
        10th; 1 for signal-independent noise. NaN with a single signal level.
    dependent : bool or None
        Whether the variance changes with the signal by more than 25 %; None
        when only one signal level was seen (dark frames, one region).
    clipped : list of str
        Warnings, one per channel end whose pixels are clipped (the data's minimum or maximum, see
        :mod:`bmz_cosdd.data.clipping`): those pixels are left out of the fit.
    """

    signal: list[float]
    variance: list[float]
    counts: list[int]
    gain: float
    offset: float
    ratio: float
    dependent: bool | None
    clipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One sentence for the user."""
        if self.dependent is None:
            return (
                f"one signal level only (variance {self.variance[0]:.4g} at {self.signal[0]:.4g}): whether the noise"
                " depends on the signal cannot be told from this source"
            )
        fit = f"variance = {self.gain:.4g} * signal + {self.offset:.4g}"
        if self.dependent:
            return f"signal-dependent: {fit}; it changes x{self.ratio:.2f} from the 10th to the 90th signal percentile"
        return f"signal-independent: {fit}; it changes only x{self.ratio:.2f} across the signal range"


def _robust_variance(values: np.ndarray) -> float:
    mad = float(np.median(np.abs(values - np.median(values))))
    return (1.4826 * mad) ** 2


def signal_dependence(source: NoiseSource, direction: str = "none", bins: int = _VARIANCE_BINS) -> SignalDependence:
    """Robust (MAD) noise variance in signal quantile bins, with a straight-line fit.

    ``direction`` is the measured noise direction; for sources whose noise
    estimate still holds signal, the variance comes from the residual against a
    prediction along the other in-plane axis (along y for pixel-independent
    noise and noise correlated along z: a prediction within the plane, exact for
    noise independent along y). For volumes (C, Z, Y, X) every voxel of the
    examined blocks enters the bins and the fit, all planes pooled.
    Clipped pixels (the data's minimum or maximum, see :mod:`bmz_cosdd.data.clipping`)
    are left out, with every residual they enter, and named in ``clipped``.
    """
    from scipy import ndimage

    clipped, ends = clipped_pixels(source.noisy)
    warnings = [f"{end.describe('examined pixels')}; they are left out of the variance fit" for end in ends]
    if source.holds_signal and source.signal is not None:
        axis = 1 if direction == "y" else 0  # predict across the correlation: 1 = along x, 0 = along y
        trim = (Ellipsis, slice(2, -2), slice(None)) if axis == 0 else (Ellipsis, slice(2, -2))
        residuals = [axis_residual(a, axis) for a in source.noisy]  # per plane of every channel
        # a residual predicts each pixel from 2 neighbours either side along the axis: a clipped one spoils it
        keep = [ndimage.maximum_filter1d(m.view(np.uint8), size=5, axis=axis - 2, mode="nearest")[trim] == 0
                for m in clipped]
        noise = np.concatenate([r[k] for r, k in zip(residuals, keep)])
        signal_parts = [s[trim][k] for s, k in zip(source.signal, keep)]
        gain = RESIDUAL_GAIN
    else:
        masks = [source.trusted(i)[None] & ~m for i, m in enumerate(clipped)]
        noise = np.concatenate([n[m] for n, m in zip(source.noise, masks)])
        signal_parts = None if source.signal is None else [s[m] for s, m in zip(source.signal, masks)]
        gain = 1.0
    if noise.size == 0:
        raise UserError("every examined pixel is clipped at the data's minimum or maximum; nothing to inspect")
    if signal_parts is None:
        level = float(np.mean([a.mean() for a in source.noisy]))
        variance = _robust_variance(noise) / gain
        return SignalDependence([level], [variance], [int(noise.size)], 0.0, variance, float("nan"), None, warnings)
    signal = np.concatenate([s.ravel() for s in signal_parts])
    edges = np.unique(np.quantile(signal, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, signal, side="right") - 1, 0, len(edges) - 2)
    centres, variances, counts = [], [], []
    for b in range(len(edges) - 1):
        chosen = index == b
        if chosen.sum() < 50:
            continue
        centres.append(float(signal[chosen].mean()))
        variances.append(_robust_variance(noise[chosen]) / gain)
        counts.append(int(chosen.sum()))
    if len(centres) < 2:
        return SignalDependence(centres, variances, counts, 0.0, variances[0], float("nan"), None, warnings)
    x, y, w = np.array(centres), np.array(variances), np.array(counts, dtype=np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(w)[:, None]
    (gain, offset), *_ = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)
    lo, hi = np.quantile(signal, [0.1, 0.9])
    floor = 1e-12 * max(float(np.max(np.abs(y))), 1e-300)
    at_lo, at_hi = max(gain * lo + offset, floor), max(gain * hi + offset, floor)
    ratio = float(at_hi / at_lo)
    dependent = not (1 / _DEPENDENCE_RATIO <= ratio <= _DEPENDENCE_RATIO)
    return SignalDependence(centres, variances, counts, float(gain), float(offset), ratio, dependent, warnings)


def _autocorrelation_map(source: NoiseSource, max_lag: int) -> np.ndarray:
    """Correlation coefficient of the noise at lags (dy, dx) in [-max_lag, max_lag]^2, averaged over images
    (over the planes of volumes).

    Computed by FFT with zero padding (no wrap-around) over the trusted pixels
    only, divided by the number of trusted pixel pairs at each lag; outliers
    are clipped at 3 robust standard deviations.
    """
    total = np.zeros((2 * max_lag + 1, 2 * max_lag + 1))
    weight = 0.0
    planes = (
        (plane, mask.astype(np.float64))
        for index, image in enumerate(source.noise)
        for channel in image  # (Y, X), or (Z, Y, X) for volumes
        for plane, mask in zip(channel.reshape(-1, *channel.shape[-2:]),
                               source.trusted(index).reshape(-1, *channel.shape[-2:]))
    )
    for plane, mask in planes:
        kept = plane[mask > 0]
        if kept.size < 2:
            continue
        r = plane - kept.mean()
        spread = 1.4826 * float(np.median(np.abs(kept - np.median(kept))))
        if spread <= 0:
            continue
        r = np.clip(r, -_CLIP_SIGMAS * spread, _CLIP_SIGMAS * spread) * mask
        h, w = r.shape
        shape = (2 * h, 2 * w)
        spectrum = np.fft.rfft2(r, shape)
        products = np.fft.irfft2(spectrum * np.conj(spectrum), shape)
        counts = np.fft.irfft2(np.abs(np.fft.rfft2(mask, shape)) ** 2, shape)
        lags = np.r_[-max_lag : max_lag + 1]
        window = np.ix_(lags % shape[0], lags % shape[1])
        cov = products[window] / np.maximum(np.round(counts[window]), 1)
        if cov[max_lag, max_lag] <= 0:
            continue
        total += cov / cov[max_lag, max_lag] * kept.size
        weight += kept.size
    if weight == 0:
        raise UserError("the noise estimate is constant; nothing to inspect")
    return total / weight


@dataclass
class NoiseReport:
    """Everything ``inspect`` found.

    Attributes
    ----------
    source : NoiseSource
    correlation : NoiseCorrelation
        Correlation along x and y (and z, for volumes) and the noise direction.
    autocorrelation : numpy.ndarray
        (2L+1, 2L+1) map of the noise estimate's correlation coefficient at lags
        (dy, dx), centre = lag 0 (within planes, for volumes).
    dependence : SignalDependence
    advice : dict
        Method name -> advice for this noise.
    pixel_noise_model : str
        Whether a pixel noise model p(x | s) describes this noise.
    crop_size : int
        Training crop size the StructN2V mask was capped by.
    """

    source: NoiseSource
    correlation: NoiseCorrelation
    autocorrelation: np.ndarray
    dependence: SignalDependence
    advice: dict[str, str] = field(default_factory=dict)
    pixel_noise_model: str = ""
    crop_size: int = 64

    def summary_lines(self) -> list[str]:
        """The printed recommendation."""
        lines = [
            f"noise estimate: {self.source.description} ({self.source.count()})",
            f"correlation: {self.correlation.describe()}",
        ]
        if self.correlation.correlation_z is not None:
            lines.append(f"correlation along z (across planes): {self.correlation.describe_axis('z')}")
        lines += [
            f"signal dependence: {self.dependence.describe()}",
            f"pixel noise model: {self.pixel_noise_model}",
            "recommended settings:",
        ]
        width = max((len(name) for name in self.advice), default=0)
        lines += [f"  {name:<{width}}  {text}" for name, text in self.advice.items()]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for volumes, ``source.planes`` gives each examined block's Z planes)."""
        source: dict[str, Any] = {"kind": self.source.kind, "description": self.source.description,
                                  "images": len(self.source.noise)}
        if self.source.volumes:
            source["planes"] = [int(a.shape[1]) for a in self.source.noise]
        return {
            "source": source,
            "noise_correlation": self.correlation.to_dict(),
            "signal_dependence": {
                "signal": self.dependence.signal, "variance": self.dependence.variance,
                "counts": self.dependence.counts, "gain": self.dependence.gain, "offset": self.dependence.offset,
                "ratio_p90_p10": None if np.isnan(self.dependence.ratio) else self.dependence.ratio,
                "dependent": self.dependence.dependent, "clipped": list(self.dependence.clipped),
            },
            "pixel_noise_model": self.pixel_noise_model,
            "recommendation": dict(self.advice),
            "crop_size": self.crop_size,
        }


def _pixel_noise_model_text(correlation: NoiseCorrelation, dependence: SignalDependence) -> str:
    if not correlation.pixel_independent:
        unit = "planes" if correlation.direction == "z" else "px"
        return (
            f"does not fit: the noise is correlated along {correlation.direction} over"
            f" {correlation.length(correlation.direction)} {unit}, which p(x | s) per pixel cannot describe"
        )
    if dependence.dependent:
        return "fits: pixel-independent, signal-dependent noise; fit a GMM with `bmz-cosdd noise-model fit`"
    if dependence.dependent is None:
        return "fits: pixel-independent noise; fit one with `bmz-cosdd noise-model fit` on the images"
    return "fits: pixel-independent noise of constant variance (a Gaussian); `bmz-cosdd noise-model fit` learns it"


def inspect_noise(
    source: NoiseSource,
    advisers: Sequence[Any] | None = None,
    crop_size: int = 64,
    max_lag: int = 16,
    threshold: float = 0.1,
) -> NoiseReport:
    """Measure the noise of ``source`` and collect the methods' advice.

    Parameters
    ----------
    source : NoiseSource
        From :func:`noise_from_smoothing`, :func:`noise_from_predictions`,
        :func:`noise_from_dark` or :func:`noise_from_region`.
    advisers : sequence of Method, optional
        Methods asked for advice (default: every registered method).
    crop_size : int, default 64
        Training crop size (caps the StructN2V mask span).
    max_lag : int, default 16
        Largest lag measured.
    threshold : float, default 0.1
        Correlation above which the noise counts as correlated.

    Returns
    -------
    NoiseReport
    """
    if advisers is None:
        from bmz_cosdd.methods.registry import all_methods

        advisers = all_methods()
    correlation = estimate_noise_correlation(source.correlation_input, max_lag, threshold)
    autocorrelation = _autocorrelation_map(source, max_lag)
    dependence = signal_dependence(source, correlation.direction)
    advice = {}
    for method in advisers:
        text = method.advise(correlation, crop_size)
        if text:
            advice[method.name] = text
    return NoiseReport(
        source, correlation, autocorrelation, dependence, advice,
        _pixel_noise_model_text(correlation, dependence), crop_size,
    )


_AXIS_COLOURS = {"x": "tab:blue", "y": "tab:orange", "z": "tab:purple"}


def _profiles(ax: Any, correlation: NoiseCorrelation) -> None:
    for axis in correlation.axes:
        values = correlation.correlation(axis)
        length = correlation.length(axis)
        colour = _AXIS_COLOURS[axis]
        unit = "planes" if axis == "z" else "px"
        ax.plot(np.arange(1, len(values) + 1), values, "o-", ms=3, lw=1.2, color=colour,
                label=f"along {axis} (length {length} {unit})")
        if length:
            ax.axvline(length, color=colour, ls=":", lw=1)
    ax.axhline(correlation.threshold, color="gray", ls="--", lw=0.8, label=f"threshold ±{correlation.threshold:g}")
    ax.axhline(-correlation.threshold, color="gray", ls="--", lw=0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("lag (pixels; planes along z)" if "z" in correlation.axes else "lag (pixels)")
    ax.set_ylabel("correlation coefficient")
    along = " and ".join(correlation.axes) if len(correlation.axes) == 2 else "x, y and z"
    ax.set_title(f"noise correlation along {along}: direction {correlation.direction}", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _variance_plot(ax: Any, dependence: SignalDependence) -> None:
    ax.plot(dependence.signal, dependence.variance, "o", ms=4, color="tab:green", label="robust variance per bin")
    if dependence.dependent is not None:
        xs = np.linspace(min(dependence.signal), max(dependence.signal), 50)
        ax.plot(xs, dependence.gain * xs + dependence.offset, color="black", lw=1,
                label=f"fit {dependence.gain:.3g} * s + {dependence.offset:.3g}")
    ax.set_xlabel("signal (intensity)")
    ax.set_ylabel("noise variance (intensity²)")
    verdict = {True: "signal-dependent", False: "signal-independent", None: "one signal level"}[dependence.dependent]
    ax.set_title(f"variance against signal: {verdict}", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def write_noise_report(report: NoiseReport, path: str | Path) -> None:
    """Write the PNG report: image, noise estimate, autocorrelation map, profiles (with z for volumes),
    variance, advice. Volumes are shown by the middle plane of the first block."""
    from bmz_cosdd.plotting import display_range, pyplot, save_figure, show_image

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    image, noise, trusted = report.source.noisy[0][0], report.source.noise[0][0], report.source.trusted(0)
    where = "first image, channel 0"
    if report.source.volumes:
        middle = image.shape[0] // 2
        image, noise, trusted = image[middle], noise[middle], trusted[middle]
        where = f"first volume, channel 0, plane {middle}"
    show_image(axes[0, 0], image[:256, :256], f"input ({where})")
    lo, hi = display_range(noise[trusted], 1, 99)
    bound = max(abs(lo), abs(hi))
    title = "noise estimate" if report.source.flat is None else "noise estimate (grey: edges, not used)"
    shown_noise = np.where(trusted, noise, np.nan)[:256, :256]
    show_image(axes[0, 1], shown_noise, title, "intensity", (-bound, bound), cmap="RdBu_r")
    axes[0, 1].set_facecolor("0.6")
    lag = (report.autocorrelation.shape[0] - 1) // 2
    shown = report.autocorrelation.copy()
    shown[lag, lag] = np.nan  # lag 0 is 1 by definition and would hide everything else
    off = np.nanmax(np.abs(shown)) or 1.0
    artist = axes[0, 2].imshow(shown, cmap="RdBu_r", vmin=-off, vmax=off, extent=(-lag - 0.5, lag + 0.5, lag + 0.5,
                                                                                   -lag - 0.5))
    within = " within planes" if report.source.volumes else ""
    axes[0, 2].set_title(f"2-D autocorrelation of the noise estimate{within}\n(lag 0 left blank)", fontsize=10)
    axes[0, 2].set_xlabel("lag along x (pixels)")
    axes[0, 2].set_ylabel("lag along y (pixels)")
    bar = fig.colorbar(artist, ax=axes[0, 2], fraction=0.046, pad=0.04)
    bar.set_label("correlation coefficient", fontsize=8)
    _profiles(axes[1, 0], report.correlation)
    _variance_plot(axes[1, 1], report.dependence)
    text_ax = axes[1, 2]
    text_ax.axis("off")
    text_ax.set_title("recommendation", fontsize=10)
    import textwrap

    wrapped = []
    for line in report.summary_lines()[1:]:
        wrapped += textwrap.wrap(line, 62, subsequent_indent="    ") or [""]
    text_ax.text(0, 1, "\n".join(wrapped), va="top", ha="left", family="monospace", fontsize=7,
                 transform=text_ax.transAxes)
    fig.suptitle(f"bmz-cosdd inspect: {report.source.description}", fontsize=12)
    save_figure(fig, Path(path))


def predictions_of_run(run: str | Path, images: Sequence[np.ndarray], samples: int,
                       on_image: Callable[[int, int], None] | None = None) -> tuple[list[np.ndarray], str]:
    """Each image's prediction by a trained run (its first estimator; ``samples`` for stochastic ones).

    ``images`` are (C, Y, X), or volumes (C, Z, Y, X): predicted whole by a 3-D run, plane by plane by a 2-D one.
    """
    from bmz_cosdd.inference.predictor import load_run, predict_image
    from bmz_cosdd.methods.base import PredictOptions

    trained = load_run(run)
    options = PredictOptions(estimator=trained.method.estimators[0], samples=samples)

    def predicted(image: np.ndarray) -> np.ndarray:
        if image.ndim == 4 and trained.config.data.spatial_dims == 2:
            return np.stack([predicted(image[:, z]) for z in range(image.shape[1])], axis=1)
        outputs = predict_image(trained, np.asarray(image, dtype=np.float32), options)
        return outputs.get(options.estimator, next(iter(outputs.values()))).astype(np.float64)

    out = []
    for i, image in enumerate(images):
        out.append(predicted(np.asarray(image)))
        if on_image is not None:
            on_image(i + 1, len(images))
    return out, f"run {Path(run).name} ({trained.method.name}, step {trained.step})"


def _spatial_dims(axes: str) -> int:
    """3 (volumes) for axes with ``Z``, else 2."""
    return 3 if "Z" in str(axes).upper() else 2


def inspect_files(
    data: Sequence[str | Path],
    axes: str,
    out: str | Path,
    pattern: str = "*",
    run: str | Path | None = None,
    dark: Sequence[str | Path] | None = None,
    dark_axes: str | None = None,
    region: str | None = None,
    smooth_sigma: float = 2.0,
    samples: int = 20,
    crop_size: int = 64,
    max_lag: int = 16,
    threshold: float = 0.1,
    say: Callable[[str], None] | None = None,
) -> NoiseReport:
    """Inspect the noise of image files and write ``out`` (PNG) and ``out`` with ``.json``.

    Parameters
    ----------
    data : sequence of str or pathlib.Path
        Image files or folders (TIFF, NPY, PNG).
    axes : str
        Axes of the stored arrays, e.g. ``"YX"``, ``"SYX"``; with ``Z`` (``"ZYX"``, ``"SZYX"``,
        ``"CZYX"``) every sample is a volume and the noise correlation along z is measured too
        (volumes of at least :data:`~bmz_cosdd.data.noise_correlation.MIN_PLANES` planes).
    out : str or pathlib.Path
        The PNG report; the JSON goes beside it with the suffix ``.json``.
    pattern : str, default "*"
        Glob pattern inside folders.
    run : path, optional
        A trained run folder: the noise is the residual against its prediction.
    dark : sequence of path, optional
        Dark frames: the noise is each frame minus its mean (``data`` is then
        only shown, not measured).
    dark_axes : str, optional
        Axes of the dark frames (default: ``axes``); with ``Z``, dark volumes.
    region : str, optional
        ``"Y0:Y1,X0:X1"``: an empty region of every image to take the noise from.
    smooth_sigma : float, default 2.0
        Gaussian smoothing for the default source.
    samples : int, default 20
        Posterior samples per prediction with ``run`` (stochastic methods).
    crop_size : int, default 64
        Training crop size that caps the StructN2V mask span.
    max_lag, threshold
        See :func:`inspect_noise`.
    say : callable, optional
        Receives progress lines and warnings (pixels clipped at the data's minimum or maximum, left out of the
        variance fit).

    Returns
    -------
    NoiseReport

    Raises
    ------
    UserError
        For unreadable data, more than one noise source, a bad region, or a
        report path that is a folder.
    """
    import json

    from bmz_cosdd.data.io import atomic_write_text, load_images

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {out}")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder")
    chosen = [name for name, value in (("--run", run), ("--dark", dark), ("--region", region)) if value]
    if len(chosen) > 1:
        raise UserError(f"give one noise source, not {' and '.join(chosen)}")
    if crop_size < 3:
        raise UserError(f"--crop-size must be at least 3, got {crop_size}")
    images = [im.data for im in load_images(list(data), pattern, axes, _spatial_dims(axes))]
    if dark:
        dark_axes = dark_axes or axes
        source = noise_from_dark([im.data for im in load_images(list(dark), pattern, dark_axes,
                                                                _spatial_dims(dark_axes))])
    elif region:
        source = noise_from_region(images, region)
    elif run is not None:
        noisy = _bounded(images)
        predictions, name = predictions_of_run(
            run, noisy, samples, None if say is None else lambda i, n: say(f"predicted {i}/{n}")
        )
        source = noise_from_predictions(noisy, predictions, name)
    else:
        source = noise_from_smoothing(images, smooth_sigma)
    report = inspect_noise(source, crop_size=crop_size, max_lag=max_lag, threshold=threshold)
    if say is not None:
        for line in report.dependence.clipped:
            say(f"warning: {line}")
    write_noise_report(report, out)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report.to_dict(), indent=2) + "\n")
    return report
