"""Quality on anisotropic volumes: every method family in 3-D and plane by plane in 2-D, trained through the CLI.

What it measures: whether denoising a volume with 3-D convolutions (``--spatial-dims 3``, the
automatic z layout of :mod:`bmz_cosdd.methods.anisotropy` reading the z step from the TIFF) beats
denoising each plane on its own (``--spatial-dims 2``), for every method family, on volumes as a
microscope records them, with the same number of training steps for the 3-D and the 2-D run.

Data recipe (:func:`make_case`):

1. Clean volumes on an isotropic grid of 0.5 um voxels, 96 x 96 x 96 by default:
   3-D filaments over a faint background of 3-D blobs
   (:func:`bmz_cosdd.data.synthetic.make_filament_volumes`).
2. Blurred by an anisotropic Gaussian PSF, sigma 2.0 voxels along z and 1.0 along y and x
   (``scipy.ndimage.gaussian_filter``, edges by reflection).
3. Sampled every 4th plane (a z step of 2 um, 4 x the pixel size): 24 x 96 x 96 volumes.
4. Scaled so that the 99.9th percentile of each volume is 1 and clipped to [0, 1] (the signal level
   is 1, the background about 0.1).
5. Noise (:data:`bmz_cosdd.data.synthetic.NOISE_RECIPES`), two cases:

   * ``poisson-gaussian``: pixel-independent, 50 photons at signal 1, read noise std 0.02;
   * ``row-correlated``: the same shot and read noise (``gain`` 0.02 = 1/50) plus FFHQ-Stripe's
     correlated part along x, white noise of std 0.1 blurred along each row by a Gaussian of
     1 px (std about 0.053), drawn per plane (the recipe acts on the last two axes).

Four training volumes (seed 0) and two held-out test volumes (seed 1; other clean volumes, other
noise) are written as ImageJ hyperstacks (``train.tif``, ``test.tif``; stored axes TZYX, read
with ``--axes SZYX``) with the pixel size (0.5 um) and z spacing (2 um), so training sees the
anisotropy; ``clean_test.tif`` holds the ground truth. DivNoising and HDN need a pixel noise model:
it is fitted once per case with ``bmz-cosdd noise-model fit --calibration`` from a calibration
stack of the same noise (64 frames of a static 64 x 64 ramp from 0 to 1, the case's recipe on
every frame; the correlated case's stripes enter only through the pixel marginal, which is all a
pixel noise model can represent), as a user with a camera would.

Every label is trained with ``bmz-cosdd train`` (``--max-steps N``, ``--val-fraction 0.25``):

* ``*-3d``: ``--axes SZYX --spatial-dims 3 --crop-depth 8 --crop-size 32``;
* ``*-2d``: ``--axes SZYX --spatial-dims 2 --crop-size 64``: every plane a 2-D image;
* families: ``n2v``; ``structn2v`` (``--struct-mask auto``; correlated case only); ``cosdd``
  (``--preset tiny``, direction measured); ``divnoising``; ``hdn`` (``--features 32
  --blocks-per-level 1``, the lighter CPU setting of the README).

The trained run predicts the held-out volumes in-process (:func:`bmz_cosdd.api.predict_image`:
whole volumes for a 3-D run, plane by plane for a 2-D run; sampling methods: the MMSE of
``--samples`` posterior samples, and the mean of 1 sample). Scores: PSNR and SSIM
(:mod:`bmz_cosdd.analysis.metrics`) per plane against the clean volume, data range 1 (the signal
level), averaged over the planes of both test volumes; also of the noisy input. Printed as JSON
(one line per result on stderr, the whole report on stdout) with the wall and CPU time of training
(and of the noise-model fits), the threads, the run's ground-truth-free quality flag, and what it
chose by itself (the ``(auto)`` lines: z layout, direction, blind mask).

Examples
--------
    python scripts/benchmark_volumes.py --threads 1 --jobs 2 > volumes.json     # the whole grid (about 30 min)
    python scripts/benchmark_volumes.py --cases row-correlated --methods cosdd-3d,cosdd-2d,structn2v-3d,structn2v-2d
    python scripts/benchmark_volumes.py --cases poisson-gaussian --methods n2v-3d,n2v-2d --steps n2v-3d=20,n2v-2d=20
    python scripts/benchmark_volumes.py --steps cosdd-3d=2000,cosdd-2d=2000 --samples 100   # longer runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bmz_cosdd.analysis.metrics import psnr, ssim
from benchmark_grid import quality_fields, read_quality, run_workers, timed_cli  # this script's folder
from bmz_cosdd.data.synthetic import NOISE_RECIPES, make_filament_volumes

# The data recipe (see the docstring).
FINE_SHAPE = (96, 96, 96)  # isotropic clean volume (Z, Y, X), voxels of PIXEL_UM
PIXEL_UM = 0.5
Z_STEP = 4  # every 4th plane: a z step of 4 x the pixel size
PSF_SIGMA = (2.0, 1.0, 1.0)  # voxels of the fine grid (Z, Y, X)
TRAIN_VOLUMES, TEST_VOLUMES = 4, 2
DATA_RANGE = 1.0
CALIBRATION = (64, 64, 64)  # frames, Y, X of the static ramp

# name -> (recipe, parameters, what it stands for)
CASES: dict[str, tuple[str, dict, str]] = {
    "poisson-gaussian": ("poisson_gaussian", {"photons": 50.0, "read_sigma": 0.02},
                         "pixel-independent: 50 photons at signal 1, read noise 0.02"),
    "row-correlated": ("row_correlated", {"gain": 0.02, "read_sigma": 0.02, "stripe_sigma": 0.1},
                       "the same shot and read noise plus stripes along x (white std 0.1 blurred 1 px along rows)"),
}

# family -> (method, extra train options, default steps); NOISE_MODEL is replaced by the case's model
NOISE_MODEL = "@noise_model"
FAMILIES: dict[str, tuple[str, list[str], int]] = {
    "n2v": ("n2v", [], 400),
    "structn2v": ("structn2v", ["--struct-mask", "auto"], 400),
    "cosdd": ("cosdd", ["--preset", "tiny"], 400),
    "divnoising": ("divnoising", ["--noise-model", NOISE_MODEL], 400),
    "hdn": ("hdn", ["--noise-model", NOISE_MODEL, "--features", "32", "--blocks-per-level", "1"], 300),
}
DIMS = {"3d": ["--spatial-dims", "3", "--crop-depth", "8", "--crop-size", "32"],
        "2d": ["--spatial-dims", "2", "--crop-size", "64"]}
METHODS: dict[str, tuple[str, str, list[str], int]] = {  # label -> (family, dims, options, default steps)
    f"{family}-{dims}": (family, dims, [*extra, *DIMS[dims]], steps)
    for family, (_, extra, steps) in FAMILIES.items() for dims in DIMS
}
NEEDS_NOISE_MODEL = {"divnoising", "hdn"}


def volumes(n: int, seed: int) -> np.ndarray:
    """Clean (n, Z, Y, X) volumes of the recipe: fine filaments, anisotropic PSF, every Z_STEP-th plane, scaled."""
    from scipy import ndimage

    fine = make_filament_volumes(n, FINE_SHAPE, seed=seed)
    out = []
    for volume in fine:
        blurred = ndimage.gaussian_filter(volume, PSF_SIGMA, mode="reflect")[Z_STEP // 2 :: Z_STEP]
        out.append(np.clip(blurred / np.percentile(blurred, 99.9), 0.0, 1.0))
    return np.stack(out)


def write_volumes(path: Path, array: np.ndarray) -> None:
    """An ImageJ hyperstack (T, Z, Y, X) with the pixel size and z spacing, as microscopes write them."""
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(array, dtype=np.float32), imagej=True,
                     resolution=(1 / PIXEL_UM, 1 / PIXEL_UM),
                     metadata={"spacing": PIXEL_UM * Z_STEP, "unit": "um", "axes": "TZYX"})


def make_case(case: str, folder: Path, noise_model: bool, threads: int, seed: int = 0) -> dict:
    """Write train.tif, test.tif and clean_test.tif for ``case`` (and fit its noise model); return its facts."""
    recipe, params, _ = CASES[case]
    rng = np.random.default_rng([seed, 17, list(CASES).index(case)])
    folder.mkdir(parents=True, exist_ok=True)
    clean_train, clean_test = volumes(TRAIN_VOLUMES, seed), volumes(TEST_VOLUMES, seed + 1)
    write_volumes(folder / "train.tif", NOISE_RECIPES[recipe](clean_train, rng, **params))
    write_volumes(folder / "test.tif", NOISE_RECIPES[recipe](clean_test, rng, **params))
    write_volumes(folder / "clean_test.tif", clean_test)
    facts: dict = {"train_volumes": list(clean_train.shape), "test_volumes": list(clean_test.shape)}
    if noise_model:
        frames, height, width = CALIBRATION
        ramp = np.broadcast_to(np.linspace(0.0, 1.0, width), CALIBRATION)
        calibration = NOISE_RECIPES[recipe](ramp, rng, **params).astype(np.float32)
        import tifffile

        tifffile.imwrite(folder / "calibration.tif", calibration, imagej=True, metadata={"axes": "TYX"})
        fitted = timed_cli(["noise-model", "fit", "--calibration", "calibration.tif", "--axes", "TYX",
                      "--out", "noise_model.npz"], folder, threads)
        facts["noise_model"] = {"from": f"calibration stack, {frames} frames of a {height} x {width} ramp 0-1",
                                "fit_wall_s": round(fitted["wall_s"], 1), "fit_cpu_s": round(fitted["cpu_s"], 1)}
    return facts


def read_case(folder: Path) -> dict:
    """The clean and noisy test volumes of a case written by :func:`make_case`."""
    import tifffile

    return {"clean": tifffile.imread(folder / "clean_test.tif").astype(np.float64),
            "noisy": tifffile.imread(folder / "test.tif")}


def scores(estimate: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over every plane of every volume, data range DATA_RANGE."""
    planes = [(e, c) for ev, cv in zip(estimate, clean) for e, c in zip(ev, cv)]
    return {"psnr": float(np.mean([psnr(e, c, DATA_RANGE) for e, c in planes])),
            "ssim": float(np.mean([ssim(e, c, DATA_RANGE) for e, c in planes]))}


