import numpy as np
import pytest

from bmz_cosdd.data.synthetic import (
    NOISE_DIRECTIONS,
    NOISE_RECIPES,
    SyntheticData,
    column_checkerboard,
    make_clean,
    make_dataset,
    poisson_gaussian,
    row_correlated,
    scmos_columns,
)
from bmz_cosdd.errors import UserError

KINDS = ["cells", "filaments", "blobs", "mixed"]


def _autocorr(r, lag, axis):
    r = r - r.mean()
    a = np.take(r, np.arange(r.shape[axis] - lag), axis=axis)
    b = np.take(r, np.arange(lag, r.shape[axis]), axis=axis)
    return float(np.mean(a * b) / np.mean(r * r))


@pytest.fixture(scope="module")
def flat():
    # Uniform signal: residual statistics are then pure noise statistics.
    return np.full((4, 128, 128), 0.4)


@pytest.mark.parametrize("kind", KINDS)
def test_clean_images_seeded_in_unit_range(kind):
    a = make_clean(kind, 2, (96, 128), seed=4)
    b = make_clean(kind, 3, (96, 128), seed=4)
    assert a.shape == (2, 96, 128) and a.dtype == np.float64
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.max() == 1.0
    np.testing.assert_array_equal(a, b[:2])  # image i does not depend on n
    assert not np.array_equal(a, make_clean(kind, 2, (96, 128), seed=5))
    assert not np.array_equal(a[0], a[1])
    assert a.std() > 0.05


def test_clean_has_structure_at_several_scales():
    img = make_clean("mixed", 1, (256, 256), seed=0)[0]
    spectrum = np.abs(np.fft.rfft2(img - img.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.rfftfreq(256), indexing="ij"))
    low = spectrum[(f > 0) & (f < 0.02)].sum()
    mid = spectrum[(f >= 0.05) & (f < 0.15)].sum()
    assert low > 0 and mid > 1e-3 * low


@pytest.mark.parametrize("noise", list(NOISE_RECIPES))
def test_dataset_reproducible(noise):
    a = make_dataset("blobs", noise, n=2, shape=(64, 64), seed=7)
    b = make_dataset("blobs", noise, n=2, shape=(64, 64), seed=7)
    c = make_dataset("blobs", noise, n=2, shape=(64, 64), seed=8)
    assert isinstance(a, SyntheticData)
    assert a.noisy.dtype == np.float32 and a.noisy.shape == a.clean.shape == (2, 64, 64)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    assert not np.array_equal(a.noisy, c.noisy)
    assert a.direction == NOISE_DIRECTIONS[noise] and a.noise == noise and a.seed == 7
    assert np.all(np.isfinite(a.noisy))


def test_dataset_params_recorded_and_validated():
    d = make_dataset("blobs", "row_correlated", n=1, shape=(32, 32), blur_sigma=3.0)
    assert d.params == {"gain": 0.002, "read_sigma": 0.02, "stripe_sigma": 0.025, "blur_sigma": 3.0}
    with pytest.raises(UserError, match="unknown parameter"):
        make_dataset("blobs", "row_correlated", n=1, shape=(32, 32), photons=3)
    with pytest.raises(UserError, match="valid noises: poisson_gaussian"):
        make_dataset("blobs", "speckle")
    with pytest.raises(UserError, match="valid kinds: cells, filaments, blobs, mixed"):
        make_clean("stars", 1)
    with pytest.raises(UserError):
        make_dataset("blobs", "poisson_gaussian", n=1, shape=(32, 32), photons=-1)


def test_poisson_gaussian_variance_grows_with_signal():
    rng = np.random.default_rng(0)
    levels = np.array([0.05, 0.3, 0.9])
    clean = np.broadcast_to(levels[:, None, None], (3, 128, 128))
    r = poisson_gaussian(clean, rng, photons=50.0, read_sigma=0.02) - clean
    var = r.var(axis=(1, 2))
    np.testing.assert_allclose(var, levels / 50.0 + 0.02**2, rtol=0.05)
    assert abs(_autocorr(r, 1, -1)) < 0.02 and abs(_autocorr(r, 1, -2)) < 0.02


def test_row_correlated_along_x(flat):
    r = row_correlated(flat, np.random.default_rng(0)) - flat
    ax, ay = _autocorr(r, 1, -1), _autocorr(r, 1, -2)
    assert ax > 0.05 and abs(ay) < 0.02 and ax > ay + 0.04
    # Recipe variance: 0.002 * s + 0.02^2 + 0.025^2 * sum(k^2) for the sigma-1 kernel (~0.282).
    assert r.var() == pytest.approx(0.002 * 0.4 + 0.02**2 + 0.025**2 * 0.282, rel=0.05)
    strong = row_correlated(flat, np.random.default_rng(0), stripe_sigma=0.2, blur_sigma=3.0) - flat
    assert _autocorr(strong, 3, -1) > 0.5


def test_row_correlated_works_on_any_leading_dims():
    clean = np.full((2, 3, 16, 20), 0.5)
    assert row_correlated(clean, np.random.default_rng(0)).shape == clean.shape
    assert row_correlated(clean[0, 0], np.random.default_rng(0)).shape == (16, 20)


def test_column_checkerboard_along_y(flat):
    r = column_checkerboard(flat, np.random.default_rng(0)) - flat
    # Period-4 pattern (-a, -a, +a, +a): zero at lag 1, -1 at lag 2 along y.
    ay2, ax2 = _autocorr(r, 2, -2), _autocorr(r, 2, -1)
    assert ay2 < -0.5 and abs(ax2) < 0.05
    pattern_only = column_checkerboard(flat, np.random.default_rng(1), variance_scale=0.0) - flat
    assert set(np.round(np.unique(pattern_only), 6)) == {-0.1, 0.1}
    column = pattern_only[0, :8, 0]
    assert np.all(column[:4] == column[4:]) and column[:4].sum() == pytest.approx(0.0)


def test_column_checkerboard_inverse_signal_dependence():
    levels = np.array([0.02, 0.2, 0.8])
    clean = np.broadcast_to(levels[:, None, None], (3, 128, 128))
    r = column_checkerboard(clean, np.random.default_rng(0), amplitude=0.0) - clean
    np.testing.assert_allclose(r.var(axis=(1, 2)), 0.15 / (255 * levels), rtol=0.05)
    floor = column_checkerboard(np.zeros((64, 64)), np.random.default_rng(0), amplitude=0.0)
    assert floor.var() == pytest.approx(0.15, rel=0.1)  # bounded at zero signal


def test_scmos_columns_along_y(flat):
    r = scmos_columns(flat, np.random.default_rng(0)) - flat
    ay, ax = _autocorr(r, 1, -2), _autocorr(r, 1, -1)
    assert ay > 0.1 and abs(ax) < 0.05
    gained = scmos_columns(flat, np.random.default_rng(0), column_sigma=0.0, gain_sigma=0.2) - flat
    assert _autocorr(gained, 1, -2) > 0.02
