"""The ``bmz-cosdd`` command line: a thin skin over the Python API (parse, call, print)."""

from __future__ import annotations

import inspect
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer

from bmz_cosdd import api

app = typer.Typer(
    name="bmz-cosdd",
    help="Train unsupervised microscopy denoisers (COSDD and baselines) and denoise images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train a denoiser on noisy images (no clean targets needed).", no_args_is_help=True)
app.add_typer(train_app, name="train")
noise_app = typer.Typer(help="Pixel noise models p(x | s) for DivNoising and HDN.", no_args_is_help=True)
app.add_typer(noise_app, name="noise-model")


#: Why training stopped (TrainResult.stopped), as the summary line says it.
STOP_CAUSES = {"limit": "the step limit", "time": "the time limit", "early stopping": "early stopping",
               "interrupted": "Ctrl-C"}


def _say(message: str) -> None:
    typer.echo(message, err=True)


# A package's own Python (state-dict architecture, custom processing) runs only if bmz-cosdd wrote it, or with this.
_TRUST_HELP = ("Run the package's own Python even though bmz-cosdd did not write it (pytorch_state_dict weights"
               " whose architecture differs from ours, custom processing): only for packages whose author you trust.")


# -- train ----------------------------------------------------------------------
def _opt(name: str, annotation: Any, help: str, panel: str, default: Any = None, *decls: str) -> inspect.Parameter:
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*decls, help=help, rich_help_panel=panel)],
    )


def _option(option: api.CliOption) -> inspect.Parameter:
    """A ``train`` setting declared as plain data, as a typer option; ``None`` (the default) means "not given"."""
    return _opt(option.name, Optional[option.type], option.help, option.panel)


def make_train_command(method: Any) -> Callable[..., None]:
    """Build ``bmz-cosdd train <method>`` from the common options and the method's own."""

    def command(**options: Any) -> None:
        outcome = api.train_from_options(method.name, options.pop("data"), progress=not options.pop("quiet"),
                                         say=_say, **options)
        if not outcome.is_main:
            return
        result, run_dir = outcome.result, outcome.run_dir
        processes = f" on {outcome.processes} processes" if outcome.processes > 1 else ""
        _say(
            f"{method.name}: {result.steps} steps in {result.seconds:.0f} s ({result.steps_per_s:.2f} steps/s)"
            f"{processes}, stopped by {STOP_CAUSES.get(result.stopped, result.stopped)}; best validation {method.monitor} {result.best:.5g};"
            f" run folder {run_dir}"
        )
        if result.quality is not None:
            for line in result.quality.lines(method.name, run_dir):
                _say(line)
        if result.stopped == "interrupted":
            _say(f"interrupted: checkpoint saved; continue with: bmz-cosdd train {method.name} --resume --out"
                 f" {shlex.quote(str(run_dir))}")
            raise typer.Exit(130)

    params = [
        inspect.Parameter(
            "data",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=Annotated[Optional[List[Path]], typer.Argument(help="Image files or folders (TIFF, NPY, PNG).", show_default=False)],
        ),
        _opt("config", Optional[Path], "YAML file with model/data/train sections (CLI options override it).", "Run"),
        _opt("out", Optional[Path], "Run folder to create (default runs/<method>_<time>).", "Run"),
        _opt("resume", bool, "Continue the run in --out exactly from its last checkpoint.", "Run", False),
        _opt("from_package", Optional[Path], "Start from a package's weights, architecture and statistics (fine-tune).",
             "Run", None, "--from"),
        _opt("trust_code", bool, _TRUST_HELP, "Run", False, "--trust-code"),
        _opt("quiet", bool, "No progress bar.", "Run", False),
    ]
    params += [_option(option) for option in api.train_options(method.name)]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = method.summary
    return command


for _method in api.list_methods():
    train_app.command(_method.name, help=_method.summary)(make_train_command(_method))

_ESTIMATORS = "; ".join(f"{m.name}: {', '.join(m.estimators)}" for m in api.list_methods())


