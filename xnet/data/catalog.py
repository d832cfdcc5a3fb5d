"""The benchmark data sets: their folders under the data root, their canonical origins and their
manifests (``xnet/data/manifests/<Name>.tsv``: sha256 and size of each file), and the checks of a
folder against its manifest. Fetching lives in :mod:`xnet.data.download`.

Rain12_original (Li et al.'s own archive) has no pinned checksum; a download records the checksums
it saw (``MANIFEST.tsv`` + ``SOURCE.txt`` in the folder, marked unverified), which later checks use.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)
MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
ROOT_ENV = "XNET_DATA"
READ_CHUNK = 1 << 16
#: a set packed into one file (xnet.data.packed), found where its folder would be: <root>/<folder>.xpack
PACK_SUFFIX = ".xpack"
# Bookkeeping files that may sit next to the images; they do not count as data.
METADATA_FILES = frozenset({"MANIFEST.tsv", "README.md", "ID_MAP.tsv", "SOURCE.txt"})

# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetSpec:
    """Where a set comes from and where it goes.

    Attributes:
        name: canonical name (``Set5``).
        folder: folder under the data root.
        origin: human-readable canonical origin (repository, commit, path).
        url_base: base URL of the raw files at the origin; file ``F`` of the manifest is fetched
            from ``url_base + remote_path(F)``.  ``None`` for archive sets.
        remote_prefixes: ``(local_prefix, remote_prefix)`` rewrites for sets whose upstream
            layout differs from ours (only applied at the canonical origin, not on mirrors).
        archive_url: for sets distributed as one zip archive.
        archive_sha256: pinned sha256 of that archive, or ``None`` while it is unknown.
        manifest: manifest file in ``xnet/data/manifests`` (``None`` = no per-file checksums).
        note: caveat shown in ``--list`` and in the missing-data error.
    """

    name: str
    folder: str
    origin: str
    url_base: str | None = None
    remote_prefixes: tuple[tuple[str, str], ...] = ()
    archive_url: str | None = None
    archive_sha256: str | None = None
    manifest: str | None = None
    note: str = ""

    @property
    def manifest_path(self) -> Path | None:
        return MANIFEST_DIR / self.manifest if self.manifest else None

    @property
    def is_archive(self) -> bool:
        return self.archive_url is not None

    @property
    def pinned(self) -> bool:
        """True when the downloaded content can be checked against known checksums."""
        return self.manifest is not None or self.archive_sha256 is not None

    def remote_path(self, local: str) -> str:
        for local_prefix, remote_prefix in self.remote_prefixes:
            if local.startswith(local_prefix):
                return remote_prefix + local[len(local_prefix) :]
        return local


def _gh(repo: str, commit: str, path: str = "") -> str:
    """raw.githubusercontent.com base URL for ``path`` of ``repo`` at ``commit``."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_DNCNN = ("cszn/DnCNN", "e93b27812d3ff523a3a79d19e5e50d233d7a8d0a")
_SRCNN_TF = ("tegg89/SRCNN-Tensorflow", "78be1a24697935fc39a3a8cf59a6632264afade7")
_DCSCN = ("jiny2001/dcscn-super-resolution", "d382bc30d41c94ac72f8cb148d61cc4864b3b380")
_SELFEXSR = ("jbhuang0604/SelfExSR", "8f6dd8c1d20cb7e8792a7177b4f6fd677633f598")
_XUNIT = ("kligvasser/xUnit", "caa087646444edec76f2a8d5e8a99f962a231e03")
_JORDER_E = ("flyywh/JORDER-E-Deep-Image-Deraining-TPAMI-2019-Journal", "ccb4a465bcb48ad8a5d3fef3ab1b950bcf8b7050")
_MSCIANET = ("CoderLi365/MSCIANet", "0a1a76bc73b5d0abb4d9790bd2a955b111fc58bf")
# Upstream names the pairs Rain12/{rain,norain}/<dir>-00N.png; xnet keeps <dir>/N.png (one rewrite per file).
_RAIN12_REMOTE = tuple(
    (f"{d}/{n}.png", f"Rain12/{d}/{d}-{n:03d}.png") for d in ("rain", "norain") for n in range(1, 13)
)


