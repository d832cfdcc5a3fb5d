"""BT.601 studio-range colour conversions with MATLAB ``rgb2ycbcr`` semantics.

SR papers evaluate PSNR/SSIM on the luma of MATLAB's ``rgb2ycbcr``::

    Y  = ( 16 +  65.481 R + 128.553 G +  24.966 B) / 255
    Cb = (128 -  37.797 R -  74.203 G + 112.000 B) / 255
    Cr = (128 + 112.000 R -  93.786 G -  18.214 B) / 255

for R, G, B in [0, 1]; Y lies in [16/255, 235/255] (Cb/Cr in [16/255, 240/255]).
All functions here take/return floats on the [0, 1] scale, channels at dim -3.

Note: kornia's ``rgb_to_y`` / ``rgb_to_ycbcr`` are *full range* (JPEG-style
``Y = 0.299 R + 0.587 G + 0.114 B``, no 16/235 offset and scaling), which gives
different PSNR values and is therefore wrong for this protocol.  Do not use it.
"""

from __future__ import annotations

import torch

from xnet.protocol.float32 import float32_step

__all__ = ["rgb_to_y", "rgb_to_ycbcr", "to_y", "ycbcr_to_rgb"]

# Rows: Y, Cb, Cr; columns: R, G, B; in units of 1/255 per unit of [0,1] input.
_M = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_OFFSET = (16.0, 128.0, 128.0)


def _check_channels(x: torch.Tensor, n: int, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != n:
        raise ValueError(f"{name} expects {n} channels at dim -3, got shape {tuple(x.shape)}")


def _matrix(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(_M, dtype=torch.float64, device=x.device) / 255.0
    off = torch.tensor(_OFFSET, dtype=torch.float64, device=x.device) / 255.0
    return m, off


@float32_step
def _apply(m: torch.Tensor, off: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    dt = x.dtype
    y = torch.einsum("oc,...chw->...ohw", m.to(dt), x)
    return y + off.to(dt).view(-1, 1, 1)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Studio-range BT.601 luma of RGB in [0, 1]; returns ``(..., 1, H, W)`` in [0, 1]."""
    _check_channels(x, 3, "rgb_to_y")
    m, off = _matrix(x)
    return _apply(m[:1], off[:1], x)


def to_y(x: torch.Tensor) -> torch.Tensor:
    """Y channel for evaluation: a 1-channel (grey) image is returned unchanged
    (a grey image is its own Y, it must not go through the RGB conversion);
    a 3-channel image goes through :func:`rgb_to_y`."""
    if x.dim() >= 3 and x.shape[-3] == 1:
        return x
    return rgb_to_y(x)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2ycbcr`` for double RGB in [0, 1]; output YCbCr on the [0, 1] scale."""
    _check_channels(x, 3, "rgb_to_ycbcr")
    m, off = _matrix(x)
    return _apply(m, off, x)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr` (MATLAB ``ycbcr2rgb``); unclipped."""
    _check_channels(x, 3, "ycbcr_to_rgb")
    m, off = _matrix(x)
    inv = torch.linalg.inv(m)
    return _apply(inv, -(inv @ off), x)
