"""Posterior sampling and training side by side with the reference implementation (krulllab/COSDD); prints JSON.

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

With ``--training``, training steps (a batch of ``--batch`` random ``--crop`` crops: losses, backward, the
optimisers' steps) instead:

- ``train-reference``: the reference's Lightning training step at its default configuration for that crop
  (with its direct denoiser and activation checkpointing, its defaults; gradients accumulated over 4
  batches), timed per batch by a Lightning callback; ``train-reference-lean``: without either;
- ``train-preset`` / ``train-preset-dd``: this project's step at ``--preset reference`` without / with its
  direct denoiser (``scripts/benchmark.py``'s train phase: crops drawn as a run draws them).

Figures: CPU seconds per posterior sample (``time.process_time`` over one call of ``--samples`` samples,
divided by them; this project's bottom-up pass, run once per image, is included), the fastest of
``--repeat`` calls after ``--warmup`` calls (TorchScript optimises during its first two); wall time
beside it; floating-point operations per sample from ``torch.utils.flop_counter`` (multiply-adds
counted as two). Ratios are the reference's CPU time over each case's, lowest and highest over rounds
(each round's fastest against the same round's). Training: CPU seconds per step, the mean of
``--train-steps`` steps after ``--train-warmup``.

Examples
--------
    python scripts/benchmark_reference.py --reference-dir ~/COSDD --reference-python ~/cosdd-venv/bin/python \
        --sizes 256,512 --rounds 3
    python scripts/benchmark_reference.py --reference-dir ~/COSDD --reference-python ~/cosdd-venv/bin/python \
        --training --rounds 3
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


def _flops(run, *args) -> float:
    """Floating-point operations of ``run(*args)`` (``torch.utils.flop_counter``, a multiply-add counted as two)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run(*args)
    return float(counter.get_total_flops())


def _reference_hub(args: argparse.Namespace, settings: dict, data):
    """The reference's Lightning module at its defaults updated by ``settings`` (``utils.get_defaults``), one
    torch thread, normalised by ``data``'s mean and standard deviation; imports nothing of this project."""
    import torch

    sys.path.insert(0, str(Path(args.reference_dir).resolve()))
    import utils  # the reference's
    from models.get_models import get_models
    from models.hub import Hub

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = utils.get_defaults(settings)
    vae, ar_decoder, s_decoder, direct_denoiser = get_models(config, 1)
    return Hub(vae=vae, ar_decoder=ar_decoder, s_decoder=s_decoder, direct_denoiser=direct_denoiser,
               data_mean=data.mean(), data_std=data.std(),
               n_grad_batches=config["train-parameters"]["number-grad-batches"],
               checkpointed=config["memory"]["checkpointed"])


def _reference_parameters(hub) -> dict:
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    return {"vae": count(hub.vae), "ar_decoder": count(hub.ar_decoder), "signal_decoder": count(hub.s_decoder),
            "direct_denoiser": count(hub.direct_denoiser)}


def case_reference(args: argparse.Namespace, size: int) -> dict:
    """The reference's per-sample prediction step."""
    import torch

    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1)) * 1000.0 + 100.0
    hub = _reference_hub(args, {}, x)
    hub.direct_pred = False  # prediction.py's posterior-sampling branch

    def one():
        with torch.inference_mode():
            return hub.predict_step(x, 0)

    def run():
        torch.stack([one() for _ in range(args.samples)]).mean(0)

    out = {"parameters": _reference_parameters(hub), "gflop_per_sample": _flops(one) / 1e9}
    out.update(_time(run, args.samples, args.warmup, args.repeat))
    return out


