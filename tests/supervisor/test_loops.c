/* test_loops.c - the repetition detectors against a labelled set of chat
 * prompts (tests/fixtures/loops.json, issue 16): everyday questions, long
 * legitimate answers (essays, code, lists) and loop-prone requests.
 *
 * Each prompt is generated greedily by SmolLM2-135M-Instruct in this
 * process, 8 sequences at a time through the batched engine (gw_gen_new,
 * gw_batch_step), to max_tokens without a watchdog: the full unwatched
 * output is the ground truth. Beside it, every token goes through what the
 * worker publishes (gw_gen_step.loop as gw_wd_rep_word, the rep_max fold)
 * and gw_wd_judge with the node's default limits, exactly as the master
 * judges a live run; the first kill is noted, not enforced, so one run
 * gives both the truth and the verdict (greedy: the stream up to a kill is
 * the same either way).
 *
 * The rule for what is a loop (label()):
 *  - "ends": the model ended the answer itself before max_tokens;
 *  - "loop": the output ends in an exact cycle: the earliest onset s and
 *    period p <= 160 such that toks[s, n) is p-periodic, spans two whole
 *    cycles and runs at least p + 32 tokens (so that "killed within
 *    p + 32 tokens of onset" can be told); the first repeated token is
 *    s + p;
 *  - "near_loop": not a loop, but the same holds once every run of digit
 *    tokens counts as one symbol (periods in symbols, positions in tokens),
 *    with at least 32 tokens after the first repeated line;
 *  - "late_loop": a cycle that began too close to max_tokens for either
 *    (no requirement either way);
 *  - "long": none of these: a long answer that does not repeat;
 *  - "ends_repeating": ended by itself, but repeated 32 tokens in a row
 *    (64 near) on the way ("write 'hello' 30 times", a numbered list);
 *    "long_repeating": the same without an end and without a loop;
 *  - "requested_loop": a loop or near loop whose prompt asks for a bounded
 *    number of repetitions (the fixture's "asks", set by hand: the count
 *    the message itself states for the same text or the same line shape,
 *    "30 times", "from 1 to 200", "40 lines, each ...", "all the US
 *    states ... each"; 0 for none, for endless requests and for counts
 *    only world knowledge gives, the song "99 bottles") and whose whole
 *    cycles up to max_tokens are no more than gw_wd_asked_cycles(asks)
 *    without a cap: the user asked for it, max_tokens cut it.
 * Required: >= 95% of loops with p <= 128 killed within p + 32 tokens of
 * their onset, >= 95% of near loops within 64 tokens of their first
 * repeated token, no kill of "ends", "long", "ends_repeating" or
 * "requested_loop". The watchdog reads the asked count from the prompt
 * as the front does (gw_asked_count), not from the hand label.
 *
 * The same streams are judged by the statistic and limits before issue 16
 * (periods <= 32, 3 cycles and 40 tokens; old_repeat below) for the
 * before/after figures in docs/BENCHMARKS.md.
 *
 * `test_loops --label FILE` regenerates the fixture's labels (the same
 * generation and rule) and writes FILE. Exits 77 without the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_supervisor.h"
#include "gw_engine.h"
#include "skip.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TOK 320
#define BATCH 8
#define MAX_LABEL_PERIOD 160

enum { L_ENDS, L_LONG, L_LOOP, L_NEAR, L_LATE, L_ENDS_REP, L_LONG_REP, L_REQUESTED };
static const char *const kind_names[] = {"ends",           "long",          "loop",
                                         "near_loop",      "late_loop",     "ends_repeating",
                                         "long_repeating", "requested_loop"};

struct item {
    const char *id, *cls, *prompt;
    uint32_t asks;  /* the fixture's "asks": repetitions the prompt asks for (by hand) */
    uint32_t asked; /* what the front reads from it (gw_asked_count) */
    int32_t toks[MAX_TOK];
    size_t n;
    int ended;
    /* the detectors as the master judges them */
    uint64_t rep_max;
    uint64_t max_exact, max_near; /* the longest runs published */
    int reason;
    size_t killed;
    /* before issue 16 */
    int old_reason;
    size_t old_killed;
    uint64_t old_rep_max;
    int32_t old_ring[32];
    uint64_t old_run[33];
    /* the truth */
    int kind;
    size_t period, onset, repeat_at;
    size_t due_from; /* where the deadline counts from: the onset, or for a loop past
                        what its prompt asked for, where its cycles passed the allowance */
};

