"""Speed and memory of COSDD training and prediction; prints one JSON object.

Examples
--------
    python scripts/benchmark.py                       # reference config 64/8/3, batch 4 crop 64
    python scripts/benchmark.py --preset small --batch 16 --crop 64
    python scripts/benchmark.py --device cuda
    python scripts/benchmark.py --sampling --threads 1    # posterior sampling: training vs inference form

Each phase runs in its own process so that its peak memory (RSS, and CUDA peak
when on GPU) is its own. Timings exclude the first (warm-up) steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


#: Parameters of the reference implementation (krulllab/COSDD) at its default configuration, per part
#: (counted by this project's developers; shared notes, methods-facts.md).
REFERENCE_PARAMETERS = {"vae": 3_580_000, "ar_decoder": 211_000, "signal_decoder": 111_000, "total": 3_898_762}
#: Why the parts differ, as far as established: the signal decoder matches exactly; the others do not.
REFERENCE_DIFFERENCES = {
    "signal_decoder": "the same network: four 3x3 convolutions of width 64 (111,361 parameters)",
    "ar_decoder": "8 layers of 1 x 5 kernels, 64 filters, 3 Gaussians in both; about 29k parameters fewer"
                  " here, in how the layers take the latent (which layer differs is not established)",
    "vae": "the same width (64), levels (8) and latent channels (32), one gated residual block per level"
           " and direction here; the reference's stem, merges and blocks hold about 0.86M more (two blocks"
           " per level here would be 4.03M); which of its blocks hold them is not established",
}


def model_values(args: argparse.Namespace) -> dict:
    if args.preset == "reference":
        return {"preset": "reference", "direction": "x"}  # PRESETS in bmz_cosdd/methods/cosdd/config.py
    # No training data here to size the noise decoder's field from: the paper's 8 layers (49 px).
    return {"preset": args.preset, "direction": "x", "ar_layers": 8}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_train(args: argparse.Namespace) -> dict:
    import torch

    from bmz_cosdd.methods.registry import get_method
    from bmz_cosdd.training.device import autocast_for, resolve_device

    torch.manual_seed(0)
    device = resolve_device(args.device)
    method = get_method("cosdd")
    values = model_values(args)
    values["direct_denoiser"] = args.direct_denoiser
    model = method.build(method.config_from_dict(values), 1).to(device)
    specs = method.optimisers(model, 2e-3, 0.1, 10)
    batch = torch.randn(args.batch, 1, args.crop, args.crop, device=device)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
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
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    out = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_per_part": parts,
        "batch": args.batch,
        "crop": args.crop,
        "direct_denoiser": args.direct_denoiser,
        "seconds_per_step": seconds,
        "steps_per_s": 1 / seconds,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--sampling-repeat", type=int, default=2, help="--sampling: timed runs after a warm-up")
    parser.add_argument("--sampling-case", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["train", "predict"], help=argparse.SUPPRESS)
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
        result = phase_train(args) if args.phase == "train" else phase_predict(args)
        print(json.dumps(result))
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
