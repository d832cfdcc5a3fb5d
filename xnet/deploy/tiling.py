"""Tiled inference: big images restored in overlapping tiles, with the output of the whole image.

Every net here is convolutional with "same" zero padding, so an output pixel depends only on the
input within the net's receptive radius ``r`` (:func:`receptive_radius`). A tile is run with
``r`` pixels of real context on each side and only its centre is kept: the output equals the
whole-image output up to float rounding, with no seams, while memory is bounded by the tile size
(a 4000×3000 photo through xDnCNN needs about 12 GB in one piece). The output may be ``scale``×
the input (SR nets that up-sample inside); the scale is read from the first tile's output.

``evaluate`` and ``restore`` both run through :class:`Tiler`; images up to ``max_pixels`` input
pixels run whole (every benchmark set does, so the published protocol is untouched).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Tiler", "receptive_radius", "spans"]

#: Defaults (as in conf/eval.yaml, conf/restore.yaml): xDnCNN needs about 1 kB per pixel, so whole
#: images up to 2 MPix (~2 GB) and tiles of 1024² (+ the context) beyond.
TILE, MAX_PIXELS = 1024, 1 << 21


def _half_width(kernel: int, dilation: int = 1) -> int:
    return math.ceil((kernel - 1) * dilation / 2)


def receptive_radius(model: nn.Module) -> int:
    """How far (in input pixels) an output pixel can see, at most: the half-widths of every
    convolution summed (a safe bound for skip connections, and for convs after up-sampling, which
    see less of the input than counted). Fused inference units (:class:`xnet.deploy.fuse.FusedXUnit`)
    count by their ``kernel_size``."""
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            total += max(_half_width(k, d) for k, d in zip(m.kernel_size, m.dilation))
        elif not any(True for _ in m.children()) and isinstance(getattr(m, "kernel_size", None), int):
            total += _half_width(m.kernel_size)
    return total


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``length`` in near-equal pieces of at most ``tile``."""
    n = max(1, math.ceil(length / tile))
    size = math.ceil(length / n)
    return [(i * size, min(length, (i + 1) * size)) for i in range(n) if i * size < length]


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """The model in its own memory layout (a fused model converts its input: ``fuse(channels_last=)``)."""
    return model(x.to(device)).float().cpu()


@dataclass(frozen=True)
class Tiler:
    """Run ``model`` on a ``1×C×H×W`` CPU image, in tiles when it has more than ``max_pixels``
    pixels (``None``: never tiled).

    Args:
        radius: context pixels around each tile; the model's :func:`receptive_radius` makes the
            output exact, less trades exactness near tile edges for speed.
        tile: the kept centre of a tile, in input pixels (the tile run is ``tile + 2·radius``).
        max_pixels: images up to this many input pixels run in one piece.
    """

    radius: int
    tile: int = TILE
    max_pixels: int | None = MAX_PIXELS

    @classmethod
    def for_model(
        cls, model: nn.Module, tile: int = TILE, overlap: int | None = None, max_pixels: int | None = MAX_PIXELS
    ) -> Tiler:
        return cls(receptive_radius(model) if overlap is None else int(overlap), int(tile), max_pixels)

    @classmethod
    def from_config(cls, model: nn.Module, cfg: Any | None) -> Tiler:
        """From a ``tiling:`` config node (``tile``, ``overlap``, ``max_pixels``); defaults if absent."""
        if cfg is None:
            return cls.for_model(model)
        return cls.for_model(model, cfg.get("tile", TILE), cfg.get("overlap"), cfg.get("max_pixels", MAX_PIXELS))

    def needs_tiles(self, x: torch.Tensor) -> bool:
        return self.max_pixels is not None and x.shape[-2] * x.shape[-1] > self.max_pixels

    def __call__(self, model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        if not self.needs_tiles(x):
            return _forward(model, x, device)
        return self.run_tiled(model, x, device)

    def boxes(self, height: int, width: int) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
        """``(kept, run)`` boxes ``(top, bottom, left, right)``: the kept centre and the tile run
        around it (the centre plus ``radius``, clipped to the image, whose own border the net pads)."""
        r = self.radius
        for top, bottom in spans(height, self.tile):
            for left, right in spans(width, self.tile):
                yield (
                    (top, bottom, left, right),
                    (max(0, top - r), min(height, bottom + r), max(0, left - r), min(width, right + r)),
                )

    def run_tiled(self, model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        height, width = x.shape[-2:]
        out: torch.Tensor | None = None
        for (top, bottom, left, right), (t0, b0, l0, r0) in self.boxes(height, width):
            y = _forward(model, x[..., t0:b0, l0:r0], device)
            s = y.shape[-1] // (r0 - l0)
            if s < 1 or y.shape[-1] != s * (r0 - l0) or y.shape[-2] != s * (b0 - t0):
                raise RuntimeError(
                    "tiled inference needs an output an integer multiple of the input: "
                    f"{tuple(y.shape)} from {(b0 - t0, r0 - l0)}"
                )
            if out is None:
                out = torch.empty(x.shape[0], y.shape[1], height * s, width * s)
            out[..., top * s : bottom * s, left * s : right * s] = y[
                ..., (top - t0) * s : (bottom - t0) * s, (left - l0) * s : (right - l0) * s
            ]
        assert out is not None
        return out
