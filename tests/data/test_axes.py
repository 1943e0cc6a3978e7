import numpy as np
import pytest

from bmz_cosdd.data.axes import VALID_AXES, parse_axes, restore_axes, to_samples_cyx
from bmz_cosdd.errors import UserError

SIZES = {"S": 2, "T": 3, "C": 2, "Z": 4, "Y": 5, "X": 6}


@pytest.mark.parametrize("axes", ["YX", "SYX", "SCYX", "TYX", "ZYX", "YXC", "CZYX", "STCZYX", "XY", "ZYXC"])
def test_round_trip(axes):
    shape = tuple(SIZES[a] for a in axes)
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    samples = to_samples_cyx(x, parse_axes(axes, x.ndim, "x.npy"))
    n = int(np.prod([SIZES[a] for a in "STZ" if a in axes]))
    assert samples.shape == (n, SIZES["C"] if "C" in axes else 1, SIZES["Y"], SIZES["X"])
    back = restore_axes(samples, axes, shape)
    assert back.shape == shape
    np.testing.assert_array_equal(back, x)


def test_sample_order_is_s_then_t_then_z():
    x = np.zeros((2, 3, 4, 5, 6))  # Z, S, T, Y, X in a scrambled order
    for z in range(2):
        for s in range(3):
            for t in range(4):
                x[z, s, t] = 100 * s + 10 * t + z
    samples = to_samples_cyx(x, "ZSTYX")
    expected = [100 * s + 10 * t + z for s in range(3) for t in range(4) for z in range(2)]
    assert samples[:, 0, 0, 0].tolist() == expected


def test_channel_last_becomes_c():
    x = np.random.default_rng(0).random((5, 6, 3))
    samples = to_samples_cyx(x, "YXC")
    np.testing.assert_array_equal(samples[0, 1], x[..., 1])


def test_restore_with_different_channel_count():
    shape = (2, 1, 5, 6)  # S, C, Y, X
    pred = np.random.default_rng(0).random((2, 3, 5, 6))
    assert restore_axes(pred, "SCYX", shape).shape == (2, 3, 5, 6)
    with pytest.raises(ValueError):
        restore_axes(pred, "SYX", (2, 5, 6))
    with pytest.raises(ValueError):
        restore_axes(pred[:1], "SCYX", shape)


def test_parse_upper_cases():
    assert parse_axes("syx", 3, "a.tif") == "SYX"
    assert set(VALID_AXES) == set("STCZYX")


@pytest.mark.parametrize(
    "axes, ndim, fragment",
    [
        ("SYX", 2, "cells.tif: axes 'SYX' has 3 letters but the array has 2 dimensions (shape (64, 64))"),
        ("QYX", 3, "unknown letter"),
        ("YYX", 3, "repeat"),
        ("SZX", 3, "must contain Y and X"),
    ],
)
def test_bad_axes_messages(axes, ndim, fragment):
    with pytest.raises(UserError) as info:
        parse_axes(axes, ndim, "cells.tif", shape=(64, 64) if ndim == 2 else None)
    message = str(info.value)
    assert fragment in message
    assert message.startswith("cells.tif")
    assert "\n" not in message
