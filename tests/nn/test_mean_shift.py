import pytest
import torch

from bmz_cosdd.nn.mean_shift import map_estimate, window_starts


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_window_starts_cover_the_axis():
    assert window_starts(23, 10, 3).tolist() == [0, 7, 13]
    assert window_starts(17, 10, 3).tolist() == [0, 7]
    assert window_starts(10, 10, 3).tolist() == [0]
    assert window_starts(4, 10, 3).tolist() == [0]


def test_bimodal_samples_give_the_major_mode():
    g = _gen()
    n, shape = 100, (2, 24, 31)
    minor = torch.rand(n, generator=g) < 0.3
    a, b = torch.full(shape, -1.0), torch.full(shape, 2.0)
    a[0, :, :5] = 0.5  # a mode that is not constant across channels and pixels
    samples = torch.where(minor[:, None, None, None], b, a) + 0.1 * torch.randn(n, *shape, generator=g)
    estimate = map_estimate(samples)
    mean = samples.mean(0)
    assert estimate.shape == shape and estimate.dtype == torch.float32
    assert (estimate - a).abs().max() < 0.08
    assert (mean - a).abs().min() > 0.3  # the mean lies between the modes (0.3 of the gap)


def test_unimodal_samples_give_about_the_mean():
    g = _gen(1)
    samples = 3.0 + 2.0 * torch.randn(60, 1, 13, 9, generator=g)
    estimate = map_estimate(samples)
    assert (estimate - samples.mean(0)).abs().max() < 0.3  # posterior std is 2


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 7), (1, 11, 23), (3, 10, 10), (1, 1, 25)])
def test_output_shape_for_small_and_odd_images(shape):
    samples = torch.randn(8, *shape, generator=_gen(2))
    estimate = map_estimate(samples)
    assert estimate.shape == shape and torch.isfinite(estimate).all()


def test_identical_samples_are_returned():
    image = torch.randn(1, 2, 17, 12, generator=_gen(3))
    estimate = map_estimate(image.expand(5, -1, -1, -1).clone())
    torch.testing.assert_close(estimate, image[0])


def test_stitching_leaves_no_seams():
    g = _gen(4)
    offsets = torch.randn(20, 1, 1, 1, generator=g)
    ramp = torch.linspace(0, 1, 29)[None, None, :] * torch.ones(1, 23, 1)
    constant = map_estimate(offsets.expand(20, 1, 23, 29).clone())
    assert constant.std() < 1e-6
    # Shift equivariance: the same offset mode in every window, so ramp + constant.
    ramped = map_estimate(ramp + offsets)
    torch.testing.assert_close(ramped - ramp, torch.full_like(ramp, ramped[0, 0, 0].item() - ramp[0, 0, 0].item()),
                               rtol=0, atol=1e-5)


def test_result_is_independent_of_units():
    samples = torch.randn(30, 1, 14, 14, generator=_gen(5))
    samples[:10] += 3.0
    a = map_estimate(samples)
    b = map_estimate(1000.0 * samples + 7.0)
    torch.testing.assert_close(b, 1000.0 * a + 7.0, rtol=1e-5, atol=1e-3)


def test_invalid_arguments():
    samples = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError):
        map_estimate(samples[0])
    with pytest.raises(ValueError):
        map_estimate(samples, window=5, overlap=5)
    with pytest.raises(ValueError):
        map_estimate(samples, bandwidth_start=0.5, bandwidth_stop=1.0)
    with pytest.raises(ValueError):
        map_estimate(samples, shrink=1.0)
