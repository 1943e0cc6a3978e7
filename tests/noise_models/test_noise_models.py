"""Pixel noise models: proper densities, fitting, normalised units, storage, sampling, plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bmz_cosdd.errors import UserError
from bmz_cosdd.noise_models import (
    GMMNoiseModel,
    HistogramNoiseModel,
    NormalisedNoiseModel,
    fit_gmm,
    fit_histogram,
    load_noise_model,
    plot_noise_model,
    save_noise_model,
)

GAIN, READ = 2.0, 10.0
CHECK_SIGNALS = [150.0, 300.0, 500.0, 700.0, 950.0]


def true_variance(s: np.ndarray | float) -> np.ndarray | float:
    """Variance of ``GAIN * Poisson(s / GAIN) + N(0, READ**2)``."""
    return GAIN * np.asarray(s) + READ**2


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module on one intra-op thread, then restore the setting.

    The tensors here are small, so extra threads only add synchronisation, and on
    a busy machine a second thread that must wait for a core slows fitting tenfold.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    """Poisson-Gaussian pairs: 256x256 signals uniform in [100, 1000], four noisy frames."""
    rng = np.random.default_rng(0)
    signal = rng.uniform(100.0, 1000.0, size=(1, 1, 256, 256)).repeat(4, axis=0)
    observation = GAIN * rng.poisson(signal / GAIN) + rng.normal(0.0, READ, signal.shape)
    return signal, observation


@pytest.fixture(scope="module")
def fitted_gmm(pairs) -> GMMNoiseModel:
    signal, observation = pairs
    # 16k pairs are plenty for a handful of smooth parameters
    return fit_gmm(signal[..., :64, :64], observation[..., :64, :64], steps=300, batch=8192, seed=0)


@pytest.fixture(scope="module")
def fitted_histogram(pairs) -> HistogramNoiseModel:
    signal, observation = pairs
    return fit_histogram(signal, observation, bins=128)


def random_gmm() -> GMMNoiseModel:
    """Two channels on different scales, parameters perturbed away from the initial state."""
    model = GMMNoiseModel(n_channels=2, n_gaussians=3, n_coeffs=3, min_signal=(100.0, -5.0),
                          max_signal=(1000.0, 5.0), min_sigma=0.01)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.params.add_(0.7 * torch.randn(model.params.shape, generator=generator))
    return model


def random_histogram() -> HistogramNoiseModel:
    model = HistogramNoiseModel(n_channels=2, bins=16, min_signal=(100.0, -5.0), max_signal=(1000.0, 5.0),
                                min_obs=(0.0, -8.0), max_obs=(1200.0, 8.0))
    generator = torch.Generator().manual_seed(3)
    raw = torch.rand(model.probs.shape, generator=generator, dtype=torch.float64)
    raw[raw < 0.3] = 0.0  # some empty bins, where the density floor applies
    with torch.no_grad():
        model.probs.copy_(raw / raw.sum(-1, keepdim=True))
    return model


def channel_grid(values: list[float]) -> torch.Tensor:
    """``(1, C)`` float64 signals."""
    return torch.tensor([values], dtype=torch.float64)


def gmm_moments(model, s: torch.Tensor, half_width: float, points: int = 200_001) -> tuple:
    """Trapezoid integrals of p, x p and (x - m)^2 p over ``mean +- half_width * sd``, per channel."""
    with torch.no_grad():
        mean, var = model.mean_variance(s)
        sd = var.sqrt()
        steps = torch.linspace(-half_width, half_width, points, dtype=torch.float64)[:, None]
        x = mean + steps * sd  # (points, C)
        density = model.log_likelihood(x, s.expand_as(x)).double().exp()
    mass = torch.trapezoid(density, x, dim=0)
    first = torch.trapezoid(x * density, x, dim=0)
    second = torch.trapezoid((x - first) ** 2 * density, x, dim=0)
    return mass, first, second, mean[0], var[0]


def midpoint_integral(model, s: torch.Tensor, low: list[float], width: list[float], n_bins: int,
                      per_bin: int = 4) -> torch.Tensor:
    """Integral over ``[low, low + n_bins * width]`` per channel, midpoints of sub-cells aligned with bins.

    Exact for a density that is constant within bins of ``width`` starting at ``low``.
    """
    cells = torch.arange(n_bins * per_bin, dtype=torch.float64)[:, None] + 0.5
    step = torch.tensor([width], dtype=torch.float64) / per_bin
    x = torch.tensor([low], dtype=torch.float64) + cells * step
    with torch.no_grad():
        density = model.log_likelihood(x, s.expand_as(x)).double().exp()
    return density.sum(0) * step[0]


def obs_bins(model: HistogramNoiseModel) -> tuple[list[float], list[float]]:
    """The observation bins' lower edge and width per channel."""
    return list(model.min_obs), [(hi - lo) / model.bins for lo, hi in zip(model.min_obs, model.max_obs)]


