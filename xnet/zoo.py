"""The model zoo: weights trained with xnet, shipped in the repository's ``weights/`` folder (and in
the installed package, as ``xnet/_zoo``).

Each entry is a folder ``weights/<name>/`` holding ``weights.safetensors`` (the bare net),
``config.yaml`` (the resolved config that trained it), ``metrics/*.json`` (the ``xnet.evaluate``
reports) and ``MODEL_CARD.md``; ``weights/zoo.json`` indexes them with sha256 and the headline
numbers. ``weights=<name>`` works wherever a weights path does, and brings its architecture along.

    python -m xnet.zoo list
    python -m xnet.zoo add NAME --ckpt run/checkpoints/best.ckpt --metrics eval1/metrics.json [...] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from xnet.deploy.weights import sha256, zoo_index, zoo_root
from xnet.protocol.atomic import os_error_in
from xnet.protocol.errors import (
    USER_ERROR_EXIT,
    ConfigError,
    OutputError,
    describe,
    find_user_error,
)


def _recipe(optim: dict[str, Any]) -> str:
    if optim.get("schedule") == "onecycle":
        return (
            f"fast recipe: Adam, {optim.get('warmup', 0):.0%} warm-up to {optim.get('lr')}, "
            f"cosine to {optim.get('final_lr')}"
        )
    return f"paper recipe: Adam {optim.get('lr')} (×{optim.get('gamma')} at {optim.get('milestones')})"


def _training_line(training: dict[str, Any] | None) -> str:
    if not training:
        return ""
    wall = training.get("train_wall_s")
    gpus = ", ".join(training.get("gpus", [])) or "?"
    clock = f"{wall / 60:.1f} min of training wall clock" if wall else "wall clock not recorded"
    return (
        f"\n* Trained by `scripts/gpu_queue.py` on {gpus}: {clock} in {training.get('chunks', 1)} chunk(s); "
        f"weights: {training.get('checkpoint')}, no checkpoint selection."
    )


def _model_card(
    name: str,
    config: dict[str, Any],
    reports: list[dict[str, Any]],
    params: dict[str, int],
    training: dict[str, Any] | None = None,
) -> str:
    task, model = config["task"], config["model"]
    rows = "\n".join(
        f"| {r['dataset']} | {r.get('sigma', r.get('scale', ''))} | {r['psnr']:.3f} | {r['ssim']:.4f} | {r['images']} |"
        for r in reports
    )
    optim, data, trainer = config.get("optim", {}), config.get("data", {}), config.get("trainer", {})
    return f"""# {name}

{model["name"]} for {task["name"]} — trained with `python -m xnet.train` (config: `config.yaml`).

* Parameters: {params["params_paper"]:,} (paper convention), {params["params_trainable"]:,} trainable.
* Training: {trainer.get("max_steps")} steps, batch {data.get("batch_size")}, {data.get("patch_size")}px crops,
  {_recipe(optim)}, {trainer.get("accelerator")}, precision {trainer.get("precision")}.{_training_line(training)}
* Evaluation: `python -m xnet.evaluate weights={name} data/test=<set>` (protocol in the README).

| set | σ / scale | PSNR | SSIM | images |
|---|---|---|---|---|
{rows}

Reports: `metrics/`. Intended use: research and benchmarking of image restoration.
"""


#: a zoo name is a plain folder name: no path separators, no ``..``, no hidden folder
ZOO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
REPORT_KEYS = ("dataset", "psnr", "ssim", "images")


def check_name(name: str, zoo_dir: Path, force: bool) -> None:
    if not ZOO_NAME.fullmatch(name):
        raise ConfigError(
            f"zoo name {name!r}: use letters, digits, '_' and '-' only (a plain folder name in {zoo_dir})"
        )
    if not force and (name in zoo_index(zoo_dir) or (zoo_dir / name).exists()):
        raise ConfigError(
            f"zoo name {name!r} is taken in {zoo_dir}: pass --force to replace that entry (weights, card, reports), "
            "or choose another name"
        )


def read_reports(metrics: list[Path]) -> list[dict[str, Any]]:
    """``xnet.evaluate`` reports, checked before anything is written."""
    reports = []
    for m in metrics:
        try:
            report = json.loads(Path(m).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"--metrics {m}: not a readable JSON report ({e})") from e
        if not isinstance(report, dict) or any(k not in report for k in REPORT_KEYS):
            what = (
                "a training run's metrics.json"
                if isinstance(report, dict) and "step" in report
                else "not an xnet.evaluate report"
            )
            raise ConfigError(
                f"--metrics {m}: {what} (no {', '.join(REPORT_KEYS)}); "
                "score the checkpoint with python -m xnet.evaluate and pass the metrics.json it writes"
            )
        report.pop("config", None)
        reports.append(report)
    return reports


def write_entry(
    folder: Path, name: str, run: Any, reports: list[dict[str, Any]], training: dict[str, Any] | None
) -> dict[str, int]:
    """The entry's files in ``folder``: weights, config, reports, card. Returns the parameter counts."""
    from omegaconf import OmegaConf

    from xnet.archs.params import param_summary
    from xnet.deploy.weights import save_weights
    from xnet.protocol.atomic import write_json, write_text

    save_weights(run.restorer.net, folder / "weights.safetensors")
    write_text(folder / "config.yaml", OmegaConf.to_yaml(run.cfg))
    for report in reports:
        tag = f"{report['dataset']}_{report.get('sigma', report.get('scale', ''))}".strip("_")
        write_json(folder / "metrics" / f"{tag}.json", report)
    params = param_summary(run.restorer.net)
    write_text(folder / "MODEL_CARD.md", _model_card(name, OmegaConf.to_container(run.cfg), reports, params, training))
    return params


