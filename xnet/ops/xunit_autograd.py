"""Memory-lean xUnit training: save only the input, recompute the gate in backward.

A plain :class:`~xnet.archs.xunit.XUnit` keeps about six full-size tensors alive for backward
(BN input, ReLU output, depthwise output, ``d``, ``-d``, ``g``). :class:`XUnitLeanFunction` keeps
only ``x`` (plus, for a BN in eval mode, its C-element running statistics). In backward the gate
is recomputed from ``x`` with the same ops and differentiated with ``torch.autograd.grad``, so
the gradients are those of the plain module (bitwise up to op scheduling).

BatchNorm semantics: the forward runs the unit's own modules, so running statistics (and
``num_batches_tracked``) are updated exactly once, as in the plain module. The recomputation
normalises with the batch statistics of ``x`` again (identical values) without touching the
running buffers; a BN that was in eval mode at forward time is recomputed with the running
statistics saved then. Autocast state is saved and restored for the recomputation.

Limits: no double backward (``once_differentiable``); forward hooks registered on the unit's
submodules run once (forward) — not again in the recomputation, which is functional.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

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


def _bn(x: torch.Tensor, bn: _BN, mode: tuple[bool, Any, Any], w: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
    batch, mean, var = mode
    # momentum 0 and no running buffers: the recomputation never touches the running statistics.
    return F.batch_norm(x, mean, var, w, b, batch, 0.0, bn.eps)


def _recompute(x: torch.Tensor, unit: nn.Module, slots: list[torch.Tensor | None], modes: tuple) -> torch.Tensor:
    from xnet.archs.xunit import gate

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
        need_slots = list(ctx.needs_input_grad[2:])
        inputs: list[torch.Tensor] = []
        with torch.enable_grad():
            xd = x.detach().requires_grad_(need_x)
            if need_x:
                inputs.append(xd)
            leaves: list[torch.Tensor | None] = []
            for s, need in zip(slots, need_slots):
                if s is None:
                    leaves.append(None)
                    continue
                leaf = s.detach().requires_grad_(need)
                leaves.append(leaf)
                if need:
                    inputs.append(leaf)
            if not inputs:
                return (None, None, *([None] * len(slots)))
            enabled, dtype = ctx.autocast
            with torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled) if enabled else _null():
                y = _recompute(xd, unit, leaves, ctx.modes)
        grads = iter(torch.autograd.grad(y, inputs, grad_out, allow_unused=True))
        gx = next(grads) if need_x else None
        gslots = [next(grads) if (s is not None and need) else None for s, need in zip(slots, need_slots)]
        return (gx, None, *gslots)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def xunit_lean(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``unit(x)`` through :class:`XUnitLeanFunction` (saves only ``x`` for backward)."""
    return XUnitLeanFunction.apply(x, unit, *_slots(unit))