# -- predict --------------------------------------------------------------------
@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder of a trained model, or a bioimage.io model package (zip).")],
    inputs: Annotated[List[Path], typer.Argument(help="Image files or folders to denoise.")],
    out: Annotated[Path, typer.Option(help="Folder for the denoised TIFFs.")] = Path("denoised"),
    axes: Annotated[Optional[str], typer.Option(help="Axes of the input arrays, e.g. YX, SYX, TYX (default: the training data's).", show_default=False)] = None,
    pattern: Annotated[str, typer.Option(help="Glob pattern inside input folders.")] = "*",
    estimator: Annotated[Optional[str], typer.Option(help=f"What to compute (default: the method's first): {_ESTIMATORS}.", show_default=False)] = None,
    samples: Annotated[int, typer.Option(help="Posterior samples averaged for the MMSE.")] = 100,
    sample_batch: Annotated[int, typer.Option(help="Samples decoded at once.")] = 10,
    save_samples: Annotated[bool, typer.Option(help="Also write the individual samples (leading Q axis) and <name>_sampling.png: a few samples, the MMSE and the per-pixel std.")] = False,
    target: Annotated[Optional[Path], typer.Option(help="Ground truth file or folder (paired by file name): print the PSNR of the mean of 1, 10, 100 samples and write <name>_sampling.png and .json.", show_default=False)] = None,
    tile: Annotated[str, typer.Option(help="Largest tile side (halo included) fed to the network: one size, or one per spatial axis, e.g. 16,256,256 (Z,Y,X) for a volume model.")] = "512",
    seed: Annotated[int, typer.Option(help="Seed of the posterior sampling.")] = 0,
    out_of_core: Annotated[bool, typer.Option("--out-of-core", help="Predict TIFF inputs block by block from a memory map, resumably (always for Zarr / OME-Zarr inputs and TIFFs over 1 GiB).")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars (the tiles of an image, shown on an interactive terminal for images of many tiles; out-of-core blocks).")] = False,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:i].")] = "auto",
    weight_format: Annotated[Optional[str], typer.Option(help="Package only: torchscript, pytorch_state_dict or onnx (pytorch_state_dict runs the package's Python: only if bmz-cosdd wrote it, or with --trust-code).")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code", help="Package only: " + _TRUST_HELP)] = False,
) -> None:
    """Denoise images with a trained run (writes <name>_<output>.tif: e.g. _mmse and _std for COSDD,
    _denoised for the N2V family), or with any bioimage.io model package through bioimageio.core, block by block.
    Zarr / OME-Zarr inputs (and large TIFFs) are predicted out of core into the same container, resumably."""
    report = api.predict(
        run, inputs, out, axes=axes, pattern=pattern, estimator=estimator, samples=samples, sample_batch=sample_batch,
        save_samples=save_samples, target=target, tile=api.parse_tile(tile), seed=seed, out_of_core=out_of_core,
        progress=not quiet,
        checkpoint=checkpoint, device=device, weight_format=weight_format, trust_code=trust_code, say=_say,
        on_written=lambda path: typer.echo(str(path)),
    )
    if report.interrupted:
        raise typer.Exit(130)
    if report.table:
        typer.echo(report.table)
    for note in report.notes:
        _say(note)


