/* test_generate.c: the generation loop's contract (seeds, cancellation,
 * end-of-generation ids, stop sequences, progress) on a tiny random model,
 * and the repetition statistic on hand-made sequences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "gw_engine.h"

static const int32_t prompt[] = {1, 10, 20, 30, 40};

struct env {
    gwt_llama c;
    gwt_weights w;
    gwt_buf file;
    gw_model *m;
    gw_ctx *x;
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    e->c = gwt_llama_default();
    gwt_weights_random(&e->c, &e->w);
    gwt_write_llama(&e->c, &e->w, GW_T_Q8_0, &e->file);
    gw_gguf *g;
    if (gw_gguf_open_buffer(e->file.p, e->file.len, "tiny.gguf", &g, NULL, 0) ||
        gw_model_from_gguf(g, &e->m, NULL, 0))
        return -1;
    gw_ctx_opts o = {.n_ctx = 64, .n_threads = 2};
    if (gw_ctx_new(e->m, &o, &e->x))
        return -1;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    gw_ctx_free(e->x);
    gw_model_free(e->m);
    gwt_free(&e->file);
    gwt_weights_free(&e->c, &e->w);
    free(e);
    return 0;
}

static gw_gen_result run(struct env *e, gw_gen_params *p, int32_t *out, size_t cap)
{
    gw_gen_result r;
    assert_int_equal(gw_generate(e->x, prompt, 5, p, out, cap, &r), 0);
    return r;
}

static void test_generate_same_seed_same_tokens_other_seed_differs(void **state)
{
    struct env *e = *state;
    gw_gen_params p = {.max_tokens = 32,
                       .sampling = {.temperature = 1.0f, .top_k = 40, .top_p = 0.95f, .seed = 7}};
    int32_t a[32], b[32], c[32];
    gw_gen_result ra = run(e, &p, a, 32), rb = run(e, &p, b, 32);
    p.sampling.seed = 8;
    gw_gen_result rc = run(e, &p, c, 32);
    assert_int_equal(ra.n_tokens, 32);
    assert_int_equal(rb.n_tokens, 32);
    assert_int_equal(rc.n_tokens, 32);
    assert_int_equal(ra.finish, GW_FINISH_LENGTH);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
}

static void test_generate_greedy_is_argmax_and_top_k_1_is_greedy(void **state)
{
    struct env *e = *state;
    gw_gen_params p = {.max_tokens = 16, .sampling = {.temperature = 0}};
    int32_t g[16], k1[16], manual[16];
    run(e, &p, g, 16);
    p.sampling = (gw_sampler_params){.temperature = 0.7f, .top_k = 1, .seed = 3};
    run(e, &p, k1, 16);
    assert_memory_equal(g, k1, sizeof g);
    /* by hand: argmax of eval's logits, fed back */
    float *lg;
    assert_int_equal(gw_ctx_eval(e->x, prompt, 5, 0, &lg), 0);
    for (int i = 0; i < 16; i++) {
        int best = 0;
        for (int v = 1; v < 96; v++)
            best = lg[v] > lg[best] ? v : best;
        manual[i] = best;
        assert_int_equal(gw_ctx_eval(e->x, &manual[i], 1, 5 + i, &lg), 0);
    }
    assert_memory_equal(g, manual, sizeof g);
}

struct counter {
    _Atomic int cancel;
    int cancel_at;
    int steps;
    uint64_t last_n;
    bool ns_positive;
    char text[1024];
    size_t text_len;
};

static void on_step(void *user, const gw_gen_step *st)
{
    struct counter *c = user;
    c->steps++;
    c->last_n = st->n_tokens;
    c->ns_positive &= st->step_ns > 0;
    if ((int)st->n_tokens == c->cancel_at)
        atomic_store_explicit(&c->cancel, 1, memory_order_relaxed);
}

static void test_generate_cancel_after_token_k_stops_with_k_tokens(void **state)
{
    struct env *e = *state;
    struct counter c = {.cancel_at = 5, .ns_positive = true};
    gw_gen_params p = {.max_tokens = 30,
                       .sampling = {.temperature = 0},
                       .cancel_flag = &c.cancel,
                       .on_step = on_step,
                       .user = &c};
    gw_gen_result r = run(e, &p, NULL, 0);
    assert_int_equal(r.n_tokens, 5);
    assert_int_equal(r.finish, GW_FINISH_CANCEL);
    assert_int_equal(c.steps, 5);
    assert_int_equal(c.last_n, 5);
    assert_true(c.ns_positive);
    assert_true(r.decode_ns > 0 && r.prompt_ns > 0);
}

static int cancel_cb(void *user)
{
    return ((struct counter *)user)->steps >= 3;
}

