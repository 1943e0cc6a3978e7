"""Settings are pydantic dataclasses: checked when made or changed, one line naming the field."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from bmz_cosdd.config import DataConfig, TrainConfig, from_dict, validation_message
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.registry import all_methods, get_method


@pytest.mark.parametrize("cls, values, message", [
    (DataConfig, {"crop_size": 4}, "data.crop_size: must be at least 8, got 4"),
    (DataConfig, {"crop_size": "abc"}, "data.crop_size: expected an integer, got 'abc'"),
    (DataConfig, {"val_fraction": "nan"}, "data.val_fraction: expected a finite number, got 'nan'"),
    (DataConfig, {"spatial_dims": 4}, "data.spatial_dims: must be 2 or 3, got 4"),
    (DataConfig, {"crop_depth": 8}, "data: crop_depth (--crop-depth) is for volumes"),
    (DataConfig, {"clip_percentiles": "1"}, "data.clip_percentiles: needs 2 values, got '1'"),
    (DataConfig, {"clip_percentiles": [99, 1]}, "data: clip_percentiles must be 0 <= low < high <= 100"),
    (TrainConfig, {"lr": float("inf")}, "train.lr: expected a finite number, got inf"),
    (TrainConfig, {"max_steps": 2.5}, "train.max_steps: expected an integer, got 2.5"),
    (TrainConfig, {"max_steps": True}, "train.max_steps: expected a number, got True"),  # YAML's `true` is not 1
    (TrainConfig, {"batch_size": 3, "accumulate": 2}, "train: batch_size (3) must be a multiple of accumulate (2)"),
    (TrainConfig, {"max_epochs": None}, "train: set at least one of max_steps, max_epochs or max_time"),
    (TrainConfig, {"precision": "fp16"}, "train.precision: must be auto, fp32 or bf16, got 'fp16'"),
    (TrainConfig, {"colour": 1}, "unknown setting train.colour (known: "),
])
def test_a_bad_value_is_one_line_naming_the_field(cls, values, message):
    with pytest.raises(UserError) as caught:
        from_dict(cls, values, f"{'data' if cls is DataConfig else 'train'}.")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_values_as_typed_are_converted():
    data = from_dict(DataConfig, {"paths": "my data, 2.tif", "crop_size": "32", "clip_percentiles": "0.5, 99.5"})
    assert data.paths == ["my data, 2.tif"] and data.crop_size == 32 and data.clip_percentiles == [0.5, 99.5]
    train = from_dict(TrainConfig, {"max_steps": "100", "lr": "1e-3", "seed": 3.0})
    assert (train.max_steps, train.lr, train.seed) == (100, 1e-3, 3)


def test_settings_are_checked_when_made_and_when_changed():
    with pytest.raises(ValidationError):
        DataConfig(crop_size=4)
    data = DataConfig()
    with pytest.raises(ValidationError) as caught:
        data.val_crops = 0
    assert validation_message(caught.value, "data.") == "data.val_crops: must be at least 1, got 0"
    with pytest.raises(ValidationError):
        dataclasses.replace(TrainConfig(), lr=-1.0)


def test_every_method_config_is_checked_when_made():
    for method in all_methods():
        config = method.config_from_dict({})
        field = next(f.name for f in dataclasses.fields(config) if f.name in ("halo", "depth", "n_levels"))
        with pytest.raises(ValidationError):
            setattr(config, field, -1)
        with pytest.raises(UserError, match=f"model.{field}: must be at least"):
            method.config_from_dict({field: -1})


def test_method_rules_between_fields():
    with pytest.raises(UserError, match=r"model: latent_channels has 2 entries but n_levels is 3"):
        get_method("cosdd").config_from_dict({"n_levels": 3, "latent_channels": "4,4"})
    assert get_method("cosdd").config_from_dict({"preset": "tiny", "n_levels": 2}).latent_channels == [8, 8]
    hdn = get_method("hdn").config_from_dict({"deactivate_levels": "2,1,2"})
    assert hdn.deactivate_levels == [1, 2] and hdn.latent_channels == [32] * 6
    with pytest.raises(UserError, match=r"deactivate_levels \(--deactivate-levels\) must name levels 1 to 5"):
        get_method("hdn").config_from_dict({"deactivate_levels": "6"})
    assert get_method("structn2v").config_from_dict({"struct_mask": "none"}).struct_mask is None
    with pytest.raises(UserError, match="model.window: must be odd, got 4"):
        get_method("n2v").config_from_dict({"window": 4})


def test_a_refused_assignment_leaves_the_value():
    train = TrainConfig()
    with pytest.raises(ValidationError):
        train.accumulate = 3  # batch 4 is not a multiple of 3: a rule between fields
    assert train.accumulate == 1
    data = DataConfig()
    with pytest.raises(ValidationError):
        data.crop_depth = 8  # crop depth without volumes
    assert data.crop_depth is None


@pytest.mark.parametrize("method, values", [
    ("n2v", {}), ("n2v", {"depth": 3}), ("psf-n2v", {}), ("structn2v", {"struct_mask": None}),
    ("cosdd", {"direction": "x", "ar_layers": 2}), ("cosdd", {"direction": "x", "ar_layers": 2, "n_levels": 5}),
    ("cosdd", {"direction": "x", "ar_layers": 2, "direct_denoiser": True, "direct_depth": 4}),
])
def test_the_size_step_is_known_before_the_network_is_built(method, values):
    chosen = get_method(method)
    config = chosen.config_from_dict(values)
    assert chosen.yx_size_step(config) == max(chosen.size_step(chosen.build(config, 1)))


def test_a_crop_the_architecture_cannot_take_is_refused_before_anything_is_built(tmp_path):
    from bmz_cosdd.training.session import build_config

    values = {"method": "n2v", "model": {"depth": 9}, "data": {"paths": ["x.tif"], "crop_size": 32}}
    with pytest.raises(UserError, match=r"data.crop_size \(32\) must be a multiple of 512 for this architecture"):
        build_config(values)


def test_per_level_settings_need_one_value_per_level():
    with pytest.raises(UserError, match=r"model: z_pool \(--z-pool\) needs 2 values .*, got 5"):
        get_method("n2v").config_from_dict({"z_pool": "1,1,1,1,1"})
    with pytest.raises(UserError, match="model: z_kernel needs 6 values"):
        get_method("hdn").config_from_dict({"z_kernel": "3"})


def test_z_settings_without_volumes_are_refused():
    from bmz_cosdd.training.session import build_config

    values = {"method": "n2v", "model": {"z_pool": "0,1"}, "data": {"paths": ["x.tif"]}}
    with pytest.raises(UserError, match=r"model.z_pool is for volumes; add --spatial-dims 3 or drop it"):
        build_config(values)
