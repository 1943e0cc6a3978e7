"""Training metrics as JSON lines and the loss-curve figure of a run."""

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


class MetricsLog:
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


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "Training") -> None:
    """Write a PNG with one panel per loss term: training (line) and validation (dots) against step."""
    plt = pyplot()
    skip = {"kind", "step", "epoch", "time", "steps_per_s"}
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in skip and not k.startswith("lr_") and isinstance(v, (int, float)) and k not in keys:
                keys.append(k)
    if not keys:
        return
    cols = min(3, len(keys))
    rows = int(math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        tx, ty = _series(records, "train", key)
        vx, vy = _series(records, "val", key)
        if tx:
            ax.plot(tx, ty, lw=1, color="tab:blue", label="train")
        if vx:
            ax.plot(vx, vy, "o-", ms=3, lw=1, color="tab:orange", label="validation")
        ax.set_title(key)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(_units(key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    save_figure(fig, path)
