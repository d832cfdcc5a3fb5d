"""The benchmarked pairs (a baseline and its xUnit model), built from the model configs as
``xnet.train`` builds them, the synthetic images they run on, and their analytic conv cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xnet.archs.common import Restorer
from xnet.archs.xunit import XUnit
from xnet.utils.build import build_net, build_task
from xnet.utils.config import compose_config


@dataclass(frozen=True)
class Family:
    """A baseline and its xUnit model on one task, timed on the same input.

    Attributes:
        names: the report's names of the two models (baseline first).
        models: their ``model=`` configs.
        task: the task overrides both are built for.
        input: the inference input shape (N, C, H, W).
    """

    names: tuple[str, str]
    models: tuple[str, str]
    task: tuple[str, ...]
    input: tuple[int, int, int, int]

    def build(self, name: str) -> Restorer:
        """Model ``name`` with fresh weights (seed 0), as ``xnet.train`` builds it."""
        cfg = compose_config("train", [*self.task, f"model={self.models[self.names.index(name)]}"])
        task = build_task(cfg)
        torch.manual_seed(0)
        return Restorer(build_net(cfg, task), residual=task.residual)


FAMILIES: dict[str, Family] = {
    # residual denoisers (x − net(x)) on a grey 321×481 noisy image
    "dncnn": Family(("DnCNN-S", "xDnCNN"), ("dncnn", "xdncnn"), ("task=denoise",), (1, 1, 321, 481)),
    # the bicubic-upsampled Y channel
    "srcnn": Family(("SRCNN", "xSRCNNf"), ("srcnn", "xsrcnn_f"), ("task=sr",), (1, 1, 321, 480)),
    # LR RGB, ×4 (output 320×480)
    "srresnet": Family(
        ("SRResNet", "xSRResNet"), ("srresnet", "xsrresnet"), ("task=sr", "task.scale=4"), (1, 3, 80, 120)
    ),
}


def synthetic_image(shape: tuple[int, ...], seed: int = 0, noise: float = 25 / 255) -> torch.Tensor:
    """Smooth structure + edges + Gaussian noise in about [0, 1]: a stand-in for a test image."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    yy = torch.linspace(0, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(0, 1, w).view(1, 1, 1, w)
    phase = torch.rand(n, c, 1, 1, generator=g) * 6.28
    img = 0.5 + 0.25 * torch.sin(9 * xx + phase) * torch.cos(7 * yy) + 0.2 * ((xx - 0.5) * (yy - 0.4) > 0).float()
    img = img.expand(n, c, h, w).clone()
    return img + noise * torch.randn(n, c, h, w, generator=g)


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BN running statistics := the batch statistics of ``x`` (one train-mode pass, momentum 1),
    so the eval-mode model has realistic activations and BN folding is not a no-op."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    model.train()(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


@torch.no_grad()
def upscale(model: nn.Module, channels: int) -> int:
    """How many times larger than its input the model's output is (SR without upsampled input)."""
    x = torch.zeros(1, channels, 8, 8, device=next(model.parameters()).device)
    return model.eval()(x).shape[-1] // 8


def conv_macs_per_pixel(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Conv MACs per output pixel (``out_elems · C_in/groups · kh · kw`` of every conv met in a
    forward pass), total and the part inside xUnits (depthwise)."""
    counts = {"total": 0, "xunit": 0}
    inside: set[int] = {id(c) for u in model.modules() if isinstance(u, XUnit) for c in u.modules()}

    def hook(mod: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        kh, kw = mod.kernel_size
        macs = out.numel() * (mod.in_channels // mod.groups) * kh * kw
        counts["total"] += macs
        if id(mod) in inside:
            counts["xunit"] += macs

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            y = model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    pixels = y.shape[0] * y.shape[-2] * y.shape[-1]
    return {k: v / pixels for k, v in counts.items()}
