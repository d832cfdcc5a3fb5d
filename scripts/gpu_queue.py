#!/usr/bin/env python
"""One command for a GPU slot: plan, check, then train the queue until the budget is spent.

    bash scripts/gpu_slot.sh 9                                        # on the GPU machine (calls this)
    python scripts/gpu_queue.py --device cpu --budget-min 1.5 --out DIR # the same on CPU: a dry run
    python scripts/gpu_queue.py --ingest DIR                          # here, with what came back

The plan is made before anything runs, printed and kept in DIR/report.json: how the budget splits into
start-up, checks, training, packing and reserve, which checks run, which depthwise implementation trains
and which queue entries train for how many steps. The steps, each under its own cap:
  (a) checks. Always the smoke check (``scripts/gpu_smoke.py``: environment, the depthwise kernel that
      trains against F.conv2d, one training step). The CUDA tests (``pytest -m cuda``) and
      ``scripts/benchmark.py`` run only when the files they cover (:func:`covered_files`) or the machine
      (torch, Triton, GPU) changed since the slot that passed them (``results/gpu/checks.json``); the
      CPU thread table only until it is in ``results/gpu/``;
  (b) the training queue (``runs/queue.yaml``): each unfinished entry whose data is carried resumes from
      ``runs/<name>/state.ckpt`` or starts (its length from the recorded benchmark's step time), trains
      with ``trainer.max_time`` until the budget is spent, and is packed into DIR/run_<name>.tar.gz.
What trains is decided by the plan: a check that times out never changes it (only a failed test or smoke
check of a non-default implementation makes training fall back to the default, and the log says so).
Triton's compiled kernels travel between slots (``.triton_cache/``, made there, carried back).

``--ingest DIR`` unpacks the runs into ``runs/<name>/`` (a run without state, a chunk killed before its
first checkpoint and a broken archive each get one line; the others are still ingested), exports finished
runs into the zoo (scoring here the test sets that were not carried), and records the checks, benchmark,
thread table and Triton cache for the next slot. ``scripts/gpu_prepare.py`` packs the data sets the next
entries need into ``.gpu_data/`` and measures the carry against its 64 MiB.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

START = time.time()
REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
RESULTS = REPO / "results" / "gpu"
TRITON_ARCHIVE = REPO / ".triton_cache" / "triton_cache.tar.gz"
OUT_FILES = 8  # what comes back from a slot: at most 8 files
#: the layouts the slot chooses among, by their XNET_CUDA_DEPTHWISE names (xnet.kernels.dispatch maps them to
#: model.net.xunit.impl: cudnn = torch, nchw, triton = the fused Triton xUnit)
LAYOUTS = ("cudnn", "nchw", "triton")
DEFAULT_LAYOUT = "cudnn"  # XNET_CUDA_DEPTHWISE unset: xnet.kernels.depthwise.CUDA_LAYOUT's default

#: what the CUDA tests, the benchmark and the smoke check run, besides the test files marked cuda and
#: the xnet modules those import (found by covered_files)
COVERED = (
    "xnet/kernels",
    "xnet/archs",
    "xnet/benchmark",
    "xnet/data/device.py",
    "scripts/benchmark.py",
    "scripts/gpu_smoke.py",
    "tests/conftest.py",
)


@dataclass(frozen=True)
class Costs:
    """Seconds each part of a slot may take (caps for the checks). CUDA: set above what each part took
    in slots 1–2 on an H200, as their logs record (results/gpu/slot*_queue.log)."""

    slot_startup: float  # wheels installed, Triton cache unpacked, the plan (before the first check)
    smoke: float  # scripts/gpu_smoke.py, environment included
    tests: float  # pytest -m cuda
    bench: float  # scripts/benchmark.py
    threads: float  # the CPU thread table
    chunk_startup: float  # a training process's start and stop beyond its max_time
    pack: float  # a run's archive
    score: float  # xnet.evaluate on a finished run's test sets
    reserve: float  # margin before the deadline
    min_chunk: float  # no chunk starts with less training time than this


COSTS = {
    "cuda": Costs(
        slot_startup=10,
        smoke=30,
        tests=90,
        bench=90,
        threads=45,
        chunk_startup=25,
        pack=10,
        score=40,
        reserve=15,
        min_chunk=45,
    ),
    # CPU (the dry run; this 2-core machine, shared with other jobs): set above what each part took in the dry
    # runs (DIR/queue.log records each part's seconds)
    "cpu": Costs(
        slot_startup=10,
        smoke=40,
        tests=60,
        bench=60,
        threads=45,
        chunk_startup=15,
        pack=5,
        score=20,
        reserve=5,
        min_chunk=8,
    ),
}


# ------------------------------------------------------------------------------------ hash-gated checks
def cuda_test_files(repo: Path = REPO) -> list[Path]:
    return sorted(p for p in (repo / "tests").rglob("test_*.py") if "mark.cuda" in p.read_text())


def imported_modules(path: Path, repo: Path = REPO) -> set[Path]:
    """The files of the xnet modules ``path`` imports (anywhere in it; not transitively)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    files = set()
    for name in names:
        if name.split(".")[0] == "xnet":
            base = repo.joinpath(*name.split("."))
            files |= {f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()}
    return files


def covered_files(repo: Path = REPO) -> list[Path]:
    """The files whose change makes the next slot run the CUDA tests and the benchmark again."""
    files: set[Path] = set()
    for entry in COVERED:
        p = repo / entry
        files |= {f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts} if p.is_dir() else {p}
    tests = cuda_test_files(repo)
    for t in tests:
        files |= {t, *imported_modules(t, repo)}
    return sorted(f for f in files if f.is_file())


