"""A config read from a file (checkpoint, zoo entry, metrics.json) may only build xnet's own classes:
crafted files that name a standard-library function, a third-party callable, a nested target or a
``_partial_`` are refused by name before anything is imported or called."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, TINY, compose, make_checkpoint, tiny_config
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file

from xnet.deploy.inference import load_restorer, load_run
from xnet.deploy.weights import sha256
from xnet.utils.build import build_net
from xnet.utils.trust import UntrustedConfigError, check_target, check_targets

NET = {"_target_": "xnet.archs.plain.ConvNet", "channels": 1, "depth": 3, "width": 8, "kernel_size": 3}


@pytest.mark.parametrize(
    "target",
    [
        "xnet.archs.plain.ConvNet",
        "xnet.protocol.tasks.Task",
        "xnet.protocol.degradations.GaussianNoise",
        "xnet.data.sources.ImageFolder",
        "xnet.protocol.rain.RainStreaks",
    ],
)
def test_xnet_classes_are_accepted(target):
    assert isinstance(check_target(target, "model.net", "f.ckpt"), type)


@pytest.mark.parametrize(
    "target, said",
    [
        ("shutil.copyfile", "not one of xnet's classes"),  # the standard library
        ("os.system", "not one of xnet's classes"),
        ("torch.hub.load", "not one of xnet's classes"),  # a third-party callable
        ("xnet.data.sources.os.system", "resolves to builtin_function_or_method posix.system"),  # an attribute chain
        ("xnet.archs.common.torch.nn.Conv2d", "resolves to a class torch.nn.modules.conv.Conv2d"),
        ("xnet.archs.common.Restorer.__class__", "resolves to a class builtins.type"),
        ("xnet.protocol.atomic.write_json", "not one of xnet's classes"),  # xnet, but not a buildable class
        ("xnet.archsevil.Net", "not one of xnet's classes"),  # a prefix by characters only
        ("xnet.archs.params.count_paper_params", "resolves to function"),  # a function of a trusted module
        ("xnet.archs.plain.ConvNet; import os", "not one of xnet's classes"),
        (["xnet.archs.plain.ConvNet"], "not one of xnet's classes"),
    ],
)
def test_anything_else_is_refused_naming_file_and_target(target, said):
    with pytest.raises(UntrustedConfigError, match=said) as info:
        check_target(target, "model.net", "crafted.ckpt")
    assert str(info.value).startswith("crafted.ckpt: model.net._target_=")


def test_a_refused_module_is_never_imported():
    name = "xnet_test_never_imported_module"
    with pytest.raises(UntrustedConfigError):
        check_target(f"{name}.Thing", "model.net", "f.ckpt")
    assert name not in sys.modules
    sys.modules.pop("antigravity", None)
    with pytest.raises(UntrustedConfigError):
        check_target("antigravity.Thing", "model.net", "f.ckpt")  # importing it would open a web browser
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize(
    "node, said",
    [
        (
            {**NET, "act": {"_target_": "shutil.rmtree", "_args_": ["/tmp/x"]}},
            r"model.net.act._target_='shutil.rmtree'",
        ),  # nested
        (
            {**NET, "layers": [{"_target_": "builtins.eval", "_args_": ["1"]}]},
            r"model.net.layers\[0\]._target_='builtins.eval'",
        ),
        ({**NET, "_partial_": True}, r"model.net._partial_: Hydra's _partial_ is not accepted"),
        ({**NET, "width": "${oc.env:HOME}"}, r"model.net.width='\$\{oc.env:HOME\}': an interpolation"),
    ],
)
def test_nested_targets_partials_and_interpolations_are_refused(node, said):
    with pytest.raises(UntrustedConfigError, match=said):
        check_targets(node, "crafted.ckpt", where="model.net")
    check_targets(NET, "fine.ckpt", where="model.net")


def test_a_user_can_trust_more_modules():
    with pytest.raises(UntrustedConfigError, match="trust_targets"):
        check_target("collections.OrderedDict", "model.net", "f.ckpt")
    assert (
        check_target("collections.OrderedDict", "model.net", "f.ckpt", trusted=("collections",))
        is __import__("collections").OrderedDict
    )


# --- crafted files through the loaders ----------------------------------------------------------
run_config = tiny_config
save_checkpoint = make_checkpoint


def copyfile_config(tmp_path):
    """A run config whose net copies ``secret`` to ``stolen`` when it is built."""
    (tmp_path / "secret").write_text("secret")
    config = run_config()
    config["model"]["net"] = {
        "_target_": "shutil.copyfile",
        "_args_": [str(tmp_path / "secret"), str(tmp_path / "stolen")],
    }
    return config


def test_a_legit_checkpoint_still_loads(tmp_path):
    loaded = load_run(save_checkpoint(tmp_path / "ok.ckpt", run_config()))
    assert loaded.cfg.model.name == "xdncnn" and loaded.task.name == "denoise"


def test_a_crafted_checkpoint_runs_nothing(tmp_path):
    ckpt = save_checkpoint(tmp_path / "evil.ckpt", copyfile_config(tmp_path))
    with pytest.raises(UntrustedConfigError, match=f"{ckpt}: model.net._target_='shutil.copyfile'"):
        load_run(ckpt)
    cfg = compose("eval", [f"weights={ckpt}", "data/test=sample", f"paths.output_dir={tmp_path / 'e'}"])
    with pytest.raises(UntrustedConfigError, match="shutil.copyfile"):
        load_restorer(cfg)
    assert not (tmp_path / "stolen").exists()


def test_a_crafted_task_or_test_set_in_a_checkpoint_is_refused_too(tmp_path):
    config = run_config()
    config["task"]["degradation"] = {"_target_": "subprocess.call", "_args_": [["touch", str(tmp_path / "pwned")]]}
    with pytest.raises(UntrustedConfigError, match="task.degradation._target_='subprocess.call'"):
        load_run(save_checkpoint(tmp_path / "task.ckpt", config))
    config = run_config()
    config["data"]["test"] = {"_target_": "xnet.data.sources.os.remove", "_args_": [str(tmp_path / "x")]}
    with pytest.raises(UntrustedConfigError, match="data.test._target_=xnet.data.sources.os.remove: resolves to"):
        load_run(save_checkpoint(tmp_path / "test.ckpt", config))
    assert not (tmp_path / "pwned").exists()


def crafted_zoo(tmp_path, model):
    zoo = tmp_path / "zoo"
    (zoo / "evil").mkdir(parents=True)
    net = build_net(OmegaConf.create(run_config()))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(zoo / "evil" / "weights.safetensors"))
    (zoo / "evil" / "config.yaml").write_text(OmegaConf.to_yaml({"model": model}))
    index = {"evil": {"file": "evil/weights.safetensors", "sha256": sha256(zoo / "evil" / "weights.safetensors")}}
    (zoo / "zoo.json").write_text(json.dumps(index))
    return zoo


def test_a_crafted_zoo_entry_runs_nothing(tmp_path, monkeypatch):
    model = copyfile_config(tmp_path)["model"]
    monkeypatch.setenv("XNET_ZOO", str(crafted_zoo(tmp_path, model)))
    cfg = compose("eval", ["weights=evil", "data/test=sample", f"paths.output_dir={tmp_path / 'e'}"])
    with pytest.raises(UntrustedConfigError, match=r"zoo/evil/config.yaml: model.net._target_='shutil.copyfile'"):
        load_restorer(cfg)
    assert not (tmp_path / "stolen").exists()


def test_the_command_line_refuses_in_one_line_with_status_2(tmp_path):
    ckpt = save_checkpoint(tmp_path / "evil.ckpt", copyfile_config(tmp_path))
    Image.new("L", (16, 16), 128).save(tmp_path / "photo.png")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnet.restore",
            f"weights={ckpt}",
            f"input={tmp_path / 'photo.png'}",
            f"output={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {ckpt}: model.net._target_='shutil.copyfile'")
    assert not (tmp_path / "stolen").exists()


def test_sweep_tables_do_not_build_a_crafted_metrics_file(tmp_path, caplog):
    from xnet.figures.sweep_plots import read_row

    run = tmp_path / "job"
    run.mkdir()
    config = copyfile_config(tmp_path)
    (run / "metrics.json").write_text(json.dumps({"status": "ok", "config": config}))
    row = read_row(run / "metrics.json")
    assert row["params_paper"] is None and not (tmp_path / "stolen").exists()
    assert "shutil.copyfile" in caplog.text


class OwnNet(__import__("xnet.archs.plain", fromlist=["ConvNet"]).ConvNet):
    """A user's own architecture (as from a --config-dir), outside xnet."""


def test_a_users_own_model_still_trains_and_is_tested_from_its_checkpoint(tmp_path):
    from conftest import run_train

    net = [
        "~model.net.num_blocks",
        "model.net._target_=test_trust.OwnNet",
        "+model.net.depth=3",
        "model.net.width=8",
        "~model.net.xunit",
        "model.net.kernel_size=3",
    ]
    summary = run_train(
        tmp_path, [*TINY, *net, "trainer.max_steps=4", "trainer.val_check_interval=2", "data.val_limit=1"]
    )
    assert summary["step"] == 4 and "test/psnr" in summary  # the best checkpoint was read back with the user's class
    with pytest.raises(UntrustedConfigError, match="test_trust.OwnNet"):  # the same file, opened by another command
        load_run(next((tmp_path / "checkpoints").glob("best-*.ckpt")))
