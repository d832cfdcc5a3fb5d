"""How xnet launches its Triton kernels (:mod:`xnet.kernels.triton_src`): each kernel's tile
configurations, autotuned on the GPU, and whether Triton is there at all.

:data:`CONFIGS` lists, per kernel, the tile sizes (``BLOCK_W`` pixels × ``BLOCK_C`` channels, warps,
pipeline stages) that ``triton.autotune`` times on a GPU the first time it meets a channel count, a
set of constexpr switches and dtypes (not a size: a new image size reuses the choice); every one of
them compiles for sm_90 without spilling a register at every kernel size up to
:data:`MAX_KERNEL_SIZE`, in fp32 and bf16 (``tests/kernels/test_triton_spills.py`` compiles them all,
without a GPU). Under Triton's CPU interpreter (``TRITON_INTERPRET=1``), where timing means nothing,
a launch takes the config it is given (tests run each), else the first.

Importing this module never imports Triton: :func:`kernel` loads the sources on first use.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "CONFIGS",
    "FLOAT_DTYPES",
    "MAX_KERNEL_SIZE",
    "Launch",
    "kernel",
    "launch",
    "recording",
    "triton_available",
    "triton_interpreting",
]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: the largest depthwise kernel size r the Triton kernels take (each tap row's r loads are in flight
#: at once: beyond 11 the registers run out); larger r runs torch's convolution
MAX_KERNEL_SIZE = 11


def _config(block_w: int, block_c: int, warps: int) -> dict[str, int]:
    # maxnreg: an explicit register limit (the hardware's) keeps ptxas from trimming a kernel to an
    # occupancy step by spilling a few bytes (it did, 8-32 B, at 48-168 registers without one)
    return {"BLOCK_W": block_w, "BLOCK_C": block_c, "num_warps": warps, "num_stages": 3, "maxnreg": 255}


_CONV = (_config(16, 32, 4), _config(16, 64, 4), _config(32, 64, 8))
_ROWS = (_config(32, 64, 4), _config(64, 64, 8))
#: kernel -> its tile configurations (autotuned on a GPU)
CONFIGS: dict[str, tuple[dict[str, int], ...]] = {
    "dw_conv": _CONV,
    "dw_dgrad": _CONV,
    "xunit_fused": _CONV,
    "dw_wgrad": (_config(8, 32, 4), _config(8, 64, 4), _config(16, 64, 8)),
    "row_stats": _ROWS,
    "gate_fwd": _ROWS,
    "gate_bwd": _ROWS,
    "xunit_grad_input": _ROWS,
}

#: kernel -> its source module in xnet.kernels.triton_src
SOURCES = {
    "dw_conv": "depthwise",
    "dw_wgrad": "depthwise",
    "dw_dgrad": "xunit",
    "xunit_fused": "xunit",
    "row_stats": "xunit",
    "gate_fwd": "xunit",
    "gate_bwd": "xunit",
    "xunit_grad_input": "xunit",
}

#: autotuning keys besides the dtypes (which Triton adds): the channel count and the constexpr switches
TUNE_KEYS = {
    "dw_conv": ["C", "R", "HAS_BIAS", "HAS_IN", "RELU", "STATS"],
    "dw_dgrad": ["C", "R", "HAS_IN", "RELU", "STATS"],
    "xunit_fused": [
        "C",
        "R",
        "GATE",
        "RELU",
        "HAS_IN",
        "HAS_DW",
        "HAS_DW_BIAS",
        "HAS_MID",
        "HAS_OUT_SCALE",
        "HAS_OUT_SHIFT",
    ],
    "dw_wgrad": ["C", "R", "HAS_IN", "RELU"],
    "row_stats": ["C"],
    "gate_fwd": ["C", "GATE"],
    "gate_bwd": ["C", "GATE", "REDUCE"],
    "xunit_grad_input": ["C", "GATE"],
}


def triton_interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in {"", "0", "false", "no"}


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports (it ships with CUDA builds of torch; CPU builds lack it)."""
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def kernel(name: str) -> Any:
    """The jitted kernel ``name`` (a ``triton.JITFunction``)."""
    return getattr(importlib.import_module(f"xnet.kernels.triton_src.{SOURCES[name]}"), name)


def _tiles(config: dict[str, int]) -> dict[str, int]:
    """A configuration's constexprs (``BLOCK_W``, ``BLOCK_C``)."""
    return {k: v for k, v in config.items() if k.isupper()}


def _options(config: dict[str, int]) -> dict[str, int]:
    """A configuration's compile options (warps, pipeline stages, register limit)."""
    return {k: v for k, v in config.items() if not k.isupper()}


@functools.cache
def _tuned(name: str) -> Any:
    import triton

    configs = [triton.Config(_tiles(c), **_options(c)) for c in CONFIGS[name]]
    return triton.autotune(configs=configs, key=TUNE_KEYS[name])(kernel(name))


@dataclass
class Launch:
    """One kernel launch as :func:`recording` keeps it: the kernel, its arguments, its constexprs."""

    name: str
    args: tuple[Any, ...]
    consts: dict[str, Any] = field(default_factory=dict)


_recorders: list[list[Launch]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Inside, :func:`launch` records each launch in the list it yields instead of running it (the
    spill audit replays a training step on ``meta`` tensors this way: no device, no data)."""
    launches: list[Launch] = []
    _recorders.append(launches)
    try:
        yield launches
    finally:
        _recorders.remove(launches)


def launch(
    name: str,
    grid: Callable[[dict[str, int]], tuple[int, ...]],
    *args: Any,
    config: dict[str, int] | None = None,
    **consts: Any,
) -> None:
    """Run kernel ``name`` on ``grid(meta)`` (``meta``: the tile sizes): autotuned over
    :data:`CONFIGS` on a GPU, with ``config`` (default the first) when given or under the interpreter."""
    if _recorders:
        _recorders[-1].append(Launch(name, args, consts))
        return
    if config is None and not triton_interpreting():
        _tuned(name)[grid](*args, **consts)
        return
    config = CONFIGS[name][0] if config is None else config
    kernel(name)[grid(_tiles(config))](*args, **consts, **_tiles(config), **_options(config))
