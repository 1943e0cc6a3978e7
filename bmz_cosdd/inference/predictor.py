"""Denoise images with a trained run: load, normalise, predict in tiles, de-normalise, write."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from bmz_cosdd.config import RunConfig
from bmz_cosdd.data.method_noise import ResidualCheck, check_residual
from bmz_cosdd.data.normalisation import NormStats, denormalise, normalise
from bmz_cosdd.errors import UserError
from bmz_cosdd.inference.files import InputFile, read_inputs, write_outputs
from bmz_cosdd.inference.tiling import check_tile, predict_tiled, tile_warning
from bmz_cosdd.methods.base import Method, PredictOptions
from bmz_cosdd.artifacts.run_folder import RunFolder
from bmz_cosdd.training.checkpoints import load_checkpoint
from bmz_cosdd.training.device import resolve_device

# Outputs that are spreads, not intensities: de-normalised by the scale alone.
SCALE_ONLY_OUTPUTS = frozenset({"std"})


@dataclass
class TrainedModel:
    """A trained model ready to predict, with what is needed to interpret its numbers."""

    method: Method
    model: nn.Module
    config: RunConfig
    stats: NormStats
    device: torch.device
    step: int
    source: Path
    training: dict[str, float] = field(default_factory=dict)  # elapsed seconds, best monitored loss, best step
    quality: Any = None  # the run's QualityReport (quality.json) when it has one


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "auto") -> TrainedModel:
    """Load a run folder's ``best`` (or ``last``) checkpoint for prediction.

    The checkpoint is read with ``weights_only=True``: no pickled code runs.

    Parameters
    ----------
    run_dir : str or Path
        A run folder written by ``bmz-cosdd train`` (it may have moved since).
    checkpoint : {"best", "last"}
        Which checkpoint; ``best`` falls back to ``last`` when the run has none yet.
    device : str
        ``auto`` (CUDA if present), ``cpu`` or ``cuda[:i]``.

    Returns
    -------
    TrainedModel
        The method, its network in ``eval()`` mode on ``device``, the run's config and the
        normalisation statistics.

    Raises
    ------
    bmz_cosdd.errors.UserError
        No run folder, no checkpoint, an unknown ``checkpoint`` or ``device``, or weights
        that do not match the recorded architecture.
    """
    from bmz_cosdd.training.session import resolve_config  # session imports the trainer; keep start-up light

    run = RunFolder(run_dir)
    run.check_exists()
    if checkpoint not in ("best", "last"):
        raise UserError(f"unknown checkpoint {checkpoint!r} (use best or last)")
    path = run.best if checkpoint == "best" else run.last
    if not path.is_file():
        fallback = run.last if checkpoint == "best" else None
        if fallback is None or not fallback.is_file():
            raise UserError(f"{run.root} has no checkpoint ({path.relative_to(run.root)} is missing); train it first")
        path = fallback
    values = run.read_config()
    method, config = resolve_config(values)
    state = load_checkpoint(path)
    dev = resolve_device(device)
    stats = NormStats.from_dict(state["stats"])
    # No stats: everything comes from the state dict.
    model = method.build(config.model, int(state["n_channels"]), spatial_dims=config.data.spatial_dims)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path} does not match the architecture in {run.config}: {str(exc).splitlines()[0]}") from None
    model.to(dev).eval()
    return TrainedModel(
        method=method, model=model, config=config, stats=stats,
        device=dev, step=int(state["step"]), source=path,
        training={key: float(state[key]) for key in ("elapsed", "best", "best_step") if key in state},
        quality=read_quality(run),
    )


def read_quality(run: RunFolder) -> Any:
    """The run's :class:`~bmz_cosdd.training.quality.QualityReport`, or None when it has none (older runs)."""
    from bmz_cosdd.training.quality import QualityReport

    values = run.read_quality()
    if values is None:
        return None
    try:
        return QualityReport.from_dict(values)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{run.quality} is damaged ({exc}); retrain or delete it") from None