# ------------------------------------------------------------------ 1. GMM is a proper density with mean s


@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0, 1.5])
def test_random_gmm_density_integrates_to_one_with_mean_s(t):
    model = random_gmm()
    s = channel_grid([100.0 + 900.0 * t, -5.0 + 10.0 * t])
    mass, first, second, mean, var = gmm_moments(model, s, half_width=60.0)
    torch.testing.assert_close(mass, torch.ones(2, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(mean, s[0], atol=1e-9, rtol=1e-12)
    assert torch.all((first - s[0]).abs() < 1e-3 * var.sqrt())
    torch.testing.assert_close(second, var, rtol=1e-3, atol=0)


@pytest.mark.parametrize("signal", CHECK_SIGNALS)
def test_fitted_gmm_density_integrates_to_one_with_mean_s(fitted_gmm, signal):
    s = channel_grid([signal])
    mass, first, second, mean, var = gmm_moments(fitted_gmm, s, half_width=40.0)
    assert abs(mass.item() - 1.0) < 1e-3
    assert mean.item() == pytest.approx(signal, rel=1e-12)
    assert abs(first.item() - signal) < 1e-3 * math.sqrt(var.item())
    assert second.item() == pytest.approx(var.item(), rel=1e-3)


# ------------------------------------------------------------------ 2. histogram rows and density


def test_histogram_rows_sum_to_one(fitted_histogram):
    sums = fitted_histogram.probs.sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-12, rtol=0)
    assert torch.all(fitted_histogram.probs >= 0)


@pytest.mark.parametrize("model_name", ["fitted", "random"])
def test_histogram_density_integrates_to_one(fitted_histogram, model_name):
    model = fitted_histogram if model_name == "fitted" else random_histogram()
    for signal in ([150.0, -4.0], [555.0, 0.3], [990.0, 4.9], [2000.0, 50.0]):
        s = channel_grid(signal[: model.n_channels])
        low, width = obs_bins(model)
        total = midpoint_integral(model, s, low, width, model.bins)
        # log_likelihood is float32: the density carries ~1e-7 relative rounding
        torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
        # one range's width beyond each end: only the 1e-10 density floor remains
        spans = [model.bins * w for w in width]
        below = midpoint_integral(model, s, [lo - sp for lo, sp in zip(low, spans)], width, model.bins)
        above = midpoint_integral(model, s, [lo + sp for lo, sp in zip(low, spans)], width, model.bins)
        expected = 1e-10 * torch.tensor(spans, dtype=torch.float64)
        torch.testing.assert_close(below, expected, rtol=1e-3, atol=0)
        torch.testing.assert_close(above, expected, rtol=1e-3, atol=0)


def test_histogram_empty_rows_take_the_nearest_filled_row():
    rng = np.random.default_rng(5)
    signal = rng.choice([0.0, 1.0, 9.0, 10.0], size=(1, 1, 64, 64))
    observation = signal + rng.normal(0.0, 1.0 + signal / 3.0)
    model = fit_histogram(signal, observation, bins=10, percentiles=(0.0, 100.0))
    probs = model.probs[0]
    # signal bins: 0 -> row 0, 1 -> row 1, 9 and 10 -> row 9; rows 2..8 are empty
    assert model.info["empty_rows_filled"] == [7]
    for row in (2, 3, 4, 5):  # row 5 is as far from 1 as from 9: the lower one wins
        torch.testing.assert_close(probs[row], probs[1], atol=0, rtol=0)
    for row in (6, 7, 8):
        torch.testing.assert_close(probs[row], probs[9], atol=0, rtol=0)
    assert not torch.equal(probs[1], probs[9])


def test_histogram_moments_of_a_known_table():
    model = HistogramNoiseModel(bins=4, min_signal=(0.0,), max_signal=(4.0,), min_obs=(0.0,), max_obs=(8.0,))
    with torch.no_grad():
        model.probs.zero_()
        model.probs[0, :, 1] = 1.0  # every row: all mass in [2, 4), uniform there
        model.probs[0, 3] = torch.tensor([0.5, 0.0, 0.0, 0.5], dtype=torch.float64)  # [0, 2) or [6, 8)
    mean, var = model.mean_variance(torch.tensor([[0.5], [3.5]], dtype=torch.float64))
    torch.testing.assert_close(mean[:, 0], torch.tensor([3.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(var[:, 0], torch.tensor([4.0 / 12.0, 9.0 + 4.0 / 12.0], dtype=torch.float64))
    draws = model.sample(torch.full((1000, 1), 0.5, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert draws.min() >= 2.0 and draws.max() < 4.0 and draws.std() > 0.5
    log_p = model.log_likelihood(torch.tensor([[1.0], [3.0], [9.0]]), torch.full((3, 1), 0.5))
    torch.testing.assert_close(log_p[:, 0], torch.tensor([math.log(1e-10), math.log(0.5), math.log(1e-10)]))


# ------------------------------------------------------------------ 3. fitting recovers the variance line


def test_fitted_gmm_recovers_poisson_gaussian_variance(fitted_gmm):
    s = torch.tensor(CHECK_SIGNALS, dtype=torch.float64)[:, None]
    with torch.no_grad():
        mean, var = fitted_gmm.mean_variance(s)
    errors = var[:, 0].numpy() / true_variance(np.array(CHECK_SIGNALS)) - 1.0
    assert np.all(np.abs(errors) < 0.10), errors
    torch.testing.assert_close(mean, s)
    assert fitted_gmm.info["n_pairs"] == 4 * 64 * 64
    assert math.isfinite(fitted_gmm.info["final_loss"])
    assert fitted_gmm.info["final_loss"] < fitted_gmm.info["initial_loss"]


def test_fitted_histogram_recovers_poisson_gaussian_variance(fitted_histogram):
    model = fitted_histogram
    s = torch.tensor(CHECK_SIGNALS, dtype=torch.float64)[:, None]
    mean, var = model.mean_variance(s)
    # The histogram's density is blurred by its bins: uniform within an observation
    # bin plus grouping by bin adds ~h_obs^2/6, the signal bin's spread h_sig^2/12.
    # Each row is also estimated on its own from ~2000 pairs (variance sd ~3%),
    # hence the looser 15% than the GMM's 10%.
    h_obs = (model.max_obs[0] - model.min_obs[0]) / model.bins
    h_sig = (model.max_signal[0] - model.min_signal[0]) / model.bins
    expected = true_variance(np.array(CHECK_SIGNALS)) + h_obs**2 / 6.0 + h_sig**2 / 12.0
    errors = var[:, 0].numpy() / expected - 1.0
    assert np.all(np.abs(errors) < 0.15), errors
    # the mean is not constrained to s, but the data's is
    assert np.all(np.abs(mean[:, 0].numpy() - CHECK_SIGNALS) < 0.2 * np.sqrt(expected))


# ------------------------------------------------------------------ 4. normalised units


@pytest.mark.parametrize("make", [random_gmm, random_histogram])
def test_normalised_likelihood_differs_by_the_jacobian(make):
    model = make()
    mean, std = [420.5, 0.25], [173.2, 2.5]
    normalised = NormalisedNoiseModel(model, mean, std)
    generator = torch.Generator().manual_seed(11)
    shape = (3, 2, 8, 8)
    scale = torch.tensor([1200.0, 10.0], dtype=torch.float64)[None, :, None, None]
    offset = torch.tensor([0.0, -5.0], dtype=torch.float64)[None, :, None, None]
    # reach beyond the models' ranges on both sides
    x = offset + scale * (1.4 * torch.rand(shape, generator=generator, dtype=torch.float64) - 0.2)
    s = offset + scale * (1.4 * torch.rand(shape, generator=generator, dtype=torch.float64) - 0.2)
    m = torch.tensor(mean, dtype=torch.float64)[None, :, None, None]
    sd = torch.tensor(std, dtype=torch.float64)[None, :, None, None]
    with torch.no_grad():
        got = normalised.log_likelihood((x - m) / sd, (s - m) / sd)
        raw = model.log_likelihood(x, s)
    assert got.dtype == torch.float32
    torch.testing.assert_close((got - raw).double(), torch.log(sd).expand(shape), atol=2e-5, rtol=0)


def test_normalised_gmm_integrates_to_one():
    model = random_gmm()
    normalised = NormalisedNoiseModel(model, [420.5, 0.25], [173.2, 2.5])
    s_n = channel_grid([0.4, -1.3])
    mass, _, _, mean, _ = gmm_moments(normalised, s_n, half_width=60.0)
    torch.testing.assert_close(mass, torch.ones(2, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(mean, s_n[0])


def test_normalised_histogram_integrates_to_one(fitted_histogram):
    mean, std = 512.0, 250.0
    normalised = NormalisedNoiseModel(fitted_histogram, [mean], [std])
    low, width = obs_bins(fitted_histogram)
    total = midpoint_integral(normalised, channel_grid([(300.0 - mean) / std]), [(low[0] - mean) / std],
                              [width[0] / std], fitted_histogram.bins)
    assert abs(total.item() - 1.0) < 1e-6


def test_normalised_model_rejects_bad_statistics():
    with pytest.raises(UserError, match="std"):
        NormalisedNoiseModel(random_gmm(), [0.0, 0.0], [1.0, 0.0])
    with pytest.raises(UserError, match="mean"):
        NormalisedNoiseModel(random_gmm(), [0.0, 0.0, 0.0], [1.0, 1.0])


# ------------------------------------------------------------------ 5. save / load


@pytest.mark.parametrize("name", ["gmm", "histogram"])
def test_save_load_round_trip(tmp_path, fitted_gmm, fitted_histogram, name):
    model = fitted_gmm if name == "gmm" else fitted_histogram
    path = tmp_path / "sub" / f"{name}.npz"
    save_noise_model(model, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    loaded = load_noise_model(path)
    assert type(loaded) is type(model)
    assert loaded.kind == model.kind == name
    assert loaded.constructor_args() == model.constructor_args()
    assert loaded.info == json.loads(json.dumps(model.info))
    assert loaded.min_signal == model.min_signal and loaded.max_signal == model.max_signal
    generator = torch.Generator().manual_seed(2)
    s = 50.0 + 1000.0 * torch.rand(2, 1, 6, 6, generator=generator)
    x = s + 40.0 * torch.randn(2, 1, 6, 6, generator=generator)
    with torch.no_grad():
        assert torch.equal(loaded.log_likelihood(x, s), model.log_likelihood(x, s))
    with np.load(path, allow_pickle=False) as archive:
        metadata = json.loads(str(archive["bmz_cosdd_noise_model"][()]))
        assert metadata["kind"] == name
        assert metadata["n_channels"] == 1
        assert all(archive[key].dtype != object for key in archive.files)


def test_load_rejects_files_that_are_not_noise_models(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    unrelated = tmp_path / "unrelated.npz"
    np.savez(unrelated, a=np.arange(3))
    array = tmp_path / "array.npy"
    np.save(array, np.arange(3))
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, bmz_cosdd_noise_model=np.array(json.dumps(
        {"format": "bmz-cosdd-noise-model", "version": 1, "kind": "bogus", "args": {}})))
    for path in (text, unrelated, array, unknown, tmp_path / "missing.npz"):
        with pytest.raises(UserError) as caught:
            load_noise_model(path)
        message = str(caught.value)
        assert path.name in message and "not a bmz-cosdd noise model" in message
        assert "\n" not in message


# ------------------------------------------------------------------ 6. sampling


def test_gmm_samples_match_mean_and_variance(fitted_gmm):
    s = torch.full((20_000, 1), 500.0)
    draws = fitted_gmm.sample(s, torch.Generator().manual_seed(0))
    _, var = fitted_gmm.mean_variance(s[:1].double())
    sd = math.sqrt(var.item())
    assert abs(draws.double().mean().item() - 500.0) < 4.0 * sd / math.sqrt(20_000)
    assert draws.double().var().item() == pytest.approx(var.item(), rel=0.05)
    again = fitted_gmm.sample(s, torch.Generator().manual_seed(0))
    other = fitted_gmm.sample(s, torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)
    assert not torch.equal(draws, other)


def test_histogram_samples_match_mean_and_variance(fitted_histogram):
    s = torch.full((20_000, 1), 700.0)
    draws = fitted_histogram.sample(s, torch.Generator().manual_seed(0))
    mean, var = fitted_histogram.mean_variance(s[:1].double())
    assert abs(draws.double().mean().item() - mean.item()) < 4.0 * math.sqrt(var.item() / 20_000)
    assert draws.double().var().item() == pytest.approx(var.item(), rel=0.05)
    assert torch.equal(draws, fitted_histogram.sample(s, torch.Generator().manual_seed(0)))
    assert not torch.equal(draws, fitted_histogram.sample(s, torch.Generator().manual_seed(1)))


# ------------------------------------------------------------------ 7. bad input


def _bad_inputs() -> list:
    good = np.ones((2, 1, 4, 4))
    nan = good.copy()
    nan[0, 0, 1, 1] = np.nan
    inf = good.copy()
    inf[1, 0, 2, 2] = np.inf
    return [
        pytest.param(good, np.ones((2, 1, 4, 5)), "differ", id="shapes"),
        pytest.param(nan, good, "NaN", id="nan-signal"),
        pytest.param(good, inf, "NaN or infinite", id="inf-observation"),
        pytest.param(np.ones((4, 4)), np.ones((4, 4)), r"\(N, C, Y, X\)", id="2d"),
        pytest.param(good, good, "empty|constant", id="constant"),
    ]


@pytest.mark.parametrize("fit", [fit_gmm, fit_histogram])
@pytest.mark.parametrize("signal,observation,match", _bad_inputs())
def test_fit_rejects_bad_pairs(fit, signal, observation, match):
    with pytest.raises(UserError, match=match):
        fit(signal, observation)


def test_models_reject_mismatched_channels(fitted_gmm, fitted_histogram):
    for model in (fitted_gmm, fitted_histogram):
        with pytest.raises(UserError, match="channels on axis 1"):
            model.log_likelihood(torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 3))
        with pytest.raises(UserError, match="differ in shape"):
            model.log_likelihood(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 4))


# ------------------------------------------------------------------ 8. plot


@pytest.mark.parametrize("with_pairs", [False, True])
def test_plot_writes_png(tmp_path, pairs, fitted_gmm, fitted_histogram, with_pairs):
    signal, observation = (p[:1, :, :32, :32] for p in pairs)
    for model in (fitted_gmm, fitted_histogram):
        path = tmp_path / f"{model.kind}.png"
        if with_pairs:
            plot_noise_model(model, path, signal, observation)
        else:
            plot_noise_model(model, path)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
