"""Tables and paper-style plots from a sweep's run dirs (Figs 3, 4 and 6).

    python -m xnet.figures.sweep_plots fig3 multirun/fig3/<time> [--out fig3.png] [--csv fig3.csv] [--metric test/psnr]
    python -m xnet.figures.sweep_plots fig4 multirun/fig4/<time>
    python -m xnet.figures.sweep_plots fig6 multirun/fig6/<time>
    python -m xnet.figures.sweep_plots table <dir>            # the CSV only
    # + the points not finished yet (missing):
    python -m xnet.figures.sweep_plots fig3 multirun/fig3_medium --expect fig3_medium fig3_medium_convnet

Every ``metrics.json`` under the directory (recursively) is one row: model, depth, width, xUnit
kernel and variant, parameters (total and in the activations), PSNRs, status. Rows come from the
resolved config stored in each ``metrics.json``; the xUnit variant is the run's Hydra choice
(``.hydra/hydra.yaml``) or, failing that, the config group file whose settings match. Failed runs
(``status: failed`` or a non-finite PSNR) stay in the CSV and are drawn as crosses. Repeated
points (several seeds) are drawn each and joined at their mean. ``--expect`` names the experiments whose
sweeps fill the dir: their points that have not finished yet are listed (``status: missing``) and drawn as
hollow marks, so a figure trained in pieces can be plotted at any time.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnet.protocol.atomic import atomic_path, atomic_write
from xnet.utils.config import conf_dir, current_net_config

log = logging.getLogger(__name__)

COLUMNS = [
    "model",
    "depth",
    "width",
    "xunit_kernel",
    "xunit_variant",
    "params_paper",
    "act_params",
    "act_share",
    "test/psnr",
    "val/psnr",
    "test/ssim",
    "sigma",
    "residual",
    "seed",
    "init",
    "step",
    "batch_size",
    "patch_size",
    "test_dataset",
    "test_images",
    "grad_norm_median",
    "grad_norm_max",
    "train_s",
    "tier",
    "status",
    "run_dir",
]
#: The paper's Table 1 (grey denoising, BSD68): (model, parameters by the paper's count, PSNR by σ) —
#: drawn on Fig. 3 (PSNR vs parameters) as the published points of fully trained nets.
PAPER_TABLE1 = (("DnCNN-S", 556_032, {25: 29.22, 50: 26.23}), ("xDnCNN", 303_616, {25: 29.21, 50: 26.26}))
FIGURES = ("fig3", "fig4", "fig6")


# --- collecting ----------------------------------------------------------------------------------
def find_metrics(root: str | Path) -> list[Path]:
    return sorted(Path(root).rglob("metrics.json"))


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def _finite(v: Any) -> bool:
    f = _float(v)
    return f is not None and math.isfinite(f)


def _hydra_choice(run_dir: Path, group: str) -> str | None:
    """The option the run picked for ``group`` (Hydra saves it in ``.hydra/hydra.yaml``)."""
    f = run_dir / ".hydra" / "hydra.yaml"
    if not f.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(f)
        return OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
    except Exception:  # a damaged file must not stop the table
        return None


def _known_variants() -> dict[str, dict]:
    import yaml

    out = {}
    for f in sorted((conf_dir() / "xunit").glob("*.yaml")):
        out[f.stem] = yaml.safe_load(f.read_text()) or {}
    return out


def xunit_variant(xunit: dict | None, run_dir: Path | None = None) -> str:
    """Name of the xUnit variant: the run's Hydra choice, else the conf/xunit file it matches."""
    if run_dir is not None:
        choice = _hydra_choice(run_dir, "xunit")
        if choice:
            return str(choice)

    def switches(opts: dict) -> dict:
        return {k: v for k, v in opts.items() if k != "kernel_size"}

    xunit = switches(xunit or {})
    for name, opts in _known_variants().items():
        if switches(opts) == xunit:
            return name
    return "custom" if xunit else "paper"


