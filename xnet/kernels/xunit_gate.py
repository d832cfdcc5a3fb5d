"""Torch-ops evaluation of a fused (BN-folded) xUnit: the plain reference and a row-tiled form.

A fused xUnit computes ``y = x·g(d)·out_scale + out_shift`` with ``d = DW(ReLU(x·in_scale +
in_shift))`` (the depthwise conv carries the folded second BN) or, without a depthwise conv,
``d = u·mid_scale + mid_shift``; :class:`FusedTerms` holds those tensors (every optional one
``None`` when absent). :func:`xnet.deploy.fuse.fuse` builds them (as the buffers of a
:class:`~xnet.deploy.fuse.FusedXUnit`); :mod:`xnet.kernels.xunit_native` is the one-pass CPU kernel
for the same computation.

* :func:`fused_xunit_reference`: plain out-of-place ops — what ``torch.compile`` fuses and ONNX
  export records, and what the native kernel is checked against;
* :func:`fused_xunit_tiled`: eager inference on row tiles of about ``tile_bytes`` per thread:
  pre-affine + ReLU on the tile plus an ``r//2``-row halo, depthwise conv, gate and multiply in
  place while the tile is in cache, optionally overwriting the input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from xnet.kernels.gate import gate as apply_gate

__all__ = ["FusedTerms", "fused_xunit_reference", "fused_xunit_tiled"]


class FusedTerms(NamedTuple):
    """The folded tensors of one fused xUnit (``C`` channels; optional terms ``None`` if absent).

    ``kernel_size`` is the xUnit's ``r`` (also the smallest tile height of :func:`fused_xunit_tiled`);
    ``dw_weight`` the depthwise weight ``(C, 1, r, r)`` with the second BN folded in (``None``: no
    depthwise conv, then ``mid_scale``/``mid_shift`` hold that BN, if any). ``in_scale`` and
    ``in_shift`` go together.
    """

    kernel_size: int
    gate: str
    relu: bool
    in_scale: torch.Tensor | None = None
    in_shift: torch.Tensor | None = None
    dw_weight: torch.Tensor | None = None
    dw_bias: torch.Tensor | None = None
    mid_scale: torch.Tensor | None = None
    mid_shift: torch.Tensor | None = None
    out_scale: torch.Tensor | None = None
    out_shift: torch.Tensor | None = None


def _view(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


def _conv(u: torch.Tensor, t: FusedTerms, padding: int | tuple[int, int]) -> torch.Tensor:
    return F.conv2d(u, t.dw_weight, t.dw_bias, padding=padding, groups=t.dw_weight.shape[0])


def fused_xunit_reference(x: torch.Tensor, t: FusedTerms) -> torch.Tensor:
    """Out-of-place reference: what ``torch.compile`` fuses and ONNX export records."""
    u = x
    if t.in_scale is not None:
        u = u * _view(t.in_scale) + _view(t.in_shift)
    if t.relu:
        u = torch.relu(u)
    if t.dw_weight is not None:
        d = _conv(u, t, t.kernel_size // 2)
    else:
        d = u
        if t.mid_scale is not None:
            d = d * _view(t.mid_scale) + _view(t.mid_shift)
    y = x * apply_gate(d, t.gate)
    if t.out_scale is not None:
        y = y * _view(t.out_scale)
    if t.out_shift is not None:
        y = y + _view(t.out_shift)
    return y


def _pre(t: FusedTerms, xs: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
    """``ReLU(xs·in_scale + in_shift)`` (into ``out`` if given); the flag says whether the
    result is a fresh tensor (False: it is ``xs`` itself)."""
    if t.in_scale is not None:
        u = torch.addcmul(_view(t.in_shift), xs, _view(t.in_scale), out=out)
        if t.relu:
            u.relu_()
        return u, True
    if t.relu:
        return torch.clamp_min(xs, 0, out=out), True
    if out is not None:
        return out.copy_(xs), True
    return xs, False


def _gate_(t: FusedTerms, d: torch.Tensor) -> torch.Tensor:
    """``g(d)·out_scale``, in place."""
    if t.gate == "gaussian":
        d.square_().neg_().exp_()
    elif t.gate == "sigmoid":
        d.sigmoid_()
    elif t.gate == "tanh":
        d.tanh_()
    if t.out_scale is not None:
        d.mul_(_view(t.out_scale))
    return d


def _combine(t: FusedTerms, g: torch.Tensor, xs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if t.out_shift is not None:
        return torch.addcmul(_view(t.out_shift), g, xs, out=out)
    return torch.mul(g, xs, out=out)


def fused_xunit_tiled(x: torch.Tensor, t: FusedTerms, tile_bytes: int, inplace: bool = False) -> torch.Tensor:
    """Row tiles of ``x`` (N, C, H, W), each: ``u`` (with a ``p``-row halo), depthwise conv, gate,
    multiply. Each intra-op thread gets about ``tile_bytes`` of a tile; ``tile_bytes`` 0 (or a
    non-CPU ``x``): the whole image at once.

    With ``inplace`` the output overwrites ``x`` (the caller guarantees ``x`` is a temporary,
    e.g. the preceding conv's output): the ``p`` rows of ``u`` above the next tile are kept
    from the current tile, since the ``x`` rows they came from are overwritten by then.
    """
    n, c, height, width = x.shape
    depthwise = t.dw_weight is not None
    p = t.kernel_size // 2 if depthwise else 0
    row_bytes = n * c * width * x.element_size()
    tiled = tile_bytes > 0 and x.device.type == "cpu"  # a cache optimisation: CPU only
    # each intra-op thread gets about tile_bytes of the tile (fewer, larger ops when threaded)
    budget = tile_bytes * max(1, torch.get_num_threads())
    rows = max(t.kernel_size, budget // max(row_bytes, 1)) if tiled else height
    rows = min(rows, height)
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = x if inplace else (None if rows == height else torch.empty_like(x))
    tail: torch.Tensor | None = None  # u rows [r0 - p, r0) when x above r0 is already overwritten
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        lo, hi = max(0, r0 - p), min(height, r1 + p)
        if tail is not None:
            u = torch.empty((n, c, hi - lo, width), dtype=x.dtype, device=x.device, memory_format=layout)
            u[:, :, : r0 - lo].copy_(tail)
            _pre(t, x[:, :, r0:hi], out=u[:, :, r0 - lo :])
            fresh = True
        else:
            u, fresh = _pre(t, x[:, :, lo:hi])
        if inplace and p > 0 and r1 < height:
            tail = u[:, :, r1 - p - lo : r1 - lo]
            if not fresh:
                tail = tail.clone()
        if depthwise:
            pad = max(p - (r0 - lo), p - (hi - r1))
            d = _conv(u, t, (pad, p))
            k0 = r0 - lo + pad - p
            if k0 != 0 or d.shape[2] != r1 - r0:
                d = d[:, :, k0 : k0 + (r1 - r0)]
        elif t.mid_scale is not None:
            d = torch.addcmul(_view(t.mid_shift), u, _view(t.mid_scale))
        else:
            d = u if fresh else u.clone()
        del u
        g = _gate_(t, d)
        xs = x[:, :, r0:r1]
        if out is None:  # one tile, out of place: g becomes the output
            return _combine(t, g, xs, out=g)
        _combine(t, g, xs, out=out[:, :, r0:r1])
    return out
