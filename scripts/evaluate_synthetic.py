"""Train COSDD through the CLI on synthetic noisy images, denoise held-out ones, print JSON.

Measures what a user would: PSNR of noisy and denoised against the clean images,
and whether the correlated noise left the image (the residual's correlation
between horizontal neighbours, and the power of its row means, i.e. stripes).

Examples
--------
    python scripts/evaluate_synthetic.py --preset small --budget 600
    python scripts/evaluate_synthetic.py --noise column_checkerboard --direction y
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.demo import DEMO_NOISE
from bmz_cosdd.evaluation import psnr


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--budget", type=float, default=300, help="training seconds")
    parser.add_argument("--noise", default="row_correlated")
    parser.add_argument("--direction", default="x")
    parser.add_argument("--kind", default="mixed")
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--extra", default="", help="extra train options, e.g. '--direct-denoiser'")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bmz-eval-"))
    params = DEMO_NOISE if args.noise == "row_correlated" else {}
    shape = (args.size, args.size)
    train = make_dataset(args.kind, args.noise, n=args.n_train, shape=shape, seed=101, **params)
    test = make_dataset(args.kind, args.noise, n=args.n_test, shape=shape, seed=202, **params)
    write_tiff(out / "train.tif", train.noisy, "SYX")
    write_tiff(out / "test.tif", test.noisy, "SYX")
    cli = [sys.executable, "-m", "bmz_cosdd"]
    start = time.time()
    subprocess.run(cli + ["train", "cosdd", str(out / "train.tif"), "--axes", "SYX", "--direction", args.direction,
                          "--preset", args.preset, "--max-time", str(args.budget), "--batch-size", str(args.batch_size),
                          "--crop-size", str(args.crop_size), "--out", str(out / "run"), "--quiet", *args.extra.split()],
                   check=True)
    train_s = time.time() - start
    start = time.time()
    subprocess.run(cli + ["predict", str(out / "run"), str(out / "test.tif"), "--axes", "SYX", "--samples",
                          str(args.samples), "--out", str(out / "pred")], check=True, stdout=subprocess.DEVNULL)
    predict_s = time.time() - start
    mmse = tifffile.imread(out / "pred" / "test_mmse.tif")
    clean = test.clean
    print(json.dumps({
        "preset": args.preset, "noise": args.noise, "noise_params": params, "budget_s": args.budget,
        "train_wall_s": train_s, "predict_wall_s": predict_s, "samples": args.samples,
        "images": f"{args.n_train} train / {args.n_test} held-out, {args.size}x{args.size}",
        "psnr_noisy": float(np.mean([psnr(n, c) for n, c in zip(test.noisy, clean)])),
        "psnr_mmse": float(np.mean([psnr(m, c) for m, c in zip(mmse, clean)])),
        "residual_noisy": residual_stats(test.noisy, clean),
        "residual_mmse": residual_stats(mmse, clean),
        "out": str(out),
    }, indent=1))


if __name__ == "__main__":
    main()