def _github_set(name: str, repo_commit: tuple[str, str], path: str, **kw) -> DatasetSpec:
    repo, commit = repo_commit
    shown = kw.pop("origin_path", path)
    return DatasetSpec(
        name=name,
        folder=kw.pop("folder", name),
        origin=f"github.com/{repo} @ {commit[:12]} {shown}",
        url_base=_gh(repo, commit, path),
        manifest=f"{name}.tsv",
        **kw,
    )


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        _github_set("Train400", _DNCNN, "TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400/"),
        _github_set("BSD68", _DNCNN, "testsets/BSD68/"),
        _github_set("Set12", _DNCNN, "testsets/Set12/"),
        _github_set(
            "CBSD68", _XUNIT, "denoising/data/bsd68/", note="BSDS JPEG originals from the official xUnit repo's history"
        ),
        _github_set("T91", _SRCNN_TF, "Train/"),
        _github_set("BSD200", _DCSCN, "data/bsd200/"),
        _github_set("Set5", _DNCNN, "testsets/Set5/"),
        _github_set("Set14", _DNCNN, "testsets/Set14/"),
        # Only the *_HR.png files of image_SRF_3 (the manifest lists exactly those names).
        _github_set("BSD100", _SELFEXSR, "data/BSD100/image_SRF_3/"),
        # Upstream keeps the pairs under data/{train,test}/small/{rain,norain}/; we drop `small/`.
        _github_set(
            "RainHeavy_JORDER-E_sample",
            _JORDER_E,
            "",
            origin_path="data/{train,test}/small/{rain,norain}/",
            remote_prefixes=(("train/", "data/train/small/"), ("test/", "data/test/small/")),
            note="25 synthetic heavy-rain pairs for smoke tests; NOT Rain12",
        ),
        _github_set(
            "Rain12",
            _MSCIANET,
            "",
            origin_path="Rain12/{rain,norain}/",
            remote_prefixes=_RAIN12_REMOTE,
            note="480×320 top-left crops of Li et al.'s 481×321 pairs (their archive: Rain12_original)",
        ),
        DatasetSpec(
            name="Rain12_original",
            folder="Rain12_original",
            origin="yu-li.github.io (Li et al., CVPR 2016): paper/li_cvpr16_rain.zip",
            archive_url="https://yu-li.github.io/paper/li_cvpr16_rain.zip",
            note="archive checksum not pinned: the download is NOT verified against a known value",
        ),
    ]
}

_ALIASES = {"b100": "BSD100", "set68": "BSD68", "rainheavy": "RainHeavy_JORDER-E_sample"}


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest row: a file's path relative to the set's folder, its sha256 and size."""

    file: str
    sha256: str
    bytes: int | None = None


class DatasetMissingError(FileNotFoundError):
    """A registered data set is not under the data root."""

    def __init__(self, name: str, folder: Path, root: Path, note: str = "") -> None:
        self.name, self.folder, self.root = name, folder, root
        cmd = f"python -m xnet.data.download {name}"
        if root != default_data_root():
            cmd += f" --root {root}"
        msg = (
            f"dataset {name!r} not found: folder {folder} is missing or holds no data files "
            f"(data root: {root}). Download it with `{cmd}`, or point the data root at an existing "
            f"copy with XNET_DATA=/path/to/data or the Hydra override paths.data_dir=/path/to/data."
        )
        if note:
            msg += f" Note: {note}."
        super().__init__(msg)


# --------------------------------------------------------------------------- lookup


def resolve_name(name: str) -> str:
    """Canonical name of a registered set, case-insensitively (``bsd68`` → ``BSD68``)."""
    if name in DATASETS:
        return name
    key = name.strip().lower()
    for canonical, spec in DATASETS.items():
        if key in (canonical.lower(), spec.folder.lower()):
            return canonical
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def default_data_root() -> Path:
    """``$XNET_DATA``, else ``./data``."""
    return Path(os.environ.get(ROOT_ENV) or "data").expanduser()


def data_root(root: str | os.PathLike | None) -> Path:
    """``root``, else the default data root."""
    return Path(root).expanduser() if root is not None else default_data_root()


def safe_relpath(rel: str) -> PurePosixPath:
    """A relative POSIX path with no ``..``, no absolute part and no drive letter, or ValueError."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if not rel or p.is_absolute() or any(part in ("", "..") for part in p.parts) or ":" in p.parts[0]:
        raise ValueError(f"unsafe path {rel!r}")
    return PurePosixPath(*(part for part in p.parts if part != "."))


def load_manifest(name: str) -> list[ManifestEntry] | None:
    """Entries of set ``name``'s packaged manifest, or ``None`` when the set has none (Rain12_original)."""
    spec = DATASETS[resolve_name(name)]
    return read_manifest(spec.manifest_path) if spec.manifest_path is not None else None


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Parse a manifest TSV (header with at least ``file`` and ``sha256``; ``bytes`` optional)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"file", "sha256"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: manifest header lacks column(s) {sorted(missing)}")
        entries = []
        for row in reader:
            safe_relpath(row["file"])
            size = row.get("bytes")
            entries.append(ManifestEntry(row["file"], row["sha256"].strip().lower(), int(size) if size else None))
    return entries


