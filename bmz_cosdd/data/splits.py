"""Deterministic train/validation splits without duplicates or leakage.

With two or more images whole images are split. A single image is cut into a
grid of non-overlapping tiles first, and the tiles are split the same way, so
validation pixels never appear in training. A single volume ``(C, Z, Y, X)`` is
tiled in y and x only; every tile keeps the whole depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bmz_cosdd.data.io import Image
from bmz_cosdd.errors import UserError


@dataclass
class Split:
    """A train/validation split.

    Attributes
    ----------
    train, val : list of Image
        Disjoint lists; together they hold every input image (or tile) once.
    description : dict
        JSON-serialisable record: ``mode`` ("images" or "tiles"), ``seed``,
        ``val_fraction`` and the ``train`` and ``val`` source names (plus
        ``image`` and ``grid`` for tiles).
    """

    train: list[Image]
    val: list[Image]
    description: dict[str, Any] = field(default_factory=dict)


def _n_val(n: int, val_fraction: float) -> int:
    return min(max(round(val_fraction * n), 1), n - 1)


def _tile_grid(height: int, width: int, min_size: int, target: int) -> tuple[int, int]:
    """Rows and columns of a grid with tiles >= min_size, about ``target`` tiles.

    Cuts are added one at a time, each along the axis whose tiles are currently
    longer (y on ties), until the target is reached or no axis can take another
    cut; so no more cuts than needed are made.
    """
    max_rows, max_cols = height // min_size, width // min_size
    rows, cols = 1, 1
    while rows * cols < target:
        can_row, can_col = rows < max_rows, cols < max_cols
        if not (can_row or can_col):
            break
        if can_row and (not can_col or height / rows >= width / cols):
            rows += 1
        else:
            cols += 1
    return rows, cols


def _edges(size: int, parts: int) -> list[int]:
    return [i * size // parts for i in range(parts + 1)]


def _tiles(image: Image, min_size: int, val_fraction: float) -> tuple[list[Image], tuple[int, int]]:
    height, width = image.data.shape[-2:]
    if height // min_size * (width // min_size) < 2:
        if image.data.ndim == 4:
            raise UserError(
                f"need at least 2 volumes, or one volume at least 2 x {min_size} px along y or x and {min_size} px"
                f" along the other (it is tiled in y and x only), got {' x '.join(map(str, image.data.shape[1:]))}"
                f" px (z x y x x) for {image.source}"
            )
        raise UserError(
            f"need at least 2 images, or one image at least 2 x {min_size} px along an axis"
            f" and {min_size} px along the other, got ({height}, {width}) for {image.source}"
        )
    target = max(2, round(1.0 / val_fraction))
    rows, cols = _tile_grid(height, width, min_size, target)
    ys, xs = _edges(height, rows), _edges(width, cols)
    tiles = []
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            data = np.ascontiguousarray(image.data[..., y0:y1, x0:x1]).copy()
            tiles.append(Image(data=data, source=f"{image.source} tile y{y0}:{y1} x{x0}:{x1}"))
    return tiles, (rows, cols)


def split_images(images: list[Image], val_fraction: float, seed: int, min_size: int) -> Split:
    """Split images into training and validation sets, deterministically for a seed.

    Parameters
    ----------
    images : list of Image
        The dataset's samples, 2-D images ``(C, Y, X)`` or volumes ``(C, Z, Y, X)``.
    val_fraction : float
        Fraction of images (or tiles) for validation, ``0 < val_fraction < 1``.
        At least one goes to each side.
    seed : int
        Seed of the ``numpy.random.default_rng`` permutation.
    min_size : int
        Smallest tile size in y and x when a single image must be tiled
        (typically the training crop size). A volume is tiled in y and x only.

    Returns
    -------
    Split
        ``n_val = clamp(round(val_fraction * n), 1, n - 1)`` items for validation,
        the rest for training, each list in input order.

    Raises
    ------
    UserError
        If ``val_fraction`` is outside (0, 1), there are no images, or a single
        image is too small to hold two tiles of ``min_size`` in y and x.

    Examples
    --------
    >>> ims = [Image(np.zeros((1, 8, 8), np.float32), f"im{i}") for i in range(4)]
    >>> s = split_images(ims, 0.25, seed=0, min_size=8)
    >>> len(s.train), len(s.val)
    (3, 1)
    """
    if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
        raise UserError(f"validation fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if len(images) == 0:
        raise UserError("no images to split into training and validation sets")

    description: dict[str, Any] = {"seed": int(seed), "val_fraction": float(val_fraction)}
    if len(images) == 1:
        items, grid = _tiles(images[0], min_size, val_fraction)
        description.update(mode="tiles", image=images[0].source, grid=[int(grid[0]), int(grid[1])])
    else:
        items = list(images)
        description.update(mode="images")

    n = len(items)
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(int(i) for i in order[: _n_val(n, val_fraction)])
    train = [im for i, im in enumerate(items) if i not in val_idx]
    val = [im for i, im in enumerate(items) if i in val_idx]
    description.update(train=[im.source for im in train], val=[im.source for im in val])
    return Split(train=train, val=val, description=description)
