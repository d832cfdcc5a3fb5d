"""A benchmark folder is checked against its manifest (names and count) before it is scored: an
extra image would be averaged into the published figure (Set12 with 13 images: 28.28, not 29.07)."""

import shutil

import pytest
from conftest import compose
from PIL import Image

from xnet.data.sources import ImageFolder, ManifestMismatchError, PairedFolder


@pytest.fixture
def set12_copy(tmp_path, data_dir):
    shutil.copytree(data_dir / "Set12", tmp_path / "Set12")
    return tmp_path


def test_the_shipped_set_matches_its_manifest(data_dir):
    assert len(ImageFolder(name="Set12", root=data_dir)) == 12


def test_an_extra_image_is_refused_by_name(set12_copy):
    Image.new("L", (64, 64), 128).save(set12_copy / "Set12" / "13.png")
    with pytest.raises(
        ManifestMismatchError,
        match=r"Set12: not the Set12 set \(13 images where its manifest lists 12; not in it: 13.png\)",
    ):
        _ = ImageFolder(name="Set12", root=set12_copy).items


def test_a_missing_image_is_refused_by_name(set12_copy):
    (set12_copy / "Set12" / "05.png").unlink()
    with pytest.raises(ManifestMismatchError, match="missing: 05.png"):
        _ = ImageFolder(name="Set12", root=set12_copy).items


def test_a_plain_folder_is_scored_as_it_is(set12_copy):
    Image.new("L", (64, 64), 128).save(set12_copy / "Set12" / "13.png")
    assert len(ImageFolder(name="Set12", root=set12_copy, strict=False)) == 13
    assert len(ImageFolder(path=set12_copy / "Set12")) == 13


def test_paired_sets_are_checked_in_their_split(tmp_path, data_dir):
    shutil.copytree(data_dir / "RainHeavy_JORDER-E_sample", tmp_path / "RainHeavy_JORDER-E_sample")
    assert len(PairedFolder(name="RainHeavy_JORDER-E_sample", root=tmp_path, split="test")) == 5
    for sub in ("rain", "norain"):
        Image.new("RGB", (64, 64)).save(tmp_path / "RainHeavy_JORDER-E_sample" / "test" / sub / "extra.png")
    with pytest.raises(ManifestMismatchError, match="test/rain: .*not in it: extra.png"):
        _ = PairedFolder(name="RainHeavy_JORDER-E_sample", root=tmp_path, split="test").items


def test_evaluate_refuses_before_scoring(set12_copy, tmp_path):
    from xnet.evaluate import evaluate

    Image.new("L", (64, 64), 128).save(set12_copy / "Set12" / "13.png")
    cfg = compose(
        "eval",
        [
            "weights=xdncnn_s25_cpu",
            "data/test=set12",
            f"paths.data_dir={set12_copy}",
            f"paths.output_dir={tmp_path / 'e'}",
        ],
    )
    with pytest.raises(ManifestMismatchError, match="13.png"):
        evaluate(cfg)
    assert not (tmp_path / "e" / "metrics.json").exists()


# --- by content: a replaced image of the same name is not the set ------------------------------------
def test_an_image_replaced_under_its_name_is_refused(set12_copy):
    Image.new("L", (256, 256), 128).save(set12_copy / "Set12" / "05.png")  # same name, another picture
    with pytest.raises(
        ManifestMismatchError, match=r"Set12: not the Set12 set \(05.png: other content than its manifest's sha256\)"
    ):
        _ = ImageFolder(name="Set12", root=set12_copy).items
    assert len(ImageFolder(name="Set12", root=set12_copy, strict=False)) == 12  # as a plain folder it is scored


def test_the_hashes_are_cached_by_file_stat(set12_copy, tmp_path, monkeypatch):
    from xnet.data import catalog

    monkeypatch.setenv("XNET_HASH_CACHE", str(tmp_path / "cache" / "sha256.json"))
    hashed = []
    real = catalog._sha256_file
    monkeypatch.setattr(catalog, "_sha256_file", lambda p: (hashed.append(p.name), real(p))[1])
    assert len(ImageFolder(name="Set12", root=set12_copy)) == 12
    assert len(hashed) == 12 and (tmp_path / "cache" / "sha256.json").is_file()
    hashed.clear()
    assert len(ImageFolder(name="Set12", root=set12_copy)) == 12
    assert hashed == []  # nothing changed: nothing hashed again
    original = (set12_copy / "Set12" / "07.png").read_bytes()
    (set12_copy / "Set12" / "07.png").write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit, same size
    with pytest.raises(ManifestMismatchError, match="07.png: other content"):
        _ = ImageFolder(name="Set12", root=set12_copy).items
    assert hashed == ["07.png"]


def test_a_damaged_cache_is_only_a_cache(set12_copy, tmp_path, monkeypatch):
    cache = tmp_path / "sha256.json"
    cache.write_text("{not json")
    monkeypatch.setenv("XNET_HASH_CACHE", str(cache))
    assert len(ImageFolder(name="Set12", root=set12_copy)) == 12
    assert cache.read_text().startswith("{\n")  # rewritten
