import json
import os

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from bmz_cosdd.data import io as dio
from bmz_cosdd.data.io import (
    Image,
    atomic_write_bytes,
    atomic_write_text,
    find_files,
    load_images,
    read_array,
    write_tiff,
)
from bmz_cosdd.errors import UserError


def _noise(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_find_files_file_and_folder(tmp_path):
    for name in ["b.tif", "a.npy", "c.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert find_files(tmp_path / "b.tif") == [tmp_path / "b.tif"]
    assert [p.name for p in find_files(tmp_path)] == ["a.npy", "b.tif", "c.png"]
    assert [p.name for p in find_files(tmp_path, "*.tif")] == ["b.tif"]


def test_find_files_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        find_files(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="unsupported file type"):
        find_files(tmp_path / "notes.txt")
    with pytest.raises(UserError, match=r"no files matching '\*.tif' in"):
        find_files(tmp_path, "*.tif")


def test_read_tif_npy_png(tmp_path):
    a = _noise((3, 8, 9))
    tifffile.imwrite(tmp_path / "a.tif", a, photometric="minisblack")
    np.save(tmp_path / "a.npy", a.astype(np.float64))
    rgb = (np.random.default_rng(1).random((8, 9, 3)) * 255).astype(np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "rgb.png")
    grey = rgb[..., 0].astype(np.uint16) * 200
    PILImage.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_array(tmp_path / "a.tif"), a)
    np.testing.assert_array_equal(read_array(tmp_path / "a.npy"), a.astype(np.float64))
    np.testing.assert_array_equal(read_array(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(read_array(tmp_path / "grey.png"), grey)


def test_read_errors_name_the_file(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(UserError, match="cannot read .*bad.tif"):
        read_array(tmp_path / "bad.tif")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match="cannot read .*obj.npy"):
        read_array(tmp_path / "obj.npy")


def test_load_images_splits_samples_and_names_sources(tmp_path):
    stack = _noise((3, 16, 20))
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    np.save(tmp_path / "one.npy", _noise((1, 24, 12), seed=1).astype(np.float64))
    images = load_images([tmp_path], "*", "syx")
    assert [im.source for im in images] == ["one.npy", "stack.tif[0]", "stack.tif[1]", "stack.tif[2]"]
    assert images[0].data.shape == (1, 24, 12)  # sizes may differ between images
    assert all(im.data.dtype == np.float32 and im.data.ndim == 3 for im in images)
    np.testing.assert_array_equal(images[2].data[0], stack[1])


def test_load_images_file_named_twice_and_channels(tmp_path):
    rgb = (np.random.default_rng(1).random((8, 9, 3)) * 255).astype(np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "rgb.png")
    images = load_images([tmp_path / "rgb.png", tmp_path], "*.png", "YXC")
    assert len(images) == 1
    assert images[0].data.shape == (3, 8, 9)


def test_load_images_axes_mismatch(tmp_path):
    np.save(tmp_path / "cells.npy", _noise((64, 64)))
    with pytest.raises(UserError) as info:
        load_images([tmp_path / "cells.npy"], "*", "SYX")
    assert str(info.value) == "cells.npy: axes 'SYX' has 3 letters but the array has 2 dimensions (shape (64, 64))"


def test_load_images_rejects_nan_and_inf(tmp_path):
    a = _noise((2, 8, 8))
    a[0, 1, 1] = np.nan
    a[1, 2, 2] = np.nan
    a[1, 3, 3] = np.inf
    np.save(tmp_path / "bad.npy", a)
    with pytest.raises(UserError, match="bad.npy: 2 NaN and 1 Inf pixels"):
        load_images([tmp_path / "bad.npy"], "*", "SYX")


def test_load_images_rejects_constant_image(tmp_path):
    a = _noise((3, 8, 8))
    a[1] = 7.0
    np.save(tmp_path / "flat.npy", a)
    with pytest.raises(UserError, match=r"flat.npy\[1\]: the image is constant"):
        load_images([tmp_path / "flat.npy"], "*", "SYX")


def test_load_images_same_name_in_two_folders(tmp_path):
    for sub in ["a", "b"]:
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "x.npy", _noise((8, 8)))
    sources = [im.source for im in load_images([tmp_path / "a", tmp_path / "b"], "*", "YX")]
    assert len(set(sources)) == 2


@pytest.mark.parametrize(
    "axes, shape",
    [
        ("YX", (8, 9)),
        ("SYX", (2, 8, 9)),
        ("ZCYX", (3, 2, 8, 9)),
        ("CYX", (1, 8, 9)),
        ("YXC", (8, 9, 3)),
        ("SYX", (3, 8, 9)),
        ("CYX", (3, 8, 9)),
        ("STCZYX", (2, 1, 3, 2, 8, 9)),
    ],
)
def test_write_tiff_records_axes(tmp_path, axes, shape):
    a = np.random.default_rng(0).random(shape)
    path = tmp_path / "sub" / "out.tif"
    write_tiff(path, a, axes)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == axes
        data = tif.asarray()
    assert data.dtype == np.float32 and data.shape == shape
    np.testing.assert_array_equal(data, a.astype(np.float32))
    assert os.listdir(path.parent) == ["out.tif"]


def test_write_tiff_round_trips_through_load_images(tmp_path):
    a = _noise((2, 3, 8, 9))
    write_tiff(tmp_path / "p.tif", a, "TCYX")
    images = load_images([tmp_path / "p.tif"], "*", "TCYX")
    np.testing.assert_array_equal(np.stack([im.data for im in images]), a)


def test_atomic_write_text_and_bytes(tmp_path):
    path = tmp_path / "deep" / "er" / "f.json"
    atomic_write_text(path, json.dumps({"a": 1}))
    assert json.loads(path.read_text()) == {"a": 1}
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(path.parent) == ["f.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "pred.tif"
    write_tiff(path, _noise((8, 8)), "YX")
    before = path.read_bytes()

    def broken_imwrite(fh, data, **kwargs):
        fh.write(b"half a tiff")
        raise OSError("disk full")

    monkeypatch.setattr(dio.tifffile, "imwrite", broken_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(path, _noise((8, 8), seed=3), "YX")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["pred.tif"]


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(dio.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["stats.json"]


def test_image_dataclass():
    im = Image(data=np.zeros((1, 2, 2), np.float32), source="a.tif")
    assert im.source == "a.tif"
