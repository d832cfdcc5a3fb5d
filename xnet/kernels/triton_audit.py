"""Compile the Triton kernels for a Hopper GPU (sm_90) without one and read their registers and
spills: a kernel that spills does not ship (``tests/kernels/test_triton_spills.py``).

:func:`audit` compiles each distinct launch (recorded by :func:`xnet.kernels.triton_launch.recording`,
e.g. :func:`xnet.benchmark.spills.workload`: what the GPU runs, replayed on ``meta`` tensors) at every
tile configuration of :data:`~xnet.kernels.triton_launch.CONFIGS` with Triton's compiler and
``ptxas`` for sm_90, specialised as Triton's launcher would specialise it for those arguments, and
reads the cubin's resources (``cuobjdump -res-usage``): a stack frame is spilled registers (the
kernels keep no local arrays).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from xnet.kernels.triton_launch import CONFIGS, Launch, kernel

__all__ = ["Resources", "audit", "compile_sm90"]


@dataclass(frozen=True)
class Resources:
    """One kernel compiled at one tile configuration: registers and stack bytes per thread."""

    kernel: str
    config: str
    variant: str
    registers: int
    stack: int

    @property
    def spills(self) -> bool:
        return self.stack > 0


def _cuobjdump() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@functools.lru_cache(maxsize=1)
def _target() -> tuple[Any, Any]:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", 90, 32)
    return target, make_backend(target)


def _specialise(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, str]:
    """``(ASTSource, options, key)`` as Triton's launcher would build them for these arguments
    (pointer alignment, integers equal to 1 or divisible by 16), for sm_90."""
    from triton.compiler import ASTSource
    from triton.runtime.jit import create_function_from_signature

    backend = _target()[1]
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = {"debug": False, **kwargs}
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    key = repr((fn.__name__, specialization, sorted(kwargs.items())))
    return ASTSource(fn, signature, constexprs, attrs), options, key


def _kwargs(launch: Launch, config: dict[str, int]) -> dict[str, Any]:
    return {**launch.consts, **config}  # the tiles as constexprs, warps, stages, maxnreg as options


def compile_sm90(launch: Launch, config: dict[str, int]) -> tuple[int, int]:
    """(registers, stack bytes) per thread of ``launch``'s kernel compiled for sm_90 with its
    arguments at tile ``config``."""
    import triton

    src, options, _ = _specialise(kernel(launch.name), launch.args, _kwargs(launch, config))
    compiled = triton.compile(src, target=_target()[0], options=options.__dict__)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
        fh.write(compiled.asm["cubin"])
    try:
        out = subprocess.run([_cuobjdump(), "-res-usage", fh.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(fh.name)
    found = re.search(r"REG:(\d+)\s+STACK:(\d+)", out)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage gave no resources for {launch.name}:\n{out}")
    return int(found.group(1)), int(found.group(2))


def _describe(launch: Launch) -> str:
    dtypes = sorted({str(a.dtype).removeprefix("torch.") for a in launch.args if isinstance(a, torch.Tensor)})
    consts = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in launch.consts.items())
    return f"{consts} [{'/'.join(dtypes)}]"


def audit(launches: Iterable[Launch]) -> list[Resources]:
    """Every distinct launch compiled at every tile configuration of its kernel."""
    seen: set[str] = set()
    out = []
    for launch in launches:
        for i, config in enumerate(CONFIGS[launch.name]):
            key = _specialise(kernel(launch.name), launch.args, _kwargs(launch, config))[2]
            if key in seen:
                continue
            seen.add(key)
            regs, stack = compile_sm90(launch, config)
            out.append(Resources(launch.name, f"cfg{i} {config}", _describe(launch), regs, stack))
    return out
