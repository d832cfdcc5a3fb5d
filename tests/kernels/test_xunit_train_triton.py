"""The whole xUnit in training as Triton kernels (``xunit.impl=triton``): output, input gradient,
every parameter's gradient and the BatchNorms' running statistics equal the eager module's (in
float64) for each switch the configs use, at awkward shapes (C = 1, 3, 64, 96; r = 1, 3, 9, 11; H and
W not multiples of any tile; NCHW and channels_last; eval-mode BNs; memory-lean), in fp32 and bf16;
and a whole xDnCNN training step (loss, gradients, BN statistics, an optimiser step) with the kernels
equals the eager one. Without a GPU the kernels run under Triton's CPU interpreter in a subprocess."""

from __future__ import annotations

import pytest
import torch
from helpers_triton import needs_triton, run_interpreted

_UNITS = """
    import copy, json, torch
    from helpers_xunit import randomise
    from xnet.archs.xunit import XUnit
    from xnet.kernels.xunit_train_triton import xunit_triton_train

    def relerr(a, ref):  # max error relative to the reference's largest magnitude
        return float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))

    def step(unit, x, fn, backward):
        xx = x.clone().requires_grad_()
        y = fn(unit, xx)
        backward(y)
        grads = {k: p.grad for k, p in unit.named_parameters() if p.grad is not None}
        return y.detach(), xx.grad, grads, {k: b for k, b in unit.named_buffers() if b.is_floating_point()}

    # (switches, C, r, N, H, W, dtype, channels_last, lean, train): the configs' variants
    cases = [
        ({}, 3, 3, 2, 7, 9, "float32", True, False, True),
        # r = 1 without the second BN (with it, BN2 makes a 1×1 weight's gradient exactly zero)
        ({"pre_norm": False, "post_norm": False, "gate": "tanh"}, 1, 1, 3, 5, 6, "float32", False, False, True),
        ({"post_norm": False, "gate": "sigmoid"}, 96, 11, 1, 5, 13, "float32", True, True, True),
        ({"relu": False, "gate": "identity"}, 64, 9, 2, 4, 11, "float32", False, True, True),
        ({}, 16, 5, 2, 6, 7, "float32", True, False, False),  # eval-mode BNs: running statistics
        ({}, 64, 9, 2, 5, 11, "bfloat16", True, False, True),
        ({"pre_norm": False}, 3, 3, 2, 6, 5, "bfloat16", True, True, True),
    ]
    out = {}
    for i, (opts, c, r, n, h, w, dtype, cl, lean, train) in enumerate(cases):
        unit = randomise(XUnit(c, kernel_size=r, **opts), seed=i).train(train)
        ref_unit = copy.deepcopy(unit).double()
        g = torch.Generator().manual_seed(i)
        x = torch.randn(n, c, h, w, generator=g) * 1.3 + 0.2
        x = (x.contiguous(memory_format=torch.channels_last) if cl else x).to(getattr(torch, dtype))
        gy = torch.randn(x.shape, generator=g)
        backward = (lambda y: y.float().mean().backward()) if i == 0 else (lambda y: (y.float() * gy).sum().backward())
        a = step(unit, x, lambda u, v: xunit_triton_train(u, v, lean), backward)
        b = step(ref_unit, x.double(), lambda u, v: v * u.weight_map(v), lambda y: backward(y))
        errs = {"y": relerr(a[0], b[0]), "grad_x": relerr(a[1], b[1])}
        errs.update({f"grad_{k}": relerr(a[2][k], b[2][k]) for k in b[2]})
        errs.update({k: relerr(a[3][k], b[3][k]) for k in b[3]})
        bns = [(m, n) for m, n in zip(unit.modules(), ref_unit.modules()) if hasattr(m, "num_batches_tracked")]
        counts = [(int(m.num_batches_tracked), int(n.num_batches_tracked)) for m, n in bns]
        out[f"{i}:{opts}:C{c}:r{r}:{dtype}"] = {
            "errs": errs, "grads": sorted(a[2]) == sorted(b[2]), "dtype": str(a[0].dtype),
            "strides": a[0].stride() == x.stride(),
            "counts_equal": all(p == q for p, q in counts), "counted": sum(p for p, _ in counts),
        }
    print("RESULT" + json.dumps(out))
"""

