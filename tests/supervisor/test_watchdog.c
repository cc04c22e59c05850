/* test_watchdog.c - the watchdog's detectors and the output guard, without
 * processes: scripted token sequences go through the worker's repetition
 * statistic (gw_repeat, what every worker publishes) and the fold the
 * worker applies (gw_wd_rep_fold) into gw_wd_judge, the function the
 * master's scan calls; text goes through the guard in chosen chunks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_supervisor.h"
#include "gw_engine.h"
#include "gw_worker.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static char secret_path[128];

static struct gw_config *load_config(const char *watchdog_json, char *err, size_t errlen)
{
    if (!secret_path[0]) {
        snprintf(secret_path, sizeof(secret_path), "/tmp/gw-wd-secret-%d", (int)getpid());
        FILE *f = fopen(secret_path, "w");
        fputs("watchdog-test-secret-0123456789abcdef", f);
        fclose(f);
    }
    char text[4096];
    snprintf(
        text, sizeof(text),
        "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"},"
        " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}]},"
        " \"plans\": {\"strict\": {\"watchdog\": {\"max_tokens\": 100,"
        "   \"repetition\": {\"min_tokens\": 12}}}, \"plain\": {}},"
        " \"tenants\": {\"acme\": {\"plan\": \"strict\"}, \"bob\": {\"plan\": \"plain\"}}%s%s}",
        secret_path, watchdog_json ? ", " : "", watchdog_json ? watchdog_json : "");
    struct gw_config *cfg = NULL;
    if (gw_config_parse(&cfg, text, strlen(text), "wd.json", err, errlen) != 0)
        return NULL;
    return cfg;
}

/* A config with the given plans, tenants and further top-level keys. */
static struct gw_config *load_full(const char *plans, const char *tenants, const char *extra,
                                   char *err, size_t errlen)
{
    struct gw_config *c0 = load_config(NULL, err, errlen); /* writes the secret file */
    gw_config_free(c0);
    char text[8192];
    snprintf(
        text, sizeof(text),
        "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"},"
        " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}]},"
        " \"plans\": {%s}, \"tenants\": {%s}%s%s}",
        secret_path, plans, tenants, extra ? ", " : "", extra ? extra : "");
    struct gw_config *cfg = NULL;
    if (gw_config_parse(&cfg, text, strlen(text), "wd.json", err, errlen) != 0)
        return NULL;
    return cfg;
}

static struct gw_wd_limits default_limits(void)
{
    char err[1024];
    struct gw_config *cfg = load_config(NULL, err, sizeof(err));
    if (!cfg)
        fail_msg("config: %s", err);
    struct gw_wd_limits l = cfg->wd;
    gw_config_free(cfg);
    return l;
}

/* Feeds toks[0, n) the way a worker does (digits: the digit map of the
 * near statistic, NULL none; top1: every sample's top-1 probability, < 0
 * greedy) and judges after each token as the master does. Returns the
 * 1-based token count at the first kill (and its reason in *why), or 0
 * when never killed. */
/* The repetitions the prompt asked for, as the slot carries them (0 none). */
static uint32_t asked;

static size_t drive_full(const struct gw_wd_limits *l, const int32_t *toks, size_t n,
                         const uint8_t *digits, float top1, int *why)
{
    gw_loopwatch w;
    assert_int_equal(gw_loopwatch_init(&w, GW_REPEAT_MAX_PERIOD, digits), 0);
    uint64_t rep_max = 0;
    for (size_t i = 0; i < n; i++) {
        gw_loopwatch_push(&w, toks[i], top1);
        gw_loop_stat ls;
        gw_loopwatch_stat(&w, &ls);
        uint64_t rep =
            gw_wd_rep_word((uint32_t)ls.period, ls.count, ls.run, ls.near, (uint32_t)ls.top1);
        rep_max = gw_wd_rep_fold(rep_max, rep);
        struct gw_wd_sample s = {.tokens = i + 1, .rep = rep, .rep_max = rep_max, .asked = asked};
        int reason = gw_wd_judge(l, &s);
        if (reason >= 0) {
            *why = reason;
            return i + 1;
        }
    }
    *why = -1;
    return 0;
}

static size_t drive(const struct gw_wd_limits *l, const int32_t *toks, size_t n, int *why)
{
    return drive_full(l, toks, n, NULL, -1, why);
}

/* Distinct tokens (no cycle of period <= 32 ever repeats): an LCG over a
 * large vocabulary, every value unique in a window of 64. */
static size_t ordinary(int32_t *out, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        out[i] = (int32_t)(1000 + i * 7 % 40000 + (seed >> 16) % 7 * 40000);
    }
    return n;
}

/* ------------------------------------------------------- repetition */

static void test_repetition_kills_a_three_token_cycle_at_the_configured_cover(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    assert_int_equal(l.rep_period, 128);
    assert_int_equal(l.rep_count, 3);
    assert_int_equal(l.rep_tokens, 40);
    assert_int_equal(l.rep_match, 32);
    int32_t t[200];
    size_t n = ordinary(t, 10, 1);
    for (size_t i = 0; i < 120; i++)
        t[n++] = (int32_t)(7 + i % 3); /* 7 8 9 7 8 9 ... from token 11 on */
    int why;
    size_t k = drive(&l, t, n, &why);
    /* the second cycle starts at loop token 4; 32 tokens match at the 35th
     * (before cover = 3 * floor((run + 3) / 3) reaches 40) */
    assert_int_equal(why, GW_WD_REPETITION);
    assert_int_equal(k, 10 + 3 + 32);
    l.rep_match = 0; /* the cover rule alone: 40 first at 42 loop tokens */
    assert_int_equal(drive(&l, t, n, &why), 10 + 42);
}

