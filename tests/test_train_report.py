"""A training run reports itself (issue #27): without a terminal, step lines (loss, steps/s, ETA) and
validation lines (PSNR, best so far) on the console and in ``train.log``, a start header and an end
summary, the times in ``metrics.json``; on a terminal, a bar over the run's steps instead of the
console lines (which still go to ``train.log``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

#: 4 steps, a line every 2, validations at 2 and 4, 1 test image: a real run of a few seconds
SHORT = [
    "experiment=demo",
    "debug=tiny",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "callbacks.progress_log.every=2",
    "test_limit=1",
]
STEP = re.compile(r"step (\d+)/4  loss \S+  lr \S+  [\d.]+ steps/s  ETA .+ \(max_steps\)$")
VALIDATION = re.compile(r"validation at step (\d+): PSNR [\d.]+ dB \(input [\d.]+ dB\); best [\d.]+ dB at step (\d+)$")


def train(run_dir, progress: str | None, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XNET_PROGRESS"}
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", **({"XNET_PROGRESS": progress} if progress else {}))
    res = subprocess.run(
        [sys.executable, "-m", "xnet.train", *SHORT, *extra, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        capture_output=True,  # pipes: no terminal
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def messages(text: str) -> list[str]:
    """Log lines without Hydra's ``[time][logger][LEVEL] - `` prefix."""
    return [m.group(1) for m in re.finditer(r"^\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - (.*)$", text, re.M)]


def test_a_run_without_a_terminal_reports_steps_validations_header_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    res = train(run_dir, None)
    console, logged = messages(res.stdout + res.stderr), messages((run_dir / "train.log").read_text())
    for said in (console, logged):  # the same lines in both
        assert [int(STEP.match(m)[1]) for m in said if STEP.match(m)] == [2, 4]
        assert [VALIDATION.match(m).groups() for m in said if VALIDATION.match(m)] in (
            [("2", "2"), ("4", "4")],  # the best is the latest validation, or the earlier one
            [("2", "2"), ("4", "2")],
        )
    assert "%|" not in res.stdout + res.stderr  # no bar drawn
    header = logged[logged.index(f"run dir: {run_dir.resolve()}") :][:6]
    assert header[1].startswith("demo: denoise sigma=25 (grey) | model xdncnn: 39,296 parameters by the paper's")
    assert header[2].startswith("data: train sample, validation sample (at most 2 images), test sample (at most 1")
    assert header[3].startswith("recipe paper: Adam lr 1.0e-03") and header[4].startswith("device: cpu, precision")
    assert header[5] == f"config: {run_dir / 'config.yaml'} (print_config=true prints it)"
    assert (run_dir / "config.yaml").read_text().count("max_steps: 4") == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    times = {k: metrics[k] for k in metrics if k.startswith("time/")}
    assert set(times) == {"time/wall_s", "time/train_s", "time/val_total_s", "time/test_s", "time/s_per_step"}
    assert 0 < times["time/val_total_s"] < times["time/train_s"] < times["time/wall_s"]
    assert times["time/s_per_step"] == pytest.approx((times["time/train_s"] - times["time/val_total_s"]) / 4)
    assert metrics["best/val_psnr"] >= metrics["val/psnr"] and metrics["best/step"] in (2, 4)
    summary = logged[-4:]
    assert re.fullmatch(
        r"trained 4 steps in .+ \([\d.]+ s/step, .+ of it validating\); this command took .+", summary[0]
    )
    assert summary[1].startswith("validation PSNR: input ") and f"best {metrics['best/val_psnr']:.2f} dB" in summary[1]
    assert (
        summary[2] == f"test sample-val (1 image): PSNR {metrics['test/psnr']:.3f} dB, SSIM {metrics['test/ssim']:.4f}"
    )
    assert summary[3] == f"done: {run_dir.resolve()}"


def test_with_a_bar_the_console_counts_steps_and_the_lines_go_to_train_log_only(tmp_path):
    run_dir = tmp_path / "run"
    res = train(run_dir, "1", "print_config=true")
    frames = res.stdout.replace("\r", "\n")
    assert re.search(r"^steps: 100%\|.*\| 4/4 \[", frames, re.M) and "Epoch" not in frames
    console = messages(res.stdout + res.stderr)
    assert not [m for m in console if STEP.match(m) or VALIDATION.match(m)]
    logged = messages((run_dir / "train.log").read_text())
    assert len([m for m in logged if STEP.match(m)]) == 2 and len([m for m in logged if VALIDATION.match(m)]) == 2
    assert "trainer:\n" in res.stdout and "  max_steps: 4\n" in res.stdout  # print_config: the resolved config
