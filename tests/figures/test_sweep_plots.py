"""xnet.figures.sweep_plots on synthetic sweep dirs: every metrics.json becomes a row, failures stay visible."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from xnet.figures.sweep_plots import collect, expected_points, main, make

CONV = {"_target_": "xnet.archs.plain.ConvNet", "width": 16, "kernel_size": 3, "channels": 1}
XNET = {"_target_": "xnet.archs.plain.XNet", "width": 16, "kernel_size": 3, "channels": 1}


def fake_run(
    root: Path, name: str, net: dict, psnr: float | None, sigma=25, status=None, choice=None, tested=True, config=None
) -> Path:
    d = root / name
    d.mkdir(parents=True)
    data = {
        "name": "fig",
        "model": "xnet" if "XNet" in net["_target_"] else "convnet",
        "sigma": sigma,
        "step": 10,
        "val/psnr": psnr,
        "test/psnr": None if psnr is None or not tested else psnr - 0.5,
        "config": {"model": {"name": "m", "net": net}, "task": {"sigma": sigma, "residual": True}, **(config or {})},
    }
    if status:
        data["status"] = status
    (d / "metrics.json").write_text(json.dumps(data))
    if choice:
        (d / ".hydra").mkdir()
        (d / ".hydra/hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"xunit": choice}}}}))
    return d


@pytest.fixture
def fig3_dir(tmp_path):
    for i, d in enumerate((3, 5, 9)):
        fake_run(tmp_path, f"{i}_convnet_d{d}", {**CONV, "depth": d}, 27.0 + 0.2 * d)
    i = 10
    for r in (1, 9):
        for d in (2, 3):
            fake_run(
                tmp_path,
                f"{i}_xnet_d{d}_r{r}",
                {**XNET, "depth": d, "xunit_kernel": r, "xunit": {}},
                28.0 + 0.1 * r + 0.3 * d,
            )
            i += 1
    fake_run(
        tmp_path, "sub/deeper/99_failed", {**XNET, "depth": 4, "xunit_kernel": 9, "xunit": {}}, None, status="failed"
    )
    return tmp_path


def test_collect_reads_every_run_recursively(fig3_dir):
    rows = collect(fig3_dir)
    assert len(rows) == 8
    conv = [r for r in rows if r["model"] == "convnet"]
    assert [r["depth"] for r in conv] == [3, 5, 9]
    assert all(r["xunit_kernel"] is None and r["act_share"] == 0 and r["xunit_variant"] == "relu" for r in conv)
    x = next(r for r in rows if r["model"] == "xnet" and r["depth"] == 3 and r["xunit_kernel"] == 9)
    assert x["params_paper"] == 2 * 16 * 9 + (2 * 16 + 16 * 16 * 9) + 2 * 16 * (81 + 4)  # convs, block BN, xUnits
    assert x["xunit_variant"] == "paper"
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["run_dir"] == "sub/deeper/99_failed"


def test_fig3_csv_and_png(fig3_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    _rows, csv_path, png = make("fig3", fig3_dir, out / "f.png", out / "f.csv")
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8
    assert {"model", "depth", "width", "xunit_kernel", "xunit_variant", "params_paper", "test/psnr", "val/psnr"} <= set(
        table[0]
    )
    assert Image.open(png).size[0] > 500


def test_fig4_and_fig6(tmp_path):
    fake_run(tmp_path, "a", {**CONV, "depth": 3}, 28.0)
    fake_run(tmp_path, "b", {**XNET, "depth": 3, "xunit_kernel": 9, "xunit": {}}, 28.6)
    fake_run(tmp_path, "c", {**XNET, "depth": 4, "xunit_kernel": 9, "xunit": {"gate": "sigmoid"}}, 28.1, sigma=50)
    fake_run(
        tmp_path,
        "d",
        {**XNET, "depth": 6, "xunit_kernel": 9, "xunit": {"gate": "identity"}},
        float("nan"),
        choice="identity",
    )
    fake_run(
        tmp_path, "e", {**XNET, "depth": 2, "xunit_kernel": 9, "xunit": {"pre_norm": False}}, 27.9, choice="no_pre_norm"
    )
    rows, _, png4 = make("fig4", tmp_path)
    shares = sorted(r["act_share"] for r in rows)
    assert shares[0] == 0 and 0 < shares[-1] < 100
    by_dir = {r["run_dir"]: r for r in rows}
    assert by_dir["c"]["xunit_variant"] == "sigmoid"  # matched against conf/xunit/*.yaml
    assert by_dir["d"]["status"] == "failed"  # a NaN PSNR counts as failed
    assert by_dir["e"]["xunit_variant"] == "no_pre_norm"
    _, _, png6 = make("fig6", tmp_path)
    assert png4.exists() and png6.exists()


def test_cli(fig3_dir, capsys):
    assert main(["fig3", str(fig3_dir), "--metric", "val/psnr"]) == 0
    out = capsys.readouterr().out
    assert "8 runs, 1 failed" in out
    assert (fig3_dir / "fig3.png").exists() and (fig3_dir / "fig3.csv").exists()
    assert main(["table", str(fig3_dir / "sub" / "missing")]) == 1


def test_fig6_labels_are_the_papers_abbreviations():
    from xnet.figures.sweep_plots import variant_label

    assert variant_label("paper").startswith("BN+RL+CD+BN+GS")
    assert variant_label("bn_rl_cd") == "BN+RL+CD"  # no second BN, no gate function
    assert variant_label("identity") == "BN+RL+CD+BN"
    assert variant_label("no_pre_norm") == "RL+CD+BN+GS" and variant_label("sigmoid") == "BN+RL+CD+BN+SG"
    assert variant_label("relu").startswith("ConvNet")


def test_bn_rl_cd_is_the_papers_unit_without_second_bn_and_gate():
    from conftest import compose
    from hydra.utils import instantiate

    from xnet.archs.xunit import XUnit

    cfg = compose("train", ["model=xnet", "xunit=bn_rl_cd", "paths.output_dir=/tmp/unused"])
    unit = next(m for m in instantiate(cfg.model.net, _convert_="all").modules() if isinstance(m, XUnit))
    assert unit.gate_kind == "identity" and isinstance(unit.post_norm, torch.nn.Identity)
    assert unit.depthwise.bias is not None  # nothing after it absorbs a bias
    x = torch.randn(1, 64, 8, 8)
    assert (unit.eval().weight_map(x) < 0).any()  # weight maps may be negative


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the plots save: its texts, x tick labels and marker lines, as drawn."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    figures, save = [], Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        figures.append(
            {
                "texts": [t.get_text() for t in fig.findobj(Text) if t.get_text()],
                "title": ax.get_title(),
                "xticks": [t.get_text() for t in ax.get_xticklabels() if t.get_text()],
                "stars": sorted(
                    (float(x), float(y))
                    for line in ax.get_lines()
                    if line.get_marker() == "*"
                    for x, y in zip(line.get_xdata(), line.get_ydata())
                ),
            }
        )
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def test_a_sweep_without_test_scores_is_not_titled_test_psnr(tmp_path, drawn):
    for d in (3, 5):
        fake_run(tmp_path, f"c{d}", {**CONV, "depth": d}, 27.0 + 0.1 * d, tested=False)
    make("fig3", tmp_path)  # metric test/psnr (the default): every point falls back to val/psnr
    assert "validation PSNR" in drawn[0]["title"] and "(test PSNR" not in drawn[0]["title"]
    fake_run(tmp_path, "x3", {**XNET, "depth": 3, "xunit_kernel": 9, "xunit": {}}, 28.0)
    make("fig3", tmp_path)
    assert "test PSNR; validation PSNR for 2 untested run(s)" in drawn[1]["title"]


def test_small_nets_get_distinct_tick_labels(tmp_path, drawn):
    for d in (3, 4, 5, 6):  # width 8: 752 ... 2,528 parameters
        fake_run(tmp_path, f"c{d}", {**CONV, "width": 8, "depth": d}, 27.0 + 0.1 * d, sigma=15)
    make("fig3", tmp_path)
    ticks = drawn[0]["xticks"]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks) and "1.5K" in ticks


def test_quick_runs_say_so_in_the_image_and_the_papers_table1_points_are_drawn(tmp_path, drawn):
    quick = {"quick": True, "data": {"batch_size": 16, "patch_size": 32, "test": {"limit": 8}}}  # an older run's flag
    for d in (3, 9):
        fake_run(tmp_path, f"c{d}", {**CONV, "width": 64, "depth": d}, 27.0 + 0.1 * d, config=quick)
    make("fig3", tmp_path)
    assert "quick run: 64 channels; 10 training steps of 16 crops of 32²; test: 8 images" in drawn[0]["texts"]
    assert drawn[0]["stars"] == [(303_616.0, 29.21), (556_032.0, 29.22)]  # σ=25: Table 1's xDnCNN and DnCNN-S


def test_narrow_nets_name_the_papers_table1_points_instead_of_squashing_the_axis(tmp_path, drawn):
    for d in (3, 5):  # 16 channels: a few thousand parameters against Table 1's 303,616 and 556,032
        fake_run(tmp_path, f"c{d}", {**CONV, "depth": d}, 27.0 + 0.1 * d)
    make("fig3", tmp_path)
    assert drawn[0]["stars"] == []
    assert any("xDnCNN 29.21 dB at 303,616" in text for text in drawn[0]["texts"])


def test_table1_points_are_the_table1_experiments():
    """PAPER_TABLE1 holds what conf/experiment/table1_* say: the paper's PSNR and the nets' counts."""
    from conftest import compose
    from hydra.utils import instantiate

    from xnet.archs.params import count_paper_params
    from xnet.figures.sweep_plots import PAPER_TABLE1

    for label, params, by_sigma in PAPER_TABLE1:
        for sigma, psnr in by_sigma.items():
            cfg = compose(
                "train", [f"experiment=table1_{label.split('-')[0].lower()}_s{sigma}", "paths.output_dir=/tmp/unused"]
            )
            assert cfg.paper_psnr == psnr and cfg.task.sigma == sigma
            assert count_paper_params(instantiate(cfg.model.net, _convert_="all")) == params


def test_medium_runs_say_so_and_each_seed_is_drawn_around_their_mean(tmp_path, drawn):
    medium = {"tier": "medium", "data": {"batch_size": 16, "patch_size": 48}}
    for d in (3, 5):
        fake_run(tmp_path, f"c{d}", {**CONV, "depth": d}, 27.0 + 0.1 * d, config={**medium, "seed": 0})
    fake_run(tmp_path, "c3_seed1", {**CONV, "depth": 3}, 27.5, config={**medium, "seed": 1})
    rows, _, _ = make("fig3", tmp_path)
    assert any("medium run: 16 channels; 10 training steps of 16 crops of 48²" in text for text in drawn[0]["texts"])
    assert "each seed (line: mean)" in drawn[0]["texts"]
    assert sorted(r["seed"] for r in rows) == [0, 0, 1]


def test_expected_points_without_a_run_are_listed_and_drawn_as_missing(tmp_path, drawn):
    """--expect: the ConvNet sweep of fig3_medium has 6 depths; with 2 trained, 4 rows say `missing`."""
    for d in (2, 9):
        fake_run(tmp_path, f"c{d}", {**CONV, "width": 32, "depth": d}, 27.0 + 0.1 * d, config={"seed": 0})
    fake_run(
        tmp_path, "c3_seed1", {**CONV, "width": 32, "depth": 3}, 27.4, config={"seed": 1}
    )  # another seed: not the point
    rows, csv_path, _ = make("fig3", tmp_path, expect=["fig3_medium_convnet"])
    missing = sorted(r["depth"] for r in rows if r["status"] == "missing")
    assert missing == [3, 4, 5, 7]
    assert all(r["params_paper"] for r in rows if r["status"] == "missing")  # placed on the x axis
    assert "not trained yet" in drawn[0]["texts"]
    with open(csv_path, newline="") as f:
        assert sum(rec["status"] == "missing" for rec in csv.DictReader(f)) == 4


def test_expected_points_take_a_single_valued_sweep_parameter_as_one_point():
    """fig6_medium_convnet sweeps depth over 2, 4, 6 and sets `xunit: paper` (one value, not a choice sweep)."""
    points = [point for point, _config in expected_points(["fig6_medium_convnet"])]
    assert sorted(p["model.net.depth"] for p in points) == ["2", "4", "6"]
    assert {p["xunit"] for p in points} == {"paper"} and {p["model"] for p in points} == {"convnet"}


def test_fig6_draws_gradient_norms_beside_the_figure_and_labels_frelu_and_silu(tmp_path, drawn):
    variants = (("paper", {}), ("frelu", {"kernel_size": 3, "combine": "max"}), ("silu", {"depthwise": False}))
    for v, opts in variants:
        for d in (2, 4) if v != "frelu" else (2,):  # FReLU in the first panel only: still in the legend
            run = fake_run(
                tmp_path,
                f"{v}{d}",
                {**XNET, "depth": d, "xunit": opts},
                26.0 + 0.1 * d,
                sigma=50,
                choice=v,
                config={"seed": 0},
            )
            (run / "csv").mkdir()
            (run / "csv" / "metrics.csv").write_text(
                "step,train/grad_norm,train/loss\n"
                + "".join(f"{s},{0.1 * d * (s + 1)},0.01\n" for s in range(0, 10, 2))
            )
    rows, _csv_path, _png = make("fig6", tmp_path)
    assert (tmp_path / "fig6_grad_norm.png").is_file() and len(drawn) == 2
    labels = drawn[0]["texts"]
    assert "max(x, CD+BN) (FReLU)" in labels and "x·SG(x) (SiLU, pointwise)" in labels
    assert "max(x, CD+BN) (FReLU)" in drawn[1]["texts"] and drawn[1]["texts"].count("x·SG(x) (SiLU, pointwise)") == 1
    paper4 = next(r for r in rows if r["xunit_variant"] == "paper" and r["depth"] == 4)
    assert paper4["grad_norm_max"] == pytest.approx(0.4 * 9) and paper4["grad_norm_median"] == pytest.approx(0.4 * 5)


def test_table_leaves_evaluation_runs_out_and_writes_no_file_unasked(tmp_path, capsys):
    for d in (3, 5):
        fake_run(tmp_path, f"c{d}", {**CONV, "depth": d}, 27.0 + 0.1 * d)
    ev = tmp_path / "eval_run"
    ev.mkdir()
    (ev / "metrics.json").write_text(
        json.dumps(
            {"model": "dncnn", "dataset": "BSD68", "psnr": 29.2, "per_image": [], "weights": "w.pth", "config": {}}
        )
    )
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 failed" in out and sorted(p.name for p in tmp_path.rglob("*")) == before
    assert main(["table", str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    with open(tmp_path / "t.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_each_fig6_variant_has_its_own_colour():
    import matplotlib.pyplot as plt

    from xnet.figures.sweep_plots import VARIANT_ORDER, variant_color

    colors = [str(variant_color(v, plt.get_cmap("tab20"), 19)) for v in VARIANT_ORDER]
    assert len(set(colors)) == len(VARIANT_ORDER)  # tab20's stride of 2 wrapped SiLU onto the paper unit's blue
