"""Stein's unbiased risk estimate: the error of a prediction that keeps correlated noise, without ground truth."""

import numpy as np
import pytest
from scipy import ndimage

from bmz_cosdd.data.real_images import real_tiles
from bmz_cosdd.data.stein_risk import correlated_probe, stein_divergence, sure_error


@pytest.fixture(scope="module")
def images():
    clean = real_tiles("test", size=64, per_image=2)[:, None]  # (N, 1, Y, X)
    rng = np.random.default_rng(0)
    stripes = ndimage.gaussian_filter1d(rng.normal(0, 0.1, clean.shape), 1.0, axis=-1)
    white = rng.normal(0, 0.02, clean.shape)
    return clean, clean + stripes + white, float(np.var(stripes + white))


def test_the_probe_has_the_variance_and_correlation_asked_for():
    rng = np.random.default_rng(1)
    probe = correlated_probe((64, 1, 32, 128), np.full((64, 1, 32, 128), 4.0), [0.6, 0.3], -1, rng)
    assert np.var(probe) == pytest.approx(4.0, rel=0.05)
    lag = [np.mean(probe[..., :-k] * probe[..., k:]) / np.var(probe) for k in (1, 2, 3)]
    assert lag[0] == pytest.approx(0.6, abs=0.03) and lag[1] == pytest.approx(0.3, abs=0.03)
    assert abs(lag[2]) < 0.03
    across = np.mean(probe[..., :-1, :] * probe[..., 1:, :]) / np.var(probe)
    assert abs(across) < 0.03


def _noise_correlation(noise: np.ndarray, lags: int = 8) -> list[float]:
    return [float(np.mean(noise[..., :-k] * noise[..., k:]) / np.var(noise)) for k in range(1, lags + 1)]


def test_a_prediction_that_keeps_what_lags_beyond_a_blind_spot_predict_is_seen_as_worse(images):
    """Like StructN2V's x:3 mask on stripes: the output keeps the noise that pixels 2-3 away predict. The simple
    estimate (difference to the input minus the noise variance) calls it a gain; Stein's estimate does not."""
    clean, noisy, variance = images
    noise = noisy - clean

    def keep_beyond_lag_1(x):  # the clean image plus a linear prediction of the noise from lags +-2, +-3
        n = x - clean
        return clean + 0.3 * sum(np.roll(n, k, -1) + np.roll(n, -k, -1) for k in (2, 3))

    prediction = keep_beyond_lag_1(noisy)
    true_error = float(np.mean((prediction - clean) ** 2))
    mse = float(np.mean((prediction - noisy) ** 2))
    simple = mse - variance
    divergence = stein_divergence(keep_beyond_lag_1, noisy, prediction, np.full(noisy.shape, variance),
                                  _noise_correlation(noise), -1, probes=4)
    stein = sure_error(mse, variance, divergence)
    assert abs(10 * np.log10(stein / true_error)) < 0.5  # within 0.5 dB
    assert 10 * np.log10(true_error / simple) > 2  # the simple estimate is optimistic by more than 2 dB


def test_blurring_along_the_stripes_is_measured_within_half_a_db(images):
    clean, noisy, variance = images

    def blur(x):
        return ndimage.gaussian_filter1d(x, 2.0, axis=-1)

    prediction = blur(noisy)
    true_error = float(np.mean((prediction - clean) ** 2))
    mse = float(np.mean((prediction - noisy) ** 2))
    divergence = stein_divergence(blur, noisy, prediction, np.full(noisy.shape, variance),
                                  _noise_correlation(noisy - clean), -1, probes=4)
    assert abs(10 * np.log10(sure_error(mse, variance, divergence) / true_error)) < 0.5
