"""Benchmark data sets: where they live, how to fetch them, how to check them.

Every set is a folder under the *data root* (``XNET_DATA`` or the Hydra option
``paths.data_dir``).  For each set this module knows the folder name, the canonical origin
(a pinned commit of a public GitHub repository, or an archive URL) and, for every set that
has one, a manifest ``xnet/data/manifests/<Name>.tsv`` with the sha256 and size of each file.

Downloads use only the standard library (:mod:`urllib`).  Each file is streamed into a hidden
temporary file next to its destination, its sha256 is checked against the manifest, and only
then is it renamed into place, so an interrupted or tampered download never leaves a partial
or wrong file behind.  Files already present with the right checksum are skipped.

Command line::

    python -m xnet.data.download Set5 BSD68 [--root DIR] [--mirror URL] [--force]
    python -m xnet.data.download all --verify-only
    python -m xnet.data.download --list

A *mirror* (``--mirror``, ``base_url=``, or env ``XNET_DATA_MIRROR``) replaces the canonical
origin.  It is laid out like the data root: file ``F`` of set ``S`` is fetched from
``<mirror>/<S's folder>/F``; for an archive set the archive is fetched from
``<mirror>/<archive file name>``.  A local directory works too (it becomes a ``file://`` URL).

Rain12 (Li et al., CVPR 2016) is pinned file by file (``manifests/Rain12.tsv``) at a public copy
(``CoderLi365/MSCIANet``, renamed ``rain/N.png`` / ``norain/N.png``): the 480×320 top-left crops of
the 481×321 originals, the copy xnet's figures are measured on.  The authors' own archive
``https://yu-li.github.io/paper/li_cvpr16_rain.zip`` stays available as ``Rain12_original``
(folder ``Rain12_original/``, unpacked as the archive lays it out).  **Its checksum is not pinned**:
nobody on this project has been able to fetch the archive to record it.  Downloading it works
but cannot be verified; the downloader prints the archive's sha256 and asks the user to check
it, and records the per-file checksums it saw (``MANIFEST.tsv`` and ``SOURCE.txt`` in the
folder, marked unverified) so later runs of ``--verify-only`` detect corruption.  Pass
``--archive-sha256`` (or set ``archive_sha256`` in :data:`DATASETS`) to enforce a known value.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import ipaddress
import logging
import os
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from xnet.utils.progress import progress

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ManifestEntry",
    "DownloadReport",
    "DatasetMissingError",
    "DownloadError",
    "ChecksumError",
    "known_datasets",
    "resolve_name",
    "default_data_root",
    "load_manifest",
    "read_manifest",
    "dataset_dir",
    "verify",
    "download",
    "main",
]

log = logging.getLogger(__name__)

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
MIRROR_ENV = "XNET_DATA_MIRROR"
ROOT_ENV = "XNET_DATA"
USER_AGENT = "xnet-data-downloader/0.1 (+python urllib)"
CHUNK = 1 << 16
MAX_ARCHIVE_BYTES = 2 << 30  # refuse archives (and their extracted contents) above 2 GiB
# Bookkeeping files that may sit next to the images; they do not count as data.
METADATA_FILES = frozenset({"MANIFEST.tsv", "README.md", "ID_MAP.tsv", "SOURCE.txt"})
_ARCHIVE_JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db")


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
                return remote_prefix + local[len(local_prefix):]
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
_RAIN12_REMOTE = tuple((f"{d}/{n}.png", f"Rain12/{d}/{d}-{n:03d}.png") for d in ("rain", "norain") for n in range(1, 13))


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
        _github_set("CBSD68", _XUNIT, "denoising/data/bsd68/",
                    note="BSDS JPEG originals from the official xUnit repo's history"),
        _github_set("T91", _SRCNN_TF, "Train/"),
        _github_set("BSD200", _DCSCN, "data/bsd200/"),
        _github_set("Set5", _DNCNN, "testsets/Set5/"),
        _github_set("Set14", _DNCNN, "testsets/Set14/"),
        # Only the *_HR.png files of image_SRF_3 (the manifest lists exactly those names).
        _github_set("BSD100", _SELFEXSR, "data/BSD100/image_SRF_3/"),
        # Upstream keeps the pairs under data/{train,test}/small/{rain,norain}/; we drop `small/`.
        _github_set("RainHeavy_JORDER-E_sample", _JORDER_E, "",
                    origin_path="data/{train,test}/small/{rain,norain}/",
                    remote_prefixes=(("train/", "data/train/small/"), ("test/", "data/test/small/")),
                    note="25 synthetic heavy-rain pairs for smoke tests; NOT Rain12"),
        _github_set("Rain12", _MSCIANET, "", origin_path="Rain12/{rain,norain}/",
                    remote_prefixes=_RAIN12_REMOTE,
                    note="480×320 top-left crops of Li et al.'s 481×321 pairs (their archive: Rain12_original)"),
        DatasetSpec(
            name="Rain12_original",
            folder="Rain12_original",
            origin="yu-li.github.io (Li et al., CVPR 2016): paper/li_cvpr16_rain.zip",
            archive_url="https://yu-li.github.io/paper/li_cvpr16_rain.zip",
            archive_sha256=None,  # NOT PINNED YET: nobody here could fetch the archive to record it.
            manifest=None,
            note="archive checksum not pinned yet: the download is NOT verified against a known value",
        ),
    ]
}

_ALIASES = {"b100": "BSD100", "set68": "BSD68", "rainheavy": "RainHeavy_JORDER-E_sample"}


@dataclass(frozen=True)
class ManifestEntry:
    file: str
    sha256: str
    bytes: int | None = None


@dataclass
class DownloadReport:
    name: str
    folder: Path
    source: str
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    archive_sha256: str | None = None
    verified: bool = True  # False: content could not be checked against pinned checksums


# --------------------------------------------------------------------------- errors


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


class DownloadError(RuntimeError):
    """A file could not be fetched (network, HTTP status, size limit, unsafe archive)."""


class _SizeExceeded(DownloadError):
    pass


class ChecksumError(DownloadError):
    """Fetched bytes do not match the pinned sha256 (or size); nothing was written."""

    def __init__(self, what: str, expected: str, got: str, url: str = "") -> None:
        self.what, self.expected, self.got, self.url = what, expected, got, url
        src = f" from {url}" if url else ""
        super().__init__(f"{what}: checksum mismatch{src} (expected {expected}, got {got}); the file was discarded")


# --------------------------------------------------------------------------- lookup


def known_datasets() -> list[str]:
    return list(DATASETS)


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
    """``$XNET_DATA``, else ``./data`` (same default as :mod:`xnet.data.sources`)."""
    return Path(os.environ.get(ROOT_ENV) or "data").expanduser()


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def _safe_relpath(rel: str) -> PurePosixPath:
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
            _safe_relpath(row["file"])
            size = row.get("bytes")
            entries.append(ManifestEntry(row["file"], row["sha256"].strip().lower(), int(size) if size else None))
    return entries


def _has_data_file(folder: Path) -> bool:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") and f not in METADATA_FILES for f in filenames):
            return True
    return False


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of set ``name`` under ``root``; :class:`DatasetMissingError` if absent or empty.

    Raises ValueError for an unknown name (the message lists the known ones).  Does not verify
    checksums (see :func:`verify`).
    """
    spec = DATASETS[resolve_name(name)]
    root = _root(root)
    folder = root / spec.folder
    if not folder.is_dir() or not _has_data_file(folder):
        raise DatasetMissingError(spec.name, folder, root, spec.note)
    return folder


