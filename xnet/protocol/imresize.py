"""MATLAB-compatible bicubic ``imresize`` in pure torch.

This reimplements the behaviour of MATLAB's ``imresize(A, scale, 'bicubic')``
(default ``'Antialiasing', true``), which is what the super-resolution
literature (SRCNN, VDSR, SelfExSR, xUnit, ...) uses to make LR inputs and the
bicubic baseline.  The algorithm, per spatial dimension, is:

* kernel: Keys' cubic convolution with ``a = -0.5``::

      k(t) = 1.5|t|^3 - 2.5|t|^2 + 1            for |t| <= 1
           = -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2    for 1 < |t| <= 2
           = 0                                 otherwise

  support (kernel width) 4.
* antialiasing: when ``scale < 1`` (and ``antialias``) the kernel is stretched,
  ``h(t) = scale * k(scale * t)``, and its width becomes ``4 / scale``.
* coordinate mapping (1-based output ``x``, input ``u``)::

      u = x / scale + 0.5 * (1 - 1 / scale)

  taps ``left + 0 .. left + P - 1`` with ``left = floor(u - width / 2)`` and
  ``P = ceil(width) + 2``; the weights of each output sample are normalised to
  sum to 1.
* boundary: indices outside ``1..n`` are mirrored *with* the edge sample
  repeated (MATLAB's ``aux = [1:n, n:-1:1]`` trick, i.e. half-sample
  symmetric / ``padarray(..., 'symmetric')``).
* separable: MATLAB resizes one dimension at a time, in order of increasing
  scale factor (``[~, order] = sort(scale)``, a stable sort, so rows (H)
  first when both scales are equal).  In floating point the order only
  matters up to rounding; it matters more when the input is ``uint8``
  because MATLAB rounds to ``uint8`` after *each* pass (see ``quantize``).
* output size, when a scale is given: ``ceil(in * scale)``; the weights use
  the scale as given (not ``out / in``).  When a size is given the per-dim
  scale is ``out / in``.

Values are left unclipped and unrounded by default (the caller rounds).
Nothing is cached globally; weights/indices are built per call (they are
tiny: ``out x P`` per dimension) on the input's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from xnet.protocol.float32 import float32_step
from xnet.protocol.quantize import quantize_uint8

__all__ = [
    "contributions",
    "cubic",
    "downscale",
    "imresize",
    "output_size",
    "quantize_uint8",
    "resize_matrix",
    "upscale",
]

_KERNEL_WIDTH = 4.0


def cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    at = t.abs()
    at2 = at * at
    at3 = at2 * at
    inner = (1.5 * at3 - 2.5 * at2 + 1.0) * (at <= 1)
    outer = (-0.5 * at3 + 2.5 * at2 - 4.0 * at + 2.0) * ((at > 1) & (at <= 2))
    return inner + outer


def contributions(
    in_len: int,
    out_len: int,
    scale: float,
    antialias: bool = True,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output weights and (0-based, already mirrored) input indices.

    Returns ``(weights, indices)``, both of shape ``(out_len, P)``; weights are
    float64 and each row sums to 1.  Mirrors MATLAB's ``contributions``
    (taps whose weight is zero for every output are harmless here and kept).
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"lengths must be positive, got in={in_len}, out={out_len}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    width = _KERNEL_WIDTH
    stretch = antialias and scale < 1
    if stretch:
        width = width / scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64, device=device)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - width / 2.0)
    p = math.ceil(width) + 2
    idx = left.unsqueeze(1) + torch.arange(p, dtype=torch.float64, device=device)
    dist = u.unsqueeze(1) - idx
    w = scale * cubic(scale * dist) if stretch else cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # 1-based idx -> mirror into [1, n] with aux = [1..n, n..1], then 0-based.
    period = 2 * in_len
    m = torch.remainder(idx.long() - 1, period)  # in [0, 2n)
    idx0 = torch.where(m < in_len, m, period - 1 - m)
    return w, idx0


def resize_matrix(
    in_len: int,
    out_len: int,
    scale: float | None = None,
    antialias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Dense ``(out_len, in_len)`` matrix ``M`` with ``y = M @ x`` along one dim.

    Handy for inspection and tests; :func:`imresize` itself uses gathers.
    ``scale`` defaults to ``out_len / in_len``.
    """
    if scale is None:
        scale = out_len / in_len
    w, idx = contributions(in_len, out_len, scale, antialias, device=device)
    mat = torch.zeros(out_len, in_len, dtype=torch.float64, device=w.device)
    mat.scatter_add_(1, idx, w)
    return mat.to(dtype)


