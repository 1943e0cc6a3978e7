"""The Python API: every verb of the CLI, as a function (the CLI parses, calls one of these, prints).

=========================  ====================================================================
CLI verb                   API
=========================  ====================================================================
``train METHOD``           :func:`train_from_options` (defaults < YAML < options, or resume);
                           :func:`train` and :func:`resume` take a whole config mapping
``predict``                :func:`predict` (chooses among :func:`predict_run`,
                           :func:`predict_package` and :func:`predict_out_of_core`)
``package``                :func:`package` with :func:`package_meta`
``validate``               :func:`validate`
``check``                  :func:`check`
``upload``                 :func:`prepare_upload`, then :func:`upload`
``inspect``                :func:`inspect`
``evaluate``               :func:`evaluate` (and :func:`save_scores`)
``noise-model fit``        :func:`fit_noise_model`
``demo``                   :func:`demo`
=========================  ====================================================================

Functions that talk while they work take ``say``, a callable that receives one line at a time
(default: standard error, unless a function says otherwise).

Examples
--------
What ``bmz-cosdd train n2v noisy/ --axes SYX --max-steps 500`` trains, as a config mapping:

>>> from bmz_cosdd import api
>>> api.train_config("n2v", ["noisy/"], axes="SYX", max_steps=500)
{'method': 'n2v', 'model': {}, 'data': {'paths': ['noisy/'], 'axes': 'SYX'}, 'train': {'max_steps': 500}}
>>> [option.name for option in api.train_options("cosdd")][:3]
['axes', 'pattern', 'crop_size']

The others are not run as doctests: they need images, a trained run or a package, and take
seconds to minutes (``tests/`` runs each verb).

>>> result = api.train({"method": "cosdd", "data": {"paths": ["noisy/"], "axes": "SYX"},
...                     "model": {"direction": "x"}, "train": {"max_time": 600}}, "runs/mine")  # doctest: +SKIP
>>> outcome = api.train_from_options("n2v", ["noisy/"], out="runs/n2v", axes="SYX", max_steps=500)  # doctest: +SKIP
>>> trained = api.load_run("runs/mine")                                                          # doctest: +SKIP
>>> out = api.predict_image(trained, image[None], api.PredictOptions(samples=100))              # doctest: +SKIP
>>> report = api.predict("runs/mine", ["noisy.tif"], "denoised", samples=100)                   # doctest: +SKIP
>>> report = api.predict_with_sampling_view(trained, ["noisy.tif"], "YX", "out", target="clean.tif")  # doctest: +SKIP
>>> api.package("runs/mine", "mine.zip", api.ExportOptions(samples=100))                          # doctest: +SKIP
>>> report = api.inspect(["noisy/"], "SYX", "noise_report.png")                                 # doctest: +SKIP
>>> api.validate("mine.zip")                                                                     # doctest: +SKIP
>>> print(api.format_checks(api.check("mine.zip")))                                              # doctest: +SKIP
>>> print(api.evaluate("denoised/", "clean/", axes="SYX", pattern="*_mmse.tif").format_table())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

# First of this package's modules: before torch loads, idle OpenMP threads are told to sleep, not spin.
from bmz_cosdd.threads import configure_threads  # noqa: I001
from pydantic import ValidationError as SettingsError

from bmz_cosdd import __version__
from bmz_cosdd.analysis.evaluation_report import EvaluationResult
from bmz_cosdd.analysis.evaluation_report import evaluate as _evaluate_files
from bmz_cosdd.analysis.noise_inspection import NoiseReport
from bmz_cosdd.analysis.noise_inspection import inspect_files as _inspect_files
from bmz_cosdd.analysis.sampling_view import SamplingReport, mean_of_k_psnr, predict_with_sampling_view
from bmz_cosdd.demo import run_demo as demo
from bmz_cosdd.config import validation_message as settings_message
from bmz_cosdd.errors import TrainingDiverged, UserError
from bmz_cosdd.export.package import PackageMeta, PackageResult
from bmz_cosdd.inference.predictor import TrainedModel, load_run, predict_files, predict_image
from bmz_cosdd.methods.base import CliOption, ExportOptions, Method, PredictOptions
from bmz_cosdd.methods.registry import all_methods, get_method
from bmz_cosdd.noise_models import load_noise_model
from bmz_cosdd.training.session import build_config, resume, train
from bmz_cosdd.training.trainer import TrainResult
from bmz_cosdd.zoo.consumers import core_passed, format_checks
from bmz_cosdd.zoo.upload import DEFAULT_SERVER, UploadPlan, UploadResult
from bmz_cosdd.export.validate import FormatResult
from bmz_cosdd.export.validate import format_table as format_validation

__all__ = [
    "CliOption",
    "SettingsError",
    "EvaluationResult",
    "ExportOptions",
    "FormatResult",
    "NoiseReport",
    "PackageMeta",
    "PackageResult",
    "PredictOptions",
    "PredictionReport",
    "SamplingReport",
    "TRAIN_OPTIONS",
    "TrainOutcome",
    "TrainedModel",
    "build_config",
    "check",
    "core_passed",
    "demo",
    "evaluate",
    "fit_noise_model",
    "format_checks",
    "format_validation",
    "inspect",
    "list_methods",
    "load_noise_model",
    "load_run",
    "mean_of_k_psnr",
    "package",
    "package_meta",
    "predict",
    "predict_files",
    "predict_image",
    "predict_out_of_core",
    "predict_package",
    "predict_run",
    "predict_with_sampling_view",
    "prepare_upload",
    "resume",
    "save_scores",
    "train",
    "train_config",
    "train_from_options",
    "train_options",
    "upload",
    "upload_token",
    "validate",
    "settings_message",
    "parse_tile",
    "TrainingDiverged",
    "UserError",
    "__version__",
    "configure_threads",
]

Say = Callable[[str], None]


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


# -- train ----------------------------------------------------------------------
_DATA = "Data"
_TRAIN = "Training"
_SECTIONS = {_DATA: "data", _TRAIN: "train"}

#: The settings every method's ``train`` takes besides its own: the ``data`` section (panel
#: ``Data``) and the ``train`` section (panel ``Training``) of a run's config.
TRAIN_OPTIONS: tuple[CliOption, ...] = (
    CliOption("axes", str, "Axes of the stored arrays, e.g. YX, SYX, SCYX, TYX, ZYX.", _DATA),
    CliOption("pattern", str, "Glob pattern for files inside DATA folders, e.g. '*.tif'.", _DATA),
    CliOption("crop_size", int, "Side of the square training crops.", _DATA),
    CliOption("spatial_dims", int, "2: every Z plane / frame is a 2-D image (default); 3: volumes, denoised with "
              "3-D convolutions (--axes must hold Z; S and T are samples).", _DATA),
    CliOption("crop_depth", int, "Z extent of 3-D training crops (default: --crop-size).", _DATA),
    CliOption("val_fraction", float, "Fraction of images (or tiles of one image) kept for validation.", _DATA),
    CliOption("val_crops", int, "Most fixed validation crops.", _DATA),
    CliOption("clip_percentiles", str, "Clip outliers at these percentiles before normalising, e.g. 0.1,99.9.",
              _DATA),
    CliOption("batch_size", int, "Crops per optimiser step.", _TRAIN),
    CliOption("accumulate", int, "Virtual batches per step (gradient accumulation).", _TRAIN),
    CliOption("lr", float, "Learning rate of every optimiser.", _TRAIN),
    CliOption("max_steps", int, "Stop after this many optimiser steps.", _TRAIN),
    CliOption("max_epochs", int, "Stop after this many epochs (of --steps-per-epoch steps).", _TRAIN),
    CliOption("max_time", float, "Stop after this many seconds of training.", _TRAIN),
    CliOption("steps_per_epoch", int, "Steps between validations and checkpoints.", _TRAIN),
    CliOption("patience", int, "Early stopping: validations without improvement.", _TRAIN),
    CliOption("seed", int, "Seed of initialisation, crops and training noise.", _TRAIN),
    CliOption("device", str, "auto (CUDA if present), cpu or cuda[:i].", _TRAIN),
    CliOption("precision", str, "auto (bf16 autocast on CUDA only), fp32 or bf16.", _TRAIN),
)


def list_methods() -> list[Method]:
    """Every denoising method, in the order the CLI lists them.

    Returns
    -------
    list of Method
        Each with its ``name`` (e.g. ``cosdd``), one-line ``summary``, ``estimators``
        (the first is the default) and ``cli_options()``.
    """
    return all_methods()


def train_options(method: str) -> list[CliOption]:
    """The settings ``train_from_options`` (and ``bmz-cosdd train METHOD``) takes for ``method``.

    Parameters
    ----------
    method : str
        A method name, e.g. ``cosdd`` or ``n2v``.

    Returns
    -------
    list of CliOption
        :data:`TRAIN_OPTIONS` (``data`` and ``train`` sections), then the method's own
        (``model`` section), each with its name, type, help and help panel.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Unknown method.
    """
    return [*TRAIN_OPTIONS, *get_method(method).cli_options()]


def _check_option_names(method: Method, options: dict[str, Any]) -> None:
    known = {option.name for option in (*TRAIN_OPTIONS, *method.cli_options())}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) of {method.name}: {', '.join(unknown)}")


def train_config(
    method: str | Method,
    data: Sequence[str | Path] | None = None,
    config: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The config mapping of a new run: the method's defaults < a YAML file < the options given.

    Parameters
    ----------
    method : str or Method
        A method name, e.g. ``cosdd``, or the method already looked up.
    data : sequence of str or pathlib.Path, optional
        Image files or folders; they replace ``data.paths`` of the YAML file.
    config : str or pathlib.Path, optional
        A YAML file with ``model``, ``data`` and ``train`` sections (and optionally ``method``).
    **options
        Any of :func:`train_options`' names (e.g. ``axes="SYX"``, ``max_steps=500``,
        ``direction="x"``); ``None`` means "not given".

    Returns
    -------
    dict
        ``{"method": ..., "model": {...}, "data": {...}, "train": {...}}``, ready for
        :func:`train` (which fills in the defaults and checks the values).

    Raises
    ------
    bmz_cosdd.errors.UserError
        Unknown method, a YAML file for another method, or a section that is not a mapping.
    TypeError
        An option that is not one of :func:`train_options`.
    """
    from bmz_cosdd.config import load_yaml

    chosen = get_method(method) if isinstance(method, str) else method
    _check_option_names(chosen, options)
    values: dict[str, Any] = load_yaml(config) if config is not None else {}
    if values.get("method") not in (None, chosen.name):
        raise UserError(f"the config file is for method {values['method']!r}, not {chosen.name!r}")
    values["method"] = chosen.name
    for section in ("model", "data", "train"):
        current = values.get(section) or {}
        if not isinstance(current, dict):
            raise UserError(f"config section {section!r} must be a mapping")
        values[section] = dict(current)
    if data:
        values["data"]["paths"] = [str(p) for p in data]
    for option in TRAIN_OPTIONS:
        if options.get(option.name) is not None:
            values[_SECTIONS[option.panel]][option.name] = options[option.name]
    for option in chosen.cli_options():
        if options.get(option.name) is not None:
            values["model"][option.name] = options[option.name]
    return values


