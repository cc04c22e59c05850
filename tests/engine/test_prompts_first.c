/* test_prompts_first.c: the worker's step composition, "priority steps"
 * (worker/worker_sched.c): which generations of a step run, given which
 * are still prefilling, their tenants' counters and what the last step
 * was. Real generations on a tiny random model, stepped by the engine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "worker_internal.h"

struct env {
    gwt_llama c;
    gwt_weights w;
    gwt_buf file;
    gw_model *m;
    gw_ctx *x;
    gw_gen *g[5]; /* g[0], g[1]: decoding; g[2], g[3]: new (g[2] two chunks) */
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
    gw_ctx_opts o = {.n_ctx = 64, .n_threads = 1, .max_seqs = 5, .n_batch = 8};
    if (gw_ctx_new(e->m, &o, &e->x))
        return -1;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < 5; i++)
        gw_gen_free(e->g[i]);
    gw_ctx_free(e->x);
    gw_model_free(e->m);
    gwt_free(&e->file);
    gwt_weights_free(&e->c, &e->w);
    free(e);
    return 0;
}

static gw_gen *gen(struct env *e, int n_prompt)
{
    int32_t ids[32];
    for (int i = 0; i < n_prompt; i++)
        ids[i] = (int32_t)(1 + i * 7 % 50);
    gw_gen_params p = {.max_tokens = 16, .sampling = {.temperature = 0}};
    gw_gen *g = NULL;
    assert_int_equal(gw_gen_new(e->x, ids, (size_t)n_prompt, &p, NULL, 0, &g), 0);
    return g;
}

static void expect(const unsigned char *keep, const char *want, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(keep[i], want[i] - '0');
}

/* gw__sched_priority over gens[0, strlen(want)): keep[i] is want[i]
 * ('1' runs), the count it returns is the 1s', and *last ends as
 * want_last. */
static void prio_is(int *last, gw_gen *const *gens, const uint64_t *vtc, uint64_t lead,
                    const char *want, int want_last)
{
    unsigned char keep[8];
    int n = (int)strlen(want), runs = 0;
    for (int i = 0; i < n; i++)
        runs += want[i] == '1';
    assert_int_equal(gw__sched_priority(last, gens, vtc, lead, n, keep), runs);
    expect(keep, want, n);
    assert_int_equal(*last, want_last);
}

static void test_prompts_run_alone_every_other_step(void **state)
{
    struct env *e = *state;
    gw_step_info info = {0};
    e->g[0] = gen(e, 3);
    e->g[1] = gen(e, 8);
    assert_int_equal(gw_batch_step(e->x, e->g, 2, 64, &info), 0); /* both prefilled */
    assert_int_equal(gw_gen_prompt_fed(e->g[1]), 8);
    e->g[2] = gen(e, 9); /* two chunks of 8, within twice g[3]'s 5 */
    e->g[3] = gen(e, 5);
    int last = 0;

    /* nothing prefilling: all run, whatever the last step was */
    prio_is(&last, e->g, NULL, 0, "11", 0);

    /* two newcomers among decoders: only they run, in their order */
    gw_gen *mix[4] = {e->g[2], e->g[0], e->g[3], e->g[1]};
    prio_is(&last, mix, NULL, 0, "1010", 1);
    /* the next step is everyone's, though they still prefill */
    prio_is(&last, mix, NULL, 0, "1111", 0);

    /* run the prompts-only step: g[3] is done, g[2] has a chunk left */
    gw_gen *pre[2] = {e->g[2], e->g[3]};
    assert_int_equal(gw_batch_step(e->x, pre, 2, 64, &info), 0);
    assert_int_equal(gw_gen_prompt_fed(e->g[2]), 8);
    assert_int_equal(gw_gen_prompt_fed(e->g[3]), 5);
    prio_is(&last, mix, NULL, 0, "1000", 1);

    /* all prefilling: all run, and the alternation starts again */
    last = 1;
    gw_gen *only[1] = {e->g[2]};
    prio_is(&last, only, NULL, 0, "1", 0);
}

/* Shortest prompts first: among prompts that arrive together, those with
 * more than twice the fewest tokens left sit the priority step out, with
 * the decoders; the next step is everyone's. Twice exactly is still in. */
