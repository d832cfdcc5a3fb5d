"""xnet.figures.activation_maps: maps of a layer's activation from checkpoints of tiny fig5 runs."""

import json

import pytest
import torch
from conftest import CONF
from PIL import Image

from xnet.archs.plain import ConvNet, XNet
from xnet.figures.activation_maps import (
    LayerMaps,
    activation_modules,
    capture,
    density,
    main,
    parse_args,
    prepare_input,
    run_from_checkpoint,
)

TINY = [
    "model.net.width=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "data.patch_size=32",
    "data.samples_per_epoch=16",
    "data.val_limit=1",
    "data/train=sample",
    "data/val=sample",
    "test_after_fit=false",
    "module.log_images=0",
    "trainer.log_every_n_steps=2",
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
    assert run.label == "xnet-d5-paper" and run.task.residual is False and run.task.info["sigma"] == 25
    assert len(activation_modules(run.restorer)) == 4  # ReLUs inside the xUnits are not layers


def test_side_by_side_maps_and_density(checkpoints, image, tmp_path, capsys):
    assert (
        main(
            [f"weights={checkpoints['xnet']},{checkpoints['convnet']}", f"image={image}", "layer=4", f"out={tmp_path}"]
        )
        == 0
    )
    assert "xnet-d5-paper" in capsys.readouterr().out
    stats = json.loads((tmp_path / "stats.json").read_text())
    x, c = stats["nets"]["xnet-d5-paper"], stats["nets"]["convnet-d5"]
    assert (x["kind"], c["kind"]) == ("xunit", "relu")
    assert x["channels"] == c["channels"] == 8
    for s in (x, c):
        for k in ("z", "g", "x"):
            assert Image.open(s["files"][k]).size[0] > 40 * 2  # a grid of several maps
    # the stats are those of the maps of layer 4 on the noisy image (seed 0)
    run = run_from_checkpoint(checkpoints["xnet"])
    maps, _ = capture(run.restorer, prepare_input(run.task, image, seed=0, crop=0)[0], layer=4)
    assert {k: x[k] for k in density(maps)} == density(maps)
    # a ReLU's weight map is the indicator z > 0
    assert c["frac_g_above_threshold"] == c["mean_g"] == pytest.approx(c["frac_z_positive"])
    assert c["frac_g_below_0.1"] == pytest.approx(1 - c["frac_z_positive"])
    assert x["psnr_input"] == c["psnr_input"] < 21.0  # both nets see one σ=25 input (≈20.2 dB)
    assert (tmp_path / "layer4.png").exists()


def test_sigma_redraws_the_runs_own_noise(checkpoints, image, tmp_path):
    from omegaconf import OmegaConf

    from xnet.figures.activation_maps import with_noise_level
    from xnet.protocol.errors import ConfigError

    for sigma in (25, 50):
        assert (
            main(
                [
                    f"weights={checkpoints['xnet']}",
                    f"image={image}",
                    "layer=2",
                    f"sigma={sigma}",
                    f"out={tmp_path / str(sigma)}",
                ]
            )
            == 0
        )
    stats = {s: json.loads((tmp_path / str(s) / "stats.json").read_text()) for s in (25, 50)}
    at = {s: stats[s]["nets"]["xnet-d5-paper"]["psnr_input"] for s in (25, 50)}
    assert at[25] - at[50] > 5.0  # twice the noise: ≈6 dB less
    sr = OmegaConf.create({"task": {"degradation": {"_target_": "xnet.protocol.degradations.Bicubic", "scale": 3}}})
    with pytest.raises(
        ConfigError, match=r"sigma=50: this run's degradation \(xnet.protocol.degradations.Bicubic\) has no noise level"
    ):
        with_noise_level(sr, 50)


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
    with pytest.raises(ValueError, match="3 activation layers"):
        capture(ConvNet(4, width=6).eval(), inp, layer=4)
    m_last, _ = capture(XNet(4, width=6).eval(), inp, layer=-1)
    assert m_last.kind == "xunit"


def test_density_counts_what_passes():
    z = torch.tensor([[[1.0, -2.0], [3.0, 0.5]]])
    g = torch.tensor([[[0.95, 0.05], [1.0, 0.5]]])
    s = density(LayerMaps("xunit", z, g, z * g))
    assert s == pytest.approx(
        {
            "frac_g_above_threshold": 0.5,
            "frac_g_below_0.1": 0.25,
            "mean_g": 0.625,
            "frac_z_positive": 0.75,
            "frac_x_nonzero": 1.0,
            "max_abs_x": 3.0,
        }
    )
    assert density(LayerMaps("xunit", z, g, z * g), threshold=0.99)["frac_g_above_threshold"] == 0.25


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


def test_a_list_of_checkpoints_in_sweep_dirs_with_commas_is_split_between_files(tmp_path):
    convnet = tmp_path / "model.net.depth=4" / "best.ckpt"  # a prefix of the xNet's dir name, and a file too
    xnet = tmp_path / "model.net.depth=4,model.net.xunit.kernel_size=9" / "best.ckpt"
    for ck in (convnet, xnet):
        ck.parent.mkdir()
        ck.touch()
    assert parse_args([f"weights={xnet},{convnet}", "image=x.png"]).weights == [str(xnet), str(convnet)]
    assert parse_args([f"weights={convnet},{xnet},missing.ckpt", "image=x.png"]).weights == [
        str(convnet),
        str(xnet),
        "missing.ckpt",
    ]


def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, image, capsys):
    with pytest.raises(SystemExit) as stop:
        main([f"weights={tmp_path / 'nowhere.ckpt'}", f"image={image}", f"out={tmp_path / 'out'}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: weights file not found: {tmp_path / 'nowhere.ckpt'}"
