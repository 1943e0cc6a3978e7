"""A denoiser's mean squared error without ground truth: Stein's unbiased risk estimate (SURE).

For noisy images ``x = s + n`` with Gaussian noise of covariance ``Sigma`` and any
(weakly differentiable) denoiser ``f``, Stein's lemma (Stein, Ann. Stat. 1981) gives

    E ||f(x) - s||^2 / N  =  E ||f(x) - x||^2 / N  -  tr(Sigma) / N  +  2 tr(Sigma J_f(x)) / N,

``J_f`` the Jacobian of ``f``. The last term is what the simple estimate
``mean((f(x) - x)^2) - sigma^2`` leaves out: zero only for a prediction that ignores the
pixel's own noise *and every pixel whose noise is correlated with it*. A blind spot hides
the pixel itself, so with pixel-independent noise the simple estimate is unbiased (the
Noise2Self argument); with noise correlated along rows, a blind spot narrower than the
correlation (StructN2V's ``x:3`` against stripes blurred by a Gaussian of sigma 1 px)
predicts part of the noise from the pixels 2 and more away and keeps it, and the simple
estimate then calls an output better than its input that is worse (measured on the
real-image benchmark's stripe std 0.05 case: estimated +1.0 dB, true -0.3 dB; with the
term: +0.1 dB).

The term is estimated by Monte Carlo (Ramani, Blu and Unser, IEEE TIP 2008): for a probe
``b`` of covariance ``Sigma``, ``E[b^T (f(x + eps b) - f(x))] / eps -> tr(Sigma J_f)``.
``Sigma`` is built from what :mod:`bmz_cosdd.data.noise_correlation` measures on the
noisy images alone: the variance as a function of the signal (the prediction) and the
correlation along the noise direction, ``Sigma_ij = sqrt(v_i v_j) rho(|i - j|)``. Noise
that is Poisson rather than Gaussian makes the formula an approximation (its exact form,
PURE, needs the gain); on the benchmark's Poisson-Gaussian and striped cases the estimate
is within about 1 dB of the truth where the simple one is off by up to 1.3 dB and
undefined (a negative error) for outputs that keep some noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["correlated_probe", "stein_divergence", "sure_error"]

#: Probe step relative to the noise (the probe has the noise's scale).
EPSILON = 0.05
#: Probes averaged.
PROBES = 2


def correlated_probe(
    shape: tuple[int, ...], variance: np.ndarray, correlation: Sequence[float], axis: int, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise with a given variance per pixel and correlation along one axis.

    White noise is filtered along ``axis`` by the square root of the power spectrum
    ``1 + 2 sum_k rho_k cos(2 pi f k)`` (clipped to stay positive; circular at the
    borders) and scaled by ``sqrt(variance)``.

    Parameters
    ----------
    shape : tuple of int
        The images' shape, e.g. (N, C, Y, X) or (N, C, Z, Y, X).
    variance : numpy.ndarray
        Noise variance per pixel, broadcastable to ``shape`` (the images' units squared).
    correlation : sequence of float
        Correlation coefficient at lags 1, 2, ... along ``axis`` (empty: independent pixels).
    axis : int
        The noise direction's axis of ``shape``.
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        float64, ``shape``.
    """
    white = rng.standard_normal(shape)
    if len(correlation):
        length = shape[axis]
        freq = np.fft.rfftfreq(length)
        power = 1.0 + 2.0 * sum(r * np.cos(2 * np.pi * freq * (k + 1)) for k, r in enumerate(correlation))
        gain = np.sqrt(np.clip(power, 1e-3, None))
        gain = gain.reshape([-1] + [1] * (len(shape) - 1 - (axis % len(shape))))
        white = np.fft.irfft(np.fft.rfft(white, axis=axis) * gain, n=length, axis=axis)
    return np.sqrt(variance) * white


def stein_divergence(
    predict: Callable[[np.ndarray], np.ndarray],
    noisy: np.ndarray,
    prediction: np.ndarray,
    variance: np.ndarray,
    correlation: Sequence[float],
    axis: int,
    probes: int = PROBES,
    seed: int = 0,
) -> float:
    """Monte-Carlo estimate of ``tr(Sigma J_f(x)) / N`` (the images' units squared).

    Parameters
    ----------
    predict : callable
        The denoiser ``f``: an array shaped like ``noisy`` to its prediction (deterministic:
        a sampling method with a fixed seed).
    noisy, prediction : numpy.ndarray
        ``x`` and ``f(x)``, the same shape.
    variance, correlation, axis
        The noise covariance, as for :func:`correlated_probe`.
    probes : int
        Probes averaged (each costs one prediction).
    seed : int
        Seed of the probes.
    """
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(probes):
        probe = correlated_probe(noisy.shape, variance, correlation, axis, rng)
        moved = np.asarray(predict(noisy + EPSILON * probe), dtype=np.float64)
        total += float(np.sum(probe * (moved - prediction))) / EPSILON
    return total / (probes * noisy.size)


def sure_error(mse_to_noisy: float, mean_variance: float, divergence: float) -> float:
    """Stein's estimate of ``mean((f(x) - s)^2)``: ``mse_to_noisy - mean_variance + 2 divergence``."""
    return mse_to_noisy - mean_variance + 2.0 * divergence
