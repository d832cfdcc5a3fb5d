"""The GPU-slot command, dry-run on CPU: every step runs under its cap, runs are packed into at most
8 files, an unfinished run resumes from its packed state, a finished one lands in the zoo."""
import json
import subprocess
import sys
import tarfile

import pytest
import yaml

from conftest import REPO

QUEUE = [
    {"name": "tiny_done", "zoo": "tiny_done", "overrides": ["experiment=demo", "data.batch_size=4", "data.patch_size=32",
     "trainer.val_check_interval=10", "data.val_limit=1", "module.log_images=0"],
     "eval": ["task=denoise", "task.sigma=25"], "default_steps": 20, "test_sets": ["sample"]},
    {"name": "tiny_long", "overrides": ["experiment=demo", "data.batch_size=4", "data.patch_size=32",
     "trainer.val_check_interval=50", "data.val_limit=1", "module.log_images=0"], "default_steps": 10_000_000},
]


def run_queue(tmp_path, *extra, budget="1"):
    cmd = [sys.executable, "scripts/gpu_queue.py", "--device", "cpu", "--budget-min", budget, "--out", str(tmp_path / "out"),
           "--queue", str(tmp_path / "queue.yaml"), "--runs", str(tmp_path / "runs"), "--reserve-s", "10", "--min-chunk-s", "8",
           "--bench-families", "dncnn", "--profile-steps", "3", "--profile-start", "2", "--startup-s", "8", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_cpu_dry_run_packs_states_and_results_and_ingests(tmp_path):
    (tmp_path / "queue.yaml").write_text(yaml.safe_dump(QUEUE))
    res = run_queue(tmp_path, "--skip", "cpu-threads", "--train-overrides", "threads=1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 * 2**20 for f in files), files
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["torch"] and report["steps"]["cuda_tests"]["status"] in ("ok", "exit 5", "timeout")  # 5: all skipped
    assert report["steps"]["benchmark"]["status"] in ("ok", "timeout")  # capped, never blocking
    done, long = report["steps"]["train:tiny_done"], report["steps"]["train:tiny_long"]
    assert done["finished"] and done["step"] == 20 and done["eval_sample"] == "ok"
    assert not long["finished"] and 0 < long["step"] < 10_000_000  # stopped by the budget, resumable
    with tarfile.open(out / "run_tiny_done.tar.gz") as tar:
        names = tar.getnames()
    assert {"run.json", "selected.ckpt", "eval/sample.json", "metrics.json"} <= set(names) and "state.ckpt" not in names
    assert "profile.json" in names
    with tarfile.open(out / "run_tiny_long.tar.gz") as tar:
        assert "state.ckpt" in tar.getnames()

    zoo = tmp_path / "zoo"
    ing = subprocess.run([sys.executable, "scripts/gpu_queue.py", "--ingest", str(out), "--runs", str(tmp_path / "runs"),
                          "--zoo", str(zoo), "--queue", str(tmp_path / "queue.yaml")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ing.returncode == 0, ing.stderr[-2000:]
    index = json.loads((zoo / "zoo.json").read_text())
    assert index["tiny_done"]["training"]["steps"] == 20 and "sample-val" in index["tiny_done"]["results"]
    assert "cpu" in (zoo / "tiny_done" / "MODEL_CARD.md").read_text()
    state = tmp_path / "runs" / "tiny_long" / "state.ckpt"
    info = json.loads((tmp_path / "runs" / "tiny_long" / "run.json").read_text())
    assert state.is_file() and info["max_steps"] == 10_000_000 and len(info["chunks"]) == 1

    # the next slot resumes the unfinished run from its state and skips the finished one
    res2 = run_queue(tmp_path, "--skip", "tests", "benchmark", "cpu-threads", "--train-overrides", "threads=1", budget="0.6")
    assert res2.returncode == 0, res2.stdout[-3000:]
    report2 = json.loads((out / "report.json").read_text())
    assert "train:tiny_done" not in report2["steps"]
    assert report2["steps"]["train:tiny_long"]["step"] > long["step"]


def test_the_committed_queue_composes():
    """Every entry of runs/queue.yaml composes as the GPU queue trains and scores it: a typo'd key
    there would only show on a GPU, costing the slot."""
    from xnet.utils.config import compose_config

    queue = yaml.safe_load((REPO / "runs" / "queue.yaml").read_text())
    assert queue and len({e["name"] for e in queue}) == len(queue)
    for entry in queue:
        cfg = compose_config("train", [*entry["overrides"], "trainer=gpu", "ckpt_path=last_if_any", "logger=csv", "test_after_fit=false"])
        assert cfg.trainer.accelerator == "gpu", entry["name"]
        for test_set in entry.get("test_sets", []):
            ev = compose_config("eval", [*entry.get("eval", []), "weights=x.pt", f"data/test={test_set}", "device=cuda", "fuse=false"])
            for key in ("name", "sigma", "scale", "color"):  # scored on the task it was trained for
                assert ev.task.get(key) == cfg.task.get(key), (entry["name"], test_set, key)
