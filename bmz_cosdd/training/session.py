"""From a configuration to a trained run folder: data, split, statistics, model, trainer."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bmz_cosdd import __version__
from bmz_cosdd.artifacts.run_folder import RunFolder, RunSample, package_grid, settings_from_record
from bmz_cosdd.config import RunConfig, from_dict, DataConfig, TrainConfig
from bmz_cosdd.data.axes import per_axis
from bmz_cosdd.data.crops import RandomCrops, fixed_val_crops
from bmz_cosdd.data.io import Image, load_images
from bmz_cosdd.data.normalisation import NormStats, compute_stats, normalise
from bmz_cosdd.data.splits import split_images
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.base import Budget, Method
from bmz_cosdd.methods.registry import get_method
from bmz_cosdd.training.checkpoints import load_checkpoint
from bmz_cosdd.training.device import device_type, resolve_device
from bmz_cosdd.training.distributed import World, distributed_world
from bmz_cosdd.training.quality import QualityReport, assess
from bmz_cosdd.training.trainer import TrainResult, Trainer
from bmz_cosdd.threads import threads_in_use

# Settings that may change when a run is resumed (they do not alter what was learnt so far).
LIMITS = ("max_steps", "max_epochs", "max_time")
RESUMABLE = (*LIMITS, "patience", "device")


def build_config(values: dict[str, Any]) -> RunConfig:
    """Resolve a mapping shaped like ``config.yaml`` into a checked :class:`RunConfig`.

    Parameters
    ----------
    values : dict
        ``method`` and the optional sections ``model``, ``data`` and ``train`` (a run's own
        ``config.yaml`` is accepted too); missing settings take the method's defaults.

    Returns
    -------
    RunConfig

    Raises
    ------
    bmz_cosdd.errors.UserError
        An unknown section, method or setting, or a refused value (one line naming the field).
    """
    return resolve_config(values)[1]


def training_budget(train: TrainConfig, data: DataConfig) -> Budget:
    """The run's limits as a :class:`~bmz_cosdd.methods.base.Budget` (for settings chosen by budget)."""
    steps = [s for s in (train.max_steps, train.max_epochs and train.max_epochs * train.steps_per_epoch) if s]
    return Budget(seconds=train.max_time, steps=min(steps) if steps else None, batch_size=train.batch_size,
                  crop_size=data.crop_size)


