"""What the row kernels share. A program owns one image row ``h`` of image ``n`` and ``BLOCK_C``
channels (grid: ``N·H`` rows × channel blocks) and walks the row in tiles of ``BLOCK_W`` pixels, so
per-row partial sums are indexed by row and channel whatever the tile sizes (the autotuner's choice).
Arithmetic is float32 whatever the tensors' dtype.

* :func:`conv_taps`: one tile of the r×r depthwise correlation with zero "same" padding, optionally
  of ``u = ReLU(x·s + t)`` computed on the fly (the padding is on ``u``);
* :func:`merge_stats`: Chan's parallel update of a running (mean, M2) with a tile's, so a row's
  variance never subtracts two large sums;
* :func:`gate` and :func:`gate_grad`: the xUnit's gate ``g(d)`` and ``dg/dd`` (``GATE``: the index in
  :data:`xnet.kernels.gate.GATES`).
"""

from xnet.kernels.triton_src.compat import tl, triton


@triton.jit
def conv_taps(
    src,
    s_h,
    s_w,
    h,
    ws,
    c_ok,
    H,
    W,
    C,
    taps,
    cs,
    s_in,
    t_in,
    R: tl.constexpr,
    HAS_IN: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # src: [1, BLOCK_C] pointers to image n's channels; taps: [R*R, C] float32 (tap-major)
    acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
    for ky in range(R):
        # the row index as a vector: Triton's interpreter mis-types scalar & vector masks
        hh = h + ky - R // 2 + tl.zeros([BLOCK_W], dtype=tl.int32)
        h_ok = (hh >= 0) & (hh < H)
        src_row = src + hh[:, None].to(tl.int64) * s_h
        for kx in tl.static_range(R):
            ww = ws + (kx - R // 2)
            ok = (h_ok & (ww >= 0) & (ww < W))[:, None] & c_ok[None, :]
            u = tl.load(src_row + ww[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
            if HAS_IN:
                u = tl.where(ok, u * s_in + t_in, 0.0)  # zero padding on u, not on x
            if RELU:
                u = tl.maximum(u, 0.0)
            wt = tl.load(taps + (ky * R + kx) * C + cs, mask=c_ok, other=0.0)
            acc += u * wt[None, :]
    return acc


@triton.jit
def merge_stats(mean, m2, count, tile, ok, tile_count):
    # (mean, m2) over `count` pixels so far, merged with the valid pixels of tile [BLOCK_W, BLOCK_C]
    t_mean = tl.sum(tl.where(ok, tile, 0.0), axis=0) / tile_count
    dev = tl.where(ok, tile - t_mean[None, :], 0.0)
    t_m2 = tl.sum(dev * dev, axis=0)
    total = count + tile_count
    delta = t_mean - mean
    return mean + delta * (tile_count / total), m2 + t_m2 + delta * delta * (count * tile_count / total)


@triton.jit
def gate(d, GATE: tl.constexpr):
    if GATE == 0:  # gaussian
        g = tl.exp(-(d * d))
    elif GATE == 1:  # sigmoid
        g = 1.0 / (1.0 + tl.exp(-d))
    elif GATE == 2:  # tanh, saturating without inf/inf
        g = 2.0 / (1.0 + tl.exp(-2.0 * d)) - 1.0
    else:  # identity
        g = d
    return g


@triton.jit
def gate_grad(d, g, GATE: tl.constexpr):
    if GATE == 0:
        dg = -2.0 * d * g
    elif GATE == 1:
        dg = g * (1.0 - g)
    elif GATE == 2:
        dg = 1.0 - g * g
    else:
        dg = tl.full(d.shape, 1.0, tl.float32)
    return dg
