"""A histogram pixel noise model: p(x | s) tabulated on a (signal bin, observation bin) grid.

Per channel, row ``i`` of a ``(bins, bins)`` table is the distribution of the
observation over ``bins`` equal bins of ``[min_obs, max_obs]`` for signals in
bin ``i`` of ``[min_signal, max_signal]``. The density at ``(x, s)`` is the
probability of ``x``'s bin in the row of ``s``'s bin (nearest, clamped to the
range) divided by the observation bin width: piecewise constant in ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bmz_cosdd.errors import UserError
from bmz_cosdd.noise_models.base import (
    channel_values,
    check_channels,
    check_percentiles,
    check_range,
    compute_dtype,
    per_channel,
    prepare_pairs,
    signal_range,
)

__all__ = ["HistogramNoiseModel", "fit_histogram"]

# density floor (raw units): keeps log p finite outside the observation range and in empty bins
DENSITY_FLOOR = 1e-10
# each side of the observation percentile range is widened by this fraction of its span
OBS_MARGIN = 0.1


class HistogramNoiseModel(torch.nn.Module):
    """Tabulated p(x | s), one ``(bins, bins)`` table per channel.

    Parameters
    ----------
    n_channels : int
        Number of channels.
    bins : int
        Number of signal bins and of observation bins.
    min_signal, max_signal : sequence of float
        Per-channel signal range, raw units (one value is used for all channels).
    min_obs, max_obs : sequence of float
        Per-channel observation range, raw units.

    Attributes
    ----------
    probs : torch.Tensor
        Buffer ``(C, bins, bins)`` (float64): row ``i`` holds the probabilities of
        the observation bins given signal bin ``i``; rows sum to one. Initially
        uniform.
    info : dict
        Provenance written by :func:`fit_histogram` (saved with the model).

    Notes
    -----
    ``log_likelihood`` floors the density at ``1e-10`` (raw units), so it is
    finite for observations outside ``[min_obs, max_obs]`` or in empty bins.
    """

    kind = "histogram"

    def __init__(
        self,
        n_channels: int = 1,
        bins: int = 256,
        min_signal: Sequence[float] = (0.0,),
        max_signal: Sequence[float] = (1.0,),
        min_obs: Sequence[float] = (0.0,),
        max_obs: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__()
        for name, value in (("n_channels", n_channels), ("bins", bins)):
            if int(value) != value or value < 1:
                raise UserError(f"histogram noise model: {name} must be a positive integer, got {value!r}")
        self.n_channels = int(n_channels)
        self.bins = int(bins)
        self.min_signal = channel_values(min_signal, self.n_channels, "min_signal")
        self.max_signal = channel_values(max_signal, self.n_channels, "max_signal")
        self.min_obs = channel_values(min_obs, self.n_channels, "min_obs")
        self.max_obs = channel_values(max_obs, self.n_channels, "max_obs")
        check_range(self.min_signal, self.max_signal, "signal")
        check_range(self.min_obs, self.max_obs, "observation")
        self.info: dict = {}
        self.register_buffer(
            "probs", torch.full((self.n_channels, self.bins, self.bins), 1.0 / self.bins, dtype=torch.float64)
        )

    def constructor_args(self) -> dict:
        """The arguments that rebuild this model (JSON-serialisable)."""
        return {
            "n_channels": self.n_channels,
            "bins": self.bins,
            "min_signal": list(self.min_signal),
            "max_signal": list(self.max_signal),
            "min_obs": list(self.min_obs),
            "max_obs": list(self.max_obs),
        }

    def _obs_width(self) -> list[float]:
        return [(hi - lo) / self.bins for lo, hi in zip(self.min_obs, self.max_obs)]

    def _rows(self, s: Tensor) -> Tensor:
        """Global row index ``c * bins + i`` of each signal's nearest signal bin (int64, shape of ``s``)."""
        position = (s - per_channel(self.min_signal, s)) / per_channel(
            [hi - lo for lo, hi in zip(self.min_signal, self.max_signal)], s
        )
        row = torch.floor(position * self.bins).clamp(0, self.bins - 1).long()
        channel = torch.arange(self.n_channels, device=s.device).reshape((1, -1) + (1,) * (s.ndim - 2))
        return channel * self.bins + row

    def _log_likelihood(self, x: Tensor, s: Tensor) -> Tensor:
        """``log p(x | s)`` in the compute precision (float64 if an input is float64)."""
        check_channels(self.n_channels, x, s)
        dtype = compute_dtype(x, s)
        x, s = x.to(dtype), s.to(dtype)
        position = (x - per_channel(self.min_obs, x)) / per_channel(self._obs_width(), x)
        inside = (position >= 0) & (position < self.bins)
        column = torch.floor(position).clamp(0, self.bins - 1).long()
        probs = self.probs.to(device=x.device, dtype=dtype).reshape(-1)
        p = probs[self._rows(s) * self.bins + column]
        density = torch.where(inside, p / per_channel(self._obs_width(), x), torch.zeros_like(p))
        return torch.log(density.clamp(min=DENSITY_FLOOR))

    def log_likelihood(self, x: Tensor, s: Tensor) -> Tensor:
        """Per-pixel log-density of observations given signals.

        Parameters
        ----------
        x, s : Tensor
            Observations and signals, ``(B, C, Y, X)`` (any trailing axes), raw units.

        Returns
        -------
        Tensor
            ``log p(x | s)`` (natural log, density floored at 1e-10), float32, shape of ``x``.
        """
        return self._log_likelihood(x, s).to(torch.float32)

    def _centres(self, like: Tensor) -> Tensor:
        """Observation bin centres ``(C, bins)``."""
        steps = torch.arange(self.bins, device=like.device, dtype=like.dtype) + 0.5
        low = torch.tensor(self.min_obs, device=like.device, dtype=like.dtype)[:, None]
        width = torch.tensor(self._obs_width(), device=like.device, dtype=like.dtype)[:, None]
        return low + steps * width

    def mean_variance(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the tabulated distribution at the signals ``s``.

        Observations are taken uniform within their bin, so the variance is that
        of the bin centres plus ``width**2 / 12``.

        Parameters
        ----------
        s : Tensor
            Signals ``(B, C, ...)``, raw units.

        Returns
        -------
        mean, variance : Tensor
            Shape of ``s``, raw units; float64 for float64 ``s``, else float32.
        """
        check_channels(self.n_channels, s)
        dtype = compute_dtype(s)
        s = s.to(dtype)
        probs = self.probs.to(device=s.device, dtype=dtype)
        centres = self._centres(s)[:, None, :]
        row_mean = (probs * centres).sum(-1)
        width = torch.tensor(self._obs_width(), device=s.device, dtype=dtype)[:, None]
        row_var = (probs * (centres - row_mean[..., None]) ** 2).sum(-1) + width**2 / 12.0
        rows = self._rows(s)
        return row_mean.reshape(-1)[rows], row_var.reshape(-1)[rows]

    def sample(self, s: Tensor, generator: torch.Generator) -> Tensor:
        """One draw of ``x`` per pixel of ``s``: a bin from the row, then uniform within it.

        Parameters
        ----------
        s : Tensor
            Signals ``(B, C, ...)``, raw units.
        generator : torch.Generator
            Source of randomness; draws are made on its device and moved to ``s``'s.

        Returns
        -------
        Tensor
            Shape of ``s``; float64 for float64 ``s``, else float32.
        """
        check_channels(self.n_channels, s)
        dtype = compute_dtype(s)
        with torch.no_grad():
            probs = self.probs.to(device=s.device, dtype=torch.float64).reshape(-1, self.bins)
            cdf = torch.cumsum(probs, dim=-1)
            cdf = cdf / cdf[:, -1:]
            # row r's cdf shifted by r makes one increasing sequence: one searchsorted serves all rows
            offsets = torch.arange(cdf.shape[0], device=s.device, dtype=torch.float64)[:, None]
            flat = (cdf + offsets).reshape(-1)
            where = generator.device
            u = torch.rand(s.shape, generator=generator, device=where, dtype=torch.float64).to(s.device)
            within = torch.rand(s.shape, generator=generator, device=where, dtype=torch.float64).to(s.device)
            rows = self._rows(s.to(dtype))
            found = torch.searchsorted(flat, rows.to(torch.float64) + u, right=True)
            column = (found - rows * self.bins).clamp(0, self.bins - 1)
            x = per_channel(self.min_obs, s, torch.float64) + (column + within) * per_channel(
                self._obs_width(), s, torch.float64
            )
            return x.to(dtype)


def _fill_empty_rows(counts: np.ndarray) -> tuple[np.ndarray, int]:
    """Copy into each empty row the counts of the nearest non-empty row (lower one on ties)."""
    filled = np.flatnonzero(counts.sum(axis=1) > 0)
    empty = counts.shape[0] - filled.size
    if empty:
        rows = np.arange(counts.shape[0])
        nearest = filled[np.argmin(np.abs(rows[:, None] - filled[None, :]), axis=1)]
        counts = counts[nearest]
    return counts, int(empty)


def fit_histogram(
    signal: np.ndarray,
    observation: np.ndarray,
    bins: int = 256,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> HistogramNoiseModel:
    """Tabulate a :class:`HistogramNoiseModel` from (signal, observation) pairs.

    Per channel the signal range ``[min_signal, max_signal]`` is the signal's
    ``percentiles``; pairs whose signal lies outside are clipped to the range
    (so they count in the first or last row). The observation range is the
    observation's ``percentiles`` widened on each side by 10% of their span;
    pairs whose observation falls outside it are not counted (``info`` records
    how many). A signal bin with no pairs takes the distribution of the nearest
    bin that has some.

    Parameters
    ----------
    signal, observation : numpy.ndarray
        Same shape, ``(N, C, Y, X)`` or ``(C, Y, X)``, raw units.
    bins : int
        Number of signal bins and of observation bins.
    percentiles : tuple of float
        Percentiles bounding the signal and (before widening) observation ranges.

    Returns
    -------
    HistogramNoiseModel
        On the CPU; ``info`` records the number of pairs, the percentiles and,
        per channel, the pairs outside the observation range and the empty rows.

    Raises
    ------
    UserError
        If the shapes differ or are not 3-D/4-D, values are NaN or infinite,
        or a channel's signal or observation is constant over the percentile range.
    """
    if int(bins) != bins or bins < 1:
        raise UserError(f"fit_histogram: bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    s, x = prepare_pairs(signal, observation)
    low, high = signal_range(s, percentiles)
    s = np.clip(s, low, high)
    obs_low, obs_high = np.percentile(x, check_percentiles(percentiles), axis=0)
    margin = OBS_MARGIN * (obs_high - obs_low)
    obs_low, obs_high = [float(v) for v in obs_low - margin], [float(v) for v in obs_high + margin]
    check_range(obs_low, obs_high, "observation")

    n_channels = s.shape[1]
    probs = np.empty((n_channels, bins, bins), dtype=np.float64)
    outside, empty_rows = [], []
    for c in range(n_channels):
        row = np.clip(np.floor((s[:, c] - low[c]) / (high[c] - low[c]) * bins), 0, bins - 1).astype(np.int64)
        position = np.floor((x[:, c] - obs_low[c]) / (obs_high[c] - obs_low[c]) * bins)
        inside = (position >= 0) & (position < bins)
        flat = row[inside] * bins + position[inside].astype(np.int64)
        counts = np.bincount(flat, minlength=bins * bins).reshape(bins, bins).astype(np.float64)
        if not counts.any():
            raise UserError(f"fit_histogram: no pairs of channel {c} fall inside the observation range")
        counts, n_empty = _fill_empty_rows(counts)
        probs[c] = counts / counts.sum(axis=1, keepdims=True)
        outside.append(int(np.count_nonzero(~inside)))
        empty_rows.append(n_empty)

    model = HistogramNoiseModel(n_channels, bins, low, high, obs_low, obs_high)
    with torch.no_grad():
        model.probs.copy_(torch.from_numpy(probs))
    model.info = {
        "fit": "fit_histogram",
        "n_pairs": int(s.shape[0]),
        "percentiles": [float(p) for p in percentiles],
        "pairs_outside_obs_range": outside,
        "empty_rows_filled": empty_rows,
    }
    return model