static void test_shortest_prompts_run_first(void **state)
{
    struct env *e = *state;
    gw_step_info info = {0};
    e->g[0] = gen(e, 3);
    assert_int_equal(gw_batch_step(e->x, e->g, 1, 64, &info), 0); /* g[0] decodes */
    e->g[1] = gen(e, 20);
    e->g[2] = gen(e, 3);
    e->g[3] = gen(e, 6); /* twice g[2]'s 3 exactly: in */
    int last = 0;
    prio_is(&last, e->g, NULL, 0, "0011", 1);
    prio_is(&last, e->g, NULL, 0, "1111", 0);

    /* all prefilling, of unlike lengths: the short ones first */
    prio_is(&last, e->g + 1, NULL, 0, "011", 1);
    last = 0;

    /* g[2] prefilled: g[3] (6 left) is now the shortest, and g[1]'s 12
     * after one chunk of 8 are twice 6 */
    gw_gen *two[2] = {e->g[1], e->g[2]};
    assert_int_equal(gw_batch_step(e->x, two, 2, 64, &info), 0);
    assert_int_equal(gw_gen_prompt_fed(e->g[1]), 8);
    prio_is(&last, e->g, NULL, 0, "0101", 1);
}

/* Less served first: with every sequence decoding, a tenant's counter
 * more than `lead` past another's makes the sequences within lead of the
 * smallest counter a priority step's, every other step, when they are
 * fewer than the others; within the lead, with lead 0, with no counters,
 * or as many light as heavy, all run. A sequence without a tenant
 * (UINT64_MAX) never has priority by service. */
static void test_less_served_run_alone_every_other_step(void **state)
{
    struct env *e = *state;
    gw_step_info info = {0};
    for (int i = 0; i < 5; i++)
        e->g[i] = gen(e, 3 + i);
    assert_int_equal(gw_batch_step(e->x, e->g, 5, 64, &info), 0); /* all prefilled */
    int last = 0;

    /* the light tenant (1000) and the one near it (9000) lead by at most
     * 8000 from the smallest; 20000, 9001 and 25000 are past it */
    uint64_t vtc[5] = {20000, 1000, 9001, 9000, 25000};
    prio_is(&last, e->g, vtc, 8000, "01010", 1);
    prio_is(&last, e->g, vtc, 8000, "11111", 0);

    /* two light against two heavy: all run */
    prio_is(&last, e->g, vtc, 8000, "1111", 0);

    /* lead 0: prompts only, and none is prefilling */
    prio_is(&last, e->g, vtc, 0, "11111", 0);

    /* all within the lead: all run */
    uint64_t close[4] = {5000, 1000, 9000, 7000};
    prio_is(&last, e->g, close, 8000, "1111", 0);

    /* exactly the lead apart is not past it */
    uint64_t edge[4] = {9000, 1000, 1000, 1000};
    prio_is(&last, e->g, edge, 8000, "1111", 0);

    /* no tenant: neither the smallest counter nor priority */
    uint64_t none[4] = {UINT64_MAX, 1000, 30000, UINT64_MAX};
    prio_is(&last, e->g, none, 8000, "0100", 1);
    prio_is(&last, e->g, none, 8000, "1111", 0);

    /* a counter near the top of the range: no overflow */
    uint64_t top[4] = {UINT64_MAX - 1, 0, UINT64_MAX - 5, UINT64_MAX - 3};
    last = 0;
    prio_is(&last, e->g, top, 8000, "0100", 1);
}

/* One light sequence against one heavy (an isolation round: the flood's
 * one admitted answer, whose tenant's counter was the smaller, beside
 * another tenant's 8-token answer): a step of one row saves the other
 * row's time and costs the sequence left out a whole step, so both run
 * every step. Against two heavy, the light one gets its steps. */
static void test_one_against_one_runs_together(void **state)
{
    struct env *e = *state;
    gw_step_info info = {0};
    for (int i = 0; i < 3; i++)
        e->g[i] = gen(e, 3 + i);
    assert_int_equal(gw_batch_step(e->x, e->g, 3, 64, &info), 0); /* all prefilled */
    int last = 0;
    uint64_t vtc[3] = {106000, 195000, 195000};
    prio_is(&last, e->g, vtc, 16000, "11", 0);
    prio_is(&last, e->g, vtc, 16000, "11", 0);
    prio_is(&last, e->g, vtc, 16000, "100", 1);
    prio_is(&last, e->g, vtc, 16000, "111", 0);
}

/* A newcomer's prompt and a light tenant's decoding share the priority
 * step; the heavy tenant's decoding sits it out. */
static void test_prompts_and_less_served_share_the_priority_step(void **state)
{
    struct env *e = *state;
    gw_step_info info = {0};
    e->g[0] = gen(e, 3);
    e->g[1] = gen(e, 4);
    e->g[2] = gen(e, 5);
    assert_int_equal(gw_batch_step(e->x, e->g, 3, 64, &info), 0);
    e->g[3] = gen(e, 6); /* still to prefill */
    int last = 0;
    uint64_t vtc[4] = {50000, 2000, 50000, 50000}; /* the newcomer: a heavy tenant's */
    prio_is(&last, e->g, vtc, 8000, "0101", 1);
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test_setup_teardown(test_prompts_run_alone_every_other_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shortest_prompts_run_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_less_served_run_alone_every_other_step, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_one_against_one_runs_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prompts_and_less_served_share_the_priority_step, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
