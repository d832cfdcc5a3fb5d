"""SRCNN (Dong et al. 2016, 9-5-5) and xSRCNN (the paper's Table 3 models).

Both map a bicubic-upsampled Y channel to the high-resolution Y channel (same size in and out).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from xnet.archs.common import conv, make_xunit


class SRCNN(nn.Sequential):
    """Conv k1 → ReLU → Conv k2 → ReLU → Conv k3. Convs keep biases, as in SRCNN (not counted)."""

    def __init__(
        self,
        channels: int = 1,
        widths: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 5, 5),
    ) -> None:
        w1, w2 = widths
        k1, k2, k3 = kernel_sizes
        super().__init__(
            conv(channels, w1, k1, bias=True),
            nn.ReLU(inplace=True),
            conv(w1, w2, k2, bias=True),
            nn.ReLU(inplace=True),
            conv(w2, channels, k3, bias=True),
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
        xunit_kernel: int = 9,
        xunit: Mapping[str, Any] | None = None,
    ) -> None:
        w1, w2 = widths
        k1, k2, k3 = kernel_sizes
        opts = {"kernel_size": xunit_kernel, **dict(xunit or {})}
        super().__init__(
            conv(channels, w1, k1, bias=True),
            make_xunit(w1, opts),
            conv(w1, w2, k2, bias=True),
            make_xunit(w2, opts),
            conv(w2, channels, k3, bias=True),
        )
