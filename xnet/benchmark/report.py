"""The benchmark's tables (x-model against baseline, with ratios), the machine it ran on, and its
JSON report (written atomically, after every family, so a capped run keeps what it measured)."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from xnet.benchmark.models import Family
from xnet.benchmark.training import TRAIN_MODES, TRAIN_MODES_CUDA, baseline_mode
from xnet.protocol.atomic import write_text

Ratio = tuple[str, float]


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


def _inference_rows(
    family_name: str, family: Family, inf: dict[str, Any]
) -> tuple[list[tuple[str, Any, Any]], list[Ratio]]:
    base, xname = family.names
    b, x = inf["models"][base], inf["models"][xname]
    rows = [
        ("params (paper)", b["params_paper"], x["params_paper"]),
        ("params (trainable)", b["params_trainable"], x["params_trainable"]),
        ("conv MACs / out px", b["macs_per_px"]["total"], x["macs_per_px"]["total"]),
        ("  of which in xUnits", b["macs_per_px"]["xunit"], x["macs_per_px"]["xunit"]),
    ]
    for key, label in (("latency_ms", "latency ms"), ("throughput_mpx_s", "Mpx/s")):
        rows += [(f"{label} [{k}]", b[key][k], x[key][k]) for k in b[key] if k in x[key]]
    lx, lb = x["latency_ms"], b["latency_ms"]
    ratios = [
        (f"{family_name}: {xname} {xv} / {base} {bv} latency", lx[xv] / lb[bv])
        for xv, bv in (
            ("fused", "eager"),
            ("fused", "fused"),
            ("fused_torchops", "fused_torchops"),
            ("fused_compile", "fused_compile"),
            ("eager", "eager"),
            ("fused_bf16", "fused_bf16"),
        )
        if xv in lx and bv in lb
    ]
    return rows, ratios


def _training_rows(
    family_name: str, family: Family, tr: dict[str, Any]
) -> tuple[list[tuple[str, Any, Any]], list[Ratio]]:
    base, xname = family.names
    rows: list[tuple[str, Any, Any]] = []
    ratios: list[Ratio] = []
    labels = (
        ("step_ms", "train step ms"),
        ("samples_s", "train samples/s"),
        ("saved_MB", "saved activations MB"),
        ("peak_MB", "train peak MB"),
    )
    for mode in TRAIN_MODES + TRAIN_MODES_CUDA + ("compile", "compile_bf16"):
        if f"{xname}/{mode}" not in tr["runs"]:
            continue
        b = tr["runs"].get(f"{base}/{baseline_mode(mode)}", {})
        x = tr["runs"][f"{xname}/{mode}"]
        rows += [(f"{label} [{mode}]", b.get(key), x.get(key)) for key, label in labels if key in b or key in x]
        ratios += [
            (f"{family_name}: {xname} {mode} / {base} training {key}", x[key] / b[key])
            for key in ("samples_s", "saved_MB", "peak_MB")
            if b.get(key) and x.get(key) is not None
        ]
    return rows, ratios


def print_family(family_name: str, family: Family, res: dict[str, Any], device: str) -> list[Ratio]:
    """Print the family's table; returns its headline ratios (x-model / baseline)."""
    base, xname = family.names
    rows: list[tuple[str, Any, Any]] = []
    ratios: list[Ratio] = []
    inf, tr = res.get("inference"), res.get("training")
    for part, rows_of in ((inf, _inference_rows), (tr, _training_rows)):
        if part:
            r, h = rows_of(family_name, family, part)
            rows, ratios = rows + r, ratios + h
    print(f"\n== {family_name}: {base} vs {xname}  (input {inf['input'] if inf else None}, device {device}) ==")
    print(f"{'metric':34s} {base:>14s} {xname:>14s} {'ratio':>8s}")
    for label, bv, xv in rows:
        ratio = xv / bv if isinstance(bv, (int, float)) and isinstance(xv, (int, float)) and bv else None
        print(f"{label:34s} {_fmt(bv):>14s} {_fmt(xv):>14s} {_fmt(ratio) if ratio is not None else '-':>8s}")
    if inf:
        for name in (base, xname):
            diffs = inf["models"][name]["max_abs_diff_vs_eager"]
            print(
                f"max |variant - eager| after clip [0,1], {name}: "
                + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
            )
        if "compile_s" in inf:
            print(f"compile (first call) s: {inf['compile_s']}")
    if tr:
        print(f"training: batch {tr['batch']} x crop {tr['crop']}x{tr['crop']} (input {tr['input']})")
        for k, r in tr["runs"].items():
            if "error" in r:
                print(f"  {k}: {r['error']}")
    return ratios


def print_threads(family_name: str, family: Family, out: dict[str, Any]) -> None:
    base, xname = family.names
    print(f"\n== {family_name}: fused {xname} / fused {base} by CPU threads (input {out['input']}) ==")
    print(f"{'threads':>7} {base + ' ms':>14} {xname + ' ms':>14} {'ratio':>7}   {xname}: conv / xUnit / other ms")
    for n, r in out["threads"].items():
        lt = r["layers_ms"][xname]
        print(
            f"{n:>7} {r['ms'][base]:>14.1f} {r['ms'][xname]:>14.1f} {r['ratio']:>7.3f}   "
            f"{lt['conv']:.1f} / {lt['xunit']:.1f} / {lt['other']:.1f}"
        )


def print_ms(title: str, ms: dict[str, float], errors: dict[str, str] | None = None, width: int = 28) -> None:
    print(f"\n== {title} ==")
    for k, v in ms.items():
        print(f"  {k:{width}s} {v:8.3f}")
    for k, v in (errors or {}).items():
        print(f"  {k:{width}s} {v}")


def c_compiler() -> str | None:
    return shutil.which("c++") or shutil.which("g++") or shutil.which("gcc")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cxx": c_compiler(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def save_report(report: dict[str, Any], ratios: list[Ratio], path: Path | None) -> None:
    if path is None:
        return
    report["ratios"] = dict(ratios)
    write_text(path, json.dumps(report, indent=1))
