"""``bmz-cosdd noise-model fit`` below the API: its checks, and (signal, observation) pairs -> model file + plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bmz_cosdd.errors import UserError
from bmz_cosdd.noise_models.base import check_percentiles, plot_noise_model, save_noise_model
from bmz_cosdd.noise_models.gmm import GMMNoiseModel, fit_gmm
from bmz_cosdd.noise_models.histogram import HistogramNoiseModel, fit_histogram
from bmz_cosdd.noise_models.sources import Pairs

KINDS = ("gmm", "histogram")


@dataclass
class FitResult:
    """What ``fit_noise_model`` wrote and what the user should know."""

    model: GMMNoiseModel | HistogramNoiseModel
    path: Path
    plot: Path
    warnings: list[str] = field(default_factory=list)


def check_fit_request(out: Path, kind: str, calibration: object, bootstrap: object, inputs: Sequence[object],
                      percentiles: tuple[float, float]) -> tuple[float, float]:
    """Refuse a bad ``noise-model fit`` request before any (possibly slow) prediction.

    Returns the checked percentiles; raises :class:`~bmz_cosdd.errors.UserError` for an ``out``
    that is not ``.npz``, an unknown ``kind``, neither or both of ``calibration`` and
    ``bootstrap``, or ``inputs`` that do not fit the source.
    """
    if out.suffix != ".npz":
        raise UserError(f"--out must name a .npz file, got {out}")
    if kind not in KINDS:
        raise UserError(f"unknown noise model kind {kind!r} (choose {' or '.join(KINDS)})")
    if (calibration is None) == (bootstrap is None):
        raise UserError("give either --calibration STACK or --bootstrap RUN_OR_PACKAGE with the noisy images")
    if calibration is not None and inputs:
        raise UserError("--calibration takes no DATA arguments (the stack is the data)")
    if bootstrap is not None and not inputs:
        raise UserError("--bootstrap needs the noisy images to denoise (DATA arguments)")
    return check_percentiles(percentiles)


def fit_to_file(
    pairs: Pairs,
    out: Path,
    kind: str = "gmm",
    n_gaussians: int = 3,
    n_coeffs: int = 2,
    min_sigma: float | None = None,
    bins: int = 256,
    percentiles: tuple[float, float] = (0.5, 99.5),
    steps: int = 2000,
    seed: int = 0,
) -> FitResult:
    """Fit a pixel noise model to ``pairs`` and write it (``.npz``) with its plot (``.png`` beside it).

    The options are those of :func:`bmz_cosdd.api.fit_noise_model`, which checks them
    (:func:`check_fit_request`) and finds the pairs.
    """
    if kind == "gmm":
        model = fit_gmm(pairs.signal, pairs.observation, n_gaussians=n_gaussians, n_coeffs=n_coeffs,
                        min_sigma=min_sigma, percentiles=percentiles, steps=steps, seed=seed)
    else:
        model = fit_histogram(pairs.signal, pairs.observation, bins=bins, percentiles=percentiles)
    model.info = {**model.info, **pairs.info, "n_pairs": int(pairs.signal.size)}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_noise_model(model, out)
    plot = out.with_suffix(".png")
    plot_noise_model(model, plot, pairs.signal, pairs.observation)
    return FitResult(model, out, plot, list(pairs.warnings))
