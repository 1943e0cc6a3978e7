"""The shared networks in 3-D (``spatial_dims=3``, (B, C, Z, Y, X)); 2-D unchanged."""

import hashlib
import io

import pytest
import torch
import torch.nn.functional as F

from bmz_cosdd.nn.sampling_model import build_sampling_model
from bmz_cosdd.methods.cosdd.architecture import build_direct_model
from bmz_cosdd.nn.blocks import Downsample, GatedResBlock, Upsample
from bmz_cosdd.nn.decoders import SignalDecoder
from bmz_cosdd.nn.divnoising_vae import DivNoisingVAE
from bmz_cosdd.nn.ladder_vae import LadderVAE, gaussian_kl
from bmz_cosdd.nn.unet import UNet, _MaxBlurPool

# torch.jit is deprecated upstream in favour of torch.export; the BioImage Model Zoo export still uses it.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VAE3 = dict(in_channels=1, n_levels=3, latent_channels=[2, 3, 4], features=4, spatial_dims=3)
DECODER3 = dict(features=4, out_channels=1, layers=2, hidden=4, spatial_dims=3)


def _roundtrip(module):
    """Script (unless already scripted), save and load."""
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


@pytest.mark.parametrize("spatial_dims", [1, 4])
@pytest.mark.parametrize(
    "build",
    [
        lambda d: GatedResBlock(4, spatial_dims=d),
        lambda d: Downsample(4, 4, spatial_dims=d),
        lambda d: Upsample(4, 4, spatial_dims=d),
        lambda d: UNet(1, 1, depth=1, features=2, spatial_dims=d),
        lambda d: LadderVAE(1, n_levels=1, latent_channels=2, features=2, spatial_dims=d),
        lambda d: DivNoisingVAE(1, depth=1, features=2, latent=2, spatial_dims=d),
        lambda d: SignalDecoder(2, 1, layers=1, spatial_dims=d),
        lambda d: build_direct_model(1, 1, 2, spatial_dims=d),
    ],
)
def test_spatial_dims_other_than_2_or_3_are_refused(build, spatial_dims):
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        build(spatial_dims)


def test_block_shapes_3d():
    x = torch.randn(2, 4, 6, 8, 10)
    block = GatedResBlock(4, spatial_dims=3).eval()
    assert block.spatial_dims == 3
    assert block(x).shape == x.shape
    assert Downsample(4, 6, spatial_dims=3)(x).shape == (2, 6, 3, 4, 5)
    assert Upsample(4, 6, spatial_dims=3)(x).shape == (2, 6, 12, 16, 20)
    assert SignalDecoder(4, 2, layers=2, hidden=3, spatial_dims=3)(x).shape == (2, 2, 6, 8, 10)


def test_upsample_3d_is_trilinear_then_1x1_conv():
    torch.manual_seed(0)
    up = Upsample(3, 2, spatial_dims=3)
    x = torch.randn(1, 3, 3, 4, 5)
    want = up.conv(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))
    torch.testing.assert_close(up(x), want)


def test_max_blur_pool_3d_is_max_pool_then_separable_blur():
    x = torch.randn(1, 2, 6, 8, 4)
    got = _MaxBlurPool(2, spatial_dims=3)(x)
    h = F.max_pool3d(F.pad(x, [0, 1] * 3, mode="replicate"), 2, stride=1)
    h = F.pad(h, [1, 1] * 3, mode="replicate")
    k = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    for axis in (2, 3, 4):  # one strided 1-D blur per axis
        shape = [1, 1, 1, 1, 1]
        shape[axis] = 3
        stride = [1, 1, 1]
        stride[axis - 2] = 2
        h = F.conv3d(h, k.reshape(shape).expand([2] + shape[1:]), stride=stride, groups=2)
    assert got.shape == (1, 2, 3, 4, 2)
    torch.testing.assert_close(got, h)


@pytest.mark.parametrize("blur_pool,top_skip", [(False, True), (True, False)])
def test_unet_3d_shapes(blur_pool, top_skip):
    net = UNet(2, 3, depth=2, features=4, blur_pool=blur_pool, top_skip=top_skip, spatial_dims=3)
    assert net.spatial_dims == 3 and net.size_step == 4
    assert any(isinstance(m, torch.nn.MaxPool3d) for m in net.modules()) != blur_pool
    assert net(torch.randn(1, 2, 8, 12, 16)).shape == (1, 3, 8, 12, 16)
    direct = build_direct_model(2, 2, 4, spatial_dims=3)
    assert direct.spatial_dims == 3 and direct(torch.randn(1, 2, 4, 8, 4)).shape == (1, 2, 4, 8, 4)


