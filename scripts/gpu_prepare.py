#!/usr/bin/env python
"""Prepare a GPU slot's data here: the sets the next queue entries need, packed one file a set
(``xnet/data/packed.py``: every source file checked against its manifest's sha256, the images re-encoded
losslessly) into ``.gpu_data/``, for as many unfinished entries, in the queue's order, as fit beside the rest
of what the slot carries (the working tree: tracked and untracked files, the runs' states; ``.whl/``;
``.triton_cache/``) in the device tool's 64 MiB. An entry whose test sets do not fit trains without them
(``gpu_queue.py --ingest`` scores those here); one whose training sets do not fit is left for a later slot.
Prints the sizes and writes ``.gpu_data/PACKED.json``.

    python scripts/gpu_prepare.py                 # data root: $XNET_DATA; packs cached in outputs/packs/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gpu_queue import REPO, RUNS, entry_sets, load_queue, read_run_info

LIMIT_MIB = 64  # the device tool's limit on the working tree that travels, carried folders included
CARRIED = (".whl", ".triton_cache")  # carried beside .gpu_data (scripts/gpu_slot.sh)


def tree_bytes(repo: Path = REPO) -> int:
    """What travels of the working tree itself: tracked files and untracked ones git does not ignore."""
    names = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    return sum(
        (repo / n).lstat().st_size for n in set(names) if n and (repo / n).is_file() and not (repo / n).is_symlink()
    )


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def cached_pack(name: str, data_root: str, cache: Path) -> Path:
    """The pack of set ``name`` in ``cache``, made (and checked against the manifest) when missing or stale."""
    from xnet.data.catalog import DATASETS, PACK_SUFFIX, load_manifest, resolve_name
    from xnet.data.packed import PackedSet, pack_set
    from xnet.protocol.io import IMAGE_EXTENSIONS

    spec = DATASETS[resolve_name(name)]
    path = cache / f"{spec.folder}{PACK_SUFFIX}"
    listed = {
        e.file: e.sha256 for e in load_manifest(spec.name) or [] if Path(e.file).suffix.lower() in IMAGE_EXTENSIONS
    }
    if path.is_file() and PackedSet(path).sources == listed:
        return path
    print(f"packing {spec.name} from {data_root} ...", flush=True)
    return pack_set(spec.name, data_root, cache)


def select(entries: list[dict[str, Any]], free: int, size_of) -> tuple[dict[str, int], list[dict[str, Any]], list[str]]:
    """Greedy in the queue's order: each entry with its test sets if they fit, else without them, else skipped.
    ``size_of(set name)`` is the set's packed size. Returns (sets → bytes, chosen entries, skipped lines)."""
    chosen: dict[str, int] = {}
    served, skipped = [], []
    for e in entries:
        train, test = e["sets"]["train"], sorted({s for names in e["sets"]["test"].values() for s in names})
        for names, with_tests in ((train + test, True), (train, False)):
            new = {n: size_of(n) for n in dict.fromkeys(names) if n not in chosen}
            if sum(chosen.values()) + sum(new.values()) <= free:
                chosen.update(new)
                served.append({"name": e["name"], "sets": sorted(set(names)), "test_sets_carried": with_tests})
                break
        else:
            need = sum(size_of(n) for n in dict.fromkeys(train) if n not in chosen)
            skipped.append(
                f"{e['name']}: its training sets need {need / 2**20:.1f} MiB more, "
                f"{(free - sum(chosen.values())) / 2**20:.1f} free"
            )
    return chosen, served, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", default=os.environ.get("XNET_DATA"), help="the data root holding the sets (default $XNET_DATA)"
    )
    ap.add_argument("--queue", type=Path, default=RUNS / "queue.yaml")
    ap.add_argument("--runs", type=Path, default=RUNS)
    ap.add_argument("--cache", type=Path, default=REPO / "outputs" / "packs", help="packs made earlier (git-ignored)")
    ap.add_argument("--out", type=Path, default=REPO / ".gpu_data", help="what the slot carries (replaced)")
    ap.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    ap.add_argument("--margin-mib", type=float, default=0.5, help="kept free below the limit")
    args = ap.parse_args(argv)
    if not args.data:
        print("error: --data: no data root (set XNET_DATA or pass --data)", file=sys.stderr)
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    carried = {"working tree": tree_bytes(), **{c: folder_bytes(REPO / c) for c in CARRIED}}
    free = int((args.limit_mib - args.margin_mib) * 2**20) - sum(carried.values())
    entries = [
        {"name": e["name"], "sets": entry_sets(e)}
        for e in load_queue(args.queue)
        if not read_run_info(args.runs / e["name"]).get("finished")
    ]
    sizes: dict[str, int] = {}

    def size_of(name: str) -> int:
        if name not in sizes:
            sizes[name] = cached_pack(name, args.data, args.cache).stat().st_size
        return sizes[name]

    chosen, served, skipped = select(entries, free, size_of)
    shutil.rmtree(args.out, ignore_errors=True)  # a folder left there would be read instead of its pack
    args.out.mkdir(parents=True)
    from xnet.data.catalog import DATASETS, PACK_SUFFIX, resolve_name

    for name in chosen:
        shutil.copy2(args.cache / f"{DATASETS[resolve_name(name)].folder}{PACK_SUFFIX}", args.out)
    total = sum(carried.values()) + sum(chosen.values())
    summary = {
        "limit_bytes": int(args.limit_mib * 2**20),
        "carried_bytes": carried,
        "sets_bytes": chosen,
        "total_bytes": total,
        "entries": served,
        "skipped": skipped,
    }
    (args.out / "PACKED.json").write_text(json.dumps(summary, indent=1) + "\n")
    for what, n in [*carried.items(), *((f".gpu_data/{k}", v) for k, v in chosen.items())]:
        print(f"  {what:36s} {n / 2**20:7.2f} MiB")
    print(f"  {'total carried':36s} {total / 2**20:7.2f} MiB of {args.limit_mib:g} MiB")
    for s in served:
        print(
            f"entry {s['name']}: {', '.join(s['sets'])}"
            + ("" if s["test_sets_carried"] else " (test sets scored at ingest)")
        )
    for line in skipped:
        print(f"not carried: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
