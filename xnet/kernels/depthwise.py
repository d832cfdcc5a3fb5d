"""The xUnit's depthwise r×r convolution: an ``nn.Conv2d`` whose forward and backward run the
kernels its ``impl`` resolves to (:mod:`xnet.kernels.dispatch`, once per device).

* ``native`` (the CPU's ``auto``): the kernels of :mod:`xnet.kernels.xunit_native` through
  :class:`DepthwiseConvFunction` — forward: the one-pass kernel in conv-only mode; input gradient:
  the same kernel with the taps flipped (a "same" correlation's adjoint); weight gradient: a
  row-parallel reduction kernel; bias gradient: a sum. PyTorch's CPU depthwise convolution is slow
  at r = 9, its backward especially (``scripts/benchmark.py --depthwise-kernels`` times both; the
  README's "Speed and memory" quotes a run). They take float32 channels_last input with C % 16 == 0;
  other calls run torch's conv.
* ``torch`` (CUDA's ``auto``): ``F.conv2d`` — on CUDA cuDNN, whose depthwise kernels are slow at
  r = 9: most of an xDnCNN training step is spent in them (against DnCNN-S's step:
  ``results/gpu/benchmark_cuda_h200_train.json``; the ops: ``results/gpu/profile_xdncnn_s25_h200.json``);
* ``nchw``: CUDA channels_last input convolved as an NCHW copy (in bf16 torch still picks cuDNN; the
  step times of both layouts: ``results/gpu/benchmark_cuda_h200_train.json``);
* ``triton``: :class:`~xnet.kernels.depthwise_triton.TritonDepthwiseConv` (forward, input and weight
  gradients). Inside an xUnit ``impl=triton`` runs the whole unit as Triton kernels instead
  (:mod:`xnet.kernels.xunit_train_triton`); this conv is then only its fallback.

``scripts/benchmark.py`` times them side by side. :func:`depthwise_conv_backward` is the backward
alone, for the memory-lean xUnit's hand-ordered backward. No double backward on the kernel paths.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from xnet.kernels.depthwise_triton import (
    TritonDepthwiseConv,
    depthwise_grad_weight_triton,
    depthwise_triton,
)
from xnet.kernels.dispatch import Impl, Target, resolve, runs_now
from xnet.kernels.triton_launch import MAX_KERNEL_SIZE, triton_interpreting
from xnet.kernels.xunit_native import (
    depthwise_conv_native,
    depthwise_grad_weight_native,
    native_kernel,
)

__all__ = [
    "DepthwiseConv2d",
    "DepthwiseConvFunction",
    "choose_depthwise",
    "depthwise_conv",
    "depthwise_conv_backward",
    "native_depthwise_applies",
]


class DepthwiseConv2d(nn.Conv2d):
    """The xUnit's r×r depthwise convolution (zero "same" padding): an ``nn.Conv2d`` (same
    parameters, ``state_dict`` and hooks) whose forward and backward run the kernels ``impl``
    resolves to on each device (see the module doc; ``auto``: native on CPU, torch on CUDA)."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True, impl: str = "auto") -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)
        self.impl = impl

    @property
    def impl(self) -> str:
        return getattr(self, "_impl_choice", "auto")  # a module pickled before impl existed: auto

    @impl.setter
    def impl(self, choice: str) -> None:
        self._impl_choice = choice
        self._resolved: dict[str, Impl] = {}  # device type -> Impl, filled on the first call there

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return depthwise_conv(self, input, weight, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", impl={self.impl}" if self.impl != "auto" else "")


def _same_padding(conv: nn.Conv2d) -> bool:
    k = conv.kernel_size
    pad = conv.padding
    return (
        k[0] == k[1]
        and k[0] % 2 == 1
        and not isinstance(pad, str)
        and tuple(pad) == (k[0] // 2, k[0] // 2)
        and conv.padding_mode == "zeros"
    )


def _kernel_geometry(conv: nn.Conv2d) -> bool:
    """The fast kernels' conv: depthwise, stride 1, dilation 1, zero 'same' padding."""
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and _same_padding(conv)
    )


def resolved_impl(conv: nn.Conv2d, device: torch.device) -> Impl:
    """``conv``'s implementation on ``device`` (its ``impl``, resolved on the first call there)."""
    cache = getattr(conv, "_resolved", None)
    if cache is None:  # a plain nn.Conv2d: as DepthwiseConv2d(impl="auto")
        cache = {}
    impl = cache.get(device.type)
    if impl is None:
        geometry = _kernel_geometry(conv)
        target = Target(
            "depthwise",
            getattr(conv, "impl", "auto"),
            device.type,
            interpreting=triton_interpreting(),
            native_fits=geometry and conv.in_channels % 16 == 0,
            triton_fits=geometry and conv.kernel_size[0] <= MAX_KERNEL_SIZE,
        )
        impl = cache[device.type] = resolve(target)
    return impl


