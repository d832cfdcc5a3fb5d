"""Read what an offline W&B run wrote — the evidence the W&B tests check.

An offline run is a folder ``offline-run-<time>-<id>`` holding ``run-<id>.wandb``: protobuf
``Record``s in LevelDB's log format (32 KiB blocks, 7-byte record headers, records split across
blocks as FIRST/MIDDLE/LAST), after a 7-byte file header. wandb ships no reader for it any more.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7
FULL, LAST = 1, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B datastore"
    pos, chunk = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block is padding
            pos += left
            continue
        _crc, size, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        if (size == 0 and kind == 0) or pos + size > len(data):  # the end, or a record still being written
            break
        chunk += data[pos : pos + size]
        pos += size
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _items(updates) -> dict[str, Any]:
    out = {}
    for item in updates:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


@dataclass
class OfflineRun:
    folder: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)  # the last value logged under each key
    exit_code: int | None = None

    def files(self, pattern: str) -> list[Path]:
        return sorted((self.folder / "files").glob(pattern))


def read_run(folder: Path, wait_s: float = 20.0) -> OfflineRun:
    """The run as its store holds it once complete: W&B's writer is another process (wandb-core), which
    may still be flushing when ``finish()`` has returned on a loaded machine, so wait for the exit record."""
    deadline = time.monotonic() + wait_s
    while True:
        run = _read_store(folder)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _read_store(folder: Path) -> OfflineRun:
    (store,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder)
    for r in records(store):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.id, run.name, run.group, run.job_type = (
                r.run.run_id,
                r.run.display_name,
                r.run.run_group,
                r.run.job_type,
            )
            run.tags = list(r.run.tags)
            run.config.update(_items(r.run.config.update))
        elif kind == "config":
            run.config.update(_items(r.config.update))
        elif kind == "summary":
            run.summary.update(_items(r.summary.update))
        elif kind == "history":
            run.history.update(_items(r.history.item))
        elif kind == "exit":
            run.exit_code = r.exit.exit_code
    return run


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """Every offline run under ``<run_dir>/wandb``, oldest first."""
    return [read_run(f) for f in sorted((run_dir / "wandb").glob("offline-run-*"))]