@contextlib.contextmanager
def swapped_in(folder: Path) -> Iterator[Path]:
    """A staging folder beside ``folder`` for the block to fill; then it takes ``folder``'s place
    (an earlier entry moves out first and is deleted only once the new one is in). A failure
    leaves the earlier entry as it was and no staging folder."""
    token = secrets.token_hex(4)
    staging, old = (
        folder.with_name(f".{folder.name}.staging-{token}"),
        folder.with_name(f".{folder.name}.replaced-{token}"),
    )
    try:
        staging.mkdir(parents=True)
        yield staging
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not folder.exists():
            old.rename(folder)
        cause = os_error_in(e)
        if cause is not None:  # named by the entry, not by the staging folder that is gone
            raise OutputError(
                f"{folder}: cannot write the zoo entry ({cause.strerror or cause}); the earlier one is kept"
            ) from e
        raise
    shutil.rmtree(old, ignore_errors=True)


def add(
    name: str,
    ckpt: Path,
    metrics: list[Path],
    zoo_dir: Path | None = None,
    training: dict[str, Any] | None = None,
    force: bool = False,
    trusted: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Export ``ckpt``'s net to ``weights/<name>/`` with its config, reports and model card
    (``training``: how it was trained — steps, GPUs, wall clock — recorded in the card and index).
    An existing ``name`` is replaced only with ``force``, as a whole (no report of the old weights
    stays beside the new ones); ``trusted``: modules of the user's own whose classes the
    checkpoint's config may build (:mod:`xnet.utils.trust`)."""
    from xnet.deploy.inference import load_run
    from xnet.protocol.atomic import write_json

    zoo_dir = zoo_dir or zoo_root()
    check_name(name, zoo_dir, force)
    reports = read_reports(metrics)
    run = load_run(ckpt, trusted)
    config = OmegaConf.to_container(run.cfg)
    with swapped_in(zoo_dir / name) as staging:
        params = write_entry(staging, name, run, reports, training)
        digest = sha256(staging / "weights.safetensors")
    index = zoo_index(zoo_dir)
    index[name] = {
        "file": f"{name}/weights.safetensors",
        "sha256": digest,
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
    rows = [
        [
            name,
            e["model"],
            e["task"].get("name", "?"),
            _level(e["task"]),
            f"{e['params_paper']:,}",
            *(f"{e['results'][s]:.2f}" if s in e.get("results", {}) else "–" for s in sets),
        ]
        for name, e in sorted(index.items())
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    numeric = {4, *range(5, len(head))}  # right-aligned columns

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xnet.zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped models and their headline PSNRs")
    p_add = sub.add_parser("add", help="export a checkpoint into the zoo")
    p_add.add_argument("name")
    p_add.add_argument("--ckpt", type=Path, required=True)
    p_add.add_argument("--metrics", type=Path, nargs="*", default=[])
    p_add.add_argument("--force", action="store_true", help="replace an existing entry of that name")
    p_add.add_argument(
        "--trust", nargs="*", default=[], metavar="MODULE", help="modules of yours the checkpoint's config may build"
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        index = zoo_index()
        print(format_index(index) if index else f"no models in the zoo at {zoo_root()}")
        return 0
    try:
        print(
            json.dumps(add(args.name, args.ckpt, args.metrics, force=args.force, trusted=tuple(args.trust)), indent=2)
        )
    except Exception as e:
        cause = find_user_error(e)
        if cause is None:
            raise
        print(f"error: {describe(cause)}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
