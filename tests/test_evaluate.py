"""Evaluation: the published denoising protocol, repeatability, weight formats, restore."""

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose

from xnet.deploy.weights import adapt_keys, load_weights, read_state_dict, save_weights
from xnet.evaluate import evaluate

REFERENCE = REPO.parent / "shared" / "reference" / "dncnn_s_retrain"


def reference_figures() -> dict[tuple[str, int], float]:
    """The figures table of the reference README: {(set, sigma): PSNR}."""
    table = {}
    for line in (REFERENCE / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("DnCNN-S-"):
            sigma = int(cells[0].split("σ=")[1])
            table[("BSD68", sigma)], table[("Set12", sigma)] = float(cells[1]), float(cells[2])
    return table


def run_eval(tmp_path, overrides):
    cfg = compose("eval", [f"paths.output_dir={tmp_path}", *overrides])
    return evaluate(cfg)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference not present")
@pytest.mark.parametrize("sigma", [25, 50])
def test_protocol_reproduces_the_reference_dncnn_figures(tmp_path, data_dir, sigma):
    """Peer DnCNN-S weights through the user's code path: BSD68 and Set12 within 0.03 dB."""
    figures = reference_figures()
    torch.set_num_threads(2)  # the two largest evaluations of the suite
    try:
        for test_set in ("BSD68", "Set12"):
            report = run_eval(
                tmp_path / test_set,
                [
                    "model=dncnn",
                    f"weights={REFERENCE}/DnCNN-S-{sigma}.pth",
                    f"data/test={test_set.lower()}",
                    f"task.sigma={sigma}",
                ],
            )
            assert report["images"] == {"BSD68": 68, "Set12": 12}[test_set]
            assert abs(report["psnr"] - figures[(test_set, sigma)]) <= 0.03, (test_set, sigma, report["psnr"])
    finally:
        torch.set_num_threads(1)


def test_evaluation_is_bit_for_bit_repeatable_and_writes_metrics(tmp_path, tiny_run):
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    args = ["experiment=demo", f"weights={ckpt}", "data/test=sample"]
    a, b = run_eval(tmp_path / "a", args), run_eval(tmp_path / "b", args)
    assert a["per_image"] == b["per_image"]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["dataset"] == "sample-val" and saved["sigma"] == 25 and saved["params_paper"] == 39_296
    assert saved["psnr"] == pytest.approx(sum(r["psnr"] for r in saved["per_image"]) / len(saved["per_image"]))
    other_seed = run_eval(tmp_path / "c", [*args, "seed=1"])
    assert other_seed["psnr"] != a["psnr"]  # the seed really drives the noise


def test_fused_and_plain_inference_agree(tmp_path, tiny_run):
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    args = ["experiment=demo", f"weights={ckpt}", "data/test=sample"]
    fused, plain = run_eval(tmp_path / "f", [*args, "fuse=true"]), run_eval(tmp_path / "p", [*args, "fuse=false"])
    assert fused["psnr"] == pytest.approx(plain["psnr"], abs=0.01)
    assert all(
        abs(f["psnr"] - p["psnr"]) < 1e-4 for f, p in zip(fused["per_image"], plain["per_image"])
    )  # what the README says


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_plain_state_dicts_load_like_the_checkpoint(tmp_path, tiny_run, suffix):
    from xnet.utils.build import build_net, build_task

    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose("eval", ["experiment=demo", f"weights={ckpt}", "paths.output_dir=/tmp/unused"])
    net = build_net(cfg, build_task(cfg))
    load_weights(net, ckpt)
    path = save_weights(net, tmp_path / f"net{suffix}")
    base = ["experiment=demo", "data/test=sample"]
    a = run_eval(tmp_path / "ckpt", [*base, f"weights={ckpt}"])
    b = run_eval(tmp_path / "plain", [*base, f"weights={path}"])
    assert a["per_image"] == b["per_image"]


def test_dataparallel_and_dncnn_layouts_map_onto_xnet_keys():
    from xnet.archs.dncnn import DnCNN

    net = DnCNN(depth=5)
    foreign = {f"module.dncnn.{k}": v for k, v in net.state_dict().items()}
    assert set(adapt_keys(foreign, net)) == set(net.state_dict())


def test_mismatched_weights_name_the_keys(tmp_path):
    from xnet.archs.dncnn import DnCNN, XDnCNN

    path = save_weights(DnCNN(depth=5), tmp_path / "dncnn.pth")
    with pytest.raises(ValueError, match="missing keys"):
        load_weights(XDnCNN(num_blocks=1), path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": Path("x")}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path)


def test_unknown_weights_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a zoo name"):
        run_eval(tmp_path, ["experiment=demo", "weights=no_such_model", "data/test=sample"])


def test_restore_writes_pngs(tmp_path, tiny_run):
    from PIL import Image

    from xnet.restore import restore

    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    src = tmp_path / "in"
    src.mkdir()
    Image.new("L", (40, 30), 128).save(src / "a.png")
    Image.new("RGB", (33, 21), (10, 200, 30)).save(src / "b.png")
    cfg = compose(
        "restore",
        [
            "experiment=demo",
            f"weights={ckpt}",
            f"input={src}",
            f"output={tmp_path / 'out'}",
            "degrade=true",
            "paths.output_dir=/tmp/unused",
        ],
    )
    written = restore(cfg)
    assert sorted(p.name for p in written) == ["a.png", "b.png"]
    assert Image.open(written[1]).size == (33, 21) and Image.open(written[1]).mode == "L"
    import numpy as np

    assert np.isfinite(np.asarray(Image.open(written[0]), dtype=np.float64)).all()


def test_stored_architecture_replaces_model_whatever_it_is(tmp_path):
    """A zoo xDnCNN evaluated with model=dncnn (whose node has ``depth``, which xDnCNN lacks): the
    stored architecture replaces the model node instead of being merged into it."""
    report = run_eval(tmp_path, ["model=dncnn", "weights=xdncnn_s25_cpu", "data/test=sample", "limit=1"])
    assert report["model"] == "xdncnn" and report["images"] == 1
    assert "depth" not in report["config"]["model"]["net"] and report["config"]["model"]["net"]["num_blocks"] == 7
