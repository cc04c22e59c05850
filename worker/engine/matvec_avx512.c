/* matvec_avx512.c: the AVX-512 kernels, level 2 of gw_simd_set (F + BW +
 * VL): attention, the activation quantizer and the argmax. Their bits are
 * level 1's (matvec.c says why that matters): every float operation of an
 * output is level 1's, in its order. The quantized products are
 * packed_x86.c's (Q4_0, Q4_1, Q8_0) and level 1's (the others). Only the
 * functions carry the target attributes: the object runs on any x86-64 as
 * long as gw_simd_set has checked the CPU. */
#include "engine.h"

#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define L2_TARGET "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define L2 __attribute__((target(L2_TARGET)))
#define L2_INLINE __attribute__((target(L2_TARGET), always_inline)) static inline
/* The key-scoring loops over keys and lanes, fully unrolled
 * so that the accumulators stay in registers (gcc -O2 and clang keep such
 * loops, with the accumulators in memory). */
#if defined(__clang__)
#define GW_UNROLL _Pragma("clang loop unroll(full)")
#define GW_UNROLL16 _Pragma("clang loop unroll(full)")
#else
#define GW_UNROLL _Pragma("GCC unroll 8")
#define GW_UNROLL16 _Pragma("GCC unroll 16")
#endif

/* As matvec_avx2.c's: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). */
L2_INLINE float hsum256(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* The upper half of a 512-bit vector. */
L2_INLINE __m256 hi256(__m512 v)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

/* ---- attention on halves: the portable kernels' lanes (matvec.c), 16
 * at a time; the operations of each lane and the pairing of the
 * reductions are matvec_avx2.c's ---- */

#define LDH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))

/* r16 of the 16 lanes of v: halves of 8, then hsum256. */
L2_INLINE float r16_l2(__m512 v)
{
    return hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), hi256(v)));
}

L2 static float dot_hh_l2(int n, const uint16_t *x, const uint16_t *y)
{
    __m512 a[4]; /* lane 16r + j of the 64 is a[r][j] */
    for (int r = 0; r < 4; r++)
        a[r] = _mm512_setzero_ps();
    int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int r = 0; r < 4; r++)
            a[r] = _mm512_fmadd_ps(LDH(x + i + 16 * r), LDH(y + i + 16 * r), a[r]);
    /* lane k of 16: (k + 32 k) + (16 + k + 48 + k), as r64 folds them */
    double s = r16_l2(_mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3])));
    for (int i = np; i < n; i++)
        s += (double)(gw_h2f(x[i]) * gw_h2f(y[i]));
    return (float)s;
}

L2 static float dot_hh16_l2(int n, const uint16_t *x, const uint16_t *y)
{
    if (n % 16)
        return dot_hh_l2(n, x, y);
    __m512 a = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16)
        a = _mm512_fmadd_ps(LDH(x + i), LDH(y + i), a);
    return r16_l2(a);
}

/* Asks the caches for row j of each of pf's runs (gw_dot_keys). */
L2_INLINE void ask_rows(const uint16_t *const pf[2], int j, size_t k_stride, int n)
{
    for (int p = 0; p < 2; p++)
        if (pf[p])
            for (int o = 0; o < n; o += 32)
                _mm_prefetch((const char *)(pf[p] + (size_t)j * k_stride + o), _MM_HINT_T0);
}

/* dot_hh_l2 of 16 keys (n % 64 == 0) with one query, times scale: each
 * key's 64 lanes folded as dot_hh_l2 folds them (lanes r and r + 32,
 * r + 16 and r + 48, then the two), and then the 16-lane sum that r16_l2
 * takes (distances 8, 4, 2, 1) done for the 16 keys together, each
 * addition the one r16_l2 makes: the bits of dot_hh_l2(n, key, q) *
 * scale. out[j] for key j, at k + j * k_stride. The batch kernel's
 * (dot_hh16_l2, n % 16 == 0) is the same with each key's one chain of
 * 16 lanes in place of the 64 folded. */
