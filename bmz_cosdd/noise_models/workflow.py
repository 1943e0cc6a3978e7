"""``bmz-cosdd noise-model fit``: pairs from a calibration stack or a first denoiser -> model file + plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bmz_cosdd.errors import UserError
from bmz_cosdd.noise_models.base import check_percentiles, plot_noise_model, save_noise_model
from bmz_cosdd.noise_models.gmm import GMMNoiseModel, fit_gmm
from bmz_cosdd.noise_models.histogram import HistogramNoiseModel, fit_histogram
from bmz_cosdd.noise_models.sources import bootstrap_pairs, calibration_pairs

KINDS = ("gmm", "histogram")


@dataclass
class FitResult:
    """What ``fit_noise_model`` wrote and what the user should know."""

    model: GMMNoiseModel | HistogramNoiseModel
    path: Path
    plot: Path
    warnings: list[str] = field(default_factory=list)


def fit_noise_model(
    out: str | Path,
    calibration: str | Path | None = None,
    bootstrap: str | Path | None = None,
    inputs: Sequence[str | Path] = (),
    axes: str | None = None,
    pattern: str = "*",
    kind: str = "gmm",
    n_gaussians: int = 3,
    n_coeffs: int = 2,
    min_sigma: float | None = None,
    bins: int = 256,
    percentiles: tuple[float, float] = (0.5, 99.5),
    steps: int = 2000,
    seed: int = 0,
) -> FitResult:
    """Fit a pixel noise model and write it (``.npz``) with its plot (``.png`` beside it).

    Parameters
    ----------
    out
        The model file to write (``.npz``); the plot goes to the same name with ``.png``.
    calibration
        A stack of frames of a static scene (signal = their average), or
    bootstrap, inputs
        a run folder or package of any method and the noisy images it denoises (signal =
        its prediction).
    axes
        Axes of the calibration stack (default ``TYX``) or of the noisy images (default ``YX``).
    kind
        ``gmm`` (Gaussian mixture, polynomials of the signal) or ``histogram``.
    percentiles
        The signal range the model covers; signals outside it are clipped to it.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise UserError(f"--out must name a .npz file, got {out}")
    if kind not in KINDS:
        raise UserError(f"unknown noise model kind {kind!r} (choose {' or '.join(KINDS)})")
    if (calibration is None) == (bootstrap is None):
        raise UserError("give either --calibration STACK or --bootstrap RUN_OR_PACKAGE with the noisy images")
    percentiles = check_percentiles(percentiles)  # before any (possibly slow) prediction
    if calibration is not None:
        if inputs:
            raise UserError("--calibration takes no DATA arguments (the stack is the data)")
        pairs = calibration_pairs(calibration, axes or "TYX")
    else:
        if not inputs:
            raise UserError("--bootstrap needs the noisy images to denoise (DATA arguments)")
        pairs = bootstrap_pairs(bootstrap, inputs, axes or "YX", pattern)
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
