#!/usr/bin/env python
"""Side-by-side cost of the xUnit models against their baselines.

Families (same inputs for both models of a pair):

* ``dncnn``    DnCNN-S vs xDnCNN — grey 321×481 noisy image (residual denoisers, ``x − net(x)``);
* ``srcnn``    SRCNN vs xSRCNNf — bicubic-upsampled Y channel, 321×480;
* ``srresnet`` SRResNet vs xSRResNet — LR RGB 80×120, ×4 (output 320×480).

Per model: paper / trainable parameters; analytic conv MACs per output pixel (from the conv shapes
met in a forward pass: ``out_elems · C_in/groups · kh · kw``); inference latency (median over
interleaved repeats after warm-up, so machine-load drift hits both models alike) and throughput
(output Mpx/s) for ``eager`` (NCHW), ``eager_cl`` (channels_last), ``fused``
(:func:`xnet.deploy.fuse.fuse`: folded BNs, channels_last; its xUnits run as one kernel each:
the native C++ kernel on CPU when it builds, the Triton kernel on CUDA when Triton imports),
``fused_torchops`` (the same with ``cpu_kernel="torch", gpu_kernel="torch"``, i.e. the xUnits as
torch ops), ``fused_compile`` (``fuse(..., compile=True)``, inductor) and on CUDA
``eager_bf16`` / ``fused_bf16`` (autocast); the max |fused − eager| after clipping to [0, 1];
and a training step (MSE, Adam) at batch × crop, channels_last as ``RestorationModule`` trains:
time, samples/s and memory, for the plain model and, for xUnit models, ``memory_lean=True``; on
CUDA both again under bf16 autocast (what ``trainer=gpu`` runs).

Like the entry points, the script keeps freed CPU memory for reuse (:mod:`xnet.utils.memory`;
``--no-retain-memory`` turns that off): otherwise a CPU step at batch 64 × 80² spends most of its
time page-faulting its activations in again.

Training memory:
* CUDA: ``torch.cuda.max_memory_allocated`` during the step minus the allocation before it.
* CPU: ``peak_MB`` — the peak of (allocated − freed) tensor bytes during the step, from the
  ``torch.profiler`` memory timeline (``profile_memory=True``; the CPU analogue of the CUDA
  number). If that private API is missing, the growth of the peak resident set instead
  (``VmHWM`` from ``/proc/self/status`` after resetting it via ``/proc/self/clear_refs`` and
  ``malloc_trim``; includes allocator slack). ``peak_source`` says which.
  tracemalloc does not see tensor memory, so it is not used.
* both: ``saved_MB`` — bytes of the distinct storages autograd saves for backward during the
  forward (``torch.autograd.graph.saved_tensors_hooks``): the activation memory, exact and
  load-independent.

Prints per-family tables with ratios x-model / baseline and writes everything (including raw
timings) to ``--json``. ``--quick``: fewer repeats and a small CPU training batch.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xnet.archs.common import Restorer  # noqa: E402
from xnet.deploy.fuse import fuse  # noqa: E402
from xnet.archs.dncnn import DnCNN, XDnCNN  # noqa: E402
from xnet.archs.params import count_paper_params, count_trainable_params  # noqa: E402
from xnet.archs.srcnn import SRCNN, XSRCNN  # noqa: E402
from xnet.archs.srresnet import SRResNet, XSRResNet  # noqa: E402
from xnet.archs.xunit import XUnit  # noqa: E402
from xnet.utils.memory import release_freed_memory, retain_freed_memory, retention_paused  # noqa: E402

FAMILIES: dict[str, dict[str, Any]] = {
    "dncnn": {
        "names": ("DnCNN-S", "xDnCNN"),
        "build": (
            lambda: Restorer(DnCNN(channels=1), residual=True),
            lambda: Restorer(XDnCNN(channels=1), residual=True),
        ),
        "input": (1, 1, 321, 481),
        "scale": 1,
    },
    "srcnn": {
        "names": ("SRCNN", "xSRCNNf"),
        "build": (lambda: SRCNN(), lambda: XSRCNN()),
        "input": (1, 1, 321, 480),
        "scale": 1,
    },
    "srresnet": {
        "names": ("SRResNet", "xSRResNet"),
        "build": (lambda: SRResNet(scale=4), lambda: XSRResNet(scale=4)),
        "input": (1, 3, 80, 120),
        "scale": 4,
    },
}


# ---------------------------------------------------------------------------- inputs
def synthetic_image(shape: tuple[int, ...], seed: int = 0, noise: float = 25 / 255) -> torch.Tensor:
    """Smooth structure + edges + Gaussian noise in about [0, 1]: a stand-in for a test image."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    yy = torch.linspace(0, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(0, 1, w).view(1, 1, 1, w)
    phase = torch.rand(n, c, 1, 1, generator=g) * 6.28
    img = 0.5 + 0.25 * torch.sin(9 * xx + phase) * torch.cos(7 * yy) + 0.2 * ((xx - 0.5) * (yy - 0.4) > 0).float()
    img = img.expand(n, c, h, w).clone()
    return img + noise * torch.randn(n, c, h, w, generator=g)


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BN running statistics := the batch statistics of ``x`` (one train-mode pass, momentum 1),
    so the eval-mode model has realistic activations and BN folding is not a no-op."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    model.train()(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


