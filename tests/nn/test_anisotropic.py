"""Anisotropic 3-D networks: per-level Z pooling (``z_pool``) and Z kernel extent (``z_kernel``)."""

import io

import pytest
import torch
import torch.nn.functional as F

from bmz_cosdd.nn.blocks import Downsample, GatedResBlock, Reach, Upsample, check_multiples, check_spatial_size
from bmz_cosdd.nn.divnoising_vae import DivNoisingVAE
from bmz_cosdd.nn.ladder_vae import LadderVAE
from bmz_cosdd.nn.sampling_model import build_sampling_model
from bmz_cosdd.nn.unet import UNet, _MaxBlurPool, unet_receptive_field

# torch.jit is deprecated upstream in favour of torch.export; the BioImage Model Zoo export still uses it.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

UNET = dict(in_channels=1, out_channels=1, depth=2, features=4, spatial_dims=3)
LADDER = dict(in_channels=1, n_levels=3, latent_channels=2, features=4, spatial_dims=3)
DIVN = dict(in_channels=1, depth=2, features=4, latent=2, spatial_dims=3)
DECODER = dict(features=4, out_channels=1, layers=2, hidden=4, spatial_dims=3)


def _roundtrip(module):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _reach(fn, shape, axis, step):
    """Largest distance along ``axis`` from an output plane to an input plane with nonzero gradient.

    Maximised over one period of the pooling grid around the centre (the field depends on the position).
    """
    torch.manual_seed(1)
    x = torch.randn(*shape, requires_grad=True)
    y = fn(x)
    centre = shape[axis] // 2
    reach = 0
    for p in range(centre, centre + step):
        (grad,) = torch.autograd.grad(y.select(axis, p).sum(), x, retain_graph=True)
        others = [d for d in range(grad.dim()) if d != axis]
        hits = grad.abs().sum(dim=others).nonzero()
        assert len(hits) > 0
        reach = max(reach, int((hits - p).abs().max()))
    return reach


def _measured_fields(fn, net):
    """Gradient-measured half-width per axis (Z, Y, X); the measured axis is long enough for no border to cut it."""
    steps, fields = net.size_steps, net.receptive_fields
    out = []
    for axis in range(3):
        shape = [1, 1] + list(steps)
        shape[2 + axis] = (2 * fields[axis] + 3 * steps[axis]) // steps[axis] * steps[axis]
        out.append(_reach(fn, shape, 2 + axis, steps[axis]))
    return tuple(out)


def _vae_features(vae):
    def fn(x):
        g = torch.Generator().manual_seed(2)
        eps = [torch.randn(x.shape[0], *s, generator=g) for s in vae.latent_shapes(list(x.shape[2:]))]
        return vae.top_down(vae.bottom_up(x), eps, compute_kl=False)[0]

    return fn


# --- blocks ---------------------------------------------------------------------------------------


def test_down_and_upsample_keep_z_without_pool_z():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, 6)
    down = Downsample(3, 4, spatial_dims=3, pool_z=False)
    assert down.conv.stride == (1, 2, 2) and down.conv.kernel_size == (3, 3, 3)
    assert down(x).shape == (2, 4, 5, 4, 3)
    flat = Downsample(3, 4, spatial_dims=3, pool_z=False, z_kernel=1)
    assert flat.conv.kernel_size == (1, 3, 3) and flat(x).shape == (2, 4, 5, 4, 3)
    # halving Z keeps the extent 3 along it, whatever z_kernel
    assert Downsample(3, 4, spatial_dims=3, z_kernel=1).conv.kernel_size == (3, 3, 3)

    up = Upsample(3, 4, spatial_dims=3, pool_z=False)
    got = up(x)
    assert got.shape == (2, 4, 5, 16, 12)
    # every plane is upsampled on its own, bilinearly: Z is reproduced exactly
    planes = F.interpolate(x.transpose(1, 2).reshape(10, 3, 8, 6), scale_factor=2, mode="bilinear")
    want = up.conv(planes.reshape(2, 5, 3, 16, 12).transpose(1, 2))
    torch.testing.assert_close(got, want)
    # 2-D ignores pool_z
    assert Downsample(3, 4, pool_z=False)(x[:, :, 0]).shape == (2, 4, 4, 3)
    assert Upsample(3, 4, pool_z=False)(x[:, :, 0]).shape == (2, 4, 16, 12)


