/* test_farm.c - prompt-farming signals and the ladder (common/farm.c,
 * gw_common/farm.h): the SimHash against its definition and pinned values,
 * the text a chat prompt is fingerprinted on, exact scores of built
 * windows, the ladder step by step on an injected clock, clear, state that
 * survives a re-attach, processes SIGKILLed while recording, the audit
 * line, and the "farming" config with its mistakes named by path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <xxhash.h>

#define NOW 1700000000000000ull
#define SEC 1000000ull

static uint64_t sh(const char *s)
{
    return gw_farm_simhash(s, strlen(s));
}

static int dist(uint64_t a, uint64_t b)
{
    return __builtin_popcountll(a ^ b);
}

static struct gw_farm_limits limits(void)
{
    struct gw_farm_limits l = {.enabled = 1,
                               .window = 32,
                               .min_samples = 16,
                               .near_bits = 20,
                               .sweep_cv_pct = 50,
                               .sweep_single_pct = 90,
                               .flag_score = 60,
                               .throttle_after = 32,
                               .refuse_after = 64,
                               .throttle = {.limit = 1, .period_us = SEC},
                               .refuse_ttl_s = 600};
    return l;
}

/* ------------------------------------------------------------ fingerprint */

static void test_simhash_of_one_word_is_its_xxh3(void **state)
{
    (void)state;
    uint64_t h = XXH3_64bits_withSeed("hello", 5, 0);
    assert_int_equal(sh("hello"), h);
    /* case folded, punctuation and spaces are separators */
    assert_int_equal(sh("  HeLLo!!! "), h);
    assert_int_equal(sh(""), 0);
    assert_int_equal(sh("?! ... --"), 0);
    assert_int_equal(gw_farm_simhash(NULL, 3), 0);
}

static void test_simhash_of_two_words_is_the_bitwise_majority(void **state)
{
    (void)state;
    uint64_t a = XXH3_64bits_withSeed("red", 3, 0), b = XXH3_64bits_withSeed("chair", 5, 0);
    uint64_t pair[2] = {a, b};
    uint64_t p = XXH3_64bits_withSeed(pair, sizeof(pair), 1);
    assert_int_equal(sh("Red, chair."), (a & b) | (a & p) | (b & p));
    /* a function word between them is no word at all: still one pair */
    assert_int_equal(sh("red, and the chair"), (a & b) | (a & p) | (b & p));
    /* word order matters through the pair */
    uint64_t pair2[2] = {b, a};
    uint64_t q = XXH3_64bits_withSeed(pair2, sizeof(pair2), 1);
    assert_int_equal(sh("chair red"), (a & b) | (a & q) | (b & q));
}

static void test_simhash_pinned_values_and_distances(void **state)
{
    (void)state;
    /* pinned: a change to the features changes every stored fingerprint */
    uint64_t t1 = sh("Write a product description for a red wooden chair.");
    uint64_t t2 = sh("Write a product description for a blue metal table.");
    uint64_t t3 = sh("Write a product description for a green plastic lamp.");
    uint64_t o1 = sh("How do I bake sourdough bread at home?");
    uint64_t o2 = sh("Explain quantum entanglement to a child.");
    assert_int_equal(t1, 0xf4808c5833aa6f1dull);
    assert_int_equal(t2, 0xa083added91a4d11ull);
    assert_int_equal(t3, 0xf08fbe7a920e5a1dull);
    assert_int_equal(o1, 0x543ce1abdc710c5bull);
    assert_int_equal(o2, 0x395b877b2df4c700ull);
    /* one template's fills sit around the default 20 bits of each other,
     * unrelated prompts well beyond it (32 on average) */
    assert_int_equal(dist(t1, t2), 22);
    assert_int_equal(dist(t1, t3), 20);
    assert_int_equal(dist(t2, t3), 22);
    assert_int_equal(dist(t1, o1), 38);
    assert_int_equal(dist(o1, o2), 35);
    /* function words are no features: only "red chair" counts */
    assert_int_equal(sh("The red chair, of the"), sh("red chair"));
    assert_int_equal(sh("the and of you"), 0);
    /* only the first GW_FARM_MAX_BYTES bytes count */
    static char big[GW_FARM_MAX_BYTES + 100];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = i % 6 == 5 ? ' ' : (char)('a' + (i / 6) % 26);
    uint64_t cut = gw_farm_simhash(big, GW_FARM_MAX_BYTES);
    assert_int_equal(gw_farm_simhash(big, sizeof(big)), cut);
}

