"""Posterior sampling per sample, training form against inference form; ``benchmark.py --sampling`` runs it.

Not a benchmark on its own: ``scripts/benchmark.py`` imports it from its own folder. For every image size
(``--sampling-sizes``) and each form of the networks (``training``: ``PosteriorSampler(fast=False)``, batch
norm as a separate op and the training-form blocks; ``inference``: the default, see
``bmz_cosdd/nn/fast_inference.py``) it times, each in its own process:

- ``eager``: the sampler as in-framework prediction runs it (``Method.predict`` builds the same);
- ``scripted``: the sampler compiled with ``torch.jit.script``, saved and loaded (for the inference form,
  exactly the module a package ships, from ``Method.export``).

The side-by-side comparison with the reference implementation is ``scripts/benchmark_reference.py``.

The figure is CPU time per posterior sample (``time.process_time`` over a ``reduce`` of
``--sampling-samples`` samples, divided by them, the bottom-up pass included), the fastest of
``--sampling-repeat`` runs after two warm-up runs (TorchScript optimises during its first two calls; their
times are reported too); wall time beside it. The model is COSDD at ``--preset``
(untrained; its batch norms get seeded non-trivial statistics, so the folding is exercised).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Untimed runs first: TorchScript's profiling executor optimises a loaded module during its first two calls.
WARM_UP = 2


def _model(preset: str):
    import torch

    from bmz_cosdd.methods.registry import get_method

    method = get_method("cosdd")
    config = method.config_from_dict({"preset": preset, "direction": "x", "ar_layers": 8})
    torch.manual_seed(0)
    model = method.build(config, 1).eval()
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(c, generator=generator))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=generator))
            m.weight.data.copy_(1.0 + 0.3 * torch.randn(c, generator=generator))
            m.bias.data.copy_(0.3 * torch.randn(c, generator=generator))
    return method, config, model


def phase_sampling(args: argparse.Namespace) -> dict:
    """Time one case in this process: ``args.sampling_case`` is ``SIZE,FORM,MODE``."""
    import torch

    from bmz_cosdd.methods.base import ExportOptions
    from bmz_cosdd.nn.posterior import MMSEOutput, PosteriorSampler

    size, form, mode = args.sampling_case.split(",")
    size, n = int(size), args.sampling_samples
    method, config, model = _model(args.preset)
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    fast = form == "inference"
    kw = dict(n_samples=n, sample_batch=args.sample_batch, seed=0)
    out: dict = {"size": f"{size}x{size}", "form": form, "mode": mode, "samples": n}
    if mode == "eager":
        sampler = PosteriorSampler(model.vae, model.signal_decoder, fast=fast, **kw)
        run = lambda: sampler.reduce(x)[0]  # noqa: E731
    else:
        exported = method.export(model, config, ExportOptions(samples=n, sample_batch=args.sample_batch, seed=0))
        module = exported.module.eval()
        if not fast:
            s = module.sampler
            module = MMSEOutput(PosteriorSampler(s.vae, s.decoder, fast=False, **kw)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.jit.script(module).save(str(path))
            loaded = torch.jit.load(str(path))
        run = lambda: loaded(x)  # noqa: E731
    runs = []
    for _ in range(WARM_UP + args.sampling_repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        result = run()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    timed = runs[WARM_UP:]
    out["warm_up_cpu_s"] = [round(c, 3) for c, _ in runs[:WARM_UP]]
    out["cpu_s_per_sample"] = min(c for c, _ in timed) / n
    out["wall_s_per_sample"] = min(w for _, w in timed) / n
    out["runs_cpu_s"] = [round(c, 3) for c, _ in timed]
    if fast and mode == "eager":
        # The two forms on the same draws (same seed): samples in normalised units.
        k = min(n, 2)
        same = dict(kw, n_samples=k, keep_samples=True)
        a = PosteriorSampler(model.vae, model.signal_decoder, fast=False, **same).reduce(x)[2]
        b = PosteriorSampler(model.vae, model.signal_decoder, **same).reduce(x)[2]
        out["max_abs_diff_vs_training_form"] = float((a.double() - b.double()).abs().max())
        out["sample_abs_max"] = float(a.abs().max())
    del result
    return out


def sampling(args: argparse.Namespace, script: str) -> dict:
    """Every case in its own process (``script ... --sampling-case``) and their summary."""
    import platform

    import torch

    threads = args.threads or torch.get_num_threads()
    cases = []
    for size in [int(s) for s in args.sampling_sizes.split(",")]:
        for form in ("training", "inference"):
            for mode in ("eager", "scripted"):
                cmd = [sys.executable, script, *sys.argv[1:],
                       "--sampling-case", f"{size},{form},{mode}"]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                case = json.loads(proc.stdout.strip().splitlines()[-1])
                print(json.dumps(case), file=sys.stderr, flush=True)
                cases.append(case)
    by = {(c["size"], c["form"], c["mode"]): c for c in cases}
    summary = {}
    for size in dict.fromkeys(c["size"] for c in cases):
        row = {}
        for mode in ("eager", "scripted"):
            t, f = by[(size, "training", mode)], by[(size, "inference", mode)]
            row[mode] = {"training_cpu_s": round(t["cpu_s_per_sample"], 4),
                         "inference_cpu_s": round(f["cpu_s_per_sample"], 4),
                         "speed_up": round(t["cpu_s_per_sample"] / f["cpu_s_per_sample"], 2)}
        eager = by[(size, "inference", "eager")]
        row["max_abs_diff_vs_training_form"] = eager.get("max_abs_diff_vs_training_form")
        summary[size] = row
    return {
        "what": "posterior sampling, CPU seconds per sample (fastest of the repeats), training form of the"
                " networks vs their inference form (bmz_cosdd/nn/fast_inference.py)",
        "preset": args.preset, "sample_batch": args.sample_batch, "samples": args.sampling_samples,
        "repeat": args.sampling_repeat, "threads": threads, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "summary": summary, "cases": cases,
    }