def covered_hash(repo: Path = REPO) -> str:
    h = hashlib.sha256()
    for f in covered_files(repo):
        h.update(f"{f.relative_to(repo).as_posix()}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()[:16]


def machine_identity(device: str) -> dict[str, str | None]:
    """What else the checks depend on, read without importing torch: torch, Triton, the GPU."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    gpu = "cpu"
    if device == "cuda":
        try:
            gpu = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=False,
                )
                .stdout.strip()
                .splitlines()[0]
            )
        except (OSError, subprocess.SubprocessError, IndexError):
            gpu = "unknown"
    return {"torch": ver("torch"), "triton": ver("triton"), "gpu": gpu}


def read_checks(results: Path) -> dict[str, Any]:
    f = results / "checks.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def full_checks_reason(record: dict[str, Any] | None, digest: str, identity: dict[str, Any]) -> str | None:
    """Why the CUDA tests and the benchmark must run (None: they passed on this code and machine)."""
    if not record:
        return "no slot has passed the checks yet"
    if record.get("tests") != "ok" or record.get("benchmark") != "ok":
        return f"the last full checks did not pass (tests {record.get('tests')}, benchmark {record.get('benchmark')})"
    if record.get("hash") != digest:
        return f"the covered files changed (hash {record.get('hash')} -> {digest})"
    if record.get("identity") != identity:
        return f"the machine changed ({record.get('identity')} -> {identity})"
    return None


# ------------------------------------------------------------------------------------ implementation choice
def step_times(bench: dict[str, Any] | None, device: str, family: str) -> dict[str, float]:
    try:
        runs = bench["devices"][device]["families"][family]["training"]["runs"]
    except (KeyError, TypeError):
        return {}
    return {k: float(v["step_ms"]) for k, v in runs.items() if isinstance(v, dict) and "step_ms" in v}


def layout_mode(layout: str) -> str:
    """The benchmark's bf16 training mode of a depthwise layout (the default's is plain ``bf16``)."""
    return "bf16" if layout == DEFAULT_LAYOUT else f"{layout}_bf16"


def fastest_tested(bench: dict[str, Any] | None, device: str, tests_ok: bool) -> tuple[str, dict[str, float]]:
    """The depthwise layout xDnCNN's bf16 training step was fastest with: another than the default only when
    the CUDA tests passed on this code and it is ≥ 5 % faster."""
    runs = step_times(bench, device, "dncnn")
    times = {lay: runs[f"xDnCNN/{layout_mode(lay)}"] for lay in LAYOUTS if f"xDnCNN/{layout_mode(lay)}" in runs}
    if DEFAULT_LAYOUT not in times or not tests_ok:
        return DEFAULT_LAYOUT, times
    best = min(times, key=times.get)
    return (best if times[best] < 0.95 * times[DEFAULT_LAYOUT] else DEFAULT_LAYOUT), times


# ------------------------------------------------------------------------------------ the queue's data
def source_sets(node: Any) -> set[str]:
    """Registered set names of the image sources in a config node (as plain containers)."""
    found = set()
    if isinstance(node, dict):
        if (
            str(node.get("_target_", "")).startswith("xnet.data.sources.")
            and node.get("name")
            and node.get("path") is None
        ):
            found.add(str(node["name"]))
        for value in node.values():
            found |= source_sets(value)
    elif isinstance(node, list):
        for item in node:
            found |= source_sets(item)
    return found


def entry_sets(entry: dict[str, Any]) -> dict[str, Any]:
    """The registered sets of a queue entry: ``train`` (train, val, monitor: training reads them), ``own_test``
    (the train config's ``data.test``: only built, and nulled when not carried) and ``test`` (per option of
    its ``test_sets``, what ``xnet.evaluate`` scores when it finishes)."""
    from omegaconf import OmegaConf

    from xnet.utils.config import compose_config

    data = OmegaConf.to_container(compose_config("train", entry["overrides"]).data, resolve=True)
    test = {
        name: sorted(
            source_sets(
                OmegaConf.to_container(
                    compose_config("eval", [*entry.get("eval", []), "weights=x.pt", f"data/test={name}"]).data.test,
                    resolve=True,
                )
            )
        )
        for name in entry.get("test_sets", [])
    }
    return {
        "train": sorted(source_sets({k: v for k, v in data.items() if k != "test"})),
        "own_test": sorted(source_sets(data.get("test"))),
        "test": test,
    }


def missing_sets(names: list[str], root: str | None) -> list[str]:
    from xnet.data.catalog import DatasetMissingError, dataset_dir

    missing = []
    for name in names:
        try:
            dataset_dir(name, root)
        except DatasetMissingError:
            missing.append(name)
    return missing


def load_queue(path: Path) -> list[dict[str, Any]]:
    import yaml

    entries = yaml.safe_load(Path(path).read_text())
    for e in entries:
        missing = {"name", "overrides"} - set(e)
        if missing:
            raise SystemExit(f"{path}: entry {e} lacks {sorted(missing)}")
    return entries


def read_run_info(folder: Path) -> dict[str, Any]:
    f = folder / "run.json"
    return json.loads(f.read_text()) if f.is_file() else {}


# ------------------------------------------------------------------------------------ the plan
def time_split(budget_s: float, costs: Costs, checks_s: float, scoring: bool) -> dict[str, float]:
    """The budget's parts, in the order they are spent; training is what the others leave."""
    split = {
        "startup": costs.slot_startup + costs.chunk_startup,
        "checks": checks_s,
        "training": 0.0,
        "packing": costs.pack + (costs.score if scoring else 0.0),
        "reserve": costs.reserve,
    }
    split["training"] = budget_s - sum(split.values())
    return {k: round(v, 1) for k, v in split.items()}