static void test_text_is_a_chats_last_message_less_its_template(void **state)
{
    (void)state;
    static const char chat[] = "system\0Be brief\0user\0hi there\0assistant\0hello\0user\0what now";
    const char *t;
    size_t n;
    int single;
    gw_farm_text(chat, sizeof(chat) - 1, 1, NULL, &t, &n, &single);
    assert_int_equal(n, 8);
    assert_memory_equal(t, "what now", 8);
    assert_int_equal(single, 0);
    static const char one[] = "system\0Be brief\0user\0Summarize: the cat sat";
    struct gw_farm_prefixes pfx = {.n = 2};
    strcpy(pfx.s[0], "Translate: ");
    strcpy(pfx.s[1], "Summarize: ");
    gw_farm_text(one, sizeof(one) - 1, 1, &pfx, &t, &n, &single);
    assert_int_equal(single, 1);
    assert_int_equal(n, 11);
    assert_memory_equal(t, "the cat sat", 11);
    /* plain prompts: whole text; a prefix that is not there cuts nothing */
    gw_farm_text("Summarize it", 12, 0, &pfx, &t, &n, &single);
    assert_int_equal(n, 12);
    assert_int_equal(single, 1);
}

/* ------------------------------------------------------------------ score */

static void test_score_of_a_built_window_is_exact(void **state)
{
    (void)state;
    const uint64_t A = 0x0123456789abcdefull, B = ~A;
    uint64_t fp[5] = {A, A ^ 1, B, A ^ 3, B ^ 0xf};
    uint64_t at[5] = {NOW, NOW + 1000, NOW + 2000, NOW + 3000, NOW + 4000};
    uint8_t one[5] = {1, 1, 1, 1, 1};
    struct gw_farm_limits l = limits();
    l.near_bits = 2;
    l.min_samples = 5;
    struct gw_farm_score s;
    gw_farm_score_window(fp, at, one, 5, &l, &s);
    /* A^1 and A^3 are within 2 bits of A; B^0xf is 4 from B */
    assert_int_equal(s.n, 5);
    assert_int_equal(s.near, 2);
    assert_int_equal(s.near_pct, 50);
    assert_int_equal(s.nearest_bits, 4);
    assert_int_equal(s.nearest_fp, B);
    assert_int_equal(s.fp, B ^ 0xf);
    assert_int_equal(s.cv_pct, 0); /* a gap of exactly 1 ms each time */
    assert_int_equal(s.single_pct, 100);
    assert_int_equal(s.sweep, 100);
    assert_int_equal(s.score, 100);
    /* gaps 1, 2, 1, 4 ms: mean 2, sd sqrt(1.5) = 1.2247: CV 61 % */
    uint64_t at2[5] = {NOW, NOW + 1000, NOW + 3000, NOW + 4000, NOW + 8000};
    gw_farm_score_window(fp, at2, one, 5, &l, &s);
    assert_int_equal(s.cv_pct, 61);
    assert_int_equal(s.sweep, 0);
    assert_int_equal(s.score, 50);
    /* gaps 1, 1, 1, 1.4 ms: mean 1.1, sd 0.1732: CV 16 %, sweep 100 - 32 */
    uint64_t at3[5] = {NOW + 4400, NOW + 1000, NOW, NOW + 2000, NOW + 3000}; /* any order */
    gw_farm_score_window(fp, at3, one, 5, &l, &s);
    assert_int_equal(s.cv_pct, 16);
    assert_int_equal(s.sweep, 68);
    assert_int_equal(s.score, 68);
    /* a conversation turn among them: 80 % single-turn is no sweep */
    uint8_t mixed[5] = {1, 0, 1, 1, 1};
    gw_farm_score_window(fp, at3, mixed, 5, &l, &s);
    assert_int_equal(s.single_pct, 80);
    assert_int_equal(s.sweep, 0);
    assert_int_equal(s.score, 50);
    /* below min_samples the parts are kept but the score is 0 */
    l.min_samples = 6;
    gw_farm_score_window(fp, at3, one, 5, &l, &s);
    assert_int_equal(s.sweep, 68);
    assert_int_equal(s.score, 0);
    /* empty entries (cleared, never written) are skipped */
    uint64_t holes[5] = {0, A, 0, A ^ 1, 0};
    l.min_samples = 2;
    gw_farm_score_window(holes, at, one, 5, &l, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.near_pct, 100);
    assert_int_equal(s.score, 100);
    /* sweep_cv_pct 0 turns the sweep part off */
    l.sweep_cv_pct = 0;
    gw_farm_score_window(fp, at, one, 5, &l, &s);
    assert_int_equal(s.sweep, 0);
}