def _net_counts(config: dict, origin: Path | None = None) -> tuple[int | None, int | None]:
    """(paper-convention params, activation params) of the config's net, by instantiating it; a config read
    from a run's file (``origin``) may only build an xnet architecture (:mod:`xnet.utils.trust`)."""
    from xnet.utils.trust import UntrustedConfigError, check_targets

    try:
        from hydra.utils import instantiate

        from xnet.archs.params import count_paper_params
        from xnet.figures.budget import activation_params

        net = current_net_config(config["model"]["net"])
        if origin is not None:
            check_targets(net, str(origin), where="config.model.net")
        net = instantiate(net, _convert_="all")
        return count_paper_params(net), activation_params(net)
    except UntrustedConfigError as e:
        log.warning("%s", e)
        return None, None
    except Exception as e:
        log.debug("cannot instantiate the net of a run: %s", e)
        return None, None


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of one logged metric from a run's CSV logs (every chunk of a resumed run), in step order."""
    points: dict[int, float] = {}
    for log_file in sorted(run_dir.glob("csv/metrics*.csv")):
        with open(log_file, newline="") as f:
            for rec in csv.DictReader(f):
                if _finite(rec.get(key)) and rec.get("step"):
                    points[int(rec["step"])] = float(rec[key])
    return sorted(points.items())


def grad_norm_log(run_dir: Path) -> list[tuple[int, float]]:
    return logged(run_dir, "train/grad_norm")