def test_size_checks_name_every_axis():
    with pytest.raises(ValueError, match=r"input Z, Y and X must be multiples of 4, got 8 x 8 x 6"):
        UNet(1, 1, depth=2, features=2, spatial_dims=3)(torch.randn(1, 1, 8, 8, 6))
    with pytest.raises(ValueError, match=r"input Z, Y and X must be multiples of 2, got 3 x 4 x 4"):
        DivNoisingVAE(1, depth=1, features=2, latent=2, spatial_dims=3)(torch.randn(1, 1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expected a \(B, C, Z, Y, X\) input, got 4 dimensions"):
        LadderVAE(**VAE3)(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"input Y and X must be multiples of 4, got 16 x 18"):  # 2-D as before
        UNet(1, 1, depth=2, features=2)(torch.randn(1, 1, 16, 18))


def test_ladder_vae_3d():
    torch.manual_seed(0)
    vae = LadderVAE(**VAE3).eval()
    assert vae.spatial_dims == 3 and vae.size_step == 4
    assert vae.top.prior_mean.shape == (1, 4, 1, 1, 1)
    shapes = vae.latent_shapes([8, 16, 12])
    assert shapes == [[2, 4, 8, 6], [3, 4, 8, 6], [4, 2, 4, 3]]
    with pytest.raises(ValueError):
        vae.latent_shapes([16, 12])
    x = torch.randn(2, 1, 8, 16, 12)
    features, kl = vae(x)
    assert features.shape == (2, 4, 8, 16, 12)
    assert [k.shape for k in kl] == [(2,)] * 3
    # The top level's KL sums over (C, Z, Y, X).
    bu = vae.bottom_up(x)
    mu, logvar = vae.top.posterior(bu[-1]).split(4, dim=1)
    p_mu, p_lv = vae.top.prior(mu)
    want = gaussian_kl(mu, logvar.clamp(-20.0, 10.0), p_mu, p_lv).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(vae.top_down(bu)[1][-1], want)
    prior = vae.sample_prior(2, [4, 8, 4], generator=torch.Generator().manual_seed(0))
    assert prior.shape == (2, 4, 4, 8, 4) and torch.isfinite(prior).all()
    with pytest.raises(ValueError, match="Z, Y and X"):
        vae.sample_prior(1, [4, 6, 4])


def test_divnoising_vae_3d():
    torch.manual_seed(0)
    vae = DivNoisingVAE(1, depth=2, features=4, latent=3, dropout=0.1, spatial_dims=3).eval()
    assert any(isinstance(m, torch.nn.Dropout3d) for m in vae.modules())
    assert vae.latent_shapes([8, 16, 12]) == [[3, 2, 4, 3]]
    x = torch.randn(2, 1, 8, 16, 12)
    features, kl = vae(x)
    assert features.shape == (2, 4, 8, 16, 12) and kl[0].shape == (2,)
    mu, logvar = vae.posterior_params(vae.bottom_up(x)[0])
    want = 0.5 * (mu * mu + logvar.exp() - logvar - 1.0).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(vae.top_down(vae.bottom_up(x), use_mean=[True])[1][0], want)


def test_unet_3d_scripted_equals_eager():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 16)
    for kw in ({}, {"blur_pool": True, "top_skip": False, "residual": True}):
        net = UNet(1, 1, depth=2, features=4, spatial_dims=3, **kw).eval()
        scripted = torch.jit.script(net)
        graph = str(scripted.inlined_graph)
        assert "upsample_trilinear3d" in graph and "upsample_bilinear2d" not in graph
        loaded = _roundtrip(scripted)
        assert loaded.spatial_dims == 3
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-5)
    # A 2-D graph holds only the 2-D branch: torch 2.0's libtorch (deepImageJ) sees what it saw before.
    graph = str(torch.jit.script(UNet(1, 1, depth=1, features=2, blur_pool=True).eval()).inlined_graph)
    assert "upsample_bilinear2d" in graph and "3d" not in graph


def test_divnoising_vae_3d_scripted_equals_eager():
    torch.manual_seed(0)
    vae = DivNoisingVAE(1, depth=2, features=4, latent=2, spatial_dims=3).eval()
    scripted = _roundtrip(vae)
    x = torch.randn(1, 1, 16, 16, 16)
    assert scripted.latent_shapes([16, 16, 16]) == vae.latent_shapes([16, 16, 16])
    eps = [torch.randn(1, *s, generator=torch.Generator().manual_seed(0)) for s in vae.latent_shapes([16, 16, 16])]
    f_eager, kl_eager = vae.top_down(vae.bottom_up(x), eps)
    f_script, kl_script = scripted.top_down(scripted.bottom_up(x), eps)
    torch.testing.assert_close(f_script, f_eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl_script[0], kl_eager[0], rtol=1e-5, atol=1e-4)


def _sampling_model(outputs, **kw):
    torch.manual_seed(0)
    args = dict(n_samples=3, sample_batch=2, seed=1, outputs=outputs)
    args.update(kw)
    return build_sampling_model("ladder", VAE3, DECODER3, **args).eval()


def test_sampling_model_3d_scripted_equals_eager():
    model = _sampling_model(["mmse"])
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        eager = model(x)
        script = _roundtrip(model)(x)
    assert eager.shape == (1, 1, 16, 16, 16)
    torch.testing.assert_close(script, eager, rtol=1e-5, atol=1e-6)


