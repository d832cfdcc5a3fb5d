"""SRCNN (Dong et al. 2016, 9-5-5) and xSRCNN (the paper's Table 3 models).

Both map a bicubic-upsampled Y channel to the high-resolution Y channel (same size in and out).
``padding_mode``: ``zeros`` (as trained here) or ``replicate``, how SRCNN's MATLAB release pads
(``imfilter(..., 'replicate')``): its published weights score as published only with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from xnet.archs.common import conv, make_xunit
from xnet.archs.xunit import XUnitConfig


class SRCNN(nn.Sequential):
    """Conv k1 → ReLU → Conv k2 → ReLU → Conv k3. Convs keep biases, as in SRCNN (not counted)."""

    def __init__(
        self,
        channels: int = 1,
        widths: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 5, 5),
        padding_mode: str = "zeros",
    ) -> None:
        w1, w2 = widths
        k1, k2, k3 = kernel_sizes
        pad = padding_mode
        super().__init__(
            conv(channels, w1, k1, bias=True, padding_mode=pad),
            nn.ReLU(inplace=True),
            conv(w1, w2, k2, bias=True, padding_mode=pad),
            nn.ReLU(inplace=True),
            conv(w2, channels, k3, bias=True, padding_mode=pad),
        )


class XSRCNN(nn.Sequential):
    """SRCNN with each ReLU replaced by an xUnit.

    ``xSRCNNf`` (fewer parameters): widths (64, 32), kernels (9, 3, 5) → 32,576.
    ``xSRCNNc`` (comparable): widths (42, 32), kernels (9, 5, 5) → 44,092.
    """

    def __init__(
        self,
        channels: int = 1,
        widths: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 3, 5),
        xunit: XUnitConfig | Mapping[str, Any] | None = None,
        padding_mode: str = "zeros",
    ) -> None:
        w1, w2 = widths
        k1, k2, k3 = kernel_sizes
        unit = XUnitConfig.of(xunit)
        pad = padding_mode  # the main convs only: the xUnit's depthwise conv keeps zero padding
        super().__init__(
            conv(channels, w1, k1, bias=True, padding_mode=pad),
            make_xunit(w1, unit),
            conv(w1, w2, k2, bias=True, padding_mode=pad),
            make_xunit(w2, unit),
            conv(w2, channels, k3, bias=True, padding_mode=pad),
        )
