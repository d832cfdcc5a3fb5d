"""The Fig 3 pair: ConvNet (Conv+BN+ReLU blocks) and xNet (Conv+xUnit blocks).

``depth`` counts convolution layers: a first conv from the image, ``depth - 2`` hidden convs and a
last conv back to the image. Hidden activations are ReLU (ConvNet) or xUnit (xNet).
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from xnet.archs.common import conv, make_xunit
from xnet.archs.dncnn import DnCNN


def _check_depth(depth: int) -> None:
    if depth < 2:
        raise ValueError(f"depth counts conv layers and must be >= 2, got {depth}")


class ConvNet(DnCNN):
    """Conv+ReLU, (depth-2) × [Conv+BN+ReLU], Conv: DnCNN's layout at any depth and width."""

    def __init__(self, depth: int, width: int = 64, kernel_size: int = 3, channels: int = 1) -> None:
        _check_depth(depth)
        super().__init__(channels=channels, depth=depth, width=width, kernel_size=kernel_size)


class XNet(nn.Sequential):
    """(depth-1) × [Conv+xUnit], Conv. The xUnit's own BNs normalise each block."""

    def __init__(
        self,
        depth: int,
        width: int = 64,
        kernel_size: int = 3,
        xunit_kernel: int = 9,
        channels: int = 1,
        xunit: Mapping[str, Any] | None = None,
    ) -> None:
        _check_depth(depth)
        opts = {"kernel_size": xunit_kernel, **dict(xunit or {})}
        layers: list[nn.Module] = []
        in_ch = channels
        for _ in range(depth - 1):
            layers += [conv(in_ch, width, kernel_size), make_xunit(width, opts)]
            in_ch = width
        layers.append(conv(width, channels, kernel_size))
        super().__init__(*layers)