/* ----------------------------------------------------------------- ladder */

static struct gw_acct tenant(struct fx *f, const char *id)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_TENANT, id, strlen(id), 1, NOW, &a), 0);
    return a;
}

static struct gw_farm_limits small_ladder(void)
{
    struct gw_farm_limits l = limits();
    l.window = 8;
    l.min_samples = 4;
    l.near_bits = 0;
    l.sweep_cv_pct = 0;
    l.throttle_after = 3;
    l.refuse_after = 5;
    l.refuse_ttl_s = 60;
    return l;
}

static void test_ladder_flags_throttles_refuses_then_expires(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "farmer");
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    const uint64_t fp = 0xfeedull;
    for (int i = 0; i < 3; i++) { /* below min_samples: no score */
        assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + (uint64_t)i * SEC, &l, &v), 0);
        assert_int_equal(v.s.score, 0);
        assert_int_equal(v.level, GW_FARM_NONE);
    }
    assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + 3 * SEC, &l, &v), 0);
    assert_int_equal(v.s.score, 100);
    assert_int_equal(v.s.near_pct, 100);
    assert_int_equal(v.prev_level, GW_FARM_NONE);
    assert_int_equal(v.level, GW_FARM_FLAGGED);
    assert_int_equal(v.strikes, 1);
    assert_int_equal(v.refuse, 0);
    assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + 4 * SEC, &l, &v), 0);
    assert_int_equal(v.prev_level, GW_FARM_FLAGGED); /* no new step: no audit line */
    assert_int_equal(v.level, GW_FARM_FLAGGED);
    assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + 5 * SEC, &l, &v), 0);
    assert_int_equal(v.level, GW_FARM_THROTTLED);
    assert_int_equal(v.prev_level, GW_FARM_FLAGGED);
    assert_int_equal(v.throttled, 0); /* the throttle's first request passes */
    /* a second one in the same instant: 1 per second */
    assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + 5 * SEC, &l, &v), 0);
    assert_int_equal(v.strikes, 4);
    assert_int_equal(v.throttled, 1);
    assert_int_equal(v.retry_us, SEC);
    assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + 6 * SEC, &l, &v), 0);
    assert_int_equal(v.level, GW_FARM_REFUSED);
    assert_int_equal(v.prev_level, GW_FARM_THROTTLED);
    assert_int_equal(v.refuse, 1);
    assert_int_equal(v.until_s, NOW / SEC + 6 + 60);
    assert_int_equal(v.retry_us, 60 * SEC);
    /* during the TTL every request is refused and nothing moves */
    assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + 30 * SEC, &l, &v), 0);
    assert_int_equal(v.refuse, 1);
    assert_int_equal(v.prev_level, GW_FARM_REFUSED);
    assert_int_equal(v.strikes, 5);
    assert_int_equal(v.retry_us, 36 * SEC);
    struct gw_farm_state st;
    assert_int_equal(gw_farm_get(&f->seg, a, NOW + 30 * SEC, &st), 0);
    assert_int_equal(st.level, GW_FARM_REFUSED);
    assert_int_equal(st.seen, 9);
    assert_int_equal(st.strikes_total, 5);
    assert_int_equal(st.refused_total, 3); /* one throttled, two refused */
    assert_int_equal(st.score, 100);
    assert_int_equal(st.n, 8);
    assert_int_equal(st.last_fp, fp);
    /* once it passed, the tenant starts from no strikes: a new flag */
    assert_int_equal(gw_farm_get(&f->seg, a, NOW + 66 * SEC, &st), 0);
    assert_int_equal(st.level, GW_FARM_NONE);
    assert_int_equal(gw_farm_observe(&f->seg, a, fp, 1, NOW + 66 * SEC, &l, &v), 0);
    assert_int_equal(v.prev_level, GW_FARM_NONE);
    assert_int_equal(v.level, GW_FARM_FLAGGED);
    assert_int_equal(v.strikes, 1);
    assert_int_equal(v.refuse, 0);
    fx_close(f);
}

