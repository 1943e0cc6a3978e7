"""Does a denoiser's residual look like the noise? A check that needs no ground truth.

The residual ``noisy - prediction`` of a good denoiser is the noise it removed, the
"method noise" of Buades, Coll and Morel (CVPR 2005). It should have the noise's
statistics and nothing of the image:

- **no correlation across the noise direction**: noise correlated along x (rows) is
  independent from row to row, pixel-independent noise along both axes, so the
  residual's lag-1 correlation across the direction is about 0 (its sampling error is
  about 1/sqrt(pixels)). Image structure (edges, textures, a blurred or invented
  prediction) is correlated along every axis and shows here first;
- **along the noise direction, the noise's own correlation** at lags 1 to 3, as
  :func:`~bmz_cosdd.data.noise_correlation.estimate_noise_correlation` measures it on
  the noisy input; a residual that is much less correlated than the noise at any of
  them where the noise's is positive means that the prediction kept the correlated part
  (stripes): blur and left structure only add correlation. A blind spot that hides only
  lag 1 keeps what lags 2 and up predict: the residual's lag 1 stays near the noise's
  while its lag 2 turns negative (on real tiles with stripe std 0.05: -0.14 against the
  noise's +0.14). More correlation than the noise's is judged at lag 1;
- **no relation to the image's structure**: the residual's correlation with the Laplacian of
  Gaussian (sigma 2 px) of the prediction, about 0 for noise. A blurred prediction leaves
  ``s - blur(s)``, proportional to minus the Laplacian, in the residual (a negative
  correlation); detail the input does not support (sharpening, invented structure ``h``)
  puts ``-h`` in the residual, positively correlated with the Laplacian of ``h``. A
  prediction that keeps much noise also correlates negatively (weakly at this scale);
- **the noise's variance**, as
  :func:`~bmz_cosdd.data.noise_correlation.noise_variance_by_signal` measures it, overall
  and in every signal range (quantile bins of the prediction): much more means structure
  went into the residual, much less that the prediction kept noise.

The threshold on correlations is the one ``inspect`` uses to call noise correlated
(0.1); the variance must lie within a factor of 2 of the estimate (whose own error on
real images is about 20 %). On real tiles with the paper's noise recipes, a Gaussian blur
of the clean image by sigma 2 px gives an edge correlation of -0.15 to -0.37, the clean
image itself 0.00 to 0.01.

Examples
--------
>>> import numpy as np
>>> from scipy import ndimage
>>> from bmz_cosdd.data.real_images import real_tiles
>>> clean = real_tiles("test", size=64, per_image=2)
>>> noisy = clean + np.random.default_rng(0).normal(0, 0.05, clean.shape)
>>> check_residual(list(noisy), list(clean)).ok
True
>>> check_residual(list(noisy), list(ndimage.gaussian_filter(noisy, (0, 2, 2)))).ok
False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bmz_cosdd.data.noise_correlation import (
    estimate_noise_correlation,
    examined_images,
    noise_variance_by_signal,
)
from bmz_cosdd.errors import UserError

__all__ = ["ResidualCheck", "check_residual", "CORRELATION_LIMIT", "VARIANCE_FACTOR"]

#: Largest |correlation| a residual may show where the noise has none (``inspect``'s threshold).
CORRELATION_LIMIT = 0.1
#: The residual's variance must lie within this factor of the noise variance estimate.
VARIANCE_FACTOR = 2.0
_LAGS = 3


_CLIP_SIGMAS = 3.0
_VARIANCE_BINS = 8
_EDGE_SIGMA = 2.0


def _edge_correlation(residuals: Sequence[np.ndarray], predicted: Sequence[np.ndarray]) -> float:
    """Correlation coefficient of the residual with the Laplacian of Gaussian of the prediction, pooled."""
    from scipy import ndimage

    cross = power_r = power_l = 0.0
    for r, p in zip(residuals, predicted):
        for rc, pc in zip(r, p):
            lap = ndimage.gaussian_laplace(pc, _EDGE_SIGMA, mode="reflect")
            lap = lap - lap.mean()
            cross += float(np.sum(rc * lap))
            power_r += float(np.sum(rc * rc))
            power_l += float(np.sum(lap * lap))
    if power_r <= 0 or power_l <= 0:
        return 0.0
    return cross / np.sqrt(power_r * power_l)


def _clipped(plane: np.ndarray) -> np.ndarray:
    """Clip at 3 robust standard deviations, as the noise correlation estimator does (heavy tails)."""
    spread = 1.4826 * float(np.median(np.abs(plane - np.median(plane))))
    return np.clip(plane, -_CLIP_SIGMAS * spread, _CLIP_SIGMAS * spread) if spread > 0 else plane


def _plain_correlation(planes: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Autocorrelation coefficient of zero-mean planes along ``axis`` (0: y, 1: x) at lags 1..3, pooled."""
    products = np.zeros(_LAGS)
    counts = np.zeros(_LAGS)
    power = 0.0
    n = 0
    for r in map(_clipped, planes):
        power += float(np.sum(r * r))
        n += r.size
        for lag in range(1, min(_LAGS, r.shape[axis] - 1) + 1):
            prod = r[:, :-lag] * r[:, lag:] if axis == 1 else r[:-lag, :] * r[lag:, :]
            products[lag - 1] += float(prod.sum())
            counts[lag - 1] += prod.size
    if power <= 0 or n == 0:
        return np.zeros(_LAGS)
    return np.divide(products, counts, out=np.zeros(_LAGS), where=counts > 0) / (power / n)


