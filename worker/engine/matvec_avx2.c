/* matvec_avx2.c: the AVX2 (+FMA, F16C) kernels, level 1 of gw_simd_set:
 * single-row dot products for F32, F16, Q4_0, Q4_1 and Q8_0, multi-row
 * kernels for the three quantized ones, and the attention kernels (the
 * other types take the portable kernels at this level too). Each
 * gives the bits of the portable kernel it replaces (matvec.c says why
 * that matters), and the file is compiled for any x86-64: only these
 * functions carry the target attribute, and gw_simd_set checks the CPU
 * before they are chosen. */
#include "engine.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline
/* The tiles' loops over weight rows and activation rows, fully unrolled
 * so that the accumulators stay in registers (gcc -O2 and clang keep such
 * loops, with the accumulators in memory). */
#if defined(__clang__)
#define GW_UNROLL _Pragma("clang loop unroll(full)")
#else
#define GW_UNROLL _Pragma("GCC unroll 8")
#endif

AVX2 static inline float hsum256(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15) in the
 * low lane, high nibbles (elements 16..31) in the high lane. */
AVX2 static inline __m256i nibbles32(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

/* Sum of u8 * i8 products as 8 i32 lanes (pairs cannot saturate: at most
 * 2 * 255 * 127 would, but operands here are at most 128 * 127). */
AVX2 static inline __m256 mul_sum_us8(__m256i ux, __m256i sy)
{
    __m256i p16 = _mm256_maddubs_epi16(ux, sy);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

AVX2 static float dot_q4_0_avx2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_0 *x = row;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        __m256i qx = _mm256_sub_epi8(nibbles32(x[b].qs), _mm256_set1_epi8(8));
        __m256i qy = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        __m256 p = mul_sum_us8(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(gw_h2f(x[b].d) * xq[b].d), p, acc);
    }
    return hsum256(acc);
}

AVX2 static float dot_q4_1_avx2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_1 *x = row;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int b = 0; b < n / 32; b++) {
        __m256i qx = nibbles32(x[b].qs);
        __m256i qy = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(gw_h2f(x[b].d) * xq[b].d), mul_sum_us8(qx, qy), acc);
        mins += gw_h2f(x[b].m) * xq[b].s;
    }
    return hsum256(acc) + mins;
}

AVX2 static float dot_q8_0_avx2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q8_0 *x = row;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256i qy = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        __m256 p = mul_sum_us8(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(gw_h2f(x[b].d) * xq[b].d), p, acc);
    }
    return hsum256(acc);
}

AVX2 static float dot_f32_avx2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xq;
    const float *w = row;
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(xf + i), acc);
    float s = hsum256(acc);
    for (; i < n; i++)
        s += w[i] * xf[i];
    return s;
}

AVX2 static float dot_f16_avx2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xq;
    const uint16_t *w = row;
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        acc = _mm256_fmadd_ps(wf, _mm256_loadu_ps(xf + i), acc);
    }
    float s = hsum256(acc);
    for (; i < n; i++)
        s += gw_h2f(w[i]) * xf[i];
    return s;
}

/* ---- attention on halves: the portable kernels' lanes (matvec.c) ---- */

#define LDH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))

/* r16 of 16 lanes held as lo (0..7) and hi (8..15): hsum256's pairing. */
AVX2 static inline float r16_avx2(__m256 lo, __m256 hi)
{
    return hsum256(_mm256_add_ps(lo, hi));
}

AVX2 static float dot_hh_avx2(int n, const uint16_t *x, const uint16_t *y)
{
    __m256 a[8]; /* lane 8r + j of the 64 is a[r][j] */
    for (int r = 0; r < 8; r++)
        a[r] = _mm256_setzero_ps();
    int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int r = 0; r < 8; r++)
            a[r] = _mm256_fmadd_ps(LDH(x + i + 8 * r), LDH(y + i + 8 * r), a[r]);
    __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    __m256 hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    double s = r16_avx2(lo, hi);
    for (int i = np; i < n; i++)
        s += (double)(gw_h2f(x[i]) * gw_h2f(y[i]));
    return (float)s;
}