static void test_diverse_prompts_take_strikes_away(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "mixed"), b = tenant(f, "human");
    struct gw_farm_limits l = small_ladder();
    l.near_bits = 8;
    struct gw_farm_verdict v;
    for (int i = 0; i < 4; i++)
        assert_int_equal(gw_farm_observe(&f->seg, a, 0xabcull, 1, NOW + (uint64_t)i, &l, &v), 0);
    assert_int_equal(v.strikes, 1);
    /* fingerprints far from everything (XXH3 of distinct words): near_pct
     * falls below flag_score and each takes a strike away */
    uint64_t x = XXH3_64bits_withSeed("one", 3, 0);
    assert_int_equal(gw_farm_observe(&f->seg, a, x, 1, NOW + 10, &l, &v), 0);
    assert_int_equal(v.s.near_pct, 75); /* 3 of 4 near an earlier one: still a strike */
    assert_int_equal(v.strikes, 2);
    const char *words[] = {"two", "three", "four", "five", "six", "seven", "eight", "nine"};
    for (int i = 0; i < 8; i++) {
        uint64_t h = XXH3_64bits_withSeed(words[i], strlen(words[i]), 0);
        assert_int_equal(gw_farm_observe(&f->seg, b, h, 0, NOW + (uint64_t)i * 7919, &l, &v), 0);
        assert_int_equal(v.s.near, 0);
        assert_int_equal(v.level, GW_FARM_NONE);
        assert_int_equal(gw_farm_observe(&f->seg, a, h, 1, NOW + 20 + (uint64_t)i, &l, &v), 0);
    }
    assert_int_equal(v.strikes, 0);
    assert_int_equal(v.level, GW_FARM_NONE);
    /* fp 0 (a prompt without words) records nothing but is judged */
    struct gw_farm_state st;
    assert_int_equal(gw_farm_get(&f->seg, b, NOW, &st), 0);
    assert_int_equal(gw_farm_observe(&f->seg, b, 0, 1, NOW + SEC, &l, &v), 0);
    struct gw_farm_state st2;
    assert_int_equal(gw_farm_get(&f->seg, b, NOW, &st2), 0);
    assert_int_equal(st2.seen, st.seen);
    fx_close(f);
}

static void test_clear_resets_ladder_and_evidence_and_keeps_totals(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "farmer");
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    for (int i = 0; i < 9; i++)
        assert_int_equal(gw_farm_observe(&f->seg, a, 0x77ull, 1, NOW + (uint64_t)i * SEC, &l, &v),
                         0);
    assert_int_equal(v.level, GW_FARM_REFUSED);
    assert_int_equal(gw_farm_clear(&f->seg, a), 0);
    struct gw_farm_state st;
    assert_int_equal(gw_farm_get(&f->seg, a, NOW + 9 * SEC, &st), 0);
    assert_int_equal(st.level, GW_FARM_NONE);
    assert_int_equal(st.strikes, 0);
    assert_int_equal(st.score, 0);
    assert_int_equal(st.seen, 9);
    assert_int_equal(st.strikes_total, 5);
    assert_int_equal(st.refused_total, 2);
    /* the evidence went too: the next prompt is alone in its window */
    assert_int_equal(gw_farm_observe(&f->seg, a, 0x77ull, 1, NOW + 10 * SEC, &l, &v), 0);
    assert_int_equal(v.s.n, 1);
    assert_int_equal(v.refuse, 0);
    assert_int_equal(v.level, GW_FARM_NONE);
    /* accounts without a budget record, and stale references, are refused */
    struct gw_acct ip;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "1.2.3.4", 7, 1, NOW, &ip), 0);
    assert_int_equal(gw_farm_observe(&f->seg, ip, 1, 1, NOW, &l, &v), -ENOENT);
    assert_int_equal(gw_farm_clear(&f->seg, ip), -ENOENT);
    struct gw_acct stale = a;
    stale.gen++;
    assert_int_equal(gw_farm_get(&f->seg, stale, NOW, &st), GW_ESTALE);
    l.window = 0;
    assert_int_equal(gw_farm_observe(&f->seg, a, 1, 1, NOW, &l, &v), -EINVAL);
    fx_close(f);
}

