"""Inference cost of a family's two models: parameters, conv MACs, latency and throughput of each
deployment variant (eager, channels_last, fused with and without its kernels, compiled, bf16),
every variant's deviation from eager, and on the CPU the fused latency by thread count."""

from __future__ import annotations

import copy
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xnet.archs.params import count_paper_params, count_trainable_params
from xnet.benchmark.measure import interleaved_times, median_ms
from xnet.benchmark.models import Family, calibrate, conv_macs_per_pixel, synthetic_image
from xnet.benchmark.settings import Settings
from xnet.deploy.fuse import FusedXUnit, fuse


def _bf16(model: Callable, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x)

    return run


def _compiled(model: nn.Module, x: torch.Tensor) -> tuple[Callable[[], torch.Tensor] | None, float | str]:
    """``fuse(model, compile=True)`` run once: (the variant or None, first-call seconds or why it failed)."""
    fc = fuse(model, compile=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        fc(x)
    if fc.compiled is None:
        return None, "failed: " + "; ".join(str(w.message)[:200] for w in caught)
    return (lambda: fc(x)), round(time.perf_counter() - t0, 2)


def variants(
    model: nn.Module, x: torch.Tensor, settings: Settings
) -> tuple[dict[str, Callable[[], torch.Tensor]], float | str | None]:
    """Every deployment of ``model`` on ``x`` to time, and the compile time (None: not compiled)."""
    x_cl = x.contiguous(memory_format=torch.channels_last)
    cl = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    fused = fuse(model)
    # fused_torchops: the same fused model with each xUnit as torch ops, not the native / Triton kernel
    torchops = fuse(model, cpu_kernel="torch", gpu_kernel="torch")
    v: dict[str, Callable[[], torch.Tensor]] = {
        "eager": lambda: model(x),
        "eager_cl": lambda: cl(x_cl),
        "fused": lambda: fused(x),
        "fused_torchops": lambda: torchops(x),
    }
    compile_s = None
    if settings.compile_enabled:
        run, compile_s = _compiled(model, x)
        if run is not None:
            v["fused_compile"] = run
    if x.device.type == "cuda":
        v["eager_bf16"], v["fused_bf16"] = _bf16(cl, x_cl), _bf16(fuse(model), x)
    return v, compile_s


def inference_costs(family: Family, device: torch.device, settings: Settings) -> dict[str, Any]:
    x = synthetic_image(family.input).to(device)
    result: dict[str, Any] = {"input": list(family.input), "models": {}}
    fns: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float | str] = {}
    by_model: dict[str, dict[str, Callable[[], torch.Tensor]]] = {}
    for name in family.names:
        model = calibrate(family.build(name).to(device), x)
        result["models"][name] = {
            "params_paper": count_paper_params(model),
            "params_trainable": count_trainable_params(model),
            "macs_per_px": conv_macs_per_pixel(model, x),
        }
        by_model[name], seconds = variants(model, x, settings)
        if seconds is not None:
            compile_s[name] = seconds
        fns.update({f"{name}/{k}": fn for k, fn in by_model[name].items()})
    if compile_s:
        result["compile_s"] = compile_s

    with torch.inference_mode():
        # correctness first: every variant against the NCHW eager reference, clipped to [0, 1]
        for name, v in by_model.items():
            ref = v["eager"]().float().clamp(0, 1)
            info = result["models"][name]
            info["out_shape"] = list(ref.shape)
            info["max_abs_diff_vs_eager"] = {
                k: float((fn().float().clamp(0, 1) - ref).abs().max()) for k, fn in v.items() if k != "eager"
            }
        times = interleaved_times(fns, settings.warmup, settings.repeats, device)
    for key, ts in times.items():
        name, variant = key.split("/", 1)
        info = result["models"][name]
        out_px = info["out_shape"][0] * info["out_shape"][-2] * info["out_shape"][-1]
        med = statistics.median(ts)
        info.setdefault("latency_ms", {})[variant] = med * 1e3
        info.setdefault("throughput_mpx_s", {})[variant] = out_px / med / 1e6
        info.setdefault("raw_ms", {})[variant] = [t * 1e3 for t in ts]
    return result


def layer_times(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms per forward spent in the fused model's dense convs, xUnits and everything else
    (forward hooks around every leaf of the body)."""
    totals: dict[str, list[float]] = {"conv": [], "xunit": [], "other": []}
    current: dict[str, float] = {}
    starts: dict[int, float] = {}

    def kind(m: nn.Module) -> str:
        return "xunit" if isinstance(m, FusedXUnit) else "conv" if isinstance(m, nn.Conv2d) else "other"

    def pre(m: nn.Module, _inp: Any) -> None:
        starts[id(m)] = time.perf_counter()

    def post(m: nn.Module, _inp: Any, _out: Any) -> None:
        current[kind(m)] = current.get(kind(m), 0.0) + time.perf_counter() - starts.pop(id(m))

    leaves = [m for m in model.modules() if isinstance(m, FusedXUnit) or not list(m.children())]
    hooks = [h for m in leaves for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with torch.inference_mode():
            model(x)
            for _ in range(repeats):
                current.clear()
                model(x)
                for k in totals:
                    totals[k].append(current.get(k, 0.0))
    finally:
        for h in hooks:
            h.remove()
    return {k: median_ms(v) for k, v in totals.items()}


def thread_scaling(family: Family, settings: Settings) -> dict[str, Any]:
    """Fused inference of both models at 1, 2 and all CPU threads (interleaved medians, side by
    side at each count) and, per count, each fused model's time split into dense convs and xUnits."""
    x = synthetic_image(family.input)
    models = {name: fuse(calibrate(family.build(name), x)) for name in family.names}
    before = torch.get_num_threads()
    counts = sorted({1, 2, os.cpu_count() or 1, *settings.thread_counts})
    out: dict[str, Any] = {"input": list(family.input), "threads": {}}
    base, xname = family.names
    try:
        for n in counts:
            torch.set_num_threads(n)
            with torch.inference_mode():
                times = interleaved_times(
                    {k: (lambda m=m: m(x)) for k, m in models.items()},
                    settings.warmup + 1,
                    settings.repeats,
                    torch.device("cpu"),
                )
            ms = {k: median_ms(v) for k, v in times.items()}
            out["threads"][str(n)] = {
                "ms": ms,
                "ratio": ms[xname] / ms[base],
                "layers_ms": {k: layer_times(m, x, max(3, settings.repeats // 2)) for k, m in models.items()},
            }
    finally:
        torch.set_num_threads(before)
    return out
