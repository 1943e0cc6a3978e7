"""Training on 2 processes (torchrun, gloo on CPU) gives what one process gives on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bmz_cosdd.artifacts.run_folder import RunFolder
from bmz_cosdd.training.checkpoints import load_checkpoint
from bmz_cosdd.training.distributed import World, check_world, micro_seed
from bmz_cosdd.errors import UserError
from helpers import tiny_blind_spot_config, tiny_config


def _config(method: str, data: Path, **train) -> dict:
    base = tiny_config(data) if method == "cosdd" else tiny_blind_spot_config(method, data)
    base["train"].update({"batch_size": 4, "max_steps": 4, "steps_per_epoch": 2, **train})
    return base


def _torchrun(tmp_path: Path, config: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "bmz_cosdd", "train", config["method"], "--config", str(path), "--out", str(out), "--quiet", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "terminate called without an active exception" in done.stderr and "--resume" not in extra:
        # An intermittent abort of a rank as its process tears down (torch's gloo threads; 2 of about 8 runs on
        # 2026-11-30, open in the notes): the same command once more, on a fresh folder.
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return done


def _train_losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in RunFolder(run).metrics.read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_checkpoint(RunFolder(a).last)["model"], load_checkpoint(RunFolder(b).last)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # batch-norm running statistics are rank 0's (documented)
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["n2v", "cosdd"])
def test_two_processes_match_one_on_the_same_global_batch_and_resume(tmp_path, noisy_stack, method):
    from bmz_cosdd.training.session import train

    one = tmp_path / "one"
    train(_config(method, noisy_stack, accumulate=2), one, progress=False)  # 2 micro-batches of 2 crops
    # 2 ranks x 1 micro-batch of 2 crops: 2 steps, then resumed on 2 processes for 2 more.
    two = tmp_path / "two"
    first = _torchrun(tmp_path, _config(method, noisy_stack, accumulate=1, max_steps=2), two)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "on 2 processes" in first.stderr and first.stderr.count(f"{method}: 2 steps") == 1  # rank 0 speaks
    resumed = _torchrun(tmp_path, _config(method, noisy_stack, accumulate=1), two, "--resume", "--max-steps", "4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(RunFolder(two).last)["step"] == 4

    losses_one, losses_two = _train_losses(one), _train_losses(two)
    assert [s for s, _ in losses_two] == [1, 2, 3, 4]  # every step logged once: rank 0 alone writes
    for (_, a), (_, b) in zip(losses_one, losses_two):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    _assert_same_weights(one, two, atol=1e-4)


@pytest.mark.slow
def test_batch_that_the_processes_cannot_share_is_one_line(tmp_path, noisy_stack):
    done = _torchrun(tmp_path, _config("n2v", noisy_stack, batch_size=3), tmp_path / "bad")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: train.batch_size 3 cannot be shared by 2 process(es) x 1 accumulation step(s):"
                      " make it a multiple of 2"]
    # torchrun reports the failed child with a traceback of its own launcher; none comes from our processes.
    assert "bmz_cosdd/" not in done.stderr and "UserError" not in done.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_world_helpers():
    assert check_world(8, 2, World(0, 2)) == 2
    with pytest.raises(UserError, match="more processes than crops"):
        check_world(2, 1, World(0, 4))
    seeds = {micro_seed(0, step, j) for step in range(3) for j in range(4)}
    assert len(seeds) == 12 and micro_seed(5, 1, 2) == micro_seed(5, 1, 2)
