"""retain_freed_memory: a training step reuses the pages of the previous one (no page faults)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent(
    """
    import json, resource, sys, torch
    from torch import nn
    from xnet.utils.memory import retain_freed_memory
    torch.set_num_threads(1)
    applied = retain_freed_memory() if sys.argv[1] == "1" else False
    again = retain_freed_memory() if applied else False
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    x = torch.rand(1, 1, 1100, 1000)  # 8-channel activations of 35 MB: above glibc's largest mmap threshold
    def step():
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
    step(); step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"applied": applied, "again": again, "faults": faults}))
    """
)


def _probe(retain: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if retain else "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused() -> None:
    plain, retained = _probe(False), _probe(True)
    assert retained["applied"] and retained["again"]  # applies, idempotently
    # a training step re-faults its activations (~35 MB each, 4 KB pages) unless memory is kept
    assert plain["faults"] > 20000
    assert retained["faults"] < plain["faults"] / 4  # now and then one activation still faults once


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_gives_kept_memory_back() -> None:
    probe = textwrap.dedent(
        """
        import json, torch
        from xnet.utils.memory import release_freed_memory, retain_freed_memory
        def rss_mb():
            return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
        retain_freed_memory()
        base = rss_mb()
        t = torch.ones(64 * 2**20)  # 256 MB
        del t
        kept = rss_mb() - base
        released = release_freed_memory()
        after = rss_mb() - base
        from xnet.utils.memory import retention_paused
        with retention_paused():  # glibc defaults inside: a big block is unmapped on free
            t = torch.ones(64 * 2**20)
            del t
            paused = rss_mb() - base
        print(json.dumps({"kept": kept, "released": released, "after": after, "paused": paused}))
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["kept"] > 200 and r["released"] and r["after"] < 50 and r["paused"] < 50
