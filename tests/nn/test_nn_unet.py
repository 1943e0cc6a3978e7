import pytest
import torch

from bmz_cosdd.nn.unet import UNet, unet_receptive_field


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("blur_pool,top_skip", [(False, True), (True, False), (True, True), (False, False)])
def test_shapes(depth, blur_pool, top_skip):
    net = UNet(2, 3, depth=depth, features=4, blur_pool=blur_pool, top_skip=top_skip)
    assert net.size_step == 2**depth
    x = torch.randn(2, 2, 8 * 2**depth, 4 * 2**depth)
    assert net(x).shape == (2, 3, 8 * 2**depth, 4 * 2**depth)


def test_residual_adds_input():
    net = UNet(2, 2, depth=2, features=4, residual=True).eval()
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.zeros_(net.out.bias)
    x = torch.randn(1, 2, 16, 16)
    assert torch.equal(net(x), x)
    with pytest.raises(ValueError):
        UNet(1, 2, residual=True)


def test_rejects_sizes_not_multiple_of_size_step():
    net = UNet(1, 1, depth=2, features=4)
    with pytest.raises(ValueError):
        net(torch.randn(1, 1, 16, 18))


def test_no_top_skip_and_blur_pool_change_the_network():
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in UNet(1, 1, blur_pool=True).modules())
    plain, no_skip = UNet(1, 1, depth=1, features=4), UNet(1, 1, depth=1, features=4, top_skip=False)
    assert plain.ups[0].conv.net[0].in_channels == 8
    assert no_skip.ups[0].conv.net[0].in_channels == 4


def test_receptive_field_grows_with_depth_and_kernel():
    values = [unet_receptive_field(d) for d in (1, 2, 3, 4)]
    assert values == sorted(values) and len(set(values)) == 4
    assert unet_receptive_field(2, kernel_size=5) > unet_receptive_field(2, kernel_size=3)


@pytest.mark.parametrize(
    "depth,kernel_size,blur_pool,top_skip",
    [(1, 3, False, True), (2, 3, True, False), (2, 5, False, True), (3, 3, False, True), (3, 3, True, False)],
)
def test_receptive_field_by_gradient_and_perturbation(depth, kernel_size, blur_pool, top_skip):
    torch.manual_seed(0)
    net = UNet(1, 2, depth=depth, features=8, kernel_size=kernel_size, blur_pool=blur_pool, top_skip=top_skip)
    net.eval()  # batch norm in training mode would couple all pixels
    r, step = net.receptive_field, net.size_step
    size = (2 * r + 3 * step) // step * step
    x = torch.randn(1, 1, size, size, requires_grad=True)
    y = net(x)
    centre = size // 2
    reach = 0
    # the pooling grid makes the field depend on the position: try one period of it
    for off in range(step):
        p = centre + off
        (grad,) = torch.autograd.grad(y[0, :, p, p].sum(), x, retain_graph=True)
        nz = grad[0, 0].nonzero()
        assert len(nz) > 0
        reach = max(reach, int((nz - p).abs().max()))
    assert reach == r  # the stated half-width is exact, not just a bound

    # perturbing everything farther than r from the centre leaves the centre output unchanged
    with torch.no_grad():
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        outside = ((yy - centre).abs() > r) | ((xx - centre).abs() > r)
        x2 = x.detach().clone()
        x2[0, 0][outside] += 10.0 * torch.randn(int(outside.sum()))
        assert torch.equal(net(x2)[..., centre, centre], y.detach()[..., centre, centre])