static void test_repetition_kills_a_single_token_loop_after_rep_tokens(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    int32_t t[100];
    size_t n = ordinary(t, 5, 2);
    for (int i = 0; i < 90; i++)
        t[n++] = 42;
    int why;
    /* period 1: the first 42 is the cycle, the next 32 match it;
     * divergence does not fire while the loop keeps going */
    assert_int_equal(drive(&l, t, n, &why), 5 + 1 + 32);
    assert_int_equal(why, GW_WD_REPETITION);
}

static void test_repetition_of_a_long_period_is_killed_32_tokens_into_its_second_cycle(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    int32_t t[200];
    size_t n = ordinary(t, 3, 3);
    int32_t cyc[30];
    ordinary(cyc, 30, 99);
    for (int rep = 0; rep < 5; rep++)
        for (int i = 0; i < 30; i++)
            t[n++] = cyc[i];
    int why;
    /* period 30: one cycle, then 32 tokens of the second */
    assert_int_equal(drive(&l, t, n, &why), 3 + 30 + 32);
    assert_int_equal(why, GW_WD_REPETITION);
    l.rep_match = 0; /* the cover rule needs three cycles: 90 loop tokens */
    assert_int_equal(drive(&l, t, n, &why), 3 + 90);
}

static void test_ordinary_tokens_are_never_killed(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    l.max_tokens = 0; /* only the content detectors */
    int32_t *t = malloc(5000 * sizeof(*t));
    ordinary(t, 5000, 7);
    int why;
    assert_int_equal(drive(&l, t, 5000, &why), 0);
    assert_int_equal(why, -1);
    free(t);
}

static void test_a_period_above_max_period_is_not_a_repetition(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    l.rep_period = 4;
    int32_t t[100];
    size_t n = 0;
    for (int i = 0; i < 90; i++)
        t[n++] = (int32_t)(100 + i % 5); /* period 5 */
    int why;
    assert_int_equal(drive(&l, t, n, &why), 0);
}

static void test_a_128_token_paragraph_is_killed_and_a_200_token_one_is_not(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    int32_t t[700], cyc[200];
    size_t n = ordinary(t, 7, 5);
    ordinary(cyc, 200, 77);
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < 128; i++)
            t[n++] = cyc[i];
    int why;
    assert_int_equal(drive(&l, t, n, &why), 7 + 128 + 32);
    assert_int_equal(why, GW_WD_REPETITION);
    n = ordinary(t, 7, 5);
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < 200; i++)
            t[n++] = cyc[i];
    assert_int_equal(drive(&l, t, n, &why), 0); /* period 200 > max_period 128 */
    l.rep_period = 256;
    assert_int_equal(drive(&l, t, n, &why), 7 + 200 + 32);
}

/* Token ids 10..19 are the digits 0..9 (the digit map below); a line is
 * "<number> . Texas \n". */
static uint8_t digit_map[1 << 19]; /* every id ordinary() makes */
static size_t counting_line(int32_t *t, int number, int32_t word)
{
    size_t n = 0;
    char buf[16];
    int len = snprintf(buf, sizeof(buf), "%d", number);
    for (int i = 0; i < len; i++)
        t[n++] = 10 + (buf[i] - '0');
    t[n++] = 50; /* "." */
    t[n++] = word;
    t[n++] = 52; /* "\n" */
    return n;
}

static void test_near_repetition_kills_a_counting_list_the_exact_one_misses(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    assert_int_equal(l.near_period, 128);
    assert_int_equal(l.near_match, 48);
    for (int i = 10; i < 20; i++)
        digit_map[i] = 1;
    int32_t t[800];
    size_t n = ordinary(t, 9, 6), second = 0;
    for (int k = 94; k < 200; k++) { /* crosses 99 -> 100: one more digit token */
        n += counting_line(t + n, k, 51);
        if (k == 94)
            second = n; /* where the first repeated line starts */
    }
    int why;
    size_t at = drive_full(&l, t, n, digit_map, -1, &why);
    assert_int_equal(why, GW_WD_NEAR_REPETITION);
    /* 48 tokens matched, the digit runs the n-gram stood for counted as
     * one: 50 tokens after the first repeated line began (spec: 64) */
    assert_int_equal(at - second, 50);
    assert_int_equal(drive_full(&l, t, n, NULL, -1, &why), 0); /* the exact statistic alone */
    l.near_match = 0;
    assert_int_equal(drive_full(&l, t, n, digit_map, -1, &why), 0);
}

/* Tokens in counting lines 1 to k: "N" (one token a digit), ".", a word,
 * a newline. */
static size_t tokens_through(int k)
{
    size_t n = 0;
    for (int i = 1; i <= k; i++)
        n += 3 + (i < 10 ? 1 : i < 100 ? 2 : 3);
    return n;
}

/* The near count is cycles, not tokens: "1. Texas" to "120. Texas" is 120
 * lines whether a number took one digit token or three, so a prompt that
 * asked for 50 lines is cut after its 58th (the slack), not sooner when
 * its numbers grow a digit; the cap (requested_max 100) bounds a larger
 * count. */
