"""xUnit: a learnable spatial activation, ``y = x * g(d)``, ``d = BN(DWConv(ReLU(BN(x))))``.

Every component is a switch so that the design variants of the paper's Fig 6 are configs, not code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from xnet.kernels.depthwise import DepthwiseConv2d
from xnet.kernels.dispatch import CHOICES, Impl, Target, resolve, runs_now
from xnet.kernels.gate import GATES, gate
from xnet.kernels.triton_launch import triton_interpreting
from xnet.kernels.xunit_autograd import xunit_lean
from xnet.kernels.xunit_train_triton import fits as triton_fits
from xnet.kernels.xunit_train_triton import xunit_triton_train

__all__ = ["COMBINES", "GATES", "DepthwiseConv2d", "XUnit", "XUnitConfig", "gate"]

#: how the unit's input and its weight map ``g`` make the output
COMBINES = ("product", "max")


@dataclass(frozen=True)
class XUnitConfig:
    """The switches of a model's xUnits (``model.net.xunit`` in the configs) and the one place their
    defaults live. Fig 6's variants, FReLU and the pointwise SiLU are values of it (``conf/xunit/``).

    Args:
        kernel_size: r, the depthwise kernel size (paper default 9).
        pre_norm: BatchNorm on the input before the ReLU (first BN).
        relu: ReLU before the depthwise convolution.
        depthwise: the r×r depthwise convolution (off: ``d`` is a pointwise function of x).
        post_norm: BatchNorm after the depthwise convolution (second BN).
        gate: ``gaussian`` (paper), ``sigmoid``, ``tanh`` or ``identity``.
        combine: ``product`` — the xUnit, ``y = x · g``; ``max`` — FReLU's funnel, ``y = max(x, g)``.
        bias: bias in the depthwise conv; the paper's parameter convention does not count it, and a
            following BN makes it redundant, so it is on only when ``post_norm`` is off.
        memory_lean: when gradients are needed, save only the input for backward and recompute
            the gate there (:mod:`xnet.kernels.xunit_autograd`; with ``impl=triton`` the conv is
            recomputed); same values and gradients, BN running statistics updated once per forward.
            Off: the plain autograd graph.
        impl: the kernels that run the unit (:mod:`xnet.kernels.dispatch`), resolved once per
            device: ``auto`` (native depthwise kernels on CPU, cuDNN on CUDA), ``torch``, ``native``,
            ``nchw`` (CUDA) or ``triton`` (CUDA: the whole unit, forward and backward, as Triton
            kernels). Not part of the architecture: weights load whatever it says.
    """

    kernel_size: int = 9
    pre_norm: bool = True
    relu: bool = True
    depthwise: bool = True
    post_norm: bool = True
    gate: str = "gaussian"
    combine: str = "product"
    bias: bool | None = None
    memory_lean: bool = False
    impl: str = "auto"

    def __post_init__(self) -> None:
        if self.impl not in CHOICES["xunit"]:
            raise ValueError(f"unknown xUnit impl {self.impl!r}; choose one of {CHOICES['xunit']}")
        if self.gate not in GATES:
            raise ValueError(f"unknown xUnit gate {self.gate!r}; choose one of {GATES}")
        if self.combine not in COMBINES:
            raise ValueError(f"unknown xUnit combine {self.combine!r}; choose one of {COMBINES}")
        if self.kernel_size % 2 != 1 or self.kernel_size < 1:
            raise ValueError(f"xUnit kernel_size must be odd and positive, got {self.kernel_size}")

    @classmethod
    def of(cls, xunit: XUnitConfig | Mapping[str, Any] | None, **defaults: Any) -> XUnitConfig:
        """``xunit`` (a config node, as Hydra passes it) over the model's own ``defaults``."""
        if isinstance(xunit, XUnitConfig):
            return xunit
        values = {**defaults, **dict(xunit or {})}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown xUnit option(s) {unknown}; the options are {known}")
        return cls(**values)


class XUnit(nn.Module):
    """Spatial activation replacing the ReLU that follows a convolution: ``XUnit(channels, config)`` or
    ``XUnit(channels, kernel_size=3, ...)`` with :class:`XUnitConfig`'s fields (its defaults otherwise)."""

    def __init__(self, channels: int, config: XUnitConfig | None = None, **options: Any) -> None:
        super().__init__()
        config = config if config is not None else XUnitConfig(**options)
        self.channels = channels
        self.kernel_size = config.kernel_size
        self.gate_kind = config.gate
        self.combine = config.combine
        self.pre_norm = nn.BatchNorm2d(channels) if config.pre_norm else nn.Identity()
        self.relu = nn.ReLU() if config.relu else nn.Identity()
        use_bias = (not config.post_norm) if config.bias is None else config.bias
        conv_impl = config.impl if config.combine == "product" else "auto"  # FReLU's funnel runs as today
        self.depthwise: nn.Module = nn.Identity()
        if config.depthwise:
            self.depthwise = DepthwiseConv2d(channels, config.kernel_size, bias=use_bias, impl=conv_impl)
        self.post_norm = nn.BatchNorm2d(channels) if config.post_norm else nn.Identity()
        self.memory_lean = config.memory_lean
        self.impl = config.impl

    @property
    def impl(self) -> str:
        """The unit's ``XUnitConfig.impl``; setting it (e.g. the benchmark) resolves it afresh."""
        return getattr(self, "_impl_choice", "auto")

    @impl.setter
    def impl(self, choice: str) -> None:
        if choice not in CHOICES["xunit"]:
            raise ValueError(f"unknown xUnit impl {choice!r}; choose one of {CHOICES['xunit']}")
        self._impl_choice = choice
        self._resolved: dict[str, Impl] = {}
        if isinstance(self.depthwise, DepthwiseConv2d) and self.combine == "product":
            self.depthwise.impl = choice

    def implementation(self, x: torch.Tensor) -> Impl:
        """``TRITON`` where the whole unit runs as Triton kernels on this call, else ``EAGER`` (its
        modules, the depthwise conv by its own resolved kernels). Resolved on the first call per device."""
        resolved = getattr(self, "_resolved", {})
        impl = resolved.get(x.device.type)
        if impl is None:
            target = Target(
                "xunit",
                self.impl,
                x.device.type,
                interpreting=triton_interpreting(),
                native_fits=False,
                triton_fits=triton_fits(self),
            )
            impl = resolved[x.device.type] = resolve(target)
        return impl if impl is Impl.TRITON and runs_now(impl, x) else Impl.EAGER

    def weight_map(self, x: torch.Tensor) -> torch.Tensor:
        """The gate ``g`` (Fig 5's weight maps)."""
        d = self.post_norm(self.depthwise(self.relu(self.pre_norm(x))))
        return gate(d, self.gate_kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.combine == "max":  # FReLU: no fused or lean path computes the funnel
            return torch.maximum(x, self.weight_map(x))
        if self.implementation(x) is Impl.TRITON:
            return xunit_triton_train(self, x, lean=self.memory_lean)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if self.memory_lean and needs_grad:
            return xunit_lean(self, x)
        return x * self.weight_map(x)

    def extra_repr(self) -> str:
        extra = f", combine={self.combine}" if self.combine != "product" else ""
        extra += ", memory_lean=True" if self.memory_lean else ""
        extra += f", impl={self.impl}" if self.impl != "auto" else ""
        return f"channels={self.channels}, kernel_size={self.kernel_size}, gate={self.gate_kind}{extra}"