# --------------------------------------------------------------------------- checking


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_entry(folder: Path, e: ManifestEntry, quick: bool = False) -> str | None:
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


def _entries_for(spec: DatasetSpec, folder: Path) -> tuple[list[ManifestEntry] | None, bool]:
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
    entries, _ = _entries_for(DATASETS[resolve_name(name)], folder)
    return None if entries is None else [e.file for e in entries]


def verify(name: str, root: str | os.PathLike | None = None, *, quick: bool = False) -> list[str]:
    """Problems with set ``name`` under ``root`` (empty list = every manifest file present and right).

    ``quick=True`` compares sizes only.  Files not in the manifest are ignored.  For a set with no
    packaged manifest (Rain12_original) the manifest recorded at download time is used; it detects later
    corruption but was never checked against a trusted value.
    """
    spec = DATASETS[resolve_name(name)]
    folder = _root(root) / spec.folder
    if not folder.is_dir():
        return [f"missing folder: {folder}"]
    entries, _ = _entries_for(spec, folder)
    if entries is None:
        return [f"no checksums known for {spec.name} (not pinned, and no MANIFEST.tsv in {folder}); cannot verify"]
    return [p for e in entries if (p := _check_entry(folder, e, quick)) is not None]


# --------------------------------------------------------------------------- fetching


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _open(url: str, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if _is_loopback(url):  # never send loopback requests through a configured proxy
        return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=timeout)
    return urllib.request.urlopen(req, timeout=timeout)


