/* test_kernels.c: the multi-row kernels of gw_mat_rows give every output
 * exactly the bits of the single-row kernel of the same SIMD level, for
 * every weight type the engine reads and 1 to 17 activation rows; the
 * AVX-512 kernels give the AVX2 ones' bits; and the level follows the CPU,
 * GW_SIMD and GW_NO_AVX2. Bits, not closeness: a batched forward pass must
 * give each sequence the logits it would get alone.
 *
 * One source, three programs (the program's name picks the level):
 * - test_kernels: the portable kernels and the choice of level (any CPU);
 * - test_kernels_avx2: level 1; exits 77 (ctest: Skipped) without AVX2;
 * - test_kernels_avx512: level 2, with AVX512BW's integer products and,
 *   where the CPU has it, VNNI's; exits 77 without AVX-512 F+BW+VL (and
 *   under valgrind, which does not run AVX-512). */
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

static int level; /* the kernels under test, from the program's name */

static const uint32_t all_types[] = {GW_T_F32,  GW_T_F16,  GW_T_BF16, GW_T_Q4_0, GW_T_Q4_1,
                                     GW_T_Q5_0, GW_T_Q5_1, GW_T_Q8_0, GW_T_Q4_K, GW_T_Q6_K};

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
/* Uniform in [-a, a]. */
static float uniform(float a)
{
    return a * ((float)(next() % 2000001) / 1000000.0f - 1.0f);
}

/* A rows x cols matrix of type with random weights; for Q4_0, Q4_1 and
 * Q8_0 the quantized bytes are then replaced by random bytes (every nibble
 * and every int8, -128 included), the scales kept. The caller frees
 * W->data. */
static void random_matrix(gw_mat *W, uint32_t type, int rows, int cols)
{
    *W = (gw_mat){.type = type, .rows = rows, .cols = cols};
    W->row_bytes = gw_type_row_bytes(type, (uint64_t)cols);
    uint8_t *data = malloc(W->row_bytes * (size_t)rows);
    float *w = malloc(sizeof(float) * (size_t)cols);
    assert_non_null(data);
    assert_non_null(w);
    for (int r = 0; r < rows; r++) {
        uint8_t *row = data + (size_t)r * W->row_bytes;
        for (int i = 0; i < cols; i++)
            w[i] = uniform(1.5f);
        gwt_quantize(type, w, cols, row);
        size_t blk = 0, qs = 0, nq = 0;
        if (type == GW_T_Q4_0)
            blk = sizeof(gw_blk_q4_0), qs = offsetof(gw_blk_q4_0, qs), nq = 16;
        else if (type == GW_T_Q4_1)
            blk = sizeof(gw_blk_q4_1), qs = offsetof(gw_blk_q4_1, qs), nq = 16;
        else if (type == GW_T_Q8_0)
            blk = sizeof(gw_blk_q8_0), qs = offsetof(gw_blk_q8_0, qs), nq = 32;
        for (int k = 0; blk && k < cols / 32; k++)
            for (size_t j = 0; j < nq; j++)
                row[(size_t)k * blk + qs + j] = (uint8_t)next();
    }
    free(w);
    W->data = data;
}

/* nb activation rows, stride floats and stride / 32 Q8 blocks apart. */
static void random_acts(float *xf, gw_q8 *xq, int nb, int cols, size_t stride)
{
    for (int b = 0; b < nb; b++) {
        float *x = xf + (size_t)b * stride;
        for (int i = 0; i < cols; i++)
            x[i] = uniform(4.0f);
        gw_quantize_q8(x, xq + (size_t)b * (stride / 32), cols);
    }
}

/* gw_mat_rows_at(lvl, vnni) over rows [r0, r1) of W and nb activation rows
 * against the single-row kernel of the same level, output by output with
 * memcmp; outputs outside [r0, r1) must keep their sentinel. */
