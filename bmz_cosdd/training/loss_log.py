"""The loss log of a training run (`metrics.jsonl`: losses per step, validation per epoch) and its loss curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from bmz_cosdd.data.io import atomic_write_bytes
from bmz_cosdd.plotting import pyplot, save_figure


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (an empty list when the file is missing)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return records


class LossLog:
    """Appends one JSON record per line; on resume, drops records newer than the checkpoint."""

    def __init__(self, path: Path, keep_until_step: int | None = None) -> None:
        self.path = path
        if keep_until_step is not None:
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= keep_until_step]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write_bytes(path, text.encode())
        elif path.exists():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _series(records: Iterable[dict[str, Any]], kind: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if r.get("kind") == kind and isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(r["step"])
            ys.append(value)
    return xs, ys


def _units(key: str) -> str:
    if key in ("elbo", "nll", "kl"):
        return "nats / pixel"
    if key == "loss":
        return "sum of all terms"
    return "loss (normalised units)"


def _smoothed(values: list[float]) -> list[float]:
    """Centred moving average over about a twentieth of the points (at least 1), so the trend shows."""
    import numpy as np

    window = max(1, len(values) // 20)
    if window == 1:
        return list(values)
    padded = np.pad(np.asarray(values, dtype=np.float64), (window // 2, window - 1 - window // 2), mode="edge")
    return list(np.convolve(padded, np.ones(window) / window, mode="valid"))


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "Training", monitor: str | None = None) -> None:
    """Write the training report PNG: one panel per loss term and one for the learning rates.

    Training values are drawn faint with their moving average on top, validation
    values as dots; a dashed line marks the step of the best validation
    ``monitor`` (the checkpoint ``best.pt`` holds), named in the title.
    """
    plt = pyplot()
    skip = {"kind", "step", "epoch", "time", "steps_per_s"}
    keys: list[str] = []
    rates: list[str] = []
    for r in records:
        for k, v in r.items():
            if not isinstance(v, (int, float)) or k in skip:
                continue
            target = rates if k.startswith("lr_") else keys
            if k not in target:
                target.append(k)
    if not keys:
        return
    best_x, best_y = None, None
    if monitor is not None:
        vx, vy = _series(records, "val", monitor)
        if vy:
            best = min(range(len(vy)), key=vy.__getitem__)
            best_x, best_y = vx[best], vy[best]
    panels = len(keys) + (1 if rates else 0)
    cols = min(3, panels)
    rows = int(math.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, key in zip(flat, keys):
        tx, ty = _series(records, "train", key)
        vx, vy = _series(records, "val", key)
        if tx:
            ax.plot(tx, ty, lw=0.6, color="tab:blue", alpha=0.35)
            ax.plot(tx, _smoothed(ty), lw=1.4, color="tab:blue", label="train (moving average)")
        if vx:
            ax.plot(vx, vy, "o-", ms=3, lw=1, color="tab:orange", label="validation")
        if best_x is not None:
            ax.axvline(best_x, color="gray", ls="--", lw=0.8, label=f"best checkpoint (step {best_x})")
        ax.set_title(key + (" (monitored)" if key == monitor else ""))
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(_units(key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if rates:
        ax = flat[len(keys)]
        for key in rates:
            vx, vy = _series(records, "val", key)
            ax.step(vx, vy, where="post", lw=1.2, label=key[3:])
        ax.set_yscale("log")
        ax.set_title("learning rates")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("learning rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    steps = max((r.get("step", 0) for r in records), default=0)
    headline = f"{title}: {steps} steps"
    if best_x is not None:
        headline += f"; best validation {monitor} {best_y:.4g} at step {best_x}"
    fig.suptitle(headline)
    save_figure(fig, path)
