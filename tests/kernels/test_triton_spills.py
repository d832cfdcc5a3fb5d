"""No Triton kernel variant the GPU runs spills registers on sm_90 (H100/H200): each is compiled for
sm_90 here, without a GPU (Triton's compiler and ptxas), at every tile configuration the autotuner
may pick, with the arguments the wrappers really pass (replayed on ``meta`` tensors), and its cubin's
stack frame must be empty. The paper's xUnit (r = 9) always; every config variant at r = 1 ... 11
in the slow run; on a GPU machine, under its own Triton, the spill counts the driver reports for every
kernel a training step, an eval forward and fused inference loaded (the autotuner compiles each
configuration; Triton's disk cache keeps them for the slot's benchmark and training)."""

from __future__ import annotations

import pytest
import torch
from helpers_triton import needs_triton

KERNELS = {"row_stats", "dw_conv", "gate_fwd", "gate_bwd", "dw_dgrad", "dw_wgrad", "xunit_grad_input", "xunit_fused"}


def _check(results) -> None:
    assert {r.kernel for r in results} == KERNELS
    spilled = [r for r in results if r.spills]
    lines = [f"{r.kernel} {r.config} {r.variant}: {r.registers} regs, {r.stack} B stack" for r in spilled]
    assert not spilled, "\n".join(lines)


@needs_triton
def test_the_paper_xunits_kernels_do_not_spill_on_sm90() -> None:
    from xnet.benchmark.spills import workload
    from xnet.kernels.triton_audit import audit

    results = audit(workload())
    assert len(results) >= 40  # 8 kernels × their configurations × training / eval / inference / dtypes
    _check(results)


@needs_triton
def test_the_audit_sees_a_spill() -> None:
    """A tile too large for the registers (64 × 64 at four warps: 32 accumulators and 9 taps' loads
    per thread) does spill: the check above can fail."""
    from xnet.benchmark.spills import workload
    from xnet.kernels.triton_audit import compile_sm90

    launch = next(x for x in workload() if x.name == "dw_conv")
    regs, stack = compile_sm90(launch, {"BLOCK_W": 64, "BLOCK_C": 64, "num_warps": 4, "num_stages": 3, "maxnreg": 255})
    assert regs == 255 and stack > 0


@needs_triton
@pytest.mark.slow
def test_no_variant_spills_at_any_kernel_size() -> None:
    from xnet.benchmark.spills import VARIANTS, workload
    from xnet.kernels.triton_audit import audit
    from xnet.kernels.triton_launch import MAX_KERNEL_SIZE

    _check(audit(workload(VARIANTS, range(1, MAX_KERNEL_SIZE + 1, 2))))


@pytest.mark.cuda
@needs_triton
def test_no_spills_with_the_gpus_own_triton() -> None:
    """On the GPU machine: a bf16 training step (plain and lean), an fp32 eval forward and fused
    inference of the paper's xUnit, then every loaded kernel's spill count from the driver."""
    from helpers_xunit import randomise

    from xnet.archs.xunit import XUnit
    from xnet.deploy.fuse import FusedXUnit
    from xnet.kernels.triton_launch import SOURCES, kernel

    unit = randomise(XUnit(64, kernel_size=9, impl="triton")).cuda().train()
    x = torch.randn(8, 64, 40, 47, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    for lean in (False, True):
        unit.memory_lean = lean
        with torch.autocast("cuda", dtype=torch.bfloat16):
            unit(x).float().square().mean().backward()
    with torch.no_grad():
        unit.eval()(x.detach())
        FusedXUnit.from_xunit(unit)(x.detach())
    loaded = []
    for name in SOURCES:
        for cache in getattr(kernel(name), "device_caches", {}).values():
            loaded += [(name, k) for k in cache[0].values() if hasattr(k, "n_spills")]
    if not loaded:
        pytest.skip("this Triton keeps its compiled kernels elsewhere")
    assert {name for name, _ in loaded} >= {"dw_conv", "dw_wgrad", "dw_dgrad", "gate_fwd"}
    assert [(name, k.n_spills) for name, k in loaded if k.n_spills] == []
