"""The DerainNet/DDN training layout (rainy_image/N_k.jpg + ground_truth/N.jpg) on pairs made here."""

from pathlib import Path

import numpy as np
import pytest
from conftest import compose, run_train
from PIL import Image

from xnet.data.sources import DDNPairs
from xnet.protocol.io import ImageError, load_image


def make_ddn(root: Path, clean_ids=(1, 2, 10), versions=(1, 2, 3), size=(48, 40)) -> Path:
    rng = np.random.default_rng(0)
    (root / "rainy_image").mkdir(parents=True)
    (root / "ground_truth").mkdir()
    for n in clean_ids:
        clean = rng.integers(0, 200, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(clean).save(root / "ground_truth" / f"{n}.jpg", quality=95)
        for k in versions:
            streaks = np.zeros_like(clean)
            streaks[:, k::7] = 50  # a different rain layer per version
            Image.fromarray(clean + streaks).save(root / "rainy_image" / f"{n}_{k}.jpg", quality=95)
    return root


def test_pairs_every_rainy_version_with_its_clean_image(tmp_path):
    root = make_ddn(tmp_path / "ddn")
    source = DDNPairs(root)
    names = [item[0] for item in source]
    assert names == ["1_1", "1_2", "1_3", "2_1", "2_2", "2_3", "10_1", "10_2", "10_3"]  # natural order
    _name, rainy, clean = source[7]
    np.testing.assert_array_equal(rainy, load_image(root / "rainy_image" / "10_2.jpg", "keep"))
    np.testing.assert_array_equal(clean, load_image(root / "ground_truth" / "10.jpg", "keep"))
    assert source[6][2] is source[8][2]  # one decoded clean image per N
    assert not np.array_equal(source[6][1], source[7][1])
    assert [n for n, *_ in DDNPairs(root, versions=[2])] == ["1_2", "2_2", "10_2"]
    assert [n for n, *_ in DDNPairs(root, limit=2)] == ["1_1", "1_2", "1_3", "2_1", "2_2", "2_3"]


def test_layout_errors_name_the_file(tmp_path):
    root = make_ddn(tmp_path / "ddn", clean_ids=(1,), versions=(1,))
    Image.new("RGB", (48, 40)).save(root / "rainy_image" / "7_1.jpg")
    with pytest.raises(ImageError, match=r"no clean image for rainy set\(s\) \['7'\]"):
        len(DDNPairs(root))
    (root / "rainy_image" / "7_1.jpg").rename(root / "rainy_image" / "seven.jpg")
    with pytest.raises(ImageError, match="seven.jpg: not a DDN rainy image name"):
        len(DDNPairs(root))
    with pytest.raises(ImageError, match="no rainy_image/ folder"):
        len(DDNPairs(root / "ground_truth"))


def test_data_train_ddn_trains_a_derain_net(tmp_path):
    root = make_ddn(tmp_path / "ddn")
    overrides = [
        "task=derain",
        "model=xdncnn_rgb",
        "model.net.num_blocks=1",
        "model.net.width=8",
        "data/train=ddn",
        f"data.train.path={root}",
        "data/val=sample",
        "data/test=sample",
        "debug=tiny",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "data.patch_size=32",
        "data.batch_size=4",
        "test_after_fit=false",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose("train", [*overrides, "paths.output_dir=/tmp/unused"])
    assert cfg.data.train._target_ == "xnet.data.sources.DDNPairs"
    summary = run_train(tmp_path / "run", overrides)
    assert np.isfinite(summary["val/psnr"])
