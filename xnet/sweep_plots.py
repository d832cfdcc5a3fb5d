"""Tables and paper-style plots from a sweep's run dirs (Figs 3, 4 and 6).

    python -m xnet.sweep_plots fig3 multirun/fig3/<time> [--out fig3.png] [--csv fig3.csv] [--metric test/psnr]
    python -m xnet.sweep_plots fig4 multirun/fig4/<time>
    python -m xnet.sweep_plots fig6 multirun/fig6/<time>
    python -m xnet.sweep_plots table <dir>            # the CSV only

Every ``metrics.json`` under the directory (recursively) is one row: model, depth, width, xUnit
kernel and variant, parameters (total and in the activations), PSNRs, status. Rows come from the
resolved config stored in each ``metrics.json``; the xUnit variant is the run's Hydra choice
(``.hydra/hydra.yaml``) or, failing that, the config group file whose settings match. Failed runs
(``status: failed`` or a non-finite PSNR) stay in the CSV and are drawn as crosses. Repeated
points (several seeds or sweeps in one dir) are averaged in the plot.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from xnet.conf import CONF_DIR, current_net_config
from xnet.utils.atomic import atomic_path, atomic_write

log = logging.getLogger(__name__)

COLUMNS = [
    "model", "depth", "width", "xunit_kernel", "xunit_variant", "params_paper", "act_params", "act_share",
    "test/psnr", "val/psnr", "test/ssim", "sigma", "residual", "step", "batch_size", "patch_size", "test_dataset", "test_images",
    "status", "run_dir",
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
    for f in sorted((CONF_DIR / "xunit").glob("*.yaml")):
        out[f.stem] = yaml.safe_load(f.read_text()) or {}
    return out


def xunit_variant(xunit: dict | None, run_dir: Path | None = None) -> str:
    """Name of the xUnit variant: the run's Hydra choice, else the xnet/conf/xunit file it matches."""
    if run_dir is not None:
        choice = _hydra_choice(run_dir, "xunit")
        if choice:
            return str(choice)
    xunit = {k: v for k, v in (xunit or {}).items() if k != "kernel_size"}
    for name, opts in _known_variants().items():
        if opts == xunit:
            return name
    return "custom" if xunit else "paper"


def _net_counts(config: dict, origin: Path) -> tuple[int | None, int | None]:
    """(paper-convention params, activation params) of the config's net, by instantiating it: only
    an xnet architecture (:mod:`xnet.utils.trust`; ``origin``: the metrics.json it is read from)."""
    from xnet.utils.trust import UntrustedConfigError, check_targets

    try:
        from hydra.utils import instantiate

        from xnet.archs.params import count_paper_params
        from xnet.budget import activation_params

        net = current_net_config(config["model"]["net"])
        check_targets(net, str(origin), where="config.model.net")
        net = instantiate(net, _convert_="all")
        return count_paper_params(net), activation_params(net)
    except UntrustedConfigError as e:
        log.warning("%s", e)
        return None, None
    except Exception as e:  # noqa: BLE001 - a row without counts is still a row
        log.debug("cannot instantiate the net of a run: %s", e)
        return None, None