# ---------------------------------------------------------------------------- analytic costs
def conv_macs_per_pixel(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Conv MACs per output pixel, total and the part inside xUnits (depthwise)."""
    counts = {"total": 0, "xunit": 0}
    inside: set[int] = {id(c) for u in model.modules() if isinstance(u, XUnit) for c in u.modules()}
    hooks = []

    def hook(mod: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        kh, kw = mod.kernel_size
        macs = out.numel() * (mod.in_channels // mod.groups) * kh * kw
        counts["total"] += macs
        if id(mod) in inside:
            counts["xunit"] += macs

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        y = model.eval()(x)
    for h in hooks:
        h.remove()
    pixels = y.shape[0] * y.shape[-2] * y.shape[-1]
    return {k: v / pixels for k, v in counts.items()}


# ---------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Round-robin timing: every repeat runs every function once (seconds)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


# ---------------------------------------------------------------------------- memory
def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def profiler_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak of (bytes allocated − bytes freed) while ``fn`` runs, from the profiler's memory
    timeline (CPU tensors; the analogue of CUDA ``max_memory_allocated − memory_allocated``).
    ``None`` if this torch lacks the (private) memory-timeline API."""
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action
    except ImportError:
        return None
    try:
        opts = dict(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True)
        # the profiler's records pin the heap: with memory kept, freed activations could not be reused
        with retention_paused(), profile(**opts) as prof:
            fn()
        timeline = prof._memory_profile().timeline
    except Exception:  # noqa: BLE001 - private API: degrade gracefully
        return None
    current = peak = 0
    for _t, action, _key, size in timeline:
        if action == Action.CREATE:
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


def rss_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Growth of the peak resident set while ``fn`` runs (``/proc``; Linux only)."""
    gc.collect()
    with retention_paused():  # RSS growth means live memory only with glibc's defaults
        base = _proc_kb("VmRSS")
        if base is None or not _reset_peak_rss():
            return None
        fn()
        peak = _proc_kb("VmHWM")
    return None if peak is None else (peak - base) * 1024


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` (a forward) and count the bytes of distinct storages saved for backward."""
    storages: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[(s.data_ptr(), str(t.device))] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


# ---------------------------------------------------------------------------- benchmark parts
def inference(family: str, spec: dict[str, Any], device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    names = spec["names"]
    x = synthetic_image(spec["input"]).to(device)
    models = {}
    for name, build in zip(names, spec["build"]):
        torch.manual_seed(0)
        models[name] = calibrate(build().to(device), x)

    result: dict[str, Any] = {"input": list(spec["input"]), "models": {}}
    fns: dict[str, Callable[[], Any]] = {}
    variants: dict[str, dict[str, nn.Module | Callable]] = {}
    compile_s: dict[str, float | str] = {}
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for name, model in models.items():
        info = {
            "params_paper": count_paper_params(model),
            "params_trainable": count_trainable_params(model),
            "macs_per_px": conv_macs_per_pixel(model, x),
        }
        result["models"][name] = info
        cl = _copy(model).to(memory_format=torch.channels_last)
        v: dict[str, Callable[[], torch.Tensor]] = {
            "eager": lambda m=model: m(x),
            "eager_cl": lambda m=cl: m(x_cl),
            "fused": (lambda m=fuse(model): m(x)),
        }
        # the same fused model with each xUnit as torch ops instead of the native / Triton kernel
        v["fused_torchops"] = lambda m=fuse(model, cpu_kernel="torch", gpu_kernel="torch"): m(x)
        if args.compile_enabled:
            fc = fuse(model, compile=True)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
                warnings.simplefilter("always")
                fc(x)
            compile_s[name] = round(time.perf_counter() - t0, 2)
            if fc.compiled is None:
                compile_s[name] = "failed: " + "; ".join(str(w.message)[:200] for w in caught)
            else:
                v["fused_compile"] = lambda m=fc: m(x)
        if device.type == "cuda":
            fused = fuse(model)

            def bf16(m: Callable, inp: torch.Tensor) -> Callable[[], torch.Tensor]:
                def run() -> torch.Tensor:
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        return m(inp)

                return run

            v["eager_bf16"] = bf16(cl, x_cl)
            v["fused_bf16"] = bf16(fused, x)
        variants[name] = v
        for k, fn in v.items():
            fns[f"{name}/{k}"] = fn
    if compile_s:
        result["compile_s"] = compile_s

    with torch.inference_mode():
        # correctness first: every variant against the NCHW eager reference, clipped to [0, 1]
        for name, v in variants.items():
            ref = v["eager"]().float().clamp(0, 1)
            info = result["models"][name]
            info["out_shape"] = list(ref.shape)
            info["max_abs_diff_vs_eager"] = {
                k: float((fn().float().clamp(0, 1) - ref).abs().max()) for k, fn in v.items() if k != "eager"
            }
        times = interleaved_times(fns, args.warmup, args.repeats, device)
    for key, ts in times.items():
        name, variant = key.split("/", 1)
        info = result["models"][name]
        out_px = info["out_shape"][0] * info["out_shape"][-2] * info["out_shape"][-1]
        med = statistics.median(ts)
        info.setdefault("latency_ms", {})[variant] = med * 1e3
        info.setdefault("throughput_mpx_s", {})[variant] = out_px / med / 1e6
        info.setdefault("raw_ms", {})[variant] = [t * 1e3 for t in ts]
    return result


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


#: training runs: the baseline in each non-lean mode, the x-model in every mode
TRAIN_MODES = ("plain", "lean")
#: CUDA modes; nchw / triton: the xUnits' depthwise convs in NCHW / by xnet.ops.depthwise_triton
TRAIN_MODES_CUDA = ("bf16", "lean_bf16", "nchw_bf16", "triton_bf16", "triton_lean_bf16")
_LAYOUT_OF_MODE = {"nchw": "nchw", "triton": "triton"}


def _train_baseline_mode(mode: str) -> str:
    if mode.startswith("compile"):  # compiled against compiled
        return mode
    return "bf16" if mode.endswith("bf16") else "plain"


def training(family: str, spec: dict[str, Any], device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    names = spec["names"]
    batch, crop = args.train_batch, args.train_crop
    scale = spec["scale"]
    c = spec["input"][1]
    g = torch.Generator().manual_seed(1)
    target = synthetic_image((batch, c, crop, crop), seed=2, noise=0.0)
    if scale > 1:
        inp = F.avg_pool2d(target, scale)  # LR input (cheap stand-in for bicubic down-sampling)
    else:
        inp = target + 25 / 255 * torch.randn(target.shape, generator=g)
    # as RestorationModule trains: channels_last model and batch (and bf16 autocast with trainer=gpu)
    cl = torch.channels_last
    inp, target = inp.to(device, memory_format=cl), target.to(device, memory_format=cl)
    out: dict[str, Any] = {"batch": batch, "crop": crop, "input": list(inp.shape), "runs": {}}
    modes = TRAIN_MODES + (TRAIN_MODES_CUDA if device.type == "cuda" else ())
    if args.train_compile:  # both models, so the ratio compares like with like
        modes += ("compile_bf16",) if device.type == "cuda" else ("compile",)
    runs = [(name, mode) for mode in modes for name in names if name == names[1] or not mode.startswith(("lean", "nchw", "triton"))]
    compile_s: dict[str, float] = {}
    from xnet.ops import depthwise

    default_layout = depthwise.CUDA_LAYOUT
    for name, mode in runs:
        depthwise.CUDA_LAYOUT = _LAYOUT_OF_MODE.get(mode.split("_")[0], default_layout)
        build = spec["build"][names.index(name)]
        torch.manual_seed(0)
        model = build().to(device, memory_format=cl).train()
        if "lean" in mode:
            for m in model.modules():
                if isinstance(m, XUnit):
                    m.memory_lean = True
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
            _sync(device)
            if mode.startswith("compile"):
                compile_s[name] = round(time.perf_counter() - t0, 1)
            rec: dict[str, Any] = {}
            # activation memory saved for backward
            opt.zero_grad(set_to_none=True)
            loss, saved = saved_tensor_bytes(forward)
            loss.backward()
            opt.step()
            rec["saved_MB"] = saved / 2**20
            # peak memory of one step
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                step()
                torch.cuda.synchronize(device)
                rec["peak_MB"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            else:
                peak = profiler_peak_bytes(step)
                rec["peak_source"] = "torch.profiler memory timeline"
                if peak is None:
                    peak = rss_peak_bytes(step)
                    rec["peak_source"] = "/proc VmHWM - VmRSS"
                rec["peak_MB"] = None if peak is None else peak / 2**20
            ts = interleaved_times({"step": step}, 0, args.train_steps, device)["step"]
            med = statistics.median(ts)
            rec["step_ms"] = med * 1e3
            rec["samples_s"] = batch / med
            rec["mpx_s"] = batch * target.shape[-2] * target.shape[-1] / med / 1e6
            rec["raw_ms"] = [t * 1e3 for t in ts]
        except RuntimeError as exc:  # e.g. out of memory
            rec = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out["runs"][f"{name}/{mode}"] = rec
        depthwise.CUDA_LAYOUT = default_layout
        if mode.startswith("compile") and name in compile_s:
            rec["compile_s"] = compile_s[name]
        del model, opt
        gc.collect()
        release_freed_memory()  # the next run's allocation pattern differs: start from a clean heap
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------- CPU thread scaling
def layer_times(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms per forward spent in the fused model's dense convs, xUnits and everything else
    (forward hooks around every leaf of the body)."""
    from xnet.deploy.fuse import FusedXUnit

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
    return {k: statistics.median(v) * 1e3 for k, v in totals.items()}


def thread_scaling(family: str, spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Fused inference of both models at 1, 2 and all CPU threads (interleaved medians, side by
    side at each count) and, per count, the fused x-model's time split into dense convs and xUnits."""
    names = spec["names"]
    x = synthetic_image(spec["input"])
    models = {}
    for name, build in zip(names, spec["build"]):
        torch.manual_seed(0)
        models[name] = fuse(calibrate(build(), x))
    before = torch.get_num_threads()
    counts = sorted({1, 2, os.cpu_count() or 1, *args.thread_counts})
    out: dict[str, Any] = {"input": list(spec["input"]), "threads": {}}
    try:
        for n in counts:
            torch.set_num_threads(n)
            with torch.inference_mode():
                times = interleaved_times({k: (lambda m=m: m(x)) for k, m in models.items()}, args.warmup + 1, args.repeats, torch.device("cpu"))
            ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            out["threads"][str(n)] = {
                "ms": ms, "ratio": ms[names[1]] / ms[names[0]],
                "layers_ms": {k: layer_times(m, x, max(3, args.repeats // 2)) for k, m in models.items()},
            }
    finally:
        torch.set_num_threads(before)
    print(f"\n== {family}: fused {names[1]} / fused {names[0]} by CPU threads (input {spec['input']}) ==")
    print(f"{'threads':>7} {names[0] + ' ms':>14} {names[1] + ' ms':>14} {'ratio':>7}   {names[1]}: conv / xUnit / other ms")
    for n, r in out["threads"].items():
        lt = r["layers_ms"][names[1]]
        print(f"{n:>7} {r['ms'][names[0]]:>14.1f} {r['ms'][names[1]]:>14.1f} {r['ratio']:>7.3f}   {lt['conv']:.1f} / {lt['xunit']:.1f} / {lt['other']:.1f}")
    return out


# ---------------------------------------------------------------------------- depthwise kernels
def depthwise_kernels(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """ms for one xUnit-sized depthwise conv (64 × 64 × 80², r = 9, bf16 channels_last on CUDA,
    float32 on CPU): forward, input gradient, weight gradient — cuDNN / torch (channels_last and
    NCHW) against the Triton kernels at a few block sizes (what to tune on a new GPU)."""
    from xnet.ops import depthwise_triton as dt

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
            out["ms"][key] = statistics.median(interleaved_times({key: fn}, 2, max(5, args.repeats), device)[key]) * 1e3
        except Exception as exc:  # noqa: BLE001 - recorded, e.g. a Triton compile error on a new GPU
            out["errors"][key] = f"{type(exc).__name__}: {exc}"[:300]
    print(f"\n== depthwise r={r} conv, {n}×{c}×{hw}² {dtype} ({device}): ms ==")
    for k, v in out["ms"].items():
        print(f"  {k:28s} {v:8.3f}")
    for k, v in out["errors"].items():
        print(f"  {k:28s} {v}")
    return out


# ---------------------------------------------------------------------------- data pipeline
def data_pipeline(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """ms per training batch (64 × 80², grey, σ=25 noise) from a Train400-shaped set (400 × 180²):
    ``gather`` — :class:`xnet.data.device.DevicePatchSampler` (the set on the device, one indexing
    op for the crops and flips of the whole batch); ``kornia`` — the same set on the device, the
    batch's images selected, then ``kornia.augmentation`` RandomCrop + flips; ``dataloader`` — the
    CPU path (:class:`~xnet.data.datasets.PatchDataset`, no workers) copied to the device."""
    import numpy as np

    from xnet.data.datamodule import collate_patches
    from xnet.data.datasets import PatchDataset
    from xnet.data.degradations import GaussianNoise
    from xnet.data.device import DevicePatchSampler, PackedImages
    from xnet.tasks import Task

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
    patches = PatchDataset(images, task, crop, length=batch * 1000)

    def dataloader_draw() -> dict[str, torch.Tensor]:
        clean = collate_patches([patches[i] for i in range(batch)])["target"].to(device, non_blocking=True)
        return {"input": task.degradation.train(clean), "target": clean}

    fns["dataloader"] = dataloader_draw
    times = interleaved_times(fns, 2, max(5, args.repeats), device)
    out: dict[str, Any] = {"batch": batch, "crop": crop, "set": "400 × 180² grey (Train400's shape)",
                           "ms_per_batch": {k: statistics.median(v) * 1e3 for k, v in times.items()}}
    if kornia_error:
        out["kornia_error"] = kornia_error
    print(f"\n== data pipeline ({device}): ms per batch of {batch} × {crop}² ==")
    for k, v in out["ms_per_batch"].items():
        print(f"  {k:12s} {v:8.3f}")
    return out


# ---------------------------------------------------------------------------- report
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.3f}"
    return f"{v:.3g}"


def print_family(family: str, spec: dict[str, Any], res: dict[str, Any], device: str) -> list[tuple[str, float]]:
    base, xname = spec["names"]
    rows: list[tuple[str, Any, Any]] = []
    inf = res.get("inference")
    headline: list[tuple[str, float]] = []
    if inf:
        b, x = inf["models"][base], inf["models"][xname]
        rows += [
            ("params (paper)", b["params_paper"], x["params_paper"]),
            ("params (trainable)", b["params_trainable"], x["params_trainable"]),
            ("conv MACs / out px", b["macs_per_px"]["total"], x["macs_per_px"]["total"]),
            ("  of which in xUnits", b["macs_per_px"]["xunit"], x["macs_per_px"]["xunit"]),
        ]
        for k in b["latency_ms"]:
            if k in x["latency_ms"]:
                rows.append((f"latency ms [{k}]", b["latency_ms"][k], x["latency_ms"][k]))
        for k in b["throughput_mpx_s"]:
            if k in x["throughput_mpx_s"]:
                rows.append((f"Mpx/s [{k}]", b["throughput_mpx_s"][k], x["throughput_mpx_s"][k]))
        lx, lb = x["latency_ms"], b["latency_ms"]
        for xv, bv in (("fused", "eager"), ("fused", "fused"), ("fused_torchops", "fused_torchops"),
                       ("fused_compile", "fused_compile"), ("eager", "eager"), ("fused_bf16", "fused_bf16")):
            if xv in lx and bv in lb:
                headline.append((f"{family}: {xname} {xv} / {base} {bv} latency", lx[xv] / lb[bv]))
    tr = res.get("training")
    if tr:
        for mode in TRAIN_MODES + TRAIN_MODES_CUDA + ("compile", "compile_bf16"):
            if f"{xname}/{mode}" not in tr["runs"]:
                continue
            b = tr["runs"].get(f"{base}/{_train_baseline_mode(mode)}", {})
            x = tr["runs"][f"{xname}/{mode}"]
            labels = (
                ("step_ms", "train step ms"),
                ("samples_s", "train samples/s"),
                ("saved_MB", "saved activations MB"),
                ("peak_MB", "train peak MB"),
            )
            for key, label in labels:
                if key in b or key in x:
                    rows.append((f"{label} [{mode}]", b.get(key), x.get(key)))
            for key in ("samples_s", "saved_MB", "peak_MB"):
                if b.get(key) and x.get(key) is not None:
                    headline.append((f"{family}: {xname} {mode} / {base} training {key}", x[key] / b[key]))
    shape = inf["input"] if inf else None
    print(f"\n== {family}: {base} vs {xname}  (input {shape}, device {device}) ==")
    print(f"{'metric':34s} {base:>14s} {xname:>14s} {'ratio':>8s}")
    for label, bv, xv in rows:
        ratio = xv / bv if isinstance(bv, (int, float)) and isinstance(xv, (int, float)) and bv else None
        print(f"{label:34s} {_fmt(bv):>14s} {_fmt(xv):>14s} {_fmt(ratio) if ratio is not None else '-':>8s}")
    if inf:
        for name in (base, xname):
            diffs = inf["models"][name]["max_abs_diff_vs_eager"]
            listed = ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
            print(f"max |variant - eager| after clip [0,1], {name}: {listed}")
        if "compile_s" in inf:
            print(f"compile (first call) s: {inf['compile_s']}")
    if tr:
        print(f"training: batch {tr['batch']} x crop {tr['crop']}x{tr['crop']} (input {tr['input']})")
        for k, r in tr["runs"].items():
            if "error" in r:
                print(f"  {k}: {r['error']}")
    return headline


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cxx": shutil.which("c++") or shutil.which("g++") or shutil.which("gcc"),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, small CPU training batch")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {list(FAMILIES)}")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 15, quick 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 2, quick 1)")
    ap.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="fused+torch.compile variant (auto: on if a C++ compiler is found, and on CUDA)",
    )
    ap.add_argument(
        "--no-retain-memory",
        action="store_true",
        help="let glibc hand freed memory back to the OS (default: keep it, as the entry points do)",
    )
    ap.add_argument("--data-pipeline", action="store_true", help="also time the training-batch pipelines (device gather, kornia, DataLoader)")
    ap.add_argument("--thread-table", action="store_true", help="CPU: fused inference ratio at 1, 2 and all threads, with a per-layer split")
    ap.add_argument("--thread-counts", type=int, nargs="*", default=[], help="extra thread counts for --thread-table")
    ap.add_argument("--train-compile", action="store_true", help="also train with torch.compile (compile time reported; slow to start)")
    ap.add_argument("--depthwise-kernels", action="store_true", help="also time the depthwise conv kernels (cuDNN/torch vs Triton)")
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--train-batch", type=int, default=None, help="default 64 (quick on CPU: 4)")
    ap.add_argument("--train-crop", type=int, default=None, help="HR crop side, default 80 (quick on CPU: 48)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 5, quick 2)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    retained = False if args.no_retain_memory else retain_freed_memory()
    args.repeats = args.repeats or (5 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.train_steps = args.train_steps or (2 if args.quick else 5)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families {sorted(unknown)}")

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            ap.error("CUDA is not available")
        print("CUDA not available: skipping it")
        devices.remove("cuda")

    arg_values = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report: dict[str, Any] = {"args": arg_values, "devices": {}}
    headline_all: list[tuple[str, float]] = []
    torch.backends.cudnn.benchmark = True  # autotuned convs, as trainer=gpu runs them
    for dev_name in devices:
        device = torch.device(dev_name)
        quick_cpu = args.quick and device.type == "cpu"
        dev_args = argparse.Namespace(**vars(args))
        dev_args.train_batch = args.train_batch or (4 if quick_cpu else 64)
        dev_args.train_crop = args.train_crop or (48 if quick_cpu else 80)
        has_cxx = bool(shutil.which("c++") or shutil.which("g++") or shutil.which("gcc"))
        auto = args.compile == "auto" and (device.type == "cuda" or has_cxx)
        dev_args.compile_enabled = args.compile == "on" or auto
        env = environment(device)
        env["retain_freed_memory"] = retained
        print(f"\n##### device {dev_name}: {env}")
        dev_report: dict[str, Any] = {"environment": env, "families": {}}
        if args.data_pipeline:
            dev_report["data_pipeline"] = data_pipeline(device, dev_args)
        if args.depthwise_kernels:
            dev_report["depthwise_kernels"] = depthwise_kernels(device, dev_args)
        report["devices"][dev_name] = dev_report
        save(report, headline_all, args.json)
        for family in families:
            spec = FAMILIES[family]
            res: dict[str, Any] = {}
            if args.thread_table and device.type == "cpu":
                res["threads"] = thread_scaling(family, spec, dev_args)
                headline_all += [(f"[cpu] {family}: fused ratio at {n} threads", r["ratio"]) for n, r in res["threads"]["threads"].items()]
            if not args.no_inference:
                res["inference"] = inference(family, spec, device, dev_args)
            gc.collect()
            release_freed_memory()
            if not args.no_train:
                res["training"] = training(family, spec, device, dev_args)
            dev_report["families"][family] = res
            headline_all += [(f"[{dev_name}] {k}", v) for k, v in print_family(family, spec, res, dev_name)]
            sys.stdout.flush()
            report["devices"][dev_name] = dev_report
            save(report, headline_all, args.json)  # after every family: a capped run keeps what it measured
        report["devices"][dev_name] = dev_report

    print("\n##### ratios (x-model / baseline)")
    for label, value in headline_all:
        print(f"{label:80s} {value:.3f}")
    save(report, headline_all, args.json)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


def save(report: dict[str, Any], headline: list[tuple[str, float]], path: Path | None) -> None:
    if path is None:
        return
    report["ratios"] = dict(headline)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
