import pytest
import torch

from bmz_cosdd.nn.ar_decoder import AutoregressiveDecoder, receptive_field
from bmz_cosdd.nn.mixture import mixture_nll, mixture_sample


def _decoder(direction, image_channels=2, cond_channels=3, **kw):
    torch.manual_seed(0)
    return AutoregressiveDecoder(image_channels, cond_channels, direction=direction, hidden=16, **kw)


def test_receptive_field_helper():
    assert receptive_field(8, 5) == 49  # the default: "at least 40 px" per the paper
    assert receptive_field(1, 5) == 5
    assert receptive_field(2, 3) == 3 + 2 * 2
    assert receptive_field(3, 3) == 3 + 2 * 2 + 2 * 1
    dec = AutoregressiveDecoder(1, 4)
    assert dec.receptive_field == receptive_field(8, 5) >= 40


def _to_x_frame(t, direction):
    """Move the noise direction onto the last axis."""
    return t if direction == "x" else t.transpose(-1, -2)


@pytest.mark.parametrize("direction", ["x", "y"])
def test_autoregressive_dependencies_by_gradient(direction):
    dec = _decoder(direction)
    rf = dec.receptive_field
    along, across = 64, 5  # length along the noise direction and across it
    shape = (1, 2, across, along) if direction == "x" else (1, 2, along, across)
    x = torch.randn(shape, requires_grad=True)
    cond = torch.randn(1, 3, *shape[2:], requires_grad=True)
    logits, means, scales = dec(x, cond)
    assert logits.shape == (1, 2, 3, *shape[2:])

    row, pos = 2, 60  # pixel j: index `row` across, `pos` along the direction
    out = sum(_to_x_frame(p, direction)[..., row, pos].sum() for p in (logits, means, scales))
    out.backward()
    gx = _to_x_frame(x.grad, direction).abs().sum(dim=(0, 1))  # (across, along), summed over channels
    gc = _to_x_frame(cond.grad, direction).abs().sum(dim=(0, 1))

    allowed = torch.zeros_like(gx, dtype=torch.bool)
    allowed[row, pos - rf : pos] = True
    assert torch.all(gx[~allowed] == 0), "pixel itself, later pixels, other rows/columns or too far must not enter"
    assert gx[row, pos] == 0
    assert torch.all(gx[row, pos - rf : pos] > 0), "every earlier pixel within the receptive field enters"
    # both image channels of earlier pixels enter
    per_channel = _to_x_frame(x.grad, direction)[0].abs()[:, row, pos - rf : pos].sum(dim=1)
    assert torch.all(per_channel > 0)
    # conditioning at the same pixel enters, none from other rows/columns or later pixels
    assert gc[row, pos] > 0
    cond_allowed = torch.zeros_like(gc, dtype=torch.bool)
    cond_allowed[row, : pos + 1] = True
    assert torch.all(gc[~cond_allowed] == 0)


@pytest.mark.parametrize("direction", ["x", "y"])
def test_nll_and_scale_floor(direction):
    dec = _decoder(direction, min_scale=1e-2)
    x = torch.randn(2, 2, 6, 10) * 100.0
    cond = torch.randn(2, 3, 6, 10) * 100.0
    logits, means, scales = dec(x, cond)
    assert torch.all(scales >= 1e-2)
    nll = dec.nll(x, cond)
    assert nll.shape == (2, 2, 6, 10)
    assert torch.isfinite(nll).all()
    assert torch.allclose(nll, mixture_nll(x, logits, means, scales))


def test_invalid_arguments():
    with pytest.raises(ValueError):
        AutoregressiveDecoder(1, 4, direction="z")
    with pytest.raises(ValueError):
        AutoregressiveDecoder(1, 4, min_scale=0.0)


def _naive_sample(dec, cond, generator):
    """Reference ancestral sampling on the full row (direction x): one full forward per position."""
    b, _, y, w = cond.shape
    x = cond.new_zeros(b, dec.image_channels, y, w)
    with torch.no_grad():
        for i in range(w):
            logits, means, scales = dec(x, cond)
            x[..., i] = mixture_sample(logits[..., i], means[..., i], scales[..., i], generator)
    return x


