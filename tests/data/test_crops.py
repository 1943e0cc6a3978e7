import numpy as np
import pytest
import torch

from bmz_cosdd.data.crops import RandomCrops, fixed_val_crops
from bmz_cosdd.data.io import Image
from bmz_cosdd.errors import UserError


def _images():
    rng = np.random.default_rng(0)
    return [
        Image(rng.random((2, 40, 50)).astype(np.float32), "a.tif"),
        Image(rng.random((2, 16, 16)).astype(np.float32), "b.tif"),
        Image(rng.random((2, 70, 33)).astype(np.float32), "c.tif"),
    ]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_sample_shape_and_content():
    images = _images()
    crops = RandomCrops(images, 16, _gen())
    batch = crops.sample(32)
    assert batch.shape == (32, 2, 16, 16) and batch.dtype == torch.float32
    # Every crop is a real window of some image.
    for crop in batch[:8].numpy():
        found = False
        for im in images:
            windows = np.lib.stride_tricks.sliding_window_view(im.data, (2, 16, 16))[0]
            if np.any(np.all(windows == crop, axis=(-3, -2, -1))):
                found = True
        assert found


def test_deterministic_and_resumable():
    images = _images()
    a = RandomCrops(images, 16, _gen(5))
    b = RandomCrops(images, 16, _gen(5))
    assert torch.equal(a.sample(8), b.sample(8))
    state = a.generator.get_state()
    expected = [a.sample(4) for _ in range(3)]
    resumed = RandomCrops(images, 16, torch.Generator())
    resumed.generator.set_state(state)
    for e in expected:
        assert torch.equal(resumed.sample(4), e)


def test_image_choice_proportional_to_positions():
    small = Image(np.zeros((1, 9, 9), np.float32), "small")  # 4 positions for crop 8
    large = Image(np.ones((1, 15, 15), np.float32), "large")  # 64 positions
    crops = RandomCrops([small, large], 8, _gen(1))
    frac = float(crops.sample(4000)[:, 0, 0, 0].mean())
    assert frac == pytest.approx(64 / 68, abs=0.02)


def test_positions_uniform():
    image = Image(np.arange(12 * 12, dtype=np.float32).reshape(1, 12, 12), "grid")
    crops = RandomCrops([image], 10, _gen(2))  # 3 x 3 positions
    corners = crops.sample(9000)[:, 0, 0, 0].numpy().astype(int)
    counts = np.bincount(corners, minlength=144)[[y * 12 + x for y in range(3) for x in range(3)]]
    assert counts.sum() == 9000
    assert np.all(np.abs(counts - 1000) < 150)


def test_too_small_image():
    images = _images()
    with pytest.raises(UserError, match=r"b.tif: image is 16 x 16 px .* crop size is 32"):
        RandomCrops(images, 32, _gen())
    with pytest.raises(UserError, match="b.tif"):
        fixed_val_crops(images, 32, 10)


def test_fixed_val_crops_grid_and_subset():
    images = _images()
    all_crops = fixed_val_crops(images, 16, 1000)
    # a: 2 x 3, b: 1 x 1, c: 4 x 2 non-overlapping windows
    assert all_crops.shape == (6 + 1 + 8, 2, 16, 16)
    assert torch.equal(all_crops[6], torch.from_numpy(images[1].data))
    again = fixed_val_crops(images, 16, 1000)
    assert torch.equal(all_crops, again)
    subset = fixed_val_crops(images, 16, 5)
    assert subset.shape[0] == 5
    assert torch.equal(subset[0], all_crops[0]) and torch.equal(subset[-1], all_crops[-1])
    assert torch.equal(subset, fixed_val_crops(images, 16, 5))