static void check_rows(int lvl, int vnni, const gw_mat *W, int nb, int r0, int r1)
{
    enum { PAD = 96 }; /* activation and output rows are padded apart */
    size_t stride = (size_t)W->cols + PAD, out_stride = (size_t)W->rows + 5;
    float *xf = malloc(sizeof(float) * stride * (size_t)nb);
    gw_q8 *xq = malloc(sizeof(gw_q8) * (stride / 32) * (size_t)nb);
    float *out = malloc(sizeof(float) * out_stride * (size_t)nb);
    assert_true(xf && xq && out);
    random_acts(xf, xq, nb, W->cols, stride);
    const float sentinel = -12345.5f;
    for (size_t i = 0; i < out_stride * (size_t)nb; i++)
        out[i] = sentinel;
    gw_mat_rows_at(lvl, vnni, W, xq, stride / 32, xf, stride, nb, out, out_stride, r0, r1);
    gw_dot_fn dot = gw_dot_at(lvl, W->type);
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < W->rows; r++) {
            float got = out[(size_t)b * out_stride + (size_t)r];
            float want = r < r0 || r >= r1
                             ? sentinel
                             : dot(W->cols, W->data + (size_t)r * W->row_bytes,
                                   xq + (size_t)b * (stride / 32), xf + (size_t)b * stride);
            if (memcmp(&got, &want, sizeof got) != 0)
                fail_msg("%s level %d vnni %d, %d rows [%d, %d) x %d cols, nb %d: out[%d][%d] "
                         "%.9g, single row %.9g",
                         gw_ggml_type_name(W->type), lvl, vnni, W->rows, r0, r1, W->cols, nb, b, r,
                         (double)got, (double)want);
        }
    free(xf);
    free(xq);
    free(out);
}

/* Every type, 1..17 activation rows, all 19 weight rows and rows [1, 18)
 * (tiles of 2 to 8 weight rows with every remainder, chunks of the
 * activation rows at every offset); Q4_0, Q4_1 and Q8_0 both as they are
 * and packed (a whole group of 16 and one of 3, the padding computed and
 * never stored, groups entered and left part way). */
static void check_level(int lvl, int vnni)
{
    enum { ROWS = 19, COLS = 768 };
    for (size_t t = 0; t < sizeof all_types / sizeof all_types[0]; t++) {
        gw_mat W;
        random_matrix(&W, all_types[t], ROWS, COLS);
        for (int packed = 0; packed <= gw_type_packs(W.type); packed++) {
            if (packed) {
                assert_int_equal(gw_mat_pack(&W), 0);
                assert_non_null(W.packed);
            }
            for (int nb = 1; nb <= 17; nb++) {
                check_rows(lvl, vnni, &W, nb, 0, ROWS);
                check_rows(lvl, vnni, &W, nb, 1, ROWS - 1);
                check_rows(lvl, vnni, &W, nb, 3, 4);
                check_rows(lvl, vnni, &W, nb, 15, 17);
            }
        }
        gw_mat_pack_free(&W);
        free((void *)W.data);
    }
}

static void test_mat_rows_equals_single_row_dots_bit_for_bit(void **state)
{
    (void)state;
    check_level(level, 0);
    if (level == GW_SIMD_AVX512) {
        int vnni;
        gw_simd_cpu_max(&vnni);
        if (vnni)
            check_level(level, 1);
        else
            print_message("this CPU has no AVX512-VNNI: only the AVX512BW products tested\n");
    }
}

/* Long rows packed: 8448 columns (264 blocks, a group of 70 KiB to 140
 * KiB), the integer sums and the float chain at their longest. */
static void test_packed_long_rows_equal_single_row_dots(void **state)
{
    (void)state;
    const uint32_t types[] = {GW_T_Q4_0, GW_T_Q4_1, GW_T_Q8_0};
    int vnni;
    gw_simd_cpu_max(&vnni);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        gw_mat W;
        random_matrix(&W, types[t], 5, 8448);
        assert_int_equal(gw_mat_pack(&W), 0);
        check_rows(level, level == GW_SIMD_AVX512 ? vnni : 0, &W, 9, 0, 5);
        gw_mat_pack_free(&W);
        assert_null(W.packed);
        free((void *)W.data);
    }
}

