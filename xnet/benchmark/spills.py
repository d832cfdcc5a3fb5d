"""Which Triton kernel variants the GPU runs, and whether any of them spills registers on sm_90
(Hopper: H100/H200), found without a GPU: ``python -m xnet.benchmark.spills`` prints a table and exits
1 on a spill; ``tests/kernels/test_triton_spills.py`` runs the same check.

:func:`workload` replays what the GPU runs — xUnit training steps (plain and memory-lean), eval
forwards and fused inference, and a plain ``DepthwiseConv2d(impl="triton")`` step — on ``meta``
tensors with :func:`xnet.kernels.triton_launch.recording` on, so the audited launches are the
wrappers' own (arguments, constexprs, dtypes, integer specialisations); :func:`xnet.kernels.triton_audit.audit`
compiles each at every tile configuration.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from xnet.archs.xunit import XUnit
from xnet.deploy.fuse import FusedXUnit
from xnet.kernels.depthwise_triton import TritonDepthwiseConv
from xnet.kernels.triton_audit import Resources, audit
from xnet.kernels.triton_launch import MAX_KERNEL_SIZE, Launch, recording
from xnet.kernels.xunit_train_triton import fits, xunit_triton_train
from xnet.kernels.xunit_triton import fused_xunit_triton

__all__ = ["IMAGE_SHAPES", "TRAIN_SHAPE", "VARIANTS", "main", "workload"]

#: the shapes the GPU runs: a training batch (64 × 80², channels_last), a BSD68 test image and a 1080p photo
TRAIN_SHAPE = (64, 64, 80, 80)
IMAGE_SHAPES = ((1, 64, 321, 481), (1, 64, 1080, 1920))


def _meta(shape: tuple[int, ...], dtype: torch.dtype, grad: bool = False) -> torch.Tensor:
    x = torch.empty(shape, device="meta", dtype=dtype).contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(grad)


def _units(variants: Iterable[dict[str, Any]], kernel_sizes: Iterable[int]) -> list[nn.Module]:
    return [XUnit(64, kernel_size=r, **opts) for opts in variants for r in kernel_sizes]


def workload(
    variants: Iterable[dict[str, Any]] = ({},),
    kernel_sizes: Iterable[int] = (9,),
    dtypes: Iterable[torch.dtype] = (torch.bfloat16, torch.float32),
) -> list[Launch]:
    """The launches of each xUnit variant (``XUnitConfig`` switches) at each kernel size: a training
    step in ``dtypes[0]`` (plain and memory-lean), an eval forward at a test image's size in each
    dtype, fused inference at both image sizes in each dtype, and a plain ``DepthwiseConv2d``'s
    step with ``impl=triton``."""
    dtypes = list(dtypes)
    units = [u for u in _units(variants, kernel_sizes) if fits(u)]
    with recording() as launches:
        for unit in units:
            fused = FusedXUnit.from_xunit(copy.deepcopy(unit).eval()).to("meta")
            unit = unit.to("meta")
            for lean in (False, True):
                x = _meta(TRAIN_SHAPE, dtypes[0], grad=True)
                xunit_triton_train(unit.train(), x, lean).backward(_meta(TRAIN_SHAPE, dtypes[0]))
            for dtype in dtypes:
                with torch.no_grad():
                    xunit_triton_train(unit.eval(), _meta(IMAGE_SHAPES[0], dtype))
                    for shape in IMAGE_SHAPES:
                        fused_xunit_triton(_meta(shape, dtype), fused.terms())
        for r in sorted({u.kernel_size for u in units}):
            w = torch.empty(64, 1, r, r, device="meta", requires_grad=True)
            x = _meta(TRAIN_SHAPE, dtypes[0], grad=True)
            TritonDepthwiseConv.apply(x, w, None).backward(_meta(TRAIN_SHAPE, dtypes[0]))
    return launches


#: the xUnit switches the configs train (conf/xunit/: the paper's and Fig 6's variants with a depthwise conv)
VARIANTS = (
    {},
    {"pre_norm": False},
    {"post_norm": False},
    {"pre_norm": False, "post_norm": False},
    {"relu": False},
    {"gate": "sigmoid"},
    {"gate": "tanh"},
    {"gate": "identity"},
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--all",
        action="store_true",
        help=f"every variant at r = 1, 3, ..., {MAX_KERNEL_SIZE} (default: the paper's xUnit at r = 9)",
    )
    args = ap.parse_args(argv)
    sizes = range(1, MAX_KERNEL_SIZE + 1, 2) if args.all else (9,)
    results: list[Resources] = audit(workload(VARIANTS if args.all else ({},), sizes))
    for r in results:
        print(f"{r.kernel:18s} {r.registers:4d} regs {r.stack:5d} B stack  {r.config}  {r.variant}")
    spilled = [r for r in results if r.spills]
    print(f"{len(results)} compiled for sm_90, {len(spilled)} spill")
    return 1 if spilled else 0


if __name__ == "__main__":
    sys.exit(main())
