"""One trainer for every method.

The method supplies its losses and optimisers; the trainer owns the loop: gradient
accumulation, deterministic validation on fixed crops, plateau schedulers, early
stopping, limits by steps, epochs or wall time, atomic best/last checkpoints with
optimiser, scheduler and RNG state (exact resume), Ctrl-C, NaN detection, progress
and metrics.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from bmz_cosdd.config import TrainConfig
from bmz_cosdd.data.crops import RandomCrops
from bmz_cosdd.errors import TrainingDiverged
from bmz_cosdd.methods.base import Method
from bmz_cosdd.artifacts.run_folder import RunFolder
from bmz_cosdd.training.checkpoints import save_checkpoint
from bmz_cosdd.training.device import autocast_for
from bmz_cosdd.training.distributed import LossModule, World, check_world, micro_seed
from bmz_cosdd.training.loss_log import LossLog, plot_curves, read_metrics


@dataclass
class TrainResult:
    """How a training run ended."""

    steps: int
    epochs: int
    best: float
    stopped: str
    seconds: float
    steps_per_s: float
    quality: Any = None  # the QualityReport of the best checkpoint, set after training


@contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C into a flag checked between steps, so a checkpoint is never
    taken half-way through an update; a second Ctrl-C interrupts at once."""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    """Runs the training loop of one method on one model.

    Parameters
    ----------
    method
        The method (losses, optimisers).
    model
        Its networks, already on ``device``.
    cfg
        Training settings.
    run
        Run folder for checkpoints and metrics.
    crops
        Random training crops (normalised), whose generator is checkpointed.
    val_crops
        Fixed validation crops (normalised).
    device
        Where the model runs.
    checkpoint_extra
        Plain values stored in every checkpoint (config, statistics, channels).
    progress
        Show a progress bar.
    world
        The training processes (see :mod:`bmz_cosdd.training.distributed`); one by default.
    """

    def __init__(
        self,
        method: Method,
        model: nn.Module,
        cfg: TrainConfig,
        run: RunFolder,
        crops: RandomCrops,
        val_crops: torch.Tensor,
        device: torch.device,
        checkpoint_extra: dict[str, Any],
        progress: bool = True,
        world: World = World(),
    ) -> None:
        self.world = world
        self.micro = check_world(cfg.batch_size, cfg.accumulate, world)
        self.method = method
        self.model = model
        self.cfg = cfg
        self.run = run
        self.crops = crops
        self.val_crops = val_crops
        self.device = device
        self.extra = checkpoint_extra
        self.show_progress = progress and world.is_main
        self.specs = method.optimisers(model, cfg.lr, cfg.lr_factor, cfg.lr_patience)
        self.losses = LossModule(method, model)
        if world.active:
            from torch.nn.parallel import DistributedDataParallel

            self.losses = DistributedDataParallel(
                self.losses, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,  # e.g. HDN's deactivated levels
            )
        self.step = 0
        self.best = math.inf
        self.best_step = 0
        self.bad_validations = 0
        self.elapsed = 0.0  # training seconds before the current fit() call
        self._started = time.monotonic()
        self.last_good_step: int | None = None

    # -- state -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        rng = {
            "torch": torch.get_rng_state(),
            "crops": self.crops.generator.get_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            **self.extra,
            "model": self.model.state_dict(),
            "optimisers": {s.name: s.optimizer.state_dict() for s in self.specs},
            "schedulers": {s.name: s.scheduler.state_dict() for s in self.specs},
            "step": self.step,
            "best": self.best,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "elapsed": self.time_used(),
            "rng": rng,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore everything saved by :meth:`state` so training continues exactly."""
        self.model.load_state_dict(state["model"])
        for s in self.specs:
            s.optimizer.load_state_dict(state["optimisers"][s.name])
            s.scheduler.load_state_dict(state["schedulers"][s.name])
        self.step = int(state["step"])
        self.best = float(state["best"])
        self.best_step = int(state.get("best_step", 0))
        self.bad_validations = int(state["bad_validations"])
        self.elapsed = float(state["elapsed"])
        torch.set_rng_state(state["rng"]["torch"])
        self.crops.generator.set_state(state["rng"]["crops"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.last_good_step = self.step

    def time_used(self) -> float:
        """Training seconds so far, earlier sessions of a resumed run included."""
        return self.elapsed + time.monotonic() - self._started

    def save(self, best: bool) -> None:
        self.last_good_step = self.step
        if not self.world.is_main:
            return
        state = self.state()
        save_checkpoint(state, self.run.last)
        if best:
            save_checkpoint(state, self.run.best)

    # -- loop ------------------------------------------------------------------
    def total_steps(self) -> int | None:
        limits = []
        if self.cfg.max_steps is not None:
            limits.append(self.cfg.max_steps)
        if self.cfg.max_epochs is not None:
            limits.append(self.cfg.max_epochs * self.cfg.steps_per_epoch)
        return min(limits) if limits else None

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses over the fixed validation crops with a fixed noise seed (deterministic)."""
        self.model.eval()
        micro = self.micro
        sums: dict[str, float] = {}
        count = 0
        devices = [self.device] if self.device.type == "cuda" else []
        generator = torch.Generator().manual_seed(self.cfg.seed + 3)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed)
            for chunk in self.val_crops.split(micro):
                with autocast_for(self.device, self.cfg.precision):
                    losses = self.method.training_losses(self.model, chunk.to(self.device), generator)
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * len(chunk)
                count += len(chunk)
        self.model.train()
        return {key: value / count for key, value in sums.items()}

    def _train_step(self) -> dict[str, float]:
        """One optimiser step over this process's shard of the global batch (see training.distributed)."""
        accumulate, micro, rank = self.cfg.accumulate, self.micro, self.world.rank
        for s in self.specs:
            s.optimizer.zero_grad(set_to_none=True)
        per_rank = accumulate * micro
        shard = self.crops.sample(self.cfg.batch_size, slice(rank * per_rank, (rank + 1) * per_rank))
        devices = [self.device] if self.device.type == "cuda" else []
        terms: dict[str, float] = {}
        for a in range(accumulate):
            batch = shard[a * micro : (a + 1) * micro].to(self.device)
            seed = micro_seed(self.cfg.seed, self.step, rank * accumulate + a)
            last = a == accumulate - 1
            sync = self.losses.no_sync() if self.world.active and not last else contextlib.nullcontext()
            with sync, torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                with autocast_for(self.device, self.cfg.precision):
                    losses = self.losses(batch, torch.Generator().manual_seed(seed))
                loss = losses["loss"]
                if self.world.any(not bool(torch.isfinite(loss))):
                    kept = (
                        f"the last good checkpoint (step {self.last_good_step}) is kept in {self.run.last}"
                        if self.last_good_step is not None
                        else "no checkpoint had been written yet"
                    )
                    raise TrainingDiverged(
                        f"training diverged: the loss is {float(loss.detach())} at step {self.step + 1}; {kept}"
                        " (try a lower --lr or check the data for outliers)"
                    )
                (loss / accumulate).backward()
            for key, value in losses.items():
                terms[key] = terms.get(key, 0.0) + float(value.detach()) / accumulate
        for s in self.specs:
            s.optimizer.step()
        self.step += 1
        return terms

    def _stop_flags(self, interrupt: dict[str, bool]) -> tuple[bool, bool]:
        """(interrupted, out of time) as rank 0 sees them, so every process stops at the same step."""
        timed_out = self.cfg.max_time is not None and self.time_used() >= self.cfg.max_time
        return self.world.broadcast((interrupt["hit"], timed_out))

    def fit(self, resume_state: dict[str, Any] | None = None) -> TrainResult:
        """Train until a limit, early stopping or Ctrl-C; returns how it ended."""
        if resume_state is not None:
            self.load_state(resume_state)
        log = (LossLog(self.run.metrics, keep_until_step=self.step if resume_state is not None else None)
               if self.world.is_main else None)
        total = self.total_steps()
        log_every = max(1, min(self.cfg.steps_per_epoch, 50) // 5)
        self.model.train()
        start = self._started = time.monotonic()
        start_step = self.step
        window: dict[str, float] = {}
        window_n = 0
        stopped = "limit"

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[terms]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            disable=not self.show_progress,
        )
        task = progress.add_task(
            f"train {self.method.name}", total=total, completed=self.step, terms="", rate=""
        )
        try:
            with progress, _deferred_interrupt() as interrupt:
                while True:
                    if total is not None and self.step >= total:
                        break
                    interrupted, timed_out = self._stop_flags(interrupt)
                    if interrupted:
                        raise KeyboardInterrupt
                    if timed_out:
                        stopped = "time"
                        break
                    terms = self._train_step()
                    for key, value in terms.items():
                        window[key] = window.get(key, 0.0) + value
                    window_n += 1
                    rate = (self.step - start_step) / max(time.monotonic() - start, 1e-9)
                    shown = "  ".join(f"{k} {v:.4g}" for k, v in terms.items() if k != "loss")
                    progress.update(task, completed=self.step, terms=shown, rate=f"{rate:.2f} steps/s")
                    if self.step % log_every == 0:
                        record = self.world.mean({k: v / window_n for k, v in window.items()})
                        if log is not None:
                            log.write({"kind": "train", "step": self.step, **record, "steps_per_s": rate})
                        window, window_n = {}, 0
                    at_limit = (total is not None and self.step >= total) or self._stop_flags(interrupt)[1]
                    if self.step % self.cfg.steps_per_epoch == 0 or at_limit:
                        if self._end_epoch(log):
                            stopped = "early stopping"
                            break
        except KeyboardInterrupt:
            self.save(best=False)
            stopped = "interrupted"
        seconds = time.monotonic() - start
        return TrainResult(
            steps=self.step,
            epochs=self.step // self.cfg.steps_per_epoch,
            best=self.best,
            stopped=stopped,
            seconds=self.time_used(),
            steps_per_s=(self.step - start_step) / max(seconds, 1e-9),
        )

    def _end_epoch(self, log: LossLog | None) -> bool:
        """Validate, step the schedulers, checkpoint; True when early stopping triggers."""
        val = self.world.broadcast(self.validate())
        self.method.check_validation(self.model, val, self.step)
        for s in self.specs:
            if s.monitor in val:
                s.scheduler.step(val[s.monitor])
        score = val[self.method.monitor]
        if not math.isfinite(score):
            raise TrainingDiverged(
                f"training diverged: the validation {self.method.monitor} is {score} at step {self.step};"
                f" the last good checkpoint (step {self.last_good_step}) is kept in {self.run.last}"
            )
        improved = score < self.best
        if improved:
            self.best, self.best_step, self.bad_validations = score, self.step, 0
        else:
            self.bad_validations += 1
        self.save(best=improved)
        if log is None:
            return self.bad_validations >= self.cfg.patience
        lrs = {f"lr_{s.name}": s.optimizer.param_groups[0]["lr"] for s in self.specs}
        log.write({"kind": "val", "step": self.step, "epoch": self.step // self.cfg.steps_per_epoch,
                   **val, **lrs, "time": self.time_used()})
        plot_curves(read_metrics(self.run.metrics), self.run.curves, title=f"{self.method.name} training",
                    monitor=self.method.monitor)
        return self.bad_validations >= self.cfg.patience