static gw_model *model;
static gw_tokenizer *tok;
static gw_chat_template ct;
static uint8_t *digits;
static struct gw_wd_limits limits, old_limits;
static json_t *fixture;
static struct item *items;
static size_t n_items;
static const char *label_out;

/* ------------------------------------------- the statistic before issue 16 */

/* For each period p <= 32, run[p] counts the consecutive recent tokens
 * equal to the one p before; the best cover (count * p, count >= 2) wins. */
static uint64_t old_push(struct item *it, int32_t t, uint64_t n)
{
    uint32_t best_p = 0;
    uint64_t best_c = 0, best_cover = 0;
    for (int p = 1; p <= 32; p++) {
        if (n >= (uint64_t)p && it->old_ring[(n - (uint64_t)p) % 32] == t)
            it->old_run[p]++;
        else
            it->old_run[p] = 0;
        uint64_t count = (it->old_run[p] + (uint64_t)p) / (uint64_t)p;
        if (count >= 2 && count * (uint64_t)p > best_cover) {
            best_cover = count * (uint64_t)p;
            best_p = (uint32_t)p;
            best_c = count;
        }
    }
    it->old_ring[n % 32] = t;
    return GW_REP(best_p, best_c);
}

/* ------------------------------------------------------------- generation */

static void on_step(void *user, const gw_gen_step *st)
{
    struct item *it = user;
    if (it->n < MAX_TOK)
        it->toks[it->n++] = st->token;
    const gw_loop_stat *ls = &st->loop;
    uint64_t rep =
        gw_wd_rep_word((uint32_t)ls->period, ls->count, ls->run, ls->near, (uint32_t)ls->top1);
    it->rep_max = gw_wd_rep_fold(it->rep_max, rep);
    uint64_t *m = ls->near ? &it->max_near : &it->max_exact;
    *m = ls->run > *m ? ls->run : *m;
    struct gw_wd_sample s = {
        .tokens = st->n_tokens, .rep = rep, .rep_max = it->rep_max, .asked = it->asked};
    int why = gw_wd_judge(&limits, &s);
    if (why >= 0 && it->reason < 0) {
        it->reason = why;
        it->killed = st->n_tokens;
    }
    uint64_t old = old_push(it, st->token, st->n_tokens - 1);
    it->old_rep_max = gw_wd_rep_fold(it->old_rep_max, old);
    s.rep = old;
    s.rep_max = it->old_rep_max;
    s.asked = 0;
    why = gw_wd_judge(&old_limits, &s);
    if (why >= 0 && it->old_reason < 0) {
        it->old_reason = why;
        it->old_killed = st->n_tokens;
    }
}

static int32_t *encode_chat(const char *prompt, size_t *n_ids)
{
    char *text = NULL, err[256];
    size_t len;
    gw_chat_msg m = {"user", 4, prompt, strlen(prompt)};
    assert_int_equal(gw_chat_format(&ct, &m, 1, &text, &len, err, sizeof(err)), 0);
    int32_t *ids;
    assert_int_equal(gw_tokenizer_encode(tok, text, len, GW_TOK_ADD_BOS | GW_TOK_PARSE_SPECIAL,
                                         &ids, n_ids, err, sizeof(err)),
                     0);
    free(text);
    return ids;
}

/* Every item, BATCH at a time: a finished sequence's place goes to the
 * next prompt at once (continuous batching, as the worker runs them). */