def predict(run: Path, noisy: np.ndarray, dims: str, samples: int) -> dict[str, np.ndarray]:
    """The run's main output per volume (3-D: whole volumes; 2-D: plane by plane) and, for sampling
    methods, the mean of one sample."""
    from bmz_cosdd import api

    trained = api.load_run(run)
    options = api.PredictOptions(samples=samples, keep_samples=True)
    outputs: dict[str, list[np.ndarray]] = {"output": [], "mean of 1": []}
    for volume in noisy:
        pieces = [volume] if dims == "3d" else list(volume)  # a (Z, Y, X) volume or its (Y, X) planes
        main, single = [], []
        for piece in pieces:
            out = api.predict_image(trained, piece[None], options)
            main.append(out[trained.method.estimators[0]][0])
            if "samples" in out:
                single.append(out["samples"][0, 0])
        outputs["output"].append(main[0] if dims == "3d" else np.stack(main))
        if single:
            outputs["mean of 1"].append(single[0] if dims == "3d" else np.stack(single))
    return {name: np.stack(values) for name, values in outputs.items() if values}


def train(label: str, folder: Path, steps: int, threads: int) -> dict:
    family, _, options, _ = METHODS[label]
    method = FAMILIES[family][0]
    run = folder / f"run_{label}"
    options = [str(folder / "noise_model.npz") if option == NOISE_MODEL else option for option in options]
    trained = timed_cli(["train", method, "train.tif", "--axes", "SZYX", "--max-steps", str(steps), "--max-epochs",
                   "1000000", "--val-fraction", "0.25", "--out", run.name, "--quiet", *options], folder, threads)
    return {**trained, "run": run, "quality": read_quality(run)}


