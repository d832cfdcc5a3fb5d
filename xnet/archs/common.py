"""Building blocks shared by the families, and the residual-learning wrapper."""

from __future__ import annotations

import torch
from torch import nn

from xnet.archs.xunit import XUnit, XUnitConfig


def conv(in_ch: int, out_ch: int, kernel_size: int, bias: bool = False, padding_mode: str = "zeros") -> nn.Conv2d:
    """'Same' convolution; bias off by default since a BN or the paper's count ignores it.
    ``padding_mode="replicate"`` pads as MATLAB's ``imfilter(..., 'replicate')`` (SRCNN's release)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        # kernel_size // 2 of padding keeps the image size only for odd sizes; an even one fails in the loss
        raise ValueError(f"kernel_size={kernel_size}: must be odd and positive (1, 3, 5, ...)")
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias, padding_mode=padding_mode)


def make_xunit(channels: int, xunit: XUnitConfig) -> XUnit:
    return XUnit(channels, xunit)


def check_depth(depth: int) -> None:
    if depth < 2:
        raise ValueError(f"depth counts conv layers and must be >= 2, got {depth}")


def xunit_layers(
    channels: int,
    depth: int,
    width: int,
    kernel_size: int,
    xunit: XUnitConfig,
    block_norm: bool = True,
) -> list[nn.Module]:
    """The authors' xNet/xDnCNN layout: Conv+xUnit, (depth-2) × [BN, Conv, xUnit], Conv.

    Every conv has a bias: no BN follows one (the xUnit multiplies the raw conv output by its gate
    and the last conv is the output), so the biases are part of the function. ``block_norm=False``
    drops the BN before each inner conv.
    """
    check_depth(depth)
    layers: list[nn.Module] = [conv(channels, width, kernel_size, bias=True), make_xunit(width, xunit)]
    for _ in range(depth - 2):
        if block_norm:
            layers.append(nn.BatchNorm2d(width))
        layers += [conv(width, width, kernel_size, bias=True), make_xunit(width, xunit)]
    layers.append(conv(width, channels, kernel_size, bias=True))
    return layers


class Restorer(nn.Module):
    """``net`` as an image-to-image restorer.

    With ``residual`` the net predicts the degradation (noise, rain) and the restored image is
    ``x - net(x)`` (DnCNN's residual learning); otherwise the net's output is the image itself.
    """

    def __init__(self, net: nn.Module, residual: bool) -> None:
        super().__init__()
        self.net = net
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return x - y if self.residual else y
