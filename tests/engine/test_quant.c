/* test_quant.c: dequantization of each weight type against blocks written
 * byte by byte here, with the expected floats worked out by hand from the
 * formats in ENGINE.md; and each dot-product kernel against the
 * dequantized row.
 *
 * One source, two programs (the program's name picks the group):
 * - test_quant: dequantization, quantizers and the portable C kernels;
 * - test_quant_avx2: the AVX2 kernels against the dequantized rows and bit
 *   for bit against the portable ones; exits 77 (ctest: Skipped) on a CPU
 *   without AVX2, where calling them would be an illegal instruction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "gguf_writer.h"
#include "skip.h"

static int kernel_level; /* the dot kernels under test: 0 portable, 1 AVX2 */

static void check(uint32_t type, const uint8_t *blk, int n, const float *want)
{
    float got[256];
    assert_int_equal(gw_dequantize_row(type, blk, got, (uint64_t)n), 0);
    for (int i = 0; i < n; i++) {
        if (got[i] != want[i])
            fail_msg("%s element %d: got %.9g, want %.9g", gw_ggml_type_name(type), i,
                     (double)got[i], (double)want[i]);
    }
}

static void test_dequant_f16_and_bf16_by_hand(void **state)
{
    (void)state;
    /* 1.0, -2.0, smallest subnormal 2^-24, largest 65504 */
    const uint8_t f16[] = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0xff, 0x7b};
    check(GW_T_F16, f16, 4, (const float[]){1.0f, -2.0f, 5.9604644775390625e-08f, 65504.0f});
    /* 0x3fc0 -> 1.5, 0xc120 -> -10 */
    const uint8_t bf16[] = {0xc0, 0x3f, 0x20, 0xc1};
    check(GW_T_BF16, bf16, 2, (const float[]){1.5f, -10.0f});
}

static void test_dequant_q4_0_by_hand(void **state)
{
    (void)state;
    uint8_t b[18];
    memset(b, 0x88, sizeof b); /* every nibble 8: value 0 */
    b[0] = 0x00, b[1] = 0x38;  /* d = 0.5 */
    b[2] = 0x9f;               /* elem 0: (15-8)*0.5 = 3.5; elem 16: (9-8)*0.5 = 0.5 */
    b[3] = 0x08;               /* elem 1: 0; elem 17: (0-8)*0.5 = -4 */
    float want[32] = {0};
    want[0] = 3.5f, want[16] = 0.5f, want[1] = 0.0f, want[17] = -4.0f;
    check(GW_T_Q4_0, b, 32, want);
}

static void test_dequant_q4_1_by_hand(void **state)
{
    (void)state;
    uint8_t b[20] = {0x00, 0x38, 0x00, 0xbc}; /* d = 0.5, m = -1 */
    b[4] = 0x2f;                              /* elem 0: 15*0.5-1 = 6.5; elem 16: 2*0.5-1 = 0 */
    float want[32];
    for (int i = 0; i < 32; i++)
        want[i] = -1.0f;
    want[0] = 6.5f, want[16] = 0.0f;
    check(GW_T_Q4_1, b, 32, want);
}

static void test_dequant_q8_0_by_hand(void **state)
{
    (void)state;
    uint8_t b[34];
    b[0] = 0x00, b[1] = 0x34; /* d = 0.25 */
    memset(b + 2, 4, 32);     /* 4 * 0.25 = 1 */
    b[2] = 0x80;              /* -128 * 0.25 = -32 */
    b[33] = 0x7f;             /* 127 * 0.25 = 31.75 */
    float want[32];
    for (int i = 0; i < 32; i++)
        want[i] = 1.0f;
    want[0] = -32.0f, want[31] = 31.75f;
    check(GW_T_Q8_0, b, 32, want);
}

static void test_dequant_q5_0_by_hand(void **state)
{
    (void)state;
    uint8_t b[22] = {0x00, 0x3c, 0x01, 0x00, 0x01, 0x00}; /* d = 1; qh bits 0 and 16 */
    b[6] = 0x0f; /* elem 0: (15|16)-16 = 15; elem 16: (0|16)-16 = 0 */
    float want[32];
    for (int i = 0; i < 32; i++)
        want[i] = -16.0f;
    want[0] = 15.0f, want[16] = 0.0f;
    check(GW_T_Q5_0, b, 32, want);
}

