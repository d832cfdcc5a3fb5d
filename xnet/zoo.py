"""The model zoo: named weights shipped in the repository's ``weights/`` folder.

``weights/zoo.json`` lists each entry: ``{"name": {"file": "...", "sha256": "...", "model": "...",
"task": {...}}}``. ``weights=<name>`` anywhere a path is accepted loads that entry (sha256 checked).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ZOO_DIR = Path(os.environ.get("XNET_ZOO", Path(__file__).resolve().parent.parent / "weights"))


def zoo_index(zoo_dir: Path = ZOO_DIR) -> dict[str, Any]:
    index = zoo_dir / "zoo.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_weights(spec: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """A file path as given, or a zoo name resolved to its verified file."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    index = zoo_index(zoo_dir)
    if spec not in index:
        known = ", ".join(sorted(index)) or "none shipped yet"
        raise FileNotFoundError(f"weights={spec}: no such file, and not a zoo name (zoo: {known})")
    entry = index[spec]
    file = zoo_dir / entry["file"]
    digest = sha256(file)
    if digest != entry["sha256"]:
        raise ValueError(f"zoo weights {file}: sha256 {digest} does not match zoo.json's {entry['sha256']}")
    return file
