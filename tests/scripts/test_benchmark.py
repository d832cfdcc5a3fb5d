"""scripts/benchmark.py, the command line: its flags and the JSON gpu_queue.py reads."""

import importlib.util
import json

import pytest
from conftest import REPO


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_thread_table_run_writes_the_report(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = [
        "--families",
        "srcnn",
        "--no-inference",
        "--no-train",
        "--thread-table",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--json",
        str(path),
    ]
    assert load_script().main(args) == 0
    report = json.loads(path.read_text())
    threads = report["devices"]["cpu"]["families"]["srcnn"]["threads"]["threads"]
    assert set(threads) >= {"1", "2"} and report["args"]["repeats"] == 1
    assert report["ratios"]["[cpu] srcnn: fused ratio at 1 threads"] == threads["1"]["ratio"]
    assert "fused xSRCNNf / fused SRCNN by CPU threads" in capsys.readouterr().out


def test_an_unknown_family_is_refused():
    with pytest.raises(SystemExit) as exc:
        load_script().main(["--families", "vgg"])
    assert exc.value.code == 2
