"""DerainNet (Fu et al., TIP 2017), the de-raining baseline of Table 2.

The image is split by a guided filter into a smooth base layer and a detail layer; a 3-layer CNN
(16×16 conv → 1×1 conv → 8×8 conv, 512 channels) maps the rainy detail layer to a clean one. With
the defaults it has 753,664 conv weights (≈753K, the paper's figure).

For xnet's residual-learning tasks the module returns the *rain layer*, ``x - (base + f(detail))``,
so ``Restorer(residual=True)`` yields the derained image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)² window, windows clipped at the border."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_filter_self(x: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter with each channel as its own guide: an edge-preserving smoothing."""
    mean = box_filter(x, radius)
    var = box_filter(x * x, radius) - mean * mean
    a = var / (var + eps)
    b = mean - a * mean
    return box_filter(a, radius) * x + box_filter(b, radius)


class DerainNet(nn.Module):
    def __init__(self, channels: int = 3, width: int = 512, radius: int = 15, eps: float = 1e-2) -> None:
        super().__init__()
        self.radius, self.eps = radius, eps
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 16, padding="same"),
            nn.Tanh(),
            nn.Conv2d(width, width, 1),
            nn.Tanh(),
            nn.Conv2d(width, channels, 8, padding="same"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = guided_filter_self(x, self.radius, self.eps)
        derained = base + self.body(x - base)
        return x - derained
