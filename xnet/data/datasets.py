"""Torch datasets over sources: random training patches and whole evaluation images."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from xnet.protocol.tasks import Task
from xnet.protocol.errors import ConfigError


def random_flip(tensors: Sequence[torch.Tensor], hflip: bool, vflip: bool) -> list[torch.Tensor]:
    """The same flips on every tensor of an aligned group (input/target pairs)."""
    out = []
    for t in tensors:
        t = t.flip(-1) if hflip else t
        out.append(t.flip(-2) if vflip else t)
    return out


class PatchDataset(Dataset):
    """Random ``patch_size`` crops with random flips, ``length`` samples per epoch.

    Sources yield ``(name, image)`` (the degradation is applied later, on the device, redrawn per
    sample) or ``(name, input, target)`` pairs (the same crop is cut from both).
    Patches are drawn from the global torch RNG, which Lightning seeds per worker.
    """

    def __init__(self, source: Any, task: Task, patch_size: int, length: int, flips: bool = True) -> None:
        self.source, self.task, self.patch_size, self.length, self.flips = source, task, patch_size, length, flips
        self.images = [tuple(task.clean_tensor(img) for img in item[1:]) for item in source]
        if len({imgs[-1].shape[0] for imgs in self.images}) > 1:  # grey among RGB (y tasks): stack as RGB
            self.images = [tuple(t.expand(3, -1, -1).contiguous() for t in imgs) for imgs in self.images]
        small = [item[0] for item, imgs in zip(source, self.images) if min(imgs[-1].shape[-2:]) < patch_size]
        if small:
            folder = getattr(source, "folder", source)
            raise ConfigError(f"{folder}: images smaller than the {patch_size}px crop: {small[:5]} — lower data.patch_size or set min_size")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        imgs = self.images[torch.randint(len(self.images), ()).item()]
        h, w = imgs[-1].shape[-2:]
        p = self.patch_size
        top, left = torch.randint(h - p + 1, ()).item(), torch.randint(w - p + 1, ()).item()
        crops = [t[..., top : top + p, left : left + p] for t in imgs]
        if self.flips:
            h_flip, v_flip = (torch.rand(2) < 0.5).tolist()
            crops = random_flip(crops, h_flip, v_flip)
        crops = [c.contiguous() for c in crops]
        return {"target": crops[-1]} if len(crops) == 1 else {"input": crops[0], "target": crops[1]}


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
