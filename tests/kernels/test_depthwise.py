"""Native depthwise conv (the xUnit's r×r conv on CPU): values and gradients equal torch's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers_xunit import randomise, single_thread  # noqa: F401 - single_thread: autouse fixture

from xnet.archs.xunit import DepthwiseConv2d, XUnit
from xnet.kernels.depthwise import DepthwiseConvFunction, depthwise_conv_backward, native_depthwise_applies
from xnet.kernels.xunit_native import depthwise_grad_weight_native, native_kernel

needs_native = pytest.mark.skipif(native_kernel() is None, reason="native CPU kernel unavailable")
TOL = 1e-5


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _grads(conv: torch.nn.Module, u: torch.Tensor, gd: torch.Tensor):
    conv.zero_grad(set_to_none=True)
    u = u.detach().clone().requires_grad_()
    d = conv(u)
    d.backward(gd)
    return d.detach(), u.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad, d.grad_fn


@needs_native
@pytest.mark.parametrize("kernel_size", [1, 3, 9, 11])  # 11: the generic (untemplated) kernels
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "threads", [1, 2]
)  # 2: channel groups (forward), row bands with per-band accumulators (weight gradient)
def test_native_matches_torch(kernel_size: int, bias: bool, threads: int) -> None:
    torch.manual_seed(kernel_size)
    conv = DepthwiseConv2d(32, kernel_size, bias=bias)
    u, gd = torch.randn(3, 32, 21, 10), torch.randn(3, 32, 21, 10)
    torch.set_num_threads(threads)
    native = _grads(conv, _cl(u), _cl(gd))
    reference = _grads(conv, u, gd)  # NCHW input: torch's conv
    assert type(native[-1]).__name__ == "DepthwiseConvFunctionBackward"
    assert type(reference[-1]).__name__ != "DepthwiseConvFunctionBackward"
    assert native[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(native[:-1], reference[:-1]):
        if a is None:
            assert b is None
            continue
        assert (a - b).abs().max() <= TOL * max(1.0, b.abs().max().item())


@needs_native
def test_weight_gradient_bands_and_narrow_images() -> None:
    torch.manual_seed(0)
    for width in (3, 9, 40):  # narrower than, equal to and wider than the kernel's interior
        u, gd = _cl(torch.randn(2, 16, 17, width)), _cl(torch.randn(2, 16, 17, width))
        w = torch.randn(16, 1, 9, 9)
        ref = torch.ops.aten.convolution_backward(
            gd, u, w, None, [1, 1], [4, 4], [1, 1], False, [0, 0], 16, [False, True, False]
        )[1]
        for workers in (1, 2, 3):
            gw = depthwise_grad_weight_native(u, gd, 9, native_kernel(), workers=workers)
            assert (gw - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_not_applicable_falls_back_to_torch() -> None:
    conv = DepthwiseConv2d(16, 3)
    x = torch.randn(1, 16, 8, 8)
    assert not native_depthwise_applies(x, conv)  # NCHW
    assert not native_depthwise_applies(_cl(x).double(), conv)  # float64
    assert not native_depthwise_applies(_cl(torch.randn(1, 6, 8, 8)), DepthwiseConv2d(6, 3))  # C % 16
    strided = torch.nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
    assert not native_depthwise_applies(_cl(x), strided)
    # gradcheck in float64 goes through torch's conv (and must pass)
    unit = DepthwiseConv2d(16, 3).double()
    u = _cl(torch.randn(1, 16, 5, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(unit, (u,))


@needs_native
def test_hooks_and_state_dict_are_those_of_a_conv() -> None:
    conv = DepthwiseConv2d(16, 9)
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    conv(_cl(torch.randn(1, 16, 12, 12)))
    assert seen == [torch.Size([1, 16, 12, 12])]
    plain = torch.nn.Conv2d(16, 16, 9, padding=4, groups=16)
    plain.load_state_dict(conv.state_dict())


@needs_native
@pytest.mark.parametrize("memory_lean", [False, True])
def test_xunit_training_step_native_equals_torch(memory_lean: bool) -> None:
    """A whole xUnit (BNs in train mode) through the native conv equals the NCHW torch path."""
    torch.manual_seed(0)
    unit = randomise(XUnit(16, kernel_size=9, memory_lean=memory_lean)).train()
    twin = copy.deepcopy(unit)
    x, gy = torch.randn(2, 16, 13, 11), torch.randn(2, 16, 13, 11)
    results = []
    for module, layout in ((unit, _cl), (twin, lambda t: t.contiguous())):
        xi = layout(x).requires_grad_()
        y = module(xi)
        y.backward(layout(gy))
        results.append([y.detach(), xi.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*results):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


@needs_native
def test_backward_helper_matches_aten() -> None:
    torch.manual_seed(1)
    conv = DepthwiseConv2d(16, 5, bias=True)
    u, gd = _cl(torch.randn(2, 16, 9, 9)), _cl(torch.randn(2, 16, 9, 9))
    ours = depthwise_conv_backward(conv, gd, u, conv.weight.detach(), conv.bias, (True, True, True))
    ref = torch.ops.aten.convolution_backward(
        gd, u, conv.weight.detach(), [16], [1, 1], [2, 2], [1, 1], False, [0, 0], 16, [True, True, True]
    )
    for a, b in zip(ours, ref):
        assert (a - b).abs().max() <= 1e-4
    # no bias: no bias gradient
    assert depthwise_conv_backward(conv, gd, u, conv.weight.detach(), None, (False, False, True))[2] is None
    assert DepthwiseConvFunction.apply(u, conv.weight, None).shape == u.shape
    assert torch.allclose(
        DepthwiseConvFunction.apply(u, conv.weight, None), F.conv2d(u, conv.weight, None, 1, 2, 1, 16), atol=1e-5
    )
