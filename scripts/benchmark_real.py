"""Quality on real images: COSDD and the baselines on the paper's noise recipes, trained through the CLI.

Clean images are tiles of real micrographs and photographs shipped with scikit-image
(:mod:`bmz_cosdd.data.real_images`; 56 training and 27 held-out test tiles of 128 x 128),
scaled to a signal level (1 or 0.3 of the 8-bit range), with the noise of COSDD's paper
(``row_correlated`` = FFHQ-Stripe at three stripe strengths, ``column_checkerboard`` =
FFHQ-Checkerboard) or pixel-independent Poisson-Gaussian noise. Every method is trained with
``bmz-cosdd train`` for a fixed number of steps on the training tiles' noisy images, then
predicts the held-out tiles; printed as JSON (one line per result on stderr, the whole
report on stdout): PSNR and SSIM against the clean tiles (data range: the signal level),
for COSDD also of the mean of 1, 10 and 100 posterior samples, the run's own
ground-truth-free quality flag and residual check, and wall and CPU time of training.

Examples
--------
    python scripts/benchmark_real.py --threads 1 --jobs 2              # every case and method (hours)
    python scripts/benchmark_real.py --cases stripe,stripe-strong --methods cosdd-tiny,structn2v
    python scripts/benchmark_real.py --cases stripe --methods cosdd-tiny --steps cosdd-tiny=1500
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.real_images import real_tiles
from bmz_cosdd.data.synthetic import NOISE_RECIPES
from bmz_cosdd.analysis.metrics import psnr, ssim
from benchmark_grid import quality_fields, read_quality, run_workers, timed_cli  # this script's folder

# name -> (recipe, parameters, signal level, what it stands for)
CASES: dict[str, tuple[str, dict, float, str]] = {
    "stripe": ("row_correlated", {}, 1.0, "FFHQ-Stripe as in the paper (stripe std 0.025)"),
    "stripe-medium": ("row_correlated", {"stripe_sigma": 0.05}, 1.0, "FFHQ-Stripe, stripe std 0.05"),
    "stripe-strong": ("row_correlated", {"stripe_sigma": 0.1}, 1.0, "FFHQ-Stripe, stripe std 0.1"),
    "stripe-dim": ("row_correlated", {}, 0.3, "FFHQ-Stripe at 0.3 of the signal"),
    "stripe-strong-dim": ("row_correlated", {"stripe_sigma": 0.1}, 0.3, "FFHQ-Stripe, stripe std 0.1, 0.3 signal"),
    "checkerboard": ("column_checkerboard", {}, 1.0, "FFHQ-Checkerboard as in the paper"),
    "checkerboard-dim": ("column_checkerboard", {}, 0.3, "FFHQ-Checkerboard at 0.3 of the signal"),
    "poisson-gaussian": ("poisson_gaussian", {"photons": 50.0, "read_sigma": 0.02}, 1.0,
                         "pixel-independent: 50 photons at full signal, read noise 0.02"),
    "poisson-gaussian-dim": ("poisson_gaussian", {"photons": 50.0, "read_sigma": 0.02}, 0.3,
                             "pixel-independent, 0.3 of the signal (15 photons)"),
}

# label -> (method, extra train options, default steps)
METHODS: dict[str, tuple[str, list[str], int]] = {
    "cosdd-tiny": ("cosdd", ["--preset", "tiny"], 6000),
    "cosdd-small": ("cosdd", ["--preset", "small"], 1500),
    "n2v": ("n2v", [], 4000),
    "structn2v": ("structn2v", ["--struct-mask", "auto"], 4000),
}
KS = (1, 10, 100)


def make_case(case: str, folder: Path, seed: int = 0) -> dict:
    """Write train.tif and test.tif (noisy, SYX) for ``case``; return the clean test tiles and the case's facts."""
    recipe, params, level, text = CASES[case]
    rng = np.random.default_rng([seed, 14])
    train, test = level * real_tiles("train"), level * real_tiles("test")
    noisy_train = NOISE_RECIPES[recipe](train, rng, **params).astype(np.float32)
    noisy_test = NOISE_RECIPES[recipe](test, rng, **params).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    write_tiff(folder / "train.tif", noisy_train, "SYX")
    write_tiff(folder / "test.tif", noisy_test, "SYX")
    return {"recipe": recipe, "params": params, "signal_level": level, "about": text,
            "clean": test, "noisy": noisy_test, "train_tiles": len(train), "test_tiles": len(test)}


def read_case(case: str, folder: Path) -> dict:
    """The clean and noisy test tiles of a case written by :func:`make_case`."""
    import tifffile

    _, _, level, _ = CASES[case]
    return {"clean": level * real_tiles("test"), "noisy": tifffile.imread(folder / "test.tif"), "signal_level": level}


