"""The automatic z layout of 3-D networks: from the voxel size a TIFF records and the stack's depth."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bmz_cosdd.config import DataConfig
from bmz_cosdd.inference.tiling import check_tile
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.anisotropy import auto_z_layout, choose_z_layout, fitted_z_halo, z_ratio_of
from bmz_cosdd.methods.registry import get_method
from bmz_cosdd.nn.unet import unet_receptive_field


def _stack(path, planes: int, z_um: float | None, pixel_um: float = 0.5) -> None:
    data = np.zeros((planes, 64, 64), np.float32)
    if z_um is None:
        tifffile.imwrite(path, data)
    else:
        tifffile.imwrite(path, data, imagej=True, resolution=(1 / pixel_um, 1 / pixel_um),
                         metadata={"spacing": z_um, "unit": "um", "axes": "ZYX"})


def _unet_halo(depth: int):
    return lambda pool, kernel: unet_receptive_field(depth, pool=pool[:depth], kernels=kernel)


@pytest.mark.parametrize("z_um, pool, kernel", [
    (2.0, [False, True], [1, 3, 3]),   # z step 4 px: z joins once y and x have been pooled once
    (0.5, [True, True], [3, 3, 3]),    # isotropic voxels: as y and x
    (None, [True, True], [3, 3, 3]),   # no voxel size recorded: z taken as y and x
    (5.0, [False, False], [1, 1, 1]),  # z step 10 px: planes too far apart for z context at any level
])
def test_the_voxel_size_in_the_file_sets_the_layout(tmp_path, z_um, pool, kernel):
    _stack(tmp_path / "stack.tif", 64, z_um)
    data = DataConfig(paths=[str(tmp_path / "stack.tif")], axes="ZYX", spatial_dims=3, crop_size=32, crop_depth=16)
    layout = auto_z_layout(data, [np.zeros((1, 64, 64, 64))], [True, True, False], _unet_halo(2))
    assert (layout.z_pool[:2], layout.z_kernel) == (pool, kernel), layout.reason
    assert "z layout (auto)" in layout.reason and "64-plane stack" in layout.reason


def test_a_thin_stack_takes_z_context_off_the_coarse_levels(tmp_path):
    halo = _unet_halo(2)
    deep = choose_z_layout([True, True, False], 1.0, 16, 64, halo)
    thin = choose_z_layout([True, True, False], 1.0, 4, 6, halo)
    assert deep.z_kernel == [3, 3, 3] and deep.z_pool == [True, True, False]
    assert thin.z_kernel[-1] == 1 and "so a 6-plane stack fits" in thin.reason
    step = 2 ** sum(thin.z_pool)
    assert 2 * -(-halo(thin.z_pool, thin.z_kernel) // step) * step + 1 <= 6


def test_z_ratio_and_fitted_halo():
    assert z_ratio_of({"X": 0.5, "Y": 0.5, "Z": 2.0}) == 4.0 and z_ratio_of({"X": 0.5}) is None
    assert fitted_z_halo(32, 1, 16) == 7 and fitted_z_halo(32, 2, 16) == 6 and fitted_z_halo(0, 2, 16) == 0


def test_n2v_records_its_choice_and_a_user_choice_wins(tmp_path):
    _stack(tmp_path / "stack.tif", 16, 2.0)
    data = DataConfig(paths=[str(tmp_path / "stack.tif")], axes="ZYX", spatial_dims=3, crop_size=32, crop_depth=16)
    method = get_method("n2v")
    volume = [np.random.default_rng(0).normal(size=(1, 16, 64, 64))]
    resolved, notes = method.resolve_config(method.config_from_dict({}), data, volume, None)
    # z step 4 px: z joins at the second level; the bottleneck loses its z context so that a package of
    # this exact network takes the 16-plane stack
    assert resolved.z_pool == [False, True] and resolved.z_kernel == [1, 3, 1]
    assert any(note.startswith("z layout (auto): z step 4 x the pixel size, 16-plane stack") and
               "so a 16-plane stack fits" in note for note in notes), notes
    model = method.build(resolved, 1, spatial_dims=3)
    assert method.size_step(model) == (2, 4, 4) and method.halo(model)[0] < method.halo(model)[1]
    given, _ = method.resolve_config(method.config_from_dict({"z_pool": "0,0", "z_kernel": "1,1,1"}), data,
                                     volume, None)
    assert given.z_pool == [False, False] and given.z_kernel == [1, 1, 1]


def test_sampling_models_cap_their_z_halo_to_the_stack(tmp_path):
    _stack(tmp_path / "stack.tif", 16, 0.5)
    data = DataConfig(paths=[str(tmp_path / "stack.tif")], axes="ZYX", spatial_dims=3, crop_size=32, crop_depth=16)
    method = get_method("cosdd")
    config = method.config_from_dict({"preset": "tiny", "direction": "x", "ar_layers": 2, "context_dropout": 0.5})
    resolved, notes = method.resolve_config(config, data, [np.zeros((1, 16, 64, 64))], None)
    assert resolved.z_halo is not None and resolved.z_halo < resolved.halo
    assert any(note.startswith("z halo (auto)") for note in notes)
    model = method.build(resolved, 1, spatial_dims=3)
    halo, step = method.halo(model), method.size_step(model)
    assert halo[0] == resolved.z_halo and halo[1:] == (resolved.halo, resolved.halo)
    assert 2 * -(-halo[0] // step[0]) * step[0] + 1 <= 16


def test_a_tile_too_small_along_one_axis_names_a_size_per_axis():
    with pytest.raises(UserError, match=r"use --tile 8,64,64 or more"):
        check_tile((4, 256, 256), (2, 16, 16), (1, 4, 4), 3)
    assert check_tile((8, 64, 64), (2, 16, 16), (1, 4, 4), 3) == (8, 64, 64)
