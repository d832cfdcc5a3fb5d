"""The model zoo: weights trained with xnet, shipped in the repository's ``weights/`` folder (and in
the installed package, as ``xnet/_zoo``).

Each entry is a folder ``weights/<name>/`` holding ``weights.safetensors`` (the bare net),
``config.yaml`` (the resolved config that trained it), ``metrics/*.json`` (the ``xnet.evaluate``
reports) and ``MODEL_CARD.md``; ``weights/zoo.json`` indexes them with sha256 and the headline
numbers. ``weights=<name>`` works wherever a weights path does, and brings its architecture along.

    python -m xnet.zoo list
    python -m xnet.zoo add NAME --ckpt run/checkpoints/best.ckpt --metrics eval1/metrics.json [...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xnet.deploy.weights import sha256, zoo_index, zoo_root


def _recipe(optim: dict[str, Any]) -> str:
    if optim.get("schedule") == "onecycle":
        return f"fast recipe: Adam, {optim.get('warmup', 0):.0%} warm-up to {optim.get('lr')}, cosine to {optim.get('final_lr')}"
    return f"paper recipe: Adam {optim.get('lr')} (×{optim.get('gamma')} at {optim.get('milestones')})"


def _training_line(training: dict[str, Any] | None) -> str:
    if not training:
        return ""
    wall = training.get("train_wall_s")
    gpus = ", ".join(training.get("gpus", [])) or "?"
    clock = f"{wall / 60:.1f} min of training wall clock" if wall else "wall clock not recorded"
    return f"\n* Trained by `scripts/gpu_queue.py` on {gpus}: {clock} in {training.get('chunks', 1)} chunk(s); weights: {training.get('checkpoint')}, no checkpoint selection."


def _model_card(name: str, config: dict[str, Any], reports: list[dict[str, Any]], params: dict[str, int], training: dict[str, Any] | None = None) -> str:
    task, model = config["task"], config["model"]
    rows = "\n".join(
        f"| {r['dataset']} | {r.get('sigma', r.get('scale', ''))} | {r['psnr']:.3f} | {r['ssim']:.4f} | {r['images']} |" for r in reports
    )
    optim, data, trainer = config.get("optim", {}), config.get("data", {}), config.get("trainer", {})
    return f"""# {name}

{model['name']} for {task['name']} — trained with `python -m xnet.train` (config: `config.yaml`).

* Parameters: {params['params_paper']:,} (paper convention), {params['params_trainable']:,} trainable.
* Training: {trainer.get('max_steps')} steps, batch {data.get('batch_size')}, {data.get('patch_size')}px crops,
  {_recipe(optim)}, {trainer.get('accelerator')}, precision {trainer.get('precision')}.{_training_line(training)}
* Evaluation: `python -m xnet.evaluate weights={name} data/test=<set>` (protocol in the README).

| set | σ / scale | PSNR | SSIM | images |
|---|---|---|---|---|
{rows}

Reports: `metrics/`. Intended use: research and benchmarking of image restoration.
"""


def add(name: str, ckpt: Path, metrics: list[Path], zoo_dir: Path | None = None, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ``ckpt``'s net to ``weights/<name>/`` with its config, reports and model card
    (``training``: how it was trained — steps, GPUs, wall clock — recorded in the card and index)."""
    from omegaconf import OmegaConf

    from xnet.archs.params import param_summary
    from xnet.deploy.inference import load_run
    from xnet.protocol.atomic import write_json, write_text
    from xnet.deploy.weights import save_weights

    run = load_run(ckpt)
    net, config = run.restorer.net, OmegaConf.to_container(run.cfg)
    zoo_dir = zoo_dir or zoo_root()
    folder = zoo_dir / name
    file = save_weights(net, folder / "weights.safetensors")
    write_text(folder / "config.yaml", OmegaConf.to_yaml(run.cfg))
    reports = []
    for m in metrics:
        report = json.loads(Path(m).read_text())
        report.pop("config", None)
        tag = f"{report['dataset']}_{report.get('sigma', report.get('scale', ''))}".strip("_")
        write_json(folder / "metrics" / f"{tag}.json", report)
        reports.append(report)
    params = param_summary(net)
    write_text(folder / "MODEL_CARD.md", _model_card(name, config, reports, params, training))
    index = zoo_index(zoo_dir)
    index[name] = {
        "file": f"{name}/weights.safetensors",
        "sha256": sha256(file),
        "model": config["model"]["name"],
        "task": {k: config["task"][k] for k in ("name", "sigma", "scale") if k in config["task"]},
        **params,
        "results": {f"{r['dataset']}": round(r["psnr"], 3) for r in reports},
        **({"training": training} if training else {}),
    }
    write_json(zoo_dir / "zoo.json", index, sort_keys=True)
    return index[name]


def _level(task: dict[str, Any]) -> str:
    if task.get("sigma") is not None:
        return f"σ={task['sigma']:g}" if isinstance(task["sigma"], (int, float)) else f"σ={task['sigma']}"
    return f"×{task['scale']}" if task.get("scale") is not None else "–"


def format_index(index: dict[str, Any]) -> str:
    """The zoo as a table: name, model, task, σ/scale, parameters (paper convention), then the PSNR
    on each test set any entry was scored on ("–" where not)."""
    sets = sorted({s for entry in index.values() for s in entry.get("results", {})})
    head = ["name", "model", "task", "σ/scale", "params", *sets]
    rows = [[name, e["model"], e["task"].get("name", "?"), _level(e["task"]), f"{e['params_paper']:,}",
             *(f"{e['results'][s]:.2f}" if s in e.get("results", {}) else "–" for s in sets)] for name, e in sorted(index.items())]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    numeric = {4, *range(5, len(head))}  # right-aligned columns
    line = lambda cells: "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xnet.zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped models and their headline PSNRs")
    p_add = sub.add_parser("add", help="export a checkpoint into the zoo")
    p_add.add_argument("name")
    p_add.add_argument("--ckpt", type=Path, required=True)
    p_add.add_argument("--metrics", type=Path, nargs="*", default=[])
    args = parser.parse_args(argv)
    if args.command == "list":
        index = zoo_index()
        print(format_index(index) if index else f"no models in the zoo at {zoo_root()}")
        return 0
    try:
        print(json.dumps(add(args.name, args.ckpt, args.metrics), indent=2))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