static void test_generate_cancel_callback_stops_between_tokens(void **state)
{
    struct env *e = *state;
    struct counter c = {.cancel_at = -1};
    gw_gen_params p = {.max_tokens = 30,
                       .sampling = {.temperature = 0},
                       .cancel_cb = cancel_cb,
                       .on_step = on_step,
                       .user = &c};
    gw_gen_result r = run(e, &p, NULL, 0);
    assert_int_equal(r.n_tokens, 3);
    assert_int_equal(r.finish, GW_FINISH_CANCEL);
}

static void test_generate_stops_on_end_of_generation_id_without_counting_it(void **state)
{
    struct env *e = *state;
    gw_gen_params p = {.max_tokens = 16, .sampling = {.temperature = 0}};
    int32_t g[16];
    run(e, &p, g, 16);
    int k = 0; /* first position whose token did not appear before */
    for (int i = 1; i < 16 && !k; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen |= g[j] == g[i];
        k = seen ? 0 : i;
    }
    assert_true(k > 0);
    int32_t eog[2] = {95, g[k]};
    p.eog_ids = eog;
    p.n_eog = g[0] == 95 ? 1 : 2;
    if (p.n_eog == 1)
        eog[0] = g[k];
    gw_gen_result r = run(e, &p, NULL, 0);
    assert_int_equal(r.finish, GW_FINISH_EOG);
    assert_int_equal(r.n_tokens, k);
}

static int piece(void *user, int32_t tok, char *buf, size_t cap)
{
    (void)user;
    return snprintf(buf, cap, "<%d>", tok);
}

static void on_text(void *user, const char *t, size_t n)
{
    struct counter *c = user;
    memcpy(c->text + c->text_len, t, n);
    c->text_len += n;
    c->text[c->text_len] = 0;
}

static void test_generate_stop_sequence_ends_and_is_not_shown(void **state)
{
    struct env *e = *state;
    gw_gen_params p = {.max_tokens = 8, .sampling = {.temperature = 0}};
    int32_t g[8];
    run(e, &p, g, 8);
    char stop[32], want[256] = "";
    /* the stop spans the end of token 2's text and the start of token 3's */
    snprintf(stop, sizeof stop, "%d><%d", g[2], g[3]);
    for (int i = 0; i < 2; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "<%d>", g[i]);
    strcat(want, "<");
    const char *stops[] = {stop};
    struct counter c = {.cancel_at = -1};
    p.stops = stops, p.n_stops = 1, p.piece = piece, p.on_text = on_text, p.user = &c;
    p.on_step = on_step;
    gw_gen_result r = run(e, &p, NULL, 0);
    assert_int_equal(r.finish, GW_FINISH_STOP);
    assert_int_equal(r.n_tokens, 4);
    assert_string_equal(c.text, want);
    /* without stops all text comes out */
    struct counter c2 = {.cancel_at = -1};
    p.n_stops = 0, p.user = &c2, p.max_tokens = 2;
    run(e, &p, NULL, 0);
    snprintf(want, sizeof want, "<%d><%d>", g[0], g[1]);
    assert_string_equal(c2.text, want);
}

static void test_stop_find_returns_first_occurrence(void **state)
{
    (void)state;
    const char *stops[] = {"", "cd", "bc"};
    assert_int_equal(gw_stop_find("abcdbc", 6, stops, 3), 1);
    assert_int_equal(gw_stop_find("abcdbc", 6, stops, 2), 2);
    assert_int_equal(gw_stop_find("ab", 2, stops, 3), -1);
}

static void push_all(gw_repeat *r, const char *s)
{
    for (; *s; s++)
        if (*s != ' ')
            gw_repeat_push(r, *s);
}

static void test_repeat_hand_made_sequences(void **state)
{
    (void)state;
    gw_repeat r;
    assert_int_equal(gw_repeat_init(&r, 32), 0);
    push_all(&r, "a b a b a b"); /* 6 tokens: no n-gram has repeated yet */
    assert_int_equal(r.period, 0);
    push_all(&r, "a b"); /* "abababab": the 6-gram ending here was seen 2 back */
    assert_int_equal(r.period, 2);
    assert_int_equal(r.run, 6);
    assert_int_equal(r.count, 4);
    gw_repeat_init(&r, 32);
    push_all(&r, "aaaaaaaa");
    assert_int_equal(r.period, 1);
    assert_int_equal(r.run, 7);
    assert_int_equal(r.count, 8);
    gw_repeat_init(&r, 32);
    push_all(&r, "xyz");
    assert_int_equal(r.period, 0);
    assert_int_equal(r.count, 0);
    gw_repeat_init(&r, 32);
    push_all(&r, "q abcdefg abcdef"); /* cycle abcdefg, 6 tokens into its second */
    assert_int_equal(r.period, 7);
    assert_int_equal(r.run, 6);
    assert_int_equal(r.count, 1);
    gw_repeat_push(&r, 'g');
    assert_int_equal(r.count, 2);
    gw_repeat_push(&r, 'x'); /* breaks the cycle */
    assert_int_equal(r.period, 0);
    assert_int_equal(r.run, 0);
    gw_repeat_init(&r, 2); /* a period above P is not seen */
    push_all(&r, "abcabcabcabc");
    assert_int_equal(r.period, 0);
    assert_int_equal(gw_repeat_init(&r, GW_REPEAT_MAX_PERIOD + 1), -EINVAL);
    assert_int_equal(gw_repeat_init(&r, 0), -EINVAL);
    assert_int_equal(gw_repeat_init(&r, GW_REPEAT_MAX_PERIOD), 0);
}

