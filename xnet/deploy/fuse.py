"""Inference deployment: fold every BatchNorm away and run each xUnit as one fused op.

:func:`fuse` returns a :class:`Deployed` copy of a model (eval mode, channels_last): ``Conv → BN``
pairs become one conv, a BN after an xUnit is composed into its output multiply (``x·g·s + t``),
any other BN becomes a per-channel affine, and each :class:`~xnet.archs.xunit.XUnit` becomes a
:class:`FusedXUnit`, whose kernel (native CPU, Triton, tiled torch ops or the out-of-place
reference) its ``cpu_kernel`` / ``gpu_kernel`` resolve to (:func:`xnet.kernels.dispatch.resolve`, once per
device). Exact up to float rounding
(``tests/deploy/test_fuse.py``); the README's Speed section says how fast.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from xnet.archs.xunit import GATES, XUnit
from xnet.kernels.dispatch import Impl, Target, functional_only, resolve, runs_now
from xnet.kernels.triton_launch import triton_interpreting
from xnet.kernels.xunit_gate import FusedTerms, fused_xunit_reference, fused_xunit_tiled
from xnet.kernels.xunit_native import fused_xunit_native, native_kernel
from xnet.kernels.xunit_triton import fused_xunit_triton

__all__ = [
    "ChannelAffine",
    "Deployed",
    "FusedXUnit",
    "bn_affine",
    "fold_affine_into_conv",
    "fold_conv_bn",
    "fuse",
    "max_abs_diff",
    "native_kernel",
]

#: Bytes of one row tile of a FusedXUnit's intermediates (about an L2 cache); 0 disables tiling.
DEFAULT_TILE_BYTES = 1 << 20

_BN = nn.modules.batchnorm._BatchNorm


def _view(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


def bn_affine(bn: _BN) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x·scale + shift`` (per channel), computed in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"{bn} has no running statistics (track_running_stats=False): it normalises with batch "
            "statistics even in eval mode and cannot be folded"
        )
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = bn.bias.detach().double() - mean * scale
    else:
        shift = -mean * scale
    return scale, shift


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    dtype, device = conv.weight.dtype, conv.weight.device
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        device=device,
        dtype=dtype,
    )
    with torch.no_grad():
        out.weight.copy_(weight.to(dtype))
        if bias is not None:
            out.bias.copy_(bias.to(dtype))
    return out


def _output_affine(
    weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None, shift: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias (float64) of a conv followed by ``y ↦ y·scale + shift`` per output channel
    (``None``: no scale / no shift; a missing bias counts as zero)."""
    w = weight.detach().double()
    b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if bias is None else bias.detach().double()
    if scale is not None:
        w = w * scale.double().view(-1, 1, 1, 1)
        b = b * scale.double()
    if shift is not None:
        b = b + shift.double()
    return w, b


def fold_conv_bn(conv: nn.Conv2d, bn: _BN) -> nn.Conv2d:
    """``BN(conv(x))`` as a single conv (exact)."""
    return _new_conv(conv, *_output_affine(conv.weight, conv.bias, *bn_affine(bn)))


def _input_scale(conv: nn.Conv2d, scale: torch.Tensor) -> torch.Tensor:
    """Per-(out, in-within-group) multiplier of ``conv.weight`` that realises ``conv(x·scale)``."""
    cout, cin_g = conv.out_channels, conv.weight.shape[1]
    groups = conv.groups
    s = scale.view(groups, 1, cin_g).expand(groups, cout // groups, cin_g).reshape(cout, cin_g)
    return s.view(cout, cin_g, 1, 1)


def _shift_folds_into_bias(conv: nn.Conv2d) -> bool:
    """Whether ``conv(x + t)`` equals ``conv(x) + const`` everywhere (no zero-padded border)."""
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,)
    no_pad = conv.padding != "same" and all(p == 0 for p in padding)
    return no_pad or conv.padding_mode != "zeros"


