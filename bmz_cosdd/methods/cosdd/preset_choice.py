"""``--preset auto``: the preset with the best measured PSNR for the run's device and budget.

The evidence is a set of PSNR-against-training-time curves, one per preset, measured with
``scripts/evaluate_synthetic.py --curve`` and stored beside this module
(``preset_curves.json``: the command, machine and threads, and each preset's batch and crop
size, are in the file). Only presets whose size step divides the run's crop size take part.
Every preset is compared at one time: ``max_time``, or the time a step limit takes the
cheapest preset (its steps times that preset's measured seconds per step, scaled by the pixels
of a step when the batch or crop differ), whichever is shorter: a step limit stands for the
compute it buys with the cheapest preset, so a larger preset is chosen only where the curves
favour it at equal time (it then takes longer for the same steps). Between measured times the
PSNR is interpolated linearly in log time; beyond the longest it is held at the last figure
(no credit for time that was not measured). A time below the shortest measured, or one at
which every preset stayed below the noisy input, gets the cheapest preset. Presets within
:data:`TIE_DB` of the best count as equal and the cheapest of them wins.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from bmz_cosdd.methods.base import Budget

#: The measured curves (``scripts/evaluate_synthetic.py --curve ... --write-curves``).
CURVES = Path(__file__).with_name("preset_curves.json")
#: Presets this close in expected PSNR (dB) count as equal; the cheaper one is chosen.
TIE_DB = 0.1
#: ``--preset auto`` on CUDA, where no curves have been measured.
CUDA_PRESET = "small"


@dataclass(frozen=True)
class PresetChoice:
    """The chosen preset and the sentence saying why (recorded in the run's config and notes)."""

    preset: str
    reason: str


@lru_cache(maxsize=4)
def load_curves(path: Path = CURVES) -> dict[str, Any]:
    """The curves file as a mapping (``presets``: name -> ``batch_size``, ``crop_size`` and ``points``, each
    with ``time_s``, ``trained_s``, ``steps`` and ``psnr``)."""
    return json.loads(Path(path).read_text())


def psnr_at(curve: list[dict[str, Any]], seconds: float) -> Optional[float]:
    """Expected PSNR (dB) after ``seconds`` of training, from a preset's measured points.

    None below the first measured time; the last figure beyond the last time; linear in
    log time between.

    >>> curve = [{"time_s": 60, "psnr": 30.0}, {"time_s": 240, "psnr": 32.0}]
    >>> psnr_at(curve, 30), psnr_at(curve, 120), psnr_at(curve, 1000)
    (None, 31.0, 32.0)
    """
    points = sorted((float(p["time_s"]), float(p["psnr"])) for p in curve)
    if seconds < points[0][0]:
        return None
    for (t0, p0), (t1, p1) in zip(points, points[1:]):
        if seconds <= t1:
            return p0 + (p1 - p0) * math.log(seconds / t0) / math.log(t1 / t0)
    return points[-1][1]


def seconds_per_step(measured: dict[str, Any], budget: Budget) -> float:
    """Training seconds per step of a preset (its entry in the curves file): the last point's, scaled by
    the pixels per step."""
    last = max(measured["points"], key=lambda p: p["time_s"])
    per_step = float(last["trained_s"]) / max(int(last["steps"]), 1)
    pixels = budget.batch_size * budget.crop_size**2
    return per_step * pixels / (int(measured["batch_size"]) * int(measured["crop_size"]) ** 2)


def choose_preset(device: str, budget: Budget, size_steps: dict[str, int],
                  curves: Optional[dict[str, Any]] = None) -> PresetChoice:
    """The preset expected to give the best image on ``device`` within ``budget``.

    Parameters
    ----------
    device
        ``cpu`` or ``cuda``: where the run trains.
    budget
        The run's limits (:class:`Budget`).
    size_steps
        Each preset's size step in Y and X: a preset takes part when it divides ``budget.crop_size``.
    curves
        The measured curves; default: :data:`CURVES`.

    Returns
    -------
    PresetChoice
        The preset and a sentence with each preset's expected PSNR at the budget's time.
    """
    if device == "cuda":
        return PresetChoice(CUDA_PRESET, f"{CUDA_PRESET}: no PSNR-against-time curves have been measured on a GPU"
                                         " yet, so auto takes the paper's smaller preset there")
    curves = curves if curves is not None else load_curves()
    presets = {name: entry for name, entry in curves["presets"].items()
               if budget.crop_size % size_steps.get(name, 1) == 0}
    if not presets:
        raise ValueError(f"no measured preset takes crops of {budget.crop_size}")
    cost = {name: seconds_per_step(entry, budget) for name, entry in presets.items()}
    by_cost = sorted(presets, key=cost.__getitem__)
    cheapest = by_cost[0]
    if budget.seconds is None and budget.steps is None:
        return PresetChoice(cheapest, f"{cheapest}: no time or step limit to compare presets at")
    # A step limit counts as the time it takes the cheapest preset: every preset is compared at that time.
    by_steps = budget.steps * cost[cheapest] if budget.steps is not None else math.inf
    seconds = min(budget.seconds if budget.seconds is not None else math.inf, by_steps)
    budget_text = budget.describe() + (f", about {by_steps:.0f} s with {cheapest}" if seconds == by_steps else "")
    left_out = sorted(set(curves["presets"]) - set(presets))
    source = (f"measured on {curves['images']} with {curves['noise']} noise (noisy input"
              f" {curves['psnr_noisy']:.1f} dB), {curves['threads']} threads on {curves['cpus']} CPUs:"
              " scripts/evaluate_synthetic.py --curve; on other images the dB differ, the ranking is the evidence"
              + (f"; {', '.join(left_out)} left out: crops of {budget.crop_size} are not a multiple of"
                 f" {', '.join(str(size_steps[n]) for n in left_out)}" if left_out else ""))
    shortest = min(float(p["time_s"]) for p in presets[cheapest]["points"])
    if seconds < shortest:
        return PresetChoice(cheapest, f"{cheapest}, the cheapest preset: the budget ({budget_text}) is shorter than"
                                      f" the shortest training measured ({shortest:.0f} s; {source})")
    scored = {name: value for name in by_cost
              if (value := psnr_at(presets[name]["points"], seconds)) is not None}
    best = max(scored.values())
    figures = ", ".join(f"{name} {value:.1f} dB" for name, value in scored.items())
    longest = max(float(p["time_s"]) for entry in presets.values() for p in entry["points"])
    held = f" (beyond {longest:.0f} s: the {longest:.0f} s figures)" if seconds > longest else ""
    if best < float(curves["psnr_noisy"]):
        return PresetChoice(cheapest, f"{cheapest}, the cheapest preset: in this budget ({budget_text}) every preset"
                                      f" stayed below the noisy input on the benchmark ({figures}; {source})")
    chosen = next(name for name in by_cost if name in scored and scored[name] >= best - TIE_DB)
    return PresetChoice(chosen, f"{chosen}: PSNR after {seconds:.0f} s of training{held} (the budget: {budget_text}):"
                                f" {figures} ({source})")