/* Against a brute-force recount after every token of a long sequence over
 * a small alphabet (many cycles start and break): what the statistic says
 * is true (its last run tokens equal those period before), and whenever
 * some period <= P has repeated GW_REPEAT_NGRAM tokens, it sees one. */
static void test_repeat_incremental_matches_brute_force(void **state)
{
    (void)state;
    enum { N = 4000, P = 128 };
    static int32_t s[N];
    uint64_t x = 99;
    gw_repeat r;
    gw_repeat_init(&r, P);
    int due = 0, seen = 0, p = 1;
    for (int n = 0; n < N; n++) {
        x = x * 6364136223846793005ull + 1;
        /* mostly copy a token from p back, to make long cycles; p changes
         * now and then */
        if ((x >> 20) % 32 == 0)
            p = (int)(x >> 58) % P + 1;
        s[n] = (n >= p && (x >> 33) % 16 != 0) ? s[n - p] : (int32_t)((x >> 40) % 5);
        gw_repeat_push(&r, s[n]);
        for (uint64_t i = 0; r.period && i < r.run; i++)
            assert_int_equal(s[n - (int)i], s[n - (int)i - r.period]);
        assert_int_equal(r.count, r.period ? (r.run + (uint64_t)r.period) / (uint64_t)r.period : 0);
        int longest = 0;
        for (int q = 1; q <= P; q++) {
            int run = 0;
            while (n - run - q >= 0 && s[n - run] == s[n - run - q])
                run++;
            longest = run > longest ? run : longest;
        }
        if (longest >= GW_REPEAT_NGRAM) {
            due++;
            seen += r.period != 0 && r.run >= GW_REPEAT_NGRAM;
        }
    }
    print_message("%d of %d positions with a repeated n-gram seen\n", seen, due);
    assert_true(due > 1000);
    assert_int_equal(seen, due);
}

/* A temperature sample's softmax runs level 2's expf where the CPU has it
 * and the C library's below: the same seed over the same logits makes the
 * same choices at every level, from the same probabilities bit for bit
 * (the sampler leaves them in the logits it was given, when neither top-k
 * nor top-p applies), over a vocabulary that is no multiple of 16 and
 * logits spread far enough that some exponentials underflow. */
static void test_sampler_same_choices_at_every_level(void **state)
{
    (void)state;
    enum { V = 1003, N = 300 };
    static float logits[V], w[V], probs[2][V];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < V; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        logits[i] = (float)(x >> 40) / 16777216.0f * 120.0f - 100.0f;
    }
    int32_t got[2][N];
    int top = gw_simd_set(-1), levels[2] = {0, top};
    for (int l = 0; l < 2; l++) {
        gw_simd_set(levels[l]);
        gw_sampler_params p = {.temperature = 0.8f, .top_p = 1.0f, .seed = 42};
        gw_sampler *smp;
        assert_int_equal(gw_sampler_new(&p, V, &smp), 0);
        for (int i = 0; i < N; i++) {
            memcpy(w, logits, sizeof w);
            got[l][i] = gw_sampler_sample(smp, w);
            assert_true(got[l][i] >= 0 && got[l][i] < V);
        }
        memcpy(probs[l], w, sizeof w);
        gw_sampler_free(smp);
    }
    gw_simd_set(-1);
    assert_memory_equal(got[0], got[1], sizeof got[0]);
    assert_memory_equal(probs[0], probs[1], sizeof probs[0]);
    int distinct = 0; /* it samples: not one token every time */
    for (int i = 1; i < N; i++)
        distinct += got[0][i] != got[0][0];
    assert_true(distinct > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_same_seed_same_tokens_other_seed_differs),
        cmocka_unit_test(test_generate_greedy_is_argmax_and_top_k_1_is_greedy),
        cmocka_unit_test(test_generate_cancel_after_token_k_stops_with_k_tokens),
        cmocka_unit_test(test_generate_cancel_callback_stops_between_tokens),
        cmocka_unit_test(test_generate_stops_on_end_of_generation_id_without_counting_it),
        cmocka_unit_test(test_generate_stop_sequence_ends_and_is_not_shown),
        cmocka_unit_test(test_stop_find_returns_first_occurrence),
        cmocka_unit_test(test_repeat_hand_made_sequences),
        cmocka_unit_test(test_repeat_incremental_matches_brute_force),
        cmocka_unit_test(test_sampler_same_choices_at_every_level),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