def log_stats(run_dir: Path) -> dict[str, float | None]:
    """The gradient norms' median and maximum over training, and the training wall clock (summed over chunks)."""
    norms = sorted(v for _, v in grad_norm_log(run_dir))
    train_s = [v for _, v in logged(run_dir, "time/train_s")]
    return {
        "grad_norm_median": norms[len(norms) // 2] if norms else None,
        "grad_norm_max": norms[-1] if norms else None,
        "train_s": max(train_s) if train_s else None,
    }


def read_row(path: Path) -> dict[str, Any] | None:
    """The row of a training run's ``metrics.json``; None for an evaluation's (``xnet.evaluate`` writes one too)."""
    data = json.loads(path.read_text())
    if "per_image" in data and "step" not in data:
        return None
    return row_of(data, data.get("config") or {}, path.parent)


def row_of(data: dict[str, Any], config: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """One CSV row: a run's ``metrics.json`` (``data``) and its resolved ``config``; with no run dir, a point
    that has not been trained (``data`` says ``status: missing``)."""
    model = config.get("model") or {}
    net = current_net_config(model.get("net") or {})  # older runs: xunit_kernel beside xunit
    task = config.get("task") or {}
    name = data.get("model") or model.get("name") or str(net.get("_target_", "?")).rsplit(".", 1)[-1].lower()
    has_xunit = "xunit" in net
    params, act = data.get("params_paper"), None
    counted, act = _net_counts(config, run_dir / "metrics.json" if run_dir else None) if net else (None, None)
    params = params if params is not None else counted
    depth = net.get("depth")
    if depth is None and net.get("num_blocks") is not None:  # xDnCNN-style: blocks + first + last conv
        depth = int(net["num_blocks"]) + 2
    row: dict[str, Any] = {
        "model": name,
        "depth": depth,
        "width": net.get("width"),
        "xunit_kernel": (net["xunit"] or {}).get("kernel_size") if has_xunit else None,
        "xunit_variant": xunit_variant(net.get("xunit"), run_dir) if has_xunit else "relu",
        "params_paper": params,
        "act_params": act,
        "act_share": (100.0 * act / params) if (act is not None and params) else None,
        "test/psnr": _float(data.get("test/psnr")),
        "val/psnr": _float(data.get("val/psnr")),
        "test/ssim": _float(data.get("test/ssim")),
        "sigma": data.get("sigma", task.get("sigma")),
        "residual": data.get("residual", task.get("residual")),
        "seed": config.get("seed"),
        "init": config.get("init", "torch"),
        "step": data.get("step"),
        "batch_size": (config.get("data") or {}).get("batch_size"),
        "patch_size": (config.get("data") or {}).get("patch_size"),
        "test_dataset": data.get("test/dataset"),
        "test_images": data.get("test/images", ((config.get("data") or {}).get("test") or {}).get("limit")),
        **(log_stats(run_dir) if run_dir else {"grad_norm_median": None, "grad_norm_max": None, "train_s": None}),
        "tier": config.get("tier") or ("quick" if config.get("quick") else None),  # older runs: quick: true
        "status": data.get("status", "ok"),
        "run_dir": str(run_dir) if run_dir else "",
        "_dir": run_dir,  # run_dir is shown relative to the sweep dir; this is where its files are
        "_config": config,
    }
    if row["status"] == "ok" and not (_finite(row["val/psnr"]) or _finite(row["test/psnr"])):
        row["status"] = "failed"
    return row


# --- the points a sweep has yet to train --------------------------------------------------------
#: swept keys read from a row's columns rather than its config (a ConvNet has no xUnit to choose)
ROW_KEYS = {"xunit": "xunit_variant", "model": "model", "seed": "seed", "init": "init"}


def _sweep_values(override: Any) -> list[str]:
    """A sweeper parameter's values; a single value (``xunit: paper``) is a one-point axis, not a sweep."""
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [override.get_value_element_as_str()]


def expected_points(experiments: Sequence[str]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Every job the sweeps of ``experiments`` run — their sweeper parameters' product grid — as ``(point,
    config)``: the swept keys with the experiment's model, seed and init, and that job's resolved config."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from xnet.utils.config import compose_config

    out = []
    for experiment in experiments:
        base = [f"experiment={experiment}", "paths.output_dir=unused"]
        params = OmegaConf.select(compose_config("train", base, with_hydra=True), "hydra.sweeper.params") or {}
        parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
        axes = [[(o.key_or_group, v) for v in _sweep_values(o)] for o in parsed]
        for combo in itertools.product(*axes):
            cfg = compose_config("train", [*base, *(f"{k}={v}" for k, v in combo)])
            config = OmegaConf.to_container(cfg, resolve=True)
            point = {
                "model": config["model"]["name"],
                "seed": str(config["seed"]),
                "init": str(config.get("init", "torch")),
                **dict(combo),
            }
            out.append((point, config))
    return out


def _row_value(row: dict[str, Any], key: str) -> Any:
    if key in ROW_KEYS:
        return row.get(ROW_KEYS[key])
    node: Any = row.get("_config") or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def is_point(row: dict[str, Any], point: dict[str, str]) -> bool:
    """Whether ``row`` is the run of sweep ``point``."""
    for key, value in point.items():
        got = _row_value(row, key)
        if not (key == "xunit" and got == "relu") and str(got) != value:
            return False
    return True


def missing_rows(
    rows: Sequence[dict[str, Any]], expected: Sequence[tuple[dict[str, str], dict[str, Any]]]
) -> list[dict[str, Any]]:
    """A ``status: missing`` row for each expected point no run dir holds yet (finished or failed)."""
    return [
        row_of({"status": "missing"}, config, None)
        for point, config in expected
        if not any(is_point(r, point) for r in rows)
    ]


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One row per ``metrics.json`` under ``root``; ``run_dir`` relative to ``root``."""
    root = Path(root)
    rows = []
    evaluations = 0
    for p in find_metrics(root):
        try:
            row = read_row(p)
        except (OSError, ValueError) as e:
            log.warning("skipping %s: %s", p, e)
            continue
        if row is None:
            evaluations += 1
            continue
        row["run_dir"] = str(p.parent.relative_to(root)) if p.parent != root else "."
        rows.append(row)
    rows.sort(
        key=lambda r: (
            str(r["model"]),
            r["xunit_variant"] or "",
            r["xunit_kernel"] or 0,
            r["depth"] or 0,
            r["width"] or 0,
            r["run_dir"],
        )
    )
    if evaluations:
        log.info("%d evaluation run(s) under %s left out (not training runs)", evaluations, root)
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
    return path


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else "nan"
    return v


def format_table(rows: Sequence[dict[str, Any]], metric: str = "test/psnr") -> str:
    cols = [*COLUMNS[: COLUMNS.index("params_paper") + 1], "act_share", "val/psnr", "test/psnr", "status"]
    cells = [
        [str(_fmt(r.get(c))) if c != "act_share" or r.get(c) is None else f"{r[c]:.1f}" for c in cols] for r in rows
    ]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.rjust(wd) for x, wd in zip(xs, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * wd for wd in widths]), *(line(x) for x in cells)])


# --- plotting ------------------------------------------------------------------------------------
def _metric(row: dict[str, Any], metric: str) -> float | None:
    v = row.get(metric)
    if not _finite(v) and metric == "test/psnr":  # runs without a test score: fall back to val
        v = row.get("val/psnr")
    return float(v) if _finite(v) else None


@dataclass
class Points:
    """One curve: the mean PSNR at each x, every seed's own value where there are several, and the xs whose
    runs failed or have not been trained yet."""

    xs: list
    ys: list
    seeds: list[tuple[float, float]]
    failed: list
    missing: list


def _mean_points(rows: Iterable[dict[str, Any]], x_key: str, metric: str) -> Points:
    ok, failed, missing = defaultdict(list), set(), set()
    for r in rows:
        x = r.get(x_key)
        if x is None:
            continue
        y = _metric(r, metric) if r["status"] == "ok" else None
        if r["status"] == "missing":
            missing.add(x)
        elif y is None:
            failed.add(x)
        else:
            ok[x].append(y)
    xs = sorted(ok)
    seeds = [(x, y) for x in xs if len(ok[x]) > 1 for y in ok[x]]
    return Points(
        xs, [sum(ok[x]) / len(ok[x]) for x in xs], seeds, sorted(failed - set(ok)), sorted(missing - set(ok) - failed)
    )


def _draw(ax, pts: Points, **style: Any) -> None:
    """The mean curve, each seed's point (small, faint) where there are several."""
    ax.plot(pts.xs, pts.ys, **style)
    if pts.seeds:
        ax.plot(
            *zip(*pts.seeds),
            linestyle="none",
            marker=style.get("marker", "o"),
            markersize=3,
            alpha=0.45,
            color=style.get("color"),
        )


def _axes(ylim: Sequence[float] | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=150)
    ax.grid(True, color="0.88", linewidth=0.8)
    ax.set_axisbelow(True)
    if ylim:  # fixed before drawing, so failure marks sit at its bottom
        ax.set_ylim(*ylim)
    return fig, ax


def _finish(
    fig,
    ax,
    out: Path,
    title: str,
    failed_any: bool,
    ylim: Sequence[float] | None = None,
    outside: bool = False,
    note: str | None = None,
    missing_any: bool = False,
) -> Path:
    if ylim:  # points outside are clipped: say so in the plot
        lo = ylim[0]
        below = [y for line in ax.get_lines() if line.get_marker() != "x" for y in line.get_ydata() if y < lo]
        if below:
            ax.text(
                0.01,
                0.02,
                f"{len(below)} point(s) below {lo:g} dB not shown",
                transform=ax.transAxes,
                fontsize=7,
                color="0.4",
            )
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if failed_any:
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="none"))
        labels.append("failed / diverged")
    if missing_any:
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none"))
        labels.append("not trained yet")
    if any(line.get_alpha() == 0.45 for line in ax.get_lines()):
        handles.append(Line2D([], [], color="0.3", marker="o", markersize=3, alpha=0.45, linestyle="none"))
        labels.append("each seed (line: mean)")
    where = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0) if outside else dict(loc="best")
    ax.legend(handles, labels, fontsize=8, frameon=True, **where)
    if outside:
        fig.set_size_inches(fig.get_figwidth() + 3.2, fig.get_figheight())
    ax.set_title(title, fontsize=10, pad=14 if note else 6)
    if note:  # how the points were trained and tested, in the image itself
        ax.annotate(
            note,
            xy=(0.5, 1.0),
            xycoords="axes fraction",
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color="0.35",
        )
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def _mark_failed(ax, xs: Sequence[float], color: Any, missing: Sequence[float] = (), lo: float | None = None) -> None:
    """Failed runs as crosses and untrained points as hollow circles, on the bottom edge (``lo``: the one edge
    every curve's marks share, else the axis's now)."""
    lo = ax.get_ylim()[0] if lo is None else lo
    if xs:
        ax.plot(xs, [lo] * len(xs), linestyle="none", marker="x", color=color, markersize=8, clip_on=False)
    if missing:
        ax.plot(
            missing,
            [lo] * len(missing),
            linestyle="none",
            marker="o",
            markerfacecolor="none",
            color=color,
            markersize=6,
            clip_on=False,
        )


