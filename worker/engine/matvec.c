/* matvec.c: dot products of weight rows with activations, straight on the
 * stored blocks (never a whole matrix expanded to f32), and the row loop
 * that the thread pool splits.
 *
 * Quantized rows meet activations quantized once per matvec to Q8 blocks:
 * an integer dot product per 32-element block, then one multiply by the two
 * scales (plus m * sum(x) for the types with a minimum). Each kernel has a
 * portable C version and, for the types that dominate real models, an AVX2
 * version chosen at run time (gw_simd_set, GW_NO_AVX2=1 in the environment).
 */
#include "engine.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define GW_HAVE_X86 1
#endif

/* ---- portable kernels ---- */

static float dot_f32(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xq;
    const float *w = row;
    float s = 0;
    for (int i = 0; i < n; i++)
        s += w[i] * xf[i];
    return s;
}

static float dot_f16(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xq;
    const uint16_t *w = row;
    float s = 0;
    for (int i = 0; i < n; i++)
        s += gw_h2f(w[i]) * xf[i];
    return s;
}

static float dot_bf16(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xq;
    const uint16_t *w = row;
    float s = 0;
    for (int i = 0; i < n; i++)
        s += gw_bf2f(w[i]) * xf[i];
    return s;
}

/* llama.cpp's x86 kernels for Q4_0, Q4_1 and Q8_0 (ggml_vec_dot_*_q8_*)
 * keep 8 float lanes: lane k takes the integer sum of elements 4k..4k+3 of
 * each block times the block's combined scale, by fused multiply-add; the
 * lanes are then added pairwise (k with k+4, then 0-2 and 1-3, then the
 * two). The portable kernels keep the same lanes, so both paths produce
 * the same bits as llama.cpp's AVX2 build. */
static float hsum8(const float a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* Element e of a 4-bit block: low nibbles are elements 0..15, high 16..31. */
static inline int nib(const uint8_t *qs, int e)
{
    return e < 16 ? qs[e] & 15 : qs[e - 16] >> 4;
}

static float dot_q4_0(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_0 *x = row;
    float acc[8] = {0};
    for (int b = 0; b < n / 32; b++) {
        float dd = gw_h2f(x[b].d) * xq[b].d;
        for (int k = 0; k < 8; k++) {
            int sumi = 0;
            for (int e = 4 * k; e < 4 * k + 4; e++)
                sumi += (nib(x[b].qs, e) - 8) * xq[b].qs[e];
            acc[k] = fmaf(dd, (float)sumi, acc[k]);
        }
    }
    return hsum8(acc);
}

/* The minimum's term m * sum(x) uses the activation block's s (a half, as
 * llama.cpp's Q8_1 block stores it), summed apart and added last. */
static float dot_q4_1(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_1 *x = row;
    float acc[8] = {0}, mins = 0;
    for (int b = 0; b < n / 32; b++) {
        float dd = gw_h2f(x[b].d) * xq[b].d;
        mins += gw_h2f(x[b].m) * xq[b].s;
        for (int k = 0; k < 8; k++) {
            int sumi = 0;
            for (int e = 4 * k; e < 4 * k + 4; e++)
                sumi += nib(x[b].qs, e) * xq[b].qs[e];
            acc[k] = fmaf(dd, (float)sumi, acc[k]);
        }
    }
    return hsum8(acc) + mins;
}

static int q5_dot_block(const uint8_t *qs, const uint8_t *qhb, int off, const int8_t *y)
{
    uint32_t qh;
    memcpy(&qh, qhb, 4);
    int sumi = 0;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        sumi += (lo - off) * y[j] + (hi - off) * y[j + 16];
    }
    return sumi;
}

static float dot_q5_0(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q5_0 *x = row;
    float s = 0;
    for (int b = 0; b < n / 32; b++)
        s += (float)q5_dot_block(x[b].qs, x[b].qh, 16, xq[b].qs) * gw_h2f(x[b].d) * xq[b].d;
    return s;
}

static float dot_q5_1(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q5_1 *x = row;
    float s = 0;
    for (int b = 0; b < n / 32; b++)
        s += (float)q5_dot_block(x[b].qs, x[b].qh, 0, xq[b].qs) * gw_h2f(x[b].d) * xq[b].d +
             gw_h2f(x[b].m) * xq[b].s;
    return s;
}

static float dot_q8_0(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q8_0 *x = row;
    float acc[8] = {0};
    for (int b = 0; b < n / 32; b++) {
        float dd = gw_h2f(x[b].d) * xq[b].d;
        for (int k = 0; k < 8; k++) {
            int sumi = 0;
            for (int e = 4 * k; e < 4 * k + 4; e++)
                sumi += x[b].qs[e] * xq[b].qs[e];
            acc[k] = fmaf(dd, (float)sumi, acc[k]);
        }
    }
    return hsum8(acc);
}

void gw_q4k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m);

/* Q4_K: 8 sub-blocks of 32, each with a 6-bit scale and min: one Q8 block
 * per sub-block. */
