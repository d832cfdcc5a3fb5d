"""Training pairs, the one place they are made: every training image decoded once into one uint8
buffer, and ``(input, target)`` pairs of random crops, flips/rotations and degradations drawn from it
(:class:`PatchSampler`) for both loaders —

* ``data.loader=device`` (:class:`DevicePatchSampler`): the buffer lives on the training device and
  whole batches are drawn there, a handful of kernels (one gather for the crops of the whole batch,
  then the degradation), from one ``torch.Generator`` whose state is part of the checkpoint; no
  worker, no host→device copy, no host sync per step;
* ``data.loader=workers`` (:class:`~xnet.data.datasets.PatchDataset`): DataLoader workers draw whole
  batches on the CPU, batch number ``n`` from a generator seeded by ``(seed, n)``; the checkpoint
  holds the next batch number.

Either way an interrupted and resumed run draws exactly the pairs the uninterrupted run draws, the
pairs are float32 (:meth:`~xnet.protocol.tasks.Task.train_pair`, whatever the trainer's precision),
and the LightningModule receives them as they are: it never degrades.

Layout: the images (and, for paired sources, their inputs) are stored ``C×H×W`` back to back in
a flat uint8 tensor; per image an offset, height and width. A crop of the batch is an index
computation ``offset + c·H·W + (top + a)·W + (left + b)`` with ``(a, b)`` the output position after
the drawn flip/transpose, gathered in one indexing op (images of any size mix freely).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from xnet.protocol.errors import ConfigError
from xnet.protocol.tasks import Task

log = logging.getLogger(__name__)

AUGMENTS = ("none", "flips", "dihedral")


class PackedImages:
    """Training images of one or more sources in one flat uint8 tensor (see the module doc).

    Args:
        sources: sources of ``(name, image)`` or ``(name, input, target)`` items (uint8 ``H×W×C``).
        task: converts each image to the task's colour space and modcrop (as the evaluation does).
        patch_size: every image must be at least this large (a crop cannot come from it otherwise).
    """

    def __init__(self, sources: Sequence[Any], task: Task, patch_size: int) -> None:
        items: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.source_start, self.source_count = [], []
        for source in sources:
            self.source_start.append(len(items))
            for item in source:
                target = task.clean_uint8(item[-1])
                given = task.clean_uint8(item[1]) if len(item) == 3 else None
                items.append((target, given))
            self.source_count.append(len(items) - self.source_start[-1])
            _check_sizes(source, items[self.source_start[-1] :], patch_size)
        self.channels = max(t.shape[-1] for t, _ in items)
        planes, offsets, cursor = [], [], 0
        self.has_input = [g is not None for _, g in items]
        for target, given in items:
            offsets.append(cursor)
            for img in (target, given) if given is not None else (target,):
                chw = _chw(img, self.channels)
                planes.append(chw.reshape(-1))
                cursor += chw.size
        self.flat = torch.from_numpy(np.concatenate(planes))
        self.offsets = torch.tensor(offsets, dtype=torch.int64)
        self.heights = torch.tensor([t.shape[0] for t, _ in items], dtype=torch.int64)
        self.widths = torch.tensor([t.shape[1] for t, _ in items], dtype=torch.int64)
        self.paired = torch.tensor(self.has_input, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.offsets)

    def to(self, device: torch.device | str) -> PackedImages:
        for name in ("flat", "offsets", "heights", "widths", "paired"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def nbytes(self) -> int:
        return self.flat.numel()


def _chw(img: np.ndarray, channels: int) -> np.ndarray:
    """``H×W×C`` → ``C×H×W``, grey replicated where other images are RGB (``y`` tasks)."""
    if img.shape[-1] != channels:
        img = np.repeat(img, channels, axis=-1)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def _check_sizes(source: Any, items: list, patch_size: int) -> None:
    small = [i for i, (t, _) in enumerate(items) if min(t.shape[:2]) < patch_size]
    if small:
        names = [source[i][0] for i in small[:5]]
        folder = getattr(source, "folder", getattr(source, "name", source))
        raise ConfigError(
            f"{folder}: images smaller than the {patch_size}px crop: {names} — lower data.patch_size or set min_size"
        )


class PatchSampler:
    """Draws ``(input, target)`` pairs on the device of its :class:`PackedImages`.

    Per sample: a source (uniformly), an image of it (uniformly), a ``patch_size`` crop position
    (uniformly), an augmentation (``flips``: horizontal and vertical flips, the paper's; ``dihedral``:
    also 90° rotations; ``none``) — then for the whole batch the task's training pair
    (:meth:`~xnet.protocol.tasks.Task.train_pair`: the degradation, except for samples of paired
    sources, whose real input is cropped alongside; the net's colour space), all from one generator.
    """

    def __init__(self, images: PackedImages, task: Task, patch_size: int, augment: str) -> None:
        if augment not in AUGMENTS:
            raise ConfigError(f"data.augment must be one of {AUGMENTS}, got {augment!r}")
        if patch_size < 1:
            raise ConfigError(f"data.patch_size must be positive, got {patch_size}")
        self.images, self.task, self.patch_size, self.augment = images, task, patch_size, augment
        self.device = images.flat.device
        self._source_start = torch.tensor(images.source_start, dtype=torch.int64, device=self.device)
        self._source_count = torch.tensor(images.source_count, dtype=torch.int64, device=self.device)
        self._grid = torch.arange(patch_size, device=self.device)
        self._any_paired = bool(images.paired.any())

    def _uniform(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=self.device)

    def _below(self, upper: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Uniform integers in ``[0, upper)``, one per entry (upper ≥ 1)."""
        return (self._uniform(upper.numel(), generator) * upper).long().clamp_max_(upper - 1)

    def positions(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image index [n], row index [n, p, p], column index [n, p, p])`` in image coordinates."""
        p = self.patch_size
        src = self._below(torch.full((n,), len(self._source_count), device=self.device), generator)
        idx = self._source_start[src] + self._below(self._source_count[src], generator)
        top = self._below(self.images.heights[idx] - p + 1, generator)
        left = self._below(self.images.widths[idx] - p + 1, generator)
        rows = self._grid.view(1, p, 1).expand(n, p, p)
        cols = self._grid.view(1, 1, p).expand(n, p, p)
        if self.augment != "none":
            flips = self._uniform(3 * n, generator).view(3, n, 1, 1) < 0.5
            if self.augment == "dihedral":  # transpose + flips: all 8 rotations/reflections
                rows, cols = torch.where(flips[2], cols, rows), torch.where(flips[2], rows, cols)
            rows = torch.where(flips[0], p - 1 - rows, rows)
            cols = torch.where(flips[1], p - 1 - cols, cols)
        return idx, rows + top.view(n, 1, 1), cols + left.view(n, 1, 1)

    def crops(
        self, idx: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, plane: int | torch.Tensor = 0
    ) -> torch.Tensor:
        """uint8 ``B×C×p×p``: plane 0 is the target, plane 1 a paired source's input (per sample;
        images without one give plane 0)."""
        im = self.images
        c = im.channels
        h, w = im.heights[idx].view(-1, 1, 1, 1), im.widths[idx].view(-1, 1, 1, 1)
        if isinstance(plane, torch.Tensor):
            plane = plane.long().view(-1, 1, 1, 1)
        base = im.offsets[idx].view(-1, 1, 1, 1) + plane * c * h * w
        chan = torch.arange(c, device=self.device).view(1, c, 1, 1)
        index = base + chan * h * w + rows.unsqueeze(1) * w + cols.unsqueeze(1)
        return im.flat[index]

    def pairs(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` training pairs: ``input`` (degraded, or real) and ``target``, float32 in the net's space."""
        idx, rows, cols = self.positions(n, generator)
        clean = self.crops(idx, rows, cols).float().div_(255.0)
        given = real = None
        if self._any_paired:  # real pairs keep their real input; the others are degraded
            given = self.images.paired[idx]
            real = self.crops(idx, rows, cols, plane=given).float().div_(255.0)
        inp, target = self.task.train_pair(clean, generator, real, given)
        return {"input": inp, "target": target}


