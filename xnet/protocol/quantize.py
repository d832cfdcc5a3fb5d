"""Rounding to uint8 levels: the one rule every protocol step uses (MATLAB's ``uint8()``/``im2uint8``).

The published protocols round in MATLAB (``im2uint8`` of an output, ``rgb2ycbcr`` on uint8,
``imresize`` on uint8), which rounds half away from zero: ``uint8(2.5) == 3``. ``torch.round`` and
``numpy.round`` round half to even (``2.5 → 2``), so they are not used for images.
"""

from __future__ import annotations

import torch

from xnet.protocol.float32 import float32_step


@float32_step
def uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """``x`` in [0, 1] clipped and rounded to its uint8 level, as float in [0, 255]. For ``v >= 0``
    half away from zero is ``floor(v + 0.5)``, which is also how MATLAB's ``im2uint8`` rounds a
    single-precision image (``v * 255 + 0.5``, truncated)."""
    return torch.floor(x.clamp(0, 1) * 255.0 + 0.5)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """``x`` clipped and snapped to the 1/255 grid, still in [0, 1] (MATLAB: ``im2double(im2uint8(x))``)."""
    return uint8_levels(x) / 255.0