AVX2 static float dot_hh16_avx2(int n, const uint16_t *x, const uint16_t *y)
{
    if (n % 16)
        return dot_hh_avx2(n, x, y);
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    for (int i = 0; i < n; i += 16) {
        lo = _mm256_fmadd_ps(LDH(x + i), LDH(y + i), lo);
        hi = _mm256_fmadd_ps(LDH(x + i + 8), LDH(y + i + 8), hi);
    }
    return r16_avx2(lo, hi);
}

/* attn_v with nl lanes (64 or 16): lane rows of hd floats, reduced across 8
 * output dimensions at a time. Rows never written (fewer positions than
 * lanes) count as zeros. */
AVX2 static void attn_v_lanes_avx2(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                                   size_t v_stride, float *lanes, float *out, int nl)
{
    if (hd % 8) {
        gw_attn_portable.attn_v[nl == 16](hd, n_pos, a, v, v_stride, lanes, out);
        return;
    }
    int used = n_pos < nl ? n_pos : nl;
    memset(lanes, 0, (size_t)used * (size_t)hd * sizeof(float));
    for (int t = 0; t < n_pos; t++) {
        __m256 w = _mm256_set1_ps(gw_h2f(a[t]));
        float *l = lanes + (size_t)(t % nl) * (size_t)hd;
        const uint16_t *vt = v + (size_t)t * v_stride;
        for (int d = 0; d < hd; d += 8)
            _mm256_storeu_ps(l + d, _mm256_fmadd_ps(LDH(vt + d), w, _mm256_loadu_ps(l + d)));
    }
    __m256 z = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 8) {
#define L(k) ((k) < used ? _mm256_loadu_ps(lanes + (size_t)(k) * (size_t)hd + d) : z)
        __m256 c[16], t3[8];
        for (int k = 0; k < 16; k++)
            c[k] = nl == 64 ? _mm256_add_ps(_mm256_add_ps(L(k), L(32 + k)),
                                            _mm256_add_ps(L(16 + k), L(48 + k)))
                            : L(k);
#undef L
        for (int k = 0; k < 8; k++)
            t3[k] = _mm256_add_ps(c[k], c[k + 8]);
        __m256 t60 = _mm256_add_ps(t3[0], t3[4]), t61 = _mm256_add_ps(t3[1], t3[5]);
        __m256 t62 = _mm256_add_ps(t3[2], t3[6]), t63 = _mm256_add_ps(t3[3], t3[7]);
        _mm256_storeu_ps(out + d, _mm256_add_ps(_mm256_add_ps(t60, t62), _mm256_add_ps(t61, t63)));
    }
}
#undef LDH

AVX2 static void attn_v_avx2(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                             size_t v_stride, float *lanes, float *out)
{
    attn_v_lanes_avx2(hd, n_pos, a, v, v_stride, lanes, out, 64);
}

AVX2 static void attn_v16_avx2(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                               size_t v_stride, float *lanes, float *out)
{
    attn_v_lanes_avx2(hd, n_pos, a, v, v_stride, lanes, out, 16);
}

AVX2 static void f32_to_f16_avx2(const float *x, uint16_t *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = gw_f32_to_fp16(x[i]);
}

/* ---- multi-row kernels ----
 *
 * A tile is R weight rows by C activation rows (C <= 4): each weight block
 * is expanded once per tile and taken against the C rows, each (weight
 * row, activation row) pair with its own 8-lane accumulator and the
 * single-row kernel's operations in its order, so each output has its
 * bits. Several accumulators also hide the FMA latency that bounds the
 * single-row loop, whose one accumulator must take the blocks in order:
 * one activation row gets 4 weight rows (tile_w_avx2), two get 2, more
 * get 1. The activation scales come from gw_batch.tab, 4 rows per load. */