static void generate_all(void)
{
    gw_ctx_opts co = {.n_ctx = 512, .n_threads = 2, .max_seqs = BATCH};
    gw_ctx *ctx;
    assert_int_equal(gw_ctx_new(model, &co, &ctx), 0);
    const int32_t *eog;
    size_t n_eog;
    gw_tokenizer_eog_ids(tok, &eog, &n_eog);
    gw_gen *g[BATCH];
    struct item *on[BATCH];
    int32_t *ids[BATCH];
    int active = 0;
    size_t next = 0;
    gw_step_info info = {0};
    while (next < n_items || active > 0) {
        while (active < BATCH && next < n_items) {
            struct item *it = &items[next++];
            it->reason = it->old_reason = -1;
            size_t n_ids;
            ids[active] = encode_chat(it->prompt, &n_ids);
            gw_gen_params gp = {.max_tokens = MAX_TOK,
                                .sampling = {.temperature = 0},
                                .eog_ids = eog,
                                .n_eog = n_eog,
                                .digit_ids = digits,
                                .user = it,
                                .on_step = on_step};
            assert_int_equal(gw_gen_new(ctx, ids[active], n_ids, &gp, NULL, 0, &g[active]), 0);
            on[active++] = it;
        }
        assert_int_equal(gw_batch_step(ctx, g, active, 64, &info), 0);
        for (int i = 0; i < active; i++) {
            if (!gw_gen_done(g[i]))
                continue;
            on[i]->ended = gw_gen_res(g[i])->finish == GW_FINISH_EOG;
            gw_gen_free(g[i]);
            free(ids[i]);
            active--;
            g[i] = g[active], on[i] = on[active], ids[i] = ids[active];
            i--;
        }
    }
    gw_ctx_free(ctx);
}

/* -------------------------------------------------------------- the rule */

/* The earliest onset of a periodic tail of sym[0, m) with period <= maxp
 * that spans two cycles; its period in *period. m when there is none. */
static size_t periodic_tail(const int32_t *sym, size_t m, size_t maxp, size_t *period)
{
    size_t best = m;
    *period = 0;
    for (size_t p = 1; p <= maxp && 2 * p <= m; p++) {
        size_t s = m - p;
        while (s > 0 && sym[s - 1] == sym[s - 1 + p])
            s--;
        if (m - s >= 2 * p && s < best)
            best = s, *period = p;
    }
    return best;
}

/* The longest stretch of sym[0, m) equal to the one p <= maxp symbols
 * before it, in tokens (pos: where each symbol starts, n: the end). */
static size_t longest_repeat(const int32_t *sym, const size_t *pos, size_t m, size_t n, size_t maxp)
{
    size_t best = 0;
    for (size_t p = 1; p <= maxp && p < m; p++)
        for (size_t t = p, start = p; t <= m; t++) {
            if (t < m && sym[t] == sym[t - p])
                continue;
            size_t len = (t < m ? pos[t] : n) - pos[start];
            best = t > start && len > best ? len : best;
            start = t + 1;
        }
    return best;
}

/* Digit runs as one symbol; pos[k]: the token where symbol k starts. */
static size_t near_symbols(const struct item *it, int32_t *sym, size_t *pos)
{
    size_t m = 0;
    for (size_t i = 0; i < it->n; i++) {
        int d = digits[it->toks[i]];
        if (d && i > 0 && digits[it->toks[i - 1]])
            continue;
        pos[m] = i;
        sym[m++] = d ? -2 : it->toks[i];
    }
    return m;
}

/* A loop of `cycles` cycles (whole ones, to max_tokens) that stays within
 * what the prompt asks for by hand, with the watchdog's slack and no cap,
 * is the repetition the user asked for. */
static void requested(struct item *it, size_t cycles)
{
    if (it->asks && cycles <= gw_wd_asked_cycles(it->asks, GW_ASKED_MAX))
        it->kind = L_REQUESTED;
}

