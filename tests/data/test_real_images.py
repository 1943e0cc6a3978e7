import numpy as np
import pytest

from bmz_cosdd.data.real_images import MIN_TILE_STD, SOURCES, load_source, real_tiles
from bmz_cosdd.errors import UserError


def test_every_source_loads_offline_as_grey_levels():
    for name in SOURCES:
        image = load_source(name)
        assert image.ndim == 2 and image.dtype == np.float64 and 0 <= image.min() and image.max() <= 1, name


def test_splits_are_disjoint_fixed_and_hold_structure():
    train, test = real_tiles("train", size=64, per_image=4), real_tiles("test", size=64, per_image=4)
    assert train.shape[1:] == test.shape[1:] == (64, 64) and len(train) > len(test) >= len(SOURCES) - 1
    flat_train = {t.tobytes() for t in train}
    assert not any(t.tobytes() in flat_train for t in test)
    assert np.array_equal(train, real_tiles("train", size=64, per_image=4))
    assert (train.std(axis=(1, 2)) >= MIN_TILE_STD).all()


def test_bad_requests_are_one_line_errors():
    with pytest.raises(UserError, match="unknown real image"):
        load_source("lena")
    with pytest.raises(UserError, match="split must be"):
        real_tiles("val")