static void test_near_count_counts_lines_and_an_asked_list_runs_its_length(void **state)
{
    (void)state;
    for (int i = 10; i < 20; i++)
        digit_map[i] = 1;
    int32_t t[800];
    size_t n = 0;
    gw_loopwatch w;
    assert_int_equal(gw_loopwatch_init(&w, GW_REPEAT_MAX_PERIOD, digit_map), 0);
    gw_loop_stat ls = {0};
    for (int k = 1; k <= 120; k++) {
        size_t from = n;
        n += counting_line(t + n, k, 51);
        for (size_t i = from; i < n; i++)
            gw_loopwatch_push(&w, t[i], -1);
        gw_loopwatch_stat(&w, &ls);
    }
    assert_int_equal(ls.near, 1);
    assert_int_equal(ls.period, 4); /* digits, ".", word, newline */
    /* 119 lines repeated the first (ends on a whole line): 120 cycles */
    assert_int_equal(ls.count, 120);
    assert_int_equal(ls.run, n - 4); /* every token after the first line */
    /* judged as the master does (asked is reset before any assertion, so
     * a failure here leaves the other tests alone) */
    struct gw_wd_limits l = default_limits();
    int why_plain, why_50, why_100, why_120;
    size_t plain = drive_full(&l, t, n, digit_map, -1, &why_plain);
    asked = 50;
    size_t at_50 = drive_full(&l, t, n, digit_map, -1, &why_50);
    asked = 100;
    size_t at_100 = drive_full(&l, t, n, digit_map, -1, &why_100);
    asked = 120; /* above requested_max: the cap's 114 cycles */
    size_t at_120 = drive_full(&l, t, n, digit_map, -1, &why_120);
    asked = 0;
    assert_int_equal(l.rep_asked_max, 100);
    assert_int_equal(why_plain, GW_WD_NEAR_REPETITION);
    /* asked for 50: 50 + 6 + 2 = 58 cycles, killed once line 59 is whole */
    assert_int_equal(why_50, GW_WD_NEAR_REPETITION);
    assert_true(plain < at_50);
    assert_int_equal(at_50, tokens_through(59));
    /* asked for 100 or more: 114 cycles, killed once line 115 is whole */
    assert_int_equal(why_100, GW_WD_NEAR_REPETITION);
    assert_int_equal(at_100, tokens_through(115));
    assert_int_equal(why_120, GW_WD_NEAR_REPETITION);
    assert_int_equal(at_120, tokens_through(115));
}

static void test_near_repetition_ignores_a_list_whose_words_change(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    for (int i = 10; i < 20; i++)
        digit_map[i] = 1;
    int32_t t[800];
    size_t n = ordinary(t, 9, 6);
    for (int k = 1; k < 120; k++)
        n += counting_line(t + n, k, 1000 + k); /* "1. Texas", "2. Ohio", ... */
    int why;
    assert_int_equal(drive_full(&l, t, n, digit_map, -1, &why), 0);
}

static void test_collapsed_sampling_kills_a_sampled_loop_at_its_own_match(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    assert_int_equal(l.col_top1, 95);
    assert_int_equal(l.col_match, 12);
    int32_t t[200], cyc[20];
    size_t n = ordinary(t, 40, 8); /* fills the 32-sample top-1 window */
    ordinary(cyc, 20, 88);
    for (int rep = 0; rep < 5; rep++)
        for (int i = 0; i < 20; i++)
            t[n++] = cyc[i];
    int why;
    assert_int_equal(drive_full(&l, t, n, NULL, 0.99f, &why), 40 + 20 + 12);
    assert_int_equal(why, GW_WD_COLLAPSED);
    /* a spread distribution: the plain repetition limit */
    assert_int_equal(drive_full(&l, t, n, NULL, 0.60f, &why), 40 + 20 + 32);
    assert_int_equal(why, GW_WD_REPETITION);
    /* greedy runs publish no top-1: never collapsed */
    assert_int_equal(drive_full(&l, t, n, NULL, -1, &why), 40 + 20 + 32);
    assert_int_equal(why, GW_WD_REPETITION);
}