@dataclass
class TrainOutcome:
    """How :func:`train_from_options` went.

    Attributes
    ----------
    result : TrainResult
        Steps, epochs, best validation loss, why it stopped (``"interrupted"`` after Ctrl-C,
        with a checkpoint saved), seconds, steps per second and the quality report.
    run_dir : pathlib.Path
        The run folder, as given (or the default ``runs/<method>_<time>``).
    method : Method
        The method trained (its ``name`` and ``monitor``, the validation loss reported as ``best``).
    processes : int
        Processes that trained together (``torchrun``); 1 without it.
    is_main : bool
        This process reports (rank 0, or the only process).
    """

    result: TrainResult
    run_dir: Path
    method: Method
    processes: int = 1
    is_main: bool = True


def train_from_options(
    method: str,
    data: Sequence[str | Path] | None = None,
    *,
    config: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    from_package: str | Path | None = None,
    trust_code: bool = False,
    progress: bool = True,
    say: Optional[Say] = None,
    **options: Any,
) -> TrainOutcome:
    """Train ``method`` as ``bmz-cosdd train METHOD`` does: a new run, or continue one.

    Parameters
    ----------
    method : str
        A method name, e.g. ``cosdd``, ``n2v``, ``hdn``.
    data : sequence of str or pathlib.Path, optional
        Noisy image files or folders (TIFF, NPY, PNG); no clean targets are needed.
    config : str or pathlib.Path, optional
        YAML file with ``model``/``data``/``train`` sections; ``options`` override it.
    out : str or pathlib.Path, optional
        The run folder to create (default ``runs/<method>_<YYYYmmdd-HHMMSS>``), or with
        ``resume`` the run to continue. Required under ``torchrun``.
    resume : bool
        Continue the run in ``out`` exactly from its last checkpoint; of ``options`` only
        the ``train`` section's are used (e.g. a longer ``max_steps``).
    from_package : str or pathlib.Path, optional
        Start from a package's weights, architecture and normalisation statistics (fine-tune).
    trust_code : bool
        With ``from_package``: accept a package whose Python bmz-cosdd did not write.
    progress : bool
        Show a progress bar.
    say : callable, optional
        Receives the lines telling what the method chose from the data (default: standard error).
    **options
        Any of :func:`train_options`' names; ``None`` means "not given". Units are pixels
        (``crop_size``, ``crop_depth``), seconds (``max_time``) and optimiser steps.

    Returns
    -------
    TrainOutcome
        The training result, the run folder, the method and the processes that trained.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Bad data, options or config; ``resume`` or ``torchrun`` without ``out``.
    bmz_cosdd.errors.TrainingDiverged
        The loss became NaN or infinite (the last good checkpoint is kept).
    TypeError
        An option that is not one of :func:`train_options`.
    """
    from bmz_cosdd.training.distributed import current_world
    from bmz_cosdd.training.session import resume as resume_run

    chosen = get_method(method)
    _check_option_names(chosen, options)
    world = current_world()
    if world.active and out is None:
        raise UserError("under torchrun give --out: every process must use the same run folder")
    if resume:
        if out is None:
            raise UserError("--resume needs --out RUN_FOLDER (the run to continue)")
        overrides = {o.name: options[o.name] for o in TRAIN_OPTIONS
                     if o.panel == _TRAIN and options.get(o.name) is not None}
        run_dir = Path(out)
        result = resume_run(run_dir, overrides, progress=progress)
    else:
        values = train_config(chosen, data, config, **options)
        run_dir = Path(out) if out is not None else Path("runs") / f"{chosen.name}_{datetime.now():%Y%m%d-%H%M%S}"
        result = train(values, run_dir, progress=progress, init_from=from_package, say=say or _to_stderr,
                       check_code=_training_state_check(trust_code), method=chosen)
    return TrainOutcome(result, run_dir, chosen, processes=world.size, is_main=world.is_main)


