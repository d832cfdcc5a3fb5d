"""The one chooser of how an xUnit runs (as timm's ``create_act.get_act_layer`` is for activations).

A module's implementation is a config value, resolved **once per module and device** by
:func:`resolve` — on the module's first call on that device — not on every call and not from the
environment at import: ``XUnit`` and its ``DepthwiseConv2d`` from ``XUnitConfig.impl``
(``model.net.xunit.impl``), the deployed ``FusedXUnit`` from ``fuse(cpu_kernel=..., gpu_kernel=...)``.
Per call only :func:`runs_now` is asked: while tracing, compiling or exporting, or for an input a
kernel cannot take (a dtype, a layout), the call runs torch ops instead.

``XUnitConfig.impl`` (the ``xunit`` op; its ``DepthwiseConv2d`` takes the same value):

* ``auto`` — today's behaviour: on the CPU the native depthwise kernels where they apply (float32
  channels_last, C % 16 == 0), on CUDA torch's (cuDNN) convolution;
* ``torch`` — torch ops only;
* ``native`` — the CPU's native depthwise kernels (an error where they do not build);
* ``nchw`` — CUDA: the depthwise conv on NCHW copies (torch's direct kernel instead of cuDNN's);
* ``triton`` — CUDA: the whole unit, forward and backward, as Triton kernels
  (:mod:`xnet.kernels.xunit_train_triton`); a unit they cannot run (``fits``) uses torch ops.

A choice for one device leaves the other at ``auto`` (``triton`` on a CPU without Triton's
interpreter, ``native`` on CUDA), so a config trained on a GPU evaluates on a CPU. The environment
variable ``XNET_CUDA_DEPTHWISE`` (``cudnn``/``nchw``/``triton``) is deprecated: it is read at
resolution, only where the config says ``auto``, with a warning.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from xnet.kernels.triton_launch import (
    FLOAT_DTYPES,
    triton_available,
)
from xnet.kernels.xunit_native import native_kernel

__all__ = ["CHOICES", "Impl", "Target", "functional_only", "legacy_cuda_choice", "resolve", "runs_now"]

log = logging.getLogger(__name__)


class Impl(str, enum.Enum):
    EAGER = "eager"  # plain torch ops under autograd: F.conv2d, FusedXUnit.forward_reference, the fused body
    NATIVE = "native"  # the C++ CPU kernels (xunit_native)
    TRITON = "triton"  # the Triton kernels (xunit_train_triton, depthwise_triton, xunit_triton)
    NCHW = "nchw"  # a CUDA channels_last input through torch's NCHW depthwise kernel
    TILED = "tiled"  # fused torch ops on cache-sized row tiles (eager fused inference)
    COMPILED = "compiled"  # the torch.compile twin of a deployed model


#: what a user may ask for, per op; ``auto``: today's default (see the module doc)
CHOICES = {
    "xunit": ("auto", "torch", "native", "nchw", "triton"),  # XUnitConfig.impl
    "depthwise": ("auto", "torch", "native", "nchw", "triton"),  # DepthwiseConv2d(impl=...)
    "fused_xunit": ("auto", "torch", "native", "triton"),  # fuse(cpu_kernel=..., gpu_kernel=...)
}
_CUDA_ONLY = ("nchw", "triton")
_LEGACY = {"cudnn": "torch", "nchw": "nchw", "triton": "triton"}


def functional_only() -> bool:
    """Tracing / scripting / compiling / ONNX export: plain torch ops only (no ctypes or Triton calls)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def legacy_cuda_choice() -> str | None:
    """``XNET_CUDA_DEPTHWISE`` as an ``impl`` (deprecated: warns once), or None when unset."""
    value = os.environ.get("XNET_CUDA_DEPTHWISE", "").strip()
    if not value:
        return None
    _warn_legacy(value)
    return _LEGACY.get(value)


@functools.cache
def _warn_legacy(value: str) -> None:
    if value not in _LEGACY:
        raise ValueError(
            f"XNET_CUDA_DEPTHWISE={value!r}: choose one of {sorted(_LEGACY)} (or set model.net.xunit.impl)"
        )
    warnings.warn(
        f"XNET_CUDA_DEPTHWISE={value} is deprecated: set model.net.xunit.impl={_LEGACY[value]} instead",
        FutureWarning,
        stacklevel=4,
    )


