"""One-pass Triton kernel for a fused (BN-folded) xUnit in inference (any memory layout; fp32, fp16
or bf16 tensors with float32 arithmetic).

The same computation as :func:`xnet.kernels.xunit_gate.fused_xunit_reference` —
``y = x·g(d)·out_scale + out_shift`` with ``d = DW_r(ReLU(x·in_scale + in_shift)) + b`` (or
``d = u·mid_scale + mid_shift`` without a depthwise conv) — in one kernel
(:func:`xnet.kernels.triton_src.xunit.xunit_fused`): a program takes one image row and a block of
channels and walks the row in tiles, reading each tile's ``r × r`` neighbourhood of ``x`` (zero
outside the image, as the conv's zero padding sees ``u``), and writes ``y`` once. With channels_last
input a pixel's channels are contiguous, so the loads are coalesced; neighbouring tiles re-read ``x``
through L1/L2 rather than DRAM. In place is not possible (a program reads rows its neighbours write).

:class:`xnet.deploy.fuse.FusedXUnit` runs it for eager CUDA inference (``gpu_kernel``); it also runs
on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests check it
without a GPU. Tile sizes: ``triton.autotune`` (:data:`xnet.kernels.triton_launch.CONFIGS`).
"""

from __future__ import annotations

import torch

from xnet.kernels.gate import GATES
from xnet.kernels.triton_launch import launch, triton_available, triton_interpreting
from xnet.kernels.xunit_gate import FusedTerms

__all__ = ["GATE_CODES", "fused_xunit_triton", "triton_available", "triton_interpreting"]

#: the kernels' GATE constexpr: the gate's index in GATES (gaussian, sigmoid, tanh, identity)
GATE_CODES = {name: i for i, name in enumerate(GATES)}


def fused_xunit_triton(x: torch.Tensor, t: FusedTerms, config: dict[str, int] | None = None) -> torch.Tensor:
    """One fused xUnit forward with the Triton kernel; the caller chose it (:mod:`xnet.kernels.dispatch`).
    The output has ``x``'s dtype and memory format; the arithmetic is float32."""
    n, c, height, width = x.shape
    y = torch.empty_like(x)
    dummy = x.new_empty(1, dtype=torch.float32)

    def arg(v: torch.Tensor | None) -> torch.Tensor:
        return dummy if v is None else v.contiguous()

    taps = None
    if t.dw_weight is not None:
        k = t.kernel_size
        taps = t.dw_weight.reshape(c, k * k).t().float().contiguous()  # [ky*k + kx][c]
    launch(
        "xunit_fused",
        lambda m: (n * height, -(-c // m["BLOCK_C"])),
        x,
        y,
        arg(t.in_scale),
        arg(t.in_shift),
        arg(taps),
        arg(t.dw_bias),
        arg(t.mid_scale),
        arg(t.mid_shift),
        arg(t.out_scale),
        arg(t.out_shift),
        c,
        height,
        width,
        *x.stride(),
        *y.stride(),
        R=t.kernel_size,
        GATE=GATE_CODES[t.gate],
        RELU=bool(t.relu),
        HAS_IN=t.in_scale is not None,
        HAS_DW=t.dw_weight is not None,
        HAS_DW_BIAS=t.dw_bias is not None,
        HAS_MID=t.mid_scale is not None,
        HAS_OUT_SCALE=t.out_scale is not None,
        HAS_OUT_SHIFT=t.out_shift is not None,
        config=config,
    )
    return y
