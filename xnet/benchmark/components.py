"""Single components timed alone: the xUnit's depthwise conv kernels (cuDNN/torch against
Triton, autotuned and at each tile configuration), one xUnit's training step by ``impl``, and the
ways to draw a training batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xnet.archs.xunit import XUnit
from xnet.benchmark.measure import interleaved_times, median_ms
from xnet.benchmark.settings import Settings
from xnet.data.datasets import PatchDataset
from xnet.data.device import DevicePatchSampler, PackedImages
from xnet.kernels import depthwise_triton as dt
from xnet.kernels.triton_launch import CONFIGS
from xnet.protocol.degradations import GaussianNoise
from xnet.protocol.tasks import Task


def depthwise_kernels(device: torch.device, settings: Settings) -> dict[str, Any]:
    """ms for one xUnit-sized depthwise conv (64 × 64 × 80², r = 9, bf16 channels_last on CUDA,
    float32 on CPU): forward, input gradient, weight gradient — cuDNN / torch (channels_last and
    NCHW) against the Triton kernels at a few block sizes."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n, c, hw, r = (64, 64, 80, 9) if device.type == "cuda" else (4, 64, 48, 9)
    g = torch.Generator(device=device).manual_seed(0)
    u = torch.randn(n, c, hw, hw, device=device, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(u.shape, device=device, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, r, r, device=device, generator=g) / r
    wd, ud, gd = w.to(dtype), u.contiguous(), grad.contiguous()

    def aten_bwd(uu: torch.Tensor, gg: torch.Tensor, mask: list[bool]) -> Any:
        return torch.ops.aten.convolution_backward(
            gg, uu, wd, None, [1, 1], [r // 2] * 2, [1, 1], False, [0, 0], c, mask
        )

    fns: dict[str, Callable[[], Any]] = {
        "torch_cl/fwd": lambda: F.conv2d(u, wd, None, 1, r // 2, 1, c),
        "torch_cl/grad_input": lambda: aten_bwd(u, grad, [True, False, False]),
        "torch_cl/grad_weight": lambda: aten_bwd(u, grad, [False, True, False]),
        "torch_nchw/fwd": lambda: F.conv2d(ud, wd, None, 1, r // 2, 1, c),
        "torch_nchw/grad_input": lambda: aten_bwd(ud, gd, [True, False, False]),
        "torch_nchw/grad_weight": lambda: aten_bwd(ud, gd, [False, True, False]),
    }
    if dt.depthwise_triton_applies(u, w):
        wf = w.flip(-1, -2)
        fns["triton/fwd"] = lambda: dt.depthwise_triton(u, w)  # autotuned (the first call tunes)
        fns["triton/grad_input"] = lambda: dt.depthwise_triton(grad, wf)
        fns["triton/grad_weight"] = lambda: dt.depthwise_grad_weight_triton(grad, u, r)
        for i, cfg in enumerate(CONFIGS["dw_conv"]):
            fns[f"triton_cfg{i}/fwd"] = lambda cfg=cfg: dt.depthwise_triton(u, w, config=cfg)
        for i, cfg in enumerate(CONFIGS["dw_wgrad"]):
            fns[f"triton_cfg{i}/grad_weight"] = lambda cfg=cfg: dt.depthwise_grad_weight_triton(grad, u, r, config=cfg)
    out: dict[str, Any] = {"shape": [n, c, hw, hw], "r": r, "dtype": str(dtype), "ms": {}, "errors": {}}
    for key, fn in fns.items():  # one at a time: a failing variant must not take the others down
        try:
            out["ms"][key] = median_ms(interleaved_times({key: fn}, 2, max(5, settings.repeats), device)[key])
        except Exception as exc:
            out["errors"][key] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def xunit_step(device: torch.device, settings: Settings) -> dict[str, Any]:
    """ms for one xUnit's forward + backward (64 channels, r = 9; on CUDA batch 64 × 80² under bf16
    autocast, on the CPU 4 × 48² float32) with each ``impl`` that runs on the device, plain and
    memory-lean, and the peak memory of a step on CUDA."""
    cuda = device.type == "cuda"
    n, c, hw = (64, 64, 80) if cuda else (4, 64, 48)
    impls = ("torch", "nchw", "triton") if cuda else ("auto", "torch")
    g = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16 if cuda else torch.float32
    x = torch.randn(n, c, hw, hw, device=device, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    gy = torch.randn(x.shape, device=device, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    out: dict[str, Any] = {"shape": [n, c, hw, hw], "r": 9, "dtype": str(dtype), "ms": {}, "peak_MB": {}, "errors": {}}
    for impl in impls:
        for lean in (False, True):
            key = f"{impl}{'_lean' if lean else ''}"
            unit = XUnit(c, kernel_size=9, memory_lean=lean, impl=impl).to(device, memory_format=torch.channels_last)
            xg = x.detach().requires_grad_()

            def step(unit: XUnit = unit, xg: torch.Tensor = xg) -> None:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    y = unit(xg)
                y.backward(gy.to(y.dtype))

            try:
                out["ms"][key] = median_ms(interleaved_times({key: step}, 2, max(5, settings.repeats), device)[key])
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                    step()
                    out["peak_MB"][key] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            except Exception as exc:
                out["errors"][key] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def data_pipeline(device: torch.device, settings: Settings) -> dict[str, Any]:
    """ms per training batch (64 × 80², grey, σ=25 noise) from a Train400-shaped set (400 × 180²):
    ``gather`` — :class:`xnet.data.device.DevicePatchSampler` (the set on the device, one indexing
    op for the crops and flips of the whole batch); ``kornia`` — the same set on the device, the
    batch's images selected, then ``kornia.augmentation`` RandomCrop + flips; ``dataloader`` — the
    CPU path (:class:`~xnet.data.datasets.PatchDataset`: a batch drawn on the CPU, no workers) copied to
    the device."""
    batch, crop = 64, 80
    rng = np.random.default_rng(0)
    images = [(f"{i:03d}", rng.integers(0, 256, (180, 180, 1), dtype=np.uint8)) for i in range(400)]
    task = Task("denoise", "grey", GaussianNoise(25), residual=True)
    sampler = DevicePatchSampler(PackedImages([images], task, crop).to(device), task, crop, batch, "flips", seed=0)
    fns: dict[str, Callable[[], Any]] = {"gather": sampler.draw}
    try:
        import kornia.augmentation as K

        stack = torch.from_numpy(np.stack([im.transpose(2, 0, 1) for _, im in images])).to(device)
        aug = K.AugmentationSequential(K.RandomCrop((crop, crop)), K.RandomHorizontalFlip(), K.RandomVerticalFlip())
        gen = torch.Generator(device=device).manual_seed(0)

        def kornia_draw() -> dict[str, torch.Tensor]:
            idx = torch.randint(len(images), (batch,), device=device, generator=gen)
            clean = aug(stack[idx].float().div_(255.0))
            return {"input": task.degradation.train(clean, gen), "target": clean}

        fns["kornia"] = kornia_draw
    except ImportError as exc:
        kornia_error = f"kornia not importable: {exc}"
    else:
        kornia_error = None
    batches = PatchDataset(images, task, crop, length=1000, augment="flips", seed=0, batch_size=batch)

    def dataloader_draw() -> dict[str, torch.Tensor]:
        pairs = batches[0]
        return {k: pairs[k].to(device, non_blocking=True) for k in ("input", "target")}

    fns["dataloader"] = dataloader_draw
    times = interleaved_times(fns, 2, max(5, settings.repeats), device)
    out: dict[str, Any] = {
        "batch": batch,
        "crop": crop,
        "set": "400 × 180² grey (Train400's shape)",
        "ms_per_batch": {k: median_ms(v) for k, v in times.items()},
    }
    if kornia_error:
        out["kornia_error"] = kornia_error
    return out