static void test_config_names_bad_repetition_limits_exactly(void **state)
{
    (void)state;
    char err[2048];
    struct gw_config *cfg =
        load_config("\"watchdog\": {\"repetition\": {\"max_period\": 257, \"min_match\": -1},"
                    " \"near_repetition\": {\"max_period\": 300, \"min_macth\": 3},"
                    " \"collapsed_sampling\": {\"min_top1_percent\": 101, \"min_match\": 70000}}",
                    err, sizeof(err));
    assert_null(cfg);
    static const char *const want[] = {
        "config: watchdog.repetition.max_period: expected an integer in [0, 256]",
        "config: watchdog.repetition.min_match: expected an integer in [0, 65535]",
        "config: watchdog.near_repetition.min_macth: unknown key",
        "config: watchdog.near_repetition.max_period: expected an integer in [0, 256]",
        "config: watchdog.collapsed_sampling.min_top1_percent: expected an integer in [0, 100]",
        "config: watchdog.collapsed_sampling.min_match: expected an integer in [0, 65535]",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(err, want[i]))
            fail_msg("missing \"%s\" in:\n%s", want[i], err);
    /* the node's own, and 0 turns a rule off there */
    cfg = load_config("\"watchdog\": {\"repetition\": {\"min_match\": 0},"
                      " \"near_repetition\": {\"max_period\": 64, \"min_match\": 0},"
                      " \"collapsed_sampling\": {\"min_top1_percent\": 90, \"min_match\": 20}}",
                      err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->wd.rep_match, 0);
    assert_int_equal(cfg->wd.near_period, 64);
    assert_int_equal(cfg->wd.near_match, 0);
    assert_int_equal(cfg->wd.col_top1, 90);
    assert_int_equal(cfg->wd.col_match, 20);
    gw_config_free(cfg);
    /* a plan sets its own, field by field over the node's */
    cfg = load_full("\"strict\": {\"watchdog\": {\"near_repetition\": {\"min_match\": 60},"
                    " \"collapsed_sampling\": {\"min_top1_percent\": 99}}}",
                    "\"acme\": {\"plan\": \"strict\"}", NULL, err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    struct gw_wd_limits l;
    gw_wd_limits_for(cfg, "acme", &l);
    assert_int_equal(l.near_match, 60);
    assert_int_equal(l.near_period, 128);
    assert_int_equal(l.col_top1, 99);
    assert_int_equal(l.col_match, 12);
    assert_int_equal(l.rep_match, 32);
    gw_config_free(cfg);
}

/* ------------------------------------------------------- divergence */

static void test_divergence_after_a_long_single_token_run_is_killed(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    assert_int_equal(l.div_period, 4);
    assert_int_equal(l.div_tokens, 16);
    int32_t t[200];
    size_t n = ordinary(t, 8, 4);
    for (int i = 0; i < 20; i++) /* "poem poem ... poem": 20 < 40, no loop kill */
        t[n++] = 5;
    size_t change = n;
    n += ordinary(t + n, 100, 5); /* then something else: the extraction pattern */
    int why;
    size_t k = drive(&l, t, n, &why);
    assert_int_equal(why, GW_WD_DIVERGENCE);
    assert_int_equal(k, change + 1); /* the first token off the cycle */
}

static void test_divergence_after_a_short_cycle_is_killed(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    int32_t t[200];
    size_t n = 0;
    for (int i = 0; i < 18; i++) /* "banana , banana , ...": period 2, 18 tokens */
        t[n++] = i % 2 ? 11 : 10;
    size_t change = n;
    n += ordinary(t + n, 50, 6);
    int why;
    assert_int_equal(drive(&l, t, n, &why), change + 1);
    assert_int_equal(why, GW_WD_DIVERGENCE);
}

static void test_a_short_repetition_then_a_change_is_not_divergence(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    int32_t t[200];
    size_t n = ordinary(t, 8, 8);
    for (int i = 0; i < 15; i++) /* 15 tokens: under div_tokens */
        t[n++] = 5;
    n += ordinary(t + n, 100, 9);
    int why;
    assert_int_equal(drive(&l, t, n, &why), 0);
}

static void test_a_long_period_repetition_then_a_change_is_not_divergence(void **state)
{
    (void)state;
    struct gw_wd_limits l = default_limits();
    int32_t t[200], cyc[8];
    size_t n = ordinary(t, 4, 10);
    ordinary(cyc, 8, 11);
    for (int rep = 0; rep < 3; rep++) /* period 8 x 3 = 24 tokens: under every limit */
        for (int i = 0; i < 8; i++)
            t[n++] = cyc[i];
    n += ordinary(t + n, 100, 12);
    int why;
    assert_int_equal(drive(&l, t, n, &why), 0);
}

/* ------------------------------------------------------- hard caps */

static void test_hard_caps_kill_in_order_and_zero_is_off(void **state)
{
    (void)state;
    struct gw_wd_limits l = {.max_tokens = 10, .wall_ms = 100, .device_ms = 50};
    struct gw_wd_sample s = {.tokens = 10, .wall_ns = 100000000, .device_ns = 50000000};
    assert_int_equal(gw_wd_judge(&l, &s), -1); /* at the cap is allowed */
    s.device_ns++;
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_DEVICE_TIME);
    s.wall_ns++;
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_WALL_TIME);
    s.tokens++;
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_MAX_TOKENS);
    struct gw_wd_limits off = {0};
    s = (struct gw_wd_sample){.tokens = 1u << 30,
                              .wall_ns = ~0ull,
                              .device_ns = ~0ull,
                              .rep = GW_REP(1, 1000),
                              .rep_max = GW_REP(1, 5000)};
    assert_int_equal(gw_wd_judge(&off, &s), -1);
}

