import numpy as np
import pytest
import torch

from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.inference.tiling import extend_to_step, predict_tiled, tile_layout
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.nn.unet import UNet


def test_tiles_cover_every_pixel_once_with_odd_sizes():
    image = np.random.default_rng(0).normal(size=(2, 77, 131)).astype(np.float32)
    seen = []

    def fn(t):
        seen.append(tuple(t.shape))
        return {"out": t.clone()}

    out = predict_tiled(fn, image, tile=48, halo=8, step=8)
    np.testing.assert_array_equal(out["out"][0], image)
    assert len(seen) > 4 and all(s[-1] % 8 == 0 and s[-2] % 8 == 0 for s in seen)


def test_unet_tiled_equals_whole_image_to_float_tolerance():
    torch.manual_seed(0)
    net = UNet(1, 1, depth=2, features=8).eval()
    image = np.random.default_rng(1).normal(size=(1, 150, 170)).astype(np.float32)
    halo = net.receptive_field

    def fn(t):
        with torch.no_grad():
            return {"out": net(t)}

    whole = predict_tiled(fn, image, tile=4096, halo=halo, step=net.size_step)["out"]
    tiled = predict_tiled(fn, image, tile=64 + 2 * 48, halo=halo, step=net.size_step)["out"]
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=1e-5)


def test_image_that_fits_in_a_tile_is_one_forward_pass_equal_to_the_tiled_result():
    torch.manual_seed(0)
    net = UNet(1, 1, depth=2, features=8).eval()
    step, halo = net.size_step, net.receptive_field
    image = np.random.default_rng(2).normal(size=(1, 122, 97)).astype(np.float32)
    seen = []

    def fn(t):
        seen.append(tuple(t.shape))
        with torch.no_grad():
            return {"out": net(t)}

    whole = predict_tiled(fn, image, tile=128, halo=halo, step=step)["out"]
    # one pass on the image extended to the size step only (no halo): the bare network's output, cropped
    assert seen == [(1, 1, 124, 100)] and tile_layout(122, 128, halo, step) == (124, 1)
    extended = torch.from_numpy(extend_to_step(image, (step, step)))[None]
    with torch.no_grad():
        bare = net(extended)[..., :122, :97].numpy()
    np.testing.assert_array_equal(whole, bare)
    seen.clear()
    tiled = predict_tiled(fn, image, tile=2 * halo + 2 * step, halo=halo, step=step)["out"]
    assert len(seen) > 4 and len(set(seen)) == 1  # many tiles, all of one shape
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=1e-5)


def test_extend_to_step_mirrors_the_far_end_only():
    image = np.arange(10, dtype=np.float32).reshape(1, 2, 5)
    out = extend_to_step(image, (4, 8))
    assert out.shape == (1, 4, 8)
    np.testing.assert_array_equal(out[0, 0], [0, 1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(out[0, :, 0], [0, 5, 0, 5])
    fits = image[..., :4]
    assert extend_to_step(fits, (2, 4)) is fits  # nothing to extend: no copy


def test_direct_denoiser_tiled_equals_whole(trained_run, noisy_stack):
    import tifffile

    trained = load_run(trained_run)
    image = np.tile(tifffile.imread(noisy_stack)[0], (2, 3))[None]  # 96 x 144
    options = PredictOptions(estimator="direct")
    whole = predict_image(trained, image, options, tile=1024)["direct"]
    tiled = predict_image(trained, image, options, tile=48)["direct"]
    np.testing.assert_allclose(tiled, whole, atol=1e-4 * np.abs(whole).max())


def test_sampling_tiled_matches_whole_within_monte_carlo_noise(trained_run, noisy_stack):
    import tifffile

    trained = load_run(trained_run)
    image = np.tile(tifffile.imread(noisy_stack)[0], (2, 2))[None]  # 96 x 96
    options = PredictOptions(samples=64, sample_batch=16)
    whole = predict_image(trained, image, options, tile=1024, seed=1)
    tiled = predict_image(trained, image, options, tile=48, seed=2)
    # The MMSE of 64 samples has standard error std / 8 per pixel.
    se = whole["std"] / np.sqrt(64)
    diff = np.abs(tiled["mmse"] - whole["mmse"])
    assert np.mean(diff < 4 * np.sqrt(2) * se + 1e-6) > 0.99
    # and the posterior spread itself agrees
    np.testing.assert_allclose(tiled["std"].mean(), whole["std"].mean(), rtol=0.1)


@pytest.mark.parametrize("tile", [48, 1024])
def test_same_seed_same_prediction(trained_run, noisy_stack, tile):
    import tifffile

    trained = load_run(trained_run)
    image = tifffile.imread(noisy_stack)[1][None]
    options = PredictOptions(samples=4, sample_batch=3)
    a = predict_image(trained, image, options, tile=tile, seed=5)
    b = predict_image(trained, image, options, tile=tile, seed=5)
    np.testing.assert_array_equal(a["mmse"], b["mmse"])
