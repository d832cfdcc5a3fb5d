"""The xUnit's Triton kernels besides the depthwise conv: fused inference (one pass) and the
elementwise / input-gradient kernels of the training xUnit.

Training, per unit (``x``: the unit's input; rows of ``coef``, a float32 ``[12, C]`` table, in
brackets — :mod:`xnet.kernels.xunit_train_triton` fills it, with identities for absent BatchNorms):

* ``u = ReLU(x·s1 + t1)`` [0, 1]; ``c = DW(u)`` (:mod:`.depthwise`); ``d = c·s2 + t2`` [2, 3];
  ``ĉ = c·a2 + b2`` [4, 5] (the second BN's normalised input); ``x̂ = x·a1 + b1`` [8, 9] (the first's);
* forward: :func:`row_stats` (the first BN's statistics), the conv, :func:`gate_fwd` ``y = x·g(d)``;
* backward: :func:`gate_bwd` twice — the second BN's sums ``Σ gd``, ``Σ gd·ĉ`` with
  ``gd = gy·x·g'(d)``, then ``gc = s2·gd − k1 − ĉ·k2`` [6, 7] —, :func:`dw_dgrad` (the conv's input
  gradient with the ReLU mask and the first BN's sums in its epilogue), the weight gradient
  (:mod:`.depthwise`) and :func:`xunit_grad_input` ``gx = gy·g(d) + s1·ga − k1' − x̂·k2'`` [10, 11].

Per-row partial sums go to ``[N·H, C]`` float32 buffers that torch adds up (no atomics: the sums do
not depend on the order programs run in).
"""

from xnet.kernels.triton_src import tiles
from xnet.kernels.triton_src.compat import tl, triton


@triton.jit
def _row(ptr, n, h, cs, s_n, s_c, s_h):
    return ptr + n.to(tl.int64) * s_n + h.to(tl.int64) * s_h + cs[None, :] * s_c


@triton.jit
def _coef(coef, k, cs, c_ok, C):
    return tl.load(coef + k * C + cs, mask=c_ok, other=0.0)[None, :]


