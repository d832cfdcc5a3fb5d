"""The GPU-slot command: its plan (the budget's split, hash-gated checks, what trains) is made before it
runs and a timed-out check never changes it; the dry run on CPU packs states and results into at most 8
files; ingest survives broken archives; the Triton cache and the packed data make the round trip."""

import json
import re
import subprocess
import sys
import tarfile

import pytest
import torch
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import gpu_prepare
import gpu_queue as gq

TINY = ["experiment=demo", "data.batch_size=4", "data.patch_size=32", "data.val_limit=1", "module.log_images=0"]
QUEUE = [
    {
        "name": "tiny_done",
        "zoo": "tiny_done",
        "overrides": [*TINY, "trainer.val_check_interval=10"],
        "eval": ["task=denoise", "task.sigma=25"],
        "default_steps": 20,
        "test_sets": ["sample"],
    },
    {"name": "tiny_long", "overrides": [*TINY, "trainer.val_check_interval=50"], "default_steps": 10_000_000},
]
PLAN_LINE = re.compile(
    r"plan: ([\d.]+) min = startup (\d+) s \+ checks (\d+) s \+ training (-?\d+) s "
    r"\+ packing (\d+) s \+ reserve (\d+) s"
)


@pytest.fixture
def queue_dir(tmp_path):
    (tmp_path / "queue.yaml").write_text(yaml.safe_dump(QUEUE))
    (tmp_path / "results").mkdir()
    return tmp_path


def args_for(tmp_path, *extra):
    return gq.parser().parse_args(
        [
            "--out",
            str(tmp_path / "out"),
            "--queue",
            str(tmp_path / "queue.yaml"),
            "--runs",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "results"),
            *extra,
        ]
    )


def record_checks(results, **kw):
    record = {
        "hash": gq.covered_hash(),
        "identity": gq.machine_identity("cuda"),
        "tests": "ok",
        "benchmark": "ok",
        "depthwise": "cudnn",
        "benchmark_file": str(REPO / "results/gpu/benchmark_cuda_h200_train.json"),
        **kw,
    }
    (results / "checks.json").write_text(json.dumps({"cuda": record}))