static void label(struct item *it)
{
    it->kind = L_LONG;
    it->period = it->onset = it->repeat_at = it->due_from = 0;
    int32_t sym[MAX_TOK];
    size_t pos[MAX_TOK], idx[MAX_TOK];
    for (size_t i = 0; i < it->n; i++)
        idx[i] = i;
    size_t m = near_symbols(it, sym, pos);
    /* a stretch as long as the deadlines: an exact repeat of 32 tokens or
     * a near one of 64, at a period <= 128 */
    int repeats = longest_repeat(it->toks, idx, it->n, it->n, 128) >= 32 ||
                  longest_repeat(sym, pos, m, it->n, 128) >= 64;
    if (it->ended) {
        it->kind = repeats ? L_ENDS_REP : L_ENDS;
        return;
    }
    if (repeats)
        it->kind = L_LONG_REP;
    size_t p, n = it->n;
    size_t s = periodic_tail(it->toks, n, MAX_LABEL_PERIOD, &p);
    if (s < n) {
        it->kind = n - s >= p + 32 ? L_LOOP : L_LATE;
        it->period = p, it->onset = s, it->repeat_at = s + p;
        if (it->kind == L_LOOP) {
            uint32_t a = gw_wd_asked_cycles(it->asks, limits.rep_asked_max);
            it->due_from = s + a * p < n ? s + a * p : n;
            requested(it, (n - s) / p);
            return;
        }
    }
    size_t q, S = periodic_tail(sym, m, MAX_LABEL_PERIOD, &q);
    if (S < m && pos[S + q] < n) {
        size_t rep = pos[S + q];
        int kind = n - rep >= 32 ? L_NEAR : L_LATE;
        if (it->kind == L_LATE && kind == L_LATE)
            return; /* the exact one's figures */
        it->kind = kind;
        it->period = q, it->onset = pos[S], it->repeat_at = rep;
        uint32_t a = gw_wd_asked_cycles(it->asks, limits.rep_asked_max);
        size_t k = S + (a > 1 ? a : 1) * q; /* the first symbol past the allowance */
        it->due_from = k < m ? pos[k] : n;
        if (kind == L_NEAR)
            requested(it, (m - S) / q);
    }
}

/* -------------------------------------------------------------- the check */

static int is_repetition_kill(int reason)
{
    return reason == GW_WD_REPETITION || reason == GW_WD_NEAR_REPETITION ||
           reason == GW_WD_COLLAPSED || reason == GW_WD_DIVERGENCE;
}

/* 1 when the loop was killed in time: within p + 32 tokens of an exact
 * loop's onset, 64 tokens of a near loop's first repeated token; for a
 * loop whose prompt asked for N repetitions, counted from where its cycles
 * passed gw_wd_asked_cycles(N, requested_max) instead (due_from; the
 * allowance is what the user asked for, the loop is what runs past it). */
static int in_time(const struct item *it, int reason, size_t killed)
{
    if (reason < 0)
        return 0;
    if (it->kind == L_LOOP)
        return killed <= it->due_from + it->period + 32;
    return killed <= it->due_from + 64;
}

/* The tokens' text, whole tokens only, GPT-2's stored space and newline
 * ("Ġ", "Ċ") as " " and "\n" (newline shown as "|" when bar is set). */
static void text_of(const struct item *it, size_t from, size_t to, char *buf, size_t cap, int bar)
{
    size_t at = 0;
    for (size_t i = from; i < to && i < it->n; i++) {
        const char *s;
        size_t len;
        if (gw_tokenizer_token_text(tok, it->toks[i], &s, &len) != 0)
            continue;
        if (at + len + 1 > cap)
            break;
        for (size_t k = 0; k < len; k++) {
            if (k + 1 < len && (unsigned char)s[k] == 0xC4 &&
                ((unsigned char)s[k + 1] == 0xA0 || (unsigned char)s[k + 1] == 0x8A)) {
                buf[at++] = (unsigned char)s[k + 1] == 0xA0 ? ' ' : bar ? '|' : '\n';
                k++;
                continue;
            }
            buf[at++] = s[k];
        }
    }
    buf[at] = 0;
}

static void report(const struct item *it)
{
    char tail[96];
    text_of(it, it->n > 24 ? it->n - 24 : 0, it->n, tail, sizeof(tail), 1);
    print_message(
        "%-12s %-14s n=%3zu p=%3zu onset=%3zu rep=%3zu asks=%3u/%3u runs=%3llu/%3llu | "
        "new: %-16s %3zu | old: %-10s %3zu | ...%s\n",
        it->id, kind_names[it->kind], it->n, it->period, it->onset, it->repeat_at, it->asks,
        it->asked, (unsigned long long)it->max_exact, (unsigned long long)it->max_near,
        it->reason >= 0 ? gw_wd_reason_name(it->reason) : "-", it->killed,
        it->old_reason >= 0 ? gw_wd_reason_name(it->old_reason) : "-", it->old_killed, tail);
}