def describe_split(split: dict[str, float], budget_s: float) -> str:
    parts = " + ".join(f"{k} {v:.0f} s" for k, v in split.items())
    train = split["training"]
    return f"{budget_s / 60:.2f} min = {parts} (training {train / 60:.2f} min, {train / budget_s:.0%})"


def plan_steps(entry: dict[str, Any], step_ms: float | None) -> tuple[int, str]:
    """A new run's length: ``train_minutes`` of the recorded step time (15 % for validation and logging),
    rounded down to 1,000; ``default_steps`` where no step time is recorded."""
    if step_ms is None or "train_minutes" not in entry:
        return int(entry["default_steps"]), "default_steps (no recorded step time)"
    steps = int(60 * entry["train_minutes"] / (1.15 * step_ms / 1e3)) // 1000 * 1000
    return max(1000, steps), f"{entry['train_minutes']} min at {step_ms:.1f} ms/step"


def checkpoint_step(path: Path) -> int | None:
    return checkpoint_progress(path)[0]


class Plan:
    """Everything decided before the slot runs anything (see the module doc)."""

    def __init__(self, args: argparse.Namespace, costs: Costs) -> None:
        self.device, self.costs = args.device, costs
        self.budget_s = 60 * args.budget_min
        self.hash = covered_hash()
        self.identity = machine_identity(args.device)
        self.record = read_checks(args.results).get(args.device)
        reason = full_checks_reason(self.record, self.hash, self.identity)
        if args.checks == "auto" and args.device == "cpu":
            self.checks, self.why = (
                "smoke",
                "device cpu: no CUDA tests or CUDA benchmark to gate (--checks full runs them)",
            )
        elif args.checks == "auto":
            self.checks, self.why = (
                ("full", reason)
                if reason
                else ("smoke", f"covered files unchanged since the slot that passed them ({self.hash})")
            )
        else:
            self.checks, self.why = args.checks, f"--checks {args.checks}" + (f" ({reason})" if reason else "")
        threads_done = (args.results / "benchmark_cpu_threads.json").is_file()
        self.thread_table = args.thread_table == "yes" or (
            args.thread_table == "auto" and args.device == "cuda" and not threads_done
        )
        bench_file = REPO / self.record["benchmark_file"] if self.record and self.record.get("benchmark_file") else None
        self.bench = json.loads(bench_file.read_text()) if bench_file and bench_file.is_file() else None
        self.bench_source = _shown(bench_file) if self.bench else None
        tested = reason is None and self.record is not None
        self.depthwise = (
            self.record.get("depthwise", DEFAULT_LAYOUT) if tested and args.device == "cuda" else DEFAULT_LAYOUT
        )
        self.depthwise_why = (
            "tested on this code (results/gpu/checks.json)"
            if self.depthwise != DEFAULT_LAYOUT
            else "the default" + ("" if tested else " until this code passes the CUDA tests")
        )
        aux = (
            2 + (self.checks == "full") + self.thread_table + (args.device == "cuda")
        )  # log, report, bench, threads, Triton
        self.max_runs = OUT_FILES - aux
        self.checks_s = (
            0.0
            if self.checks == "none"
            else (
                costs.smoke
                + (costs.tests + costs.bench if self.checks == "full" else 0)
                + (costs.threads if self.thread_table else 0)
            )
        )
        self.entries = self.plan_entries(
            args, time_split(self.budget_s, costs, self.checks_s, scoring=False)["training"]
        )
        self.split = time_split(
            self.budget_s, costs, self.checks_s, scoring=bool(self.entries) and self.entries[0]["may_finish"]
        )

    def step_ms(self, entry: dict[str, Any]) -> float | None:
        if "bench" not in entry:
            return None
        family, model = entry["bench"]
        mode = layout_mode(self.depthwise) if self.device == "cuda" else "plain"
        return step_times(self.bench, self.device, family).get(f"{model}/{mode}")

    def plan_entries(self, args: argparse.Namespace, train_s: float) -> list[dict[str, Any]]:
        """The unfinished entries whose training data is carried, in the queue's order, as many as files
        can come back; each may finish in this slot when its remaining steps fit ``train_s``."""
        planned, self.skipped = [], []
        entries = load_queue(args.queue)
        for entry in entries:
            if args.only and entry["name"] not in args.only:
                continue
            info = read_run_info(args.runs / entry["name"])
            if info.get("finished") or len(planned) >= self.max_runs:
                continue
            sets = entry_sets(entry)
            missing = missing_sets(sets["train"], args.data)
            if missing:
                self.skipped.append(f"{entry['name']}: {', '.join(missing)} not carried")
                continue
            step = checkpoint_step(args.runs / entry["name"] / "state.ckpt")
            ms = self.step_ms(entry)
            max_steps, why = (
                (int(info["max_steps"]), "its own (resumed)") if info.get("max_steps") else plan_steps(entry, ms)
            )
            planned.append(
                {
                    "name": entry["name"],
                    "entry": entry,
                    "info": info,
                    "resume_step": step,
                    "max_steps": max_steps,
                    "steps_from": why,
                    "step_ms": ms,
                    "test_sets_missing": [t for t, names in sets["test"].items() if missing_sets(names, args.data)],
                    "null_test": bool(missing_sets(sets["own_test"], args.data)),
                    # unknown step time: nothing reserved (a test set not scored in time is scored at ingest)
                    "may_finish": ms is not None and 1.15 * (max_steps - (step or 0)) * ms / 1e3 <= train_s,
                }
            )
        return planned

    def summary(self) -> dict[str, Any]:
        return {
            "budget_s": self.budget_s,
            "split": self.split,
            "checks": self.checks,
            "checks_why": self.why,
            "hash": self.hash,
            "identity": self.identity,
            "thread_table": self.thread_table,
            "depthwise": self.depthwise,
            "depthwise_why": self.depthwise_why,
            "benchmark": self.bench_source,
            "max_runs": self.max_runs,
            "costs": asdict(self.costs),
            "skipped": self.skipped,
            "entries": [{k: v for k, v in e.items() if k not in ("entry", "info")} for e in self.entries],
        }

    def lines(self) -> list[str]:
        out = [
            f"plan: {describe_split(self.split, self.budget_s)}",
            f"plan: checks {self.checks}: {self.why}"
            + ("; the CPU thread table (not yet in results/gpu)" if self.thread_table else ""),
            (
                f"plan: depthwise {self.depthwise} ({self.depthwise_why}); "
                f"step times from {self.bench_source or 'no recorded benchmark'}"
            ),
        ]
        for e in self.entries:
            start = f"resumes at step {e['resume_step']:,}" if e["resume_step"] is not None else "starts"
            finish = "may finish this slot" if e["may_finish"] else "does not finish this slot"
            note = (
                f"; test sets not carried: {', '.join(e['test_sets_missing'])} (scored at ingest)"
                if e["test_sets_missing"]
                else ""
            )
            out.append(
                f"plan: {e['name']} {start}, {e['max_steps']:,} steps in all ({e['steps_from']}); {finish}{note}"
            )
        out += [f"plan: not trained: {s}" for s in self.skipped]
        return out


