"""Headless matplotlib: one way to get pyplot and to write a figure."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bmz_cosdd.data.io import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(fig: Any, dpi: int = 90) -> bytes:
    """Render ``fig`` as PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    return buffer.getvalue()


def save_figure(fig: Any, path: Path, dpi: int = 90) -> None:
    """Write ``fig`` to ``path`` as PNG, atomically, and close it."""
    atomic_write_bytes(path, figure_bytes(fig, dpi))


def display_range(image: Any, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Percentile display limits of ``image`` (so that a few hot pixels do not wash it out)."""
    import numpy as np

    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in np.percentile(finite, [low, high]))
    if vmax <= vmin:
        vmax = vmin + 1.0
    return vmin, vmax


def show_image(
    ax: Any,
    image: Any,
    title: str,
    label: str = "intensity",
    limits: tuple[float, float] | None = None,
    cmap: str = "gray",
) -> Any:
    """Draw a 2-D ``image`` on ``ax`` with a title, no ticks and a labelled colour bar.

    ``limits`` default to :func:`display_range`; pass the same limits to panels
    that must be compared (noisy, prediction, target). Returns the image artist.
    """
    vmin, vmax = limits if limits is not None else display_range(image)
    artist = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    bar = ax.figure.colorbar(artist, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return artist
