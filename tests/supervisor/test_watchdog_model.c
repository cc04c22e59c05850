/* test_watchdog_model.c - the repetition and divergence detectors on the
 * real model: SmolLM2-135M-Instruct, greedy, in this process. Each token
 * goes through the worker's repetition statistic (gw_generate's on_step)
 * and the worker's fold into gw_wd_judge with the default limits, exactly
 * what a worker publishes and the master judges; a kill cancels the
 * generation before the next token as the cancel word does.
 *
 * What loops is decided by the text, not by the prompt: each greedy case
 * is generated to its end unwatched (the first kill is noted, not
 * enforced: greedy, the stream up to a kill is the same either way), and
 * it loops when LOOP_MIN tokens or more of it in a row are periodic with a
 * period <= 32 (two cycles at least; found here independently of the
 * detector), whether or not the model breaks out of the loop later, or
 * when a divergence kill ends a repetition. A build whose kernels round
 * differently makes different near-ties, and with them different texts:
 * the prompts are chosen to loop or not, and most do as chosen
 * (asserted), but a loop the model falls into after an ordinary question
 * is a loop to kill.
 *
 * Looping texts must be killed within 64 tokens of the loop's start (the
 * earliest token from which the text is periodic up to the kill); texts
 * that do not loop must never be killed, and a looping text never before
 * its loop starts. Prints the detection delays. Exits 77 (ctest: Skipped)
 * without models/. */
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
#define LOOP_MIN 32 /* a periodic stretch this long or longer is a loop */

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
    int watch_only; /* note the first kill, do not cancel */
    int reason;     /* first kill reason, -1 none */
    size_t killed;  /* tokens when killed */
    uint32_t top1;  /* the last published top-1 word (1 + percent, 0 greedy) */
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
    const struct run *r = user;
    return !r->watch_only && r->reason >= 0;
}

/* Greedy generation of up to max_tokens for a prompt ("c:" = chat). */
static void generate_as(const char *prompt, int max_tokens, int watch_only, struct run *r)
{
    memset(r, 0, sizeof(*r));
    r->reason = -1;
    r->watch_only = watch_only;
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

static void generate(const char *prompt, int max_tokens, struct run *r)
{
    generate_as(prompt, max_tokens, 0, r);
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

/* An unwatched run loops: some stretch of it, LOOP_MIN tokens or more and
 * two cycles at least, is periodic with a period p <= 32; *from is the
 * earliest such stretch's start. For each p, a run of positions i with
 * toks[i] == toks[i - p] from i0 to i1 makes toks[i0 - p, i1) p-periodic. */
static int loops(const struct run *r, size_t *from)
{
    *from = r->n;
    for (size_t p = 1; p <= 32; p++)
        for (size_t i = p; i < r->n;) {
            size_t i1 = i;
            while (i1 < r->n && r->toks[i1] == r->toks[i1 - p])
                i1++;
            size_t len = i1 - i + p;
            if (i1 > i && len >= LOOP_MIN && len >= 2 * p && i - p < *from)
                *from = i - p;
            i = i1 > i ? i1 : i + 1;
        }
    return *from < r->n;
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
    size_t delays[32], n_loops = 0;
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        struct run r;
        size_t from;
        generate_as(prompts[i], MAX_GEN, 1, &r);
        int loop = loops(&r, &from);
        /* the loop is what precedes the kill; a divergence kill comes on the
         * first token off the cycle, which is not part of it, and ends a
         * repetition the text has left: that repetition is its loop */
        size_t e = r.reason == GW_WD_DIVERGENCE ? r.killed - 1 : r.killed;
        size_t s = r.reason >= 0 ? loop_start(r.toks, e) : r.n;
        if (r.reason == GW_WD_DIVERGENCE && s < e && !loop)
            loop = 1, from = s;
        if (!loop) {
            print_message("%-70s does not loop (%zu tokens)%s\n", prompts[i], r.n,
                          r.reason >= 0 ? ": killed" : "");
            if (r.reason >= 0) {
                print_error("killed (%s at token %zu) but it does not loop: %s\n",
                            gw_wd_reason_name(r.reason), r.killed, prompts[i]);
                failures++;
            }
            continue;
        }
        if (r.reason < 0) {
            print_error("not killed in %d tokens: %s\n", MAX_GEN, prompts[i]);
            failures++;
            continue;
        }
        delays[n_loops++] = r.killed - s;
        print_message("%-70s killed: %-10s at token %3zu, loop from token %3zu: delay %zu\n",
                      prompts[i], gw_wd_reason_name(r.reason), r.killed, s, r.killed - s);
        if (s == e || r.killed < from || r.killed - s > 64) {
            print_error("killed %zu tokens after the loop started (at most 64): %s\n", r.killed - s,
                        prompts[i]);
            failures++;
        }
    }
    /* the prompts are meant to loop: most must, or this tests nothing */
    assert_true(n_loops >= n - 3);
    assert_int_equal(failures, 0);
    size_t lo = SIZE_MAX, hi = 0, sum = 0;
    for (size_t i = 0; i < n_loops; i++) {
        lo = delays[i] < lo ? delays[i] : lo;
        hi = delays[i] > hi ? delays[i] : hi;
        sum += delays[i];
    }
    print_message("detection delay (tokens from loop start to kill): min %zu, mean %.1f, max %zu "
                  "over %zu looping texts of %zu prompts\n",
                  lo, (double)sum / (double)n_loops, hi, n_loops, n);
}

static void test_ordinary_prompts_are_killed_only_where_their_text_loops(void **state)
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
    enum { MAX = 64 };
    size_t n = sizeof(prompts) / sizeof(prompts[0]), n_looping = 0;
    int wrong = 0;
    for (size_t i = 0; i < n; i++) {
        struct run r;
        size_t from;
        generate_as(prompts[i], MAX, 1, &r);
        int loop = loops(&r, &from);
        n_looping += (size_t)loop;
        if (loop)
            print_message("%s falls into a loop at token %zu: %s at %zu\n", prompts[i], from,
                          r.reason >= 0 ? gw_wd_reason_name(r.reason) : "not killed",
                          r.reason >= 0 ? r.killed : r.n);
        if (r.reason >= 0 && (!loop || r.killed < from)) {
            print_error("killed (%s at token %zu)%s: %s\n", gw_wd_reason_name(r.reason), r.killed,
                        loop ? " before its loop" : "", prompts[i]);
            wrong++;
        }
    }
    print_message("%zu ordinary prompts, %zu of their texts loop\n", n, n_looping);
    assert_int_equal(wrong, 0);
    /* they are ordinary: most must not loop, or this tests nothing */
    assert_true(n_looping <= 4);
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
        cmocka_unit_test(test_ordinary_prompts_are_killed_only_where_their_text_loops),
        cmocka_unit_test(test_sampled_loop_is_killed_as_collapsed_sampling),
        cmocka_unit_test(test_cooperative_cancel_stops_within_one_token),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
