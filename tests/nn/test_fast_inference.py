"""The networks' inference form (``infer``, ``sample_features``) equals their training form in evaluation mode."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bmz_cosdd.nn.blocks import GatedResBlock, Upsample
from bmz_cosdd.nn.decoders import SignalDecoder
from bmz_cosdd.nn.divnoising_vae import DivNoisingVAE
from bmz_cosdd.nn.fast_inference import channels_last, draw_samples, fold_batch_norm, mish_
from bmz_cosdd.nn.ladder_vae import LadderVAE
from bmz_cosdd.nn.posterior import PosteriorSampler

#: Max abs difference allowed between the two forms, in normalised units (the issue's bound).
TOLERANCE = 1e-5


def _trained_looking(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` in evaluation mode with batch-norm statistics and affine parameters away from their defaults."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(c, generator=generator))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=generator))
            m.weight.data.copy_(1.0 + 0.3 * torch.randn(c, generator=generator))
            m.bias.data.copy_(0.3 * torch.randn(c, generator=generator))
    return module.eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def test_fold_batch_norm_is_conv_then_batch_norm():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    norm = _trained_looking(nn.BatchNorm2d(5))
    x = torch.randn(2, 3, 8, 8)
    weight, bias = fold_batch_norm(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.weight,
                                   norm.bias, norm.eps)
    with torch.no_grad():
        assert _max_diff(F.conv2d(x, weight, bias, padding=1), norm(conv(x))) < 1e-5


def test_mish_matches_torch_over_the_whole_line():
    x = torch.cat([torch.linspace(-120.0, 120.0, 100_001), torch.tensor([0.0, 1e-30, -1e-30, 1e4, -1e4])])
    expected = F.mish(x.double())
    got = mish_(x.clone()).double()
    assert torch.all((got - expected).abs() <= 4e-7 * expected.abs() + 1e-36)  # 1e-36: float32 denormals
    assert torch.isinf(mish_(torch.tensor([float("inf")]))).all()


def test_channels_last_is_canonical_and_idempotent():
    for shape in [(1, 3, 1, 1), (2, 3, 4, 5), (1, 3, 2, 4, 5)]:
        x = torch.randn(shape)
        y = channels_last(x)
        assert torch.equal(x, y)
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        assert y.is_contiguous(memory_format=fmt)
        assert channels_last(y) is y


def test_draw_samples_orders_rows_sample_major():
    mu, logvar = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    eps = torch.randn(6, 3, 4, 4)
    z = draw_samples(mu, logvar, eps, False)
    torch.testing.assert_close(z, mu.repeat(3, 1, 1, 1) + torch.exp(0.5 * logvar).repeat(3, 1, 1, 1) * eps)
    torch.testing.assert_close(draw_samples(mu, logvar, eps, True), mu.repeat(3, 1, 1, 1))


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("dims", [2, 3])
def test_gated_block_and_upsample(batch_norm, dims):
    block = _trained_looking(GatedResBlock(8, batch_norm=batch_norm, spatial_dims=dims, z_kernel=1 if dims == 3 else 0))
    up = Upsample(8, 6, spatial_dims=dims, pool_z=False).eval()
    x = torch.randn([2, 8] + [4] * (dims - 2) + [8, 12])
    with torch.no_grad():
        assert _max_diff(block.infer(channels_last(x)), block(x)) < TOLERANCE
        assert _max_diff(up.infer(channels_last(x)), up(x)) < TOLERANCE
        block.train()
        torch.testing.assert_close(block.infer(x), block(x))  # training mode: the training form itself


def _ladder(dims: int, **kw) -> LadderVAE:
    if dims == 3:
        kw.update(z_pool=[False, True, True, False], z_kernel=[1, 3, 3, 1])
    return _trained_looking(LadderVAE(1, 4, [3, 4, 4, 5], 16, spatial_dims=dims, **kw))


LADDERS = {
    "2d": (lambda: _ladder(2), (2, 1, 32, 48)),
    "3d-anisotropic": (lambda: _ladder(3), (1, 1, 6, 16, 24)),
    "2d-deactivated": (lambda: _ladder(2, deactivated=[0, 1]), (1, 1, 32, 32)),
    "2d-two-blocks": (lambda: _ladder(2, blocks_per_level=2, downsample_every=1), (1, 1, 32, 32)),
    "2d-full-resolution-level": (lambda: _ladder(2, downsample=[False, True, True, True]), (1, 1, 16, 24)),
}


def _draws(vae: nn.Module, k: int, x: torch.Tensor, generator: torch.Generator) -> list:
    return [torch.randn([k * x.shape[0]] + shape, generator=generator) for shape in vae.latent_shapes(list(x.shape[2:]))]


@pytest.mark.parametrize("name", list(LADDERS))
def test_ladder_sample_features_equal_top_down(name):
    build, shape = LADDERS[name]
    vae = build()
    decoder = _trained_looking(SignalDecoder(16, 1, layers=3, hidden=12, spatial_dims=len(shape) - 2))
    x = torch.randn(shape)
    k = 3
    eps = _draws(vae, k, x, torch.Generator().manual_seed(1))
    use_mean = [vae.deactivated[level] for level in range(vae.n_levels)]
    with torch.no_grad():
        bu = vae.bottom_up(x)
        repeated = [b.repeat([k] + [1] * (b.dim() - 1)) for b in bu]
        slow, _ = vae.top_down(repeated, eps, use_mean, False)
        fast = vae.sample_features(vae.prepare_sampling(bu), eps, use_mean)
        assert fast.shape == slow.shape
        assert _max_diff(fast, slow) < TOLERANCE
        assert _max_diff(decoder.infer(fast), decoder(slow)) < TOLERANCE


@pytest.mark.parametrize("dims", [2, 3])
def test_divnoising_sample_features_equal_top_down(dims):
    kw = dict(z_pool=[False, True], z_kernel=[1, 3, 3]) if dims == 3 else {}
    vae = _trained_looking(DivNoisingVAE(1, depth=2, features=8, latent=6, spatial_dims=dims, **kw))
    x = torch.randn([2, 1] + [4] * (dims - 2) + [16, 24])
    k = 2
    eps = _draws(vae, k, x, torch.Generator().manual_seed(2))
    with torch.no_grad():
        bu = vae.bottom_up(x)
        slow, _ = vae.top_down([bu[0].repeat([k] + [1] * (bu[0].dim() - 1))], eps, None, False)
        fast = vae.sample_features(vae.prepare_sampling(bu), eps)
        assert _max_diff(fast, slow) < TOLERANCE


@pytest.mark.parametrize("name", ["2d", "3d-anisotropic"])
def test_sampler_fast_equals_training_form_eager_and_scripted(name):
    build, shape = LADDERS[name]
    vae = build()
    decoder = _trained_looking(SignalDecoder(16, 1, layers=3, hidden=12, spatial_dims=len(shape) - 2))
    x = torch.randn(shape)
    kw = dict(n_samples=5, seed=3, keep_samples=True)
    slow = PosteriorSampler(vae, decoder, sample_batch=2, fast=False, **kw).reduce(x)
    fast = PosteriorSampler(vae, decoder, sample_batch=3, **kw).reduce(x)
    scripted = torch.jit.script(PosteriorSampler(vae, decoder, sample_batch=5, **kw))(x)
    for a, b, c in zip(slow, fast, scripted):
        assert _max_diff(a, b) < TOLERANCE
        assert _max_diff(a, c) < TOLERANCE
    assert fast[2].is_contiguous()


def test_sampler_builds_no_graph_and_trains_as_before():
    vae, shape = LADDERS["2d"][0](), LADDERS["2d"][1]
    decoder = SignalDecoder(16, 1, layers=2, hidden=8)
    x = torch.randn(shape, requires_grad=True)
    mmse, std, _ = PosteriorSampler(vae, decoder, n_samples=2).reduce(x)
    assert not mmse.requires_grad and not std.requires_grad
    # In training mode (batch statistics) the sampler runs the training form.
    vae.train()
    a = PosteriorSampler(vae, decoder, n_samples=2, fast=False).reduce(x)
    b = PosteriorSampler(vae, decoder, n_samples=2).reduce(x)
    torch.testing.assert_close(a[0], b[0])
