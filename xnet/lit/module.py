"""``RestorationModule``: any net × any task, MSE, Adam with the paper's step schedule or the
one-cycle fast recipe (:mod:`xnet.lit.schedules`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from xnet.archs.common import Restorer
from xnet.archs.params import param_summary
from xnet.lit.schedules import lr_factor
from xnet.protocol.io import save_image
from xnet.protocol.tasks import Task
from xnet.utils.compiling import compile_in_place
from xnet.utils.precision import exact_float32

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training diverged; raised before the optimiser step so no bad weights are saved."""


class RestorationModule(L.LightningModule):
    """Every argument but ``nonfinite_check_every`` comes from the run config, which is its one
    source (``optim``: ``conf/recipe/``; the rest: ``module`` in ``conf/train.yaml``); none has a
    default here.

    Args:
        net: the architecture (an ``nn.Module`` from ``xnet.archs``).
        task: the task (colour space, residual learning, scoring); the pairs come made from the
            datamodule (:mod:`xnet.data.device`), the module never degrades.
        lr: Adam's (peak) rate. ``schedule``: ``step`` — multiplied by ``gamma`` at each step in
            ``milestones`` (the paper: 1e-3 → 1e-4); ``onecycle`` — ``warmup`` (fraction of the
            steps) then a cosine to ``final_lr`` at ``trainer.max_steps``; ``wsd`` — warm-up, held,
            then linear to ``final_lr`` over the last ``decay`` fraction (:mod:`xnet.lit.schedules`).
        channels_last: NHWC memory layout (faster convs on CPU: ``eager`` vs ``eager_cl`` in
            ``results/benchmark_cpu.json``; needed for tensor cores).
        nonfinite_check_every: steps between checks that no loss was NaN/inf. With fused Adam a
            non-finite loss skips its update on the device (no host sync per step); the check then
            stops the run naming the first bad step. Without fused Adam it is checked every step.
        compile: ``torch.compile`` the restorer in place (state-dict keys unchanged); if compiling
            fails the run goes on eagerly, with a warning in the log and the reason in
            ``metrics.json`` (``compile``, ``compile_error``; :mod:`xnet.utils.compiling`). Off by
            default: measure it first (``scripts/benchmark.py --train-compile``).
        log_images: validation images whose (input, output, target) triplets are logged.
        config: the resolved run config, stored in every checkpoint so a checkpoint is self-contained.
    """

    def __init__(
        self,
        net: nn.Module,
        task: Task,
        *,
        lr: float,
        schedule: str,
        milestones: Sequence[int],
        gamma: float,
        warmup: float,
        final_lr: float,
        decay: float,
        betas: Sequence[float],
        weight_decay: float,
        channels_last: bool,
        log_images: int,
        compile: bool,
        nonfinite_check_every: int = 50,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # kept in checkpoints, not sent to the loggers: they get the whole run config once (optim.*, module.*)
        self.save_hyperparameters(ignore=["net", "task", "config"], logger=False)
        self.task = task
        self.restorer = Restorer(net, residual=task.residual)
        self.config = config
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.restorer.to(memory_format=self.memory_format)
        self.val_psnr, self.val_ssim, self.val_psnr_input = MeanMetric(), MeanMetric(), MeanMetric()
        self.monitor_psnr, self.monitor_ssim = MeanMetric(), MeanMetric()
        self.params = param_summary(net)
        self._bad_step: torch.Tensor | None = None  # first step with a non-finite loss (-1: none)
        #: how the restorer runs, for metrics.json: {} (eager), or compile_in_place's status
        self.compile_status: dict[str, str] = {}

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            # no process-wide suppress_errors: a failed compile falls back to eager visibly
            self.compile_status = compile_in_place(self.restorer, "restorer")
            self._compiled = True

    @property
    def net(self) -> nn.Module:
        return self.restorer.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.restorer(x.contiguous(memory_format=self.memory_format))

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """``batch`` is a training pair as the datamodule drew it (:mod:`xnet.data.device`): the
        module never degrades."""
        inp, target = batch["input"], batch["target"]
        output = self(inp)
        loss = F.mse_loss(output.float(), target.float())
        self._guard_nonfinite(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=output.shape[0])
        return loss

    def _guard_nonfinite(self, loss: torch.Tensor) -> None:
        """Make sure a non-finite loss never updates the weights. Fused Adam takes a device flag
        (``found_inf``) and skips the update itself, so the host need not wait for the GPU every
        step; the flag is read every ``nonfinite_check_every`` steps (:meth:`check_finite`)."""
        opt = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if opt is None or not opt.defaults.get("fused"):
            if not torch.isfinite(loss):
                self._raise_nonfinite(self.global_step, float(loss))
            return
        bad = ~torch.isfinite(loss.detach())
        opt.found_inf = bad.float()
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        self._bad_step = torch.where(bad & (self._bad_step < 0), self.global_step, self._bad_step)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if any loss since the start was NaN/inf (one host sync)."""
        if self._bad_step is not None and (step := int(self._bad_step)) >= 0:
            self._raise_nonfinite(step, float("nan"))

    def _raise_nonfinite(self, step: int, value: float) -> None:
        raise NonFiniteLossError(
            f"loss became {value} at step {step}; weights were not updated by it. {self._last_good()}; "
            "lower optim.lr or check the data."
        )

    def _last_good(self) -> str:
        """Where the last good weights are — said only if a checkpoint was saved before the loss broke."""
        callback = self._trainer.checkpoint_callback if self._trainer is not None else None
        last = Path(callback.dirpath) / "last.ckpt" if callback is not None and callback.dirpath else None
        return (
            f"The last good checkpoint is {last}"
            if last is not None and last.is_file()
            else "No checkpoint was saved before it"
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % max(1, self.hparams.nonfinite_check_every) == 0:
            self.check_finite()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.Adam(
            params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay, fused=_fused_ok(params)
        )
        total = self.trainer.max_steps if self._trainer is not None else 0
        factor = lr_factor(
            hp.schedule,
            hp.lr,
            total,
            milestones=hp.milestones,
            gamma=hp.gamma,
            warmup=hp.warmup,
            final_lr=hp.final_lr,
            decay=hp.decay,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- validation -----------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0 is the validation set (selects checkpoints), loader 1 the optional monitor set.
        Scored in full float32 (no autocast, no TF32), as the evaluation protocol is."""
        inp, target = batch["input"], batch["target"]
        with exact_float32(self.device.type):
            output = self(inp).float()
        scores = self.task.scores(output, target, batch["grey_source"])
        if dataloader_idx == 1:
            self.monitor_psnr.update(scores["psnr"])
            self.monitor_ssim.update(scores["ssim"])
            return
        self.val_psnr.update(scores["psnr"])
        self.val_ssim.update(scores["ssim"])
        if inp.shape == target.shape:
            self.val_psnr_input.update(self.task.scores(inp, target, batch["grey_source"])["psnr"])
        if batch_idx < self.hparams.log_images and not self.trainer.sanity_checking:
            self._log_triplet(batch["name"], inp[0], output[0], target[0], float(scores["psnr"].reshape(-1)[0]))

    def on_validation_epoch_end(self) -> None:
        self.log("val/psnr", self.val_psnr.compute(), prog_bar=True, add_dataloader_idx=False)
        self.log("val/ssim", self.val_ssim.compute(), add_dataloader_idx=False)
        if self.val_psnr_input.update_count:
            self.log("val/psnr_input", self.val_psnr_input.compute(), add_dataloader_idx=False)
        if self.monitor_psnr.update_count:
            self.log("monitor/psnr", self.monitor_psnr.compute(), add_dataloader_idx=False)
            self.log("monitor/ssim", self.monitor_ssim.compute(), add_dataloader_idx=False)
        for m in (self.val_psnr, self.val_ssim, self.val_psnr_input, self.monitor_psnr, self.monitor_ssim):
            m.reset()
        if not self.trainer.sanity_checking:
            self.check_finite()

    def _log_triplet(
        self, name: str, inp: torch.Tensor, output: torch.Tensor, target: torch.Tensor, psnr: float | None = None
    ) -> None:
        """(input | output | target) to every logger that takes images (the output's PSNR in the
        caption), and as PNGs in the run dir."""
        images = [t.detach().float().clamp(0, 1).cpu() for t in (inp, output, target)]
        if images[0].shape != images[2].shape:  # SR: show the input at the target's size
            images[0] = F.interpolate(images[0][None], size=images[2].shape[-2:], mode="nearest")[0]
        panel = torch.cat(images, dim=-1)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                caption = "input | output | target" + (f" — PSNR {psnr:.2f} dB" if psnr is not None else "")
                logger.log_image(key=f"val/{name}", images=[panel], caption=[caption], step=self.global_step)
        if self.trainer.log_dir:
            save_image(panel, Path(self.trainer.log_dir) / "images" / f"step{self.global_step:07d}_{name}.png")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a loss that went NaN since the last check left the weights alone (skipped updates) but not
        # the BN running statistics: refuse to write them over the last good checkpoint
        self.check_finite()
        checkpoint["xnet"] = {"config": self.config, **self.params}


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Fused Adam (one kernel for all tensors; takes the on-device skip flag) where supported."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = {p.device.type for p in params}
    return (
        bool(params)
        and devices <= set(_get_fused_kernels_supported_devices())
        and all(p.is_floating_point() for p in params)
    )