# ------------------------------------------------------------------------------------ the slot
class Queue:
    def __init__(self, args: argparse.Namespace, plan: Plan) -> None:
        self.args, self.plan, self.costs = args, plan, plan.costs
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = float(os.environ.get("XNET_SLOT_T0") or START)  # gpu_slot.sh's start: its pip install counts
        self.deadline = time.monotonic() + plan.budget_s - max(0.0, time.time() - t0)
        self.report: dict[str, Any] = {
            "budget_min": args.budget_min,
            "device": args.device,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "plan": plan.summary(),
            "steps": {},
        }
        self.spent = {"startup": round(time.time() - t0, 1), "checks": 0.0, "training": 0.0, "packing": 0.0}
        self.log_file = open(self.out / "queue.log", "a", buffering=1)  # noqa: SIM115 - open for the whole slot
        self.work = Path(tempfile.mkdtemp(prefix="xnet_queue_"))
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "WANDB_MODE": "disabled",
            "HYDRA_FULL_ERROR": "1",
            "TRITON_CACHE_DIR": str(args.triton_cache_dir),
        }
        if args.data:
            self.env["XNET_DATA"] = str(Path(args.data).resolve())
        self.set_depthwise(plan.depthwise)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} {self.left():6.0f}s left] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def set_depthwise(self, layout: str) -> None:
        self.depthwise = layout
        if layout == DEFAULT_LAYOUT:
            self.env.pop("XNET_CUDA_DEPTHWISE", None)
        else:
            self.env["XNET_CUDA_DEPTHWISE"] = layout

    def run(self, name: str, cmd: list[str], cap: float, phase: str, log_tail: int = 60) -> dict[str, Any]:
        """Run ``cmd`` with a hard time cap (its whole process group is killed at the cap)."""
        cap = max(1.0, min(cap, self.left()))
        self.log(f"{name}: {' '.join(cmd)}  (cap {cap:.0f}s)")
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=cap)
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            status = "timeout"
        took = time.monotonic() - t0
        self.spent[phase] = round(self.spent[phase] + took, 1)
        lines = (output or "").splitlines()
        self.log_file.write("\n".join(f"    {line}" for line in lines[-log_tail:]) + "\n")
        print("\n".join(lines[-log_tail:]), flush=True)
        self.log(f"{name}: {status} in {took:.0f}s")
        return {"status": status, "seconds": round(took, 1), "tail": lines[-15:], "lines": lines}

    # ------------------------------------------------------------------------------------------ checks
    def checks(self) -> None:
        c, steps = self.costs, self.report["steps"]
        smoke = self.run(
            "smoke check", [sys.executable, "scripts/gpu_smoke.py", "--device", self.args.device], c.smoke, "checks"
        )
        env_line = next((line for line in smoke.pop("lines") if line.startswith("environment: ")), None)
        self.report["environment"] = json.loads(env_line.split(": ", 1)[1]) if env_line else {"error": smoke["tail"]}
        steps["smoke"] = smoke
        if self.args.device == "cuda" and not self.report["environment"].get("cuda_available"):
            raise SystemExit("CUDA is not available on this machine: nothing to do (the report says why)")
        if smoke["status"] != "ok":
            self.fall_back(f"smoke check {smoke['status']}")
        if self.plan.checks == "full":
            self.full_checks()
        if self.plan.thread_table:
            self.cpu_threads()
        self.report["checks"] = {
            "mode": self.plan.checks,
            "hash": self.plan.hash,
            "identity": self.plan.identity,
            "smoke": smoke["status"],
            "tests": (steps.get("cuda_tests") or {}).get("status"),
            "benchmark": (steps.get("benchmark") or {}).get("status"),
            "depthwise": self.depthwise,
        }

    def fall_back(self, why: str) -> None:
        if self.depthwise != DEFAULT_LAYOUT:
            self.log(f"{why}: training uses {DEFAULT_LAYOUT}, not the planned {self.depthwise}")
            self.set_depthwise(DEFAULT_LAYOUT)

    def full_checks(self) -> None:
        steps = self.report["steps"]
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "cuda",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            *(["-x"] if self.args.fail_fast else []),
        ]
        steps["cuda_tests"] = self.strip(self.run("cuda tests", cmd, self.costs.tests, "checks"))
        tests_ok = steps["cuda_tests"]["status"] == "ok"
        if not tests_ok:
            self.fall_back(f"cuda tests {steps['cuda_tests']['status']}")
        path = self.out / f"benchmark_{self.args.device}.json"
        cmd = [
            sys.executable,
            "scripts/benchmark.py",
            "--device",
            self.args.device,
            "--quick",
            "--families",
            self.args.bench_families,
            "--compile",
            "off",
            "--train-steps",
            "10",
            "--json",
            str(path),
            "--depthwise-kernels",
            *self.args.bench_args,
        ]
        steps["benchmark"] = self.strip(self.run("benchmark", cmd, self.costs.bench, "checks", log_tail=120))
        if steps["benchmark"]["status"] != "ok":  # a partial benchmark never changes what trains
            self.log(f"benchmark {steps['benchmark']['status']}: training keeps {self.depthwise} (the plan)")
            return
        best, times = fastest_tested(json.loads(path.read_text()), self.args.device, tests_ok)
        self.report["depthwise"] = {"step_ms": times, "cuda_tests_ok": tests_ok, "training_uses": best}
        if best != self.depthwise:
            self.log(
                f"depthwise for training: {best}, not the planned {self.depthwise} "
                f"(xDnCNN bf16 step ms {times}; tests passed)"
            )
            self.set_depthwise(best)
        else:
            self.log(f"depthwise for training: {best} as planned (xDnCNN bf16 step ms {times})")

    @staticmethod
    def strip(res: dict[str, Any]) -> dict[str, Any]:
        res.pop("lines", None)
        return res

    def cpu_threads(self) -> None:
        """Fused CPU inference, xDnCNN / DnCNN-S, at 1, 2, 4, 8 and all cores (the only many-core CPU at hand)."""
        path = self.out / "benchmark_cpu_threads.json"
        cmd = [
            sys.executable,
            "scripts/benchmark.py",
            "--device",
            "cpu",
            "--families",
            "dncnn",
            "--no-inference",
            "--no-train",
            "--thread-table",
            "--thread-counts",
            "4",
            "8",
            "--repeats",
            "7",
            "--json",
            str(path),
        ]
        self.report["steps"]["cpu_threads"] = self.strip(
            self.run("cpu thread table", cmd, self.costs.threads, "checks", log_tail=20)
        )

    # ------------------------------------------------------------------------------------ training
    def train_queue(self) -> None:
        c = self.costs
        for planned in self.plan.entries:
            if self.left() < c.chunk_startup + c.pack + c.reserve + c.min_chunk:
                self.log(f"{planned['name']}: {self.left():.0f}s left, less than a chunk: not started")
                break
            self.report["steps"][f"train:{planned['name']}"] = self.train_entry(
                planned, first=planned is self.plan.entries[0]
            )

    def train_entry(self, planned: dict[str, Any], first: bool) -> dict[str, Any]:
        entry, info, name = planned["entry"], dict(planned["info"]), planned["name"]
        c, work = self.costs, self.work / name
        (work / "checkpoints").mkdir(parents=True, exist_ok=True)
        state = self.args.runs / name / "state.ckpt"
        if state.is_file():
            shutil.copy2(state, work / "checkpoints" / "last.ckpt")
        for f in (self.args.runs / name).glob("metrics.chunk*.csv"):
            (work / "csv").mkdir(exist_ok=True)
            shutil.copy2(f, work / "csv" / f.name)
        max_steps = planned["max_steps"]
        overrides = list(info.get("overrides") or entry["overrides"])  # a resumed run keeps its own recipe
        info.update({"name": name, "overrides": overrides, "max_steps": max_steps})
        tail = c.pack + (c.score if planned["may_finish"] else 0.0) + c.reserve
        seconds = self.left() - c.chunk_startup - tail
        trainer = ["trainer=gpu"] if self.args.device == "cuda" else ["trainer=cpu"]
        cmd = [
            sys.executable,
            "-m",
            "xnet.train",
            *overrides,
            *trainer,
            *self.args.train_overrides,
            f"trainer.max_steps={max_steps}",
            f"trainer.max_time={_dhms(seconds)}",  # per chunk (xnet.lit.callbacks.TimePerChunk)
            f"hydra.run.dir={work}",
            "ckpt_path=last_if_any",
            "logger=csv",
            "test_after_fit=false",  # scored below, by xnet.evaluate
            *(
                ["data.test=null"] if planned["null_test"] else []
            ),  # not carried; the monitor set never is its test set then
        ]
        if first and self.args.profile_steps:
            cmd += [
                "+callbacks.profile._target_=xnet.lit.callbacks.StepProfile",
                f"+callbacks.profile.dirpath={work}",
                f"+callbacks.profile.start={self.args.profile_start}",
                f"+callbacks.profile.steps={self.args.profile_steps}",
            ]
        t0 = time.time()
        res = self.strip(self.run(f"train {name}", cmd, self.left() - c.pack - c.reserve, "training", log_tail=40))
        last = work / "checkpoints" / "last.ckpt"
        step, wall = checkpoint_progress(last)
        res.update(
            {
                "max_steps": max_steps,
                "step": step,
                "max_time_s": round(seconds, 1),
                "trained_s": round(timer_offset(last), 1) if last.is_file() else 0.0,
            }
        )
        info.setdefault("chunks", []).append(
            {
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "gpu": (self.report.get("environment") or {}).get("gpu") or self.args.device,
                "to_step": step,
                "status": res["status"],
                "process_s": round(time.time() - t0, 1),
                "train_wall_s": wall,
                "depthwise": self.depthwise,
            }
        )
        info["train_wall_s"] = wall
        info["finished"] = bool(step is not None and step >= max_steps and res["status"] == "ok")
        reports = self.score(planned, work, last, res) if info["finished"] else []
        if info["finished"]:
            info["selected_checkpoint"] = f"final (step {step})"  # no selection: the fast recipe ends at its best
        res["finished"] = info["finished"]
        t_pack = time.monotonic()
        self.pack(name, work, info, reports)
        self.spent["packing"] = round(self.spent["packing"] + time.monotonic() - t_pack, 1)
        return res

    def score(self, planned: dict[str, Any], work: Path, ckpt: Path, res: dict[str, Any]) -> list[Path]:
        """The finished run's test sets that are carried, scored with ``xnet.evaluate`` (eager fp32: the reference)."""
        entry, name, reports = planned["entry"], planned["name"], []
        for test_set in entry.get("test_sets", []):
            if test_set in planned["test_sets_missing"]:
                res[f"eval_{test_set}"] = "not carried: scored at ingest"
                continue
            out = work / "eval" / test_set
            r = self.run(
                f"evaluate {name} {test_set}",
                [
                    sys.executable,
                    "-m",
                    "xnet.evaluate",
                    *entry.get("eval", []),
                    f"weights={ckpt}",
                    f"data/test={test_set}",
                    f"hydra.run.dir={out}",
                    f"device={self.args.device}",
                    "fuse=false",
                ],
                max(20.0, self.left() - 5),
                "packing",
            )
            if (out / "metrics.json").is_file():
                reports.append(out / "metrics.json")
            res[f"eval_{test_set}"] = r["status"]
        return reports

    def pack(self, name: str, work: Path, info: dict[str, Any], reports: list[Path]) -> None:
        """DIR/run_<name>.tar.gz: run.json, CSV logs, metrics, profile; the state (or, finished, the final
        checkpoint and the evaluation reports)."""
        path = self.out / f"run_{name}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            _add_bytes(tar, "run.json", json.dumps(info, indent=1).encode())
            for f in sorted(work.glob("csv/*.csv")):
                tar.add(f, arcname=f"csv/{f.name}")
            for f in ("metrics.json", "profile.json", ".hydra/config.yaml", ".hydra/overrides.yaml"):
                if (work / f).is_file():
                    tar.add(work / f, arcname=f.replace(".hydra/", "hydra_"))
            last = work / "checkpoints" / "last.ckpt"
            if info.get("finished"):
                tar.add(last, arcname="selected.ckpt")
                for r in reports:
                    tar.add(r, arcname=f"eval/{r.parent.name}.json")
            elif last.is_file():
                tar.add(last, arcname="state.ckpt")
        self.log(f"packed {path.name}: {path.stat().st_size / 2**20:.1f} MB")

    # ------------------------------------------------------------------------------------ Triton cache
    def triton_cache_in(self) -> None:
        self.triton_carried = restore_triton_cache(self.args.triton_archive, self.args.triton_cache_dir)
        self.log(f"triton cache: {len(self.triton_carried)} compiled kernels carried in ({self.args.triton_cache_dir})")

    def triton_cache_out(self) -> None:
        res = save_triton_cache(
            self.args.triton_cache_dir, self.out / "triton_cache.tar.gz", self.triton_carried, self.args.triton_max_mb
        )
        self.report["triton_cache"] = res
        self.log(
            f"triton cache: {res['carried']} carried, {res['new']} compiled this slot"
            + (f"; packed {res['packed']} into triton_cache.tar.gz ({res['mb']} MB)" if res.get("packed") else "")
        )

    def finish(self) -> None:
        self.spent["left"] = round(self.left(), 1)
        self.report["spent"] = self.spent
        self.report["left_s"] = self.spent["left"]
        (self.out / "report.json").write_text(json.dumps(self.report, indent=1))
        self.log(f"spent: {describe_spent(self.spent)}")
        self.log("done")
        shutil.rmtree(self.work, ignore_errors=True)


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies in it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def describe_spent(spent: dict[str, float]) -> str:
    return " + ".join(f"{k} {v:.0f} s" for k, v in spent.items())


