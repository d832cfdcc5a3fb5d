"""Checkpoints are written atomically in their own folder: a kill or a full disk mid-save never
leaves a truncated last.ckpt or a partial best-*.ckpt under a real name."""

import errno
import os

import pytest
import torch
from conftest import TINY, compose, run_train

from xnet.lit import checkpoint_io
from xnet.lit.checkpoint_io import AtomicCheckpointIO
from xnet.protocol.errors import OutputError


def test_the_trainer_of_a_run_saves_through_the_atomic_writer():
    from xnet.train import build_trainer

    trainer = build_trainer(compose("train", [*TINY, "paths.output_dir=/tmp/unused", "logger=none"]))
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_save_renames_from_the_checkpoint_folder(tmp_path, monkeypatch):
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moves.append((str(src), str(dst))), real_replace(src, dst))[1])
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, tmp_path / "checkpoints" / "last.ckpt")
    assert [os.path.dirname(s) for s, d in moves] == [str(tmp_path / "checkpoints")]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def failing_save(obj, f, *args, **kwargs):
    """torch.save that dies halfway, as on a full disk."""
    f.write(b"PK\x03\x04 half a zip")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_save_keeps_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    monkeypatch.setattr(checkpoint_io.torch, "save", failing_save)
    with pytest.raises(OutputError, match="last.ckpt"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_a_full_disk_during_training_leaves_no_partial_best_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save

    def save_all_but_best(obj, f, *args, **kwargs):
        return (failing_save if ".best-" in getattr(f, "name", "") else real_save)(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", save_all_but_best)
    with pytest.raises(OutputError, match=r"best-step\d+.*No space left"):
        run_train(tmp_path, [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "test_after_fit=false"])
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert not [n for n in names if n.startswith("best-") or n.endswith(".tmp")], names