def scores(estimate: np.ndarray, clean: np.ndarray, level: float) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over the tiles, data range = the signal level."""
    return {"psnr": float(np.mean([psnr(e, c, level) for e, c in zip(estimate, clean)])),
            "ssim": float(np.mean([ssim(e, c, level) for e, c in zip(estimate, clean)]))}


def predict(run: Path, noisy: np.ndarray, samples: int) -> dict[str, np.ndarray]:
    """The run's main output per tile and, for sampling methods, the means of 1, 10, 100 samples."""
    from bmz_cosdd import api

    trained = api.load_run(run)
    options = api.PredictOptions(samples=samples, keep_samples=True)
    outputs: dict[str, list[np.ndarray]] = {}
    for tile in noisy:
        out = api.predict_image(trained, tile[None], options)
        main = out[trained.method.estimators[0]][0]
        outputs.setdefault("output", []).append(main)
        if "samples" in out:
            for k in KS:
                if k <= samples:
                    outputs.setdefault(f"mean of {k}", []).append(out["samples"][:k, 0].mean(0))
    return {name: np.stack(values) for name, values in outputs.items()}


def train(label: str, folder: Path, steps: int, threads: int, more: Sequence[str] = ()) -> dict:
    method, extra, _ = METHODS[label]
    suffix = ("_" + "_".join(a.lstrip("-") for a in more)) if more else ""
    run = folder / f"run_{label}{suffix}"
    trained = timed_cli(["train", method, "train.tif", "--axes", "SYX", "--max-steps", str(steps), "--max-epochs",
                         "1000000", "--out", run.name, "--quiet", *extra, *more], folder, threads)
    return {**trained, "run": run, "quality": read_quality(run)}


def run_one(case: str, label: str, steps: int, samples: int, threads: int, out: Path,
            more: Sequence[str] = ()) -> dict:
    """Train ``label`` on ``case`` through the CLI, predict the held-out tiles, score everything."""
    import torch

    torch.set_num_threads(threads)
    folder = out / case
    facts = read_case(case, folder)
    clean, noisy, level = facts["clean"], facts["noisy"], facts["signal_level"]
    trained = train(label, folder, steps, threads, more)
    predictions = predict(trained["run"], noisy, samples)
    quality = trained["quality"] or {}
    result = {
        "case": case, "method": label, "steps": steps, "threads": threads, **({"extra": list(more)} if more else {}),
        "train_wall_s": round(trained["wall_s"], 1), "train_cpu_s": round(trained["cpu_s"], 1),
        "noisy": scores(noisy, clean, level),
        **{name: scores(values, clean, level) for name, values in predictions.items()},
        **quality_fields(quality, trained["stderr"]),
        "latent_kl": (quality.get("latent") or {}).get("kl"),
    }
    result["gain_db"] = result["output"]["psnr"] - result["noisy"]["psnr"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--steps", default="", help="LABEL=N,... training steps (defaults: "
                        + ", ".join(f"{k} {v[2]}" for k, v in METHODS.items()) + ")")
    parser.add_argument("--samples", type=int, default=100, help="posterior samples of the MMSE")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of each training and prediction")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (e.g. 2 with --threads 1)")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--extra", default="", help="more `train` options for every method, e.g."
                        " '--context-dropout 0' (an experiment: its runs get their own folders)")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = {label: spec[2] for label, spec in METHODS.items()}
    for item in filter(None, args.steps.split(",")):
        label, value = item.split("=")
        steps[label] = int(value)
    out = args.out or Path(tempfile.mkdtemp(prefix="bmz-real-"))
    if args.one:  # a worker: one (case, method), one JSON line on stdout
        case, label = args.one
        print(json.dumps(run_one(case, label, steps[label], args.samples, args.threads, out, shlex.split(args.extra))))
        return
    work = [(case, label) for case in filter(None, args.cases.split(",")) for label in filter(None, args.methods.split(","))
            if not (label == "structn2v" and CASES[case][0] == "poisson_gaussian")]  # StructN2V: correlated noise only
    for case in {case for case, _ in work}:
        make_case(case, out / case)  # written once, before the workers read them

    results = run_workers(__file__, work, lambda label: [
        "--steps", f"{label}={steps[label]}", "--samples", str(args.samples), "--threads", str(args.threads),
        "--out", str(out), f"--extra={args.extra}"], args.threads, args.jobs)
    report: dict = {"tiles": "scikit-image micrographs and photographs, 128 x 128 (bmz_cosdd.data.real_images)",
                    "data_range": "the signal level (1 or 0.3)", "threads": args.threads, "jobs": args.jobs,
                    "steps": steps, "samples": args.samples, **({"extra": args.extra} if args.extra else {}),
                    "cases": {}}
    for result in results:
        case = report["cases"].setdefault(result["case"], {"recipe": CASES[result["case"]][0],
                                                           "params": CASES[result["case"]][1],
                                                           "signal_level": CASES[result["case"]][2],
                                                           "about": CASES[result["case"]][3], "methods": {}})
        if "noisy" in result:
            case["noisy"] = result.pop("noisy")
        label = result.pop("method")
        case["methods"][label] = {k: v for k, v in result.items() if k != "case"}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
