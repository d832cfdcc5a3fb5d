"""Packed sets (one file a set, for the GPU slot's 64 MiB): the sources read a pack as they read the set's
folder, pixel for pixel; packing checks the files against the manifest; a pack that decodes to other
pixels fails with a line naming it."""

import shutil
import zipfile

import numpy as np
import pytest

from xnet.data.catalog import dataset_dir
from xnet.data.packed import PackedSet, pack_set
from xnet.data.sources import ImageFolder, PairedFolder
from xnet.protocol.io import ImageError


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    from conftest import data_root

    root = data_root()
    if root is None:
        pytest.skip("benchmark data not found (set XNET_DATA or place ../shared/data beside the repo)")
    out = tmp_path_factory.mktemp("packs")
    for name in ("Set5", "Set12", "Rain12"):
        pack_set(name, root, out, effort=0)
    return root, out


def same_items(a, b):
    return len(a) == len(b) and all(
        x[0] == y[0] and all(np.array_equal(u, v) for u, v in zip(x[1:], y[1:])) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("mode", ["keep", "L", "RGB"])
@pytest.mark.parametrize("name", ["Set5", "Set12"])  # RGB and grey images
def test_a_pack_reads_as_its_folder(packs, name, mode):
    root, out = packs
    assert same_items(ImageFolder(name, root, mode=mode).items, ImageFolder(name, out, mode=mode).items)


def test_paired_sets_read_from_a_pack_too(packs):
    root, out = packs
    assert dataset_dir("Rain12", out) == out / "Rain12.xpack"
    assert same_items(PairedFolder("Rain12", root).items, PairedFolder("Rain12", out).items)


def test_a_pack_is_smaller_than_the_raw_pixels(packs):
    _, out = packs
    pack = PackedSet(out / "Set5.xpack")
    raw = sum(int(np.prod(e.shape)) for e in pack.images.values())
    assert len(pack.images) == 5 and (out / "Set5.xpack").stat().st_size < 0.8 * raw


def test_the_folder_wins_over_a_pack_beside_it(packs, tmp_path):
    root, out = packs
    shutil.copy2(out / "Set5.xpack", tmp_path)
    assert dataset_dir("Set5", tmp_path) == tmp_path / "Set5.xpack"
    shutil.copytree(root / "Set5", tmp_path / "Set5")
    assert dataset_dir("Set5", tmp_path) == tmp_path / "Set5"


def test_packing_refuses_a_file_that_is_not_the_manifests(packs, tmp_path):
    root, _ = packs
    shutil.copytree(root / "Set5", tmp_path / "Set5")
    victim = min((tmp_path / "Set5").glob("*.bmp"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=rf"not the Set5 of its manifest .*wrong sha256: {victim.name}"):
        pack_set("Set5", tmp_path, tmp_path / "out", effort=0)
    assert not (tmp_path / "out" / "Set5.xpack").exists()


def test_a_pack_that_decodes_to_other_pixels_names_itself(packs, tmp_path):
    _, out = packs
    src = out / "Set12.xpack"
    bad = tmp_path / "Set12.xpack"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(bad, "w") as w:
        members = z.namelist()
        for m in members:  # the first image's bytes swapped for the second's
            w.writestr(m, z.read(members[1] if m == members[0] else m))
    with pytest.raises(ImageError, match=r"Set12.xpack: 01.png decodes to other pixels than were packed"):
        _ = ImageFolder("Set12", tmp_path).items
