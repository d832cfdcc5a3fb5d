"""Restore your own images: ``python -m xnet.restore task=... model=... weights=... input=PATH``.

``input`` is an image or a folder; restored PNGs go to ``output`` (default: the run dir).
SR nets on Y restore the luma and keep the bicubic-upsampled chroma, as in SRCNN's colour results.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from xnet.data.io import list_images, load_image, save_image, to_tensor
from xnet.evaluate import inference_module, load_restorer, pick_device
from xnet.tasks import Task
from xnet.utils.build import build_task, setup_runtime

log = logging.getLogger(__name__)


def net_input(task: Task, x: torch.Tensor) -> torch.Tensor:
    """A real degraded image → the net's input (SRCNN family: bicubic up-sampling first)."""
    scale = getattr(task.degradation, "scale", 1)
    if scale > 1 and getattr(task.degradation, "upsample", False):
        from xnet.ops.imresize import imresize

        x = imresize(x, scale=scale).clamp(0, 1).mul(255).round().div(255)
    return x


@torch.inference_mode()
def restore_tensor(model: nn.Module, task: Task, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``C×H×W`` degraded image in [0, 1] → restored ``C×H'×W'`` (RGB stays RGB for Y nets)."""
    x = net_input(task, x)
    run = lambda t: model(t[None].to(device).contiguous(memory_format=torch.channels_last)).float().cpu()[0]  # noqa: E731
    if task.color == "y" and x.shape[0] == 3:
        from xnet.ops.color import rgb_to_ycbcr, ycbcr_to_rgb

        ycc = rgb_to_ycbcr(x)
        return ycbcr_to_rgb(torch.cat([run(ycc[:1]), ycc[1:]], dim=0)).clamp(0, 1)
    return run(x).clamp(0, 1)


def restore(cfg: DictConfig) -> list[Path]:
    setup_runtime(cfg)
    task = build_task(cfg)
    restorer, _ = load_restorer(cfg, task)
    device = pick_device(cfg.device)
    model = inference_module(restorer, cfg.fuse).to(device)
    src = Path(cfg.input).expanduser()
    files = list_images(src) if src.is_dir() else [src]
    if not files:
        raise FileNotFoundError(f"input={src}: no images found")
    out_dir, written = Path(cfg.output), []
    for i, f in enumerate(files):
        image: np.ndarray = load_image(f)
        x = task.clean_tensor(image) if cfg.degrade else to_tensor(task.convert(image))
        if cfg.degrade:
            x = task.degradation.eval(x, cfg.seed + i)
            save_image(x, out_dir / f"{f.stem}_input.png")
        written.append(save_image(restore_tensor(model, task, x, device), out_dir / f"{f.stem}.png"))
        log.info("%s → %s", f, written[-1])
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="restore")
def main(cfg: DictConfig) -> None:
    restore(cfg)


if __name__ == "__main__":
    main()