def predict_image(
    trained: TrainedModel,
    image: np.ndarray,
    options: PredictOptions | None = None,
    tile: int | Sequence[int] = 512,
    seed: int = 0,
    on_tile: Optional[Callable[[int, int], None]] = None,
    say: Optional[Callable[[str], None]] = None,
) -> dict[str, np.ndarray]:
    """Denoise one (C, Y, X) image (or (C, Z, Y, X) volume for a 3-D model) in raw intensities;
    outputs are float32 in raw intensities.

    Parameters
    ----------
    trained
        From :func:`load_run`.
    image
        Raw (C, Y, X) array, (C, Z, Y, X) for a 3-D model, with the model's channel count.
    options
        Estimator and sampling settings (default: MMSE of 100 samples).
    tile
        Largest tile side fed to the network, halo included: one for every spatial axis, or one per
        axis (``(Z, Y, X)`` for a volume model). An image that fits, extended to the network's size step,
        is predicted in one piece without halo (see :mod:`~bmz_cosdd.inference.tiling`).
    seed
        Seeds the posterior sampling, so a prediction is reproducible.
    on_tile
        Called as ``on_tile(done, total)`` after each tile (e.g. a :class:`~bmz_cosdd.inference.tiling.TileProgress`).
    say
        Receives a one-line warning when ``tile`` keeps under half of each tile's side for this image
        (see :func:`~bmz_cosdd.inference.tiling.tile_warning`).

    Returns
    -------
    dict
        e.g. ``mmse`` and ``std`` (C, [Z,] Y, X), ``samples`` (N, C, [Z,] Y, X), or ``direct``.

    Raises
    ------
    UserError
        For a wrong shape, NaN or Inf pixels, or a tile too small to keep anything (the error suggests one that
        keeps at least half of each tile's side).
    """
    options = resolve_options(trained, options)
    dims = trained.config.data.spatial_dims
    if image.ndim != dims + 1 or image.shape[0] != trained.stats.n_channels:
        layout = "(C, Y, X)" if dims == 2 else "(C, Z, Y, X)"
        raise UserError(
            f"the model expects {layout} with {trained.stats.n_channels} channel(s), the image has shape {image.shape}"
        )
    if not np.isfinite(image).all():
        raise UserError(f"the image holds {int((~np.isfinite(image)).sum())} NaN or Inf pixels")
    step, halo = trained.method.size_step(trained.model), trained.method.halo(trained.model)
    check_tile(tile, halo, step, dims)
    warning = tile_warning(image.shape[1:], tile, halo, step)
    if warning is not None and say is not None:
        say(warning)
    normalised = normalise(image.astype(np.float64), trained.stats, spatial_dims=dims)
    run_tile = tile_function(trained, options, seed)
    tiles = {"done": 0}

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        tiles["done"] += 1
        return run_tile(x, tiles["done"] - 1)

    with prediction_context(trained):
        outputs = predict_tiled(run, normalised, tile, halo, step, on_tile)
    return to_raw(trained, outputs)


def resolve_options(trained: TrainedModel, options: PredictOptions | None) -> PredictOptions:
    """``options`` with the method's default estimator filled in, checked (one-line errors)."""
    method = trained.method
    options = options or PredictOptions()
    options = dataclasses.replace(options, estimator=options.estimator or method.estimators[0])
    if options.estimator not in method.estimators:
        raise UserError(
            f"{method.name} has no estimator {options.estimator!r} (choose {', '.join(method.estimators)})"
        )
    if options.samples < 1 or options.sample_batch < 1:
        raise UserError("--samples and --sample-batch must be at least 1")
    return options


def tile_function(
    trained: TrainedModel, options: PredictOptions, seed: int
) -> Callable[[torch.Tensor, int], dict[str, torch.Tensor]]:
    """``run(x, index)``: the method's outputs for one normalised (1, C, [d,] h, w) tile, batch axis dropped.

    Tile ``index`` is sampled with seed ``seed + index``, so no tile repeats
    another's draws (no periodic pattern) and a tile's result does not depend on
    which tiles were predicted before it.
    """
    method, model = trained.method, trained.model
    batch_axis = -(trained.config.data.spatial_dims + 2)

    def run(x: torch.Tensor, index: int) -> dict[str, torch.Tensor]:
        out = method.predict(model, x.to(trained.device), dataclasses.replace(options, seed=seed + index))
        return {k: v.squeeze(batch_axis) for k, v in out.items()}

    return run


@contextlib.contextmanager
def prediction_context(trained: TrainedModel) -> Iterator[None]:
    """Evaluation mode, no gradients, and the caller's random streams left untouched (the sampler seeds)."""
    trained.model.eval()
    devices = [trained.device] if trained.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        yield


