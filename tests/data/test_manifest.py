"""A benchmark folder is checked against its manifest (names and count) before it is scored: an
extra image would be averaged into the published figure (Set12 with 13 images: 28.28, not 29.07)."""
import shutil

import pytest
from PIL import Image

from conftest import compose
from xnet.data.sources import ImageFolder, ManifestMismatchError, PairedFolder


@pytest.fixture
def set12_copy(tmp_path, data_dir):
    shutil.copytree(data_dir / "Set12", tmp_path / "Set12")
    return tmp_path


def test_the_shipped_set_matches_its_manifest(data_dir):
    assert len(ImageFolder(name="Set12", root=data_dir)) == 12


def test_an_extra_image_is_refused_by_name(set12_copy):
    Image.new("L", (64, 64), 128).save(set12_copy / "Set12" / "13.png")
    with pytest.raises(ManifestMismatchError, match=r"Set12: not the Set12 set \(13 images where its manifest lists 12; not in it: 13.png\)"):
        ImageFolder(name="Set12", root=set12_copy).items


def test_a_missing_image_is_refused_by_name(set12_copy):
    (set12_copy / "Set12" / "05.png").unlink()
    with pytest.raises(ManifestMismatchError, match="missing: 05.png"):
        ImageFolder(name="Set12", root=set12_copy).items


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
        PairedFolder(name="RainHeavy_JORDER-E_sample", root=tmp_path, split="test").items


def test_evaluate_refuses_before_scoring(set12_copy, tmp_path):
    from xnet.evaluate import evaluate

    Image.new("L", (64, 64), 128).save(set12_copy / "Set12" / "13.png")
    cfg = compose("eval", ["weights=xdncnn_s25_cpu", "data/test=set12", f"paths.data_dir={set12_copy}", f"paths.output_dir={tmp_path / 'e'}"])
    with pytest.raises(ManifestMismatchError, match="13.png"):
        evaluate(cfg)
    assert not (tmp_path / "e" / "metrics.json").exists()
