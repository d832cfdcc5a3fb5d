"""The Fig 4 budget solver: closed forms equal the instantiated count, budgets are met within 1 %."""

import itertools

import pytest
import yaml
from conftest import CONF
from hydra.utils import instantiate

from xnet.archs.params import count_paper_params
from xnet.archs.plain import ConvNet, XNet
from xnet.figures.budget import (
    Arch,
    activation_params,
    check,
    experiment_yaml,
    main,
    net_params,
    point_name,
    solve,
    solve_all,
)

SHARES = [0, 10, 20, 30, 40, 50]


@pytest.mark.parametrize("depth,width", itertools.product([2, 3, 5, 9], [1, 7, 64]))
def test_convnet_formula_matches_the_model(depth, width):
    assert net_params(depth, width, None) == (count_paper_params(ConvNet(depth, width)), 0)


@pytest.mark.parametrize("depth,width,r", [(2, 8, 1), (3, 64, 9), (4, 57, 15), (6, 13, 5), (3, 64, 3)])
def test_xnet_formula_matches_the_model(depth, width, r):
    net = XNet(depth, width, xunit={"kernel_size": r})
    total, act = net_params(depth, width, r)
    assert total == count_paper_params(net)
    assert act == activation_params(net) == (depth - 1) * width * (r * r + 4)
    flat = XNet(depth, width, xunit={"kernel_size": r}, block_norm=False)
    assert (
        net_params(depth, width, r, block_norm=False)[0] == count_paper_params(flat) == total - (depth - 2) * 2 * width
    )


def test_fig4_budget_is_the_authors_4_layer_xnet_with_11x11_xunits():
    """576 + 8,000 + 2 × (128 + 36,864 + 8,000) + 576 = 99,136 (the paper's Fig 4 budget)."""
    assert net_params(4, 64, 11)[0] == count_paper_params(XNet(4, 64, xunit={"kernel_size": 11})) == 99_136


def test_fig3_headline_counts():
    """3-layer xNet (r=9) vs 9-layer ConvNet, 64 channels: less than a third of the parameters."""
    x3, _ = net_params(3, 64, 9)
    c9, _ = net_params(9, 64, None)
    assert (x3, c9) == (49_024, 260_096)
    assert 3 * x3 < c9


@pytest.mark.parametrize("total", [99_136, 40_000, 250_000])
def test_solver_hits_the_budget_for_every_share(total):
    archs = solve_all(total, SHARES)
    for a, target in zip(archs, SHARES):
        assert abs(a.params - total) <= 0.01 * total, a
        assert check(a) == a.params  # the instantiated model has exactly the solver's count
        assert a.model == ("convnet" if target == 0 else "xnet") and (a.act_params == 0) == (target == 0)
        assert abs(a.share - target) <= 5.0, a  # shares are discrete (odd r, integer width)
    shares = [a.share for a in archs]
    assert shares == sorted(shares)


def test_solver_respects_a_fixed_search_space():
    a = solve(99_136, 30, depths=[4], widths=range(50, 70), kernels=[1, 3, 5, 7, 9, 11, 13, 15])
    assert (a.depth, a.width, a.xunit_kernel) == (4, 61, 13)  # 31.7 %, the closest on this grid
    assert abs(a.params - 99_136) <= 991 and a.params == 99_979
    with pytest.raises(ValueError, match="no net with xUnits"):
        solve(99_136, 30, depths=[2], widths=[4], kernels=[1])


def test_checked_in_fig4_table_is_the_solver_output():
    """conf/experiment/fig4_archs.yaml is what its own header command writes, every net is on budget,
    and the paper's exact point (4 layers, 64 channels, r = 11: 99,136) is among them."""
    import shlex

    text = (CONF / "experiment/fig4_archs.yaml").read_text()
    cfg = yaml.safe_load(text)
    command = (
        next(line for line in text.splitlines() if line.startswith("#   python -m xnet.figures.budget"))
        .lstrip("# ")
        .strip()
    )
    argv = shlex.split(command)[3:]
    archs = main([a for a in argv if not a.startswith("--write-experiment") and not a.endswith(".yaml")])
    names = cfg["hydra"]["sweeper"]["params"]["arch"].split(",")
    assert set(names) == set(cfg["archs"]) and names == [point_name(a) for a in archs]
    for name, a in zip(names, archs):
        node = cfg["archs"][name]["net"]
        node = {**node, "channels": 1}
        net = instantiate(node)
        assert count_paper_params(net) == a.params and abs(a.params - 99_136) <= 991
    assert "s24_xnet_d4_w64_r11" in names and "exactly the budget" in text


def test_cli_prints_the_table_and_writes_an_experiment(tmp_path, capsys):
    out = tmp_path / "fig4_test.yaml"
    archs = main(
        [
            "--total",
            "99136",
            "--shares",
            "0",
            "25",
            "--overrides",
            "--write-experiment",
            str(out),
            "--base",
            "fig4_quick",
        ]
    )
    text = capsys.readouterr().out
    assert "convnet" in text and "model=xnet model.net.depth=" in text
    assert len(archs) == 2
    cfg = yaml.safe_load(out.read_text())
    assert cfg["defaults"] == ["fig4_quick", "_self_"]
    assert cfg["model"] == "${archs.${arch}}"
    assert cfg["hydra"]["sweeper"]["params"]["arch"].split(",") == list(cfg["archs"])


def test_arch_helpers():
    """A point is its family's conf/model config with depth, width and r set: the one definition."""
    a = Arch("xnet", 3, 64, 9, *net_params(3, 64, 9), target_share=20)
    assert a.key == "xnet_d3_w64_r9"
    model = a.model_config()
    assert model["name"] == "xnet" and model["net"]["_target_"] == "xnet.archs.plain.XNet"
    assert (model["net"]["depth"], model["net"]["xunit"], model["net"]["channels"]) == (
        3,
        {"kernel_size": 9},
        "${task.channels}",
    )
    conv = Arch("convnet", 3, 64, None, *net_params(3, 64, None), 0)
    assert "xunit" not in conv.model_config()["net"] and conv.model_config()["net"]["_target_"].endswith("ConvNet")
    assert a.overrides() == "model=xnet model.net.depth=3 model.net.width=64 model.net.xunit.kernel_size=9"
    assert count_paper_params(a.build()) == a.params == 49_024
    assert "arch: " in experiment_yaml([a], 49_024)


def test_written_experiment_composes_with_the_base_recipe(tmp_path):
    from hydra import compose, initialize_config_dir

    main(
        [
            "--total",
            "50000",
            "--shares",
            "0",
            "30",
            "--write-experiment",
            str(tmp_path / "experiment" / "fig4_t.yaml"),
            "--base",
            "fig4_quick",
        ]
    )
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            ["experiment=fig4_t", f"hydra.searchpath=[file://{tmp_path}]", "paths.output_dir=/tmp/unused"],
            return_hydra_config=True,
        )
    points = cfg.hydra.sweeper.params.arch.split(",")
    assert len(points) == 2 and cfg.name == "fig4_t" and cfg.trainer.max_steps == 1000  # the quick recipe
    for p in points:
        cfg.arch = p
        assert abs(count_paper_params(instantiate(cfg.model.net, _convert_="all")) - 50_000) <= 500
