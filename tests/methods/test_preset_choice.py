"""``--preset auto`` chooses by the measured curves, the device and the run's budget."""

import pytest

from bmz_cosdd.methods.base import Budget
from bmz_cosdd.methods.cosdd.config import PRESETS, preset_size_steps
from bmz_cosdd.methods.cosdd.preset_choice import TIE_DB, load_curves, psnr_at
from bmz_cosdd.methods.cosdd.preset_choice import choose_preset as choose_with_steps


def choose_preset(device, budget, curves):
    return choose_with_steps(device, budget, {"tiny": 4, "small": 8, "large": 128}, curves)


def curves(**presets):
    """Curves measured at batch 4, crop 64: ``name=(seconds per step, [psnr at 60, 120, 300, 600 s])``."""
    return {
        "images": "test tiles", "noise": "row_correlated", "threads": 2, "cpus": 2,
        "presets": {
            name: {"batch_size": 4, "crop_size": 64,
                   "points": [{"time_s": t, "trained_s": t, "steps": int(t / per_step), "psnr": p}
                              for t, p in zip((60, 120, 300, 600), psnrs)]}
            for name, (per_step, psnrs) in presets.items()
        },
    }


# a cheap preset that learns fast and stops improving, and a costly one that overtakes it late
MEASURED = curves(tiny=(0.1, [28.0, 29.0, 29.5, 29.6]), small=(0.4, [26.0, 28.0, 29.8, 30.5]))


def test_a_time_budget_takes_the_best_preset_at_that_time():
    assert choose_preset("cpu", Budget(seconds=120), MEASURED).preset == "tiny"
    late = choose_preset("cpu", Budget(seconds=600), MEASURED)
    assert late.preset == "small"
    assert "small 30.5 dB in 600 s" in late.reason and "tiny 29.6 dB in 600 s" in late.reason
    # between 120 and 300 s linear in log time: small crosses tiny at about 240 s
    assert choose_preset("cpu", Budget(seconds=200), MEASURED).preset == "tiny"
    assert choose_preset("cpu", Budget(seconds=290), MEASURED).preset == "small"
    # beyond the longest time measured, the last figures (and the reason says so)
    long = choose_preset("cpu", Budget(seconds=7200), MEASURED)
    assert long.preset == "small" and "count as 600 s" in long.reason


def test_a_step_budget_becomes_each_presets_own_time():
    # 3000 steps: tiny trains 300 s (29.5 dB), small 1200 s (held at its 600 s figure, 30.5 dB)
    choice = choose_preset("cpu", Budget(steps=3000), MEASURED)
    assert choice.preset == "small" and "tiny 29.5 dB in 300 s" in choice.reason
    # 1200 steps: tiny 120 s (29.0), small 480 s (about 30.3)
    assert choose_preset("cpu", Budget(steps=1200), MEASURED).preset == "small"
    # the time limit binds first: 3000 steps or 120 s
    assert choose_preset("cpu", Budget(seconds=120, steps=3000), MEASURED).preset == "tiny"
    # twice the pixels per step: twice the seconds per step, so 1500 steps at batch 8 = 3000 at batch 4
    assert "tiny 29.5 dB in 300 s" in choose_preset("cpu", Budget(steps=1500, batch_size=8), MEASURED).reason


def test_a_budget_shorter_than_any_measurement_gets_the_cheapest_preset():
    for budget in (Budget(steps=20), Budget(seconds=30), Budget(steps=500)):  # tiny: 2 s, 30 s, 50 s
        choice = choose_preset("cpu", budget, MEASURED)
        assert choice.preset == "tiny" and "shorter than the shortest training measured (60 s)" in choice.reason


def test_presets_within_the_tie_margin_go_to_the_cheaper():
    close = curves(tiny=(0.1, [28.0, 29.0, 29.5, 30.0]), small=(0.4, [27.0, 28.0, 29.5, 30.0 + TIE_DB / 2]))
    assert choose_preset("cpu", Budget(seconds=600), close).preset == "tiny"


def test_a_preset_that_cannot_take_the_crops_is_left_out():
    # large would win at 600 s, but its size step (128) does not divide crops of 64
    with_large = curves(tiny=(0.1, [28.0, 29.0, 29.5, 29.6]), large=(0.4, [26.0, 28.0, 29.8, 31.0]))
    choice = choose_preset("cpu", Budget(seconds=600, crop_size=64), with_large)
    assert choice.preset == "tiny" and "large left out: crops of 64 are not a multiple of 128" in choice.reason
    assert choose_preset("cpu", Budget(seconds=600, crop_size=128), with_large).preset == "large"


def test_on_cuda_the_unmeasured_choice_says_so():
    choice = choose_preset("cuda", Budget(seconds=60), MEASURED)
    assert choice.preset == "small" and "no PSNR-against-time curves" in choice.reason


def test_psnr_below_the_first_time_is_unknown():
    assert psnr_at(MEASURED["presets"]["tiny"]["points"], 59) is None
    assert psnr_at(MEASURED["presets"]["tiny"]["points"], 60) == pytest.approx(28.0)


def test_the_shipped_curves_cover_every_preset_at_the_issue_times():
    shipped = load_curves()
    assert set(shipped["presets"]) == set(PRESETS)
    for name, entry in shipped["presets"].items():
        assert [p["time_s"] for p in entry["points"]] == [60, 120, 300, 600], name
        assert all(p["steps"] > 0 and 10 < p["psnr"] < 60 for p in entry["points"]), name
        assert entry["crop_size"] % preset_size_steps()[name] == 0, name
    assert all("evaluate_synthetic.py" in command for command in shipped["command"])


def test_a_run_records_the_choice_and_its_reason():
    from bmz_cosdd.training.session import build_config

    config = build_config({"method": "cosdd", "data": {"paths": ["x.tif"]}, "model": {"direction": "none"},
                           "train": {"max_steps": 10, "device": "cpu"}})
    assert (config.model.preset, config.model.preset_auto) == ("tiny", True)
    assert "shorter than the shortest training measured" in config.model.preset_reason
    again = build_config(config.to_dict())  # what the run wrote reads back unchanged
    assert (again.model.preset, again.model.preset_reason) == ("tiny", config.model.preset_reason)