def _title(rows: Sequence[dict[str, Any]], fig: str, metric: str) -> str:
    sig = sorted({r["sigma"] for r in rows if r.get("sigma") is not None})
    sig_s = ", ".join(f"{s:g}" if isinstance(s, (int, float)) else str(s) for s in sig)
    return f"Fig. {fig[3:]}: grey denoising σ={sig_s or '?'} ({plotted_metric(rows, metric)})"


def plotted_metric(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """What the y values are: a test-PSNR plot of runs without test scores shows their validation
    PSNR (:func:`_metric`), and says so."""
    if metric != "test/psnr":
        return "validation PSNR"
    ok = [r for r in rows if r["status"] == "ok" and _metric(r, metric) is not None]
    untested = [r for r in ok if not _finite(r.get("test/psnr"))]
    if ok and len(untested) == len(ok):
        return "validation PSNR: no test scores"
    return "test PSNR" + (f"; validation PSNR for {len(untested)} untested run(s)" if untested else "")


def _span(values: Iterable[Any], fmt: str = "{:,}") -> str | None:
    vals = sorted({v for v in values if v is not None})
    if not vals:
        return None
    return fmt.format(vals[0]) if len(vals) == 1 else f"{fmt.format(vals[0])}–{fmt.format(vals[-1])}"


def budget_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """How the points were trained and tested (steps, crops, test images), written into the
    figure, and the tier of the sweep (``quick run: ...``, ``medium run: ...``)."""
    rows = [r for r in rows if r["status"] != "missing"]
    steps = _span(int(r["step"]) for r in rows if r.get("step"))
    if steps is None:
        return None
    width = _span(r.get("width") for r in rows)
    note = (f"{width} channels; " if width else "") + f"{steps} training steps"
    batch, patch = _span(r.get("batch_size") for r in rows), _span(r.get("patch_size") for r in rows)
    if batch and patch:
        note += f" of {batch} crops of {patch}²"
    dataset, images = _span((r.get("test_dataset") for r in rows), "{}"), _span(r.get("test_images") for r in rows)
    if dataset or images:
        note += f"; test: {images + ' ' if images else ''}{dataset + ' ' if dataset else ''}images"
    tiers = sorted({r["tier"] for r in rows if r.get("tier")})
    return "".join(f"{tier} run: " for tier in tiers) + note


def _thousands(v: float, _pos: Any = None) -> str:
    """Tick labels in thousands that stay distinct for small nets (1.2K, 1.4K, not 1K, 1K)."""
    return f"{v / 1000:g}K"


def plot_fig3(
    rows: Sequence[dict[str, Any]], out: Path, metric: str = "test/psnr", ylim: Sequence[float] | None = None
) -> Path:
    """x: number of parameters, y: PSNR; ConvNet and one xNet curve per kernel r, depth labelled."""
    import matplotlib.pyplot as plt

    fig, ax = _axes(ylim)
    groups: dict[int | None, list] = defaultdict(list)  # by xUnit kernel r; None: a net without xUnits
    for r in rows:
        if r.get("params_paper") is not None:
            groups[None if r["xunit_kernel"] is None else int(r["xunit_kernel"])].append(r)
    cmap = plt.get_cmap("viridis")
    kernels = sorted(k for k in groups if k is not None)
    marks = []
    for k in sorted(groups, key=lambda k: -1 if k is None else k):  # the ConvNet first, then r ascending
        pts = _mean_points(groups[k], "params_paper", metric)
        if k is None:
            style = dict(color="black", marker="s", linestyle="--", label="ConvNet (Conv+BN+ReLU)")
        else:
            c = cmap(0.15 + 0.75 * kernels.index(k) / max(1, len(kernels) - 1))
            style = dict(color=c, marker="o", linestyle="-", label=f"xNet, r = {k}")
        _draw(ax, pts, markersize=5, linewidth=1.4, **style)
        depth_of = {r["params_paper"]: r["depth"] for r in groups[k]}
        for x, y in zip(pts.xs, pts.ys):
            ax.annotate(
                f"{depth_of[x]}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=style["color"]
            )
        marks.append((pts, style["color"]))
    lo = ax.get_ylim()[0]  # after all curves, so the y-limits are final
    for pts, color in marks:
        _mark_failed(ax, pts.failed, color, pts.missing, lo)
    ax.set_ylim(bottom=lo)
    _paper_points(ax, rows)
    ax.set_xlabel("number of parameters")
    ax.set_ylabel("PSNR [dB]")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(_thousands))
    ax.text(
        0.99, 0.02, "labels: number of layers", transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.4"
    )
    return _finish(
        fig,
        ax,
        out,
        _title(rows, "fig3", metric),
        any(p.failed for p, _ in marks),
        ylim,
        note=budget_note(rows),
        missing_any=any(p.missing for p, _ in marks),
    )


