/* test_watchdog_model.c - the repetition and divergence detectors on the
 * real model: SmolLM2-135M-Instruct, greedy, in this process. Each token
 * goes through the worker's repetition statistic (gw_generate's on_step)
 * and the worker's fold into gw_wd_judge with the default limits, exactly
 * what a worker publishes and the master judges; a kill cancels the
 * generation before the next token as the cancel word does.
 *
 * Looping prompts must be killed within 64 tokens of the loop's start (the
 * earliest token from which the generated text is periodic up to the kill,
 * found here independently of the detector); ordinary prompts must never be
 * killed. Prints the detection delays. Exits 77 (ctest: Skipped) without
 * models/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_supervisor.h"
#include "gw_engine.h"
#include "skip.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_GEN 160

static gw_model *model;
static gw_tokenizer *tok;
static gw_chat_template ct;
static gw_ctx *ctx;
static struct gw_wd_limits limits;
/* what generate() samples with and judges by: greedy and the defaults,
 * unless a test sets them */
static float temperature;
static uint64_t seed;
static const struct gw_wd_limits *judge_limits = &limits;

static int group_setup(void **state)
{
    (void)state;
    char err[512];
    if (gw_model_load(gw_need_model(), &model, err, sizeof(err)) != 0 ||
        gw_tokenizer_load(gw_model_gguf(model), &tok, err, sizeof(err)) != 0 ||
        gw_chat_template_from_gguf(&ct, gw_model_gguf(model), tok, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    gw_ctx_opts co = {.n_ctx = 512, .n_threads = 2};
    if (gw_ctx_new(model, &co, &ctx) != 0)
        return -1;
    /* the node defaults, as a config without a "watchdog" object gets */
    char secret[64], json[512];
    snprintf(secret, sizeof(secret), "/tmp/gw-wdm-secret-%d", (int)getpid());
    FILE *f = fopen(secret, "w");
    fputs("watchdog-model-test-secret-0123456789", f);
    fclose(f);
    snprintf(json, sizeof(json),
             "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, \"auth\": {\"keys\": [{\"kid\": "
             "\"k\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}]}}",
             secret);
    struct gw_config *cfg = NULL;
    int rc = gw_config_parse(&cfg, json, strlen(json), "t.json", err, sizeof(err));
    unlink(secret);
    if (rc != 0)
        return -1;
    limits = cfg->wd;
    gw_config_free(cfg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (ctx)
        gw_ctx_free(ctx);
    if (model) {
        gw_chat_template_free(&ct);
        gw_tokenizer_free(tok);
        gw_model_free(model);
    }
    return 0;
}

struct run {
    int32_t toks[MAX_GEN];
    size_t n;
    uint64_t rep_max;
    int reason;    /* first kill reason, -1 none */
    size_t killed; /* tokens when killed */
    uint32_t top1; /* the last published top-1 word (1 + percent, 0 greedy) */
};

static void on_step(void *user, const gw_gen_step *st)
{
    struct run *r = user;
    if (r->n < MAX_GEN)
        r->toks[r->n++] = st->token;
    uint64_t rep = gw_wd_rep_word((uint32_t)st->loop.period, st->loop.count, st->loop.run,
                                  st->loop.near, (uint32_t)st->loop.top1);
    r->rep_max = gw_wd_rep_fold(r->rep_max, rep);
    struct gw_wd_sample s = {.tokens = st->n_tokens, .rep = rep, .rep_max = r->rep_max};
    int why = gw_wd_judge(judge_limits, &s);
    r->top1 = (uint32_t)st->loop.top1;
    if (why >= 0 && r->reason < 0) {
        r->reason = why;
        r->killed = st->n_tokens;
    }
}

static int cancel(void *user)
{
    return ((struct run *)user)->reason >= 0;
}

/* Greedy generation of up to max_tokens for a prompt ("c:" = chat). */
static void generate(const char *prompt, int max_tokens, struct run *r)
{
    memset(r, 0, sizeof(*r));
    r->reason = -1;
    int chat = strncmp(prompt, "c:", 2) == 0;
    char *text = NULL, err[256];
    size_t len;
    if (chat) {
        gw_chat_msg m = {"user", 4, prompt + 2, strlen(prompt + 2)};
        assert_int_equal(gw_chat_format(&ct, &m, 1, &text, &len, err, sizeof(err)), 0);
    } else {
        text = strdup(prompt);
        len = strlen(prompt);
    }
    int32_t *ids;
    size_t n_ids;
    assert_int_equal(gw_tokenizer_encode(tok, text, len,
                                         GW_TOK_ADD_BOS | (chat ? GW_TOK_PARSE_SPECIAL : 0), &ids,
                                         &n_ids, err, sizeof(err)),
                     0);
    const int32_t *eog;
    size_t n_eog;
    gw_tokenizer_eog_ids(tok, &eog, &n_eog);
    gw_gen_params gp = {.max_tokens = max_tokens,
                        .sampling = {.temperature = temperature, .seed = seed},
                        .eog_ids = eog,
                        .n_eog = n_eog,
                        .cancel_cb = cancel,
                        .user = r,
                        .on_step = on_step};
    gw_gen_result res;
    assert_int_equal(gw_generate(ctx, ids, n_ids, &gp, NULL, 0, &res), 0);
    free(ids);
    free(text);
}

/* The earliest index s such that toks[s, e) is periodic with some period
 * p <= 32 and holds at least two cycles; e when there is none. */
static size_t loop_start(const int32_t *toks, size_t e)
{
    size_t best = e;
    for (size_t p = 1; p <= 32 && p <= e; p++) {
        size_t s = e - p; /* extend backwards while toks[t] == toks[t - p] */
        while (s > 0 && toks[s - 1] == toks[s - 1 + p])
            s--;
        if (e - s >= 2 * p && s < best)
            best = s;
    }
    return best;
}

static void test_looping_prompts_are_killed_within_64_tokens_of_the_loop(void **state)
{
    (void)state;
    static const char *const prompts[] = {
        "Say hello 1000 times: hello hello hello",
        "The word company repeated forever: company company company company",
        "Write the letter A 500 times: A A A A",
        "Say banana again and again: banana, banana, banana,",
        "Sing along forever: la la la la",
        "Write \"I love you\" 200 times. I love you. I love you. I love you.",
        "Repeat the word book infinitely: book book book",
        "Keep saying go forever: go go go go",
        "Count forever: one, one, one, one,",
        "The following list repeats forever: 1, 2, 3, 1, 2, 3, 1, 2, 3,",
        "c:Say the word banana again and again forever.",
        "c:Repeat the word poem forever: poem poem poem",
    };
    size_t n = sizeof(prompts) / sizeof(prompts[0]);
    size_t delays[32];
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        struct run r;
        generate(prompts[i], MAX_GEN, &r);
        if (r.reason < 0) {
            print_error("not killed in %d tokens: %s\n", MAX_GEN, prompts[i]);
            failures++;
            continue;
        }
        /* the loop is what precedes the kill; a divergence kill comes on the
         * first token off the cycle, which is not part of it */
        size_t e = r.reason == GW_WD_DIVERGENCE ? r.killed - 1 : r.killed;
        size_t s = loop_start(r.toks, e);
        delays[i] = r.killed - s;
        print_message("%-70s killed: %-10s at token %3zu, loop from token %3zu: delay %zu\n",
                      prompts[i], gw_wd_reason_name(r.reason), r.killed, s, delays[i]);
        if (s == e || delays[i] > 64) {
            print_error("killed %zu tokens after the loop started (at most 64): %s\n", delays[i],
                        prompts[i]);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
    size_t lo = SIZE_MAX, hi = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        lo = delays[i] < lo ? delays[i] : lo;
        hi = delays[i] > hi ? delays[i] : hi;
        sum += delays[i];
    }
    print_message("detection delay (tokens from loop start to kill): min %zu, mean %.1f, max %zu "
                  "over %zu prompts\n",
                  lo, (double)sum / (double)n, hi, n);
}

static void test_ordinary_prompts_are_never_killed(void **state)
{
    (void)state;
    static const char *const prompts[] = {
        "c:What is the capital of France?",
        "c:Write a short poem about the sea.",
        "c:Explain how photosynthesis works.",
        "c:Write a Python function that reverses a string.",
        "c:List five fruits.",
        "c:Give me three tips for better sleep.",
        "c:What is 12 times 12?",
        "c:Write a haiku about autumn.",
        "c:Describe the water cycle in simple terms.",
        "c:Write a C function that adds two integers.",
        "c:List the planets of the solar system.",
        "c:Explain what a neural network is.",
        "c:How do I make a cup of tea?",
        "c:What are the primary colors?",
        "c:Write a JavaScript function to sum an array.",
        "c:Give me a recipe for pancakes.",
        "c:Summarize the plot of Cinderella.",
        "c:What is the difference between weather and climate?",
        "c:Write a SQL query that selects all users older than 30.",
        "c:List three benefits of exercise.",
        "c:Tell me a short story about a dragon.",
        "c:Explain recursion to a child.",
        "Once upon a time, in a small village,",
        "The three most important inventions of the 20th century are",
    };
    int killed = 0;
    for (size_t i = 0; i < sizeof(prompts) / sizeof(prompts[0]); i++) {
        struct run r;
        generate(prompts[i], 64, &r);
        if (r.reason >= 0) {
            print_error("killed (%s at token %zu): %s\n", gw_wd_reason_name(r.reason), r.killed,
                        prompts[i]);
            killed++;
        }
    }
    assert_int_equal(killed, 0);
}

/* Collapsed sampling on the real model: a seeded run sampled at
 * temperature 0.7 that falls into a loop publishes its top-1 probability,
 * and the collapsed_sampling detector (mean top-1 >= 95% over 32 samples,
 * a cycle matched 12 tokens) kills it before the exact detector's 32-token
 * match would, or catches a loop that sampling keeps breaking before the
 * exact match gets there. Each seed is run twice, with and without the
 * collapsed detector; the seeds are fixed (a build with other kernels may
 * sample other tokens: 8 runs, of which one must end this way). */
static void test_sampled_loop_is_killed_as_collapsed_sampling(void **state)
{
    (void)state;
    static const char *const prompts[] = {
        "c:Repeat the word poem forever: poem poem poem",
        "c:Write a poem where every stanza is the same.",
    };
    struct gw_wd_limits off = limits;
    off.col_match = 0;
    int collapsed = 0, earlier = 0, runs = 0, looped = 0;
    temperature = 0.7f;
    for (size_t i = 0; i < sizeof(prompts) / sizeof(prompts[0]); i++)
        for (seed = 1; seed <= 4; seed++) {
            struct run on, without;
            judge_limits = &limits;
            generate(prompts[i], MAX_GEN, &on);
            judge_limits = &off;
            generate(prompts[i], MAX_GEN, &without);
            runs++;
            /* the same seed samples the same tokens up to the first kill */
            size_t same = on.n < without.n ? on.n : without.n;
            assert_memory_equal(on.toks, without.toks, same * sizeof(on.toks[0]));
            if (on.reason < 0)
                continue;
            looped++;
            assert_true(on.top1 > 0); /* sampled: the top-1 word is published */
            print_message("%-60s seed %llu: %-18s at %3zu; without it: %-18s at %3zu\n", prompts[i],
                          (unsigned long long)seed, gw_wd_reason_name(on.reason), on.killed,
                          without.reason >= 0 ? gw_wd_reason_name(without.reason) : "-",
                          without.killed);
            if (on.reason == GW_WD_COLLAPSED) {
                collapsed++;
                assert_int_not_equal(without.reason, GW_WD_COLLAPSED);
                earlier += without.reason < 0 || without.killed > on.killed;
            }
        }
    temperature = 0, seed = 0;
    judge_limits = &limits;
    print_message("collapsed sampling: %d of %d sampled runs killed, %d as collapsed_sampling, "
                  "%d of them earlier than without the detector\n",
                  looped, runs, collapsed, earlier);
    assert_true(collapsed >= 1);
    assert_int_equal(earlier, collapsed);
}

/* Cooperative kill: another thread sets the cancel flag (as the master
 * sets the slot's cancel word) at an arbitrary moment; the generation must
 * stop with at most the one token that was being computed, and the time
 * from the flag to gw_generate's return is what a kill costs. */
struct coop {
    _Atomic int flag;
    _Atomic uint64_t tokens;
    uint64_t set_ns, tokens_at_set;
    long delay_us;
};

static void coop_step(void *user, const gw_gen_step *st)
{
    struct coop *c = user;
    /* relaxed: a counter read on its own by the other thread */
    atomic_store_explicit(&c->tokens, st->n_tokens, memory_order_relaxed);
}

static void *coop_killer(void *arg)
{
    struct coop *c = arg;
    usleep((useconds_t)c->delay_us);
    c->tokens_at_set = atomic_load_explicit(&c->tokens, memory_order_relaxed);
    c->set_ns = gw_mono_ns();
    /* relaxed: a flag; gw_generate reads it relaxed before each token */
    atomic_store_explicit(&c->flag, 1, memory_order_relaxed);
    return NULL;
}

static void test_cooperative_cancel_stops_within_one_token(void **state)
{
    (void)state;
    static const char prompt[] = "Once upon a time, in a small village,";
    int32_t *ids;
    size_t n_ids;
    char err[256];
    assert_int_equal(gw_tokenizer_encode(tok, prompt, strlen(prompt), GW_TOK_ADD_BOS, &ids, &n_ids,
                                         err, sizeof(err)),
                     0);
    double ms[8], worst = 0, sum = 0;
    uint64_t worst_tokens = 0;
    int runs = 8;
    for (int i = 0; i < runs; i++) {
        struct coop c = {.delay_us = 150000 + i * 17000}; /* during decoding, not prefill */
        gw_gen_params gp = {.max_tokens = 400,
                            .sampling = {.temperature = 0},
                            .cancel_flag = &c.flag,
                            .on_step = coop_step,
                            .user = &c};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, coop_killer, &c), 0);
        gw_gen_result res;
        assert_int_equal(gw_generate(ctx, ids, n_ids, &gp, NULL, 0, &res), 0);
        uint64_t end = gw_mono_ns();
        pthread_join(th, NULL);
        assert_int_equal(res.finish, GW_FINISH_CANCEL);
        uint64_t after = res.n_tokens - c.tokens_at_set;
        assert_true(after <= 1); /* only the token that was in flight */
        ms[i] = (double)(end - c.set_ns) / 1e6;
        sum += ms[i];
        worst = ms[i] > worst ? ms[i] : worst;
        worst_tokens = after > worst_tokens ? after : worst_tokens;
    }
    free(ids);
    print_message("cooperative cancel: flag to stop mean %.2f ms, max %.2f ms, at most %llu token "
                  "after the flag (%d runs)\n",
                  sum / runs, worst, (unsigned long long)worst_tokens, runs);
}

int main(void)
{
    gw_need_model(); /* exit 77 (ctest: Skipped) without models/ */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_looping_prompts_are_killed_within_64_tokens_of_the_loop),
        cmocka_unit_test(test_ordinary_prompts_are_never_killed),
        cmocka_unit_test(test_sampled_loop_is_killed_as_collapsed_sampling),
        cmocka_unit_test(test_cooperative_cancel_stops_within_one_token),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
