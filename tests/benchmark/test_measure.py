"""Timing and memory measures."""

import torch

from xnet.benchmark.measure import interleaved_times, median_ms, saved_tensor_bytes, step_peak_mb


def test_interleaved_times_runs_every_function_once_per_round():
    calls = []
    times = interleaved_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 1, 3, torch.device("cpu")
    )
    assert calls == ["a", "b"] * 4 and [len(v) for v in times.values()] == [3, 3]
    assert median_ms([0.001, 0.003, 0.002]) == 2.0


def test_saved_bytes_count_distinct_storages_once():
    w = torch.randn(256, 256, requires_grad=True)
    x = torch.randn(64, 256, requires_grad=True)
    out, saved = saved_tensor_bytes(lambda: (x @ w).sum() + (x @ w).sum())  # x and w saved twice, counted once
    assert saved == x.nbytes + w.nbytes and out.requires_grad


def test_step_peak_counts_what_the_step_allocates():
    def step():
        a = torch.ones(1 << 20)  # 4 MiB, alive together with b
        b = a * 2
        del a, b

    rec = step_peak_mb(step, torch.device("cpu"))
    assert rec["peak_MB"] is None or 7.9 < rec["peak_MB"] < 64
    assert rec["peak_source"] in ("torch.profiler memory timeline", "/proc VmHWM - VmRSS")
