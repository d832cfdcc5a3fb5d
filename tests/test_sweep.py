"""The figure sweeps: every configured point builds, a tiny real multirun gives a CSV and a plot."""

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import CONF, REPO
from hydra.utils import instantiate
from omegaconf import OmegaConf

from xnet.archs.params import count_paper_params
from xnet.figures.budget import activation_params, net_params
from xnet.figures.sweep_plots import make

TINY = [
    "model.net.width=8",
    "trainer.max_steps=6",
    "trainer.val_check_interval=6",
    "trainer.log_every_n_steps=2",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "data.patch_size=32",
    "data.samples_per_epoch=24",
    "data.val_limit=1",
    "data.test.limit=1",
    "module.log_images=0",
    "threads=1",
    "hydra/launcher=basic",
    "data/train=sample",  # the embedded photo, not Train400: decoding 400 images takes seconds per job
    "hydra.sweep.subdir=${hydra.job.num}",  # the default names every override: too long a path
]


def compose(config_name, overrides):
    """The composed config including its ``hydra`` node (the sweeper settings live there)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def run_multirun(args, cwd=REPO, timeout=120):
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "xnet.train", "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sweep_points(cfg, key="arch"):
    return str(cfg.hydra.sweeper.params[key]).split(",")


def grid(cfg):
    """Every point of the sweep's product grid, as ``{key: value}`` (ranges and lists expanded as Hydra does)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[int(v) for v in o.sweep_string_iterator()] for o in parsed]
    return [dict(zip(params, point)) for point in itertools.product(*axes)]


def net_at(cfg, point):
    cfg = cfg.copy()
    for key, value in point.items():
        OmegaConf.update(cfg, key, value)
    return instantiate(cfg.model.net, _convert_="all")


def net_of(cfg, arch):
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.arch = arch
    return instantiate(cfg.model.net, _convert_="all")


@pytest.mark.parametrize("quick", [False, True])
def test_fig3_is_a_product_grid_of_depth_and_xunit_kernel(quick):
    """xNets: depth × r; ConvNets: depth; every point builds with the paper's count."""
    suffix = "_quick" if quick else ""
    xnets = compose("train", [f"experiment=fig3{suffix}", "paths.output_dir=/tmp/unused"])
    convnets = compose("train", [f"experiment=fig3{suffix}_convnet", "paths.output_dir=/tmp/unused"])
    assert (xnets.model.name, convnets.model.name) == ("xnet", "convnet") and xnets.name == convnets.name
    x_points, c_points = grid(xnets), grid(convnets)
    depths = {p["model.net.depth"] for p in x_points}
    kernels = {p["model.net.xunit.kernel_size"] for p in x_points}
    assert len(x_points) == len(depths) * len(kernels) and set(c_points[0]) == {"model.net.depth"}
    counts = {
        ("xnet", p["model.net.depth"], p["model.net.xunit.kernel_size"]): count_paper_params(net_at(xnets, p))
        for p in x_points
    }
    counts |= {("convnet", p["model.net.depth"], None): count_paper_params(net_at(convnets, p)) for p in c_points}
    assert counts[("xnet", 3, 9)] == 49_024 and counts[("convnet", 9, None)] == 260_096  # the paper's headline pair
    assert (
        counts[("xnet", 2, 1)] == net_params(2, 64, 1)[0] and counts[("convnet", 3, None)] == net_params(3, 64, None)[0]
    )
    if quick:
        assert (depths, kernels, [p["model.net.depth"] for p in c_points]) == ({2, 3, 4}, {1, 5, 9}, [3, 5, 7, 9])
        assert xnets.trainer.max_steps == convnets.trainer.max_steps == 1000
    else:
        assert (depths, kernels, [p["model.net.depth"] for p in c_points]) == (
            {2, 3, 4, 5, 6},
            {1, 3, 5, 7, 9},
            list(range(2, 10)),
        )
        assert (
            (xnets.data.batch_size, xnets.data.patch_size, xnets.optim.lr)
            == (64, 80, 1e-3)
            == (convnets.data.batch_size, convnets.data.patch_size, convnets.optim.lr)
        )


