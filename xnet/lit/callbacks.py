"""Callbacks for long runs trained in chunks (e.g. ≤10-minute GPU leases)."""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from xnet.protocol.atomic import write_json


class WallClock(Callback):
    """Training wall-clock time, summed across resumed chunks, and the time at which the PSNR first
    reached each milestone (``time_to/29.20`` …), logged and kept in checkpoints. The PSNR is the
    monitor set's (``monitor/psnr``, e.g. the test set whose published figure the milestones are)
    when one is configured, else the validation set's."""

    def __init__(self, milestones: Sequence[float] = ()) -> None:
        self.milestones = sorted(float(m) for m in milestones)
        self.elapsed = 0.0
        self.reached: dict[str, float] = {}
        self._start: float | None = None
        self._val_start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def _now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val_s = time.perf_counter() - self._val_start
        metrics = trainer.callback_metrics
        psnr = metrics.get("monitor/psnr", metrics.get("val/psnr"))
        if psnr is None or trainer.sanity_checking:
            return
        now = self._now()
        for m in self.milestones:
            key = f"{m:.2f}"
            if key not in self.reached and float(psnr) >= m:
                self.reached[key] = now
        metrics = {"time/train_s": now, "time/val_s": val_s, **{f"time_to/{k}": v for k, v in self.reached.items()}}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.elapsed, self._start = self._now(), None

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self._now(), "reached": dict(self.reached)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed, self.reached = float(state_dict["elapsed"]), dict(state_dict["reached"])


