import itertools

import pytest
import torch

from xnet.archs.xunit import GATES, XUnit, gate


def direct_xunit(x, unit):
    """y = x * g(d), d = BN2(DWConv(ReLU(BN1(x)))), written out from the paper with eval-mode BN."""

    def bn(m, t):
        if isinstance(m, torch.nn.Identity):
            return t
        scale = m.weight / torch.sqrt(m.running_var + m.eps)
        return (t - m.running_mean[:, None, None]) * scale[:, None, None] + m.bias[:, None, None]

    h = bn(unit.pre_norm, x)
    h = torch.clamp(h, min=0) if isinstance(unit.relu, torch.nn.ReLU) else h
    if isinstance(unit.depthwise, torch.nn.Conv2d):
        w, r = unit.depthwise.weight, unit.kernel_size
        padded = torch.nn.functional.pad(h, [r // 2] * 4)
        d = torch.zeros_like(h)
        for i in range(r):
            for j in range(r):
                d += padded[..., i : i + h.shape[-2], j : j + h.shape[-1]] * w[:, 0, i, j][:, None, None]
        if unit.depthwise.bias is not None:
            d += unit.depthwise.bias[:, None, None]
    else:
        d = h
    d = bn(unit.post_norm, d)
    g = {"gaussian": torch.exp(-(d**2)), "sigmoid": 1 / (1 + torch.exp(-d)), "tanh": torch.tanh(d), "identity": d}[
        unit.gate_kind
    ]
    return x * g


def randomise_bn(unit):
    for m in unit.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)


@pytest.mark.parametrize(
    "pre_norm,relu,depthwise,post_norm,gate_kind",
    [
        c
        for c in itertools.product([True, False], [True, False], [True, False], [True, False], GATES)
        if c[2] or c[4] != "identity"
    ][:40],
)
def test_xunit_matches_direct_formula(pre_norm, relu, depthwise, post_norm, gate_kind):
    torch.manual_seed(0)
    unit = XUnit(
        4, kernel_size=3, pre_norm=pre_norm, relu=relu, depthwise=depthwise, post_norm=post_norm, gate=gate_kind
    ).double()
    randomise_bn(unit)
    unit.eval()
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(unit(x), direct_xunit(x, unit), rtol=1e-10, atol=1e-10)


def test_gaussian_gate_is_in_unit_interval_and_peaks_at_zero():
    d = torch.linspace(-4, 4, 81)
    g = gate(d, "gaussian")
    assert g.min() > 0 and g.max() == 1.0 and g[40] == 1.0


def test_paper_xunit_parameter_count():
    # BN(64) + 9x9 depthwise(64) + BN(64): 128 + 5184 + 128, no conv bias (a BN follows it)
    unit = XUnit(64, kernel_size=9)
    assert sum(p.numel() for p in unit.parameters()) == 5440
    assert unit.depthwise.bias is None


def test_bad_switches_are_refused():
    with pytest.raises(ValueError, match="gate"):
        XUnit(4, gate="relu")
    with pytest.raises(ValueError, match="odd"):
        XUnit(4, kernel_size=4)


def test_xunit_defaults_are_xunitconfigs():
    from dataclasses import fields

    from xnet.archs.xunit import XUnitConfig

    unit = XUnit(8)
    assert (
        unit.kernel_size == XUnitConfig.kernel_size == 9 and unit.gate_kind == "gaussian" and unit.combine == "product"
    )
    assert {f.name for f in fields(XUnitConfig)} >= {
        "kernel_size",
        "pre_norm",
        "relu",
        "depthwise",
        "post_norm",
        "gate",
        "combine",
    }
    with pytest.raises(ValueError, match="combine"):
        XUnit(4, combine="sum")


def test_frelu_is_the_funnel_max_of_x_and_bn_of_a_depthwise_conv():
    """conf/xunit/frelu.yaml: y = max(x, BN(DW3×3(x))) (Ma et al. 2020)."""
    from conftest import CONF
    from omegaconf import OmegaConf

    from xnet.archs.xunit import XUnitConfig

    cfg = XUnitConfig.of(OmegaConf.to_container(OmegaConf.load(CONF / "xunit" / "frelu.yaml")))
    unit = XUnit(4, cfg).double()
    randomise_bn(unit)
    unit.eval()
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    bn = unit.post_norm
    dw = torch.nn.functional.conv2d(x, unit.depthwise.weight, padding=1, groups=4)
    t = (dw - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var + bn.eps)[:, None, None] * bn.weight[
        :, None, None
    ] + bn.bias[:, None, None]
    torch.testing.assert_close(unit(x), torch.maximum(x, t), rtol=1e-12, atol=1e-12)
    assert unit.depthwise.bias is None and unit.kernel_size == 3
    assert sum(p.numel() for p in unit.parameters()) == 4 * 9 + 2 * 4  # DW 3×3 + the BN's affine


def test_silu_variant_is_pointwise_silu_with_no_parameters():
    from conftest import CONF
    from omegaconf import OmegaConf

    from xnet.archs.xunit import XUnitConfig

    unit = XUnit(4, XUnitConfig.of(OmegaConf.to_container(OmegaConf.load(CONF / "xunit" / "silu.yaml"))))
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(unit(x), torch.nn.functional.silu(x))
    assert sum(p.numel() for p in unit.parameters()) == 0