static void test_dequant_q5_1_by_hand(void **state)
{
    (void)state;
    uint8_t b[24] = {0x00, 0x40, 0x00, 0x38, 0x00, 0x00, 0x00, 0x80}; /* d 2, m 0.5, qh bit 31 */
    b[8 + 15] = 0x10; /* elem 31: (1|16)*2+0.5 = 34.5; elem 15: 0*2+0.5 */
    float want[32];
    for (int i = 0; i < 32; i++)
        want[i] = 0.5f;
    want[31] = 34.5f;
    check(GW_T_Q5_1, b, 32, want);
}

static void test_dequant_q4_k_by_hand(void **state)
{
    (void)state;
    uint8_t b[144] = {0x00, 0x3c, 0x00, 0x38}; /* d = 1, dmin = 0.5 */
    uint8_t *sc = b + 4, *qs = b + 16;
    /* sub-block 0: scale 2, min 4; sub-block 4: scale 33 (0b10'0001), min 17 (0b01'0001):
     * low nibbles in scales[8], top bits in bits 6-7 of scales[0] and scales[4] */
    sc[0] = 2 | 2 << 6;
    sc[4] = 4 | 1 << 6;
    sc[8] = 0x11;
    qs[0] = 0x03;  /* elem 0 (sub-block 0): 1*2*3 - 0.5*4 = 4 */
    qs[64] = 0x05; /* elem 128 (sub-block 4, low nibbles of qs[64..95]): 33*5 - 0.5*17 = 156.5 */
    float want[256] = {0};
    for (int i = 0; i < 32; i++)
        want[i] = -2.0f, want[128 + i] = -8.5f;
    want[0] = 4.0f, want[128] = 156.5f;
    check(GW_T_Q4_K, b, 256, want);
}

static void test_dequant_q6_k_by_hand(void **state)
{
    (void)state;
    uint8_t b[210] = {0};
    uint8_t *ql = b, *qh = b + 128;
    int8_t *sc = (int8_t *)(b + 192);
    b[208] = 0x00, b[209] = 0x38; /* d = 0.5 */
    sc[0] = 2;                    /* elements 0..15 */
    sc[2] = -1;                   /* elements 32..47 */
    ql[0] = 0x05, qh[0] = 0x02;   /* elem 0: (5 | 2<<4) - 32 = 5 -> 0.5*2*5 = 5 */
    ql[32] = 0x07;                /* elem 32: 7 - 32 = -25 -> 0.5*-1*-25 = 12.5 */
    float want[256] = {0};
    for (int i = 0; i < 16; i++)
        want[i] = -32.0f, want[32 + i] = 16.0f; /* q = -32 elsewhere in those sub-blocks */
    want[0] = 5.0f, want[32] = 12.5f;
    check(GW_T_Q6_K, b, 256, want);
}

/* Each kernel equals the plain dot product of the dequantized row with the
 * dequantized Q8 activations, up to float summation order (1e-5 relative).
 * Types with a minimum take m * s, where s is d * sum(q) rounded to a half
 * on its own (as in llama.cpp's Q8_1), not the half d times sum(q): the
 * difference, at most max|m| * |s - d * sum(q)| per block, is allowed. */
