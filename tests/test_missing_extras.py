"""An optional feature asked for without its packages (ONNX, BM3D, W&B, Hydra's launchers and sweepers):
one line naming the extra to install, exit status 2 — the package hidden from the command as if it were
not installed (``sys.modules[name] = None``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

#: hides the packages named in argv[1], then runs the module argv[2] with the rest as its command line
HIDE_AND_RUN = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    "hidden, command, said",
    [
        (
            "onnx,onnxscript",
            ["xnet.export", "weights=xdncnn_s25_cpu", "format=onnx", "output={tmp}/x.onnx"],
            "format=onnx needs the export extra (onnx, onnxscript): pip install 'xnet[export]'",
        ),
        (
            "bm3d",
            ["xnet.evaluate", "task=denoise", "model=bm3d", "data/test=sample", "hydra.run.dir={tmp}/run"],
            "model=bm3d needs the classical extra (bm3d): pip install 'xnet[classical]'",
        ),
        (
            "wandb",
            ["xnet.train", "experiment=demo", "debug=fast", "logger=wandb", "hydra.run.dir={tmp}/run"],
            "logger=wandb needs the wandb extra (wandb): pip install 'xnet[wandb]'",
        ),
        (
            "hydra_plugins.hydra_joblib_launcher",
            ["xnet.train", "-m", "experiment=demo", "hydra/launcher=joblib", "hydra.sweep.dir={tmp}/sweep"],
            "hydra/launcher=joblib needs the sweep extra (hydra-joblib-launcher): pip install 'xnet[sweep]'",
        ),
        (
            "hydra_plugins.hydra_optuna_sweeper",
            ["xnet.train", "hparams_search=optuna", "hydra.sweep.dir={tmp}/sweep"],
            "hydra/sweeper=optuna needs the sweep extra (hydra-optuna-sweeper): pip install 'xnet[sweep]'",
        ),
    ],
    ids=["onnx", "bm3d", "wandb", "joblib", "optuna"],
)
def test_a_missing_extra_is_one_line_naming_it_and_status_2(tmp_path, hidden, command, said):
    args = [a.format(tmp=tmp_path) for a in command]
    res = subprocess.run(
        [sys.executable, "-c", HIDE_AND_RUN, hidden, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (res.returncode, res.stderr.strip().splitlines()[-1:]) == (2, [f"error: {said}"]), res.stderr[-3000:]
    assert "Traceback" not in res.stderr and not list(tmp_path.glob("*.onnx"))
