"""How often `bmz-cosdd inspect` recommends the right thing on held-out synthetic data of known noise.

For every noise recipe of bmz_cosdd.data.synthetic (with a few strengths), image kind and seed,
runs the inspect pipeline (default source: the data alone) and compares the noise direction, the
StructN2V mask axis and the pixel-noise-model verdict with the recipe's truth; for the
Poisson-Gaussian and row-correlated recipes it also compares the fitted camera gain with the true
one. Prints one JSON document.

    python scripts/check_inspect.py --seeds 3 --size 256
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bmz_cosdd.analysis.noise_inspection import inspect_noise, noise_from_smoothing
from bmz_cosdd.data.synthetic import make_dataset

SCALE, OFFSET = 1000.0, 100.0  # intensities I = SCALE * x + OFFSET, like a camera's counts

# name -> (recipe, parameters, true direction, true gain in I units or None)
CASES = {
    "poisson_gaussian": ("poisson_gaussian", {}, "none", SCALE / 50.0),
    "poisson_gaussian_bright": ("poisson_gaussian", {"photons": 500.0}, "none", SCALE / 500.0),
    "row_correlated (paper)": ("row_correlated", {}, "x", SCALE * 0.002),
    "row_correlated strong": ("row_correlated", {"stripe_sigma": 0.15, "blur_sigma": 3.0, "gain": 0.01}, "x",
                              SCALE * 0.01),
    "column_checkerboard": ("column_checkerboard", {}, "y", None),
    "scmos_columns": ("scmos_columns", {}, "y", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--kinds", default="cells,filaments,blobs,mixed")
    args = parser.parse_args()

    results = {}
    for case, (recipe, params, truth, gain) in CASES.items():
        rows = []
        for kind in args.kinds.split(","):
            for seed in range(100, 100 + args.seeds):  # seeds the unit tests do not use
                data = make_dataset(kind, recipe, n=args.images, shape=(args.size, args.size), seed=seed, **params)
                images = [(x * SCALE + OFFSET)[None] for x in data.noisy.astype(np.float64)]
                start = time.perf_counter()
                report = inspect_noise(noise_from_smoothing(images))
                seconds = time.perf_counter() - start
                structn2v = report.advice["structn2v"]
                mask_axis = "none" if "none" in structn2v else structn2v.split()[1].split(":")[0]
                rows.append({
                    "kind": kind, "seed": seed, "direction": report.correlation.direction,
                    "length": report.correlation.length(report.correlation.direction)
                    if report.correlation.direction != "none" else 0,
                    "mask": structn2v.split()[1], "mask_axis_ok": mask_axis == truth,
                    "pixel_model_fits": report.pixel_noise_model.startswith("fits"),
                    "gain": report.dependence.gain, "seconds": round(seconds, 2),
                })
        correct = [r["direction"] == truth for r in rows]
        summary = {
            "truth": truth,
            "direction_correct": f"{sum(correct)}/{len(rows)}",
            "mask_axis_correct": f"{sum(r['mask_axis_ok'] for r in rows)}/{len(rows)}",
            "pixel_model_verdict_correct":
                f"{sum(r['pixel_model_fits'] == (truth == 'none') for r in rows)}/{len(rows)}",
            "masks": sorted({r["mask"] for r in rows}),
            "seconds_per_inspection": round(float(np.mean([r["seconds"] for r in rows])), 2),
        }
        if gain is not None:
            errors = [abs(r["gain"] - gain) / gain for r in rows]
            summary.update({"true_gain": gain, "median_gain_error": round(float(np.median(errors)), 3),
                            "max_gain_error": round(float(np.max(errors)), 3)})
        summary["wrong"] = [r for r, ok in zip(rows, correct) if not ok]
        results[case] = summary
    print(json.dumps({"images_per_case": args.images, "size": args.size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
