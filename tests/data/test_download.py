"""The data downloader, end to end against a loopback HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from xnet.data import catalog
from xnet.data import download as dl

REPO = Path(__file__).resolve().parents[2]


def _shared_data() -> Path:
    env = os.environ.get("XNET_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


SHARED = _shared_data()
needs_shared = pytest.mark.skipif(
    not (SHARED / "Set5").is_dir(), reason=f"shared benchmark data not found at {SHARED} (set XNET_DATA)"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1:<free port>; yields (base_url, list of requested paths)."""
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)


def _hidden_leftovers(root: Path) -> list[Path]:
    """Temp files / staging folders the downloader may have left (they all start with a dot)."""
    return list(root.rglob(".*")) if root.exists() else []


def test_unknown_names_are_refused_before_fetching(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'Set99'"):
        dl.download("Set99", tmp_path)
    assert not tmp_path.joinpath("Set99").exists()


# --------------------------------------------------------------------------- file sets over HTTP


@needs_shared
def test_good_download_verifies_then_skips_present_files(tmp_path):
    root = tmp_path / "root"
    with serve(SHARED) as (url, requests):
        report = dl.download("set5", root, base_url=url)
        assert sorted(report.downloaded) == sorted(e.file for e in catalog.load_manifest("Set5"))
        assert report.skipped == []
        assert catalog.verify("Set5", root) == []
        assert catalog.dataset_dir("Set5", root) == root / "Set5"
        assert (root / "Set5" / "MANIFEST.tsv").is_file()
        assert _hidden_leftovers(root) == []
        n = len(requests)
        assert n == 5 and all(r.startswith("/Set5/") for r in requests)

        again = dl.download("Set5", root, base_url=url)
        assert again.downloaded == [] and len(again.skipped) == 5
        assert len(requests) == n  # nothing fetched

        # A corrupted local file is detected and fetched again; the good ones are still skipped.
        bad = root / "Set5" / "head_GT.bmp"
        bad.write_bytes(b"junk")
        assert catalog.verify("Set5", root) == [
            f"wrong size: head_GT.bmp (expected {catalog.load_manifest('Set5')[3].bytes} bytes, got 4)"
        ]
        fixed = dl.download("Set5", root, base_url=url)
        assert fixed.downloaded == ["head_GT.bmp"] and len(fixed.skipped) == 4
        assert catalog.verify("Set5", root) == []


@needs_shared
def test_tampered_file_is_refused_and_nothing_bad_is_left(tmp_path):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    shutil.copytree(SHARED / "Set5", mirror / "Set5")
    victim = mirror / "Set5" / "bird_GT.bmp"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF  # same size, different content
    victim.write_bytes(bytes(data))
    expected = {e.file: e.sha256 for e in catalog.load_manifest("Set5")}["bird_GT.bmp"]

    with serve(mirror) as (url, _):
        with pytest.raises(dl.ChecksumError) as exc:
            dl.download("Set5", root, base_url=url)
        msg = str(exc.value)
        assert "bird_GT.bmp" in msg and expected in msg and hashlib.sha256(data).hexdigest() in msg
        assert not (root / "Set5" / "bird_GT.bmp").exists()
        assert _hidden_leftovers(root) == []
        assert catalog.verify("Set5", root) == ["missing: bird_GT.bmp"]  # the four good files were kept

        # A longer (appended-to) file is refused as well, while streaming.
        victim.write_bytes((SHARED / "Set5" / "bird_GT.bmp").read_bytes() + b"extra")
        with pytest.raises(dl.ChecksumError, match="bird_GT.bmp"):
            dl.download("Set5", root, base_url=url)
        assert not (root / "Set5" / "bird_GT.bmp").exists() and _hidden_leftovers(root) == []

        # A file the server does not have: a clear error, nothing left behind.
        victim.unlink()
        with pytest.raises(dl.DownloadError, match=r"Set5/bird_GT.bmp: HTTP 404"):
            dl.download("Set5", root, base_url=url)
        assert _hidden_leftovers(root) == []


@needs_shared
def test_cli(tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    with serve(SHARED) as (url, _):
        assert dl.main(["SET5", "--root", str(root), "--mirror", url, "-q"]) == 0
        # XNET_DATA_MIRROR is the default mirror.
        monkeypatch.setenv(dl.MIRROR_ENV, url)
        assert dl.main(["Set5", "--root", str(root), "--force", "-q"]) == 0
    assert dl.main(["Set5", "--root", str(root), "--verify-only"]) == 0
    assert "Set5: OK" in capsys.readouterr().out

    (root / "Set5" / "baby_GT.bmp").write_bytes(b"0" * catalog.load_manifest("Set5")[0].bytes)
    assert dl.main(["Set5", "--root", str(root), "--verify-only"]) == 1
    err = capsys.readouterr().err
    assert "wrong sha256: baby_GT.bmp" in err and err.strip().splitlines()[-1].startswith("error:")
    assert dl.main(["Set5", "--root", str(root), "--verify-only", "--quick"]) == 0  # sizes still match

    assert dl.main(["Nope", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'Nope'" in err

    assert dl.main(["BSD68", "--root", str(tmp_path / "empty"), "--verify-only"]) == 1

    with pytest.raises(SystemExit) as exc:  # argparse usage error
        dl.main([])
    assert exc.value.code == 2


def test_cli_list_as_a_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-m", "xnet.data.download", "--list", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Rain12_original" in out.stdout and "UNPINNED" in out.stdout and "BSD100" in out.stdout


@pytest.mark.skipif(not (SHARED / "Rain12").is_dir(), reason=f"Rain12 not found under {SHARED}")
def test_rain12_downloads_pinned_and_pairs_up(tmp_path):
    """Rain12 is a pinned file set: a mirror laid out like the data root yields a verified copy."""
    root = tmp_path / "root"
    with serve(SHARED) as (url, requests):
        report = dl.download("rain12", root, base_url=url)
    assert len(report.downloaded) == 24 and catalog.verify("Rain12", root) == []
    assert all(r.startswith("/Rain12/") for r in requests)


# --------------------------------------------------------------------------- archive sets (Rain12_original)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


RAIN_FILES = {
    "Rain12/001_in.png": b"rainy-1",
    "Rain12/001_GT.png": b"clean-1",
    "Rain12/sub/002_in.png": b"rainy-2",
    "__MACOSX/Rain12/._001_in.png": b"resource fork",
}


def test_archive_unpinned_downloads_warns_and_records_checksums(tmp_path, caplog):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    mirror.mkdir()
    blob = _zip_bytes(RAIN_FILES)
    (mirror / "li_cvpr16_rain.zip").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    with serve(mirror) as (url, requests), caplog.at_level(logging.WARNING, logger=dl.log.name):
        report = dl.download("Rain12_original", root, base_url=url)
        assert requests == ["/li_cvpr16_rain.zip"]
        assert report.archive_sha256 == digest and report.verified is False
        assert digest in caplog.text and "NOT pinned" in caplog.text
        folder = root / "Rain12_original"
        assert sorted(report.downloaded) == ["001_GT.png", "001_in.png", "sub/002_in.png"]  # top folder stripped
        assert (folder / "sub" / "002_in.png").read_bytes() == b"rainy-2"
        assert not (folder / "__MACOSX").exists()
        assert "UNVERIFIED" in (folder / "SOURCE.txt").read_text() and digest in (folder / "SOURCE.txt").read_text()
        assert catalog.verify("Rain12_original", root) == []  # against the recorded (unpinned) manifest
        assert catalog.dataset_dir("Rain12_original", root) == folder
        assert _hidden_leftovers(root) == []

        again = dl.download("Rain12_original", root, base_url=url)  # present: nothing fetched
        assert len(requests) == 1 and again.downloaded == [] and len(again.skipped) == 3

    (folder / "001_GT.png").write_bytes(b"changed")  # same size, other bytes
    problems = catalog.verify("Rain12_original", root)
    assert len(problems) == 1 and problems[0].startswith("wrong sha256: 001_GT.png")


def test_archive_with_pinned_sha256(tmp_path):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    mirror.mkdir()
    blob = _zip_bytes(RAIN_FILES)
    (mirror / "li_cvpr16_rain.zip").write_bytes(blob)
    with serve(mirror) as (url, _):
        with pytest.raises(dl.ChecksumError) as exc:
            dl.download("Rain12_original", root, base_url=url, archive_sha256="0" * 64)
        assert "li_cvpr16_rain.zip" in str(exc.value) and "0" * 64 in str(exc.value)
        assert not (root / "Rain12_original").exists() and _hidden_leftovers(root) == []

        good = dl.download(
            "Rain12_original", root, base_url=url, archive_sha256=hashlib.sha256(blob).hexdigest().upper()
        )
        assert good.verified and not (root / "Rain12_original" / "SOURCE.txt").exists()


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt", "C:/escape.txt"])
def test_archive_path_traversal_is_refused(tmp_path, evil):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    mirror.mkdir()
    (mirror / "li_cvpr16_rain.zip").write_bytes(_zip_bytes({"ok.png": b"ok", evil: b"evil"}))
    with serve(mirror) as (url, _), pytest.raises(dl.DownloadError, match="unsafe path in archive"):
        dl.download("Rain12_original", root, base_url=url)
    assert not (tmp_path / "escape.txt").exists() and not (root / "escape.txt").exists()
    assert not (root / "Rain12_original").exists() and _hidden_leftovers(root) == []


def test_archive_rejects_non_zip(tmp_path):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    mirror.mkdir()
    (mirror / "li_cvpr16_rain.zip").write_bytes(b"<html>moved</html>")
    with serve(mirror) as (url, _), pytest.raises(dl.DownloadError, match="did not return a zip archive"):
        dl.download("Rain12_original", root, base_url=url)
    assert not (root / "Rain12_original").exists() and _hidden_leftovers(root) == []


@needs_shared
def test_downloads_show_progress_files_for_a_set_and_bytes_for_an_archive(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("XNET_PROGRESS", "1")  # forced on: stderr is not a terminal here
    with serve(SHARED) as (url, _):
        dl.download("set5", tmp_path / "root", base_url=url)
    assert "Set5: 100%" in capfd.readouterr().err  # the bar over the 5 files
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    blob = _zip_bytes(RAIN_FILES)
    (mirror / "li_cvpr16_rain.zip").write_bytes(blob)
    with serve(mirror) as (url, _):
        dl.download("Rain12_original", tmp_path / "root", base_url=url, archive_sha256=hashlib.sha256(blob).hexdigest())
    err = capfd.readouterr().err
    assert "Rain12_original" in err and "100%" in err  # Content-Length known: a byte bar to 100%


def test_downloaded_files_and_folders_get_the_users_usual_mode(tmp_path):
    """Temporary files and staging folders are 0600/0700; what lands in the data root is not."""
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    mirror.mkdir()
    (mirror / "li_cvpr16_rain.zip").write_bytes(_zip_bytes(RAIN_FILES))
    previous = os.umask(0o022)
    try:
        with serve(mirror) as (url, _):
            dl.download("Rain12_original", root, base_url=url)
    finally:
        os.umask(previous)
    folder = root / "Rain12_original"
    assert folder.stat().st_mode & 0o777 == 0o755 and (folder / "sub").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()} == {0o644}


@needs_shared
def test_a_downloaded_file_of_a_set_gets_the_users_usual_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        with serve(SHARED) as (url, _):
            dl.download("set5", tmp_path / "root", base_url=url)
    finally:
        os.umask(previous)
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "root" / "Set5").iterdir()} == {0o644}
