"""Image quality against a clean reference: PSNR and SSIM (the scores of `evaluate` and the benchmarks)."""

from __future__ import annotations

import numpy as np


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, computed in float64.

    Parameters
    ----------
    prediction, target
        Arrays of the same shape.
    data_range
        Peak-to-peak range of the target; default ``target.max() - target.min()``.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"shapes differ: {prediction.shape} vs {target.shape}")
    if data_range is None:
        data_range = float(target.max() - target.min())
    mse = float(np.mean((prediction - target) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


# Wang et al. (2004): an 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma), population covariances.
SSIM_SIGMA = 1.5
SSIM_MIN_SIDE = 11


def ssim(prediction: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity index with the settings of Wang et al. (2004), computed in float64.

    This is :func:`skimage.metrics.structural_similarity` with ``gaussian_weights=True``,
    ``sigma=1.5``, ``use_sample_covariance=False`` and an explicit ``data_range``.

    Parameters
    ----------
    prediction, target
        Arrays of the same shape: one image ``(Y, X)``, or ``(C, Y, X)`` whose
        per-channel SSIMs are averaged.
    data_range
        Peak-to-peak range of the target; default ``target.max() - target.min()``.

    Returns
    -------
    float
        The mean SSIM over the image (1 for identical images).

    Raises
    ------
    ValueError
        If the shapes differ, an array is not 2-D or 3-D, an image is smaller
        than 11 x 11 pixels (the Gaussian window) or the data range is not positive.
    """
    from skimage.metrics import structural_similarity

    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"shapes differ: {prediction.shape} vs {target.shape}")
    if target.ndim not in (2, 3):
        raise ValueError(f"SSIM needs (Y, X) or (C, Y, X) arrays, got shape {target.shape}")
    if min(target.shape[-2:]) < SSIM_MIN_SIDE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} pixels "
            f"(its Gaussian window), got {target.shape[-2]} x {target.shape[-1]}"
        )
    if data_range is None:
        data_range = float(target.max() - target.min())
    if not data_range > 0:
        raise ValueError(f"the data range must be positive, got {data_range}")
    return float(
        structural_similarity(
            prediction, target, data_range=data_range, gaussian_weights=True, sigma=SSIM_SIGMA,
            use_sample_covariance=False, channel_axis=0 if target.ndim == 3 else None,
        )
    )
