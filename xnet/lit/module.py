"""``RestorationModule``: any net × any task, MSE, Adam with the paper's step schedule."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from xnet.archs.common import Restorer
from xnet.archs.params import param_summary
from xnet.data.io import save_image
from xnet.metrics import image_metrics
from xnet.tasks import Task

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training diverged; raised before the optimiser step so no bad weights are saved."""


class RestorationModule(L.LightningModule):
    """Args:
        net: the architecture (an ``nn.Module`` from ``xnet.archs``).
        task: the task (degradation, colour space, scoring).
        lr, milestones, gamma: Adam's rate, multiplied by ``gamma`` at each step in ``milestones``
            (the paper: 1e-3 → 1e-4).
        channels_last: NHWC memory layout (≈2× faster convs on CPU, needed for tensor cores).
        log_images: validation images whose (input, output, target) triplets are logged.
        config: the resolved run config, stored in every checkpoint so a checkpoint is self-contained.
    """

    def __init__(
        self,
        net: nn.Module,
        task: Task,
        lr: float = 1e-3,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        betas: Sequence[float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        channels_last: bool = True,
        log_images: int = 3,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "task", "config"])
        self.task = task
        self.restorer = Restorer(net, residual=task.residual)
        self.config = config
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.restorer.to(memory_format=self.memory_format)
        self.val_psnr, self.val_ssim, self.val_psnr_input = MeanMetric(), MeanMetric(), MeanMetric()
        self.params = param_summary(net)

    @property
    def net(self) -> nn.Module:
        return self.restorer.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.restorer(x.contiguous(memory_format=self.memory_format))

    # --- training -------------------------------------------------------------------------------
    def make_pair(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, target)``: the degradation is drawn on the device; real inputs (paired data)
        are kept, and mixed batches degrade only the patches without one."""
        clean, given = batch["target"], batch.get("input")
        if given is not None and "has_input" in batch:
            keep = batch["has_input"].view(-1, 1, 1, 1)
            given = torch.where(keep, given, self.task.degradation.train(clean))
        return self.task.train_pair(clean, given)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inp, target = self.make_pair(batch)
        output = self(inp)
        loss = F.mse_loss(output.float(), target.float())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at step {self.global_step}; weights were not updated. "
                "The last good checkpoint is the run's last.ckpt; lower optim.lr or check the data."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=output.shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(hp.milestones), gamma=hp.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_hyperparams({**self.params, **self.task.describe()})
        log.info("parameters: paper convention %s, trainable %s", f"{self.params['params_paper']:,}", f"{self.params['params_trainable']:,}")

    # --- validation -----------------------------------------------------------------------------
    def score(self, output: torch.Tensor, target: torch.Tensor, grey_source: bool = False) -> dict[str, torch.Tensor]:
        space = self.task.metric_space
        return image_metrics(space(output, grey_source), space(target, grey_source), self.task.border)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        inp, target = batch["input"], batch["target"]
        output = self(inp).float()
        scores = self.score(output, target, batch["grey_source"])
        self.val_psnr.update(scores["psnr"])
        self.val_ssim.update(scores["ssim"])
        if inp.shape == target.shape:
            self.val_psnr_input.update(self.score(inp, target, batch["grey_source"])["psnr"])
        if batch_idx < self.hparams.log_images and not self.trainer.sanity_checking:
            self._log_triplet(batch["name"], inp[0], output[0], target[0])

    def on_validation_epoch_end(self) -> None:
        self.log("val/psnr", self.val_psnr.compute(), prog_bar=True)
        self.log("val/ssim", self.val_ssim.compute())
        if self.val_psnr_input.update_count:
            self.log("val/psnr_input", self.val_psnr_input.compute())
        for m in (self.val_psnr, self.val_ssim, self.val_psnr_input):
            m.reset()

    def _log_triplet(self, name: str, inp: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> None:
        """(input | output | target) to every logger that takes images, and as PNGs in the run dir."""
        images = [t.detach().float().clamp(0, 1).cpu() for t in (inp, output, target)]
        if images[0].shape != images[2].shape:  # SR: show the input at the target's size
            images[0] = F.interpolate(images[0][None], size=images[2].shape[-2:], mode="nearest")[0]
        panel = torch.cat(images, dim=-1)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"val/{name}", images=[panel], caption=["input | output | target"], step=self.global_step)
        if self.trainer.log_dir:
            save_image(panel, Path(self.trainer.log_dir) / "images" / f"step{self.global_step:07d}_{name}.png")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["xnet"] = {"config": self.config, **self.params}
