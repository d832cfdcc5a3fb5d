"""Atomic writes: a file is the old one or the whole new one; the temporary file lives beside it
(a rename across filesystems is a copy a kill can cut short), is fsynced, and never outlives a failure."""

import errno
import os

import pytest

from xnet.protocol import atomic
from xnet.protocol.atomic import atomic_path, atomic_write, write_json
from xnet.protocol.errors import OutputError, UserError


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_an_interrupted_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old, complete")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as f:  # a kill or Ctrl-C halfway through
        f.write(b"new, but cut")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old, complete"
    assert leftovers(tmp_path) == []


def test_the_temp_file_is_renamed_from_the_same_folder_after_an_fsync(tmp_path, monkeypatch):
    events = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(
        atomic.os, "replace", lambda src, dst: (events.append(("replace", src, dst)), real_replace(src, dst))[1]
    )
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append(("fsync",)), real_fsync(fd))[1])
    path = write_json(tmp_path / "run" / "metrics.json", {"psnr": 29.07})
    replaces = [e for e in events if e[0] == "replace"]
    assert len(replaces) == 1
    _, src, dst = replaces[0]
    assert os.path.dirname(src) == os.path.dirname(dst) == str(tmp_path / "run")
    assert events.index(("fsync",)) < events.index(replaces[0])
    assert path.read_text().startswith("{") and leftovers(path.parent) == []


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous export")
    with pytest.raises(OutputError, match="model.safetensors.*No space left") as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(info.value, UserError) and isinstance(info.value, OSError)
    assert target.read_bytes() == b"previous export"
    assert leftovers(tmp_path) == []


def test_without_overwrite_an_existing_file_is_kept(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"written meanwhile by another restore")
    with (
        pytest.raises(OutputError, match=r"a\.png: already exists .*kept, not replaced"),
        atomic_write(target, overwrite=False) as f,
    ):
        f.write(b"ours")
    assert target.read_bytes() == b"written meanwhile by another restore"
    assert leftovers(tmp_path) == []
    with atomic_write(tmp_path / "b.png", overwrite=False) as f:  # a free name is taken as usual
        f.write(b"ours")
    assert (tmp_path / "b.png").read_bytes() == b"ours" and leftovers(tmp_path) == []


def test_two_writers_racing_for_one_name_cannot_replace_each_other(tmp_path):
    """Both finish writing before either takes the name (the race restore's planning cannot see)."""
    target = tmp_path / "out.png"
    first, second = atomic_write(target, overwrite=False), atomic_write(target, overwrite=False)
    f1, f2 = first.__enter__(), second.__enter__()
    f1.write(b"first")
    f2.write(b"second")
    first.__exit__(None, None, None)
    with pytest.raises(OutputError, match="already exists"):
        second.__exit__(None, None, None)
    assert target.read_bytes() == b"first" and leftovers(tmp_path) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_written_file_gets_the_mode_of_the_users_umask(tmp_path, mask, mode):
    previous = os.umask(mask)
    try:
        path = write_json(tmp_path / "metrics.json", {})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode


def test_a_full_disk_in_torch_s_writer_is_named_too(tmp_path, dev_full):
    """torch's zip writer turns the OSError of write(2) into a RuntimeError; the file is still named."""
    import torch

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")
    with (
        pytest.raises(OutputError, match=r"last\.ckpt: cannot write \(No space left on device\)"),
        atomic_write(target) as f,
    ):
        torch.save({"w": torch.zeros(10_000)}, f)
    assert target.read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    (tmp_path / ".last.ckpt.4242-deadbeef.tmp").write_bytes(b"half")
    (tmp_path / "last.ckpt").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_bytes(b"the user's, not hidden")
    assert [p.name for p in atomic.remove_leftovers(tmp_path)] == [".last.ckpt.4242-deadbeef.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "notes.tmp"]