class TimePerChunk(Callback):
    """``trainer.max_time`` is the time of *this* chunk: Lightning's Timer restores the training
    time of earlier chunks from the checkpoint, so with the same ``max_time`` every resumed chunk
    stopped at once and the step count never moved again. Its saved state is dropped on load (the
    summed time across chunks is :class:`WallClock`'s ``time/train_s``)."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for key in [k for k in checkpoint.get("callbacks") or {} if str(k).startswith("Timer")]:
            del checkpoint["callbacks"][key]


class PruneUntrackedBest(Callback):
    """``save_top_k`` after a resume: a run killed between writing a new ``best-*`` and removing
    the one it displaced resumes from a state that knows only one of them; the other stayed
    forever. At the start of training (the ModelCheckpoint's state restored), the files of its
    own filename pattern it does not track are removed."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.callbacks import ModelCheckpoint

        if not trainer.is_global_zero:
            return
        for cb in trainer.checkpoint_callbacks:
            # only a state restored from this very folder (best_k_models filled) says which files are the run's
            if not isinstance(cb, ModelCheckpoint) or not cb.best_k_models or not cb.filename or cb.save_top_k < 0:
                continue
            prefix = cb.filename.split("{")[0]
            tracked = {Path(p).resolve() for p in (*cb.best_k_models, cb.best_model_path, cb.last_model_path) if p}
            for f in Path(cb.dirpath).glob(f"{glob.escape(prefix)}*{cb.FILE_EXTENSION}"):
                if prefix and f.resolve() not in tracked:
                    logging.getLogger("xnet.train").info(
                        "removed %s: not among the run's top-%d checkpoints", f, cb.save_top_k
                    )
                    f.unlink(missing_ok=True)


class SaveLastOnStop(Callback):
    """Write ``last.ckpt`` whenever training stops other than by an error: ``max_time`` reached
    mid-interval, max_steps, or a signal — SIGTERM (a scheduler's or ``kill``'s) and SIGINT
    (Ctrl-C) — so a chunk never loses the steps since its last validation.

    Signals stop cleanly: Lightning notes a SIGTERM and stops at the next step boundary on every
    rank (``SIGTERMException``), where this callback saves; a first SIGINT is turned into that same
    stop (a second one interrupts at once, as usual). :attr:`stopped_by` is the signal, if any.
    The best checkpoint (``best-*.ckpt``) is the ModelCheckpoint's and is kept separately.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.stopped_by: int | None = None
        self._sigint_seen = False
        self._previous_sigint: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stopped_by, self._sigint_seen = None, False
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._sigint_seen = True
        self._restore_sigint()  # a second Ctrl-C interrupts at once
        logging.getLogger("xnet.train").warning(
            "SIGINT: stopping after this step and saving last.ckpt (Ctrl-C again to abort)"
        )
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's clean stop, on every rank

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.dirpath / "last.ckpt")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException) or trainer.fast_dev_run:
            return
        self.stopped_by = signal.SIGINT if self._sigint_seen else signal.SIGTERM
        trainer.save_checkpoint(self.dirpath / "last.ckpt")
        logging.getLogger("xnet.train").warning(
            "%s at step %d: saved %s",
            signal.Signals(self.stopped_by).name,
            trainer.global_step,
            self.dirpath / "last.ckpt",
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()


class ProgressLog(Callback):
    """A log line every ``every`` steps (step, loss, learning rate, steps/s) where no progress bar
    runs (``trainer=gpu`` turns the bar off: refreshing it reads the loss from the GPU each step)."""

    def __init__(self, every: int = 500) -> None:
        self.every = max(1, int(every))
        self._last: tuple[int, float] | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if trainer.progress_bar_callback is not None or step % self.every:
            return
        now = time.perf_counter()
        rate = (step - self._last[0]) / (now - self._last[1]) if self._last else float("nan")
        self._last = (step, now)
        loss = trainer.callback_metrics.get("train/loss")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        logging.getLogger("xnet.train").info(
            "step %d/%d  loss %.3e  lr %.2e  %.2f steps/s",
            step,
            trainer.max_steps,
            float(loss) if loss is not None else float("nan"),
            lr,
            rate,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = (trainer.global_step, time.perf_counter())


class StepProfile(Callback):
    """Profile ``steps`` training steps, ``start`` steps into this process's training (after warm-up,
    also when resumed), and write ``profile.json`` to ``dirpath``:
        the wall time per step, the device's busy time (sum of kernel times: one stream, so kernels do
        not overlap) as a fraction of it, and the top operators by device time. A busy fraction near 1
        means no input-pipeline or host stalls; on CPU the kernel time is the CPU operator time."""

    def __init__(self, dirpath: str | Path, start: int = 200, steps: int = 20, top: int = 15) -> None:
        self.dirpath, self.start, self.steps, self.top = Path(dirpath), int(start), int(steps), int(top)
        self._prof: Any = None
        self._done = False
        self._t0 = 0.0
        self._first: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first = trainer.global_step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step != (self._first or 0) + self.start or self._prof is not None or self._done:
            return
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pl_module.device.type == "cuda" else [])
        self._sync(pl_module)
        self._prof = profile(activities=acts)
        self._prof.__enter__()
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._prof is None or trainer.global_step < (self._first or 0) + self.start + self.steps:
            return
        self._sync(pl_module)
        wall = time.perf_counter() - self._t0
        self._prof.__exit__(None, None, None)
        prof, self._prof, self._done = self._prof, None, True
        events = prof.key_averages()
        if pl_module.device.type == "cuda":  # each kernel counts once, as self time of the op that launched it
            ops = [e for e in events if e.device_type.name != "CUDA"]
            busy_us = sum(e.self_device_time_total for e in ops)
            cost = lambda e: e.self_device_time_total  # noqa: E731
        else:
            busy_us = sum(e.self_cpu_time_total for e in events)
            ops = list(events)
            cost = lambda e: e.self_cpu_time_total  # noqa: E731
        top = sorted(ops, key=cost, reverse=True)[: self.top]
        report = {
            "device": str(pl_module.device),
            "steps": self.steps,
            "from_step": (self._first or 0) + self.start,
            "wall_ms_per_step": 1e3 * wall / self.steps,
            "busy_ms_per_step": busy_us / 1e3 / self.steps,
            "busy_fraction": busy_us / 1e6 / wall,
            "top_ops": [
                {"name": e.key, "ms_per_step": cost(e) / 1e3 / self.steps, "calls_per_step": e.count / self.steps}
                for e in top
            ],
        }
        write_json(self.dirpath / "profile.json", report)
        logging.getLogger("xnet.train").info(
            "profile: %.2f ms/step wall, device busy %.0f%%", report["wall_ms_per_step"], 100 * report["busy_fraction"]
        )

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            import torch

            torch.cuda.synchronize(pl_module.device)


class GradNormLog(Callback):
    """``train/grad_norm``: the L2 norm of all gradients at each logged step, before the optimiser uses
    them (Fig 6's question: do a variant's gradients explode in deeper nets?)."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if trainer.global_step % max(1, trainer.log_every_n_steps):
            return
        grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("train/grad_norm", torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