def _ceil_size(n: int, scale: float) -> int:
    v = n * scale
    r = round(v)
    # Guard against float noise such as 3 * (1/3) -> 0.9999999999999999 or
    # 480 * (1/3) landing a hair above an integer: MATLAB users always pass
    # scales that divide the (modcropped) size, so snap near-integers.
    if abs(v - r) < 1e-9 * max(1.0, abs(v)):
        return max(1, int(r))
    return max(1, math.ceil(v))


def output_size(in_hw: Sequence[int], scale: float | Sequence[float]) -> tuple[int, int]:
    """``ceil(in * scale)`` per dimension (MATLAB rule, float-noise tolerant)."""
    sh, sw = _pair(scale)
    return _ceil_size(int(in_hw[0]), sh), _ceil_size(int(in_hw[1]), sw)


def _pair(v: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    vals = tuple(float(a) for a in v)
    if len(vals) != 2:
        raise ValueError(f"expected a number or a pair, got {v!r}")
    return vals  # type: ignore[return-value]


def _resize_along(x: torch.Tensor, dim: int, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    xt = x.movedim(dim, -1)
    g = xt[..., idx]  # (..., out, P)
    y = torch.einsum("...op,op->...o", g, w.to(dtype=x.dtype))
    return y.movedim(-1, dim)


@float32_step
def imresize(
    x: torch.Tensor,
    scale: float | Sequence[float] | None = None,
    size: Sequence[int] | None = None,
    antialias: bool = True,
    *,
    quantize: bool = False,
) -> torch.Tensor:
    """Bicubic resize matching MATLAB ``imresize(x, scale)`` / ``imresize(x, size)``.

    Args:
        x: float tensor ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` (any
            device); the last two dims are resized.
        scale: scale factor, or ``(scale_h, scale_w)``.  Output size is
            ``ceil(in * scale)``.
        size: output ``(H, W)``; overrides ``scale`` (per-dim scale becomes
            ``out / in``, as in MATLAB).
        antialias: stretch the kernel when downscaling (MATLAB default True).
        quantize: emulate MATLAB on a ``uint8`` image given here as float on
            the [0, 1] scale: after *each* 1-D pass the result is clipped to
            [0, 1] and rounded to the 1/255 grid (round half away from zero,
            as MATLAB's uint8 cast).  Off by default: values unclipped.

    Returns:
        tensor of the same rank/device with resized spatial dims, in the input's dtype (float32 for
        a half-precision input: :mod:`xnet.protocol.float32`).
    """
    if not torch.is_tensor(x):
        raise TypeError("imresize expects a torch.Tensor")
    if not x.is_floating_point():
        raise TypeError(f"imresize expects a floating-point tensor, got {x.dtype}")
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"expected (H,W), (C,H,W) or (B,C,H,W), got shape {tuple(x.shape)}")
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        sh, sw = out_h / in_h, out_w / in_w
    elif scale is not None:
        sh, sw = _pair(scale)
        if not (sh > 0 and sw > 0):
            raise ValueError(f"scale must be positive, got {scale!r}")
        out_h, out_w = _ceil_size(in_h, sh), _ceil_size(in_w, sw)
    else:
        raise ValueError("either scale or size must be given")

    dims = [(sh, x.dim() - 2, in_h, out_h), (sw, x.dim() - 1, in_w, out_w)]
    # MATLAB: [~, order] = sort(scale) -- stable, smallest scale first.
    dims.sort(key=lambda d: d[0])
    y = x
    for s, dim, n_in, n_out in dims:
        w, idx = contributions(n_in, n_out, s, antialias, device=x.device)
        y = _resize_along(y, dim, w, idx)
        if quantize:
            y = quantize_uint8(y)
    return y


def downscale(x: torch.Tensor, scale: float, antialias: bool = True, **kw) -> torch.Tensor:
    """``imresize(x, 1 / scale)`` for an integer-like SR factor ``scale``."""
    return imresize(x, scale=1.0 / scale, antialias=antialias, **kw)


def upscale(x: torch.Tensor, scale: float, **kw) -> torch.Tensor:
    """``imresize(x, scale)``: bicubic upsampling by the SR factor ``scale``."""
    return imresize(x, scale=float(scale), **kw)