static float dot_q4_k(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_k *x = row;
    float s = 0;
    for (int b = 0; b < n / 256; b++) {
        float d = gw_h2f(x[b].d), dmin = gw_h2f(x[b].dmin);
        const uint8_t *q = x[b].qs;
        const gw_q8 *y = xq + 8 * b;
        for (int j = 0; j < 4; j++, q += 32) {
            uint8_t sc0, m0, sc1, m1;
            gw_q4k_scale_min(2 * j, x[b].scales, &sc0, &m0);
            gw_q4k_scale_min(2 * j + 1, x[b].scales, &sc1, &m1);
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += (q[l] & 15) * y[2 * j].qs[l];
                s1 += (q[l] >> 4) * y[2 * j + 1].qs[l];
            }
            s += d * (sc0 * (float)s0 * y[2 * j].d + sc1 * (float)s1 * y[2 * j + 1].d) -
                 dmin * (m0 * y[2 * j].s + m1 * y[2 * j + 1].s);
        }
    }
    return s;
}

/* Q6_K: 16 sub-blocks of 16 with int8 scales; two per Q8 block. */
static float dot_q6_k(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q6_k *x = row;
    float s = 0;
    for (int b = 0; b < n / 256; b++) {
        float d = gw_h2f(x[b].d);
        const uint8_t *ql = x[b].ql, *qh = x[b].qh;
        const int8_t *sc = x[b].scales;
        const gw_q8 *y = xq + 8 * b;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 4) {
            int sums[8] = {0}; /* per 16-element sub-block: index is + 2k */
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                sums[is + 0] += q1 * y[0].qs[l];
                sums[is + 2] += q2 * y[1].qs[l];
                sums[is + 4] += q3 * y[2].qs[l];
                sums[is + 6] += q4 * y[3].qs[l];
            }
            for (int k = 0; k < 4; k++)
                s +=
                    d * y[k].d * (float)(sc[2 * k] * sums[2 * k] + sc[2 * k + 1] * sums[2 * k + 1]);
        }
    }
    return s;
}

gw_dot_fn gw_dot_portable_for(uint32_t type)
{
    switch (type) {
    case GW_T_F32:
        return dot_f32;
    case GW_T_F16:
        return dot_f16;
    case GW_T_BF16:
        return dot_bf16;
    case GW_T_Q4_0:
        return dot_q4_0;
    case GW_T_Q4_1:
        return dot_q4_1;
    case GW_T_Q5_0:
        return dot_q5_0;
    case GW_T_Q5_1:
        return dot_q5_1;
    case GW_T_Q8_0:
        return dot_q8_0;
    case GW_T_Q4_K:
        return dot_q4_k;
    case GW_T_Q6_K:
        return dot_q6_k;
    default:
        return NULL;
    }
}

/* ---- attention on half-precision operands ----
 *
 * llama.cpp (flash attention off, its default in llama-cpp-python) keeps K
 * and V as halves, converts q to halves and takes K.q with ggml_vec_dot_f16,
 * and after the softmax converts the weights to halves and takes each output
 * dimension as the dot of the weights with V's column. The reference ids
 * (tests/fixtures) come from its x86 build with -march=native on an AVX-512
 * machine, and the summation order is that build's, emulated here on any
 * CPU:
 * - one token (ggml_vec_dot_f16): 64 float lanes, 4 vectors of 16; element
 *   i goes to lane i % 64 by fused multiply-add; vectors 0+2 and 1+3 are
 *   added, then the two, then _mm512_reduce_add_ps (r16 below); past the
 *   last multiple of 64 the rest is added in double;
 * - two or more tokens (llamafile's tinyBLAS, 16 lanes): element i to lane
 *   i % 16, then r16; it needs n % 16 == 0 and takes the first way
 *   otherwise.
 * Positions past the current one carry weight 0 there (masked and padded
 * cache cells): they add nothing to a lane. */

/* _mm512_reduce_add_ps as GCC expands it: halves of 8, of 4, then pairs
 * (0+2, 1+3) and the two. l[k * stride] is lane k. */
