"""Image files in, denoised TIFFs out: the file side shared by every predictor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bmz_cosdd.data.axes import restore_axes, to_samples
from bmz_cosdd.data.io import find_files, read_with_axes, write_tiff
from bmz_cosdd.errors import UserError


@dataclass
class InputFile:
    """One input file as samples (N, C, [Z,] Y, X), with what is needed to restore its layout."""

    path: Path
    axes: str
    shape: tuple[int, ...]
    samples: np.ndarray


def read_inputs(
    inputs: Sequence[str | Path], pattern: str, axes: str, n_channels: int, spatial_dims: int = 2
) -> list[InputFile]:
    """Read and check every input before anything is predicted or written (one-line errors).

    Parameters
    ----------
    inputs
        Files or folders.
    pattern
        Glob pattern applied inside folders.
    axes
        Axes string of every file.
    n_channels
        Channels the model takes.
    spatial_dims
        2: samples are (C, Y, X) images (Z is looped over); 3: (C, Z, Y, X) volumes.

    Returns
    -------
    list of InputFile
        One per file, in the order found.

    Raises
    ------
    UserError
        For unreadable files, axes that do not fit, a 3-D model given no Z axis, another channel count, or
        non-finite pixels.
    """
    loaded = []
    files = [f for item in inputs for f in find_files(item, pattern)]
    check_distinct_outputs(files)
    for path in files:
        array, file_axes = read_with_axes(path, axes)
        samples = to_samples(array, file_axes, spatial_dims, source=path.name)
        if samples.shape[1] != n_channels:
            raise UserError(
                f"{path.name}: the model expects {n_channels} channel(s), "
                f"the file has {samples.shape[1]} (axes {file_axes}, shape {array.shape})"
            )
        bad = int((~np.isfinite(samples)).sum())
        if bad:
            raise UserError(f"{path.name}: {bad} NaN or Inf pixels")
        loaded.append(InputFile(path, file_axes, tuple(array.shape), samples))
    return loaded


def check_distinct_outputs(files: Sequence[Path]) -> None:
    """Refuse inputs whose outputs would share a name (``<stem>_<output>.tif`` in one folder), before any work.

    Raises
    ------
    UserError
        Naming the two inputs (e.g. ``a/img.tif`` and ``b/img.tif``, or ``img.tif`` and ``img.npy``).
    """
    seen: dict[str, Path] = {}
    for path in files:
        first = seen.setdefault(path.stem, path)
        if first != path:
            raise UserError(f"{first} and {path} would write the same output names ({path.stem}_*.tif); predict them"
                            " into different --out folders, or rename one")


def write_outputs(out_dir: str | Path, item: InputFile, per_output: dict[str, list[np.ndarray]]) -> list[Path]:
    """Write ``<stem>_<name>.tif`` per output with the input's axes (samples get a leading ``Q`` axis).

    ``per_output`` holds one array per sample of ``item``: (C, [Z,] Y, X), or (Q, C, [Z,] Y, X) for posterior
    samples.
    """
    written = []
    for name, values in per_output.items():
        stacked = np.stack(values)
        if stacked.ndim > item.samples.ndim:  # (N, Q, C, [Z,] Y, X): posterior samples
            restored = np.stack([restore_axes(stacked[:, i], item.axes, item.shape) for i in range(stacked.shape[1])])
            target_axes = "Q" + item.axes
        else:
            restored = restore_axes(stacked, item.axes, item.shape)
            target_axes = item.axes
        target = Path(out_dir) / f"{item.path.stem}_{name}.tif"
        write_tiff(target, restored.astype(np.float32), target_axes)
        written.append(target)
    return written