static void test_plan_limits_override_the_node_field_by_field(void **state)
{
    (void)state;
    char err[1024];
    struct gw_config *cfg =
        load_config("\"watchdog\": {\"max_tokens\": 500, \"wall_time_ms\": 2000,"
                    " \"repetition\": {\"max_period\": 16, \"min_count\": 4, \"min_tokens\": 30},"
                    " \"stall_ms\": 1500, \"grace_ms\": 250, \"interval_ms\": 5}",
                    err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    struct gw_wd_limits l;
    gw_wd_limits_for(cfg, "acme", &l); /* plan strict: max_tokens 100, min_tokens 12 */
    assert_int_equal(l.max_tokens, 100);
    assert_int_equal(l.wall_ms, 2000);
    assert_int_equal(l.device_ms, 300000);
    assert_int_equal(l.rep_period, 16);
    assert_int_equal(l.rep_count, 4);
    assert_int_equal(l.rep_tokens, 12);
    gw_wd_limits_for(cfg, "bob", &l);
    assert_int_equal(l.max_tokens, 500);
    assert_int_equal(l.rep_tokens, 30);
    gw_wd_limits_for(cfg, "nobody", &l); /* no default plan: the node's */
    assert_int_equal(l.max_tokens, 500);
    assert_int_equal(cfg->wd_stall_ms, 1500);
    assert_int_equal(cfg->wd_grace_ms, 250);
    assert_int_equal(cfg->wd_interval_ms, 5);
    assert_int_equal(cfg->n_guard, 10); /* the default rules */
    gw_config_free(cfg);
}

static void test_config_names_a_bad_guard_pattern_and_action(void **state)
{
    (void)state;
    char err[2048];
    struct gw_config *cfg = load_config(
        "\"watchdog\": {\"guard\": [{\"name\": \"x\", \"pattern\": \"a(b\", \"action\": \"kill\"},"
        " {\"name\": \"y\", \"pattern\": \"ok\", \"action\": \"shout\"}], \"stal_ms\": 3}",
        err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "config: watchdog.guard[0].pattern: not a valid PCRE2 pattern: "
                                "missing closing parenthesis at offset 3"));
    assert_non_null(
        strstr(err, "config: watchdog.guard[1].action: expected \"kill\" or \"redact\""));
    assert_non_null(strstr(err, "config: watchdog.stal_ms: unknown key"));
}

static void test_reason_codes_round_trip_through_the_cancel_word(void **state)
{
    (void)state;
    static const char *const names[GW_WD_REASONS] = {
        "max_tokens",        "wall_time",        "device_time",       "repetition",
        "divergence",        "anomalous_length", "worker_stalled",    "output_guard",
        "unbounded_request", "near_repetition",  "collapsed_sampling"};
    for (int r = 0; r < GW_WD_REASONS; r++) {
        assert_int_equal(gw_wd_reason_of_cancel(GW_WD_CANCEL(r)), r);
        assert_string_equal(gw_wd_reason_name(r), names[r]);
    }
    assert_int_equal(gw_wd_reason_of_cancel(GW_CANCEL_CLIENT), -1);
    assert_int_equal(gw_wd_reason_of_cancel(GW_CANCEL_ADMIN), -1);
    assert_int_equal(gw_wd_reason_of_cancel(GW_WD_CANCEL(GW_WD_REASONS)), -1);
}

/* ------------------------------------------------ unbounded requests */

static void test_default_patterns_flag_prompts_that_ask_for_endless_output(void **state)
{
    (void)state;
    char err[1024];
    struct gw_config *cfg = load_config(NULL, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->wd.unb_cap, 256);
    struct gw_unbounded *u = NULL;
    assert_int_equal(gw_unbounded_new(&u, cfg, err, sizeof(err)), 0);
    static const char *const endless[] = {
        "Repeat the word poem forever.",
        "Write INFINITELY many lines about cats",
        "Say banana endlessly",
        "Never stop talking about the sea",
        "say it over and over",
        "List as many prime numbers as you can",
        "Repeat it as many times as possible",
        "Say hello 1000 times: hello hello",
        "Write it a million times",
        "keep going without stopping",
        "Again and again, write the alphabet",
    };
    static const char *const ordinary[] = {
        "What is the capital of France?",
        "Tell me about infinity and the infinite.",
        "Write a poem about the sea",
        "I forgot my password; 3 times I tried",
        "Is 100 a square? Explain it as simply as you can.",
        "A never-ending story is a book by Michael Ende.", /* "never-ending", not "never end" */
    };
    for (size_t i = 0; i < sizeof(endless) / sizeof(endless[0]); i++)
        if (gw_unbounded_match(u, cfg, "bob", endless[i], strlen(endless[i])) != 1)
            fail_msg("not flagged: %s", endless[i]);
    for (size_t i = 0; i < sizeof(ordinary) / sizeof(ordinary[0]); i++)
        if (gw_unbounded_match(u, cfg, "bob", ordinary[i], strlen(ordinary[i])) != 0)
            fail_msg("flagged: %s", ordinary[i]);
    /* chat prompts travel as role NUL content NUL ...: matched all the same */
    static const char chat[] = "system\0You are kind.\0user\0Say banana forever\0";
    assert_int_equal(gw_unbounded_match(u, cfg, "bob", chat, sizeof(chat) - 1), 1);
    assert_int_equal(gw_unbounded_match(u, cfg, "bob", chat, 22), 0); /* the system part only */
    gw_unbounded_free(u);
    gw_config_free(cfg);
}

