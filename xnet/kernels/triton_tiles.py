"""What xnet's row-tiled Triton kernels share: the tile one program works on (one image row ×
``BLOCK_W`` pixels × ``BLOCK_C`` channels), its store, the channel block size and the dtypes they
take. :func:`load` jits the helpers on first use, so importing xnet never imports Triton; kernels
call them as ``triton_tiles.row_tile(...)``.
"""
from __future__ import annotations

import functools

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Bound by load() as module globals: Triton's interpreter resolves names (tl included) there, not in closures.
tl = row_tile = store_tile = None


def channel_block(channels: int) -> int:
    """``BLOCK_C`` for ``channels``: the next power of two, within 16..64."""
    return min(64, max(16, 1 << (channels - 1).bit_length()))


@functools.lru_cache(maxsize=None)
def load() -> None:
    """Import Triton and jit :func:`row_tile` and :func:`store_tile`."""
    global tl, row_tile, store_tile
    import triton
    import triton.language as tl

    @triton.jit
    def row_tile(C, H, W, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # grid (N * H, W blocks, C blocks): image n, row h, pixels ws, channels cs, their masks
        row = tl.program_id(0)
        ws = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        cs = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        return row // H, row % H, ws, cs, ws < W, cs < C

    @triton.jit
    def store_tile(y_ptr, value, n, h, ws, cs, w_ok, c_ok, syn, syc, syh, syw):
        # value (BLOCK_W × BLOCK_C, float32) into row h of image n, in y's dtype
        y_ptrs = y_ptr + n.to(tl.int64) * syn + h.to(tl.int64) * syh + ws[:, None] * syw + cs[None, :] * syc
        tl.store(y_ptrs, value.to(y_ptr.dtype.element_ty), mask=w_ok[:, None] & c_ok[None, :])
