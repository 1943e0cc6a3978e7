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
        "images": "test tiles", "noise": "row_correlated", "threads": 2, "cpus": 2, "psnr_noisy": 25.0,
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
    assert "PSNR after 600 s of training" in late.reason and "tiny 29.6 dB, small 30.5 dB" in late.reason
    # between 120 and 300 s linear in log time: small crosses tiny at about 240 s
    assert choose_preset("cpu", Budget(seconds=200), MEASURED).preset == "tiny"
    assert choose_preset("cpu", Budget(seconds=290), MEASURED).preset == "small"
    # beyond the longest time measured, the last figures (and the reason says so)
    long = choose_preset("cpu", Budget(seconds=7200), MEASURED)
    assert long.preset == "small" and "beyond 600 s: the 600 s figures" in long.reason


def test_a_step_limit_counts_as_the_time_it_takes_the_cheapest_preset():
    # 3000 steps: 300 s with tiny; there small is ahead (29.8 against 29.5), so small, for the same steps
    choice = choose_preset("cpu", Budget(steps=3000), MEASURED)
    assert choice.preset == "small" and "about 300 s with tiny" in choice.reason and "tiny 29.5 dB" in choice.reason
    # 1200 steps: 120 s with tiny, where tiny is ahead
    assert choose_preset("cpu", Budget(steps=1200), MEASURED).preset == "tiny"
    # the time limit binds first: 3000 steps or 120 s
    assert choose_preset("cpu", Budget(seconds=120, steps=3000), MEASURED).preset == "tiny"
    # twice the pixels per step: twice the seconds per step, so 1500 steps at batch 8 = 3000 at batch 4
    assert "about 300 s with tiny" in choose_preset("cpu", Budget(steps=1500, batch_size=8), MEASURED).reason


def test_a_budget_shorter_than_any_measurement_gets_the_cheapest_preset():
    for budget in (Budget(steps=20), Budget(seconds=30), Budget(steps=500)):  # tiny: 2 s, 30 s, 50 s
        choice = choose_preset("cpu", budget, MEASURED)
        assert choice.preset == "tiny" and "shorter than the shortest training measured (60 s" in choice.reason


def test_a_budget_where_every_preset_stayed_below_the_noisy_input_gets_the_cheapest():
    short = curves(tiny=(0.1, [24.0, 29.0, 29.5, 29.6]), small=(0.4, [24.5, 28.0, 29.8, 30.5]))
    choice = choose_preset("cpu", Budget(seconds=60), short)  # small ahead, but both below 25.0
    assert choice.preset == "tiny" and "stayed below the noisy input" in choice.reason


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


def test_another_preset_over_a_recorded_auto_choice_is_not_labelled_auto():
    from bmz_cosdd.methods.registry import get_method

    method = get_method("cosdd")
    recorded = {"preset": "tiny", "preset_auto": True, "preset_reason": "tiny: PSNR after 90 s of training ..."}
    again = method.config_from_dict(recorded)  # resuming, or the same config reused: the record stands
    assert (again.preset_auto, again.preset_reason) == (True, recorded["preset_reason"])
    other = method.config_from_dict({**recorded, "preset": "small"})  # --preset small over it
    assert (other.preset, other.preset_auto, other.preset_reason) == ("small", False, None)


def test_reference_chosen_by_auto_sizes_its_noise_decoder_from_the_data(monkeypatch):
    import bmz_cosdd.methods.cosdd.config as cosdd_config
    from bmz_cosdd.methods.cosdd.preset_choice import PresetChoice

    assert cosdd_config.cosdd_config({"preset": "reference"}).ar_layers == 8  # given: the reference's field
    monkeypatch.setattr(cosdd_config, "choose_preset", lambda *a: PresetChoice("reference", "reference: test"))
    chosen = cosdd_config.cosdd_config({})
    assert (chosen.preset, chosen.preset_auto, chosen.ar_layers) == ("reference", True, None)
