import numpy as np
import pytest
from scipy import ndimage

from bmz_cosdd.data.method_noise import check_residual
from bmz_cosdd.data.noise_correlation import estimate_noise_variance
from bmz_cosdd.data.real_images import real_tiles
from bmz_cosdd.data.synthetic import NOISE_RECIPES
from bmz_cosdd.errors import UserError


@pytest.fixture(scope="module")
def clean():
    return real_tiles("test", size=64, per_image=2)


@pytest.mark.parametrize("noise, direction", [("row_correlated", "x"), ("poisson_gaussian", "none"),
                                              ("column_checkerboard", "y")])
def test_noise_variance_within_a_third_of_the_truth(clean, noise, direction):
    noisy = NOISE_RECIPES[noise](clean, np.random.default_rng(0))
    truth = float(np.var(noisy - clean))
    assert abs(estimate_noise_variance(list(noisy), direction) / truth - 1) < 1 / 3


@pytest.mark.parametrize("noise, params", [("row_correlated", {}), ("row_correlated", {"stripe_sigma": 0.1}),
                                           ("poisson_gaussian", {}), ("column_checkerboard", {})])
def test_perfect_prediction_passes_and_blurred_one_shows_structure(clean, noise, params):
    noisy = NOISE_RECIPES[noise](clean, np.random.default_rng(1), **params)
    perfect = check_residual(list(noisy), list(clean))
    assert perfect.ok, perfect.describe()
    blurred = check_residual(list(noisy), list(ndimage.gaussian_filter(clean, (0, 3, 3))))
    assert not blurred.ok
    assert any("structure" in p for p in blurred.problems), blurred.problems


def test_prediction_that_keeps_the_noise_is_reported(clean):
    noisy = NOISE_RECIPES["row_correlated"](clean, np.random.default_rng(2), stripe_sigma=0.1)
    copy = check_residual(list(noisy), list(noisy))
    assert any("keeps noise" in p for p in copy.problems)
    # Stripes left in the prediction: the residual lacks the noise's correlation along x.
    rng = np.random.default_rng(3)
    stripes = ndimage.gaussian_filter1d(rng.normal(0, 0.1, clean.shape), 1.0, axis=-1)
    noisy = clean + stripes + rng.normal(0, 0.02, clean.shape)
    kept = check_residual(list(noisy), list(clean + stripes))
    assert any("keeps the noise's correlated part along x" in p for p in kept.problems), kept.problems


def test_noise_predicted_from_beyond_a_one_pixel_blind_spot_is_reported(clean):
    """StructN2V's x:3 mask hides lag 1 only: the noise its output keeps is what lags 2 and up predict. The residual's
    lag 1 then stays near the noise's; its lag 2 turns negative, which the check must see."""
    rng = np.random.default_rng(5)
    stripes = ndimage.gaussian_filter1d(rng.normal(0, 0.05, clean.shape), 1.0, axis=-1)
    noise = stripes + rng.normal(0, 0.03, clean.shape)
    beyond = np.stack([np.roll(noise, k, -1) + np.roll(noise, -k, -1) for k in (2, 3)], -1).reshape(-1, 2)
    weights, *_ = np.linalg.lstsq(beyond, stripes.ravel(), rcond=None)
    kept = (beyond @ weights).reshape(clean.shape)
    result = check_residual(list(clean + noise), list(clean + kept), direction="x")
    assert abs(result.residual_x[0] - result.noise_x[0]) < 0.1  # lag 1 alone would not tell
    assert any("keeps the noise's correlated part along x (the residual's correlation at lag 2" in p
               for p in result.problems), result.problems
    assert check_residual(list(clean + noise), list(clean), direction="x").ok


def test_report_names_figures_and_serialises(clean):
    noisy = NOISE_RECIPES["poisson_gaussian"](clean, np.random.default_rng(4))
    result = check_residual(list(noisy), list(clean), direction="none")
    data = result.to_dict()
    assert data["ok"] and data["direction"] == "none"
    assert len(data["residual_correlation"]["x"]) == 3 and 0.5 < data["variance_ratio"] < 2
    assert len(data["variance_ratio_by_signal"]["ratio"]) >= 4
    assert "residual check passed" in result.describe()


def test_bad_pairs_are_one_line_errors():
    with pytest.raises(UserError, match="does not match"):
        check_residual([np.zeros((16, 16))], [np.zeros((16, 17))])
    with pytest.raises(UserError, match="1 noisy image"):
        check_residual([np.zeros((16, 16))], [])
