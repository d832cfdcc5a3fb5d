"""A restoration task: what the clean image is, how its input is made, and how output is scored.

Tasks are instantiated from ``conf/task/*.yaml``; the LightningModule, ``evaluate`` and ``restore``
use one code path for every task.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from xnet.protocol.degradations import Degradation
from xnet.protocol.errors import ConfigError
from xnet.protocol.float32 import float32_step
from xnet.protocol.io import to_tensor, warn_once
from xnet.protocol.quantize import quantize_uint8

COLORS = {"grey": 1, "y": 1, "rgb": 3}


class Task:
    """Args:
    name: ``denoise``, ``derain`` or ``sr``.
    color: the space the net works in: ``grey``, ``y`` (BT.601 studio-range luma) or ``rgb``.
    degradation: makes the input from the clean image (noise, rain, bicubic down-sampling).
    residual: the net predicts the degradation; restored = input − net(input).
    border: pixels shaved from each side before scoring (SR: the scale).
    metric_color: score in ``y`` (SR protocol, also for RGB nets) or ``same``.
    modcrop: crop targets to a multiple of this (SR: the scale).
    also_score: further spaces each image is scored in by ``evaluate``, reported as
        ``psnr_<space>``/``ssim_<space>`` (de-raining: ``[y]``: published Rain12 tables are
        usually on Y, the paper does not say which).
    info: recorded as-is (``sigma``, ``scale`` ...) in metrics.json and the logger.
    """

    def __init__(
        self,
        name: str,
        color: str,
        degradation: Degradation,
        residual: bool,
        border: int = 0,
        metric_color: str = "same",
        modcrop: int = 1,
        also_score: Iterable[str] = (),
        **info: Any,
    ) -> None:
        if color not in COLORS:
            raise ValueError(f"task.color must be one of {sorted(COLORS)}, got {color!r}")
        if metric_color not in ("same", "y"):
            raise ValueError(f"task.metric_color must be 'same' or 'y', got {metric_color!r}")
        also_score = tuple(also_score)
        if not set(also_score) <= {"y"}:
            raise ValueError(f"task.also_score may list 'y' only, got {list(also_score)}")
        self.name, self.color, self.degradation = name, color, degradation
        self.residual, self.border, self.metric_color, self.modcrop = residual, border, metric_color, modcrop
        self.also_score = also_score
        self.info = {k: v for k, v in info.items() if not k.startswith("_")}

    @property
    def channels(self) -> int:
        return COLORS[self.color]

    def clean_uint8(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``H×W×C``, modcropped, in the space degradations work in: grey, RGB, or for ``y``
        tasks the image as stored (RGB, or grey which is its own Y)."""
        h, w = image.shape[:2]
        return self.to_task_color(image[: h - h % self.modcrop, : w - w % self.modcrop])

    def clean_tensor(self, image: np.ndarray) -> torch.Tensor:
        """:meth:`clean_uint8` as float in [0, 1], ``C×H×W``."""
        return to_tensor(self.clean_uint8(image))

    def to_task_color(self, image: np.ndarray) -> np.ndarray:
        """A uint8 ``H×W×C`` image in the task's colour: grey from RGB by ITU-R 601 luma (as PIL
        computes it), RGB from grey by replication; otherwise as given."""
        channels = image.shape[-1]
        if self.color == "grey" and channels == 3:
            from PIL import Image

            warn_once("grey", "colour image(s) converted to grey (ITU-R 601 luma) for the grey model")

            return np.asarray(Image.fromarray(image).convert("L"))[..., None]
        if self.color == "rgb" and channels == 1:
            return np.repeat(image, 3, axis=-1)
        return image

    def to_net_space(self, x: torch.Tensor) -> torch.Tensor:
        """``y`` tasks: the BT.601 studio-range Y on uint8 levels (MATLAB's ``rgb2ycbcr`` on uint8);
        a 1-channel image is its own Y. Other tasks: unchanged."""
        if self.color != "y":
            return x
        from xnet.protocol.color import to_y

        return quantize_uint8(to_y(x))

    @float32_step
    def train_pair(
        self,
        clean: torch.Tensor,
        generator: torch.Generator | None = None,
        given_input: torch.Tensor | None = None,
        given: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, target)`` for a training batch ``B×C×H×W`` in float32, whatever the autocast: the
        degradation drawn from ``generator``; paired data's real ``given_input`` replaces it — for every
        sample, or where the mask ``given`` [B] is true (paired and synthetic sources mixed)."""
        inp = self.degradation.train(clean, generator) if given_input is None or given is not None else given_input
        if given is not None:
            inp = torch.where(given.view(-1, 1, 1, 1), given_input, inp)
        return self.to_net_space(inp), self.to_net_space(clean)

    @float32_step
    def eval_pair(
        self, clean: torch.Tensor, seed: int, given_input: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, target)`` for one image, a pure function of ``(clean, seed)``."""
        inp = self.degradation.eval(clean, seed) if given_input is None else given_input
        return self.to_net_space(inp), self.to_net_space(clean)

    def metric_space(self, x: torch.Tensor, grey_source: bool = False, color: str | None = None) -> torch.Tensor:
        """Map an output/target to the space it is scored in (``color``, default the task's
        ``metric_color``). Y: RGB is rounded to uint8 and converted; an RGB net's output on a grey
        image (own Y) is scored on its channel mean."""
        if (color or self.metric_color) == "y" and x.shape[-3] == 3:
            if grey_source:
                return x.mean(dim=-3, keepdim=True)
            from xnet.protocol.color import rgb_to_y

            return rgb_to_y(quantize_uint8(x))
        return x

    def scores(self, output: torch.Tensor, target: torch.Tensor, grey_source: bool = False) -> dict[str, torch.Tensor]:
        """``psnr``/``ssim`` in the metric space, plus ``psnr_<c>``/``ssim_<c>`` for each ``also_score`` space."""
        from xnet.protocol.metrics import image_metrics

        out = image_metrics(self.metric_space(output, grey_source), self.metric_space(target, grey_source), self.border)
        for color in self.also_score:
            extra = image_metrics(
                self.metric_space(output, grey_source, color),
                self.metric_space(target, grey_source, color),
                self.border,
            )
            out |= {f"{k}_{color}": v for k, v in extra.items()}
        return out

    def check_model(self, model_name: str, model_tasks: Iterable[str] | None) -> None:
        if model_tasks is not None and self.name not in model_tasks:
            raise ConfigError(
                f"model '{model_name}' is not built for task '{self.name}' (it supports {list(model_tasks)}); "
                f"pick another model= or task="
            )

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "color": self.color, "residual": self.residual, **self.info}

    def __repr__(self) -> str:
        return f"Task({self.name}, color={self.color}, {self.degradation!r}, residual={self.residual})"
