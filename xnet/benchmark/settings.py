"""How long and how large a benchmark runs (the command line's choices for one device)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Attributes:
    warmup, repeats: untimed and timed rounds per inference variant.
    compile_enabled: also time ``fuse(..., compile=True)``.
    train_batch, train_crop, train_steps: a training step's batch, HR crop side, timed steps.
    train_compile: also train with ``torch.compile``.
    thread_counts: CPU thread counts timed besides 1, 2 and all cores.
    """

    warmup: int = 2
    repeats: int = 15
    compile_enabled: bool = False
    train_batch: int = 64
    train_crop: int = 80
    train_steps: int = 5
    train_compile: bool = False
    thread_counts: tuple[int, ...] = ()
