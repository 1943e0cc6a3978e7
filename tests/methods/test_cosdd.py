import pytest
import torch

from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.methods.registry import get_method


def _tiny(**overrides):
    method = get_method("cosdd")
    values = {"preset": "tiny", "direction": "x", "n_levels": 2, "latent_channels": [4], "features": 8, "ar_layers": 3,
              "ar_hidden": 8, "signal_hidden": 8, "direct_denoiser": True, "direct_depth": 1,
              "direct_features": 4, **overrides}
    torch.manual_seed(0)
    return method, method.build(method.config_from_dict(values), 1)


def test_losses_are_finite_and_named():
    method, model = _tiny()
    losses = method.training_losses(model, torch.randn(2, 1, 32, 32), torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "elbo", "nll", "kl", "signal_mse", "direct"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["kl"] >= 0
    torch.testing.assert_close(losses["elbo"], losses["nll"] + losses["kl"])


def test_signal_decoder_and_direct_denoiser_do_not_train_the_vae():
    method, model = _tiny()
    losses = method.training_losses(model, torch.randn(2, 1, 32, 32), torch.Generator().manual_seed(0))
    (losses["signal_mse"] + losses["direct"]).backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.vae.parameters())
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.ar_decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.signal_decoder.parameters())


def test_prediction_encodes_once_and_samples_in_batches():
    method, model = _tiny()
    model.eval()
    calls = {"bottom_up": 0, "top_down": 0}
    bottom_up, sample_features = model.vae.bottom_up, model.vae.sample_features

    def count_bu(x):
        calls["bottom_up"] += 1
        return bottom_up(x)

    def count_td(*args, **kwargs):  # the top-down pass in its inference form (nn.fast_inference)
        calls["top_down"] += 1
        return sample_features(*args, **kwargs)

    model.vae.bottom_up, model.vae.sample_features = count_bu, count_td
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out = method.predict(model, x, PredictOptions(samples=20, sample_batch=6, keep_samples=True))
    assert calls == {"bottom_up": 1, "top_down": 4}
    assert out["mmse"].shape == (2, 1, 32, 32) and out["std"].shape == (2, 1, 32, 32)
    assert out["samples"].shape == (20, 2, 1, 32, 32)
    torch.testing.assert_close(out["samples"].mean(0), out["mmse"], rtol=1e-5, atol=1e-5)
    assert torch.all(out["std"] > 0)


def test_direct_estimator():
    method, model = _tiny()
    out = method.predict(model.eval(), torch.randn(1, 1, 32, 32), PredictOptions(estimator="direct"))
    assert set(out) == {"direct"} and out["direct"].shape == (1, 1, 32, 32)
    method, model = _tiny(direct_denoiser=False)
    with pytest.raises(UserError, match="no direct denoiser"):
        method.predict(model.eval(), torch.randn(1, 1, 32, 32), PredictOptions(estimator="direct"))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"preset": "huge"}, "unknown preset 'huge'"),
        ({"direction": "w"}, "model.direction: must be x, y, z, none or auto, got 'w'"),
        ({"direct_loss": "l3"}, "model.direct_loss: must be mse or l1"),
        ({"n_levels": 3, "latent_channels": [4, 4]}, "latent_channels has 2 entries"),
        ({"colour": 1}, "unknown setting model.colour"),
    ],
)
def test_bad_settings(values, message):
    with pytest.raises(UserError, match=message):
        get_method("cosdd").config_from_dict(values)


def test_direction_y_model_runs():
    method, model = _tiny(direction="y")
    losses = method.training_losses(model, torch.randn(2, 1, 32, 32), torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"])


def test_noise_decoder_field_follows_the_measured_correlation_length():
    from bmz_cosdd.config import DataConfig
    from bmz_cosdd.data.synthetic import make_dataset
    from bmz_cosdd.methods.cosdd.config import ar_field_for
    from bmz_cosdd.nn.ar_decoder import receptive_field

    assert [ar_field_for(length, 16, 5) for length in (0, 1, 2, 4, 8, 10, 16)] == [1, 1, 2, 3, 6, 7, 8]
    method = get_method("cosdd")
    fields = {}
    for blur in (0.7, 3.0):
        data = make_dataset("blobs", "row_correlated", n=4, shape=(128, 128), seed=1, read_sigma=0.005,
                            stripe_sigma=0.2, blur_sigma=blur)
        config = method.config_from_dict({"preset": "tiny", "direction": "x"})
        resolved, notes = method.resolve_config(config, DataConfig(paths=["x"]), [im[None] for im in data.noisy], None)
        from bmz_cosdd.data.noise_correlation import estimate_noise_correlation

        length = estimate_noise_correlation([im[None] for im in data.noisy]).length("x")
        assert resolved.ar_layers == ar_field_for(length, 16, 5)
        assert receptive_field(resolved.ar_layers, 5) >= min(4 * length, 49)
        assert any("noise decoder field (auto)" in note and f"length of {length} px" in note for note in notes)
        fields[blur] = (length, receptive_field(resolved.ar_layers, 5))
    assert fields[3.0][0] > fields[0.7][0] and fields[3.0][1] > fields[0.7][1], fields
    explicit = method.config_from_dict({"preset": "tiny", "direction": "x", "ar_layers": 3})
    assert method.resolve_config(explicit, DataConfig(paths=["x"]), [data.noisy[0][None]], None)[0].ar_layers == 3


def test_context_dropout_hides_the_earlier_pixels_of_some_crops():
    method, model = _tiny(context_dropout=0.5, direct_denoiser=False)
    batch = torch.randn(64, 1, 16, 16)
    seen = []
    first = model.ar_decoder.first
    original = first.forward

    def spy(x, cond, keep=None, *rest):
        seen.append(keep)
        return original(x, cond, keep, *rest)

    first.forward = spy
    method.training_losses(model, batch, torch.Generator().manual_seed(0))
    keep = seen[-1]
    assert keep is not None and keep.shape == (64,) and 0.3 < float(keep.float().mean()) < 0.7
    _, model = _tiny(context_dropout=0.0, direct_denoiser=False)
    first, original = model.ar_decoder.first, model.ar_decoder.first.forward
    first.forward = spy
    method.training_losses(model, batch, torch.Generator().manual_seed(0))
    assert seen[-1] is None
    with pytest.raises(UserError, match="context_dropout"):
        method.config_from_dict({"preset": "tiny", "context_dropout": 1.0})
