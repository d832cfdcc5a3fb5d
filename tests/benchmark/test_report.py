"""The report: ratio rows and the JSON written whole."""

import json

from xnet.benchmark.models import FAMILIES
from xnet.benchmark.report import print_family, save_report


def test_training_ratios_compare_with_the_baseline_run_of_the_same_precision(capsys):
    runs = {
        "DnCNN-S/plain": {"samples_s": 10.0},
        "DnCNN-S/bf16": {"samples_s": 40.0},
        "xDnCNN/plain": {"samples_s": 5.0},
        "xDnCNN/lean_bf16": {"samples_s": 10.0},
    }
    ratios = dict(
        print_family(
            "dncnn",
            FAMILIES["dncnn"],
            {"training": {"batch": 2, "crop": 8, "input": [2, 1, 8, 8], "runs": runs}},
            "cuda",
        )
    )
    assert ratios == {
        "dncnn: xDnCNN plain / DnCNN-S training samples_s": 0.5,
        "dncnn: xDnCNN lean_bf16 / DnCNN-S training samples_s": 0.25,
    }
    assert "train samples/s [lean_bf16]" in capsys.readouterr().out


def test_the_report_carries_its_ratios(tmp_path):
    path = tmp_path / "sub" / "bench.json"
    save_report({"devices": {}}, [("a / b", 0.5)], path)
    assert json.loads(path.read_text()) == {"devices": {}, "ratios": {"a / b": 0.5}}
