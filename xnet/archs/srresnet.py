"""SRResNet (Ledig et al. 2017) and xSRResNet (the paper's Table 3 model).

Input: low-resolution RGB; output: RGB at ``scale`` × the size (PixelShuffle ×2 stages, or one ×3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xnet.archs.common import conv, make_xunit
from xnet.archs.xunit import XUnitConfig


class ResidualBlock(nn.Module):
    """Conv-BN-act-Conv-BN with an identity skip; ``act`` is PReLU or an xUnit."""

    def __init__(self, width: int, act: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(width, width, 3), nn.BatchNorm2d(width), act, conv(width, width, 3), nn.BatchNorm2d(width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _upsampler(width: int, scale: int) -> nn.Sequential:
    if scale == 3:
        factors = [3]
    elif scale >= 1 and scale & (scale - 1) == 0:
        factors = [2] * int(math.log2(scale))
    else:
        raise ValueError(f"SRResNet supports scale 1, 2, 3, 4, 8..., got {scale}")
    layers: list[nn.Module] = []
    for f in factors:
        layers += [conv(width, width * f * f, 3, bias=True), nn.PixelShuffle(f), nn.PReLU(width)]
    return nn.Sequential(*layers)


class SRResNet(nn.Module):
    """Head conv 9×9 + PReLU, residual blocks, conv+BN with a long skip, upsampler, conv 9×9."""

    def __init__(
        self,
        channels: int = 3,
        scale: int = 4,
        num_blocks: int = 16,
        width: int = 64,
        xunit: XUnitConfig | None = None,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(conv(channels, width, 9, bias=True), nn.PReLU(width))
        self.blocks = nn.Sequential(*(ResidualBlock(width, self._activation(width, xunit)) for _ in range(num_blocks)))
        self.fuse = nn.Sequential(conv(width, width, 3), nn.BatchNorm2d(width))
        self.upsample = _upsampler(width, scale)
        self.tail = conv(width, channels, 9, bias=True)

    @staticmethod
    def _activation(width: int, xunit: XUnitConfig | None) -> nn.Module:
        return nn.PReLU(width) if xunit is None else make_xunit(width, xunit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.fuse(self.blocks(h))
        return self.tail(self.upsample(h))


class XSRResNet(SRResNet):
    """SRResNet whose block activation is an xUnit. The block's BN already normalises the xUnit's
    input, so its own first BN is off: 10 blocks → 1,155,968 parameters by the paper's count."""

    def __init__(
        self,
        channels: int = 3,
        scale: int = 4,
        num_blocks: int = 10,
        width: int = 64,
        xunit: XUnitConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(channels, scale, num_blocks, width, xunit=XUnitConfig.of(xunit, pre_norm=False))
