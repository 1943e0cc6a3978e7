"""``--preset auto``: the preset with the best measured PSNR for the run's device and budget.

The evidence is a set of PSNR-against-training-time curves, one per preset, measured with
``scripts/evaluate_synthetic.py --curve`` and stored beside this module
(``preset_curves.json``: the command, machine and threads, and each preset's batch and crop
size, are in the file). Only presets whose size step divides the run's crop size take part.
A budget in seconds is compared directly; a budget in steps becomes each preset's own time,
its steps times the seconds per step measured on the same curve (scaled by the pixels of a
step when the batch or crop differ). Between measured times the PSNR is interpolated
linearly in log time; beyond the longest it is held at the last figure (no credit for time
that was not measured); when even the cheapest preset's time is below the shortest
measured, nothing can be compared and the cheapest preset is chosen. Presets within
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
        The preset and a sentence with each preset's expected PSNR and training time.
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
    seconds = {name: min(budget.seconds if budget.seconds is not None else math.inf,
                         budget.steps * cost[name] if budget.steps is not None else math.inf)
               for name in presets}
    by_cost = sorted(presets, key=cost.__getitem__)
    cheapest = by_cost[0]
    left_out = sorted(set(curves["presets"]) - set(presets))
    source = (f"PSNR against training time measured on {curves['images']} with {curves['noise']} noise,"
              f" {curves['threads']} threads on {curves['cpus']} CPUs: scripts/evaluate_synthetic.py --curve"
              + (f"; {', '.join(left_out)} left out: crops of {budget.crop_size} are not a multiple of"
                 f" {', '.join(str(size_steps[n]) for n in left_out)}" if left_out else ""))
    shortest = min(float(p["time_s"]) for p in presets[cheapest]["points"])
    if not math.isfinite(seconds[cheapest]):
        return PresetChoice(cheapest, f"{cheapest}: no time or step limit to compare presets at")
    if seconds[cheapest] < shortest:
        return PresetChoice(cheapest, f"{cheapest}: the budget ({budget.describe()}, about {seconds[cheapest]:.0f} s"
                                      f" with {cheapest}) is shorter than the shortest training measured"
                                      f" ({shortest:.0f} s), so the cheapest preset ({source})")
    expected = {name: psnr_at(presets[name]["points"], seconds[name]) for name in by_cost}
    scored = {name: value for name, value in expected.items() if value is not None}
    best = max(scored.values())
    chosen = next(name for name in by_cost if name in scored and scored[name] >= best - TIE_DB)
    longest = max(float(p["time_s"]) for entry in presets.values() for p in entry["points"])
    figures = ", ".join(f"{name} {scored[name]:.1f} dB in {seconds[name]:.0f} s" if name in scored
                        else f"{name} not measured that short" for name in by_cost)
    held = f"; times beyond {longest:.0f} s count as {longest:.0f} s" if max(seconds.values()) > longest else ""
    return PresetChoice(chosen, f"{chosen}: expected PSNR in this budget ({budget.describe()}): {figures}{held}"
                                f" ({source})")