static void test_dot_kernels_match_dequantized_rows(void **state)
{
    (void)state;
    const uint32_t types[] = {GW_T_F32,  GW_T_F16,  GW_T_BF16, GW_T_Q4_0, GW_T_Q4_1,
                              GW_T_Q5_0, GW_T_Q5_1, GW_T_Q8_0, GW_T_Q4_K, GW_T_Q6_K};
    enum { N = 512 };
    float x[N], w[N], wd[N], xd[N];
    uint64_t s = 7;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = (float)((int)(s >> 40) % 2001 - 1000) / 1000.0f;
        x[i] = (float)((int)(s >> 20 & 0xfffff) % 2001 - 1000) / 700.0f;
    }
    gw_q8 xq[N / 32];
    gw_quantize_q8(x, xq, N);
    for (int b = 0; b < N / 32; b++)
        for (int j = 0; j < 32; j++)
            xd[32 * b + j] = xq[b].qs[j] * xq[b].d;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint8_t row[N * 4];
        gwt_quantize(types[t], w, N, row);
        assert_int_equal(gw_dequantize_row(types[t], row, wd, N), 0);
        const float *act = gw_type_uses_q8(types[t]) ? xd : x;
        double want = 0, mag = 0, wmax = 0, slack = 0;
        for (int i = 0; i < N; i++)
            want += (double)wd[i] * act[i], mag += fabs((double)wd[i] * act[i]),
                wmax = fmax(wmax, fabs(wd[i]));
        if (types[t] == GW_T_Q4_1 || types[t] == GW_T_Q5_1 || types[t] == GW_T_Q4_K)
            for (int b = 0; b < N / 32; b++) {
                int sq = 0;
                for (int j = 0; j < 32; j++)
                    sq += xq[b].qs[j];
                slack += wmax * fabs((double)xq[b].s - (double)xq[b].d * sq);
            }
        gw_dot_fn f = kernel_level ? gw_dot_avx2_for(types[t]) : gw_dot_portable_for(types[t]);
        float got = f(N, row, xq, x);
        if (fabs(got - want) > 1e-5 * mag + slack)
            fail_msg("%s level %d: got %g want %g", gw_ggml_type_name(types[t]), kernel_level,
                     (double)got, want);
    }
}

/* Activations are quantized as llama.cpp's x86 quantize_row_q8_1 does:
 * multiplier 127/amax, ties to even, d and s = d * sum(q) kept as halves. */
static void test_quantize_q8_rounds_like_llama_cpp(void **state)
{
    (void)state;
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = 0;
    x[0] = 127.0f; /* amax: id = 1, d = 1 */
    x[1] = 2.5f;   /* tie: to even, 2 */
    x[2] = 3.5f;   /* tie: to even, 4 */
    x[3] = -2.5f;  /* tie: -2 */
    x[4] = 0.49f;
    gw_q8 q;
    gw_quantize_q8(x, &q, 32);
    assert_int_equal(q.qs[0], 127);
    assert_int_equal(q.qs[1], 2);
    assert_int_equal(q.qs[2], 4);
    assert_int_equal(q.qs[3], -2);
    assert_int_equal(q.qs[4], 0);
    assert_true(q.d == 1.0f && q.s == 131.0f);
    /* d = 1.1/127 is no half: the block keeps its half, s the half of the
     * float product d * sum */
    for (int j = 0; j < 32; j++)
        x[j] = j == 0 ? 1.1f : 0.3f;
    gw_quantize_q8(x, &q, 32);
    float d = 1.1f / 127.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++)
        sum += q.qs[j];
    assert_int_equal(q.qs[1], (int)lrintf(0.3f * (127.0f / 1.1f)));
    assert_true(q.d == gw_fp16_to_f32(gw_f32_to_fp16(d)));
    assert_true(q.s == gw_fp16_to_f32(gw_f32_to_fp16(d * (float)sum)));
    assert_true(q.d != d);
}

/* The portable kernels keep the AVX2 kernels' lanes: both give the same
 * bits for the types llama.cpp's x86 build runs with 8 lanes, and for the
 * attention kernels on halves. */
