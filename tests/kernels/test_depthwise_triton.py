"""Triton depthwise-conv kernels (forward, input and weight gradients): equal to torch's convolution in
float64 at awkward shapes — H and W not multiples of any tile, C = 1, 3, 64, 96 (partial channel
blocks), r = 1, 3, 9, 11, both layouts, fp32 and bf16, every tile configuration — and with the xUnit's
first BN and ReLU fused into their loads. Without a GPU they run under Triton's CPU interpreter (in a
subprocess); with CUDA also compiled against cuDNN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers_triton import needs_triton, run_interpreted

# bf16 outputs: the interpreter casts float32 to bf16 by truncation, not rounding to nearest, so one
# rounding of an output costs up to one ulp (2^-7 relative) rather than half of one
BF16_TOL = 2**-7

_INTERPRETED = """
    import json, torch, torch.nn.functional as F
    from xnet.kernels.depthwise_triton import TritonDepthwiseConv, depthwise_grad_weight_triton, depthwise_triton
    from xnet.kernels.triton_launch import CONFIGS

    def relmax(a, ref):
        return float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))

    out = {}
    # (C, r, H, W, channels_last, bias, dtype): every case awkward in H and W; cases take the tile
    # configurations in turn, so each configuration meets partial tiles
    cases = [(1, 3, 7, 19, False, True, "float32"), (3, 1, 5, 17, True, False, "float32"),
             (64, 9, 6, 11, True, True, "float32"), (96, 11, 5, 13, True, False, "float32"),
             (3, 3, 6, 9, True, True, "bfloat16"), (64, 9, 4, 11, False, False, "bfloat16")]
    for i, (c, r, h, w, cl, bias, dtype) in enumerate(cases):
        torch.manual_seed(i)
        dt = getattr(torch, dtype)
        u = torch.randn(2, c, h, w).to(dt)
        u = u.contiguous(memory_format=torch.channels_last) if cl else u
        wt, b, g = torch.randn(c, 1, r, r) / r, torch.randn(c) if bias else None, torch.randn(2, c, h, w).to(dt)
        conv_cfg = CONFIGS["dw_conv"][i % len(CONFIGS["dw_conv"])]
        wgrad_cfg = CONFIGS["dw_wgrad"][i % len(CONFIGS["dw_wgrad"])]
        y = depthwise_triton(u, wt, b, config=conv_cfg)[0]
        gu = depthwise_triton(g, wt.flip(-1, -2), config=conv_cfg)[0]
        gw = depthwise_grad_weight_triton(g, u, r, chunk_rows=3, config=wgrad_cfg)  # 2·H rows: a partial chunk
        u2, w2 = u.double().requires_grad_(), wt.double().requires_grad_()
        ref = F.conv2d(u2, w2, None if b is None else b.double(), padding=r // 2, groups=c)
        (ref * g.double()).sum().backward()
        out[f"C{c}_r{r}_{dtype}"] = {
            "y": relmax(y, ref.detach()), "grad_input": relmax(gu, u2.grad), "grad_weight": relmax(gw, w2.grad),
            "dtype_kept": y.dtype == dt and gu.dtype == dt,
            "layout_kept": y.stride() == u.stride() and gu.stride() == g.stride(),
        }
    # the autograd function (as DepthwiseConv2d(impl="triton") runs it), bias gradient included
    torch.manual_seed(9)
    u, wt, b = torch.randn(2, 16, 5, 7), torch.randn(16, 1, 5, 5), torch.randn(16)
    leaves = [t.clone().requires_grad_() for t in (u, wt, b)]
    refs = [t.double().requires_grad_() for t in (u, wt, b)]
    gy = torch.randn(2, 16, 5, 7)
    (TritonDepthwiseConv.apply(*leaves) * gy).sum().backward()
    (F.conv2d(refs[0], refs[1], refs[2], padding=2, groups=16) * gy.double()).sum().backward()
    out["autograd"] = max(relmax(a.grad, r.grad) for a, r in zip(leaves, refs))
    # BN1 + ReLU on the loads: DW(ReLU(u·s + t)), zero padding on ReLU(u·s + t) (not on u)
    s, t = torch.rand(16) + 0.5, torch.randn(16)
    coef = torch.stack([s, t])
    v = torch.relu(u.double() * s.double().view(1, -1, 1, 1) + t.double().view(1, -1, 1, 1))
    ref = F.conv2d(v, wt.double(), None, padding=2, groups=16)
    y, parts = depthwise_triton(u, wt, coef=coef, relu=True, stats=True)
    gw = depthwise_grad_weight_triton(gy, u, 5, coef=coef, relu=True, chunk_rows=4)
    w2 = wt.double().requires_grad_()
    (F.conv2d(v, w2, None, padding=2, groups=16) * gy.double()).sum().backward()
    from xnet.kernels.depthwise_triton import combine_stats
    mean, var = combine_stats(parts, 7)
    out["fused_loads"] = {
        "y": relmax(y, ref), "grad_weight": relmax(gw, w2.grad),
        "mean": float((mean.double() - ref.mean((0, 2, 3))).abs().max()),
        "var": float((var.double() - ref.var((0, 2, 3), unbiased=False)).abs().max()),
    }
    print("RESULT" + json.dumps(out))
"""


@needs_triton
def test_triton_depthwise_matches_torch_interpreted() -> None:
    result = run_interpreted(_INTERPRETED)
    assert result.pop("autograd") <= 1e-5
    fused = result.pop("fused_loads")
    assert fused["y"] <= 1e-5 and fused["grad_weight"] <= 1e-5, fused
    assert fused["mean"] <= 1e-5 and fused["var"] <= 1e-5, fused
    assert len(result) == 6
    for case, r in result.items():
        assert r["dtype_kept"] and r["layout_kept"], case
        tol = BF16_TOL if "bfloat16" in case else 1e-5
        assert r["y"] <= tol and r["grad_input"] <= tol, (case, r)
        assert r["grad_weight"] <= (1e-4 if "bfloat16" in case else 1e-5), (case, r)  # float32 sums of bf16 inputs


@pytest.mark.cuda
@needs_triton
@pytest.mark.parametrize("r", [3, 9, 11])
def test_triton_depthwise_on_cuda(r: int) -> None:
    """Training-size tensors on the GPU: fp32 against cuDNN without TF32, bf16 within rounding."""
    from xnet.kernels.depthwise_triton import TritonDepthwiseConv

    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(8, 64, 40, 47, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 1, r, r, device="cuda", generator=g) / r
    b = torch.randn(64, device="cuda", generator=g)
    grads = []
    for fn in (TritonDepthwiseConv.apply, lambda a, c, d: F.conv2d(a, c, d, padding=r // 2, groups=64)):
        a, c, d = (t.clone().requires_grad_() for t in (u, w, b))
        y = fn(a, c, d)
        (y * torch.linspace(-1, 1, y.numel(), device="cuda").view_as(y)).sum().backward()
        grads.append((y.detach(), a.grad, c.grad, d.grad))
    for t, ref in zip(*grads):
        assert (t - ref).abs().max() <= 1e-3 * max(1.0, ref.abs().max().item()), r
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y16 = TritonDepthwiseConv.apply(u.bfloat16(), w, b)
    assert y16.dtype == torch.bfloat16
    assert ((y16.float() - grads[1][0]).abs().max() / grads[1][0].abs().max()) <= 2**-6
