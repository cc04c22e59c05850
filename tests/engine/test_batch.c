/* test_batch.c: several sequences in one context. A batched pass gives each
 * item exactly the logits of a solo pass; generations stepped together give
 * exactly the ids they give alone; the KV pool places, refuses and reuses
 * blocks as documented; the split of a step's time adds up exactly.
 *
 * Built twice: test_batch runs on a tiny random model written in memory;
 * test_batch_smollm2 (by its name) runs the generation test
 * on SmolLM2 (exit 77 without it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "gw_engine.h"
#include "skip.h"

static const char *model_path; /* SmolLM2, or NULL: the tiny model */

struct env {
    gwt_llama c;
    gwt_weights w;
    gwt_buf file;
    gw_model *m;
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    char err[256];
    if (model_path) {
        if (gw_model_load(model_path, &e->m, err, sizeof err))
            return -1;
        *state = e;
        return 0;
    }
    e->c = gwt_llama_default();
    gwt_weights_random(&e->c, &e->w);
    gwt_write_llama(&e->c, &e->w, GW_T_Q8_0, &e->file);
    gw_gguf *g;
    if (gw_gguf_open_buffer(e->file.p, e->file.len, "tiny.gguf", &g, NULL, 0) ||
        gw_model_from_gguf(g, &e->m, NULL, 0))
        return -1;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    gw_model_free(e->m);
    if (!model_path) {
        gwt_free(&e->file);
        gwt_weights_free(&e->c, &e->w);
    }
    free(e);
    return 0;
}

static gw_ctx *ctx(struct env *e, int n_ctx, int seqs, int kv, int n_batch)
{
    gw_ctx_opts o = {
        .n_ctx = n_ctx, .n_threads = 2, .max_seqs = seqs, .kv_tokens = kv, .n_batch = n_batch};
    gw_ctx *x = NULL;
    assert_int_equal(gw_ctx_new(e->m, &o, &x), 0);
    return x;
}

/* Prompts of different lengths (and chunk counts at n_batch 8). */
static void prompt_of(int s, int32_t *ids, int *n, int vocab)
{
    *n = 3 + 5 * s;
    for (int i = 0; i < *n; i++)
        ids[i] = (int32_t)((s * 37 + i * 11 + 1) % vocab);
}

/* Three sequences prefilled and decoded together, chunk by chunk, against
 * each one alone in a context of its own: the same bytes. */
static void test_batched_logits_equal_solo(void **state)
{
    struct env *e = *state;
    int vocab = gw_model_cfg(e->m)->vocab;
    gw_ctx *b = ctx(e, 64, 3, 0, 8);
    int32_t ids[3][64];
    int n[3], seq[3], pos[3] = {0};
    for (int s = 0; s < 3; s++) {
        prompt_of(s, ids[s], &n[s], vocab);
        seq[s] = gw_seq_open(b, 40);
        assert_int_equal(seq[s], s);
    }
    float *want[3];
    for (int s = 0; s < 3; s++) {
        gw_ctx *solo = ctx(e, 64, 1, 0, 8);
        float *lg;
        assert_int_equal(gw_ctx_eval(solo, ids[s], (size_t)n[s], 0, &lg), 0);
        want[s] = malloc((size_t)vocab * sizeof(float) * 4);
        memcpy(want[s], lg, (size_t)vocab * sizeof(float));
        for (int t = 1; t < 4; t++) { /* three decode steps of fixed ids */
            int32_t tok = (int32_t)((s + t * 5) % vocab);
            assert_int_equal(gw_ctx_eval(solo, &tok, 1, n[s] + t - 1, &lg), 0);
            memcpy(want[s] + (size_t)t * vocab, lg, (size_t)vocab * sizeof(float));
        }
        gw_ctx_free(solo);
    }
    /* prefill: chunks of 8 from position 0, all sequences in each pass */
    int done = 0;
    while (!done) {
        gw_batch_item it[3];
        int k = 0, which[3];
        for (int s = 0; s < 3; s++)
            if (pos[s] < n[s]) {
                int m = n[s] - pos[s] < 8 ? n[s] - pos[s] : 8;
                it[k] = (gw_batch_item){seq[s], ids[s] + pos[s], m, pos[s], pos[s] + m == n[s]};
                which[k++] = s;
            }
        if (k == 0)
            break;
        assert_int_equal(gw_ctx_eval_batch(b, it, k), 0);
        for (int i = 0; i < k; i++) {
            int s = which[i];
            pos[s] += it[i].n;
            if (pos[s] == n[s])
                assert_memory_equal(gw_ctx_batch_logits(b, i), want[s], vocab * sizeof(float));
            else
                assert_null(gw_ctx_batch_logits(b, i));
        }
    }
    for (int t = 1; t < 4; t++) {
        gw_batch_item it[3];
        int32_t tok[3];
        for (int s = 0; s < 3; s++) {
            tok[s] = (int32_t)((s + t * 5) % vocab);
            it[2 - s] = (gw_batch_item){seq[s], &tok[s], 1, n[s] + t - 1, 1}; /* any order */
        }
        assert_int_equal(gw_ctx_eval_batch(b, it, 3), 0);
        for (int s = 0; s < 3; s++)
            assert_memory_equal(gw_ctx_batch_logits(b, 2 - s), want[s] + (size_t)t * vocab,
                                vocab * sizeof(float));
    }
    for (int s = 0; s < 3; s++)
        free(want[s]);
    gw_ctx_free(b);
}

