"""Training crops (random, resumable) and fixed validation crops, from 2-D images or volumes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from bmz_cosdd.data.io import Image
from bmz_cosdd.errors import UserError

_AXIS_NAMES = {2: "y x x", 3: "z x y x x"}
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _crop_shape(images: Sequence[Image], crop_size: int | Sequence[int]) -> tuple[int, ...]:
    """Check the images against the crop and return the crop's size along every spatial axis."""
    if len(images) == 0:
        raise UserError("no images to take crops from")
    spatial_dims = images[0].data.ndim - 1
    if spatial_dims not in _AXIS_NAMES:
        raise ValueError(f"{images[0].source}: expected (C, Y, X) or (C, Z, Y, X) pixels, got {images[0].data.shape}")
    if isinstance(crop_size, (int, np.integer)):
        shape = (int(crop_size),) * spatial_dims
    else:
        shape = tuple(int(c) for c in crop_size)
        if len(shape) != spatial_dims:
            raise ValueError(f"crop_size {tuple(crop_size)} needs one size per spatial axis ({spatial_dims})")
    if min(shape) < 1:
        raise ValueError(f"crop_size must be >= 1, got {crop_size}")
    n_channels = images[0].data.shape[0]
    for im in images:
        if im.data.ndim != spatial_dims + 1:
            raise UserError(
                f"{im.source}: pixels of shape {im.data.shape} do not match {images[0].source}"
                f" ({images[0].data.shape}); 2-D images and volumes cannot be mixed"
            )
        size = im.data.shape[1:]
        if any(s < c for s, c in zip(size, shape)):
            depth_hint = " (--crop-depth for z)" if spatial_dims == 3 else ""
            raise UserError(
                f"{im.source}: image is {' x '.join(map(str, size))} px ({_AXIS_NAMES[spatial_dims]}) but the crop"
                f" size is {' x '.join(map(str, shape))}; use a smaller crop size{depth_hint}"
            )
        if im.data.shape[0] != n_channels:
            raise UserError(f"{im.source}: has {im.data.shape[0]} channel(s) but {images[0].source} has {n_channels}")
    return shape


def _window(data: ArrayT, start: Sequence[int], shape: Sequence[int]) -> ArrayT:
    """``data[:, z:z+cz, y:y+cy, x:x+cx]`` (or the 2-D equivalent) as a view."""
    return data[(slice(None), *(slice(s, s + c) for s, c in zip(start, shape)))]


class RandomCrops:
    """Random crops from a set of 2-D images or volumes, all randomness from one generator.

    Every valid crop position of every image is equally likely, so an image is
    chosen with probability proportional to its number of valid positions.
    Saving ``generator.get_state()`` and restoring it later reproduces the
    remaining sequence of batches exactly.

    Parameters
    ----------
    images : sequence of Image
        Images ``(C, Y, X)``, or volumes ``(C, Z, Y, X)``, with the same number
        of channels, each at least as large as the crop.
    crop_size : int or sequence of int
        An int: side length of square (cubic for volumes) crops. A sequence:
        one size per spatial axis, e.g. ``(depth, height, width)`` for volumes.
    generator : torch.Generator
        Source of all randomness (a CPU generator).

    Raises
    ------
    UserError
        If an image is smaller than the crop, the channel counts differ, or 2-D
        images and volumes are mixed.
    """

    def __init__(self, images: Sequence[Image], crop_size: int | Sequence[int], generator: torch.Generator) -> None:
        self.crop_shape = _crop_shape(images, crop_size)
        self.generator = generator
        self._data = [torch.from_numpy(np.ascontiguousarray(im.data, dtype=np.float32)) for im in images]
        # Positions per image along every spatial axis, e.g. (rows of positions, columns of positions).
        self._grid = [tuple(s - c + 1 for s, c in zip(d.shape[1:], self.crop_shape)) for d in self._data]
        counts = torch.tensor([math.prod(g) for g in self._grid], dtype=torch.int64)
        self._ends = torch.cumsum(counts, 0)
        self.n_positions = int(self._ends[-1])

    def sample(self, batch_size: int, rows: slice | None = None) -> torch.Tensor:
        """Draw ``batch_size`` crops (and keep only ``rows`` of them, e.g. one process's shard).

        The generator advances by a whole batch whatever ``rows`` keeps, so every
        process of a distributed run draws the same batches.

        Returns
        -------
        torch.Tensor
            float32 tensor of shape ``(len(rows), C, *crop_shape)``, e.g.
            ``(B, C, cy, cx)`` or ``(B, C, cz, cy, cx)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # One uniform integer over all positions of all images picks image and position at once.
        flat = torch.randint(0, self.n_positions, (batch_size,), generator=self.generator, dtype=torch.int64)
        which = torch.searchsorted(self._ends, flat, right=True)
        if rows is not None:
            flat, which = flat[rows], which[rows]
        crops = []
        for k, i in zip(flat.tolist(), which.tolist()):
            offset = k - (int(self._ends[i - 1]) if i > 0 else 0)
            start = np.unravel_index(offset, self._grid[i])  # row-major: x fastest, as divmod(offset, nx) in 2-D
            crops.append(_window(self._data[i], [int(s) for s in start], self.crop_shape))
        return torch.stack(crops)


def _grid_starts(size: int, crop: int) -> list[int]:
    n = size // crop
    margin = (size - n * crop) // 2  # centre the grid so borders are cut evenly
    return [margin + i * crop for i in range(n)]


def fixed_val_crops(images: Sequence[Image], crop_size: int | Sequence[int], max_crops: int) -> torch.Tensor:
    """Deterministic, non-overlapping validation crops from every image.

    Each image is covered by a centred grid of crops. If there are more than
    ``max_crops`` in total, an evenly spaced subset (in image, then z, row and
    column order) is kept.

    Parameters
    ----------
    images : sequence of Image
        Images ``(C, Y, X)``, or volumes ``(C, Z, Y, X)``, with the same number
        of channels, each at least as large as the crop.
    crop_size : int or sequence of int
        As for :class:`RandomCrops`: an int for square (cubic) crops, or one
        size per spatial axis.
    max_crops : int
        Largest number of crops returned (>= 1).

    Returns
    -------
    torch.Tensor
        float32 tensor of shape ``(N, C, *crop_shape)``, ``N <= max_crops``.

    Raises
    ------
    UserError
        If an image is smaller than the crop, the channel counts differ, or 2-D
        images and volumes are mixed.
    """
    shape = _crop_shape(images, crop_size)
    if max_crops < 1:
        raise ValueError(f"max_crops must be >= 1, got {max_crops}")
    positions = [
        (i, start)
        for i, im in enumerate(images)
        for start in itertools.product(*(_grid_starts(s, c) for s, c in zip(im.data.shape[1:], shape)))
    ]
    if len(positions) > max_crops:
        keep = np.round(np.linspace(0, len(positions) - 1, max_crops)).astype(np.int64)
        positions = [positions[k] for k in keep]
    crops = [np.asarray(_window(images[i].data, start, shape), dtype=np.float32) for i, start in positions]
    return torch.from_numpy(np.stack(crops))