def _paper_points(ax, rows: Sequence[dict[str, Any]]) -> None:
    """The paper's Table 1 nets at the sweep's σ (one σ only), as stars: where full training lands."""
    sigmas = {r.get("sigma") for r in rows if r.get("sigma") is not None}
    if len(sigmas) != 1:
        return
    sigma = float(next(iter(sigmas)))
    points = [(name, params, by_sigma[sigma]) for name, params, by_sigma in PAPER_TABLE1 if sigma in by_sigma]
    largest = max((r["params_paper"] for r in rows if r.get("params_paper")), default=0)
    if (
        points and largest < min(p for _, p, _ in points) / 3
    ):  # narrow nets (the medium tier): the stars would squash the axis
        ax.text(
            0.99,
            0.06,
            "paper, Table 1: " + ", ".join(f"{n} {v:.2f} dB at {p:,}" for n, p, v in points) + " parameters",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=6,
            color="crimson",
        )
        return
    for i, (name, params, psnr) in enumerate(points):
        ax.plot(
            [params],
            [psnr],
            linestyle="none",
            marker="*",
            markersize=11,
            color="crimson",
            label="paper, Table 1 (BSD68, full training)" if i == 0 else None,
        )
        ax.annotate(name, (params, psnr), textcoords="offset points", xytext=(5, -3), fontsize=7, color="crimson")


