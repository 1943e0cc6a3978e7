"""Predict images and volumes of any size in overlapping tiles so that no seams appear.

Each tile is the inner region plus ``halo`` pixels of context on every side of
every spatial axis; only the inner region of each output is kept. Tile origins
fall on multiples of the network's size step, so a translation-equivariant
network gives exactly the same values tiled as in one piece whenever the halo
covers its receptive field. Images are (C, Y, X), volumes (C, Z, Y, X).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from bmz_cosdd.errors import UserError

__all__ = ["pad_mode", "predict_tiled", "spatial_sizes", "tile_layout"]


def _round_up(value: int, step: int) -> int:
    return int(math.ceil(value / step) * step)


def spatial_sizes(tile: int | Sequence[int], n_spatial: int) -> tuple[int, ...]:
    """``tile`` as one size per spatial axis: an int applies to every axis, a sequence gives one per axis.

    Raises
    ------
    UserError
        If a sequence does not hold exactly ``n_spatial`` sizes.
    """
    if isinstance(tile, (int, np.integer)):
        return (int(tile),) * n_spatial
    sizes = tuple(int(t) for t in tile)
    if len(sizes) != n_spatial:
        raise UserError(f"--tile needs 1 or {n_spatial} sizes (one per spatial axis), got {len(sizes)}: {sizes}")
    return sizes


def pad_mode(spatial_shape: Sequence[int]) -> str:
    """How images are extended past their edges: mirrored, or repeated when an axis is a single pixel thick."""
    return "reflect" if min(spatial_shape) > 1 else "edge"


def _pad(image: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    return np.pad(image, [(0, 0)] * (image.ndim - len(pads)) + pads, mode=pad_mode(image.shape[-len(pads):]))


def tile_layout(size: int, tile: int, halo: int, step: int) -> tuple[int, int]:
    """Inner tile length and tile count along one axis of length ``size``.

    Uses as few tiles as ``tile`` allows and spreads the image evenly over them,
    so little is computed beyond the image itself.
    """
    largest = max(step, (tile - 2 * halo) // step * step)
    count = int(math.ceil(size / largest))
    inner = _round_up(int(math.ceil(size / count)), step)
    return inner, int(math.ceil(size / inner))


def predict_tiled(
    fn: Callable[[Tensor], dict[str, Tensor]],
    image: np.ndarray,
    tile: int | Sequence[int],
    halo: int,
    step: int,
    on_tile: Optional[Callable[[int, int], None]] = None,
) -> dict[str, np.ndarray]:
    """Apply ``fn`` to overlapping tiles of ``image`` and stitch the outputs.

    Parameters
    ----------
    fn
        Takes a (1, C, *tile_shape) float32 tensor and returns named tensors whose
        last axes are the tile's spatial axes, e.g. (1, C, h, w) or (N, 1, C, d, h, w).
    image
        (C, Y, X) image or (C, Z, Y, X) volume: every axis after the first is tiled.
    tile
        Largest tile length fed to ``fn`` along each spatial axis, halo included:
        one for every axis, or one per spatial axis (e.g. ``(64, 512, 512)``).
    halo
        Context on each side of every spatial axis; rounded up to a multiple of ``step``.
    step
        Sizes fed to ``fn`` are multiples of this.
    on_tile
        Called as ``on_tile(done, total)`` after each tile.

    Returns
    -------
    dict
        The stitched outputs, float32 numpy arrays cropped to the image's spatial shape.
    """
    halo = _round_up(max(halo, 0), step)
    shape = image.shape[1:]
    layout = [tile_layout(size, t, halo, step) for size, t in zip(shape, spatial_sizes(tile, len(shape)))]
    inner = [length for length, _ in layout]
    totals = [length * count for length, count in layout]
    padded = _pad(image, [(halo, halo + total - size) for size, total in zip(shape, totals)])
    keep = (Ellipsis,) + tuple(slice(halo, halo + length) for length in inner)
    origins = list(itertools.product(*(range(0, total, length) for total, length in zip(totals, inner))))
    outputs: dict[str, np.ndarray] = {}
    for done, origin in enumerate(origins, 1):
        window = padded[(slice(None),) + tuple(slice(o, o + length + 2 * halo) for o, length in zip(origin, inner))]
        target = (Ellipsis,) + tuple(slice(o, o + length) for o, length in zip(origin, inner))
        result = fn(torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None])
        for name, value in result.items():
            kept = value[keep].detach().float().cpu().numpy()
            if name not in outputs:
                outputs[name] = np.empty(kept.shape[: kept.ndim - len(shape)] + tuple(totals), dtype=np.float32)
            outputs[name][target] = kept
        if on_tile is not None:
            on_tile(done, len(origins))
    crop = (Ellipsis,) + tuple(slice(0, size) for size in shape)
    return {name: value[crop] for name, value in outputs.items()}
