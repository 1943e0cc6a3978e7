"""Train every method family on synthetic volumes (--spatial-dims 3), package each model and
validate the packages independently of bmz-cosdd's own validation: bioimageio.core's
``test_model`` on every weight format, plus the deepImageJ / ilastik rule checks. Prints JSON.

    python scripts/package_volumes.py --out volumes-packages --steps 50

The packages stay in ``--out`` (``<method>.zip``) for anyone to open in deepImageJ, ilastik or
``bioimageio test``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset, row_correlated
from bmz_cosdd.analysis.metrics import psnr
from bmz_cosdd.export.package import package_run
from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.methods.base import ExportOptions, PredictOptions
from bmz_cosdd.api import fit_noise_model
from bmz_cosdd.training.session import train

SHAPE = (80, 80, 80)

# method -> (model settings, estimator predicted for the PSNR)
MODELS = {
    "cosdd": ({"preset": "tiny", "direction": "x", "n_levels": 3, "latent_channels": [8], "features": 16,
               "halo": 12}, "mmse"),
    "n2v": ({"depth": 2, "features": 8}, "denoised"),
    "n2v2": ({"depth": 2, "features": 8}, "denoised"),
    "structn2v": ({"depth": 2, "features": 8, "struct_mask": "x:5"}, "denoised"),
    "divnoising": ({"depth": 2, "features": 16, "latent": 16, "halo": 8}, "mmse"),
    "hdn": ({"n_levels": 3, "latent_channels": [8], "features": 16, "halo": 12}, "mmse"),
}


def independent_checks(package: Path) -> dict[str, object]:
    """bioimageio.core's own test of every weight format, and the consumer rules."""
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description

    from bmz_cosdd.zoo.consumers import check_package

    descr = load_model_description(package)
    formats = [name for name in ("torchscript", "pytorch_state_dict", "onnx")
               if getattr(descr.weights, name, None) is not None]
    core = {}
    for weight_format in formats:
        summary = test_model(package, weight_format=weight_format)
        core[weight_format] = str(summary.status)
    consumers = {check.consumer: check.status for check in check_package(package, device="cpu")}
    axes = [str(a.id) for a in descr.inputs[0].axes]
    return {"axes": axes, "bioimageio_core": core, "consumers": consumers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("volumes-packages"))
    parser.add_argument("--steps", type=int, default=50, help="training steps per method")
    parser.add_argument("--methods", default=",".join(MODELS), help="comma-separated subset")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    data = make_dataset("blobs", "row_correlated", n=3, shape=SHAPE, seed=0)
    stack = args.out / "volumes.tif"
    write_tiff(stack, data.noisy, "SZYX")
    ramp = np.broadcast_to(np.linspace(0.05, 1.0, 64), (16, 64, 64))
    write_tiff(args.out / "calibration.tif",
               row_correlated(ramp, np.random.default_rng(1), blur_sigma=0.0).astype(np.float32), "TYX")
    noise_model = None

    results = {}
    for method in args.methods.split(","):
        model, estimator = MODELS[method]
        model = dict(model)
        if method in ("divnoising", "hdn"):
            if noise_model is None:
                noise_model = fit_noise_model(args.out / "noise_model.npz",
                                              calibration=args.out / "calibration.tif").path
            model["noise_model"] = str(noise_model)
        config = {
            "method": method, "model": model,
            "data": {"paths": [str(stack)], "axes": "SZYX", "spatial_dims": 3, "crop_size": 32,
                     "val_fraction": 0.34, "val_crops": 4},
            "train": {"batch_size": 4, "max_steps": args.steps, "max_epochs": None,
                      "steps_per_epoch": max(1, args.steps // 2), "seed": 0},
        }
        run = args.out / "runs" / method
        started = time.perf_counter()
        train(config, run, progress=False)
        trained_s = time.perf_counter() - started
        trained = load_run(run, device="cpu")
        denoised = predict_image(trained, data.noisy[-1][None], PredictOptions(estimator=estimator, samples=20))
        package = args.out / f"{method}.zip"
        started = time.perf_counter()
        result = package_run(run, package, ExportOptions(samples=20, sample_batch=10), say=lambda line: None, force=True)
        result_line = {
            "train_seconds": round(trained_s, 1),
            "package_seconds": round(time.perf_counter() - started, 1),
            "weight_formats": result.weight_formats,
            "notes": result.notes,
            "psnr_noisy": round(psnr(data.clean[-1], data.noisy[-1], data_range=1.0), 2),
            f"psnr_{estimator}": round(psnr(data.clean[-1], denoised[estimator][0], data_range=1.0), 2),
            **independent_checks(package),
        }
        results[method] = result_line
        print(json.dumps({"method": method, **result_line}), file=sys.stderr, flush=True)  # progress
    print(json.dumps({"volume_shape": SHAPE, "steps": args.steps, "methods": results}, indent=1))


if __name__ == "__main__":
    main()
