"""Callbacks for long runs trained in chunks (e.g. ≤10-minute GPU leases) and that report themselves."""

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
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

from xnet.protocol.atomic import write_json
from xnet.utils.logs import FILE_ONLY
from xnet.utils.progress import duration


class WallClock(Callback):
    """Training wall-clock time (validations included) and the part spent validating, both summed
    across resumed chunks, and the time at which the PSNR first reached each milestone
    (``time_to/29.20`` …), logged and kept in checkpoints. The PSNR is the monitor set's
    (``monitor/psnr``, e.g. the test set whose published figure the milestones are) when one is
    configured, else the validation set's."""

    def __init__(self, milestones: Sequence[float] = ()) -> None:
        self.milestones = sorted(float(m) for m in milestones)
        self.elapsed = 0.0
        self.validating = 0.0
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
        if trainer.sanity_checking:
            return
        self.validating += val_s
        metrics = trainer.callback_metrics
        psnr = metrics.get("monitor/psnr", metrics.get("val/psnr"))
        if psnr is None:
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

    def times(self) -> dict[str, float]:
        """``time/train_s`` (all chunks, validations included) and ``time/val_total_s`` (the validations)."""
        return {"time/train_s": self._now(), "time/val_total_s": self.validating}

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self._now(), "reached": dict(self.reached), "validating": self.validating}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed, self.reached = float(state_dict["elapsed"]), dict(state_dict["reached"])
        self.validating = float(state_dict.get("validating", 0.0))  # checkpoints before it was kept: 0


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
    """The run reports itself in its log, for a log file or a console without a bar: every ``every``
    steps (or ``every_s`` seconds, whichever comes first) the step, loss, learning rate, steps/s and the
    time left to ``max_steps`` or to this chunk's ``max_time``; after each validation its PSNR and the
    best so far (kept in checkpoints: :attr:`best`). The lines always reach the log file
    (``<run dir>/train.log``); a console that shows a progress bar skips them (:data:`FILE_ONLY`)."""

    def __init__(self, every: int = 500, every_s: float = 60.0) -> None:
        self.every, self.every_s = max(1, int(every)), float(every_s)
        self.best: tuple[float, int] | None = None  # (val/psnr, step) of the best validation
        self._start: tuple[int, float] | None = None  # (step, time) where this process began training
        self._last: tuple[int, float] | None = None  # (step, time) of the last step line, validations left out
        self._val_start = 0.0

    def _log(self, trainer: L.Trainer, message: str, *args: Any) -> None:
        if trainer.is_global_zero:
            extra = None if trainer.progress_bar_callback is None else FILE_ONLY
            logging.getLogger("xnet.train").info(message, *args, extra=extra)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = (trainer.global_step, time.perf_counter())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, now = trainer.global_step, time.perf_counter()
        last_step, last_time = self._last or (step, now)
        if step == last_step or (step % self.every and now - last_time < self.every_s):
            return
        self._last = (step, now)
        loss = trainer.callback_metrics.get("train/loss")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        self._log(
            trainer,
            "step %s  loss %.3e  lr %.2e  %.2f steps/s  %s",
            f"{step}/{trainer.max_steps}" if trainer.max_steps > 0 else step,
            float(loss) if loss is not None else float("nan"),
            lr,
            (step - last_step) / max(now - last_time, 1e-9),
            self.time_left(trainer, step, now),
        )

    def time_left(self, trainer: L.Trainer, step: int, now: float) -> str:
        """``ETA 3 min 05 s (max_steps)``: at this process's pace so far, validations included, to
        ``max_steps`` or to the end of this chunk's ``max_time``, whichever comes first."""
        from lightning.pytorch.callbacks import Timer

        first_step, started = self._start or (step, now)
        ends: list[tuple[float, str]] = []
        if trainer.max_steps > 0 and step > first_step:
            ends.append(((trainer.max_steps - step) * (now - started) / (step - first_step), "max_steps"))
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer.time_remaining() is not None:
            ends.append((timer.time_remaining(), "max_time"))
        if not ends:
            return ""
        seconds, which = min(ends)
        return f"ETA {duration(seconds)} ({which})"

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last is not None:  # steps/s counts training only
            self._last = (self._last[0], self._last[1] + time.perf_counter() - self._val_start)
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or "val/psnr" not in metrics:
            return
        psnr, step = float(metrics["val/psnr"]), trainer.global_step
        if self.best is None or psnr > self.best[0]:
            self.best = (psnr, step)
        said = f"validation at step {step}: PSNR {psnr:.2f} dB"
        if "val/psnr_input" in metrics:
            said += f" (input {float(metrics['val/psnr_input']):.2f} dB)"
        if "monitor/psnr" in metrics:
            said += f", monitor set {float(metrics['monitor/psnr']):.2f} dB"
        self._log(trainer, "%s; best %.2f dB at step %d", said, *self.best)

    def state_dict(self) -> dict[str, Any]:
        return {"best": list(self.best) if self.best else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best = state_dict.get("best")
        self.best = (float(best[0]), int(best[1])) if best else None


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar over the run's steps (``steps 1200/30000``) instead of each epoch's
    batches: a run that stops at ``max_steps`` has no last epoch (the bar read ``Epoch 4/-2``)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset()
        bar.total = trainer.max_steps if trainer.max_steps > 0 else None
        bar.initial = bar.n = bar.last_print_n = trainer.global_step  # a resumed run's rate counts its own steps
        bar.unit = "step"
        bar.set_description("steps")

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """One bar for the whole run: nothing to reset."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if not bar.disable and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes


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