def parse_tile(text: str) -> int | tuple[int, ...]:
    """``--tile`` as typed: ``"512"`` -> 512, ``"16,256,256"`` -> (16, 256, 256).

    Raises
    ------
    bmz_cosdd.errors.UserError
        Not one or more positive whole numbers separated by commas.
    """
    try:
        sizes = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise UserError(f"--tile takes one size or one per spatial axis like 16,256,256, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--tile sizes must be positive, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def _training_state_check(trust_code: bool) -> Callable[[Path], None]:
    """The check ``train --from`` applies to a package before reading its training state."""
    from bmz_cosdd.export.package_trust import require_trusted_code

    def check(package: Path) -> None:
        require_trusted_code(package, trust_code, "train --from takes only packages whose code this bmz-cosdd"
                             " wrote (it would read just their training_state.pt and run none of their Python)")

    return check


# -- predict --------------------------------------------------------------------
@dataclass
class PredictionReport:
    """What :func:`predict` wrote and what the user should read after it.

    Attributes
    ----------
    written : list of pathlib.Path
        Every file written, in order (``<name>_<output>.tif``, or arrays in a Zarr container).
    table : str
        The PSNR table (with a target), else ``""``.
    notes : list of str
        Lines for after the prediction: the residual check's finding and the run's quality flags.
    interrupted : bool
        Ctrl-C stopped an out-of-core prediction; its finished blocks are saved and the same
        call continues it.
    """

    written: list[Path] = field(default_factory=list)
    table: str = ""
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


def predict_package(
    package: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path = "denoised",
    *,
    axes: str | None = None,
    pattern: str = "*",
    weight_format: str | None = None,
    block: int = 512,
    device: str | None = None,
    trust_code: bool = False,
    say: Optional[Say] = None,
) -> list[Path]:
    """Denoise image files with any bioimage.io model package, through bioimageio.core, block by block.

    Parameters
    ----------
    package : str or pathlib.Path
        A model zip with one (b, c, y, x) or (b, c, z, y, x) input.
    inputs : sequence of str or pathlib.Path
        Image files or folders.
    out : str or pathlib.Path
        Folder for ``<name>_<output id>.tif``.
    axes : str, optional
        Axes of the input arrays (default ``YX``, or ``ZYX`` for a 3-D model).
    pattern : str
        Glob pattern inside input folders.
    weight_format : str, optional
        ``torchscript``, ``pytorch_state_dict`` or ``onnx`` (default: see
        :func:`bmz_cosdd.zoo.package_prediction.predict_files_with_package`).
    block : int
        Largest block side in pixels fed to the model.
    device : str, optional
        ``cpu`` or ``cuda[:i]`` (default: bioimageio.core's choice).
    trust_code : bool
        Run the package's own Python even though bmz-cosdd did not write it.
    say : callable, optional
        Receives ``[i/n] name`` before each image (default: standard error).

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Not a package, files outside it, foreign Python without ``trust_code``, bad inputs or axes.
    """
    from bmz_cosdd.zoo.package_prediction import predict_files_with_package

    say = say or _to_stderr
    _check_device(device)
    return predict_files_with_package(
        package, inputs, axes, out, pattern=pattern, weight_format=weight_format, block=block, device=device,
        on_image=lambda path, i, n: say(f"[{i}/{n}] {path.name}"), trust_code=trust_code,
    )


def predict_out_of_core(
    trained: TrainedModel,
    path: str | Path,
    out: str | Path = "denoised",
    options: PredictOptions | None = None,
    *,
    axes: str | None = None,
    tile: int | Sequence[int] = 512,
    seed: int = 0,
    progress: bool = True,
    say: Optional[Say] = None,
) -> list[Path]:
    """Denoise a Zarr / OME-Zarr array or a large TIFF block by block from a memory map, resumably.

    Parameters
    ----------
    trained : TrainedModel
        From :func:`load_run`.
    path : str or pathlib.Path
        The input array.
    out : str or pathlib.Path
        Folder for ``<stem>_<output>`` in the input's container format.
    options : PredictOptions, optional
        Estimator and sampling settings (posterior samples cannot be kept).
    axes : str, optional
        Axes of the input (default: from OME-Zarr metadata, else the training data's).
    tile : int or sequence of int
        Window side in pixels fed to the network, halo included.
    seed : int
        Seed of the posterior sampling (block ``b`` uses ``seed + b``).
    progress : bool
        Show a progress bar of the blocks on standard error.
    say : callable, optional
        Receives warnings and, on Ctrl-C, how far it got (default: standard error).

    Returns
    -------
    list of pathlib.Path
        The arrays written.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, after saying how many blocks are saved: the same call continues.
    bmz_cosdd.errors.UserError
        Unreadable input, bad axes or tile.
    """
    from bmz_cosdd.inference.blockwise import block_progress
    from bmz_cosdd.inference.blockwise import predict_out_of_core as predict_blocks

    say = say or _to_stderr
    path = Path(path)
    state = {"done": 0, "total": 0}
    with block_progress(path.name, enabled=progress) as show:
        def on_block(done: int, total: int) -> None:
            state.update(done=done, total=total)
            show(done, total)

        try:
            return predict_blocks(trained, path, axes, out, options, tile=tile, seed=seed, on_block=on_block, say=say)
        except KeyboardInterrupt:
            say(f"interrupted: {state['done']} of {state['total']} blocks of {path.name} are saved; run the"
                " same command again to continue")
            raise


def predict_run(
    trained: TrainedModel,
    inputs: Sequence[str | Path],
    out: str | Path = "denoised",
    options: PredictOptions | None = None,
    *,
    axes: str | None = None,
    pattern: str = "*",
    target: str | Path | None = None,
    save_samples: bool = False,
    tile: int | Sequence[int] = 512,
    seed: int = 0,
    progress: bool = True,
    say: Optional[Say] = None,
) -> PredictionReport:
    """Denoise image files held in memory with a trained run; optionally the sampling view and PSNR.

    Parameters
    ----------
    trained : TrainedModel
        From :func:`load_run`.
    inputs : sequence of str or pathlib.Path
        Image files or folders.
    out : str or pathlib.Path
        Folder for ``<name>_<output>.tif`` (e.g. ``_mmse`` and ``_std`` for COSDD, ``_denoised``
        for the N2V family).
    options : PredictOptions, optional
        Estimator (default: the method's first) and sampling settings.
    axes : str, optional
        Axes of the input arrays (default: the training data's).
    pattern : str
        Glob pattern inside input folders.
    target : str or pathlib.Path, optional
        Ground truth file or folder (paired by name): the PSNR of the mean of 1, 10, 100
        samples, and ``<name>_sampling.png`` and ``.json``.
    save_samples : bool
        Also write the samples (leading ``Q`` axis) and ``<name>_sampling.png``.
    tile : int or sequence of int
        Largest tile side in pixels fed to the network, halo included: one for every spatial
        axis or one per axis (``(Z, Y, X)`` for a volume model, e.g. ``(16, 256, 256)``).
    seed : int
        Seed of the posterior sampling.
    progress : bool
        Show the tiles of an image on an interactive standard error.
    say : callable, optional
        Receives ``[i/n] name`` before each image and warnings (default: standard error).

    Returns
    -------
    PredictionReport
        The files written, the PSNR table and the residual check's finding as a note.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Unreadable inputs, bad axes, tile or estimator.
    """
    from bmz_cosdd.analysis.sampling_view import format_psnr_table
    from bmz_cosdd.inference.predictor import ResidualPairs
    from bmz_cosdd.inference.tiling import TileProgress
    from bmz_cosdd.training.session import noise_direction

    say = say or _to_stderr
    if options is None or options.estimator is None:
        base = options or PredictOptions()
        options = PredictOptions(estimator=trained.method.estimators[0], samples=base.samples,
                                 sample_batch=base.sample_batch, keep_samples=base.keep_samples, seed=base.seed)
    residual = ResidualPairs(options.estimator)
    tiles = TileProgress(enabled=progress and sys.stderr.isatty())
    common = dict(pattern=pattern, tile=tile, seed=seed, on_image=lambda path, i, n: say(f"[{i}/{n}] {path.name}"),
                  on_tile=tiles, say=say)
    with tiles:
        if save_samples or target is not None:
            view = predict_with_sampling_view(trained, inputs, axes or trained.config.data.axes, out, options,
                                              target=target, save_samples=save_samples, residual=residual, **common)
            for note in view.notes:
                say(note)
            report = PredictionReport(view.written, format_psnr_table(view))
        else:
            report = PredictionReport(predict_files(trained, inputs, axes or trained.config.data.axes, out, options,
                                                    residual=residual, **common))
    check = residual.check(noise_direction(trained.config.model))
    if check is not None:
        report.notes.append(check.describe())
    return report


def _quality_notes(trained: TrainedModel, run: Path) -> list[str]:
    """After a prediction: the run's quality flags (quality.json), if it has any."""
    if trained.quality is not None and trained.quality.flagged:
        return [line for line in trained.quality.lines(trained.method.name, run) if not line.startswith("note:")]
    return []


def predict(
    run: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path = "denoised",
    *,
    axes: str | None = None,
    pattern: str = "*",
    estimator: str | None = None,
    samples: int = 100,
    sample_batch: int = 10,
    save_samples: bool = False,
    target: str | Path | None = None,
    tile: int | Sequence[int] = 512,
    seed: int = 0,
    out_of_core: bool = False,
    progress: bool = True,
    checkpoint: str = "best",
    device: str = "auto",
    weight_format: str | None = None,
    trust_code: bool = False,
    say: Optional[Say] = None,
    on_written: Optional[Callable[[Path], None]] = None,
) -> PredictionReport:
    """Denoise images as ``bmz-cosdd predict`` does, with a run folder or a model package.

    A package (a file) goes to :func:`predict_package`. With a run folder, Zarr / OME-Zarr
    inputs and TIFFs over 1 GiB (every TIFF with ``out_of_core``) go to
    :func:`predict_out_of_core`, one by one and first; the others to :func:`predict_run`.

    Parameters
    ----------
    run : str or pathlib.Path
        Run folder of a trained model, or a bioimage.io model package (zip).
    inputs : sequence of str or pathlib.Path
        Image files or folders.
    out : str or pathlib.Path
        Folder for the outputs.
    axes : str, optional
        Axes of the input arrays, e.g. ``YX``, ``SYX``, ``TYX`` (default: the training data's).
    pattern : str
        Glob pattern inside input folders.
    estimator : str, optional
        Run only: what to compute (default: the method's first), e.g. ``mmse``, ``direct``.
    samples, sample_batch : int
        Run only: posterior samples averaged for the MMSE, and decoded at once.
    save_samples : bool
        Run only: also write the samples and the sampling view.
    target : str or pathlib.Path, optional
        Run only: ground truth for the PSNR table (see :func:`predict_run`).
    tile : int or sequence of int
        Largest tile (block, for a package) side in pixels, halo included: one for every spatial
        axis or one per axis (``(Z, Y, X)`` for a volume model, e.g. ``(16, 256, 256)``).
    seed : int
        Run only: seed of the posterior sampling.
    out_of_core : bool
        Run only: predict every TIFF input block by block (Zarr inputs always are).
    progress : bool
        Show progress bars on standard error.
    checkpoint : str
        Run only: ``best`` or ``last``.
    device : str
        ``auto``, ``cpu`` or ``cuda[:i]``.
    weight_format : str, optional
        Package only: ``torchscript``, ``pytorch_state_dict`` or ``onnx``.
    trust_code : bool
        Package only: run the package's own Python even though bmz-cosdd did not write it.
    say : callable, optional
        Receives progress lines and warnings (default: standard error).
    on_written : callable, optional
        Called with each file written: for out-of-core inputs as soon as each is done, for
        the others once all are.

    Returns
    -------
    PredictionReport
        The files written, the PSNR table, notes for after (residual check, the run's quality
        flags) and whether Ctrl-C interrupted an out-of-core prediction.

    Raises
    ------
    bmz_cosdd.errors.UserError
        A missing run, an out-of-core input with a package, unreadable inputs, bad options.
    """
    from bmz_cosdd.inference.blockwise import is_out_of_core_input
    from bmz_cosdd.zoo.package_prediction import is_package

    say = say or _to_stderr
    emit = on_written or (lambda path: None)
    run = Path(run)
    inputs = [Path(p) for p in inputs]
    large = [path for path in inputs if is_out_of_core_input(path, force=out_of_core)]
    inputs = [path for path in inputs if path not in large]
    if is_package(run):
        if large:
            raise UserError(f"out-of-core prediction ({large[0].name}) needs a run folder, not a package")
        written = predict_package(run, inputs, out, axes=axes, pattern=pattern, weight_format=weight_format,
                                  block=tile, device=None if device == "auto" else device, trust_code=trust_code,
                                  say=say)
        for path in written:
            emit(path)
        return PredictionReport(written)

    trained = load_run(run, checkpoint=checkpoint, device=device)
    options = PredictOptions(estimator=estimator or trained.method.estimators[0], samples=samples,
                             sample_batch=sample_batch, keep_samples=save_samples)
    report = PredictionReport()
    for path in large:
        try:
            written = predict_out_of_core(trained, path, out, options, axes=axes, tile=tile, seed=seed,
                                          progress=progress, say=say)
        except KeyboardInterrupt:
            report.interrupted = True
            return report
        report.written += written
        for written_path in written:
            emit(written_path)
    if large and not inputs:
        report.notes += _quality_notes(trained, run)
        return report
    in_memory = predict_run(trained, inputs, out, options, axes=axes, pattern=pattern, target=target,
                            save_samples=save_samples, tile=tile, seed=seed, progress=progress, say=say)
    for path in in_memory.written:
        emit(path)
    report.written += in_memory.written
    report.table = in_memory.table
    report.notes += in_memory.notes + _quality_notes(trained, run)
    return report


# -- package / validate / check / upload -----------------------------------------
def package_meta(
    meta: str | Path | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = (),
    maintainers: Sequence[str] = (),
    version: str | None = None,
    license: str | None = None,
) -> PackageMeta:
    """Who and what a package is: a YAML file (optional) with the values given on top.

    Parameters
    ----------
    meta : str or pathlib.Path, optional
        YAML with ``name``, ``description``, ``authors``, ``maintainers``, ``version``,
        ``license``, ``tags``.
    name, description : str, optional
        Shown on bioimage.io.
    authors : sequence of str
        ``"Name; Affiliation"`` each.
    maintainers : sequence of str
        GitHub user names of who maintains the package on bioimage.io (checked offline).
    version : str, optional
        The model's version (not the library's).
    license : str, optional
        SPDX licence of the weights.

    Returns
    -------
    PackageMeta

    Raises
    ------
    bmz_cosdd.errors.UserError
        Unknown keys in the YAML file, malformed authors or GitHub user names.
    """
    from bmz_cosdd.export.package import load_meta

    return load_meta(meta, name=name, description=description, authors=list(authors), version=version,
                     maintainers=list(maintainers), license=license)


def package(
    run: str | Path,
    out: str | Path = "model.zip",
    options: ExportOptions | None = None,
    meta: PackageMeta | None = None,
    *,
    validate: bool = True,
    device: str | None = None,
    say: Optional[Say] = None,
    force: bool = False,
) -> PackageResult:
    """Package a trained run for the BioImage Model Zoo and validate every weight format.

    Parameters
    ----------
    run : str or pathlib.Path
        Run folder of a trained model.
    out : str or pathlib.Path
        The package zip to write; on failure nothing is left there.
    options : ExportOptions, optional
        What the package computes (estimator, outputs, samples, seed).
    meta : PackageMeta, optional
        Who and what the package is (see :func:`package_meta`).
    validate : bool
        Test every weight format with bioimageio.core before the zip is moved into place.
    device : str, optional
        Device for that test: ``cpu`` or ``cuda``.
    say : callable, optional
        Receives the progress lines (default: standard output).
    force : bool
        Package a run whose quality check flagged it.

    Returns
    -------
    PackageResult
        Its path, weight formats, validation results and notes.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Not a run, bad options or metadata, a flagged run without ``force``, or a failed validation.
    """
    from bmz_cosdd.export.package import package_run

    return package_run(run, out, options, meta, validate=validate, device=device, say=say or print, force=force)


def validate(package: str | Path, device: str | None = None, trust_code: bool = False) -> list[FormatResult]:
    """Run bioimageio.core's test for every weight format of a package at default tolerance (offline).

    Parameters
    ----------
    package : str or pathlib.Path
        A bioimage.io model package (zip).
    device : str, optional
        ``cpu`` or ``cuda`` (default: bioimageio.core's choice).
    trust_code : bool
        Run the package's own Python even though bmz-cosdd did not write it.

    Returns
    -------
    list of FormatResult
        One per weight format (``passed``, failing checks, warnings); see :func:`format_validation`.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Not a package, files outside it, foreign Python without ``trust_code``.
    """
    from bmz_cosdd.artifacts.package_reader import read_package_descr
    from bmz_cosdd.export.validate import validate_package

    read_package_descr(Path(package))
    _check_device(device)
    return validate_package(Path(package), device=device, trust_code=trust_code)


def check(package: str | Path, device: str | None = None, trust_code: bool = False) -> list:
    """Will the package run in bioimageio.core, deepImageJ, ilastik and the BioEngine? Rule by rule.

    Parameters
    ----------
    package : str or pathlib.Path
        A bioimage.io model package (zip).
    device : str, optional
        ``cpu`` or ``cuda`` for the tests (default: bioimageio.core's choice).
    trust_code : bool
        Run the package's own Python even though bmz-cosdd did not write it.

    Returns
    -------
    list of ConsumerCheck
        One per consumer with its status and rules; see :func:`format_checks` and :func:`core_passed`.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Not a package, files outside it, foreign Python without ``trust_code``.
    """
    from bmz_cosdd.zoo.consumers import check_package

    _check_device(device)
    return check_package(Path(package), device=device, trust_code=trust_code)


def prepare_upload(
    package: str | Path,
    server: str = DEFAULT_SERVER,
    *,
    maintainer: str | None = None,
    skip_validation: bool = False,
    trust_code: bool = False,
    ask_maintainer: Optional[Callable[[str], Optional[str]]] = None,
    say: Optional[Say] = None,
) -> UploadPlan:
    """Check a package for upload (loads, names a maintainer, passes bioimageio.core's test); list what is sent.

    Nothing is sent: :func:`upload` sends the plan.

    Parameters
    ----------
    package : str or pathlib.Path
        A bioimage.io model package (zip).
    server : str
        Hypha server of the artifact manager.
    maintainer : str, optional
        A GitHub user name added as the model's maintainer to the uploaded ``rdf.yaml`` if the
        package names none (the local package is unchanged).
    skip_validation : bool
        Do not run bioimageio.core's test again.
    trust_code : bool
        Let the test run Python from the package that bmz-cosdd did not write.
    ask_maintainer : callable, optional
        Asked (with a question) for a GitHub user name when the package names no maintainer
        and none was given; it may return ``None`` (nobody to ask).
    say : callable, optional
        Receives progress lines (default: standard error).

    Returns
    -------
    UploadPlan
        The manifest and every file with its size and hash; ``describe()`` says it in words.

    Raises
    ------
    bmz_cosdd.errors.UserError
        No such package, no maintainer, a bad GitHub user name, or a failed validation.
    """
    from bmz_cosdd.export.package_content import check_github_user
    from bmz_cosdd.zoo.upload import no_maintainer_error, package_maintainers, plan_upload

    say = say or _to_stderr
    package = Path(package)
    if not package.is_file():
        raise UserError(f"no such package: {package}")
    if maintainer is None and not package_maintainers(package):
        maintainer = ask_maintainer(f"{package.name} names no maintainer; your GitHub user name") \
            if ask_maintainer is not None else None
        if maintainer is None:
            raise no_maintainer_error(package)
    if maintainer is not None:
        maintainer = check_github_user(maintainer, "--maintainer")
    validation = [FormatResult("skipped", True, [])] if skip_validation else None
    if validation is None:
        say(f"validating {package.name} with bioimageio.core at default tolerance ...")
    return plan_upload(package, server, validation=validation, maintainer=maintainer, trust_code=trust_code)


def upload_token() -> str | None:
    """The Hypha upload token from the environment (``BIOIMAGEIO_HYPHA_UPLOAD_TOKEN``), if set.

    Returns
    -------
    str or None
    """
    from bmz_cosdd.zoo.upload import TOKEN_ENV

    return os.environ.get(TOKEN_ENV) or None


def upload(
    plan: UploadPlan,
    token: str | None = None,
    *,
    resume: str | None = None,
    on_file: Optional[Callable[[str, int, int], None]] = None,
) -> UploadResult:
    """Stage a planned package in the BioImage Model Zoo's collection and request review (curators publish).

    Parameters
    ----------
    plan : UploadPlan
        From :func:`prepare_upload`.
    token : str, optional
        The uploader's Hypha token (default: :func:`upload_token`); never printed.
    resume : str, optional
        The staged draft ID left by a failed upload: files stored intact are kept.
    on_file : callable, optional
        Called as ``on_file(name, bytes_done, bytes_total)`` while files are sent.

    Returns
    -------
    UploadResult
        The draft's artifact ID and URL, the files sent and those kept.

    Raises
    ------
    bmz_cosdd.errors.UserError
        No token, refused by the server, or a file that did not arrive intact.
    """
    from bmz_cosdd.zoo.upload import TOKEN_ENV, upload_package

    token = token or upload_token()
    if not token:
        raise UserError(f"no upload token: set {TOKEN_ENV}")
    return upload_package(plan, token, resume=resume, on_file=on_file)


# -- inspect / evaluate ---------------------------------------------------------
def inspect(
    data: Sequence[str | Path],
    axes: str,
    out: str | Path,
    pattern: str = "*",
    run: str | Path | None = None,
    dark: Sequence[str | Path] | None = None,
    dark_axes: str | None = None,
    region: str | None = None,
    smooth_sigma: float = 2.0,
    samples: int = 20,
    crop_size: int = 64,
    max_lag: int = 16,
    threshold: float = 0.1,
    say: Optional[Say] = None,
) -> NoiseReport:
    """Estimate the noise of images: its spatial correlation, variance against signal, each method's settings.

    Parameters
    ----------
    data : sequence of str or pathlib.Path
        Noisy image files or folders (TIFF, NPY, PNG).
    axes : str
        Axes of the stored arrays, e.g. ``YX``, ``SYX``, ``CYX``, ``TYX``; with ``Z`` (``ZYX``,
        ``SZYX``, ``CZYX``) the images are volumes and the correlation along z (across planes) is
        measured too.
    out : str or pathlib.Path
        The PNG report; a JSON with the same name is written beside it.
    pattern : str
        Glob pattern inside folders.
    run : str or pathlib.Path, optional
        Noise = residual against this trained run's prediction.
    dark : sequence of str or pathlib.Path, optional
        Noise from dark frames instead of ``data``.
    dark_axes : str, optional
        Axes of the dark frames (default: ``axes``).
    region : str, optional
        Noise from an empty region of every image: ``Y0:Y1,X0:X1`` (pixels).
    smooth_sigma : float
        Default source: Gaussian smoothing (pixels) the noise is the residual of.
    samples : int
        With ``run``: posterior samples per prediction.
    crop_size : int
        Training crop size in pixels (caps the StructN2V mask span).
    max_lag : int
        Largest lag measured, in pixels (at least 1).
    threshold : float
        Correlation, in (0, 1), above which the noise counts as correlated.
    say : callable, optional
        Receives progress lines.

    Returns
    -------
    NoiseReport
        The measurements; ``summary_lines()`` says them in words.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Bad ``max_lag`` or ``threshold``, unreadable images, bad axes or region.
    """
    if max_lag < 1 or not 0 < threshold < 1:
        raise UserError("--max-lag must be at least 1 and --threshold between 0 and 1")
    return _inspect_files(
        data, axes, out, pattern=pattern, run=run, dark=dark, dark_axes=dark_axes, region=region,
        smooth_sigma=smooth_sigma, samples=samples, crop_size=crop_size, max_lag=max_lag, threshold=threshold,
        say=say,
    )


def evaluate(
    prediction: str | Path,
    target: str | Path,
    *,
    axes: str = "YX",
    pattern: str = "*",
    noisy: str | Path | None = None,
    data_range: float | None = None,
    crop: int = 256,
    panel_images: int = 4,
) -> EvaluationResult:
    """PSNR (dB) and SSIM of denoised images against ground truth, per image and mean.

    Parameters
    ----------
    prediction : str or pathlib.Path
        Denoised image file or folder.
    target : str or pathlib.Path
        Clean or averaged ground truth, file or folder: ``a.tif`` pairs with ``a.tif``,
        ``a_mmse.tif``, ``a_direct.tif``.
    axes : str
        Axes of every array, e.g. ``YX``, ``SYX``, ``CYX``, ``SCYX``, ``TYX``.
    pattern : str
        Glob pattern inside the prediction folder, e.g. ``*_mmse.tif``.
    noisy : str or pathlib.Path, optional
        The noisy inputs, scored too to show the gain.
    data_range : float, optional
        Peak-to-peak range for PSNR and SSIM (default: each target image's max - min).
    crop : int
        Side in pixels of the centre crops kept for the panel.
    panel_images : int
        Images kept for the panel.

    Returns
    -------
    EvaluationResult
        ``format_table()``, ``to_json()`` (see :func:`save_scores`) and ``write_panel(path)``.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Unpaired or unreadable files, mismatched shapes, bad axes.
    """
    return _evaluate_files(prediction, target, axes=axes, pattern=pattern, noisy=noisy, data_range=data_range,
                           crop=crop, panel_images=panel_images)


def save_scores(result: EvaluationResult, path: str | Path) -> Path:
    """Write an evaluation's scores as JSON (atomically).

    Parameters
    ----------
    result : EvaluationResult
        From :func:`evaluate`.
    path : str or pathlib.Path
        The JSON file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        A score that is not a finite number.
    """
    from bmz_cosdd.data.io import atomic_write_text

    atomic_write_text(path, json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    return Path(path)


# -- noise models / demo --------------------------------------------------------
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
) -> Any:
    """Fit a pixel noise model p(x | s) for DivNoising and HDN; write it (``.npz``) and its plot (``.png``).

    Parameters
    ----------
    out : str or pathlib.Path
        The model file (``.npz``); the plot goes beside it with ``.png``.
    calibration : str or pathlib.Path, optional
        A stack of frames of a static scene (signal = their average), or
    bootstrap : str or pathlib.Path, optional
        a run folder or package of any method (signal = its prediction of ``inputs``).
    inputs : sequence of str or pathlib.Path
        With ``bootstrap``: the noisy images to denoise.
    axes : str, optional
        Axes of the stack (default ``TYX``) or of ``inputs`` (default ``YX``).
    pattern : str
        Glob pattern inside input folders.
    kind : str
        ``gmm`` (Gaussian mixture) or ``histogram``.
    n_gaussians, n_coeffs : int
        GMM: Gaussians, and polynomial coefficients per parameter.
    min_sigma : float, optional
        GMM: variance floor in raw intensity units (default: from the data).
    bins : int
        Histogram: bins per axis.
    percentiles : tuple of float
        The signal range covered (low, high percentiles); signals outside are clipped.
    steps : int
        GMM: optimiser steps.
    seed : int
        GMM: seed of the mini-batches.

    Returns
    -------
    FitResult
        The model, the paths of the model file and its plot, and warnings.

    Raises
    ------
    bmz_cosdd.errors.UserError
        Neither or both sources, bad kind, percentiles or inputs.
    """
    from bmz_cosdd.noise_models.sources import calibration_pairs
    from bmz_cosdd.noise_models.workflow import check_fit_request, fit_to_file

    out = Path(out)
    percentiles = check_fit_request(out, kind, calibration, bootstrap, inputs, percentiles)
    if calibration is not None:
        pairs = calibration_pairs(calibration, axes or "TYX")
    else:
        pairs = _bootstrap_pairs(Path(bootstrap), inputs, axes or "YX", pattern)
    return fit_to_file(pairs, out, kind=kind, n_gaussians=n_gaussians, n_coeffs=n_coeffs, min_sigma=min_sigma,
                       bins=bins, percentiles=percentiles, steps=steps, seed=seed)


def _bootstrap_pairs(model: Path, inputs: Sequence[str | Path], axes: str, pattern: str) -> Any:
    """(signal, observation) pairs from a first denoiser (a run folder or any package) and its noisy images."""
    import tempfile

    from bmz_cosdd.data.io import find_files
    from bmz_cosdd.noise_models.sources import bootstrap_pairs
    from bmz_cosdd.zoo.package_prediction import is_package, predict_files_with_package

    if not model.exists():
        raise UserError(f"no such run folder or package: {model}")
    with tempfile.TemporaryDirectory(prefix="bmz-cosdd-bootstrap-") as tmp:
        if is_package(model):
            written = predict_files_with_package(model, inputs, axes, tmp, pattern=pattern)
        else:
            written = predict_files(load_run(model), inputs, axes, tmp, pattern=pattern)
        noisy_files = [f for item in inputs for f in find_files(item, pattern)]
        return bootstrap_pairs(noisy_files, written, axes, model.name)


def _check_device(device: str | None) -> None:
    """One line for a device this machine does not have, before bioimageio.core tries it."""
    if device is not None:
        from bmz_cosdd.training.device import resolve_device

        resolve_device(device)