/* A decode step reads ~100 MB of weights against a few MB of cache, and a
 * tile reads its R weight rows side by side: R streams, which the
 * hardware prefetchers follow worse than one. So each block step of a
 * tile also asks for the R blocks' worth of bytes that lie PREFETCH bytes
 * after the tile's start, which a later tile reads (bench_matvec's 90 MiB
 * matrix, one activation row: 8.5 GB/s without this, 19 with it, the
 * single-row loop 8 to 9; docs/BENCHMARKS.md). A prefetch never faults:
 * past the end of the matrix it only wastes a line. */
enum { PREFETCH = 8192 };

AVX2_INLINE size_t blk_bytes(uint32_t type)
{
    return type == GW_T_Q4_1   ? sizeof(gw_blk_q4_1)
           : type == GW_T_Q4_0 ? sizeof(gw_blk_q4_0)
                               : sizeof(gw_blk_q8_0);
}

AVX2_INLINE void prefetch_step(const uint8_t *tile, size_t step, int k)
{
    uintptr_t p = (uintptr_t)tile + PREFETCH + (uintptr_t)k * step;
    for (size_t i = 0; i < (step + 63) / 64; i++) /* step is a constant */
        _mm_prefetch((const char *)(p + 64 * i), _MM_HINT_T0);
}

/* A weight block ready for mul_sum_us8: ax the unsigned operand, sx the
 * sign to put on the activations (Q4_0 and Q8_0 only: the products are
 * |w| * (sign(w) * y), as in the single-row kernels). */
AVX2_INLINE void w_block(uint32_t type, const uint8_t *row, int k, __m256i *ax, __m256i *sx,
                         float *d, float *m)
{
    if (type == GW_T_Q4_1) {
        const gw_blk_q4_1 *x = (const gw_blk_q4_1 *)row + k;
        *ax = nibbles32(x->qs), *sx = *ax;
        *d = gw_h2f(x->d), *m = gw_h2f(x->m);
        return;
    }
    __m256i qx;
    if (type == GW_T_Q4_0) {
        const gw_blk_q4_0 *x = (const gw_blk_q4_0 *)row + k;
        qx = _mm256_sub_epi8(nibbles32(x->qs), _mm256_set1_epi8(8));
        *d = gw_h2f(x->d);
    } else {
        const gw_blk_q8_0 *x = (const gw_blk_q8_0 *)row + k;
        qx = _mm256_loadu_si256((const __m256i *)x->qs);
        *d = gw_h2f(x->d);
    }
    *ax = _mm256_sign_epi8(qx, qx), *sx = qx, *m = 0;
}

AVX2_INLINE __m256 w_prod(uint32_t type, __m256i ax, __m256i sx, const int8_t *qs)
{
    __m256i qy = _mm256_loadu_si256((const __m256i *)qs);
    return mul_sum_us8(ax, type == GW_T_Q4_1 ? qy : _mm256_sign_epi8(qy, sx));
}

/* Lane c of v in all 8 lanes of a vector. */
AVX2_INLINE __m256 lane(__m128 v, int c)
{
    return c == 0 ? _mm256_broadcastss_ps(v)
                  : _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v), _mm256_set1_epi32(c));
}