static void test_state_survives_a_reattach(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "farmer");
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    for (int i = 0; i < 6; i++)
        assert_int_equal(gw_farm_observe(&f->seg, a, 0x99ull, 1, NOW + (uint64_t)i * SEC, &l, &v),
                         0);
    assert_int_equal(v.level, GW_FARM_THROTTLED);
    /* as a restarted master does: unmap, map the same file again */
    gw_segment_close(&f->seg);
    assert_int_equal(gw_segment_open(&f->seg, f->path, &fx_cfg, f->err, sizeof(f->err)), 0);
    struct gw_acct b;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_TENANT, "farmer", 6, 0, NOW, &b), 0);
    struct gw_farm_state st;
    assert_int_equal(gw_farm_get(&f->seg, b, NOW + 6 * SEC, &st), 0);
    assert_int_equal(st.level, GW_FARM_THROTTLED);
    assert_int_equal(st.strikes, 3);
    assert_int_equal(st.seen, 6);
    /* the ring came back too: the next one is scored on 7 prompts */
    assert_int_equal(gw_farm_observe(&f->seg, b, 0x99ull, 1, NOW + 7 * SEC, &l, &v), 0);
    assert_int_equal(v.s.n, 7);
    assert_int_equal(v.strikes, 4);
    fx_close(f);
}

/* Children record the same template as fast as they can and are SIGKILLed
 * at random instructions. Nothing is repaired afterwards: the ladder must
 * still be one whole decision (its level the one its strikes give), every
 * ring entry the fingerprint or empty, and the next prompt scored as any. */
static void test_processes_killed_while_recording_leave_nothing_to_repair(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "farmer");
    struct gw_farm_limits l = small_ladder();
    l.throttle_after = 1000;
    l.refuse_after = 100000;
    for (int round = 0; round < 2; round++) {
        pid_t kids[3];
        for (int k = 0; k < 3; k++) {
            kids[k] = fork();
            assert_true(kids[k] >= 0);
            if (kids[k] == 0) {
                struct gw_farm_verdict v;
                /* at most 2 x 3 x 15000 strikes in all: never refused */
                for (uint64_t i = 0; i < 15000; i++)
                    gw_farm_observe(&f->seg, a, 0x5555ull, 1, NOW + i, &l, &v);
                _exit(0);
            }
        }
        usleep(2000 + 3000 * (useconds_t)round);
        for (int k = 0; k < 3; k++) {
            kill(kids[k], SIGKILL);
            waitpid(kids[k], NULL, 0);
        }
    }
    struct gw_farm_state st;
    assert_int_equal(gw_farm_get(&f->seg, a, NOW, &st), 0);
    assert_true(st.seen > 100);
    assert_int_equal(st.level, st.strikes == 0      ? GW_FARM_NONE
                               : st.strikes >= 1000 ? GW_FARM_THROTTLED
                                                    : GW_FARM_FLAGGED);
    assert_true(st.last_fp == 0x5555ull);
    struct gw_farm_verdict v;
    assert_int_equal(gw_farm_observe(&f->seg, a, 0x5555ull, 1, NOW + SEC, &l, &v), 0);
    /* every entry in the window is the template (or was never written) */
    assert_int_equal(v.s.near_pct, 100);
    assert_int_equal(v.s.score, 100);
    assert_true(v.level == GW_FARM_FLAGGED || v.level == GW_FARM_THROTTLED);
    fx_close(f);
}

/* ---------------------------------------------------------- output_tokens */

