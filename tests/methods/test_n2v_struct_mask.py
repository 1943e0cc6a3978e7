"""StructN2V blind masks: parsing, formatting and estimation from the noise."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.n2v.struct_mask import (
    MaskChoice,
    estimate_struct_mask,
    format_struct_mask,
    mask_from_axis,
    parse_struct_mask,
)

CROSS = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


# ----------------------------------------------------------------------------- parsing


def test_mask_from_axis():
    x = mask_from_axis("x", 5)
    assert x.shape == (1, 5) and x.dtype == bool and x.all()
    y = mask_from_axis("y", 3)
    assert y.shape == (3, 1) and y.all()
    with pytest.raises(UserError, match="odd"):
        mask_from_axis("x", 4)


@pytest.mark.parametrize("spec", [None, "none", " None "])
def test_parse_none(spec):
    assert parse_struct_mask(spec, 64) is None


def test_parse_axis_span():
    x = parse_struct_mask("x:9", 64)
    assert x.shape == (1, 9) and x.dtype == bool and x.all()
    y = parse_struct_mask("y:17", 64)
    assert y.shape == (17, 1) and y.all()
    assert parse_struct_mask("X: 3", 64).shape == (1, 3)
    assert parse_struct_mask("x:1", 64).shape == (1, 1)


def test_parse_list_of_lists():
    m = parse_struct_mask(CROSS, 64)
    assert m.dtype == bool
    assert np.array_equal(m, np.array(CROSS, dtype=bool))


def test_parse_sets_the_centre():
    m = parse_struct_mask([[1, 0, 1]], 64)
    assert m.tolist() == [[True, True, True]]


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".txt"])
def test_parse_file(tmp_path, suffix):
    path = tmp_path / f"mask{suffix}"
    arr = np.array(CROSS, dtype=np.uint8)
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix == ".tif":
        tifffile.imwrite(path, arr)
    else:
        np.savetxt(path, arr, fmt="%d")
    m = parse_struct_mask(str(path), 64)
    assert m.dtype == bool
    assert np.array_equal(m, arr.astype(bool))
    assert np.array_equal(parse_struct_mask(path, 64), m)


def test_parse_auto_is_for_the_caller():
    with pytest.raises(ValueError):
        parse_struct_mask("auto", 64)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x:8", "struct mask span must be odd, got 8"),
        ("x:81", "struct mask span 81 is larger than the crop size 64"),
        ("x:0", ">= 1"),
        ("x:-3", ">= 1"),
        ("z:3", "unknown struct mask axis 'z'"),
        ("x:abc", "must be an integer"),
        ("bogus", "is not 'none'"),
        (np.ones((2, 3)), "odd"),
        ([[0, 2, 0]], "0/1"),
        ([[0, 1], [1]], "rectangular"),
        (np.ones((3, 3, 3)), "2-D"),
        ([1, 1, 1], "2-D"),
        (np.ones((65, 1)), "larger than the crop size 64"),
        (3, "must be a string"),
    ],
)
def test_parse_errors(spec, message):
    with pytest.raises(UserError, match=message) as err:
        parse_struct_mask(spec, 64)
    assert "\n" not in str(err.value)


def test_parse_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        parse_struct_mask(str(tmp_path / "missing.npy"), 64)


def test_format_struct_mask():
    assert format_struct_mask(None) == "none"
    assert format_struct_mask(mask_from_axis("x", 9)) == "x:9"
    assert format_struct_mask(mask_from_axis("y", 17)) == "y:17"
    assert format_struct_mask(np.array(CROSS, dtype=bool)) == "3x3 mask [[0,1,0],[1,1,1],[0,1,0]]"
    for spec in ("x:9", "y:5", "none"):
        assert format_struct_mask(parse_struct_mask(spec, 64)) == spec


# ----------------------------------------------------------------------------- estimation


def _normalised(kind: str, noise: str, **params) -> list[np.ndarray]:
    data = make_dataset(kind, noise, n=4, shape=(128, 128), seed=0, **params)
    return [((x - x.mean()) / x.std())[None] for x in data.noisy.astype(np.float64)]


@pytest.fixture(scope="module")
def strong_rows() -> list[np.ndarray]:
    return _normalised("mixed", "row_correlated", stripe_sigma=0.15, blur_sigma=3.0)


def _check_choice(choice: MaskChoice, max_lag: int = 16) -> None:
    assert len(choice.correlation_x) == len(choice.correlation_y) == max_lag
    assert parse_struct_mask(choice.spec, 64) is None or format_struct_mask(parse_struct_mask(choice.spec, 64)) == (
        choice.spec
    )
    assert "\n" not in choice.reason


def test_estimate_strong_row_correlation(strong_rows):
    choice = estimate_struct_mask(strong_rows, 64)
    _check_choice(choice)
    assert choice.axis == "x" and choice.spec == f"x:{choice.span}"
    assert 9 <= choice.span <= 21
    assert "along x" in choice.reason and choice.spec in choice.reason
    assert choice.correlation_x[0] > 0.4 and abs(choice.correlation_y[0]) < 0.1


def test_estimate_is_symmetric_in_the_axes(strong_rows):
    # Transposing the images must swap the axis and keep the span.
    along_x = estimate_struct_mask(strong_rows, 64)
    along_y = estimate_struct_mask([np.swapaxes(a, -1, -2) for a in strong_rows], 64)
    assert along_y.axis == "y" and along_y.span == along_x.span
    assert np.allclose(along_y.correlation_y, along_x.correlation_x, atol=1e-6)


def test_estimate_span_is_capped_by_the_crop(strong_rows):
    choice = estimate_struct_mask(strong_rows, 12)
    assert choice.spec == "x:11"
    assert "capped" in choice.reason


@pytest.mark.parametrize("kind", ["mixed", "filaments"])
def test_estimate_weak_row_correlation(kind):
    choice = estimate_struct_mask(_normalised(kind, "row_correlated"), 64)
    _check_choice(choice)
    assert choice.axis == "x"
    assert 3 <= choice.span <= 5
    assert "along x" in choice.reason


@pytest.mark.parametrize("noise", ["column_checkerboard", "scmos_columns"])
def test_estimate_column_correlation(noise):
    choice = estimate_struct_mask(_normalised("mixed", noise), 64)
    _check_choice(choice)
    assert choice.axis == "y" and choice.spec.startswith("y:")
    # The checkerboard's lag-1 correlation is zero; the mask must still reach lag 2.
    assert choice.span >= 5
    assert "along y" in choice.reason


@pytest.mark.parametrize("kind", ["mixed", "cells"])
def test_estimate_pixel_independent_noise(kind):
    choice = estimate_struct_mask(_normalised(kind, "poisson_gaussian"), 64)
    _check_choice(choice)
    assert (choice.spec, choice.axis, choice.span) == ("none", None, 1)
    assert "pixel-independent" in choice.reason
    assert max(abs(v) for v in choice.correlation_x[:3] + choice.correlation_y[:3]) < 0.1


def test_estimate_averages_channels_and_accepts_2d():
    rng = np.random.default_rng(0)
    white = [rng.standard_normal((2, 64, 80)) for _ in range(2)]
    assert estimate_struct_mask(white, 32).spec == "none"
    # Noise correlated along y in one channel: a moving sum over 3 rows.
    corr = rng.standard_normal((66, 64))
    corr = corr[:-2] + corr[1:-1] + corr[2:]
    choice = estimate_struct_mask([corr], 32)
    assert choice.axis == "y" and choice.span == 5
    assert choice.correlation_y[0] == pytest.approx(2 / 3, abs=0.05)
    assert choice.correlation_y[1] == pytest.approx(1 / 3, abs=0.05)


def test_estimate_rejects_bad_input():
    with pytest.raises(UserError):
        estimate_struct_mask([], 64)
    bad = np.zeros((1, 16, 16))
    bad[0, 3, 3] = np.nan
    with pytest.raises(UserError, match="NaN"):
        estimate_struct_mask([bad], 64)