static void test_portable_and_avx2_kernels_agree_bit_for_bit(void **state)
{
    (void)state;
    assert_int_equal(gw_simd_set(1), 1); /* main() checked the CPU */
    enum { N = 576, HD = 64, NPOS = 77 };
    float x[N], w[N];
    uint64_t s = 11;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = (float)((int)(s >> 40) % 2001 - 1000) / 900.0f;
        x[i] = (float)((int)(s >> 20 & 0xfffff) % 2001 - 1000) / 300.0f;
    }
    gw_q8 xq[N / 32];
    gw_quantize_q8(x, xq, N);
    const uint32_t types[] = {GW_T_Q4_0, GW_T_Q4_1, GW_T_Q8_0};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint8_t row[N * 2];
        gwt_quantize(types[t], w, N, row);
        float a = gw_dot_avx2_for(types[t])(N, row, xq, x);
        float p = gw_dot_portable_for(types[t])(N, row, xq, x);
        if (memcmp(&a, &p, sizeof a) != 0)
            fail_msg("%s: avx2 %.9g portable %.9g", gw_ggml_type_name(types[t]), (double)a,
                     (double)p);
    }
    uint16_t qh[HD], kv[NPOS * HD], ah[NPOS];
    for (int i = 0; i < HD; i++)
        qh[i] = gw_f32_to_fp16(x[i]);
    for (int i = 0; i < NPOS * HD; i++)
        kv[i] = gw_f32_to_fp16(w[i % N] * (float)(1 + i / N));
    for (int t = 0; t < NPOS; t++)
        ah[t] = gw_f32_to_fp16(1.0f / (float)(t + 2));
    static float lanes[64 * HD];
    for (int batched = 0; batched < 2; batched++) {
        float out[2][HD], dots[2];
        for (int level = 1; level >= 0; level--) {
            gw_simd_set(level);
            dots[level] = gw_dot_hh_for(batched)(HD, kv + 5 * HD, qh);
            gw_attn_v_for(batched)(HD, NPOS, ah, kv, HD, lanes, out[level]);
        }
        assert_memory_equal(&dots[0], &dots[1], sizeof dots[0]);
        assert_memory_equal(out[0], out[1], sizeof out[0]);
    }
    gw_simd_set(-1);
}

/* The test's own quantizers round-trip within half a step: checks the
 * writer that the forward tests depend on. */
static void test_writer_quantizers_round_trip(void **state)
{
    (void)state;
    const uint32_t types[] = {GW_T_Q4_0, GW_T_Q4_1, GW_T_Q5_0, GW_T_Q5_1,
                              GW_T_Q8_0, GW_T_Q4_K, GW_T_Q6_K};
    const float tol[] = {1.0f / 14,  1.0f / 28, 1.0f / 30, 1.0f / 60,
                         1.0f / 250, 1.0f / 12, 1.0f / 60};
    float w[256], wd[256];
    for (int i = 0; i < 256; i++)
        w[i] = sinf((float)i * 0.37f);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint8_t row[1024];
        gwt_quantize(types[t], w, 256, row);
        gw_dequantize_row(types[t], row, wd, 256);
        for (int i = 0; i < 256; i++)
            if (fabsf(wd[i] - w[i]) > 2 * tol[t])
                fail_msg("%s elem %d: %g vs %g", gw_ggml_type_name(types[t]), i, (double)wd[i],
                         (double)w[i]);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    if (gw_prog_is(argv[0], "test_quant_avx2")) {
        if (gw_simd_set(1) != 1)
            gw_skip("this CPU has no AVX2 (the portable kernels: test_quant)");
        gw_simd_set(-1);
        kernel_level = 1;
        const struct CMUnitTest avx2[] = {
            cmocka_unit_test(test_dot_kernels_match_dequantized_rows),
            cmocka_unit_test(test_portable_and_avx2_kernels_agree_bit_for_bit),
        };
        return cmocka_run_group_tests_name("quant_avx2", avx2, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequant_f16_and_bf16_by_hand),
        cmocka_unit_test(test_dequant_q4_0_by_hand),
        cmocka_unit_test(test_dequant_q4_1_by_hand),
        cmocka_unit_test(test_dequant_q8_0_by_hand),
        cmocka_unit_test(test_dequant_q5_0_by_hand),
        cmocka_unit_test(test_dequant_q5_1_by_hand),
        cmocka_unit_test(test_dequant_q4_k_by_hand),
        cmocka_unit_test(test_dequant_q6_k_by_hand),
        cmocka_unit_test(test_dot_kernels_match_dequantized_rows),
        cmocka_unit_test(test_writer_quantizers_round_trip),
        cmocka_unit_test(test_quantize_q8_rounds_like_llama_cpp),
    };
    return cmocka_run_group_tests_name("quant", tests, NULL, NULL);
}
