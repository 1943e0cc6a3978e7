"""The data layer with volumes (spatial_dims=3), the anisotropy check, and the 2-D behaviour it must keep."""

import hashlib

import numpy as np
import pytest
import tifffile
import torch

from bmz_cosdd.config import DataConfig, from_dict
from bmz_cosdd.data.axes import restore_axes, spatial_axes, to_samples, to_samples_cyx
from bmz_cosdd.data.crops import RandomCrops, fixed_val_crops
from bmz_cosdd.data.io import Image, load_images, read_array
from bmz_cosdd.data.normalisation import (
    compute_stats,
    denormalise,
    denormalise_tensor,
    normalise,
    normalise_tensor,
)
from bmz_cosdd.data.physical_sizes import check_spatial_axes, file_axes, read_physical_sizes
from bmz_cosdd.data.splits import split_images
from bmz_cosdd.errors import UserError

SIZES = {"S": 2, "T": 3, "C": 2, "Z": 4, "Y": 5, "X": 6}


def _noise(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# --- axes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axes", ["ZYX", "TZCYX", "SZYX", "ZYXC", "XZY", "STCZYX"])
def test_to_samples_3d_round_trip(axes):
    shape = tuple(SIZES[a] for a in axes)
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    samples = to_samples(x, axes, spatial_dims=3)
    n = int(np.prod([SIZES[a] for a in "ST" if a in axes]))
    assert samples.shape == (n, SIZES["C"] if "C" in axes else 1, SIZES["Z"], SIZES["Y"], SIZES["X"])
    np.testing.assert_array_equal(restore_axes(samples, axes, shape), x)


def test_to_samples_3d_order_s_then_t():
    x = np.zeros((3, 2, 4, 5, 6))  # T, S, Z, Y, X
    for t in range(3):
        for s in range(2):
            x[t, s] = 10 * s + t
    samples = to_samples(x, "TSZYX", 3)
    assert samples[:, 0, 0, 0, 0].tolist() == [10 * s + t for s in range(2) for t in range(3)]
    np.testing.assert_array_equal(samples[4, 0], x[1, 1])


def test_to_samples_2d_is_the_old_view():
    x = _noise((2, 3, 5, 6))
    np.testing.assert_array_equal(to_samples(x, "ZCYX"), to_samples_cyx(x, "ZCYX"))
    assert to_samples(x, "ZCYX").shape == (2, 3, 5, 6)
    assert spatial_axes(2) == "YX" and spatial_axes(3) == "ZYX"
    with pytest.raises(ValueError):
        spatial_axes(1)


def test_to_samples_3d_needs_z():
    with pytest.raises(UserError) as info:
        to_samples(np.zeros((2, 5, 6)), "SYX", 3, source="cells.tif")
    assert str(info.value) == "cells.tif: axes 'SYX' have no Z axis; --spatial-dims 3 needs volumes (e.g. ZYX)"


def test_restore_axes_3d_checks_sizes():
    with pytest.raises(ValueError, match="Z, Y, X"):
        restore_axes(np.zeros((1, 1, 3, 5, 6)), "ZYX", (4, 5, 6))
    with pytest.raises(ValueError, match="ZYX"):
        restore_axes(np.zeros((1, 1, 4, 5, 6)), "SYX", (4, 5, 6))


# --- loading and the anisotropy check ----------------------------------------------------------------


def test_load_images_3d(tmp_path):
    a = _noise((2, 6, 16, 20))  # T, Z, Y, X
    tifffile.imwrite(tmp_path / "vol.tif", a, imagej=True, metadata={"axes": "TZYX"})
    images = load_images([tmp_path / "vol.tif"], "*", "TZYX", spatial_dims=3)
    assert [im.source for im in images] == ["vol.tif[0]", "vol.tif[1]"]
    assert images[1].data.shape == (1, 6, 16, 20) and images[1].data.dtype == np.float32
    np.testing.assert_array_equal(images[1].data[0], a[1])
    assert len(load_images([tmp_path / "vol.tif"], "*", "TZYX")) == 12  # 2-D: every slice an image
    with pytest.raises(UserError, match="vol.tif: axes 'SCYX' have no Z axis"):
        load_images([tmp_path / "vol.tif"], "*", "SCYX", spatial_dims=3)


def test_load_images_3d_checks_each_volume(tmp_path):
    a = _noise((2, 3, 8, 8))
    a[1] = 5.0
    np.save(tmp_path / "v.npy", a)
    with pytest.raises(UserError, match=r"v.npy\[1\]: the image is constant"):
        load_images([tmp_path / "v.npy"], "*", "SZYX", spatial_dims=3)
    a[1, 2, 3, 4] = np.nan
    np.save(tmp_path / "v.npy", a)
    with pytest.raises(UserError, match="v.npy: 1 NaN and 0 Inf pixels"):
        load_images([tmp_path / "v.npy"], "*", "SZYX", spatial_dims=3)


def _imagej_stack(path, xy=(0.1, 0.1), spacing=2.0, unit="um"):
    y, x = xy
    metadata = {"axes": "ZYX", "spacing": spacing, "unit": unit}
    tifffile.imwrite(path, _noise((5, 16, 20)), imagej=True, resolution=(1 / x, 1 / y), metadata=metadata)


def test_metadata_is_read_once_with_the_pixels(tmp_path):
    _imagej_stack(tmp_path / "stack.tif")
    assert file_axes(tmp_path / "stack.tif") == "ZYX"
    assert read_physical_sizes(tmp_path / "stack.tif") == pytest.approx({"Z": 2.0, "Y": 0.1, "X": 0.1})
    assert read_array(tmp_path / "stack.tif").shape == (5, 16, 20)
    np.save(tmp_path / "a.npy", _noise((4, 4)))
    assert read_physical_sizes(tmp_path / "a.npy") == {} and file_axes(tmp_path / "a.npy") is None


def test_file_z_named_y_is_refused(tmp_path):
    _imagej_stack(tmp_path / "stack.tif")
    with pytest.raises(UserError) as info:
        load_images([tmp_path / "stack.tif"], "*", "YXS")
    message = str(info.value)
    assert message.startswith("stack.tif: the file says axis 0 is Z but --axes names it Y")
    assert "'ZYX'" in message and "\n" not in message


def test_anisotropic_yx_is_refused(tmp_path):
    # An XZ reslice: ImageJ stores the z spacing as the pixel height.
    _imagej_stack(tmp_path / "stack.tif", xy=(1.0, 0.1), spacing=0.1)
    with pytest.raises(UserError) as info:
        load_images([tmp_path / "stack.tif"], "*", "SYX")
    assert str(info.value) == (
        "stack.tif: pixel size along Y is 1 um but along X 0.1 um (anisotropic): an XZ/YZ reslice or"
        " axes given in the wrong order? name the axes so Z is Z"
    )


def test_units_are_converted(tmp_path):
    _imagej_stack(tmp_path / "nm.tif", xy=(100.0, 100.0), spacing=300.0, unit="nm")
    assert read_physical_sizes(tmp_path / "nm.tif") == pytest.approx({"Z": 0.3, "Y": 0.1, "X": 0.1})
    tifffile.imwrite(tmp_path / "cm.tif", _noise((8, 8)), resolution=(1e4, 1e3), resolutionunit="CENTIMETER")
    assert read_physical_sizes(tmp_path / "cm.tif") == pytest.approx({"Y": 10.0, "X": 1.0})
    with pytest.raises(UserError, match="cm.tif: pixel size along Y is 10 um but along X 1 um"):
        load_images([tmp_path / "cm.tif"], "*", "YX")


def test_ome_tiff(tmp_path):
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.0}
    tifffile.imwrite(tmp_path / "v.ome.tif", _noise((3, 8, 9)), metadata=meta)
    assert file_axes(tmp_path / "v.ome.tif") == "ZYX"
    assert read_physical_sizes(tmp_path / "v.ome.tif") == pytest.approx({"X": 0.1, "Y": 0.3, "Z": 1.0})
    with pytest.raises(UserError, match="along Y is 0.3 um but along X 0.1 um"):
        load_images([tmp_path / "v.ome.tif"], "*", "ZYX", spatial_dims=3)


