"""Score weights on a test set with the published protocol.

``python -m xnet.evaluate task=denoise model=dncnn weights=PATH data/test=bsd68 task.sigma=25``

Denoising: unclipped float noise with seed (seed + image index), output clipped and rounded to
uint8, PSNR per image with no border crop, the set's figure is the mean of per-image PSNRs.
SR: Y (BT.601 studio range), ``scale`` px shaved. Prints a per-image table and writes
``metrics.json`` in the run dir. Same weights, same config → bit-identical numbers. Images above
``tiling.max_pixels`` run in tiles with the same output (:mod:`xnet.tiling`); benchmark sets run whole.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from xnet.archs.common import Restorer
from xnet.archs.params import param_summary
from xnet.data.datasets import EvalDataset
from xnet.data.io import save_image
from xnet.tasks import Task
from xnet.tiling import Tiler
from xnet.utils.atomic import write_json
from xnet.utils.build import build_net, build_task, instantiate_config, setup_runtime, to_container
from xnet.utils.errors import ConfigError, WeightsError, exit_on_user_error
from xnet.utils.precision import exact_float32
from xnet.utils.progress import progress
from xnet.utils.validate import validate

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def inference_module(restorer: Restorer, fuse: bool) -> nn.Module:
    """The fast inference form (BN folded, xUnit gates fused) when available, else eval mode."""
    restorer = restorer.eval()
    if not fuse:
        return restorer
    try:
        from xnet.deploy.fuse import fuse as fuse_module
    except ImportError:  # the deploy path is optional; eager eval gives identical numbers
        return restorer
    return fuse_module(restorer)


def check_finite_output(out: torch.Tensor, what: str) -> None:
    """NaN/inf in an output would be written as black pixels and scored as a number: refuse."""
    if not torch.isfinite(out).all():
        raise WeightsError(f"{what}: the restored output holds NaN/inf values — the weights or the input are broken")


@torch.inference_mode()
def evaluate_module(
    restorer: nn.Module,
    task: Task,
    source: Any,
    seed: int = 0,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    image_dir: Path | None = None,
    tiler: Tiler | None = None,
) -> dict[str, Any]:
    """Per-image PSNR/SSIM of ``restorer`` on ``source``; the means are over images. Images above
    ``tiler.max_pixels`` run in tiles (:mod:`xnet.tiling`; default: the restorer's own radius)."""
    restorer = restorer.to(device).eval()
    tiler = tiler or Tiler.for_model(restorer)
    dataset = EvalDataset(source, task, seed)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:  # a mean over no images is not a figure
        raise ConfigError(f"{getattr(source, 'name', source)}: no images to score (limit={limit})")
    rows = []
    log.info("scoring %s: %d images", getattr(source, "name", "the test set"), n)
    for i in progress(range(n), desc=f"{getattr(source, 'name', 'test')}", unit="img"):
        item = dataset[i]
        with exact_float32(torch.device(device).type):
            out = tiler(restorer, item["input"][None], device)[0]
        check_finite_output(out, f"image {item['name']}")
        scores = task.scores(out, item["target"], item["grey_source"])
        rows.append({"image": item["name"], **{k: float(v) for k, v in scores.items()}})
        if image_dir is not None:
            save_image(out, image_dir / f"{item['name']}.png")
    metrics = [k for k in rows[0] if k != "image"]  # psnr, ssim (+ psnr_y, ssim_y where the task asks)
    return {
        "dataset": getattr(source, "name", type(source).__name__),
        "images": n,
        **{k: sum(r[k] for r in rows) / n for k in metrics},
        "per_image": rows,
    }


@dataclass
class LoadedRestorer:
    """Weights loaded into their architecture. ``cfg`` is the run config with the architecture the
    weights carry in place of ``model=`` (what ``metrics.json`` records)."""

    cfg: DictConfig
    task: Task
    restorer: Restorer
    weights: str
    extra: dict[str, Any]


def with_stored_model(cfg: DictConfig, stored: dict[str, Any] | None) -> DictConfig:
    """``cfg`` with its ``model`` node *replaced* by the architecture stored with the weights: a
    merge would keep keys of ``model=`` that the stored one lacks (``depth`` in an xDnCNN)."""
    if not stored:
        return cfg
    if stored.get("name") != cfg.model.name:
        log.info("using the architecture stored with the weights, '%s' (model=%s ignored)", stored.get("name"), cfg.model.name)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model = stored
    return cfg


def open_restorer(cfg: DictConfig, task: Task | None = None) -> LoadedRestorer:
    """Build the net and load ``cfg.weights`` (a file or a zoo name) into it.

    xnet checkpoints and zoo entries carry their config: that architecture is used (it is what
    the weights are), so ``model=`` only matters for plain state dicts. The task is built from the
    resulting config unless given (an SR model's input colour comes from its config).
    """
    from xnet.weights import load_weights, read_state_dict
    from xnet.zoo import resolve_weights, zoo_model_config

    if cfg.model.get("classical"):  # BM3D, the input (xnet.archs.classical): no weights, the output is the image
        task = task or build_task(cfg)
        return LoadedRestorer(cfg, task, Restorer(build_net(cfg, task), residual=False), None, {})
    path = resolve_weights(str(cfg.weights))
    loaded = read_state_dict(path)  # read once: the checkpoint's stored config and its weights
    if path.suffix == ".ckpt":
        stored = ((loaded[1].get("xnet") or {}).get("config") or {}).get("model")
    else:
        stored = zoo_model_config(path)
    cfg = with_stored_model(cfg, stored)
    task = task or build_task(cfg)
    net = build_net(cfg, task)
    extra = load_weights(net, path, loaded)
    return LoadedRestorer(cfg, task, Restorer(net, residual=task.residual), str(path), extra.get("xnet", {}))


def load_restorer(cfg: DictConfig, task: Task | None = None) -> tuple[Restorer, dict[str, Any]]:
    """:func:`open_restorer` as ``(restorer, {"weights": path, ...})``."""
    loaded = open_restorer(cfg, task)
    return loaded.restorer, {"weights": loaded.weights, **loaded.extra}


def format_table(report: dict[str, Any]) -> str:
    keys = [k for k in report["per_image"][0] if k != "image"]

    def cells(r: dict[str, Any]) -> str:
        return "".join(f"{r[k]:>9.{4 if k.startswith('ssim') else 3}f}" for k in keys)

    lines = [f"{'image':<24}" + "".join(f"{k.upper().replace('_Y', '-Y'):>9}" for k in keys)]
    lines += [f"{r['image']:<24}{cells(r)}" for r in report["per_image"]]
    lines.append(f"{'mean (' + str(report['images']) + ' images)':<24}{cells(report)}")
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    validate(cfg, "evaluate")
    setup_runtime(cfg)
    loaded = open_restorer(cfg)
    cfg, task, restorer = loaded.cfg, loaded.task, loaded.restorer
    params = param_summary(restorer.net)
    device = pick_device(cfg.device)
    source = instantiate_config(cfg.data.test, "data.test")
    out_dir = Path(cfg.paths.output_dir)
    report = evaluate_module(
        inference_module(restorer, cfg.fuse), task, source, seed=cfg.seed, device=device, limit=cfg.limit,
        image_dir=out_dir / "images" if cfg.save_images else None, tiler=Tiler.from_config(restorer, cfg.get("tiling")),
    )
    print(format_table(report))
    result = {"model": cfg.model.name, **task.describe(), "seed": cfg.seed, **params, **report, "weights": loaded.weights, "config": to_container(cfg)}
    path = write_json(out_dir / "metrics.json", result)
    log.info("%s %s: PSNR %.3f dB, SSIM %.4f → %s", task.name, report["dataset"], report["psnr"], report["ssim"], path)
    if cfg.get("logger"):  # logger=wandb: an `eval` run with the per-image table
        from xnet.lit.tracking import log_evaluation

        log_evaluation(cfg, result)
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
