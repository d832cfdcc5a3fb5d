"""PSNR / SSIM of one image at a time, on uint8 levels.

The protocols (DnCNN/KAIR for denoising, SRCNN for SR) score each image on its own, after clipping
and rounding to uint8, and report the **mean of per-image PSNRs**. torchmetrics' default PSNR over a
set is the PSNR of the mean MSE, which is ~0.7 dB off on BSD68 σ=25, so aggregation happens here.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from xnet.protocol.quantize import uint8_levels

MAX_PSNR = 100.0  # identical images: a finite cap keeps set means finite


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border > 0 else x


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per image of two ``[B×]C×H×W`` tensors already on the 0–255 uint8 grid."""
    diff = output.double() - target.double()
    mse = diff.pow(2).flatten(-3).mean(-1)
    return (10 * torch.log10(255.0**2 / mse)).clamp(max=MAX_PSNR)


def ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, σ 1.5, data range 255), channels averaged."""
    out, tgt = output.double(), target.double()
    if out.dim() == 3:
        out, tgt = out[None], tgt[None]
    return structural_similarity_index_measure(out, tgt, data_range=255.0, reduction="none")


def image_metrics(output: torch.Tensor, target: torch.Tensor, border: int = 0) -> dict[str, torch.Tensor]:
    """Clip + round both to uint8 levels, shave ``border`` px, then per-image PSNR and SSIM."""
    out, tgt = shave(uint8_levels(output), border), shave(uint8_levels(target), border)
    return {"psnr": psnr(out, tgt), "ssim": ssim(out, tgt).reshape(psnr(out, tgt).shape)}