struct tally {
    int loops, caught, near, near_caught, clean, false_kills;
    int ends_rep, ends_rep_killed;   /* ends_repeating: required 0 kills */
    int requested, requested_killed; /* requested_loop: required 0 kills */
    int long_rep, long_rep_killed;   /* long_repeating: no requirement */
    int asked_wrong;                 /* the front's count differs from the hand's */
    int old_caught, old_near_caught, old_false_kills, old_ends_rep_killed, old_requested_killed;
    size_t lat_sum, lat_max, old_lat_sum;
    int lat_n, old_lat_n;
};

static void count(struct tally *t, const struct item *it)
{
    int killed = it->reason >= 0 && is_repetition_kill(it->reason);
    int old_killed = it->old_reason >= 0 && is_repetition_kill(it->old_reason);
    if (it->kind == L_ENDS || it->kind == L_LONG) {
        t->asked_wrong += it->asked != it->asks;
        t->clean++;
        t->false_kills += killed;
        t->old_false_kills += old_killed;
        return;
    }
    t->asked_wrong += it->asked != it->asks;
    if (it->kind == L_ENDS_REP) {
        t->ends_rep++;
        t->ends_rep_killed += killed;
        t->old_ends_rep_killed += old_killed;
        return;
    }
    if (it->kind == L_REQUESTED) {
        t->requested++;
        t->requested_killed += killed;
        t->old_requested_killed += old_killed;
        return;
    }
    if (it->kind == L_LONG_REP) {
        t->long_rep++;
        t->long_rep_killed += killed;
        return;
    }
    if (it->kind == L_LOOP && it->period > 128)
        return; /* beyond the required periods: reported only */
    if (it->kind == L_LOOP) {
        t->loops++;
        t->caught += in_time(it, it->reason, it->killed);
        t->old_caught += in_time(it, it->old_reason, it->old_killed);
    } else if (it->kind == L_NEAR) {
        t->near++;
        t->near_caught += in_time(it, it->reason, it->killed);
        t->old_near_caught += in_time(it, it->old_reason, it->old_killed);
    } else {
        return;
    }
    if (killed) {
        size_t lat = it->killed > it->onset ? it->killed - it->onset : 0;
        t->lat_sum += lat, t->lat_n++;
        t->lat_max = lat > t->lat_max ? lat : t->lat_max;
    }
    if (old_killed) {
        t->old_lat_sum += it->old_killed > it->onset ? it->old_killed - it->onset : 0;
        t->old_lat_n++;
    }
}

static void test_labelled_loops_are_killed_in_time_and_answers_never(void **state)
{
    (void)state;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    generate_all();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct tally t = {0};
    int drift = 0;
    json_t *arr = json_object_get(fixture, "prompts");
    for (size_t i = 0; i < n_items; i++) {
        struct item *it = &items[i];
        label(it);
        report(it);
        count(&t, it);
        json_t *want = json_object_get(json_array_get(arr, i), "label");
        const char *wk = json_string_value(json_object_get(want, "kind"));
        if (!label_out && (!wk || strcmp(wk, kind_names[it->kind]) != 0)) {
            print_message("  label drift: %s was %s, now %s\n", it->id, wk ? wk : "(none)",
                          kind_names[it->kind]);
            drift++;
        }
    }
    print_message(
        "%zu prompts in %.1f s: %d loops (p <= 128), %d caught within p + 32 (before: "
        "%d); %d near loops, %d caught within 64 of the first repeat (before: %d); "
        "%d answers that end or do not repeat, %d killed (before: %d); %d that end "
        "after repeating, %d killed (before: %d); %d loops the prompt asked for, %d "
        "killed (before: %d); %d long repeating answers, %d killed; mean kill latency "
        "from onset %.1f tokens (max %zu; before: %.1f over %d kills); the front's "
        "count differs from the hand's for %d prompts; %d labels drifted from the "
        "fixture\n",
        n_items, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, t.loops,
        t.caught, t.old_caught, t.near, t.near_caught, t.old_near_caught, t.clean, t.false_kills,
        t.old_false_kills, t.ends_rep, t.ends_rep_killed, t.old_ends_rep_killed, t.requested,
        t.requested_killed, t.old_requested_killed, t.long_rep, t.long_rep_killed,
        t.lat_n ? (double)t.lat_sum / t.lat_n : 0.0, t.lat_max,
        t.old_lat_n ? (double)t.old_lat_sum / t.old_lat_n : 0.0, t.old_lat_n, t.asked_wrong, drift);
    if (label_out)
        return;
    assert_int_equal(t.false_kills, 0);
    assert_int_equal(t.ends_rep_killed, 0);
    assert_int_equal(t.requested_killed, 0);
    assert_true(t.loops >= 10);
    assert_true(t.caught * 100 >= t.loops * 95);
    assert_true(t.near_caught * 100 >= t.near * 95);
}

