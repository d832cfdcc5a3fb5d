"""The depthwise r×r convolution's Triton kernels (zero "same" padding, stride 1): forward (also the
input gradient, with the taps flipped) and weight gradient. Both can read ``u = ReLU(x·s + t)`` from
``x`` on the fly (the xUnit's first BatchNorm and ReLU fused into their loads), and the forward can
reduce its output's per-row (mean, M2) in its epilogue (the statistics of the second BatchNorm).

``coef``: a float32 ``[K, C]`` table of per-channel rows (:mod:`xnet.kernels.xunit_train_triton` lays
it out); these kernels read row 0 (``s``) and row 1 (``t``).
"""

from xnet.kernels.triton_src import tiles
from xnet.kernels.triton_src.compat import tl, triton


@triton.jit
def dw_conv(
    src,
    taps,
    bias,
    coef,
    out,
    mean_part,
    m2_part,
    C,
    H,
    W,
    s_n,
    s_c,
    s_h,
    s_w,
    o_n,
    o_c,
    o_h,
    o_w,
    R: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_IN: tl.constexpr,
    RELU: tl.constexpr,
    STATS: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # grid (N·H, channel blocks): out[n, :, h, :] = DW_r(u)[n, :, h, :] + bias, and with STATS the row's
    # per-channel (mean, M2) of out (float32, before rounding to out's dtype) into [N·H, C] partials
    row = tl.program_id(0)
    n = row // H
    h = row % H
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    if HAS_IN:
        s_in = tl.load(coef + cs, mask=c_ok, other=0.0)[None, :]
        t_in = tl.load(coef + C + cs, mask=c_ok, other=0.0)[None, :]
    else:
        s_in = tl.zeros([1, BLOCK_C], dtype=tl.float32)
        t_in = tl.zeros([1, BLOCK_C], dtype=tl.float32)
    src_img = src + n.to(tl.int64) * s_n + cs[None, :] * s_c
    out_row = out + n.to(tl.int64) * o_n + h.to(tl.int64) * o_h + cs[None, :] * o_c
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        acc = tiles.conv_taps(
            src_img, s_h, s_w, h, ws, c_ok, H, W, C, taps, cs, s_in, t_in, R, HAS_IN, RELU, BLOCK_W, BLOCK_C
        )
        if HAS_BIAS:
            acc += tl.load(bias + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        ok = (ws < W)[:, None] & c_ok[None, :]
        tl.store(out_row + ws[:, None] * o_w, acc.to(out.dtype.element_ty), mask=ok)
        if STATS:
            done = (w0 + tl.zeros([BLOCK_C], dtype=tl.int32)).to(tl.float32)
            count = (tl.minimum(W - w0, BLOCK_W) + tl.zeros([BLOCK_C], dtype=tl.int32)).to(tl.float32)
            mean, m2 = tiles.merge_stats(mean, m2, done, acc, ok, count)
    if STATS:
        tl.store(mean_part + row.to(tl.int64) * C + cs, mean, mask=c_ok)
        tl.store(m2_part + row.to(tl.int64) * C + cs, m2, mask=c_ok)


@triton.jit
def dw_wgrad(
    g,
    u,
    coef,
    part,
    C,
    H,
    W,
    ROWS,
    ROWS_PER_CHUNK,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    su_n,
    su_c,
    su_h,
    su_w,
    R: tl.constexpr,
    KX: tl.constexpr,
    HAS_IN: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # grid (R tap rows ky, row chunks, channel blocks): part[chunk, ky*R + kx, c] =
    #   sum over the chunk's rows and pixels of g[n, c, h, w] · u[n, c, h + ky - R//2, w + kx - R//2]
    # for every kx at once: u is read as a [KX, BLOCK_W, BLOCK_C] window (KX >= R, a power of two), so
    # a program reads g once per tap row and the accumulator is reduced over pixels only at the end
    ky = tl.program_id(0)
    chunk = tl.program_id(1)
    cs = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    kx = tl.arange(0, KX)
    if HAS_IN:
        s_in = tl.load(coef + cs, mask=c_ok, other=0.0)[None, None, :]
        t_in = tl.load(coef + C + cs, mask=c_ok, other=0.0)[None, None, :]
    acc = tl.zeros([KX, BLOCK_W, BLOCK_C], dtype=tl.float32)
    for i in range(ROWS_PER_CHUNK):
        row = chunk * ROWS_PER_CHUNK + i
        n = row // H
        h = row % H
        zero = tl.zeros([BLOCK_W], dtype=tl.int32)  # masks as vectors (see tiles.conv_taps)
        row_in = (row + zero) < ROWS
        hh = h + ky - R // 2 + zero
        src_ok = row_in & (hh >= 0) & (hh < H)
        g_row = g + n.to(tl.int64) * sg_n + h.to(tl.int64) * sg_h + cs[None, :] * sg_c
        u_row = u + n.to(tl.int64) * su_n + hh[None, :, None].to(tl.int64) * su_h + cs[None, None, :] * su_c
        for w0 in range(0, W, BLOCK_W):
            ws = w0 + tl.arange(0, BLOCK_W)
            g_ok = (row_in & (ws < W))[:, None] & c_ok[None, :]
            gt = tl.load(g_row + ws[:, None] * sg_w, mask=g_ok, other=0.0).to(tl.float32)
            ww = ws[None, :] + kx[:, None] - R // 2  # [KX, BLOCK_W]
            u_ok = ((kx[:, None] < R) & src_ok[None, :] & (ww >= 0) & (ww < W))[:, :, None] & c_ok[None, None, :]
            ut = tl.load(u_row + ww[:, :, None] * su_w, mask=u_ok, other=0.0).to(tl.float32)
            if HAS_IN:
                ut = tl.where(u_ok, ut * s_in + t_in, 0.0)
            if RELU:
                ut = tl.maximum(ut, 0.0)
            acc += gt[None, :, :] * ut
    total = tl.sum(acc, axis=1)  # [KX, BLOCK_C]
    dst = part + (chunk.to(tl.int64) * R * R + ky * R + kx[:, None]) * C + cs[None, :]
    tl.store(dst, total, mask=(kx[:, None] < R) & c_ok[None, :])