@dataclass(frozen=True)
class Target:
    """What :func:`resolve` looks at: the op, the user's choice, the device type and the module's
    own conditions for the native and Triton kernels (channels, geometry, weight dtype ...)."""

    op: str
    choice: str = "auto"
    device: str = "cpu"
    interpreting: bool = False  # TRITON_INTERPRET=1: Triton runs CPU tensors
    native_fits: bool = True
    triton_fits: bool = True


def _native_ready() -> bool:
    return native_kernel() is not None


@functools.cache
def _note_other_device(op: str, choice: str, device: str) -> None:
    meant = "the CPU" if choice == "native" else "CUDA"
    log.info("%s impl=%s is for %s: on %s it runs as auto", op, choice, meant, device)


def _resolve_fused(t: Target, native_ready: Callable[[], bool], triton_ready: Callable[[], bool]) -> Impl:
    """A deployed FusedXUnit (``choice``: ``gpu_kernel`` for CUDA input or when it is ``triton``,
    else ``cpu_kernel``): Triton on CUDA, native on the CPU, else tiled torch ops."""
    triton_device = t.device == "cuda" or (t.device == "cpu" and t.interpreting)
    if t.choice == "triton":
        if not (triton_device and t.triton_fits and triton_ready()):
            raise RuntimeError(
                "Triton xUnit kernel needs Triton and a 4-D float CUDA input (CPU input: TRITON_INTERPRET=1)"
            )
        return Impl.TRITON
    if t.choice == "native":
        if not (t.device == "cpu" and t.native_fits):
            raise RuntimeError("native xUnit kernel needs NHWC float32 CPU input, C % 16 == 0 and a depthwise conv")
        if not native_ready():
            raise RuntimeError("native xUnit kernel unavailable (see the earlier warning)")
        return Impl.NATIVE
    if t.choice == "auto" and t.device == "cuda" and t.triton_fits and triton_ready():
        return Impl.TRITON
    if t.choice == "auto" and t.device == "cpu" and t.native_fits and native_ready():
        return Impl.NATIVE
    return Impl.TILED


def resolve(
    target: Target,
    native_ready: Callable[[], bool] = _native_ready,
    triton_ready: Callable[[], bool] = triton_available,
) -> Impl:
    """The implementation of ``target`` on its device, decided once. ``native_ready`` /
    ``triton_ready`` say whether those kernels load; they are asked last, so the native kernel is
    built only where it would run.

    Raises ``ValueError`` for a choice the op does not offer and ``RuntimeError`` where a kernel
    asked for by name cannot run (not built, no Triton).
    """
    t = target
    if t.choice not in CHOICES.get(t.op, ()):
        raise ValueError(f"{t.op}: unknown implementation {t.choice!r}; choose one of {CHOICES.get(t.op)}")
    if t.op == "fused_xunit":
        return _resolve_fused(t, native_ready, triton_ready)
    choice = t.choice
    if choice == "auto" and t.device == "cuda":
        choice = legacy_cuda_choice() or "auto"
    gpu = t.device == "cuda" or (t.device == "cpu" and t.interpreting and choice == "triton")
    if (choice in _CUDA_ONLY and not gpu) or (choice == "native" and t.device != "cpu"):
        _note_other_device(t.op, choice, t.device)
        choice = "auto"
    if choice == "triton":
        if not triton_ready():
            raise RuntimeError(f"{t.op} impl=triton: Triton does not import here (it comes with CUDA builds of torch)")
        return Impl.TRITON if t.triton_fits else Impl.EAGER
    if choice == "nchw":
        return Impl.NCHW
    if choice == "native":
        if t.native_fits and not native_ready():
            raise RuntimeError(f"{t.op} impl=native: the native CPU kernel is unavailable (see the earlier warning)")
        return Impl.NATIVE if t.native_fits else Impl.EAGER
    if choice == "auto" and t.device == "cpu" and t.native_fits and native_ready():
        return Impl.NATIVE
    return Impl.EAGER


def runs_now(impl: Impl, x: torch.Tensor) -> bool:
    """Whether the resolved ``impl`` runs this call on ``x``: no kernel while tracing, compiling or
    exporting (plain torch ops, which those record); the native kernels take float32
    channels_last input, the Triton kernels a 4-D float tensor, NCHW a channels_last one."""
    if impl in (Impl.EAGER, Impl.TILED):
        return True
    if functional_only() or x.dim() != 4:
        return False
    if impl is Impl.NATIVE:
        return x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    if impl is Impl.TRITON:
        return x.dtype in FLOAT_DTYPES
    if impl is Impl.NCHW:
        return x.is_contiguous(memory_format=torch.channels_last)
    return True
