/* matvec.c: dot products of weight rows with activations, straight on the
 * stored blocks (never a whole matrix expanded to f32), the row loop that
 * the thread pool splits, and the choice of SIMD level.
 *
 * Quantized rows meet activations quantized once per matvec to Q8 blocks:
 * an integer dot product per 32-element block, then one multiply by the two
 * scales (plus m * sum(x) for the types with a minimum). Each kernel has a
 * portable C version here; the types that dominate real models (Q4_0, Q4_1,
 * Q8_0) are packed (packed.c) and have AVX2 and AVX512-VNNI products
 * (packed_x86.c), F32 and F16 AVX2 ones (matvec_avx2.c), chosen at run time
 * (gw_simd_set; GW_SIMD and GW_NO_AVX2 in the environment).
 *
 * Bits are part of the contract: the greedy ids must be llama.cpp's
 * (test_model_smollm2), and a batch of several sequences must give each
 * one exactly the logits it would get alone. So every level keeps the same
 * float operations in the same order for each output (integer sums are
 * exact, whichever instruction computes them), the multi-row kernels
 * (gw_rows_fn) give each row what the single-row kernel gives it, and
 * these files are compiled with -ffp-contract=off (CMakeLists.txt): a
 * multiply-add fused in one kernel and not in another would round
 * differently.
 */
#include "engine.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
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

/* Q4_0, Q4_1 and Q8_0 in packed.c's order: each block's exact integer
 * sum, one multiply-add per block, Q4_1's minimums summed apart and added
 * last. The packed kernels of every level give these bits. */
static inline int nib(const uint8_t *qs, int e)
{
    return e < 16 ? qs[e] & 15 : qs[e - 16] >> 4;
}

static float dot_q4_0(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_0 *x = row;
    float acc = 0;
    for (int b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int e = 0; e < 32; e++)
            sumi += (nib(x[b].qs, e) - 8) * xq[b].qs[e];
        acc = fmaf(gw_h2f(x[b].d) * xq[b].d, (float)sumi, acc);
    }
    return acc;
}

static float dot_q4_1(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_1 *x = row;
    float acc = 0, mins = 0;
    for (int b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int e = 0; e < 32; e++)
            sumi += nib(x[b].qs, e) * xq[b].qs[e];
        acc = fmaf(gw_h2f(x[b].d) * xq[b].d, (float)sumi, acc);
        mins = fmaf(gw_h2f(x[b].m), xq[b].s, mins);
    }
    return acc + mins;
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
    float acc = 0;
    for (int b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int e = 0; e < 32; e++)
            sumi += x[b].qs[e] * xq[b].qs[e];
        acc = fmaf(gw_h2f(x[b].d) * xq[b].d, (float)sumi, acc);
    }
    return acc;
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

/* ---- portable multi-row kernels (Q4_K and Q6_K: Q4_0, Q4_1 and Q8_0
 * have packed.c's) ----
 *
 * Each weight block is expanded once and taken against up to PR
 * activation rows, each with the single-row kernel's operations: the same
 * bits per row. */
enum { PR = 4 };

/* Q4_K: the block's 8 scales and minimums and its 256 nibbles expanded
 * once, then dot_q4_k's expression per activation row (they have no SIMD
 * kernels: every level uses these). */
