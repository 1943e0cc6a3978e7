import json

import numpy as np
import pytest

from bmz_cosdd.data.io import Image
from bmz_cosdd.data.splits import split_images
from bmz_cosdd.errors import UserError


def _images(n, shape=(32, 32)):
    rng = np.random.default_rng(0)
    return [Image(rng.random((1, *shape)).astype(np.float32), f"im{i}.tif") for i in range(n)]


def _check_partition(split, sources):
    train = [im.source for im in split.train]
    val = [im.source for im in split.val]
    assert len(set(train)) == len(train) and len(set(val)) == len(val)  # no duplicates
    assert not set(train) & set(val)  # no leakage
    assert set(train) | set(val) == set(sources)  # nothing dropped
    assert split.description["train"] == train and split.description["val"] == val
    json.dumps(split.description)


@pytest.mark.parametrize("n, fraction, n_val", [(2, 0.1, 1), (10, 0.2, 2), (10, 0.96, 9), (7, 0.5, 4)])
def test_image_split_partition(n, fraction, n_val):
    images = _images(n)
    split = split_images(images, fraction, seed=3, min_size=16)
    _check_partition(split, [im.source for im in images])
    assert len(split.val) == n_val
    assert split.description["mode"] == "images" and split.description["seed"] == 3


def test_split_is_deterministic_and_seed_dependent():
    images = _images(20)
    a = split_images(images, 0.25, seed=1, min_size=16)
    b = split_images(images, 0.25, seed=1, min_size=16)
    assert a.description == b.description
    vals = {tuple(split_images(images, 0.25, seed=s, min_size=16).description["val"]) for s in range(5)}
    assert len(vals) > 1


def test_single_image_tiles():
    image = Image(np.arange(200 * 300, dtype=np.float32).reshape(1, 200, 300), "a.tif")
    split = split_images([image], 0.25, seed=0, min_size=64)
    assert split.description["mode"] == "tiles"
    tiles = split.train + split.val
    _check_partition(split, [t.source for t in tiles])
    assert len(tiles) >= 2 and len(split.val) >= 1
    # Tiles cover the image exactly once, each at least min_size.
    cover = np.zeros((200, 300), int)
    for t in tiles:
        y, x = t.source.split(" tile ")[1].split()
        y0, y1 = map(int, y[1:].split(":"))
        x0, x1 = map(int, x[1:].split(":"))
        assert y1 - y0 >= 64 and x1 - x0 >= 64
        np.testing.assert_array_equal(t.data, image.data[:, y0:y1, x0:x1])
        cover[y0:y1, x0:x1] += 1
    assert np.all(cover == 1)


def test_single_image_few_cuts_along_longer_axis():
    image = Image(np.zeros((1, 64, 256), np.float32), "wide.tif")
    split = split_images([image], 0.5, seed=0, min_size=64)
    assert split.description["grid"] == [1, 2]
    assert sorted(t.source for t in split.train + split.val) == [
        "wide.tif tile y0:64 x0:128",
        "wide.tif tile y0:64 x128:256",
    ]


def test_single_image_prefers_about_one_over_fraction_tiles():
    image = Image(np.zeros((1, 512, 512), np.float32), "big.tif")
    split = split_images([image], 0.1, seed=0, min_size=64)
    rows, cols = split.description["grid"]
    assert 10 <= rows * cols <= 12


def test_errors():
    with pytest.raises(UserError, match="got \\(50, 60\\)"):
        split_images([Image(np.zeros((1, 50, 60), np.float32), "s.tif")], 0.2, seed=0, min_size=64)
    with pytest.raises(UserError, match="need at least 2 images"):
        split_images([Image(np.zeros((1, 200, 50), np.float32), "s.tif")], 0.2, seed=0, min_size=64)
    for fraction in [0.0, 1.0, -0.1, 1.5]:
        with pytest.raises(UserError, match="between 0 and 1"):
            split_images(_images(4), fraction, seed=0, min_size=16)
    with pytest.raises(UserError):
        split_images([], 0.2, seed=0, min_size=16)
