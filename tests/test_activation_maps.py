"""xnet.activation_maps: maps of a layer's activation from checkpoints of tiny fig5 runs."""
import json

import pytest
import torch
from PIL import Image

from conftest import CONF
from xnet.archs.plain import ConvNet, XNet
from xnet.activation_maps import activation_modules, capture, density, main, parse_args, run_from_checkpoint

TINY = [
    "model.net.width=8", "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.enable_progress_bar=false",
    "data.batch_size=4", "data.patch_size=32", "data.samples_per_epoch=16", "data.val_limit=1",
    "data/train=sample", "data/val=sample", "test_after_fit=false", "module.log_images=0", "trainer.log_every_n_steps=2",
]


def train_tiny(out, model):
    from hydra import compose, initialize_config_dir

    from xnet.train import train

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", ["experiment=fig5_quick", f"model={model}", f"paths.output_dir={out}", *TINY])
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fig5")
    return {m: train_tiny(root / m, m) for m in ("xnet", "convnet")}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(48, 40, generator=g) * 255).to(torch.uint8).numpy()
    path = tmp_path_factory.mktemp("img") / "img.png"
    Image.fromarray(arr, mode="L").save(path)
    return path


def test_run_is_rebuilt_from_the_stored_config(checkpoints):
    run = run_from_checkpoint(checkpoints["xnet"])
    assert run.label == "xnet-d5" and run.task.residual is False and run.task.info["sigma"] == 25
    assert len(activation_modules(run.restorer)) == 4  # ReLUs inside the xUnits are not layers


def test_side_by_side_maps_and_density(checkpoints, image, tmp_path, capsys):
    assert main([f"weights={checkpoints['xnet']},{checkpoints['convnet']}", f"image={image}", "layer=4", f"out={tmp_path}"]) == 0
    assert "xnet-d5" in capsys.readouterr().out
    stats = json.loads((tmp_path / "stats.json").read_text())
    x, c = stats["nets"]["xnet-d5"], stats["nets"]["convnet-d5"]
    assert (x["kind"], c["kind"]) == ("xunit", "relu")
    assert x["channels"] == c["channels"] == 8
    for s in (x, c):
        assert 0 <= s["frac_g_above_threshold"] <= 1 and 0 <= s["mean_g"] <= 1
        for k in ("z", "g", "x"):
            assert Image.open(s["files"][k]).size[0] > 40 * 2  # a grid of several maps
    # a ReLU's weight map is the indicator z > 0
    assert c["frac_g_above_threshold"] == pytest.approx(c["frac_z_positive"])
    assert (tmp_path / "layer4.png").exists()


def test_hooks_see_the_activation_input_and_output():
    torch.manual_seed(0)
    inp = torch.rand(1, 20, 24)
    for net in (XNet(4, width=6, xunit={"kernel_size": 3}).eval(), ConvNet(4, width=6).eval()):
        acts = activation_modules(net)
        assert len(acts) == 3
        m, out = capture(net, inp, layer=2)
        assert m.z.shape == (6, 20, 24) and out.shape == (1, 20, 24)
        torch.testing.assert_close(m.x, m.z * m.g)
        assert torch.equal(out, net(inp[None])[0].detach())
        if m.kind == "relu":
            assert set(m.g.unique().tolist()) <= {0.0, 1.0}
        s = density(m)
        assert 0 <= s["frac_g_above_threshold"] <= 1
    with pytest.raises(ValueError, match="3 activation layers"):
        capture(ConvNet(4, width=6).eval(), inp, layer=4)
    m_last, _ = capture(XNet(4, width=6).eval(), inp, layer=-1)
    assert m_last.kind == "xunit"


def test_arguments(tmp_path):
    a = parse_args(["weights=a.ckpt,b.ckpt", "image=x.png", "layer=3", "--crop", "64"])
    assert a.weights == ["a.ckpt", "b.ckpt"] and a.layer == 3 and a.crop == 64
    odd = tmp_path / "0_arch=x,y"  # Hydra sweep dirs have commas in their names
    odd.mkdir()
    ck = odd / "last.ckpt"
    ck.touch()
    assert parse_args([f"weights={ck}", "image=x.png"]).weights == [str(ck)]


def test_without_out_it_writes_a_run_dir_not_the_working_folder(checkpoints, image, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([f"weights={checkpoints['xnet']}", f"image={image}", "layer=2"]) == 0
    (stats,) = tmp_path.glob("outputs/visualize/*/stats.json")
    assert not (tmp_path / "visualize").exists() and (stats.parent / "layer2.png").is_file()
    assert f"in {stats.parent.relative_to(tmp_path)}" in capsys.readouterr().out
