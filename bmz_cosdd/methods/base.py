"""The small surface every method offers (a Protocol, not a class tree).

The trainer, the predictor, the API (and through it the CLI) and the exporter only talk to a
method through this surface and find it in :mod:`bmz_cosdd.methods.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from bmz_cosdd.config import DataConfig
    from bmz_cosdd.data.noise_correlation import NoiseCorrelation
    from bmz_cosdd.data.normalisation import NormStats


@dataclass(frozen=True)
class Budget:
    """How long a run may train, and the work of one step.

    Parameters
    ----------
    seconds
        ``max_time`` in seconds of training, or None.
    steps
        The optimiser steps the limits allow (``max_steps``, or ``max_epochs`` times
        ``steps_per_epoch``, the smaller), or None.
    batch_size, crop_size
        Crops per step and their Y/X extent in pixels.
    """

    seconds: float | None = None
    steps: int | None = None
    batch_size: int = 4
    crop_size: int = 64

    def describe(self) -> str:
        parts = ([f"{self.seconds:g} s"] if self.seconds is not None else []) + (
            [f"{self.steps} steps"] if self.steps is not None else [])
        return " or ".join(parts) or "no limit"


@dataclass(frozen=True)
class CliOption:
    """One ``train`` setting a user may give on the command line, as plain data.

    The CLI turns it into an option ``--name`` (underscores as dashes) whose default,
    ``None``, means "not given"; nothing below the CLI knows how options are parsed.

    Parameters
    ----------
    name
        The setting's key in its config section (``model`` for a method's own options),
        e.g. ``n_levels``.
    type
        The value's type: ``int``, ``float``, ``str`` or ``bool``.
    help
        One sentence for ``--help``.
    panel
        The help panel it is listed under, e.g. the method's title.
    """

    name: str
    type: type
    help: str
    panel: str


@dataclass
class OptimiserSpec:
    """One optimiser with its plateau scheduler and the validation metric that drives it."""

    name: str
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    monitor: str


@dataclass
class PredictOptions:
    """How a prediction is made.

    Parameters
    ----------
    estimator
        A name from the method's ``estimators`` (e.g. ``mmse`` or ``direct``); ``None``:
        the method's first.
    samples
        Posterior samples averaged by stochastic estimators.
    sample_batch
        Samples decoded at once (memory against speed).
    keep_samples
        Also return the individual samples.
    seed
        Seed of the posterior draws (the same seed gives the same result).
    """

    estimator: str | None = None
    samples: int = 100
    sample_batch: int = 10
    keep_samples: bool = False
    seed: int = 0


class Method(Protocol):
    """What a denoising method provides.

    Attributes
    ----------
    name
        Registry key and CLI name, e.g. ``cosdd``.
    summary
        One line for ``--help`` and the README.
    monitor
        Validation loss used for early stopping and the best checkpoint.
    estimators
        Names accepted by ``PredictOptions.estimator``; the first is the default.
    train_defaults
        Training settings (``train.*``) this method defaults to, e.g. its learning rate;
        the user's values override them.
    """

    name: str
    summary: str
    monitor: str
    estimators: tuple[str, ...]
    train_defaults: dict[str, Any]

    def config_from_dict(self, values: dict[str, Any], device: str = "cpu", budget: Budget | None = None) -> Any:
        """Build the method's settings (a dataclass) from a mapping, presets resolved.

        ``device`` (``cpu`` or ``cuda``) is where the run trains and ``budget`` how long it
        may, for settings chosen by hardware and time (COSDD's ``--preset auto``); None: the
        method's default training length.
        """

    def cli_options(self) -> list[CliOption]:
        """The method's own settings of ``bmz-cosdd train NAME`` (keys of the ``model`` section), as plain data."""

    def resolve_config(
        self, config: Any, data: "DataConfig", train_images: Sequence[np.ndarray], stats: "NormStats"
    ) -> tuple[Any, list[str]]:
        """Settings that depend on the data, resolved once before a new run starts.

        ``train_images`` are the normalised (C, Y, X) training images and ``stats`` their
        normalisation. Returns the resolved settings (written to the run's
        ``config.yaml``) and lines telling the user what was chosen and why.
        """

    def advise(self, noise: "NoiseCorrelation", crop_size: int) -> str:
        """This method's settings (or suitability) for noise with the measured correlation.

        Used by ``bmz-cosdd inspect``; one line, e.g. ``--direction x``.
        """

    def diagnostics(self, model: nn.Module, batch: torch.Tensor) -> dict[str, Any]:
        """Figures on what a latent-variable model carries for a normalised batch (``kl``, ``kl_levels``,
        ``signal_explained_variance``, ``posterior_variance``; see :mod:`bmz_cosdd.training.quality`);
        empty for deterministic methods."""

    def check_validation(self, model: nn.Module, losses: dict[str, float], step: int) -> None:
        """Raise :class:`~bmz_cosdd.errors.TrainingDiverged` when the validation losses show
        that training failed in a way the user must act on (e.g. posterior collapse)."""

    def build(
        self, config: Any, n_channels: int, stats: "NormStats | None" = None, spatial_dims: int = 2
    ) -> nn.Module:
        """Create the networks for images with ``n_channels`` channels and ``spatial_dims``
        spatial axes (2: Y, X; 3: Z, Y, X), stored as the model's ``spatial_dims``.

        ``stats`` (the training normalisation) is given when a run starts; a model
        built without it gets the values it needs from its state dict.
        """

    def yx_size_step(self, config: Any) -> int:
        """The y/x size step of the network ``config`` describes, known before it is built (crop sizes
        must be multiples of it)."""

    def size_step(self, model: nn.Module) -> int | tuple[int, ...]:
        """Spatial sizes the model accepts are multiples of this: one value, or one per spatial axis
        ((Y, X), or (Z, Y, X) for volumes, where an anisotropic network's z step is smaller)."""

    def halo(self, model: nn.Module) -> int | tuple[int, ...]:
        """Context in pixels each side of a tile that prediction should add: one value, or one per
        spatial axis (as :meth:`size_step`)."""

    def training_losses(
        self, model: nn.Module, batch: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Losses for a normalised batch (B, C, [Z,] Y, X); ``loss`` is back-propagated, all are logged.

        ``generator`` (CPU, seeded from the config, checkpointed) drives the method's own
        training randomness, such as blind-spot masks.
        """

    def optimisers(self, model: nn.Module, lr: float, factor: float, patience: int) -> list[OptimiserSpec]:
        """The optimisers (each with its scheduler) that update the model."""

    def export(self, model: nn.Module, config: Any, options: "ExportOptions") -> "ExportedModel":
        """The scriptable inference module of a trained model, for packaging."""

    def predict(self, model: nn.Module, x: torch.Tensor, options: PredictOptions) -> dict[str, torch.Tensor]:
        """Denoise a normalised batch (B, C, [Z,] Y, X).

        Returns named outputs whose last axes are the spatial ones, e.g. ``mmse`` and
        ``std`` (B, C, [Z,] Y, X) and ``samples`` (N, B, C, [Z,] Y, X).
        """


@dataclass
class ExportOptions:
    """What an exported (packaged) model computes.

    Parameters
    ----------
    estimator
        A name from the method's ``estimators`` (``None``: the method's first).
    outputs
        Outputs of a sampling model, e.g. ``("mmse",)``, ``("mmse", "std")`` or
        ``("mmse", "std", "samples")`` (``None``: the estimator's one main output);
        deterministic estimators have one output.
    samples, sample_batch, seed
        Fixed at export: the packaged model is deterministic.
    """

    estimator: str | None = None
    outputs: tuple[str, ...] | None = None
    samples: int = 100
    sample_batch: int = 10
    seed: int = 0


@dataclass
class ExportedModel:
    """A scriptable inference module and what a package needs to describe it.

    ``module`` takes a normalised (B, C, Y, X) input, or (B, C, Z, Y, X) when
    ``spatial_dims`` is 3, whose spatial sizes are multiples of ``size_step`` (``size_step``
    and ``halo``: one value, or one per spatial axis), and
    returns ``outputs`` in normalised units; ``builder`` called with
    ``builder_kwargs`` rebuilds it (for state-dict weights), and ``source_modules``
    (dependencies first) hold everything ``builder`` needs. ``card`` names the model-card
    template in ``model_cards/`` (or a list: the card, then sections it includes by
    their file stem) that ``card_fields`` fill in.
    """

    module: nn.Module
    outputs: list[str]
    builder: Any
    builder_kwargs: dict[str, Any]
    source_modules: list[Any]
    size_step: int | tuple[int, ...]
    halo: int | tuple[int, ...]
    n_samples: int | None
    cite: list[tuple[str, str]]
    tags: list[str]
    card: str | list[str]
    card_fields: dict[str, str]
    spatial_dims: int = 2
