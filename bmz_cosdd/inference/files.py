"""Image files in, denoised TIFFs out: the file side shared by every predictor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bmz_cosdd.data.axes import parse_axes, restore_axes, to_samples_cyx
from bmz_cosdd.data.io import find_files, read_array, write_tiff
from bmz_cosdd.errors import UserError


@dataclass
class InputFile:
    """One input file as 2-D samples (N, C, Y, X), with what is needed to restore its layout."""

    path: Path
    axes: str
    shape: tuple[int, ...]
    samples: np.ndarray


def read_inputs(inputs: Sequence[str | Path], pattern: str, axes: str, n_channels: int) -> list[InputFile]:
    """Read and check every input before anything is predicted or written (one-line errors)."""
    loaded = []
    for path in [f for item in inputs for f in find_files(item, pattern)]:
        array = read_array(path)
        file_axes = parse_axes(axes, array.ndim, path.name)
        samples = to_samples_cyx(array, file_axes)
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


def write_outputs(out_dir: str | Path, item: InputFile, per_output: dict[str, list[np.ndarray]]) -> list[Path]:
    """Write ``<stem>_<name>.tif`` per output with the input's axes (samples get a leading ``Q`` axis)."""
    written = []
    for name, values in per_output.items():
        stacked = np.stack(values)
        if stacked.ndim == 5:  # (S, N, C, Y, X): posterior samples
            restored = np.stack([restore_axes(stacked[:, i], item.axes, item.shape) for i in range(stacked.shape[1])])
            target_axes = "Q" + item.axes
        else:
            restored = restore_axes(stacked, item.axes, item.shape)
            target_axes = item.axes
        target = Path(out_dir) / f"{item.path.stem}_{name}.tif"
        write_tiff(target, restored.astype(np.float32), target_axes)
        written.append(target)
    return written
