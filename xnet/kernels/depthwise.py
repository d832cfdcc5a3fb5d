"""The xUnit's depthwise r×r convolution on CPU: native forward and backward, else torch.

PyTorch's CPU depthwise convolution is slow at r = 9, and its backward especially (≈ 9 ms against
1.3 ms for the native kernels at batch 4 × 64 × 48², the most expensive op of an xDnCNN training
step). :func:`depthwise_conv` runs the native kernels of :mod:`xnet.kernels.xunit_native` when they
apply — float32 channels_last CPU input, C % 16 == 0, stride 1, dilation 1, zero "same" padding,
eager (not tracing, compiling or exporting) — through :class:`DepthwiseConvFunction`:

* forward: the one-pass kernel in conv-only mode;
* input gradient: the same kernel with the taps flipped (a "same" correlation's adjoint);
* weight gradient: a row-parallel reduction kernel; bias gradient: a sum.

On CUDA, cuDNN's depthwise kernels are very slow at r = 9: on an H200, an xDnCNN training step
(bf16, batch 64 × 80²) takes 93 ms against DnCNN-S's 10 ms, ~76 ms of it in convolutions, and eager
fp32 inference of a 321×481 image takes 32 ms channels_last against 8.9 ms NCHW (where torch's own
direct depthwise kernel runs instead of cuDNN). ``CUDA_LAYOUT`` (env ``XNET_CUDA_DEPTHWISE``) picks:
``cudnn`` (default; measured fastest of the two for bf16 training), ``nchw`` (NCHW in, channels_last
out: in bf16 torch still picks cuDNN, 96.7 vs 93.2 ms per step), ``triton`` (the direct kernels of
:mod:`xnet.kernels.depthwise_triton`: forward, input and weight gradients; not yet timed on a GPU).
``scripts/benchmark.py`` times them side by side.

:func:`choose_depthwise` asks the one chooser (:mod:`xnet.kernels.dispatch`); anything else runs the
module's own ``F.conv2d``. :func:`depthwise_conv_backward` is the backward
alone, for the memory-lean xUnit's hand-ordered backward. No double backward on the native path.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from xnet.kernels.depthwise_triton import TritonDepthwiseConv, depthwise_grad_weight_triton, depthwise_triton
from xnet.kernels.dispatch import Call, Impl, choose_impl
from xnet.kernels.xunit_native import depthwise_conv_native, depthwise_grad_weight_native, native_kernel

#: how a CUDA channels_last input is convolved (see the module doc)
CUDA_LAYOUT = os.environ.get("XNET_CUDA_DEPTHWISE", "cudnn")

__all__ = [
    "CUDA_LAYOUT",
    "DepthwiseConv2d",
    "DepthwiseConvFunction",
    "choose_depthwise",
    "depthwise_conv",
    "depthwise_conv_backward",
    "native_depthwise_applies",
]


class DepthwiseConv2d(nn.Conv2d):
    """The xUnit's r×r depthwise convolution (zero "same" padding): an ``nn.Conv2d`` (same
    parameters, ``state_dict`` and hooks) whose forward and backward run the kernels
    :func:`depthwise_conv` picks (native on CPU, Triton or cuDNN on CUDA; torch's conv otherwise)."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return depthwise_conv(self, input, weight, bias)


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


def _kernel_geometry(u: torch.Tensor, conv: nn.Conv2d) -> bool:
    """The fast kernels' conv: depthwise over ``u``'s channels, stride 1, dilation 1, zero 'same' padding."""
    c = u.shape[1] if u.dim() == 4 else -1
    return (
        conv.groups == conv.in_channels == conv.out_channels == c
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and _same_padding(conv)
    )


def choose_depthwise(u: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor | None = None) -> Impl:
    """How ``conv`` (with ``weight``, default its own) convolves ``u``: :func:`xnet.kernels.dispatch.choose_impl`
    on this call, with ``CUDA_LAYOUT`` as the user's choice."""
    weight = conv.weight if weight is None else weight
    geometry = _kernel_geometry(u, conv)
    call = Call.of(
        "depthwise",
        u,
        needs_grad=False,  # the native and Triton kernels have their backward
        choice=CUDA_LAYOUT,
        native_fits=geometry and weight.dtype == torch.float32,
        triton_fits=geometry and weight.device == u.device,
    )
    return choose_impl(call)


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
    """``conv``'s depthwise convolution of ``u`` with ``weight``/``bias`` (default: its own),
    natively where :func:`native_depthwise_applies`, else ``F.conv2d``."""
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
        gu = depthwise_triton(grad, weight.flip(-1, -2)).to(u.dtype) if mask[0] else None
        gw = depthwise_grad_weight_triton(grad, u, r).to(weight.dtype) if mask[1] else None
        gb = grad.float().sum((0, 2, 3)).to(weight.dtype) if mask[2] else None
        return gu, gw, gb
    if impl is Impl.NCHW:
        grads = torch.ops.aten.convolution_backward(
            grad.contiguous(), u.contiguous(), weight, bias_sizes, list(conv.stride), list(conv.padding), list(conv.dilation),
            False, [0, 0], conv.groups, list(mask),
        )
        gu = grads[0].contiguous(memory_format=torch.channels_last) if grads[0] is not None else None
        return gu, grads[1], grads[2]
    return torch.ops.aten.convolution_backward(
        grad, u, weight, bias_sizes, list(conv.stride), list(conv.padding), list(conv.dilation), False,
        [0, 0], conv.groups, list(mask),
    )