def _stream_to_temp(url: str, directory: Path, label: str, *, timeout: float, max_bytes: int,
                    retries: int = 2, suffix: str = ".part", show_bytes: bool = False) -> tuple[Path, str, int]:
    """Download ``url`` into a new hidden temp file in ``directory``: (path, sha256, size).

    Network errors are retried; HTTP 4xx are not.  On any failure the temp file is removed.
    ``show_bytes``: a byte progress bar (archives; file sets count files instead).
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(2.0 ** attempt, 8.0))
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{label.replace('/', '_')}.", suffix=suffix)
        tmp = Path(tmp_name)
        try:
            h, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, _open(url, timeout) as resp, progress(
                total=int(resp.headers.get("Content-Length") or 0) or None, desc=label, unit="B", unit_scale=True, enabled=show_bytes,
            ) as bar:
                while chunk := resp.read(CHUNK):
                    bar.update(len(chunk))
                    size += len(chunk)
                    if size > max_bytes:
                        raise _SizeExceeded(f"{label}: {url} sent more than {max_bytes} bytes; discarded")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return tmp, h.hexdigest(), size
        except urllib.error.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            if 400 <= exc.code < 500:
                raise DownloadError(f"{label}: HTTP {exc.code} {exc.reason} for {url}") from None
            last = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            tmp.unlink(missing_ok=True)
            last = exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    reason = getattr(last, "reason", None) or last
    raise DownloadError(f"{label}: could not fetch {url} after {retries + 1} attempt(s): {reason}")


def _fetch_file(url: str, dest: Path, entry: ManifestEntry, label: str, timeout: float) -> None:
    """Fetch one manifest file: temp file beside ``dest``, sha256 check, atomic rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    limit = entry.bytes if entry.bytes is not None else MAX_ARCHIVE_BYTES
    try:
        tmp, digest, size = _stream_to_temp(url, dest.parent, label, timeout=timeout, max_bytes=limit)
    except _SizeExceeded:
        if entry.bytes is None:
            raise
        raise ChecksumError(label, f"{entry.bytes} bytes", f"more than {entry.bytes} bytes", url) from None
    try:
        if entry.bytes is not None and size != entry.bytes:
            raise ChecksumError(label, f"{entry.bytes} bytes", f"{size} bytes", url)
        if digest != entry.sha256:
            raise ChecksumError(label, entry.sha256, digest, url)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _mirror_base(base_url: str | None) -> str | None:
    base = base_url if base_url is not None else os.environ.get(MIRROR_ENV) or None
    if base is None:
        return None
    if "://" not in base:  # a local directory
        return Path(base).expanduser().resolve().as_uri()
    return base


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(rel, safe="/")