def test_sampling_model_3d_samples_and_draw_order():
    x = torch.randn(2, 1, 4, 8, 8)
    with torch.no_grad():
        mmse, std, samples = _sampling_model(["mmse", "std", "samples"])(x)
        one_at_a_time = _sampling_model(["mmse"], sample_batch=1)(x)
    assert samples.shape == (2, 3, 1, 4, 8, 8)  # (B, N, C, Z, Y, X)
    torch.testing.assert_close(mmse, samples.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, samples.std(1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(one_at_a_time, mmse, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="spatial_dims differ"):
        build_sampling_model("ladder", VAE3, {**DECODER3, "spatial_dims": 2}, 1, 1, 0, ["mmse"])


@pytest.mark.parametrize("blur_pool,top_skip", [(False, True), (True, False)])
def test_unet_3d_receptive_field_along_z(blur_pool, top_skip):
    torch.manual_seed(0)
    net = UNet(1, 1, depth=2, features=4, blur_pool=blur_pool, top_skip=top_skip, spatial_dims=3).eval()
    r, step = net.receptive_field, net.size_step
    depth = (2 * r + 3 * step) // step * step
    x = torch.randn(1, 1, depth, step, step, requires_grad=True)
    y = net(x)
    centre = depth // 2
    reach = 0
    for p in range(centre, centre + step):  # one period of the pooling grid
        (grad,) = torch.autograd.grad(y[0, 0, p].sum(), x, retain_graph=True)
        z = grad[0, 0].abs().sum(dim=(1, 2)).nonzero()
        reach = max(reach, int((z - p).abs().max()))
    assert reach == r  # along Z the stated half-width is reached, not just a bound

    with torch.no_grad():
        for dz in (-r - 1, r + 1):
            x2 = x.detach().clone()
            x2[0, 0, centre + dz] += 10.0
            assert torch.equal(net(x2)[0, 0, centre], y.detach()[0, 0, centre])


def _state_digest(module):
    listing = "\n".join(f"{k} {tuple(v.shape)}" for k, v in module.state_dict().items())
    return hashlib.sha256(listing.encode()).hexdigest()[:16], len(module.state_dict())


def test_2d_models_unchanged():
    """State-dict names and shapes, and outputs, of 2-D models as before 3-D support (same seed)."""
    torch.manual_seed(0)
    models = {
        "unet": UNet(1, 1, depth=2, features=4),
        "unet_n2v2": UNet(2, 2, depth=2, features=4, blur_pool=True, top_skip=False, residual=True, batch_norm=False),
        "ladder": LadderVAE(1, n_levels=3, latent_channels=[2, 3, 4], features=4, deactivated=[1]),
        "divnoising": DivNoisingVAE(1, depth=2, features=4, latent=2),
        "signal": SignalDecoder(4, 1, layers=2, hidden=4),
    }
    # (state-dict digest, number of entries, sum of |output|, KL per level), recorded before the change
    expected = {
        "unet": (("830d271858f33849", 66), 4.98333, []),
        "unet_n2v2": (("ec388c987061e6e5", 26), 449.3, []),
        "ladder": (("d92d19d7fbc7cf10", 126), 437.264, [23.0567, 0.0, 0.7707]),
        "divnoising": (("08c2a48d54609eb8", 64), 1.49829, [0.7243]),
        "signal": (("68e1dd7c4bc2d5a7", 4), 45.5055, []),
    }
    for name, module in models.items():
        module.eval()
        assert module.spatial_dims == 2
        digest, out_sum, kls = expected[name]
        assert _state_digest(module) == digest, (name, list(module.state_dict()))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, {"signal": 4, "unet_n2v2": 2}.get(name, 1), 16, 16, generator=g)
        with torch.no_grad():
            if name in ("ladder", "divnoising"):
                eps = [torch.randn(1, *s, generator=g) for s in module.latent_shapes([16, 16])]
                y, kl = module.top_down(module.bottom_up(x), eps)
                assert [float(k.sum()) for k in kl] == pytest.approx(kls, rel=1e-4, abs=1e-4)
            else:
                y = module(x)
        assert float(y.abs().sum()) == pytest.approx(out_sum, rel=1e-4)


def test_2d_sampler_draws_unchanged():
    """Same seed, same 2-D posterior samples as before 3-D support."""
    torch.manual_seed(0)
    model = build_sampling_model(
        "ladder", dict(in_channels=1, n_levels=3, latent_channels=2, features=4),
        dict(features=4, out_channels=1, layers=2, hidden=4), n_samples=3, sample_batch=2, seed=5,
        outputs=["mmse", "std", "samples"],
    ).eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mmse, std, samples = model(x)
    assert samples.shape == (2, 3, 1, 16, 16)
    assert float(mmse.sum()) == pytest.approx(-38.068119, rel=1e-5)
    assert float(std.sum()) == pytest.approx(14.144164, rel=1e-5)
    assert float(samples[1, 2, 0, 3, 5]) == pytest.approx(-0.010979758, rel=1e-4)
