import json

import pytest
import torch

from bmz_cosdd.errors import TrainingDiverged, UserError
from bmz_cosdd.artifacts.run_folder import RunFolder
from bmz_cosdd.training.checkpoints import load_checkpoint, save_checkpoint
from bmz_cosdd.training.session import resume, train
from helpers import tiny_config


def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_training(tmp_path, noisy_stack):
    full = tmp_path / "full"
    train(tiny_config(noisy_stack, max_steps=6), full, progress=False)
    part = tmp_path / "part"
    first = train(tiny_config(noisy_stack, max_steps=3), part, progress=False)
    assert first.steps == 3
    second = resume(part, {"max_steps": 6}, progress=False)
    assert second.steps == 6
    a, b = _weights(RunFolder(full).last), _weights(RunFolder(part).last)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # metrics of the resumed run continue the first part's without duplicates
    steps = [r["step"] for r in map(json.loads, RunFolder(part).metrics.read_text().splitlines()) if r["kind"] == "val"]
    assert steps == [3, 6]


def test_run_folder_contents(trained_run):
    run = RunFolder(trained_run)
    for path in (run.config, run.stats, run.split, run.best, run.last, run.metrics, run.curves):
        assert path.is_file(), path
    state = load_checkpoint(run.last)
    assert state["step"] == 6
    assert {"model", "optimisers", "schedulers", "rng", "config", "stats"} <= set(state)
    assert set(state["optimisers"]) == {"vae", "signal_decoder", "direct_denoiser"}
    stats = json.loads(run.stats.read_text())
    assert len(stats["mean"]) == 1 and stats["std"][0] > 0
    split = json.loads(run.split.read_text())
    assert set(split["train"]).isdisjoint(split["val"])


def test_validation_is_deterministic(tmp_path, noisy_stack):
    a = train(tiny_config(noisy_stack, max_steps=3), tmp_path / "a", progress=False)
    b = train(tiny_config(noisy_stack, max_steps=3), tmp_path / "b", progress=False)
    assert a.best == b.best


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, noisy_stack, monkeypatch):
    from bmz_cosdd.methods.cosdd.method import COSDD

    run = tmp_path / "nan"
    original = COSDD.training_losses
    calls = {"n": 0}

    def poisoned(self, model, batch, generator):
        losses = original(self, model, batch, generator)
        calls["n"] += 1
        if model.training and calls["n"] > 5:  # after the first epoch (3 steps + validation)
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(COSDD, "training_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="last good checkpoint \\(step 3\\)"):
        train(tiny_config(noisy_stack, max_steps=9), run, progress=False)
    state = load_checkpoint(RunFolder(run).last)
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, noisy_stack, monkeypatch):
    from bmz_cosdd.data.crops import RandomCrops

    run = tmp_path / "int"
    original = RandomCrops.sample
    calls = {"n": 0}

    def interrupt(self, batch_size, rows=None):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, batch_size, rows)

    monkeypatch.setattr(RandomCrops, "sample", interrupt)
    result = train(tiny_config(noisy_stack, max_steps=6), run, progress=False)
    assert result.stopped == "interrupted" and result.steps == 4
    assert load_checkpoint(RunFolder(run).last)["step"] == 4
    monkeypatch.setattr(RandomCrops, "sample", original)
    assert resume(run, progress=False).steps == 6


def test_existing_run_is_not_overwritten(trained_run, noisy_stack):
    before = RunFolder(trained_run).best.read_bytes()
    with pytest.raises(UserError, match="already holds a trained run"):
        train(tiny_config(noisy_stack), trained_run, progress=False)
    assert RunFolder(trained_run).best.read_bytes() == before


def test_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_atomic_checkpoint_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_checkpoint({"model": {"w": torch.zeros(2)}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_time_limit_stops_training(tmp_path, noisy_stack):
    result = train(tiny_config(noisy_stack, max_steps=None, max_time=0.5), tmp_path / "t", progress=False)
    assert result.stopped == "time" and result.steps >= 1
    assert RunFolder(tmp_path / "t").best.is_file()


def test_gradient_accumulation_runs_and_checks_divisibility(tmp_path, noisy_stack):
    a = train(tiny_config(noisy_stack, max_steps=2, batch_size=4, accumulate=1), tmp_path / "a", progress=False)
    b = train(tiny_config(noisy_stack, max_steps=2, batch_size=4, accumulate=2), tmp_path / "b", progress=False)
    assert a.steps == b.steps == 2
    with pytest.raises(UserError, match=r"train: batch_size \(3\) must be a multiple of accumulate \(2\)"):
        train(tiny_config(noisy_stack, batch_size=3, accumulate=2), tmp_path / "c", progress=False)


def test_training_report_png(trained_run, tmp_path):
    from helpers import assert_readable_png

    from bmz_cosdd.training.loss_log import plot_curves, read_metrics

    run = RunFolder(trained_run)
    assert_readable_png(run.curves, min_height=500, min_width=900, min_ink=0.03)
    # Refreshed at each validation: the figure follows the metrics, best step and learning rates included.
    records = read_metrics(run.metrics)
    keys = {k for r in records for k in r}
    assert {"elbo", "nll", "kl", "signal_mse", "direct", "lr_vae"} <= keys
    assert any(r["kind"] == "val" for r in records)
    plot_curves(records[:3], tmp_path / "early.png", "cosdd training", monitor="elbo")
    plot_curves(records, tmp_path / "late.png", "cosdd training", monitor="elbo")
    assert (tmp_path / "early.png").read_bytes() != (tmp_path / "late.png").read_bytes()