def case_reference_train(args: argparse.Namespace, lean: bool) -> dict:
    """The reference's training step (its Lightning module's ``training_step``, manual optimisation, Adamax,
    gradients accumulated over its default 4 batches) at its default configuration for a ``--crop`` crop:
    with its direct denoiser and activation checkpointing (its defaults), or without either (``lean``)."""
    import pytorch_lightning as pl
    import torch

    n = (args.train_warmup + args.train_steps) * args.batch
    crops = torch.rand(n, 1, args.crop, args.crop, generator=torch.Generator().manual_seed(1)) * 1000.0 + 100.0
    hub = _reference_hub(args, {"train-parameters": {"crop-size": [args.crop, args.crop],
                                                     "use-direct-denoiser": not lean},
                                "memory": {"checkpointed": not lean}}, crops)
    hub.on_train_epoch_end = lambda: None  # its schedulers step on validation metrics, not run here
    times: list = []  # (CPU, wall) seconds of each batch
    started: list = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *_):
            started[:] = [time.process_time(), time.perf_counter()]

        def on_train_batch_end(self, *_):
            times.append((time.process_time() - started[0], time.perf_counter() - started[1]))

    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="32-true", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Clock()])
    trainer.fit(hub, torch.utils.data.DataLoader(crops, batch_size=args.batch))
    timed = times[args.train_warmup:]
    return {"parameters": _reference_parameters(hub),
            "cpu_s_per_step": sum(t[0] for t in timed) / len(timed),
            "wall_s_per_step": sum(t[1] for t in timed) / len(timed),
            "batch": args.batch, "crop": args.crop}


def case_ours_train(args: argparse.Namespace, direct_denoiser: bool) -> dict:
    """This project's training step at ``--preset reference`` (``scripts/benchmark.py``'s train phase)."""
    import torch

    from benchmark import phase_train  # this script's folder

    torch.set_num_threads(1)
    out = phase_train(argparse.Namespace(preset="reference", crop=args.crop, batch=args.batch, device="cpu",
                                         steps=args.train_steps, warmup=args.train_warmup,
                                         direct_denoiser=direct_denoiser))
    return dict(out, cpu_s_per_step=out["cpu_seconds_per_step"], wall_s_per_step=out["seconds_per_step"])


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
    # One sample and two: the bottom-up pass (once per image) and a sample's own cost apart.
    flops_1, flops_2 = (_flops(PosteriorSampler(vae, model.signal_decoder, **dict(kw, n_samples=k)).reduce, x)
                        for k in (1, 2))
    per_extra = flops_2 - flops_1
    out = {"parameters": {"vae": sum(p.numel() for p in vae.parameters()),
                          "signal_decoder": sum(p.numel() for p in model.signal_decoder.parameters())},
           "size_step": vae.size_step,
           "gflop_per_sample": (flops_1 + (args.samples - 1) * per_extra) / args.samples / 1e9,
           "gflop_bottom_up": (flops_1 - per_extra) / 1e9}
    out.update(_time(run, args.samples, max(args.warmup, 2 if mode == "scripted" else 1), args.repeat))
    return out


SAMPLING_CASES = "reference,preset-eager,preset-scripted,topology-eager,topology-scripted"
TRAINING_CASES = "train-reference,train-reference-lean,train-preset,train-preset-dd"


def _is_reference(case: str) -> bool:
    """Whether ``case`` runs the reference implementation (``reference``, ``train-reference[-lean]``)."""
    return "reference" in case.split("-")[:2]


def run_case(args: argparse.Namespace, name: str, size: int) -> dict:
    if name == "reference":
        return case_reference(args, size)
    if name.startswith("train-reference"):
        return case_reference_train(args, lean=name.endswith("-lean"))
    if name.startswith("train-preset"):
        return case_ours_train(args, direct_denoiser=name.endswith("-dd"))
    kind, mode = name.split("-")
    return case_ours(args, size, kind, mode)


