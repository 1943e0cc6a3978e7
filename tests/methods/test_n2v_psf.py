"""PSFs for PSF-N2V: Gaussian and measured PSFs, and the convolution layer."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
import torch

from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.n2v.psf import PSFConvolution, gaussian_psf, prepare_psf, read_psf

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _centroid(a: np.ndarray) -> tuple[float, float]:
    a = np.asarray(a, dtype=np.float64)
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / a.sum()), float((xs * a).sum() / a.sum())


def _convolve(kernel: np.ndarray, image: np.ndarray) -> np.ndarray:
    layer = PSFConvolution(kernel.shape[0], 1)
    layer.set_kernel(kernel)
    with torch.no_grad():
        out = layer(torch.from_numpy(image.astype(np.float32))[None, None])
    return out[0, 0].numpy().astype(np.float64)


# ----------------------------------------------------------------------------- gaussian_psf


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_gaussian_psf_is_normalised_odd_and_centred(sigma):
    psf = gaussian_psf(sigma)
    expected = max(3, 2 * int(np.ceil(4 * sigma)) + 1)
    assert psf.shape == (expected, expected)
    assert psf.dtype == np.float64
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    c = expected // 2
    assert np.unravel_index(np.argmax(psf), psf.shape) == (c, c)
    assert np.allclose(psf, psf.T) and np.allclose(psf, psf[::-1, ::-1])


def test_gaussian_psf_explicit_size():
    psf = gaussian_psf(1.0, size=5)
    assert psf.shape == (5, 5)
    assert psf.sum() == pytest.approx(1.0)
    # Isotropic: equal values at equal distances from the centre.
    assert psf[2, 0] == pytest.approx(psf[0, 2]) == pytest.approx(psf[4, 2])


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_gaussian_psf_rejects_bad_sigma(sigma):
    with pytest.raises(UserError, match="sigma"):
        gaussian_psf(sigma)


def test_gaussian_psf_rejects_even_size():
    with pytest.raises(UserError, match="odd"):
        gaussian_psf(1.0, size=8)


def test_prepare_psf_checks_and_normalises():
    k = prepare_psf(np.array([[0.0, 2.0, 0.0], [2.0, 4.0, 2.0], [0.0, 2.0, 0.0]]))
    assert k.sum() == pytest.approx(1.0)
    with pytest.raises(UserError, match="odd"):
        prepare_psf(np.ones((4, 3)))
    with pytest.raises(UserError, match="negative"):
        prepare_psf(np.array([[0.0, -1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]]))


# ----------------------------------------------------------------------------- read_psf


def test_read_psf_tiff_roundtrip(tmp_path):
    psf = gaussian_psf(1.5)
    path = tmp_path / "psf.tif"
    tifffile.imwrite(path, (psf * 1000).astype(np.float32)[None])  # singleton axis is dropped
    got = read_psf(path)
    assert got.dtype == np.float64
    assert got.shape == psf.shape
    assert got.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(got, psf, atol=1e-7)


def test_read_psf_npy(tmp_path):
    path = tmp_path / "psf.npy"
    np.save(path, gaussian_psf(1.0) * 7.0)
    assert np.allclose(read_psf(path), gaussian_psf(1.0))


def test_read_psf_recentres_an_off_centre_psf(tmp_path):
    # A Gaussian centred at (3, 9) in an 13x15 array: far from the array's centre (6, 7).
    ys, xs = np.indices((13, 15))
    raw = np.exp(-0.5 * ((ys - 3) ** 2 + (xs - 9) ** 2) / 1.2**2)
    path = tmp_path / "off.tif"
    tifffile.imwrite(path, raw.astype(np.float32))
    got = read_psf(path)
    assert got.shape[0] == got.shape[1] and got.shape[0] % 2 == 1
    assert got.sum() == pytest.approx(1.0, abs=1e-12)
    c = got.shape[0] // 2
    cy, cx = _centroid(got)
    assert cy == pytest.approx(c, abs=0.05) and cx == pytest.approx(c, abs=0.05)
    assert np.unravel_index(np.argmax(got), got.shape) == (c, c)
    # Nothing was cropped: every value of the input survives (up to normalisation).
    assert got.max() == pytest.approx(raw.max() / raw.sum(), rel=1e-6)


def test_read_psf_recentres_an_even_sized_psf(tmp_path):
    # 6x6 with its mass at (2.2, 3.0): the centroid rounds to pixel (2, 3).
    raw = np.zeros((6, 6))
    raw[2, 3] = 4.0
    raw[3, 3] = 1.0
    raw[2, 2] = raw[2, 4] = 0.5
    path = tmp_path / "even.tiff"
    tifffile.imwrite(path, raw.astype(np.float32))
    got = read_psf(path)
    assert all(s % 2 == 1 for s in got.shape)
    assert got.sum() == pytest.approx(1.0, abs=1e-12)
    c = got.shape[0] // 2
    assert got[c, c] == pytest.approx(4.0 / 6.0)
    assert got[c + 1, c] == pytest.approx(1.0 / 6.0)
    cy, cx = _centroid(got)
    assert abs(cy - c) <= 0.5 and abs(cx - c) <= 0.5


def test_read_psf_clips_negative_values(tmp_path):
    raw = gaussian_psf(1.0)
    raw[0, 0] = -0.01
    path = tmp_path / "neg.npy"
    np.save(path, raw)
    got = read_psf(path)
    assert got.min() >= 0.0 and got[0, 0] == 0.0
    assert got.sum() == pytest.approx(1.0)


def _write(path, array):
    if path.suffix == ".npy":
        np.save(path, array)
    else:
        tifffile.imwrite(path, np.asarray(array, dtype=np.float32))
    return path


def test_read_psf_rejects_3d(tmp_path):
    path = _write(tmp_path / "stack.tif", np.ones((3, 5, 5)))
    with pytest.raises(UserError, match=r"must be 2-D, got shape \(3, 5, 5\)"):
        read_psf(path)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_read_psf_rejects_zero_or_negative_sum(tmp_path, scale):
    path = _write(tmp_path / "zero.tif", scale * np.ones((5, 5)))
    with pytest.raises(UserError, match="sums to zero/negative"):
        read_psf(path)


def test_read_psf_rejects_non_finite(tmp_path):
    raw = gaussian_psf(1.0)
    raw[1, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        read_psf(_write(tmp_path / "nan.npy", raw))


def test_read_psf_missing_and_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="not found") as err:
        read_psf(tmp_path / "missing.tif")
    assert "\n" not in str(err.value)
    bad = tmp_path / "garbage.tif"
    bad.write_bytes(b"not a tiff\nat all")
    with pytest.raises(UserError, match="could not read") as err:
        read_psf(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="must be a"):
        read_psf(tmp_path / "psf.png")


# ----------------------------------------------------------------------------- PSFConvolution


def test_kernel_buffer_starts_as_delta_and_is_persistent():
    layer = PSFConvolution(5, 2)
    assert layer.radius == 2
    assert "kernel" in layer.state_dict()
    k = layer.kernel
    assert k.shape == (1, 1, 5, 5) and k.dtype == torch.float32
    assert float(k.sum()) == 1.0 and float(k[0, 0, 2, 2]) == 1.0
    x = torch.randn(2, 2, 9, 11)
    assert torch.equal(layer(x), x)


def test_delta_gives_psf_centred_at_the_delta():
    psf = gaussian_psf(1.3)
    r = psf.shape[0] // 2
    image = np.zeros((31, 33))
    y0, x0 = 12, 19
    image[y0, x0] = 1.0
    out = _convolve(psf, image)
    assert np.allclose(out[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1], psf, atol=1e-6)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    cy, cx = _centroid(out)
    assert cy == pytest.approx(y0, abs=1e-4) and cx == pytest.approx(x0, abs=1e-4)


def test_asymmetric_kernel_is_a_true_convolution():
    # Mass to the lower right of the centre: a convolution moves the delta's
    # mass there too; a correlation would move it to the upper left.
    kernel = np.zeros((5, 5))
    kernel[2, 2] = 1.0
    kernel[2, 3] = 0.4
    kernel[4, 2] = 0.2
    kernel = prepare_psf(kernel)
    ky, kx = _centroid(kernel)
    image = np.zeros((21, 21))
    y0, x0 = 9, 11
    image[y0, x0] = 1.0
    out = _convolve(kernel, image)
    assert np.allclose(out[y0 - 2 : y0 + 3, x0 - 2 : x0 + 3], kernel, atol=1e-6)
    assert not np.allclose(out[y0 - 2 : y0 + 3, x0 - 2 : x0 + 3], kernel[::-1, ::-1], atol=1e-3)
    cy, cx = _centroid(out)
    assert cy == pytest.approx(y0 + (ky - 2), abs=1e-4)
    assert cx == pytest.approx(x0 + (kx - 2), abs=1e-4)


def test_recentred_psf_does_not_shift_the_image(tmp_path):
    # An asymmetric, off-centre measured PSF: after read_psf, the output's
    # centre of mass is the delta's position plus the rounding offset (< 0.5 px).
    ys, xs = np.indices((10, 12))
    raw = np.exp(-0.5 * ((ys - 3) / 1.0) ** 2 - 0.5 * ((xs - 7) / 2.0) ** 2) * (1.0 + 0.5 * (xs > 7))
    path = tmp_path / "measured.tif"
    tifffile.imwrite(path, raw.astype(np.float32))
    psf = read_psf(path)
    c = psf.shape[0] // 2
    ky, kx = _centroid(psf)
    assert abs(ky - c) <= 0.5 and abs(kx - c) <= 0.5
    image = np.zeros((41, 41))
    image[20, 20] = 1.0
    cy, cx = _centroid(_convolve(psf, image))
    assert cy == pytest.approx(20 + ky - c, abs=1e-4)
    assert cx == pytest.approx(20 + kx - c, abs=1e-4)


@pytest.mark.parametrize("shape", [(16, 20), (6, 7)])
def test_constant_image_stays_constant(shape):
    # (6, 7) is smaller than the 21 x 21 kernel: replicate padding still works.
    layer = PSFConvolution(21, 3)
    layer.set_kernel(gaussian_psf(2.5))
    x = torch.full((2, 3) + shape, 3.5)
    y = layer(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x, atol=1e-5)


def test_channels_are_convolved_independently():
    layer = PSFConvolution(9, 2)
    layer.set_kernel(gaussian_psf(1.0))
    x = torch.zeros(1, 2, 15, 15)
    x[0, 0, 7, 7] = 1.0
    y = layer(x)
    assert float(y[0, 1].abs().max()) == 0.0
    assert float(y[0, 0].sum()) == pytest.approx(1.0, abs=1e-5)


def test_set_kernel_pads_smaller_and_rejects_larger():
    layer = PSFConvolution(9, 1)
    layer.set_kernel(gaussian_psf(0.5, size=3))
    k = layer.kernel[0, 0].numpy()
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(k[3:6, 3:6], gaussian_psf(0.5, size=3), atol=1e-7)
    assert np.argmax(k) == 4 * 9 + 4
    with pytest.raises(UserError, match="larger"):
        layer.set_kernel(gaussian_psf(1.0, size=11))
    with pytest.raises(UserError, match="odd"):
        layer.set_kernel(np.ones((4, 4)))


def test_psf_convolution_scripts_and_matches_eager():
    torch.manual_seed(0)
    layer = PSFConvolution(9, 2)
    kernel = gaussian_psf(1.5, size=9)
    kernel[4, 6] += 0.05  # asymmetric, to catch a lost flip
    layer.set_kernel(kernel)
    scripted = torch.jit.script(layer)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(3, 2, 12, 17)
    want = layer(x)
    assert torch.allclose(scripted(x), want, atol=1e-6)
    assert torch.allclose(loaded(x), want, atol=1e-6)
    assert torch.equal(loaded.kernel, layer.kernel)


def test_a_volume_is_convolved_plane_by_plane_and_scripts() -> None:
    layer = PSFConvolution(5, 2)
    layer.set_kernel(gaussian_psf(1.0, size=5))
    volume = torch.randn(2, 2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    out = layer(volume)
    planes = torch.stack([layer(volume[:, :, z]) for z in range(volume.shape[2])], 2)
    assert out.shape == volume.shape
    torch.testing.assert_close(out, planes)
    torch.testing.assert_close(torch.jit.script(layer)(volume), out)
