"""Speed and memory of COSDD training and prediction, or the cost of prediction over the bare network for
every method (``--overhead``); prints one JSON object.

Examples
--------
    python scripts/benchmark.py                       # reference config 64/8/3, batch 4 crop 64
    python scripts/benchmark.py --preset small --batch 16 --crop 64
    python scripts/benchmark.py --device cuda
    python scripts/benchmark.py --sampling --threads 1    # posterior sampling: training vs inference form
    python scripts/benchmark.py --overhead --threads 1 --samples 10   # every method, 512 x 512

Each phase runs in its own process so that its peak memory (RSS, and CUDA peak
when on GPU) is its own. Timings exclude the first (warm-up) steps. Training figures are CPU time of
the process (``cpu_seconds_per_step``, ``steps_per_cpu_second``, with ``threads``) and wall time; the
steps draw their crops as a run does, and ``data_share`` is the data pipeline's part of a step's CPU time.

``--overhead`` trains each method's default network for a few steps on synthetic images (DivNoising and
HDN through a noise model fitted to a synthetic calibration stack), packages it (validated unless
``--no-validate``) and times, per image after loading, on one ``--image`` x ``--image`` image:

- ``bare``: the method's own forward on the normalised tensor, as the method calls it (``Method.predict``:
  the network, or the posterior sampler with ``--samples``), under ``torch.inference_mode``;
- ``in_framework``: :func:`~bmz_cosdd.inference.predictor.predict_image` (normalise, tile or one piece,
  de-normalise) and ``in_framework_file``: :func:`~bmz_cosdd.inference.predictor.predict_files` on a TIFF
  (read, predict, write);
- ``package``: the package through bioimageio.core
  (:class:`~bmz_cosdd.zoo.package_prediction.PackagePredictor`: its pre/post-processing and TorchScript).

Load times (run folder, package) are separate. Each figure is the fastest of ``--repeat`` runs after one
warm-up (also reported, as ``first``), CPU time (all threads of the process) and wall time; ratios are
in_framework / bare and package / in_framework.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


#: Parameters of the reference implementation (krulllab/COSDD, ``models/`` layout at commit 17357e8, its default
#: configuration), per part, counted on a local build of it (``scripts/benchmark_reference.py`` prints them).
#: Its ladder follows its training crop (``floor(log2(crop)) - 1`` halvings, at most one per level): these are
#: for a 64 px crop (5 halvings; issue 18's count). At its default 256 px crop (7 halvings) each of the two
#: extra halvings adds a strided 3x3 convolution and a 1x1 (41,088): VAE 3,658,240, total 3,980,938.
REFERENCE_PARAMETERS = {"vae": 3_576_064, "ar_decoder": 211_337, "signal_decoder": 111_361, "total": 3_898_762}
#: Why the parts differ (from the same build's modules).
REFERENCE_DIFFERENCES = {
    "signal_decoder": "the same network: four 3x3 convolutions of width 64 (111,361 parameters)",
    "ar_decoder": "8 layers of a 1 x 5 convolution (dilated in places) and a 1x1 taking the latent in, 64 filters,"
                  " 3 Gaussians in both; each of the reference's 8 layers ends in one more 1x1 64->64 convolution"
                  " (8 x 4,160), where this project has one in its head: 29,120 fewer here",
    "vae": "the same width (64), levels (8), latent channels (32) and gated residual blocks; the reference adds"
           " per level below the top a stochastic-skip merge (1x1 convolution + a gated residual block, 90,688"
           " parameters, 634,816 over 7 levels) and takes each latent in with a 3x3 convolution (18,496) where"
           " this project uses a 1x1 on [features, latent] (6,208). Its ladder also differs: level 0 stays at"
           " full resolution and the others halve it as its training crop allows (levels 1, 3, 5, 6, 7 at 64 px;"
           " 1-7 at its default 256 px), this preset halves at levels 0, 2, 4, 6 (size step 16), so a posterior"
           " sample of a 256 x 256 image costs 114 GFLOP there against 33-38 here"
           " (scripts/benchmark_reference.py)",
}


def model_values(args: argparse.Namespace) -> dict:
    if args.preset == "reference":
        return {"preset": "reference", "direction": "x"}  # PRESETS in bmz_cosdd/methods/cosdd/config.py
    # No training data here to size the noise decoder's field from: the paper's 8 layers (49 px).
    return {"preset": args.preset, "direction": "x", "ar_layers": 8}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_train(args: argparse.Namespace) -> dict:
    """Training steps as the trainer takes them: crops drawn from training images (the data pipeline),
    then losses, backward and the optimisers' steps. Times are CPU time of this process (all its threads)
    and wall time per step; ``data_share`` is the data pipeline's part of a step's CPU time."""
    import numpy as np
    import torch

    from bmz_cosdd.data.crops import RandomCrops
    from bmz_cosdd.data.io import Image
    from bmz_cosdd.methods.registry import get_method
    from bmz_cosdd.training.device import autocast_for, resolve_device

    torch.manual_seed(0)
    device = resolve_device(args.device)
    method = get_method("cosdd")
    values = model_values(args)
    values["direct_denoiser"] = args.direct_denoiser
    model = method.build(method.config_from_dict(values), 1).to(device)
    specs = method.optimisers(model, 2e-3, 0.1, 10)
    # The data pipeline of a run: normalised images in memory (normalised once, when the run starts),
    # random crops of them batched per step (bmz_cosdd.data.crops.RandomCrops, as the trainer draws them).
    rng = np.random.default_rng(0)
    images = [Image(rng.standard_normal((1, 512, 512)).astype(np.float32), f"synthetic[{i}]") for i in range(4)]
    crops = RandomCrops(images, args.crop, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    data_cpu = [0.0]

    def step() -> None:
        t = time.process_time()
        batch = crops.sample(args.batch).to(device)
        data_cpu[0] += time.process_time() - t
        for s in specs:
            s.optimizer.zero_grad(set_to_none=True)
        with autocast_for(device):
            losses = method.training_losses(model, batch, generator)
        losses["loss"].backward()
        for s in specs:
            s.optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    data_cpu[0] = 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    cpu = (time.process_time() - start_cpu) / args.steps
    data = data_cpu[0] / args.steps
    parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    out = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_per_part": parts,
        "batch": args.batch,
        "crop": args.crop,
        "direct_denoiser": args.direct_denoiser,
        "threads": torch.get_num_threads(),
        "cpu_seconds_per_step": cpu,
        "steps_per_cpu_second": 1 / cpu,
        "seconds_per_step": seconds,
        "steps_per_s": 1 / seconds,
        "data_cpu_seconds_per_step": data,
        "data_share": data / cpu,
        "peak_rss_mib": peak_rss_mib(),
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def phase_predict(args: argparse.Namespace) -> dict:
    import torch

    from bmz_cosdd.methods.base import PredictOptions
    from bmz_cosdd.methods.registry import get_method
    from bmz_cosdd.training.device import resolve_device

    torch.manual_seed(0)
    device = resolve_device(args.device)
    method = get_method("cosdd")
    model = method.build(method.config_from_dict(model_values(args)), 1).to(device).eval()
    image = torch.randn(1, 1, args.image, args.image, device=device)
    options = PredictOptions(samples=args.samples, sample_batch=args.sample_batch)
    with torch.no_grad():
        method.predict(model, image, PredictOptions(samples=1, sample_batch=1))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        method.predict(model, image, options)
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {
        "image": f"{args.image}x{args.image}",
        "samples": args.samples,
        "sample_batch": args.sample_batch,
        "seconds_total": seconds,
        "seconds_per_sample": seconds / args.samples,
        "peak_rss_mib": peak_rss_mib(),
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


#: Per method: its train options for a short run of its default network that packages (data-dependent
#: settings are resolved from the synthetic images; ``NOISE_MODEL`` is replaced by the fitted noise model).
NOISE_MODEL = "<noise model>"
OVERHEAD_METHODS: dict[str, dict] = {
    "n2v": {}, "n2v2": {}, "structn2v": {}, "psf-n2v": {"psf_sigma": 1.0},
    "cosdd": {}, "divnoising": {"noise_model": NOISE_MODEL}, "hdn": {"noise_model": NOISE_MODEL},
}


def _timed(fn, repeat: int) -> tuple[dict, object]:
    """Run ``fn`` once (warm-up) and ``repeat`` more times: the fastest CPU and wall seconds, every run, and
    the last result."""
    runs = []
    for _ in range(repeat + 1):
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    timed = runs[1:] or runs
    return {"cpu_s": min(c for c, _ in timed), "wall_s": min(w for _, w in timed),
            "first": {"cpu_s": runs[0][0], "wall_s": runs[0][1]},
            "runs_wall_s": [round(w, 4) for _, w in timed]}, result


def _once(fn) -> tuple[dict, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}, result


def _ratio(a: dict, b: dict) -> dict:
    return {"cpu": round(a["cpu_s"] / b["cpu_s"], 3), "wall": round(a["wall_s"] / b["wall_s"], 3)}


def phase_overhead(args: argparse.Namespace) -> dict:
    """Train, package and time one method (``--method``); see the module docstring."""
    import dataclasses
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from bmz_cosdd import api
    from bmz_cosdd.data.io import write_tiff
    from bmz_cosdd.data.normalisation import normalise
    from bmz_cosdd.data.synthetic import make_dataset
    from bmz_cosdd.inference.predictor import load_run, predict_files, predict_image, resolve_options
    from bmz_cosdd.methods.base import ExportOptions, PredictOptions
    from bmz_cosdd.zoo.package_prediction import PackagePredictor

    torch.manual_seed(0)

    def quiet(*args, **kwargs) -> None:
        return None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train = make_dataset("blobs", "row_correlated", n=8, shape=(96, 96), seed=1)
        write_tiff(folder / "train.tif", (100 + 50 * train.noisy).astype(np.float32), "SYX")
        image = (100 + 50 * make_dataset("blobs", "row_correlated", n=1, shape=(args.image, args.image),
                                         seed=2).noisy[0]).astype(np.float32)
        write_tiff(folder / "image.tif", image, "YX")
        options = dict(OVERHEAD_METHODS[args.method])
        if options.get("noise_model") == NOISE_MODEL:
            rng = np.random.default_rng(0)
            clean = 100 + 50 * make_dataset("blobs", "row_correlated", n=1, shape=(64, 64), seed=3).clean[0]
            frames = np.stack([rng.poisson(clean) + rng.normal(0, 5, clean.shape) for _ in range(10)])
            write_tiff(folder / "calib.tif", frames.astype(np.float32), "TYX")
            options["noise_model"] = str(api.fit_noise_model(folder / "nm.npz", calibration=folder / "calib.tif",
                                                             steps=200).path)
        run, package = folder / "run", folder / "model.zip"
        api.train_from_options(args.method, [folder / "train.tif"], out=run, progress=False, say=quiet, axes="SYX",
                               max_steps=args.train_steps, max_epochs=None, steps_per_epoch=args.train_steps,
                               batch_size=2, crop_size=64, val_crops=2, **options)
        samples = {"samples": args.samples, "sample_batch": args.sample_batch}
        api.package(run, package, ExportOptions(**samples), validate=args.validate, say=quiet, force=True)

        load_time, trained = _once(lambda: load_run(run, device="cpu"))
        opts = resolve_options(trained, PredictOptions(**samples))
        x = torch.from_numpy(normalise(image[None].astype(np.float64), trained.stats)).float()[None]

        def bare():
            with torch.inference_mode():
                return trained.method.predict(trained.model, x, dataclasses.replace(opts, seed=0))

        def in_framework():
            return predict_image(trained, image[None], opts, tile=args.tile)

        def in_framework_file():
            return predict_files(trained, [folder / "image.tif"], "YX", folder / "out", opts, tile=args.tile)

        bare_time, _ = _timed(bare, args.repeat)
        in_time, ours = _timed(in_framework, args.repeat)
        file_time, _ = _timed(in_framework_file, args.repeat)
        def open_package():
            opened = PackagePredictor(package)  # reads and checks the rdf
            opened.load()  # the weights
            return opened

        package_load, predictor = _once(open_package)
        with predictor:
            package_time, theirs = _timed(lambda: predictor.predict(image[None], block=args.tile), args.repeat)
        main = opts.estimator if opts.estimator in ours else next(iter(ours))
        package_main = next(iter(theirs.values()))
        step, halo = trained.method.size_step(trained.model), trained.method.halo(trained.model)
        return {
            "method": args.method, "estimator": opts.estimator,
            "samples": args.samples if "std" in ours else None,
            "parameters": sum(p.numel() for p in trained.model.parameters()),
            "size_step": step, "halo": halo,
            "load_run": load_time, "load_package": package_load,
            "bare": bare_time, "in_framework": in_time, "in_framework_file": file_time, "package": package_time,
            "ratio_in_framework_to_bare": _ratio(in_time, bare_time),
            "ratio_package_to_in_framework": _ratio(package_time, in_time),
            "ratio_in_framework_file_to_bare": _ratio(file_time, bare_time),
            "package_vs_in_framework_max_abs_diff": float(np.abs(package_main - ours[main]).max()),
            "image_std": float(image.std()),
        }


def overhead(args: argparse.Namespace) -> None:
    import torch

    methods = args.methods.split(",") if args.methods else list(OVERHEAD_METHODS)
    threads = args.threads or torch.get_num_threads()
    results = []
    for method in methods:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--phase", "overhead", "--method", method]
        env = {**__import__("os").environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            result = {"method": method, "error": proc.stderr.strip().splitlines()[-3:]}
        else:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
    print(json.dumps({
        "what": "prediction cost over the bare network, per image after loading (load times separate)",
        "image": f"{args.image}x{args.image}", "tile": args.tile, "repeat": args.repeat,
        "train_steps": args.train_steps, "threads": threads, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "summary": {r["method"]: {"in_framework/bare": r["ratio_in_framework_to_bare"],
                                  "package/in_framework": r["ratio_package_to_in_framework"],
                                  "bare_wall_s": round(r["bare"]["wall_s"], 3),
                                  "load_run_wall_s": round(r["load_run"]["wall_s"], 3),
                                  "load_package_wall_s": round(r["load_package"]["wall_s"], 3)}
                    for r in results if "error" not in r},
        "methods": results,
    }, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="reference", help="reference (64/8/3), tiny, small or large")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--direct-denoiser", action="store_true")
    parser.add_argument("--image", type=int, default=512)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--sample-batch", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sampling", action="store_true",
                        help="CPU time per posterior sample, training form vs inference form of the networks"
                             " (scripts/benchmark_sampling.py)")
    parser.add_argument("--sampling-sizes", default="256,512", help="--sampling: image sizes, comma-separated")
    parser.add_argument("--sampling-samples", type=int, default=4, help="--sampling: samples per timed run")
    parser.add_argument("--sampling-repeat", type=int, default=2, help="--sampling: timed runs after two warm-ups")
    parser.add_argument("--sampling-case", help=argparse.SUPPRESS)
    parser.add_argument("--overhead", action="store_true",
                        help="time prediction against the bare network for every method (see the docstring)")
    parser.add_argument("--methods", default="", help="--overhead: comma-separated (default: all seven)")
    parser.add_argument("--tile", type=int, default=512, help="--overhead: --tile / block of prediction")
    parser.add_argument("--repeat", type=int, default=3, help="--overhead: timed runs after the warm-up")
    parser.add_argument("--train-steps", type=int, default=2, help="--overhead: training steps before packaging")
    parser.add_argument("--no-validate", dest="validate", action="store_false",
                        help="--overhead: skip bioimageio.core's test of each package")
    parser.add_argument("--phase", choices=["train", "predict", "overhead"], help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.sampling or args.sampling_case:
        from benchmark_sampling import phase_sampling, sampling  # this script's folder

        result = phase_sampling(args) if args.sampling_case else sampling(args, __file__)
        print(json.dumps(result, indent=None if args.sampling_case else 1))
        return
    if args.phase:
        phases = {"train": phase_train, "predict": phase_predict, "overhead": phase_overhead}
        print(json.dumps(phases[args.phase](args)))
        return
    if args.overhead:
        overhead(args)
        return
    results = {}
    for phase in ("train", "predict"):
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--phase", phase],
                              capture_output=True, text=True, check=True)
        results[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    import torch

    comparison = {}
    if args.preset == "reference":
        parts = results["train"]["parameters_per_part"]
        comparison = {"reference_parameters": {
            part: {"reference": count, "here": parts.get(part, results["train"]["parameters"]),
                   "why": REFERENCE_DIFFERENCES.get(part, "")}
            for part, count in REFERENCE_PARAMETERS.items()}}
        comparison["reference_parameters"]["total"]["here"] = results["train"]["parameters"]
        comparison["reference_parameters"]["total"]["why"] = "the sum of the parts (no direct denoiser in either)"
    print(json.dumps({
        "config": {"preset": args.preset, **model_values(args)},
        "device": args.device,
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        **results,
        **comparison,
    }, indent=1))


if __name__ == "__main__":
    main()
