"""Two restorers, image by image, under one protocol: where does A beat B?

``python -m xnet.compare A B data/test=bsd68 task.sigma=50``  (A, B: weights files or zoo names)
``python -m xnet.compare a.weights=xdncnn_s50 b.model=bm3d data/test=bsd68 task.sigma=50``

Each side is ``weights`` (a file or a zoo name), ``model`` (a ``conf/model`` name: the architecture
of a plain state dict, or a restorer that needs no weights, ``bm3d``/``identity``), ``overrides``
(more eval overrides for that side only, quoted as Hydra wants a value holding ``=``:
``'b.overrides=["model.net.bn_merged=true"]'``) or ``metrics`` (the ``metrics.json`` of an earlier
``xnet.evaluate`` on the same set and protocol: BM3D takes minutes).
Every other override (task, data/test, σ, seed, limit; ``model...`` unless the side names its own
model) applies to both, so both see the same inputs. Writes ``compare.csv`` (per image: PSNR/SSIM
of A and B, A − B), ``compare.png`` (A vs B PSNR per image; above the diagonal, A is better) and
``compare.json`` in the run dir, and prints the images where A beats B (the paper: xDnCNN best on
57 of BSD68's 68 images at σ=50).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from xnet.protocol.errors import exit_on_config_error, exit_on_user_error
from xnet.utils.config import CONFIG_PATH, compose_config

log = logging.getLogger(__name__)

SIDES = ("a", "b")


def side_overrides(side: DictConfig) -> list[str]:
    """The eval overrides that make one side: its model, weights and own overrides."""
    out = [f"model={side.model}"] if side.get("model") else []
    out += [f"weights={side.weights}"] if side.get("weights") else []
    return out + list(side.get("overrides") or [])


def side_label(side: DictConfig) -> str:
    if side.get("label"):
        return str(side.label)
    if side.get("metrics"):
        return Path(str(side.metrics)).parent.name
    return Path(str(side.weights)).stem if side.get("weights") else str(side.get("model"))


def evaluate_side(shared: list[str], side: DictConfig, name: str) -> dict[str, Any]:
    """One side's ``xnet.evaluate`` report (without its files), or the metrics.json it names."""
    if side.get("metrics"):
        return json.loads(Path(str(side.metrics)).read_text())
    if not side.get("weights") and not side.get("model"):
        raise ValueError(
            f"{name}: give {name}.weights=PATH|ZOO_NAME, {name}.model=NAME (bm3d, identity) "
            f"or {name}.metrics=metrics.json"
        )
    from hydra.utils import instantiate

    from xnet.deploy.inference import evaluate_module, inference_module, load_restorer, pick_device
    from xnet.utils.build import build_task

    if side.get("model"):  # the side's own model replaces the shared one and its options
        shared = [o for o in shared if not o.lstrip("+~").startswith(("model=", "model."))]
    overrides = [*shared, *side_overrides(side), "paths.output_dir=."]
    cfg = compose_config("eval", overrides)
    task = build_task(cfg)
    loaded = load_restorer(cfg, task)
    source = instantiate(cfg.data.test, _convert_="all")
    report = evaluate_module(
        inference_module(loaded.restorer, cfg.fuse),
        task,
        source,
        seed=cfg.seed,
        device=pick_device(cfg.device),
        limit=cfg.limit,
    )
    return {"model": cfg.model.name, **task.describe(), "seed": cfg.seed, **report, "weights": loaded.weights}