@pytest.mark.parametrize("experiment", ["fig4", "fig4_quick", "fig4_medium"])
def test_fig4_points_are_on_budget(experiment):
    cfg = compose("train", [f"experiment={experiment}", "paths.output_dir=/tmp/unused"])
    budget, tol = (
        (31_136, 0.02) if "medium" in experiment else (99_136, 0.01)
    )  # the 32-channel analogue at the medium tier
    shares = []
    for p in sweep_points(cfg):
        net = net_of(cfg, p)
        n = count_paper_params(net)
        assert abs(n - budget) <= tol * budget, p
        shares.append(100 * activation_params(net) / n)
    assert shares[0] == 0 and shares == sorted(shares) and shares[-1] > 45


@pytest.mark.parametrize("experiment", ["fig5", "fig5_quick", "fig6", "fig6_quick", "fig6_medium"])
def test_model_group_sweeps_compose(experiment):
    cfg = compose("train", [f"experiment={experiment}", "paths.output_dir=/tmp/unused"])
    params = cfg.hydra.sweeper.params
    if experiment.startswith("fig6"):
        assert cfg.task.sigma == 50
        variants = params["xunit"].split(",")
        every = {f.stem for f in (CONF / "xunit").glob("*.yaml")}
        beyond_the_paper = {"frelu", "silu"}  # FReLU and SiLU: in the medium sweep only
        assert set(variants) == (every if "medium" in experiment else every - beyond_the_paper) and len(
            variants
        ) == len(set(variants))
        for v in variants:  # every variant composes and builds at the deepest point
            depth = max(int(d) for d in str(params["model.net.depth"]).split(","))
            c = compose(
                "train",
                [f"experiment={experiment}", f"xunit={v}", f"model.net.depth={depth}", "paths.output_dir=/tmp/unused"],
            )
            instantiate(c.model.net)
    else:
        assert cfg.task.residual is False and params["model"] == "xnet,convnet"
        assert cfg.model.net.depth == 5  # 4 activation layers


def test_optuna_search_composes():
    cfg = compose("train", ["hparams_search=optuna", "paths.output_dir=/tmp/unused"])
    sw = cfg.hydra.sweeper
    assert "optuna" in sw._target_.lower() and sw.direction == "maximize"
    assert set(sw.params) == {"optim.lr", "model.net.xunit.kernel_size", "model.net.depth"}
    assert cfg.model.name == "xnet" and str(cfg.hydra.mode) in ("MULTIRUN", "RunMode.MULTIRUN")


def test_tiny_fig3_multirun_gives_csv_and_plot(data_dir, tmp_path):
    """2 models × 2 depths of fig3_quick, shrunk to seconds; then xnet.figures.sweep_plots on the sweep dir."""
    sweep = tmp_path / "sweep"
    for experiment, points in (
        ("fig3_quick_convnet", ["model.net.depth=3,5"]),
        ("fig3_quick", ["model.net.depth=2,3", "model.net.xunit.kernel_size=9"]),
    ):
        res = run_multirun([f"experiment={experiment}", *points, *TINY, f"hydra.sweep.dir={sweep / experiment}"])
        assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(sweep.glob("*/*/metrics.json"))
    assert len(runs) == 4  # one run dir and metrics.json per job
    for m in runs:
        data = json.loads(m.read_text())
        assert data["step"] == 6 and data["test/dataset"] == "BSD68"
    _rows, csv_path, png = make("fig3", sweep, tmp_path / "fig3.png", tmp_path / "fig3.csv")
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert sorted((r["model"], r["depth"]) for r in table) == [
        ("convnet", "3"),
        ("convnet", "5"),
        ("xnet", "2"),
        ("xnet", "3"),
    ]
    assert all(r["status"] == "ok" and float(r["test/psnr"]) > 10 for r in table)
    assert png.stat().st_size > 10_000


