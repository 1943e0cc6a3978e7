"""Every main module must compile with torch.jit.script and match eager mode."""

import io

import pytest
import torch

from bmz_cosdd.nn.ar_decoder import AutoregressiveDecoder
from bmz_cosdd.nn.blocks import GatedResBlock
from bmz_cosdd.nn.ladder_vae import LadderVAE
from bmz_cosdd.nn.unet import UNet

# torch.jit is deprecated upstream in favour of torch.export; the BioImage Model Zoo export still uses it.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _roundtrip(module):
    scripted = torch.jit.script(module)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def test_gated_res_block():
    torch.manual_seed(0)
    block = GatedResBlock(6, dropout=0.2).eval()
    x = torch.randn(2, 6, 10, 12)
    assert torch.allclose(_roundtrip(block)(x), block(x), atol=1e-6)


def test_autoregressive_decoder():
    torch.manual_seed(0)
    for direction in ("x", "y"):
        dec = AutoregressiveDecoder(2, 5, direction=direction, hidden=8)
        scripted = _roundtrip(dec)
        x, cond = torch.randn(2, 2, 6, 20), torch.randn(2, 5, 6, 20)
        for got, want in zip(scripted(x, cond), dec(x, cond)):
            assert torch.allclose(got, want, atol=1e-6)
        assert torch.allclose(scripted.nll(x, cond), dec.nll(x, cond), atol=1e-5)


def test_ladder_vae_with_explicit_eps():
    torch.manual_seed(0)
    vae = LadderVAE(1, n_levels=4, latent_channels=[2, 3, 4, 5], features=8).eval()
    scripted = _roundtrip(vae)
    x = torch.randn(2, 1, 32, 48)
    g = torch.Generator().manual_seed(0)
    eps = [torch.randn(2, *s, generator=g) for s in vae.latent_shapes([32, 48])]
    bu_eager, bu_script = vae.bottom_up(x), scripted.bottom_up(x)
    for a, b in zip(bu_eager, bu_script):
        assert torch.allclose(a, b, atol=1e-6)
    f_eager, kl_eager = vae.top_down(bu_eager, eps)
    f_script, kl_script = scripted.top_down(bu_script, eps)
    assert torch.allclose(f_eager, f_script, atol=1e-5)
    for a, b in zip(kl_eager, kl_script):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    means = [True, False, True, False]
    eager_means = vae.top_down(bu_eager, eps, means)[0]
    assert torch.allclose(eager_means, scripted.top_down(bu_script, eps, means)[0], atol=1e-5)
    assert scripted.latent_shapes([32, 48]) == vae.latent_shapes([32, 48])
    assert scripted(x)[0].shape == (2, 8, 32, 48)


def test_unet():
    torch.manual_seed(0)
    for kw in ({}, {"blur_pool": True, "top_skip": False, "residual": True}):
        net = UNet(1, 1, depth=2, features=4, **kw).eval()
        x = torch.randn(1, 1, 24, 32)
        assert torch.allclose(_roundtrip(net)(x), net(x), atol=1e-5)
