"""The data-set catalogue: the registered sets, their origins and manifests, and a folder's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from xnet.data import catalog


def test_registry_covers_the_shared_sets_and_manifests_parse():
    for name in [
        "Train400",
        "BSD68",
        "Set12",
        "CBSD68",
        "T91",
        "BSD200",
        "Set5",
        "Set14",
        "BSD100",
        "RainHeavy_JORDER-E_sample",
        "Rain12",
    ]:
        spec = catalog.DATASETS[name]
        entries = catalog.load_manifest(name)
        assert entries and all(len(e.sha256) == 64 and e.bytes for e in entries), name
        assert spec.url_base.startswith("https://raw.githubusercontent.com/")
    assert len(catalog.load_manifest("BSD100")) == 100
    rain12 = catalog.load_manifest("Rain12")
    assert len(rain12) == 24 and {e.file.split("/")[0] for e in rain12} == {"rain", "norain"}
    assert catalog.load_manifest("Rain12_original") is None
    assert catalog.DATASETS["Rain12_original"].archive_url == "https://yu-li.github.io/paper/li_cvpr16_rain.zip"
    assert catalog.DATASETS["Rain12_original"].archive_sha256 is None  # honest: not pinned yet


def test_canonical_urls():
    bsd68 = catalog.DATASETS["BSD68"]
    assert bsd68.url_base == (
        "https://raw.githubusercontent.com/cszn/DnCNN/e93b27812d3ff523a3a79d19e5e50d233d7a8d0a/testsets/BSD68/"
    )
    rain = catalog.DATASETS["RainHeavy_JORDER-E_sample"]
    assert rain.remote_path("train/rain/norain-1.png") == "data/train/small/rain/norain-1.png"
    assert rain.remote_path("test/norain/norain-5.png") == "data/test/small/norain/norain-5.png"
    assert catalog.DATASETS["BSD100"].remote_path("img_001_SRF_3_HR.png") == "img_001_SRF_3_HR.png"
    rain12 = catalog.DATASETS["Rain12"]
    assert rain12.url_base == (
        "https://raw.githubusercontent.com/CoderLi365/MSCIANet/0a1a76bc73b5d0abb4d9790bd2a955b111fc58bf/"
    )
    assert rain12.remote_path("rain/1.png") == "Rain12/rain/rain-001.png"
    assert rain12.remote_path("norain/12.png") == "Rain12/norain/norain-012.png"  # not rain/1.png's rule
    assert {rain12.remote_path(e.file) for e in catalog.load_manifest("Rain12")} == {
        r for _, r in catalog._RAIN12_REMOTE
    }


def test_names_are_case_insensitive_and_unknown_names_are_listed(tmp_path):
    assert catalog.resolve_name("bsd68") == "BSD68"
    assert catalog.resolve_name("RAINHEAVY_JORDER-E_SAMPLE") == "RainHeavy_JORDER-E_sample"
    for call in (lambda: catalog.dataset_dir("Set99", tmp_path), lambda: catalog.verify("Set99", tmp_path)):
        with pytest.raises(ValueError, match="unknown dataset 'Set99'") as exc:
            call()
        assert "Set5" in str(exc.value) and "BSD68" in str(exc.value)


def test_dataset_dir_finds_present_sets_case_insensitively(data_dir):
    assert catalog.dataset_dir("bsd68", data_dir) == data_dir / "BSD68"
    assert catalog.dataset_dir("set5", str(data_dir)) == data_dir / "Set5"


def test_missing_dataset_error_names_folder_root_and_command(tmp_path):
    with pytest.raises(catalog.DatasetMissingError) as exc:
        catalog.dataset_dir("set14", tmp_path)
    msg = str(exc.value)
    assert isinstance(exc.value, FileNotFoundError)
    assert str(tmp_path / "Set14") in msg and str(tmp_path) in msg
    assert "python -m xnet.data.download Set14" in msg
    assert "XNET_DATA=" in msg and "paths.data_dir=" in msg
    # A folder with only bookkeeping files (or temp files) still counts as missing.
    (tmp_path / "Set14").mkdir()
    (tmp_path / "Set14" / "MANIFEST.tsv").write_text("file\tsha256\n")
    (tmp_path / "Set14" / ".baboon.bmp.x.part").write_bytes(b"x")
    with pytest.raises(catalog.DatasetMissingError):
        catalog.dataset_dir("Set14", tmp_path)
    # Rain12_original's message says its checksum is not pinned.
    with pytest.raises(catalog.DatasetMissingError, match="not pinned"):
        catalog.dataset_dir("rain12_original", tmp_path)


def test_verify_reports_missing_wrong_and_unverifiable_sets(tmp_path):
    assert catalog.verify("Set5", tmp_path) == [f"missing folder: {tmp_path / 'Set5'}"]
    (tmp_path / "Rain12_original").mkdir()
    assert "cannot verify" in catalog.verify("Rain12_original", tmp_path)[0]
    entry = catalog.load_manifest("Set5")[0]
    (tmp_path / "Set5").mkdir()
    (tmp_path / "Set5" / entry.file).write_bytes(b"0" * entry.bytes)
    problems = catalog.verify("Set5", tmp_path)
    assert f"wrong sha256: {entry.file}" in problems[0] and len(problems) == 5
    assert catalog.verify("Set5", tmp_path, quick=True) == problems[1:]  # sizes only: the first passes


def test_the_data_root_is_xnet_data_else_data(monkeypatch, tmp_path):
    monkeypatch.setenv("XNET_DATA", str(tmp_path))
    assert catalog.default_data_root() == tmp_path == catalog.data_root(None)
    assert catalog.data_root("~/elsewhere") == Path("~/elsewhere").expanduser()
    monkeypatch.setenv("XNET_DATA", "")
    assert catalog.default_data_root() == Path("data")
