"""Training runs: which modes, which baseline each x-model run is compared with, a measured step."""

import torch

from xnet.benchmark.models import FAMILIES
from xnet.benchmark.settings import Settings
from xnet.benchmark.training import baseline_mode, train_modes, training_batch, training_costs


def test_modes_and_their_baselines():
    assert train_modes(torch.device("cpu"), compiled=False) == ("plain", "lean")
    assert train_modes(torch.device("cpu"), compiled=True)[-1] == "compile"
    assert train_modes(torch.device("cuda"), compiled=True)[-1] == "compile_bf16"
    assert {
        m: baseline_mode(m) for m in ("plain", "lean", "lean_bf16", "nchw_bf16", "triton_lean_bf16", "compile_bf16")
    } == {
        "plain": "plain",
        "lean": "plain",
        "lean_bf16": "bf16",
        "nchw_bf16": "bf16",
        "triton_lean_bf16": "bf16",
        "compile_bf16": "compile_bf16",
    }


def test_sr_batches_are_low_resolution_inputs():
    inp, target = training_batch(FAMILIES["srresnet"], Settings(train_batch=2, train_crop=16), torch.device("cpu"))
    assert list(inp.shape) == [2, 3, 4, 4] and list(target.shape) == [2, 3, 16, 16]
    assert inp.is_contiguous(memory_format=torch.channels_last)


def test_a_cpu_training_run_records_time_and_memory():
    out = training_costs(FAMILIES["srcnn"], torch.device("cpu"), Settings(train_batch=2, train_crop=16, train_steps=1))
    assert list(out["runs"]) == ["SRCNN/plain", "xSRCNNf/plain", "xSRCNNf/lean"]  # lean: the x-model alone
    lean, plain = out["runs"]["xSRCNNf/lean"], out["runs"]["xSRCNNf/plain"]
    assert plain["step_ms"] > 0 and len(plain["raw_ms"]) == 1
    assert lean["saved_MB"] < plain["saved_MB"]  # lean xUnits save only their input
