"""Memory-lean xUnit training: save only the input, recompute the gate in backward.

A plain :class:`~xnet.archs.xunit.XUnit` keeps about six full-size tensors alive for backward
(BN input, ReLU output, depthwise output, ``d``, ``-d``, ``g``). :class:`XUnitLeanFunction` keeps
only ``x`` (plus, for a BN in eval mode, its C-element running statistics). Backward recomputes
the forward from ``x`` and differentiates it with the kernels autograd itself uses
(``native_batch_norm_backward``, ``convolution_backward`` — or, on CPU, the native depthwise kernels
of :mod:`xnet.kernels.depthwise` — ``threshold_backward``), in an order
that frees each temporary as soon as possible (at most about four unit-sized temporaries; the
depthwise input is recomputed a second time rather than kept). Under autocast the recomputation
instead runs under autograd with the forward's autocast state restored, so the precision matches.
Gradients equal the plain module's up to float rounding (≤ 1e-5 in the tests).

BatchNorm semantics: the forward runs the unit's own modules, so running statistics (and
``num_batches_tracked``) are updated exactly once, as in the plain module. The recomputation
normalises with the batch statistics of ``x`` again (identical values) without touching the
running buffers; a BN that was in eval mode at forward time is recomputed with the running
statistics saved then.

Limits: no double backward (``once_differentiable``); forward hooks registered on the unit's
submodules run once (forward), not again in the recomputation, which is functional.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from xnet.kernels.depthwise import depthwise_conv_backward
from xnet.kernels.gate import gate

__all__ = ["XUnitLeanFunction", "xunit_lean"]

_BN = nn.modules.batchnorm._BatchNorm


def _slots(unit: nn.Module) -> list[torch.Tensor | None]:
    """The unit's parameters in a fixed order: pre BN (w, b), depthwise (w, b), post BN (w, b)."""
    pre, dw, post = unit.pre_norm, unit.depthwise, unit.post_norm
    pre_ok = isinstance(pre, _BN) and pre.affine
    post_ok = isinstance(post, _BN) and post.affine
    dw_ok = isinstance(dw, nn.Conv2d)
    return [
        pre.weight if pre_ok else None,
        pre.bias if pre_ok else None,
        dw.weight if dw_ok else None,
        dw.bias if dw_ok else None,
        post.weight if post_ok else None,
        post.bias if post_ok else None,
    ]


def _bn_mode(bn: nn.Module) -> tuple[bool, torch.Tensor | None, torch.Tensor | None] | None:
    """How a BN normalised at forward time: (batch stats?, running mean, running var) or None."""
    if not isinstance(bn, _BN):
        return None
    batch = bn.training or bn.running_mean is None or bn.running_var is None
    if batch:
        return True, None, None
    return False, bn.running_mean.detach().clone(), bn.running_var.detach().clone()


def _bn(
    x: torch.Tensor, bn: _BN, mode: tuple[bool, Any, Any], w: torch.Tensor | None, b: torch.Tensor | None
) -> torch.Tensor:
    batch, mean, var = mode
    # momentum 0 and no running buffers: the recomputation never touches the running statistics.
    return F.batch_norm(x, mean, var, w, b, batch, 0.0, bn.eps)


def _recompute(x: torch.Tensor, unit: nn.Module, slots: list[torch.Tensor | None], modes: tuple) -> torch.Tensor:
    pre_w, pre_b, dw_w, dw_b, post_w, post_b = slots
    pre_mode, post_mode = modes
    h = x
    if pre_mode is not None:
        h = _bn(h, unit.pre_norm, pre_mode, pre_w, pre_b)
    if isinstance(unit.relu, nn.ReLU):
        h = F.relu(h)
    if dw_w is not None:
        h = unit.depthwise._conv_forward(h, dw_w, dw_b)
    if post_mode is not None:
        h = _bn(h, unit.post_norm, post_mode, post_w, post_b)
    return x * gate(h, unit.gate_kind)


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # older torch: no device argument
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    if not enabled:
        return False, None
    try:
        return True, torch.get_autocast_dtype(device_type)
    except AttributeError:  # older torch
        return True, torch.get_autocast_gpu_dtype() if device_type == "cuda" else torch.get_autocast_cpu_dtype()


