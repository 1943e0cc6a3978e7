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
