"""Degradations: how an input is made from a clean image.

Each degradation has two faces:

* ``train(clean, generator)``: a batch ``B×C×H×W`` in [0, 1] on any device, redrawn every call
  (noise, rain) — run on the accelerator inside the training step;
* ``eval(clean, seed)``: one image ``C×H×W`` on the CPU, a pure function of ``(clean, seed)`` so
  evaluation is bit-for-bit repeatable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from xnet.protocol.float32 import float32_step
from xnet.protocol.quantize import quantize_uint8


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


class Degradation(ABC):
    """Base class; ``scale`` > 1 means the input is smaller than the target."""

    scale: int = 1

    @abstractmethod
    def train(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    @abstractmethod
    def eval(self, clean: torch.Tensor, seed: int) -> torch.Tensor: ...


class GaussianNoise(Degradation):
    """Additive white Gaussian noise, ``noisy = clean + N(0, σ/255)``, not clipped and not quantised.

    ``sigma`` is a level on the 0–255 scale, or a ``[low, high]`` range for blind training (a level
    is drawn per sample). Evaluation uses ``eval_sigma`` (default: the level, or the range's top).
    """

    def __init__(self, sigma: float | Sequence[float] = 25.0, eval_sigma: float | None = None) -> None:
        if isinstance(sigma, (int, float)):
            self.low = self.high = float(sigma)
        else:
            self.low, self.high = (float(s) for s in sigma)
        if not 0 <= self.low <= self.high:
            raise ValueError(f"noise sigma must be >= 0 and a valid range, got {sigma}")
        self.eval_sigma = float(eval_sigma if eval_sigma is not None else self.high)

    @float32_step
    def train(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b = clean.shape[0]
        sigma = torch.empty(b, 1, 1, 1, device=clean.device, dtype=clean.dtype)
        sigma.uniform_(self.low, self.high, generator=generator) if self.high > self.low else sigma.fill_(self.low)
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        return clean + noise * (sigma / 255.0)

    def eval(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        noise = torch.randn(clean.shape, generator=seeded_generator(seed), dtype=torch.float32)
        return clean + noise * (self.eval_sigma / 255.0)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.low if self.low == self.high else (self.low, self.high)})"


class Identity(Degradation):
    """No synthetic degradation (paired data brings its own inputs)."""

    def train(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return clean

    def eval(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        return clean


class Bicubic(Degradation):
    """MATLAB-compatible bicubic down-sampling by ``scale`` (antialiased), the SR degradation.

    ``upsample=True`` (SRCNN family) returns the bicubic up-sampled image at the target's size,
    clipped and rounded to uint8 levels as MATLAB's ``im2uint8`` does — scored as is, it is the
    published bicubic baseline. ``upsample=False`` (ResNet family) returns the low-resolution image
    on uint8 levels, as stored LR files hold it. Deterministic: ``train`` and ``eval`` agree.
    """

    def __init__(self, scale: int, upsample: bool = True) -> None:
        if int(scale) != scale or scale < 1:
            raise ValueError(f"SR scale must be a positive integer, got {scale}")
        self.scale, self.upsample = int(scale), upsample

    def train(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        from xnet.protocol.imresize import imresize

        low = imresize(clean, scale=1.0 / self.scale)
        out = imresize(low, size=tuple(clean.shape[-2:])) if self.upsample else low
        return quantize_uint8(out)

    def eval(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        return self.train(clean)

    def __repr__(self) -> str:
        return f"Bicubic(×{self.scale}, upsample={self.upsample})"