/* gw_mat_rows and gw_dot_for follow gw_simd_set: the same bits as the
 * level's kernels called directly. */
static void test_mat_rows_uses_the_level_in_force(void **state)
{
    (void)state;
    enum { ROWS = 6, COLS = 576, NB = 3 };
    int vnni;
    gw_simd_cpu_max(&vnni);
    assert_int_equal(gw_simd_set(level), level);
    gw_mat W;
    random_matrix(&W, GW_T_Q4_1, ROWS, COLS);
    assert_int_equal(gw_mat_pack(&W), 0);
    float xf[NB * COLS], a[NB * ROWS], b[NB * ROWS];
    gw_q8 xq[NB * COLS / 32];
    random_acts(xf, xq, NB, COLS, COLS);
    gw_mat_rows(&W, xq, COLS / 32, xf, COLS, NB, a, ROWS, 0, ROWS);
    gw_mat_rows_at(level, vnni, &W, xq, COLS / 32, xf, COLS, NB, b, ROWS, 0, ROWS);
    assert_memory_equal(a, b, sizeof a);
    assert_ptr_equal(gw_dot_for(GW_T_Q4_1), gw_dot_at(level, GW_T_Q4_1));
    gw_mat_pack_free(&W);
    free((void *)W.data);
    gw_simd_set(-1);
}

/* Level 2's attention kernels against level 1's, bit for bit (level 1
 * against level 0: test_quant_avx2; level 2 has no single-row products of
 * its own, and its packed ones are test_mat_rows_...'s). */
static void test_avx512_kernels_give_avx2_bits(void **state)
{
    (void)state;
    enum { HD = 64, NPOS = 77 };
    /* attention: head sizes with and without a whole number of 16-lane
     * steps, runs of positions shorter and longer than the lanes */
    static uint16_t kv[NPOS * HD + 96], qh[HD + 32], ah[NPOS];
    static float lanes[64 * (HD + 16)];
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        kv[i] = gw_f32_to_fp16(uniform(2.0f));
    for (size_t i = 0; i < sizeof qh / sizeof qh[0]; i++)
        qh[i] = gw_f32_to_fp16(uniform(2.0f));
    for (int t = 0; t < NPOS; t++)
        ah[t] = gw_f32_to_fp16(1.0f / (float)(t + 2));
    const gw_attn_kernels *k1 = gw_attn_avx2(), *k2 = gw_attn_avx512();
    const int hds[] = {HD, 48, 40, 24}, ns[] = {HD, 96, 80, 40, 17}, npos[] = {NPOS, 40, 3};
    for (int batched = 0; batched < 2; batched++) {
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            float a = k1->dot_hh[batched](ns[i], kv + 7, qh);
            float b = k2->dot_hh[batched](ns[i], kv + 7, qh);
            if (memcmp(&a, &b, sizeof a) != 0)
                fail_msg("dot_hh batched %d n %d: avx512 %.9g avx2 %.9g", batched, ns[i], (double)b,
                         (double)a);
        }
        for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
            for (size_t p = 0; p < sizeof npos / sizeof npos[0]; p++) {
                float a[HD], b[HD];
                k1->attn_v[batched](hds[h], npos[p], ah, kv, HD, lanes, a);
                k2->attn_v[batched](hds[h], npos[p], ah, kv, HD, lanes, b);
                if (memcmp(a, b, sizeof(float) * (size_t)hds[h]) != 0)
                    fail_msg("attn_v batched %d hd %d n_pos %d differ", batched, hds[h], npos[p]);
            }
    }
    float f[37];
    uint16_t h1[37], h2[37];
    for (int i = 0; i < 37; i++)
        f[i] = uniform(70000.0f) * (i % 3 ? 1e-3f : 1.0f); /* some past the largest half */
    k1->f32_to_f16(f, h1, 37);
    k2->f32_to_f16(f, h2, 37);
    assert_memory_equal(h1, h2, sizeof h1);
}

/* Level 2's argmax against the portable loop: the first index of the
 * largest value, ties to the lower index, NaNs never chosen (a NaN first
 * value is never beaten), -0 and +0 equal; lengths around the 16 lanes. */
