"""The LightningDataModule: training patches from one source, whole-image validation on another."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader

from xnet.data.datasets import EvalDataset, PatchDataset
from xnet.tasks import Task


class RestorationDataModule(L.LightningDataModule):
    """Args:
        task: the task (colour space, degradation).
        train: a source, or a list / ``{name: source}`` mapping of sources (concatenated); ``val``: a source.
        patch_size: training crop (80 in the paper); for SR it is the high-resolution crop.
        batch_size: 64 in the paper.
        samples_per_epoch: patches per epoch (validation runs by step, so this only sets the pace
            of the data loader's re-shuffle).
        test: the test source (scored after fit by ``xnet.train``, and by ``xnet.evaluate``).
        val_limit: score the first ``val_limit`` validation images only (quick runs).
    """

    def __init__(
        self,
        task: Task,
        train: Any,
        val: Any,
        test: Any = None,
        patch_size: int = 80,
        batch_size: int = 64,
        samples_per_epoch: int = 64_000,
        num_workers: int = 0,
        val_limit: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.task, self.train_sources, self.val_source, self.test_source = task, train, val, test
        self.patch_size, self.batch_size, self.samples_per_epoch = patch_size, batch_size, samples_per_epoch
        self.num_workers, self.val_limit, self.seed = num_workers, val_limit, seed
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            sources = self.train_sources
            sources = list(sources.values()) if isinstance(sources, dict) else sources
            sources = sources if isinstance(sources, (list, tuple)) else [sources]
            n = max(1, self.samples_per_epoch // len(sources))
            parts = [PatchDataset(s, self.task, self.patch_size, n) for s in sources]
            self.train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        if self.val_set is None:
            val = EvalDataset(self.val_source, self.task, self.seed)
            if self.val_limit is not None:
                from torch.utils.data import Subset

                val = Subset(val, range(min(self.val_limit, len(val))))
            self.val_set = val

    def train_dataloader(self) -> DataLoader:
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

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, num_workers=0, collate_fn=_single)


def collate_patches(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack patches; where only some carry a real input (paired + synthetic sources mixed), the
    others get a zero placeholder and ``has_input`` tells the module which to degrade itself."""
    import torch

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
