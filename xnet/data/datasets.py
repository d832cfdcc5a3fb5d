"""Torch datasets over sources: training batches by number (the ``workers`` loader) and whole
evaluation images."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from xnet.data.device import PackedImages, PatchSampler
from xnet.protocol.tasks import Task


def item_generator(seed: int, number: int) -> torch.Generator:
    """The CPU generator of training item ``number``, seeded from ``(seed, number)`` through numpy's
    ``SeedSequence`` (neighbouring numbers give unrelated streams)."""
    high, low = np.random.SeedSequence([int(seed), int(number)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(high) << 32 | int(low))


class PatchDataset(Dataset):
    """Training pairs for DataLoader workers: item ``i`` is drawn on the CPU by a
    :class:`~xnet.data.device.PatchSampler` (the one that draws the ``device`` loader's batches) from
    :func:`item_generator` ``(seed, i)`` — a pure function of ``i``, whichever worker draws it. An
    item is a batch of ``batch_size`` pairs (the ``workers`` loader's unit: item ``i`` is batch number
    ``i``, drawn in one vectorised call), or one pair with ``batch_size=None``; it carries its
    ``number`` (the datamodule checkpoints the next one).

    Args:
        sources: one source, or a list of sources (each drawn equally often); a source yields
            ``(name, image)`` (degraded here) or ``(name, input, target)`` (the same crop of both).
        length: items per epoch (:class:`ItemNumbers` numbers them across epochs).
        augment: ``flips`` | ``dihedral`` | ``none``, as ``data.augment``.
    """

    def __init__(
        self,
        sources: Any,
        task: Task,
        patch_size: int,
        length: int,
        augment: str = "flips",
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        one = not isinstance(sources, list) or not sources or isinstance(sources[0], tuple)  # items: one source
        images = PackedImages([sources] if one else sources, task, patch_size)
        self.sampler = PatchSampler(images, task, patch_size, augment)
        self.length, self.seed, self.batch_size = length, seed, batch_size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, number: int) -> dict[str, Any]:
        pairs = self.sampler.pairs(self.batch_size or 1, item_generator(self.seed, number))
        if self.batch_size is None:
            pairs = {k: v[0] for k, v in pairs.items()}
        return {**pairs, "number": number}


class ItemNumbers(Sampler[int]):
    """The ``workers`` loader's indices: ``length`` item (batch) numbers per epoch from ``next``, the
    first number no training step has used yet — the datamodule advances it from each batch it hands
    to a step and restores it from the checkpoint, so a resumed run continues the uninterrupted run's
    stream."""

    def __init__(self, length: int, next_number: int = 0) -> None:
        self.length, self.next = length, next_number

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.next, self.next + self.length))


class EvalDataset(Dataset):
    """Whole images with a deterministic input: image ``i`` is degraded with seed ``seed + i``."""

    def __init__(self, source: Any, task: Task, seed: int = 0) -> None:
        self.source, self.task, self.seed = source, task, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.source[index]
        clean = self.task.clean_tensor(item[-1])
        given = self.task.clean_tensor(item[1]) if len(item) == 3 else None
        inp, target = self.task.eval_pair(clean, self.seed + index, given)
        grey = item[-1].shape[-1] == 1
        return {"name": item[0], "input": inp, "target": target, "index": index, "grey_source": grey}
