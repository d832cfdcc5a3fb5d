"""The model zoo: export, load by name with sha256 check, and shipped entries reproduce their numbers."""
import json

import pytest

from conftest import REPO, compose
from xnet.evaluate import evaluate
from xnet.deploy.weights import resolve_weights, zoo_index
from xnet.zoo import add

SHIPPED = zoo_index(REPO / "weights")


def test_add_then_evaluate_by_name(tmp_path, monkeypatch, tiny_run):
    run_dir, _ = tiny_run
    monkeypatch.setenv("XNET_ZOO", str(tmp_path / "zoo"))
    report_cfg = compose("eval", ["experiment=demo", f"weights={run_dir / 'checkpoints' / 'last.ckpt'}", "data/test=sample", f"paths.output_dir={tmp_path / 'e1'}"])
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


@pytest.mark.skipif(not any(e["task"]["name"] == "denoise" for e in SHIPPED.values()), reason="no denoising model shipped")
def test_a_shipped_denoiser_reproduces_its_recorded_set12_psnr(tmp_path, data_dir):
    name = sorted(n for n, e in SHIPPED.items() if e["task"]["name"] == "denoise")[0]
    recorded = json.loads((REPO / "weights" / name / "metrics" / f"Set12_{SHIPPED[name]['task']['sigma']}.json").read_text())
    cfg = compose("eval", [f"weights={name}", "data/test=set12", f"task.sigma={recorded['sigma']}", f"paths.output_dir={tmp_path}"])
    assert evaluate(cfg)["psnr"] == pytest.approx(recorded["psnr"], abs=0.005)  # thread counts may flip a rounding


def test_list_prints_a_table(capsys, monkeypatch, tmp_path):
    from xnet.zoo import main

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "zoo.json").write_text(json.dumps({
        "a_denoiser": {"model": "xdncnn", "task": {"name": "denoise", "sigma": 25}, "params_paper": 303616, "results": {"BSD68": 29.2, "Set12": 30.4}},
        "b_sr": {"model": "xsrcnn_f", "task": {"name": "sr", "scale": 3}, "params_paper": 32576, "results": {"BSD100": 28.5}},
    }))
    monkeypatch.setenv("XNET_ZOO", str(zoo))
    assert main(["list"]) == 0
    head, rule, *rows = capsys.readouterr().out.splitlines()
    assert head.split() == ["name", "model", "task", "σ/scale", "params", "BSD100", "BSD68", "Set12"] and set(rule) <= {"-", " "}
    assert rows[0].split() == ["a_denoiser", "xdncnn", "denoise", "σ=25", "303,616", "–", "29.20", "30.40"]
    assert rows[1].split() == ["b_sr", "xsrcnn_f", "sr", "×3", "32,576", "28.50", "–", "–"]
    monkeypatch.setenv("XNET_ZOO", str(tmp_path / "empty"))
    assert main(["list"]) == 0 and "no models in the zoo" in capsys.readouterr().out