def plot_fig4(
    rows: Sequence[dict[str, Any]], out: Path, metric: str = "test/psnr", ylim: Sequence[float] | None = None
) -> Path:
    """x: percentage of parameters in the activations, y: PSNR (fixed total budget)."""
    fig, ax = _axes(ylim)
    pts_rows = [r for r in rows if r.get("act_share") is not None]
    for r in pts_rows:  # one x per architecture: its seeds share it exactly
        r["act_share"] = round(r["act_share"], 4)
    pts = _mean_points(pts_rows, "act_share", metric)
    _draw(ax, pts, color="tab:blue", marker="o", linewidth=1.4, label="fixed budget")
    conv = [(x, y) for x, y in zip(pts.xs, pts.ys) if x == 0]
    if conv:
        ax.plot(*zip(*conv), linestyle="none", marker="s", markersize=8, color="black", label="ConvNet (ReLU)")
    arch = {r["act_share"]: r for r in pts_rows}
    for x, y in zip(pts.xs, pts.ys):
        r = arch[x]
        lab = f"d{r['depth']} w{r['width']}" + ("" if r["xunit_kernel"] is None else f" r{r['xunit_kernel']}")
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, -9), fontsize=6, color="0.3")
    _mark_failed(ax, pts.failed, "tab:red", pts.missing)
    params = sorted({r["params_paper"] for r in pts_rows if r.get("params_paper")})
    if params:
        ax.text(
            0.99,
            0.02,
            f"{params[0]:,} – {params[-1]:,} parameters",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.4",
        )
    ax.set_xlabel("parameters in the activations [%]")
    ax.set_ylabel("PSNR [dB]")
    return _finish(
        fig,
        ax,
        out,
        _title(rows, "fig4", metric),
        bool(pts.failed),
        ylim,
        note=budget_note(rows),
        missing_any=bool(pts.missing),
    )


GATE_ABBREVIATIONS = {"gaussian": "GS", "sigmoid": "SG", "tanh": "TH", "identity": None}
CONVNET_LABEL = "ConvNet (Conv+BN+RL)"


def variant_label(name: str) -> str:
    """The paper's abbreviation of an xUnit variant (conf/xunit/<name>.yaml over the XUnit
    defaults): BN, RL (ReLU), CD (depthwise conv), BN, then the gate — GS (Gaussian), SG (sigmoid),
    TH (tanh), nothing for the identity — e.g. ``paper`` → ``BN+RL+CD+BN+GS``; FReLU's funnel is
    ``max(x, CD+BN)`` and a unit with no spatial part is named as the pointwise function it is."""
    if name == "relu":
        return CONVNET_LABEL
    opts = _known_variants().get(name)
    if opts is None:
        return name
    o = {
        "pre_norm": True,
        "relu": True,
        "depthwise": True,
        "post_norm": True,
        "gate": "gaussian",
        "combine": "product",
        **opts,
    }
    parts = [
        p for p, on in (("BN", o["pre_norm"]), ("RL", o["relu"]), ("CD", o["depthwise"]), ("BN", o["post_norm"])) if on
    ]
    gate = GATE_ABBREVIATIONS.get(o["gate"], o["gate"])
    label = "+".join(parts + ([gate] if gate else []))
    if o["combine"] == "max":
        return f"max(x, {label}) (FReLU)"
    if not o["depthwise"] and not o["pre_norm"] and not o["post_norm"] and not o["relu"]:
        return {"sigmoid": "x·SG(x) (SiLU, pointwise)"}.get(o["gate"], f"x·{label}(x) (pointwise)")
    return f"{label} (paper's unit)" if name == "paper" else label


