"""Train methods through the CLI on synthetic noisy images, denoise held-out ones, print JSON.

Measures what a user would: PSNR of noisy and denoised against the clean images,
whether the correlated noise left the image (the residual's correlation between
neighbours and the power of its row and column means, i.e. stripes), the power
above the PSF's cut-off frequency (high-frequency artefacts), and, with
``--package``, whether each method's package passes bioimageio.core's test.

Examples
--------
    python scripts/evaluate_synthetic.py --methods cosdd --extra-cosdd "--preset small" --budget 600
    python scripts/evaluate_synthetic.py --methods cosdd,n2v,n2v2,structn2v,psf-n2v --budget 240 --package
    python scripts/evaluate_synthetic.py --noise poisson_gaussian --blur 2 --methods n2v,psf-n2v \\
        --extra-psf-n2v "--psf-sigma 2"
    python scripts/evaluate_synthetic.py --noise poisson_gaussian --methods n2v,divnoising,hdn \\
        --extra-hdn "--features 32 --blocks-per-level 2"
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import NOISE_RECIPES, make_clean
from bmz_cosdd.demo import DEMO_NOISE
from bmz_cosdd.analysis.metrics import psnr
from bmz_cosdd.methods.registry import get_method


def residual_stats(images: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    r = images.astype(np.float64) - clean
    r = r - r.mean(axis=(1, 2), keepdims=True)
    lag_x = np.mean([np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1] for x in r])
    lag_y = np.mean([np.corrcoef(x[:-1].ravel(), x[1:].ravel())[0, 1] for x in r])
    return {
        "corr_lag1_x": float(lag_x),
        "corr_lag1_y": float(lag_y),
        "row_mean_power": float(np.mean(r.mean(axis=2) ** 2)),
        "column_mean_power": float(np.mean(r.mean(axis=1) ** 2)),
    }


def power_above(images: np.ndarray, cutoff: float) -> float:
    """Mean spectral power of ``images`` (mean removed) at radial frequencies above ``cutoff`` cycles/px."""
    x = images.astype(np.float64) - images.mean(axis=(1, 2), keepdims=True)
    spectrum = np.abs(np.fft.fft2(x)) ** 2 / (x.shape[1] * x.shape[2])
    fy = np.fft.fftfreq(x.shape[1])[:, None]
    fx = np.fft.fftfreq(x.shape[2])[None, :]
    return float(spectrum[:, np.hypot(fy, fx) > cutoff].mean())


def gaussian_cutoff(sigma: float, level: float = 0.01) -> float:
    """Frequency (cycles/px) where a Gaussian PSF's transfer function falls to ``level``."""
    return math.sqrt(math.log(1.0 / level) / (2.0 * math.pi**2 * sigma**2))