/* N generations stepped together (budget forcing chunked prefill beside
 * decoding) give the ids of each alone: greedy (temp 0), or sampled with
 * a seed of their own (the step samples its generations on the pool's
 * two threads). */
static void check_gens_equal_solo(struct env *e, int N, int n_tokens, int n_ctx, int budget,
                                  float temp)
{
    int vocab = gw_model_cfg(e->m)->vocab;
    int32_t ids[16][64], got[16][64], want[16][64];
    int n[16];
    gw_gen_params p = {.max_tokens = n_tokens, .sampling = {.temperature = temp}};
    gw_gen_result r;
    gw_ctx *solo = ctx(e, n_ctx, 1, 0, 8);
    for (int s = 0; s < N; s++) {
        prompt_of(s % 6, ids[s], &n[s], vocab);
        ids[s][0] = (int32_t)(s + 1);
        p.sampling.seed = (uint64_t)s + 11;
        assert_int_equal(gw_generate(solo, ids[s], (size_t)n[s], &p, want[s], 64, &r), 0);
        assert_int_equal(r.n_tokens, (uint64_t)n_tokens);
    }
    gw_ctx_free(solo);
    gw_ctx *b = ctx(e, n_ctx, N, 0, 8);
    gw_gen *g[16];
    for (int s = 0; s < N; s++) {
        p.sampling.seed = (uint64_t)s + 11;
        assert_int_equal(gw_gen_new(b, ids[s], (size_t)n[s], &p, got[s], 64, &g[s]), 0);
    }
    gw_step_info info = {0};
    uint64_t total_us = 0, steps = 0;
    for (;;) {
        int open = 0;
        for (int s = 0; s < N; s++)
            open += !gw_gen_done(g[s]);
        if (!open)
            break;
        assert_int_equal(gw_batch_step(b, g, N, budget, &info), 0);
        assert_true(info.n_gens >= 1);
        total_us += info.device_us;
        steps++;
    }
    uint64_t charged = 0;
    for (int s = 0; s < N; s++) {
        assert_int_equal(gw_gen_res(g[s])->finish, GW_FINISH_LENGTH);
        assert_memory_equal(got[s], want[s], (size_t)n_tokens * sizeof(int32_t));
        charged += gw_gen_device_us(g[s]);
        gw_gen_free(g[s]);
    }
    /* conservation: the shares add up to the steps' time, to the us */
    assert_int_equal(charged, total_us);
    assert_true(steps < (uint64_t)N * (uint64_t)n_tokens);
    assert_int_equal(gw_ctx_kv_unreserved(b), gw_ctx_kv_tokens(b));
    gw_ctx_free(b);
}

static void test_gens_equal_solo(void **state)
{
    if (model_path)
        check_gens_equal_solo(*state, 8, 24, 256, 16, 0);
    else
        check_gens_equal_solo(*state, 6, 12, 64, 10, 0);
}

static void test_sampled_gens_equal_solo(void **state)
{
    if (model_path)
        check_gens_equal_solo(*state, 8, 24, 256, 16, 0.9f);
    else
        check_gens_equal_solo(*state, 6, 12, 64, 10, 0.9f);
}

