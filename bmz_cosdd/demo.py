"""The demo, the main job end to end: synthetic row-correlated data -> inspect the noise -> train COSDD for a set
number of steps (with a time cap) -> denoise -> PSNR/SSIM and a figure -> package for the BioImage Model Zoo ->
validate it with bioimageio.core -> how to open it in deepImageJ, ilastik and Python."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.analysis.noise_inspection import inspect_files
from bmz_cosdd.analysis.metrics import psnr, ssim
from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.plotting import pyplot, save_figure
from bmz_cosdd.errors import UserError
from bmz_cosdd.training.session import resolve_config, train


# Shot noise plus clearly visible horizontal stripes (correlation about 0.4 between
# horizontal neighbours, none between vertical ones): noisy PSNR about 22 dB.
DEMO_NOISE = {"gain": 0.01, "read_sigma": 0.02, "stripe_sigma": 0.15, "blur_sigma": 3.0}


@dataclass
class DemoResult:
    """What the demo measured and wrote."""

    psnr_noisy: float
    psnr_mmse: float
    ssim_noisy: float
    ssim_mmse: float
    direction: str
    steps: int
    train_seconds: float
    run_dir: Path
    figure: Path
    denoised: Path
    noise_report: Path
    package: Path | None = None
    package_valid: bool | None = None
    under_trained: bool = False


def run_demo(
    out_dir: str | Path = "demo_output",
    steps: int = 1000,
    budget: float = 600.0,
    samples: int = 50,
    seed: int = 0,
    preset: str = "tiny",
    package: bool = True,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Synthetic row-correlated noise -> train COSDD -> denoise (PSNR, figure) -> package -> validate.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Folder for the data, run, denoised images, figure and package (must not hold a demo run).
    steps : int
        Training steps.
    budget : float
        Time cap of the training in seconds (the demo says so when it binds).
    samples : int
        Posterior samples for the MMSE (in the package too).
    seed : int
        Seed of the data, the model and the sampling.
    preset : str
        COSDD architecture preset.
    package : bool
        Also package the model and validate it with bioimageio.core.
    progress : bool
        Show a progress bar.
    say : callable
        Receives the demo's report, line by line (default: standard output).

    Returns
    -------
    DemoResult
        PSNR and SSIM of the noisy and denoised images, the paths written and whether the
        package validated (``package_valid``: ``None`` without ``package``).

    Raises
    ------
    bmz_cosdd.errors.UserError
        ``out_dir`` already holds a demo run, or bad settings.
    """
    from bmz_cosdd.export.package import PackageMeta, package_run
    from bmz_cosdd.methods.base import ExportOptions

    out = Path(out_dir)
    config = {
        "method": "cosdd",
        "model": {"preset": preset, "direction": "auto"},  # measured as inspect does
        "data": {"paths": [str(out / "data" / "train_noisy.tif")], "axes": "SYX", "crop_size": 64,
                 "val_fraction": 0.25, "val_crops": 8},
        "train": {"batch_size": 4, "max_steps": steps, "max_time": budget, "max_epochs": None,
                  "steps_per_epoch": 50, "patience": 1000, "seed": seed},
    }
    # Every setting is checked before anything is written or trained.
    for option, value in (("--samples", samples), ("--steps", steps)):
        if value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    if not 0 < budget < float("inf"):
        raise UserError(f"--budget must be a positive number of seconds, got {budget}")
    resolve_config(config)
    data = make_dataset("mixed", "row_correlated", n=10, shape=(128, 128), seed=seed, **DEMO_NOISE)
    train_noisy, test_noisy, test_clean = data.noisy[:8], data.noisy[8:], data.clean[8:]
    write_tiff(out / "data" / "train_noisy.tif", train_noisy, "SYX")
    write_tiff(out / "data" / "test_noisy.tif", test_noisy, "SYX")
    write_tiff(out / "data" / "test_clean.tif", test_clean.astype(np.float32), "SYX")
    say(f"data: 8 training and 2 held-out 128x128 images with row-correlated noise in {out / 'data'}")
    noise_report = out / "noise_report.png"
    inspection = inspect_files([out / "data" / "train_noisy.tif"], "SYX", noise_report, crop_size=64)
    say(f"inspect: {inspection.correlation.describe()}; report in {noise_report}")

    run_dir = out / "run"
    result = train(config, run_dir, progress=progress)
    say(f"trained {result.steps} steps in {result.seconds:.0f} s ({result.steps_per_s:.2f} steps/s), run in {run_dir}")
    under_trained = result.stopped == "time" and result.steps < steps
    if under_trained:
        say(f"the {budget:g} s time cap stopped training after {result.steps} of {steps} steps: the model is"
            f" under-trained (a busy machine?). Give it more time: bmz-cosdd demo --budget {2 * budget:g}, or"
            f" continue this run: bmz-cosdd train cosdd --resume --out {run_dir} --max-time {2 * budget:g}")
    if result.quality is not None:
        for line in result.quality.lines("cosdd", run_dir):
            say(line)

    trained = load_run(run_dir)
    options = PredictOptions(estimator="mmse", samples=samples, sample_batch=10)
    mmse, std = [], []
    for image in test_noisy:
        out_img = predict_image(trained, image[None], options, seed=seed)
        mmse.append(out_img["mmse"][0])
        std.append(out_img["std"][0])
    mmse_arr, std_arr = np.stack(mmse), np.stack(std)
    denoised = out / "test_mmse.tif"
    write_tiff(denoised, mmse_arr, "SYX")
    std_path = out / "test_std.tif"
    write_tiff(std_path, std_arr, "SYX")
    p_noisy = float(np.mean([psnr(n, c) for n, c in zip(test_noisy, test_clean)]))
    p_mmse = float(np.mean([psnr(m, c) for m, c in zip(mmse_arr, test_clean)]))
    s_noisy = float(np.mean([ssim(n, c) for n, c in zip(test_noisy, test_clean)]))
    s_mmse = float(np.mean([ssim(m, c) for m, c in zip(mmse_arr, test_clean)]))
    figure = out / "demo.png"
    _figure(test_noisy, mmse_arr, std_arr, test_clean, p_noisy, p_mmse, samples, figure)
    say(f"PSNR on held-out images (data range: each clean image's max - min): noisy {p_noisy:.2f} dB ->"
        f" COSDD MMSE ({samples} samples) {p_mmse:.2f} dB; SSIM {s_noisy:.3f} -> {s_mmse:.3f}")
    if p_mmse <= p_noisy:
        say(f"the COSDD output is NOT better than the noisy input ({p_mmse:.2f} <= {p_noisy:.2f} dB): the model is"
            " under-trained; give it more steps or time (--steps, --budget)")
    say(f"denoised: {denoised} (MMSE), {std_path} (posterior standard deviation); figure: {figure}")
    demo = DemoResult(p_noisy, p_mmse, s_noisy, s_mmse, trained.config.model.direction, result.steps,
                      result.seconds, run_dir, figure, denoised, noise_report, under_trained=under_trained)
    if not package:
        return demo
    zip_path = out / "demo.zip"
    say(f"packaging for the BioImage Model Zoo and validating with bioimageio.core ({samples} samples in the model)")
    packaged = package_run(
        run_dir, zip_path, ExportOptions(samples=samples), PackageMeta(name="bmz-cosdd demo COSDD"),
        say=say, force=True,
    )
    demo.package = packaged.path
    demo.package_valid = bool(packaged.validation) and all(r.passed for r in packaged.validation)
    verdict = "passed" if demo.package_valid else "FAILED"
    say(f"package: {packaged.path} ({', '.join(packaged.weight_formats)}); bioimageio.core's test {verdict}")
    if packaged.timing is not None:
        say(f"measured cost: {packaged.timing.sentence()}")
    for line in _how_to_open(packaged.path):
        say(line)
    return demo


