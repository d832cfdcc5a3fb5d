"""Triton xUnit kernel: equal to the torch-ops reference for every variant a config can build.

Without a GPU the kernel runs under Triton's CPU interpreter (``TRITON_INTERPRET=1``, set in a
subprocess so that it cannot leak into other tests); with CUDA it also runs compiled.
"""

from __future__ import annotations

import os

import pytest
import torch
from helpers_triton import needs_triton, run_interpreted
from helpers_xunit import randomise, single_thread  # noqa: F401 - single_thread: autouse fixture

from xnet.archs.common import Restorer
from xnet.archs.dncnn import XDnCNN
from xnet.archs.xunit import XUnit
from xnet.deploy.fuse import FusedXUnit, fuse, max_abs_diff
from xnet.kernels.dispatch import Impl


def needs_cuda(fn):
    return pytest.mark.cuda(needs_triton(fn))


# Every gate; kernel sizes 1/3/9/11; each optional term on and off; no depthwise conv (then the mid
# affine); C = 1, 3, 24, 64, 96 (partial channel blocks); H and W not multiples of any tile; both
# layouts; every tile configuration in turn; bf16 input.
_INTERPRETED = """
    import json, torch
    from xnet.archs.common import Restorer
    from xnet.deploy.fuse import FusedXUnit, fuse, max_abs_diff
    from xnet.archs.dncnn import XDnCNN
    from xnet.archs.xunit import GATES, XUnit
    from xnet.kernels.triton_launch import CONFIGS
    from xnet.kernels.xunit_triton import fused_xunit_triton
    from helpers_xunit import randomise

    torch.manual_seed(0)
    cases = [(dict(gate=g), 24) for g in GATES]
    cases += [(dict(kernel_size=1), 1), (dict(kernel_size=9), 64), (dict(kernel_size=11), 96)]
    cases += [(dict(pre_norm=False, relu=False), 3), (dict(depthwise=False), 24)]
    cases += [(dict(depthwise=False, post_norm=False), 24), (dict(post_norm=False), 24)]
    out = {}
    for i, (opts, c) in enumerate(cases):
        unit = randomise(XUnit(c, **{"kernel_size": 3, **opts}), seed=i)
        fused = FusedXUnit.from_xunit(unit).eval()
        fused.absorb_output_affine(torch.rand(c) + 0.5, torch.randn(c))
        x = torch.randn(2, c, 5, 19)
        x = x.contiguous(memory_format=torch.channels_last) if i % 2 == 0 else x
        with torch.no_grad():
            y = fused_xunit_triton(x, fused.terms(), config=CONFIGS["xunit_fused"][i % len(CONFIGS["xunit_fused"])])
            out[f"{opts}:C{c}"] = (y - fused.forward_reference(x)).abs().max().item()
            assert y.stride() == x.stride()
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


@needs_triton
def test_triton_kernel_matches_reference_interpreted() -> None:
    result = run_interpreted(_INTERPRETED)
    assert result.pop("bf16_dtype") == "torch.bfloat16"
    assert result.pop("bf16_rel") <= 2**-7  # one bf16 cast of the output (truncating in the interpreter)
    assert len(result) == 12
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
        with pytest.raises(RuntimeError, match="Triton"), torch.no_grad():
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