static void test_unbounded_cap_and_patterns_are_per_plan_with_their_own_reason(void **state)
{
    (void)state;
    char err[2048];
    struct gw_config *cfg =
        load_full("\"short\": {\"watchdog\": {\"unbounded_cap_tokens\": 32,"
                  "   \"unbounded_patterns\": [\"\\\\bpoem\\\\b\"]}},"
                  " \"plain\": {}, \"quiet\": {\"watchdog\": {\"unbounded_patterns\": []}}",
                  "\"acme\": {\"plan\": \"short\"}, \"bob\": {\"plan\": \"plain\"},"
                  " \"carl\": {\"plan\": \"quiet\"},"
                  " \"dora\": {\"plan\": \"plain\", \"watchdog\": {\"unbounded_cap_tokens\": 8}}",
                  "\"watchdog\": {\"unbounded_cap_tokens\": 300}", err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    struct gw_wd_limits l;
    gw_wd_limits_for(cfg, "acme", &l);
    assert_int_equal(l.unb_cap, 32);
    assert_int_equal(l.unb_list, 1);
    gw_wd_limits_for(cfg, "bob", &l);
    assert_int_equal(l.unb_cap, 300);
    assert_int_equal(l.unb_list, 0);
    gw_wd_limits_for(cfg, "dora", &l);
    assert_int_equal(l.unb_cap, 8);
    assert_int_equal(l.unb_list, 0);
    struct gw_unbounded *u = NULL;
    assert_int_equal(gw_unbounded_new(&u, cfg, err, sizeof(err)), 0);
    /* the plan's own list replaces the node's (and is caseless too) */
    assert_int_equal(gw_unbounded_match(u, cfg, "acme", "Write a POEM", 12), 1);
    assert_int_equal(gw_unbounded_match(u, cfg, "acme", "sing forever", 12), 0);
    assert_int_equal(gw_unbounded_match(u, cfg, "bob", "sing forever", 12), 1);
    assert_int_equal(gw_unbounded_match(u, cfg, "bob", "Write a POEM", 12), 0);
    assert_int_equal(gw_unbounded_match(u, cfg, "carl", "sing forever", 12), 0); /* [] */
    assert_int_equal(gw_unbounded_match(u, cfg, "dora", "sing forever", 12), 1);
    gw_unbounded_free(u);

    /* the watchdog: a flagged run dies past the lower cap with its own
     * reason; the same run unflagged is left alone */
    gw_wd_limits_for(cfg, "acme", &l);
    struct gw_wd_sample s = {.tokens = 32, .unbounded = 1};
    assert_int_equal(gw_wd_judge(&l, &s), -1);
    s.tokens = 33;
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_UNBOUNDED);
    assert_string_equal(gw_wd_reason_name(GW_WD_UNBOUNDED), "unbounded_request");
    s.unbounded = 0;
    assert_int_equal(gw_wd_judge(&l, &s), -1);
    s.tokens = 101; /* hard caps come first */
    s.unbounded = 1;
    l.max_tokens = 100;
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_MAX_TOKENS);
    gw_config_free(cfg);

    /* node cap 0: nothing is flagged */
    cfg = load_config("\"watchdog\": {\"unbounded_cap_tokens\": 0}", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(gw_unbounded_new(&u, cfg, err, sizeof(err)), 0);
    assert_int_equal(gw_unbounded_match(u, cfg, "bob", "sing forever", 12), 0);
    gw_unbounded_free(u);
    gw_config_free(cfg);
}

static void test_config_names_bad_unbounded_patterns_by_path(void **state)
{
    (void)state;
    char err[4096];
    struct gw_config *cfg = load_full(
        "\"short\": {\"watchdog\": {\"unbounded_patterns\": [\"ok\", \"a(b\"]}}, \"plain\": {}",
        "\"bob\": {\"plan\": \"plain\", \"watchdog\": {\"unbounded_patterns\": [\"x\", 7]}}",
        "\"watchdog\": {\"unbounded_patterns\": \"forever\", \"unbounded_cap_tokens\": -1}", err,
        sizeof(err));
    assert_null(cfg);
    if (!strstr(err, "config: plans.short.watchdog.unbounded_patterns[1]: not a valid PCRE2 "
                     "pattern: missing closing parenthesis at offset 3") ||
        !strstr(err, "config: tenants.bob.watchdog.unbounded_patterns[1]: expected a PCRE2 "
                     "pattern of 1 to 255 bytes") ||
        !strstr(err, "config: watchdog.unbounded_patterns: expected an array of at most 16 "
                     "patterns") ||
        !strstr(err, "config: watchdog.unbounded_cap_tokens: expected an integer in [0, "
                     "16777216]"))
        fail_msg("messages:\n%s", err);
    assert_null(strstr(err, "unbounded_patterns[0]")); /* the good ones are not named */
    cfg = load_config("\"watchdog\": {\"unbounded_patterns\": [\"\"]}", err, sizeof(err));
    assert_null(cfg);
    assert_string_equal(
        err, "config: watchdog.unbounded_patterns[0]: expected a PCRE2 pattern of 1 to 255 bytes");
}

/* --------------------------------------------------- learned length */

static void test_learned_length_uses_the_floor_until_warmed_up(void **state)
{
    (void)state;
    struct gw_wd_limits l = {.len_floor = 20, .len_factor = 4, .len_warmup = 10};
    struct gw_lenest e = {0};
    assert_int_equal(gw_lenest_limit(&e, &l), 20);
    for (int i = 0; i < 9; i++)
        gw_lenest_add(&e, 10);
    assert_int_equal(gw_lenest_limit(&e, &l), 20); /* 9 < warmup */
    gw_lenest_add(&e, 10);
    /* p99 = 10 (its bucket's upper edge), x4 = 40 over the floor */
    assert_int_equal(gw_lenest_quantile(&e, 0.99), 10);
    assert_int_equal(gw_lenest_limit(&e, &l), 40);
    struct gw_wd_sample s = {.tokens = 40, .length_limit = 40};
    assert_int_equal(gw_wd_judge(&l, &s), -1);
    s.tokens = 41;
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_ANOMALOUS_LENGTH);
    l.len_floor = 0; /* off */
    assert_int_equal(gw_lenest_limit(&e, &l), 0);
}