def test_the_cpu_dry_run_prints_and_records_its_split(queue_dir):
    """The README's dry run (plan only): the split it prints is the one report.json keeps, and it adds up."""
    cmd = [
        sys.executable,
        "scripts/gpu_queue.py",
        "--device",
        "cpu",
        "--budget-min",
        "1.5",
        "--out",
        str(queue_dir / "q"),
        "--queue",
        str(queue_dir / "queue.yaml"),
        "--runs",
        str(queue_dir / "runs"),
        "--plan-only",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    printed = [float(v) for v in PLAN_LINE.search(res.stdout).groups()]
    plan = json.loads((queue_dir / "q" / "report.json").read_text())["plan"]
    assert list(plan["split"]) == ["startup", "checks", "training", "packing", "reserve"]
    assert printed[0] == 1.5 and printed[1:] == [round(v) for v in plan["split"].values()]
    assert sum(plan["split"].values()) == pytest.approx(90) and plan["split"]["training"] > 0
    assert plan["checks"] == "smoke" and [e["name"] for e in plan["entries"]] == ["tiny_done", "tiny_long"]
    assert "tiny_done starts, 20 steps in all (default_steps" in res.stdout


def test_unchanged_code_leaves_7_of_9_minutes_to_training_and_changed_code_runs_the_checks(queue_dir):
    record_checks(queue_dir / "results")
    (queue_dir / "results" / "benchmark_cpu_threads.json").write_text("{}")
    c = gq.COSTS["cuda"]
    steady = gq.Plan(args_for(queue_dir, "--budget-min", "9"), c)
    assert steady.checks == "smoke" and not steady.thread_table
    assert steady.split["checks"] == c.smoke and steady.split["training"] >= 7 * 60
    assert sum(steady.split.values()) == pytest.approx(540)

    record_checks(queue_dir / "results", hash="0" * 16)
    (queue_dir / "results" / "benchmark_cpu_threads.json").unlink()
    changed = gq.Plan(args_for(queue_dir, "--budget-min", "9"), c)
    assert changed.checks == "full" and "covered files changed" in changed.why and changed.thread_table
    assert changed.split["checks"] == c.smoke + c.tests + c.bench + c.threads
    assert changed.split["training"] == pytest.approx(540 - sum(v for k, v in changed.split.items() if k != "training"))
    assert changed.max_runs == 3  # 8 files: log, report, benchmark, thread table, Triton cache, 3 runs


def test_the_checks_rerun_only_when_the_code_they_cover_changes(tmp_path):
    for path, text in {
        "tests/test_k.py": "import pytest\nfrom xnet.foo import bar\n@pytest.mark.cuda\ndef test(): bar()\n",
        "xnet/foo.py": "bar = print\n",
        "xnet/kernels/k.py": "k = 1\n",
        "xnet/other.py": "o = 1\n",
        "tests/test_cpu.py": "from xnet.other import o\n",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    covered = {p.relative_to(tmp_path).as_posix() for p in gq.covered_files(tmp_path)}
    assert covered == {"tests/test_k.py", "xnet/foo.py", "xnet/kernels/k.py"}
    before = gq.covered_hash(tmp_path)
    (tmp_path / "xnet/other.py").write_text("o = 2\n")
    assert gq.covered_hash(tmp_path) == before
    for changed in ("xnet/foo.py", "xnet/kernels/k.py"):
        (tmp_path / changed).write_text("# changed\n")
        assert gq.covered_hash(tmp_path) != before
        before = gq.covered_hash(tmp_path)
    ident = {"torch": "2.11", "triton": "3.6", "gpu": "H200"}
    ok = {"hash": before, "identity": ident, "tests": "ok", "benchmark": "ok"}
    assert gq.full_checks_reason(ok, before, ident) is None
    assert "machine changed" in gq.full_checks_reason(ok, before, {**ident, "triton": "3.7"})
    assert "did not pass" in gq.full_checks_reason({**ok, "benchmark": "timeout"}, before, ident)


def bench_json(triton_ms, default_ms=96.7):
    runs = {
        "xDnCNN/bf16": {"step_ms": default_ms},
        "xDnCNN/triton_bf16": {"step_ms": triton_ms},
        "DnCNN-S/bf16": {"step_ms": 10.0},
    }
    return {"devices": {"cuda": {"families": {"dncnn": {"training": {"runs": runs}}}}}}


@pytest.mark.parametrize(
    "tests_status,bench_status,trains",
    [
        ("ok", "timeout", "triton"),  # a timed-out benchmark keeps the plan
        ("exit 1", "timeout", "cudnn"),  # failed tests: back to the default, said so
        ("ok", "ok", "cudnn"),  # the fresh benchmark found the default faster (tests passed): the fastest tested
    ],
)
def test_a_timed_out_check_never_changes_what_trains(queue_dir, tests_status, bench_status, trains):
    record_checks(queue_dir / "results", depthwise="triton")
    plan = gq.Plan(args_for(queue_dir, "--budget-min", "9", "--checks", "full"), gq.COSTS["cuda"])
    assert plan.depthwise == "triton"
    steps_before = [e["max_steps"] for e in plan.entries]
    q = gq.Queue(args_for(queue_dir, "--budget-min", "9", "--checks", "full"), plan)
    statuses = {"cuda tests": tests_status, "benchmark": bench_status}

    def fake_run(name, cmd, cap, phase, log_tail=60):
        if name == "benchmark":
            (q.out / "benchmark_cuda.json").write_text(json.dumps(bench_json(triton_ms=120.0)))
        return {"status": statuses[name], "seconds": 1.0, "tail": [], "lines": []}

    q.run = fake_run
    q.full_checks()
    assert q.depthwise == trains and q.env.get("XNET_CUDA_DEPTHWISE", "cudnn") == trains
    assert [e["max_steps"] for e in plan.entries] == steps_before
    log = (q.out / "queue.log").read_text()
    if bench_status == "timeout" and tests_status == "ok":
        assert "benchmark timeout: training keeps triton (the plan)" in log
    if tests_status != "ok":
        assert "cuda tests exit 1: training uses cudnn, not the planned triton" in log


def test_the_fastest_tested_layout_needs_passed_tests_and_a_5_percent_gain():
    assert gq.fastest_tested(bench_json(triton_ms=60.0), "cuda", tests_ok=True)[0] == "triton"
    assert gq.fastest_tested(bench_json(triton_ms=60.0), "cuda", tests_ok=False)[0] == "cudnn"
    assert gq.fastest_tested(bench_json(triton_ms=94.0), "cuda", tests_ok=True)[0] == "cudnn"
    assert gq.fastest_tested(None, "cuda", tests_ok=True)[0] == "cudnn"


def add_tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            gq._add_bytes(tar, name, data)


def test_ingest_survives_broken_archives_and_records_the_slot(tmp_path, capsys):
    out, runs, results = tmp_path / "out", tmp_path / "runs", tmp_path / "results"
    out.mkdir()
    (tmp_path / "queue.yaml").write_text(yaml.safe_dump(QUEUE))
    killed = {
        "name": "b_fresh",
        "overrides": ["x=1"],
        "max_steps": 100,
        "finished": False,
        "chunks": [{"gpu": "NVIDIA H200", "to_step": None, "status": "timeout"}],
    }
    (out / "run_a_broken.tar.gz").write_bytes(b"not a tar")  # sorted first: the others are still ingested
    add_tar(out / "run_b_fresh.tar.gz", {"run.json": json.dumps(killed).encode()})
    add_tar(out / "run_c_resumed.tar.gz", {"run.json": json.dumps({**killed, "name": "c_resumed"}).encode()})
    add_tar(out / "run_d_no_json.tar.gz", {"csv/metrics.csv": b"step\n"})
    (runs / "c_resumed").mkdir(parents=True)
    torch.save({"global_step": 7}, runs / "c_resumed" / "state.ckpt")
    report = {
        "device": "cuda",
        "date": "2026-12-01 10:00",
        "checks": {
            "mode": "full",
            "hash": "abc",
            "identity": {"gpu": "H200"},
            "tests": "ok",
            "benchmark": "ok",
            "depthwise": "triton",
        },
        "steps": {},
    }
    (out / "report.json").write_text(json.dumps(report))
    (out / "benchmark_cuda.json").write_text(json.dumps(bench_json(60.0)))
    add_tar(out / "triton_cache.tar.gz", {"k1/kernel.cubin": b"\0"})
    archive = tmp_path / ".triton_cache" / "triton_cache.tar.gz"

    code = gq.main(
        [
            "--ingest",
            str(out),
            "--runs",
            str(runs),
            "--queue",
            str(tmp_path / "queue.yaml"),
            "--results",
            str(results),
            "--triton-archive",
            str(archive),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert re.search(r"error: .*run_a_broken.tar.gz: ReadError", captured.err)
    assert re.search(r"error: .*run_d_no_json.tar.gz: RunArchiveError: no run.json", captured.err)
    assert (
        "b_fresh: step None/100, no state came back (chunk timeout before its first checkpoint): "
        "the next slot starts it afresh" in captured.out
    )
    assert "runs/c_resumed/state.ckpt (step 7) stays" in captured.out
    assert (
        json.loads((runs / "b_fresh" / "run.json").read_text())["max_steps"] == 100
        and not (runs / "b_fresh" / "state.ckpt").exists()
    )
    assert torch.load(runs / "c_resumed" / "state.ckpt")["global_step"] == 7
    checks = json.loads((results / "checks.json").read_text())["cuda"]
    assert checks["hash"] == "abc" and checks["depthwise"] == "triton" and (results / "benchmark_cuda.json").is_file()
    assert archive.is_file() and (results / "slot_2026-12-01_1000_report.json").is_file()


def test_the_triton_cache_carries_binaries_and_metadata_only(tmp_path):
    cache = tmp_path / "cache"
    (cache / "K1").mkdir(parents=True)
    for name in ("kern.json", "kern.cubin", "kern.ptx", "kern.llir", "__grp__kern.json", "launcher.so"):
        (cache / "K1" / name).write_text(name)
    archive = tmp_path / "triton_cache.tar.gz"
    res = gq.save_triton_cache(cache, archive, carried=set(), max_mb=8)
    assert res["new"] == 1 and res["packed"] == 1
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["K1/__grp__kern.json", "K1/kern.cubin", "K1/kern.json", "K1/launcher.so"]
    again = tmp_path / "again"
    assert (
        gq.restore_triton_cache(archive, again) == {"K1"} and (again / "K1" / "kern.cubin").read_text() == "kern.cubin"
    )
    archive.unlink()
    assert (
        gq.save_triton_cache(again, archive, carried={"K1"}, max_mb=8) == {"carried": 1, "new": 0}
        and not archive.exists()
    )


def test_the_data_for_the_next_entries_is_chosen_in_queue_order_within_the_carry():
    sizes = {"A": 10, "B": 5, "C": 20, "D": 5, "E": 30, "F": 100}
    entries = [
        {"name": "e1", "sets": {"train": ["A", "B"], "test": {"t": ["C"]}}},
        {"name": "e2", "sets": {"train": ["A", "D"], "test": {"t": ["E"]}}},
        {"name": "e3", "sets": {"train": ["F"], "test": {}}},
    ]
    chosen, served, skipped = gpu_prepare.select(entries, 45, sizes.get)
    assert chosen == {"A": 10, "B": 5, "C": 20, "D": 5}
    assert [(s["name"], s["test_sets_carried"]) for s in served] == [("e1", True), ("e2", False)]
    assert skipped == ["e3: its training sets need 0.0 MiB more, 0.0 free"]


def test_the_committed_queue_composes():
    """Every entry of runs/queue.yaml composes as the GPU queue trains and scores it: a typo'd key
    there would only show on a GPU, costing the slot."""
    from xnet.utils.config import compose_config

    queue = yaml.safe_load((REPO / "runs" / "queue.yaml").read_text())
    assert queue and len({e["name"] for e in queue}) == len(queue)
    for entry in queue:
        cfg = compose_config(
            "train", [*entry["overrides"], "trainer=gpu", "ckpt_path=last_if_any", "logger=csv", "test_after_fit=false"]
        )
        assert cfg.trainer.accelerator == "gpu", entry["name"]
        for test_set in entry.get("test_sets", []):
            ev = compose_config(
                "eval", [*entry.get("eval", []), "weights=x.pt", f"data/test={test_set}", "device=cuda", "fuse=false"]
            )
            for key in ("name", "sigma", "scale", "color"):  # scored on the task it was trained for
                assert ev.task.get(key) == cfg.task.get(key), (entry["name"], test_set, key)


@pytest.mark.parametrize(
    "name,train,own_test,test",
    [
        (
            "xdncnn_s25",
            ["BSD68", "Set12", "Train400"],
            ["BSD68"],
            {"bsd68": ["BSD68"], "set12": ["Set12"]},
        ),  # BSD68: the monitor
        (
            "xsrcnn_f_x3",
            ["Set5", "T91", "Train400"],
            ["BSD100"],
            {"bsd100": ["BSD100"], "set5": ["Set5"], "set14": ["Set14"]},
        ),
        ("xdncnn_rgb_derain", ["BSD200", "RainHeavy_JORDER-E_sample"], ["Rain12"], {"rain12": ["Rain12"]}),
    ],
)
def test_each_entry_names_the_sets_it_needs(name, train, own_test, test):
    entry = next(e for e in gq.load_queue(REPO / "runs" / "queue.yaml") if e["name"] == name)
    assert gq.entry_sets(entry) == {"train": train, "own_test": own_test, "test": test}


def run_queue(tmp_path, *extra, budget="2.5"):
    cmd = [
        sys.executable,
        "scripts/gpu_queue.py",
        "--device",
        "cpu",
        "--budget-min",
        budget,
        "--out",
        str(tmp_path / "out"),
        "--queue",
        str(tmp_path / "queue.yaml"),
        "--runs",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
        "--triton-cache-dir",
        str(tmp_path / "triton"),
        "--triton-archive",
        str(tmp_path / "triton.tar.gz"),
        "--profile-steps",
        "3",
        "--profile-start",
        "2",
        "--train-overrides",
        "threads=1",
        "--cost",
        "slot_startup=8",
        "smoke=90",
        "chunk_startup=8",
        "pack=3",
        "score=15",
        "reserve=5",
        "min_chunk=5",
        *extra,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cpu_dry_run_packs_states_and_results_and_ingests(queue_dir):
    tmp_path = queue_dir
    res = run_queue(tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 * 2**20 for f in files), files
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["torch"] and report["steps"]["smoke"]["status"] == "ok"
    assert set(report["spent"]) == {"startup", "checks", "training", "packing", "left"}
    done, long = report["steps"]["train:tiny_done"], report["steps"]["train:tiny_long"]
    assert done["finished"] and done["step"] == 20 and done["eval_sample"] == "ok"
    assert not long["finished"] and 0 < long["step"] < 10_000_000  # stopped by the budget, resumable
    with tarfile.open(out / "run_tiny_done.tar.gz") as tar:
        names = tar.getnames()
    assert {"run.json", "selected.ckpt", "eval/sample.json", "metrics.json", "profile.json"} <= set(
        names
    ) and "state.ckpt" not in names
    with tarfile.open(out / "run_tiny_long.tar.gz") as tar:
        assert "state.ckpt" in tar.getnames()

    zoo = tmp_path / "zoo"
    assert (
        gq.main(
            [
                "--ingest",
                str(out),
                "--runs",
                str(tmp_path / "runs"),
                "--zoo",
                str(zoo),
                "--queue",
                str(tmp_path / "queue.yaml"),
                "--results",
                str(tmp_path / "results"),
            ]
        )
        == 0
    )
    index = json.loads((zoo / "zoo.json").read_text())
    assert index["tiny_done"]["training"]["steps"] == 20 and "sample-val" in index["tiny_done"]["results"]
    assert "cpu" in (zoo / "tiny_done" / "MODEL_CARD.md").read_text()
    info = json.loads((tmp_path / "runs" / "tiny_long" / "run.json").read_text())
    assert (
        (tmp_path / "runs" / "tiny_long" / "state.ckpt").is_file()
        and info["max_steps"] == 10_000_000
        and len(info["chunks"]) == 1
    )

    # the next slot resumes the unfinished run from its state and skips the finished one
    res2 = run_queue(tmp_path, "--checks", "none", budget="1")
    assert res2.returncode == 0, res2.stdout[-3000:]
    report2 = json.loads((out / "report.json").read_text())
    assert "train:tiny_done" not in report2["steps"]
    assert report2["steps"]["train:tiny_long"]["step"] > long["step"]
