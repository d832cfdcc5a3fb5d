"""Image sources: folders of images (or of input/target pairs) held in memory as uint8 arrays.

A source is a sequence of ``(name, image)`` or ``(name, input, target)`` items. Benchmark sets are
found by name under the data root (``paths.data_dir`` / ``XNET_DATA``), as folders or packed
(:mod:`xnet.data.packed`); any folder works via ``path``.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from xnet.data.catalog import PACK_SUFFIX, HashCache, ManifestEntry, dataset_dir, manifest_entries
from xnet.data.packed import list_images, load_image
from xnet.protocol.errors import UserError
from xnet.protocol.io import IMAGE_EXTENSIONS, ImageError

log = logging.getLogger(__name__)


def resolve_folder(name: str | None, root: str | os.PathLike | None, path: str | os.PathLike | None) -> Path:
    """A set's folder (or pack): an explicit ``path``, else the registered set ``name`` under ``root``."""
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir() and not (folder.suffix == PACK_SUFFIX and folder.is_file()):
            raise FileNotFoundError(f"image folder not found: {folder}")
        return folder
    if name is None:
        raise ValueError("an image source needs a dataset `name` (under the data root) or a `path`")
    return dataset_dir(name, root)


class ManifestMismatchError(UserError):
    """A benchmark folder holds other images than its manifest lists (an extra file would be
    averaged into the published figure)."""


