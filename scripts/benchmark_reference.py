"""Posterior sampling side by side with the reference implementation (krulllab/COSDD); prints one JSON object.

The reference is not part of this project and is never downloaded by it: point ``--reference-dir`` at a
local checkout of krulllab/COSDD (its ``models/`` layout: ``utils.get_defaults``, ``models.get_models``,
``models.hub.Hub``) and ``--reference-python`` at a Python that can import it (torch, pytorch-lightning).
Without them only this project's cases run.

Cases, each in its own process, one torch thread, interleaved over ``--rounds`` (A B C A B C ...) so that
a busy machine slows every case alike:

- ``reference``: the reference's own sampling path, as its ``prediction.py`` runs it under Lightning's
  predict loop: ``Hub.predict_step`` once per sample (the whole network: bottom-up pass, top-down pass
  with its prior and posterior convolutions, signal decoder) under ``torch.inference_mode``, at its
  default configuration (``utils.get_defaults``: 64 features, 8 levels of 32 latent channels, 3 Gaussians,
  training crop 256, which gives its ladder 7 halvings, level 0 at full resolution);
- ``preset``: this project's ``--preset reference`` (the same width, levels and latent channels, halving
  at levels 0, 2, 4, 6), the posterior sampler in-framework prediction uses (``eager``) and the
  TorchScript module a package ships, saved and loaded (``scripted``);
- ``topology``: this project's blocks on the reference's ladder (level 0 at full resolution, levels 1-7
  halving; ``LadderVAE(downsample=...)``), eager and scripted: the closest to the reference's network
  this project builds. Its levels still hold fewer convolutions than the reference's (the reference adds
  a stochastic-skip merge block and a 3x3 convolution from each latent), which ``gflop_per_sample``
  shows.

Figures: CPU seconds per posterior sample (``time.process_time`` over one call of ``--samples`` samples,
divided by them; this project's bottom-up pass, run once per image, is included), the fastest of
``--repeat`` calls after ``--warmup`` calls (TorchScript optimises during its first two); wall time
beside it; floating-point operations per sample from ``torch.utils.flop_counter`` (multiply-adds
counted as two). Ratios are the reference's CPU time over each case's, lowest and highest over rounds
(each round's fastest against the same round's).

Example
-------
    python scripts/benchmark_reference.py --reference-dir ~/COSDD --reference-python ~/cosdd-venv/bin/python \
        --sizes 256,512 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The reference's ladder at its default training crop (256): level 0 keeps the resolution, 1-7 halve it.
REFERENCE_DOWNSAMPLING = [False] + [True] * 7


def _time(run, samples: int, warmup: int, repeat: int) -> dict:
    runs = []
    for _ in range(warmup + repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    timed = runs[warmup:]
    return {"cpu_s_per_sample": min(c for c, _ in timed) / samples,
            "wall_s_per_sample": min(w for _, w in timed) / samples,
            "runs_cpu_s": [round(c, 3) for c, _ in timed], "warm_up_cpu_s": [round(c, 3) for c, _ in runs[:warmup]]}


def _flops(run) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return float(counter.get_total_flops())


def case_reference(args: argparse.Namespace, size: int) -> dict:
    """The reference's per-sample prediction step; imports nothing of this project."""
    import torch

    sys.path.insert(0, str(Path(args.reference_dir).resolve()))
    import utils  # the reference's
    from models.get_models import get_models
    from models.hub import Hub

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = utils.get_defaults({})
    vae, ar_decoder, s_decoder, direct_denoiser = get_models(config, 1)
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1)) * 1000.0 + 100.0
    hub = Hub(vae=vae, ar_decoder=ar_decoder, s_decoder=s_decoder, direct_denoiser=direct_denoiser,
              data_mean=x.mean(), data_std=x.std(),
              n_grad_batches=config["train-parameters"]["number-grad-batches"],
              checkpointed=config["memory"]["checkpointed"])
    hub.direct_pred = False  # prediction.py's posterior-sampling branch

    def one():
        with torch.inference_mode():
            return hub.predict_step(x, 0)

    def run():
        torch.stack([one() for _ in range(args.samples)]).mean(0)

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    out = {"parameters": {"vae": count(vae), "ar_decoder": count(ar_decoder), "signal_decoder": count(s_decoder)},
           "gflop_per_sample": _flops(one) / 1e9}
    out.update(_time(run, args.samples, args.warmup, args.repeat))
    return out


