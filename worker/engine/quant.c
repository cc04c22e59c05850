/* quant.c: half-float conversion, dequantization of every weight type the
 * engine reads, and quantization of activations to Q8 blocks. */
#include "engine.h"

#include <errno.h>
#include <math.h>

float gw_fp16_table[65536];

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        float v = ldexpf((float)mant, -24); /* zero or subnormal */
        return sign ? -v : v;
    }
    if (exp == 31)
        u = sign | 0x7f800000u | (mant << 13);
    else
        u = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Filled before main: a table lookup is the fastest portable conversion. */
__attribute__((constructor)) static void fp16_table_init(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        gw_fp16_table[i] = half_to_float((uint16_t)i);
}

uint16_t gw_f32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int e = (int)((x >> 23) & 0xff);
    if (e == 0xff)
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int exp = e - 127 + 15;
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) { /* subnormal half, or zero */
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp), h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    /* round to nearest even; a carry into the exponent is still right */
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

float gw_fp16_to_f32(uint16_t h)
{
    return gw_fp16_table[h];
}

size_t gw_type_row_bytes(uint32_t type, uint64_t n)
{
    switch (type) {
    case GW_T_F32:
        return n * 4;
    case GW_T_F16:
    case GW_T_BF16:
        return n * 2;
    case GW_T_Q4_0:
        return n % 32 ? 0 : n / 32 * sizeof(gw_blk_q4_0);
    case GW_T_Q4_1:
        return n % 32 ? 0 : n / 32 * sizeof(gw_blk_q4_1);
    case GW_T_Q5_0:
        return n % 32 ? 0 : n / 32 * sizeof(gw_blk_q5_0);
    case GW_T_Q5_1:
        return n % 32 ? 0 : n / 32 * sizeof(gw_blk_q5_1);
    case GW_T_Q8_0:
        return n % 32 ? 0 : n / 32 * sizeof(gw_blk_q8_0);
    case GW_T_Q4_K:
        return n % 256 ? 0 : n / 256 * sizeof(gw_blk_q4_k);
    case GW_T_Q6_K:
        return n % 256 ? 0 : n / 256 * sizeof(gw_blk_q6_k);
    default:
        return 0;
    }
}

/* The 6-bit scale and min of sub-block j of a Q4_K block (ggml's
 * get_scale_min_k4). */
static void q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void gw_q4k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m)
{
    q4k_scale_min(j, scales, sc, m);
}

