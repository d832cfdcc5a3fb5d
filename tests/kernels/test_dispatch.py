"""The one chooser of the xUnit implementation: its decision table, CUDA and Triton rows decided from
the inputs alone (no GPU, no kernel built), and the three modules that ask it."""
from __future__ import annotations

import pytest
import torch

from xnet.kernels.dispatch import Call, Impl, choose_impl

CPU, CUDA = "cpu", "cuda"
F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
YES, NO = (lambda: True), (lambda: False)


def choose(ready_native=YES, ready_triton=YES, **kw) -> Impl:
    return choose_impl(Call(**kw), native_ready=ready_native, triton_ready=ready_triton)


@pytest.mark.parametrize(
    "call,expected",
    [
        # XUnit: memory-lean only when asked and a backward will run
        (dict(op="xunit", choice="lean", needs_grad=True), Impl.LEAN),
        (dict(op="xunit", choice="lean", needs_grad=False), Impl.EAGER),
        (dict(op="xunit", choice="auto", needs_grad=True), Impl.EAGER),
        # its depthwise conv: native on float32 NHWC CPU input with C % 16 == 0, training too
        (dict(op="depthwise", needs_grad=True), Impl.NATIVE),
        (dict(op="depthwise", channels=24), Impl.EAGER),
        (dict(op="depthwise", channels_last=False), Impl.EAGER),
        (dict(op="depthwise", dtype=F64), Impl.EAGER),
        (dict(op="depthwise", native_fits=False), Impl.EAGER),  # strided, or a float64 weight
        (dict(op="depthwise", functional=True), Impl.EAGER),  # tracing / compiling / export
        (dict(op="depthwise", device=CUDA, choice="cudnn"), Impl.EAGER),
        (dict(op="depthwise", device=CUDA, choice="triton", dtype=BF16), Impl.TRITON),
        (dict(op="depthwise", device=CUDA, choice="triton", triton_fits=False), Impl.EAGER),
        (dict(op="depthwise", device=CUDA, choice="triton", functional=True), Impl.EAGER),
        (dict(op="depthwise", device=CUDA, choice="nchw"), Impl.NCHW),
        (dict(op="depthwise", device=CUDA, choice="nchw", channels_last=False), Impl.EAGER),
        (dict(op="depthwise", choice="triton", interpreting=True, channels=24), Impl.TRITON),
        # the fused xUnit: Triton on CUDA, native on CPU, else tiled torch ops; the reference under autograd
        (dict(op="fused_xunit", device=CUDA, dtype=BF16), Impl.TRITON),
        (dict(op="fused_xunit", device=CUDA, channels_last=False), Impl.TRITON),  # any layout
        (dict(op="fused_xunit", device=CUDA, triton_fits=False), Impl.TILED),
        (dict(op="fused_xunit", device=CUDA, choice="torch"), Impl.TILED),
        (dict(op="fused_xunit"), Impl.NATIVE),
        (dict(op="fused_xunit", interpreting=True), Impl.NATIVE),  # auto never sends CPU input to Triton
        (dict(op="fused_xunit", channels=6), Impl.TILED),
        (dict(op="fused_xunit", choice="torch"), Impl.TILED),
        (dict(op="fused_xunit", choice="triton", interpreting=True), Impl.TRITON),
        (dict(op="fused_xunit", needs_grad=True), Impl.EAGER),
        (dict(op="fused_xunit", device=CUDA, functional=True), Impl.EAGER),
        (dict(op="fused_xunit", dims=3), Impl.EAGER),
        # the deployed model: its compiled twin in eager inference
        (dict(op="deployed", choice="compiled"), Impl.COMPILED),
        (dict(op="deployed", choice="compiled", functional=True), Impl.EAGER),
        (dict(op="deployed", choice="compiled", needs_grad=True), Impl.EAGER),
        (dict(op="deployed"), Impl.EAGER),
    ],
)
def test_decision_table(call: dict, expected: Impl) -> None:
    assert choose(**call) is expected


def test_kernels_that_do_not_load_are_not_chosen() -> None:
    assert choose(op="depthwise", ready_native=NO) is Impl.EAGER
    assert choose(op="fused_xunit", ready_native=NO) is Impl.TILED
    assert choose(op="fused_xunit", device=CUDA, ready_triton=NO) is Impl.TILED
    assert choose(op="depthwise", device=CUDA, choice="triton", ready_triton=NO) is Impl.EAGER


def test_availability_is_asked_only_where_the_kernel_would_run() -> None:
    """The native kernel is compiled on first use: a call it cannot run must not build it."""
    asked = []

    def ready() -> bool:
        asked.append(1)
        return True

    choose(op="fused_xunit", device=CUDA, ready_native=ready)
    choose(op="depthwise", channels=6, ready_native=ready)
    choose(op="fused_xunit", needs_grad=True, ready_native=ready)
    assert not asked
    choose(op="depthwise", ready_native=ready)
    assert asked == [1]


def test_a_required_kernel_that_cannot_run_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="Triton"):
        choose(op="fused_xunit", choice="triton")  # CPU input without the interpreter
    with pytest.raises(RuntimeError, match="Triton"):
        choose(op="fused_xunit", device=CUDA, choice="triton", ready_triton=NO)
    with pytest.raises(RuntimeError, match="C % 16"):
        choose(op="fused_xunit", choice="native", channels=6)
    with pytest.raises(RuntimeError, match="unavailable"):
        choose(op="fused_xunit", choice="native", ready_native=NO)
    with pytest.raises(ValueError, match="choose one of"):
        choose(op="depthwise", choice="fast")
    with pytest.raises(ValueError, match="choose one of"):
        choose(op="relu")


def test_call_of_reads_the_tensor_and_the_grad_mode() -> None:
    x = torch.randn(2, 32, 5, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    call = Call.of("fused_xunit", x)
    assert (call.device, call.dtype, call.dims, call.channels, call.channels_last) == ("cpu", F32, 4, 32, True)
    assert call.needs_grad and not call.functional
    with torch.no_grad():
        assert not Call.of("fused_xunit", x).needs_grad
    assert not Call.of("depthwise", x.detach().contiguous()).channels_last


def test_the_modules_ask_the_chooser(monkeypatch) -> None:
    """XUnit, DepthwiseConv2d and FusedXUnit run what choose_impl says, not a choice of their own."""
    import xnet.archs.xunit as xunit_module
    import xnet.deploy.fuse as fuse_module
    import xnet.kernels.depthwise as depthwise_module
    from xnet.archs.xunit import XUnit
    from xnet.deploy.fuse import FusedXUnit

    seen: list[str] = []

    def eager_only(call: Call, **ready) -> Impl:
        seen.append(call.op)
        return Impl.EAGER

    for module in (xunit_module, depthwise_module, fuse_module):
        monkeypatch.setattr(module, "choose_impl", eager_only)
    unit = XUnit(16, kernel_size=3, memory_lean=True).train()
    x = torch.randn(1, 16, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    unit(x).sum().backward()
    assert "xunit" in seen and "depthwise" in seen  # told eager: no lean Function, no native conv
    fused = FusedXUnit.from_xunit(unit.eval())
    fused.cpu_kernel = "native"  # the chooser's EAGER wins: the reference runs, no error
    with torch.no_grad():
        y = fused(x.detach())
    assert seen[-1] == "fused_xunit"
    assert torch.allclose(y, fused.forward_reference(x.detach()))
