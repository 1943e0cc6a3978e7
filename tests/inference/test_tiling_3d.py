"""Prediction in 3-D: volumes (C, Z, Y, X) tiled in memory or block by block out of core equal one-piece
prediction; volume files in and out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
import zarr

from bmz_cosdd.data.normalisation import NormStats
from bmz_cosdd.errors import UserError
from bmz_cosdd.inference.blockwise import block_grid, predict_out_of_core
from bmz_cosdd.inference.files import read_inputs, write_outputs
from bmz_cosdd.inference.predictor import TrainedModel, predict_image
from bmz_cosdd.inference.tiling import extend_to_step, predict_tiled, spatial_sizes

RADIUS = 2
STEP = 4


def _box(t: torch.Tensor, radius: int = RADIUS, mean: bool = False) -> torch.Tensor:
    """Per-channel 3-D box sum (or mean) of a (B, C, d, h, w) tensor, in float64; zero outside the tensor."""
    side = 2 * radius + 1
    weight = torch.full((t.shape[1], 1, side, side, side), 1.0 / side**3 if mean else 1.0, dtype=torch.float64)
    return F.conv3d(t.double(), weight, padding=radius, groups=t.shape[1]).float()


def _reference(volume: np.ndarray, radius: int = RADIUS) -> np.ndarray:
    """The box sum of the whole (C, Z, Y, X) volume as tiling computes it: mirrored at the far ends to the size
    step, zero past that (the filter's own padding)."""
    extended = extend_to_step(volume, (STEP,) * 3)
    out = _box(torch.from_numpy(extended)[None], radius)[0].numpy()
    return out[(slice(None),) + tuple(slice(0, size) for size in volume.shape[1:])]


def _integer_volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    # Integer values: the box sums are exact, so tiled and whole must agree bit for bit.
    return np.random.default_rng(seed).integers(-50, 50, size=shape).astype(np.float32)


@pytest.mark.parametrize("tile", [16, (12, 20, 12)])
def test_box_filter_tiled_equals_one_piece(tile):
    volume = _integer_volume((2, 11, 21, 19))  # not a multiple of the tile along any axis
    seen = []

    def fn(t: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(tuple(t.shape[2:]))
        return {"out": _box(t), "samples": torch.stack([_box(t), -t])}

    tiled = predict_tiled(fn, volume, tile, halo=RADIUS + 1, step=STEP)
    sizes = spatial_sizes(tile, 3)
    assert all(all(s <= t and s % STEP == 0 for s, t in zip(shape, sizes)) for shape in seen)
    assert all(len({shape[axis] for shape in seen}) == 1 for axis in range(3))
    np.testing.assert_array_equal(tiled["out"][0], _reference(volume))
    assert tiled["samples"].shape == (2, 1, 2, 11, 21, 19)
    np.testing.assert_array_equal(tiled["samples"][1, 0], -volume)
    whole = predict_tiled(fn, volume, 4096, halo=RADIUS, step=STEP)
    np.testing.assert_array_equal(tiled["out"], whole["out"])
    assert len(seen) > 8


@pytest.mark.parametrize("depth", [1, 3])
def test_thin_volumes_are_extended_like_whole_ones(depth):
    volume = _integer_volume((1, depth, 20, 21), seed=depth)  # a halo deeper than the volume
    tiled = predict_tiled(lambda t: {"out": _box(t)}, volume, (8, 12, 12), halo=RADIUS, step=STEP)
    np.testing.assert_array_equal(tiled["out"][0], _reference(volume))


def test_tile_sizes_per_axis():
    assert spatial_sizes(64, 3) == (64, 64, 64) and spatial_sizes([8, 16], 2) == (8, 16)
    with pytest.raises(UserError) as error:
        spatial_sizes((64, 64), 3)
    assert "\n" not in str(error.value) and "--tile" in str(error.value)
    image = _integer_volume((1, 30, 41))

    def fn(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": torch.tanh(t / 10)}

    np.testing.assert_array_equal(predict_tiled(fn, image, (24, 24), 4, STEP)["out"],
                                  predict_tiled(fn, image, 24, 4, STEP)["out"])


class _BoxMethod:
    """A deterministic 3-D "denoiser": the box mean of radius ``RADIUS``."""

    name = "box"
    estimators = ("direct",)

    def size_step(self, model: torch.nn.Module) -> int:
        return STEP

    def halo(self, model: torch.nn.Module) -> int:
        return RADIUS

    def predict(self, model: torch.nn.Module, x: torch.Tensor, options: object) -> dict[str, torch.Tensor]:
        return {"denoised": _box(x, mean=True)}


def _box_model(tmp_path: Path) -> TrainedModel:
    config = SimpleNamespace(data=SimpleNamespace(spatial_dims=3))
    return TrainedModel(method=_BoxMethod(), model=torch.nn.Identity(), config=config,
                        stats=NormStats(mean=[3.0], std=[2.0]), device=torch.device("cpu"), step=0,
                        source=tmp_path / "box.pt")


def _ome_volume(path: Path, stack: np.ndarray, chunks: tuple[int, ...]) -> Path:
    group = zarr.open_group(str(path), mode="w")
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "t", "type": "time"}] + [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0, 0.5, 0.5]}]}]}]}
    group.create_array("0", shape=stack.shape, chunks=chunks, dtype="float32")[:] = stack
    return path