static void rows_q4_k(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride, int r0,
                      int r1)
{
    if (x->nb == 1) { /* nothing to share: the single-row kernel */
        for (int r = r0; r < r1; r++)
            out[r] = dot_q4_k(W->cols, W->data + (size_t)r * W->row_bytes, x->xq, NULL);
        return;
    }
    int nsb = W->cols / 256;
    for (int r = r0; r < r1; r++) {
        const gw_blk_q4_k *w = (const gw_blk_q4_k *)(W->data + (size_t)r * W->row_bytes);
        for (int c0 = 0; c0 < x->nb; c0 += PR) {
            int nc = x->nb - c0 < PR ? x->nb - c0 : PR;
            float s[PR] = {0};
            for (int b = 0; b < nsb; b++) {
                float d = gw_h2f(w[b].d), dmin = gw_h2f(w[b].dmin);
                uint8_t sc[8], mn[8], q[256];
                for (int j = 0; j < 8; j++)
                    gw_q4k_scale_min(j, w[b].scales, &sc[j], &mn[j]);
                for (int j = 0; j < 4; j++)
                    for (int l = 0; l < 32; l++) {
                        q[64 * j + l] = w[b].qs[32 * j + l] & 15;
                        q[64 * j + 32 + l] = w[b].qs[32 * j + l] >> 4;
                    }
                for (int c = 0; c < nc; c++) {
                    const gw_q8 *y = x->xq + (size_t)(c0 + c) * x->xq_stride + 8 * b;
                    for (int j = 0; j < 4; j++) {
                        const uint8_t *q0 = q + 64 * j, *q1 = q0 + 32;
                        int s0 = 0, s1 = 0;
                        for (int l = 0; l < 32; l++) {
                            s0 += q0[l] * y[2 * j].qs[l];
                            s1 += q1[l] * y[2 * j + 1].qs[l];
                        }
                        s[c] += d * (sc[2 * j] * (float)s0 * y[2 * j].d +
                                     sc[2 * j + 1] * (float)s1 * y[2 * j + 1].d) -
                                dmin * (mn[2 * j] * y[2 * j].s + mn[2 * j + 1] * y[2 * j + 1].s);
                    }
                }
            }
            for (int c = 0; c < nc; c++)
                out[(size_t)(c0 + c) * out_stride + r] = s[c];
        }
    }
}

/* Q6_K: the block's 256 six-bit values expanded once (q[h][k][l] is what
 * dot_q6_k calls q1..q4 for k = 0..3), then its expression per row. Taken
 * for one row too: the two 16-element sums as separate loops vectorize,
 * dot_q6_k's interleaved ones do not (13 times faster here). */
