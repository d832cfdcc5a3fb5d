"""The one chooser of how an xUnit runs (as timm's ``create_act.get_act_layer`` is for activations).

:func:`choose_impl` maps one call — which op, on what input, what the user asked for — to an
:class:`Impl`. ``XUnit`` (eager or memory-lean), ``DepthwiseConv2d`` (native CPU, Triton, NCHW or
torch), the deployed ``FusedXUnit`` (native CPU, Triton, tiled torch ops or the reference) and
``Deployed`` (its compiled twin or eager) all ask it; none of them decides on its own.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

import torch

from xnet.kernels.triton_tiles import FLOAT_DTYPES
from xnet.kernels.xunit_native import native_kernel
from xnet.kernels.xunit_triton import triton_available, triton_interpreting

__all__ = ["CHOICES", "Call", "Impl", "choose_impl", "functional_only"]


class Impl(str, enum.Enum):
    EAGER = "eager"  # plain torch ops under autograd: F.conv2d, FusedXUnit.forward_reference, the fused body
    LEAN = "lean"  # XUnit training that saves only its input (xunit_autograd)
    NATIVE = "native"  # the C++ CPU kernels (xunit_native)
    TRITON = "triton"  # the Triton GPU kernels (xunit_triton, depthwise_triton)
    NCHW = "nchw"  # a CUDA channels_last input through torch's NCHW depthwise kernel
    TILED = "tiled"  # fused torch ops on cache-sized row tiles (eager fused inference)
    COMPILED = "compiled"  # the torch.compile twin of a deployed model


#: what a user may ask for, per op; ``auto``: the fastest implementation that runs
CHOICES = {
    "xunit": ("auto", "lean"),  # XUnit(memory_lean=...)
    "depthwise": ("auto", "cudnn", "nchw", "triton"),  # env XNET_CUDA_DEPTHWISE
    "fused_xunit": ("auto", "torch", "native", "triton"),  # fuse(cpu_kernel=..., gpu_kernel=...)
    "deployed": ("auto", "compiled"),  # fuse(compile=True)
}


def functional_only() -> bool:
    """Tracing / scripting / compiling / ONNX export: plain torch ops only (no ctypes or Triton calls)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


@dataclass(frozen=True)
class Call:
    """What the chooser looks at. ``native_fits`` / ``triton_fits``: the op's own conditions for
    those kernels beyond device, dtype and layout (weights alike, stride 1, zero 'same' padding, a
    depthwise conv ...)."""

    op: str
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    dims: int = 4
    channels_last: bool = True
    channels: int = 16
    needs_grad: bool = False
    functional: bool = False  # tracing, compiling or exporting
    interpreting: bool = False  # TRITON_INTERPRET=1: Triton runs CPU tensors
    choice: str = "auto"
    native_fits: bool = True
    triton_fits: bool = True

    @classmethod
    def of(cls, op: str, x: torch.Tensor, needs_grad: bool | None = None, **kw) -> "Call":
        """The call of ``op`` on ``x`` now (grad mode, tracing, interpreter read here)."""
        return cls(
            op,
            device=x.device.type,
            dtype=x.dtype,
            dims=x.dim(),
            channels_last=x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last),
            channels=x.shape[1] if x.dim() > 1 else 0,
            needs_grad=(torch.is_grad_enabled() and x.requires_grad) if needs_grad is None else needs_grad,
            functional=functional_only(),
            interpreting=triton_interpreting(),
            **kw,
        )


def _native_ready() -> bool:
    return native_kernel() is not None


def _native_runs(call: Call, ready: Callable[[], bool]) -> bool:
    """float32 channels_last CPU input, C % 16 == 0 (one 64-byte line per pixel and block), built."""
    shape_ok = call.dims == 4 and call.channels_last and call.channels % 16 == 0
    eager = not call.functional  # ctypes calls neither trace nor compile
    return eager and call.device == "cpu" and call.dtype == torch.float32 and shape_ok and call.native_fits and ready()


def _triton_runs(call: Call, ready: Callable[[], bool]) -> bool:
    device_ok = call.device == "cuda" or (call.device == "cpu" and call.interpreting)
    eager = not call.functional
    return eager and device_ok and call.dims == 4 and call.dtype in FLOAT_DTYPES and call.triton_fits and ready()


def _fused(call: Call, native_ready: Callable[[], bool], triton_ready: Callable[[], bool]) -> Impl:
    if call.functional or call.needs_grad or call.dims != 4:  # what compile fuses and export records
        return Impl.EAGER
    if call.choice == "triton":
        if not _triton_runs(call, triton_ready):
            raise RuntimeError(
                "Triton xUnit kernel needs Triton and a 4-D float CUDA input (CPU input: TRITON_INTERPRET=1)"
            )
        return Impl.TRITON
    if call.choice == "native":
        if not _native_runs(call, lambda: True):
            raise RuntimeError("native xUnit kernel needs NHWC float32 CPU input, C % 16 == 0 and a depthwise conv")
        if not native_ready():
            raise RuntimeError("native xUnit kernel unavailable (see the earlier warning)")
        return Impl.NATIVE
    if call.choice == "auto" and call.device == "cuda" and _triton_runs(call, triton_ready):
        return Impl.TRITON
    if call.choice == "auto" and _native_runs(call, native_ready):
        return Impl.NATIVE
    return Impl.TILED


def _depthwise(call: Call, native_ready: Callable[[], bool], triton_ready: Callable[[], bool]) -> Impl:
    if _native_runs(call, native_ready):  # has its own backward: training too
        return Impl.NATIVE
    if call.choice == "triton" and _triton_runs(call, triton_ready):
        return Impl.TRITON
    if call.choice == "nchw" and call.device == "cuda" and call.channels_last:
        return Impl.NCHW
    return Impl.EAGER


def choose_impl(
    call: Call,
    native_ready: Callable[[], bool] = _native_ready,
    triton_ready: Callable[[], bool] = triton_available,
) -> Impl:
    """How ``call`` runs. ``native_ready`` / ``triton_ready`` say whether those kernels load; they
    are asked last, so the native kernel is built only where it would run.

    Raises ``ValueError`` for a choice the op does not offer and ``RuntimeError`` where a fused
    xUnit is told to use a kernel that cannot run it.
    """
    if call.choice not in CHOICES.get(call.op, ()):
        raise ValueError(f"{call.op}: unknown implementation {call.choice!r}; choose one of {CHOICES.get(call.op)}")
    if call.op == "xunit":  # lean only pays where a backward will run
        return Impl.LEAN if call.choice == "lean" and call.needs_grad else Impl.EAGER
    if call.op == "deployed":
        compiled = call.choice == "compiled" and not (call.needs_grad or call.functional)
        return Impl.COMPILED if compiled else Impl.EAGER
    if call.op == "fused_xunit":
        return _fused(call, native_ready, triton_ready)
    return _depthwise(call, native_ready, triton_ready)