def test_a_failed_job_does_not_stop_the_sweep(data_dir, tmp_path):
    """A diverging job (absurd learning rate) is recorded as failed; the other job still runs."""
    sweep = tmp_path / "sweep"
    res = run_multirun(
        [
            "experiment=fig3_quick",
            "model.net.depth=2",
            "model.net.xunit.kernel_size=9",
            "optim.lr=1e30,1e-3",
            *TINY,
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["run_dir"].split("_")[0]: r for r in make("table", sweep)[0]}
    assert len(rows) == 2
    assert rows["0"]["status"] == "failed" and rows["1"]["status"] == "ok"


def test_a_sweep_run_again_skips_finished_jobs_and_resumes_interrupted_ones(tmp_path):
    """The medium tier's fixed sweep dir: the same command again resumes every unfinished job from its last.ckpt
    and leaves finished ones alone, so a figure can be trained in pieces across sessions."""
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith("hydra.sweep.subdir")]  # the tier's own folder names: overrides only
    unnamed = "[experiment,trainer,logger,hydra.launcher,hydra.sweeper,trainer.max_steps,trainer.val_check_interval]"
    base = [
        "experiment=fig3_medium_convnet",
        "data/test=bsd68_first8",
        "model.net.depth=2,3",
        f"hydra.sweep.dir={sweep}",
        *tiny,
        f"hydra.job.config.override_dirname.exclude_keys={unnamed}",
    ]  # a longer budget: the same job
    first = run_multirun([*base, "trainer.max_steps=4", "trainer.val_check_interval=4"])
    assert first.returncode == 0, first.stderr[-2000:]
    assert [p.name for p in sweep.iterdir() if p.is_dir()] == ["convnet"]  # <model>/<overrides>
    folders = [d for d in (sweep / "convnet").iterdir() if d.is_dir()]
    depth = {OmegaConf.load(d / ".hydra" / "config.yaml").model.net.depth: d for d in folders}
    jobs = [depth[2], depth[3]]
    assert not any(d.name[0].isdigit() for d in jobs)  # named by overrides, not by their number in this command
    (jobs[0] / "metrics.json").unlink()  # job 0 was killed after its last checkpoint; job 1 finished a shorter budget
    second = run_multirun(base)  # max_steps=6
    assert second.returncode == 0, second.stderr[-2000:]
    assert [json.loads((j / "metrics.json").read_text())["step"] for j in jobs] == [6, 6]
    assert all(list((j / "csv").glob("metrics.chunk*.csv")) for j in jobs)  # resumed from step 4: the first log kept
    stamps = [(j / "metrics.json").stat().st_mtime_ns for j in jobs]
    third = run_multirun(base)
    assert third.returncode == 0, third.stderr[-2000:]
    assert [(j / "metrics.json").stat().st_mtime_ns for j in jobs] == stamps
    assert (third.stdout + third.stderr).count("already trained to step 6") == 2
    one = run_multirun(
        [o if o != "model.net.depth=2,3" else "model.net.depth=3" for o in base]
    )  # a subset: same folder
    assert "already trained to step 6" in one.stdout + one.stderr
    assert sorted(p for p in (sweep / "convnet").iterdir() if p.is_dir()) == sorted(jobs)


def test_a_figures_convnet_and_its_xnets_with_the_same_overrides_keep_their_own_folders(tmp_path):
    """fig6_medium_convnet sweeps xunit=paper like the paper unit's xNet: in one sweep dir each still trains and
    writes its own folder; before, the second found the first's finished run there and skipped training."""
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith("hydra.sweep.subdir")]
    same = ["data/test=bsd68_first8", "xunit=paper", "model.net.depth=2", f"hydra.sweep.dir={sweep}", *tiny]
    for experiment in ("fig6_medium_convnet", "fig6_medium"):
        done = run_multirun([f"experiment={experiment}", *same])
        assert done.returncode == 0, done.stderr[-2000:]
        assert "already trained" not in done.stdout + done.stderr
    summaries = {d.parent.parent.name: json.loads(d.read_text()) for d in sweep.glob("*/*/metrics.json")}
    assert {m: s["model"] for m, s in summaries.items()} == {"convnet": "convnet", "xnet": "xnet"}
    assert all(s["status"] == "ok" and s["step"] == 6 for s in summaries.values())
