/* vexp.h - the exponential of the softmax and SwiGLU kernels (matvec*.c
 * only: those files are built with -ffp-contract=off, so the scalar code
 * below rounds at every operation exactly as the SIMD lanes do, and every
 * level gives the same bits).
 *
 * exp(x) = 2^k * exp(r), k = round(x / ln 2), r = x - k ln 2 (ln 2 in two
 * parts, the first with 9 bits so k * GW_EXP_LN2_HI is exact), exp(r) by
 * Cephes' degree-7 polynomial for |r| <= ln 2 / 2 (within 2 ulp of expf
 * over the range: test_kernels), 2^k added to the exponent field. k is
 * kept in [-124, 127]: below GW_EXP_LO the result is 0 (also for NaN),
 * above GW_EXP_HI +inf. The softmax only takes x <= 0, SwiGLU exp(-g): a
 * 0 for x < -86 (e^-86 = 4.5e-38) changes neither. */
#ifndef GW_VEXP_H
#define GW_VEXP_H

#include <stdint.h>
#include <string.h>

#define GW_EXP_LO (-86.0f)
#define GW_EXP_HI 88.0f
#define GW_EXP_LOG2E 1.44269504088896341f
#define GW_EXP_MAGIC 12582912.0f /* 1.5 * 2^23: x + it rounds x to an integer */
#define GW_EXP_LN2_HI 0.693359375f
#define GW_EXP_LN2_LO (-2.12194440e-4f)
#define GW_EXP_P0 1.9875691500e-4f
#define GW_EXP_P1 1.3981999507e-3f
#define GW_EXP_P2 8.3334519073e-3f
#define GW_EXP_P3 4.1665795894e-2f
#define GW_EXP_P4 1.6666665459e-1f
#define GW_EXP_P5 5.0000001201e-1f

static inline float gw_vexp(float x)
{
    if (!(x >= GW_EXP_LO))
        return 0.0f;
    if (x > GW_EXP_HI)
        return __builtin_inff();
    float k = (x * GW_EXP_LOG2E + GW_EXP_MAGIC) - GW_EXP_MAGIC;
    float r = x - k * GW_EXP_LN2_HI;
    r = r - k * GW_EXP_LN2_LO;
    float p = GW_EXP_P0;
    p = p * r + GW_EXP_P1;
    p = p * r + GW_EXP_P2;
    p = p * r + GW_EXP_P3;
    p = p * r + GW_EXP_P4;
    p = p * r + GW_EXP_P5;
    float y = (p * (r * r) + r) + 1.0f;
    uint32_t u;
    memcpy(&u, &y, 4);
    u += (uint32_t)(int32_t)k << 23;
    memcpy(&y, &u, 4);
    return y;
}

/* The softmax's 16 lanes added as every level adds them: l and l + 8,
 * then + 4, + 2, + 1. */
static inline float gw_sum16(const float *l)
{
    float s8[8], s4[4];
    for (int j = 0; j < 8; j++)
        s8[j] = l[j] + l[j + 8];
    for (int j = 0; j < 4; j++)
        s4[j] = s8[j] + s8[j + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

#endif