/* ---------------------------------------------------------------- set-up */

static int write_labels(const char *path)
{
    json_t *arr = json_object_get(fixture, "prompts");
    for (size_t i = 0; i < n_items; i++) {
        const struct item *it = &items[i];
        char text[4096];
        text_of(it, 0, it->n, text, sizeof(text), 0);
        json_t *l = json_pack("{s:s, s:i, s:i, s:i, s:i, s:s}", "kind", kind_names[it->kind],
                              "tokens", (json_int_t)it->n, "period", (json_int_t)it->period,
                              "onset", (json_int_t)it->onset, "repeat_at",
                              (json_int_t)it->repeat_at, "output", text);
        if (!l)
            return -1; /* text that is not UTF-8 */
        json_object_set_new(json_array_get(arr, i), "label", l);
    }
    return json_dump_file(fixture, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
}

static int group_setup(void **state)
{
    (void)state;
    char err[512], path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/loops.json", gw_source_dir());
    json_error_t je;
    fixture = json_load_file(path, 0, &je);
    if (!fixture) {
        fprintf(stderr, "%s: %s\n", path, je.text);
        return -1;
    }
    json_t *arr = json_object_get(fixture, "prompts");
    n_items = json_array_size(arr);
    items = calloc(n_items, sizeof(*items));
    for (size_t i = 0; i < n_items; i++) {
        json_t *o = json_array_get(arr, i);
        items[i].id = json_string_value(json_object_get(o, "id"));
        items[i].cls = json_string_value(json_object_get(o, "class"));
        items[i].prompt = json_string_value(json_object_get(o, "prompt"));
        json_int_t asks = json_integer_value(json_object_get(o, "asks"));
        items[i].asks = asks > 0 && asks <= GW_ASKED_MAX ? (uint32_t)asks : 0;
        items[i].asked = gw_asked_count(items[i].prompt, strlen(items[i].prompt));
    }
    if (gw_model_load(gw_need_model(), &model, err, sizeof(err)) != 0 ||
        gw_tokenizer_load(gw_model_gguf(model), &tok, err, sizeof(err)) != 0 ||
        gw_chat_template_from_gguf(&ct, gw_model_gguf(model), tok, err, sizeof(err)) != 0 ||
        gw_repeat_digit_map(tok, gw_model_cfg(model)->vocab, &digits) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    /* the node defaults, as a config without a "watchdog" object gets */
    char secret[64], json[512];
    snprintf(secret, sizeof(secret), "/tmp/gw-loops-secret-%d", (int)getpid());
    FILE *f = fopen(secret, "w");
    fputs("loops-test-secret-0123456789abcdef", f);
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
    /* before issue 16: periods <= 32, 3 cycles covering 40 tokens */
    old_limits = limits;
    old_limits.rep_period = 32;
    old_limits.rep_match = 0;
    old_limits.near_match = 0;
    old_limits.col_match = 0;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(digits);
    if (model) {
        gw_chat_template_free(&ct);
        gw_tokenizer_free(tok);
        gw_model_free(model);
    }
    free(items);
    json_decref(fixture);
    return 0;
}

int main(int argc, char **argv)
{
    gw_need_model(); /* exit 77 (ctest: Skipped) without models/ */
    if (argc == 3 && strcmp(argv[1], "--label") == 0)
        label_out = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labelled_loops_are_killed_in_time_and_answers_never),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, NULL);
    if (label_out && rc == 0 && write_labels(label_out) != 0) {
        fprintf(stderr, "%s: cannot write\n", label_out);
        rc = 1;
    }
    group_teardown(NULL);
    return rc;
}
