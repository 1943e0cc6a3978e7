"""Training crops (random, resumable) and fixed validation crops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bmz_cosdd.data.io import Image
from bmz_cosdd.errors import UserError


def _check_images(images: Sequence[Image], crop_size: int) -> None:
    if crop_size < 1:
        raise ValueError(f"crop_size must be >= 1, got {crop_size}")
    if len(images) == 0:
        raise UserError("no images to take crops from")
    n_channels = images[0].data.shape[0]
    for im in images:
        _, height, width = im.data.shape
        if height < crop_size or width < crop_size:
            raise UserError(
                f"{im.source}: image is {height} x {width} px (y x x) but the crop size is"
                f" {crop_size} x {crop_size}; use a smaller crop size"
            )
        if im.data.shape[0] != n_channels:
            raise UserError(f"{im.source}: has {im.data.shape[0]} channel(s) but {images[0].source} has {n_channels}")


class RandomCrops:
    """Random square crops from a set of images, all randomness from one generator.

    Every valid crop position of every image is equally likely, so an image is
    chosen with probability proportional to its number of valid positions.
    Saving ``generator.get_state()`` and restoring it later reproduces the
    remaining sequence of batches exactly.

    Parameters
    ----------
    images : sequence of Image
        Images with the same number of channels, each at least ``crop_size`` in y and x.
    crop_size : int
        Side length of the square crops.
    generator : torch.Generator
        Source of all randomness (a CPU generator).

    Raises
    ------
    UserError
        If an image is smaller than the crop or the channel counts differ.
    """

    def __init__(self, images: Sequence[Image], crop_size: int, generator: torch.Generator) -> None:
        _check_images(images, crop_size)
        self.crop_size = int(crop_size)
        self.generator = generator
        self._data = [torch.from_numpy(np.ascontiguousarray(im.data, dtype=np.float32)) for im in images]
        # Positions per image, as (rows of positions, columns of positions).
        self._grid = [(d.shape[1] - crop_size + 1, d.shape[2] - crop_size + 1) for d in self._data]
        counts = torch.tensor([ny * nx for ny, nx in self._grid], dtype=torch.int64)
        self._ends = torch.cumsum(counts, 0)
        self.n_positions = int(self._ends[-1])

    def sample(self, batch_size: int, rows: slice | None = None) -> torch.Tensor:
        """Draw ``batch_size`` crops (and keep only ``rows`` of them, e.g. one process's shard).

        The generator advances by a whole batch whatever ``rows`` keeps, so every
        process of a distributed run draws the same batches.

        Returns
        -------
        torch.Tensor
            float32 tensor of shape ``(len(rows), C, crop_size, crop_size)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # One uniform integer over all positions of all images picks image and position at once.
        flat = torch.randint(0, self.n_positions, (batch_size,), generator=self.generator, dtype=torch.int64)
        which = torch.searchsorted(self._ends, flat, right=True)
        if rows is not None:
            flat, which = flat[rows], which[rows]
        c = self.crop_size
        crops = []
        for k, i in zip(flat.tolist(), which.tolist()):
            offset = k - (int(self._ends[i - 1]) if i > 0 else 0)
            y, x = divmod(offset, self._grid[i][1])
            crops.append(self._data[i][:, y : y + c, x : x + c])
        return torch.stack(crops)


def _grid_starts(size: int, crop: int) -> list[int]:
    n = size // crop
    margin = (size - n * crop) // 2  # centre the grid so borders are cut evenly
    return [margin + i * crop for i in range(n)]


def fixed_val_crops(images: Sequence[Image], crop_size: int, max_crops: int) -> torch.Tensor:
    """Deterministic, non-overlapping validation crops from every image.

    Each image is covered by a centred grid of ``crop_size`` crops. If there are
    more than ``max_crops`` in total, an evenly spaced subset (in image, then
    row, then column order) is kept.

    Parameters
    ----------
    images : sequence of Image
        Images with the same number of channels, each at least ``crop_size`` in y and x.
    crop_size : int
        Side length of the square crops.
    max_crops : int
        Largest number of crops returned (>= 1).

    Returns
    -------
    torch.Tensor
        float32 tensor of shape ``(N, C, crop_size, crop_size)``, ``N <= max_crops``.

    Raises
    ------
    UserError
        If an image is smaller than the crop or the channel counts differ.
    """
    _check_images(images, crop_size)
    if max_crops < 1:
        raise ValueError(f"max_crops must be >= 1, got {max_crops}")
    positions = [
        (i, y, x)
        for i, im in enumerate(images)
        for y in _grid_starts(im.data.shape[1], crop_size)
        for x in _grid_starts(im.data.shape[2], crop_size)
    ]
    if len(positions) > max_crops:
        keep = np.round(np.linspace(0, len(positions) - 1, max_crops)).astype(np.int64)
        positions = [positions[k] for k in keep]
    c = crop_size
    crops = [np.asarray(images[i].data[:, y : y + c, x : x + c], dtype=np.float32) for i, y, x in positions]
    return torch.from_numpy(np.stack(crops))