#: plotting order: the paper's unit, its named alternative, the other variants, beyond the paper, the ConvNet
VARIANT_ORDER = (
    "paper",
    "bn_rl_cd",
    "no_pre_norm",
    "no_post_norm",
    "no_norm",
    "no_relu",
    "sigmoid",
    "tanh",
    "identity",
    "frelu",
    "silu",
    "relu",
)


EXTRA_COLORS = ("darkgoldenrod", "magenta", "lime")


def variant_color(variant: str, colors: Any, fallback: int) -> Any:
    """One colour per variant in both Fig 6 plots: tab20's ten dark shades in VARIANT_ORDER, then hues of
    their own (tab20 would wrap SiLU onto the paper unit's blue), black for the ConvNet."""
    if variant == "relu":
        return "black"
    i = VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else fallback
    return colors(2 * i) if i < 10 else EXTRA_COLORS[(i - 10) % len(EXTRA_COLORS)]


def variant_key(row: dict[str, Any]) -> str:
    """A Fig 6 curve: the variant, and the initialisation where it is not torch's (an ablation)."""
    v = row["xunit_variant"] or "?"
    return v if row.get("init", "torch") == "torch" else f"{v}@{row['init']}"


def plot_fig6(
    rows: Sequence[dict[str, Any]], out: Path, metric: str = "test/psnr", ylim: Sequence[float] | None = None
) -> Path:
    """x: number of layers, y: PSNR, one curve per xUnit variant (and initialisation); diverged runs as crosses.
    Beside it, ``<out>_grad_norm.png``: the gradient norms over training (:func:`plot_grad_norms`)."""
    import matplotlib.pyplot as plt

    fig, ax = _axes(ylim)
    groups: dict[str, list] = defaultdict(list)
    for r in rows:
        groups[variant_key(r)].append(r)
    base = {k: k.split("@")[0] for k in groups}
    order = sorted(
        groups, key=lambda k: (VARIANT_ORDER.index(base[k]) if base[k] in VARIANT_ORDER else len(VARIANT_ORDER), k)
    )
    colors = plt.get_cmap("tab20")
    marks = []
    for i, k in enumerate(order):
        pts = _mean_points(groups[k], "depth", metric)
        v, init = base[k], k.partition("@")[2]
        c = variant_color(v, colors, i)
        lw, ms = (2.2, 6) if v == "paper" else (1.2, 4)
        style = dict(
            color=c, marker="s" if v == "relu" else "o", linestyle=":" if init else ("--" if v == "relu" else "-")
        )
        _draw(
            ax, pts, linewidth=lw, markersize=ms, label=variant_label(v) + (f", init={init}" if init else ""), **style
        )
        marks.append((pts, c))
    lo = ax.get_ylim()[0]  # after all curves, so the y-limits are final
    for pts, c in marks:
        _mark_failed(ax, pts.failed, c, pts.missing, lo)
    ax.set_ylim(bottom=lo)
    ax.set_xlabel("number of layers")
    ax.set_ylabel("PSNR [dB]")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    png = _finish(
        fig,
        ax,
        out,
        _title(rows, "fig6", metric),
        any(p.failed for p, _ in marks),
        ylim,
        outside=True,
        note=budget_note(rows),
        missing_any=any(p.missing for p, _ in marks),
    )
    plot_grad_norms(rows, out.with_name(f"{out.stem}_grad_norm{out.suffix}"))
    return png


