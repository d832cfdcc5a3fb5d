"""A whole xUnit in training as Triton kernels (forward and backward), for ``xunit.impl=triton``.

The unit ``y = x·g(d)``, ``d = BN2(DW(ReLU(BN1(x))))`` with batch-statistics BatchNorms needs, per
activation, these passes over device memory (a pass: one full-size tensor read or written):

=====================================  ==========================================  ======
kernel                                 reads / writes                              passes
=====================================  ==========================================  ======
forward: BN1 statistics (row_stats)    x                                           1
forward: conv of ReLU(BN1(x)), BN2     x (r×r window through L1/L2) / c            2
statistics in its epilogue (dw_conv)
forward: y = x·g(BN2(c)) (gate_fwd)    x, c / y                                    3
backward: BN2 sums Σgd, Σgd·ĉ          gy, x, c                                    3
backward: gc (gate_bwd)                gy, x, c / gc                               4
backward: conv input gradient, ReLU    gc (window), x / ga                         3
mask, BN1 sums (dw_dgrad)
backward: weight gradient (dw_wgrad)   gc, x (window; ReLU(BN1(x)) on the fly)     2
backward: gx = gy·g + BN1⁻ᵀ(ga)        gy, x, c, ga / gx                           5
=====================================  ==========================================  ======

23 in all, against about 60 for the same unit as torch ops under autocast (forward ~20: each BN
three, the ReLU two, the conv two, the gate's ``-d``, ``·d`` and ``exp`` seven, the product three;
backward ~40, each op's gradient reading and writing whole tensors). What cannot be fused is what a
BatchNorm's batch statistics force: its apply must wait for a reduction over the whole batch, so
each BN costs one extra read forward and backward. The elementwise work rides on the conv kernels'
loads (BN1 + ReLU) and epilogues (BN2's statistics, the ReLU mask, BN1's backward sums); ``g`` and
``gd`` are recomputed from ``x`` and ``c`` wherever needed rather than stored. Saved for backward:
``x`` and ``c`` (``memory_lean``: ``x`` only, and the conv is recomputed, one more conv pass).
Statistics: per-row (mean, M2) merged with Chan's formula, sums per row added by torch —
deterministic, no atomics, no bf16 accumulation.

The trade-off, untimed: at r = 9 the three convs (forward, input and weight gradients) do 81
multiply-adds per element each, so on a GPU they are bound by arithmetic and on-chip loads rather
than by device memory; BN1 + ReLU on the loads costs two more operations per tap (instead of two
more passes to write and read ``u``). The benchmark's ``xunit_step`` times the result.

BatchNorm semantics are torch's: batch statistics in training (running statistics updated once,
unbiased variance, ``momentum=None`` as a cumulative average), running statistics in eval mode.
Any switch of :class:`~xnet.archs.xunit.XUnitConfig` with a depthwise conv and ``combine=product``
runs here (identities stand in for absent BNs); :func:`fits` says which units. Output and
gradients take ``x``'s dtype (bf16 under autocast, where eager torch would promote the product to
fp32); arithmetic is float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from xnet.kernels.depthwise_triton import (
    combine_stats,
    depthwise_grad_weight_triton,
    depthwise_triton,
    taps_of,
)
from xnet.kernels.triton_launch import MAX_KERNEL_SIZE, launch
from xnet.kernels.xunit_triton import GATE_CODES

__all__ = ["XUnitTritonFunction", "fits", "xunit_triton_train"]

_BN = nn.modules.batchnorm._BatchNorm
#: rows of the per-channel coefficient table the kernels read (triton_src/xunit.py)
S1, T1, S2, T2, A2, B2, K1_POST, K2_POST, A1, B1, K1_PRE, K2_PRE = range(12)


def _plain_bn(m: nn.Module) -> bool:
    """A BatchNorm whose batch statistics are this process's (not SyncBatchNorm's, across ranks)."""
    return type(m) in (nn.BatchNorm2d, nn.BatchNorm1d, nn.BatchNorm3d)


def fits(unit: nn.Module) -> bool:
    """Whether :func:`xunit_triton_train` runs ``unit``: a product xUnit whose depthwise conv is
    stride 1, dilation 1, zero 'same' padding, r ≤ MAX_KERNEL_SIZE, and whose BNs are plain."""
    conv = getattr(unit, "depthwise", None)
    if getattr(unit, "combine", None) != "product" or not isinstance(conv, nn.Conv2d):
        return False
    k = conv.kernel_size
    geometry = (
        conv.groups == conv.in_channels == conv.out_channels
        and k[0] == k[1]
        and k[0] % 2 == 1
        and k[0] <= MAX_KERNEL_SIZE
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and not isinstance(conv.padding, str)
        and tuple(conv.padding) == (k[0] // 2, k[0] // 2)
        and conv.padding_mode == "zeros"
    )
    norms = all(isinstance(m, nn.Identity) or _plain_bn(m) for m in (unit.pre_norm, unit.post_norm))
    return geometry and norms and isinstance(unit.relu, (nn.ReLU, nn.Identity))


def _slots(unit: nn.Module) -> list[torch.Tensor | None]:
    """The unit's parameters: pre BN (w, b), depthwise (w, b), post BN (w, b)."""
    pre, post = unit.pre_norm, unit.post_norm
    return [
        getattr(pre, "weight", None),
        getattr(pre, "bias", None),
        unit.depthwise.weight,
        unit.depthwise.bias,
        getattr(post, "weight", None),
        getattr(post, "bias", None),
    ]


