"""Memory-lean xUnit: same forward, gradients and BN statistics as the plain module."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from helpers_xunit import VARIANTS, randomise, single_thread  # noqa: F401 - single_thread: autouse fixture
from torch import nn

from xnet.archs.dncnn import XDnCNN
from xnet.archs.xunit import GATES, XUnit
from xnet.kernels.xunit_autograd import XUnitLeanFunction, _slots

TOL = 1e-5


def _pair(**opts):
    plain = randomise(XUnit(4, **opts)).train()
    lean = copy.deepcopy(plain)
    lean.memory_lean = True
    return plain, lean


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b)) if a else 0.0


def _step(unit: nn.Module, x: torch.Tensor, gy: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    y = unit(x)
    y.backward(gy)
    return y.detach(), x.grad, [p.grad for p in unit.parameters()]


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("pre_norm,relu,depthwise,post_norm", VARIANTS)
def test_lean_matches_plain(pre_norm: bool, relu: bool, depthwise: bool, post_norm: bool, gate: str) -> None:
    torch.manual_seed(0)
    opts = dict(pre_norm=pre_norm, relu=relu, depthwise=depthwise, post_norm=post_norm, gate=gate)
    plain, lean = _pair(kernel_size=3, **opts)
    x, gy = torch.randn(3, 4, 7, 6), torch.randn(3, 4, 7, 6)
    for mode in ("train", "eval"):
        getattr(plain, mode)()
        getattr(lean, mode)()
        ya, gxa, gpa = _step(plain, x, gy)
        yb, gxb, gpb = _step(lean, x, gy)
        assert (ya - yb).abs().max() <= TOL
        assert (gxa - gxb).abs().max() <= TOL
        assert _max_diff(gpa, gpb) <= TOL
        # running statistics (and num_batches_tracked) updated exactly once, identically
        for (name, a), (_, b) in zip(plain.named_buffers(), lean.named_buffers()):
            assert torch.equal(a, b), name
        plain.zero_grad()
        lean.zero_grad()


def test_depthwise_bias_variant() -> None:
    plain, lean = _pair(kernel_size=3, bias=True)
    x, gy = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    _, gxa, gpa = _step(plain.train(), x, gy)
    _, gxb, gpb = _step(lean.train(), x, gy)
    assert (gxa - gxb).abs().max() <= TOL and _max_diff(gpa, gpb) <= TOL


@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(gate="sigmoid", pre_norm=False),
        dict(gate="tanh", relu=False, post_norm=False),
        dict(gate="identity", depthwise=False),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_float64(opts: dict, training: bool) -> None:
    torch.manual_seed(0)
    unit = randomise(XUnit(3, kernel_size=3, **opts)).double().train(training)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    slots = list(_slots(unit))

    def fn(x, *params):  # params are the unit's own tensors: gradcheck perturbs them in place
        return XUnitLeanFunction.apply(x, unit, *params)

    assert torch.autograd.gradcheck(fn, (x, *slots), eps=1e-6, atol=1e-5)


def test_only_parameters_require_grad() -> None:
    plain, lean = _pair(kernel_size=3)
    x, gy = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    plain(x).backward(gy)
    lean(x).backward(gy)
    assert _max_diff([p.grad for p in plain.parameters()], [p.grad for p in lean.parameters()]) <= TOL


def test_frozen_parameters_and_no_grad() -> None:
    plain, lean = _pair(kernel_size=3)
    for p in itertools.chain(plain.parameters(), lean.parameters()):
        p.requires_grad_(False)
    x, gy = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    _, gxa, _ = _step(plain, x, gy)
    _, gxb, _ = _step(lean, x, gy)
    assert (gxa - gxb).abs().max() <= TOL
    with torch.no_grad():  # no graph: the plain path runs
        assert lean(x).grad_fn is None


def test_momentum_none_counts_each_forward_once() -> None:
    plain = randomise(XUnit(4, kernel_size=3)).train()
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: depends on num_batches_tracked
    lean = copy.deepcopy(plain)
    lean.memory_lean = True
    for seed in range(3):
        x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(seed))
        _step(plain, x, torch.ones(2, 4, 5, 5))
        _step(lean, x, torch.ones(2, 4, 5, 5))
    for (name, a), (_, b) in zip(plain.named_buffers(), lean.named_buffers()):
        assert torch.equal(a, b), name
    assert lean.pre_norm.num_batches_tracked.item() == 3


def test_saves_only_the_input() -> None:
    def saved_bytes(unit: nn.Module, x: torch.Tensor) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            unit(x).sum()
        return sum(seen.values())

    plain, lean = _pair(kernel_size=3)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    lean_bytes, plain_bytes = saved_bytes(lean.train(), x), saved_bytes(plain.train(), x)
    assert lean_bytes <= x.numel() * x.element_size() + 4096
    assert plain_bytes >= 4 * x.numel() * x.element_size()


def test_xdncnn_training_step_identical() -> None:
    torch.manual_seed(0)
    plain = XDnCNN(num_blocks=2, width=6, xunit={"kernel_size": 3})
    lean = XDnCNN(num_blocks=2, width=6, xunit={"kernel_size": 3, "memory_lean": True})
    lean.load_state_dict(plain.state_dict())
    assert all(m.memory_lean for m in lean.modules() if isinstance(m, XUnit))
    x = torch.randn(3, 1, 12, 12)
    target = torch.randn(3, 1, 12, 12)
    for model in (plain, lean):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
    for (name, a), (_, b) in zip(plain.state_dict().items(), lean.state_dict().items()):
        assert (a.float() - b.float()).abs().max() <= TOL, name


def test_cpu_autocast_recompute_uses_the_same_precision() -> None:
    plain, lean = _pair(kernel_size=3)
    x, gy = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, gxa, gpa = _step(plain.train(), x, gy)
        yb, gxb, gpb = _step(lean.train(), x, gy)
    assert (ya.float() - yb.float()).abs().max() <= TOL
    assert (gxa - gxb).abs().max() <= TOL and _max_diff(gpa, gpb) <= TOL


def test_repr_and_default_off() -> None:
    assert "memory_lean" not in repr(XUnit(4))
    assert "memory_lean=True" in repr(XUnit(4, memory_lean=True))
    assert XUnit(4).memory_lean is False
