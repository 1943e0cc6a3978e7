"""Is a trained model better than its noisy input? Checks without ground truth, at the end of training.

A denoiser that returns a plausible image worse than its input, with invented structure,
is the worst failure in science; this module makes it loud. On the run's fixed
validation crops (normalised units) it measures:

- **the estimated error of the prediction**, by Stein's unbiased risk estimate
  (:mod:`bmz_cosdd.data.stein_risk`): ``mean((prediction - noisy)^2)`` minus the noise
  variance plus twice the network's divergence against the noise covariance (variance by
  signal and correlation along the noise direction, both measured on the noisy crops), so
  that noise the prediction keeps counts as error. The estimated PSNR gain over the input
  is ``10 log10(sigma^2 / error)``; **a gain at or below 0 dB flags the run**: its output is
  estimated to be no better than the noisy input; a gain under :data:`SMALL_GAIN_DB` is a
  note;
- for latent-variable methods (COSDD, HDN, DivNoising), **what the latent carries**: the KL
  per level in nats per pixel, the signal decoder's explained variance, and the posterior
  spread against the noise. A total KL under :data:`COLLAPSE_KL` nats per pixel (0.014 bits:
  59 bits for a 64 x 64 crop, a blurred outline at best) **flags posterior collapse**;
- **the residual check** of :mod:`bmz_cosdd.data.method_noise` (the residual must look like
  the noise): its findings are reported, they do not flag the run on their own.

A flagged run is reported at the end of training and by ``predict``; ``package`` refuses it
unless forced.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bmz_cosdd.data.method_noise import ResidualCheck, check_residual
from bmz_cosdd.data.noise_correlation import (
    estimate_noise_correlation,
    estimate_noise_variance,
    noise_variance_by_signal,
)
from bmz_cosdd.data.stein_risk import PROBES, stein_divergence, sure_error
from bmz_cosdd.methods.base import Method, PredictOptions

__all__ = ["COLLAPSE_KL", "SMALL_GAIN_DB", "QUALITY_ADVICE", "QualityReport", "assess", "MAX_CROPS", "SAMPLES"]

#: Total KL (nats per pixel) under which the latent is taken to carry no image.
COLLAPSE_KL = 0.01
#: An estimated gain (dB) under this, though positive, is reported as a note: SURE has read 1-1.5 dB high
#: on the striped real-image cases (StructN2V: +0.25 dB estimated for -0.7 and -1.2 dB true).
SMALL_GAIN_DB = 1.0
#: What a user can do about a flagged run ({method}, {run}).
QUALITY_ADVICE = (
    "train longer (bmz-cosdd train {method} --resume --out {run} --max-steps N with a larger N), check the noise"
    " settings with `bmz-cosdd inspect`, or compare with another method (inspect's advice names them)"
)
#: Validation crops and posterior samples used by the assessment.
MAX_CROPS = 16
SAMPLES = 20


@dataclass
class QualityReport:
    """The ground-truth-free assessment of a trained run (values in normalised units).

    Attributes
    ----------
    noise_variance : float
        Estimated variance of the noise in the validation crops.
    mse_to_noisy : float
        Mean squared difference between the prediction and the noisy crops.
    estimated_gain_db : float or None
        Estimated PSNR gain of the prediction over the noisy input, by Stein's unbiased risk
        estimate of its error; None when that estimate is not positive.
    latent : dict
        Method diagnostics: ``kl`` and ``kl_levels`` (nats per pixel, finest level first),
        ``signal_explained_variance``, ``posterior_variance`` (variance of the posterior
        samples per pixel); empty for deterministic methods.
    residual : dict
        :meth:`ResidualCheck.to_dict` of the prediction on the validation crops.
    risk : dict
        Stein's unbiased risk estimate (:mod:`bmz_cosdd.data.stein_risk`): ``mean_variance``
        (the noise variance per pixel from the signal, averaged), ``correlation`` (along
        ``direction``, lags 1..8), ``divergence`` (``tr(Sigma J) / N``) and ``error`` (the
        estimated mean squared error of the prediction), normalised units.
    flags : list of str
        Why the run must not be trusted; empty when none.
    warnings : list of str
        A small estimated gain, and what the residual check found.
    step : int
        Training step assessed.
    """

    noise_variance: float
    mse_to_noisy: float
    estimated_gain_db: float | None
    latent: dict[str, Any] = field(default_factory=dict)
    residual: dict[str, Any] = field(default_factory=dict)
    risk: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    step: int = 0

    @property
    def flagged(self) -> bool:
        """True when the run must not be trusted (posterior collapse or estimated worse than its input)."""
        return bool(self.flags)

    def summary(self) -> str:
        """One line with the figures: the estimated gain (Stein's unbiased risk estimate) and the
        prediction's mean squared difference to the noisy input in units of the noise variance
        (about 1 for a good denoiser, 2 or more for an output no better than its input)."""
        if self.noise_variance > 0 and math.isfinite(self.mse_to_noisy):
            ratio = self.mse_to_noisy / self.noise_variance
            gain = (f"an estimated gain of {self.estimated_gain_db:+.1f} dB over the noisy input (SURE), and "
                    if self.estimated_gain_db is not None else "")
            text = (f"quality (no ground truth, validation crops): {gain}the output differs from the noisy input"
                    f" by {ratio:.2f} x the noise variance (about 1: noise removed; 2 or more: no better than the"
                    " input)")
        else:
            text = "quality (no ground truth, validation crops): the noise variance could not be estimated"
        if "kl" in self.latent:
            text += (f"; latent KL {self.latent['kl']:.3g} nats/pixel, signal decoder explains"
                     f" {100 * self.latent.get('signal_explained_variance', float('nan')):.0f} % of the variance")
        return text

    def lines(self, method: str = "METHOD", run: object = "RUN") -> list[str]:
        """The report: the summary, each flag, what to do about them, and the residual check's findings."""
        out = [self.summary()]
        out += [f"WARNING: {flag}" for flag in self.flags]
        if self.flags:
            out.append("what to do: " + QUALITY_ADVICE.format(method=method, run=shlex.quote(str(run))))
        out += [f"note: {warning}" for warning in self.warnings]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "step": self.step,
            "flagged": self.flagged,
            "flags": list(self.flags),
            "warnings": list(self.warnings),
            "noise_variance": self.noise_variance,
            "mse_to_noisy": self.mse_to_noisy,
            "estimated_gain_db": self.estimated_gain_db,
            "latent": self.latent,
            "residual": self.residual,
            "risk": self.risk,
            "thresholds": {"collapse_kl_nats_per_pixel": COLLAPSE_KL, "estimated_gain_db": 0.0},
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "QualityReport":
        """Read what :meth:`to_dict` wrote."""
        return cls(
            noise_variance=float(values["noise_variance"]),
            mse_to_noisy=float(values["mse_to_noisy"]),
            estimated_gain_db=None if values.get("estimated_gain_db") is None else float(values["estimated_gain_db"]),
            latent=dict(values.get("latent") or {}),
            residual=dict(values.get("residual") or {}),
            risk=dict(values.get("risk") or {}),
            flags=[str(v) for v in values.get("flags") or []],
            warnings=[str(v) for v in values.get("warnings") or []],
            step=int(values.get("step", 0)),
        )


def estimated_gain(error: float, noise_variance: float) -> float | None:
    """``10 log10(sigma^2 / error)`` in dB, None when either is not positive."""
    if error <= 0 or noise_variance <= 0:
        return None
    return 10.0 * math.log10(noise_variance / error)


@torch.no_grad()
def assess(
    method: Method,
    model: torch.nn.Module,
    val_crops: torch.Tensor,
    direction: str | None,
    device: torch.device,
    step: int = 0,
    seed: int = 0,
) -> QualityReport:
    """Assess a trained model on (up to :data:`MAX_CROPS`) validation crops, without ground truth.

    Parameters
    ----------
    method, model
        The run's method and its networks (put in ``eval()`` mode here).
    val_crops : torch.Tensor
        Normalised validation crops (N, C, [Z,] Y, X).
    direction : {"x", "y", "z", "none"} or None
        The noise direction the run assumed; None: measured on the crops.
    device : torch.device
        Where the model runs.
    step, seed
        Training step (recorded) and the seed of the posterior samples.

    Returns
    -------
    QualityReport
    """
    if len(val_crops) > MAX_CROPS:
        keep = np.round(np.linspace(0, len(val_crops) - 1, MAX_CROPS)).astype(np.int64)
        val_crops = val_crops[torch.from_numpy(keep)]
    model.eval()
    options = PredictOptions(estimator=method.estimators[0], samples=SAMPLES, seed=seed)

    def predict(crops: np.ndarray) -> np.ndarray:
        out = [method.predict(model, batch.to(device), options)[options.estimator].float().cpu()
               for batch in torch.from_numpy(crops).float().split(4)]
        return torch.cat(out).double().numpy()

    noisy = val_crops.double().numpy()
    prediction = predict(noisy)
    noise_variance = estimate_noise_variance(list(noisy), direction or "none")
    mse = float(np.mean((prediction - noisy) ** 2))
    latent = method.diagnostics(model, val_crops.to(device))
    check: ResidualCheck = check_residual(list(noisy), list(prediction), direction)
    risk = _stein_risk(predict, noisy, prediction, check.direction, seed)
    error = sure_error(mse, risk["mean_variance"], risk["divergence"])
    gain = estimated_gain(error, risk["mean_variance"])
    risk["error"] = error

    flags = []
    if "kl" in latent and latent["kl"] < COLLAPSE_KL:
        flags.append(
            f"posterior collapse: the latent carries {latent['kl']:.2g} nats/pixel (under {COLLAPSE_KL}), so the"
            " output holds almost nothing of the image"
        )
    if gain is not None and gain <= 0:
        flags.append(
            f"the output is estimated to be WORSE than the noisy input ({gain:+.1f} dB by Stein's unbiased risk"
            f" estimate, which counts the noise the output keeps; its squared difference to the input is"
            f" {mse / noise_variance:.2f} x the noise variance)"
        )
    warnings = list(check.problems)
    if gain is not None and 0 < gain < SMALL_GAIN_DB:
        warnings.insert(0, f"the estimated gain is only {gain:+.1f} dB (SURE, which has read up to 1.5 dB high on"
                           " striped real images): the output may be no better than the noisy input; compare"
                           " methods (inspect's advice) or train longer")
    if "posterior_variance" in latent:
        latent["posterior_over_noise_variance"] = latent["posterior_variance"] / max(noise_variance, 1e-300)
    return QualityReport(
        noise_variance=noise_variance,
        mse_to_noisy=mse,
        estimated_gain_db=gain,
        latent=latent,
        residual=check.to_dict(),
        risk=risk,
        flags=flags,
        warnings=warnings,
        step=step,
    )


_PROBE_LAGS = 8
_AXES = {"x": -1, "y": -2, "z": -3}


def _planes(images: np.ndarray) -> list[np.ndarray]:
    """(N, C, Y, X) -> N images (C, Y, X); volumes (N, C, Z, Y, X) -> their N * Z planes."""
    if images.ndim == 4:
        return list(images)
    return [image[:, z] for image in images for z in range(image.shape[1])]


def _stein_risk(predict: Any, noisy: np.ndarray, prediction: np.ndarray, direction: str, seed: int) -> dict[str, Any]:
    """The terms of Stein's unbiased risk estimate of ``prediction``'s error (see :mod:`~bmz_cosdd.data.stein_risk`)."""
    levels, variances, _ = noise_variance_by_signal(_planes(noisy), direction, _planes(prediction), bins=16)
    variance = np.maximum(np.interp(prediction, levels, variances), 0.0)
    correlation: list[float] = []
    if direction in _AXES:
        measured = estimate_noise_correlation(list(noisy), max_lag=_PROBE_LAGS)
        if direction in measured.axes:  # not z in stacks too thin to measure it: the probe is independent there
            correlation = [float(v) for v in measured.correlation(direction)]
    axis = _AXES.get(direction, -1)
    divergence = stein_divergence(predict, noisy, prediction, variance, correlation, axis, seed=seed)
    return {"mean_variance": float(np.mean(variance)), "correlation": [round(v, 4) for v in correlation],
            "direction": direction, "divergence": divergence, "probes": PROBES}
