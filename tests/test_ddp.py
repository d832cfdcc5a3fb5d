"""Several processes: a tiny DDP run on CPU (gloo, 2 processes) trains, validates, tests and writes
its results once, from rank 0 — with the W&B logger too, whose ranks > 0 have no run to update —
and the submitit launcher runs a sweep job."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

TINY_CLI = ["experiment=demo", "debug=tiny", "trainer.max_steps=6", "trainer.val_check_interval=3", "threads=1"]


def train_cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "xnet.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_two_cpu_processes_train_validate_test_and_write_once(tmp_path):
    run = tmp_path / "run"
    res = train_cli(
        *TINY_CLI,
        "trainer=ddp_cpu",
        "logger=wandb",
        f"hydra.run.dir={run}",
        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"},
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in res.stdout + res.stderr
    assert (run / "train_ddp_process_1.log").is_file()  # the second process ran in the same run dir
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["step"] == 6
    assert summary["val/psnr"] > summary["val/psnr_input"] and summary["test/dataset"] == "sample-val"
    assert [p.name for p in (run / "checkpoints").glob("last*.ckpt")] == ["last.ckpt"]
    assert len(list(tmp_path.glob("**/offline-run-*"))) == 1  # one W&B run, from rank 0


@pytest.mark.slow
def test_the_submitit_launcher_runs_a_sweep_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    res = train_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        *TINY_CLI,
        "trainer.enable_progress_bar=false",
        "test_after_fit=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (metrics,) = sweep.glob("*/metrics.json")
    assert json.loads(metrics.read_text())["step"] == 6
    assert list(sweep.glob(".submitit/*/*_result.pkl"))  # the job ran under submitit
