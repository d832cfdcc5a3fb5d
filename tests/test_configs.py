"""Compose every task × model (× xUnit variant) config and instantiate it."""

from pathlib import Path

import pytest
import torch
from conftest import CONF, compose
from hydra.utils import instantiate

from xnet.archs.params import count_paper_params
from xnet.utils.build import build_net, build_task

TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
XUNITS = sorted(p.stem for p in (CONF / "xunit").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER_COUNTS = {  # (task, model, overrides) → paper-convention count
    ("denoise", "dncnn", ()): 556_032,
    ("denoise", "xdncnn", ()): 303_616,
    ("derain", "xdncnn_rgb", ()): 305_920,
    ("sr", "srcnn", ()): 57_184,
    ("sr", "xsrcnn_f", ()): 32_576,
    ("sr", "xsrcnn_c", ()): 44_092,
    ("sr", "srresnet", ("task.scale=4",)): 1_546_752,
    ("sr", "xsrresnet", ("task.scale=4",)): 1_155_968,
}


def first_conv(net: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def make(task, model, extra=()):
    cfg = compose("train", [f"task={task}", f"model={model}", "paths.output_dir=/tmp/unused", *extra])
    return cfg, build_task(cfg)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_task_model_pair_builds_or_is_refused_clearly(task, model):
    cfg, t = make(task, model)
    if task not in cfg.model.tasks:
        with pytest.raises(ValueError, match=f"not built for task '{task}'"):
            build_net(cfg, t)
        return
    net = build_net(cfg, t)
    x = torch.rand(1, t.channels, 24, 24)
    scale = getattr(t.degradation, "scale", 1)
    upsampled = cfg.model.get("input", {}).get("upsampled", True)
    expected = 24 * (scale if not upsampled else 1)
    assert net(x).shape[-2:] == (expected, expected)


@pytest.mark.parametrize(
    "key,count", PAPER_COUNTS.items(), ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else str(v)
)
def test_configs_give_the_paper_counts(key, count):
    task, model, extra = key
    cfg, t = make(task, model, extra)
    assert count_paper_params(build_net(cfg, t)) == count


@pytest.mark.parametrize("variant", XUNITS)
@pytest.mark.parametrize("model", ["xdncnn", "xnet"])
def test_xunit_variants_reach_every_unit(variant, model):
    cfg, t = make("denoise", model, [f"xunit={variant}"])
    net = build_net(cfg, t)
    from xnet.archs.xunit import XUnit

    units = [m for m in net.modules() if isinstance(m, XUnit)]
    assert units
    for key, value in cfg.model.net.xunit.items():  # the variant merged into the model's XUnitConfig
        if key == "gate":
            assert all(u.gate_kind == value for u in units)
        elif key in ("pre_norm", "post_norm"):
            assert all(isinstance(getattr(u, key), torch.nn.BatchNorm2d) == value for u in units)
        elif key == "relu":
            assert all(isinstance(u.relu, torch.nn.ReLU) == value for u in units)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment):
    """The experiment's net, reading what its task gives, and a Trainer with its step budget."""
    cfg = compose("train", [f"experiment={experiment}", "paths.output_dir=/tmp/unused"])
    t = build_task(cfg)
    net = build_net(cfg, t)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_progress_bar=False)
    assert type(net).__name__ == cfg.model.net._target_.rsplit(".", 1)[-1] and t.name == cfg.task.name
    assert first_conv(net).in_channels == t.channels
    assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("trainer", sorted(p.stem for p in (CONF / "trainer").glob("*.yaml")))
def test_trainer_configs_compose(trainer):
    cfg = compose("train", [f"trainer={trainer}", "paths.output_dir=/tmp/unused"])
    assert cfg.trainer._target_ == "lightning.Trainer"
    if cfg.trainer.accelerator == "gpu":
        assert cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("name", ["eval", "restore"])
def test_entry_point_configs_compose(name):
    """Defaults: a σ=25 grey denoiser for the weights given; restore keeps the input's size."""
    extra = ["input=x.png"] if name == "restore" else []
    cfg = compose(name, ["weights=x.pth", "paths.output_dir=/tmp/unused", *extra])
    t = build_task(cfg)
    net = build_net(cfg, t)
    assert cfg.weights == "x.pth" and (t.name, t.color, t.info["sigma"]) == ("denoise", "grey", 25)
    assert net(torch.rand(1, 1, 12, 16)).shape == (1, 1, 12, 16)


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XNET_DATA", str(tmp_path))
    cfg = compose("train", ["paths.output_dir=/tmp/unused"])
    assert Path(cfg.paths.data_dir) == tmp_path
    assert Path(cfg.data.train.root) == tmp_path


