import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from bmz_cosdd.nn.mixture import mixture_mean, mixture_nll, mixture_sample, scale_from_raw

MIN_SCALE = 1e-3

SETTINGS = [
    # logits, means, raw scales
    ([0.0, 0.0, 0.0], [-1.0, 0.0, 2.0], [0.0, -1.0, 1.0]),
    ([2.0, -1.0, 0.5], [0.3, 0.3, -2.5], [-3.0, 0.5, -0.5]),
    ([0.0, 5.0, -5.0], [1.0, -1.0, 0.0], [-60.0, -60.0, 0.0]),  # tiny scales: at the floor
    ([0.0], [0.5], [-1e4]),  # single component at the floor
]


def _params(logits, means, raws):
    as_param = lambda v: torch.tensor(v, dtype=torch.float64).reshape(1, 1, -1, 1, 1)  # noqa: E731
    return as_param(logits), as_param(means), scale_from_raw(as_param(raws), MIN_SCALE)


@pytest.mark.parametrize("logits,means,raws", SETTINGS)
def test_density_integrates_to_one(logits, means, raws):
    lg, mu, sc = _params(logits, means, raws)
    # grid spacing 1e-5 resolves the floor scale 1e-3 with 100 points per sigma
    grid = torch.linspace(-12.0, 12.0, 2_400_001, dtype=torch.float64)
    density = torch.exp(-mixture_nll(grid.reshape(1, 1, -1, 1), lg, mu, sc)).flatten()
    total = torch.trapezoid(density, grid).item()
    assert abs(total - 1.0) < 1e-4


@pytest.mark.parametrize("logits,means,raws", SETTINGS)
def test_nll_matches_direct_computation(logits, means, raws):
    lg, mu, sc = _params(logits, means, raws)
    x = np.concatenate([np.linspace(-4, 4, 41), np.asarray(means) + 1e-4])
    w = np.exp(logits) / np.exp(logits).sum()
    s = sc.flatten().numpy()
    with np.errstate(divide="ignore"):
        expected = -np.log(sum(w[k] * norm.pdf(x, means[k], s[k]) for k in range(len(w))))
    got = mixture_nll(torch.tensor(x).reshape(1, 1, -1, 1), lg, mu, sc).flatten().numpy()
    finite = np.isfinite(expected)  # far from a floor-width component scipy underflows to 0
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-9, atol=1e-9)
    assert np.all(np.isfinite(got))


def test_scale_floor_and_no_nan_for_extreme_raw_values():
    raw = torch.tensor([-1e30, -1e4, -50.0, 0.0, 50.0, 1e4, 1e30])
    scales = scale_from_raw(raw, MIN_SCALE)
    assert torch.all(scales >= MIN_SCALE)
    assert torch.all(torch.isfinite(scales))
    # extreme logits, means and raw scales together (float32)
    k = raw.numel()
    logits = torch.tensor([1e30, -1e30, 0.0, 80.0, -80.0, 1e4, -1e4]).reshape(1, 1, k, 1, 1)
    means = torch.linspace(-1e3, 1e3, k).reshape(1, 1, k, 1, 1)
    x = torch.tensor([-1e3, 0.0, 0.5, 1e3]).reshape(1, 1, 1, 4)
    nll = mixture_nll(x, logits, means, scales.reshape(1, 1, k, 1, 1))
    assert not torch.isnan(nll).any()
    assert torch.isfinite(nll).all()


def test_mixture_mean():
    lg, mu, _ = _params([0.0, math.log(3.0)], [-1.0, 3.0], [0.0, 0.0])
    assert torch.allclose(mixture_mean(lg, mu), torch.tensor(2.0, dtype=torch.float64))


def test_mixture_sample_moments_and_seeding():
    lg, mu, sc = _params([0.0, 1.0], [-2.0, 1.0], [-1.0, 0.5])
    shape = (1, 1, 2, 200, 200)
    lg, mu, sc = lg.expand(shape), mu.expand(shape), sc.expand(shape)
    a = mixture_sample(lg, mu, sc, torch.Generator().manual_seed(3))
    b = mixture_sample(lg, mu, sc, torch.Generator().manual_seed(3))
    assert a.shape == (1, 1, 200, 200)
    assert torch.equal(a, b)
    w = torch.softmax(torch.tensor([0.0, 1.0], dtype=torch.float64), 0)
    m, s = torch.tensor([-2.0, 1.0], dtype=torch.float64), sc[0, 0, :, 0, 0]
    mean = (w * m).sum()
    var = (w * (s**2 + m**2)).sum() - mean**2
    assert abs(a.mean() - mean) < 0.03
    assert abs(a.var() / var - 1.0) < 0.03
