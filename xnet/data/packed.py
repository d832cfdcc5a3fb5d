"""Benchmark sets packed one file a set, for a machine that cannot fetch them and carries little (a GPU slot:
64 MiB for the whole working tree). ``<root>/<folder>.xpack`` is a zip of the set's decoded images, each
re-encoded losslessly (WebP or PNG, whichever is smaller: the sets' own JPEGs would decode differently with
another libjpeg, and raw uint8 does not fit), with ``index.json``: per image its path in the set, the source
file's manifest sha256 (checked when packing), its shape and the sha256 of its decoded pixels (checked when
read, so a decoder that differs there fails loudly instead of training on other pixels).

The data sources read a pack wherever they would read the set's folder: :func:`xnet.data.catalog.dataset_dir`
returns the pack when the folder is absent, and :func:`list_images` / :func:`load_image` here accept paths
inside a pack (``<root>/BSD68.xpack/test001.png``) as well as real files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from xnet.data.catalog import (
    DATASETS,
    PACK_SUFFIX,
    check_entry,
    load_manifest,
    resolve_name,
)
from xnet.protocol import io as image_io
from xnet.protocol.atomic import atomic_path
from xnet.protocol.io import IMAGE_EXTENSIONS, ImageError

__all__ = ["PACK_SUFFIX", "PackedSet", "list_images", "load_image", "pack_set", "pixels_sha256"]

FORMAT = 1
INDEX = "index.json"


def pixels_sha256(arr: np.ndarray) -> str:
    """The digest of a decoded image: its shape and its bytes."""
    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _encode(arr: np.ndarray, codec: str, effort: int) -> bytes:
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    if codec == "webp":
        img.save(buf, "WEBP", lossless=True, quality=100, method=effort)
    else:
        img.save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def _decode(data: bytes, channels: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        arr = np.array(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _smallest_lossless(arr: np.ndarray, effort: int) -> tuple[str, bytes]:
    """(codec, bytes) of the smaller lossless encoding that decodes back to exactly ``arr``."""
    found = []
    for codec in ("webp", "png"):
        data = _encode(arr, codec, effort)
        if np.array_equal(_decode(data, arr.shape[-1]), arr):
            found.append((len(data), codec, data))
    if not found:
        raise ImageError(f"no lossless encoding reproduces an image of shape {arr.shape}")
    _, codec, data = min(found)
    return codec, data


def pack_set(name: str, root: str | os.PathLike, out_dir: str | os.PathLike, effort: int = 4) -> Path:
    """Pack set ``name`` of data root ``root`` into ``out_dir/<folder>.xpack``; every image file of the
    set's manifest is checked (size and sha256) first. Returns the pack's path."""
    spec = DATASETS[resolve_name(name)]
    entries = load_manifest(spec.name)
    if entries is None:
        raise ImageError(f"{spec.name}: no pinned manifest, so a pack of it could not be checked; not packed")
    folder = Path(root).expanduser() / spec.folder
    images = [e for e in entries if PurePosixPath(e.file).suffix.lower() in IMAGE_EXTENSIONS]
    problems = [p for e in images if (p := check_entry(folder, e)) is not None]
    if problems:
        raise ImageError(
            f"{folder}: not the {spec.name} of its manifest ({len(problems)} problem(s), first: {problems[0]})"
        )
    index = {"format": FORMAT, "set": spec.name, "images": []}
    path = Path(out_dir) / f"{spec.folder}{PACK_SUFFIX}"
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for i, e in enumerate(sorted(images, key=lambda e: e.file)):
            arr = image_io.load_image(folder / e.file, "keep")
            codec, data = _smallest_lossless(arr, effort)
            member = f"{i:05d}.{codec}"
            z.writestr(member, data)
            index["images"].append(
                {
                    "file": e.file,
                    "sha256": e.sha256,
                    "member": member,
                    "shape": list(arr.shape),
                    "pixels_sha256": pixels_sha256(arr),
                }
            )
        z.writestr(INDEX, json.dumps(index, indent=0))
    return path


@dataclass(frozen=True)
class _Image:
    member: str
    shape: tuple[int, ...]
    pixels_sha256: str


class PackedSet:
    """An open pack: the images of each sub-folder and their decoded pixels."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
            index = json.loads(self.zip.read(INDEX))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ImageError(f"{self.path}: not a readable data pack ({e.__class__.__name__}: {e})") from e
        if index.get("format") != FORMAT:
            raise ImageError(
                f"{self.path}: data pack format {index.get('format')!r}, this xnet reads {FORMAT}: pack it again"
            )
        self.name = index["set"]
        self.images = {e["file"]: _Image(e["member"], tuple(e["shape"]), e["pixels_sha256"]) for e in index["images"]}
        self.sources = {e["file"]: e["sha256"] for e in index["images"]}  # the packed files' manifest sha256

    def files(self, sub: str = "") -> list[str]:
        """The images directly in sub-folder ``sub`` (relative paths in the set), sorted as the folder's."""
        where = PurePosixPath(sub) if sub else PurePosixPath(".")
        return sorted(f for f in self.images if PurePosixPath(f).parent == where)

    def read(self, file: str) -> np.ndarray:
        """The decoded ``H×W×C`` uint8 pixels of ``file``, as ``load_image(..., 'keep')`` gave them when packed."""
        if file not in self.images:
            raise FileNotFoundError(f"{self.path}: no image {file} in this pack")
        entry = self.images[file]
        arr = _decode(self.zip.read(entry.member), entry.shape[-1])
        if tuple(arr.shape) != entry.shape or pixels_sha256(arr) != entry.pixels_sha256:
            raise ImageError(
                f"{self.path}: {file} decodes to other pixels than were packed (this machine's image "
                f"decoder differs): pack it again here or carry the set's folder"
            )
        return arr


@cache
def _open(path: str, pid: int) -> PackedSet:
    """One open pack per process (a forked worker must not share the zip's file offset)."""
    return PackedSet(path)


def _in_pack(path: Path) -> tuple[PackedSet, str] | None:
    """(the pack, the relative path in it) when ``path`` lies inside a pack file."""
    for parent in (path, *path.parents):
        if parent.suffix == PACK_SUFFIX and parent.is_file():
            rel = path.relative_to(parent)
            return _open(str(parent.resolve()), os.getpid()), "" if rel == Path(".") else rel.as_posix()
    return None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """:func:`xnet.protocol.io.list_images`, for a folder inside a pack too."""
    folder = Path(folder)
    packed = _in_pack(folder)
    if packed is None:
        return image_io.list_images(folder)
    pack, sub = packed
    return [folder / PurePosixPath(f).name for f in pack.files(sub)]


def load_image(path: str | os.PathLike, mode: str = "keep") -> np.ndarray:
    """:func:`xnet.protocol.io.load_image`, for an image inside a pack too (same modes, same conversions)."""
    path = Path(path)
    packed = _in_pack(path.parent)
    if packed is None:
        return image_io.load_image(path, mode)
    if mode not in image_io.MODES:
        raise ValueError(f"image mode must be one of {image_io.MODES}, got {mode!r}")
    pack, sub = packed
    arr = pack.read(f"{sub}/{path.name}" if sub else path.name)
    if mode == "L" and arr.shape[-1] == 3:
        image_io.warn_once("grey", "%s: colour image converted to grey (ITU-R 601 luma)", path)
        return np.array(Image.fromarray(arr).convert("L"), dtype=np.uint8)[..., None]
    if mode == "RGB" and arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    return arr
