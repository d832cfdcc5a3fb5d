"""Score weights on a test set with the published protocol.

``python -m xnet.evaluate task=denoise model=dncnn weights=PATH data/test=bsd68 task.sigma=25``

Denoising: unclipped float noise with seed (seed + image index), output clipped and rounded to
uint8, PSNR per image with no border crop, the set's figure is the mean of per-image PSNRs.
SR: Y (BT.601 studio range), ``scale`` px shaved. Prints a per-image table and writes
``metrics.json`` in the run dir. Same weights, same config → bit-identical numbers.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from xnet.archs.common import Restorer
from xnet.archs.params import param_summary
from xnet.data.datasets import EvalDataset
from xnet.data.io import save_image
from xnet.tasks import Task
from xnet.utils.precision import exact_float32
from xnet.utils.build import build_net, build_task, setup_runtime, to_container

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
        from xnet.archs.deploy import fuse as fuse_module
    except ImportError:  # the deploy path is optional; eager eval gives identical numbers
        return restorer
    return fuse_module(restorer)


@torch.inference_mode()
def evaluate_module(
    restorer: nn.Module,
    task: Task,
    source: Any,
    seed: int = 0,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    image_dir: Path | None = None,
) -> dict[str, Any]:
    """Per-image PSNR/SSIM of ``restorer`` on ``source``; the means are over images."""
    restorer = restorer.to(device).eval()
    dataset = EvalDataset(source, task, seed)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    rows = []
    for i in range(n):
        item = dataset[i]
        inp = item["input"][None].to(device).contiguous(memory_format=torch.channels_last)
        with exact_float32(torch.device(device).type):
            out = restorer(inp).float().cpu()[0]
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


def load_restorer(cfg: DictConfig, task: Task) -> tuple[Restorer, dict[str, Any]]:
    """Build the net and load ``cfg.weights`` (a file or a zoo name) into it.

    xnet checkpoints and zoo entries carry their config: that architecture is used (it is what
    the weights are), so ``model=`` only matters for plain state dicts.
    """
    from omegaconf import OmegaConf

    from xnet.weights import load_weights, read_state_dict
    from xnet.zoo import resolve_weights, zoo_model_config

    if cfg.model.get("classical"):  # BM3D, the input (xnet.archs.classical): no weights, the output is the image
        return Restorer(build_net(cfg, task), residual=False), {"weights": None}
    path = resolve_weights(str(cfg.weights))
    loaded = read_state_dict(path)  # read once: the checkpoint's stored config and its weights
    if path.suffix == ".ckpt":
        stored = ((loaded[1].get("xnet") or {}).get("config") or {}).get("model")
    else:
        stored = zoo_model_config(path)
    if stored:
        if stored.get("name") != cfg.model.name:
            log.info("using the architecture stored with the weights, '%s' (model=%s ignored)", stored["name"], cfg.model.name)
        cfg = OmegaConf.merge(cfg, {"model": stored})
    net = build_net(cfg, task)
    extra = load_weights(net, path, loaded)
    return Restorer(net, residual=task.residual), {"weights": str(path), **extra.get("xnet", {})}


def format_table(report: dict[str, Any]) -> str:
    keys = [k for k in report["per_image"][0] if k != "image"]

    def cells(r: dict[str, Any]) -> str:
        return "".join(f"{r[k]:>9.{4 if k.startswith('ssim') else 3}f}" for k in keys)

    lines = [f"{'image':<24}" + "".join(f"{k.upper().replace('_Y', '-Y'):>9}" for k in keys)]
    lines += [f"{r['image']:<24}{cells(r)}" for r in report["per_image"]]
    lines.append(f"{'mean (' + str(report['images']) + ' images)':<24}{cells(report)}")
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    setup_runtime(cfg)
    task = build_task(cfg)
    restorer, meta = load_restorer(cfg, task)
    params = param_summary(restorer.net)
    device = pick_device(cfg.device)
    source = instantiate(cfg.data.test, _convert_="all")
    out_dir = Path(cfg.paths.output_dir)
    report = evaluate_module(
        inference_module(restorer, cfg.fuse), task, source, seed=cfg.seed, device=device, limit=cfg.limit,
        image_dir=out_dir / "images" if cfg.save_images else None,
    )
    print(format_table(report))
    result = {"model": cfg.model.name, **task.describe(), "seed": cfg.seed, **params, **report, "weights": meta["weights"], "config": to_container(cfg)}
    from xnet.train import write_json

    path = write_json(out_dir / "metrics.json", result)
    log.info("%s %s: PSNR %.3f dB, SSIM %.4f → %s", task.name, report["dataset"], report["psnr"], report["ssim"], path)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