def run_one(case: str, label: str, steps: int, samples: int, threads: int, out: Path) -> dict:
    """Train ``label`` on ``case`` through the CLI, predict the held-out volumes, score everything."""
    import torch

    torch.set_num_threads(threads)
    folder = out / case
    facts = read_case(folder)
    clean, noisy = facts["clean"], facts["noisy"]
    trained = train(label, folder, steps, threads)
    start = time.perf_counter()
    predictions = predict(trained["run"], noisy, METHODS[label][1], samples)
    predict_wall = time.perf_counter() - start
    result = {
        "case": case, "method": label, "steps": steps, "threads": threads,
        "train_wall_s": round(trained["wall_s"], 1), "train_cpu_s": round(trained["cpu_s"], 1),
        "predict_wall_s": round(predict_wall, 1),
        "noisy": scores(noisy, clean),
        **{name: scores(values, clean) for name, values in predictions.items()},
        **quality_fields(trained["quality"], trained["stderr"]),
    }
    result["gain_db"] = result["output"]["psnr"] - result["noisy"]["psnr"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--steps", default="", help="LABEL=N,... training steps (defaults: "
                        + ", ".join(f"{k} {v[3]}" for k, v in METHODS.items()) + ")")
    parser.add_argument("--samples", type=int, default=20, help="posterior samples of the MMSE")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each training and prediction")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run at once")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = {label: spec[3] for label, spec in METHODS.items()}
    for item in filter(None, args.steps.split(",")):
        label, value = item.split("=")
        if label not in METHODS:
            parser.error(f"--steps: unknown label '{label}'; valid: {', '.join(METHODS)}")
        steps[label] = int(value)
    out = args.out or Path(tempfile.mkdtemp(prefix="bmz-volumes-"))
    if args.one:  # a worker: one (case, method), one JSON line on stdout
        case, label = args.one
        print(json.dumps(run_one(case, label, steps[label], args.samples, args.threads, out)))
        return
    cases, labels = list(filter(None, args.cases.split(","))), list(filter(None, args.methods.split(",")))
    for name, known, what in ((cases, CASES, "case"), (labels, METHODS, "method")):
        unknown = [item for item in name if item not in known]
        if unknown:
            parser.error(f"unknown {what}(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    work = [(case, label) for case in cases for label in labels  # StructN2V: correlated noise only
            if not (METHODS[label][0] == "structn2v" and CASES[case][0] == "poisson_gaussian")]
    from concurrent.futures import ThreadPoolExecutor

    def prepare(case: str) -> dict:
        needs = any(METHODS[label][0] in NEEDS_NOISE_MODEL for c, label in work if c == case)
        return make_case(case, out / case, needs, args.threads)

    start = time.perf_counter()
    cases = list(dict.fromkeys(case for case, _ in work))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # written once, before the workers read them
        facts = dict(zip(cases, pool.map(prepare, cases)))
    prepared = time.perf_counter() - start

    results = run_workers(__file__, work, lambda label: [
        "--steps", f"{label}={steps[label]}", "--samples", str(args.samples), "--threads", str(args.threads),
        "--out", str(out)], args.threads, args.jobs, echo_errors=True)
    report: dict = {
        "volumes": (f"3-D filaments over blobs (make_filament_volumes), {FINE_SHAPE} voxels of {PIXEL_UM} um, "
                    f"Gaussian PSF sigma {PSF_SIGMA} voxels (Z, Y, X), every {Z_STEP}th plane, "
                    "99.9th percentile scaled to 1"),
        "voxel_um": [PIXEL_UM * Z_STEP, PIXEL_UM, PIXEL_UM], "data_range": DATA_RANGE,
        "scores": "PSNR and SSIM per plane against the clean volume, averaged over the test volumes' planes",
        "threads": args.threads, "jobs": args.jobs,
        "wall_s": {"data_and_noise_models": round(prepared, 1), "all": round(time.perf_counter() - start, 1)},
        "steps": {label: steps[label] for label in labels}, "samples": args.samples, "cases": {},
    }
    for result in results:
        case = report["cases"].setdefault(result["case"], {"recipe": CASES[result["case"]][0],
                                                           "params": CASES[result["case"]][1],
                                                           "about": CASES[result["case"]][2],
                                                           **facts[result["case"]], "noisy": None,
                                                           "methods": {}})
        if "noisy" in result:
            case["noisy"] = result.pop("noisy")
        label = result.pop("method")
        case["methods"][label] = {k: v for k, v in result.items() if k != "case"}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
