"""Shared set-up of the xUnit / deploy / ONNX tests (``from helpers_xunit import ...``).

``single_thread`` is an autouse fixture: importing it into a test module applies it to every test
there.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

#: every (pre_norm, relu, depthwise, post_norm) switch combination of an xUnit
VARIANTS = list(itertools.product([True, False], repeat=4))


@pytest.fixture(autouse=True)
def single_thread():
    """Run the test on one intra-op thread, restoring the previous count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN running stats / affine and conv biases, so folding and BN gradients are
    really exercised. Returns ``model`` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.3)
                # both signs of the scale: a negative gamma flips the pre-ReLU affine
                sign = torch.where(torch.rand(c, generator=g) < 0.2, -1.0, 1.0)
                m.weight.copy_((torch.rand(c, generator=g) + 0.5) * sign)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()