static void test_learned_length_kills_an_outlier_after_warmup(void **state)
{
    (void)state;
    struct gw_wd_limits l = {.len_floor = 64, .len_factor = 4, .len_warmup = 50};
    struct gw_lenest e = {0};
    for (int i = 0; i < 1000; i++)
        gw_lenest_add(&e, 30 + (uint64_t)(i % 21)); /* answers of 30..50 tokens */
    for (int i = 0; i < 5; i++)
        gw_lenest_add(&e, 400); /* a few long ones: under 1% */
    /* p99 falls in the bucket (46, 54]: limit 4 x 54 */
    assert_int_equal(gw_lenest_quantile(&e, 0.99), 54);
    assert_int_equal(gw_lenest_limit(&e, &l), 216);
    struct gw_wd_sample s = {.tokens = 217, .length_limit = gw_lenest_limit(&e, &l)};
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_ANOMALOUS_LENGTH);
    /* the estimate follows recent traffic: halved at 2048 samples */
    for (int i = 0; i < 5000; i++)
        gw_lenest_add(&e, 300);
    assert_int_equal(gw_lenest_quantile(&e, 0.5), 305); /* 256 x 2^(1/4), rounded up */
    assert_true(e.n <= 2048);
    assert_int_equal(e.seen, 6005);
}

/* ----------------------------------------------------------- audit */

static void test_audit_line_is_json_with_the_last_200_characters(void **state)
{
    (void)state;
    struct gw_slot_req req = {0};
    snprintf(req.id, sizeof(req.id), "gen-42");
    snprintf(req.tenant, sizeof(req.tenant), "acme");
    snprintf(req.ip, sizeof(req.ip), "192.0.2.7");
    char out[400];
    memset(out, 'a', 100);
    memcpy(out + 100, "\"q\"\n\xff", 5); /* quote, newline, a byte that is not UTF-8 */
    size_t n = 105;
    for (int i = 0; i < 100; i++) { /* 100 two-byte characters: é */
        out[n++] = (char)0xc3;
        out[n++] = (char)0xa9;
    }
    char line[2048];
    size_t len = gw_audit_format(line, sizeof(line), 1700000000123456ull, &req, GW_WD_REPETITION,
                                 77, 1234567890ull, out, n);
    assert_true(len > 0 && line[len - 1] == '\n');
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    if (!j)
        fail_msg("not JSON: %s: %s", je.text, line);
    assert_string_equal(json_string_value(json_object_get(j, "time")), "2023-11-14T22:13:20.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "gen-42");
    assert_string_equal(json_string_value(json_object_get(j, "tenant")), "acme");
    assert_string_equal(json_string_value(json_object_get(j, "ip")), "192.0.2.7");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "repetition");
    assert_int_equal(json_integer_value(json_object_get(j, "tokens")), 77);
    assert_int_equal(json_integer_value(json_object_get(j, "device_ms")), 1234);
    /* 200 characters: 95 'a', "q" quote newline, U+FFFD, 100 é */
    const char *tail = json_string_value(json_object_get(j, "output_tail"));
    char want[600];
    size_t w = 0;
    memset(want, 'a', 95);
    w = 95;
    memcpy(want + w, "\"q\"\n\xef\xbf\xbd", 7);
    w += 7;
    for (int i = 0; i < 100; i++) {
        want[w++] = (char)0xc3;
        want[w++] = (char)0xa9;
    }
    want[w] = '\0';
    assert_string_equal(tail, want);
    json_decref(j);
}

/* ----------------------------------------------------------- guard */

struct sink {
    char buf[4096];
    size_t len;
};

static void sink_emit(void *user, const char *text, size_t len)
{
    struct sink *s = user;
    assert_true(s->len + len < sizeof(s->buf));
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->buf[s->len] = '\0';
}

static struct gw_guard *default_guard(void)
{
    char err[1024];
    struct gw_config *cfg = load_config(NULL, err, sizeof(err));
    assert_non_null(cfg);
    struct gw_guard *g = NULL;
    assert_int_equal(gw_guard_new(&g, cfg->guard, cfg->n_guard, err, sizeof(err)), 0);
    gw_config_free(cfg);
    return g;
}

static void test_guard_holds_a_match_split_across_chunks_and_redacts_it(void **state)
{
    (void)state;
    struct gw_guard *g = default_guard();
    struct sink s = {0};
    assert_int_equal(gw_guard_feed(g, "Contact me at john.sm", 21, 0, sink_emit, &s), 0);
    /* the tail that could still become an address is held back */
    assert_string_equal(s.buf, "Contact me at ");
    assert_int_equal(gw_guard_feed(g, "ith@exam", 8, 0, sink_emit, &s), 0);
    assert_string_equal(s.buf, "Contact me at ");
    assert_int_equal(gw_guard_feed(g, "ple.com today", 13, 0, sink_emit, &s), 0);
    assert_string_equal(s.buf, "Contact me at [REDACTED] ");
    assert_int_equal(gw_guard_feed(g, "", 0, 1, sink_emit, &s), 0);
    assert_string_equal(s.buf, "Contact me at [REDACTED] today");
    assert_int_equal(gw_guard_redactions(g), 1);
    gw_guard_free(g);
}