def test_sample_matches_full_image_ancestral_sampling():
    dec = _decoder("x", n_layers=3, kernel_size=3)  # receptive field 9 < width, so windowing is exercised
    cond = torch.randn(2, 3, 3, 24)
    fast = dec.sample(cond, torch.Generator().manual_seed(5))
    slow = _naive_sample(dec, cond, torch.Generator().manual_seed(5))
    assert fast.shape == (2, 2, 3, 24)
    assert torch.allclose(fast, slow, atol=1e-5)
    again = dec.sample(cond, torch.Generator().manual_seed(5))
    assert torch.equal(fast, again)


def test_sample_direction_y_is_transposed_x():
    dec_y = _decoder("y", n_layers=3, kernel_size=3)
    dec_x = _decoder("x", n_layers=3, kernel_size=3)
    dec_x.load_state_dict(dec_y.state_dict())
    cond = torch.randn(1, 3, 20, 4)
    ys = dec_y.sample(cond, torch.Generator().manual_seed(1))
    xs = dec_x.sample(cond.transpose(-1, -2), torch.Generator().manual_seed(1))
    assert ys.shape == (1, 2, 20, 4)
    assert torch.equal(ys, xs.transpose(-1, -2))


def test_direction_none_sees_no_pixel():
    dec = _decoder("none")
    assert dec.receptive_field == 0
    x = torch.randn(1, 2, 6, 20, requires_grad=True)
    cond = torch.randn(1, 3, 6, 20)
    logits, means, scales = dec(x, cond)
    (logits.sum() + means.sum() + scales.sum()).backward()
    assert x.grad is None  # x never entered the graph
    nll = dec.nll(x.detach(), cond)
    assert nll.shape == (1, 2, 6, 20) and torch.isfinite(nll).all()
    g = torch.Generator().manual_seed(0)
    sample = dec.sample(cond, generator=g)
    assert sample.shape == (1, 2, 6, 20) and torch.isfinite(sample).all()
    scripted = torch.jit.script(dec)
    torch.testing.assert_close(scripted(x.detach(), cond)[1], means.detach())


@pytest.mark.parametrize("direction", ["z", "y", "x"])
def test_3d_receptive_field_along_the_direction_only(direction):
    torch.manual_seed(0)
    dec = AutoregressiveDecoder(2, 3, direction=direction, hidden=8, n_layers=3, kernel_size=3, spatial_dims=3)
    rf = dec.receptive_field
    assert rf == receptive_field(3, 3)
    axis = {"z": 2, "y": 3, "x": 4}[direction]
    shape = [1, 2, 5, 6, 7]
    shape[axis] = 24  # long along the noise direction
    x = torch.randn(shape, requires_grad=True)
    cond = torch.randn([1, 3] + shape[2:], requires_grad=True)
    logits, means, scales = dec(x, cond)
    assert logits.shape == (1, 2, 3, *shape[2:])
    voxel = [2, 3, 3]
    voxel[axis - 2] = 20
    out = sum(p[(0, slice(None), slice(None), *voxel)].sum() for p in (logits, means, scales))
    out.backward()
    gx = x.grad.abs().sum(dim=(0, 1))
    allowed = torch.zeros_like(gx, dtype=torch.bool)
    line = list(voxel)
    line[axis - 2] = slice(20 - rf, 20)
    allowed[tuple(line)] = True
    assert torch.all(gx[~allowed] == 0), "only earlier voxels of the same line along the direction may enter"
    assert torch.all(gx[tuple(line)] > 0) and gx[tuple(voxel)] == 0
    gc = cond.grad.abs().sum(dim=(0, 1))
    assert gc[tuple(voxel)] > 0
    # sampling along the direction and TorchScript work in 3-D too
    sample = dec.sample(cond.detach(), generator=torch.Generator().manual_seed(0))
    assert sample.shape == x.shape and torch.isfinite(sample).all()
    torch.testing.assert_close(torch.jit.script(dec)(x.detach(), cond.detach())[1], means.detach())


def test_direction_z_needs_3d():
    with pytest.raises(ValueError, match="direction"):
        AutoregressiveDecoder(1, 4, direction="z")
