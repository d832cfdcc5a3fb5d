"""The model zoo: export, load by name with sha256 check, and shipped entries reproduce their numbers."""

import json

import pytest
from conftest import REPO, compose, make_checkpoint

from xnet.deploy.weights import resolve_weights, zoo_index
from xnet.evaluate import evaluate
from xnet.protocol.errors import ConfigError, OutputError
from xnet.zoo import add

SHIPPED = zoo_index(REPO / "weights")


def test_add_then_evaluate_by_name(tmp_path, monkeypatch, tiny_run):
    run_dir, _ = tiny_run
    monkeypatch.setenv("XNET_ZOO", str(tmp_path / "zoo"))
    report_cfg = compose(
        "eval",
        [
            "experiment=demo",
            f"weights={run_dir / 'checkpoints' / 'last.ckpt'}",
            "data/test=sample",
            f"paths.output_dir={tmp_path / 'e1'}",
        ],
    )
    first = evaluate(report_cfg)
    entry = add("tiny_demo", run_dir / "checkpoints" / "last.ckpt", [tmp_path / "e1" / "metrics.json"])
    assert entry["params_paper"] == 39_296 and entry["results"] == {"sample-val": round(first["psnr"], 3)}
    folder = tmp_path / "zoo" / "tiny_demo"
    assert {p.name for p in folder.iterdir()} >= {"weights.safetensors", "config.yaml", "metrics", "MODEL_CARD.md"}
    # by name, with model= left at its default (xdncnn, 7 blocks): the stored architecture wins
    again = evaluate(compose("eval", ["weights=tiny_demo", "data/test=sample", f"paths.output_dir={tmp_path / 'e2'}"]))
    assert again["per_image"] == first["per_image"]
    (folder / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        resolve_weights("tiny_demo")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_load_and_match_their_sha256(name):
    from omegaconf import OmegaConf

    from xnet.deploy.weights import load_weights
    from xnet.utils.build import build_net, build_task
    from xnet.utils.config import read_stored_config

    path = resolve_weights(name, REPO / "weights")
    cfg = OmegaConf.create(read_stored_config(path.parent / "config.yaml"))  # an entry may predate a module move
    net = build_net(cfg, build_task(cfg))
    load_weights(net, path)
    from xnet.archs.params import count_paper_params

    assert SHIPPED[name]["params_paper"] == count_paper_params(net)


@pytest.mark.skipif(
    not any(e["task"]["name"] == "denoise" for e in SHIPPED.values()), reason="no denoising model shipped"
)
def test_a_shipped_denoiser_reproduces_its_recorded_set12_psnr(tmp_path, data_dir):
    name = sorted(n for n, e in SHIPPED.items() if e["task"]["name"] == "denoise")[0]
    recorded = json.loads(
        (REPO / "weights" / name / "metrics" / f"Set12_{SHIPPED[name]['task']['sigma']}.json").read_text()
    )
    cfg = compose(
        "eval",
        [f"weights={name}", "data/test=set12", f"task.sigma={recorded['sigma']}", f"paths.output_dir={tmp_path}"],
    )
    assert evaluate(cfg)["psnr"] == pytest.approx(recorded["psnr"], abs=0.005)  # thread counts may flip a rounding


def test_list_prints_a_table(capsys, monkeypatch, tmp_path):
    from xnet.zoo import main

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "zoo.json").write_text(
        json.dumps(
            {
                "a_denoiser": {
                    "model": "xdncnn",
                    "task": {"name": "denoise", "sigma": 25},
                    "params_paper": 303616,
                    "results": {"BSD68": 29.2, "Set12": 30.4},
                },
                "b_sr": {
                    "model": "xsrcnn_f",
                    "task": {"name": "sr", "scale": 3},
                    "params_paper": 32576,
                    "results": {"BSD100": 28.5},
                },
            }
        )
    )
    monkeypatch.setenv("XNET_ZOO", str(zoo))
    assert main(["list"]) == 0
    head, rule, *rows = capsys.readouterr().out.splitlines()
    assert head.split() == ["name", "model", "task", "σ/scale", "params", "BSD100", "BSD68", "Set12"] and set(rule) <= {
        "-",
        " ",
    }
    assert rows[0].split() == ["a_denoiser", "xdncnn", "denoise", "σ=25", "303,616", "–", "29.20", "30.40"]
    assert rows[1].split() == ["b_sr", "xsrcnn_f", "sr", "×3", "32,576", "28.50", "–", "–"]
    monkeypatch.setenv("XNET_ZOO", str(tmp_path / "empty"))
    assert main(["list"]) == 0 and "no models in the zoo" in capsys.readouterr().out


