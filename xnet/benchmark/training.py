"""Training cost of a family's two models: one step (MSE, fused Adam) at batch × crop on
channels_last tensors, as ``RestorationModule`` trains — time, samples/s, peak memory and the
activations saved for backward — in each training mode (plain, memory-lean xUnits, and on CUDA
bf16 autocast and each ``xunit.impl``; compiled on request)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from xnet.archs.xunit import XUnit
from xnet.benchmark.measure import interleaved_times, median_ms, saved_tensor_bytes, step_peak_mb, sync
from xnet.benchmark.models import Family, synthetic_image, upscale
from xnet.benchmark.settings import Settings
from xnet.utils.memory import release_freed_memory

TRAIN_MODES = ("plain", "lean")
#: CUDA modes: bf16 is xunit.impl=auto (cuDNN); nchw: the depthwise convs in NCHW; triton: the whole
#: xUnit as Triton kernels (xnet.kernels.xunit_train_triton), with lean: the conv recomputed in backward
TRAIN_MODES_CUDA = ("bf16", "lean_bf16", "nchw_bf16", "triton_bf16", "triton_lean_bf16")
XUNIT_ONLY_MODES = ("lean", "nchw", "triton")  # prefixes of modes that change nothing but the xUnits
#: a mode's xunit.impl (by its first word; the others run auto on the CPU, torch's cuDNN on CUDA)
IMPL_OF_MODE = {"nchw": "nchw", "triton": "triton"}


def train_modes(device: torch.device, compiled: bool) -> tuple[str, ...]:
    modes = TRAIN_MODES + (TRAIN_MODES_CUDA if device.type == "cuda" else ())
    if compiled:  # both models, so the ratio compares like with like
        modes += ("compile_bf16",) if device.type == "cuda" else ("compile",)
    return modes


def baseline_mode(mode: str) -> str:
    """The baseline's run that the x-model's run in ``mode`` is compared with."""
    if mode.startswith("compile"):  # compiled against compiled
        return mode
    return "bf16" if mode.endswith("bf16") else "plain"


def training_batch(family: Family, settings: Settings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)``: noisy targets, or for SR an average-pooled input (a cheap stand-in for
    bicubic down-sampling), channels_last on ``device``."""
    c = family.input[1]
    target = synthetic_image((settings.train_batch, c, settings.train_crop, settings.train_crop), seed=2, noise=0.0)
    scale = upscale(family.build(family.names[0]), c)
    if scale > 1:
        inp = F.avg_pool2d(target, scale)
    else:
        inp = target + 25 / 255 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    cl = torch.channels_last
    return inp.to(device, memory_format=cl), target.to(device, memory_format=cl)


def measure_step(
    step: Callable[[], None],
    forward: Callable[[], torch.Tensor],
    opt: torch.optim.Optimizer,
    batch: int,
    target: torch.Tensor,
    device: torch.device,
    steps: int,
) -> dict[str, Any]:
    """Saved activations, peak memory and timed steps of one warmed-up training step."""
    opt.zero_grad(set_to_none=True)
    loss, saved = saved_tensor_bytes(forward)
    loss.backward()
    opt.step()
    rec: dict[str, Any] = {"saved_MB": saved / 2**20, **step_peak_mb(step, device)}
    ts = interleaved_times({"step": step}, 0, steps, device)["step"]
    rec["step_ms"] = median_ms(ts)
    rec["samples_s"] = batch / (rec["step_ms"] / 1e3)
    rec["mpx_s"] = batch * target.shape[-2] * target.shape[-1] / (rec["step_ms"] / 1e3) / 1e6
    rec["raw_ms"] = [t * 1e3 for t in ts]
    return rec


def train_run(
    family: Family,
    name: str,
    mode: str,
    batch: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    settings: Settings,
) -> dict[str, Any]:
    """One model in one mode: the record of :func:`measure_step` (``compile_s`` when compiled),
    or ``error`` (e.g. out of memory)."""
    inp, target = batch
    model = family.build(name).to(device, memory_format=torch.channels_last).train()
    for m in model.modules():
        if isinstance(m, XUnit):
            m.memory_lean = "lean" in mode
            m.impl = IMPL_OF_MODE.get(mode.split("_")[0], "auto" if device.type == "cpu" else "torch")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as RestorationModule
    if mode.startswith("compile"):
        model.compile()  # in place, as RestorationModule(compile=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode.endswith("bf16"))

    def forward() -> torch.Tensor:
        with autocast:
            return F.mse_loss(model(inp).float(), target)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward().backward()
        opt.step()

    try:
        t0 = time.perf_counter()
        step()  # warm-up: gradients and optimizer state exist from here on (and compiled)
        sync(device)
        compile_s = round(time.perf_counter() - t0, 1)
        rec = measure_step(step, forward, opt, inp.shape[0], target, device, settings.train_steps)
        if mode.startswith("compile"):
            rec["compile_s"] = compile_s
        return rec
    except RuntimeError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def training_costs(family: Family, device: torch.device, settings: Settings) -> dict[str, Any]:
    """Every run of :func:`train_modes`: the x-model in each, the baseline in those that do not
    change the xUnits alone."""
    batch = training_batch(family, settings, device)
    out: dict[str, Any] = {
        "batch": settings.train_batch,
        "crop": settings.train_crop,
        "input": list(batch[0].shape),
        "runs": {},
    }
    base, xname = family.names
    for mode in train_modes(device, settings.train_compile):
        for name in (base, xname):
            if name == base and mode.startswith(XUNIT_ONLY_MODES):
                continue
            out["runs"][f"{name}/{mode}"] = train_run(family, name, mode, batch, device, settings)
            gc.collect()
            release_freed_memory()  # the next run's allocation pattern differs: start from a clean heap
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out
