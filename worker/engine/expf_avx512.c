/* expf_avx512.c - level 2's softmax and SiLU (engine.h: softmax_h,
 * silu_mul) over glibc's expf computed 16 lanes at a time, bit for bit.
 * Built like the other kernels (-ffp-contract=off, worker/engine/
 * CMakeLists.txt); only the functions carry the AVX-512 target
 * attributes, so the object runs on any x86-64 as long as gw_simd_set has
 * checked the CPU. */
#include "engine.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define L2_TARGET "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define L2 __attribute__((target(L2_TARGET)))
#define L2_INLINE __attribute__((target(L2_TARGET), always_inline)) static inline

/* The upper half of a 512-bit vector. */
L2_INLINE __m256 hi256(__m512 v)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

/* ---- glibc's expf, 16 lanes ----
 *
 * The algorithm of glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, from
 * Arm's optimized-routines), in the same double operations, with the
 * multiply-adds that glibc's FMA build (__expf_fma, what x86-64 CPUs with
 * FMA run) contracts: x * 32 / ln 2 = k + r, k rounded to an integer by
 * adding 1.5 * 2^52 (the product fused into that addition and into r's
 * subtraction, as the compiler fuses it there), 2^(k / 32) from a table of
 * 2^(i / 32) and k's upper bits added to its exponent, 2^(r / 32) by a
 * cubic. Same operations, same
 * bits: test_kernels compares it with expf on 2^24 inputs spread over all
 * floats, and tests/bench/expf_all checks every float. Lanes with |x| >=
 * 88 or NaN (glibc's own slow path: overflow, underflow, infinities) call
 * expf itself. */
#define EXPF_INVLN2N (0x1.71547652b82fep+0 * 32)
#define EXPF_SHIFT 0x1.8p+52
#define EXPF_C0 (0x1.c6af84b912394p-5 / 32 / 32 / 32)
#define EXPF_C1 (0x1.ebfce50fac4f3p-3 / 32 / 32)
#define EXPF_C2 (0x1.62e42ff0c52d6p-1 / 32)

/* The bits of 2^(i / 32) rounded to a double, less i << 47 (so that adding
 * k << 47 puts k / 32's integer part in the exponent). */
static const uint64_t expf_tab[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};

/* 8 lanes, in doubles; x within glibc's fast path (|x| < 88). */
L2_INLINE __m256 expf8_l2(__m256 x)
{
    __m512d xd = _mm512_cvtps_pd(x), c = _mm512_set1_pd(EXPF_INVLN2N);
    __m512d kd = _mm512_fmadd_pd(c, xd, _mm512_set1_pd(EXPF_SHIFT));
    __m512i ki = _mm512_castpd_si512(kd);
    __m512d r = _mm512_fmsub_pd(c, xd, _mm512_sub_pd(kd, _mm512_set1_pd(EXPF_SHIFT)));
    const __m512i *tab = (const __m512i *)expf_tab;
    __m512i lo =
        _mm512_permutex2var_epi64(_mm512_loadu_si512(tab), ki, _mm512_loadu_si512(tab + 1));
    __m512i hi =
        _mm512_permutex2var_epi64(_mm512_loadu_si512(tab + 2), ki, _mm512_loadu_si512(tab + 3));
    __m512i t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), lo, hi);
    __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)));
    __m512d p = _mm512_fmadd_pd(_mm512_set1_pd(EXPF_C0), r, _mm512_set1_pd(EXPF_C1));
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(_mm512_set1_pd(EXPF_C2), r, _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(p, r2, y);
    return _mm512_cvtpd_ps(_mm512_mul_pd(y, s));
}

L2_INLINE __m512 expf16_l2(__m512 x)
{
    __m512d lo = _mm512_castps_pd(_mm512_castps256_ps512(expf8_l2(_mm512_castps512_ps256(x))));
    __m512 e = _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(expf8_l2(hi256(x))), 1));
    /* |x| >= 88 or NaN: the top 12 bits of |x| at least 88's */
    __m512i ax = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff));
    __mmask16 slow = _mm512_cmpge_epu32_mask(ax, _mm512_set1_epi32(0x42b00000));
    if (__builtin_expect(slow != 0, 0)) {
        float xs[16], es[16];
        _mm512_storeu_ps(xs, x);
        _mm512_storeu_ps(es, e);
        for (int l = 0; l < 16; l++)
            if (slow >> l & 1)
                es[l] = expf(xs[l]);
        e = _mm512_loadu_ps(es);
    }
    return e;
}

L2_INLINE __mmask16 tail_mask(int m)
{
    return m >= 16 ? 0xffff : (__mmask16)((1u << m) - 1);
}

L2 void gw__expf_avx512(const float *x, float *y, int n)
{
    for (int i = 0; i < n; i += 16)
        _mm512_mask_storeu_ps(y + i, tail_mask(n - i),
                              expf16_l2(_mm512_maskz_loadu_ps(tail_mask(n - i), x + i)));
}

/* gw_softmax_h_libm's operations, 16 lanes where they are independent: the
 * maximum (vmaxps keeps its second operand when the first is a NaN, as `x
 * > max` skips it; a NaN x[0], which the loop keeps as the max, goes the
 * scalar way), the exponentials, the scaling and rounding; the double sum
 * stays one chain in order of i, as the C library version adds. */
L2 void gw_softmax_h_avx512(float *x, int n, uint16_t *y)
{
    if (x[0] != x[0]) {
        gw_softmax_h_libm(x, n, y);
        return;
    }
    /* lanes past n read x[0] */
    __m512 m = _mm512_set1_ps(x[0]);
    for (int i = 0; i < n; i += 16)
        m = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(x[0]), tail_mask(n - i), x + i), m);
    float max = _mm512_reduce_max_ps(m);
    __m512 vm = _mm512_set1_ps(max);
    double sum = 0;
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        /* lanes past n: exp(max - max) */
        __m512 e = expf16_l2(_mm512_sub_ps(_mm512_mask_loadu_ps(vm, k, x + i), vm));
        _mm512_mask_storeu_ps(x + i, k, e);
        for (int t = i; t < i + 16 && t < n; t++)
            sum += (double)x[t];
    }
    __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm256_mask_storeu_epi16(
            y + i, k,
            _mm512_cvtps_ph(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv),
                            _MM_FROUND_TO_NEAREST_INT));
    }
}

L2 void gw_silu_mul_avx512(float *h, const float *u, int n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(k, h + i);
        __m512 e = expf16_l2(_mm512_castsi512_ps(
            _mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32((int)0x80000000u))));
        _mm512_mask_storeu_ps(h + i, k,
                              _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)),
                                            _mm512_maskz_loadu_ps(k, u + i)));
    }
}

#else /* not x86: gw_simd_set never picks level 2; the C library's */

void gw__expf_avx512(const float *x, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = expf(x[i]);
}

void gw_softmax_h_avx512(float *x, int n, uint16_t *y)
{
    gw_softmax_h_libm(x, n, y);
}

void gw_silu_mul_avx512(float *h, const float *u, int n)
{
    gw_silu_mul_libm(h, u, n);
}
#endif
