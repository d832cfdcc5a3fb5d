"""The LightningDataModule: training pairs from one or more sources, whole-image validation."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from xnet.data.datasets import EvalDataset, ItemNumbers, PatchDataset
from xnet.data.device import DevicePatchSampler, DrawTokens, PackedImages, is_draw_token
from xnet.protocol.tasks import Task

LOADERS = ("device", "workers")
RANK_STRIDE = 7919  # DDP rank r draws from seed + RANK_STRIDE·r


class RestorationDataModule(L.LightningDataModule):
    """The one owner of training pairs: every batch a step receives is ``{"input", "target"}``, drawn
    here (:mod:`xnet.data.device`) from the seed ``seed + 7919·rank`` and resumed exactly from the
    checkpoint, whichever the loader; the LightningModule never degrades.

    Args (the ``data:`` config node, ``conf/train.yaml``):
        task: the task (colour space, degradation).
        train: a source, or a list / ``{name: source}`` mapping of sources (each drawn equally often).
        val: the validation source: checkpoints are selected on it, so it is never a test set.
        test: the test source (scored once after fit by ``xnet.train``, and by ``xnet.evaluate``).
        monitor: optional extra whole-image set scored at every validation and logged as
            ``monitor/psnr`` (e.g. the test set, to time when a published figure is reached); never
            used to select a checkpoint.
        patch_size: training crop (80 in the paper); for SR it is the high-resolution crop.
        batch_size: 64 in the paper.
        samples_per_epoch: patches per epoch (validation runs by step, so this only sets the pace
            of the loader's epochs).
        loader: ``device`` — the training set lives on the training device as one uint8 tensor and
            whole batches are drawn there, from one generator whose state is checkpointed;
            ``workers`` — a DataLoader whose workers draw whole batches on the CPU, batch number
            ``n`` from a generator of ``(seed, n)``, the next number checkpointed (for sets too big
            for the device).
        augment: ``flips`` (the paper's), ``dihedral`` (flips and 90° rotations) or ``none``.
        val_limit: score the first ``val_limit`` validation images only (quick runs).
    """

    def __init__(
        self,
        task: Task,
        train: Any,
        val: Any,
        test: Any = None,
        monitor: Any = None,
        *,
        patch_size: int,
        batch_size: int,
        samples_per_epoch: int,
        num_workers: int,
        loader: str,
        augment: str,
        val_limit: int | None,
        seed: int,
    ) -> None:
        super().__init__()
        if loader not in LOADERS:
            raise ValueError(f"data.loader must be one of {LOADERS}, got {loader!r}")
        self.task, self.train_sources, self.val_source, self.test_source = task, train, val, test
        self.monitor_source = monitor
        self.patch_size, self.batch_size, self.samples_per_epoch = patch_size, batch_size, samples_per_epoch
        self.num_workers, self.loader, self.augment = num_workers, loader, augment
        self.val_limit, self.seed = val_limit, seed
        self.train_set = self.val_set = self.monitor_set = None
        self.sampler: DevicePatchSampler | None = None  # loader=device
        self.numbers: ItemNumbers | None = None  # loader=workers
        self._resume: dict[str, Any] = {}

    def _sources(self) -> list[Any]:
        sources = self.train_sources
        sources = list(sources.values()) if isinstance(sources, dict) else sources
        return list(sources) if isinstance(sources, (list, tuple)) else [sources]

    def _rank_seed(self) -> int:
        """DDP ranks draw from their own seeds (every rank would train on the same pairs otherwise)."""
        return self.seed + RANK_STRIDE * (self.trainer.global_rank if self.trainer is not None else 0)

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.samples_per_epoch // self.batch_size)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.loader == "workers" and self.train_set is None:
            self.train_set = PatchDataset(
                self._sources(),
                self.task,
                self.patch_size,
                self.batches_per_epoch,
                self.augment,
                seed=self._rank_seed(),
                batch_size=self.batch_size,
            )
        if self.val_set is None:
            self.val_set = self._eval_set(self.val_source, self.val_limit)
        if self.monitor_set is None and self.monitor_source is not None:
            self.monitor_set = self._eval_set(self.monitor_source, None)

    def _eval_set(self, source: Any, limit: int | None) -> Any:
        data = EvalDataset(source, self.task, self.seed)
        return data if limit is None else Subset(data, range(min(limit, len(data))))

    # --- training ------------------------------------------------------------------------------
    def build_sampler(self, device: torch.device | str) -> DevicePatchSampler:
        """The device-resident sampler (one per process)."""
        images = PackedImages(self._sources(), self.task, self.patch_size).to(device)
        seed = self._rank_seed()
        sampler = DevicePatchSampler(images, self.task, self.patch_size, self.batch_size, self.augment, seed=seed)
        if "sampler" in self._resume:
            sampler.load_state_dict(self._resume["sampler"])
        return sampler

    def train_dataloader(self) -> Any:
        if self.loader == "device":
            if self.sampler is None:
                device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
                self.sampler = self.build_sampler(device)
            return DrawTokens(self.batches_per_epoch)
        start = self.numbers.next if self.numbers is not None else self._resume.get("next_batch", 0)
        self.numbers = ItemNumbers(self.batches_per_epoch, start)
        return DataLoader(
            self.train_set,
            batch_size=None,  # an item is a batch
            sampler=self.numbers,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Workers loader: a batch on its way to a step moves the next batch number past it."""
        if isinstance(batch, dict) and "number" in batch:
            if self.numbers is not None:
                self.numbers.next = int(batch["number"]) + 1
            batch = {k: v for k, v in batch.items() if k != "number"}
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device loader: the batch is drawn here, on the device, just before its step."""
        if is_draw_token(batch):
            return self.sampler.draw()
        return batch

    def state_dict(self) -> dict[str, Any]:
        if self.sampler is not None:
            return {"sampler": self.sampler.state_dict()}
        if self.numbers is not None:
            return {"next_batch": self.numbers.next}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)
        if self.sampler is not None and "sampler" in state_dict:
            self.sampler.load_state_dict(state_dict["sampler"])
        if self.numbers is not None and "next_batch" in state_dict:
            self.numbers.next = int(state_dict["next_batch"])

    # --- evaluation ----------------------------------------------------------------------------
    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [
            DataLoader(s, batch_size=1, num_workers=0, collate_fn=_single)
            for s in (self.val_set, self.monitor_set)
            if s is not None
        ]
        return loaders[0] if len(loaders) == 1 else loaders


def _single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole images differ in size: evaluate one at a time, adding the batch dimension here."""
    (item,) = batch
    return {**item, "input": item["input"][None], "target": item["target"][None]}
