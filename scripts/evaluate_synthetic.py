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
    python scripts/evaluate_synthetic.py --kind real --presets tiny,small,reference,large \\
        --curve 60,120,300,600 --samples 20 --write-curves bmz_cosdd/methods/cosdd/preset_curves.json

``--curve`` measures PSNR against training time: each run trains to the first time, predicts, is
resumed (``train --resume``, exactly as if never stopped) to the next time, predicts, and so on; the
report's ``curves`` give PSNR and SSIM at each time with the steps reached. ``--presets`` is short
for one COSDD run per preset (``LABEL=cosdd --extra-LABEL "--preset LABEL"``). ``--kind real``
takes the clean images from real micrograph and photograph tiles shipped with scikit-image
(:mod:`bmz_cosdd.data.real_images`: 56 training, 27 held-out tiles of 128 x 128) with the paper's
FFHQ-Stripe noise (``row_correlated`` at its defaults) instead of the demo's generator.
``--write-curves`` stores the curves where ``--preset auto`` reads them
(:mod:`bmz_cosdd.methods.cosdd.preset_choice`); ``--merge-curves A.json B.json --write-curves OUT``
averages such files (e.g. two training seeds, ``--extra-tiny "--seed 1"``) point by point, keeping each
file's PSNR in ``psnr_runs``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from bmz_cosdd.analysis.metrics import psnr, ssim
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

    if kind == "real":  # every tile of the split: n and size do not apply
        from bmz_cosdd.data.real_images import real_tiles

        clean = real_tiles("train" if seed == 101 else "test").astype(np.float32)
    else:
        clean = make_clean(kind, n, (size, size), seed)
    if blur > 0:  # a diffraction-limited (band-limited) ground truth
        clean = np.stack([gaussian_filter(c, blur, mode="reflect") for c in clean])
    rng = np.random.default_rng([seed, 7])
    return clean, NOISE_RECIPES[noise](clean, rng, **params).astype(np.float32)