@dataclass(frozen=True)
class ResidualCheck:
    """What the residual ``noisy - prediction`` shows.

    Attributes
    ----------
    direction : {"x", "y", "none"}
        Noise direction the check assumed.
    residual_x, residual_y : tuple of float
        The residual's correlation coefficient at lags 1-3 along x and y.
    noise_x, noise_y : tuple of float
        The noise's, measured on the noisy input (lags 1-3).
    edge_correlation : float
        The residual's correlation with the prediction's Laplacian of Gaussian (sigma 2 px):
        negative where structure was removed, positive where detail was added.
    variance_ratio : float
        The residual's variance over the noise variance estimate.
    signal_levels, signal_ratios : tuple of float
        Per quantile bin of the prediction (low to high signal): its mean and the
        residual's variance over the noise variance estimated in that bin.
    problems : tuple of str
        One sentence per finding; empty when the residual looks like the noise.
    """

    direction: str
    residual_x: tuple[float, ...]
    residual_y: tuple[float, ...]
    noise_x: tuple[float, ...]
    noise_y: tuple[float, ...]
    edge_correlation: float
    variance_ratio: float
    signal_levels: tuple[float, ...] = ()
    signal_ratios: tuple[float, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when the residual looks like the noise."""
        return not self.problems

    def describe(self) -> str:
        """One line for the user."""
        figures = (
            f"residual lag-1 correlation x {self.residual_x[0]:.2f}, y {self.residual_y[0]:.2f} (noise: x"
            f" {self.noise_x[0]:.2f}, y {self.noise_y[0]:.2f}); edge correlation {self.edge_correlation:+.2f};"
            f" variance {self.variance_ratio:.2f} x the noise's"
        )
        if self.ok:
            return f"residual check passed: the residual looks like the noise ({figures})"
        return f"residual check: {'; '.join(self.problems)} ({figures})"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "direction": self.direction,
            "residual_correlation": {"x": [round(v, 4) for v in self.residual_x],
                                     "y": [round(v, 4) for v in self.residual_y]},
            "noise_correlation": {"x": [round(v, 4) for v in self.noise_x], "y": [round(v, 4) for v in self.noise_y]},
            "edge_correlation": round(self.edge_correlation, 4),
            "variance_ratio": round(self.variance_ratio, 4),
            "variance_ratio_by_signal": {"signal": [float(f"{v:.5g}") for v in self.signal_levels],
                                         "ratio": [round(v, 4) for v in self.signal_ratios]},
            "problems": list(self.problems),
        }


def _paired_planes(noisy: Sequence[np.ndarray], predictions: Sequence[np.ndarray]) -> tuple[list, list]:
    if len(noisy) != len(predictions):
        raise UserError(f"{len(noisy)} noisy image(s) but {len(predictions)} prediction(s)")
    stacked = []
    for a, p in zip(noisy, predictions):
        a, p = np.asarray(a, dtype=np.float64), np.asarray(p, dtype=np.float64)
        if a.shape != p.shape:
            raise UserError(f"a prediction of shape {p.shape} does not match its noisy image {a.shape}")
        a, p = (a[None], p[None]) if a.ndim == 2 else (a, p)
        stacked.append(np.concatenate([a, p]))  # channels: noisy then prediction, cropped together
    crops = examined_images(stacked, min_side=8, max_images=32)
    if not crops:
        raise UserError("no image of at least 8 x 8 pixels to check the residual on")
    half = [c.shape[0] // 2 for c in crops]
    return [c[:h] for c, h in zip(crops, half)], [c[h:] for c, h in zip(crops, half)]


def check_residual(
    noisy: Sequence[np.ndarray], predictions: Sequence[np.ndarray], direction: str | None = None
) -> ResidualCheck:
    """Check that ``noisy - prediction`` looks like the noise (see the module docstring).

    Parameters
    ----------
    noisy, predictions : sequence of numpy.ndarray
        Aligned noisy images and their predictions, each (C, Y, X), (Y, X) or a volume
        (C, Z, Y, X) (checked plane by plane), any units; up to 32 are examined, each
        as its central 512 x 512 crop.
    direction : {"x", "y", "z", "none"}, optional
        The noise direction (e.g. the run's); default: measured on ``noisy``. For ``z``
        both in-plane axes count as across.

    Returns
    -------
    ResidualCheck

    Raises
    ------
    UserError
        For mismatched shapes or images smaller than 8 x 8 pixels.
    """
    noisy_planes, predicted = _paired_planes(noisy, predictions)
    measured = estimate_noise_correlation(noisy_planes, max_lag=_LAGS)
    direction = direction or measured.direction
    residuals = [(a - p) - (a - p).mean(axis=(-2, -1), keepdims=True) for a, p in zip(noisy_planes, predicted)]
    planes = [c for r in residuals for c in r]
    residual = {"y": _plain_correlation(planes, 0), "x": _plain_correlation(planes, 1)}
    noise = {"x": measured.correlation("x")[:_LAGS], "y": measured.correlation("y")[:_LAGS]}

    # Residual variance against the noise variance, per quantile bin of the prediction.
    levels, noise_var, counts = noise_variance_by_signal(noisy_planes, direction, predicted, bins=_VARIANCE_BINS)
    values = np.concatenate([p.ravel() for p in predicted])
    power = np.concatenate([r.ravel() for r in residuals]) ** 2
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, _VARIANCE_BINS + 1)))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max(len(edges) - 2, 0))
    bin_power = np.array([power[index == b].mean() for b in np.unique(index)])
    n = min(len(bin_power), len(noise_var))
    ratios = bin_power[:n] / np.maximum(noise_var[:n], 1e-300)
    ratio = float(np.sum(bin_power[:n] * counts[:n]) / max(float(np.sum(noise_var[:n] * counts[:n])), 1e-300))

    problems = []
    for axis in ("x", "y"):
        if axis == direction:
            excess = float(residual[axis][0] - noise[axis][0])
            # Where the noise is positively correlated, only keeping its correlated part can make the residual
            # less correlated (blur and left structure add correlation), so every lag counts there: a blind
            # spot that hides lag 1 only (StructN2V's x:3) keeps what lags 2 and up predict, which leaves the
            # residual's lag 1 near the noise's but turns its lag 2 negative.
            shortfall = np.where(noise[axis] > 0, noise[axis] - residual[axis], 0.0)
            lag = int(np.argmax(shortfall))
            if excess > CORRELATION_LIMIT:
                problems.append(f"structure left in the residual: it is more correlated along {axis} than the noise"
                                f" (lag 1: {residual[axis][0]:.2f} against {noise[axis][0]:.2f})")
            elif shortfall[lag] > CORRELATION_LIMIT:
                problems.append(f"the prediction keeps the noise's correlated part along {axis} (the residual's"
                                f" correlation at lag {lag + 1} is {residual[axis][lag]:.2f}, the noise's"
                                f" {noise[axis][lag]:.2f})")
        else:
            # Across the direction the noise is independent, unless the estimator found it correlated there too
            # (its figures there otherwise hold a small upward bias from image texture).
            expected = noise[axis] if measured.cross_correlated == axis else np.zeros(_LAGS)
            difference = residual[axis] - expected
            worst = float(difference[np.argmax(np.abs(difference))])
            if abs(worst) > CORRELATION_LIMIT:
                what = ("structure left in the residual" if worst > 0
                        else "the prediction keeps part of the noise")
                problems.append(f"{what}: the residual is correlated across the noise direction, along {axis}"
                                f" ({worst:+.2f} against the noise's {float(expected[0]):.2f} at lag 1)")
    edges = _edge_correlation(residuals, predicted)
    if edges < -CORRELATION_LIMIT:
        problems.append(f"structure left in the residual: it follows the prediction's edges ({edges:+.2f}), as a"
                        " blurred output leaves them")
    elif edges > CORRELATION_LIMIT:
        problems.append(f"the prediction holds detail the input does not support: the residual anti-follows its"
                        f" edges ({edges:+.2f}), as sharpened or invented structure leaves it")
    if ratio > VARIANCE_FACTOR:
        problems.append(f"the residual holds {ratio:.1f} x the noise variance: image structure was removed")
    elif ratio < 1 / VARIANCE_FACTOR:
        problems.append(f"the residual holds only {ratio:.2f} x the noise variance: the prediction keeps noise")
    else:
        high = [b for b in range(n) if ratios[b] > VARIANCE_FACTOR]
        low = [b for b in range(n) if ratios[b] < 1 / VARIANCE_FACTOR]
        if high:
            problems.append(f"image structure was removed where the signal is near {levels[high[0]]:.4g}"
                            f" (the residual holds {ratios[high[0]]:.1f} x the noise variance there)")
        if low:
            problems.append(f"the prediction keeps noise where the signal is near {levels[low[0]]:.4g}"
                            f" (the residual holds {ratios[low[0]]:.2f} x the noise variance there)")
    return ResidualCheck(
        direction=direction,
        residual_x=tuple(float(v) for v in residual["x"]),
        residual_y=tuple(float(v) for v in residual["y"]),
        noise_x=tuple(float(v) for v in noise["x"]),
        noise_y=tuple(float(v) for v in noise["y"]),
        edge_correlation=edges,
        variance_ratio=ratio,
        signal_levels=tuple(float(v) for v in levels[:n]),
        signal_ratios=tuple(float(v) for v in ratios),
        problems=tuple(problems),
    )
