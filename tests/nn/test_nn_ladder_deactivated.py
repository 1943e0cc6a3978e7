"""HDN_3-6: deactivated ladder levels take no bottom-up information."""

from __future__ import annotations

import pytest
import torch

from bmz_cosdd.nn.ladder_vae import LadderVAE


def _vae(deactivated=(0, 1)):
    torch.manual_seed(0)
    return LadderVAE(1, n_levels=4, latent_channels=4, features=8, deactivated=deactivated).eval()


def _eps(vae, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, *shape, generator=g) for shape in vae.latent_shapes([16, 16])]


def test_deactivated_levels_receive_no_gradient_from_the_bottom_up_path():
    vae = _vae()
    x = torch.randn(2, 1, 16, 16)
    bu = [b.detach().requires_grad_() for b in vae.bottom_up(x)]
    features, kl = vae.top_down(bu, _eps(vae))
    (features.square().sum() + torch.stack(kl).sum()).backward()
    for level in (0, 1):
        assert bu[level].grad is None or float(bu[level].grad.abs().max()) == 0.0
    for level in (2, 3):
        assert bu[level].grad is not None and float(bu[level].grad.abs().max()) > 0.0
    # ... and the same layers of an ordinary ladder do get gradient
    plain = _vae(deactivated=())
    bu = [b.detach().requires_grad_() for b in plain.bottom_up(x)]
    features, _ = plain.top_down(bu, _eps(plain))
    features.square().sum().backward()
    assert float(bu[0].grad.abs().max()) > 0.0


def test_deactivated_levels_add_no_kl_and_ignore_their_bottom_up_features():
    vae = _vae()
    x = torch.randn(2, 1, 16, 16)
    bu = vae.bottom_up(x)
    eps = _eps(vae)
    features, kl = vae.top_down(bu, eps)
    assert float(kl[0].abs().max()) == 0.0 and float(kl[1].abs().max()) == 0.0
    assert float(kl[2].min()) > 0.0
    changed = [b + 5.0 * torch.randn_like(b) if level < 2 else b for level, b in enumerate(bu)]
    again, _ = vae.top_down(changed, eps)
    torch.testing.assert_close(again, features)
    assert vae.deactivated == [True, True, False, False]


def test_mean_at_deactivated_levels_makes_them_deterministic_and_scripts():
    vae = _vae()
    x = torch.randn(2, 1, 16, 16)
    bu = vae.bottom_up(x)
    use_mean = [True, True, False, False]
    a, _ = vae.top_down(bu, _eps(vae, 1), use_mean, False)
    eps = _eps(vae, 1)
    eps[0], eps[1] = torch.randn_like(eps[0]), torch.randn_like(eps[1])
    b, _ = vae.top_down(bu, eps, use_mean, False)
    torch.testing.assert_close(a, b)
    scripted = torch.jit.script(vae)
    c, _ = scripted.top_down(scripted.bottom_up(x), _eps(vae, 1), use_mean, False)
    torch.testing.assert_close(c, a)


@pytest.mark.parametrize("bad", [(3,), (-1,), (0, 5)])
def test_the_top_cannot_be_deactivated(bad):
    with pytest.raises(ValueError, match="deactivated"):
        LadderVAE(1, n_levels=4, latent_channels=4, features=8, deactivated=bad)