def test_gated_res_block_z_kernel():
    block = GatedResBlock(3, spatial_dims=3, z_kernel=1).eval()
    assert block.conv1.kernel_size == (1, 3, 3) and block.conv1.padding == (0, 1, 1)
    x = torch.randn(1, 3, 4, 6, 6)
    out = block(x)
    # no mixing along Z: each plane depends only on itself
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    torch.testing.assert_close(block(x2)[:, :, 1:], out[:, :, 1:])
    assert GatedResBlock(3, kernel_size=5, spatial_dims=3, z_kernel=3).conv2.kernel_size == (3, 5, 5)
    with pytest.raises(ValueError, match="z_kernel"):
        GatedResBlock(3, spatial_dims=3, z_kernel=2)


def test_max_blur_pool_without_z_is_the_2d_pool_per_plane():
    x = torch.randn(1, 2, 3, 8, 6)
    got = _MaxBlurPool(2, spatial_dims=3, pool_z=False)(x)
    pool2d = _MaxBlurPool(2, spatial_dims=2)
    want = torch.stack([pool2d(x[:, :, z]) for z in range(3)], dim=2)
    assert got.shape == (1, 2, 3, 4, 3)
    torch.testing.assert_close(got, want)


def test_size_checks_per_axis():
    check_multiples([3, 8, 8], [1, 4, 4])
    check_spatial_size(torch.zeros(1, 1, 3, 8, 8), [1, 4, 4], 3)
    check_spatial_size(torch.zeros(1, 1, 8, 8), 4, 2)  # one int for every axis
    with pytest.raises(ValueError, match=r"input Z, Y and X must be multiples of 2, 4 and 4, got 3 x 8 x 8"):
        check_spatial_size(torch.zeros(1, 1, 3, 8, 8), [2, 4, 4], 3)
    with pytest.raises(ValueError, match=r"input Y and X must be multiples of 4, got 8 x 6"):
        check_spatial_size(torch.zeros(1, 1, 8, 6), [4, 4], 2)


def test_reach_arithmetic():
    f = Reach().conv(3).down().conv(5).up()
    assert f == Reach(-1 - 1 - 4 - 2, 1 + 1 + 4 + 1, 1)
    with pytest.raises(ValueError):
        Reach().merge(Reach().down())


# --- U-Net ----------------------------------------------------------------------------------------

UNET_SETTINGS = [
    ({}, (4, 4, 4)),
    (dict(z_pool=[False, False], z_kernel=[3, 3, 3]), (1, 4, 4)),
    (dict(z_pool=[True, False]), (2, 4, 4)),
    (dict(z_kernel=[3, 1, 1]), (4, 4, 4)),
    (dict(z_pool=[False, True], z_kernel=[1, 3, 3], blur_pool=True, top_skip=False), (2, 4, 4)),
]


