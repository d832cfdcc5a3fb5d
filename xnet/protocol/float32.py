"""Protocol steps run in float32 whatever the caller's precision.

A trainer's bf16 autocast reaches every op called inside it: an RGB→Y ``einsum`` or a bicubic pass
in bf16 (8 bits of mantissa) moves a quarter of the SR targets by a grey level or two. Each protocol
step (colour conversion, bicubic, noise, rain, rounding) is wrapped by :func:`float32_step`: autocast
off on its tensors' device and half-precision tensor arguments widened to float32 (float64 stays).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])
HALF = (torch.float16, torch.bfloat16)


def _widen(value: Any) -> Any:
    return value.float() if isinstance(value, torch.Tensor) and value.dtype in HALF else value


def float32_step(fn: F) -> F:
    """Run ``fn`` with autocast off and its half-precision tensor arguments in float32."""

    @functools.wraps(fn)
    def step(*args: Any, **kwargs: Any) -> Any:
        tensor = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        device = tensor.device.type if tensor is not None else "cpu"
        if not torch.amp.is_autocast_available(device):
            return fn(*map(_widen, args), **{k: _widen(v) for k, v in kwargs.items()})
        with torch.autocast(device, enabled=False):
            return fn(*map(_widen, args), **{k: _widen(v) for k, v in kwargs.items()})

    return step  # type: ignore[return-value]
