"""DnCNN-S (Zhang et al. 2017) and xDnCNN (the paper's Table 1/2 model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from xnet.archs.common import conv, xunit_layers
from xnet.archs.xunit import XUnitConfig


class DnCNN(nn.Sequential):
    """Conv+ReLU, (depth-2) × [Conv+BN+ReLU], Conv; predicts the residual (noise or rain).

    As in the official DnCNN, the first and last convs have a bias (no BN follows them); a conv
    that a BN follows needs none. Module indices match the usual ``dncnn.<i>`` layout, so public
    weights map one to one (a save without the first/last bias loads with zero biases).

    ``bn_merged=True``: every BN already folded into its conv (a biased conv + ReLU per layer), the
    layout of KAIR's released DnCNN weights (``model.<i>``: the same indices, conv/ReLU alternating).
    """

    def __init__(
        self, channels: int = 1, depth: int = 17, width: int = 64, kernel_size: int = 3, bn_merged: bool = False
    ) -> None:
        layers: list[nn.Module] = [conv(channels, width, kernel_size, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            norm = [] if bn_merged else [nn.BatchNorm2d(width)]
            layers += [conv(width, width, kernel_size, bias=bn_merged), *norm, nn.ReLU(inplace=True)]
        layers.append(conv(width, channels, kernel_size, bias=True))
        super().__init__(*layers)


class XDnCNN(nn.Sequential):
    """Conv+xUnit, num_blocks × [BN, Conv, xUnit], Conv (every conv with a bias); predicts the
    residual. The authors' layout: their released weights load into it one to one.

    With the defaults (7 blocks, 64 channels, r = 9) it has 303,616 parameters by the paper's count
    on grey images and 305,920 on RGB.
    """

    def __init__(
        self,
        channels: int = 1,
        num_blocks: int = 7,
        width: int = 64,
        kernel_size: int = 3,
        xunit: XUnitConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(*xunit_layers(channels, num_blocks + 2, width, kernel_size, XUnitConfig.of(xunit)))
