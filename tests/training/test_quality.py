import numpy as np
import pytest
import torch

from bmz_cosdd.data.real_images import real_tiles
from bmz_cosdd.data.synthetic import row_correlated
from bmz_cosdd.methods.registry import get_method
from bmz_cosdd.training.quality import COLLAPSE_KL, QualityReport, assess, estimated_gain


def _crops() -> torch.Tensor:
    clean = real_tiles("test", size=32, per_image=2)
    noisy = row_correlated(clean, np.random.default_rng(0))
    return torch.from_numpy(((noisy - noisy.mean()) / noisy.std()).astype(np.float32))[:, None]


def _collapsed_cosdd():
    """A tiny COSDD whose every posterior equals its prior: the latent carries nothing of the input."""
    method = get_method("cosdd")
    config = method.config_from_dict({"preset": "tiny", "direction": "x", "n_levels": 2, "latent_channels": [4],
                                      "features": 8, "ar_layers": 2, "ar_hidden": 8, "signal_hidden": 8})
    torch.manual_seed(0)
    model = method.build(config, 1)
    with torch.no_grad():
        for name, param in model.vae.named_parameters():
            if "posterior" in name or "prior" in name:
                param.zero_()
    return method, model


def test_collapse_flag_fires_on_a_collapsed_model():
    method, model = _collapsed_cosdd()
    report = assess(method, model, _crops(), "x", torch.device("cpu"))
    assert report.latent["kl"] < COLLAPSE_KL
    assert report.flagged and any("posterior collapse" in flag for flag in report.flags)
    assert any("WORSE than the noisy input" in flag for flag in report.flags)
    lines = report.lines("cosdd", "runs/x")
    assert lines[0].startswith("quality (no ground truth") and any(line.startswith("what to do:") for line in lines)
    assert QualityReport.from_dict(report.to_dict()).flags == report.flags


def test_estimated_gain_is_the_noise_over_the_error():
    assert estimated_gain(1.0, 1.0) == pytest.approx(0.0)
    assert estimated_gain(0.1, 1.0) == pytest.approx(10.0)
    assert estimated_gain(-0.1, 1.0) is None


class _KeepsNoiseBeyondLag1:
    """A stand-in method whose output is the clean crop plus the noise that pixels 2-3 away along x predict: what a
    blind spot hiding lag 1 only (StructN2V's x:3) keeps of stripes. Deterministic, a function of its input."""

    estimators = ("denoised",)

    def __init__(self, clean: np.ndarray, weight: float) -> None:
        self.clean, self.weight, self.offset = torch.from_numpy(clean), weight, 0

    def predict(self, model, x, options):
        clean = self.clean[self.offset:self.offset + len(x)]
        self.offset = (self.offset + len(x)) % len(self.clean)
        noise = x.double() - clean
        kept = sum(torch.roll(noise, k, -1) + torch.roll(noise, -k, -1) for k in (2, 3))
        return {"denoised": (clean + self.weight * kept).float()}

    def diagnostics(self, model, batch):
        return {}


@pytest.mark.parametrize("weight, worse", [(0.05, False), (0.5, True)])
def test_the_estimated_gain_counts_the_correlated_noise_an_output_keeps(weight, worse):
    """Keeping much of the stripes (0.5: about 2 dB worse than the input) is flagged, though the output's difference
    to the input is under twice the noise variance and the plain estimate calls it a gain; keeping little is not."""
    from scipy import ndimage

    clean = real_tiles("test", size=64, per_image=2)[:16, None]
    rng = np.random.default_rng(7)
    noise = ndimage.gaussian_filter1d(rng.normal(0, 0.1, clean.shape), 1.0, axis=-1) + rng.normal(0, 0.02, clean.shape)
    method = _KeepsNoiseBeyondLag1(clean, weight)
    noisy = torch.from_numpy(clean + noise).float()
    report = assess(method, torch.nn.Identity(), noisy, "x", torch.device("cpu"))
    output = method.predict(None, noisy, None)["denoised"].double().numpy()
    true_gain = 10 * np.log10(np.mean(noise ** 2) / np.mean((output - clean) ** 2))
    assert (true_gain < -1) == worse
    assert report.flagged == worse, report.flags
    assert report.risk["divergence"] > 0 and len(report.risk["correlation"]) == 8
    if worse:
        assert report.mse_to_noisy < 2 * report.noise_variance  # the plain estimate: a gain
        assert any("WORSE than the noisy input" in flag and "Stein" in flag for flag in report.flags)