def _how_to_open(package: Path) -> list[str]:
    return [
        "open it in:",
        f"  deepImageJ: DeepImageJ Install Model -> choose {package}; open a 2-D image; DeepImageJ Run",
        f"  ilastik:    Neural Network Classification -> load {package} (one input, one output)",
        f"  Python:     bioimageio.core.predict(model=\"{package}\", inputs=image[None, None])",
        f"  bmz-cosdd:  bmz-cosdd predict {package} image.tif --out denoised/",
    ]


def _figure(noisy, mmse, std, clean, p_noisy, p_mmse, samples, path: Path) -> None:
    plt = pyplot()
    rows = len(noisy)
    fig, axes = plt.subplots(rows, 4, figsize=(13, 3.3 * rows), squeeze=False)
    for r in range(rows):
        lo, hi = np.percentile(clean[r], [0.5, 99.5])
        panels = [
            (noisy[r], f"noisy ({psnr(noisy[r], clean[r]):.1f} dB)", "gray", (lo, hi)),
            (mmse[r], f"COSDD MMSE, {samples} samples ({psnr(mmse[r], clean[r]):.1f} dB)", "gray", (lo, hi)),
            (std[r], "posterior std", "magma", (None, None)),
            (clean[r], "clean", "gray", (lo, hi)),
        ]
        for ax, (img, title, cmap, (vmin, vmax)) in zip(axes[r], panels):
            shown = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="intensity")
    fig.suptitle(f"bmz-cosdd demo: row-correlated noise, mean PSNR {p_noisy:.2f} dB -> {p_mmse:.2f} dB")
    save_figure(fig, path)
