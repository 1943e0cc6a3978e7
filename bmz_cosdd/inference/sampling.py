"""Reduce many posterior samples to their mean (MMSE), standard deviation and, optionally, the samples."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def sample_reduce(
    draw: Callable[[int], Tensor], n_samples: int, batch: int, keep_samples: bool = False
) -> dict[str, Tensor]:
    """Draw ``n_samples`` in chunks of ``batch`` and reduce them.

    Parameters
    ----------
    draw
        ``draw(k)`` returns ``k`` samples stacked on a new first axis, (k, B, C, Y, X).
    n_samples, batch
        Total samples and samples per call of ``draw``.
    keep_samples
        Also return every sample as ``samples`` (N, B, C, Y, X).

    Returns
    -------
    dict
        ``mmse`` (mean) and ``std`` (sample standard deviation, N - 1 in the
        denominator; zero for one sample), float32, accumulated in float64 with
        Chan's pairwise update so thousands of samples lose no precision.
    """
    if n_samples < 1:
        raise ValueError("n_samples must be at least 1")
    batch = max(1, min(batch, n_samples))
    mean: Tensor | None = None
    m2: Tensor | None = None
    count = 0
    kept: list[Tensor] = []
    while count < n_samples:
        k = min(batch, n_samples - count)
        chunk = draw(k)
        if keep_samples:
            kept.append(chunk.float().cpu())
        chunk64 = chunk.double()
        chunk_mean = chunk64.mean(0)
        chunk_m2 = ((chunk64 - chunk_mean) ** 2).sum(0)
        if mean is None or m2 is None:
            mean, m2 = chunk_mean, chunk_m2
        else:
            delta = chunk_mean - mean
            total = count + k
            mean = mean + delta * (k / total)
            m2 = m2 + chunk_m2 + delta**2 * (count * k / total)
        count += k
    assert mean is not None and m2 is not None
    std = (m2 / (count - 1)).sqrt() if count > 1 else torch.zeros_like(mean)
    out = {"mmse": mean.float(), "std": std.float()}
    if keep_samples:
        out["samples"] = torch.cat(kept, 0)
    return out