static void test_guard_fed_byte_by_byte_never_emits_a_match(void **state)
{
    (void)state;
    struct gw_guard *g = default_guard();
    static const char text[] = "Mail a.b-c@mail.example.org, or x@y.io. Card 4111 1111 1111 1111 "
                               "and 1234 5678 9012 3456; bye";
    struct sink s = {0};
    for (size_t i = 0; i < sizeof(text) - 1; i++) {
        assert_int_equal(gw_guard_feed(g, text + i, 1, 0, sink_emit, &s), 0);
        assert_null(strstr(s.buf, "@"));
        assert_null(strstr(s.buf, "4111"));
    }
    assert_int_equal(gw_guard_feed(g, "", 0, 1, sink_emit, &s), 0);
    /* exactly the matches are replaced; a number failing Luhn stays */
    assert_string_equal(s.buf, "Mail [REDACTED], or [REDACTED]. Card [REDACTED] and 1234 5678 9012 "
                               "3456; bye");
    assert_int_equal(gw_guard_redactions(g), 3);
    gw_guard_free(g);
}

static void test_guard_kill_rule_ends_the_stream_before_the_match(void **state)
{
    (void)state;
    struct gw_guard *g = default_guard();
    struct sink s = {0};
    assert_int_equal(gw_guard_feed(g, "here:\n-----BEGIN RSA PRIV", 25, 0, sink_emit, &s), 0);
    assert_string_equal(s.buf, "here:\n");
    int rc = gw_guard_feed(g, "ATE KEY-----\nMIIEpAIB", 21, 0, sink_emit, &s);
    assert_true(rc > 0);
    assert_string_equal(gw_guard_rule_name(g, rc - 1), "pem_private_key");
    assert_string_equal(s.buf, "here:\n");
    /* nothing more is published once killed */
    assert_int_equal(gw_guard_feed(g, "more", 4, 1, sink_emit, &s), 0);
    assert_string_equal(s.buf, "here:\n");
    gw_guard_reset(g);
    rc = gw_guard_feed(g, "id AKIAIOSFODNN7EXAMPLE.", 24, 0, sink_emit, &s);
    assert_true(rc > 0);
    assert_string_equal(gw_guard_rule_name(g, rc - 1), "aws_access_key_id");
    assert_string_equal(s.buf, "here:\nid ");
    gw_guard_free(g);
}

static void test_guard_without_rules_passes_text_through(void **state)
{
    (void)state;
    struct gw_guard *g = NULL;
    assert_int_equal(gw_guard_new(&g, NULL, 0, NULL, 0), 0);
    struct sink s = {0};
    assert_int_equal(gw_guard_feed(g, "x@y.io", 6, 0, sink_emit, &s), 0);
    assert_string_equal(s.buf, "x@y.io");
    gw_guard_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repetition_kills_a_three_token_cycle_at_the_configured_cover),
        cmocka_unit_test(test_repetition_kills_a_single_token_loop_after_rep_tokens),
        cmocka_unit_test(
            test_repetition_of_a_long_period_is_killed_32_tokens_into_its_second_cycle),
        cmocka_unit_test(test_a_128_token_paragraph_is_killed_and_a_200_token_one_is_not),
        cmocka_unit_test(test_near_repetition_kills_a_counting_list_the_exact_one_misses),
        cmocka_unit_test(test_near_repetition_ignores_a_list_whose_words_change),
        cmocka_unit_test(test_near_count_counts_lines_and_an_asked_list_runs_its_length),
        cmocka_unit_test(test_collapsed_sampling_kills_a_sampled_loop_at_its_own_match),
        cmocka_unit_test(test_config_names_bad_repetition_limits_exactly),
        cmocka_unit_test(test_ordinary_tokens_are_never_killed),
        cmocka_unit_test(test_a_period_above_max_period_is_not_a_repetition),
        cmocka_unit_test(test_divergence_after_a_long_single_token_run_is_killed),
        cmocka_unit_test(test_divergence_after_a_short_cycle_is_killed),
        cmocka_unit_test(test_a_short_repetition_then_a_change_is_not_divergence),
        cmocka_unit_test(test_a_long_period_repetition_then_a_change_is_not_divergence),
        cmocka_unit_test(test_hard_caps_kill_in_order_and_zero_is_off),
        cmocka_unit_test(test_plan_limits_override_the_node_field_by_field),
        cmocka_unit_test(test_config_names_a_bad_guard_pattern_and_action),
        cmocka_unit_test(test_reason_codes_round_trip_through_the_cancel_word),
        cmocka_unit_test(test_default_patterns_flag_prompts_that_ask_for_endless_output),
        cmocka_unit_test(test_unbounded_cap_and_patterns_are_per_plan_with_their_own_reason),
        cmocka_unit_test(test_config_names_bad_unbounded_patterns_by_path),
        cmocka_unit_test(test_learned_length_uses_the_floor_until_warmed_up),
        cmocka_unit_test(test_learned_length_kills_an_outlier_after_warmup),
        cmocka_unit_test(test_audit_line_is_json_with_the_last_200_characters),
        cmocka_unit_test(test_guard_holds_a_match_split_across_chunks_and_redacts_it),
        cmocka_unit_test(test_guard_fed_byte_by_byte_never_emits_a_match),
        cmocka_unit_test(test_guard_kill_rule_ends_the_stream_before_the_match),
        cmocka_unit_test(test_guard_without_rules_passes_text_through),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (secret_path[0])
        unlink(secret_path);
    return rc;
}
