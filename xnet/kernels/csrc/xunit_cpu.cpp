// xUnit inference kernel, NHWC float32, C % 16 == 0.
// y = x * gate(DW_r(ReLU(x*s + t)) + b) * os + ot, one pass over x per band of rows.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

static inline v16 ld(const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; }
static inline void st(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
static inline v16 splat(float f) { return v16{} + f; }

static inline v16 vexp(v16 a) {
    const v16 lo = splat(-87.0f), hi = splat(88.0f);
    a = a < lo ? lo : a;
    a = a > hi ? hi : a;
    v16 n = a * 1.44269504088896341f;
    const v16 magic = splat(12582912.0f);  // 1.5 * 2^23: round to nearest
    n = (n + magic) - magic;
    v16 r = a - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    v16 p = splat(1.0f / 720.0f);  // degree 6 on |r| <= ln2/2: relative error 1.2e-7
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vi16 ni = __builtin_convertvector(n, vi16);
    vi16 bits = (ni + 127) << 23;
    v16 scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// Gate codes come from the build (-DXUNIT_GATE_<NAME>=<i>, from xnet.archs.xunit.GATES): one list for
// torch, Triton and this kernel. CONV_ONLY (y = d) is the code after the last gate.
enum {
    GAUSSIAN = XUNIT_GATE_GAUSSIAN, SIGMOID = XUNIT_GATE_SIGMOID, TANH = XUNIT_GATE_TANH,
    IDENTITY = XUNIT_GATE_IDENTITY, CONV_ONLY = XUNIT_GATE_CONV_ONLY
};

static inline v16 vgate(v16 d, int kind) {
    switch (kind) {
        case GAUSSIAN: return vexp(-(d * d));
        case SIGMOID: return 1.0f / (1.0f + vexp(-d));
        case TANH: return 1.0f - 2.0f / (vexp(d + d) + 1.0f);
        default: return d;
    }
}

struct Params {
    int64_t H, W, C, R;            // image height/width, channels, kernel size
    const float* in_scale;          // C or null
    const float* in_shift;          // C or null
    int64_t relu;
    const float* wt;                // R*R*C, [ky][kx][c]
    const float* bias;              // C (zeros if none)
    int64_t gate;
    const float* out_scale;         // C or null
    const float* out_shift;         // C or null
};

enum { BLK = 16, VEC = 16, SUB = 8 };  // output pixels per register block; channels per block; rows per chunk

// One channel block (VEC channels) of a u row, padded: P zero pixels, W data pixels, P + BLK zero
// pixels; VEC floats per pixel. Working on one channel block at a time keeps the R-row ring of u
// small enough for L2 (R = 9, W = 481: 286 KB instead of 1.1 MB for C = 64), which is what makes
// the depthwise conv compute-bound rather than bound by L3 traffic.
static inline int64_t padded_px(const Params& q) { return q.W + 2 * (q.R / 2) + BLK; }

// u = ReLU(x*s + t) for channels [c, c + VEC) of one x row
static void make_u_row(const Params& q, const float* xrow, int64_t c, float* urow) {
    float* dst = urow + (q.R / 2) * VEC;
    const v16 s = q.in_scale ? ld(q.in_scale + c) : splat(1.0f);
    const v16 t = q.in_shift ? ld(q.in_shift + c) : splat(0.0f);
    for (int64_t w = 0; w < q.W; ++w) {
        v16 v = ld(xrow + w * q.C + c);
        if (q.in_scale) v = v * s + t;
        if (q.relu) v = v < 0.0f ? splat(0.0f) : v;
        st(dst + w * VEC, v);
    }
}

// y = x * gate(d) * os + ot for the first n pixels of a block, straight from the accumulators
template <int G>
static inline void finish_block(const Params& q, const v16* acc, int n, int64_t c, const float* x, float* y) {
    const v16 os = q.out_scale ? ld(q.out_scale + c) : splat(1.0f);
    const v16 ot = q.out_shift ? ld(q.out_shift + c) : splat(0.0f);
#pragma GCC unroll 16
    for (int i = 0; i < BLK; ++i) {
        if (i >= n) break;
        const v16 g = vgate(acc[i], G) * os;
        st(y + i * q.C, ld(x + i * q.C) * g + ot);
    }
}

static inline void finish(const Params& q, const v16* acc, int n, int64_t c, const float* x, float* y) {
    switch (q.gate) {
        case GAUSSIAN: finish_block<GAUSSIAN>(q, acc, n, c, x, y); break;
        case SIGMOID: finish_block<SIGMOID>(q, acc, n, c, x, y); break;
        case TANH: finish_block<TANH>(q, acc, n, c, x, y); break;
        case IDENTITY: finish_block<IDENTITY>(q, acc, n, c, x, y); break;
        default:
            for (int i = 0; i < n; ++i) st(y + i * q.C, acc[i]);
    }
}

// One output row, channels [c, c + VEC): depthwise conv over the R u rows, then the gate. `pf` (or
// null): the x row the next u row will read, prefetched into L1 a block at a time (into L2 only, it
// lost at 2 threads). A block's x lines lie 4 apart (C = 64) and a 4 KB page holds 16 of them, too
// few for the hardware prefetcher, so without this the u pass stalls on every line; here the loads
// overlap the FMAs.
template <int R>
static void xunit_row_t(const Params& q, const float* const* urows, int64_t c, const float* xrow, float* yrow, const float* pf) {
    const v16 b = ld(q.bias + c);
    for (int64_t x0 = 0; x0 < q.W; x0 += BLK) {
        if (pf) {
            const int64_t n = q.W - x0 < BLK ? q.W - x0 : BLK;
            for (int64_t i = 0; i < n; ++i) __builtin_prefetch(pf + (x0 + i) * q.C, 0, 3);
        }
        v16 acc[BLK];
#pragma GCC unroll 16
        for (int i = 0; i < BLK; ++i) acc[i] = b;
        for (int ky = 0; ky < R; ++ky) {
            const float* u = urows[ky] + x0 * VEC;  // column x0 - P + j lives at (x0 + j) in the padded row
            v16 w[R];
#pragma GCC unroll 16
            for (int kx = 0; kx < R; ++kx) w[kx] = ld(q.wt + (ky * R + kx) * q.C + c);
#pragma GCC unroll 32
            for (int j = 0; j < BLK + R - 1; ++j) {
                const v16 uv = ld(u + j * VEC);
#pragma GCC unroll 16
                for (int kx = 0; kx < R; ++kx) {
                    const int i = j - kx;
                    if (i >= 0 && i < BLK) acc[i] += w[kx] * uv;
                }
            }
        }
        const int64_t n = q.W - x0 < BLK ? q.W - x0 : BLK;
        finish(q, acc, (int)n, c, xrow + x0 * q.C + c, yrow + x0 * q.C + c);
    }
}

static void xunit_row_generic(const Params& q, const float* const* urows, int64_t c, const float* xrow, float* yrow) {
    const int64_t R = q.R;
    for (int64_t x = 0; x < q.W; ++x) {
        v16 acc = ld(q.bias + c);
        for (int64_t ky = 0; ky < R; ++ky)
            for (int64_t kx = 0; kx < R; ++kx)
                acc += ld(q.wt + (ky * R + kx) * q.C + c) * ld(urows[ky] + (x + kx) * VEC);
        finish(q, &acc, 1, c, xrow + x * q.C + c, yrow + x * q.C + c);
    }
}

static void xunit_row(const Params& q, const float* const* urows, int64_t c, const float* xrow, float* yrow, const float* pf) {
    switch (q.R) {
        case 1: xunit_row_t<1>(q, urows, c, xrow, yrow, pf); break;
        case 3: xunit_row_t<3>(q, urows, c, xrow, yrow, pf); break;
        case 5: xunit_row_t<5>(q, urows, c, xrow, yrow, pf); break;
        case 7: xunit_row_t<7>(q, urows, c, xrow, yrow, pf); break;
        case 9: xunit_row_t<9>(q, urows, c, xrow, yrow, pf); break;
        default: xunit_row_generic(q, urows, c, xrow, yrow);
    }
}

// Weight gradient of the depthwise conv d = DW_R(u) (zero padding R/2): for rows [s, e) of one
// image, gw[ky][kx][c] += sum over pixels p of u[p + (ky, kx) - P][c] * g[p][c]. u and g are NHWC.
template <int R>
static void dw_grad_weight_t(const Params& q, const float* u, const float* g, float* gw, int64_t s, int64_t e) {
    constexpr int P = R / 2;
    const int64_t C = q.C, W = q.W, row = W * C;
    for (int64_t c = 0; c < C; c += VEC) {
        v16 tot[R * R];
        for (int k = 0; k < R * R; ++k) tot[k] = splat(0.0f);
        for (int64_t i = s; i < e; ++i) {
            const float* grow = g + i * row + c;
            for (int ky = 0; ky < R; ++ky) {
                const int64_t j = i - P + ky;
                if (j < 0 || j >= q.H) continue;
                const float* urow = u + j * row + c;
                v16 a[R];
#pragma GCC unroll 16
                for (int kx = 0; kx < R; ++kx) a[kx] = splat(0.0f);
                // interior: every tap in range; each loaded u vector feeds its R taps from registers
                const int64_t x0 = P, x1 = W - P;
                for (int64_t x = x0; x < x1; ++x) {
                    const v16 gv = ld(grow + x * C);
#pragma GCC unroll 16
                    for (int kx = 0; kx < R; ++kx) a[kx] += gv * ld(urow + (x + kx - P) * C);
                }
                // borders (and images narrower than R)
                for (int64_t x = 0; x < W; ++x) {
                    if (x >= x0 && x < x1) continue;
                    const v16 gv = ld(grow + x * C);
                    for (int kx = 0; kx < R; ++kx) {
                        const int64_t xx = x + kx - P;
                        if (xx >= 0 && xx < W) a[kx] += gv * ld(urow + xx * C);
                    }
                }
#pragma GCC unroll 16
                for (int kx = 0; kx < R; ++kx) tot[ky * R + kx] += a[kx];
            }
        }
        for (int k = 0; k < R * R; ++k) st(gw + k * C + c, ld(gw + k * C + c) + tot[k]);
    }
}

static void dw_grad_weight_generic(const Params& q, const float* u, const float* g, float* gw, int64_t s, int64_t e) {
    const int64_t C = q.C, W = q.W, R = q.R, P = R / 2, row = W * C;
    for (int64_t c = 0; c < C; c += VEC)
        for (int64_t i = s; i < e; ++i)
            for (int64_t ky = 0; ky < R; ++ky) {
                const int64_t j = i - P + ky;
                if (j < 0 || j >= q.H) continue;
                for (int64_t kx = 0; kx < R; ++kx) {
                    v16 a = splat(0.0f);
                    for (int64_t x = 0; x < W; ++x) {
                        const int64_t xx = x + kx - P;
                        if (xx >= 0 && xx < W) a += ld(g + i * row + x * C + c) * ld(u + j * row + xx * C + c);
                    }
                    st(gw + (ky * R + kx) * C + c, ld(gw + (ky * R + kx) * C + c) + a);
                }
            }
}


extern "C" {

// Floats per u row over all channel blocks; halo buffers hold 2P of these.
int64_t xunit_padded_row_floats(int64_t W, int64_t C, int64_t R) {
    Params q{};
    q.W = W; q.C = C; q.R = R;
    return padded_px(q) * C;
}

// u rows [r_begin, r_end) of image x (rows outside [0, H) are left zero) into `out`, laid out
// [channel block][row - r_begin][padded pixel][VEC] (zero-initialised by the caller).
void xunit_u_rows(const float* x, float* out, int64_t r_begin, int64_t r_end, const Params* q) {
    const int64_t row = q->W * q->C, pp = padded_px(*q) * VEC, n = r_end - r_begin;
    for (int64_t c = 0; c < q->C; c += VEC)
        for (int64_t j = r_begin; j < r_end; ++j)
            if (j >= 0 && j < q->H) make_u_row(*q, x + j * row, c, out + ((c / VEC) * n + (j - r_begin)) * pp);
}

// This thread's u ring buffer, at least `bytes` long, kept between calls: a fresh 1 MB buffer per band
// and layer cost page faults (and their zeroing) on every call. 64-byte aligned, so each u vector is
// one cache line (calloc promises 16 bytes; a vector off a 64-byte boundary spans two lines).
struct RingBuffer {
    float* p = nullptr;
    size_t bytes = 0;
    ~RingBuffer() { std::free(p); }
};

static float* thread_ring(size_t bytes) {
    static thread_local RingBuffer buf;
    if (buf.bytes < bytes) {
        std::free(buf.p);
        buf.bytes = (bytes + 63) / 64 * 64;
        buf.p = static_cast<float*>(std::aligned_alloc(64, buf.bytes));
        if (!buf.p) buf.bytes = 0;
    }
    return buf.p;
}

// Output rows [s, e), channels [c_begin, c_end) (whole 16-channel blocks) of one image. Channel groups
// share nothing (a block is one cache line per pixel), so threads may split the channels as well as the
// rows. u rows [s - P, s) come from `halo_top` and [e, e + P) from
// `halo_bottom` (each points at the first wanted row of an xunit_u_rows buffer of 2P rows), unless
// they lie outside the image (then zero) or s == 0 / e == H. y may alias x: in each channel block,
// row i of y is written only after every u row that reads x row i (each block has its own ring
// and its own next row, so the order of chunks and blocks does not matter for that).
int xunit_band(const float* x, float* y, int64_t s, int64_t e, const float* halo_top, const float* halo_bottom,
               int64_t c_begin, int64_t c_end, const Params* qp) {
    const Params& q = *qp;
    const int64_t R = q.R, P = R / 2, row = q.W * q.C, pp = padded_px(q) * VEC;
    const int64_t nb = q.C / VEC;
    // one ring of R u rows per channel block, plus a zero row
    const size_t ring_bytes = (size_t)((nb * R + 1) * pp) * sizeof(float);  // pp is a multiple of 16
    float* ring = thread_ring(ring_bytes);
    if (!ring) return 1;
    std::memset(ring, 0, ring_bytes);  // the padding columns and the zero row must read as zero
    const float* zero = ring + nb * R * pp;  // stays zero
    const float** urows = static_cast<const float**>(std::malloc(sizeof(float*) * (size_t)R));
    int64_t* next = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * (size_t)nb));  // next own u row, per block
    if (!urows || !next) { std::free(urows); std::free(next); return 1; }
    for (int64_t b = 0; b < nb; ++b) next[b] = s;  // next own u row to compute, per block
    // Row chunks × channel blocks: a chunk's x rows stay in cache across the channel-block passes.
    for (int64_t s1 = s; s1 < e; s1 += SUB) {
        const int64_t e1 = s1 + SUB < e ? s1 + SUB : e;
        for (int64_t c = c_begin; c < c_end; c += VEC) {
            const int64_t cb = c / VEC, halo_offset = cb * 2 * P * pp;
            float* rb = ring + cb * R * pp;
            for (int64_t i = s1; i < e1; ++i) {
                const int64_t need = i + P < e ? i + P : e - 1;
                for (; next[cb] <= need; ++next[cb]) make_u_row(q, x + next[cb] * row, c, rb + (next[cb] % R) * pp);
                for (int64_t ky = 0; ky < R; ++ky) {
                    const int64_t j = i - P + ky;
                    if (j < 0 || j >= q.H) urows[ky] = zero;
                    else if (j < s) urows[ky] = halo_top + halo_offset + (j - (s - P)) * pp;
                    else if (j >= e) urows[ky] = halo_bottom + halo_offset + (j - e) * pp;
                    else urows[ky] = rb + (j % R) * pp;
                }
                // the x row the next u row will read (this block's next row, or the next block's first)
                const float* pf = nullptr;
                if (i + 1 < e1) { if (i + 1 + P < e) pf = x + (i + 1 + P) * row + c; }
                else if (c + VEC < c_end) { if (s1 + P < e) pf = x + (s1 + P) * row + c + VEC; }
                else if (e1 + P < e) pf = x + (e1 + P) * row + c_begin;
                xunit_row(q, urows, c, x + i * row, y + i * row, pf);
            }
        }
    }
    std::free(next);
    std::free(urows);
    return 0;
}

// The parallel passes. Built with OpenMP, they run on the OpenMP runtime torch itself uses (the
// process's one libgomp), so the team that just ran a conv picks the work up at once; Python threads
// instead compete with torch's spinning OpenMP workers and the xUnit barely scales. Without OpenMP
// the tasks run in turn (the caller then uses its own threads).
struct HaloTask { const float* x; float* out; int64_t r_begin, r_end; };
struct BandTask { const float* x; float* y; int64_t s, e; const float* halo_top; const float* halo_bottom; int64_t c_begin, c_end; };

int xunit_has_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void xunit_halos(const HaloTask* t, int64_t n, int64_t threads, const Params* q) {
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(dynamic, 1)
#endif
    for (int64_t i = 0; i < n; ++i) xunit_u_rows(t[i].x, t[i].out, t[i].r_begin, t[i].r_end, q);
}

int xunit_bands(const BandTask* t, int64_t n, int64_t threads, const Params* q) {
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(dynamic, 1) reduction(| : failed)
#endif
    for (int64_t i = 0; i < n; ++i)
        failed |= xunit_band(t[i].x, t[i].y, t[i].s, t[i].e, t[i].halo_top, t[i].halo_bottom, t[i].c_begin, t[i].c_end, q);
    return failed;
}

// Depthwise-conv weight gradient over rows [s, e) of one image, accumulated into gw ([ky][kx][c]).
void xunit_dw_grad_weight(const float* u, const float* g, float* gw, int64_t s, int64_t e, const Params* qp) {
    const Params& q = *qp;
    switch (q.R) {
        case 1: dw_grad_weight_t<1>(q, u, g, gw, s, e); break;
        case 3: dw_grad_weight_t<3>(q, u, g, gw, s, e); break;
        case 5: dw_grad_weight_t<5>(q, u, g, gw, s, e); break;
        case 7: dw_grad_weight_t<7>(q, u, g, gw, s, e); break;
        case 9: dw_grad_weight_t<9>(q, u, g, gw, s, e); break;
        default: dw_grad_weight_generic(q, u, g, gw, s, e);
    }
}

// Weight-gradient tasks (one accumulator each) on the OpenMP team, as xunit_bands.
struct GradTask { const float* u; const float* g; float* gw; int64_t s, e; };

void xunit_dw_grad_weight_tasks(const GradTask* t, int64_t n, int64_t threads, const Params* q) {
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(dynamic, 1)
#endif
    for (int64_t i = 0; i < n; ++i) xunit_dw_grad_weight(t[i].u, t[i].g, t[i].gw, t[i].s, t[i].e, q);
}

}  // extern "C"