def last_validation(metrics: Path) -> tuple[int, float]:
    """(steps, training seconds) at the run's last validation, from its ``metrics.jsonl``."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    last = [r for r in records if r.get("kind") == "val"][-1]
    return int(last["step"]), float(last["time"])


def write_curves(path: Path, report: dict, times: list[float]) -> None:
    """The presets' curves as ``--preset auto`` reads them (:mod:`bmz_cosdd.methods.cosdd.preset_choice`)."""
    if len(times) < 2:
        raise SystemExit("--write-curves needs --curve with at least two times")
    runs = {label: r for label, r in report["methods"].items() if r["method"] == "cosdd"}
    data = {
        "what": "PSNR (dB) of COSDD's MMSE against training time for each preset, measured by"
                " scripts/evaluate_synthetic.py; read by --preset auto",
        "command": [report["command"]], "date": [time.strftime("%Y-%m-%d")], "device": "cpu",
        "threads": report["threads"], "cpus": report["cpus"], "samples": report["samples"],
        "images": report["images"], "psnr_noisy": round(report["psnr_noisy"], 3),
        "noise": ("FFHQ-Stripe (row_correlated)" if report["noise"] == "row_correlated" and "real" in report["images"]
                  else report["noise"]),
        "presets": {label: {"batch_size": report["batch_size"], "crop_size": report["crop_size"],
                            "points": r["curve"]} for label, r in runs.items()},
    }
    _write_json(path, data)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def merge_curves(paths: list[Path], out: Path) -> None:
    """Average curves files point by point (PSNR, SSIM, steps, seconds), e.g. two training seeds; a preset
    in only some files keeps the mean of those. The files must share images, noise and threads, and a
    preset its batch, crop and times."""
    files = [json.loads(Path(p).read_text()) for p in paths]
    keys = ("threads", "images", "noise", "samples")
    for other in files[1:]:
        if any(other[k] != files[0][k] for k in keys):
            raise SystemExit(f"--merge-curves: the files differ in {', '.join(k for k in keys if other[k] != files[0][k])}")
    merged = dict(files[0], command=[c for f in files for c in f["command"]], date=[d for f in files for d in f["date"]])
    presets = {}
    for name in dict.fromkeys(n for f in files for n in f["presets"]):
        entries = [f["presets"][name] for f in files if name in f["presets"]]
        shapes = {(e["batch_size"], e["crop_size"], tuple(p["time_s"] for p in e["points"])) for e in entries}
        if len(shapes) > 1:
            raise SystemExit(f"--merge-curves: {name} was measured with different batches, crops or times")
        points = []
        for same in zip(*(e["points"] for e in entries)):
            runs = [r for p in same for r in p.get("psnr_runs", [p["psnr"]])]
            points.append({
                "time_s": same[0]["time_s"],
                "trained_s": round(float(np.mean([p["trained_s"] for p in same])), 1),
                "steps": int(round(np.mean([p["steps"] for p in same]))),
                "psnr": round(float(np.mean(runs)), 3),
                "ssim": round(float(np.mean([p["ssim"] for p in same])), 4),
                "psnr_runs": runs,
            })
        presets[name] = {"batch_size": entries[0]["batch_size"], "crop_size": entries[0]["crop_size"],
                         "points": points}
    merged["presets"] = presets
    _write_json(out, merged)
    print(json.dumps({name: {f"{p['time_s']:g}": p["psnr_runs"] for p in e["points"]} for name, e in presets.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="cosdd",
                        help="comma-separated registered methods; LABEL=METHOD runs a method twice, e.g. hdn36=hdn")
    parser.add_argument("--budget", type=float, default=300, help="training seconds per method")
    parser.add_argument("--noise", default="row_correlated")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian PSF sigma applied to the clean images")
    parser.add_argument("--kind", default="mixed",
                        help="the generator's kind (mixed, ...), or real: tiles of real images (see above)")
    parser.add_argument("--presets", default=None,
                        help="comma-separated COSDD presets, one run each (adds to --methods)")
    parser.add_argument("--curve", default=None,
                        help="comma-separated training times in seconds: PSNR at each (replaces --budget)")
    parser.add_argument("--write-curves", type=Path, default=None,
                        help="with --curve and --presets: write the curves for --preset auto to this JSON file")
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
    parser.add_argument("--merge-curves", type=Path, nargs="+", default=None,
                        help="average these curves files into --write-curves, and nothing else")
    args, rest = parser.parse_known_args()
    if args.merge_curves:
        if args.write_curves is None:
            parser.error("--merge-curves needs --write-curves")
        merge_curves(args.merge_curves, args.write_curves)
        return
    # --extra-<method> "options" passes options to that method's train command.
    extras: dict[str, list[str]] = {}
    for flag, value in zip(rest[::2], rest[1::2]):
        if not flag.startswith("--extra-"):
            parser.error(f"unknown option {flag}")
        extras[flag[len("--extra-"):]] = value.split()
    entries = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.presets:
        presets = [p.strip() for p in args.presets.split(",") if p.strip()]
        entries = [e for e in entries if e != "cosdd" or "--methods" in sys.argv] + [f"{p}=cosdd" for p in presets]
        for p in presets:
            extras[p] = ["--preset", p, *extras.get(p, [])]
    times = [float(t) for t in args.curve.split(",")] if args.curve else [args.budget]
    runs = [m.split("=", 1) if "=" in m else [m, m] for m in entries]
    methods = [method for _, method in runs]
    out = args.out or Path(tempfile.mkdtemp(prefix="bmz-eval-"))
    out.mkdir(parents=True, exist_ok=True)
    params = DEMO_NOISE if args.noise == "row_correlated" and args.kind != "real" else {}
    import torch

    _, train_noisy = make_data(args.kind, args.noise, params, args.n_train, args.size, args.blur, 101)
    clean, test_noisy = make_data(args.kind, args.noise, params, args.n_test, args.size, args.blur, 202)
    data_range = 1.0 if args.kind == "real" else None  # real tiles: the 8-bit range scaled to 1, as benchmark_real
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
        "noise": args.noise, "noise_params": params, "clean_blur_sigma": args.blur, "budget_s": times,
        "images": (f"{'real-image tiles' if args.kind == 'real' else args.kind + ' synthetic images'}"
                   f" ({len(train_noisy)} training, {len(clean)} held-out, {clean.shape[-2]} x {clean.shape[-1]})"),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "batch_size": args.batch_size,
        "crop_size": args.crop_size, "samples": args.samples, "command": " ".join(sys.argv),
        "psnr_noisy": float(np.mean([psnr(n, c, data_range) for n, c in zip(test_noisy, clean)])),
        "residual_noisy": residual_stats(test_noisy, clean), "methods": {}, "out": str(out),
    }
    if cutoff is not None:
        report["psf_cutoff_cycles_per_px"] = cutoff
        report["power_above_cutoff"] = {"clean": power_above(clean, cutoff), "noisy": power_above(test_noisy, cutoff)}
    for label, method in runs:
        run = out / f"run_{label}"
        curve = []
        for i, budget in enumerate(times):
            start = time.time()
            first = ["train", method, str(out / "train.tif"), "--axes", "SYX", "--batch-size", str(args.batch_size),
                     "--crop-size", str(args.crop_size), *extras.get(label, [])]
            trained = subprocess.run(
                cli + (first if i == 0 else ["train", method, "--resume"])
                + ["--max-time", str(budget), "--out", str(run), "--quiet"],
                check=True, capture_output=True, text=True,
            )
            train_s = time.time() - start
            start = time.time()
            pred = out / f"pred_{label}" if len(times) == 1 else out / f"pred_{label}_{budget:g}s"
            subprocess.run(cli + ["predict", str(run), str(out / "test.tif"), "--axes", "SYX", "--samples",
                                  str(args.samples), "--out", str(pred)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            predict_s = time.time() - start
            name = next(p for p in sorted(pred.glob("test_*.tif")) if "_std" not in p.name
                        and "_samples" not in p.name)
            denoised = tifffile.imread(name)
            result = {
                "train": trained.stderr.strip().splitlines()[-1], "train_wall_s": train_s,
                "predict_wall_s": predict_s, "output": name.name,
                "psnr": float(np.mean([psnr(d, c, data_range) for d, c in zip(denoised, clean)])),
                "ssim": float(np.mean([ssim(d, c, 1.0 if data_range is None else data_range) for d, c in zip(denoised, clean)])),
                "residual": residual_stats(denoised, clean),
                "chose": [line for line in trained.stderr.splitlines() if "auto" in line],
            }
            if len(times) > 1:
                steps, seconds = last_validation(run / "metrics.jsonl")
                point = {"time_s": budget, "trained_s": round(seconds, 1), "steps": steps,
                         "psnr": round(result["psnr"], 3), "ssim": round(result["ssim"], 4)}
                curve.append(point)
                print(json.dumps({label: point}), file=sys.stderr, flush=True)
        if cutoff is not None:
            result["power_above_cutoff"] = power_above(denoised, cutoff)
        if args.package:
            packaged = subprocess.run(
                cli + ["package", str(run), "--out", str(out / f"{label}.zip"), "--samples", "20"],
                capture_output=True, text=True,
            )
            result["package"] = {"exit_code": packaged.returncode, "report": packaged.stdout.strip().splitlines()}
        if curve:
            result["curve"] = curve
        report["methods"][label] = {"method": method, "options": extras.get(label, []), **result}
        print(json.dumps({label: result}), file=sys.stderr, flush=True)
    if len(times) > 1:
        report["curves"] = {label: {f"{p['time_s']:g}": p["psnr"] for p in r["curve"]}
                            for label, r in report["methods"].items()}
    if args.write_curves is not None:
        write_curves(args.write_curves, report, times)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
