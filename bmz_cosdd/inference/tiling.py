"""Predict images of any size in overlapping tiles so that no seams appear.

Each tile is the inner region plus ``halo`` pixels of context on every side; only
the inner region of each output is kept. Tile origins fall on multiples of the
network's size step, so a translation-equivariant network gives exactly the same
values tiled as in one piece whenever the halo covers its receptive field.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor


def _round_up(value: int, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _pad(image: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    spatial = image.shape[-2:]
    mode = "reflect" if min(spatial) > 1 else "edge"
    return np.pad(image, [(0, 0)] * (image.ndim - 2) + pads, mode=mode)


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
    tile: int,
    halo: int,
    step: int,
    on_tile: Optional[Callable[[int, int], None]] = None,
) -> dict[str, np.ndarray]:
    """Apply ``fn`` to overlapping tiles of ``image`` and stitch the outputs.

    Parameters
    ----------
    fn
        Takes a (1, C, h, w) float32 tensor and returns named tensors whose last
        two axes are (h, w), e.g. (1, C, h, w) or (N, 1, C, h, w).
    image
        (C, Y, X) array.
    tile
        Largest tile side length fed to ``fn``, halo included.
    halo
        Context on each side; rounded up to a multiple of ``step``.
    step
        Sizes fed to ``fn`` are multiples of this.
    on_tile
        Called as ``on_tile(done, total)`` after each tile.

    Returns
    -------
    dict
        The stitched outputs, float32 numpy arrays cropped to the image's Y, X.
    """
    halo = _round_up(max(halo, 0), step)
    _, height, width = image.shape
    inner_y, n_y = tile_layout(height, tile, halo, step)
    inner_x, n_x = tile_layout(width, tile, halo, step)
    total_y, total_x = inner_y * n_y, inner_x * n_x
    padded = _pad(image, [(halo, halo + total_y - height), (halo, halo + total_x - width)])
    outputs: dict[str, np.ndarray] = {}
    done = 0
    for ty in range(n_y):
        for tx in range(n_x):
            y0, x0 = ty * inner_y, tx * inner_x
            window = padded[:, y0 : y0 + inner_y + 2 * halo, x0 : x0 + inner_x + 2 * halo]
            result = fn(torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None])
            for name, value in result.items():
                inner = value[..., halo : halo + inner_y, halo : halo + inner_x].detach().float().cpu().numpy()
                if name not in outputs:
                    outputs[name] = np.empty(inner.shape[:-2] + (total_y, total_x), dtype=np.float32)
                outputs[name][..., y0 : y0 + inner_y, x0 : x0 + inner_x] = inner
            done += 1
            if on_tile is not None:
                on_tile(done, n_y * n_x)
    return {name: value[..., :height, :width] for name, value in outputs.items()}
