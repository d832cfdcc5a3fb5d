"""A short real training run per task on the embedded sample photo: PSNR must rise."""

import csv

import pytest
from conftest import run_train

SMALL = [
    "data/train=sample",
    "data/val=sample",
    "data/test=sample",
    "debug=tiny",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=60",
    "trainer.val_check_interval=10",
    "data.patch_size=48",
    "test_after_fit=false",
]


def val_psnr_curve(run_dir):
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(r["val/psnr"]) for r in csv.DictReader(f) if r.get("val/psnr")]


@pytest.mark.parametrize(
    "overrides,margin",
    [
        (["task=sr", "model=xsrcnn_f", "task.scale=3", "model.net.widths=[16,16]"], 3.0),
        (["task=sr", "model=xsrresnet", "task.scale=2", "model.net.num_blocks=1", "model.net.width=16"], 3.0),
        (["task=derain", "model=xdncnn_rgb", "model.net.num_blocks=2", "model.net.width=16"], 0.5),
    ],
    ids=["sr-xsrcnn_f", "sr-xsrresnet", "derain-xdncnn_rgb"],
)
def test_psnr_rises_during_a_short_run(tmp_path, overrides, margin):
    summary = run_train(tmp_path, [*SMALL, *overrides])
    curve = val_psnr_curve(tmp_path)
    assert len(curve) == 6
    assert curve[-1] - curve[0] > margin, curve
    if summary["residual"]:  # residual nets start at the input and must improve on it
        assert summary["val/psnr"] > summary["val/psnr_input"], summary
