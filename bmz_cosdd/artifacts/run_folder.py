"""The run folder: the one reader and writer of every file a training run leaves behind.

A run folder is an artifact users move between machines (train on a cluster, package on a
laptop), so it is self-contained: besides the settings, statistics and checkpoints it keeps
the image that packaging, ``check`` and the cover need (a crop of a validation image in raw
units), and it records the training data's paths both as typed and resolved to absolute
paths. Nothing outside this module opens these files by name.

======================  ==========================================================================
file                    what
======================  ==========================================================================
``config.yaml``         resolved settings (seeds included), the library version and the data paths
                        resolved when the run started
``normalisation.json``  per-channel statistics (float64)
``split.json``          which images trained and which validated
``checkpoints/``        ``best.pt`` and ``last.pt``
``metrics.jsonl``       the loss log; ``loss_curves.png`` its plot
``notes.txt``           what the method chose from the data
``quality.json``        the ground-truth-free assessment of the best checkpoint
``sample.npy``          the package's test image: raw (C, [Z,] Y, X) float32, described by
``sample.json``         its source, axes, window and padding
``.lock``               held by the process that writes the run (train, resume)
======================  ==========================================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bmz_cosdd.data.axes import per_axis
from bmz_cosdd.data.io import atomic_write_bytes, atomic_write_text
from bmz_cosdd.errors import UserError

__all__ = ["RunFolder", "RunSample", "package_grid"]

_VERSION_KEY = "bmz_cosdd_version"
_RESOLVED_KEY = "data_paths_resolved"


@dataclass(frozen=True)
class RunSample:
    """The image a package is tested with, as stored in the run.

    Attributes
    ----------
    image : numpy.ndarray
        Raw intensities, (C, Y, X) or (C, Z, Y, X), float32.
    source : str
        The validation image it was cut from (``file[index]``).
    axes : str
        Axes of ``image``: ``CYX`` or ``CZYX``.
    padded : bool
        True when the validation image was smaller than the model's minimum size and the
        crop was extended by reflection to reach it.
    """

    image: np.ndarray
    source: str
    axes: str
    padded: bool = False


def package_grid(halo: int | Sequence[int], size_step: int | Sequence[int]) -> tuple[Any, Any]:
    """(halo, minimum size) a package declares for a network of receptive-field ``halo`` and ``size_step``.

    The halo is rounded up to the step; the minimum size is ``2 * halo + 1`` rounded up to the
    step (bioimageio.spec and deepImageJ require ``min - 2 * halo >= 1``). Ints give ints; a
    sequence for either (one value per spatial axis, e.g. an anisotropic volume model's
    (Z, Y, X)) gives tuples per axis.

    Examples
    --------
    >>> package_grid(10, 4)
    (12, 28)
    >>> package_grid((3, 10, 10), (1, 4, 4))
    ((3, 12, 12), (7, 28, 28))
    """
    if isinstance(halo, (int, np.integer)) and isinstance(size_step, (int, np.integer)):
        rounded = -(-int(halo) // int(size_step)) * int(size_step)
        return rounded, -(-(2 * rounded + 1) // int(size_step)) * int(size_step)
    n = len(halo) if not isinstance(halo, (int, np.integer)) else len(size_step)
    pairs = [package_grid(h, s) for h, s in zip(per_axis(halo, n), per_axis(size_step, n))]
    return tuple(h for h, _ in pairs), tuple(m for _, m in pairs)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def settings_from_record(values: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded ``config.yaml`` as settings: library version and resolved paths removed.

    ``data.paths`` become the paths that exist now: each as typed if it exists relative to the
    current working directory, else as resolved when the run started, else as typed (and
    reading the data will say it is missing). Settings without those records pass unchanged,
    so a run's ``config.yaml`` is a valid ``--config`` for a new run.
    """
    values = dict(values)
    values.pop(_VERSION_KEY, None)
    resolved = values.pop(_RESOLVED_KEY, None) or []
    data = values.get("data")
    if isinstance(data, dict) and isinstance(data.get("paths"), list):
        typed = [str(p) for p in data["paths"]]
        if len(resolved) == len(typed):
            values["data"] = {**data, "paths": [t if Path(t).expanduser().exists() or not Path(r).exists() else r
                                                for t, r in zip(typed, resolved)]}
    return values