def plot_grad_norms(rows: Sequence[dict[str, Any]], out: Path) -> Path | None:
    """``train/grad_norm`` over the steps, one panel per depth, one curve per variant (seed 0, torch's init):
    where a design's gradients grow with depth. Nothing is drawn for runs that logged no gradient norms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = [r for r in rows if r.get("_dir") and r.get("seed") in (0, None) and r.get("init", "torch") == "torch"]
    curves = [(r, grad_norm_log(r["_dir"])) for r in logged]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return None
    depths = sorted({r["depth"] for r, _ in curves})
    fig, axes = plt.subplots(
        1, len(depths), figsize=(3.6 * len(depths) + 2.8, 3.6), dpi=150, sharey=True, squeeze=False
    )
    colors = plt.get_cmap("tab20")
    for ax, depth in zip(axes[0], depths):
        for r, c in sorted(
            ((r, c) for r, c in curves if r["depth"] == depth),
            key=lambda rc: (
                VARIANT_ORDER.index(rc[0]["xunit_variant"]) if rc[0]["xunit_variant"] in VARIANT_ORDER else 99
            ),
        ):
            v = r["xunit_variant"]
            color = variant_color(v, colors, 19)
            ax.plot(
                [s for s, _ in c],
                [g for _, g in c],
                color=color,
                linewidth=2.0 if v == "paper" else 0.9,
                linestyle="--" if v == "relu" else "-",
                label=variant_label(v),
            )
        ax.set_yscale("log")
        ax.set_title(f"{depth} layers", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, color="0.88", linewidth=0.8)
    axes[0][0].set_ylabel("gradient norm (L2, all parameters)")
    legend = {}  # every variant of every panel, once (the last panel alone may hold only the ConvNet)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    axes[0][-1].legend(legend.values(), legend.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(
        "Fig. 6: gradient norms during training" + (f" — {budget_note(rows)}" if budget_note(rows) else ""), fontsize=9
    )
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out


PLOTTERS = {"fig3": plot_fig3, "fig4": plot_fig4, "fig6": plot_fig6}


def make(
    figure: str,
    sweep_dir: str | Path,
    out: str | Path | None = None,
    csv_path: str | Path | None = None,
    metric: str = "test/psnr",
    ylim: Sequence[float] | None = None,
    expect: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], Path | None, Path | None]:
    """Collect (with a ``missing`` row for each point of the ``expect`` experiments' sweeps that has no run yet),
    write the CSV and (for a figure) the PNG, by default into the sweep dir; ``table`` writes a CSV only when
    given ``csv_path``. Returns ``(rows, csv, png)``."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    rows += missing_rows(rows, expected_points(expect)) if expect else []
    if not rows:
        raise FileNotFoundError(f"no metrics.json under {sweep_dir}")
    csv_out = write_csv(rows, csv_path or sweep_dir / f"{figure}.csv") if figure in PLOTTERS or csv_path else None
    png = None
    if figure in PLOTTERS:
        png = PLOTTERS[figure](rows, Path(out or sweep_dir / f"{figure}.png"), metric, ylim)
    return rows, csv_out, png


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xnet.figures.sweep_plots", description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=[*FIGURES, "table"])
    p.add_argument("sweep_dir", type=Path, help="a multirun dir (searched recursively for metrics.json)")
    p.add_argument("--out", type=Path, help="PNG path (default: <sweep_dir>/<figure>.png)")
    p.add_argument("--csv", type=Path, help="CSV path (default: <sweep_dir>/<figure>.csv; `table`: none)")
    p.add_argument("--metric", default="test/psnr", choices=["test/psnr", "val/psnr"])
    p.add_argument(
        "--ylim", type=float, nargs=2, metavar=("LO", "HI"), help="y range in dB (outliers are counted, not drawn)"
    )
    p.add_argument(
        "--expect",
        nargs="+",
        default=(),
        metavar="EXPERIMENT",
        help="the experiments whose sweeps fill the dir: their untrained points are listed and drawn hollow",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows, csv_out, png = make(args.figure, args.sweep_dir, args.out, args.csv, args.metric, args.ylim, args.expect)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(rows, args.metric))
    hours = sum(r.get("train_s") or 0 for r in rows) / 3600
    if hours:
        print(f"training wall clock, summed over the runs: {hours:.2f} h")
    missing = sum(r["status"] == "missing" for r in rows)
    failed = sum(r["status"] not in ("ok", "missing") for r in rows)
    print(
        f"\n{len(rows) - missing} runs, {failed} failed, {missing} not trained yet"
        + (f"; CSV: {csv_out}" if csv_out else "")
        + (f"; PNG: {png}" if png else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
