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
    with pytest.raises(KeyboardInterrupt):  # a kill or Ctrl-C halfway through
        with atomic_write(target) as f:
            f.write(b"new, but cut")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old, complete"
    assert leftovers(tmp_path) == []


def test_the_temp_file_is_renamed_from_the_same_folder_after_an_fsync(tmp_path, monkeypatch):
    events = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: (events.append(("replace", src, dst)), real_replace(src, dst))[1])
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
    with pytest.raises(OutputError, match="model.safetensors.*No space left") as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(info.value, UserError) and isinstance(info.value, OSError)
    assert target.read_bytes() == b"previous export"
    assert leftovers(tmp_path) == []
