"""xnet.utils.logs: a training run's console says each thing once, without third-party tips."""

import os
import re
import subprocess
import sys

from conftest import REPO


def test_a_training_runs_console_has_no_duplicated_lines_and_no_tips(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "XNET_PROGRESS": "0"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnet.train",
            "experiment=demo",
            "debug=tiny",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    console = (out.stdout + out.stderr).splitlines()
    messages = [re.sub(r"^\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - ", "", line) for line in console]
    messages = [m.removeprefix("INFO: ") for m in messages if m.strip()]
    assert "Seed set to 0" in messages and len(messages) == len(set(messages)), console
    assert not any("Tip:" in m or "weights_only" in m or "TPU available" in m for m in messages), console