L2_INLINE void dot_keys16_n(int n, const uint16_t *k, size_t k_stride, const uint16_t *q,
                            const uint16_t *const pf[2], __m512 *c)
{
    __m512 qv[4];
    GW_UNROLL
    for (int r = 0; r < 4; r++)
        qv[r] = LDH(q + 16 * r);
    GW_UNROLL16
    for (int j = 0; j < 16; j++) {
        const uint16_t *x = k + (size_t)j * k_stride;
        ask_rows(pf, j, k_stride, n);
        __m512 a[4];
        GW_UNROLL
        for (int r = 0; r < 4; r++)
            a[r] = _mm512_fmadd_ps(LDH(x + 16 * r), qv[r], _mm512_setzero_ps());
        for (int i = 64; i < n; i += 64)
            GW_UNROLL
        for (int r = 0; r < 4; r++)
            a[r] = _mm512_fmadd_ps(LDH(x + i + 16 * r), LDH(q + i + 16 * r), a[r]);
        c[j] = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
    }
}

/* dot_keys16_n's sums for the batch kernel: key j's 16 lanes, one chain
 * of multiply-adds in order of i from zero, as dot_hh16_l2 makes it. The
 * query's first 64 halves converted once for the 16 keys. */
L2_INLINE void dot_keys16_b(int n, const uint16_t *k, size_t k_stride, const uint16_t *q,
                            const uint16_t *const pf[2], __m512 *c)
{
    __m512 qv[4];
    int nq = n < 64 ? n / 16 : 4;
    GW_UNROLL
    for (int r = 0; r < 4; r++)
        qv[r] = r < nq ? LDH(q + 16 * r) : _mm512_setzero_ps();
    GW_UNROLL16
    for (int j = 0; j < 16; j++) {
        const uint16_t *x = k + (size_t)j * k_stride;
        ask_rows(pf, j, k_stride, n);
        __m512 a = _mm512_setzero_ps();
        GW_UNROLL
        for (int r = 0; r < 4; r++)
            if (r < nq)
                a = _mm512_fmadd_ps(LDH(x + 16 * r), qv[r], a);
        for (int i = 64; i < n; i += 16)
            a = _mm512_fmadd_ps(LDH(x + i), LDH(q + i), a);
        c[j] = a;
    }
}