def to_raw(trained: TrainedModel, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalised outputs (..., C, [Z,] Y, X) back to raw intensities, float32 (spreads by the scale alone)."""
    dims = trained.config.data.spatial_dims
    std = np.asarray(trained.stats.std, dtype=np.float64).reshape((-1,) + (1,) * dims)
    result = {}
    for name, value in outputs.items():
        if name in SCALE_ONLY_OUTPUTS:
            result[name] = (value.astype(np.float64) * std).astype(np.float32)
        else:
            result[name] = denormalise(value, trained.stats, spatial_dims=dims)
    return result


class ResidualPairs:
    """Noisy images and the main output beside them, kept for the residual check (the first 32).

    Parameters
    ----------
    output
        The name of the output checked (the estimator, e.g. ``mmse`` or ``denoised``).
    """

    limit = 32

    def __init__(self, output: str) -> None:
        self.output = output
        self.noisy: list[np.ndarray] = []
        self.predicted: list[np.ndarray] = []

    def add(self, noisy: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        """Keep one raw (C, [Z,] Y, X) image and its outputs (named as the method returns them)."""
        value = outputs.get(self.output)
        if value is not None and len(self.noisy) < self.limit:
            self.noisy.append(noisy)
            self.predicted.append(value)

    def check(self, direction: str | None = None) -> ResidualCheck | None:
        """The residual check of what was kept (None when nothing was)."""
        if not self.noisy:
            return None
        return check_residual(self.noisy, self.predicted, direction)


def predict_files(
    trained: TrainedModel,
    inputs: Sequence[str | Path],
    axes: str,
    out_dir: str | Path,
    options: PredictOptions | None = None,
    pattern: str = "*",
    tile: int | Sequence[int] = 512,
    seed: int = 0,
    on_image: Optional[Callable[[Path, int, int], None]] = None,
    residual: ResidualPairs | None = None,
    on_tile: Optional[Callable[[int, int], None]] = None,
    say: Optional[Callable[[str], None]] = None,
) -> list[Path]:
    """Denoise every image file in ``inputs`` and write ``<stem>_<output>.tif`` files to ``out_dir``.

    Outputs keep the input's axes; posterior samples get an extra leading ``Q`` axis.
    Each file is written atomically. Returns the written paths; ``residual`` (optional)
    collects images for the residual check; ``on_tile`` and ``say`` as for :func:`predict_inputs`.
    """
    check_out_dir(out_dir)
    loaded = read_inputs(inputs, pattern, axes, trained.stats.n_channels, trained.config.data.spatial_dims)
    return predict_inputs(trained, loaded, out_dir, options, tile, seed, on_image, residual=residual, on_tile=on_tile,
                          say=say)


def check_out_dir(out_dir: str | Path) -> None:
    """Refuse an ``--out`` that exists and is not a folder (before anything is predicted)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")


# Called per input file with its outputs (name -> one array per 2-D image); returns the paths it wrote.
OnOutputs = Callable[[InputFile, dict[str, list[np.ndarray]]], list[Path]]


def predict_inputs(
    trained: TrainedModel,
    loaded: Sequence[InputFile],
    out_dir: str | Path,
    options: PredictOptions | None = None,
    tile: int | Sequence[int] = 512,
    seed: int = 0,
    on_image: Optional[Callable[[Path, int, int], None]] = None,
    on_outputs: Optional[OnOutputs] = None,
    skip_outputs: Collection[str] = (),
    residual: ResidualPairs | None = None,
    on_tile: Optional[Callable[[int, int], None]] = None,
    say: Optional[Callable[[str], None]] = None,
) -> list[Path]:
    """Denoise files already read by :func:`read_inputs`; write every output not in ``skip_outputs``.

    ``on_outputs`` sees each file's outputs (all of them, skipped ones included)
    after they are written, and returns the paths it wrote itself; ``residual``
    keeps images for the residual check; ``on_tile(done, total)`` follows the tiles
    of each image; ``say`` gets the first wasteful-tile warning (once per call).
    """
    warned: list[str] = []

    def say_once(line: str) -> None:
        if say is not None and not warned:
            warned.append(line)
            say(line)

    written = []
    for index, item in enumerate(loaded):
        per_output: dict[str, list[np.ndarray]] = {}
        for sample in item.samples:
            outputs = predict_image(trained, sample, options, tile, seed, on_tile=on_tile, say=say_once)
            if residual is not None:
                residual.add(sample, outputs)
            for name, value in outputs.items():
                per_output.setdefault(name, []).append(value)
        kept = {name: values for name, values in per_output.items() if name not in skip_outputs}
        written += write_outputs(out_dir, item, kept)
        if on_outputs is not None:
            written += on_outputs(item, per_output)
        if on_image is not None:
            on_image(item.path, index + 1, len(loaded))
    return written