static void test_avx512_argmax_gives_the_portable_index(void **state)
{
    (void)state;
    enum { N = 49152 + 17 };
    static float x[N];
    const int ns[] = {1, 15, 16, 31, 32, 33, 47, 100, 49152, N};
    for (int round = 0; round < 12; round++) {
        for (int i = 0; i < N; i++)
            x[i] = round % 3 == 0 ? uniform(8.0f) : (float)(next() % 7); /* many ties */
        if (round == 4)
            x[0] = NAN;
        if (round == 5)
            for (int i = 0; i < N; i += 3)
                x[i] = NAN;
        if (round == 6) {
            for (int i = 0; i < N; i++)
                x[i] = i % 2 ? -0.0f : 0.0f;
        }
        if (round == 7)
            x[N - 1] = 1e9f; /* the maximum in the scalar tail */
        if (round == 8)
            x[20000] = INFINITY, x[40000] = INFINITY;
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int32_t want = gw_argmax_portable(x, ns[k]), got = gw_argmax_avx512(x, ns[k]);
            if (got != want)
                fail_msg("round %d n %d: avx512 %d, portable %d", round, ns[k], got, want);
        }
    }
}

/* Level 2's scores of a run of keys (16 at a time, then one by one)
 * against level 1's dot product, one key at a time, times the scale:
 * bits, for the single-token kernel and the batch one; head sizes of one
 * and two 64-lane steps, one not a multiple of 64 and one not of 16, runs
 * shorter and longer than 16 keys, keys strided as in a KV block. */
static void test_avx512_dot_keys_gives_avx2_scores(void **state)
{
    (void)state;
    enum { STRIDE = 200, KEYS = 37 };
    static uint16_t k[48 * STRIDE], q[128]; /* KEYS rounded up to 16 */
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        k[i] = gw_f32_to_fp16(uniform(3.0f));
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        q[i] = gw_f32_to_fp16(uniform(3.0f));
    k[5] = gw_f32_to_fp16(0.0f), q[5] = gw_f32_to_fp16(-1.0f); /* a -0 product */
    const int ns[] = {64, 128, 48, 40}, runs[] = {1, 15, 16, 17, 32, KEYS};
    const float scale = 0.125f;
    /* rows to ask the caches for (their own keys, and none): no effect on
     * the scores */
    const uint16_t *const pf[2] = {k, NULL};
    for (int batched = 0; batched < 2; batched++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
            for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
                float want[KEYS], got[KEYS + 16];
                for (int j = 0; j < runs[r]; j++)
                    want[j] =
                        gw_attn_avx2()->dot_hh[batched](ns[i], k + (size_t)j * STRIDE, q) * scale;
                /* one by one past the last 16, then with whole groups of
                 * 16 readable (the rest of a KV block) */
                for (int whole = 0; whole < 2; whole++) {
                    int readable = whole ? (runs[r] + 15) / 16 * 16 : runs[r];
                    memset(got, 0xff, sizeof got);
                    gw_dot_keys_avx512(batched, ns[i], k, STRIDE, runs[r], readable, q,
                                       whole ? pf : NULL, scale, got);
                    for (int j = 0; j < runs[r]; j++)
                        if (memcmp(&got[j], &want[j], sizeof got[j]) != 0)
                            fail_msg("batched %d, n %d, %d keys (%d readable): key %d avx512 "
                                     "%.9g, avx2 %.9g",
                                     batched, ns[i], runs[r], readable, j, (double)got[j],
                                     (double)want[j]);
                    for (int j = runs[r]; j < KEYS + 16; j++)
                        if (got[j] == got[j]) /* NaN: the 0xff fill, never written */
                            fail_msg("%d keys (%d readable): out[%d] written", runs[r], readable,
                                     j);
                }
            }
}

/* Level 2's attn_v reading the values where a paged cache keeps them
 * (blocks of 32 positions, out of order, strided) against level 1's over
 * the same values gathered into rows: bits, single-token (64 lanes) and
 * batch (16) kernels, fewer and more positions than lanes, a partial last
 * block. */