L2 static void dot_keys16_l2(int batched, int n, const uint16_t *k, size_t k_stride,
                             const uint16_t *q, const uint16_t *const pf[2], float scale,
                             float *out)
{
    __m512 c[16];
    if (batched)
        dot_keys16_b(n, k, k_stride, q, pf, c);
    else
        dot_keys16_n(n, k, k_stride, q, pf, c);
    /* distance 8: key j in lanes 0..7, key j + 8 in lanes 8..15 */
    __m512 p[8], t4[4], t2[2];
    GW_UNROLL
    for (int j = 0; j < 8; j++)
        p[j] = _mm512_add_ps(_mm512_shuffle_f32x4(c[j], c[j + 8], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(c[j], c[j + 8], _MM_SHUFFLE(3, 2, 3, 2)));
    /* distance 4: 128-bit lanes hold keys j, j + 8, j + 4, j + 12 */
    GW_UNROLL
    for (int j = 0; j < 4; j++)
        t4[j] = _mm512_add_ps(_mm512_shuffle_f32x4(p[j], p[j + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(p[j], p[j + 4], _MM_SHUFFLE(3, 1, 3, 1)));
    /* distance 2, then 1, inside the 128-bit lanes */
    GW_UNROLL
    for (int j = 0; j < 2; j++)
        t2[j] = _mm512_add_ps(_mm512_shuffle_ps(t4[j], t4[j + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(t4[j], t4[j + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 sum = _mm512_add_ps(_mm512_shuffle_ps(t2[0], t2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_ps(t2[0], t2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* lane 4L + e holds key {0, 2, 1, 3}[e] + {0, 8, 4, 12}[L] */
    const __m512i order = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, _mm512_mul_ps(sum, _mm512_set1_ps(scale))));
}

L2 void gw_dot_keys_avx512(int batched, int n, const uint16_t *k, size_t k_stride, int n_keys,
                           int readable, const uint16_t *q, const uint16_t *const pf[2],
                           float scale, float *out)
{
    int j = 0;
    batched = batched != 0;
    if (n % (batched ? 16 : 64) == 0) {
        for (; j < n_keys && j + 16 <= readable; j += 16) {
            const uint16_t *p16[2];
            for (int p = 0; p < 2; p++)
                p16[p] = pf && pf[p] ? pf[p] + (size_t)j * k_stride : NULL;
            if (j + 16 <= n_keys) {
                dot_keys16_l2(batched, n, k + (size_t)j * k_stride, k_stride, q, p16, scale,
                              out + j);
                continue;
            }
            float all[16];
            dot_keys16_l2(batched, n, k + (size_t)j * k_stride, k_stride, q, p16, scale, all);
            memcpy(out + j, all, (size_t)(n_keys - j) * sizeof(float));
            return;
        }
    }
    for (; j < n_keys; j++)
        out[j] = (batched ? dot_hh16_l2 : dot_hh_l2)(n, k + (size_t)j * k_stride, q) * scale;
}

/* attn_v with nl lanes (64 or 16), position t's values at vb[t / blk] +
 * (t % blk) * v_stride, hd % 16 == 0. Lane j is the sum over t = j, j +
 * nl, ... < n_pos of V[t] * a[t], in order of t, each term one fused
 * multiply-add onto the lane (its first onto zero, as the portable
 * kernel's zeroed lanes give it); a lane without positions is zero. The
 * operations on each lane are the portable kernel's; only their
 * interleaving differs: lane by lane, in registers, instead of position
 * by position through memory. The lanes are then folded as r64 and r16
 * fold them (matvec.c). */

/* nj lanes j0, j0 + dj, ... over output dimensions [d0, d0 + 16 nc) into
 * acc[l][c]. nc, nj and blk are constants where this is inlined. */
L2_INLINE void lane_sums(int nc, int nj, int dj, int nl, int j0, int n_pos, const uint16_t *a,
                         const uint16_t *const *vb, int blk, size_t vs, int d0, __m512 acc[4][4])
{
    GW_UNROLL
    for (int l = 0; l < nj; l++)
        GW_UNROLL
    for (int c = 0; c < nc; c++)
        acc[l][c] = _mm512_setzero_ps();
    for (int t0 = j0; t0 < n_pos; t0 += nl)
        GW_UNROLL
    for (int l = 0; l < nj; l++) {
        int t = t0 + l * dj;
        if (t < n_pos) {
            const uint16_t *v = vb[t / blk] + (size_t)(t % blk) * vs + d0;
            __m512 w = _mm512_set1_ps(_cvtsh_ss(a[t]));
            GW_UNROLL
            for (int c = 0; c < nc; c++)
                acc[l][c] = _mm512_fmadd_ps(LDH(v + 16 * c), w, acc[l][c]);
        }
    }
}

/* t3[k] = c[k] + c[k + 8] for the d-group [d0, d0 + 16 nc): c[k] the sum
 * r64 makes of lanes k, 32 + k, 16 + k, 48 + k (nl 64), or lane k (16). */
L2_INLINE void lane_pairs(int nc, int nl, int n_pos, const uint16_t *a, const uint16_t *const *vb,
                          int blk, size_t vs, int d0, __m512 t3[8][4])
{
    __m512 acc[4][4];
    if (nl == 16) {
        for (int k = 0; k < 8; k++) {
            lane_sums(nc, 2, 8, 16, k, n_pos, a, vb, blk, vs, d0, acc);
            GW_UNROLL
            for (int c = 0; c < nc; c++)
                t3[k][c] = _mm512_add_ps(acc[0][c], acc[1][c]);
        }
        return;
    }
    __m512 ck[8][4];
    for (int k = 0; k < 16; k++) {
        lane_sums(nc, 4, 16, 64, k, n_pos, a, vb, blk, vs, d0, acc);
        GW_UNROLL
        for (int c = 0; c < nc; c++) {
            __m512 s = _mm512_add_ps(_mm512_add_ps(acc[0][c], acc[2][c]),
                                     _mm512_add_ps(acc[1][c], acc[3][c]));
            if (k < 8)
                ck[k][c] = s;
            else
                t3[k - 8][c] = _mm512_add_ps(ck[k - 8][c], s);
        }
    }
}

L2_INLINE void attn_v_group_l2(int nc, int nl, int n_pos, const uint16_t *a,
                               const uint16_t *const *vb, int blk, size_t vs, int d0, float *out)
{
    __m512 t3[8][4];
    lane_pairs(nc, nl, n_pos, a, vb, blk, vs, d0, t3);
    GW_UNROLL
    for (int c = 0; c < nc; c++) {
        __m512 t60 = _mm512_add_ps(t3[0][c], t3[4][c]), t61 = _mm512_add_ps(t3[1][c], t3[5][c]);
        __m512 t62 = _mm512_add_ps(t3[2][c], t3[6][c]), t63 = _mm512_add_ps(t3[3][c], t3[7][c]);
        _mm512_storeu_ps(out + d0 + 16 * c,
                         _mm512_add_ps(_mm512_add_ps(t60, t62), _mm512_add_ps(t61, t63)));
    }
}

/* The output dimensions 64 at a time, then the 16s left. */
L2_INLINE void attn_v_blocks_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *const *vb,
                                int blk, size_t v_stride, float *out, int nl)
{
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64)
        attn_v_group_l2(4, nl, n_pos, a, vb, blk, v_stride, d0, out);
    for (; d0 < hd; d0 += 16)
        attn_v_group_l2(1, nl, n_pos, a, vb, blk, v_stride, d0, out);
}

L2_INLINE void attn_v_lanes_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                               size_t v_stride, float *lanes, float *out, int nl)
{
    if (hd % 16) {
        gw_attn_avx2()->attn_v[nl == 16](hd, n_pos, a, v, v_stride, lanes, out);
        return;
    }
    attn_v_blocks_l2(hd, n_pos, a, &v, n_pos > 0 ? n_pos : 1, v_stride, out, nl);
}

L2 void gw_attn_v_paged_avx512(int batched, int hd, int n_pos, const uint16_t *a,
                               const uint16_t *const *vb, int blk, size_t v_stride, float *out)
{
    if (blk == GW_KV_BLOCK) /* a constant: t / blk a shift */
        attn_v_blocks_l2(hd, n_pos, a, vb, GW_KV_BLOCK, v_stride, out, batched ? 16 : 64);
    else
        attn_v_blocks_l2(hd, n_pos, a, vb, blk, v_stride, out, batched ? 16 : 64);
}
#undef LDH

L2 static void attn_v_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *v, size_t v_stride,
                         float *lanes, float *out)
{
    attn_v_lanes_l2(hd, n_pos, a, v, v_stride, lanes, out, 64);
}

L2 static void attn_v16_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *v, size_t v_stride,
                           float *lanes, float *out)
{
    attn_v_lanes_l2(hd, n_pos, a, v, v_stride, lanes, out, 16);
}

L2 static void f32_to_f16_l2(const float *x, uint16_t *y, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = gw_f32_to_fp16(x[i]);
}

/* The first index of the largest value, as the scalar loop `if (x[i] >
 * x[best]) best = i` finds it: each of 16 lanes keeps its largest value
 * (x[0] to start with) and the first index that had it, by ordered
 * greater-than (a NaN never wins, and nothing beats a NaN x[0]); then the
 * lanes holding the overall largest give the smallest of their indices. */
L2 int32_t gw_argmax_avx512(const float *x, int n)
{
    if (n < 32) {
        int32_t best = 0;
        for (int i = 1; i < n; i++)
            if (x[i] > x[best])
                best = i;
        return best;
    }
    __m512 m = _mm512_set1_ps(x[0]);
    __m512i idx = _mm512_setzero_si512(),
            cur = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    int i = 0;
    for (; i + 16 <= n; i += 16, cur = _mm512_add_epi32(cur, step)) {
        __m512 v = _mm512_loadu_ps(x + i);
        __mmask16 gt = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, gt, v);
        idx = _mm512_mask_mov_epi32(idx, gt, cur);
    }
    float mv[16];
    int32_t iv[16];
    _mm512_storeu_ps(mv, m);
    _mm512_storeu_si512(iv, idx);
    int32_t best = iv[0];
    float bv = mv[0];
    for (int l = 1; l < 16; l++)
        if (mv[l] > bv || (mv[l] == bv && iv[l] < best))
            bv = mv[l], best = iv[l];
    for (; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* gw_quantize_q8, 16 values at a time: the same operations on each value
 * (|x|, the maximum that passes NaNs over, x * (127 / amax) rounded by the
 * 1.5 * 2^23 addition), so the same bits (test_kernels). */
L2 void gw_quantize_q8_avx512(const float *x, gw_q8 *y, int n)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    for (int b = 0; b < n / 32; b++, x += 32) {
        __m512 a = _mm512_loadu_ps(x), c = _mm512_loadu_ps(x + 16);
        /* vmaxps(v, amax): amax where v is a NaN, as the scalar loop */
        __m512 am = _mm512_max_ps(_mm512_abs_ps(a), _mm512_setzero_ps());
        am = _mm512_max_ps(_mm512_abs_ps(c), am);
        __m256 h = _mm256_max_ps(_mm512_castps512_ps256(am), hi256(am));
        __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        q = _mm_max_ps(q, _mm_movehl_ps(q, q));
        q = _mm_max_ss(q, _mm_movehdup_ps(q));
        float amax = _mm_cvtss_f32(q);
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i qa =
            _mm512_cvttps_epi32(_mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(a, vid), magic), magic));
        __m512i qc =
            _mm512_cvttps_epi32(_mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(c, vid), magic), magic));
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtepi32_epi8(qc));
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qc));
        /* d and d * sum through halves, both at once (F16C rounds to
         * nearest even, as gw_f32_to_fp16) */
        __m128 ds = _mm_cvtph_ps(
            _mm_cvtps_ph(_mm_setr_ps(d, d * (float)sum, 0, 0), _MM_FROUND_TO_NEAREST_INT));
        y[b].d = _mm_cvtss_f32(ds);
        y[b].s = _mm_cvtss_f32(_mm_movehdup_ps(ds));
        y[b].sum = sum;
    }
}

