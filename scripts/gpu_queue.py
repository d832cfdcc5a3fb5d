#!/usr/bin/env python
"""One command for a GPU slot: check, test, measure, then train the queue until the budget is spent.

    python scripts/gpu_queue.py --budget-min 9 --out DIR            # on the GPU machine
    python scripts/gpu_queue.py --ingest DIR                         # here, with what came back

In this order, each step under its own time cap, in one process tree:
  (a) environment: torch / CUDA / GPU, printed and recorded;
  (b) the CUDA tests (``pytest -m cuda``);
  (c) ``scripts/benchmark.py --device cuda --quick`` (dncnn family, data pipeline, depthwise kernels)
      → DIR/benchmark_<device>.json, and the CPU thread table of fused inference on the machine's
      cores (the only many-core CPU at hand) → DIR/benchmark_cpu_threads.json;
  (d) the training queue (``runs/queue.yaml``): each entry not finished resumes from its committed
      state (``runs/<name>/state.ckpt``) or starts (its length from the benchmark's step time),
      trains with ``trainer.max_time`` until the budget is spent, and is packed into
      DIR/run_<name>.tar.gz: the resumable state (weights, optimizer, step, data-generator state),
      its CSV logs and run.json (chunks: GPU, steps, wall clock); when finished, the checkpoint the
      final step and the ``xnet.evaluate`` reports on its test sets.
Everything lands in at most 8 files (DIR/queue.log, DIR/report.json, the two benchmarks, ≤ 4 runs).

``--ingest DIR`` unpacks the runs into ``runs/<name>/`` (the state for the next slot) and exports a
finished run into the zoo (``weights/<name>``, model card with steps, GPU, wall clock and recipe).
"""
from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
MAX_RUN_FILES = 4  # + queue.log, report.json, two benchmark JSONs = 8 files back from a slot