def fold_affine_into_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor | None) -> nn.Conv2d:
    """``conv(x·scale + shift)`` as one conv.

    The scale always folds exactly. The shift folds only when the conv never reads padded zeros
    (padding 0 or a non-zero padding mode); callers must check :func:`_shift_folds_into_bias`.
    """
    w0 = conv.weight.detach().double()
    w = w0 * _input_scale(conv, scale.double())
    b = conv.bias.detach().double() if conv.bias is not None else None
    if shift is not None:
        if not _shift_folds_into_bias(conv):
            raise ValueError("a shift before a zero-padded conv cannot be folded into its bias exactly")
        cin_g = conv.weight.shape[1]
        t = shift.double().view(conv.groups, 1, cin_g).expand(conv.groups, conv.out_channels // conv.groups, cin_g)
        extra = (w0 * t.reshape(conv.out_channels, cin_g, 1, 1)).sum(dim=(1, 2, 3))
        b = extra if b is None else b + extra
    return _new_conv(conv, w, b)


class ChannelAffine(nn.Module):
    """``y = x·scale + shift`` per channel: a BatchNorm that nothing around it could absorb."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    @classmethod
    def from_bn(cls, bn: _BN) -> ChannelAffine:
        scale, shift = bn_affine(bn)
        dtype = bn.running_mean.dtype
        return cls(scale.to(dtype), shift.to(dtype))

    def absorb_output_affine(self, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
        """Compose ``y ↦ y·scale + shift`` after this op."""
        if scale is not None:
            self.scale = (self.scale.double() * scale.double()).to(self.scale.dtype)
            self.shift = (self.shift.double() * scale.double()).to(self.shift.dtype)
        if shift is not None:
            self.shift = (self.shift.double() + shift.double()).to(self.shift.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(_view(self.shift), x, _view(self.scale))

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}"


class FusedXUnit(nn.Module):
    """Inference-only xUnit with both BatchNorms folded.

    ``y = x·g(d)·out_scale + out_shift`` with ``d = DW(ReLU(x·in_scale + in_shift))`` (the depthwise
    conv carries the folded second BN) or, without a depthwise conv, ``d = u·mid_scale + mid_shift``.
    Every optional term is ``None`` when absent. All tensors are buffers (``state_dict`` round-trips).

    The module holds the tensors; :meth:`choose` says which op runs them (its ``cpu_kernel`` /
    ``gpu_kernel`` resolved once per device by :func:`xnet.kernels.dispatch.resolve`): the Triton
    kernel (:mod:`xnet.kernels.xunit_triton`), the native CPU kernel (:mod:`xnet.kernels.xunit_native`),
    torch ops on row tiles of about ``tile_bytes`` per thread
    (:func:`xnet.kernels.xunit_gate.fused_xunit_tiled`) or, under autograd, tracing, compiling or
    export, :meth:`forward_reference`. With ``inplace`` the output overwrites the input (CPU paths).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 9,
        gate: str = "gaussian",
        relu: bool = True,
        *,
        in_scale: torch.Tensor | None = None,
        in_shift: torch.Tensor | None = None,
        dw_weight: torch.Tensor | None = None,
        dw_bias: torch.Tensor | None = None,
        mid_scale: torch.Tensor | None = None,
        mid_shift: torch.Tensor | None = None,
        out_scale: torch.Tensor | None = None,
        out_shift: torch.Tensor | None = None,
        tile_bytes: int = DEFAULT_TILE_BYTES,
    ) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"unknown xUnit gate {gate!r}; choose one of {GATES}")
        if (in_scale is None) != (in_shift is None):
            raise ValueError("in_scale and in_shift go together")
        self.channels = channels
        self.kernel_size = kernel_size
        self.gate_kind = gate
        self.relu = relu
        self.tile_bytes = int(tile_bytes)
        #: Overwrite the input with the output (eager inference only). ``fuse`` sets it when the
        #: input is a preceding conv's fresh output that nothing else reads.
        self.inplace = False
        self.cpu_kernel = "auto"
        #: threads for the native kernel (default: ``torch.get_num_threads()``)
        self.native_workers: int | None = None
        self.gpu_kernel = "auto"
        for name, value in (
            ("in_scale", in_scale),
            ("in_shift", in_shift),
            ("dw_weight", dw_weight),
            ("dw_bias", dw_bias),
            ("mid_scale", mid_scale),
            ("mid_shift", mid_shift),
            ("out_scale", out_scale),
            ("out_shift", out_shift),
        ):
            self.register_buffer(name, None if value is None else value.detach().clone())

    @property
    def cpu_kernel(self) -> str:
        """``auto``: the native CPU kernel when it applies and builds, else torch ops; ``native``:
        require it (error if unavailable); ``torch``: torch ops only."""
        return getattr(self, "_kernels", ("auto", "auto"))[0]

    @cpu_kernel.setter
    def cpu_kernel(self, choice: str) -> None:
        self._kernels = (choice, getattr(self, "_kernels", ("auto", "auto"))[1])
        self._resolved: dict[str, Impl] = {}

    @property
    def gpu_kernel(self) -> str:
        """``auto``: the Triton kernel for CUDA input when Triton imports, else torch ops;
        ``triton``: require it (on CPU input too, which only Triton's interpreter can run);
        ``torch``: torch ops only."""
        return getattr(self, "_kernels", ("auto", "auto"))[1]

    @gpu_kernel.setter
    def gpu_kernel(self, choice: str) -> None:
        self._kernels = (getattr(self, "_kernels", ("auto", "auto"))[0], choice)
        self._resolved = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_xunit(cls, unit: XUnit, tile_bytes: int = DEFAULT_TILE_BYTES) -> FusedXUnit:
        dtype = next((t.dtype for t in unit.state_dict().values() if t.is_floating_point()), torch.float32)
        in_scale = in_shift = None
        if isinstance(unit.pre_norm, _BN):
            in_scale, in_shift = (t.to(dtype) for t in bn_affine(unit.pre_norm))
        post = bn_affine(unit.post_norm) if isinstance(unit.post_norm, _BN) else None
        dw_weight = dw_bias = mid_scale = mid_shift = None
        if isinstance(unit.depthwise, nn.Conv2d):
            w, b = unit.depthwise.weight.detach(), unit.depthwise.bias
            if post is not None:
                w, b = _output_affine(w, b, *post)
            dw_weight = w.to(dtype)
            dw_bias = None if b is None else b.detach().to(dtype)
        elif post is not None:
            mid_scale, mid_shift = (t.to(dtype) for t in post)
        return cls(
            unit.channels,
            unit.kernel_size,
            unit.gate_kind,
            isinstance(unit.relu, nn.ReLU),
            in_scale=in_scale,
            in_shift=in_shift,
            dw_weight=dw_weight,
            dw_bias=dw_bias,
            mid_scale=mid_scale,
            mid_shift=mid_shift,
            tile_bytes=tile_bytes,
        )

    def absorb_output_affine(self, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
        """Compose ``y ↦ y·scale + shift`` (e.g. the following BN) into the output multiply."""
        dtype = next((b.dtype for b in self.buffers() if b.is_floating_point()), torch.get_default_dtype())
        out_scale = None if self.out_scale is None else self.out_scale.double()
        out_shift = None if self.out_shift is None else self.out_shift.double()
        if scale is not None:
            scale = scale.double()
            out_scale = scale if out_scale is None else out_scale * scale
            out_shift = None if out_shift is None else out_shift * scale
        if shift is not None:
            shift = shift.double()
            out_shift = shift if out_shift is None else out_shift + shift
        self.out_scale = None if out_scale is None else out_scale.to(dtype)
        self.out_shift = None if out_shift is None else out_shift.to(dtype)

    # ------------------------------------------------------------------ forward
    def terms(self) -> FusedTerms:
        """This unit's folded tensors, as the ops in :mod:`xnet.kernels.xunit_gate` take them."""
        return FusedTerms(
            self.kernel_size,
            self.gate_kind,
            self.relu,
            self.in_scale,
            self.in_shift,
            self.dw_weight,
            self.dw_bias,
            self.mid_scale,
            self.mid_shift,
            self.out_scale,
            self.out_shift,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        terms = self.terms()
        impl = self.choose(x, terms)
        if impl is Impl.TRITON:
            return fused_xunit_triton(x, terms)
        if impl is Impl.NATIVE:
            return fused_xunit_native(x, terms, native_kernel(), inplace=self.inplace, workers=self.native_workers)
        if impl is Impl.TILED:
            return fused_xunit_tiled(x, terms, self.tile_bytes, inplace=self.inplace)
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Out-of-place reference: what ``torch.compile`` fuses and ONNX export records."""
        return fused_xunit_reference(x, self.terms())

    def choose(self, x: torch.Tensor, terms: FusedTerms | None = None, **ready: Any) -> Impl:
        """How this unit runs on ``x``: the reference under autograd, tracing, compiling or export;
        else ``cpu_kernel`` (CPU input) or ``gpu_kernel`` (CUDA input, or any when ``triton``) as
        :func:`xnet.kernels.dispatch.resolve` resolves it on the first call per device (``ready``,
        for tests, goes to it and skips the cache)."""
        if (torch.is_grad_enabled() and x.requires_grad) or functional_only() or x.dim() != 4:
            return Impl.EAGER  # what compile fuses and export records
        terms = self.terms() if terms is None else terms
        choice = self.gpu_kernel if self.gpu_kernel == "triton" or x.device.type != "cpu" else self.cpu_kernel
        resolved = self.__dict__.setdefault("_resolved", {})
        impl = None if ready else resolved.get(x.device.type)
        if impl is None:
            target = Target(
                "fused_xunit",
                choice,
                x.device.type,
                interpreting=triton_interpreting(),
                native_fits=_native_terms(terms) and self.channels % 16 == 0,
                triton_fits=_on_device(terms, x),
            )
            impl = resolve(target, **ready)
            if not ready:
                resolved[x.device.type] = impl
        if impl in (Impl.NATIVE, Impl.TRITON) and not runs_now(impl, x):
            if choice != "auto":
                layout = "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "NCHW"
                raise RuntimeError(f"the {impl.value} xUnit kernel cannot take this input ({x.dtype}, {layout})")
            return Impl.TILED
        return impl

    def extra_repr(self) -> str:
        terms = [f"channels={self.channels}", f"kernel_size={self.kernel_size}", f"gate={self.gate_kind}"]
        for name in ("in_scale", "relu", "dw_weight", "mid_scale", "out_scale", "out_shift"):
            if getattr(self, name) is not None and getattr(self, name) is not False:
                terms.append(name)
        return ", ".join(terms)


def _native_terms(t: FusedTerms) -> bool:
    """The native kernel's terms: a depthwise conv, every tensor float32 on the CPU."""
    tensors = (t.in_scale, t.in_shift, t.dw_weight, t.dw_bias, t.out_scale, t.out_shift)
    alike = all(v.dtype == torch.float32 and v.device.type == "cpu" for v in tensors if v is not None)
    return t.dw_weight is not None and alike


def _on_device(t: FusedTerms, x: torch.Tensor) -> bool:
    """Every tensor of ``t`` on ``x``'s device (the Triton kernel's terms)."""
    return all(v.device == x.device for v in t if isinstance(v, torch.Tensor))


# ---------------------------------------------------------------------- graph rewriting
def _absorbs_output_affine(m: nn.Module | None) -> bool:
    return isinstance(m, (FusedXUnit, ChannelAffine, nn.Conv2d))


def _absorb_into_previous(prev: nn.Module, scale: torch.Tensor | None, shift: torch.Tensor | None) -> nn.Module:
    """``prev`` followed by ``y·scale + shift``, as one module (exact)."""
    if isinstance(prev, nn.Conv2d):
        return _new_conv(prev, *_output_affine(prev.weight, prev.bias, scale, shift))
    prev.absorb_output_affine(scale, shift)
    return prev


def _fuse_sequence(mods: list[nn.Module], tile_bytes: int) -> list[nn.Module]:
    out: list[nn.Module] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Identity):
            i += 1
            continue
        if isinstance(m, nn.Conv2d) and isinstance(nxt, _BN):
            out.append(fold_conv_bn(m, nxt))
            i += 2
            continue
        if isinstance(m, _BN):
            scale, shift = bn_affine(m)
            prev = out[-1] if out else None
            if _absorbs_output_affine(prev):
                # Into the preceding op's output (the xUnit's multiply becomes x·g·s + t): exact.
                out[-1] = _absorb_into_previous(prev, scale, shift)
            elif isinstance(nxt, nn.Conv2d) and _shift_folds_into_bias(nxt):
                out.append(fold_affine_into_conv(nxt, scale, shift))
                i += 1
            else:
                # A zero-padded conv reads zeros at the border, not the BN's shift: keep the BN
                # as a per-channel affine op (exact, one memory pass).
                out.append(ChannelAffine.from_bn(m))
            i += 1
            continue
        fresh_input = bool(out) and isinstance(out[-1], nn.Conv2d)  # nothing else reads it
        if isinstance(m, nn.ReLU) and fresh_input and not m.inplace:
            out.append(nn.ReLU(inplace=True))
            i += 1
            continue
        fused = _fuse_module(m, tile_bytes)
        if isinstance(fused, FusedXUnit) and fresh_input:
            fused.inplace = True
        out.append(fused)
        i += 1
    return out


def _fuse_module(m: nn.Module, tile_bytes: int) -> nn.Module:
    if isinstance(m, XUnit):  # FReLU's funnel (combine="max") has no fused kernel: it runs as trained
        return FusedXUnit.from_xunit(m, tile_bytes=tile_bytes) if m.combine == "product" else m
    if isinstance(m, _BN):
        return ChannelAffine.from_bn(m)
    if isinstance(m, nn.Sequential):
        return nn.Sequential(*_fuse_sequence(list(m.children()), tile_bytes))
    for name, child in list(m.named_children()):
        setattr(m, name, _fuse_module(child, tile_bytes))
    return m


class Deployed(nn.Module):
    """A fused body plus its input layout (channels_last) and, optionally, a compiled twin.

    Inference only: the forward runs under ``torch.no_grad()`` unless the input requires grad.
    ``body`` is the eager fused module (always available); ``compiled`` the ``torch.compile``
    wrapper, or ``None``. The compiled twin is not registered as a submodule, so ``state_dict``
    is the body's.
    """

    def __init__(self, body: nn.Module, channels_last: bool, compiled: Any = None) -> None:
        super().__init__()
        self.body = body
        self.channels_last = channels_last
        object.__setattr__(self, "compiled", compiled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled() and x.requires_grad:
            y = self.body(x)
        else:
            with torch.no_grad():
                y = self._run(x)
        if self.channels_last and y.dim() == 4:
            y = y.contiguous()
        return y

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self.compiled
        if compiled is None or functional_only():  # inside another trace: the eager body records
            return self.body(x)
        try:
            return compiled(x)
        except Exception as exc:
            warnings.warn(
                f"torch.compile of the fused model failed ({type(exc).__name__}: {exc}); using eager", stacklevel=3
            )
            object.__setattr__(self, "compiled", None)
            return self.body(x)


def fuse(
    model: nn.Module,
    *,
    channels_last: bool = True,
    compile: bool = False,
    compile_options: dict[str, Any] | None = None,
    dynamic: bool | None = None,
    tile_bytes: int = DEFAULT_TILE_BYTES,
    cpu_kernel: str = "auto",
    gpu_kernel: str = "auto",
) -> Deployed:
    """Deployment copy of ``model``: BatchNorms folded, xUnits fused, channels_last, eval mode.

    Args:
        model: any module built from Conv2d / BatchNorm2d / XUnit / activations; Sequentials are
            rewritten, other containers keep their ``forward`` with their children fused.
        channels_last: store 4-D weights channels_last and convert the input.
        compile: wrap the fused body in ``torch.compile`` (falls back to eager on failure).
        compile_options: inductor options (default ``{"freezing": True}``: weights become
            constants, so convolutions are prepacked).
        dynamic: passed to ``torch.compile``.
        tile_bytes: FusedXUnit row-tile size for the torch-ops path (0: whole image at once).
        cpu_kernel: ``auto`` (default): eager CPU inference of float32 NHWC units with C % 16 == 0
            uses the one-pass native kernel (built on first use with the system C++ compiler,
            see :func:`native_kernel`), falling back to torch ops; ``native``: require it;
            ``torch``: torch ops only.
        gpu_kernel: ``auto`` (default): eager CUDA inference runs each xUnit as one Triton kernel
            (:mod:`xnet.kernels.xunit_triton`) when Triton imports, else torch ops; ``triton``:
            require it; ``torch``: torch ops only.
    """
    if cpu_kernel not in {"auto", "native", "torch"}:
        raise ValueError(f"cpu_kernel must be auto, native or torch, got {cpu_kernel!r}")
    if gpu_kernel not in {"auto", "triton", "torch"}:
        raise ValueError(f"gpu_kernel must be auto, triton or torch, got {gpu_kernel!r}")
    if isinstance(model, Deployed):
        raise TypeError("model is already fused")
    model = getattr(model, "_orig_mod", model)  # an OptimizedModule from torch.compile
    body = copy.deepcopy(model).eval()
    body = _fuse_module(body, tile_bytes)
    for p in body.parameters():
        p.requires_grad_(False)
    for m in body.modules():
        if isinstance(m, FusedXUnit):
            m.cpu_kernel = cpu_kernel
            m.gpu_kernel = gpu_kernel
    body.eval()
    if channels_last:
        body = body.to(memory_format=torch.channels_last)
    compiled = None
    if compile:
        options = {"freezing": True} if compile_options is None else dict(compile_options)
        try:
            compiled = torch.compile(body, dynamic=dynamic, options=options)
        except Exception as exc:
            warnings.warn(f"torch.compile unavailable ({exc}); using the eager fused model", stacklevel=2)
    return Deployed(body, channels_last=channels_last, compiled=compiled)


@torch.no_grad()
def max_abs_diff(
    reference: nn.Module,
    candidate: nn.Module,
    inputs: torch.Tensor | Iterable[torch.Tensor],
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> float:
    """Largest ``|reference(x) - candidate(x)|`` over ``inputs``, after clipping to ``clip``."""
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    worst = 0.0
    for x in inputs:
        a, b = reference(x), candidate(x)
        if clip is not None:
            a, b = a.clamp(*clip), b.clamp(*clip)
        worst = max(worst, (a.float() - b.float()).abs().max().item())
    return worst if math.isfinite(worst) else float("inf")