def test_no_error_when_isotropic_or_unknown(tmp_path):
    _imagej_stack(tmp_path / "iso.tif", xy=(0.1, 0.15), spacing=2.0)  # 1.5x: not anisotropic
    assert len(load_images([tmp_path / "iso.tif"], "*", "ZYX")) == 5
    assert len(load_images([tmp_path / "iso.tif"], "*", "ZYX", spatial_dims=3)) == 1
    # No unit: sizes unknown, and a plain TIFF's own axes ('QYX') say nothing about Z.
    kwargs = {"resolution": (1.0, 10.0), "resolutionunit": "NONE", "photometric": "minisblack"}
    tifffile.imwrite(tmp_path / "plain.tif", _noise((3, 8, 9)), **kwargs)
    assert read_physical_sizes(tmp_path / "plain.tif") == {}
    assert len(load_images([tmp_path / "plain.tif"], "*", "YXS")) == 9
    check_spatial_axes("x.tif", "SYX", None, {"Y": 1.0, "X": 0.1})  # unknown file axes: no check


# --- splits, crops, normalisation ------------------------------------------------------------------


def test_split_one_volume_tiles_y_and_x_only():
    volume = Image(_noise((1, 6, 64, 128)), "vol.tif")
    split = split_images([volume], 0.5, seed=0, min_size=32)
    assert split.description["mode"] == "tiles" and split.description["grid"] == [1, 2]
    tiles = split.train + split.val
    assert sorted(t.source for t in tiles) == ["vol.tif tile y0:64 x0:64", "vol.tif tile y0:64 x64:128"]
    for t in tiles:
        x0 = 0 if t.source.endswith("x0:64") else 64
        np.testing.assert_array_equal(t.data, volume.data[..., x0 : x0 + 64])
    with pytest.raises(UserError) as info:
        split_images([Image(_noise((1, 40, 50, 60)), "vol.tif")], 0.2, seed=0, min_size=64)
    assert "got 40 x 50 x 60 px (z x y x x) for vol.tif" in str(info.value)