def download(name: str, root: str | os.PathLike | None = None, base_url: str | None = None,
             force: bool = False, *, timeout: float = 60.0, workers: int = 4,
             archive_sha256: str | None = None) -> DownloadReport:
    """Fetch set ``name`` into ``root/<folder>`` and check every file's sha256.

    Args:
        base_url: a mirror laid out like the data root (``<base_url>/<folder>/<file>``; for an
            archive set ``<base_url>/<archive name>``).  Default: env ``XNET_DATA_MIRROR``, else
            the canonical origin.  A local directory path is accepted.
        force: fetch again even files that are present and correct.
        timeout: socket timeout per request, seconds.
        workers: parallel downloads.
        archive_sha256: expected sha256 of an archive set's archive (overrides the registry).

    Raises:
        ChecksumError: a file's bytes differ from the manifest (the file is not written).
        DownloadError: network/HTTP failure or unsafe archive.  Files fetched and verified before
            the failure are kept; no temporary or unverified file is left behind.
    """
    spec = DATASETS[resolve_name(name)]
    root = _root(root)
    mirror = _mirror_base(base_url)
    if spec.is_archive:
        return _download_archive(spec, root, mirror, force, timeout, archive_sha256)

    entries = load_manifest(spec.name)
    assert entries is not None, f"{spec.name}: file set without a manifest"
    folder = root / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    source = mirror if mirror is not None else spec.url_base
    report = DownloadReport(spec.name, folder, source or "")

    todo: list[tuple[str, ManifestEntry]] = []
    for e in entries:
        if not force and _check_entry(folder, e) is None:
            report.skipped.append(e.file)
            continue
        remote = f"{spec.folder}/{e.file}" if mirror is not None else spec.remote_path(e.file)
        todo.append((_join(source, remote), e))
    if todo:
        log.info("%s: fetching %d file(s) from %s (%d already present)", spec.name, len(todo), source, len(report.skipped))

    def one(job: tuple[str, ManifestEntry]) -> str:
        url, e = job
        _fetch_file(url, folder / e.file, e, f"{spec.name}/{e.file}", timeout)
        return e.file

    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1))) as pool, \
            progress(total=len(todo), desc=spec.name, unit="file", enabled=bool(todo)) as bar:
        futures = [pool.submit(one, job) for job in todo]
        for fut in futures:
            try:
                report.downloaded.append(fut.result())
            except Exception as exc:  # collected; raised once all workers are done
                errors.append(exc)
            bar.update()
    if errors:
        if len(errors) == 1:
            raise errors[0]
        first = "; ".join(str(e) for e in errors[:3])
        raise DownloadError(f"{spec.name}: {len(errors)} file(s) failed: {first}" + (" ..." if len(errors) > 3 else ""))
    _write_manifest_copy(spec, folder)
    log.info("%s: %d downloaded, %d already present -> %s", spec.name, len(report.downloaded), len(report.skipped), folder)
    return report


def _write_manifest_copy(spec: DatasetSpec, folder: Path) -> None:
    """Put the packaged manifest beside the images (as in the shared data layout), if absent."""
    target = folder / "MANIFEST.tsv"
    if spec.manifest_path is None or target.exists():
        return
    try:
        shutil.copyfile(spec.manifest_path, target)
    except OSError as exc:  # read-only root and the like: the copy is a convenience only
        log.debug("could not write %s: %s", target, exc)


# --------------------------------------------------------------------------- archives


def _safe_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The archive's regular files with validated relative paths; one shared top folder stripped."""
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    total = 0
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        if info.is_dir() or name.startswith(_ARCHIVE_JUNK[0]) or PurePosixPath(name).name in _ARCHIVE_JUNK[1:]:
            continue
        try:
            rel = _safe_relpath(name)
        except ValueError:
            raise DownloadError(f"unsafe path in archive: {info.filename!r}; nothing extracted") from None
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DownloadError(f"symbolic link in archive: {info.filename!r}; nothing extracted")
        if info.flag_bits & 0x1:
            raise DownloadError(f"encrypted member in archive: {info.filename!r}")
        total += info.file_size
        if total > MAX_ARCHIVE_BYTES:
            raise DownloadError(f"archive expands to more than {MAX_ARCHIVE_BYTES} bytes; refused")
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files (.DS_Store, ._resource forks) carry no data
        members.append((info, rel))
    if not members:
        raise DownloadError("archive holds no files")
    tops = {rel.parts[0] for _, rel in members}
    if len(tops) == 1 and all(len(rel.parts) > 1 for _, rel in members):
        members = [(info, PurePosixPath(*rel.parts[1:])) for info, rel in members]
    for info, rel in members:
        if rel.as_posix() in ("MANIFEST.tsv", "SOURCE.txt"):
            raise DownloadError(f"archive member {info.filename!r} would clash with xnet's bookkeeping files")
    return members


