"""Initial weights. ``torch``: today's PyTorch defaults (BN γ = 1; conv weights and biases
U(±1/√fan_in) with fan_in = C_in/groups · k²). ``legacy``: PyTorch ≤ 0.3's, what the xUnit authors trained
with (their weights are PyTorch-0.3 pickles): BN γ ~ U(0, 1), and fan_in = C_in · k² for every conv, groups
ignored, so a depthwise r×r conv starts √C_in times smaller. Chosen by the ``init`` config key, for every
model alike."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from xnet.protocol.errors import ConfigError


def keep_torch_defaults(net: nn.Module) -> None:
    """The modules were built with today's defaults: nothing to do."""


@torch.no_grad()
def legacy_torch_init(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            bound = 1.0 / math.sqrt(m.in_channels * math.prod(m.kernel_size))
            m.weight.uniform_(-bound, bound)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.weight.uniform_(0.0, 1.0)
            m.bias.zero_()


INITS: dict[str, Callable[[nn.Module], None]] = {"torch": keep_torch_defaults, "legacy": legacy_torch_init}


def initialise(net: nn.Module, scheme: str) -> nn.Module:
    """``net`` with its initial weights drawn by ``scheme`` (a key of :data:`INITS`), from torch's RNG."""
    if scheme not in INITS:
        raise ConfigError(f"init={scheme}: unknown initialisation; choose one of {sorted(INITS)}")
    INITS[scheme](net)
    return net