AVX2_INLINE void tile_avx2(uint32_t type, int R, int C, const gw_mat *W, const gw_batch *x, int r,
                           int c0, bool prefetch, float *out, size_t out_stride)
{
    int nblk = W->cols / 32;
    size_t ts = (size_t)x->tab_stride;
    const float *tab = x->tab + c0;
    const uint8_t *rows[4];
    const gw_q8 *ys[4];
    __m256 acc[4][4];
    __m128 mins[4];
    GW_UNROLL
    for (int i = 0; i < R; i++) {
        rows[i] = W->data + (size_t)(r + i) * W->row_bytes;
        mins[i] = _mm_setzero_ps();
        GW_UNROLL
        for (int c = 0; c < C; c++)
            acc[i][c] = _mm256_setzero_ps();
    }
    GW_UNROLL
    for (int c = 0; c < C; c++)
        ys[c] = x->xq + (size_t)(c0 + c) * x->xq_stride;
    size_t step = blk_bytes(type) * (size_t)R;
    for (int k = 0; k < nblk; k++, tab += 2 * ts) {
        if (prefetch)
            prefetch_step(rows[0], step, k);
        __m128 d4 = _mm_loadu_ps(tab), s4 = _mm_loadu_ps(tab + ts);
        GW_UNROLL
        for (int i = 0; i < R; i++) {
            __m256i ax, sx;
            float d, m;
            w_block(type, rows[i], k, &ax, &sx, &d, &m);
            __m128 dd = _mm_mul_ps(_mm_set1_ps(d), d4);
            if (type == GW_T_Q4_1)
                mins[i] = _mm_add_ps(mins[i], _mm_mul_ps(_mm_set1_ps(m), s4));
            GW_UNROLL
            for (int c = 0; c < C; c++)
                acc[i][c] =
                    _mm256_fmadd_ps(lane(dd, c), w_prod(type, ax, sx, ys[c][k].qs), acc[i][c]);
        }
    }
    GW_UNROLL
    for (int i = 0; i < R; i++) {
        float ms[4];
        _mm_storeu_ps(ms, mins[i]);
        GW_UNROLL
        for (int c = 0; c < C; c++) {
            float s = hsum256(acc[i][c]);
            out[(size_t)(c0 + c) * out_stride + (size_t)(r + i)] =
                type == GW_T_Q4_1 ? s + ms[c] : s;
        }
    }
}

/* One activation row (a decode step of one sequence): R weight rows, one
 * accumulator each. A block's scales are converted by F16C (exact, as the
 * table gw_h2f reads) and multiplied with the activation's d and s at
 * once: lanes [d * d_y, m * s_y], the products the single-row kernel takes
 * (a product of two halves is exact in a float); the nibbles are split by
 * one variable shift of a broadcast load. */
AVX2_INLINE void tile_w_avx2(uint32_t type, int R, const gw_mat *W, const gw_q8 *y, int r,
                             float *out)
{
    int nblk = W->cols / 32;
    size_t bs = blk_bytes(type);
    const uint8_t *rows[4];
    __m256 acc[4];
    __m128 mins[4]; /* lane 1: the minimum's terms */
    GW_UNROLL
    for (int i = 0; i < R; i++) {
        rows[i] = W->data + (size_t)(r + i) * W->row_bytes;
        acc[i] = _mm256_setzero_ps(), mins[i] = _mm_setzero_ps();
    }
    const __m256i shift = _mm256_setr_epi64x(0, 0, 4, 4);
    for (int k = 0; k < nblk; k++) {
        prefetch_step(rows[0], (size_t)R * bs, k);
        __m128 ds = _mm_castpd_ps(_mm_loaddup_pd((const double *)&y[k].d)); /* d s d s */
        __m256i qy = _mm256_loadu_si256((const __m256i *)y[k].qs);
        GW_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *a = rows[i] + (size_t)k * bs;
            uint32_t h; /* d (and m): the block's first 4 bytes as two halves */
            memcpy(&h, a, 4);
            __m128 sc = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h)), ds);
            __m256i ax, sy = qy;
            if (type == GW_T_Q8_0) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(a + 2));
                ax = _mm256_sign_epi8(q, q), sy = _mm256_sign_epi8(qy, q);
            } else {
                __m256i t = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i *)(a + (type == GW_T_Q4_1 ? 4 : 2))));
                ax = _mm256_and_si256(_mm256_srlv_epi64(t, shift), _mm256_set1_epi8(0x0f));
                if (type == GW_T_Q4_0) {
                    __m256i q = _mm256_sub_epi8(ax, _mm256_set1_epi8(8));
                    ax = _mm256_sign_epi8(q, q), sy = _mm256_sign_epi8(qy, q);
                } else {
                    mins[i] = _mm_add_ps(mins[i], sc);
                }
            }
            acc[i] = _mm256_fmadd_ps(_mm256_broadcastss_ps(sc), mul_sum_us8(ax, sy), acc[i]);
        }
    }
    GW_UNROLL
    for (int i = 0; i < R; i++) {
        float s = hsum256(acc[i]);
        out[r + i] = type == GW_T_Q4_1 ? s + _mm_cvtss_f32(_mm_movehdup_ps(mins[i])) : s;
    }
}

