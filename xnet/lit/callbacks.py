"""Callbacks for long runs trained in chunks (e.g. ≤10-minute GPU leases)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback


class WallClock(Callback):
    """Training wall-clock time, summed across resumed chunks, and the time at which the validation
    PSNR first reached each milestone (``time_to/29.20`` …), logged and kept in checkpoints."""

    def __init__(self, milestones: Sequence[float] = ()) -> None:
        self.milestones = sorted(float(m) for m in milestones)
        self.elapsed = 0.0
        self.reached: dict[str, float] = {}
        self._start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def _now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        psnr = trainer.callback_metrics.get("val/psnr")
        if psnr is None or trainer.sanity_checking:
            return
        now = self._now()
        for m in self.milestones:
            key = f"{m:.2f}"
            if key not in self.reached and float(psnr) >= m:
                self.reached[key] = now
        metrics = {"time/train_s": now, **{f"time_to/{k}": v for k, v in self.reached.items()}}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.elapsed, self._start = self._now(), None

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self._now(), "reached": dict(self.reached)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed, self.reached = float(state_dict["elapsed"]), dict(state_dict["reached"])


class SaveLastOnStop(Callback):
    """Write ``last.ckpt`` when training stops for any reason other than an error (``max_time``
    reached mid-interval, or max_steps): a chunk never loses the steps since its last validation."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.dirpath / "last.ckpt")