def test_volume_out_of_core_equals_in_memory_and_resumes(tmp_path):
    stack = np.random.default_rng(1).normal(10.0, 5.0, size=(2, 13, 21, 19)).astype(np.float32)  # T, Z, Y, X
    source = _ome_volume(tmp_path / "vol.ome.zarr", stack, (1, 4, 16, 16))
    trained, tile = _box_model(tmp_path), (12, 16, 16)  # blocks of 4 x 8 x 8; the volume is larger than the tile everywhere
    [path] = predict_out_of_core(trained, source, None, tmp_path / "full", tile=tile)

    def stop_after_five(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_out_of_core(trained, source, None, tmp_path / "part", tile=tile, on_block=stop_after_five)
    seen = []
    [resumed] = predict_out_of_core(trained, source, None, tmp_path / "part", tile=tile,
                                    on_block=lambda done, total: seen.append((done, total)))
    total = 2 * len(block_grid((13, 21, 19), (4, 8, 8)))
    assert seen[0] == (5, total) and seen[-1][0] == seen[-1][1] == total
    result = zarr.open_group(str(path), mode="r")
    assert result["0"].chunks == (1, 4, 8, 8)
    meta = result.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in meta["axes"]] == ["t", "z", "y", "x"]
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 0.5, 0.5]
    for t in range(2):
        # normalised first: the filter's zero padding at the edges is the training mean
        expected = predict_image(trained, stack[t][None], tile=tile)
        np.testing.assert_allclose(result["0"][t], expected["denoised"][0], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(zarr.open_group(str(resumed), mode="r")["0"][:], result["0"][:])


def test_volume_errors_are_one_line(tmp_path):
    trained = _box_model(tmp_path)
    deep_chunks, plane = tmp_path / "deep.zarr", tmp_path / "plane.zarr"
    zarr.create_array(str(deep_chunks), shape=(70, 20, 20), chunks=(70, 8, 8), dtype="float32")
    zarr.create_array(str(plane), shape=(20, 20), chunks=(8, 8), dtype="float32")
    for path, axes, tile, message in [(deep_chunks, "ZYX", (12, 64, 64), "rechunk"),
                                      (plane, "YX", 16, "no Z"),
                                      (deep_chunks, "ZYX", (12, 64), "--tile")]:
        with pytest.raises(UserError) as error:
            predict_out_of_core(trained, path, axes, tmp_path / "out", tile=tile)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_volume_files_in_and_out(tmp_path):
    stack = _integer_volume((2, 4, 8, 9))  # T, Z, Y, X
    tifffile.imwrite(tmp_path / "vol.tif", stack, photometric="minisblack")
    [item] = read_inputs([tmp_path / "vol.tif"], "*", "TZYX", n_channels=1, spatial_dims=3)
    assert item.samples.shape == (2, 1, 4, 8, 9)
    out = tmp_path / "out"
    out.mkdir()
    per_output = {"mmse": [2 * s for s in item.samples], "samples": [np.stack([s, -s, s]) for s in item.samples]}
    mmse, samples = write_outputs(out, item, per_output)
    np.testing.assert_array_equal(tifffile.imread(mmse), 2 * stack)
    np.testing.assert_array_equal(tifffile.imread(samples), np.stack([stack, -stack, stack]))
    tifffile.imwrite(tmp_path / "plane.tif", stack[0, 0])
    with pytest.raises(UserError) as error:
        read_inputs([tmp_path / "plane.tif"], "*", "YX", n_channels=1, spatial_dims=3)
    assert "no Z" in str(error.value) and "\n" not in str(error.value)