def _extract(zip_path: Path, staging: Path) -> list[ManifestEntry]:
    """Extract every safe member under ``staging``; returns what was written (with sha256)."""
    written: list[ManifestEntry] = []
    with zipfile.ZipFile(zip_path) as zf:
        budget = MAX_ARCHIVE_BYTES
        for info, rel in _safe_members(zf):
            dest = staging.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            h, size = hashlib.sha256(), 0
            with zf.open(info) as src, open(dest, "xb") as out:
                while chunk := src.read(CHUNK):
                    size += len(chunk)
                    budget -= len(chunk)
                    if budget < 0:  # declared sizes can lie
                        raise DownloadError(f"archive expands to more than {MAX_ARCHIVE_BYTES} bytes; refused")
                    h.update(chunk)
                    out.write(chunk)
            written.append(ManifestEntry(rel.as_posix(), h.hexdigest(), size))
    return written


def _download_archive(spec: DatasetSpec, root: Path, mirror: str | None, force: bool,
                      timeout: float, archive_sha256: str | None) -> DownloadReport:
    folder = root / spec.folder
    expected = (archive_sha256 or spec.archive_sha256 or "").lower() or None
    archive_name = PurePosixPath(urllib.parse.urlsplit(spec.archive_url).path).name
    url = _join(mirror, archive_name) if mirror is not None else spec.archive_url
    report = DownloadReport(spec.name, folder, url, verified=expected is not None or spec.manifest is not None)

    if not force and folder.is_dir() and _has_data_file(folder):
        entries, pinned = _entries_for(spec, folder)
        problems = [p for e in entries or [] if (p := _check_entry(folder, e)) is not None]
        if entries is not None and not problems:
            report.skipped = [e.file for e in entries]
            report.verified = pinned
            if not pinned:
                log.warning("%s: already present in %s; its checksums were recorded at download time and are "
                            "NOT pinned in xnet (use --force to fetch again)", spec.name, folder)
            return report
        if entries is None:
            raise DownloadError(f"{spec.name}: {folder} already has files but no checksums to check them; "
                                f"use --force to replace them")
        log.warning("%s: %d problem(s) in %s (%s); fetching again", spec.name, len(problems), folder, problems[0])

    root.mkdir(parents=True, exist_ok=True)
    log.info("%s: fetching %s", spec.name, url)
    tmp, digest, size = _stream_to_temp(url, root, spec.name, timeout=timeout, max_bytes=MAX_ARCHIVE_BYTES,
                                        suffix=".zip.part", show_bytes=True)
    staging: Path | None = None
    try:
        report.archive_sha256 = digest
        if expected is not None and digest != expected:
            raise ChecksumError(f"{spec.name}/{archive_name}", expected, digest, url)
        if not zipfile.is_zipfile(tmp):
            raise DownloadError(f"{spec.name}: {url} did not return a zip archive ({size} bytes)")
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.folder}.staging-"))
        written = _extract(tmp, staging)
        pinned_entries = load_manifest(spec.name)
        if pinned_entries is not None:
            for e in pinned_entries:
                problem = _check_entry(staging, e)
                if problem is not None:
                    raise DownloadError(f"{spec.name}: archive content does not match the pinned manifest: {problem}")
        if expected is None:
            log.warning(
                "%s: the archive's checksum is NOT pinned in xnet, so this download is UNVERIFIED.\n"
                "  url:    %s\n  sha256: %s  (%d bytes)\n"
                "  Compare this sha256 with a copy you trust; if it matches, pin it with "
                "--archive-sha256 %s (or archive_sha256 in xnet.data.download.DATASETS).",
                spec.name, url, digest, size, digest)
            _write_recorded_manifest(staging, written, url, digest)
        _install(staging, folder)
        report.downloaded = [e.file for e in written]
        log.info("%s: %d file(s) extracted -> %s", spec.name, len(written), folder)
        return report
    finally:
        tmp.unlink(missing_ok=True)
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_recorded_manifest(staging: Path, written: list[ManifestEntry], url: str, digest: str) -> None:
    with open(staging / "MANIFEST.tsv", "w", newline="", encoding="utf-8") as f:
        f.write("file\tsha256\tbytes\n")
        for e in sorted(written, key=lambda e: e.file):
            f.write(f"{e.file}\t{e.sha256}\t{e.bytes}\n")
    (staging / "SOURCE.txt").write_text(
        "UNVERIFIED: these checksums were recorded by xnet at download time (trust on first use);\n"
        "the archive's sha256 is not pinned in xnet. Compare it with a trusted copy.\n"
        f"url\t{url}\narchive_sha256\t{digest}\n"
        f"downloaded_utc\t{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n",
        encoding="utf-8",
    )