static void test_avx512_paged_attn_v_gives_avx2_bits(void **state)
{
    (void)state;
    enum { HD = 64, STRIDE = 192, BLK = 32, NB = 6 };
    static uint16_t pool[NB * BLK * STRIDE], gathered[NB * BLK * HD], a[NB * BLK];
    static float lanes[64 * HD];
    for (size_t i = 0; i < sizeof pool / sizeof pool[0]; i++)
        pool[i] = gw_f32_to_fp16(uniform(2.0f));
    for (int t = 0; t < NB * BLK; t++)
        a[t] = gw_f32_to_fp16(uniform(1.0f));
    const int order[NB] = {3, 0, 5, 1, 4, 2}; /* the sequence's blocks in the pool */
    const uint16_t *vb[NB];
    for (int b = 0; b < NB; b++) {
        vb[b] = pool + (size_t)order[b] * BLK * STRIDE + 64; /* a kv head's offset */
        for (int t = 0; t < BLK; t++)
            memcpy(gathered + ((size_t)b * BLK + (size_t)t) * HD, vb[b] + (size_t)t * STRIDE,
                   HD * 2);
    }
    const int npos[] = {1, 5, 16, 17, 32, 33, 64, 65, 100, NB * BLK};
    for (int batched = 0; batched < 2; batched++)
        for (size_t p = 0; p < sizeof npos / sizeof npos[0]; p++) {
            float want[HD], got[HD];
            gw_attn_avx2()->attn_v[batched](HD, npos[p], a, gathered, HD, lanes, want);
            memset(got, 0xff, sizeof got); /* every output written */
            gw_attn_v_paged_avx512(batched, HD, npos[p], a, vb, BLK, STRIDE, got);
            if (memcmp(got, want, sizeof got) != 0)
                fail_msg("paged attn_v batched %d n_pos %d differs", batched, npos[p]);
        }
}

/* Level 2's activation quantizer against the portable one, block for
 * block: random rows, a zero block, a huge and a tiny value, values near
 * the rounding ties. (A NaN activation has no defined result: the
 * portable conversion to int is undefined for it.) */
static void test_avx512_quantize_gives_the_portable_blocks(void **state)
{
    (void)state;
    enum { N = 1536 };
    static float x[N];
    static gw_q8 a[N / 32], b[N / 32];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++)
            x[i] = uniform(round % 2 ? 4.0f : 300.0f);
        if (round == 1)
            for (int i = 32; i < 64; i++)
                x[i] = 0.0f;
        if (round == 2)
            x[70] = 1e30f, x[100] = -1e-30f; /* a huge value, a tiny one */
        if (round == 3)
            for (int i = 0; i < N; i++)
                x[i] = (float)((int)(next() % 255) - 127) + 0.5f; /* ties once scaled by 1 */
        if (round == 3)
            x[0] = 127.0f; /* amax 127: the multiplier is 1 */
        memset(a, 0x55, sizeof a);
        memset(b, 0xaa, sizeof b);
        gw_quantize_q8_portable(x, a, N);
        gw_quantize_q8_avx512(x, b, N);
        for (int k = 0; k < N / 32; k++)
            if (memcmp(&a[k], &b[k], sizeof a[k]) != 0)
                fail_msg("round %d block %d: avx512 d %.9g s %.9g, portable d %.9g s %.9g", round,
                         k, (double)b[k].d, (double)b[k].s, (double)a[k].d, (double)a[k].s);
    }
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Level 2's expf (glibc's algorithm, 16 lanes) against the C library's:
 * every 257th bit pattern over all 2^32 (16.7 million floats: every
 * exponent, both signs, NaNs, infinities, subnormals), the edges of the
 * fast path (|x| = 88), underflow and overflow, and two inputs on which a
 * multiply-add glibc's FMA build contracts changes the last bit
 * (tests/bench/expf_all checks every float). */
