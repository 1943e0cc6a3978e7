"""MAP estimate from posterior samples by windowed mean-shift (DivNoising).

The image is covered by overlapping square windows. In every window the N
posterior samples are N vectors (C * h * w values each); mean-shift with a
Gaussian kernel, started at their mean, climbs to the densest mode nearby, with a
bandwidth that starts at a multiple of the samples' spread and shrinks
geometrically (coarse-to-fine, so a minor mode close to the start does not trap
the search). The window estimates are then stitched by averaging overlapping
pixels.

The bandwidth is relative to the posterior spread of each window (the RMS
distance of its samples to their mean), so the result does not depend on the
units of the samples: ``map_estimate(a * s + b) == a * map_estimate(s) + b``.

Eager only.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["map_estimate", "window_starts"]

#: Window vectors processed at once are capped at about this many float64 values
#: (per tensor of shape (windows, N, C * h * w)), which bounds the memory use.
_CHUNK_ELEMENTS = 1 << 22


def window_starts(size: int, window: int, overlap: int) -> Tensor:
    """First index of every window along an axis of length ``size``.

    Windows have length ``min(window, size)`` and step ``window - overlap``; the
    last one is shifted inward so it ends at the border, so the windows cover the
    axis and none sticks out.
    """
    span = min(window, size)
    if span >= size:
        return torch.zeros(1, dtype=torch.long)
    step = window - overlap
    starts = list(range(0, size - span, step))
    starts.append(size - span)
    return torch.tensor(starts, dtype=torch.long)


def _bandwidth_factors(start: float, stop: float, shrink: float) -> list[float]:
    factors = []
    f = start
    while f >= stop:
        factors.append(f)
        f *= shrink
    return factors


def _mean_shift(vectors: Tensor, factors: list[float]) -> Tensor:
    """Mode of each set of vectors (W, N, D) -> (W, D); float64 in and out."""
    mean = vectors.mean(1)
    spread = torch.sqrt(((vectors - mean.unsqueeze(1)) ** 2).sum(2).mean(1))  # (W,)
    degenerate = spread <= 0
    safe = torch.where(degenerate, torch.ones_like(spread), spread)
    m = mean
    for f in factors:
        h2 = (f * safe) ** 2  # (W,)
        d2 = ((vectors - m.unsqueeze(1)) ** 2).sum(2)  # (W, N)
        logw = -d2 / (2.0 * h2.unsqueeze(1))
        logw = logw - logw.max(dim=1, keepdim=True).values
        w = torch.exp(logw)
        w = w / w.sum(dim=1, keepdim=True)
        m = torch.bmm(w.unsqueeze(1), vectors).squeeze(1)
    return torch.where(degenerate.unsqueeze(1), mean, m)


def map_estimate(
    samples: Tensor,
    window: int = 10,
    overlap: int = 3,
    bandwidth_start: float = 1.0,
    bandwidth_stop: float = 0.5,
    shrink: float = 0.9,
) -> Tensor:
    """Per-image MAP estimate from posterior samples by windowed mean-shift.

    Parameters
    ----------
    samples : Tensor
        (N, C, Y, X) posterior samples of one image, any units.
    window : int, default 10
        Side of the square windows in pixels (clipped to the image size).
    overlap : int, default 3
        Pixels shared by neighbouring windows (``0 <= overlap < window``); the
        last windows are shifted inward at the borders, so neighbours there may
        overlap more.
    bandwidth_start, bandwidth_stop : float, default 1.0 and 0.5
        First and smallest kernel bandwidth, in units of the window's RMS sample
        distance to the mean ``r``: iterations use ``h = bandwidth_start * r *
        shrink**k`` while ``h >= bandwidth_stop * r``.
    shrink : float, default 0.9
        Factor (0 < shrink < 1) applied to the bandwidth after each iteration.

    Returns
    -------
    Tensor
        (C, Y, X) float32: the window modes, averaged where windows overlap.
        Windows whose samples are all identical give their mean.
    """
    if samples.dim() != 4:
        raise ValueError(f"samples must be (N, C, Y, X), got shape {tuple(samples.shape)}")
    n, c, height, width = samples.shape
    if n < 1 or c < 1 or height < 1 or width < 1:
        raise ValueError(f"samples must be non-empty, got shape {tuple(samples.shape)}")
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if not 0 < bandwidth_stop <= bandwidth_start:
        raise ValueError(
            f"need 0 < bandwidth_stop <= bandwidth_start, got {bandwidth_stop} and {bandwidth_start}"
        )
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be in (0, 1), got {shrink}")

    device = samples.device
    x = samples.detach().to(torch.float64).reshape(n, c, height * width)
    factors = _bandwidth_factors(bandwidth_start, bandwidth_stop, shrink)

    wy, wx = min(window, height), min(window, width)
    ys = window_starts(height, window, overlap).to(device)
    xs = window_starts(width, window, overlap).to(device)
    # Flat pixel indices of every window: (n_windows, wy * wx).
    rows = ys[:, None] + torch.arange(wy, device=device)[None, :]  # (Wy, wy)
    cols = xs[:, None] + torch.arange(wx, device=device)[None, :]  # (Wx, wx)
    index = rows[:, None, :, None] * width + cols[None, :, None, :]  # (Wy, Wx, wy, wx)
    index = index.reshape(-1, wy * wx)
    n_windows = index.shape[0]

    total = torch.zeros(c, height * width, dtype=torch.float64, device=device)
    count = torch.zeros(height * width, dtype=torch.float64, device=device)
    per_window = n * c * wy * wx
    chunk = max(1, _CHUNK_ELEMENTS // per_window)
    for begin in range(0, n_windows, chunk):
        idx = index[begin : begin + chunk]  # (w, P)
        k = idx.shape[0]
        patches = x[:, :, idx]  # (N, C, w, P)
        vectors = patches.permute(2, 0, 1, 3).reshape(k, n, c * wy * wx)
        modes = _mean_shift(vectors, factors).reshape(k, c, wy * wx)
        flat = idx.reshape(-1)
        total.index_add_(1, flat, modes.permute(1, 0, 2).reshape(c, -1))
        count.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
    return (total / count).reshape(c, height, width).to(torch.float32)
