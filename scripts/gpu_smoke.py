#!/usr/bin/env python
"""The GPU slot's smoke check (when the code the CUDA tests cover is unchanged since the slot that passed
them; see scripts/gpu_queue.py): the environment, then what training is about to run, on the device.

1. the xUnit depthwise convolution as training will run it (``XNET_CUDA_DEPTHWISE`` picks the CUDA
   implementation) against ``F.conv2d`` in fp32: forward, input and weight gradients;
2. a batch drawn on the device by the training sampler, and one xDnCNN training step under the training
   precision (bf16 autocast on CUDA) with fused Adam: finite loss, weights changed.

Prints one ``environment: {json}`` line first and ``smoke: ok`` last; exit 1 at the first failed check.

    python scripts/gpu_smoke.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def environment(torch) -> dict:
    """Versions read from the installed metadata (importing Lightning alone takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": ver("lightning"),
        "torchmetrics": ver("torchmetrics"),
        "triton": ver("triton"),
        "triton_key": triton_key(),
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpus": os.cpu_count(),
        "depthwise": os.environ.get("XNET_CUDA_DEPTHWISE", "cudnn"),
    }


def triton_key() -> str | None:
    """A fingerprint of the Triton build (its version, compiler sources and libtriton binary): a kernel cache
    made elsewhere is only ever hit by a Triton of the same fingerprint."""
    try:
        import hashlib

        from triton.runtime.cache import triton_key as key
    except ImportError:
        return None
    return hashlib.sha256(key().encode()).hexdigest()[:16]


def relative_error(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def check_depthwise(torch, device: str, tol: float) -> str:
    """The depthwise conv on activations of the training precision (bf16 on CUDA, as the layers before it
    hand them over under autocast; fp32 on CPU) against F.conv2d in fp64."""
    import torch.nn.functional as F

    from xnet.kernels.depthwise import DepthwiseConv2d

    gen = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    conv = DepthwiseConv2d(64, 9).to(device)
    x = torch.randn(4, 64, 40, 40, generator=gen).to(device, dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
        y = conv(x)
    grad = torch.randn(y.shape, generator=gen).to(device, y.dtype)
    gx, gw = torch.autograd.grad(y, (x, conv.weight), grad)
    x_ref = x.detach().double().requires_grad_(True)
    w_ref = conv.weight.detach().double().requires_grad_(True)
    y_ref = F.conv2d(x_ref, w_ref, conv.bias.detach().double(), padding=4, groups=64)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x_ref, w_ref), grad.double())
    errors = {
        "forward": relative_error(y, y_ref),
        "grad_input": relative_error(gx, gx_ref),
        "grad_weight": relative_error(gw, gw_ref),
    }
    bad = {k: v for k, v in errors.items() if not v <= tol}
    layout = os.environ.get("XNET_CUDA_DEPTHWISE", "cudnn") if device == "cuda" else "cpu"
    if bad:
        raise AssertionError(
            f"depthwise ({layout}, {dtype}) differs from F.conv2d: "
            + ", ".join(f"{k} relative error {v:.2e} > {tol:g}" for k, v in bad.items())
        )
    return f"{layout}, {str(dtype).removeprefix('torch.')}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())


def check_training_step(torch, device: str) -> str:
    import numpy as np

    from xnet.archs.dncnn import XDnCNN
    from xnet.data.device import DevicePatchSampler, PackedImages
    from xnet.protocol.degradations import GaussianNoise
    from xnet.protocol.tasks import Task

    task = Task("denoise", "grey", GaussianNoise(25), residual=True)
    rng = np.random.default_rng(0)
    images = [(f"{i}", rng.integers(0, 256, size=(64, 72, 1), dtype=np.uint8)) for i in range(3)]
    sampler = DevicePatchSampler(PackedImages([images], task, 40).to(device), task, 40, 16, "flips", seed=0)
    batch = sampler.draw()
    if batch["input"].device.type != torch.device(device).type:
        raise AssertionError(f"the sampler drew its batch on {batch['input'].device}, not {device}")
    net = XDnCNN(num_blocks=2, width=64).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=device == "cuda")
    before = [p.detach().clone() for p in net.parameters()]
    x = batch["input"].contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
        loss = torch.nn.functional.mse_loss(x - net(x), batch["target"])
    loss.backward()
    opt.step()
    if not torch.isfinite(loss):
        raise AssertionError(f"xDnCNN training step on {device}: loss {loss.item()}")
    if not any((p.detach() != b).any() for p, b in zip(net.parameters(), before)):
        raise AssertionError(f"xDnCNN training step on {device}: no weight changed")
    return f"loss {loss.item():.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument(
        "--tol", type=float, default=2e-2, help="relative error allowed against fp64 F.conv2d (bf16 inputs on CUDA)"
    )
    args = ap.parse_args(argv)
    import torch

    torch.manual_seed(0)
    print("environment: " + json.dumps(environment(torch)), flush=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("smoke: CUDA is not available", flush=True)
        return 1
    for name, check in (
        ("depthwise", lambda: check_depthwise(torch, args.device, args.tol)),
        ("training step", lambda: check_training_step(torch, args.device)),
    ):
        t0 = time.monotonic()
        try:
            detail = check()
        except AssertionError as e:
            print(f"smoke: FAILED {name}: {e}", flush=True)
            return 1
        print(f"smoke: {name} ok ({detail}; {time.monotonic() - t0:.1f}s)", flush=True)
    print("smoke: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