class XUnitLeanFunction(torch.autograd.Function):
    """``apply(x, unit, *slots)`` with ``slots = _slots(unit)`` (the unit's parameters)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, unit: nn.Module, *slots: torch.Tensor | None) -> torch.Tensor:
        ctx.unit = unit
        ctx.modes = (_bn_mode(unit.pre_norm), _bn_mode(unit.post_norm))
        ctx.autocast = _autocast_state(x.device.type)
        ctx.device_type = x.device.type
        ctx.save_for_backward(x)
        # The unit's own modules: identical values, running statistics updated exactly once.
        return x * unit.weight_map(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        unit = ctx.unit
        slots = list(_slots(unit))
        need_x = ctx.needs_input_grad[0]
        need_slots = [bool(n) and s is not None for s, n in zip(slots, ctx.needs_input_grad[2:])]
        if not need_x and not any(need_slots):
            return (None, None, *([None] * len(slots)))
        if ctx.autocast[0]:
            grads = _backward_autograd(ctx, x, grad_out, slots, need_x, need_slots)
        else:
            grads = _backward_manual(ctx, x, grad_out, slots, need_x, need_slots)
        return (grads[0], None, *grads[1:])


def _backward_autograd(
    ctx: Any, x: torch.Tensor, grad_out: torch.Tensor, slots: list, need_x: bool, need_slots: list[bool]
) -> list:
    """Recompute under autograd (same autocast state as the forward) and differentiate."""
    inputs: list[torch.Tensor] = []
    with torch.enable_grad():
        xd = x.detach().requires_grad_(need_x)
        if need_x:
            inputs.append(xd)
        leaves: list[torch.Tensor | None] = []
        for s, need in zip(slots, need_slots):
            leaf = None if s is None else s.detach().requires_grad_(need)
            leaves.append(leaf)
            if need:
                inputs.append(leaf)
        enabled, dtype = ctx.autocast
        with torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled):
            y = _recompute(xd, ctx.unit, leaves, ctx.modes)
    grads = iter(torch.autograd.grad(y, inputs, grad_out, allow_unused=True))
    out = [next(grads) if need_x else None]
    out += [next(grads) if need else None for need in need_slots]
    return out


def _bn_forward(x: torch.Tensor, bn: _BN, mode: tuple, w: torch.Tensor | None, b: torch.Tensor | None):
    batch, mean, var = mode
    return torch.native_batch_norm(x, w, b, mean, var, batch, 0.0, bn.eps)


def _bn_backward(
    grad: torch.Tensor, x: torch.Tensor, bn: _BN, mode: tuple, w: torch.Tensor | None, stats: tuple, mask: list[bool]
):
    batch, mean, var = mode
    save_mean, save_invstd = stats
    return torch.ops.aten.native_batch_norm_backward(grad, x, w, mean, var, save_mean, save_invstd, batch, bn.eps, mask)


def _backward_manual(
    ctx: Any, x: torch.Tensor, gy: torch.Tensor, slots: list, need_x: bool, need_slots: list[bool]
) -> list:
    """Hand-ordered backward that frees each recomputed tensor as soon as it is used, so at most
    about four unit-sized temporaries are alive (autograd's recomputed graph holds ~eight).
    The ops are the kernels autograd itself uses (BN, conv and threshold backward)."""
    unit = ctx.unit
    pre_mode, post_mode = ctx.modes
    pre_w, pre_b, dw_w, dw_b, post_w, post_b = (None if s is None else s.detach() for s in slots)
    need_pre_w, need_pre_b, need_dw_w, need_dw_b, need_post_w, need_post_b = need_slots
    relu = isinstance(unit.relu, nn.ReLU)
    kind = unit.gate_kind
    x = x.detach()

    def first_stage() -> tuple[torch.Tensor, tuple | None]:
        """``r = ReLU(BN1(x))`` and BN1's saved statistics."""
        if pre_mode is None:
            return (torch.relu(x) if relu else x), None
        h, m, v = _bn_forward(x, unit.pre_norm, pre_mode, pre_w, pre_b)
        return (h.relu_() if relu else h), (m, v)

    # d and g from a recomputed forward; r is dropped (recomputed again for the conv backward)
    r, pre_stats = first_stage()
    c = unit.depthwise._conv_forward(r, dw_w, dw_b) if dw_w is not None else r
    del r
    post_stats = None
    if post_mode is not None:
        d, m2, v2 = _bn_forward(c, unit.post_norm, post_mode, post_w, post_b)
        post_stats = (m2, v2)
    else:
        d = c
    # gd = gy · x · g'(d); gx = gy · g
    gd = gy * x
    if kind == "gaussian":
        g = torch.exp(-d * d)
        gd.mul_(g).mul_(d).mul_(-2.0)
    elif kind == "sigmoid":
        g = torch.sigmoid(d)
        gd.mul_(g).mul_(1.0 - g)
    elif kind == "tanh":
        g = torch.tanh(d)
        gd.mul_(1.0 - g * g)
    else:
        g = d
    if d is not c:
        del d
    gx = gy * g if need_x else None
    del g
    grads: dict[str, torch.Tensor | None] = {}
    # second BN
    if post_mode is not None:
        gc, grads["post_w"], grads["post_b"] = _bn_backward(
            gd, c, unit.post_norm, post_mode, post_w, post_stats, [True, need_post_w, need_post_b]
        )
    else:
        gc = gd
    del gd, c
    # depthwise conv (r recomputed), ReLU, first BN
    need_gr = need_x or need_pre_w or need_pre_b
    if dw_w is not None:
        r, pre_stats = first_stage()
        gr, grads["dw_w"], grads["dw_b"] = depthwise_conv_backward(
            unit.depthwise, gc, r, dw_w, dw_b, (need_gr, need_dw_w, need_dw_b)
        )
        del gc
    else:
        gr = gc
        r = None
        if relu and need_gr:
            r, pre_stats = first_stage()
    if need_gr:
        if relu:
            gr = torch.ops.aten.threshold_backward(gr, r, 0)
        del r
        if pre_mode is not None:
            gx_bn, grads["pre_w"], grads["pre_b"] = _bn_backward(
                gr, x, unit.pre_norm, pre_mode, pre_w, pre_stats, [need_x, need_pre_w, need_pre_b]
            )
        else:
            gx_bn = gr
        del gr
        if need_x:
            gx = gx.add_(gx_bn)
    out = [gx if need_x else None]
    for key, need in zip(("pre_w", "pre_b", "dw_w", "dw_b", "post_w", "post_b"), need_slots):
        out.append(grads.get(key) if need else None)
    return out


def xunit_lean(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``unit(x)`` through :class:`XUnitLeanFunction` (saves only ``x`` for backward)."""
    return XUnitLeanFunction.apply(x, unit, *_slots(unit))