def check_manifest(name: str, base: Path, sub: str, found: list[Path]) -> None:
    """``found`` (the images of ``base/sub``) must be exactly the images the manifest of set
    ``name`` lists there, by name and by content (sha256, cached by file stat: see
    :class:`~xnet.data.catalog.HashCache`); sets without a manifest are not checked."""
    entries = manifest_entries(name, base)
    if entries is None:
        return
    where = PurePosixPath(sub) if sub else PurePosixPath(".")
    expected = {
        PurePosixPath(e.file).name: e
        for e in entries
        if PurePosixPath(e.file).parent == where and PurePosixPath(e.file).suffix.lower() in IMAGE_EXTENSIONS
    }
    names = {f.name for f in found}
    folder = base / sub if sub else base
    if names != expected.keys():
        extra, missing = sorted(names - expected.keys()), sorted(expected.keys() - names)
        parts = [f"{len(names)} images where its manifest lists {len(expected)}"]
        parts += [f"not in it: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"] if extra else []
        parts += [f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"] if missing else []
        raise ManifestMismatchError(f"{folder}: not the {name} set ({'; '.join(parts)}) — {_remedy(name, folder)}")
    check_contents(name, folder, found, expected)


def check_contents(name: str, folder: Path, found: list[Path], expected: dict[str, ManifestEntry]) -> None:
    """Every file of ``found`` must have its manifest entry's sha256 (an image replaced by another
    of the same name would be scored as the published one)."""
    cache = HashCache()
    try:  # images inside a pack are checked by the pack itself (every source file at packing, pixels on reading)
        changed = [f.name for f in found if f.is_file() and cache.sha256(f) != expected[f.name].sha256]
    finally:
        cache.save()
    if changed:
        raise ManifestMismatchError(
            f"{folder}: not the {name} set ({', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}: "
            f"other content than its manifest's sha256) — {_remedy(name, folder)}"
        )


def _remedy(name: str, folder: Path) -> str:
    return (
        "its published figures need exactly those files: remove the others, "
        f"re-fetch with `python -m xnet.data.download {name}`, "
        f"or score it as a plain folder with strict=false (e.g. +data.test.strict=false) or data.test.path={folder}"
    )


class ImageSource:
    """A sequence of the ``items`` a subclass decodes on first use (a cached property)."""

    items: list[tuple]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        return self.items[i]


class ImageFolder(ImageSource):
    """All images of a folder, decoded once.

    Args:
        name: registered set (``BSD68``, ``Train400``, ...) looked up under ``root``.
        root: the data root; ``path`` instead points at any folder.
        mode: ``L``, ``RGB`` or ``keep`` (see :func:`xnet.protocol.io.load_image`).
        min_size: images with a side below this are skipped with a warning naming them
            (a training crop cannot come from them); none left is an error.
        limit: keep the first ``limit`` images (sorted by name) — for quick runs.
        strict: a registered set (``name``, no ``path``) must hold exactly the images of its
            manifest (:func:`check_manifest`); ``False`` scores whatever the folder holds.
    """

    def __init__(
        self,
        name: str | None = None,
        root: str | os.PathLike | None = None,
        path: str | os.PathLike | None = None,
        mode: str = "keep",
        min_size: int = 0,
        limit: int | None = None,
        strict: bool = True,
    ) -> None:
        self.folder = resolve_folder(name, root, path)
        self.name = name or self.folder.name
        self.mode = mode
        self.min_size = min_size
        self.limit = limit
        self.registered = strict and name is not None and path is None

    @cached_property
    def items(self) -> list[tuple[str, np.ndarray]]:
        files = list_images(self.folder)
        if self.registered:
            check_manifest(self.name, self.folder, "", files)
        if self.limit is not None:
            files = files[: self.limit]
        if not files:
            raise ImageError(f"{self.folder}: no images ({', '.join(('.png', '.jpg', '.bmp', '.tif'))}) found")
        items, small = [], []
        for f in files:
            img = load_image(f, self.mode)
            if min(img.shape[:2]) < self.min_size:
                small.append(f"{f.name} ({img.shape[1]}×{img.shape[0]})")
                continue
            items.append((f.stem, img))
        if small:
            log.warning(
                "%s: skipped %d image(s) smaller than %d px: %s",
                self.folder,
                len(small),
                self.min_size,
                ", ".join(small),
            )
        if not items:
            raise ImageError(f"{self.folder}: every image is smaller than the crop size {self.min_size}")
        return items


class PairedFolder(ImageSource):
    """Input/target pairs matched by file name in two sub-folders (e.g. ``rain/`` and ``norain/``)."""

    def __init__(
        self,
        name: str | None = None,
        root: str | os.PathLike | None = None,
        path: str | os.PathLike | None = None,
        split: str | None = None,
        input_dir: str = "rain",
        target_dir: str = "norain",
        mode: str = "keep",
        min_size: int = 0,
        limit: int | None = None,
        strict: bool = True,
    ) -> None:
        base = resolve_folder(name, root, path)
        self.base, self.split = base, split
        self.folder = base / split if split else base
        self.name = name or base.name
        self.input_dir, self.target_dir = input_dir, target_dir
        self.mode, self.min_size, self.limit = mode, min_size, limit
        self.registered = strict and name is not None and path is None

    def _listed(self, sub: str) -> list[Path]:
        files = list_images(self.folder / sub)
        if self.registered:
            check_manifest(self.name, self.base, "/".join(p for p in (self.split, sub) if p), files)
        return files

    @cached_property
    def items(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        inputs = {p.name: p for p in self._listed(self.input_dir)}
        targets = {p.name: p for p in self._listed(self.target_dir)}
        unmatched = sorted(set(inputs) ^ set(targets))
        if unmatched:
            raise ImageError(
                f"{self.folder}: files without a partner in {self.input_dir}/ or {self.target_dir}/: {unmatched[:5]}"
            )
        names = sorted(inputs, key=_natural_key)[: self.limit]
        items = []
        for n in names:
            x, y = load_image(inputs[n], self.mode), load_image(targets[n], self.mode)
            if x.shape != y.shape:
                raise ImageError(f"{inputs[n]}: size {x.shape} differs from its target {targets[n]} {y.shape}")
            if min(y.shape[:2]) >= self.min_size:
                items.append((Path(n).stem, x, y))
        if not items:
            raise ImageError(f"{self.folder}: no pairs of at least {self.min_size} px")
        return items


def _natural_key(s: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


class SampleImages(ImageSource):
    """The embedded default: photographs that ship inside matplotlib (no download needed).

    ``split='train'`` is the top 70% of each photograph, ``'val'`` the rest, so the two never overlap.
    """

    FILES = ("grace_hopper.jpg",)

    def __init__(self, split: str = "train", mode: str = "keep", min_size: int = 0) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"SampleImages split must be 'train' or 'val', got {split!r}")
        self.split, self.mode, self.min_size = split, mode, min_size
        self.name = f"sample-{split}"

    @cached_property
    def items(self) -> list[tuple[str, np.ndarray]]:
        import matplotlib.cbook as cbook

        out = []
        for f in self.FILES:
            img = load_image(cbook.get_sample_data(f, asfileobj=False), self.mode)
            cut = int(img.shape[0] * 0.7)
            part = img[:cut] if self.split == "train" else img[cut:]
            out.append((Path(f).stem, np.ascontiguousarray(part)))
        return out


class DDNPairs(ImageSource):
    """Rainy/clean pairs in the DerainNet/DDN layout (Fu et al. 2017; not distributed with xnet):
    ``rainy_image/N_k.jpg`` is the k-th rainy version (k = 1..14) of the clean ``ground_truth/N.jpg``.
    Items are ``("N_k", rainy, clean)``; each clean image is decoded once and shared by its versions.

    Args:
        path: the folder holding ``rainy_image/`` and ``ground_truth/``.
        versions: the k to keep (``None``: every version found).
        limit: the first ``limit`` clean images (natural order) — e.g. 350 × 14 = the paper's 4,900.
        mode, min_size: as :class:`ImageFolder` (pairs below ``min_size`` are left out).
    """

    RAINY, CLEAN = "rainy_image", "ground_truth"

    def __init__(
        self,
        path: str | os.PathLike,
        versions: list[int] | None = None,
        limit: int | None = None,
        mode: str = "keep",
        min_size: int = 0,
    ) -> None:
        self.folder = resolve_folder(None, None, path)
        self.name = self.folder.name
        self.versions = None if versions is None else {int(k) for k in versions}
        self.limit, self.mode, self.min_size = limit, mode, min_size

    def _rainy_by_clean(self) -> dict[str, list[tuple[int, Path]]]:
        """Clean stem ``N`` → its ``(k, rainy file)``, k ascending; a name not ``N_k`` is an error."""
        by_clean: dict[str, list[tuple[int, Path]]] = {}
        for f in list_images(self.folder / self.RAINY):
            stem, _, k = f.stem.rpartition("_")
            if not stem or not k.isdigit():
                raise ImageError(f"{f}: not a DDN rainy image name (expected <N>_<k>{f.suffix}, k = the rainy version)")
            if self.versions is None or int(k) in self.versions:
                by_clean.setdefault(stem, []).append((int(k), f))
        return {n: sorted(v) for n, v in by_clean.items()}

    @cached_property
    def items(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        for sub in (self.RAINY, self.CLEAN):
            if not (self.folder / sub).is_dir():
                raise ImageError(
                    f"{self.folder}: no {sub}/ folder (the DDN layout is rainy_image/N_k.jpg + ground_truth/N.jpg)"
                )
        clean_files = {f.stem: f for f in list_images(self.folder / self.CLEAN)}
        rainy = self._rainy_by_clean()
        orphans = sorted(set(rainy) - set(clean_files), key=_natural_key)
        if orphans:
            raise ImageError(
                f"{self.folder / self.CLEAN}: no clean image for rainy set(s) {orphans[:5]} (expected {orphans[0]}.jpg)"
            )
        items = []
        for n in sorted(rainy, key=_natural_key)[: self.limit]:
            clean = load_image(clean_files[n], self.mode)
            if min(clean.shape[:2]) < self.min_size:
                continue
            for k, f in rainy[n]:
                x = load_image(f, self.mode)
                if x.shape != clean.shape:
                    raise ImageError(f"{f}: size {x.shape} differs from its clean image {clean_files[n]} {clean.shape}")
                items.append((f"{n}_{k}", x, clean))
        if not items:
            raise ImageError(
                f"{self.folder}: no DDN pairs "
                f"(versions={sorted(self.versions) if self.versions else 'all'}, min_size={self.min_size})"
            )
        return items