def read_row(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    config = data.get("config") or {}
    model = config.get("model") or {}
    net = current_net_config(model.get("net") or {})  # older runs: xunit_kernel beside xunit
    task = config.get("task") or {}
    name = data.get("model") or model.get("name") or str(net.get("_target_", "?")).rsplit(".", 1)[-1].lower()
    has_xunit = "xunit" in net
    params, act = data.get("params_paper"), None
    counted, act = _net_counts(config, path) if net else (None, None)
    params = params if params is not None else counted
    depth = net.get("depth")
    if depth is None and net.get("num_blocks") is not None:  # xDnCNN-style: blocks + first + last conv
        depth = int(net["num_blocks"]) + 2
    row: dict[str, Any] = {
        "model": name,
        "depth": depth,
        "width": net.get("width"),
        "xunit_kernel": (net["xunit"] or {}).get("kernel_size") if has_xunit else None,
        "xunit_variant": xunit_variant(net.get("xunit"), path.parent) if has_xunit else "relu",
        "params_paper": params,
        "act_params": act,
        "act_share": (100.0 * act / params) if (act is not None and params) else None,
        "test/psnr": _float(data.get("test/psnr")),
        "val/psnr": _float(data.get("val/psnr")),
        "test/ssim": _float(data.get("test/ssim")),
        "sigma": data.get("sigma", task.get("sigma")),
        "residual": data.get("residual", task.get("residual")),
        "step": data.get("step"),
        "batch_size": (config.get("data") or {}).get("batch_size"),
        "patch_size": (config.get("data") or {}).get("patch_size"),
        "test_dataset": data.get("test/dataset"),
        "test_images": data.get("test/images", ((config.get("data") or {}).get("test") or {}).get("limit")),
        "quick": bool(config.get("quick")),
        "status": data.get("status", "ok"),
        "run_dir": str(path.parent),
    }
    if row["status"] == "ok" and not (_finite(row["val/psnr"]) or _finite(row["test/psnr"])):
        row["status"] = "failed"
    return row


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One row per ``metrics.json`` under ``root``; ``run_dir`` relative to ``root``."""
    root = Path(root)
    rows = []
    for p in find_metrics(root):
        try:
            row = read_row(p)
        except (OSError, ValueError) as e:
            log.warning("skipping %s: %s", p, e)
            continue
        row["run_dir"] = str(p.parent.relative_to(root)) if p.parent != root else "."
        rows.append(row)
    rows.sort(key=lambda r: (str(r["model"]), r["xunit_variant"] or "", r["xunit_kernel"] or 0, r["depth"] or 0, r["width"] or 0, r["run_dir"]))
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
    cols = ["model", "depth", "width", "xunit_kernel", "xunit_variant", "params_paper", "act_share", "val/psnr", "test/psnr", "status"]
    cells = [[str(_fmt(r.get(c))) if c != "act_share" or r.get(c) is None else f"{r[c]:.1f}" for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.rjust(wd) for x, wd in zip(xs, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * wd for wd in widths]), *(line(x) for x in cells)])


# --- plotting ------------------------------------------------------------------------------------
def _metric(row: dict[str, Any], metric: str) -> float | None:
    v = row.get(metric)
    if not _finite(v) and metric == "test/psnr":  # runs without a test score: fall back to val
        v = row.get("val/psnr")
    return float(v) if _finite(v) else None


def _mean_points(rows: Iterable[dict[str, Any]], x_key: str, metric: str) -> tuple[list, list, list]:
    """Average repeated x values; returns (xs, ys, failed xs)."""
    ok, failed = defaultdict(list), set()
    for r in rows:
        x = r.get(x_key)
        if x is None:
            continue
        y = _metric(r, metric) if r["status"] == "ok" else None
        if y is None:
            failed.add(x)
        else:
            ok[x].append(y)
    xs = sorted(ok)
    return xs, [sum(ok[x]) / len(ok[x]) for x in xs], sorted(failed - set(ok))


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


def _finish(fig, ax, out: Path, title: str, failed_any: bool, ylim: Sequence[float] | None = None, outside: bool = False,
            note: str | None = None) -> Path:
    if ylim:  # points outside are clipped: say so in the plot
        lo = ylim[0]
        below = [y for line in ax.get_lines() if line.get_marker() != "x" for y in line.get_ydata() if y < lo]
        if below:
            ax.text(0.01, 0.02, f"{len(below)} point(s) below {lo:g} dB not shown", transform=ax.transAxes, fontsize=7, color="0.4")
    if failed_any:
        from matplotlib.lines import Line2D

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="none"))
        labels.append("failed / diverged")
    else:
        handles, labels = ax.get_legend_handles_labels()
    where = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0) if outside else dict(loc="best")
    ax.legend(handles, labels, fontsize=8, frameon=True, **where)
    if outside:
        fig.set_size_inches(fig.get_figwidth() + 3.2, fig.get_figheight())
    ax.set_title(title, fontsize=10, pad=14 if note else 6)
    if note:  # how the points were trained and tested, in the image itself
        ax.annotate(note, xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 3), textcoords="offset points", ha="center",
                    va="bottom", fontsize=7, color="0.35")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def _mark_failed(ax, xs: Sequence[float], color: Any) -> None:
    if not xs:
        return
    lo = ax.get_ylim()[0]
    ax.plot(xs, [lo] * len(xs), linestyle="none", marker="x", color=color, markersize=8, clip_on=False)


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
    figure; runs of a quick experiment (``quick: true``) say they are quick runs."""
    steps = _span(int(r["step"]) for r in rows if r.get("step"))
    if steps is None:
        return None
    note = f"{steps} training steps"
    batch, patch = _span(r.get("batch_size") for r in rows), _span(r.get("patch_size") for r in rows)
    if batch and patch:
        note += f" of {batch} crops of {patch}²"
    dataset, images = _span((r.get("test_dataset") for r in rows), "{}"), _span(r.get("test_images") for r in rows)
    if dataset or images:
        note += f"; test: {images + ' ' if images else ''}{dataset + ' ' if dataset else ''}images"
    return ("quick run: " if any(r.get("quick") for r in rows) else "") + note


def _thousands(v: float, _pos: Any = None) -> str:
    """Tick labels in thousands that stay distinct for small nets (1.2K, 1.4K, not 1K, 1K)."""
    return f"{v / 1000:g}K"


def plot_fig3(rows: Sequence[dict[str, Any]], out: Path, metric: str = "test/psnr", ylim: Sequence[float] | None = None) -> Path:
    """x: number of parameters, y: PSNR; ConvNet and one xNet curve per kernel r, depth labelled."""
    import matplotlib.pyplot as plt

    fig, ax = _axes(ylim)
    groups: dict[int | None, list] = defaultdict(list)  # by xUnit kernel r; None: a net without xUnits
    for r in rows:
        if r.get("params_paper") is not None:
            groups[None if r["xunit_kernel"] is None else int(r["xunit_kernel"])].append(r)
    cmap = plt.get_cmap("viridis")
    kernels = sorted(k for k in groups if k is not None)
    failed_any = False
    for k in sorted(groups, key=lambda k: -1 if k is None else k):  # the ConvNet first, then r ascending
        xs, ys, bad = _mean_points(groups[k], "params_paper", metric)
        if k is None:
            style = dict(color="black", marker="s", linestyle="--", label="ConvNet (Conv+BN+ReLU)")
        else:
            c = cmap(0.15 + 0.75 * kernels.index(k) / max(1, len(kernels) - 1))
            style = dict(color=c, marker="o", linestyle="-", label=f"xNet, r = {k}")
        ax.plot(xs, ys, markersize=5, linewidth=1.4, **style)
        depth_of = {r["params_paper"]: r["depth"] for r in groups[k]}
        for x, y in zip(xs, ys):
            ax.annotate(f"{depth_of[x]}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=style["color"])
        _mark_failed(ax, bad, style["color"])
        failed_any |= bool(bad)
    _paper_points(ax, rows)
    ax.set_xlabel("number of parameters")
    ax.set_ylabel("PSNR [dB]")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(_thousands))
    ax.text(0.99, 0.02, "labels: number of layers", transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.4")
    return _finish(fig, ax, out, _title(rows, "fig3", metric), failed_any, ylim, note=budget_note(rows))


def _paper_points(ax, rows: Sequence[dict[str, Any]]) -> None:
    """The paper's Table 1 nets at the sweep's σ (one σ only), as stars: where full training lands."""
    sigmas = {r.get("sigma") for r in rows if r.get("sigma") is not None}
    if len(sigmas) != 1:
        return
    sigma = float(next(iter(sigmas)))
    points = [(name, params, by_sigma[sigma]) for name, params, by_sigma in PAPER_TABLE1 if sigma in by_sigma]
    for i, (name, params, psnr) in enumerate(points):
        ax.plot([params], [psnr], linestyle="none", marker="*", markersize=11, color="crimson",
                label="paper, Table 1 (BSD68, full training)" if i == 0 else None)
        ax.annotate(name, (params, psnr), textcoords="offset points", xytext=(5, -3), fontsize=7, color="crimson")


def plot_fig4(rows: Sequence[dict[str, Any]], out: Path, metric: str = "test/psnr", ylim: Sequence[float] | None = None) -> Path:
    """x: percentage of parameters in the activations, y: PSNR (fixed total budget)."""
    fig, ax = _axes(ylim)
    pts = [r for r in rows if r.get("act_share") is not None]
    pts.sort(key=lambda r: r["act_share"])
    ok = [(r["act_share"], _metric(r, metric), r) for r in pts if r["status"] == "ok" and _metric(r, metric) is not None]
    bad = [r["act_share"] for r in pts if not (r["status"] == "ok" and _metric(r, metric) is not None)]
    if ok:
        ax.plot([x for x, _, _ in ok], [y for _, y, _ in ok], color="tab:blue", marker="o", linewidth=1.4, label="fixed budget")
        conv = [(x, y) for x, y, r in ok if r["xunit_kernel"] is None]
        if conv:
            ax.plot(*zip(*conv), linestyle="none", marker="s", markersize=8, color="black", label="ConvNet (ReLU)")
        for x, y, r in ok:
            lab = f"d{r['depth']} w{r['width']}" + ("" if r["xunit_kernel"] is None else f" r{r['xunit_kernel']}")
            ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, -9), fontsize=6, color="0.3")
    _mark_failed(ax, bad, "tab:red")
    params = sorted({r["params_paper"] for r in pts if r.get("params_paper")})
    if params:
        ax.text(0.99, 0.02, f"{params[0]:,} – {params[-1]:,} parameters", transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.4")
    ax.set_xlabel("parameters in the activations [%]")
    ax.set_ylabel("PSNR [dB]")
    return _finish(fig, ax, out, _title(rows, "fig4", metric), bool(bad), ylim, note=budget_note(rows))


GATE_ABBREVIATIONS = {"gaussian": "GS", "sigmoid": "SG", "tanh": "TH", "identity": None}
CONVNET_LABEL = "ConvNet (Conv+BN+RL)"


def variant_label(name: str) -> str:
    """The paper's abbreviation of an xUnit variant (xnet/conf/xunit/<name>.yaml over the XUnit
    defaults): BN, RL (ReLU), CD (depthwise conv), BN, then the gate — GS (Gaussian), SG (sigmoid),
    TH (tanh), nothing for the identity — e.g. ``paper`` → ``BN+RL+CD+BN+GS``."""
    if name == "relu":
        return CONVNET_LABEL
    opts = _known_variants().get(name)
    if opts is None:
        return name
    o = {"pre_norm": True, "relu": True, "depthwise": True, "post_norm": True, "gate": "gaussian", **opts}
    parts = [p for p, on in (("BN", o["pre_norm"]), ("RL", o["relu"]), ("CD", o["depthwise"]), ("BN", o["post_norm"])) if on]
    gate = GATE_ABBREVIATIONS.get(o["gate"], o["gate"])
    label = "+".join(parts + ([gate] if gate else []))
    return f"{label} (paper's unit)" if name == "paper" else label


#: plotting order: the paper's unit, its named alternative, the other variants, the ConvNet
VARIANT_ORDER = ("paper", "bn_rl_cd", "no_pre_norm", "no_post_norm", "no_norm", "no_relu", "sigmoid", "tanh", "identity", "relu")


def plot_fig6(rows: Sequence[dict[str, Any]], out: Path, metric: str = "test/psnr", ylim: Sequence[float] | None = None) -> Path:
    """x: number of layers, y: PSNR, one curve per xUnit variant; diverged runs as crosses."""
    import matplotlib.pyplot as plt

    fig, ax = _axes(ylim)
    groups: dict[str, list] = defaultdict(list)
    for r in rows:
        groups[r["xunit_variant"] or "?"].append(r)
    order = [v for v in VARIANT_ORDER if v in groups] + sorted(set(groups) - set(VARIANT_ORDER))
    colors = plt.get_cmap("tab10")
    failed: list[tuple[list, Any]] = []
    for i, v in enumerate(order):
        xs, ys, bad = _mean_points(groups[v], "depth", metric)
        c = colors(i % 10)
        lw, ms = (2.2, 6) if v == "paper" else (1.2, 4)
        style = dict(color="black", marker="s", linestyle="--") if v == "relu" else dict(color=c, marker="o")
        ax.plot(xs, ys, linewidth=lw, markersize=ms, label=variant_label(v), **style)
        failed.append((bad, c))
    for bad, c in failed:  # after all curves, so the y-limits are final
        _mark_failed(ax, bad, c)
    ax.set_xlabel("number of layers")
    ax.set_ylabel("PSNR [dB]")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    return _finish(fig, ax, out, _title(rows, "fig6", metric), any(b for b, _ in failed), ylim, outside=True, note=budget_note(rows))


PLOTTERS = {"fig3": plot_fig3, "fig4": plot_fig4, "fig6": plot_fig6}


def make(figure: str, sweep_dir: str | Path, out: str | Path | None = None, csv_path: str | Path | None = None,
         metric: str = "test/psnr", ylim: Sequence[float] | None = None) -> tuple[list[dict[str, Any]], Path, Path | None]:
    """Collect, write the CSV and (for a figure) the PNG. Returns ``(rows, csv, png)``."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no metrics.json under {sweep_dir}")
    stem = figure if figure in PLOTTERS else "table"
    csv_out = write_csv(rows, csv_path or sweep_dir / f"{stem}.csv")
    png = None
    if figure in PLOTTERS:
        png = PLOTTERS[figure](rows, Path(out or sweep_dir / f"{figure}.png"), metric, ylim)
    return rows, csv_out, png


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xnet.sweep_plots", description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=[*FIGURES, "table"])
    p.add_argument("sweep_dir", type=Path, help="a multirun dir (searched recursively for metrics.json)")
    p.add_argument("--out", type=Path, help="PNG path (default: <sweep_dir>/<figure>.png)")
    p.add_argument("--csv", type=Path, help="CSV path (default: <sweep_dir>/<figure>.csv)")
    p.add_argument("--metric", default="test/psnr", choices=["test/psnr", "val/psnr"])
    p.add_argument("--ylim", type=float, nargs=2, metavar=("LO", "HI"), help="y range in dB (outliers are counted, not drawn)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows, csv_out, png = make(args.figure, args.sweep_dir, args.out, args.csv, args.metric, args.ylim)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(rows, args.metric))
    print(f"\n{len(rows)} runs, {sum(r['status'] != 'ok' for r in rows)} failed; CSV: {csv_out}" + (f"; PNG: {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
