"""Checkpoints written atomically, in the checkpoint's own folder.

Lightning's default writer stages the file in the system temp dir and moves it into place; when
the run dir is on another filesystem the move is a copy, and a run killed during it (or a full
disk) left a truncated ``last.ckpt`` that every later ``ckpt_path=last`` failed on. Here the
checkpoint goes to a temporary file beside its target, is fsynced, then renamed
(:func:`xnet.protocol.atomic.atomic_write`): a checkpoint file is complete or absent, a failed save
leaves the previous file and no temporary one.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from xnet.protocol.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves are atomic (remote URLs keep Lightning's path)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_write(path) as f:
            torch.save(checkpoint, f)