def case_ours(args: argparse.Namespace, size: int, kind: str, mode: str) -> dict:
    import torch

    from benchmark_sampling import _model  # this script's folder
    from bmz_cosdd.methods.base import ExportOptions
    from bmz_cosdd.nn.ladder_vae import LadderVAE
    from bmz_cosdd.nn.posterior import MMSEOutput, PosteriorSampler

    torch.set_num_threads(1)
    method, config, model = _model("reference")
    vae = model.vae
    if kind == "topology":
        torch.manual_seed(0)
        vae = LadderVAE(1, config.n_levels, list(config.latent_channels), config.features,
                        downsample=REFERENCE_DOWNSAMPLING).eval()
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    kw = dict(n_samples=args.samples, sample_batch=args.sample_batch, seed=0)
    sampler = PosteriorSampler(vae, model.signal_decoder, **kw)
    if mode == "eager":
        run = lambda: sampler.reduce(x)  # noqa: E731
    else:
        if kind == "preset":
            module = method.export(model, config, ExportOptions(samples=args.samples,
                                                                sample_batch=args.sample_batch, seed=0)).module
        else:
            module = MMSEOutput(sampler)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.jit.script(module.eval()).save(str(path))
            loaded = torch.jit.load(str(path))
        run = lambda: loaded(x)  # noqa: E731
    one = PosteriorSampler(vae, model.signal_decoder, **dict(kw, n_samples=2))
    with torch.no_grad():
        flops_1 = _flops(lambda: PosteriorSampler(vae, model.signal_decoder, **dict(kw, n_samples=1)).reduce(x))
        flops_2 = _flops(lambda: one.reduce(x))
    per_extra = flops_2 - flops_1
    out = {"parameters": {"vae": sum(p.numel() for p in vae.parameters()),
                          "signal_decoder": sum(p.numel() for p in model.signal_decoder.parameters())},
           "size_step": vae.size_step,
           "gflop_per_sample": (flops_1 + (args.samples - 1) * per_extra) / args.samples / 1e9,
           "gflop_bottom_up": (flops_1 - per_extra) / 1e9}
    out.update(_time(run, args.samples, max(args.warmup, 2 if mode == "scripted" else 1), args.repeat))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", help="a local checkout of krulllab/COSDD (models/ layout)")
    parser.add_argument("--reference-python", default=sys.executable,
                        help="a Python that imports the reference (torch, pytorch-lightning)")
    parser.add_argument("--sizes", default="256,512", help="image sizes (square), comma-separated")
    parser.add_argument("--samples", type=int, default=4, help="posterior samples per timed call")
    parser.add_argument("--sample-batch", type=int, default=10, help="this project's samples per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per case and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (at least 2 when scripted)")
    parser.add_argument("--cases", default="reference,preset-eager,preset-scripted,topology-eager,topology-scripted")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, size = args.case.rsplit(",", 1)
        if name == "reference":
            result = case_reference(args, int(size))
        else:
            kind, mode = name.split("-")
            result = case_ours(args, int(size), kind, mode)
        print(json.dumps(result))
        return

    cases = [c for c in args.cases.split(",") if c and (c != "reference" or args.reference_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    argv = [a for a in sys.argv[1:]]
    rows: list[dict] = []
    for round_ in range(args.rounds):
        for size in [int(s) for s in args.sizes.split(",")]:
            for case in cases:
                python = args.reference_python if case == "reference" else sys.executable
                proc = subprocess.run([python, __file__, *argv, "--case", f"{case},{size}"],
                                      capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    sys.exit(f"case {case} at {size}: {proc.stderr.strip().splitlines()[-1:]}")
                row = dict(json.loads(proc.stdout.strip().splitlines()[-1]), case=case, size=size, round=round_)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)

    summary: dict = {}
    for size in dict.fromkeys(r["size"] for r in rows):
        at = [r for r in rows if r["size"] == size]
        entry: dict = {}
        for case in cases:
            mine = [r for r in at if r["case"] == case]
            entry[case] = {"cpu_s_per_sample": [round(min(r["cpu_s_per_sample"] for r in mine), 3),
                                                round(max(r["cpu_s_per_sample"] for r in mine), 3)],
                           "gflop_per_sample": round(mine[0]["gflop_per_sample"], 1),
                           "gflop_per_cpu_s": round(mine[0]["gflop_per_sample"]
                                                    / min(r["cpu_s_per_sample"] for r in mine), 1)}
            if "reference" in cases and case != "reference":
                ratios = [ref["cpu_s_per_sample"] / r["cpu_s_per_sample"]
                          for ref in at if ref["case"] == "reference"
                          for r in mine if r["round"] == ref["round"]]
                entry[case]["reference_over_this"] = [round(min(ratios), 2), round(max(ratios), 2)]
        summary[f"{size}x{size}"] = entry
    import torch

    print(json.dumps({
        "what": "posterior sampling, CPU seconds per sample (min-max over rounds of each round's fastest call),"
                " one torch thread, cases interleaved; reference_over_this = the reference's time / the case's",
        "samples": args.samples, "rounds": args.rounds, "repeat": args.repeat, "threads": 1,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "reference_dir": args.reference_dir, "summary": summary, "rows": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
