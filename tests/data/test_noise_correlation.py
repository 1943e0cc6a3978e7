"""The one noise-correlation estimator behind inspect, COSDD --direction auto and StructN2V --struct-mask auto."""

import numpy as np
import pytest

from bmz_cosdd.config import DataConfig
from bmz_cosdd.data.noise_correlation import correlation_reach, estimate_noise_correlation
from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.registry import get_method


@pytest.mark.parametrize(
    "noise, direction",
    [("row_correlated", "x"), ("column_checkerboard", "y"), ("scmos_columns", "y"), ("poisson_gaussian", "none")],
)
def test_direction_of_synthetic_noise(noise, direction):
    data = make_dataset("mixed", noise, n=3, shape=(128, 128), seed=1)
    found = estimate_noise_correlation(list(data.noisy))
    assert found.direction == direction, found.describe()
    if direction == "none":
        assert found.length_x == found.length_y == 0
        assert "pixel-independent" in found.describe()
    else:
        assert found.length(direction) >= 1
        assert found.score(direction) > found.threshold


def test_white_noise_is_exactly_uncorrelated_and_scale_free():
    rng = np.random.default_rng(0)
    white = rng.normal(size=(2, 200, 200))
    a = estimate_noise_correlation(list(white))
    b = estimate_noise_correlation(list(white * 37.0 + 1000.0))
    assert a.direction == "none"
    np.testing.assert_allclose(a.correlation_x, b.correlation_x, atol=1e-12)
    assert max(abs(v) for v in a.correlation_x + a.correlation_y) < 0.02


def test_known_correlation_along_y_is_recovered():
    # A moving sum over 3 rows of white noise: correlation 2/3 at lag 1, 1/3 at lag 2, 0 beyond.
    rng = np.random.default_rng(1)
    white = rng.normal(size=(302, 300))
    noise = white[:-2] + white[1:-1] + white[2:]
    found = estimate_noise_correlation([noise], max_lag=6)
    assert found.direction == "y" and found.length_y == 2
    np.testing.assert_allclose(found.correlation_y[:3], [2 / 3, 1 / 3, 0.0], atol=0.03)
    assert max(abs(v) for v in found.correlation_x) < 0.03


def test_reach_bridges_single_gaps_only():
    assert correlation_reach(np.array([0.5, 0.05, 0.3, 0.0, 0.0, 0.4]), 0.1) == 3
    assert correlation_reach(np.array([0.0, 0.0, 0.0, 0.9]), 0.1) == 0
    assert correlation_reach(np.array([0.0, -0.4, 0.0, -0.3, 0.0]), 0.1) == 4


def test_bad_images():
    with pytest.raises(UserError, match="5 x 5"):
        estimate_noise_correlation([np.zeros((3, 3))])
    with pytest.raises(UserError, match="NaN"):
        estimate_noise_correlation([np.full((20, 20), np.nan)])


@pytest.mark.parametrize("noise, direction", [("row_correlated", "x"), ("column_checkerboard", "y"),
                                              ("poisson_gaussian", "none")])
def test_cosdd_direction_auto_uses_the_estimator(noise, direction):
    method = get_method("cosdd")
    data = make_dataset("blobs", noise, n=2, shape=(96, 96), seed=2)
    images = [((x - x.mean()) / x.std())[None] for x in data.noisy.astype(np.float64)]
    config = method.config_from_dict({"preset": "tiny"})
    assert config.direction == "auto"
    resolved, notes = method.resolve_config(config, DataConfig(), images, None)
    assert resolved.direction == direction == estimate_noise_correlation(images).direction
    assert notes[0].startswith(f"noise direction (auto): {direction}")
    assert all(note.startswith(("noise decoder field (auto)", "context dropout (auto)")) for note in notes[1:])
    method.build(resolved, 1)  # every resolved direction builds
    explicit, notes = method.resolve_config(method.config_from_dict({"preset": "tiny", "direction": "y"}),
                                            DataConfig(), images, None)
    assert explicit.direction == "y" and all("noise direction" not in note for note in notes)
