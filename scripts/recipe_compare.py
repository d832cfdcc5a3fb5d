#!/usr/bin/env python
"""Validate the fast recipe against the paper's on CPU, at small scale, before any GPU runs it.

For a 5-layer xNet and a 5-layer ConvNet (grey denoising σ=25, Train400, 48×48 crops): the paper's
recipe (Adam 1e-3, ×0.1 at 80 % of the steps) for ``--steps`` steps, and the fast recipes
(``fast_cosine``: warm-up + cosine to 1e-5; ``fast_wsd``: warm-up, held, linear decay over the last
20 %; ``recipe=fast`` is the winner: fast_wsd at 2e-3 with Adam β2 = 0.99, ``--fast-recipes fast``)
for a third of them, at each ``--fast-lr``. Validation on Set12 every
``--val-every`` steps (the curve), test on BSD68 once at the end. Writes a CSV of every validation
point, a summary JSON (per model: the paper recipe's final PSNR, each fast run's final PSNR and the
first step at which it reached the paper recipe's final figure) and a plot.

    python scripts/recipe_compare.py --out results/recipe_compare --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "xnet": ["model=xnet", "model.net.depth=5"],
    "convnet": ["model=convnet", "model.net.depth=5"],
}


def run_one(model: str, recipe: str, steps: int, lr: float, args: argparse.Namespace) -> Path:
    run_dir = args.work / f"{model}_{recipe}_lr{lr:g}_{steps}"
    if (run_dir / "metrics.json").exists() or _finished(run_dir, steps):
        return run_dir
    cmd = [
        sys.executable,
        "-m",
        "xnet.train",
        *MODELS[model],
        f"model.net.width={args.width}",
        f"recipe={recipe}",
        "task=denoise",
        "task.sigma=25",
        "data/val=set12",
        "data/test=bsd68",
        f"data.batch_size={args.batch}",
        f"data.patch_size={args.crop}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={args.val_every}",
        f"optim.lr={lr}",
        f"optim.milestones=[{int(0.8 * steps)}]",
        "trainer.enable_progress_bar=false",
        "threads=1",
        "logger=csv",
        "module.log_images=0",
        f"seed={args.seed}",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return run_dir


def _finished(run_dir: Path, steps: int) -> bool:
    """Trained to the end (its final test may have failed: the summary then scores the checkpoint)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return False
    import torch

    return torch.load(last, map_location="cpu", weights_only=True)["global_step"] >= steps


def test_psnr(run_dir: Path) -> float | None:
    """BSD68 PSNR of the run: its own metrics.json, else ``xnet.evaluate`` of its final checkpoint."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text()).get("test/psnr")
    out = run_dir / "eval_bsd68"
    if not (out / "metrics.json").is_file():
        cmd = [
            sys.executable,
            "-m",
            "xnet.evaluate",
            "task=denoise",
            "task.sigma=25",
            "data/test=bsd68",
            f"weights={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"hydra.run.dir={out}",
            "threads=1",
        ]
        subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, check=True)
    return json.loads((out / "metrics.json").read_text())["psnr"]


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = []
    for f in sorted(run_dir.glob("csv/*.csv")):
        with open(f) as fh:
            for r in csv.DictReader(fh):
                if r.get("val/psnr"):
                    rows.append((int(r["step"]), float(r["val/psnr"])))
    return sorted(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", type=Path, default=REPO / "results" / "recipe_compare", help="writes OUT.csv, OUT.json, OUT.png"
    )
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "recipe_compare", help="the runs' own dirs")
    ap.add_argument("--steps", type=int, default=9000, help="paper recipe steps (the fast recipe gets a third)")
    ap.add_argument("--fast-lr", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3])
    ap.add_argument(
        "--fast-recipes",
        nargs="+",
        default=["fast_cosine", "fast_wsd"],
        help="recipe configs run for a third of the steps",
    )
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    args = ap.parse_args(argv)

    fast_steps = args.steps // 3
    jobs = [(m, "paper", args.steps, 1e-3) for m in args.models]
    jobs += [(m, r, fast_steps, lr) for m in args.models for r in args.fast_recipes for lr in args.fast_lr]
    with ThreadPoolExecutor(args.jobs) as pool:
        dirs = list(pool.map(lambda j: run_one(*j, args), jobs))

    rows, summary = [], {}
    for (model, recipe, steps, lr), run_dir in zip(jobs, dirs):
        curve = val_curve(run_dir)
        for step, psnr in curve:
            rows.append(
                {"model": model, "recipe": recipe, "lr": lr, "steps": steps, "step": step, "val_psnr_set12": psnr}
            )
        entry = summary.setdefault(model, {"runs": {}})
        entry["runs"][f"{recipe}_lr{lr:g}"] = {
            "steps": steps,
            "final_val_psnr": curve[-1][1],
            "test_psnr_bsd68": test_psnr(run_dir),
            "curve": curve,
        }
    for entry in summary.values():
        paper = entry["runs"]["paper_lr0.001"]
        target = paper["final_val_psnr"]
        for run in entry["runs"].values():
            reached = next((s for s, p in run["curve"] if p >= target), None)
            run["first_step_at_paper_final"] = reached
            run["fraction_of_paper_steps"] = None if reached is None else reached / paper["steps"]
            run["ends_not_lower"] = run["final_val_psnr"] >= target
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {
        "command": "python scripts/recipe_compare.py " + " ".join(argv or sys.argv[1:]),
        "width": args.width,
        "batch": args.batch,
        "crop": args.crop,
        "paper_steps": args.steps,
        "fast_steps": fast_steps,
    }
    args.out.with_suffix(".json").write_text(json.dumps({"setup": meta, "models": summary}, indent=1))
    plot(summary, args.out.with_suffix(".png"))
    for model, entry in summary.items():
        for key, run in entry["runs"].items():
            print(
                f"{model:8s} {key:16s} steps {run['steps']:6d}  final Set12 {run['final_val_psnr']:.3f}  "
                f"BSD68 {run['test_psnr_bsd68']:.3f}  reached paper final at {run['first_step_at_paper_final']}"
            )
    return 0


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4), squeeze=False)
    for ax, (model, entry) in zip(axes[0], summary.items()):
        for key, run in entry["runs"].items():
            steps, psnr = zip(*run["curve"])
            ax.plot(steps, psnr, marker="o", markersize=3, label=f"{key} ({run['steps']} steps)")
        ax.axhline(entry["runs"]["paper_lr0.001"]["final_val_psnr"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"5-layer {model}: Set12 σ=25 validation PSNR")
        ax.set_xlabel("step")
        ax.set_ylabel("PSNR (dB)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
