import pytest
import torch
from torch import nn

from bmz_cosdd.nn.posterior import PosteriorSampler
from bmz_cosdd.nn.divnoising_vae import DivNoisingVAE


def _vae(**kw):
    torch.manual_seed(0)
    args = {"in_channels": 1, "depth": 2, "features": 8, "latent": 4}
    args.update(kw)
    return DivNoisingVAE(**args).eval()


def _eps(vae, batch, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=g) for shape in vae.latent_shapes([height, width])]


def test_attributes_and_latent_shapes():
    vae = DivNoisingVAE(2, depth=3, features=8, latent=5)
    assert vae.n_levels == 1
    assert vae.latent_channels == [5]
    assert vae.features == 8
    assert vae.size_step == 8
    assert vae.latent_shapes([32, 48]) == [[5, 4, 6]]


def test_parameter_count_of_the_paper_config():
    vae = DivNoisingVAE(1, depth=2, features=32, latent=64)
    n = sum(p.numel() for p in vae.parameters())
    assert 150_000 < n < 500_000


def test_shapes_and_kl():
    vae = _vae(in_channels=2)
    x = torch.randn(3, 2, 32, 48)
    bu = vae.bottom_up(x)
    assert len(bu) == 1 and bu[0].shape[-2:] == (8, 12)
    with torch.no_grad():
        features, kl = vae(x)
    assert features.shape == (3, 8, 32, 48)
    assert len(kl) == 1 and kl[0].shape == (3,)
    assert torch.all(kl[0] >= 0)
    with torch.no_grad():
        features, kl = vae.top_down(bu, compute_kl=False)
    assert features.shape == (3, 8, 32, 48) and kl == []


def test_kl_matches_closed_form_for_hand_set_posterior():
    vae = _vae()
    mu = torch.tensor([0.5, -1.0, 0.0, 2.0])
    logvar = torch.tensor([0.0, -1.5, 0.7, 30.0])  # the last one is clamped to 10
    with torch.no_grad():
        vae.posterior.weight.zero_()
        vae.posterior.bias.copy_(torch.cat([mu, logvar]))
        _, kl = vae(torch.randn(2, 1, 16, 24))
    sd = torch.exp(0.5 * logvar.clamp(-20.0, 10.0)).double()
    per_pixel = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu.double(), sd), torch.distributions.Normal(0.0, 1.0)
    ).sum()
    expected = per_pixel * 4 * 6
    torch.testing.assert_close(kl[0].double(), expected.expand(2), rtol=1e-5, atol=1e-4)


def test_eps_makes_it_deterministic_and_use_mean_equals_zero_eps():
    vae = _vae()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        bu = vae.bottom_up(x)
        eps = _eps(vae, 2, 16, 16)
        a, _ = vae.top_down(bu, eps)
        b, _ = vae.top_down(bu, [e.clone() for e in eps])
        c, _ = vae.top_down(bu, _eps(vae, 2, 16, 16, seed=1))
        m, _ = vae.top_down(bu, use_mean=[True])
        z, _ = vae.top_down(bu, [torch.zeros_like(eps[0])])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(m, z)
    with pytest.raises(ValueError):
        vae.top_down(bu, [torch.zeros(2, 4, 3, 3)])


def test_input_size_must_be_a_multiple_of_size_step():
    vae = _vae()
    with pytest.raises(ValueError, match="multiples of 4"):
        vae.bottom_up(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError):
        vae(torch.zeros(1, 1, 32, 18))


def test_trains_with_dropout_and_without_batch_norm():
    vae = _vae(batch_norm=False, dropout=0.2).train()
    features, kl = vae(torch.randn(2, 1, 16, 16))
    (features.square().mean() + kl[0].mean()).backward()
    assert vae.posterior.weight.grad is not None and vae.encoder[0].conv.weight.grad is not None


def test_scripted_equals_eager(tmp_path):
    vae = _vae()
    scripted = torch.jit.script(vae)
    path = tmp_path / "vae.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 1, 16, 24)
    eps = _eps(vae, 2, 16, 24)
    with torch.no_grad():
        fe, ke = vae.top_down(vae.bottom_up(x), eps)
        fs, ks = loaded.top_down(loaded.bottom_up(x), eps)
    torch.testing.assert_close(fe, fs)
    torch.testing.assert_close(ke[0], ks[0])
    assert loaded.latent_shapes([16, 24]) == vae.latent_shapes([16, 24])


def test_works_with_the_posterior_sampler():
    vae = _vae()
    torch.manual_seed(1)
    head = nn.Conv2d(vae.features, 1, 1)
    x = torch.randn(2, 1, 16, 24)

    def sampler(seed):
        return PosteriorSampler(vae, head, n_samples=4, sample_batch=3, seed=seed, keep_samples=True).eval()

    with torch.no_grad():
        a = sampler(5)(x)
        b = sampler(5)(x)
        c = sampler(6)(x)
        s = torch.jit.script(sampler(5))(x)
    assert a[0].shape == (2, 1, 16, 24) and a[2].shape == (4, 2, 1, 16, 24)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.all(a[1] > 0)
    for e, t in zip(a, s):
        torch.testing.assert_close(e, t, rtol=1e-5, atol=1e-6)