static float r16(const float *l, size_t stride)
{
    float t3[8], t6[4];
    for (int k = 0; k < 8; k++)
        t3[k] = l[k * stride] + l[(k + 8) * stride];
    for (int k = 0; k < 4; k++)
        t6[k] = t3[k] + t3[k + 4];
    return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

/* The 64 lanes of ggml_vec_dot_f16 folded to 16, then r16. */
static float r64(const float *l, size_t stride)
{
    float c[16];
    for (int k = 0; k < 16; k++)
        c[k] =
            (l[k * stride] + l[(32 + k) * stride]) + (l[(16 + k) * stride] + l[(48 + k) * stride]);
    return r16(c, 1);
}

/* nl is the lane count: 64 for vec_dot, 16 for tinyBLAS. */
static float dot_hh_lanes(int n, const uint16_t *x, const uint16_t *y, int nl)
{
    float acc[64] = {0};
    int np = n - n % nl;
    for (int i = 0; i < np; i += nl)
        for (int l = 0; l < nl; l++)
            acc[l] = fmaf(gw_h2f(x[i + l]), gw_h2f(y[i + l]), acc[l]);
    double s = nl == 64 ? r64(acc, 1) : r16(acc, 1);
    for (int i = np; i < n; i++)
        s += (double)(gw_h2f(x[i]) * gw_h2f(y[i]));
    return (float)s;
}

static float dot_hh_portable(int n, const uint16_t *x, const uint16_t *y)
{
    return dot_hh_lanes(n, x, y, 64);
}

static float dot_hh16_portable(int n, const uint16_t *x, const uint16_t *y)
{
    return dot_hh_lanes(n, x, y, n % 16 ? 64 : 16);
}

static void attn_v_lanes(int hd, int n_pos, const uint16_t *a, const uint16_t *v, size_t v_stride,
                         float *lanes, float *out, int nl)
{
    memset(lanes, 0, (size_t)nl * (size_t)hd * sizeof(float));
    for (int t = 0; t < n_pos; t++) {
        float w = gw_h2f(a[t]), *l = lanes + (size_t)(t % nl) * (size_t)hd;
        const uint16_t *vt = v + (size_t)t * v_stride;
        for (int d = 0; d < hd; d++)
            l[d] = fmaf(gw_h2f(vt[d]), w, l[d]);
    }
    for (int d = 0; d < hd; d++)
        out[d] = nl == 64 ? r64(lanes + d, (size_t)hd) : r16(lanes + d, (size_t)hd);
}

static void attn_v_portable(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                            size_t v_stride, float *lanes, float *out)
{
    attn_v_lanes(hd, n_pos, a, v, v_stride, lanes, out, 64);
}

static void attn_v16_portable(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                              size_t v_stride, float *lanes, float *out)
{
    attn_v_lanes(hd, n_pos, a, v, v_stride, lanes, out, 16);
}

static void f32_to_f16_portable(const float *x, uint16_t *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = gw_f32_to_fp16(x[i]);
}

int gw_type_uses_q8(uint32_t type)
{
    return type != GW_T_F32 && type != GW_T_F16 && type != GW_T_BF16;
}

/* ---- AVX2 kernels ---- */

#ifdef GW_HAVE_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

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
        attn_v_lanes(hd, n_pos, a, v, v_stride, lanes, out, nl);
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

static bool cpu_has_avx2(void)
{
    __builtin_cpu_init();
    /* f16c from CPUID leaf 1 (ECX bit 29): clang before 15 has no "f16c"
     * for __builtin_cpu_supports, and the tree must build with clang
     * (tests/fuzz/). */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}
#else
gw_dot_fn gw_dot_avx2_for(uint32_t type)
{
    return gw_dot_portable_for(type);
}
static bool cpu_has_avx2(void)
{
    return false;
}
#endif

/* -1: not decided yet (first use reads the CPU and GW_NO_AVX2); 0: portable;
 * 1: AVX2. Relaxed: every thread computes the same answer, and the value is
 * only changed by gw_simd_set between generations. */
static _Atomic int simd_level = -1;

int gw_simd_set(int level)
{
    if (level < 0) {
        const char *e = getenv("GW_NO_AVX2");
        level = (e && *e && *e != '0') ? 0 : 1;
    }
    if (level > 0 && !cpu_has_avx2())
        level = 0;
    atomic_store_explicit(&simd_level, level, memory_order_relaxed);
    return level;
}

int gw_simd_get(void)
{
    int l = atomic_load_explicit(&simd_level, memory_order_relaxed);
    return l < 0 ? gw_simd_set(-1) : l;
}

gw_dot_fn gw_dot_for(uint32_t type)
{
    return gw_simd_get() > 0 ? gw_dot_avx2_for(type) : gw_dot_portable_for(type);
}

void gw_mat_rows(const gw_mat *W, const gw_q8 *xq, size_t xq_stride, const float *xf,
                 size_t xf_stride, int nb, float *out, size_t out_stride, int r0, int r1)
{
    gw_dot_fn dot = gw_dot_for(W->type);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = W->data + (size_t)r * W->row_bytes;
        for (int b = 0; b < nb; b++)
            out[(size_t)b * out_stride + r] =
                dot(W->cols, row, xq + (size_t)b * xq_stride, xf + (size_t)b * xf_stride);
    }
}

gw_dot_hh_fn gw_dot_hh_for(int batched)
{
#ifdef GW_HAVE_X86
    if (gw_simd_get() > 0)
        return batched ? dot_hh16_avx2 : dot_hh_avx2;
#endif
    return batched ? dot_hh16_portable : dot_hh_portable;
}

gw_attn_v_fn gw_attn_v_for(int batched)
{
#ifdef GW_HAVE_X86
    if (gw_simd_get() > 0)
        return batched ? attn_v16_avx2 : attn_v_avx2;
#endif
    return batched ? attn_v16_portable : attn_v_portable;
}

gw_f16_row_fn gw_f32_to_f16_row_for(void)
{
#ifdef GW_HAVE_X86
    if (gw_simd_get() > 0)
        return f32_to_f16_avx2;
#endif
    return f32_to_f16_portable;
}