@pytest.mark.parametrize("kw,steps", UNET_SETTINGS)
def test_unet_receptive_fields_are_exact_per_axis(kw, steps):
    torch.manual_seed(0)
    net = UNet(**{**UNET, **kw}).eval()
    assert net.size_steps == steps and net.size_step == 4
    assert net.receptive_fields[1:] == (net.receptive_field,) * 2
    assert _measured_fields(net, net) == net.receptive_fields

    # perturbing every plane farther than the Z field from the centre leaves the centre plane unchanged
    r, step = net.receptive_fields[0], net.size_steps[0]
    depth = (2 * r + 3 * step) // step * step
    x = torch.randn(1, 1, depth, 4, 4)
    with torch.no_grad():
        y = net(x)
        x2 = x.clone()
        x2[0, 0, : depth // 2 - r] += 10.0
        x2[0, 0, depth // 2 + r + 1 :] += 10.0
        assert torch.equal(net(x2)[0, 0, depth // 2], y[0, 0, depth // 2])


def test_unet_thin_stacks():
    torch.manual_seed(0)
    net = UNet(**UNET, z_pool=[False, False], z_kernel=[1, 1, 3]).eval()
    assert net.size_steps == (1, 4, 4)
    for z in (1, 2):
        assert net(torch.randn(1, 1, z, 8, 12)).shape == (1, 1, z, 8, 12)
    assert UNet(**UNET, z_pool=[True, False])(torch.randn(1, 1, 2, 8, 8)).shape == (1, 1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"multiples of 2, 4 and 4, got 3 x 8 x 8"):
        UNet(**UNET, z_pool=[True, False])(torch.randn(1, 1, 3, 8, 8))
    assert unet_receptive_field(2, pool=[False, False], kernels=[1, 1, 1]) == 0


@pytest.mark.parametrize(
    "kw",
    [
        dict(z_pool=[False, True, True]),  # depth entries
        dict(z_kernel=[3, 3]),  # depth + 1 entries
        dict(z_kernel=[3, 2, 3]),  # odd
    ],
)
def test_unet_rejects_bad_z_settings_in_2d_and_3d(kw):
    for dims in (2, 3):
        with pytest.raises(ValueError, match="z_pool|z_kernel"):
            UNet(1, 1, depth=2, features=2, spatial_dims=dims, **kw)


# --- VAEs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,steps",
    [
        ({}, (4, 4, 4)),
        (dict(z_pool=[False] * 3, z_kernel=[1, 3, 3]), (1, 4, 4)),
        (dict(z_pool=[False, False, True]), (2, 4, 4)),
        (dict(z_pool=[True, True, False], z_kernel=[3, 1, 1], deactivated=[1], blocks_per_level=2), (2, 4, 4)),
    ],
)
def test_ladder_vae_anisotropic(kw, steps):
    torch.manual_seed(0)
    vae = LadderVAE(**{**LADDER, **kw}).eval()
    assert vae.size_steps == steps and vae.size_step == 4
    measured = _measured_fields(_vae_features(vae), vae)
    assert all(m <= r for m, r in zip(measured, vae.receptive_fields)), (measured, vae.receptive_fields)
    # away from borders the bound is reached
    assert measured == vae.receptive_fields


def test_ladder_vae_thin_stack():
    torch.manual_seed(0)
    vae = LadderVAE(**LADDER, z_pool=[False] * 3, z_kernel=[1, 1, 3]).eval()
    assert vae.stem.kernel_size == (1, 5, 5)
    assert vae.bu_levels[0].down.conv.kernel_size == (1, 3, 3)
    assert vae.latent_shapes([2, 16, 12]) == [[2, 2, 8, 6], [2, 2, 8, 6], [2, 2, 4, 3]]
    x = torch.randn(2, 1, 2, 16, 12)
    features, kl = vae(x)
    assert features.shape == (2, 4, 2, 16, 12) and [k.shape for k in kl] == [(2,)] * 3
    prior = vae.sample_prior(1, [2, 8, 4], generator=torch.Generator().manual_seed(0))
    assert prior.shape == (1, 4, 2, 8, 4)
    # a Z extent of 3 keeps the stem 2 wider along Z too
    assert LadderVAE(**LADDER, z_kernel=[3, 1, 1]).stem.kernel_size == (5, 5, 5)


@pytest.mark.parametrize(
    "kw,steps",
    [
        ({}, (4, 4, 4)),
        (dict(z_pool=[False, False], z_kernel=[1, 3, 3]), (1, 4, 4)),
        (dict(z_pool=[False, True]), (2, 4, 4)),
    ],
)
def test_divnoising_vae_anisotropic(kw, steps):
    torch.manual_seed(0)
    vae = DivNoisingVAE(**{**DIVN, **kw}).eval()
    assert vae.size_steps == steps and vae.size_step == 4
    measured = _measured_fields(_vae_features(vae), vae)
    assert all(m <= r for m, r in zip(measured, vae.receptive_fields)), (measured, vae.receptive_fields)
    assert measured == vae.receptive_fields


def test_divnoising_vae_thin_stack():
    torch.manual_seed(0)
    vae = DivNoisingVAE(**DIVN, z_pool=[False, False], z_kernel=[1, 1, 1]).eval()
    assert vae.latent_shapes([4, 16, 12]) == [[2, 4, 4, 3]]
    features, kl = vae(torch.randn(2, 1, 4, 16, 12))
    assert features.shape == (2, 4, 4, 16, 12) and kl[0].shape == (2,)
    assert vae.receptive_fields[0] == 0
    with pytest.raises(ValueError, match="z_kernel must have 3 entries"):
        DivNoisingVAE(**DIVN, z_kernel=[1, 1])


# --- TorchScript ----------------------------------------------------------------------------------


def test_anisotropic_unets_script():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 2, 16, 16)
    for kw in (dict(z_pool=[False, False], z_kernel=[1, 3, 3]), dict(z_pool=[False, True], blur_pool=True)):
        net = UNet(**UNET, **kw).eval()
        xx = x if net.size_steps[0] <= 2 else x.repeat(1, 1, 2, 1, 1)
        loaded = _roundtrip(net)
        assert loaded.size_steps == net.size_steps and loaded.receptive_fields == net.receptive_fields
        torch.testing.assert_close(loaded(xx), net(xx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kw", [
    ("ladder", dict(LADDER, z_pool=[False, False, True], z_kernel=[1, 3, 3])),
    ("divnoising", dict(DIVN, z_pool=[False, True], z_kernel=[1, 3, 3])),
])
def test_anisotropic_vaes_script(name, kw):
    torch.manual_seed(0)
    vae = (LadderVAE if name == "ladder" else DivNoisingVAE)(**kw).eval()
    loaded = _roundtrip(vae)
    x = torch.randn(1, 1, 2, 16, 16)
    shapes = vae.latent_shapes([2, 16, 16])
    assert loaded.latent_shapes([2, 16, 16]) == shapes
    eps = [torch.randn(1, *s, generator=torch.Generator().manual_seed(0)) for s in shapes]
    f_eager, kl_eager = vae.top_down(vae.bottom_up(x), eps)
    f_script, kl_script = loaded.top_down(loaded.bottom_up(x), eps)
    torch.testing.assert_close(f_script, f_eager, rtol=1e-5, atol=1e-5)
    for a, b in zip(kl_script, kl_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name,vae_kwargs", [
    ("ladder", dict(LADDER, z_pool=[False, False, True], z_kernel=[1, 3, 3])),
    ("divnoising", dict(DIVN, z_pool=[False, False], z_kernel=[1, 1, 3])),
])
def test_sampling_model_carries_z_settings(name, vae_kwargs):
    torch.manual_seed(0)
    model = build_sampling_model(name, vae_kwargs, DECODER, n_samples=3, sample_batch=2, seed=1,
                                 outputs=["mmse", "std"]).eval()
    assert model.sampler.vae.z_pool == vae_kwargs["z_pool"] and model.sampler.vae.z_kernel == vae_kwargs["z_kernel"]
    x = torch.randn(1, 1, 2, 8, 8)
    with torch.no_grad():
        eager = model(x)
        script = _roundtrip(model)(x)
    assert eager[0].shape == (1, 1, 2, 8, 8)
    for a, b in zip(script, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- defaults unchanged ---------------------------------------------------------------------------


def _same_modules(make_default, make_explicit, x, vae=False):
    torch.manual_seed(0)
    default = make_default().eval()
    torch.manual_seed(0)
    explicit = make_explicit().eval()
    assert repr(default) == repr(explicit)
    assert [(k, v.shape) for k, v in default.state_dict().items()] == [
        (k, v.shape) for k, v in explicit.state_dict().items()
    ]
    for a, b in zip(default.state_dict().values(), explicit.state_dict().values()):
        assert torch.equal(a, b)
    assert default.size_steps == explicit.size_steps and default.receptive_fields == explicit.receptive_fields
    with torch.no_grad():
        if vae:
            eps = [torch.randn(1, *s, generator=torch.Generator().manual_seed(3))
                   for s in default.latent_shapes(list(x.shape[2:]))]
            assert torch.equal(default.top_down(default.bottom_up(x), eps)[0],
                               explicit.top_down(explicit.bottom_up(x), eps)[0])
        else:
            assert torch.equal(default(x), explicit(x))


@pytest.mark.parametrize("dims", [2, 3])
def test_isotropic_settings_build_the_default_networks(dims):
    x = torch.randn((1, 1) + (8,) * dims)
    for kw in ({}, dict(blur_pool=True, top_skip=False, kernel_size=5)):
        k = kw.get("kernel_size", 3)
        _same_modules(lambda: UNet(1, 1, depth=2, features=4, spatial_dims=dims, **kw),
                      lambda: UNet(1, 1, depth=2, features=4, spatial_dims=dims, z_pool=[True] * 2, z_kernel=[k] * 3,
                                   **kw), x)
    _same_modules(lambda: LadderVAE(1, 3, 2, 4, deactivated=[1], spatial_dims=dims),
                  lambda: LadderVAE(1, 3, 2, 4, deactivated=[1], spatial_dims=dims, z_pool=[True] * 3,
                                    z_kernel=[3] * 3), x, vae=True)
    _same_modules(lambda: DivNoisingVAE(1, 2, 4, 2, spatial_dims=dims),
                  lambda: DivNoisingVAE(1, 2, 4, 2, spatial_dims=dims, z_pool=[True] * 2, z_kernel=[0] * 3),
                  x, vae=True)
    # 2-D networks have no Z: the settings are checked, then ignored
    if dims == 2:
        _same_modules(lambda: UNet(1, 1, depth=2, features=4),
                      lambda: UNet(1, 1, depth=2, features=4, z_pool=[False] * 2, z_kernel=[1] * 3), x)


def test_default_fields_and_steps():
    for dims in (2, 3):
        net = UNet(1, 1, depth=3, features=2, spatial_dims=dims)
        assert net.size_steps == (8,) * dims and net.receptive_fields == (net.receptive_field,) * dims
        assert net.z_pool == [True] * 3 and net.z_kernel == [0] * 4
        vae = LadderVAE(1, 4, 2, 4, spatial_dims=dims)
        assert vae.size_steps == (vae.size_step,) * dims and len(set(vae.receptive_fields)) == 1