static void test_avx512_expf_gives_the_c_library_bits(void **state)
{
    (void)state;
    enum { CHUNK = 4096 };
    static float x[CHUNK], y[CHUNK];
    static const uint32_t edges[] = {
        0x4202422f, 0xc27c65d9, 0x42b00000, 0x42afffff, 0xc2b00000, 0xc2afffff, 0x42b17218,
        0x42b17217, 0xc2cff1b4, 0xc2cff1b5, 0xc2ce8ed0, 0x7f800000, 0xff800000, 0x7fc00000,
        0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x3f800000, 0xbf800000,
    };
    uint64_t differ = 0;
    for (uint64_t bits = 0; bits < (1ull << 32);) {
        int n = 0;
        if (bits == 0)
            for (; n < (int)(sizeof edges / sizeof edges[0]); n++)
                x[n] = bits_float(edges[n]);
        for (; n < CHUNK && bits < (1ull << 32); n++, bits += 257)
            x[n] = bits_float((uint32_t)bits);
        gw__expf_avx512(x, y, n);
        for (int i = 0; i < n; i++) {
            float want = expf(x[i]);
            if (float_bits(y[i]) != float_bits(want) && !(isnan(y[i]) && isnan(want)) &&
                differ++ < 5)
                print_error("x = %a: level 2 %a, expf %a\n", (double)x[i], (double)y[i],
                            (double)want);
        }
    }
    assert_int_equal(differ, 0);
}

/* Level 2's softmax_h and silu_mul against the C library versions, bit
 * for bit (e_i left in x, the halves, h): lengths 1 to 70 (every tail of
 * the 16 lanes), scores spread over a few units or hundreds (exponentials
 * that underflow: glibc's slow path), -inf scores (masked positions), a
 * NaN at x[0] and past it. */
static void test_avx512_softmax_and_silu_give_the_c_library_bits(void **state)
{
    (void)state;
    const gw_attn_kernels *k2 = gw_attn_avx512();
    enum { N = 70 };
    float a[N], b[N], u[N];
    uint16_t ya[N], yb[N];
    for (int round = 0; round < 8; round++) {
        for (int n = 1; n <= N; n++) {
            for (int i = 0; i < n; i++) {
                a[i] = uniform(round % 2 ? 300.0f : 8.0f);
                u[i] = uniform(3.0f);
            }
            if (round == 2 && n > 3)
                a[n / 2] = -INFINITY, a[n - 1] = -INFINITY;
            if (round == 3)
                a[0] = NAN;
            if (round == 4 && n > 2)
                a[n - 2] = NAN;
            memcpy(b, a, sizeof a);
            gw_softmax_h_libm(a, n, ya);
            k2->softmax_h(b, n, yb);
            for (int i = 0; i < n; i++)
                if (float_bits(a[i]) != float_bits(b[i]) || ya[i] != yb[i])
                    fail_msg("softmax round %d n %d i %d: e %a / %a, half 0x%04x / 0x%04x", round,
                             n, i, (double)b[i], (double)a[i], yb[i], ya[i]);
            for (int i = 0; i < n; i++)
                a[i] = uniform(round % 2 ? 200.0f : 6.0f);
            memcpy(b, a, sizeof a);
            gw_silu_mul_libm(a, u, n);
            k2->silu_mul(b, u, n);
            for (int i = 0; i < n; i++)
                if (float_bits(a[i]) != float_bits(b[i]))
                    fail_msg("silu round %d n %d i %d: %a, C library %a", round, n, i, (double)b[i],
                             (double)a[i]);
        }
    }
}

/* The default level is the best the CPU has; GW_SIMD=0|1|2 caps it (other
 * values are ignored), GW_NO_AVX2=1 means portable whatever GW_SIMD says;
 * an explicit level above the CPU's gets the CPU's best. */