PAPER_PSNR = {  # the xUnit paper's Tables 1-3 (BSD68 σ, Rain12, BSD100 Y); None: no figure recorded
    "table1_dncnn_s25": 29.22,
    "table1_xdncnn_s25": 29.21,
    "table1_dncnn_s50": 26.23,
    "table1_xdncnn_s50": 26.26,
    "table2_xdncnn_rgb": 31.17,
    "table2_dncnn_rgb": 30.90,
    "table2_derainnet": None,
    "table3_srcnn_x3": 28.41,
    "table3_srcnn_x4": 26.90,
    "table3_xsrcnn_f_x3": 28.53,
    "table3_xsrcnn_f_x4": 27.06,
    "table3_xsrcnn_c_x3": 28.54,
    "table3_xsrcnn_c_x4": 27.04,
    "table3_xsrresnet_x4": 27.61,
    "table3_srresnet_x4": None,
}


@pytest.mark.parametrize("experiment", sorted(e for e in EXPERIMENTS if e.startswith("table")))
def test_table_experiments_carry_the_papers_psnr(experiment):
    """paper_psnr becomes paper/psnr and paper/gap in metrics.json and the W&B summary."""
    cfg = compose("train", [f"experiment={experiment}", "paths.output_dir=/tmp/unused"])
    assert cfg.paper_psnr == PAPER_PSNR[experiment]


def test_the_folder_test_sets_documented_override_works():
    first = (CONF / "data/test/folder.yaml").read_text().splitlines()[0]
    overrides = first.split(":", 1)[1].split()  # "# Any folder of images: data/test=folder data.test.path=/my/images"
    cfg = compose("eval", [*overrides, "paths.output_dir=/tmp/unused", "weights=x"])
    assert cfg.data.test.path == "/my/images" and cfg.data.test._target_.endswith("ImageFolder")


@pytest.mark.parametrize(
    "recipe, schedule, lr, betas", [("paper", "step", 1e-3, (0.9, 0.999)), ("fast", "wsd", 2e-3, (0.9, 0.99))]
)
def test_recipes_give_the_optimiser_results_recipe_compare_measured(recipe, schedule, lr, betas):
    """recipe=paper is the paper's Adam (default betas, ×0.1 steps); recipe=fast is the schedule and Adam
    that won the CPU comparison (README "Fast recipe"), as the optimiser the module builds."""
    from xnet.lit.module import RestorationModule

    cfg = compose("train", [f"recipe={recipe}", "model=convnet", "model.net.depth=2", "paths.output_dir=/tmp/unused"])
    module = RestorationModule(build_net(cfg), build_task(cfg), **cfg.optim, **cfg.module)
    module.trainer = type("T", (), {"max_steps": 100, "estimated_stepping_batches": 100})()
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt[0][0] if isinstance(opt, tuple) else opt
    assert module.hparams.schedule == schedule
    assert opt.defaults["lr"] == pytest.approx(lr) and tuple(opt.defaults["betas"]) == betas


@pytest.mark.parametrize(
    "module,app",
    [
        ("train", "xnet-train"),
        ("evaluate", "xnet-eval"),
        ("restore", "xnet-restore"),
        ("export", "xnet-export"),
        ("compare", "xnet-compare"),
    ],
)
def test_help_says_what_the_command_does_its_main_keys_and_two_examples(module, app):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", f"xnet.{module}", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-1000:]
    first, text = out.stdout.splitlines()[0], out.stdout
    assert first.startswith(f"{app} (python -m xnet.{module}): ") and "powered by Hydra" not in text
    examples = text.split("Examples:\n")[1].split("\n\n")[0].splitlines()
    assert len(examples) == 2 and all(e.strip().startswith(app) for e in examples)
    assert "Main keys:" in text and "model:" in text  # the config groups are listed


RECIPES = sorted(p.stem for p in (CONF / "recipe").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_sets_every_optim_key_and_the_module_defaults_none(recipe):
    """Recipe defaults live in conf/recipe only (train.yaml has no optim node), each recipe composes
    the complete set, and RestorationModule takes every configured value without a default of its own."""
    import inspect

    from omegaconf import OmegaConf

    from xnet.lit.module import RestorationModule

    assert "optim" not in OmegaConf.load(CONF / "train.yaml")
    cfg = compose("train", [f"recipe={recipe}", "model=convnet", "model.net.depth=2", "paths.output_dir=/tmp/unused"])
    params = inspect.signature(RestorationModule).parameters
    configured = {*cfg.optim, *cfg.module}
    assert configured == {n for n, p in params.items() if p.default is inspect.Parameter.empty} - {"net", "task"}
    module = RestorationModule(build_net(cfg), build_task(cfg), **cfg.optim, **cfg.module)
    assert module.hparams.schedule == cfg.optim.schedule
