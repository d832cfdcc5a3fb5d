"""Fetching the benchmark data sets of :mod:`xnet.data.catalog`, and the ``xnet-download`` command.

Each file is streamed into a hidden temporary file beside its destination, checked against its
manifest's sha256, and only then renamed into place: an interrupted or tampered download leaves
nothing behind, and files already present and right are skipped. A *mirror* (``--mirror``,
``base_url=`` or ``$XNET_DATA_MIRROR``; a URL or a local folder) is laid out like the data root
and replaces the canonical origin; an archive set's archive is fetched from ``<mirror>/<archive name>``.
"""

from __future__ import annotations

import argparse
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

from xnet.data.catalog import (
    DATASETS,
    READ_CHUNK,
    ROOT_ENV,
    DatasetSpec,
    ManifestEntry,
    check_entry,
    data_root,
    entries_for,
    has_data_file,
    load_manifest,
    resolve_name,
    safe_relpath,
    verify,
)
from xnet.protocol.atomic import user_mode
from xnet.utils.progress import progress

log = logging.getLogger(__name__)

MIRROR_ENV = "XNET_DATA_MIRROR"
USER_AGENT = "xnet-data-downloader/0.1 (+python urllib)"
MAX_ARCHIVE_BYTES = 2 << 30  # refuse archives (and their extracted contents) above 2 GiB
_ARCHIVE_JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db")


@dataclass
class DownloadReport:
    """What :func:`download` did for one set: the files fetched and the files already present."""

    name: str
    folder: Path
    source: str
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    archive_sha256: str | None = None
    verified: bool = True  # False: content could not be checked against pinned checksums


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


def _stream_to_temp(
    url: str,
    directory: Path,
    label: str,
    *,
    timeout: float,
    max_bytes: int,
    retries: int = 2,
    suffix: str = ".part",
    show_bytes: bool = False,
) -> tuple[Path, str, int]:
    """Download ``url`` into a new hidden temp file in ``directory``: (path, sha256, size).

    Network errors are retried; HTTP 4xx are not.  On any failure the temp file is removed.
    ``show_bytes``: a byte progress bar (archives; file sets count files instead).
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(2.0**attempt, 8.0))
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{label.replace('/', '_')}.", suffix=suffix)
        tmp = Path(tmp_name)
        try:
            h, size = hashlib.sha256(), 0
            with (
                os.fdopen(fd, "wb") as out,
                _open(url, timeout) as resp,
                progress(
                    total=int(resp.headers.get("Content-Length") or 0) or None,
                    desc=label,
                    unit="B",
                    unit_scale=True,
                    enabled=show_bytes,
                ) as bar,
            ):
                while chunk := resp.read(READ_CHUNK):
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
        user_mode(tmp)  # mkstemp made it 0600: the data gets the mode any file of the user's gets
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


def download(
    name: str,
    root: str | os.PathLike | None = None,
    base_url: str | None = None,
    force: bool = False,
    *,
    timeout: float = 60.0,
    workers: int = 4,
    archive_sha256: str | None = None,
) -> DownloadReport:
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
    root = data_root(root)
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
        if not force and check_entry(folder, e) is None:
            report.skipped.append(e.file)
            continue
        remote = f"{spec.folder}/{e.file}" if mirror is not None else spec.remote_path(e.file)
        todo.append((_join(source, remote), e))
    if todo:
        log.info(
            "%s: fetching %d file(s) from %s (%d already present)", spec.name, len(todo), source, len(report.skipped)
        )

    def one(job: tuple[str, ManifestEntry]) -> str:
        url, e = job
        _fetch_file(url, folder / e.file, e, f"{spec.name}/{e.file}", timeout)
        return e.file

    errors: list[BaseException] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1))) as pool,
        progress(total=len(todo), desc=spec.name, unit="file", enabled=bool(todo)) as bar,
    ):
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
    log.info(
        "%s: %d downloaded, %d already present -> %s", spec.name, len(report.downloaded), len(report.skipped), folder
    )
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
            rel = safe_relpath(name)
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
                while chunk := src.read(READ_CHUNK):
                    size += len(chunk)
                    budget -= len(chunk)
                    if budget < 0:  # declared sizes can lie
                        raise DownloadError(f"archive expands to more than {MAX_ARCHIVE_BYTES} bytes; refused")
                    h.update(chunk)
                    out.write(chunk)
            written.append(ManifestEntry(rel.as_posix(), h.hexdigest(), size))
    return written


def _download_archive(
    spec: DatasetSpec, root: Path, mirror: str | None, force: bool, timeout: float, archive_sha256: str | None
) -> DownloadReport:
    folder = root / spec.folder
    expected = (archive_sha256 or spec.archive_sha256 or "").lower() or None
    archive_name = PurePosixPath(urllib.parse.urlsplit(spec.archive_url).path).name
    url = _join(mirror, archive_name) if mirror is not None else spec.archive_url
    report = DownloadReport(spec.name, folder, url, verified=expected is not None or spec.manifest is not None)

    if not force and folder.is_dir() and has_data_file(folder):
        entries, pinned = entries_for(spec, folder)
        problems = [p for e in entries or [] if (p := check_entry(folder, e)) is not None]
        if entries is not None and not problems:
            report.skipped = [e.file for e in entries]
            report.verified = pinned
            if not pinned:
                log.warning(
                    "%s: already present in %s; its checksums were recorded at download time and are "
                    "NOT pinned in xnet (use --force to fetch again)",
                    spec.name,
                    folder,
                )
            return report
        if entries is None:
            raise DownloadError(
                f"{spec.name}: {folder} already has files but no checksums to check them; use --force to replace them"
            )
        log.warning("%s: %d problem(s) in %s (%s); fetching again", spec.name, len(problems), folder, problems[0])

    root.mkdir(parents=True, exist_ok=True)
    log.info("%s: fetching %s", spec.name, url)
    tmp, digest, size = _stream_to_temp(
        url, root, spec.name, timeout=timeout, max_bytes=MAX_ARCHIVE_BYTES, suffix=".zip.part", show_bytes=True
    )
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
                problem = check_entry(staging, e)
                if problem is not None:
                    raise DownloadError(f"{spec.name}: archive content does not match the pinned manifest: {problem}")
        if expected is None:
            log.warning(
                "%s: the archive's checksum is NOT pinned in xnet, so this download is UNVERIFIED.\n"
                "  url:    %s\n  sha256: %s  (%d bytes)\n"
                "  Compare this sha256 with a copy you trust; if it matches, pin it with "
                "--archive-sha256 %s (or archive_sha256 in xnet.data.catalog.DATASETS).",
                spec.name,
                url,
                digest,
                size,
                digest,
            )
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
    """Move the staged tree into ``folder`` (a rename when the folder does not exist yet); its
    folders get the user's usual mode (mkdtemp made the staging folder 0700)."""
    for sub in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
        user_mode(sub, folder=True)
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
        status = "present" if folder.is_dir() and has_data_file(folder) else "missing"
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
    root = data_root(args.root)
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
                    print(
                        f"{name}: OK ({root / DATASETS[name].folder})"
                        + ("" if pinned else " (checked against checksums recorded at download, NOT pinned)")
                    )
            else:
                download(name, root, args.mirror, args.force, timeout=args.timeout, archive_sha256=args.archive_sha256)
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
