"""The one chooser of the xUnit implementation: its resolution table (CUDA and Triton rows decided
from the target alone: no GPU, no kernel built), resolution once per module and device, the config
value it reads (``XUnitConfig.impl``), the deprecated environment variable, and the per-call checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers_xunit import randomise, single_thread  # noqa: F401 - single_thread: autouse fixture

from xnet.archs.dncnn import XDnCNN
from xnet.archs.xunit import XUnit, XUnitConfig
from xnet.kernels import dispatch
from xnet.kernels.dispatch import Impl, Target, resolve, runs_now

CPU, CUDA = "cpu", "cuda"
YES, NO = (lambda: True), (lambda: False)


def choose(ready_native=YES, ready_triton=YES, **kw) -> Impl:
    return resolve(Target(**kw), native_ready=ready_native, triton_ready=ready_triton)


@pytest.fixture(autouse=True)
def _no_legacy_env(monkeypatch):
    monkeypatch.delenv("XNET_CUDA_DEPTHWISE", raising=False)


@pytest.mark.parametrize(
    "target,expected",
    [
        # an xUnit's choice (XUnitConfig.impl): auto is native on the CPU (where it fits), torch on CUDA
        ({"op": "xunit"}, Impl.NATIVE),
        ({"op": "xunit", "native_fits": False}, Impl.EAGER),
        ({"op": "xunit", "device": CUDA}, Impl.EAGER),
        ({"op": "xunit", "choice": "torch"}, Impl.EAGER),
        ({"op": "xunit", "choice": "triton", "device": CUDA}, Impl.TRITON),
        ({"op": "xunit", "choice": "triton", "device": CUDA, "triton_fits": False}, Impl.EAGER),  # e.g. r > 11, SyncBN
        ({"op": "xunit", "choice": "triton"}, Impl.NATIVE),  # a CUDA choice on the CPU: the CPU's auto
        ({"op": "xunit", "choice": "triton", "interpreting": True}, Impl.TRITON),  # the interpreter runs CPU tensors
        ({"op": "xunit", "choice": "nchw", "device": CUDA}, Impl.NCHW),
        ({"op": "xunit", "choice": "nchw"}, Impl.NATIVE),
        ({"op": "xunit", "choice": "native", "device": CUDA}, Impl.EAGER),  # a CPU choice on CUDA: CUDA's auto
        ({"op": "xunit", "choice": "native", "native_fits": False}, Impl.EAGER),
        ({"op": "depthwise", "choice": "triton", "device": CUDA}, Impl.TRITON),
        ({"op": "depthwise", "interpreting": True}, Impl.NATIVE),  # auto never sends CPU input to Triton
        # the fused xUnit: Triton on CUDA, native on CPU, else tiled torch ops
        ({"op": "fused_xunit", "device": CUDA}, Impl.TRITON),
        ({"op": "fused_xunit", "device": CUDA, "triton_fits": False}, Impl.TILED),
        ({"op": "fused_xunit", "device": CUDA, "choice": "torch"}, Impl.TILED),
        ({"op": "fused_xunit"}, Impl.NATIVE),
        ({"op": "fused_xunit", "interpreting": True}, Impl.NATIVE),
        ({"op": "fused_xunit", "native_fits": False}, Impl.TILED),
        ({"op": "fused_xunit", "choice": "torch"}, Impl.TILED),
        ({"op": "fused_xunit", "choice": "triton", "interpreting": True}, Impl.TRITON),
    ],
)
def test_resolution_table(target: dict, expected: Impl) -> None:
    assert choose(**target) is expected


def test_kernels_that_do_not_load_are_not_chosen_or_are_an_error_when_asked_for() -> None:
    assert choose(op="xunit", ready_native=NO) is Impl.EAGER
    assert choose(op="fused_xunit", ready_native=NO) is Impl.TILED
    assert choose(op="fused_xunit", device=CUDA, ready_triton=NO) is Impl.TILED
    with pytest.raises(RuntimeError, match="Triton does not import"):
        choose(op="xunit", choice="triton", device=CUDA, ready_triton=NO)
    with pytest.raises(RuntimeError, match="native CPU kernel is unavailable"):
        choose(op="xunit", choice="native", ready_native=NO)


def test_availability_is_asked_only_where_the_kernel_would_run() -> None:
    """The native kernel is compiled on first use: a target it cannot run must not build it."""
    asked = []

    def ready() -> bool:
        asked.append(1)
        return True

    choose(op="fused_xunit", device=CUDA, ready_native=ready)
    choose(op="xunit", native_fits=False, ready_native=ready)
    choose(op="xunit", device=CUDA, ready_native=ready)
    assert not asked
    choose(op="xunit", ready_native=ready)
    assert asked == [1]


def test_a_required_kernel_that_cannot_run_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="Triton"):
        choose(op="fused_xunit", choice="triton")  # CPU input without the interpreter
    with pytest.raises(RuntimeError, match="C % 16"):
        choose(op="fused_xunit", choice="native", native_fits=False)
    with pytest.raises(RuntimeError, match="unavailable"):
        choose(op="fused_xunit", choice="native", ready_native=NO)
    with pytest.raises(ValueError, match="choose one of"):
        choose(op="xunit", choice="fast")
    with pytest.raises(ValueError, match="choose one of"):
        choose(op="relu")


def test_the_deprecated_environment_variable_maps_to_the_config_value(monkeypatch) -> None:
    dispatch._warn_legacy.cache_clear()
    monkeypatch.setenv("XNET_CUDA_DEPTHWISE", "triton")
    with pytest.warns(FutureWarning, match="model.net.xunit.impl=triton"):
        assert choose(op="xunit", device=CUDA) is Impl.TRITON
    assert choose(op="xunit", device=CUDA, choice="torch") is Impl.EAGER  # the config's explicit value wins
    assert choose(op="xunit") is Impl.NATIVE  # and it was only ever about CUDA
    monkeypatch.setenv("XNET_CUDA_DEPTHWISE", "cudnn")
    with pytest.warns(FutureWarning, match="impl=torch"):
        assert choose(op="xunit", device=CUDA) is Impl.EAGER
    monkeypatch.setenv("XNET_CUDA_DEPTHWISE", "fast")
    with pytest.raises(ValueError, match="XNET_CUDA_DEPTHWISE='fast'"):
        choose(op="xunit", device=CUDA)
    dispatch._warn_legacy.cache_clear()


def test_nothing_reads_the_environment_at_import() -> None:
    """The old module-level CUDA_LAYOUT (read from the environment at import) is gone."""
    from xnet.kernels import depthwise

    assert not hasattr(depthwise, "CUDA_LAYOUT")


def test_runs_now_is_the_only_per_call_question() -> None:
    x = torch.randn(2, 16, 5, 6)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert runs_now(Impl.NATIVE, cl) and not runs_now(Impl.NATIVE, x) and not runs_now(Impl.NATIVE, cl.double())
    assert runs_now(Impl.TRITON, x.bfloat16()) and not runs_now(Impl.TRITON, x.double())
    assert not runs_now(Impl.TRITON, x[0])  # 3-D
    assert runs_now(Impl.EAGER, x.double())


def test_the_config_value_is_validated_and_reaches_the_modules() -> None:
    with pytest.raises(ValueError, match="unknown xUnit impl"):
        XUnitConfig(impl="cuda")
    net = XDnCNN(num_blocks=1, width=16, xunit={"kernel_size": 3, "impl": "torch"})
    units = [m for m in net.modules() if isinstance(m, XUnit)]
    assert units and all(u.impl == "torch" and u.depthwise.impl == "torch" for u in units)
    assert "impl=torch" in repr(units[0])
    frelu = XUnit(16, kernel_size=3, combine="max", impl="triton")  # FReLU's funnel runs as it always did
    assert frelu.depthwise.impl == "auto"


def test_each_module_resolves_once_per_device(monkeypatch) -> None:
    """XUnit, its DepthwiseConv2d and FusedXUnit ask the chooser on their first call on a device, not
    on every call; setting impl resolves afresh."""
    from xnet.deploy.fuse import FusedXUnit

    calls: list[str] = []
    real = dispatch.resolve

    def counting(target: Target, **ready) -> Impl:
        calls.append(target.op)
        return real(target, **ready)

    for name in ("xnet.archs.xunit", "xnet.kernels.depthwise", "xnet.deploy.fuse"):
        monkeypatch.setattr(f"{name}.resolve", counting)
    unit = XUnit(16, kernel_size=3).train()
    x = torch.randn(2, 16, 6, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    for _ in range(3):
        unit(x).sum().backward()
    assert sorted(calls) == ["depthwise", "xunit"]
    unit.impl = "torch"
    unit(x)
    assert sorted(calls) == ["depthwise", "depthwise", "xunit", "xunit"]
    fused = FusedXUnit.from_xunit(randomise(XUnit(16, kernel_size=3)))
    with torch.no_grad():
        for _ in range(3):
            fused(x.detach())
    assert calls.count("fused_xunit") == 1


def test_under_tracing_the_kernels_step_aside() -> None:
    """While tracing (compile, export) a resolved kernel does not run: torch ops, which the tracer
    records; outside, the same call runs the resolved kernel."""
    from xnet.kernels.depthwise import choose_depthwise

    unit = randomise(XUnit(16, kernel_size=3)).requires_grad_(False)
    x, x2 = (torch.randn(1, 16, 6, 6).contiguous(memory_format=torch.channels_last) for _ in range(2))
    seen: list[Impl] = []

    def probe(v: torch.Tensor) -> torch.Tensor:
        seen.append(choose_depthwise(v, unit.depthwise))
        return unit(v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(probe, x, check_trace=False)
    assert seen == [Impl.EAGER]
    assert choose_depthwise(x, unit.depthwise) is Impl.NATIVE
    assert torch.allclose(traced(x2), unit(x2), atol=1e-5)