def has_data_file(folder: Path) -> bool:
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") and f not in METADATA_FILES for f in filenames):
            return True
    return False


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of set ``name`` under ``root`` (else its pack ``<folder>.xpack`` there, which
    :mod:`xnet.data.packed` reads like the folder); :class:`DatasetMissingError` if neither.

    Raises ValueError for an unknown name (the message lists the known ones).  Does not verify
    checksums (see :func:`verify`).
    """
    spec = DATASETS[resolve_name(name)]
    root = data_root(root)
    folder = root / spec.folder
    if folder.is_dir() and has_data_file(folder):
        return folder
    pack = root / f"{spec.folder}{PACK_SUFFIX}"
    if pack.is_file():
        return pack
    raise DatasetMissingError(spec.name, folder, root, spec.note)


# --------------------------------------------------------------------------- checking


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(READ_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_entry(folder: Path, e: ManifestEntry, quick: bool = False) -> str | None:
    """None if the file matches its entry, else a one-line problem."""
    path = folder / e.file
    if not path.is_file():
        return f"missing: {e.file}"
    size = path.stat().st_size
    if e.bytes is not None and size != e.bytes:
        return f"wrong size: {e.file} (expected {e.bytes} bytes, got {size})"
    if not quick:
        got = _sha256_file(path)
        if got != e.sha256:
            return f"wrong sha256: {e.file} (expected {e.sha256}, got {got})"
    return None


def entries_for(spec: DatasetSpec, folder: Path) -> tuple[list[ManifestEntry] | None, bool]:
    """(entries, pinned): the packaged manifest, else one recorded in the folder at download time."""
    entries = load_manifest(spec.name)
    if entries is not None:
        return entries, True
    local = folder / "MANIFEST.tsv"
    if local.is_file():
        return read_manifest(local), False
    return None, False


def manifest_files(name: str, folder: Path) -> list[str] | None:
    """Relative paths of set ``name``'s files by its manifest (packaged, else recorded in
    ``folder`` at download), or ``None`` when it has neither."""
    entries = manifest_entries(name, folder)
    return None if entries is None else [e.file for e in entries]


def manifest_entries(name: str, folder: Path) -> list[ManifestEntry] | None:
    """Set ``name``'s manifest entries (packaged, else recorded in ``folder``), or ``None``."""
    return entries_for(DATASETS[resolve_name(name)], folder)[0]


# --------------------------------------------------------------------------- content, cached


def hash_cache_path() -> Path:
    """``$XNET_HASH_CACHE``, else ``sha256.json`` in xnet's cache folder (``$XNET_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/xnet``, else ``~/.cache/xnet``)."""
    if os.environ.get("XNET_HASH_CACHE"):
        return Path(os.environ["XNET_HASH_CACHE"])
    base = os.environ.get("XNET_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xnet"
    return Path(base) / "sha256.json"


class HashCache:
    """sha256 of files, remembered by path and stat (size, mtime, ctime, inode): a benchmark set is
    checked by content on every run, and hashed again only when a file changed."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or hash_cache_path()
        self.dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or unreadable: start afresh (it is only a cache)
            data = {}
        self.data = data if isinstance(data, dict) else {}

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key, stamp = str(file.resolve()), [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self.data.get(key)
        if isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = _sha256_file(file)
        self.data[key] = {"stat": stamp, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        """Write the cache if it learnt something; a cache folder that cannot be written only costs time."""
        if not self.dirty:
            return
        from xnet.protocol.atomic import write_json

        try:
            write_json(self.path, self.data)
            self.dirty = False
        except OSError as e:
            log.debug("sha256 cache not saved: %s", e)


def verify(name: str, root: str | os.PathLike | None = None, *, quick: bool = False) -> list[str]:
    """Problems with set ``name`` under ``root`` (empty list = every manifest file present and right).

    ``quick=True`` compares sizes only.  Files not in the manifest are ignored.  For a set with no
    packaged manifest (Rain12_original) the manifest recorded at download time is used; it detects later
    corruption but was never checked against a trusted value.
    """
    spec = DATASETS[resolve_name(name)]
    folder = data_root(root) / spec.folder
    if not folder.is_dir():
        return [f"missing folder: {folder}"]
    entries, _ = entries_for(spec, folder)
    if entries is None:
        return [f"no checksums known for {spec.name} (not pinned, and no MANIFEST.tsv in {folder}); cannot verify"]
    return [p for e in entries if (p := check_entry(folder, e, quick)) is not None]
