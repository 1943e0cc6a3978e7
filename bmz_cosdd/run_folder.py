"""The run folder: what a training run leaves behind, by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    """Paths inside a run folder.

    ``config.yaml`` (resolved settings, seeds included), ``normalisation.json``
    (float64 statistics), ``split.json`` (which images train and validate),
    ``checkpoints/best.pt`` and ``checkpoints/last.pt``, ``metrics.jsonl``,
    ``loss_curves.png``, ``quality.json`` (the ground-truth-free assessment of the best
    checkpoint, :mod:`bmz_cosdd.training.quality`) and, when the method chose settings
    from the data, ``notes.txt``.
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def stats(self) -> Path:
        return self.root / "normalisation.json"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.root / "loss_curves.png"

    @property
    def notes(self) -> Path:
        return self.root / "notes.txt"

    @property
    def quality(self) -> Path:
        return self.root / "quality.json"