def choose_depthwise(u: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor | None = None) -> Impl:
    """How ``conv`` (with ``weight``, default its own) convolves ``u`` on this call: its resolved
    implementation where :func:`~xnet.kernels.dispatch.runs_now` (and the weight fits), else torch."""
    weight = conv.weight if weight is None else weight
    impl = resolved_impl(conv, u.device)
    if not runs_now(impl, u) or u.shape[1] != conv.in_channels:
        return Impl.EAGER
    if impl is Impl.NATIVE and weight.dtype != torch.float32:
        return Impl.EAGER
    if impl is Impl.TRITON and weight.device != u.device:
        return Impl.EAGER
    return impl


def native_depthwise_applies(u: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor | None = None) -> bool:
    """Whether the native kernels run ``conv`` (with ``weight``, default its own) on ``u``."""
    return choose_depthwise(u, conv, weight) is Impl.NATIVE


def _native_backward(
    grad: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, mask: tuple[bool, bool, bool], lib: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    grad = grad.contiguous(memory_format=torch.channels_last)
    gu = depthwise_conv_native(grad, weight.flip(-1, -2), None, lib) if mask[0] else None
    gw = depthwise_grad_weight_native(u, grad, weight.shape[-1], lib) if mask[1] else None
    gb = grad.sum((0, 2, 3)) if mask[2] else None
    return gu, gw, gb


class DepthwiseConvFunction(torch.autograd.Function):
    """``apply(u, weight, bias)``: the native depthwise conv with its native backward."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        lib = native_kernel()
        ctx.lib = lib
        ctx.has_bias = bias is not None
        ctx.save_for_backward(u, weight)
        return depthwise_conv_native(u, weight, bias, lib)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, weight = ctx.saved_tensors
        need_u, need_w, need_b = ctx.needs_input_grad
        return _native_backward(grad, u, weight, (need_u, need_w, need_b and ctx.has_bias), ctx.lib)


def depthwise_conv(
    conv: nn.Conv2d, u: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``conv``'s depthwise convolution of ``u`` with ``weight``/``bias`` (default: its own), by the
    implementation :func:`choose_depthwise` gives for this call."""
    if weight is None:
        weight, bias = conv.weight, conv.bias
    impl = choose_depthwise(u, conv, weight)
    if impl is Impl.NATIVE:
        return DepthwiseConvFunction.apply(u, weight, bias)
    if impl is Impl.TRITON:
        return TritonDepthwiseConv.apply(u, weight, bias)
    if impl is Impl.NCHW:
        y = F.conv2d(u.contiguous(), weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return y.contiguous(memory_format=torch.channels_last)
    return F.conv2d(u, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def depthwise_conv_backward(
    conv: nn.Conv2d,
    grad: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (input, weight, bias; ``None`` where ``mask`` says no) of ``conv(u)`` given the
    output gradient, as ``aten.convolution_backward`` computes them."""
    mask = (mask[0], mask[1], mask[2] and bias is not None)
    impl = choose_depthwise(u, conv, weight)
    if impl is Impl.NATIVE:
        return _native_backward(grad, u, weight, mask, native_kernel())
    bias_sizes = [bias.shape[0]] if bias is not None else None
    if impl is Impl.TRITON:
        r = weight.shape[-1]
        gu = depthwise_triton(grad, weight.flip(-1, -2))[0].to(u.dtype) if mask[0] else None
        gw = depthwise_grad_weight_triton(grad, u, r).to(weight.dtype) if mask[1] else None
        gb = grad.float().sum((0, 2, 3)).to(weight.dtype) if mask[2] else None
        return gu, gw, gb
    nchw = impl is Impl.NCHW  # cuDNN's NCHW kernels: contiguous in, channels_last back out
    gu, gw, gb = torch.ops.aten.convolution_backward(
        grad.contiguous() if nchw else grad,
        u.contiguous() if nchw else u,
        weight,
        bias_sizes,
        list(conv.stride),
        list(conv.padding),
        list(conv.dilation),
        False,
        [0, 0],
        conv.groups,
        list(mask),
    )
    if nchw and gu is not None:
        gu = gu.contiguous(memory_format=torch.channels_last)
    return gu, gw, gb
