"""Single components timed alone: the xUnit's depthwise conv kernels (cuDNN/torch against
Triton, what to tune on a new GPU) and the ways to draw a training batch."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xnet.benchmark.measure import interleaved_times, median_ms
from xnet.benchmark.settings import Settings
from xnet.data.datasets import PatchDataset
from xnet.data.device import DevicePatchSampler, PackedImages
from xnet.kernels import depthwise_triton as dt
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
        return torch.ops.aten.convolution_backward(gg, uu, wd, None, [1, 1], [r // 2] * 2, [1, 1], False, [0, 0], c, mask)

    fns: dict[str, Callable[[], Any]] = {
        "torch_cl/fwd": lambda: F.conv2d(u, wd, None, 1, r // 2, 1, c),
        "torch_cl/grad_input": lambda: aten_bwd(u, grad, [True, False, False]),
        "torch_cl/grad_weight": lambda: aten_bwd(u, grad, [False, True, False]),
        "torch_nchw/fwd": lambda: F.conv2d(ud, wd, None, 1, r // 2, 1, c),
        "torch_nchw/grad_input": lambda: aten_bwd(ud, gd, [True, False, False]),
        "torch_nchw/grad_weight": lambda: aten_bwd(ud, gd, [False, True, False]),
    }
    if dt.depthwise_triton_applies(u, w):
        for bw in (16, 32, 64):
            fns[f"triton_w{bw}/fwd"] = lambda bw=bw: dt.depthwise_triton(u, w, None, block_w=bw)
        for rows in (8, 16, 32):
            fns[f"triton_rows{rows}/grad_weight"] = lambda rows=rows: dt.depthwise_grad_weight_triton(grad, u, r, rows_per_chunk=rows)
    out: dict[str, Any] = {"shape": [n, c, hw, hw], "r": r, "dtype": str(dtype), "ms": {}, "errors": {}}
    for key, fn in fns.items():  # one at a time: a failing variant must not take the others down
        try:
            out["ms"][key] = median_ms(interleaved_times({key: fn}, 2, max(5, settings.repeats), device)[key])
        except Exception as exc:  # noqa: BLE001 - recorded, e.g. a Triton compile error on a new GPU
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
    out: dict[str, Any] = {"batch": batch, "crop": crop, "set": "400 × 180² grey (Train400's shape)",
                           "ms_per_batch": {k: median_ms(v) for k, v in times.items()}}
    if kornia_error:
        out["kornia_error"] = kornia_error
    return out