class Queue:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + 60 * args.budget_min
        self.report: dict[str, Any] = {"budget_min": args.budget_min, "device": args.device, "steps": {}}
        self.log_file = open(self.out / "queue.log", "a", buffering=1)
        self.work = Path(tempfile.mkdtemp(prefix="xnet_queue_"))
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
        if args.data:
            self.env["XNET_DATA"] = str(Path(args.data).resolve())

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} {self.left():6.0f}s left] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def run(self, name: str, cmd: list[str], cap: float, log_tail: int = 60) -> dict[str, Any]:
        """Run ``cmd`` with a hard time cap (its whole process group is killed at the cap)."""
        cap = max(1.0, min(cap, self.left()))
        self.log(f"{name}: {' '.join(cmd)}  (cap {cap:.0f}s)")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=cap)
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            status = "timeout"
        took = time.monotonic() - t0
        lines = (output or "").splitlines()
        self.log_file.write("\n".join(f"    {l}" for l in lines[-log_tail:]) + "\n")
        print("\n".join(lines[-log_tail:]), flush=True)
        self.log(f"{name}: {status} in {took:.0f}s")
        return {"status": status, "seconds": round(took, 1), "tail": lines[-15:]}

    # ------------------------------------------------------------------------------------------ steps
    def environment(self) -> None:
        code = (
            "import json, platform, torch, lightning, torchmetrics;"
            "d = {'python': platform.python_version(), 'torch': torch.__version__, 'lightning': lightning.__version__,"
            " 'torchmetrics': torchmetrics.__version__, 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),"
            " 'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, 'cpus': __import__('os').cpu_count()};"
            "print(json.dumps(d))"
        )
        res = self.run("environment", [sys.executable, "-c", code], 60)
        try:
            self.report["environment"] = json.loads(res["tail"][-1])
        except (IndexError, ValueError):
            self.report["environment"] = {"error": res["tail"]}
        if self.args.device == "cuda" and not self.report["environment"].get("cuda_available"):
            raise SystemExit("CUDA is not available on this machine: nothing to do (the report says why)")

    def tests(self) -> None:
        cap = min(self.args.tests_cap, 0.15 * self.left())
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "--continue-on-collection-errors", *(["-x"] if self.args.fail_fast else [])]
        self.report["steps"]["cuda_tests"] = self.run("cuda tests", cmd, cap)

    def benchmark(self) -> None:
        cap = min(self.args.bench_cap, 0.2 * self.left())
        path = self.out / f"benchmark_{self.args.device}.json"
        cmd = [sys.executable, "scripts/benchmark.py", "--device", self.args.device, "--quick", "--families", self.args.bench_families,
               "--compile", "off", "--train-steps", "10", "--json", str(path), "--data-pipeline", "--depthwise-kernels",
               *self.args.bench_args]
        self.report["steps"]["benchmark"] = self.run("benchmark", cmd, cap, log_tail=120)
        if path.is_file():  # written after every family: a capped run still plans the queue
            self.bench = json.loads(path.read_text())
            self.choose_depthwise()

    def choose_depthwise(self) -> None:
        """Train with the Triton depthwise kernels when the CUDA tests passed and the benchmark's
        xDnCNN bf16 step was ≥ 5 % faster with them than with the default (cuDNN)."""
        tests_ok = (self.report["steps"].get("cuda_tests") or {}).get("status") == "ok"
        try:
            runs = self.bench["devices"][self.args.device]["families"]["dncnn"]["training"]["runs"]
            default, triton = runs["xDnCNN/bf16"]["step_ms"], runs["xDnCNN/triton_bf16"]["step_ms"]
        except (KeyError, TypeError):
            return
        use = tests_ok and triton < 0.95 * default
        self.report["depthwise"] = {"default_ms": default, "triton_ms": triton, "cuda_tests_ok": tests_ok, "training_uses": "triton" if use else "default"}
        if use:
            self.env["XNET_CUDA_DEPTHWISE"] = "triton"
        self.log(f"depthwise for training: {'triton' if use else 'default'} (xDnCNN bf16 step {default:.1f} ms default, {triton:.1f} ms triton)")

    bench: dict[str, Any] | None = None

    def cpu_threads(self) -> None:
        """Fused CPU inference, xDnCNN / DnCNN-S, at 1, 2, 4, 8 and all cores (issue: the ratio at
        many threads), with the dense-conv / xUnit split."""
        cap = min(self.args.threads_cap, 0.15 * self.left())
        path = self.out / "benchmark_cpu_threads.json"
        cmd = [sys.executable, "scripts/benchmark.py", "--device", "cpu", "--families", "dncnn", "--no-inference", "--no-train",
               "--thread-table", "--thread-counts", "4", "8", "--repeats", "7", "--json", str(path)]
        self.report["steps"]["cpu_threads"] = self.run("cpu thread table", cmd, cap, log_tail=20)

    def planned_steps(self, entry: dict[str, Any]) -> int:
        """A new run's length: ``train_minutes`` of the benchmark's bf16 (GPU) step time."""
        try:
            family, model = entry["bench"]
            runs = self.bench["devices"][self.args.device]["families"][family]["training"]["runs"]
            mode = "bf16" if self.args.device == "cuda" else "plain"
            if self.env.get("XNET_CUDA_DEPTHWISE") == "triton" and f"{model}/triton_bf16" in runs:
                mode = "triton_bf16"
            step_s = runs[f"{model}/{mode}"]["step_ms"] / 1e3
            steps = int(60 * entry["train_minutes"] / (1.15 * step_s)) // 1000 * 1000  # 15 %: validation, logging
            return max(1000, steps)
        except (KeyError, TypeError, ValueError):
            return int(entry["default_steps"])

    # ------------------------------------------------------------------------------------ training
    def train_queue(self) -> None:
        entries = load_queue(self.args.queue)
        if self.args.only:
            entries = [e for e in entries if e["name"] in self.args.only]
        packed = 0
        for entry in entries:
            info = read_run_info(self.args.runs / entry["name"])
            if info.get("finished"):
                continue
            if packed >= MAX_RUN_FILES or self.left() < self.args.reserve_s + self.args.min_chunk_s:
                break
            self.report["steps"][f"train:{entry['name']}"] = self.train_entry(entry, info, first=packed == 0)
            packed += 1

    def train_entry(self, entry: dict[str, Any], info: dict[str, Any], first: bool) -> dict[str, Any]:
        name = entry["name"]
        work = self.work / name
        (work / "checkpoints").mkdir(parents=True, exist_ok=True)
        state = self.args.runs / name / "state.ckpt"
        if state.is_file():
            shutil.copy2(state, work / "checkpoints" / "last.ckpt")
        for f in (self.args.runs / name).glob("metrics.chunk*.csv"):
            (work / "csv").mkdir(exist_ok=True)
            shutil.copy2(f, work / "csv" / f.name)
        max_steps = int(info.get("max_steps") or self.planned_steps(entry))
        overrides = list(info.get("overrides") or entry["overrides"])  # a resumed run keeps its own recipe
        info.update({"name": name, "overrides": overrides, "max_steps": max_steps})
        seconds = self.left() - self.args.reserve_s
        trainer = ["trainer=gpu"] if self.args.device == "cuda" else ["trainer=cpu"]
        cmd = [
            sys.executable, "-m", "xnet.train", *overrides, *trainer, *self.args.train_overrides,
            f"trainer.max_steps={max_steps}", f"trainer.max_time={_dhms(seconds - self.args.startup_s)}", f"hydra.run.dir={work}",
            "ckpt_path=last_if_any", "logger=csv", "test_after_fit=false",  # finished runs are scored below
        ]
        if first and self.args.profile_steps:
            cmd += ["+callbacks.profile._target_=xnet.lit.callbacks.StepProfile", f"+callbacks.profile.dirpath={work}",
                    f"+callbacks.profile.start={self.args.profile_start}", f"+callbacks.profile.steps={self.args.profile_steps}"]
        t0 = time.time()
        res = self.run(f"train {name}", cmd, self.left() - 5, log_tail=40)  # max_time stops it well before
        last = work / "checkpoints" / "last.ckpt"
        step, wall = checkpoint_progress(last)
        res.update({"max_steps": max_steps, "step": step})
        info.setdefault("chunks", []).append({
            "date": time.strftime("%Y-%m-%d %H:%M"), "gpu": (self.report.get("environment") or {}).get("gpu") or self.args.device,
            "to_step": step, "status": res["status"], "process_s": round(time.time() - t0, 1), "train_wall_s": wall,
            "depthwise": self.env.get("XNET_CUDA_DEPTHWISE", "default"),
        })
        info["train_wall_s"] = wall
        info["finished"] = bool(step is not None and step >= max_steps and res["status"] == "ok")
        reports = []
        if info["finished"]:
            # the final weights: no checkpoint selection at all (a run's best-* file from an earlier
            # slot is not carried between slots, and the fast recipe's cosine ends at its best anyway)
            best = last
            info["selected_checkpoint"] = f"final (step {step})"
            for test_set in entry.get("test_sets", []):
                out = work / "eval" / test_set
                r = self.run(f"evaluate {name} {test_set}", [
                    sys.executable, "-m", "xnet.evaluate", *task_overrides(entry), f"weights={best}", f"data/test={test_set}",
                    f"hydra.run.dir={out}", f"device={self.args.device}", "fuse=false"], max(20.0, self.left() - 5))  # eager fp32: the reference path
                if (out / "metrics.json").is_file():
                    reports.append(out / "metrics.json")
                res[f"eval_{test_set}"] = r["status"]
        res["finished"] = info["finished"]
        self.pack(name, work, info, reports)
        return res

    def pack(self, name: str, work: Path, info: dict[str, Any], reports: list[Path]) -> None:
        """DIR/run_<name>.tar.gz: run.json, CSV logs, metrics, profile; the state (or, finished, the
        selected checkpoint and the evaluation reports)."""
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