/* The activation rows in chunks of at most 4, as even as they come (5 is
 * 3 + 2: a chunk of one would leave one accumulator, latency-bound). */
AVX2_INLINE void rows_avx2(uint32_t type, const gw_mat *W, const gw_batch *x, float *out,
                           size_t out_stride, int r0, int r1)
{
    int nb = x->nb, R = nb == 2 ? 2 : 1, n_ch = (nb + 3) / 4;
    if (nb == 1) {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            tile_w_avx2(type, 4, W, x->xq, r, out);
        for (; r < r1; r++)
            tile_w_avx2(type, 1, W, x->xq, r, out);
        return;
    }
    for (int r = r0; r < r1;) {
        if (r + R > r1)
            R = 1;
        for (int ch = 0, c0 = 0; ch < n_ch; ch++) {
            int C = nb / n_ch + (ch < nb % n_ch);
#define TILE(RR, CC) tile_avx2(type, RR, CC, W, x, r, c0, ch == 0, out, out_stride)
            if (R == 2)
                TILE(2, 2);
            else if (C == 1)
                TILE(1, 1);
            else if (C == 2)
                TILE(1, 2);
            else if (C == 3)
                TILE(1, 3);
            else
                TILE(1, 4);
#undef TILE
            c0 += C;
        }
        r += R;
    }
}

AVX2 static void rows_q4_0_avx2(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride,
                                int r0, int r1)
{
    rows_avx2(GW_T_Q4_0, W, x, out, out_stride, r0, r1);
}

AVX2 static void rows_q4_1_avx2(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride,
                                int r0, int r1)
{
    rows_avx2(GW_T_Q4_1, W, x, out, out_stride, r0, r1);
}

AVX2 static void rows_q8_0_avx2(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride,
                                int r0, int r1)
{
    rows_avx2(GW_T_Q8_0, W, x, out, out_stride, r0, r1);
}

gw_dot_fn gw_dot_avx2_for(uint32_t type)
{
    switch (type) {
    case GW_T_F32:
        return dot_f32_avx2;
    case GW_T_F16:
        return dot_f16_avx2;
    case GW_T_Q4_0:
        return dot_q4_0_avx2;
    case GW_T_Q4_1:
        return dot_q4_1_avx2;
    case GW_T_Q8_0:
        return dot_q8_0_avx2;
    default:
        return gw_dot_portable_for(type);
    }
}

gw_rows_fn gw_rows_avx2_for(uint32_t type)
{
    switch (type) {
    case GW_T_Q4_0:
        return rows_q4_0_avx2;
    case GW_T_Q4_1:
        return rows_q4_1_avx2;
    case GW_T_Q8_0:
        return rows_q8_0_avx2;
    default: /* Q4_K, Q6_K: the portable ones, as their dot products */
        return gw_rows_portable_for(type);
    }
}

static const gw_attn_kernels attn_avx2 = {
    .dot_hh = {dot_hh_avx2, dot_hh16_avx2},
    .attn_v = {attn_v_avx2, attn_v16_avx2},
    .f32_to_f16 = f32_to_f16_avx2,
    .softmax_h = gw_softmax_h_libm,
    .silu_mul = gw_silu_mul_libm,
};

const gw_attn_kernels *gw_attn_avx2(void)
{
    return &attn_avx2;
}

#else /* not x86: the portable kernels stand in (gw_simd_set never picks 1) */

gw_dot_fn gw_dot_avx2_for(uint32_t type)
{
    return gw_dot_portable_for(type);
}

gw_rows_fn gw_rows_avx2_for(uint32_t type)
{
    return gw_rows_portable_for(type);
}

const gw_attn_kernels *gw_attn_avx2(void)
{
    return &gw_attn_portable;
}
#endif