class DevicePatchSampler(PatchSampler):
    """``data.loader=device``: batches of ``batch_size`` pairs drawn on the images' device from one
    generator seeded with ``seed``, whose state is checkpointed (:meth:`state_dict`)."""

    def __init__(
        self, images: PackedImages, task: Task, patch_size: int, batch_size: int, augment: str, seed: int
    ) -> None:
        super().__init__(images, task, patch_size, augment)
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    def draw(self) -> dict[str, torch.Tensor]:
        """One batch: ``target`` (clean crops) and ``input`` (degraded, or real), float32."""
        return self.pairs(self.batch_size, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        resume_generator(self.generator, state["generator"].cpu())


def resume_generator(generator: torch.Generator, state: torch.Tensor) -> None:
    """Set ``generator`` to a checkpointed ``state``. A state of the other device's kind (CUDA's 16-byte
    Philox seed and offset, the CPU's 5,056-byte Mersenne Twister: a run resumed on another device) cannot be
    set and has no equivalent there: the generator is seeded from the state's bytes instead — the same
    state always gives the same draws — and one warning says the batches differ from the unbroken run's."""
    expected = generator.get_state().numel()
    if state.numel() == expected:
        generator.set_state(state)
        return
    seed = int.from_bytes(hashlib.sha256(state.numpy().tobytes()).digest()[:8], "little") >> 1
    generator.manual_seed(seed)
    log.warning(
        "data sampler: the checkpoint's generator state (%d bytes) is another device's than this %s "
        "generator's (%d bytes): seeded from it instead, so the batches from here on differ from the "
        "uninterrupted run's",
        state.numel(),
        generator.device.type,
        expected,
    )


class DrawTokens:
    """What the trainer iterates in the device-resident path: ``length`` tokens per epoch. The batch
    itself is drawn when the token reaches the device (``on_after_batch_transfer``), so a loader's
    prefetch never draws ahead of the step that uses it (resumes stay exact)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, bool]]:
        return ({"draw": True} for _ in range(self.length))


def is_draw_token(batch: Any) -> bool:
    return isinstance(batch, dict) and batch.get("draw") is True
