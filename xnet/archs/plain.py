"""The Fig 3 pair: ConvNet (Conv+BN+ReLU blocks) and xNet (Conv+xUnit blocks).

``depth`` counts convolution layers: a first conv from the image, ``depth - 2`` hidden convs and a
last conv back to the image. Hidden activations are ReLU (ConvNet) or xUnit (xNet).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from xnet.archs.common import check_depth, xunit_layers
from xnet.archs.dncnn import DnCNN
from xnet.archs.xunit import XUnitConfig


class ConvNet(DnCNN):
    """Conv+ReLU, (depth-2) × [Conv+BN+ReLU], Conv: DnCNN's layout at any depth and width."""

    def __init__(self, depth: int, width: int = 64, kernel_size: int = 3, channels: int = 1) -> None:
        check_depth(depth)
        super().__init__(channels=channels, depth=depth, width=width, kernel_size=kernel_size)


class XNet(nn.Sequential):
    """Conv+xUnit, (depth-2) × [BN, Conv, xUnit], Conv: the authors' layout (xDnCNN's, at any depth),
    every conv with a bias (see :func:`xnet.archs.common.xunit_layers`).

    ``block_norm=False`` is the variant without the BN before each inner conv ((depth-1) ×
    [Conv+xUnit], Conv): the xUnit's own BNs are then the only normalisation.
    """

    def __init__(
        self,
        depth: int,
        width: int = 64,
        kernel_size: int = 3,
        channels: int = 1,
        xunit: XUnitConfig | Mapping[str, Any] | None = None,
        block_norm: bool = True,
    ) -> None:
        super().__init__(*xunit_layers(channels, depth, width, kernel_size, XUnitConfig.of(xunit), block_norm))