static void test_kv_pool(void **state)
{
    struct env *e = *state;
    /* 64 positions per sequence, a pool of 96 (3 blocks) and 4 sequences */
    gw_ctx *x = ctx(e, 64, 4, 96, 8);
    assert_int_equal(gw_ctx_kv_tokens(x), 96);
    assert_int_equal(gw_seq_open(x, 65), GW_ECONTEXT); /* longer than the context */
    assert_int_equal(gw_seq_open(x, 0), -EINVAL);
    int a = gw_seq_open(x, 40); /* 2 blocks */
    assert_int_equal(a, 0);
    assert_int_equal(gw_ctx_kv_unreserved(x), 32);
    assert_int_equal(gw_seq_open(x, 33), -EAGAIN); /* 2 blocks, 1 free: wait */
    int b = gw_seq_open(x, 32);
    assert_int_equal(b, 1);
    assert_int_equal(gw_seq_open(x, 1), -EAGAIN);
    int32_t t[41] = {0};
    gw_batch_item it = {b, t, 1, 32, 0}; /* past its reservation */
    assert_int_equal(gw_ctx_eval_batch(x, &it, 1), GW_ECONTEXT);
    it = (gw_batch_item){a, t, 8, 0, 1};
    gw_batch_item two[2] = {it, it}; /* the same sequence twice */
    assert_int_equal(gw_ctx_eval_batch(x, two, 2), -EINVAL);
    gw_seq_close(x, a);
    assert_int_equal(gw_ctx_eval_batch(x, &it, 1), -EINVAL); /* closed */
    assert_int_equal(gw_ctx_kv_unreserved(x), 64);
    assert_int_equal(gw_seq_open(x, 64), 0); /* the freed blocks, reused */
    gw_seq_close(x, 0);
    gw_seq_close(x, 1);
    gw_seq_close(x, 1); /* twice: ignored */
    assert_int_equal(gw_ctx_kv_unreserved(x), 96);
    gw_ctx_free(x);
    /* a pool smaller than the context: a long sequence can never fit */
    x = ctx(e, 64, 2, 32, 8);
    assert_int_equal(gw_seq_open(x, 33), GW_ECONTEXT);
    gw_ctx_free(x);
}

static void test_share_split(void **state)
{
    (void)state;
    uint64_t out[4];
    uint64_t u1[] = {1, 1, 1};
    gw_share_split(10, u1, 3, out); /* 3.33 each: the rest to the first */
    assert_int_equal(out[0], 4);
    assert_int_equal(out[1], 3);
    assert_int_equal(out[2], 3);
    uint64_t u2[] = {1, 3};
    gw_share_split(1001, u2, 2, out); /* 250.25 and 750.75 */
    assert_int_equal(out[0], 250);
    assert_int_equal(out[1], 751);
    uint64_t u3[] = {7};
    gw_share_split(12345, u3, 1, out); /* alone: the whole step */
    assert_int_equal(out[0], 12345);
    uint64_t u4[] = {0, 0, 0, 0};
    gw_share_split(6, u4, 4, out); /* no cost model: equal, rest first */
    assert_int_equal(out[0] + out[1] + out[2] + out[3], 6);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[3], 1);
    uint64_t u5[] = {UINT64_MAX / 4, UINT64_MAX / 4, 5};
    gw_share_split(UINT64_MAX / 2, u5, 3, out); /* no overflow */
    assert_true(out[0] + out[1] + out[2] == UINT64_MAX / 2);
    gw_model_config c = {.n_layer = 2,
                         .dim = 64,
                         .n_head = 4,
                         .n_head_kv = 2,
                         .head_dim = 16,
                         .ffn = 128,
                         .vocab = 100};
    /* 2 x (2*64*64 + 2*64*32 + 3*64*128) + attention 2*4*16*2*(pos+1) + logits 100*64 */
    assert_int_equal(gw_row_cost(&c, 0, 0), 2 * (8192 + 4096 + 24576) + 256);
    assert_int_equal(gw_row_cost(&c, 9, 1), 2 * (8192 + 4096 + 24576) + 2560 + 6400);
}

int main(int argc, char **argv)
{
    (void)argc;
    if (gw_prog_is(argv[0], "test_batch_smollm2")) {
        model_path = gw_need_model();
        const struct CMUnitTest t[] = {
            cmocka_unit_test_setup_teardown(test_gens_equal_solo, setup, teardown),
            cmocka_unit_test_setup_teardown(test_sampled_gens_equal_solo, setup, teardown),
        };
        return cmocka_run_group_tests(t, NULL, NULL);
    }
    const struct CMUnitTest t[] = {
        cmocka_unit_test_setup_teardown(test_batched_logits_equal_solo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gens_equal_solo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampled_gens_equal_solo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_pool, setup, teardown),
        cmocka_unit_test(test_share_split),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