static void test_output_tokens_quota_is_exact(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "writer");
    struct gw_window w = {.limit = 100, .period_us = 60 * SEC}; /* a token: 0.6 s */
    uint64_t left = 0, retry = 0;
    assert_int_equal(gw_outq_check(&f->seg, a, &w, NOW, &left, &retry), 0);
    assert_int_equal(left, 100);
    assert_int_equal(gw_outq_charge(&f->seg, a, &w, 60, NOW), 0);
    assert_int_equal(gw_outq_check(&f->seg, a, &w, NOW, &left, &retry), 0);
    assert_int_equal(left, 40);
    /* a request may overshoot by its own length; the next ones wait */
    assert_int_equal(gw_outq_charge(&f->seg, a, &w, 50, NOW), 0);
    assert_int_equal(gw_outq_check(&f->seg, a, &w, NOW, &left, &retry), GW_EREFUSED);
    assert_int_equal(left, 0);
    assert_int_equal(retry, 6600000); /* 10 over and one to spend: 11 x 0.6 s */
    assert_int_equal(gw_outq_check(&f->seg, a, &w, NOW + 6600000, &left, &retry), 0);
    assert_int_equal(left, 1);
    /* charged from now when the cell is idle: a full window refills it */
    assert_int_equal(gw_outq_check(&f->seg, a, &w, NOW + 200 * SEC, &left, &retry), 0);
    assert_int_equal(left, 100);
    assert_int_equal(gw_outq_charge(&f->seg, a, &w, 0, NOW), 0);
    /* a token's cost rounds up: 3 per second is 333334 us each */
    struct gw_window three = {.limit = 3, .period_us = SEC, .burst = 1};
    struct gw_acct b = tenant(f, "three");
    assert_int_equal(gw_outq_check(&f->seg, b, &three, NOW, &left, &retry), 0);
    assert_int_equal(left, 4); /* limit + burst */
    assert_int_equal(gw_outq_charge(&f->seg, b, &three, 4, NOW), 0);
    assert_int_equal(gw_outq_check(&f->seg, b, &three, NOW, &left, &retry), GW_EREFUSED);
    assert_int_equal(retry, 333334); /* all four spent: the next one in a token's time */
    struct gw_window zero = {.limit = 0, .period_us = SEC};
    assert_int_equal(gw_outq_check(&f->seg, b, &zero, NOW, &left, &retry), -EINVAL);
    struct gw_acct ip;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "1.2.3.4", 7, 1, NOW, &ip), 0);
    assert_int_equal(gw_outq_charge(&f->seg, ip, &w, 1, NOW), -ENOENT);
    fx_close(f);
}

/* ------------------------------------------------------------------ audit */

static void test_audit_line_carries_the_evidence(void **state)
{
    (void)state;
    struct gw_farm_verdict v = {.level = GW_FARM_REFUSED,
                                .prev_level = GW_FARM_THROTTLED,
                                .strikes = 64,
                                .until_s = 1700000600,
                                .s = {.n = 32,
                                      .near = 31,
                                      .near_pct = 100,
                                      .cv_pct = 12,
                                      .single_pct = 100,
                                      .sweep = 76,
                                      .score = 100,
                                      .nearest_bits = 9,
                                      .fp = 0xf2c71afeb61e4e17ull,
                                      .nearest_fp = 0xf2c732d6bf1ecc57ull}};
    char line[1024];
    size_t n = gw_farm_audit_line(line, sizeof(line), NOW + 123456, "acme\"x", &v);
    const char *want =
        "{\"time\":\"2023-11-14T22:13:20.123Z\",\"event\":\"farming\",\"tenant\":\"acme?x\","
        "\"level\":\"refused\",\"strikes\":64,\"score\":100,\"near_pct\":100,\"near\":31,"
        "\"n\":32,\"cv_pct\":12,\"single_pct\":100,\"sweep\":76,\"fp\":\"f2c71afeb61e4e17\","
        "\"nearest_fp\":\"f2c732d6bf1ecc57\",\"nearest_bits\":9,\"until\":1700000600}\n";
    assert_string_equal(line, want);
    assert_int_equal(n, strlen(want));
    v.banned_until_s = 1700003600;
    n = gw_farm_audit_line(line, sizeof(line), NOW + 123456, "acme", &v);
    assert_non_null(strstr(line, "\"until\":1700000600,\"banned_until\":1700003600}\n"));
    /* cut to the buffer, never beyond */
    assert_int_equal(gw_farm_audit_line(line, 16, NOW, "acme", &v), 15);
    assert_int_equal(strlen(line), 15);
    assert_string_equal(gw_farm_level_name(GW_FARM_THROTTLED), "throttled");
    assert_string_equal(gw_farm_level_name(9), "unknown");
}

/* ----------------------------------------------------------------- config */

static char secret[128];

