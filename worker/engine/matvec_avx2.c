/* matvec_avx2.c: the AVX2 (+FMA, F16C) kernels, level 1 of gw_simd_set:
 * single-row dot products for F32 and F16 and the attention kernels (the
 * quantized types' products are packed_x86.c's for Q4_0, Q4_1 and Q8_0,
 * the portable ones for the others). Each
 * gives the bits of the portable kernel it replaces (matvec.c says why
 * that matters), and the file is compiled for any x86-64: only these
 * functions carry the target attribute, and gw_simd_set checks the CPU
 * before they are chosen. */
#include "engine.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum256(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
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

gw_dot_fn gw_dot_avx2_for(uint32_t type)
{
    switch (type) {
    case GW_T_F32:
        return dot_f32_avx2;
    case GW_T_F16:
        return dot_f16_avx2;
    default:
        return gw_dot_portable_for(type);
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

const gw_attn_kernels *gw_attn_avx2(void)
{
    return &gw_attn_portable;
}
#endif
