"""A Gaussian-mixture pixel noise model whose parameters are polynomials of the signal.

Per channel ``c`` and Gaussian ``k``, three polynomials (``n_coeffs`` coefficients,
lowest degree first) of the rescaled signal ``t = clamp((s - min_signal) /
(max_signal - min_signal), 0, 1)`` give a weight logit ``a_k``, a mean offset
``b_k`` and a log-variance ``v_k``::

    w_k   = softmax_k(a)
    var_k = min_sigma + exp(v_k)
    o_k   = b_k * sqrt(var_k)                 # offset in units of the component's std
    mu_k  = s + o_k - sum_j w_j o_j           # so the mixture mean is exactly s
    log p(x | s) = logsumexp_k [log w_k - log(2 pi var_k) / 2 - (x - mu_k)^2 / (2 var_k)]

Expressing the offset in component standard deviations keeps its coefficients of
order one whatever the data's scale, so one Adam learning rate suits any data.
Clamping ``t`` makes the parameters constant outside the fitted range instead
of extrapolating the polynomials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bmz_cosdd.errors import UserError
from bmz_cosdd.noise_models.base import (
    channel_values,
    check_channels,
    check_range,
    compute_dtype,
    per_channel,
    prepare_pairs,
    signal_range,
)

__all__ = ["GMMNoiseModel", "fit_gmm"]

# exp(60) ~ 1e26: far above any real variance, and its square stays finite in float32
_MAX_LOG_VAR = 60.0
# the best parameters are chosen on at most this many pairs
_EVAL_PAIRS = 1_000_000


class GMMNoiseModel(torch.nn.Module):
    """Gaussian mixture p(x | s) with signal-dependent weights, offsets and variances.

    Parameters
    ----------
    n_channels : int
        Number of channels, each with its own parameters.
    n_gaussians : int
        Number of Gaussians ``K``.
    n_coeffs : int
        Coefficients per polynomial (degree ``n_coeffs - 1``).
    min_signal, max_signal : sequence of float
        Per-channel signal range in raw units (one value is used for all
        channels); the polynomials' argument is the signal rescaled to [0, 1].
    min_sigma : float
        Variance floor (raw units squared, > 0) added to every component's variance.

    Attributes
    ----------
    params : torch.nn.Parameter
        ``(C, 3, K, n_coeffs)``: polynomial coefficients of the weight logits,
        offsets (in component standard deviations) and log-variances.
    info : dict
        Provenance written by :func:`fit_gmm` (saved with the model).

    Notes
    -----
    Initially the weights are equal, the offsets spread over +-0.5 standard
    deviations and every variance is ``min_sigma + (span / 10)**2`` where
    ``span = max_signal - min_signal``.
    """

    kind = "gmm"

    def __init__(
        self,
        n_channels: int = 1,
        n_gaussians: int = 3,
        n_coeffs: int = 2,
        min_signal: Sequence[float] = (0.0,),
        max_signal: Sequence[float] = (1.0,),
        min_sigma: float = 50.0,
    ) -> None:
        super().__init__()
        for name, value in (("n_channels", n_channels), ("n_gaussians", n_gaussians), ("n_coeffs", n_coeffs)):
            if int(value) != value or value < 1:
                raise UserError(f"GMM noise model: {name} must be a positive integer, got {value!r}")
        if not (math.isfinite(min_sigma) and min_sigma > 0):
            raise UserError(f"GMM noise model: min_sigma (a variance floor) must be finite and > 0, got {min_sigma}")
        self.n_channels = int(n_channels)
        self.n_gaussians = int(n_gaussians)
        self.n_coeffs = int(n_coeffs)
        self.min_signal = channel_values(min_signal, self.n_channels, "min_signal")
        self.max_signal = channel_values(max_signal, self.n_channels, "max_signal")
        check_range(self.min_signal, self.max_signal, "signal")
        self.min_sigma = float(min_sigma)
        self.info: dict = {}

        params = torch.zeros(self.n_channels, 3, self.n_gaussians, self.n_coeffs)
        params[:, 1, :, 0] = _offset_spread(self.n_gaussians)
        spans = torch.tensor([hi - lo for lo, hi in zip(self.min_signal, self.max_signal)])
        params[:, 2, :, 0] = torch.log((spans / 10.0) ** 2)[:, None]
        self.params = torch.nn.Parameter(params)

    def constructor_args(self) -> dict:
        """The arguments that rebuild this model (JSON-serialisable)."""
        return {
            "n_channels": self.n_channels,
            "n_gaussians": self.n_gaussians,
            "n_coeffs": self.n_coeffs,
            "min_signal": list(self.min_signal),
            "max_signal": list(self.max_signal),
            "min_sigma": self.min_sigma,
        }

    def _components(self, s: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Log-weights, means and variances, each shaped ``(K,) + s.shape``.

        The Gaussians lead so that every sum over them (softmax, mixture mean, logsumexp)
        adds whole contiguous tensors: over a trailing axis of 3 the same reductions cost
        several times more on the CPU (they run once per pixel of every training batch).
        """
        s = s.to(dtype)
        low = per_channel(self.min_signal, s)
        span = per_channel([hi - lo for lo, hi in zip(self.min_signal, self.max_signal)], s)
        t = ((s - low) / span).clamp(0.0, 1.0)
        # (C, 3, K, n) -> (n, 3, K, 1, C, 1...): one coefficient tensor per degree, against (B, C, ...)
        coeffs = self.params.to(dtype).permute(3, 1, 2, 0).reshape(
            (self.n_coeffs, 3, self.n_gaussians, 1, self.n_channels) + (1,) * (s.ndim - 2)
        )
        poly = coeffs[-1]
        for p in range(self.n_coeffs - 2, -1, -1):  # Horner
            poly = poly * t + coeffs[p]
        logits, offsets, log_var = poly.unbind(0)
        log_w = torch.log_softmax(logits, dim=0)
        var = self.min_sigma + torch.exp(log_var.clamp(max=_MAX_LOG_VAR))
        offsets = offsets * torch.sqrt(var)
        mu = s + offsets - (log_w.exp() * offsets).sum(0)
        return log_w, mu, var

    def _log_likelihood(self, x: Tensor, s: Tensor) -> Tensor:
        """``log p(x | s)`` in the compute precision (float64 if an input is float64)."""
        check_channels(self.n_channels, x, s)
        dtype = compute_dtype(x, s)
        log_w, mu, var = self._components(s, dtype)
        terms = log_w - 0.5 * torch.log(2.0 * math.pi * var) - (x.to(dtype) - mu) ** 2 / (2.0 * var)
        return torch.logsumexp(terms, dim=0)

    def log_likelihood(self, x: Tensor, s: Tensor) -> Tensor:
        """Per-pixel log-density of observations given signals.

        Parameters
        ----------
        x, s : Tensor
            Observations and signals, ``(B, C, Y, X)`` (any trailing axes), raw units.

        Returns
        -------
        Tensor
            ``log p(x | s)`` (natural log), float32, shape of ``x``.
        """
        return self._log_likelihood(x, s).to(torch.float32)

    def mean_variance(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """Mixture mean and variance at the signals ``s``.

        Parameters
        ----------
        s : Tensor
            Signals ``(B, C, ...)``, raw units.

        Returns
        -------
        mean, variance : Tensor
            Shape of ``s``, raw units; float64 for float64 ``s``, else float32.
            The mean equals ``s`` by construction.
        """
        check_channels(self.n_channels, s)
        log_w, mu, var = self._components(s, compute_dtype(s))
        w = log_w.exp()
        mean = (w * mu).sum(0)
        variance = (w * (var + (mu - mean) ** 2)).sum(0)
        return mean, variance

    def sample(self, s: Tensor, generator: torch.Generator) -> Tensor:
        """One draw of ``x`` per pixel of ``s``.

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
        with torch.no_grad():
            log_w, mu, var = self._components(s, compute_dtype(s))
            where = generator.device
            u = torch.rand((1, *s.shape), generator=generator, device=where, dtype=mu.dtype).to(s.device)
            z = torch.randn(s.shape, generator=generator, device=where, dtype=mu.dtype).to(s.device)
            k = (torch.cumsum(log_w.exp(), dim=0) < u).sum(0, keepdim=True).clamp(max=self.n_gaussians - 1)
            return (mu.gather(0, k) + torch.sqrt(var.gather(0, k)) * z[None])[0]


def _offset_spread(n_gaussians: int) -> Tensor:
    """Initial offsets in component standard deviations: evenly over [-0.5, 0.5]."""
    if n_gaussians == 1:
        return torch.zeros(1)
    return torch.linspace(-0.5, 0.5, n_gaussians)


def default_min_sigma(signal: np.ndarray, observation: np.ndarray) -> float:
    """The variance floor used by :func:`fit_gmm` when none is given.

    ``1e-3`` times the smallest per-channel robust residual variance
    ``(IQR(x - s) / 1.349)**2``, raised to ``q**2 / 12`` when the observations
    are quantised with step ``q`` (integer camera counts: ``q = 1``), so that
    no Gaussian can collapse onto a single repeated value.

    Parameters
    ----------
    signal, observation : numpy.ndarray
        ``(M, C)`` pairs as returned by :func:`~bmz_cosdd.noise_models.base.prepare_pairs`.

    Returns
    -------
    float
        The floor, > 0.
    """
    residual = observation - signal
    q25, q75 = np.percentile(residual, [25.0, 75.0], axis=0)
    robust_var = ((q75 - q25) / 1.349) ** 2
    # IQR is 0 when most residuals are exactly 0; the plain variance still sees the rest
    robust_var = np.where(robust_var > 0, robust_var, residual.var(axis=0))
    if not np.all(robust_var > 0):
        raise UserError("noise model pairs: the observations equal the signal in a channel (no noise to model)")
    floor = 1e-3 * float(robust_var.min())
    rng = np.random.default_rng(0)
    for c in range(observation.shape[1]):
        values = observation[:, c]
        if values.size > 100_000:
            values = rng.choice(values, 100_000, replace=False)
        unique = np.unique(values)
        if unique.size >= 2 and (unique.size <= values.size // 2 or np.all(unique == np.round(unique))):
            step = float(np.diff(unique).min())
            floor = max(floor, step**2 / 12.0)
    return floor


def _initialise(model: GMMNoiseModel, signal: np.ndarray, observation: np.ndarray) -> None:
    """Start from the data: a log-variance line through a least-squares fit of (x - s)^2 against t."""
    spread = _offset_spread(model.n_gaussians)
    inflation = 1.0 + float((spread**2).mean())  # the spread offsets add to the mixture variance
    with torch.no_grad():
        model.params.zero_()
        model.params[:, 1, :, 0] = spread
        for c in range(model.n_channels):
            t = (signal[:, c] - model.min_signal[c]) / (model.max_signal[c] - model.min_signal[c])
            r2 = (observation[:, c] - signal[:, c]) ** 2
            mean_r2 = float(r2.mean())
            slope, intercept = np.polyfit(t, r2, 1) if np.ptp(t) > 0 else (0.0, mean_r2)
            ends = []
            for var in (intercept, intercept + slope):
                excess = max(var, 0.1 * mean_r2) / inflation - model.min_sigma
                ends.append(math.log(max(excess, 1e-3 * mean_r2, 1e-12)))
            if model.n_coeffs >= 2:
                model.params[c, 2, :, 0] = ends[0]
                model.params[c, 2, :, 1] = ends[1] - ends[0]
            else:
                model.params[c, 2, :, 0] = 0.5 * (ends[0] + ends[1])


def fit_gmm(
    signal: np.ndarray,
    observation: np.ndarray,
    n_gaussians: int = 3,
    n_coeffs: int = 2,
    min_sigma: float | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    steps: int = 2000,
    lr: float = 0.1,
    batch: int = 250_000,
    seed: int = 0,
) -> GMMNoiseModel:
    """Fit a :class:`GMMNoiseModel` to (signal, observation) pairs by maximum likelihood.

    Per channel the signal range ``[min_signal, max_signal]`` is the signal's
    ``percentiles``; pairs whose signal lies outside are kept but their signal is
    clipped to the range. Adam minimises the negative mean log-likelihood of
    random mini-batches; every ``steps // 20`` steps the loss on all pairs (at
    most 1,000,000 of them, a fixed random subset) is measured and the best
    parameters seen are the ones returned.

    Parameters
    ----------
    signal, observation : numpy.ndarray
        Same shape, ``(N, C, Y, X)`` or ``(C, Y, X)``, raw units.
    n_gaussians, n_coeffs : int
        See :class:`GMMNoiseModel`.
    min_sigma : float, optional
        Variance floor in raw units squared; None chooses it from the data
        (see :func:`default_min_sigma`).
    percentiles : tuple of float
        Percentiles of the signal that bound the fitted range, per channel.
    steps : int
        Adam steps.
    lr : float
        Adam learning rate.
    batch : int
        Pairs per mini-batch (all pairs when there are fewer).
    seed : int
        Seed of the mini-batch and evaluation-subset draws.

    Returns
    -------
    GMMNoiseModel
        On the CPU; ``info`` records the number of pairs, the percentiles, the
        floor, the fit settings and the best loss (``final_loss``, negative mean
        log-likelihood in raw units, averaged over channels).

    Raises
    ------
    UserError
        If the shapes differ or are not 3-D/4-D, values are NaN or infinite,
        or a channel's signal is constant over the percentile range.
    """
    if int(steps) != steps or steps < 1 or int(batch) != batch or batch < 1:
        raise UserError(f"fit_gmm: steps and batch must be positive integers, got {steps!r} and {batch!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"fit_gmm: lr must be finite and > 0, got {lr}")
    s, x = prepare_pairs(signal, observation)
    low, high = signal_range(s, percentiles)
    s = np.clip(s, low, high)
    floor_source = "given"
    if min_sigma is None:
        min_sigma, floor_source = default_min_sigma(s, x), "default_min_sigma"
    model = GMMNoiseModel(s.shape[1], n_gaussians, n_coeffs, low, high, float(min_sigma))
    _initialise(model, s, x)

    n_pairs = s.shape[0]
    rng = np.random.default_rng(seed)
    s_t, x_t = torch.from_numpy(s.astype(np.float32)), torch.from_numpy(x.astype(np.float32))
    if n_pairs > _EVAL_PAIRS:
        chosen = torch.from_numpy(rng.choice(n_pairs, _EVAL_PAIRS, replace=False))
        s_eval, x_eval = s_t[chosen], x_t[chosen]
    else:
        s_eval, x_eval = s_t, x_t

    def full_loss() -> float:
        with torch.no_grad():
            return float(-model._log_likelihood(x_eval, s_eval).mean())

    optimiser = torch.optim.Adam([model.params], lr=lr)
    eval_every = max(1, steps // 20)
    best_loss, best_step, best_params = full_loss(), 0, model.params.detach().clone()
    initial_loss = best_loss
    diverged = False
    for step in range(1, steps + 1):
        if batch >= n_pairs:
            s_b, x_b = s_t, x_t
        else:
            index = torch.from_numpy(rng.integers(0, n_pairs, size=batch))
            s_b, x_b = s_t[index], x_t[index]
        loss = -model._log_likelihood(x_b, s_b).mean()
        if not torch.isfinite(loss):
            diverged = True
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % eval_every == 0 or step == steps:
            current = full_loss()
            if math.isfinite(current) and current < best_loss:
                best_loss, best_step, best_params = current, step, model.params.detach().clone()
    with torch.no_grad():
        model.params.copy_(best_params)
    model.info = {
        "fit": "fit_gmm",
        "n_pairs": int(n_pairs),
        "percentiles": [float(p) for p in percentiles],
        "min_sigma": float(min_sigma),
        "min_sigma_source": floor_source,
        "steps": int(steps),
        "lr": float(lr),
        "batch": int(batch),
        "seed": int(seed),
        "initial_loss": initial_loss,
        "final_loss": best_loss,
        "best_step": best_step,
        "diverged": diverged,
    }
    return model