static int make_secret(void **state)
{
    (void)state;
    snprintf(secret, sizeof(secret), "/tmp/gw-farm-secret-%d", (int)getpid());
    FILE *f = fopen(secret, "w");
    fputs("farm-test-secret-0123456789abcdef0123456789", f);
    fclose(f);
    return 0;
}

static int drop_secret(void **state)
{
    (void)state;
    unlink(secret);
    return 0;
}

static int parse(const char *plans_tenants, struct gw_config **cfg, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"state_dir\": \"./run\", \"model\": {\"path\": \"m.gguf\", \"name\": \"tiny\"},"
             " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": "
             "\"%s\"}]}, %s}",
             secret, plans_tenants);
    *cfg = NULL;
    err[0] = '\0';
    return gw_config_parse(cfg, text, strlen(text), "farm.json", err, errlen);
}

static void test_config_defaults_and_overrides(void **state)
{
    (void)state;
    struct gw_config *cfg;
    char err[2048];
    int rc = parse("\"plans\": {\"free\": {}, \"app\": {\"farming\": {\"enabled\": true,"
                   " \"window\": 48, \"near_bits\": 10, \"throttle\": \"2 per minute burst 1\","
                   " \"ignore_prefix\": [\"Summarize: \", \"Translate: \"]}}},"
                   " \"tenants\": {\"acme\": {\"plan\": \"app\", \"farming\": {\"flag_score\": 80,"
                   " \"refuse_ttl_s\": 60, \"ban_ttl_s\": 86400}, \"output_tokens\": \"5000 per "
                   "hour burst 100\"}}",
                   &cfg, err, sizeof(err));
    assert_string_equal(err, "");
    assert_int_equal(rc, 0);
    const struct gw_farm_limits *d = &cfg->plans[0].farm;
    if (strcmp(cfg->plans[0].name, "free") != 0)
        d = &cfg->plans[1].farm;
    assert_int_equal(d->enabled, 0);
    assert_int_equal(d->window, 32);
    assert_int_equal(d->min_samples, 16);
    assert_int_equal(d->near_bits, 20);
    assert_int_equal(d->sweep_cv_pct, 50);
    assert_int_equal(d->sweep_single_pct, 90);
    assert_int_equal(d->flag_score, 60);
    assert_int_equal(d->throttle_after, 32);
    assert_int_equal(d->refuse_after, 64);
    assert_int_equal(d->throttle.limit, 1);
    assert_int_equal(d->throttle.period_us, SEC);
    assert_int_equal(d->refuse_ttl_s, 600);
    assert_int_equal(d->prefixes, 0);
    const struct gw_tenant *t = gw_config_tenant(cfg, "acme");
    assert_non_null(t);
    const struct gw_farm_limits *l = &t->plan.farm;
    assert_int_equal(l->enabled, 1);
    assert_int_equal(l->window, 48);
    assert_int_equal(l->near_bits, 10);
    assert_int_equal(l->flag_score, 80);
    assert_int_equal(l->refuse_ttl_s, 60);
    assert_int_equal(l->ban_ttl_s, 86400);
    assert_int_equal(d->ban_ttl_s, 0);
    assert_int_equal(l->throttle.limit, 2);
    assert_int_equal(l->throttle.period_us, 60 * SEC);
    assert_int_equal(l->throttle.burst, 1);
    assert_int_equal(l->prefixes, 1);
    assert_int_equal(cfg->n_farm_prefixes, 1);
    assert_int_equal(cfg->farm_prefixes[0].n, 2);
    assert_string_equal(cfg->farm_prefixes[0].s[1], "Translate: ");
    assert_int_equal(t->plan.has_output, 1);
    assert_int_equal(t->plan.output.limit, 5000);
    assert_int_equal(t->plan.output.period_us, 3600 * SEC);
    assert_int_equal(t->plan.output.burst, 100);
    gw_config_free(cfg);
}

static void expect(const char *farming, const char *want)
{
    char doc[2048], err[2048];
    snprintf(doc, sizeof(doc), "\"plans\": {\"p\": {\"farming\": %s}}", farming);
    struct gw_config *cfg;
    int rc = parse(doc, &cfg, err, sizeof(err));
    if (rc != -EINVAL || strcmp(err, want) != 0)
        print_error("farming %s\n", farming);
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_string_equal(err, want);
}

