"""Triton xUnit kernel: equal to the torch-ops reference for every variant a config can build.

Without a GPU the kernel runs under Triton's CPU interpreter (``TRITON_INTERPRET=1``, set in a
subprocess so that it cannot leak into other tests); with CUDA it also runs compiled.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from xnet.archs.common import Restorer
from xnet.deploy.fuse import FusedXUnit, fuse, max_abs_diff
from xnet.archs.dncnn import XDnCNN
from xnet.archs.xunit import XUnit
from xnet.kernels.dispatch import Impl

from helpers_xunit import randomise, single_thread  # noqa: F401 - single_thread: autouse fixture

has_triton = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not has_triton, reason="triton not installed")
def needs_cuda(fn):
    return pytest.mark.cuda(pytest.mark.skipif(not has_triton, reason="needs triton")(fn))

# Every gate; kernel sizes 1/3/9; each optional term on and off; no depthwise conv (then the mid
# affine); a 24-channel width (a partial channel block), borders on every side; bf16 input.
_INTERPRETED = textwrap.dedent(
    """
    import itertools, json, torch
    from xnet.archs.common import Restorer
    from xnet.deploy.fuse import FusedXUnit, fuse, max_abs_diff
    from xnet.archs.dncnn import XDnCNN
    from xnet.archs.xunit import GATES, XUnit
    from xnet.kernels.xunit_triton import fused_xunit_triton
    from helpers_xunit import randomise

    torch.manual_seed(0)
    cases = [dict(gate=g) for g in GATES]
    cases += [dict(kernel_size=1), dict(kernel_size=9), dict(pre_norm=False, relu=False)]
    cases += [dict(depthwise=False), dict(depthwise=False, post_norm=False), dict(post_norm=False)]
    out = {}
    for i, opts in enumerate(cases):
        unit = randomise(XUnit(24, **{"kernel_size": 3, **opts}), seed=i)
        fused = FusedXUnit.from_xunit(unit).eval()
        fused.absorb_output_affine(torch.rand(24) + 0.5, torch.randn(24))
        fused.gpu_kernel = "triton"
        x = torch.randn(2, 24, 6, 13).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            y = fused(x)
            out[str(opts)] = (y - fused.forward_reference(x)).abs().max().item()
            assert y.is_contiguous(memory_format=torch.channels_last)
    x16 = torch.randn(1, 24, 5, 9).to(torch.bfloat16)
    with torch.no_grad():
        y16 = fused_xunit_triton(x16, fused.terms())
        ref = fused.forward_reference(x16.float())
    out["bf16_dtype"] = str(y16.dtype)
    out["bf16_rel"] = ((y16.float() - ref).abs().max() / ref.abs().max()).item()
    model = randomise(Restorer(XDnCNN(num_blocks=1, width=16, xunit={"kernel_size": 3}), residual=True))
    x = torch.rand(1, 1, 7, 10)
    out["model"] = max_abs_diff(model, fuse(model, gpu_kernel="triton"), x, clip=None)
    print("RESULT" + json.dumps(out))
    """
)


@needs_triton
def test_triton_kernel_matches_reference_interpreted() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.path.dirname(__file__) + "/.."}
    proc = subprocess.run(
        [sys.executable, "-c", _INTERPRETED], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result.pop("bf16_dtype") == "torch.bfloat16"
    assert result.pop("bf16_rel") <= 2**-7  # one bf16 rounding of the output
    assert len(result) == 11
    for case, diff in result.items():
        assert diff <= 1e-5, case


def test_triton_not_used_for_cpu_input_by_default() -> None:
    unit = randomise(XUnit(16, kernel_size=3))
    fused = FusedXUnit.from_xunit(unit).eval()
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():  # auto: CPU input takes the CPU paths, even where Triton imports
        assert fused.choose(x, triton_ready=lambda: True) is not Impl.TRITON
    if os.environ.get("TRITON_INTERPRET", "0") in {"", "0"}:
        fused.gpu_kernel = "triton"  # required, but CPU input without the interpreter: a clear error
        with pytest.raises(RuntimeError, match="Triton"):
            with torch.no_grad():
                fused(x)
    with pytest.raises(ValueError, match="gpu_kernel"):
        fuse(unit, gpu_kernel="cuda")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernel_in_model_on_cuda(dtype: torch.dtype) -> None:
    model = randomise(Restorer(XDnCNN(num_blocks=2, width=32), residual=True)).cuda()
    x = torch.rand(2, 1, 45, 37, device="cuda")
    triton_model, torch_model = fuse(model, gpu_kernel="triton"), fuse(model, gpu_kernel="torch")
    if dtype == torch.float32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        assert max_abs_diff(model, triton_model, x, clip=None) <= 1e-4
        assert max_abs_diff(torch_model, triton_model, x, clip=None) <= 1e-4
    else:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert max_abs_diff(torch_model, triton_model, x) <= 0.05
