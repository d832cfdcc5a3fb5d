"""Real folders hold odd files: each is handled or refused with a message naming it."""

import numpy as np
import pytest
from PIL import Image

from xnet.data.datasets import PatchDataset
from xnet.data.sources import ImageFolder, PairedFolder
from xnet.protocol.degradations import GaussianNoise
from xnet.protocol.io import ImageError, load_image
from xnet.protocol.tasks import Task


def grey_task():
    return Task("denoise", "grey", GaussianNoise(25), residual=True)


def test_corrupt_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageError, match="broken.png"):
        load_image(bad)
    with pytest.raises(ImageError, match="broken.png"):
        _ = ImageFolder(path=tmp_path).items


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(path)


def test_rgba_drops_alpha_and_palette_expands(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.shape == (5, 6, 3) and (out[..., 0] == 200).all()
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (5, 6, 3)


def test_16_bit_images_are_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png")[..., 0].tolist() == [[0, 100, 255]]


def test_grey_and_colour_mix_becomes_the_task_space(tmp_path):
    Image.new("L", (8, 8), 90).save(tmp_path / "g.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "c.png")
    source = ImageFolder(path=tmp_path)
    assert sorted(img.shape[-1] for _, img in source) == [1, 3]  # decoded as stored
    grey = grey_task()
    assert {tuple(grey.clean_tensor(img).shape) for _, img in source} == {(1, 8, 8)}
    rgb = Task("derain", "rgb", GaussianNoise(25), residual=True)
    assert {tuple(rgb.clean_tensor(img).shape) for _, img in source} == {(3, 8, 8)}
    # PIL's ITU-R 601 luma for pure red: 299/1000 * 255 ≈ 76
    red = next(img for name, img in source if name == "c")
    assert round(float(grey.clean_tensor(red).mean()) * 255) == 76


def test_images_smaller_than_the_crop_are_skipped_by_name_or_refused(tmp_path, caplog):
    Image.new("L", (20, 20)).save(tmp_path / "small.png")
    Image.new("L", (64, 64)).save(tmp_path / "big.png")
    source = ImageFolder(path=tmp_path, min_size=40)
    assert [n for n, _ in source] == ["big"]
    assert "small.png" in caplog.text
    with pytest.raises(ImageError, match="smaller than the crop"):
        _ = ImageFolder(path=tmp_path, min_size=100).items
    with pytest.raises(ValueError, match="small"):
        PatchDataset(ImageFolder(path=tmp_path), grey_task(), patch_size=40, length=4)


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(ImageError, match="no images"):
        _ = ImageFolder(path=tmp_path).items
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(path=tmp_path / "nowhere")


def test_missing_benchmark_set_names_the_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m xnet.data.download BSD68"):
        ImageFolder(name="BSD68", root=tmp_path)


def test_paired_folder_refuses_unmatched_files(tmp_path):
    for d in ("rain", "norain"):
        (tmp_path / d).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "rain" / "1.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "norain" / "2.png")
    with pytest.raises(ImageError, match="without a partner"):
        _ = PairedFolder(path=tmp_path).items


def test_patches_are_aligned_for_pairs(tmp_path):
    for d in ("rain", "norain"):
        (tmp_path / d).mkdir()
    arr = np.random.default_rng(1).integers(0, 255, (30, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "rain" / "1.png")
    Image.fromarray(arr).save(tmp_path / "norain" / "1.png")
    task = Task("derain", "rgb", GaussianNoise(25), residual=True)
    ds = PatchDataset(PairedFolder(path=tmp_path), task, patch_size=12, length=8)
    for i in range(8):
        item = ds[i]
        assert item["input"].shape == (3, 12, 12) and (item["input"] == item["target"]).all()


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored landscape with 'rotate 90°' in EXIF is portrait, as every viewer shows it."""
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:, :10] = 255  # white left third
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "phone.jpg")
    assert upright.shape == (30, 20, 3)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # the white band is now on top


def test_lossy_conversions_are_warned_once_per_run(tmp_path, caplog):
    from xnet.protocol.io import reset_warnings

    reset_warnings()
    for i in range(2):
        Image.new("RGBA", (8, 8), (200, 0, 0, 7)).save(tmp_path / f"alpha{i}.png")
        Image.fromarray(np.full((8, 8), 257 * 9, np.uint16)).save(tmp_path / f"deep{i}.png")
        Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(tmp_path / f"print{i}.jpg")
        Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / f"colour{i}.png")
    grey = grey_task()
    with caplog.at_level("WARNING", logger="xnet.protocol.io"):
        for _, img in ImageFolder(path=tmp_path):
            grey.to_task_color(img)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages  # one per kind, not one per image
    assert any("alpha0.png: alpha channel dropped" in m for m in messages)
    assert any("deep0.png: 16-bit image rescaled to 8 bits" in m for m in messages)
    assert any("print0.jpg: CMYK image converted to RGB" in m for m in messages)
    assert any("colour image(s) converted to grey" in m for m in messages)
    reset_warnings()  # a new run reports them again
    with caplog.at_level("WARNING", logger="xnet.protocol.io"):
        load_image(tmp_path / "alpha1.png")
    assert len(caplog.records) == 5
