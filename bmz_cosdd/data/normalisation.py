"""Per-channel normalisation statistics, computed and applied in float64.

The statistics are part of every run folder and package, so they are stored as
JSON with full float64 precision and applied with float64 arithmetic; only the
result is cast to float32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bmz_cosdd.data.axes import spatial_axes
from bmz_cosdd.data.io import atomic_write_text
from bmz_cosdd.errors import UserError


@dataclass
class NormStats:
    """Per-channel statistics: ``x_norm = (clip(x, clip_low, clip_high) - mean) / std``.

    Attributes
    ----------
    mean, std : list of float
        One value per channel (float64 precision).
    clip_low, clip_high : list of float or None
        Per-channel clip bounds, or None for no clipping.
    clip_percentiles : tuple of float or None
        The percentiles the clip bounds were computed from (a record only).
    """

    mean: list[float]
    std: list[float]
    clip_low: list[float] | None = None
    clip_high: list[float] | None = None
    clip_percentiles: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if self.clip_low is not None:
            self.clip_low = [float(v) for v in self.clip_low]
        if self.clip_high is not None:
            self.clip_high = [float(v) for v in self.clip_high]
        if self.clip_percentiles is not None:
            self.clip_percentiles = (float(self.clip_percentiles[0]), float(self.clip_percentiles[1]))
        self._validate()

    def _validate(self) -> None:
        n = len(self.mean)
        if n == 0 or len(self.std) != n:
            raise UserError(
                "normalisation statistics: need one mean and one std per channel,"
                f" got {len(self.mean)} and {len(self.std)}"
            )
        if not all(math.isfinite(m) for m in self.mean) or not all(math.isfinite(s) and s > 0 for s in self.std):
            raise UserError(
                "normalisation statistics: means must be finite and stds finite and > 0,"
                f" got mean {self.mean} std {self.std}"
            )
        if (self.clip_low is None) != (self.clip_high is None):
            raise UserError("normalisation statistics: clip_low and clip_high must be given together")
        if self.clip_low is not None and self.clip_high is not None:
            if len(self.clip_low) != n or len(self.clip_high) != n:
                raise UserError(
                    f"normalisation statistics: need {n} clip bounds per side,"
                    f" got {len(self.clip_low)} and {len(self.clip_high)}"
                )
            if any(not lo <= hi for lo, hi in zip(self.clip_low, self.clip_high)):
                raise UserError(
                    f"normalisation statistics: clip_low {self.clip_low} must not exceed clip_high {self.clip_high}"
                )

    @property
    def n_channels(self) -> int:
        """Number of channels the statistics describe."""
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (floats keep float64 precision in JSON)."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "clip_low": None if self.clip_low is None else list(self.clip_low),
            "clip_high": None if self.clip_high is None else list(self.clip_high),
            "clip_percentiles": None if self.clip_percentiles is None else list(self.clip_percentiles),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        """Build statistics from :meth:`to_dict` output; UserError if it is invalid."""
        if not isinstance(d, dict) or "mean" not in d or "std" not in d:
            raise UserError("normalisation statistics: expected a mapping with 'mean' and 'std'")
        try:
            percentiles = d.get("clip_percentiles")
            return cls(
                mean=list(d["mean"]),
                std=list(d["std"]),
                clip_low=None if d.get("clip_low") is None else list(d["clip_low"]),
                clip_high=None if d.get("clip_high") is None else list(d["clip_high"]),
                clip_percentiles=None if percentiles is None else (percentiles[0], percentiles[1]),
            )
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise UserError(f"normalisation statistics: invalid values ({exc})") from exc

    def save(self, path: Path) -> None:
        """Write the statistics as JSON, atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> NormStats:
        """Read statistics written by :meth:`save`; UserError if missing or invalid."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"normalisation statistics not found: {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: not valid JSON normalisation statistics ({exc})") from exc
        try:
            return cls.from_dict(d)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from exc


def _check_percentiles(clip_percentiles: tuple[float, float] | None) -> tuple[float, float] | None:
    if clip_percentiles is None:
        return None
    try:
        low, high = (float(v) for v in clip_percentiles)
    except (TypeError, ValueError) as exc:
        raise UserError(f"clip percentiles must be two numbers (low, high), got {clip_percentiles!r}") from exc
    if not 0.0 <= low < high <= 100.0:
        raise UserError(f"clip percentiles must satisfy 0 <= low < high <= 100, got ({low:g}, {high:g})")
    return low, high


def _percentiles(values: np.ndarray, qs: tuple[float, float]) -> tuple[float, float]:
    """Linear-interpolation percentiles (numpy's default method) in float64.

    Uses a partial sort of the values in their own dtype instead of a float64
    copy, which halves the memory for float32 data; the interpolation itself is
    float64 and matches ``np.percentile(values.astype(np.float64), qs)``.
    """
    n = values.size
    positions = [q / 100.0 * (n - 1) for q in qs]
    kth = sorted({int(math.floor(p)) for p in positions} | {min(int(math.floor(p)) + 1, n - 1) for p in positions})
    part = np.partition(values, kth)
    out = []
    for p in positions:
        lo = int(math.floor(p))
        hi = min(lo + 1, n - 1)
        t = p - lo
        a, b = float(part[lo]), float(part[hi])
        # numpy's lerp: from the nearer end, for symmetry and exactness at t = 0 or 1.
        out.append(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))
    return out[0], out[1]


def _channel64(im: np.ndarray, c: int, low: float | None, high: float | None) -> np.ndarray:
    x = np.asarray(im[c], dtype=np.float64)
    return x if low is None else np.clip(x, low, high)


def compute_stats(images: Sequence[np.ndarray], clip_percentiles: tuple[float, float] | None = None) -> NormStats:
    """Compute per-channel mean and std over all pixels of all images, in float64.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Arrays of shape ``(C, Y, X)`` or volumes ``(C, Z, Y, X)``; the spatial
        sizes may differ between images.
    clip_percentiles : (float, float), optional
        If given, per-channel clip bounds are first taken at these percentiles of
        all pixels (``0 <= low < high <= 100``), and mean/std are computed from
        the clipped data.

    Returns
    -------
    NormStats
        Population (``ddof=0``) statistics per channel.

    Raises
    ------
    UserError
        If there are no images, they disagree in channel count, the percentiles
        are invalid, or a channel has zero standard deviation.

    Examples
    --------
    >>> s = compute_stats([np.array([[[0.0, 2.0]]])])
    >>> s.mean, s.std
    ([1.0], [1.0])
    """
    percentiles = _check_percentiles(clip_percentiles)
    if len(images) == 0:
        raise UserError("no images to compute normalisation statistics from")
    for i, im in enumerate(images):
        if np.ndim(im) not in (3, 4):
            raise ValueError(f"image {i} has shape {np.shape(im)}; expected (C, Y, X) or (C, Z, Y, X)")
    n_channels = images[0].shape[0]
    for i, im in enumerate(images):
        if im.shape[0] != n_channels:
            raise UserError(f"images disagree in channel count: image 0 has {n_channels}, image {i} has {im.shape[0]}")

    means, stds, lows, highs = [], [], [], []
    for c in range(n_channels):
        low = high = None
        if percentiles is not None:
            values = np.concatenate([np.ravel(im[c]) for im in images])
            low, high = _percentiles(values, percentiles)
            del values
            lows.append(low)
            highs.append(high)

        count = sum(im[c].size for im in images)
        mean = math.fsum(float(_channel64(im, c, low, high).sum()) for im in images) / count
        # Two-pass variance: sum of squared deviations from the float64 mean.
        var = math.fsum(float(np.square(_channel64(im, c, low, high) - mean).sum()) for im in images) / count
        std = math.sqrt(var)
        if not std > 0 or not math.isfinite(std):
            clipped = "" if percentiles is None else f" after clipping to percentiles {percentiles}"
            raise UserError(f"channel {c} has zero standard deviation{clipped}; cannot normalise constant data")
        means.append(mean)
        stds.append(std)
    if percentiles is None:
        return NormStats(mean=means, std=stds)
    return NormStats(mean=means, std=stds, clip_low=lows, clip_high=highs, clip_percentiles=percentiles)


def _channel_params(stats: NormStats, shape: Sequence[int], spatial_dims: int) -> dict[str, np.ndarray | None]:
    """Parameters for an array of ``shape``, as ``(C, 1, 1)`` (or ``(C, 1, 1, 1)``) to broadcast over space."""
    n_channels = _n_channels(shape, spatial_dims)
    if n_channels != stats.n_channels:
        raise UserError(
            f"the image has {n_channels} channel(s) but the normalisation statistics have {stats.n_channels}"
        )

    def col(v: list[float] | None) -> np.ndarray | None:
        return None if v is None else np.asarray(v, dtype=np.float64).reshape(-1, *(1,) * spatial_dims)

    return {"mean": col(stats.mean), "std": col(stats.std), "low": col(stats.clip_low), "high": col(stats.clip_high)}


def _n_channels(shape: Sequence[int], spatial_dims: int) -> int:
    """Size of the channel axis, ``-(spatial_dims + 1)``, of an array ``(..., C, [Z,] Y, X)``."""
    spatial = spatial_axes(spatial_dims)  # ValueError unless 2 or 3
    axis = -(spatial_dims + 1)
    if len(shape) < spatial_dims + 1:
        raise ValueError(
            f"expected an array with the channel axis at {axis}, (..., C, {', '.join(spatial)});"
            f" got {len(shape)} dimensions"
        )
    return int(shape[axis])


def normalise(x: np.ndarray, stats: NormStats, spatial_dims: int = 2) -> np.ndarray:
    """Clip (if the stats have bounds), subtract the mean and divide by the std.

    Parameters
    ----------
    x : numpy.ndarray
        Array of shape ``(..., C, Y, X)``, or ``(..., C, Z, Y, X)`` with ``spatial_dims=3``.
    stats : NormStats
        Statistics with ``C`` channels.
    spatial_dims : {2, 3}, default 2
        Number of trailing spatial axes; the channel axis is just before them.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape, computed in float64.
    """
    x = np.asarray(x)
    p = _channel_params(stats, x.shape, spatial_dims)
    y = x.astype(np.float64)
    if p["low"] is not None:
        y = np.clip(y, p["low"], p["high"])
    return ((y - p["mean"]) / p["std"]).astype(np.float32)


def denormalise(x: np.ndarray, stats: NormStats, spatial_dims: int = 2) -> np.ndarray:
    """Invert :func:`normalise` (without undoing the clipping): ``x * std + mean``.

    Parameters
    ----------
    x : numpy.ndarray
        Normalised array of shape ``(..., C, Y, X)``, or ``(..., C, Z, Y, X)`` with ``spatial_dims=3``.
    stats : NormStats
        The statistics used to normalise.
    spatial_dims : {2, 3}, default 2
        Number of trailing spatial axes; the channel axis is just before them.

    Returns
    -------
    numpy.ndarray
        float32 array in the original units, computed in float64.
    """
    x = np.asarray(x)
    p = _channel_params(stats, x.shape, spatial_dims)
    return (x.astype(np.float64) * p["std"] + p["mean"]).astype(np.float32)


def _float64_device(t: torch.Tensor) -> torch.device:
    # MPS has no float64; do the arithmetic on the CPU there.
    return torch.device("cpu") if t.device.type == "mps" else t.device


def _tensor_params(stats: NormStats, t: torch.Tensor, spatial_dims: int) -> dict[str, torch.Tensor | None]:
    p = _channel_params(stats, t.shape, spatial_dims)
    device = _float64_device(t)
    return {k: None if v is None else torch.from_numpy(v).to(device) for k, v in p.items()}


def normalise_tensor(t: torch.Tensor, stats: NormStats, spatial_dims: int = 2) -> torch.Tensor:
    """Torch version of :func:`normalise`: float64 arithmetic, float32 result on ``t``'s device."""
    p = _tensor_params(stats, t, spatial_dims)
    y = t.to(device=_float64_device(t), dtype=torch.float64)
    if p["low"] is not None:
        y = torch.clamp(y, p["low"], p["high"])
    return ((y - p["mean"]) / p["std"]).to(device=t.device, dtype=torch.float32)


def denormalise_tensor(t: torch.Tensor, stats: NormStats, spatial_dims: int = 2) -> torch.Tensor:
    """Torch version of :func:`denormalise`: float64 arithmetic, float32 result on ``t``'s device."""
    p = _tensor_params(stats, t, spatial_dims)
    y = t.to(device=_float64_device(t), dtype=torch.float64)
    return (y * p["std"] + p["mean"]).to(device=t.device, dtype=torch.float32)