def make_data(kind: str, noise: str, params: dict, n: int, size: int, blur: float, seed: int):
    from scipy.ndimage import gaussian_filter

    clean = make_clean(kind, n, (size, size), seed)
    if blur > 0:  # a diffraction-limited (band-limited) ground truth
        clean = np.stack([gaussian_filter(c, blur, mode="reflect") for c in clean])
    rng = np.random.default_rng([seed, 7])
    return clean, NOISE_RECIPES[noise](clean, rng, **params).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="cosdd",
                        help="comma-separated registered methods; LABEL=METHOD runs a method twice, e.g. hdn36=hdn")
    parser.add_argument("--budget", type=float, default=300, help="training seconds per method")
    parser.add_argument("--noise", default="row_correlated")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian PSF sigma applied to the clean images")
    parser.add_argument("--kind", default="mixed")
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--package", action="store_true", help="also package and validate every run")
    parser.add_argument("--calibration-frames", type=int, default=20,
                        help="frames of a static scene (same noise) for the noise model of divnoising/hdn")
    parser.add_argument("--out", type=Path, default=None)
    args, rest = parser.parse_known_args()
    # --extra-<method> "options" passes options to that method's train command.
    extras: dict[str, list[str]] = {}
    for flag, value in zip(rest[::2], rest[1::2]):
        if not flag.startswith("--extra-"):
            parser.error(f"unknown option {flag}")
        extras[flag[len("--extra-"):]] = value.split()
    entries = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs = [m.split("=", 1) if "=" in m else [m, m] for m in entries]
    methods = [method for _, method in runs]
    out = args.out or Path(tempfile.mkdtemp(prefix="bmz-eval-"))
    out.mkdir(parents=True, exist_ok=True)
    params = DEMO_NOISE if args.noise == "row_correlated" else {}
    _, train_noisy = make_data(args.kind, args.noise, params, args.n_train, args.size, args.blur, 101)
    clean, test_noisy = make_data(args.kind, args.noise, params, args.n_test, args.size, args.blur, 202)
    write_tiff(out / "train.tif", train_noisy, "SYX")
    write_tiff(out / "test.tif", test_noisy, "SYX")
    cli = [sys.executable, "-m", "bmz_cosdd"]
    needs_noise_model = {m for m in methods if any(p.name == "noise_model" for p in get_method(m).cli_options())}
    if needs_noise_model:
        # A calibration stack: one static scene recorded many times with the same noise.
        scene, _ = make_data(args.kind, args.noise, params, 1, args.size, args.blur, 303)
        rng = np.random.default_rng([303, 1])
        frames = np.stack([NOISE_RECIPES[args.noise](scene, rng, **params)[0] for _ in range(args.calibration_frames)])
        write_tiff(out / "calibration.tif", frames.astype(np.float32), "TYX")
        subprocess.run(cli + ["noise-model", "fit", "--calibration", str(out / "calibration.tif"),
                              "--out", str(out / "noise_model.npz")], check=True, capture_output=True)
        for label, method in runs:
            if method in needs_noise_model:
                extras[label] = ["--noise-model", str(out / "noise_model.npz"), *extras.get(label, [])]
    cutoff = gaussian_cutoff(args.blur) if args.blur > 0 else None
    report = {
        "noise": args.noise, "noise_params": params, "clean_blur_sigma": args.blur, "budget_s": args.budget,
        "images": f"{args.n_train} train / {args.n_test} held-out, {args.size}x{args.size}, kind {args.kind}",
        "psnr_noisy": float(np.mean([psnr(n, c) for n, c in zip(test_noisy, clean)])),
        "residual_noisy": residual_stats(test_noisy, clean), "methods": {}, "out": str(out),
    }
    if cutoff is not None:
        report["psf_cutoff_cycles_per_px"] = cutoff
        report["power_above_cutoff"] = {"clean": power_above(clean, cutoff), "noisy": power_above(test_noisy, cutoff)}
    for label, method in runs:
        run = out / f"run_{label}"
        start = time.time()
        trained = subprocess.run(
            cli + ["train", method, str(out / "train.tif"), "--axes", "SYX", "--max-time", str(args.budget),
                   "--batch-size", str(args.batch_size), "--crop-size", str(args.crop_size), "--out", str(run),
                   "--quiet", *extras.get(label, [])],
            check=True, capture_output=True, text=True,
        )
        train_s = time.time() - start
        start = time.time()
        subprocess.run(cli + ["predict", str(run), str(out / "test.tif"), "--axes", "SYX", "--samples",
                              str(args.samples), "--out", str(out / f"pred_{label}")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        predict_s = time.time() - start
        name = next(p for p in sorted((out / f"pred_{label}").glob("test_*.tif")) if "_std" not in p.name
                    and "_samples" not in p.name)
        denoised = tifffile.imread(name)
        result = {
            "train": trained.stderr.strip().splitlines()[-1], "train_wall_s": train_s, "predict_wall_s": predict_s,
            "output": name.name, "psnr": float(np.mean([psnr(d, c) for d, c in zip(denoised, clean)])),
            "residual": residual_stats(denoised, clean),
            "chose": [line for line in trained.stderr.splitlines() if "auto" in line],
        }
        if cutoff is not None:
            result["power_above_cutoff"] = power_above(denoised, cutoff)
        if args.package:
            packaged = subprocess.run(
                cli + ["package", str(run), "--out", str(out / f"{label}.zip"), "--samples", "20"],
                capture_output=True, text=True,
            )
            result["package"] = {"exit_code": packaged.returncode, "report": packaged.stdout.strip().splitlines()}
        report["methods"][label] = {"method": method, "options": extras.get(label, []), **result}
        print(json.dumps({label: result}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