static void test_config_mistakes_are_named_by_path(void **state)
{
    (void)state;
    expect("[]", "config: plans.p.farming: expected an object");
    expect("{\"enabled\": 1}", "config: plans.p.farming.enabled: expected true or false");
    expect("{\"windows\": 8}", "config: plans.p.farming.windows: unknown key");
    expect("{\"window\": 65}", "config: plans.p.farming.window: expected an integer in [4, 64]");
    expect("{\"near_bits\": 33}",
           "config: plans.p.farming.near_bits: expected an integer in [0, 32]");
    expect("{\"flag_score\": 0}",
           "config: plans.p.farming.flag_score: expected an integer in [1, 100]");
    expect("{\"sweep_cv_pct\": 0.5}",
           "config: plans.p.farming.sweep_cv_pct: expected an integer in [0, 1000]");
    expect("{\"window\": 8}", "config: plans.p.farming.min_samples: 16 is more than window (8)");
    expect("{\"throttle_after\": 100}",
           "config: plans.p.farming.refuse_after: 64 is less than throttle_after (100)");
    expect("{\"throttle\": \"1 per fortnight\"}",
           "config: plans.p.farming.throttle: \"1 per fortnight\": expected \"N per "
           "second|minute|hour|day [burst M]\"");
    expect("{\"throttle\": 5}", "config: plans.p.farming.throttle: \"(not a string)\": expected "
                                "\"N per second|minute|hour|day [burst M]\"");
    expect("{\"ban_ttl_s\": -1}",
           "config: plans.p.farming.ban_ttl_s: expected an integer in [0, 31622400]");
    expect("{\"ignore_prefix\": []}",
           "config: plans.p.farming.ignore_prefix: expected an array of 1 to 4 strings");
    expect("{\"ignore_prefix\": [\"ok\", \"\"]}",
           "config: plans.p.farming.ignore_prefix[1]: expected a string of 1 to 511 bytes");
    char err[2048];
    struct gw_config *cfg;
    assert_int_equal(
        parse("\"plans\": {\"p\": {\"output_tokens\": \"many per day\"}}", &cfg, err, sizeof(err)),
        -EINVAL);
    assert_string_equal(err, "config: plans.p.output_tokens: \"many per day\": expected \"N per "
                             "second|minute|hour|day [burst M]\" or null");
    /* tokens are counted by GCRA: the moving kind is for request windows */
    assert_int_equal(parse("\"plans\": {\"p\": {\"output_tokens\": \"100 per day moving\"}}", &cfg,
                           err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "config: plans.p.output_tokens: \"100 per day moving\": expected \"N "
                             "per second|minute|hour|day [burst M]\" or null");
    assert_int_equal(parse("\"plans\": {\"p\": {\"output_tokens\": 5}}", &cfg, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "config: plans.p.output_tokens: not a string: expected \"N per "
                             "second|minute|hour|day [burst M]\" or null");
    expect("{\"refuse_ttl_s\": 0, \"min_samples\": 1}",
           "config: plans.p.farming.min_samples: expected an integer in [2, 64]\n"
           "config: plans.p.farming.refuse_ttl_s: expected an integer in [1, 2592000]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simhash_of_one_word_is_its_xxh3),
        cmocka_unit_test(test_simhash_of_two_words_is_the_bitwise_majority),
        cmocka_unit_test(test_simhash_pinned_values_and_distances),
        cmocka_unit_test(test_text_is_a_chats_last_message_less_its_template),
        cmocka_unit_test(test_score_of_a_built_window_is_exact),
        cmocka_unit_test(test_ladder_flags_throttles_refuses_then_expires),
        cmocka_unit_test(test_diverse_prompts_take_strikes_away),
        cmocka_unit_test(test_clear_resets_ladder_and_evidence_and_keeps_totals),
        cmocka_unit_test(test_state_survives_a_reattach),
        cmocka_unit_test(test_processes_killed_while_recording_leave_nothing_to_repair),
        cmocka_unit_test(test_output_tokens_quota_is_exact),
        cmocka_unit_test(test_audit_line_carries_the_evidence),
        cmocka_unit_test(test_config_defaults_and_overrides),
        cmocka_unit_test(test_config_mistakes_are_named_by_path),
    };
    return cmocka_run_group_tests(tests, make_secret, drop_secret);
}