int gw_dequantize_row(uint32_t type, const void *src, float *dst, uint64_t n)
{
    const uint8_t *p = src;
    if (gw_type_row_bytes(type, n) == 0 && n != 0)
        return -EINVAL;
    switch (type) {
    case GW_T_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case GW_T_F16:
    case GW_T_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = type == GW_T_F16 ? gw_h2f(h) : gw_bf2f(h);
        }
        return 0;
    case GW_T_Q4_0:
        for (uint64_t b = 0; b < n / 32; b++, dst += 32) {
            const gw_blk_q4_0 *x = (const gw_blk_q4_0 *)p + b;
            float d = gw_h2f(x->d);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((x->qs[j] & 15) - 8) * d;
                dst[j + 16] = (float)((x->qs[j] >> 4) - 8) * d;
            }
        }
        return 0;
    case GW_T_Q4_1:
        for (uint64_t b = 0; b < n / 32; b++, dst += 32) {
            const gw_blk_q4_1 *x = (const gw_blk_q4_1 *)p + b;
            float d = gw_h2f(x->d), m = gw_h2f(x->m);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)(x->qs[j] & 15) * d + m;
                dst[j + 16] = (float)(x->qs[j] >> 4) * d + m;
            }
        }
        return 0;
    case GW_T_Q5_0:
    case GW_T_Q5_1:
        for (uint64_t b = 0; b < n / 32; b++, dst += 32) {
            const uint8_t *qs, *qhb;
            float d, m;
            int off;
            if (type == GW_T_Q5_0) {
                const gw_blk_q5_0 *x = (const gw_blk_q5_0 *)p + b;
                d = gw_h2f(x->d), m = 0, off = 16, qs = x->qs, qhb = x->qh;
            } else {
                const gw_blk_q5_1 *x = (const gw_blk_q5_1 *)p + b;
                d = gw_h2f(x->d), m = gw_h2f(x->m), off = 0, qs = x->qs, qhb = x->qh;
            }
            uint32_t qh;
            memcpy(&qh, qhb, 4);
            for (int j = 0; j < 16; j++) {
                int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
                int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                dst[j] = (float)(lo - off) * d + m;
                dst[j + 16] = (float)(hi - off) * d + m;
            }
        }
        return 0;
    case GW_T_Q8_0:
        for (uint64_t b = 0; b < n / 32; b++, dst += 32) {
            const gw_blk_q8_0 *x = (const gw_blk_q8_0 *)p + b;
            float d = gw_h2f(x->d);
            for (int j = 0; j < 32; j++)
                dst[j] = (float)x->qs[j] * d;
        }
        return 0;
    case GW_T_Q4_K:
        for (uint64_t b = 0; b < n / 256; b++) {
            const gw_blk_q4_k *x = (const gw_blk_q4_k *)p + b;
            float d = gw_h2f(x->d), dmin = gw_h2f(x->dmin);
            const uint8_t *q = x->qs;
            for (int j = 0; j < 4; j++, q += 32) {
                uint8_t sc, m;
                q4k_scale_min(2 * j, x->scales, &sc, &m);
                for (int l = 0; l < 32; l++)
                    *dst++ = d * sc * (float)(q[l] & 15) - dmin * m;
                q4k_scale_min(2 * j + 1, x->scales, &sc, &m);
                for (int l = 0; l < 32; l++)
                    *dst++ = d * sc * (float)(q[l] >> 4) - dmin * m;
            }
        }
        return 0;
    case GW_T_Q6_K:
        for (uint64_t b = 0; b < n / 256; b++) {
            const gw_blk_q6_k *x = (const gw_blk_q6_k *)p + b;
            float d = gw_h2f(x->d);
            const uint8_t *ql = x->ql, *qh = x->qh;
            const int8_t *sc = x->scales;
            for (int h = 0; h < 2; h++, dst += 128, ql += 64, qh += 32, sc += 8) {
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
                    int q2 = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
                    int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                    int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                    dst[l] = d * sc[is] * (float)q1;
                    dst[l + 32] = d * sc[is + 2] * (float)q2;
                    dst[l + 64] = d * sc[is + 4] * (float)q3;
                    dst[l + 96] = d * sc[is + 6] * (float)q4;
                }
            }
        }
        return 0;
    default:
        return -EINVAL;
    }
}

/* llama.cpp's quantize_row_q8_0/q8_1 as its x86 build runs them: the
 * multiplier is 127/amax (not 1/d), rounding is to nearest even, and the
 * block keeps d and s = d * sum(q) as halves, so the scales that the dot
 * products see are the ones llama.cpp's see. */
void gw_quantize_q8_portable(const float *x, gw_q8 *y, int n)
{
    /* Adding and taking away 1.5 * 2^23 rounds |v| < 2^22 to the nearest
     * integer, ties to even, exactly as lrintf in the default rounding
     * mode; unlike lrintf and fmaxf (library calls here, a third of this
     * function's time in a batched step) it compiles to vector adds. */
    const float magic = 12582912.0f;
    for (int b = 0; b < n / 32; b++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(x[j]);
            amax = a > amax ? a : amax; /* fmaxf's result: a NaN is passed over */
        }
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            float v = x[j] * id; /* |v| <= 127 */
            int q = (int)((v + magic) - magic);
            y[b].qs[j] = (int8_t)q;
            sum += q;
        }
        y[b].d = gw_h2f(gw_f32_to_fp16(d));
        y[b].s = gw_h2f(gw_f32_to_fp16(d * (float)sum));
        y[b].sum = sum;
    }
}
