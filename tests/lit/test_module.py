"""The LightningModule trains on the pairs its datamodule hands it, as they are: it never degrades."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from conftest import compose
from torch import nn
from torch.utils.data import DataLoader

from xnet.lit.module import RestorationModule
from xnet.protocol.degradations import Degradation
from xnet.protocol.tasks import Task


class Forbidden(Degradation):
    """A task whose degradation may not be called."""

    def train(self, clean, generator=None):
        raise AssertionError("the module degraded a training batch")

    def eval(self, clean, seed):
        raise AssertionError("the module degraded an image")


class Spy(nn.Module):
    """A 1×1 conv that records what it was given and what it returned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        self.seen.append((x.detach().clone(), y.detach().clone()))
        return y


class FixedPairs(L.LightningDataModule):
    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return DataLoader(self.batches, batch_size=None)  # each element is a batch


class Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.values.append(outputs["loss"].detach())


def test_the_module_trains_on_the_datamodules_pairs_unchanged():
    cfg = compose("train", ["paths.output_dir=/tmp/unused"])
    g = torch.Generator().manual_seed(0)
    batches = [{k: torch.rand(2, 1, 8, 8, generator=g) for k in ("input", "target")} for _ in range(3)]
    net = Spy()
    module = RestorationModule(net, Task("denoise", "grey", Forbidden(), residual=True), **cfg.optim, **cfg.module)
    losses = Losses()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[losses],
    )
    trainer.fit(module, datamodule=FixedPairs(batches))
    assert len(net.seen) == len(losses.values) == 3
    for batch, (x, y), loss in zip(batches, net.seen, losses.values):
        assert torch.equal(x, batch["input"])  # the input as drawn
        assert torch.equal(loss, F.mse_loss(x - y, batch["target"]))  # residual output against the target as drawn
