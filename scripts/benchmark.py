#!/usr/bin/env python
"""Cost of the xUnit models against their baselines (DnCNN-S / xDnCNN, SRCNN / xSRCNNf,
SRResNet / xSRResNet), built from the model configs ``xnet.train`` uses: parameters, conv MACs,
inference latency per deployment variant, training step time and memory (:mod:`xnet.benchmark`).
Prints a table per family with x-model / baseline ratios and writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xnet.benchmark import report as rep
from xnet.benchmark.components import data_pipeline, depthwise_kernels, xunit_step
from xnet.benchmark.latency import inference_costs, thread_scaling
from xnet.benchmark.models import FAMILIES
from xnet.benchmark.settings import Settings
from xnet.benchmark.training import training_costs
from xnet.utils.memory import release_freed_memory, retain_freed_memory


def parser() -> argparse.ArgumentParser:
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
    ap.add_argument(
        "--data-pipeline",
        action="store_true",
        help="also time the training-batch pipelines (device gather, kornia, DataLoader)",
    )
    ap.add_argument(
        "--thread-table",
        action="store_true",
        help="CPU: fused inference ratio at 1, 2 and all threads, with a per-layer split",
    )
    ap.add_argument("--thread-counts", type=int, nargs="*", default=[], help="extra thread counts for --thread-table")
    ap.add_argument(
        "--train-compile",
        action="store_true",
        help="also train with torch.compile (compile time reported; slow to start)",
    )
    ap.add_argument(
        "--depthwise-kernels",
        action="store_true",
        help="also time the depthwise conv kernels (cuDNN/torch vs Triton) and one xUnit's step by impl",
    )
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--train-batch", type=int, default=None, help="default 64 (quick on CPU: 4)")
    ap.add_argument("--train-crop", type=int, default=None, help="HR crop side, default 80 (quick on CPU: 48)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 5, quick 2)")
    return ap


def settings_for(device: torch.device, args: argparse.Namespace) -> Settings:
    """The flags' values on ``device`` (``--quick`` shrinks the CPU training batch only)."""
    quick_cpu = args.quick and device.type == "cpu"
    return Settings(
        warmup=args.warmup,
        repeats=args.repeats,
        compile_enabled=args.compile == "on"
        or (args.compile == "auto" and (device.type == "cuda" or rep.c_compiler() is not None)),
        train_batch=args.train_batch or (4 if quick_cpu else 64),
        train_crop=args.train_crop or (48 if quick_cpu else 80),
        train_steps=args.train_steps,
        train_compile=args.train_compile,
        thread_counts=tuple(args.thread_counts),
    )


def run_family(
    name: str, device: torch.device, settings: Settings, args: argparse.Namespace
) -> tuple[dict[str, Any], list[rep.Ratio]]:
    family, res, ratios = FAMILIES[name], {}, []
    if args.thread_table and device.type == "cpu":
        res["threads"] = thread_scaling(family, settings)
        rep.print_threads(name, family, res["threads"])
        ratios += [
            (f"[cpu] {name}: fused ratio at {n} threads", r["ratio"]) for n, r in res["threads"]["threads"].items()
        ]
    if not args.no_inference:
        res["inference"] = inference_costs(family, device, settings)
    gc.collect()
    release_freed_memory()
    if not args.no_train:
        res["training"] = training_costs(family, device, settings)
    ratios += [(f"[{device.type}] {k}", v) for k, v in rep.print_family(name, family, res, device.type)]
    return res, ratios


def main(argv: list[str] | None = None) -> int:
    ap = parser()
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

    report: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "devices": {},
    }
    ratios: list[rep.Ratio] = []
    torch.backends.cudnn.benchmark = True  # autotuned convs, as trainer=gpu runs them
    for dev_name in devices:
        device = torch.device(dev_name)
        settings = settings_for(device, args)
        env = {**rep.environment(device), "retain_freed_memory": retained}
        print(f"\n##### device {dev_name}: {env}")
        dev_report: dict[str, Any] = {"environment": env, "families": {}}
        report["devices"][dev_name] = dev_report
        if args.data_pipeline:
            dev_report["data_pipeline"] = out = data_pipeline(device, settings)
            rep.print_ms(
                f"data pipeline ({device}): ms per batch of {out['batch']} × {out['crop']}²",
                out["ms_per_batch"],
                width=12,
            )
        if args.depthwise_kernels:
            dev_report["depthwise_kernels"] = out = depthwise_kernels(device, settings)
            rep.print_ms(
                f"depthwise r={out['r']} conv, {'×'.join(map(str, out['shape'][:2]))}×{out['shape'][2]}² "
                f"{out['dtype']} ({device}): ms",
                out["ms"],
                out["errors"],
            )
            dev_report["xunit_step"] = out = xunit_step(device, settings)
            shape = "×".join(map(str, out["shape"]))
            title = f"one xUnit forward + backward by impl, {shape} {out['dtype']} ({device}): ms"
            rep.print_ms(title, out["ms"], out["errors"])
        rep.save_report(report, ratios, args.json)
        for family in families:
            dev_report["families"][family], family_ratios = run_family(family, device, settings, args)
            ratios += family_ratios
            sys.stdout.flush()
            rep.save_report(report, ratios, args.json)  # after every family: a capped run keeps what it measured

    print("\n##### ratios (x-model / baseline)")
    for label, value in ratios:
        print(f"{label:80s} {value:.3f}")
    rep.save_report(report, ratios, args.json)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