# --- zoo add: never replaces an entry unasked, never writes outside the zoo ------------------------
def eval_report(tmp_path, name="r.json", dataset="Set12", psnr=29.0):
    path = tmp_path / name
    path.write_text(
        json.dumps({"dataset": dataset, "sigma": 25, "psnr": psnr, "ssim": 0.8, "images": 12, "per_image": []})
    )
    return path


def zoo_cli(*args, env_zoo):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "xnet.zoo", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "XNET_ZOO": str(env_zoo)},
        check=False,
    )


def test_an_existing_name_is_kept_unless_forced_and_then_replaced_whole(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run.ckpt")
    zoo = tmp_path / "zoo"
    add("mine", ckpt, [eval_report(tmp_path, "a.json", "Set12")], zoo_dir=zoo)
    files = {p: p.read_bytes() for p in (zoo / "mine").rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"zoo name 'mine' is taken in .*: pass --force"):
        add("mine", ckpt, [eval_report(tmp_path, "b.json", "BSD68", 28.0)], zoo_dir=zoo)
    assert {p: p.read_bytes() for p in (zoo / "mine").rglob("*") if p.is_file()} == files
    entry = add("mine", ckpt, [eval_report(tmp_path, "b.json", "BSD68", 28.0)], zoo_dir=zoo, force=True)
    assert entry["results"] == {"BSD68": 28.0}
    assert sorted(p.name for p in (zoo / "mine" / "metrics").iterdir()) == [
        "BSD68_25.json"
    ]  # no report of the old weights left
    assert sorted(p.name for p in zoo.iterdir()) == ["mine", "zoo.json"]  # no staging or replaced folder


@pytest.mark.parametrize("name", ["../outside", "a/b", ".hidden", "", "x" * 65, "name with space"])
def test_a_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="use letters, digits"):
        add(name, make_checkpoint(tmp_path / "run.ckpt"), [], zoo_dir=tmp_path / "zoo")
    assert not (tmp_path / "outside").exists() and not (tmp_path / "zoo").exists()


def test_a_training_run_s_metrics_are_refused_before_anything_is_written(tmp_path):
    train_metrics = tmp_path / "metrics.json"
    train_metrics.write_text(json.dumps({"name": "demo", "status": "ok", "step": 40, "test/psnr": 27.0, "config": {}}))
    res = zoo_cli(
        "add",
        "mine",
        "--ckpt",
        make_checkpoint(tmp_path / "run.ckpt"),
        "--metrics",
        train_metrics,
        env_zoo=tmp_path / "zoo",
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip() == (
        f"error: --metrics {train_metrics}: a training run's metrics.json (no dataset, psnr, ssim, images); "
        "score the checkpoint with python -m xnet.evaluate and pass the metrics.json it writes"
    )
    assert not (tmp_path / "zoo").exists()


def test_a_full_disk_is_one_line_and_leaves_no_half_entry(tmp_path, full_disk):
    """The zoo on a filled tmpfs."""
    ckpt = make_checkpoint(tmp_path / "run.ckpt")
    res = zoo_cli("add", "mine", "--ckpt", ckpt, "--force", env_zoo=full_disk / "zoo")
    assert res.returncode == 2, res.stderr[-2000:]
    assert (
        res.stderr.strip()
        == f"error: {full_disk / 'zoo' / 'mine'}: cannot write the zoo entry (No space left on device); "
        "the earlier one is kept"
    )
    assert sorted(p.name for p in (full_disk / "zoo").iterdir()) == []  # no staging folder, no half entry


def test_a_full_disk_at_the_syscall_keeps_the_earlier_entry(tmp_path, request):
    ckpt = make_checkpoint(tmp_path / "run.ckpt")
    zoo = tmp_path / "zoo"
    add("mine", ckpt, [eval_report(tmp_path)], zoo_dir=zoo)
    before = {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()}
    request.getfixturevalue("dev_full")  # from here on every write fails with ENOSPC
    with pytest.raises(
        OutputError, match=r"zoo/mine: cannot write the zoo entry \(No space left on device\); the earlier one is kept"
    ):
        add("mine", ckpt, [eval_report(tmp_path, "b.json", "BSD68")], zoo_dir=zoo, force=True)
    assert {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()} == before