def _install(staging: Path, folder: Path) -> None:
    """Move the staged tree into ``folder`` (a rename when the folder does not exist yet)."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = folder / src.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)


# --------------------------------------------------------------------------- CLI


def _list(root: Path) -> None:
    print(f"data root: {root}")
    print(f"{'name':<27} {'files':>5}  {'checks':<10} {'status':<8} origin")
    for name, spec in DATASETS.items():
        entries = load_manifest(name)
        n = str(len(entries)) if entries is not None else "?"
        checks = "sha256" if entries is not None else ("archive" if spec.archive_sha256 else "UNPINNED")
        folder = root / spec.folder
        status = "present" if folder.is_dir() and _has_data_file(folder) else "missing"
        print(f"{name:<27} {n:>5}  {checks:<10} {status:<8} {spec.origin}" + (f"  [{spec.note}]" if spec.note else ""))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xnet.data.download",
        description="Download and verify the xnet benchmark data sets (sha256-checked).",
        epilog="NAME 'all' means every set with pinned checksums (i.e. all but Rain12_original). "
               f"Mirrors: --mirror or ${MIRROR_ENV}, laid out like the data root.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"data set(s): {', '.join(DATASETS)}, or all")
    p.add_argument("--root", help=f"data root (default: ${ROOT_ENV} or ./data)")
    p.add_argument("--mirror", help="base URL or directory laid out like the data root, replaces the origin")
    p.add_argument("--verify-only", action="store_true", help="only check the files already present")
    p.add_argument("--quick", action="store_true", help="with --verify-only: compare sizes, skip sha256")
    p.add_argument("--list", action="store_true", help="list the known sets and whether they are present")
    p.add_argument("--force", action="store_true", help="fetch again even files that are present and correct")
    p.add_argument("--archive-sha256", metavar="HEX", help="expected sha256 of an archive set (Rain12_original)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout per request in seconds (60)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors and warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    root = _root(args.root)
    if args.list:
        _list(root)
        if not args.names:
            return 0
    if not args.names:
        parser.error("give at least one NAME (or --list)")

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    old_level, old_propagate = log.level, log.propagate
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    try:
        names: list[str] = []
        for n in args.names:
            names += [k for k, s in DATASETS.items() if s.pinned] if n.lower() == "all" else [resolve_name(n)]
        failed = []
        for name in dict.fromkeys(names):
            if args.verify_only:
                problems = verify(name, root, quick=args.quick)
                for prob in problems[:20]:
                    print(f"{name}: {prob}", file=sys.stderr)
                if len(problems) > 20:
                    print(f"{name}: ... and {len(problems) - 20} more", file=sys.stderr)
                if problems:
                    failed.append(f"{name} ({len(problems)} problem(s))")
                elif not args.quiet:
                    pinned = DATASETS[name].manifest is not None
                    print(f"{name}: OK ({root / DATASETS[name].folder})"
                          + ("" if pinned else " (checked against checksums recorded at download, NOT pinned)"))
            else:
                download(name, root, args.mirror, args.force, timeout=args.timeout,
                         archive_sha256=args.archive_sha256)
        if failed:
            print(f"error: verification failed: {', '.join(failed)}", file=sys.stderr)
            return 1
        return 0
    except (DownloadError, ValueError, OSError) as exc:
        print(f"error: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


if __name__ == "__main__":
    sys.exit(main())