def task_overrides(entry: dict[str, Any]) -> list[str]:
    """The evaluation's task (the architecture comes with the checkpoint)."""
    return list(entry.get("eval", []))


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


# ---------------------------------------------------------------------------------------- ingest
def ingest(src: Path, runs: Path = RUNS, zoo_dir: Path | None = None, queue: Path = RUNS / "queue.yaml") -> list[str]:
    """Unpack every DIR/run_*.tar.gz into ``runs/<name>/``; export finished runs into the zoo."""
    done = []
    for tar_path in sorted(src.glob("run_*.tar.gz")):
        name = tar_path.name[len("run_"):-len(".tar.gz")]
        folder = runs / name
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(tar_path) as tar:
                tar.extractall(tmp, filter="data")
            tmp = Path(tmp)
            info = json.loads((tmp / "run.json").read_text())
            folder.mkdir(parents=True, exist_ok=True)
            for f in sorted(tmp.glob("csv/*.csv")):
                n = len(list(folder.glob("metrics.chunk*.csv")))
                target = folder / f.name if f.name.startswith("metrics.chunk") else folder / f"metrics.chunk{n:02d}.csv"
                shutil.copy2(f, target)
            for f in ("metrics.json", "profile.json"):
                if (tmp / f).is_file():
                    shutil.copy2(tmp / f, folder / f)
            if info.get("finished"):
                (folder / "state.ckpt").unlink(missing_ok=True)
                export_to_zoo(info, tmp / "selected.ckpt", sorted(tmp.glob("eval/*.json")), zoo_dir, queue)
            else:
                shutil.copy2(tmp / "state.ckpt", folder / "state.ckpt")
            (folder / "run.json").write_text(json.dumps(info, indent=1) + "\n")
        done.append(name)
        print(f"{name}: step {info['chunks'][-1]['to_step']}/{info['max_steps']}, {'finished' if info.get('finished') else 'resumable'}")
    return done