def _batch_stats(bn: nn.Module) -> bool:
    return isinstance(bn, _BN) and (bn.training or (bn.running_mean is None and bn.running_var is None))


@torch.no_grad()
def _update_running(bn: _BN, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """What ``F.batch_norm`` does to ``bn``'s buffers in training (unbiased variance)."""
    if not (bn.training and bn.track_running_stats):
        return
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    if bn.running_mean is not None:
        bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
        unbiased = var * (count / max(count - 1, 1))
        bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)


def _affine(bn: _BN, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(s, t, a, b)``: the BN as ``y = x·s + t`` and its normalised input as ``x̂ = x·a + b``."""
    invstd = torch.rsqrt(var + bn.eps)
    gamma = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(invstd)
    beta = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(invstd)
    s = gamma * invstd
    return s, beta - mean * s, invstd, -mean * invstd


def _dense(x: torch.Tensor) -> torch.Tensor:
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def _row_grid(n: int, h: int, c: int):
    return lambda m: (n * h, -(-c // m["BLOCK_C"]))


def _partials(x: torch.Tensor, rows: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float32 ``[rows, C]`` buffers for a row kernel's per-row partial sums."""
    return x.new_empty(rows, c, dtype=torch.float32), x.new_empty(rows, c, dtype=torch.float32)


class XUnitTritonFunction(torch.autograd.Function):
    """``apply(x, unit, lean, *slots)`` with ``slots = _slots(unit)`` (the unit's parameters)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, unit: nn.Module, lean: bool, *slots: torch.Tensor | None) -> torch.Tensor:
        x = _dense(x)
        n, c, h, w = x.shape
        count = n * h * w
        pre, post, conv = unit.pre_norm, unit.post_norm, unit.depthwise
        coef = torch.zeros(12, c, device=x.device, dtype=torch.float32)
        coef[S1] = 1.0
        coef[S2] = 1.0
        has_in, relu = isinstance(pre, _BN), isinstance(unit.relu, nn.ReLU)
        pre_batch, post_batch = _batch_stats(pre), _batch_stats(post)
        if has_in:
            if pre_batch:
                parts = _partials(x, n * h, c)
                launch("row_stats", _row_grid(n, h, c), x, *parts, c, h, w, *x.stride())
                mean, var = combine_stats(parts, w)
                _update_running(pre, mean, var, count)
            else:
                mean, var = pre.running_mean.float(), pre.running_var.float()
            coef[S1], coef[T1], coef[A1], coef[B1] = _affine(pre, mean, var)
        pre_coef = coef if has_in else None
        cv, parts = depthwise_triton(x, conv.weight, conv.bias, coef=pre_coef, relu=relu, stats=post_batch)
        if isinstance(post, _BN):
            if post_batch:
                mean, var = combine_stats(parts, w)
                _update_running(post, mean, var, count)
            else:
                mean, var = post.running_mean.float(), post.running_var.float()
            coef[S2], coef[T2], coef[A2], coef[B2] = _affine(post, mean, var)
        y = torch.empty_like(x)
        gate = GATE_CODES[unit.gate_kind]
        launch("gate_fwd", _row_grid(n, h, c), x, cv, coef, y, c, h, w, *x.stride(), GATE=gate)
        ctx.unit, ctx.lean, ctx.gate = unit, lean, gate
        ctx.flags = (has_in, relu, pre_batch, post_batch)
        ctx.save_for_backward(x, None if lean else cv, coef)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, cv, coef = ctx.saved_tensors
        unit, gate = ctx.unit, ctx.gate
        has_in, relu, pre_batch, post_batch = ctx.flags
        conv = unit.depthwise
        need = [bool(v) for v in ctx.needs_input_grad[3:]]
        need_x = ctx.needs_input_grad[0]
        n, c, h, w = x.shape
        count = n * h * w
        coef = coef.clone()
        if cv is None:  # memory-lean: the conv again (its statistics were kept in coef)
            cv = depthwise_triton(x, conv.weight, conv.bias, coef=coef if has_in else None, relu=relu)[0]
        grads: list[torch.Tensor | None] = [None] * 6
        grid, strides = _row_grid(n, h, c), (*x.stride(), *gy.stride())
        has_post = isinstance(unit.post_norm, _BN)
        sum_gd = None
        if has_post or conv.bias is not None:
            parts = _partials(x, n * h, c)
            launch("gate_bwd", grid, gy, x, cv, coef, x, *parts, c, h, w, *strides, GATE=gate, REDUCE=True)
            sum_gd, dot_gd = parts[0].sum(0), parts[1].sum(0)
            if has_post:
                grads[4], grads[5] = dot_gd, sum_gd
                if post_batch:
                    coef[K1_POST] = coef[S2] * sum_gd / count
                    coef[K2_POST] = coef[S2] * dot_gd / count
        gc = torch.empty_like(x)
        launch("gate_bwd", grid, gy, x, cv, coef, gc, coef, coef, c, h, w, *strides, GATE=gate, REDUCE=False)
        if need[3] and conv.bias is not None:
            grads[3] = gc.float().sum((0, 2, 3)) if has_post else sum_gd
        if need[2]:
            pre_coef = coef if has_in else None
            grads[2] = depthwise_grad_weight_triton(gc, x, conv.kernel_size[0], coef=pre_coef, relu=relu)
        gx = None
        if need_x or need[0] or need[1]:
            ga = torch.empty_like(x)
            parts = _partials(x, n * h, c)
            launch(
                "dw_dgrad",
                grid,
                gc,
                taps_of(conv.weight.flip(-1, -2)),
                x,
                coef,
                ga,
                *parts,
                c,
                h,
                w,
                *x.stride(),
                R=conv.kernel_size[0],
                HAS_IN=has_in,
                RELU=relu,
                STATS=has_in,
            )
            del gc
            if has_in:
                sum_ga, dot_ga = parts[0].sum(0), parts[1].sum(0)
                grads[0], grads[1] = dot_ga, sum_ga
                if pre_batch:
                    coef[K1_PRE] = coef[S1] * sum_ga / count
                    coef[K2_PRE] = coef[S1] * dot_ga / count
            if need_x:
                gx = torch.empty_like(x)
                launch("xunit_grad_input", grid, gy, x, cv, ga, coef, gx, c, h, w, *strides, GATE=gate)
        slots = _slots(unit)
        out = [
            g.to(s.dtype) if g is not None and s is not None and wanted else None
            for g, s, wanted in zip(grads, slots, need)
        ]
        return (gx, None, None, *out)


def xunit_triton_train(unit: nn.Module, x: torch.Tensor, lean: bool = False) -> torch.Tensor:
    """``unit(x)`` (an xUnit that :func:`fits`) through :class:`XUnitTritonFunction`."""
    return XUnitTritonFunction.apply(x, unit, lean, *_slots(unit))