static void rows_q6_k(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride, int r0,
                      int r1)
{
    int nsb = W->cols / 256;
    for (int r = r0; r < r1; r++) {
        const gw_blk_q6_k *w = (const gw_blk_q6_k *)(W->data + (size_t)r * W->row_bytes);
        for (int c0 = 0; c0 < x->nb; c0 += PR) {
            int nc = x->nb - c0 < PR ? x->nb - c0 : PR;
            float s[PR] = {0};
            for (int b = 0; b < nsb; b++) {
                float d = gw_h2f(w[b].d);
                int8_t q[2][4][32];
                for (int h = 0; h < 2; h++) {
                    const uint8_t *ql = w[b].ql + 64 * h, *qh = w[b].qh + 32 * h;
                    for (int l = 0; l < 32; l++) {
                        q[h][0][l] = (int8_t)(((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32);
                        q[h][1][l] = (int8_t)(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
                        q[h][2][l] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
                        q[h][3][l] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
                    }
                }
                for (int c = 0; c < nc; c++) {
                    const gw_q8 *y = x->xq + (size_t)(c0 + c) * x->xq_stride + 8 * b;
                    for (int h = 0; h < 2; h++) {
                        const int8_t *sc = w[b].scales + 8 * h;
                        const gw_q8 *yh = y + 4 * h;
                        for (int k = 0; k < 4; k++) {
                            int lo = 0, hi = 0; /* the two 16-element sub-blocks */
                            for (int l = 0; l < 16; l++) {
                                lo += q[h][k][l] * yh[k].qs[l];
                                hi += q[h][k][l + 16] * yh[k].qs[l + 16];
                            }
                            s[c] += d * yh[k].d * (float)(sc[2 * k] * lo + sc[2 * k + 1] * hi);
                        }
                    }
                }
            }
            for (int c = 0; c < nc; c++)
                out[(size_t)(c0 + c) * out_stride + r] = s[c];
        }
    }
}

gw_rows_fn gw_rows_portable_for(uint32_t type)
{
    switch (type) {
    case GW_T_Q4_K:
        return rows_q4_k;
    case GW_T_Q6_K:
        return rows_q6_k;
    default:
        return NULL;
    }
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

void gw_softmax_h_libm(float *x, int n, uint16_t *y)
{
    float max = x[0];
    for (int i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        y[i] = gw_f32_to_fp16(x[i] * inv);
}

void gw_silu_mul_libm(float *h, const float *u, int n)
{
    for (int i = 0; i < n; i++)
        h[i] = h[i] / (1.0f + expf(-h[i])) * u[i];
}

int gw_type_uses_q8(uint32_t type)
{
    return type != GW_T_F32 && type != GW_T_F16 && type != GW_T_BF16;
}

const gw_attn_kernels gw_attn_portable = {
    .dot_hh = {dot_hh_portable, dot_hh16_portable},
    .attn_v = {attn_v_portable, attn_v16_portable},
    .f32_to_f16 = f32_to_f16_portable,
    .softmax_h = gw_softmax_h_libm,
    .silu_mul = gw_silu_mul_libm,
};

/* ---- the SIMD level ---- */

#ifdef GW_HAVE_X86
int gw_simd_cpu_max(int *vnni)
{
    __builtin_cpu_init();
    /* f16c from CPUID leaf 1 (ECX bit 29): clang before 15 has no "f16c"
     * for __builtin_cpu_supports, and the tree must build with clang
     * (tests/fuzz/). __builtin_cpu_supports also checks that the OS saves
     * the registers (XCR0), which a bare CPUID bit does not say. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl");
    if (vnni)
        *vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    return avx512 ? GW_SIMD_AVX512 : avx2 ? GW_SIMD_AVX2 : GW_SIMD_PORTABLE;
}
#else
int gw_simd_cpu_max(int *vnni)
{
    if (vnni)
        *vnni = 0;
    return GW_SIMD_PORTABLE;
}
#endif

/* The level in force and whether level 2 uses VNNI: level | vnni << 8, one
 * word so that no reader sees a level with another level's vnni; -1: not
 * decided yet (the first use reads the CPU and the environment). Relaxed:
 * every thread computes the same answer, and the value is only changed by
 * gw_simd_set between generations. */
static _Atomic int simd_state = -1;

/* level < 0: the best level the CPU has, capped by GW_SIMD=0|1|2 (0
 * portable, 1 AVX2, 2 AVX-512; anything else in it is ignored), and 0 when
 * GW_NO_AVX2 is set to anything but 0 (its meaning before AVX-512).
 * level >= 0: that level, or the best below it that the CPU has. */
int gw_simd_set(int level)
{
    int vnni, max = gw_simd_cpu_max(&vnni);
    if (level < 0) {
        const char *no_avx2 = getenv("GW_NO_AVX2"), *cap = getenv("GW_SIMD");
        level = max;
        if (cap && cap[0] >= '0' && cap[0] <= '2' && !cap[1])
            level = cap[0] - '0';
        if (no_avx2 && *no_avx2 && *no_avx2 != '0')
            level = GW_SIMD_PORTABLE;
    }
    if (level > max)
        level = max;
    atomic_store_explicit(&simd_state, level | vnni << 8, memory_order_relaxed);
    return level;
}

static int simd_state_now(void)
{
    int s = atomic_load_explicit(&simd_state, memory_order_relaxed);
    if (s < 0) {
        gw_simd_set(-1);
        s = atomic_load_explicit(&simd_state, memory_order_relaxed);
    }
    return s;
}

int gw_simd_get(void)
{
    return simd_state_now() & 0xff;
}

/* ---- dispatch ---- */

gw_dot_fn gw_dot_at(int level, uint32_t type)
{
    if (gw_type_packs(type)) /* one row: the order is the kernel (packed.c) */
        return gw_dot_portable_for(type);
    return level == GW_SIMD_PORTABLE ? gw_dot_portable_for(type) : gw_dot_avx2_for(type);
}

gw_dot_fn gw_dot_for(uint32_t type)
{
    return gw_dot_at(simd_state_now() & 0xff, type);
}

void gw_mat_rows_at(int level, int vnni, const gw_mat *W, const gw_q8 *xq, size_t xq_stride,
                    const float *xf, size_t xf_stride, int nb, float *out, size_t out_stride,
                    int r0, int r1)
{
    if (nb <= 0 || r0 >= r1)
        return;
    if (W->packed) {
        gw_pk_args a = {.W = W,
                        .xq = xq,
                        .xq_stride = xq_stride,
                        .nb = nb,
                        .out = out,
                        .out_stride = out_stride,
                        .r0 = r0,
                        .r1 = r1};
        gw_pk_rows_at(level, vnni, &a);
        return;
    }
    gw_rows_fn rows = gw_rows_portable_for(W->type); /* Q4_K, Q6_K: the only ones, every level */
    gw_batch x = {.xq = xq, .xq_stride = xq_stride, .xf = xf, .xf_stride = xf_stride, .nb = nb};
    if (rows) {
        rows(W, &x, out, out_stride, r0, r1);
        return;
    }
    /* the other types, and Q4_0, Q4_1 and Q8_0 not packed (tests): row by row */
    gw_dot_fn dot = gw_dot_at(level, W->type);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = W->data + (size_t)r * W->row_bytes;
        for (int b = 0; b < nb; b++)
            out[(size_t)b * out_stride + r] =
                dot(W->cols, row, xq + (size_t)b * xq_stride, xf + (size_t)b * xf_stride);
    }
}

void gw_mat_rows(const gw_mat *W, const gw_q8 *xq, size_t xq_stride, const float *xf,
                 size_t xf_stride, int nb, float *out, size_t out_stride, int r0, int r1)
{
    int s = simd_state_now();
    gw_mat_rows_at(s & 0xff, s >> 8, W, xq, xq_stride, xf, xf_stride, nb, out, out_stride, r0, r1);
}

void gw_quantize_q8(const float *x, gw_q8 *y, int n)
{
    if (gw_simd_get() >= GW_SIMD_AVX512)
        gw_quantize_q8_avx512(x, y, n);
    else
        gw_quantize_q8_portable(x, y, n);
}

int32_t gw_argmax_portable(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int32_t gw_argmax(const float *x, int n)
{
    return gw_simd_get() >= GW_SIMD_AVX512 ? gw_argmax_avx512(x, n) : gw_argmax_portable(x, n);
}

static const gw_attn_kernels *attn_now(void)
{
    switch (gw_simd_get()) {
    case GW_SIMD_PORTABLE:
        return &gw_attn_portable;
    case GW_SIMD_AVX2:
        return gw_attn_avx2();
    default:
        return gw_attn_avx512();
    }
}

void gw_dot_keys_at(const gw_attn_kernels *ks, int batched, int n, const uint16_t *k,
                    size_t k_stride, int n_keys, const uint16_t *q, float scale, float *out)
{
    gw_dot_hh_fn dot = ks->dot_hh[batched != 0];
    for (int j = 0; j < n_keys; j++)
        out[j] = dot(n, k + (size_t)j * k_stride, q) * scale;
}

void gw_dot_keys(int batched, int n, const uint16_t *k, size_t k_stride, int n_keys, int readable,
                 const uint16_t *q, const uint16_t *const pf[2], float scale, float *out)
{
    if (gw_simd_get() >= GW_SIMD_AVX512)
        gw_dot_keys_avx512(batched, n, k, k_stride, n_keys, readable, q, pf, scale, out);
    else
        gw_dot_keys_at(attn_now(), batched, n, k, k_stride, n_keys, q, scale, out);
}

gw_dot_hh_fn gw_dot_hh_for(int batched)
{
    return attn_now()->dot_hh[batched != 0];
}

gw_attn_v_fn gw_attn_v_for(int batched)
{
    return attn_now()->attn_v[batched != 0];
}

gw_f16_row_fn gw_f32_to_f16_row_for(void)
{
    return attn_now()->f32_to_f16;
}

gw_softmax_h_fn gw_softmax_h_for(void)
{
    return attn_now()->softmax_h;
}

gw_silu_mul_fn gw_silu_mul_for(void)
{
    return attn_now()->silu_mul;
}
