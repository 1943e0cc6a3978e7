"""Clean tiles cut from real micrographs and photographs that ship with scikit-image.

The synthetic generator of :mod:`bmz_cosdd.data.synthetic` draws smooth cells and
filaments; real images have textures, sharp edges and fine detail along rows, which is
where a denoiser with a row-wise noise model fails first. This module gives a fixed,
offline set of real clean images for the quality benchmark (``scripts/benchmark_real.py``)
and for tests: grey-level tiles in [0, 1] (the 8-bit values divided by 255), split into
a training and a held-out test part by a fixed rule.

Sources (all bundled with scikit-image, no download): the micrographs ``cell`` (phase
contrast), ``immunohistochemistry``, ``retina`` (fundus), ``hubble_deep_field``
and ``moon``, and the photographs ``camera``, ``astronaut``, ``coins``, ``chelsea``,
``coffee``, ``rocket``, ``brick``, ``gravel`` and ``stereo_motorcycle`` (its left view). Colour images are
converted to luminance with :func:`skimage.color.rgb2gray`.

Examples
--------
>>> train = real_tiles("train", size=64, per_image=2)
>>> train.shape, train.dtype, float(train.min()) >= 0.0, float(train.max()) <= 1.0
((14, 64, 64), dtype('float64'), True, True)
"""

from __future__ import annotations

import numpy as np

from bmz_cosdd.errors import UserError

#: Micrographs first, then photographs; the order fixes the tiles' order.
MICROGRAPHS = ("cell", "immunohistochemistry", "retina", "hubble_deep_field", "moon")
PHOTOGRAPHS = ("camera", "astronaut", "coins", "chelsea", "coffee", "rocket", "brick", "gravel", "stereo_motorcycle")
SOURCES = MICROGRAPHS + PHOTOGRAPHS

#: Tiles flatter than this (std in [0, 1] units) hold almost no signal and are skipped.
MIN_TILE_STD = 0.03


def load_source(name: str) -> np.ndarray:
    """One source image as float64 grey levels in [0, 1], shape (Y, X).

    Raises
    ------
    UserError
        For a name not in :data:`SOURCES`.
    """
    if name not in SOURCES:
        raise UserError(f"unknown real image {name!r} (choose from {', '.join(SOURCES)})")
    import skimage.color
    import skimage.data

    image = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3])  # float64 in [0, 1]
    else:
        image = image.astype(np.float64) / 255.0
    return np.clip(image, 0.0, 1.0)


def _grid_tiles(image: np.ndarray, size: int) -> list[np.ndarray]:
    ny, nx = image.shape[0] // size, image.shape[1] // size
    oy, ox = (image.shape[0] - ny * size) // 2, (image.shape[1] - nx * size) // 2
    return [
        image[oy + i * size : oy + (i + 1) * size, ox + j * size : ox + (j + 1) * size]
        for i in range(ny) for j in range(nx)
    ]


def real_tiles(split: str = "train", size: int = 128, per_image: int = 6, test_every: int = 4) -> np.ndarray:
    """Clean tiles of the real images, held-out tiles in the ``"test"`` split.

    Every source image is cut into a centred grid of non-overlapping ``size`` x ``size``
    tiles; tiles flatter than :data:`MIN_TILE_STD` are dropped; of the rest, up to
    ``per_image`` evenly spaced tiles are kept per image. Of those, every ``test_every``-th
    (starting with the second) is a test tile, the others are training tiles, so both
    splits see every image and no tile is in both.

    Parameters
    ----------
    split : {"train", "test"}
    size : int, default 128
        Tile side in pixels.
    per_image : int, default 6
        Most tiles taken from one image.
    test_every : int, default 4
        One kept tile in ``test_every`` goes to the test split.

    Returns
    -------
    numpy.ndarray
        (n, size, size) float64 in [0, 1].

    Raises
    ------
    UserError
        For an unknown split or sizes that give no tile.
    """
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    if size < 8 or per_image < 1 or test_every < 2:
        raise UserError("real_tiles needs size >= 8, per_image >= 1 and test_every >= 2")
    out = []
    for name in SOURCES:
        tiles = [t for t in _grid_tiles(load_source(name), size) if t.std() >= MIN_TILE_STD]
        if not tiles:
            continue
        keep = np.unique(np.linspace(0, len(tiles) - 1, min(per_image, len(tiles))).round().astype(int))
        for rank, index in enumerate(keep):
            is_test = rank % test_every == 1
            if is_test == (split == "test"):
                out.append(tiles[index])
    if not out:
        raise UserError(f"no {split} tiles of size {size}")
    return np.stack(out).astype(np.float64)