def summarise(rows: list, cases: list, key: str) -> dict:
    """Per size: each case's figure (min-max over rounds) and the reference cases' over it, round by round."""
    summary: dict = {}
    references = [c for c in cases if _is_reference(c)]
    for size in dict.fromkeys(r["size"] for r in rows):
        at = [r for r in rows if r["size"] == size]
        entry: dict = {}
        for case in cases:
            mine = [r for r in at if r["case"] == case]
            values = [r[key] for r in mine]
            entry[case] = {key: [round(min(values), 3), round(max(values), 3)]}
            if "gflop_per_sample" in mine[0]:
                entry[case]["gflop_per_sample"] = round(mine[0]["gflop_per_sample"], 1)
                entry[case]["gflop_per_cpu_s"] = round(mine[0]["gflop_per_sample"] / min(values), 1)
            if case in references:
                continue
            for ref_case in references:
                ratios = [ref[key] / r[key] for ref in at if ref["case"] == ref_case
                          for r in mine if r["round"] == ref["round"]]
                entry[case][f"{ref_case}_over_this"] = [round(min(ratios), 2), round(max(ratios), 2)]
        summary[f"{size}x{size}"] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--reference-dir", help="a local checkout of krulllab/COSDD (models/ layout)")
    parser.add_argument("--reference-python", default=sys.executable,
                        help="a Python that imports the reference (torch, pytorch-lightning)")
    parser.add_argument("--sizes", default="256,512", help="image sizes (square), comma-separated")
    parser.add_argument("--samples", type=int, default=4, help="posterior samples per timed call")
    parser.add_argument("--sample-batch", type=int, default=10, help="this project's samples per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per case and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (at least 2 when scripted)")
    parser.add_argument("--training", action="store_true", help="training steps instead of posterior sampling")
    parser.add_argument("--crop", type=int, default=64, help="--training: crop size")
    parser.add_argument("--batch", type=int, default=4, help="--training: crops per step")
    parser.add_argument("--train-steps", type=int, default=8, help="--training: timed steps per case and round")
    parser.add_argument("--train-warmup", type=int, default=3, help="--training: untimed steps first")
    parser.add_argument("--cases", help=f"comma-separated (default {SAMPLING_CASES}; with --training {TRAINING_CASES})")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, size = args.case.rsplit(",", 1)
        print(json.dumps(run_case(args, name, int(size))))
        return

    wanted = args.cases or (TRAINING_CASES if args.training else SAMPLING_CASES)
    cases = [c for c in wanted.split(",") if c]
    unknown = [c for c in cases if c not in (SAMPLING_CASES + "," + TRAINING_CASES).split(",")]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r} (choose from {SAMPLING_CASES},{TRAINING_CASES})")
    if not args.reference_dir:
        skipped = [c for c in cases if _is_reference(c)]
        cases = [c for c in cases if c not in skipped]
        if not cases:
            parser.error("only reference cases asked for, but no --reference-dir (a local krulllab/COSDD checkout)")
        if skipped:
            print(f"no --reference-dir: {', '.join(skipped)} skipped, this project's cases only", file=sys.stderr)
    sizes = [args.crop] if args.training else [int(s) for s in args.sizes.split(",")]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows: list[dict] = []
    for round_ in range(args.rounds):
        for size in sizes:
            for case in cases:
                python = args.reference_python if _is_reference(case) else sys.executable
                proc = subprocess.run([python, __file__, *sys.argv[1:], "--case", f"{case},{size}"],
                                      capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    sys.exit(f"case {case} at {size}: {proc.stderr.strip().splitlines()[-1:]}")
                row = dict(json.loads(proc.stdout.strip().splitlines()[-1]), case=case, size=size, round=round_)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    import torch

    key = "cpu_s_per_step" if args.training else "cpu_s_per_sample"
    what = ("training steps, CPU seconds per step (batch --batch of --crop crops)" if args.training
            else "posterior sampling, CPU seconds per sample (each round's fastest call)")
    print(json.dumps({
        "what": what + ", min-max over rounds, one torch thread, cases interleaved; X_over_this = case X's time"
                       " over this case's, round by round",
        "samples": args.samples, "rounds": args.rounds, "repeat": args.repeat, "threads": 1,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "reference_dir": args.reference_dir, "summary": summarise(rows, cases, key), "rows": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