def per_image(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``image, <metric>_a, <metric>_b, psnr_diff`` over the images both scored; the two
    reports must be of the same set and protocol."""
    for key in ("dataset", "task", "sigma", "scale", "seed"):
        if a.get(key) != b.get(key):
            raise ValueError(f"A and B were scored differently: {key} = {a.get(key)!r} vs {b.get(key)!r}")
    b_rows = {r["image"]: r for r in b["per_image"]}
    missing = [r["image"] for r in a["per_image"] if r["image"] not in b_rows]
    if missing or len(b_rows) != len(a["per_image"]):
        raise ValueError(
            "A and B scored other images (only in one of them: "
            f"{missing[:5] or sorted(set(b_rows) - {r['image'] for r in a['per_image']})[:5]})"
        )
    metrics = [k for k in a["per_image"][0] if k != "image" and k in b["per_image"][0]]
    rows = []
    for ra in a["per_image"]:
        rb = b_rows[ra["image"]]
        rows.append(
            {
                "image": ra["image"],
                **{f"{m}_{s}": r[m] for m in metrics for s, r in (("a", ra), ("b", rb))},
                "psnr_diff": ra["psnr"] - rb["psnr"],
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]], labels: tuple[str, str]) -> dict[str, Any]:
    wins = [r["image"] for r in rows if r["psnr_diff"] > 0]
    return {
        "a": labels[0],
        "b": labels[1],
        "images": len(rows),
        "a_better": len(wins),
        "b_better": sum(r["psnr_diff"] < 0 for r in rows),
        "mean_psnr_a": sum(r["psnr_a"] for r in rows) / len(rows),
        "mean_psnr_b": sum(r["psnr_b"] for r in rows) / len(rows),
        "mean_psnr_diff": sum(r["psnr_diff"] for r in rows) / len(rows),
        "a_better_images": wins,
    }


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    return path


def scatter(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str) -> Path:
    """Left: A vs B PSNR per image (above the diagonal, A is better); right: A − B per image,
    sorted (small gaps are invisible on the left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = [r["psnr_b"] for r in rows], [r["psnr_a"] for r in rows]
    lo, hi = min(xs + ys) - 0.5, max(xs + ys) + 0.5
    colours = ["tab:blue" if r["psnr_diff"] > 0 else "tab:red" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6), dpi=110)
    left.plot([lo, hi], [lo, hi], color="0.6", lw=1, zorder=0)
    left.scatter(xs, ys, s=14, c=colours)
    left.set(
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel=f"B: {summary['b']} PSNR (dB)",
        ylabel=f"A: {summary['a']} PSNR (dB)",
        aspect="equal",
    )
    diffs = sorted(r["psnr_diff"] for r in rows)
    right.bar(range(len(diffs)), diffs, color=["tab:blue" if d > 0 else "tab:red" for d in diffs], width=0.9)
    right.axhline(0, color="0.4", lw=0.8)
    right.set(xlabel="images, sorted by A − B", ylabel="A − B PSNR (dB)", xticks=[])
    fig.suptitle(
        f"{title}: A better on {summary['a_better']} of {summary['images']} images "
        f"(mean {summary['mean_psnr_diff']:+.3f} dB)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def compare(cfg: DictConfig, shared: list[str]) -> dict[str, Any]:
    """Score both sides (``shared`` overrides apply to both), then write the CSV, plot and summary."""
    from xnet.utils.build import setup_runtime

    setup_runtime(cfg)
    reports = [evaluate_side(shared, cfg[s], s.upper()) for s in SIDES]
    labels = (side_label(cfg.a), side_label(cfg.b))
    rows = per_image(*reports)
    summary = {
        **summarize(rows, labels),
        "dataset": reports[0]["dataset"],
        "task": reports[0].get("task"),
        "sigma": reports[0].get("sigma"),
        "scale": reports[0].get("scale"),
    }
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "compare.csv")
    level = (
        f"σ={summary['sigma']}"
        if summary["sigma"] is not None
        else (f"×{summary['scale']}" if summary["scale"] else "")
    )
    scatter(rows, summary, out / "compare.png", f"{summary['dataset']} {summary['task']} {level}".strip())
    (out / "compare.json").write_text(
        json.dumps({**summary, "per_image": rows, "weights": [r.get("weights") for r in reports]}, indent=2)
    )
    print(
        f"A = {labels[0]}: {summary['mean_psnr_a']:.3f} dB; B = {labels[1]}: {summary['mean_psnr_b']:.3f} dB "
        f"({summary['dataset']}, {summary['images']} images)"
    )
    print(
        f"A better on {summary['a_better']} of {summary['images']} images, B on {summary['b_better']}: "
        f"{', '.join(summary['a_better_images'])}"
    )
    log.info("per-image table %s, plot %s", out / "compare.csv", out / "compare.png")
    return summary


def positional_to_overrides(argv: list[str]) -> list[str]:
    """``A B ...`` → ``a.weights=A b.weights=B ...`` (a ``.json`` → ``metrics``): leading arguments
    that are neither overrides nor flags name the two sides."""
    out, sides = [], list(SIDES)
    for i, arg in enumerate(argv):
        if "=" in arg or arg.startswith("-") or not sides:
            return out + argv[i:]
        out.append(f"{sides.pop(0)}.{'metrics' if arg.endswith('.json') else 'weights'}={arg}")
    return out


@exit_on_config_error
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="compare")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    shared = [
        o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(("a.", "b.", "a=", "b=", "name="))
    ]
    compare(cfg, shared)


def cli() -> None:
    """``python -m xnet.compare`` and the ``xnet-compare`` command: positional sides → overrides."""
    sys.argv[1:] = positional_to_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