static void test_simd_level_defaults_to_best_and_obeys_gw_simd(void **state)
{
    (void)state;
    int max = gw_simd_cpu_max(NULL);
    unsetenv("GW_NO_AVX2");
    unsetenv("GW_SIMD");
    assert_int_equal(gw_simd_set(-1), max);
    assert_int_equal(gw_simd_get(), max);
    static const struct {
        const char *gw_simd, *no_avx2;
        int cap;
    } cases[] = {
        {"0", NULL, 0}, {"1", NULL, 1},  {"2", NULL, 2},    {"3", NULL, 2},
        {"", NULL, 2},  {"12", NULL, 2}, {"2", "1", 0},     {NULL, "1", 0},
        {NULL, "0", 2}, {"1", "0", 1},   {"avx2", NULL, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].gw_simd)
            setenv("GW_SIMD", cases[i].gw_simd, 1);
        else
            unsetenv("GW_SIMD");
        if (cases[i].no_avx2)
            setenv("GW_NO_AVX2", cases[i].no_avx2, 1);
        else
            unsetenv("GW_NO_AVX2");
        int want = cases[i].cap < max ? cases[i].cap : max;
        if (gw_simd_set(-1) != want || gw_simd_get() != want)
            fail_msg("GW_SIMD=%s GW_NO_AVX2=%s: level %d, want %d",
                     cases[i].gw_simd ? cases[i].gw_simd : "(unset)",
                     cases[i].no_avx2 ? cases[i].no_avx2 : "(unset)", gw_simd_get(), want);
    }
    unsetenv("GW_SIMD");
    unsetenv("GW_NO_AVX2");
    assert_int_equal(gw_simd_set(GW_SIMD_AVX512), max);
    assert_int_equal(gw_simd_set(9), max);
    assert_int_equal(gw_simd_set(GW_SIMD_PORTABLE), GW_SIMD_PORTABLE);
    gw_simd_set(-1);
}

int main(int argc, char **argv)
{
    (void)argc;
    int max = gw_simd_cpu_max(NULL);
    if (gw_prog_is(argv[0], "test_kernels_avx2")) {
        if (max < GW_SIMD_AVX2)
            gw_skip("this CPU has no AVX2 (the portable kernels: test_kernels)");
        level = GW_SIMD_AVX2;
    } else if (gw_prog_is(argv[0], "test_kernels_avx512")) {
        if (max < GW_SIMD_AVX512)
            gw_skip("this CPU (or valgrind) has no AVX-512 F+BW+VL");
        level = GW_SIMD_AVX512;
    }
    const struct CMUnitTest avx2[] = {
        cmocka_unit_test(test_mat_rows_equals_single_row_dots_bit_for_bit),
        cmocka_unit_test(test_packed_long_rows_equal_single_row_dots),
        cmocka_unit_test(test_mat_rows_uses_the_level_in_force),
    };
    const struct CMUnitTest avx512[] = {
        cmocka_unit_test(test_mat_rows_equals_single_row_dots_bit_for_bit),
        cmocka_unit_test(test_packed_long_rows_equal_single_row_dots),
        cmocka_unit_test(test_mat_rows_uses_the_level_in_force),
        cmocka_unit_test(test_avx512_kernels_give_avx2_bits),
        cmocka_unit_test(test_avx512_argmax_gives_the_portable_index),
        cmocka_unit_test(test_avx512_dot_keys_gives_avx2_scores),
        cmocka_unit_test(test_avx512_paged_attn_v_gives_avx2_bits),
        cmocka_unit_test(test_avx512_quantize_gives_the_portable_blocks),
        cmocka_unit_test(test_avx512_expf_gives_the_c_library_bits),
        cmocka_unit_test(test_avx512_softmax_and_silu_give_the_c_library_bits),
    };
    if (level == GW_SIMD_AVX2)
        return cmocka_run_group_tests_name("kernels_avx2", avx2, NULL, NULL);
    if (level == GW_SIMD_AVX512)
        return cmocka_run_group_tests_name("kernels_avx512", avx512, NULL, NULL);
    const struct CMUnitTest portable[] = {
        cmocka_unit_test(test_mat_rows_equals_single_row_dots_bit_for_bit),
        cmocka_unit_test(test_packed_long_rows_equal_single_row_dots),
        cmocka_unit_test(test_mat_rows_uses_the_level_in_force),
        cmocka_unit_test(test_simd_level_defaults_to_best_and_obeys_gw_simd),
    };
    return cmocka_run_group_tests_name("kernels", portable, NULL, NULL);
}