_MODEL_STEP = """
    import copy, json, torch
    import torch.nn.functional as F
    from helpers_xunit import randomise
    from xnet.archs.common import Restorer
    from xnet.archs.dncnn import XDnCNN
    from xnet.archs.xunit import XUnit
    from xnet.kernels.dispatch import Impl

    torch.manual_seed(0)
    base = Restorer(XDnCNN(channels=1, num_blocks=2, width=16, xunit={"kernel_size": 5}), residual=True)
    base = randomise(base).train()
    g = torch.Generator().manual_seed(1)
    target = torch.rand(3, 1, 11, 13, generator=g)
    noisy = (target + 0.1 * torch.randn(target.shape, generator=g)).contiguous(memory_format=torch.channels_last)
    runs = {}
    for impl in ("triton", "torch"):
        model = copy.deepcopy(base).to(memory_format=torch.channels_last)
        units = [m for m in model.modules() if isinstance(m, XUnit)]
        for m in units:
            m.impl = impl
        opt = torch.optim.SGD(model.parameters(), lr=0.1)  # linear in the gradients (Adam magnifies ~0 ones)
        loss = F.mse_loss(model(noisy), target)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        opt.step()
        runs[impl] = (loss.item(), grads, copy.deepcopy(model.state_dict()))
        runs[impl + "_impl"] = [m.implementation(torch.zeros(1, 16, 11, 13)).value for m in units]
    (la, ga, sa), (lb, gb, sb) = runs["triton"], runs["torch"]
    out = {
        "impl": runs["triton_impl"], "torch_impl": runs["torch_impl"], "loss": abs(la - lb) / lb,
        "grads": max(float((ga[k] - gb[k]).abs().max() / gb[k].abs().max().clamp_min(1e-12)) for k in gb),
        "state": max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sb),
        "params": len(gb),
    }
    print("RESULT" + json.dumps(out))
"""


@needs_triton
@pytest.mark.slow
def test_the_fused_xunit_matches_eager_interpreted() -> None:
    result = run_interpreted(_UNITS)
    assert len(result) == 7
    for case, r in result.items():
        bf16 = "bfloat16" in case
        assert r["grads"] and r["strides"] and r["dtype"] == ("torch.bfloat16" if bf16 else "torch.float32"), case
        for name, err in r["errs"].items():
            # fp32: float32 arithmetic against float64. bf16: c, gc and ga are stored in bf16 between kernels
            # (as eager autocast stores its activations), each a truncating cast in the interpreter
            tol = (2**-5 if name.startswith("grad") else 2**-6) if bf16 else 1e-4
            assert err <= tol, (case, name, err)
        assert r["counts_equal"], case  # num_batches_tracked: once per training forward, never in eval
    assert [r["counted"] for r in result.values()] == [2, 0, 1, 2, 0, 2, 1]


@needs_triton
def test_an_xdncnn_training_step_with_the_kernels_equals_eager_interpreted() -> None:
    """Conv → xUnit → BN → Conv ... through Restorer, MSE, backward and an SGD step: xunit.impl=triton
    (each unit resolved to the fused kernels) against impl=torch."""
    result = run_interpreted(_MODEL_STEP)
    assert result["impl"] == ["triton"] * 3 and result["torch_impl"] == ["eager"] * 3
    assert result["params"] > 10
    assert result["loss"] <= 1e-6
    assert result["grads"] <= 1e-4
    assert result["state"] <= 1e-6  # weights after the step, BN running statistics, batch counts


@pytest.mark.cuda
@needs_triton
@pytest.mark.parametrize("lean", [False, True])
def test_the_fused_xunit_on_cuda(lean: bool) -> None:
    """A training-size unit on the GPU: fp32 against the eager module without TF32, bf16 under autocast."""
    import copy

    from helpers_xunit import randomise

    from xnet.archs.xunit import XUnit

    torch.backends.cudnn.allow_tf32 = False
    unit = randomise(XUnit(64, kernel_size=9, memory_lean=lean), seed=3).cuda().train()
    ref = copy.deepcopy(unit)
    ref.impl, unit.impl = "torch", "triton"
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(8, 64, 40, 47, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
    outs = []
    for m in (unit, ref):
        xx = x.clone().requires_grad_()
        y = m(xx)
        (y * torch.linspace(-1, 1, y.numel(), device="cuda").view_as(y)).sum().backward()
        outs.append([y.detach(), xx.grad, *(p.grad for p in m.parameters())])
    for a, b in zip(*outs):
        assert (a - b).abs().max() <= 1e-3 * max(1.0, b.abs().max().item())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y16 = unit(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and ((y16.float() - outs[1][0]).abs().max() / outs[1][0].abs().max()) <= 2**-5