def export_to_zoo(info: dict[str, Any], ckpt: Path, reports: list[Path], zoo_dir: Path | None, queue: Path) -> None:
    from xnet.zoo import add

    entry = next((e for e in load_queue(queue) if e["name"] == info["name"]), {})
    training = {
        "steps": info["max_steps"], "train_wall_s": info.get("train_wall_s"),
        "gpus": sorted({c["gpu"] for c in info["chunks"]}), "chunks": len(info["chunks"]),
        "overrides": info["overrides"], "checkpoint": info.get("selected_checkpoint"),
    }
    add(entry.get("zoo", info["name"]), ckpt, reports, zoo_dir=zoo_dir, training=training, force=True)  # a re-ingest updates its entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=9.0, help="wall-clock budget for everything, minutes")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "queue_out")))
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--queue", type=Path, default=RUNS / "queue.yaml")
    ap.add_argument("--runs", type=Path, default=RUNS, help="where resumable states live (runs/<name>/)")
    ap.add_argument("--zoo", type=Path, default=None, help="--ingest: the zoo folder (default: weights/)")
    ap.add_argument("--reserve-s", type=float, default=40, help="kept after each chunk for its evaluation and packing")
    ap.add_argument("--min-chunk-s", type=float, default=45, help="no chunk starts with less than this left")
    ap.add_argument("--data", default=None, help="the data root (default: $XNET_DATA)")
    ap.add_argument("--only", nargs="*", default=None, help="train only these queue entries")
    ap.add_argument("--tests-cap", type=float, default=90)
    ap.add_argument("--bench-cap", type=float, default=90)
    ap.add_argument("--bench-families", default="dncnn")
    ap.add_argument("--bench-args", nargs="*", default=[], help="extra scripts/benchmark.py arguments (e.g. --no-inference)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["tests", "benchmark", "cpu-threads", "train"])
    ap.add_argument("--threads-cap", type=float, default=45)
    ap.add_argument("--profile-steps", type=int, default=20, help="profile this many steps of the first run (0: off)")
    ap.add_argument("--profile-start", type=int, default=200, help="... from this step")
    ap.add_argument("--startup-s", type=float, default=25, help="a training process's start-up (imports, data) before max_time counts")
    ap.add_argument("--fail-fast", action="store_true")
    ap.add_argument("--train-overrides", nargs="*", default=[], help="extra xnet.train overrides for every run")
    ap.add_argument("--ingest", type=Path, default=None, help="unpack a slot's DIR into runs/ and the zoo (here, not on the GPU)")
    args = ap.parse_args(argv)
    if args.ingest:
        ingest(args.ingest, args.runs, args.zoo, args.queue)
        return 0
    q = Queue(args)
    try:
        q.environment()
        if "tests" not in args.skip:
            q.tests()
        if "benchmark" not in args.skip:
            q.benchmark()
        if "cpu-threads" not in args.skip:
            q.cpu_threads()
        if "train" not in args.skip:
            q.train_queue()
    finally:
        q.report["left_s"] = round(q.left(), 1)
        (q.out / "report.json").write_text(json.dumps(q.report, indent=1))
        q.log("done")
        shutil.rmtree(q.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
