"""Where (signal, observation) pairs for a noise model come from: a calibration stack or a first denoiser."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bmz_cosdd.data.axes import parse_axes, to_samples_cyx
from bmz_cosdd.data.clipping import CLIPPED_FRACTION, clipped_pixels
from bmz_cosdd.data.io import read_array
from bmz_cosdd.errors import UserError

#: A calibration pixel counts as clipped (saturated at the stack's maximum, or cut at its minimum) when that
#: value is this common: the one rule of :mod:`bmz_cosdd.data.clipping`.
SATURATION_FRACTION = CLIPPED_FRACTION


@dataclass
class Pairs:
    """Signal and observation, (N, C, Y, X) float64 in raw units, with where they came from."""

    signal: np.ndarray
    observation: np.ndarray
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def calibration_pairs(path: str | Path, axes: str = "TYX") -> Pairs:
    """Pairs from a stack of frames of a static scene: the signal is the average frame.

    Parameters
    ----------
    path
        One image file (TIFF, NPY) holding the frames.
    axes
        Its axes; every axis but C, Y and X counts frames (e.g. ``TYX``, ``SYX``, ``TCYX``).

    Clipped pixels (the stack's minimum or maximum value, where it occurs in more than
    ``SATURATION_FRACTION`` of a channel's pixels; see :mod:`bmz_cosdd.data.clipping`) are left out,
    with a warning giving their fraction: every frame of a position where any frame is clipped, since
    the average there is no longer the signal.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such calibration file: {path}")
    array = read_array(path)
    frames = to_samples_cyx(array, parse_axes(axes, array.ndim, path.name)).astype(np.float64)
    if frames.shape[0] < 2:
        raise UserError(
            f"{path.name}: a calibration stack needs at least 2 frames of a static scene, it has {frames.shape[0]}"
        )
    if not np.isfinite(frames).all():
        raise UserError(f"{path.name}: the calibration stack holds NaN or Inf pixels")
    keep = np.ones(frames.shape[1:], dtype=bool)
    left_out = {"minimum": np.zeros_like(keep), "maximum": np.zeros_like(keep)}
    warnings = []
    _, ends = clipped_pixels(list(frames), SATURATION_FRACTION)
    for end in ends:
        c = end.channel
        positions = (frames[:, c] == end.value).any(axis=0)
        left_out[end.end][c] |= positions
        keep[c] &= ~positions
        warnings.append(
            f"{path.name}: {end.describe('calibration pixels')}; those positions ({positions.mean():.2%} of them)"
            " are left out of the fit"
        )
    signal = frames.mean(axis=0, keepdims=True)
    signal = np.broadcast_to(signal, frames.shape)
    mask = np.broadcast_to(keep[None], frames.shape)
    info = {"source": "calibration", "calibration": path.name, "frames": int(frames.shape[0]),
            "clipped_left_out": float(1.0 - keep.mean()), "saturated_left_out": float(left_out["maximum"].mean()),
            "clipped_low_left_out": float(left_out["minimum"].mean())}
    return Pairs(_masked(signal, mask), _masked(frames, mask), info, warnings)


def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, C, Y, X) -> (1, C, M, 1): the kept positions of every channel (same count per channel)."""
    per_channel = [values[:, c][mask[:, c]] for c in range(values.shape[1])]
    count = min(len(v) for v in per_channel)
    if count == 0:
        raise UserError("no usable calibration pixels are left (all clipped at the data's minimum or maximum)")
    return np.stack([v[:count] for v in per_channel])[None, :, :, None]


def bootstrap_pairs(noisy_files: Sequence[Path], written: Sequence[Path], axes: str, model: str) -> Pairs:
    """Pairs from a first denoiser: the signal is its prediction, the observation the noisy input.

    Parameters
    ----------
    noisy_files
        The noisy images the denoiser was given.
    written
        The files it wrote for them (``<stem>_<output>.tif`` beside optional ``_std`` and
        ``_samples`` files, as ``bmz-cosdd predict`` names them); the prediction of
        ``noisy.tif`` is the first ``noisy_*`` file that is neither.
    axes
        Axes of the noisy images (and of the predictions).
    model
        The denoiser's name, recorded in the pairs' ``info``.

    Raises
    ------
    bmz_cosdd.errors.UserError
        A noisy image without a prediction.
    """
    signals, observations = [], []
    for noisy_path in noisy_files:
        outputs = sorted(p for p in written if p.name.startswith(f"{noisy_path.stem}_"))
        main = [p for p in outputs if not p.stem.endswith(("_std", "_samples"))]
        if not main:
            raise UserError(f"the model wrote no denoised image for {noisy_path.name}")
        array = read_array(noisy_path)
        file_axes = parse_axes(axes, array.ndim, noisy_path.name)
        signals.append(to_samples_cyx(read_array(main[0]), file_axes).astype(np.float64))
        observations.append(to_samples_cyx(array, file_axes).astype(np.float64))
    signal = np.concatenate([s.reshape(s.shape[0], s.shape[1], -1) for s in signals], axis=2)[..., None]
    observation = np.concatenate([o.reshape(o.shape[0], o.shape[1], -1) for o in observations], axis=2)[..., None]
    info = {"source": "bootstrap", "model": model, "images": [p.name for p in noisy_files]}
    # Clipped noisy pixels (the data's minimum or maximum, by the rule of bmz_cosdd.data.clipping) are left out.
    [clipped], ends = clipped_pixels([np.moveaxis(observation, 1, 0)], SATURATION_FRACTION)
    warnings = [f"{end.describe('noisy pixels')}; they are left out of the fit" for end in ends]
    if ends:
        keep = ~np.moveaxis(clipped, 0, 1)
        info["clipped_left_out"] = float(1.0 - keep.mean())
        signal, observation = _masked(signal, keep), _masked(observation, keep)
    return Pairs(signal, observation, info, warnings)

