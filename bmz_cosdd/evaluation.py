"""Image quality numbers."""

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
