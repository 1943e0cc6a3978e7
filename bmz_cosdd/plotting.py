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
