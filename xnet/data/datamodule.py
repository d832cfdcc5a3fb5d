"""The LightningDataModule: training patches from one or more sources, whole-image validation."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset

from xnet.data.datasets import EvalDataset, PatchDataset
from xnet.data.device import DevicePatchSampler, DrawTokens, PackedImages, is_draw_token
from xnet.protocol.tasks import Task

LOADERS = ("device", "workers")


class RestorationDataModule(L.LightningDataModule):
    """Args:
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
        loader: ``device`` — the training set lives on the training device as one uint8 tensor
            and whole batches are cropped, flipped and degraded there from one generator that is
            checkpointed (:mod:`xnet.data.device`; exact resumes); ``workers`` — a DataLoader over
            :class:`~xnet.data.datasets.PatchDataset` (for sets too big for the device).
        augment: ``flips`` (the paper's), ``dihedral`` (flips and 90° rotations) or ``none``
            (``device`` loader; the ``workers`` loader always flips).
        val_limit: score the first ``val_limit`` validation images only (quick runs).
    """

    def __init__(
        self,
        task: Task,
        train: Any,
        val: Any,
        test: Any = None,
        monitor: Any = None,
        patch_size: int = 80,
        batch_size: int = 64,
        samples_per_epoch: int = 64_000,
        num_workers: int = 0,
        loader: str = "device",
        augment: str = "flips",
        val_limit: int | None = None,
        seed: int = 0,
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
        self.sampler: DevicePatchSampler | None = None
        self._sampler_state: dict[str, Any] | None = None

    def _sources(self) -> list[Any]:
        sources = self.train_sources
        sources = list(sources.values()) if isinstance(sources, dict) else sources
        return list(sources) if isinstance(sources, (list, tuple)) else [sources]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.loader == "workers" and self.train_set is None:
            self._seed_rank()
            sources = self._sources()
            n = max(1, self.samples_per_epoch // len(sources))
            parts = [PatchDataset(s, self.task, self.patch_size, n) for s in sources]
            self.train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        if self.val_set is None:
            self.val_set = self._eval_set(self.val_source, self.val_limit)
        if self.monitor_set is None and self.monitor_source is not None:
            self.monitor_set = self._eval_set(self.monitor_source, None)

    def _seed_rank(self) -> None:
        """Several DDP ranks: PatchDataset draws crops from the global RNG, which every rank seeded
        alike — without workers (which Lightning seeds per rank) each would train on the same crops."""
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1 and self.num_workers == 0:
            torch.manual_seed(self.seed + 7919 * trainer.global_rank)

    def _eval_set(self, source: Any, limit: int | None) -> Any:
        data = EvalDataset(source, self.task, self.seed)
        return data if limit is None else Subset(data, range(min(limit, len(data))))

    # --- training ------------------------------------------------------------------------------
    def build_sampler(self, device: torch.device | str) -> DevicePatchSampler:
        """The device-resident sampler (one per process; DDP ranks draw from their own seeds)."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        images = PackedImages(self._sources(), self.task, self.patch_size).to(device)
        sampler = DevicePatchSampler(images, self.task, self.patch_size, self.batch_size, self.augment, seed=self.seed + 7919 * rank)
        if self._sampler_state is not None:
            sampler.load_state_dict(self._sampler_state)
        return sampler

    def train_dataloader(self) -> Any:
        if self.loader == "device":
            if self.sampler is None:
                device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
                self.sampler = self.build_sampler(device)
            return DrawTokens(max(1, self.samples_per_epoch // self.batch_size))
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=True,
            collate_fn=collate_patches,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device loader: the batch is drawn here, on the device, just before its step."""
        if is_draw_token(batch):
            return self.sampler.draw()
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()} if self.sampler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._sampler_state = state_dict.get("sampler")
        if self.sampler is not None and self._sampler_state is not None:
            self.sampler.load_state_dict(self._sampler_state)

    # --- evaluation ----------------------------------------------------------------------------
    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [DataLoader(s, batch_size=1, num_workers=0, collate_fn=_single) for s in (self.val_set, self.monitor_set) if s is not None]
        return loaders[0] if len(loaders) == 1 else loaders


def collate_patches(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack patches; where only some carry a real input (paired + synthetic sources mixed), the
    others get a zero placeholder and ``has_input`` tells the module which to degrade itself."""
    out = {"target": torch.stack([b["target"] for b in batch])}
    has = [("input" in b) for b in batch]
    if any(has):
        out["input"] = torch.stack([b.get("input", torch.zeros_like(b["target"])) for b in batch])
        if not all(has):
            out["has_input"] = torch.tensor(has)
    return out


def _single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole images differ in size: evaluate one at a time, adding the batch dimension here."""
    (item,) = batch
    return {**item, "input": item["input"][None], "target": item["target"][None]}
