"""The native CPU xUnit's work split: every thread busy at 1–64 threads, the thread count taken from
torch, and the same output whatever the split."""

import itertools

import pytest
import torch

from xnet.kernels.xunit_gate import FusedTerms, fused_xunit_reference
from xnet.kernels.xunit_native import _row_bands, _split, fused_xunit_native, native_kernel

HEIGHT, BLOCKS, RADIUS = 321, 4, 4  # a BSD68 image through a 64-channel xUnit, r = 9


def _efficiency(workers: int) -> tuple[int, float]:
    """(tasks, useful work / work of the busiest thread) of the split for ``workers`` threads."""
    groups, bands = _split(HEIGHT, BLOCKS, RADIUS, workers)
    tasks = groups * bands
    rounds = -(-tasks // workers)
    per_task = (HEIGHT / bands + 2 * RADIUS * (bands > 1)) * BLOCKS / groups
    return tasks, (HEIGHT * BLOCKS / workers) / (rounds * per_task)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64])
def test_every_thread_gets_work_and_halos_stay_small(workers):
    tasks, efficiency = _efficiency(workers)
    assert tasks >= workers  # no idle thread, no serial tail of a second round
    assert efficiency >= (0.7 if workers > 32 else 0.83)


def test_channel_groups_come_before_row_bands():
    # channel groups recompute nothing; bands recompute 2·radius halo rows each
    assert _split(HEIGHT, BLOCKS, RADIUS, 2) == (2, 1)
    assert _split(HEIGHT, BLOCKS, RADIUS, 4) == (4, 1)
    assert _split(HEIGHT, BLOCKS, RADIUS, 16) == (4, 4)


def test_row_bands_cover_the_image_evenly():
    for height, bands in [(321, 4), (321, 16), (20, 16), (7, 2)]:
        starts = _row_bands(height, bands)
        sizes = [b - a for a, b in itertools.pairwise(starts)]
        assert starts[0] == 0 and starts[-1] == height
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= min(8, height)


def test_the_thread_count_is_torchs(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    groups, bands = _split(HEIGHT, BLOCKS, RADIUS, None)
    assert groups * bands == 8


@pytest.mark.parametrize("workers", [2, 5, 64])
def test_the_output_does_not_depend_on_the_split(workers):
    lib = native_kernel()
    if lib is None:
        pytest.skip("no native kernel (no compiler)")
    g = torch.Generator().manual_seed(0)
    c, k = 32, 9
    terms = FusedTerms(
        k,
        "gaussian",
        relu=True,
        in_scale=torch.rand(c, generator=g) + 0.5,
        in_shift=torch.randn(c, generator=g),
        dw_weight=torch.randn(c, 1, k, k, generator=g) * 0.1,
        dw_bias=torch.randn(c, generator=g) * 0.1,
        out_scale=torch.rand(c, generator=g) + 0.5,
        out_shift=torch.randn(c, generator=g),
    )
    x = torch.randn(2, c, 83, 37, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        one = fused_xunit_native(x, terms, lib, workers=1)
        many = fused_xunit_native(x, terms, lib, workers=workers)
        assert torch.equal(one, many)  # same FMAs in the same order per pixel, whatever the split
        assert (one - fused_xunit_reference(x, terms)).abs().max().item() <= 1e-4