def _volumes():
    return [Image(_noise((2, 12, 20, 24), 1), "a.tif"), Image(_noise((2, 8, 16, 16), 2), "b.tif")]


def test_random_crops_3d_shape_content_and_determinism():
    volumes = _volumes()
    crops = RandomCrops(volumes, (4, 8, 8), torch.Generator().manual_seed(3))
    batch = crops.sample(16)
    assert batch.shape == (16, 2, 4, 8, 8) and batch.dtype == torch.float32
    for crop in batch[:4].numpy():
        windows = [np.lib.stride_tricks.sliding_window_view(v.data, crop.shape)[0] for v in volumes]
        assert any(np.any(np.all(w == crop, axis=(-4, -3, -2, -1))) for w in windows)
    again = RandomCrops(volumes, (4, 8, 8), torch.Generator().manual_seed(3))
    assert torch.equal(again.sample(16), batch)
    assert crops.sample(8, rows=slice(2, 5)).shape == (3, 2, 4, 8, 8)
    assert RandomCrops(volumes, 8, torch.Generator()).sample(2).shape == (2, 2, 8, 8, 8)  # an int: cubes


def test_crops_3d_too_small_and_mixed():
    with pytest.raises(UserError) as info:
        RandomCrops(_volumes(), (10, 8, 8), torch.Generator())
    assert str(info.value) == (
        "b.tif: image is 8 x 16 x 16 px (z x y x x) but the crop size is 10 x 8 x 8;"
        " use a smaller crop size (--crop-depth for z)"
    )
    with pytest.raises(UserError, match="cannot be mixed"):
        fixed_val_crops([*_volumes(), Image(_noise((2, 16, 16)), "flat.tif")], 8, 10)


