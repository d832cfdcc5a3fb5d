"""Restorers without weights through `xnet.evaluate`: the degraded input (`model=identity`) and BM3D
(`model=bm3d`), and the Rain12 input figures of the data README."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose

from xnet.evaluate import evaluate


def run_eval(tmp_path: Path, overrides: list[str]) -> dict:
    return evaluate(compose("eval", [f"paths.output_dir={tmp_path}", *overrides]))


def rain12_readme_figures(root: Path) -> dict[str, float]:
    """The rainy-input figures the Rain12 README states: {"RGB": dB, "Y": dB}."""
    text = (root / "Rain12" / "README.md").read_text()
    return {k: float(re.search(rf"\*\*{k} (\d+\.\d+) dB\*\*", text).group(1)) for k in ("RGB",)} | {
        "Y": float(re.search(r"\*\*Y \(BT\.601[^)]*\) (\d+\.\d+) dB\*\*", text).group(1))
    }


def test_rain12_rainy_inputs_score_the_readme_figures(tmp_path, data_dir):
    """The derain task's default test set is Rain12, scored on RGB and on Y; the rainy input itself
    ("identity" restorer) gives the README's RGB 28.815 / Y 30.135 dB. xnet's Y is rounded to uint8
    levels (MATLAB rgb2ycbcr on uint8, as the SR protocol): 30.130, 0.005 dB under the README's
    unrounded Y."""
    if not (data_dir / "Rain12").is_dir():
        pytest.skip("Rain12 not in the data root")
    expected = rain12_readme_figures(data_dir)
    report = run_eval(tmp_path, ["task=derain", "model=identity"])
    assert report["dataset"] == "Rain12" and report["images"] == 12
    assert abs(report["psnr"] - expected["RGB"]) < 0.001, report["psnr"]
    assert abs(report["psnr_y"] - expected["Y"]) < 0.01, report["psnr_y"]
    assert report["psnr_y"] - report["psnr"] > 1.0  # Y really is another space
    assert set(report["per_image"][0]) == {"image", "psnr", "ssim", "psnr_y", "ssim_y"}
    assert (tmp_path / "metrics.json").read_text().count('"psnr_y"') == 13  # the mean + 12 images


def test_derain_validation_is_not_the_test_set():
    for overrides in (["task=derain"], ["experiment=table2_xdncnn_rgb"], ["experiment=table2_dncnn_rgb"]):
        cfg = compose("train", [*overrides, "paths.output_dir=/tmp/unused"])
        assert cfg.data.test.name == "Rain12" and cfg.data.val.name != "Rain12", overrides


def test_identity_scores_the_noisy_input(tmp_path):
    report = run_eval(tmp_path, ["task=denoise", "model=identity", "data/test=sample", "task.sigma=25"])
    assert 21.0 < report["psnr"] < 22.5 and "psnr_y" not in report  # the σ=25 input: ≈21.8 dB (README demo)
    assert report["weights"] is None and report["params_trainable"] == 0


def _crops(data_dir: Path, out: Path, size: int = 48) -> Path:
    from PIL import Image

    out.mkdir()
    for name, (top, left) in {"test001": (100, 200), "test003": (40, 60)}.items():
        img = np.asarray(Image.open(data_dir / "BSD68" / f"{name}.png"))
        Image.fromarray(img[top : top + size, left : left + size]).save(out / f"{name}.png")
    return out


@pytest.mark.parametrize("sigma", [25, 50])
def test_bm3d_through_evaluate_equals_calling_bm3d(tmp_path, data_dir, sigma):
    """`model=bm3d` needs no weights, tells BM3D the task's σ, and is not residual: its per-image
    PSNR is that of bm3d.bm3d run directly on the same noisy image."""
    bm3d = pytest.importorskip("bm3d")
    from xnet.data.datasets import EvalDataset
    from xnet.data.sources import ImageFolder
    from xnet.utils.build import build_task

    folder = _crops(data_dir, tmp_path / "crops")
    overrides = ["task=denoise", "model=bm3d", "data/test=folder", f"data.test.path={folder}", f"task.sigma={sigma}"]
    report = run_eval(tmp_path / "run", overrides)
    task = build_task(compose("eval", [*overrides, "paths.output_dir=/tmp/unused"]))
    for i, row in enumerate(report["per_image"]):
        item = EvalDataset(ImageFolder(path=folder), task, seed=0)[i]
        direct = bm3d.bm3d(item["input"][0].double().numpy(), sigma / 255)
        clean = np.round(item["target"][0].double().numpy() * 255)
        out = np.clip(np.round(direct * 255), 0, 255)
        assert row["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((out - clean) ** 2)), abs=1e-3)
        noisy = np.clip(np.round(item["input"][0].double().numpy() * 255), 0, 255)
        assert row["psnr"] > 10 * np.log10(255**2 / np.mean((noisy - clean) ** 2)) + 3


def test_bm3d_is_refused_for_other_tasks_and_needs_sigma():
    from xnet.archs.classical import BM3D
    from xnet.utils.build import build_net

    cfg = compose("eval", ["task=sr", "model=bm3d", "paths.output_dir=/tmp/unused"])
    with pytest.raises(ValueError, match="not built for task 'sr'"):
        build_net(cfg)
    pytest.importorskip("bm3d")
    with pytest.raises(ValueError, match="sigma=0"):
        BM3D(sigma=0)
    grey = BM3D(sigma=25)(torch.full((1, 1, 16, 16), 0.5))
    assert grey.shape == (1, 1, 16, 16) and torch.allclose(grey, torch.full_like(grey, 0.5), atol=0.02)