@triton.jit
def row_stats(
    x,
    mean_part,
    m2_part,
    C,
    H,
    W,
    s_n,
    s_c,
    s_h,
    s_w,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # grid (N·H, channel blocks): the row's per-channel (mean, M2) of x
    row = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    x_row = _row(x, row // H, row % H, cs, s_n, s_c, s_h)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        ok = (ws < W)[:, None] & c_ok[None, :]
        xv = tl.load(x_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        done = (w0 + tl.zeros([BLOCK_C], dtype=tl.int32)).to(tl.float32)
        count = (tl.minimum(W - w0, BLOCK_W) + tl.zeros([BLOCK_C], dtype=tl.int32)).to(tl.float32)
        mean, m2 = tiles.merge_stats(mean, m2, done, xv, ok, count)
    tl.store(mean_part + row.to(tl.int64) * C + cs, mean, mask=c_ok)
    tl.store(m2_part + row.to(tl.int64) * C + cs, m2, mask=c_ok)


@triton.jit
def gate_fwd(
    x,
    c,
    coef,
    y,
    C,
    H,
    W,
    s_n,
    s_c,
    s_h,
    s_w,
    GATE: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # y = x·g(c·s2 + t2); x, c and y share their strides
    row = tl.program_id(0)
    n = row // H
    h = row % H
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    s2 = _coef(coef, 2, cs, c_ok, C)
    t2 = _coef(coef, 3, cs, c_ok, C)
    x_row = _row(x, n, h, cs, s_n, s_c, s_h)
    c_row = _row(c, n, h, cs, s_n, s_c, s_h)
    y_row = _row(y, n, h, cs, s_n, s_c, s_h)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        ok = (ws < W)[:, None] & c_ok[None, :]
        xv = tl.load(x_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        cv = tl.load(c_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        g = tiles.gate(cv * s2 + t2, GATE)
        tl.store(y_row + ws[:, None] * s_w, (xv * g).to(y.dtype.element_ty), mask=ok)


@triton.jit
def gate_bwd(
    gy,
    x,
    c,
    coef,
    gc,
    sum_part,
    dot_part,
    C,
    H,
    W,
    s_n,
    s_c,
    s_h,
    s_w,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    GATE: tl.constexpr,
    REDUCE: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # gd = gy·x·g'(d). REDUCE: the row's Σ gd and Σ gd·ĉ into [N·H, C] partials; else
    # gc = s2·gd − k1 − ĉ·k2 (x, c and gc share their strides; gy has its own)
    row = tl.program_id(0)
    n = row // H
    h = row % H
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    s2 = _coef(coef, 2, cs, c_ok, C)
    t2 = _coef(coef, 3, cs, c_ok, C)
    a2 = _coef(coef, 4, cs, c_ok, C)
    b2 = _coef(coef, 5, cs, c_ok, C)
    x_row = _row(x, n, h, cs, s_n, s_c, s_h)
    c_row = _row(c, n, h, cs, s_n, s_c, s_h)
    gy_row = _row(gy, n, h, cs, sg_n, sg_c, sg_h)
    if REDUCE:
        total = tl.zeros([BLOCK_C], dtype=tl.float32)
        dot = tl.zeros([BLOCK_C], dtype=tl.float32)
    else:
        k1 = _coef(coef, 6, cs, c_ok, C)
        k2 = _coef(coef, 7, cs, c_ok, C)
        gc_row = _row(gc, n, h, cs, s_n, s_c, s_h)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        ok = (ws < W)[:, None] & c_ok[None, :]
        xv = tl.load(x_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        cv = tl.load(c_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        gyv = tl.load(gy_row + ws[:, None] * sg_w, mask=ok, other=0.0).to(tl.float32)
        d = cv * s2 + t2
        gd = gyv * xv * tiles.gate_grad(d, tiles.gate(d, GATE), GATE)  # 0 where masked: gy, x are 0
        c_hat = cv * a2 + b2
        if REDUCE:
            total += tl.sum(gd, axis=0)
            dot += tl.sum(gd * c_hat, axis=0)
        else:
            tl.store(gc_row + ws[:, None] * s_w, (s2 * gd - k1 - c_hat * k2).to(gc.dtype.element_ty), mask=ok)
    if REDUCE:
        tl.store(sum_part + row.to(tl.int64) * C + cs, total, mask=c_ok)
        tl.store(dot_part + row.to(tl.int64) * C + cs, dot, mask=c_ok)


@triton.jit
def dw_dgrad(
    gc,
    taps,
    x,
    coef,
    ga,
    sum_part,
    dot_part,
    C,
    H,
    W,
    s_n,
    s_c,
    s_h,
    s_w,
    R: tl.constexpr,
    HAS_IN: tl.constexpr,
    RELU: tl.constexpr,
    STATS: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # ga = DW_r(gc) with the flipped taps (the conv's input gradient), times the ReLU's mask
    # (x·s1 + t1 > 0); STATS: the row's Σ ga and Σ ga·x̂ (the first BN's backward sums)
    row = tl.program_id(0)
    n = row // H
    h = row % H
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    s1 = _coef(coef, 0, cs, c_ok, C)
    t1 = _coef(coef, 1, cs, c_ok, C)
    a1 = _coef(coef, 8, cs, c_ok, C)
    b1 = _coef(coef, 9, cs, c_ok, C)
    gc_img = gc + n.to(tl.int64) * s_n + cs[None, :] * s_c
    x_row = _row(x, n, h, cs, s_n, s_c, s_h)
    ga_row = _row(ga, n, h, cs, s_n, s_c, s_h)
    total = tl.zeros([BLOCK_C], dtype=tl.float32)
    dot = tl.zeros([BLOCK_C], dtype=tl.float32)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        ok = (ws < W)[:, None] & c_ok[None, :]
        gr = tiles.conv_taps(
            gc_img, s_h, s_w, h, ws, c_ok, H, W, C, taps, cs, s1, t1, R, False, False, BLOCK_W, BLOCK_C
        )
        if RELU or STATS:
            xv = tl.load(x_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        if RELU:
            a = xv
            if HAS_IN:
                a = xv * s1 + t1
            gr = tl.where(a > 0.0, gr, 0.0)
        gr = tl.where(ok, gr, 0.0)
        tl.store(ga_row + ws[:, None] * s_w, gr.to(ga.dtype.element_ty), mask=ok)
        if STATS:
            total += tl.sum(gr, axis=0)
            dot += tl.sum(gr * (xv * a1 + b1), axis=0)
    if STATS:
        tl.store(sum_part + row.to(tl.int64) * C + cs, total, mask=c_ok)
        tl.store(dot_part + row.to(tl.int64) * C + cs, dot, mask=c_ok)


@triton.jit
def xunit_grad_input(
    gy,
    x,
    c,
    ga,
    coef,
    gx,
    C,
    H,
    W,
    s_n,
    s_c,
    s_h,
    s_w,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    GATE: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # gx = gy·g(d) (the product's direct term) + s1·ga − k1' − x̂·k2' (back through the first BN)
    row = tl.program_id(0)
    n = row // H
    h = row % H
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    s1 = _coef(coef, 0, cs, c_ok, C)
    s2 = _coef(coef, 2, cs, c_ok, C)
    t2 = _coef(coef, 3, cs, c_ok, C)
    a1 = _coef(coef, 8, cs, c_ok, C)
    b1 = _coef(coef, 9, cs, c_ok, C)
    k1 = _coef(coef, 10, cs, c_ok, C)
    k2 = _coef(coef, 11, cs, c_ok, C)
    x_row = _row(x, n, h, cs, s_n, s_c, s_h)
    c_row = _row(c, n, h, cs, s_n, s_c, s_h)
    ga_row = _row(ga, n, h, cs, s_n, s_c, s_h)
    gx_row = _row(gx, n, h, cs, s_n, s_c, s_h)
    gy_row = _row(gy, n, h, cs, sg_n, sg_c, sg_h)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        ok = (ws < W)[:, None] & c_ok[None, :]
        xv = tl.load(x_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        cv = tl.load(c_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        gav = tl.load(ga_row + ws[:, None] * s_w, mask=ok, other=0.0).to(tl.float32)
        gyv = tl.load(gy_row + ws[:, None] * sg_w, mask=ok, other=0.0).to(tl.float32)
        g = tiles.gate(cv * s2 + t2, GATE)
        gxv = gyv * g + s1 * gav - k1 - (xv * a1 + b1) * k2
        tl.store(gx_row + ws[:, None] * s_w, gxv.to(gx.dtype.element_ty), mask=ok)


@triton.jit
def xunit_fused(
    x,
    y,
    in_scale,
    in_shift,
    taps,
    dw_bias,
    mid_scale,
    mid_shift,
    out_scale,
    out_shift,
    C,
    H,
    W,
    sx_n,
    sx_c,
    sx_h,
    sx_w,
    sy_n,
    sy_c,
    sy_h,
    sy_w,
    R: tl.constexpr,
    GATE: tl.constexpr,
    RELU: tl.constexpr,
    HAS_IN: tl.constexpr,
    HAS_DW: tl.constexpr,
    HAS_DW_BIAS: tl.constexpr,
    HAS_MID: tl.constexpr,
    HAS_OUT_SCALE: tl.constexpr,
    HAS_OUT_SHIFT: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # inference, one pass: y = x·g(d)·out_scale + out_shift with d = DW(ReLU(x·in_scale + in_shift)) + b,
    # or without a conv d = u·mid_scale + mid_shift (the BNs folded by xnet.deploy.fuse)
    row = tl.program_id(0)
    n = row // H
    h = row % H
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cs < C
    if HAS_IN:
        s_in = tl.load(in_scale + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        t_in = tl.load(in_shift + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    else:
        s_in = tl.zeros([1, BLOCK_C], dtype=tl.float32)
        t_in = tl.zeros([1, BLOCK_C], dtype=tl.float32)
    x_img = x + n.to(tl.int64) * sx_n + cs[None, :] * sx_c
    x_row = x_img + h.to(tl.int64) * sx_h
    y_row = _row(y, n, h, cs, sy_n, sy_c, sy_h)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        ok = (ws < W)[:, None] & c_ok[None, :]
        xv = tl.load(x_row + ws[:, None] * sx_w, mask=ok, other=0.0).to(tl.float32)
        if HAS_DW:
            d = tiles.conv_taps(
                x_img, sx_h, sx_w, h, ws, c_ok, H, W, C, taps, cs, s_in, t_in, R, HAS_IN, RELU, BLOCK_W, BLOCK_C
            )
            if HAS_DW_BIAS:
                d += tl.load(dw_bias + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        else:
            d = xv
            if HAS_IN:
                d = d * s_in + t_in
            if RELU:
                d = tl.maximum(d, 0.0)
            if HAS_MID:
                d = d * tl.load(mid_scale + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
                d = d + tl.load(mid_shift + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        yv = xv * tiles.gate(d, GATE)
        if HAS_OUT_SCALE:
            yv = yv * tl.load(out_scale + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_OUT_SHIFT:
            yv = yv + tl.load(out_shift + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_row + ws[:, None] * sy_w, yv.to(y.dtype.element_ty), mask=ok)
