"""`xnet.compare`: two restorers image by image under one protocol (CSV, plot, summary)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf
from PIL import Image

from xnet.archs.dncnn import DnCNN
from xnet.compare import per_image, positional_to_overrides, side_label, side_overrides
from xnet.deploy.weights import save_weights


def tiny_nets(tmp_path: Path) -> tuple[Path, Path]:
    """A: residual 0 (restores nothing: the noisy input); B: subtracts 0.3 everywhere (worse)."""
    torch.manual_seed(0)
    paths = []
    for name, bias in (("zero", 0.0), ("shifted", 0.3)):
        net = DnCNN(depth=3, width=4)
        net[-1].weight.data.zero_()
        net[-1].bias.data.fill_(bias)
        paths.append(save_weights(net, tmp_path / f"{name}.safetensors"))
    return paths[0], paths[1]


def test_compare_cli_writes_the_per_image_table_and_plot(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(30, 220, (20 + i, 24), dtype=np.uint8)).save(images / f"im{i}.png")
    a, b = tiny_nets(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [
        "task=denoise",
        "model=dncnn",
        "model.net.depth=3",
        "model.net.width=4",
        "data/test=folder",
        f"data.test.path={images}",
        "task.sigma=50",
        f"hydra.run.dir={out}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "xnet.compare", str(a), str(b), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "A better on 3 of 3 images, B on 0: im0, im1, im2" in done.stdout
    rows = list(csv.DictReader((out / "compare.csv").read_text().splitlines()))
    assert [r["image"] for r in rows] == ["im0", "im1", "im2"] and all(float(r["psnr_diff"]) > 0 for r in rows)
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "compare.json").read_text())
    assert summary["sigma"] == 50 and summary["a"] == "zero" and summary["b"] == "shifted"

    # A side with no weights (model=identity) under the same noise equals the zero-residual net exactly.
    same = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnet.compare",
            str(a),
            "b.model=identity",
            *args[:-1],
            f"hydra.run.dir={tmp_path / 'same'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert same.returncode == 0, same.stderr[-2000:]
    assert "A better on 0 of 3 images, B on 0" in same.stdout
    rows = list(csv.DictReader((tmp_path / "same" / "compare.csv").read_text().splitlines()))
    assert all(float(r["psnr_diff"]) == 0 for r in rows)


def test_reports_of_other_protocols_are_refused():
    a = {
        "dataset": "BSD68",
        "task": "denoise",
        "sigma": 25,
        "seed": 0,
        "per_image": [{"image": "x", "psnr": 30.0, "ssim": 0.9}],
    }
    with pytest.raises(ValueError, match="sigma = 25 vs 50"):
        per_image(a, {**a, "sigma": 50})
    with pytest.raises(ValueError, match="other images"):
        per_image(a, {**a, "per_image": [{"image": "y", "psnr": 1.0, "ssim": 0.1}]})
    rows = per_image(a, {**a, "per_image": [{"image": "x", "psnr": 29.5, "ssim": 0.8}]})
    assert rows == [{"image": "x", "psnr_a": 30.0, "psnr_b": 29.5, "ssim_a": 0.9, "ssim_b": 0.8, "psnr_diff": 0.5}]


def test_positional_arguments_name_the_sides():
    assert positional_to_overrides(["w.pth", "runs/m/metrics.json", "task.sigma=50"]) == [
        "a.weights=w.pth",
        "b.metrics=runs/m/metrics.json",
        "task.sigma=50",
    ]
    assert positional_to_overrides(["a.weights=x", "b.model=bm3d"]) == ["a.weights=x", "b.model=bm3d"]


def test_a_side_is_its_model_weights_and_own_overrides():
    side = OmegaConf.create(
        {
            "weights": "k/dncnn_25.pth",
            "model": "dncnn",
            "overrides": ["model.net.bn_merged=true"],
            "metrics": None,
            "label": None,
        }
    )
    assert side_overrides(side) == ["model=dncnn", "weights=k/dncnn_25.pth", "model.net.bn_merged=true"]
    assert side_label(side) == "dncnn_25"
    assert side_label(OmegaConf.create({"model": "bm3d"})) == "bm3d"
