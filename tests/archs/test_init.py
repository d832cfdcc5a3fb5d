"""xnet.archs.init: the ``init`` key draws every model's first weights by one scheme."""

import math

import pytest
import torch

from xnet.archs.init import initialise
from xnet.archs.plain import ConvNet, XNet
from xnet.protocol.errors import ConfigError


def test_legacy_init_is_pytorch_03s_bn_uniform_and_conv_fan_in_ignoring_groups():
    torch.manual_seed(0)
    net = initialise(XNet(depth=4, width=32, kernel_size=3, channels=1, xunit={"kernel_size": 9}), "legacy")
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(float(m.weight.min()) >= 0 and float(m.weight.max()) <= 1 and not m.bias.any() for m in bns)
    assert float(torch.cat([m.weight for m in bns]).std()) > 0.2  # uniform, not all ones
    depthwise = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    bound = 1 / math.sqrt(32 * 81)  # C_in · r², groups ignored: √32 smaller than today's 1/9
    assert depthwise and all(float(m.weight.abs().max()) <= bound for m in depthwise)
    assert float(depthwise[0].weight.abs().max()) > 0.8 * bound


def test_torch_init_keeps_the_modules_defaults_and_is_reproducible():
    torch.manual_seed(1)
    a = initialise(ConvNet(depth=3, width=8, kernel_size=3, channels=1), "torch")
    torch.manual_seed(1)
    b = ConvNet(depth=3, width=8, kernel_size=3, channels=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert all(float(m.weight.min()) == 1 for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_an_unknown_scheme_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="init=kaiming"):
        initialise(ConvNet(depth=3, width=8, kernel_size=3, channels=1), "kaiming")
