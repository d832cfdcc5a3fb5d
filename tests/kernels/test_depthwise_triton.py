"""Triton depthwise-conv training kernels (forward, input and weight gradients): equal to torch's
convolution, through the autograd function and through an xUnit (plain and memory-lean) trained
with ``XNET_CUDA_DEPTHWISE=triton``. Without a GPU they run under Triton's CPU interpreter in a
subprocess (``TRITON_INTERPRET=1`` must not leak into other tests)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

has_triton = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not has_triton, reason="triton not installed")

_INTERPRETED = textwrap.dedent(
    """
    import json, torch, torch.nn.functional as F
    from xnet.kernels.depthwise_triton import TritonDepthwiseConv, depthwise_triton

    def compare(u, w, b):
        u1, w1 = u.clone().requires_grad_(), w.clone().requires_grad_()
        b1 = None if b is None else b.clone().requires_grad_()
        y = TritonDepthwiseConv.apply(u1, w1, b1)
        u2, w2 = u.double().requires_grad_(), w.double().requires_grad_()
        b2 = None if b is None else b.double().requires_grad_()
        y2 = F.conv2d(u2, w2, b2, padding=w.shape[-1] // 2, groups=w.shape[0])
        g = torch.randn(y2.shape, dtype=torch.float64)
        (y.double() * g).sum().backward()
        (y2 * g).sum().backward()
        diffs = [(y.double() - y2).abs().max(), (u1.grad.double() - u2.grad).abs().max(), (w1.grad.double() - w2.grad).abs().max()]
        if b is not None:
            diffs.append((b1.grad.double() - b2.grad).abs().max())
        return max(float(d) for d in diffs), y.is_contiguous(memory_format=torch.channels_last) == u.is_contiguous(memory_format=torch.channels_last)

    torch.manual_seed(0)
    out = {}
    # kernel sizes 1/3/9, a partial channel block (24, 40), borders on every side, both layouts,
    # more rows than a weight-gradient chunk (2 × 11 = 22 > 16)
    for r, c, h, w, cl, bias in [(3, 24, 11, 13, True, True), (9, 16, 7, 10, False, False), (1, 40, 5, 6, True, True), (5, 16, 11, 3, True, False)]:
        u = torch.randn(2, c, h, w)
        u = u.contiguous(memory_format=torch.channels_last) if cl else u
        out[f"r{r}_c{c}"] = compare(u, torch.randn(c, 1, r, r), torch.randn(c) if bias else None)
    u16 = torch.randn(1, 16, 6, 9).to(torch.bfloat16)
    w = torch.randn(16, 1, 3, 3)
    y16 = depthwise_triton(u16, w)
    ref = F.conv2d(u16.float(), w, padding=1, groups=16)
    out["bf16"] = [str(y16.dtype), float((y16.float() - ref).abs().max() / ref.abs().max())]

    # through an xUnit, plain and memory-lean: same loss and gradients as torch's convolution
    import xnet.kernels.depthwise as dw
    from xnet.archs.xunit import XUnit
    res = {}
    for lean in (False, True):
        for mode in ("triton", "torch"):
            dw.CUDA_LAYOUT = "triton" if mode == "triton" else "cudnn"
            torch.manual_seed(1)
            unit = XUnit(16, kernel_size=5, memory_lean=lean).train()
            x = torch.randn(2, 16, 9, 8, requires_grad=True)  # NCHW: the native CPU kernels do not take it
            loss = unit(x).square().mean()
            loss.backward()
            res[(lean, mode)] = (loss.item(), x.grad.clone(), unit.depthwise.weight.grad.clone())
        a, b = res[(lean, "triton")], res[(lean, "torch")]
        out[f"xunit_lean{lean}"] = max(abs(a[0] - b[0]), float((a[1] - b[1]).abs().max()), float((a[2] - b[2]).abs().max()))
    print("RESULT" + json.dumps(out))
    """
)


@needs_triton
@pytest.mark.slow
def test_triton_depthwise_matches_torch_interpreted() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.path.dirname(__file__) + "/../.."}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETED], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    dtype, rel = result.pop("bf16")
    assert dtype == "torch.bfloat16" and rel <= 2**-7  # one bf16 rounding of the output
    for case in ("xunit_leanFalse", "xunit_leanTrue"):
        assert result.pop(case) <= 1e-5, case
    assert len(result) == 4
    for case, (diff, layout_kept) in result.items():
        assert diff <= 1e-4 and layout_kept, (case, diff)


@pytest.mark.cuda
@needs_triton
@pytest.mark.parametrize("r", [3, 9])
def test_triton_depthwise_on_cuda(r: int) -> None:
    """Training-size tensors on the GPU: fp32 against cuDNN without TF32, bf16 within rounding."""
    from xnet.kernels.depthwise_triton import TritonDepthwiseConv

    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(8, 64, 40, 48, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 1, r, r, device="cuda", generator=g) / r
    b = torch.randn(64, device="cuda", generator=g)
    grads = []
    for fn in (lambda a, c, d: TritonDepthwiseConv.apply(a, c, d), lambda a, c, d: F.conv2d(a, c, d, padding=r // 2, groups=64)):
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


def test_triton_is_not_chosen_unless_asked() -> None:
    import xnet.kernels.depthwise as dw
    from xnet.archs.xunit import DepthwiseConv2d

    conv = DepthwiseConv2d(16, 3)
    assert dw.CUDA_LAYOUT in ("cudnn", "nchw", "triton")
    if dw.CUDA_LAYOUT != "triton":
        assert dw.choose_depthwise(torch.randn(1, 16, 5, 5), conv) is not dw.Impl.TRITON
