"""Pixel noise models p(x | s) for DivNoising and HDN.

:class:`GMMNoiseModel` (a Gaussian mixture whose parameters are polynomials of
the signal) and :class:`HistogramNoiseModel` (a tabulated density) work in raw
units; :class:`NormalisedNoiseModel` evaluates either on normalised data.
Fit them with :func:`fit_gmm` / :func:`fit_histogram` from (signal, observation)
pairs, store them with :func:`save_noise_model` / :func:`load_noise_model` and
inspect them with :func:`plot_noise_model`.
"""

from __future__ import annotations

from bmz_cosdd.noise_models.base import (
    NormalisedNoiseModel,
    load_noise_model,
    plot_noise_model,
    prepare_pairs,
    save_noise_model,
)
from bmz_cosdd.noise_models.gmm import GMMNoiseModel, fit_gmm
from bmz_cosdd.noise_models.histogram import HistogramNoiseModel, fit_histogram

__all__ = [
    "GMMNoiseModel",
    "HistogramNoiseModel",
    "NormalisedNoiseModel",
    "fit_gmm",
    "fit_histogram",
    "load_noise_model",
    "plot_noise_model",
    "prepare_pairs",
    "save_noise_model",
]