def test_fixed_val_crops_3d():
    crops = fixed_val_crops(_volumes(), (4, 8, 8), 1000)
    # a: 3 x 2 x 3, b: 2 x 2 x 2 non-overlapping windows, centred.
    assert crops.shape == (18 + 8, 2, 4, 8, 8)
    np.testing.assert_array_equal(crops[0].numpy(), _volumes()[0].data[:, 0:4, 2:10, 0:8])
    assert torch.equal(fixed_val_crops(_volumes(), (4, 8, 8), 5), crops[[0, 6, 12, 19, 25]])


def test_2d_crop_stream_unchanged():
    """The exact crops of a seed before volumes existed (checksums from the 2-D-only code)."""
    rng = np.random.default_rng(0)
    images = [
        Image(rng.random((2, 40, 50)).astype(np.float32), "a"),
        Image(rng.random((2, 16, 16)).astype(np.float32), "b"),
        Image(rng.random((2, 70, 33)).astype(np.float32), "c"),
    ]
    crops = RandomCrops(images, 16, torch.Generator().manual_seed(7))
    batch = torch.cat([crops.sample(8), crops.sample(8, rows=slice(2, 5))])
    assert hashlib.sha256(batch.numpy().tobytes()).hexdigest() == (
        "7a612ea3d617ff8a951646835a8adcd7eff28a2d6c757c740927ceec56350b40"
    )
    val = fixed_val_crops(images, 16, 5)
    assert hashlib.sha256(val.numpy().tobytes()).hexdigest() == (
        "6760a57f6b50160e80c27f65a4eb9efdf23a1bb3eb4f58d45d3ec148b8de2ae7"
    )
    assert torch.equal(RandomCrops(images, (16, 16), torch.Generator().manual_seed(7)).sample(8), batch[:8])


def test_normalise_3d_round_trip():
    volumes = [
        (300.0 + 50.0 * _noise((2, 4, 8, 9), 5)) * np.array([1.0, 4.0])[:, None, None, None],
        _noise((2, 3, 6, 7), 6) * 100,
    ]
    stats = compute_stats(volumes, clip_percentiles=(0.0, 100.0))
    values = np.concatenate([v[1].ravel().astype(np.float64) for v in volumes])
    assert stats.mean[1] == pytest.approx(values.mean(), rel=1e-13)
    batch = np.stack([volumes[0], volumes[0]])  # (B, C, Z, Y, X)
    z = normalise(batch, stats, spatial_dims=3)
    assert z.dtype == np.float32 and z.shape == batch.shape
    np.testing.assert_allclose(z[0, 1], ((volumes[0][1] - stats.mean[1]) / stats.std[1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(denormalise(z, stats, spatial_dims=3), batch, rtol=1e-6)
    zt = normalise_tensor(torch.from_numpy(batch), stats, spatial_dims=3)
    np.testing.assert_array_equal(zt.numpy(), z)
    np.testing.assert_array_equal(denormalise_tensor(zt, stats, spatial_dims=3).numpy(), denormalise(z, stats, 3))
    with pytest.raises(ValueError, match=r"channel axis at -4, \(\.\.\., C, Z, Y, X\)"):
        normalise(volumes[0][0, 0], stats, spatial_dims=3)


def test_data_config_fields():
    config = from_dict(DataConfig, {"spatial_dims": 3, "crop_depth": "16"})
    assert config.spatial_dims == 3 and config.crop_depth == 16
    assert DataConfig().spatial_dims == 2 and DataConfig().crop_depth is None
