"""W&B, tested offline: the offline run files are the evidence (``tests/wandb_offline.py`` reads them).

One run per job (basic and joblib launchers), named by the sweep axes, grouped by experiment, with
the whole config and the group choices, the per-image test table, the paper's figure and the gap;
a resumed chunk continues its run; an evaluation is a run of job type ``eval``; wandb itself is
asked whether it is logged in (a self-hosted server included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, TINY, compose, run_train
from wandb_offline import offline_runs

from xnet.utils.hydra_job import JobInfo, job_dirname, run_name

SWEEP_TINY = [
    "model.net.width=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=2",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "data.patch_size=32",
    "data.samples_per_epoch=16",
    "data.val_limit=1",
    "data.test.limit=2",
    "module.log_images=1",
    "threads=1",
    "data/train=sample",
]


def wandb_env(tmp_path: Path) -> dict[str, str]:
    """Offline, silent, and every W&B folder (settings, cache, artifacts) inside ``tmp_path``."""
    folders = {
        k: tmp_path / k.lower()
        for k in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")
    }
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **{k: str(v) for k, v in folders.items()}}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    for k, v in wandb_env(tmp_path / "wandb_home").items():
        monkeypatch.setenv(k, v)


def multirun(tmp_path: Path, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **wandb_env(tmp_path / "wandb_home"), "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "xnet.train", "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/metrics.json"))


def test_a_multirun_gives_one_named_grouped_run_per_job_with_config_table_and_paper_gap(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    multirun(
        tmp_path,
        [
            "experiment=fig3_quick",
            "model.net.depth=2,3",
            "model.net.xunit.kernel_size=9",
            "logger=wandb",
            "paper_psnr=29.21",
            "hydra/launcher=basic",
            *SWEEP_TINY,
            f"hydra.sweep.dir={sweep}",
        ],
    )
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and not list(sweep.glob("*/*/metrics.json"))  # flat: data/train=... made no sub-folder
    runs = {}
    for job in jobs:
        (run,) = offline_runs(job)  # exactly one W&B run in each job's run dir
        assert json.loads((job / "wandb_run.json").read_text())["id"] == run.id
        runs[run.name] = run
    # named by the axis the sweep varied, not "fig3_quick", nor kernel_size: its params list 1,5,9 but the command
    # line fixed it to 9
    assert set(runs) == {"depth=2", "depth=3"}
    assert len({r.id for r in runs.values()}) == 2
    xnet = runs["depth=3"]
    assert (
        xnet.group == "fig3_quick"
        and xnet.job_type == "train"
        and {"denoise", "xnet", "train", "multirun"} <= set(xnet.tags)
    )
    net = xnet.config["model"]["net"]
    assert (net["depth"], net["width"], net["xunit"]["kernel_size"]) == (3, 8, 9)
    assert xnet.config["choices"]["xunit"] == "paper" and xnet.config["choices"]["recipe"] == "paper"
    assert xnet.config["task"]["sigma"] == 25 and xnet.config["data"]["batch_size"] == 4 and xnet.config["seed"] == 0
    assert xnet.config["trainer"]["max_steps"] == 4 and "model.net.depth=3" in xnet.config["overrides"]
    # one copy of each value: optim.*, task.*, module.* only in their nodes (no flat lr, betas, sigma ...)
    assert not {"lr", "betas", "schedule", "sigma", "channels_last", "params_paper", "color"} & set(xnet.config)
    metrics = json.loads((sweep / next(j.name for j in jobs if j.name.startswith("1_")) / "metrics.json").read_text())
    assert (
        xnet.summary["test/psnr"] == pytest.approx(metrics["test/psnr"])
        and xnet.summary["params_paper"] == metrics["params_paper"]
    )
    times = {"time/wall_s", "time/train_s", "time/val_total_s", "time/test_s", "time/s_per_step"}
    assert all(xnet.summary[k] == pytest.approx(metrics[k]) and metrics[k] > 0 for k in times)
    assert xnet.summary["paper/psnr"] == 29.21 and xnet.summary["paper/gap"] == pytest.approx(
        metrics["test/psnr"] - 29.21
    )
    (table,) = xnet.files("media/table/test/per_image_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:3] == ["image", "psnr", "ssim"] and len(data["data"]) == 2
    (caption,) = xnet.history["val/01/captions"]  # one validation image (val_limit=1): its PSNR is val/psnr
    assert caption.endswith(f"PSNR {xnet.history['val/psnr']:.2f} dB") and xnet.files("media/images/val/*.png")
    assert all(r.exit_code == 0 for r in runs.values())


def test_joblib_workers_give_one_run_per_job_in_flat_folders(data_dir, tmp_path):
    """Pooled workers run several jobs each: every job still gets its own W&B run (and the run-dir
    resolver is registered in the workers)."""
    sweep = tmp_path / "sweep"
    multirun(
        tmp_path,
        [
            "experiment=fig3_quick",
            "model.net.depth=2",
            "model.net.xunit.kernel_size=1,5,9",
            "logger=wandb",
            "data/test=bsd68_first8",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *SWEEP_TINY,
            "test_after_fit=false",
            f"hydra.sweep.dir={sweep}",
        ],
    )
    jobs = job_dirs(sweep)
    assert len(jobs) == 3 and all(j.name.split("_", 1)[0] in "012" for j in jobs)
    ids = [r.id for j in jobs for r in offline_runs(j)]
    assert len(ids) == 3 and len(set(ids)) == 3


def test_a_resumed_chunk_continues_the_same_run(tmp_path, offline_wandb):
    common = [*TINY, "logger=wandb", "trainer.val_check_interval=2", "test_after_fit=false"]
    run_train(tmp_path, [*common, "trainer.max_steps=2"])
    first = json.loads((tmp_path / "wandb_run.json").read_text())
    run_train(tmp_path, [*common, "trainer.max_steps=4", "ckpt_path=last"])
    chunks = offline_runs(tmp_path)
    assert len(chunks) == 2 and {c.id for c in chunks} == {first["id"]}  # two offline chunks of one run
    assert json.loads((tmp_path / "wandb_run.json").read_text())["id"] == first["id"]
    assert first["mode"] == "offline" and chunks[0].config["model"]["name"] == "xdncnn"


def test_an_evaluation_is_an_eval_run_with_the_per_image_table(tmp_path, offline_wandb, tiny_run):
    from xnet.evaluate import evaluate

    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose(
        "eval",
        [f"paths.output_dir={tmp_path}", "experiment=demo", f"weights={ckpt}", "data/test=sample", "logger=wandb"],
    )
    result = evaluate(cfg)
    (run,) = offline_runs(tmp_path)
    assert run.job_type == "eval" and run.summary["psnr"] == pytest.approx(result["psnr"])
    (table,) = run.files("media/table/test/per_image_*.table.json")
    assert len(json.loads(table.read_text())["data"]) == result["images"]


def test_names_by_overrides_and_flat_job_dirs():
    sweep = JobInfo(
        multirun=True,
        overrides=["arch=xnet_d3_r9", "data/test=set12", "optim.lr=1e-4", "hydra.launcher.n_jobs=2"],
        sweep_keys={"arch", "optim.lr"},
        choices={"data/test": "set12", "model": "xnet"},
    )
    assert run_name(sweep, "fig3", {"arch"}) == "xnet d3 r9 lr=1e-4"
    single = JobInfo(
        overrides=[
            "experiment=table1_xdncnn_s25",
            "recipe=fast",
            "trainer.max_steps=300",
            "paths.output_dir=x",
            "logger=wandb",
            "hydra.run.dir=outputs/x25",
            "ckpt_path=last",
        ],
        choices={"recipe": "fast", "logger": "wandb"},
    )
    assert run_name(single, "table1-xdncnn-s25") == "table1-xdncnn-s25 fast max_steps=300"
    assert run_name(JobInfo(), "demo") == "demo"
    assert job_dirname(0, "data/test=set12,model=xnet") == "0_data.test=set12,model=xnet"
    assert job_dirname(3, "x=[1, 2]") == "3_x=_1,_2_"
    long = job_dirname(7, ",".join(f"key{i}=value{i}" for i in range(40)))
    assert (
        len(long) <= 2 + 120
        and "/" not in long
        and long != job_dirname(7, ",".join(f"key{i}=value{i}" for i in range(41)))
    )


def test_the_best_checkpoint_is_uploaded_only_online(tmp_path, offline_wandb):
    from xnet.lit.tracking import upload_checkpoint

    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"weights")

    class FakeRun:
        id, offline, logged = "abc", False, []

        def log_artifact(self, artifact, aliases):
            self.logged.append((artifact, aliases))

    online = FakeRun()
    assert upload_checkpoint(online, ckpt, {"step": 30, "test/psnr": 29.0})
    ((artifact, aliases),) = online.logged
    assert artifact.type == "model" and artifact.name.startswith("model-abc") and aliases == ["best", "step-30"]
    offline = FakeRun()
    offline.offline, offline.logged = True, []
    assert not upload_checkpoint(offline, ckpt, {"step": 30}) and not offline.logged


LOGIN_CHECK = textwrap.dedent("""
    import subprocess
    started = []  # wandb talks to a server through its wandb-core service: it must not start
    _popen = subprocess.Popen.__init__
    def record(self, args, *a, **k):
        started.append(str(args))
        _popen(self, args, *a, **k)
    subprocess.Popen.__init__ = record
    from xnet.utils.build import wandb_logged_in
    print(
        "logged-in" if wandb_logged_in() else "not-logged-in",
        "service" if any("wandb-core" in s for s in started) else "no-service",
    )