class RunFolder:
    """The run folder at ``root`` (made absolute, so it keeps meaning the same folder).

    Parameters
    ----------
    root : str or pathlib.Path
        The folder, as the user typed it (``~`` is expanded).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # -- paths the trainer writes through its own helpers (atomic checkpoints, the loss log) --------
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

    @property
    def sample(self) -> Path:
        return self.root / "sample.npy"

    @property
    def sample_info(self) -> Path:
        return self.root / "sample.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    # -- checks ---------------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return self.best.is_file() or self.last.is_file()

    def check_new(self) -> None:
        """Refuse a folder that is not a place for a new run (before anything is written).

        Raises
        ------
        UserError
            When the path is a file, or already holds a trained run.
        """
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out {self.root} is a file, not a folder for the run")
        self.check_not_in_use()
        if self.has_checkpoint():
            raise UserError(f"{self.root} already holds a trained run (resume it with --resume or choose another"
                            " --out)")

    def check_exists(self) -> None:
        """Raise a one-line UserError unless this is a run folder with its settings."""
        if not self.root.exists():
            raise UserError(f"no such run folder: {self.root}")
        if not self.root.is_dir():
            raise UserError(f"{self.root} is a file, not a run folder")
        if not self.config.is_file():
            raise UserError(f"{self.root} is not a run folder (no config.yaml)")

    # -- settings -------------------------------------------------------------------------------
    def write_config(self, values: dict[str, Any], version: str) -> None:
        """Write the resolved settings, with the library version and the data paths resolved to absolute ones.

        ``values`` is a mapping shaped like ``config.yaml`` (``data.paths`` as typed, relative
        to the working directory of the process that started the run).
        """
        paths = list((values.get("data") or {}).get("paths") or [])
        resolved = [str(Path(p).expanduser().absolute()) for p in paths]
        previous = self._raw_config().get(_RESOLVED_KEY) if self.config.is_file() else None
        if previous and len(previous) == len(paths):
            resolved = list(previous)  # resuming from elsewhere: keep where the data was found first
        text = yaml.safe_dump({**values, _VERSION_KEY: version, _RESOLVED_KEY: resolved}, sort_keys=False)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config, text)

    def _raw_config(self) -> dict[str, Any]:
        try:
            values = yaml.safe_load(self.config.read_text())
        except yaml.YAMLError:
            raise UserError(f"{self.config} is not valid YAML") from None
        if not isinstance(values, dict):
            raise UserError(f"{self.config} does not hold a mapping")
        return values

    def read_config(self) -> dict[str, Any]:
        """The settings as a mapping shaped like ``config.yaml`` (library version and resolved paths removed).

        ``data.paths`` are the paths that exist now: each as typed if it exists relative to the
        current working directory, else as resolved when the run started (so a run resumes from
        any working directory), else as typed (and reading the data will say it is missing).
        """
        self.check_exists()
        return settings_from_record(self._raw_config())

    def library_version(self) -> str | None:
        """The bmz-cosdd version that wrote the settings."""
        return self._raw_config().get(_VERSION_KEY) if self.config.is_file() else None

    # -- statistics, split, notes, quality -------------------------------------------------------
    def write_stats(self, stats: Any) -> None:
        stats.save(self.stats)

    def read_stats(self) -> Any:
        from bmz_cosdd.data.normalisation import NormStats

        return NormStats.load(self.stats)

    def write_split(self, split: dict[str, Any]) -> None:
        atomic_write_text(self.split, json.dumps(split, indent=1))

    def read_split(self) -> dict[str, Any]:
        if not self.split.is_file():
            return {}
        try:
            values = json.loads(self.split.read_text())
        except ValueError:
            raise UserError(f"{self.split} is damaged") from None
        return values if isinstance(values, dict) else {}

    def write_notes(self, lines: list[str]) -> None:
        if lines:
            atomic_write_text(self.notes, "\n".join(lines) + "\n")

    def read_notes(self) -> list[str]:
        return self.notes.read_text().splitlines() if self.notes.is_file() else []

    def write_quality(self, report: dict[str, Any]) -> None:
        atomic_write_text(self.quality, json.dumps(report, indent=1) + "\n")

    def read_quality(self) -> dict[str, Any] | None:
        """The quality assessment as written, or None for a run that has none (older versions)."""
        if not self.quality.is_file():
            return None
        try:
            values = json.loads(self.quality.read_text())
        except ValueError:
            raise UserError(f"{self.quality} is damaged; retrain or delete it") from None
        if not isinstance(values, dict):
            raise UserError(f"{self.quality} is damaged; retrain or delete it")
        return values

    # -- the package's test image ----------------------------------------------------------------
    def write_sample(self, sample: RunSample) -> None:
        """Keep the image packaging needs (raw units), so the run packages without its training data."""
        import io

        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(sample.image, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self.sample, buffer.getvalue())
        info = {"source": sample.source, "axes": sample.axes, "padded": sample.padded,
                "shape": list(sample.image.shape)}
        atomic_write_text(self.sample_info, json.dumps(info, indent=1) + "\n")

    def read_sample(self) -> RunSample | None:
        """The stored test image, or None for a run that has none (written by an older version)."""
        if not (self.sample.is_file() and self.sample_info.is_file()):
            return None
        try:
            image = np.load(self.sample, allow_pickle=False)
            info = json.loads(self.sample_info.read_text())
        except (ValueError, OSError) as exc:
            raise UserError(f"{self.sample} is damaged ({exc})") from None
        return RunSample(image=image, source=str(info.get("source", "?")), axes=str(info.get("axes", "")),
                         padded=bool(info.get("padded", False)))

    # -- one writer ------------------------------------------------------------------------------
    def check_not_in_use(self) -> None:
        """Raise a one-line UserError when a live process holds the folder (see :meth:`lock`)."""
        holder = self._live_holder()
        if holder is not None:
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(holder.get("since", 0))))
            raise UserError(
                f"{self.root} is in use: {holder.get('action', 'a process')} (process {holder.get('pid')} on"
                f" {holder.get('host')}, since {since}) writes it; wait for it or choose another --out"
            )

    def _live_holder(self) -> dict[str, Any] | None:
        """The lock's record when its process may still run (on another machine, or alive here)."""
        if not self.lock_file.exists():
            return None
        holder = self._lock_holder()
        if holder is None:
            return None
        if holder.get("host") != socket.gethostname():
            return holder
        pid = int(holder.get("pid", -1))
        return holder if pid != os.getpid() and _pid_alive(pid) else None

    @contextlib.contextmanager
    def lock(self, action: str) -> Iterator[None]:
        """Hold the run folder for one writing process (``train``, ``resume``).

        A second writer is refused in one line while the first holds the lock; a lock left
        by a process that no longer runs on this machine is taken over.

        Raises
        ------
        UserError
            When another live process holds the folder.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        record = json.dumps({"pid": os.getpid(), "host": host, "action": action, "since": time.time()})
        for _ in range(2):
            # The record is written first and linked into place, so a lock is never seen half-written.
            staged = self.root / f".lock.{os.getpid()}.tmp"
            staged.write_text(record)
            try:
                os.link(staged, self.lock_file)
            except FileExistsError:
                self.check_not_in_use()
                self.lock_file.unlink(missing_ok=True)  # stale: its process is gone
                continue
            finally:
                staged.unlink(missing_ok=True)
            break
        else:
            raise UserError(f"cannot take the lock {self.lock_file}")
        try:
            yield
        finally:
            if self._lock_holder() == json.loads(record):
                self.lock_file.unlink(missing_ok=True)

    def _lock_holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.lock_file.read_text())
        except (OSError, ValueError):
            return None  # unreadable or half-written: treated as stale
        return holder if isinstance(holder, dict) else None