def _dhms(seconds: float) -> str:
    s = max(1, int(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime = len(data), int(time.time())
    tar.addfile(ti, io.BytesIO(data))


def checkpoint_progress(path: Path) -> tuple[int | None, float | None]:
    """(global step, summed training wall clock) of a Lightning checkpoint."""
    if not path.is_file():
        return None, None
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    wall = next((v.get("elapsed") for k, v in ckpt.get("callbacks", {}).items() if k.startswith("WallClock")), None)
    return int(ckpt["global_step"]), None if wall is None else round(float(wall), 1)


def timer_offset(path: Path) -> float:
    """Training seconds Lightning's Timer (``trainer.max_time``) counted in ``path``: its chunk's alone
    (per-chunk time)."""
    if not path.is_file():
        return 0.0
    import torch

    callbacks = torch.load(path, map_location="cpu", weights_only=True).get("callbacks", {})
    timer = next((v for k, v in callbacks.items() if k.startswith("Timer")), {})
    return float(timer.get("time_elapsed", {}).get("train", 0.0))


# ---------------------------------------------------------------------------------------- Triton cache
#: what a cache hit reads: each kernel's metadata (.json, the __grp__ index too) and binary (.cubin), and
#: the compiled launchers (.so); the IR text (ttir, ttgir, llir, ptx) stays behind
TRITON_KEEP = (".json", ".cubin", ".so")


def cache_entries(cache_dir: Path) -> set[str]:
    return {p.name for p in cache_dir.iterdir() if p.is_dir()} if cache_dir.is_dir() else set()


def restore_triton_cache(archive: Path, cache_dir: Path) -> set[str]:
    """Unpack a carried cache into ``cache_dir``: always the same absolute folder, since Triton's group
    files name their members by absolute path. Returns the entries it holds."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    if archive.is_file():
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(cache_dir, filter="data")
        except (OSError, tarfile.TarError) as e:
            print(f"triton cache: {archive} unreadable ({e}); the kernels compile afresh", flush=True)
    return cache_entries(cache_dir)


def save_triton_cache(cache_dir: Path, archive: Path, carried: set[str], max_mb: float) -> dict[str, Any]:
    """Archive the cache when this slot compiled something (the next slot carries it; over ``max_mb``,
    only this slot's entries)."""
    entries = cache_entries(cache_dir)
    new = entries - carried
    res: dict[str, Any] = {"carried": len(carried), "new": len(new)}
    if not new:
        return res
    for keep in (entries, new):
        with tarfile.open(archive, "w:gz") as tar:
            for name in sorted(keep):
                for f in sorted((cache_dir / name).iterdir()):
                    if f.suffix in TRITON_KEEP and f.is_file():
                        tar.add(f, arcname=f"{name}/{f.name}")
        if archive.stat().st_size <= max_mb * 2**20:
            res.update({"packed": len(keep), "mb": round(archive.stat().st_size / 2**20, 2)})
            return res
    archive.unlink()
    res["packed"] = 0
    return res


# ---------------------------------------------------------------------------------------- ingest
def ingest(
    src: Path,
    runs: Path = RUNS,
    zoo_dir: Path | None = None,
    queue: Path = RUNS / "queue.yaml",
    results: Path = RESULTS,
    triton_archive: Path = TRITON_ARCHIVE,
    data: str | None = None,
) -> int:
    """Unpack every DIR/run_*.tar.gz into ``runs/<name>/``, export finished runs into the zoo, record the slot's
    checks and files. Returns the number of archives that could not be ingested (each named in one line)."""
    failed = 0
    for tar_path in sorted(src.glob("run_*.tar.gz")):
        try:
            print(ingest_run(tar_path, runs, zoo_dir, queue, data))
        except (OSError, KeyError, ValueError, tarfile.TarError, RunArchiveError) as e:
            failed += 1
            print(f"error: {tar_path}: {e.__class__.__name__}: {e} (not ingested; the others are)", file=sys.stderr)
    ingest_slot_files(src, results, triton_archive)
    return failed


class RunArchiveError(Exception):
    """A run archive that lacks what its run.json says it holds."""


def ingest_run(tar_path: Path, runs: Path, zoo_dir: Path | None, queue: Path, data: str | None) -> str:
    name = tar_path.name[len("run_") : -len(".tar.gz")]
    folder = runs / name
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / "run.json").is_file():
            raise RunArchiveError("no run.json: not a packed run")
        info = json.loads((tmp / "run.json").read_text())
        if info.get("finished") and not (tmp / "selected.ckpt").is_file():
            raise RunArchiveError("finished, but no selected.ckpt in it")
        folder.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.glob("csv/*.csv")):
            n = len(list(folder.glob("metrics.chunk*.csv")))
            target = folder / f.name if f.name.startswith("metrics.chunk") else folder / f"metrics.chunk{n:02d}.csv"
            shutil.copy2(f, target)
        for f in ("metrics.json", "profile.json"):
            if (tmp / f).is_file():
                shutil.copy2(tmp / f, folder / f)
        chunk = (info.get("chunks") or [{}])[-1]
        step = chunk.get("to_step")
        no_state = f"no state came back (chunk {chunk.get('status')} before its first checkpoint)"
        if info.get("finished"):
            reports = sorted(tmp.glob("eval/*.json")) + score_missing(info, tmp, queue, data)
            export_to_zoo(info, tmp / "selected.ckpt", reports, zoo_dir, queue)
            (folder / "state.ckpt").unlink(missing_ok=True)
            what = f"finished: in the zoo with {len(reports)} test report(s)"
        elif (tmp / "state.ckpt").is_file():
            shutil.copy2(tmp / "state.ckpt", folder / "state.ckpt")
            what = "resumable"
        elif (folder / "state.ckpt").is_file():
            kept = checkpoint_step(folder / "state.ckpt")
            what = f"{no_state}: runs/{name}/state.ckpt (step {kept}) stays"
        else:
            what = f"{no_state}: the next slot starts it afresh"
        (folder / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    return f"{name}: step {step}/{info.get('max_steps')}, {what}"


def score_missing(info: dict[str, Any], tmp: Path, queue: Path, data: str | None) -> list[Path]:
    """Test sets a finished run came back without (not carried to the GPU), scored here with ``xnet.evaluate``."""
    entry = next((e for e in load_queue(queue) if e["name"] == info["name"]), {})
    done = {p.stem for p in tmp.glob("eval/*.json")}
    reports = []
    for test_set in entry.get("test_sets", []):
        if test_set in done:
            continue
        out = tmp / "eval_here" / test_set
        env = {**os.environ, "WANDB_MODE": "disabled", **({"XNET_DATA": str(data)} if data else {})}
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "xnet.evaluate",
                *entry.get("eval", []),
                f"weights={tmp / 'selected.ckpt'}",
                f"data/test={test_set}",
                f"hydra.run.dir={out}",
                "device=cpu",
                "fuse=false",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0 or not (out / "metrics.json").is_file():
            raise RunArchiveError(
                f"scoring {test_set} here failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}"
            )
        reports.append(out / "metrics.json")
    return reports


def ingest_slot_files(src: Path, results: Path, triton_archive: Path) -> None:
    """The slot's record for the next one: its checks (results/gpu/checks.json), benchmark, thread table,
    log and report (results/gpu/), and the Triton cache it compiled (.triton_cache/)."""
    report_file = src / "report.json"
    if not report_file.is_file():
        print(f"{src}: no report.json: no checks recorded", file=sys.stderr)
        return
    report = json.loads(report_file.read_text())
    device, stamp = (
        report.get("device", "cuda"),
        report.get("date", time.strftime("%Y-%m-%d %H:%M")).replace(" ", "_").replace(":", ""),
    )
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy2(report_file, results / f"slot_{stamp}_report.json")
    if (src / "queue.log").is_file():
        shutil.copy2(src / "queue.log", results / f"slot_{stamp}_queue.log")
    checks = report.get("checks") or {}
    if checks.get("mode") == "full":
        record = {k: checks.get(k) for k in ("hash", "identity", "tests", "benchmark", "depthwise")}
        record["date"] = report.get("date")
        bench = src / f"benchmark_{device}.json"
        if checks.get("benchmark") == "ok" and bench.is_file():
            shutil.copy2(bench, results / f"benchmark_{device}.json")
            record["benchmark_file"] = _shown(results / f"benchmark_{device}.json")
        else:
            record["benchmark_file"] = (read_checks(results).get(device) or {}).get("benchmark_file")
        all_checks = read_checks(results)
        all_checks[device] = record
        (results / "checks.json").write_text(json.dumps(all_checks, indent=1) + "\n")
        print(
            f"checks: {device} hash {record['hash']}: tests {record['tests']}, benchmark {record['benchmark']} "
            f"-> {results / 'checks.json'}"
        )
    if (src / "benchmark_cpu_threads.json").is_file() and (report.get("steps", {}).get("cpu_threads") or {}).get(
        "status"
    ) == "ok":
        shutil.copy2(src / "benchmark_cpu_threads.json", results / "benchmark_cpu_threads.json")
    if (src / "triton_cache.tar.gz").is_file():
        triton_archive.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "triton_cache.tar.gz", triton_archive)
        print(
            f"triton cache: {triton_archive} ({triton_archive.stat().st_size / 2**20:.1f} MB), carried by the next slot"
        )


def export_to_zoo(info: dict[str, Any], ckpt: Path, reports: list[Path], zoo_dir: Path | None, queue: Path) -> None:
    from xnet.zoo import add

    entry = next((e for e in load_queue(queue) if e["name"] == info["name"]), {})
    training = {
        "steps": info["max_steps"],
        "train_wall_s": info.get("train_wall_s"),
        "gpus": sorted({c["gpu"] for c in info["chunks"]}),
        "chunks": len(info["chunks"]),
        "overrides": info["overrides"],
        "checkpoint": info.get("selected_checkpoint"),
    }
    add(
        entry.get("zoo", info["name"]), ckpt, reports, zoo_dir=zoo_dir, training=training, force=True
    )  # a re-ingest updates its entry


# ---------------------------------------------------------------------------------------- command line
def parse_costs(device: str, pairs: list[str]) -> Costs:
    costs, names = COSTS[device], {f.name for f in fields(Costs)}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in names:
            raise SystemExit(f"error: --cost {pair}: unknown part (one of {', '.join(sorted(names))})")
        try:
            costs = replace(costs, **{key: float(value)})
        except ValueError:
            raise SystemExit(f"error: --cost {pair}: not a number of seconds") from None
    return costs


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=9.0, help="wall-clock budget for everything, minutes")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "queue_out")))
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--queue", type=Path, default=RUNS / "queue.yaml")
    ap.add_argument("--runs", type=Path, default=RUNS, help="where resumable states live (runs/<name>/)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the recorded checks, benchmark and thread table")
    ap.add_argument("--zoo", type=Path, default=None, help="--ingest: the zoo folder (default: weights/)")
    ap.add_argument("--data", default=None, help="the data root (default: $XNET_DATA)")
    ap.add_argument("--only", nargs="*", default=None, help="train only these queue entries")
    ap.add_argument(
        "--checks",
        choices=["auto", "full", "smoke", "none"],
        default="auto",
        help="auto: the CUDA tests and the benchmark when the code they cover changed, else the smoke check",
    )
    ap.add_argument(
        "--thread-table", choices=["auto", "yes", "no"], default="auto", help="auto: on CUDA until recorded"
    )
    ap.add_argument(
        "--cost", nargs="*", default=[], metavar="PART=SECONDS", help="override a part of the time split (Costs)"
    )
    ap.add_argument("--bench-families", default="dncnn")
    ap.add_argument(
        "--bench-args",
        nargs="*",
        default=["--no-inference"],
        help="extra scripts/benchmark.py arguments (default: training only, what the queue chooses by, within its cap)",
    )
    ap.add_argument("--profile-steps", type=int, default=20, help="profile this many steps of the first run (0: off)")
    ap.add_argument("--profile-start", type=int, default=200, help="... from this step")
    ap.add_argument("--fail-fast", action="store_true")
    ap.add_argument("--train-overrides", nargs="*", default=[], help="extra xnet.train overrides for every run")
    ap.add_argument(
        "--triton-cache-dir", type=Path, default=Path(os.environ.get("TRITON_CACHE_DIR") or "/tmp/xnet_triton_cache")
    )
    ap.add_argument("--triton-archive", type=Path, default=TRITON_ARCHIVE, help="the carried Triton cache")
    ap.add_argument("--triton-max-mb", type=float, default=8.0)
    ap.add_argument("--plan-only", action="store_true", help="print and record the plan, run nothing")
    ap.add_argument(
        "--ingest", type=Path, default=None, help="unpack a slot's DIR into runs/, the zoo and results/gpu/ (here)"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.ingest:
        return (
            2
            if ingest(args.ingest, args.runs, args.zoo, args.queue, args.results, args.triton_archive, args.data)
            else 0
        )
    plan = Plan(args, parse_costs(args.device, args.cost))
    q = Queue(args, plan)
    for line in plan.lines():
        q.log(line)
    if args.plan_only:
        q.finish()
        return 0
    try:
        q.triton_cache_in()
        if plan.checks != "none":
            q.checks()
        q.train_queue()
        q.triton_cache_out()
    finally:
        q.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