@app.command()
def evaluate(
    prediction: Annotated[Path, typer.Argument(help="Denoised image file or folder (e.g. predict's output).")],
    target: Annotated[Path, typer.Argument(help="Clean or averaged ground truth, file or folder: a.tif pairs with a.tif, a_mmse.tif, a_direct.tif.")],
    axes: Annotated[str, typer.Option(help="Axes of every array, e.g. YX, SYX, CYX, SCYX, TYX.")] = "YX",
    pattern: Annotated[str, typer.Option(help="Glob pattern inside the PREDICTION folder, e.g. '*_mmse.tif'.")] = "*",
    noisy: Annotated[Optional[Path], typer.Option(help="The noisy inputs (file or folder), scored too to show the gain.", show_default=False)] = None,
    data_range: Annotated[Optional[float], typer.Option(help="Peak-to-peak range for PSNR and SSIM (default: each target image's max - min).", show_default=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores to this JSON file.", show_default=False)] = None,
    panel: Annotated[Optional[Path], typer.Option(help="Write a PNG of centre crops: noisy / prediction / target / |error|.", show_default=False)] = None,
    crop: Annotated[int, typer.Option(help="Side of the panel's centre crops, in pixels.")] = 256,
) -> None:
    """PSNR (dB) and SSIM of denoised images against ground truth, per image and mean; optional JSON and PNG panel."""
    result = api.evaluate(prediction, target, axes=axes, pattern=pattern, noisy=noisy, data_range=data_range,
                          crop=crop)
    typer.echo(result.format_table())
    if json_out is not None:
        api.save_scores(result, json_out)
        _say(f"scores written: {json_out}")
    if panel is not None:
        _say(f"panel written: {result.write_panel(panel)}")


# -- inspect --------------------------------------------------------------------
@app.command("inspect")
def inspect_noise(
    data: Annotated[List[Path], typer.Argument(help="Noisy image files or folders (TIFF, NPY, PNG).")],
    axes: Annotated[str, typer.Option(help="Axes of the stored arrays, e.g. YX, SYX, CYX, TYX; with Z (ZYX, SZYX, CZYX) the images are volumes and the correlation along z is measured too.")] = "YX",
    pattern: Annotated[str, typer.Option(help="Glob pattern inside folders.")] = "*",
    out: Annotated[Path, typer.Option(help="The PNG report (a JSON with the same name is written beside it).")] = Path("noise_report.png"),
    run: Annotated[Optional[Path], typer.Option(help="Noise = residual against this trained run's prediction.", show_default=False)] = None,
    dark: Annotated[Optional[List[Path]], typer.Option(help="Noise from dark frames (files or folders) instead of DATA.", show_default=False)] = None,
    dark_axes: Annotated[Optional[str], typer.Option(help="Axes of the dark frames (default: --axes).", show_default=False)] = None,
    region: Annotated[Optional[str], typer.Option(help="Noise from an empty region of every image: Y0:Y1,X0:X1.", show_default=False)] = None,
    smooth_sigma: Annotated[float, typer.Option(help="Default source: Gaussian smoothing (px) the noise is the residual of.")] = 2.0,
    samples: Annotated[int, typer.Option(help="With --run: posterior samples per prediction.")] = 20,
    crop_size: Annotated[int, typer.Option(help="Training crop size (caps the StructN2V mask span).")] = 64,
    max_lag: Annotated[int, typer.Option(help="Largest lag measured, in pixels.")] = 16,
    threshold: Annotated[float, typer.Option(help="Correlation above which the noise counts as correlated.")] = 0.1,
) -> None:
    """Estimate the noise from the data: its spatial correlation (x, y, z for volumes; 2-D map), variance against signal, and
    each method's settings for it (COSDD --direction, StructN2V --struct-mask, whether a pixel noise model fits)."""
    report = api.inspect(
        data, axes, out, pattern=pattern, run=run, dark=dark, dark_axes=dark_axes, region=region,
        smooth_sigma=smooth_sigma, samples=samples, crop_size=crop_size, max_lag=max_lag, threshold=threshold,
        say=_say,
    )
    for line in report.summary_lines():
        typer.echo(line)
    _say(f"report written: {out} and {out.with_suffix('.json')}")


# -- package / validate ---------------------------------------------------------
@app.command()
def package(
    run: Annotated[Path, typer.Argument(help="Run folder of a trained model.")],
    out: Annotated[Path, typer.Option(help="The package zip to write.")] = Path("model.zip"),
    estimator: Annotated[Optional[str], typer.Option(help=f"What the package computes (default: the method's first): {_ESTIMATORS}.", show_default=False)] = None,
    outputs: Annotated[Optional[str], typer.Option(help="Sampling models: mmse (one output, for ilastik; the default), mmse,std or mmse,std,samples.", show_default=False)] = None,
    samples: Annotated[int, typer.Option(help="Posterior samples averaged inside the model.")] = 100,
    sample_batch: Annotated[int, typer.Option(help="Samples decoded at once inside the model.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the in-graph sampling (recorded in the package).")] = 0,
    name: Annotated[Optional[str], typer.Option(help="Model name shown on bioimage.io.")] = None,
    description: Annotated[Optional[str], typer.Option(help="One-sentence description.")] = None,
    author: Annotated[Optional[List[str]], typer.Option(help="'Name; Affiliation' (repeat for several).")] = None,
    maintainer: Annotated[Optional[List[str]], typer.Option(help="GitHub user name of who maintains the package on bioimage.io (repeat for several; checked offline).", show_default=False)] = None,
    version: Annotated[Optional[str], typer.Option(help="The model's version (not the library's).")] = None,
    license: Annotated[Optional[str], typer.Option(help="SPDX licence of the weights.")] = None,
    meta: Annotated[Optional[Path], typer.Option(help="YAML with name, description, authors, maintainers, version, license, tags.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device for validation: cpu or cuda.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Package a run whose quality check flagged it (collapsed latent, or estimated worse than its input).")] = False,
) -> None:
    """Package a trained run for the BioImage Model Zoo and validate every weight format."""
    metadata = api.package_meta(meta, name=name, description=description, authors=author or [], version=version,
                                maintainers=maintainer or [], license=license)
    options = api.ExportOptions(
        estimator=estimator, outputs=tuple(o.strip() for o in outputs.split(",") if o.strip()) if outputs else None,
        samples=samples, sample_batch=sample_batch, seed=seed,
    )
    result = api.package(run, out, options, metadata, device=device, say=_say, force=force)
    for note in result.notes:
        _say(note)
    if result.validation:
        typer.echo(api.format_validation(result.validation))
    if result.timing is not None:
        typer.echo(f"measured cost: {result.timing.sentence()}")
    typer.echo(f"package written: {result.path} ({', '.join(result.weight_formats)})")


@app.command()
def validate(
    package: Annotated[Path, typer.Argument(help="A bioimage.io model package (zip).")],
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: bioimageio.core's choice).")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code", help=_TRUST_HELP)] = False,
) -> None:
    """Run bioimageio.core's test for every weight format at default tolerance (offline)."""
    results = api.validate(package, device=device, trust_code=trust_code)
    typer.echo(api.format_validation(results))
    if not all(r.passed for r in results):
        raise typer.Exit(1)


@app.command()
def check(
    package: Annotated[Path, typer.Argument(help="A bioimage.io model package (zip).")],
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda for the tests (default: core's choice).")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code", help=_TRUST_HELP)] = False,
) -> None:
    """Will the package run in bioimageio.core, deepImageJ, ilastik and BioEngine? Rule by rule (exit 1 if core fails)."""
    checks = api.check(package, device=device, trust_code=trust_code)
    typer.echo(api.format_checks(checks))
    if not api.core_passed(checks):
        raise typer.Exit(1)


def _ask_on_terminal(question: str) -> Optional[str]:
    """An answer typed at the terminal; None when nobody is there to ask (standard input is not a terminal)."""
    if not sys.stdin.isatty():
        return None
    return typer.prompt(question)


@app.command()
def upload(
    package: Annotated[Path, typer.Argument(help="A bioimage.io model package (zip) that passes validation.")],
    server: Annotated[str, typer.Option(help="Hypha server of the artifact manager.")] = "https://hypha.aicell.io",
    resume: Annotated[Optional[str], typer.Option(help="Complete the staged draft ID left by a failed upload.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(help="Do every check and print what would be sent; send nothing.")] = False,
    skip_validation: Annotated[bool, typer.Option(help="Do not run bioimageio.core's test again (it passed already).")] = False,
    maintainer: Annotated[Optional[str], typer.Option(help="Your GitHub user name, added as the model's maintainer to the uploaded rdf.yaml if the package names none (asked for on a terminal).", show_default=False)] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code", help="Let the validation run Python from the package that bmz-cosdd did not write.")] = False,
) -> None:
    """Stage the package in the BioImage Model Zoo's collection and request review (curators publish).

    The token comes from BIOIMAGEIO_HYPHA_UPLOAD_TOKEN or a hidden prompt; it is never printed.
    A package that names no maintainer needs --maintainer (or an answer at the prompt on a terminal)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    plan = api.prepare_upload(package, server, maintainer=maintainer, skip_validation=skip_validation,
                              trust_code=trust_code, ask_maintainer=_ask_on_terminal, say=_say)
    if dry_run:
        typer.echo(plan.describe())
        typer.echo("dry run: nothing was sent")
        return
    token = api.upload_token()
    if token is None:
        if not sys.stdin.isatty():
            raise api.UserError("no upload token: set BIOIMAGEIO_HYPHA_UPLOAD_TOKEN (there is no terminal to ask for it)")
        token = typer.prompt("Hypha upload token", hide_input=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), transient=True) as bar:
        task = bar.add_task("upload", total=sum(f.size for f in plan.files))
        result = api.upload(plan, token, resume=resume,
                            on_file=lambda name, done, total: bar.update(task, completed=done, description=name))
    kept = f", {len(result.kept)} already stored intact" if result.kept else ""
    _say(f"{len(result.sent)} files sent and verified by SHA-256{kept}; review requested (curators publish)")
    typer.echo(f"{result.artifact_id}  {result.url}")


# -- noise models ---------------------------------------------------------------
@noise_app.command("fit")
def noise_model_fit(
    data: Annotated[Optional[List[Path]], typer.Argument(help="With --bootstrap: the noisy images to denoise.", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="The model file (.npz); its plot is written beside it (.png).")] = Path("noise_model.npz"),
    calibration: Annotated[Optional[Path], typer.Option(help="Stack of frames of a static scene; signal = their average.", show_default=False)] = None,
    bootstrap: Annotated[Optional[Path], typer.Option(help="Run folder or package of any method; signal = its prediction.", show_default=False)] = None,
    axes: Annotated[Optional[str], typer.Option(help="Axes of the stack (default TYX) or of DATA (default YX).", show_default=False)] = None,
    pattern: Annotated[str, typer.Option(help="Glob pattern inside DATA folders.")] = "*",
    kind: Annotated[str, typer.Option(help="gmm (Gaussian mixture) or histogram.")] = "gmm",
    n_gaussians: Annotated[int, typer.Option(help="GMM: Gaussians.")] = 3,
    n_coeffs: Annotated[int, typer.Option(help="GMM: polynomial coefficients per parameter.")] = 2,
    min_sigma: Annotated[Optional[float], typer.Option(help="GMM: variance floor in raw units (default: from the data).", show_default=False)] = None,
    bins: Annotated[int, typer.Option(help="Histogram: bins per axis.")] = 256,
    percentiles: Annotated[str, typer.Option(help="Signal range covered (percentiles); signals outside are clipped.")] = "0.5,99.5",
    steps: Annotated[int, typer.Option(help="GMM: optimiser steps.")] = 2000,
    seed: Annotated[int, typer.Option(help="GMM: seed of the mini-batches.")] = 0,
) -> None:
    """Fit a pixel noise model from a calibration stack or bootstrapped from a trained model."""
    try:
        low, high = (float(v) for v in percentiles.split(","))
    except ValueError:
        raise api.UserError(f"--percentiles needs two numbers like 0.5,99.5, got {percentiles!r}") from None
    result = api.fit_noise_model(
        out, calibration=calibration, bootstrap=bootstrap, inputs=data or [], axes=axes, pattern=pattern, kind=kind,
        n_gaussians=n_gaussians, n_coeffs=n_coeffs, min_sigma=min_sigma, bins=bins, percentiles=(low, high),
        steps=steps, seed=seed,
    )
    for warning in result.warnings:
        _say(f"warning: {warning}")
    model = result.model
    ranges = ", ".join(f"{lo:.4g} to {hi:.4g}" for lo, hi in zip(model.min_signal, model.max_signal))
    _say(f"{model.kind} noise model from {model.info.get('n_pairs', '?')} pairs, signal range {ranges}")
    typer.echo(str(result.path))
    typer.echo(str(result.plot))


# -- demo -----------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for data, run, denoised images, figure and package.")] = Path("demo_output"),
    steps: Annotated[int, typer.Option(help="Training steps.")] = 1000,
    budget: Annotated[float, typer.Option(help="Time cap of the training in seconds (says so when it binds).")] = 600.0,
    samples: Annotated[int, typer.Option(help="Posterior samples for the MMSE (in the package too).")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of data, model and sampling.")] = 0,
    package: Annotated[bool, typer.Option(help="Package the model and validate it with bioimageio.core.")] = True,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Synthetic row-correlated noise -> train COSDD -> denoise (PSNR, figure) -> package -> validate."""
    result = api.demo(out, steps=steps, budget=budget, samples=samples, seed=seed, package=package,
                      progress=not quiet, say=typer.echo)
    if result.package_valid is False:
        raise typer.Exit(1)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(api.__version__)
        raise typer.Exit()


_THREADS = inspect.Parameter(
    "threads", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[int], typer.Option(
        "--threads", help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the CPUs this process may "
        "use: affinity mask, cgroup quota, SLURM_CPUS_PER_TASK).", rich_help_panel="Machine")],
)


def _as_typed(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: every path argument taken as typed (``~`` too, also when quoted), and ``--threads``."""
    import functools

    @functools.wraps(callback)
    def wrapper(**kwargs: Any) -> Any:
        api.configure_threads(kwargs.pop("threads", None))
        for name, value in kwargs.items():
            if isinstance(value, Path):
                kwargs[name] = value.expanduser()
            elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
                kwargs[name] = [v.expanduser() for v in value]
        return callback(**kwargs)

    signature = inspect.signature(callback, eval_str=True)  # typer reads a given __signature__ as it stands
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), _THREADS])
    return wrapper


for _typer_app in (app, train_app, noise_app):
    for _command in _typer_app.registered_commands:
        _command.callback = _as_typed(_command.callback)


_PATH_PROBLEMS = {
    FileExistsError: "a file is in the way of a folder that must be made there",
    NotADirectoryError: "a file is in the way of a folder on this path",
    IsADirectoryError: "is a folder, a file is needed",
    PermissionError: "permission denied",
}


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (said once under torchrun: by rank 0)."""
    import os

    from typer._click.exceptions import ClickException  # typer vendors click

    speaks = os.environ.get("RANK", "0") == "0"
    try:
        code = app(args=argv, standalone_mode=False)
    except api.UserError as exc:
        if speaks:
            typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except api.SettingsError as exc:  # a settings value refused where no section prefix was at hand
        if speaks:
            typer.echo(f"error: {api.settings_message(exc)}", err=True)
        sys.exit(2)
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        # A path the user gave cannot be made or written: a file where a folder must go, or no permission.
        if speaks:
            typer.echo(f"error: {exc.filename}: {_PATH_PROBLEMS.get(type(exc), exc.strerror)}", err=True)
        sys.exit(2)
    except api.TrainingDiverged as exc:
        if speaks:
            typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        if speaks:
            typer.echo("interrupted", err=True)
        sys.exit(130)  # 128 + SIGINT, as shells expect
    except ClickException as exc:  # usage errors: one line, exit 2 (``--help`` shows the usage)
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
