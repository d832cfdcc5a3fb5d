"""Restorers with nothing to learn, behind the same CLI as the nets: BM3D (the paper's Table 1
baseline) and the degraded input itself (the "input" row of every table).

Their model configs say ``classical: true``: ``evaluate`` builds them without ``weights=`` and uses
their output as the image (never residual).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xnet.protocol.errors import require_extra


class Identity(nn.Module):
    """The input as the restored image: scores the degraded input through the evaluation path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class BM3D(nn.Module):
    """BM3D (Dabov et al. 2007) from the ``bm3d`` package, one image at a time on the CPU.

    Args:
        sigma: the noise level on the 0–255 scale (the task's σ); BM3D is told it, as in the paper.
        profile: the package's parameter profile (``np``: the reference "normal profile").

    Grey images go through ``bm3d.bm3d``, RGB through ``bm3d.bm3d_rgb`` (CBM3D). The input is the
    float noisy image (not clipped), the output the estimate; clipping and rounding are the scorer's.
    """

    def __init__(self, sigma: float, profile: str = "np") -> None:
        super().__init__()
        require_extra("model=bm3d", "classical", "bm3d")  # here: a missing package fails before any image
        if sigma <= 0:
            raise ValueError(f"BM3D needs the noise level: sigma={sigma} (task.sigma)")
        self.sigma, self.profile = float(sigma), profile

    def denoise(self, image: np.ndarray) -> np.ndarray:
        """One ``H×W×C`` float64 image → its estimate."""
        import bm3d

        if image.shape[-1] == 3:
            return bm3d.bm3d_rgb(image, self.sigma / 255, profile=self.profile)
        return bm3d.bm3d(image[..., 0], self.sigma / 255, profile=self.profile)[..., None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().double().cpu().permute(0, 2, 3, 1).numpy()
        out = np.stack([self.denoise(np.ascontiguousarray(img)) for img in images])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype).contiguous()

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, profile={self.profile!r}"
