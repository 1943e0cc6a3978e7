"""The parameter counts the README reports are the real ones."""

import re
from pathlib import Path

import pytest

from bmz_cosdd.methods.registry import get_method

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_counts() -> dict[str, int]:
    text = README.read_text()
    table = text.split("<!-- preset-table -->")[1].split("<!-- /preset-table -->")[0]
    counts = {}
    for line in table.splitlines():
        match = re.match(r"\|\s*`(\w+)`.*\|\s*([\d,]+)\s*\|\s*$", line)
        if match:
            counts[match.group(1)] = int(match.group(2).replace(",", ""))
    return counts


@pytest.mark.parametrize("preset", ["tiny", "small", "large", "reference"])
def test_readme_parameter_counts(preset):
    method = get_method("cosdd")
    # The table counts the paper's 8-layer noise decoder (the automatic field is often shorter).
    model = method.build(method.config_from_dict({"preset": preset, "direction": "x", "ar_layers": 8}), 1)
    assert readme_counts()[preset] == sum(p.numel() for p in model.parameters())


def test_auto_preset_follows_the_device_and_the_run_says_why():
    from bmz_cosdd.methods.base import Budget
    from bmz_cosdd.methods.cosdd.config import PRESETS, preset_size_steps
    from bmz_cosdd.methods.cosdd.preset_choice import choose_preset
    from bmz_cosdd.training.session import build_config

    method = get_method("cosdd")
    on_cpu, on_cuda = method.config_from_dict({}), method.config_from_dict({}, device="cuda")
    # no budget given: COSDD's default length, 6000 steps of batch 4 and crop 64
    expected = choose_preset("cpu", Budget(steps=6000), preset_size_steps()).preset
    assert (on_cpu.preset, on_cpu.n_levels, on_cpu.preset_auto) == (expected, PRESETS[expected]["n_levels"], True)
    assert (on_cuda.preset, on_cuda.n_levels) == ("small", 6)
    given = method.config_from_dict({"preset": "large", "features": 8}, device="cpu")
    assert (given.preset, given.preset_auto, given.features, given.n_levels) == ("large", False, 8, 14)
    # what a run records reads back as the same architecture on any machine
    again = method.config_from_dict({k: v for k, v in vars(on_cpu).items()}, device="cuda")
    assert (again.preset, again.n_levels, again.preset_auto) == (expected, on_cpu.n_levels, True)
    config = build_config({"method": "cosdd", "data": {"paths": ["x.tif"]}, "model": {"direction": "none"}})
    _, notes = method.resolve_config(config.model, config.data, [], None)
    assert notes and notes[0].startswith(f"preset (auto): {expected}: PSNR after 952 s of training")
    assert "evaluate_synthetic.py --curve" in notes[0]


def test_a_given_limit_replaces_the_default_training_length():
    from bmz_cosdd.training.session import build_config

    default = build_config({"method": "cosdd", "data": {"paths": ["x.tif"]}}).train
    assert (default.max_epochs, default.max_steps, default.max_time) == (60, None, None)
    timed = build_config({"method": "cosdd", "data": {"paths": ["x.tif"]}, "train": {"max_time": 3600}}).train
    assert (timed.max_epochs, timed.max_steps, timed.max_time) == (None, None, 3600)