static const gw_attn_kernels attn_l2 = {
    .dot_hh = {dot_hh_l2, dot_hh16_l2},
    .attn_v = {attn_v_l2, attn_v16_l2},
    .f32_to_f16 = f32_to_f16_l2,
    .softmax_h = gw_softmax_h_avx512, /* expf_avx512.c */
    .silu_mul = gw_silu_mul_avx512,
};

const gw_attn_kernels *gw_attn_avx512(void)
{
    return &attn_l2;
}

#else /* not x86: level 1's stand in (gw_simd_set never picks 2) */

const gw_attn_kernels *gw_attn_avx512(void)
{
    return gw_attn_avx2();
}

int32_t gw_argmax_avx512(const float *x, int n)
{
    return gw_argmax_portable(x, n);
}

void gw_dot_keys_avx512(int batched, int n, const uint16_t *k, size_t k_stride, int n_keys,
                        int readable, const uint16_t *q, const uint16_t *const pf[2], float scale,
                        float *out)
{
    (void)readable, (void)pf;
    gw_dot_keys_at(gw_attn_avx2(), batched, n, k, k_stride, n_keys, q, scale, out);
}

void gw_attn_v_paged_avx512(int batched, int hd, int n_pos, const uint16_t *a,
                            const uint16_t *const *vb, int blk, size_t v_stride, float *out)
{
    (void)batched, (void)hd, (void)n_pos, (void)a, (void)vb, (void)blk, (void)v_stride;
    (void)out;
    abort(); /* gw_simd_set never picks level 2 off x86 */
}

void gw_quantize_q8_avx512(const float *x, gw_q8 *y, int n)
{
    gw_quantize_q8_portable(x, y, n);
}

#endif