""")


@pytest.mark.parametrize("base_url, expected", [("https://wandb.example.com", "logged-in"), (None, "not-logged-in")])
def test_wandb_itself_says_whether_it_is_logged_in_a_self_hosted_netrc_counts(tmp_path, base_url, expected):
    """A ~/.netrc for a self-hosted server logs in when that server is the configured host; the same
    file says nothing for api.wandb.ai. No prompt (stdin closed), no server contact (no wandb-core)."""
    (tmp_path / ".netrc").write_text(f"machine wandb.example.com\n  login user\n  password {'k' * 40}\n")
    (tmp_path / ".netrc").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        HOME=str(tmp_path),
        NETRC=str(tmp_path / ".netrc"),
        WANDB_CONFIG_DIR=str(tmp_path / "cfg"),
        **({"WANDB_BASE_URL": base_url} if base_url else {}),
    )
    res = subprocess.run(
        [sys.executable, "-c", LOGIN_CHECK],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [expected, "no-service"]


def test_the_swept_keys_come_from_the_sweeps_multirun_yaml(tmp_path):
    from omegaconf import OmegaConf

    from xnet.utils.hydra_job import swept_keys

    OmegaConf.save(
        OmegaConf.create(
            {
                "hydra": {
                    "overrides": {"task": ["optim.lr=1e-3,1e-4", "arch=xnet_d3_r9", "+seed=0,1", "data/test=set12"]}
                }
            }
        ),
        tmp_path / "multirun.yaml",
    )
    assert swept_keys(tmp_path / "multirun.yaml") == {"optim.lr", "seed"}
    assert swept_keys(tmp_path / "missing.yaml") == set()
    # the sweeper's params are axes too, unless they hold one value or the command line fixed them (arch=...)
    params = {"arch": "xnet_d3_r9,xnet_d4_r7", "model.net.depth": "range(2,5)", "threads": "1", "x": "choice(3)"}
    assert swept_keys(tmp_path / "multirun.yaml", params) == {"optim.lr", "seed", "model.net.depth"}
    optuna = {"optim.lr": "tag(log, interval(1e-4, 3e-3))", "model.net.depth": "int(interval(2, 6))"}
    assert swept_keys(tmp_path / "missing.yaml", optuna) == {"optim.lr", "model.net.depth"}