def resolve_config(values: dict[str, Any], method: Method | None = None) -> tuple[Method, RunConfig]:
    """The run's method and its checked :class:`RunConfig`, from a mapping shaped like ``config.yaml``.

    ``method``, when the caller has resolved it already, must be the one ``values`` names; the
    method is otherwise looked up here, once per run.

    Raises
    ------
    bmz_cosdd.errors.UserError
        An unknown section, method or setting, or a value a settings class refuses (one line
        naming the field; see :func:`bmz_cosdd.config.from_dict`).
    """
    values = settings_from_record(values)  # a run's own config.yaml is a valid --config
    unknown = sorted(set(values) - {"method", "model", "data", "train"})
    if unknown:
        raise UserError(f"unknown config section{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    if not values.get("method"):
        raise UserError("no method given (e.g. method: cosdd)")
    for section in ("model", "data", "train"):
        if values.get(section) is not None and not isinstance(values[section], dict):
            raise UserError(f"config section {section} must be a mapping of settings, got {values[section]!r}")
    if method is None or method.name != values["method"]:
        method = get_method(values["method"])
    user_train = values.get("train") or {}
    defaults = dict(method.train_defaults)
    if any(user_train.get(name) is not None for name in LIMITS):
        defaults.update(dict.fromkeys(LIMITS))  # the user's limits replace the default training length
    train_values = {**defaults, **user_train}
    train = from_dict(TrainConfig, train_values, "train.")
    data = from_dict(DataConfig, values.get("data"), "data.")
    config = RunConfig(
        method=method.name,
        model=method.config_from_dict(values.get("model") or {}, device=device_type(train.device),
                                      budget=training_budget(train, data)),
        data=data,
        train=train,
    )
    if not config.data.paths:
        raise UserError("no training data given (pass DATA paths or data.paths in the config file)")
    if config.data.spatial_dims != 3:
        given = [name for name in ("z_pool", "z_kernel", "z_halo", "direct_z_pool", "direct_z_kernel")
                 if getattr(config.model, name, None) is not None]
        if given:
            raise UserError(f"model.{given[0]} is for volumes; add --spatial-dims 3 or drop it")
    step = method.yx_size_step(config.model)
    if config.data.crop_size % step:
        raise UserError(f"data.crop_size ({config.data.crop_size}) must be a multiple of {step} for this"
                        " architecture")
    return method, config


def crop_shape(data: DataConfig) -> tuple[int, ...]:
    """Size of the training crops along each spatial axis: (Y, X) or (Z, Y, X)."""
    if data.spatial_dims == 3:
        return (data.crop_depth or data.crop_size, data.crop_size, data.crop_size)
    return (data.crop_size, data.crop_size)


@dataclass
class PreparedData:
    """Normalised training and validation data of a run."""

    stats: NormStats
    train: list[Image]
    val: list[Image]
    split: dict[str, Any]
    n_channels: int
    sample_source: Image | None = None  # the first validation image, raw, for the package's test image


def prepare_data(data: DataConfig, seed: int, stats: NormStats | None = None) -> PreparedData:
    """Load, split and normalise the images; statistics come from the training part only."""
    images = load_images(data.paths, data.pattern, data.axes, data.spatial_dims)
    channels = {im.data.shape[0] for im in images}
    if len(channels) > 1:
        raise UserError(f"images disagree in channel count: {sorted(channels)}")
    split = split_images(images, data.val_fraction, seed, data.crop_size)
    if stats is None:
        clip = tuple(data.clip_percentiles) if data.clip_percentiles is not None else None
        stats = compute_stats([im.data for im in split.train], clip)
    n_channels = channels.pop()
    if stats.n_channels != n_channels:
        raise UserError(f"the statistics have {stats.n_channels} channels but the images have {n_channels}")

    def norm(items: list[Image]) -> list[Image]:
        return [Image(data=normalise(im.data, stats, spatial_dims=data.spatial_dims), source=im.source) for im in items]

    return PreparedData(stats, norm(split.train), norm(split.val), split.description, n_channels,
                        split.val[0] if split.val else None)


def train(
    config: RunConfig | dict[str, Any],
    run_dir: str | Path,
    progress: bool = True,
    init_from: str | Path | None = None,
    say: Callable[[str], None] | None = None,
    check_code: Callable[[Path], None] | None = None,
    method: Method | None = None,
) -> TrainResult:
    """Train a new run in ``run_dir`` (which must not hold a run already).

    Parameters
    ----------
    config
        A :class:`RunConfig` or a mapping shaped like ``config.yaml``.
    run_dir
        Folder for the config, statistics, split, checkpoints and metrics.
    progress
        Show a progress bar.
    init_from
        A package made by ``bmz-cosdd package``: training continues from its weights,
        with its architecture and normalisation statistics (fine-tuning on new data).
    say
        Receives the lines in which the method tells what it chose from the data (e.g. an
        automatic blind mask); default: standard error. They are also kept in ``notes.txt``.
    check_code
        With ``init_from``: called with the package's path before its training state is read;
        raises :class:`~bmz_cosdd.errors.UserError` to refuse a package whose Python bmz-cosdd
        did not write (the API passes :func:`bmz_cosdd.export.package_trust.require_trusted_code`
        with the user's ``--trust-code``). Only the package's ``training_state.pt`` is read
        (tensors, ``weights_only=True``) and none of its Python runs; files named outside the
        package are refused always (:func:`bmz_cosdd.artifacts.package_reader.read_training_state`).
    method
        The method ``config`` names, when the caller has resolved it (looked up otherwise).

    Returns
    -------
    TrainResult
        Steps, epochs, the best validation loss, why training stopped (``"interrupted"`` after
        Ctrl-C, with a checkpoint saved), seconds, steps per second and the quality report of
        the best checkpoint (:mod:`bmz_cosdd.training.quality`).

    Raises
    ------
    bmz_cosdd.errors.UserError
        Bad settings (one line naming the field), unreadable data, ``run_dir`` holding a run or
        used by another process, or a package that ``check_code`` refuses.
    bmz_cosdd.errors.TrainingDiverged
        The loss became NaN or infinite, or the method stopped a failed run (e.g. posterior
        collapse); the last good checkpoint is kept.

    Notes
    -----
    Under ``torchrun`` every process calls this; rank 0 alone writes the run folder
    (see :mod:`bmz_cosdd.training.distributed`).
    """
    init_state = None
    if init_from is not None:
        from bmz_cosdd.artifacts.package_reader import read_training_state

        init_state = read_training_state(init_from, check_code=check_code)
        values = config.to_dict() if isinstance(config, RunConfig) else dict(config)
        if values.get("method") != init_state["method"]:
            raise UserError(f"the package holds a {init_state['method']} model, not {values.get('method')}")
        values["model"] = init_state["config"]["model"]
        config = values
    if isinstance(config, RunConfig):
        method = method if method is not None and method.name == config.method else get_method(config.method)
    else:
        method, config = resolve_config(config, method)
    run = RunFolder(run_dir)
    run.check_new()
    stats = NormStats.from_dict(init_state["stats"]) if init_state is not None else None
    data = prepare_data(config.data, config.train.seed, stats=stats)
    model_config, notes = method.resolve_config(
        config.model, config.data, [im.data for im in data.train], data.stats
    )
    config = dataclasses.replace(config, model=model_config)
    say = say or (lambda line: print(line, file=sys.stderr))
    count, why = threads_in_use()
    notes = [*notes, f"threads: {count} ({why})"]

    def start() -> None:  # once every check has passed, in the process that writes the run
        run.check_new()  # again, now that this process holds the folder
        for line in notes:
            say(line)
        run.write_notes(notes)
        run.write_config(config.to_dict(), __version__)
        run.write_stats(data.stats)
        run.write_split(data.split)

    return _fit(config, method, run, data, progress, resume_state=None, init_state=init_state, action="bmz-cosdd train",
                start=start)


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None, progress: bool = True) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly as if never stopped.

    The run may have moved since it started: its training data are found where the paths
    were typed (relative to the current working directory) or, failing that, where they
    were when the run started. Model weights, optimiser, scheduler and random states come
    from ``checkpoints/last``, so the steps after the resume are those an uninterrupted
    run would have taken.

    Parameters
    ----------
    run_dir : str or Path
        The run folder to continue.
    overrides : dict, optional
        Only :data:`RESUMABLE` settings: longer limits (``max_steps``, ``max_epochs``,
        ``max_time``), ``patience`` or ``device``.
    progress : bool
        Show the progress bar.

    Returns
    -------
    TrainResult

    Raises
    ------
    bmz_cosdd.errors.UserError
        No run or no checkpoint in ``run_dir``, another process writes to it, an override
        that cannot change on resume, or training data no longer found.
    """
    run = RunFolder(run_dir)
    values = run.read_config()
    run.check_not_in_use()
    if not run.last.is_file():
        raise UserError(f"{run.root} has no checkpoint to resume from ({run.last} is missing)")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    bad = sorted(set(overrides) - set(RESUMABLE))
    if bad:
        raise UserError(f"cannot change {', '.join(bad)} when resuming (only {', '.join(RESUMABLE)})")
    values.setdefault("train", {}).update(overrides)
    method, config = resolve_config(values)
    data = prepare_data(config.data, config.train.seed, stats=run.read_stats())
    state = load_checkpoint(run.last)
    return _fit(config, method, run, data, progress, resume_state=state, action="bmz-cosdd train --resume",
                start=lambda: run.write_config(config.to_dict(), __version__))


def _fit(
    config: RunConfig,
    method: Method,
    run: RunFolder,
    data: PreparedData,
    progress: bool,
    resume_state: dict[str, Any] | None,
    init_state: dict[str, Any] | None = None,
    action: str = "bmz-cosdd train",
    start: Callable[[], None] | None = None,
) -> TrainResult:
    """Set up (every check that can fail on the user's settings), then hold the run folder, ``start()``
    (write the run's settings) and train; under torchrun rank 0 alone holds and writes the folder."""
    device = resolve_device(config.train.device)
    with distributed_world(device) as world:
        setup = _setup(config, method, data, init_state, world.device(device))
        if not world.is_main:
            return _train(config, run, data, progress, resume_state, setup, world)
        with run.lock(action):
            if start is not None:
                start()
            return _train(config, run, data, progress, resume_state, setup, world)


@dataclass
class _Setup:
    """A model ready to train and its data, built before anything is written."""

    method: Any
    model: torch.nn.Module
    step: tuple[int, ...]  # per spatial axis: (Y, X) or (Z, Y, X)
    crops: RandomCrops
    val_crops: torch.Tensor
    device: torch.device


def _setup(config: RunConfig, method: Method, data: PreparedData, init_state: dict[str, Any] | None,
           device: torch.device) -> _Setup:
    torch.manual_seed(config.train.seed)
    model = method.build(config.model, data.n_channels, data.stats, config.data.spatial_dims)
    if init_state is not None:
        try:
            model.load_state_dict(init_state["model"])
        except RuntimeError as exc:
            raise UserError(f"the package's weights do not fit its architecture: {str(exc).splitlines()[0]}") from None
    model = model.to(device)
    shape = crop_shape(config.data)
    step = per_axis(method.size_step(model), len(shape))
    if config.data.crop_size % step[-1]:
        raise UserError(
            f"data.crop_size ({config.data.crop_size}) must be a multiple of {step[-1]} for this architecture"
        )
    if shape[0] % step[0]:
        raise UserError(f"data.crop_depth ({shape[0]}) must be a multiple of {step[0]} for this architecture")
    generator = torch.Generator().manual_seed(config.train.seed + 1)
    crops = RandomCrops(data.train, shape, generator)
    val_crops = fixed_val_crops(data.val, shape, config.data.val_crops)
    return _Setup(method, model, step, crops, val_crops, device)


def _train(config: RunConfig, run: RunFolder, data: PreparedData, progress: bool,
           resume_state: dict[str, Any] | None, setup: _Setup, world: World) -> TrainResult:
    method, model, device = setup.method, setup.model, setup.device
    extra = {
        "method": config.method,
        "config": config.to_dict(),
        "stats": data.stats.to_dict(),
        "n_channels": data.n_channels,
        "bmz_cosdd_version": __version__,
    }
    if world.is_main and data.sample_source is not None:
        size_min = package_grid(method.halo(model), setup.step)[1]
        run.write_sample(package_sample(data.sample_source, setup.step, size_min, config.data.spatial_dims))
    trainer = Trainer(method, model, config.train, run, setup.crops, setup.val_crops, device, extra, progress, world)
    result = trainer.fit(resume_state)
    if world.is_main and result.stopped != "interrupted":
        result.quality = assess_run(method, model, run, setup.val_crops, device, config.train.seed,
                                    noise_direction(config.model))
    return result


def assess_run(
    method: Any, model: torch.nn.Module, run: RunFolder, val_crops: torch.Tensor, device: torch.device, seed: int,
    direction: str | None = None,
) -> QualityReport | None:
    """Assess the run's best checkpoint without ground truth and write ``quality.json`` (see
    :mod:`bmz_cosdd.training.quality`); None when no checkpoint was written."""
    path = run.best if run.best.is_file() else run.last
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    report = assess(method, model, val_crops, direction, device, step=int(state["step"]), seed=seed)
    run.write_quality(report.to_dict())
    return report


#: Largest side of the package's test image: 256 px for images; 64 for volumes, whose 100-sample
#: validation on a CPU would otherwise take minutes.
SAMPLE_SIDE = {2: 256, 3: 64}


def package_sample(image: Image, size_step: int | Sequence[int], size_min: int | Sequence[int],
                   spatial_dims: int) -> RunSample:
    """The image a package of this model is tested with: a centred crop of a raw validation image.

    Every side is a multiple of ``size_step``, at least the package's minimum size ``size_min``
    (:func:`~bmz_cosdd.artifacts.run_folder.package_grid`) and at most :data:`SAMPLE_SIDE`; both
    are one value or one per spatial axis (an anisotropic volume model's Z differs from Y and X).
    A validation image smaller than the minimum is extended by reflection (``numpy.pad`` mode
    ``symmetric``) and the sample says so.
    """
    steps, mins = per_axis(size_step, spatial_dims), per_axis(size_min, spatial_dims)
    window, pads = [slice(None)], [(0, 0)]
    for extent, step, low in zip(image.data.shape[1:], steps, mins):
        limit = max(low, SAMPLE_SIDE[spatial_dims] // step * step)
        usable = extent // step * step
        size = min(max(usable, low), limit)
        if extent >= size:
            start = (extent - size) // 2
            window.append(slice(start, start + size))
            pads.append((0, 0))
        else:
            window.append(slice(None))
            pads.append(((size - extent) // 2, size - extent - (size - extent) // 2))
    crop = np.asarray(image.data[tuple(window)], dtype=np.float32)
    padded = any(p != (0, 0) for p in pads)
    if padded:
        crop = np.pad(crop, pads, mode="symmetric")
    return RunSample(image=np.ascontiguousarray(crop), source=image.source, axes="CYX" if spatial_dims == 2 else "CZYX",
                     padded=padded)


def noise_direction(model_config: Any) -> str | None:
    """The noise direction a run's settings name (COSDD's ``direction``), None when they name none or ``auto``.

    The residual check then measures it on the images.
    """
    direction = getattr(model_config, "direction", None)
    return direction if direction in ("x", "y", "z", "none") else None
