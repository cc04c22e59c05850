/* test_moving.c - what "N per window" admits, exactly, for both window
 * kinds (issue 18), on an injected clock unless said otherwise:
 *  - GCRA ("10 per minute"): 10 at once, then one every 6 s: 19 in the
 *    first minute;
 *  - moving, exact form (N <= 16, common/moving.c): exactly 10 of 40 in a
 *    minute, exactly 10 in every 60 s window of a 3-minute run, the same
 *    decisions as a textbook sliding log for N = 1 .. 16 under random
 *    senders, holes from rolled-back admissions are free places, a clock
 *    stepping back never admits extra, reclaim once the last admission is
 *    a period old, a claim whose slot store is late or never lands only
 *    refuses; and with the real clock, processes hammering one cell
 *    never put more than N in any window, and processes SIGKILLed while
 *    they do leave a cell that admits exactly N afterwards;
 *  - moving, bucket form (N > 16): never more than N in any window, N per
 *    P to 1.25 P for a steady sender, Retry-After, rollback, reclaim. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"
#include "seg_internal.h" /* to make a claim whose store never lands */

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

/* A multiple of 15 s, so "per minute moving" buckets start at t = 0. */
#define T0 1700000010000000ull
#define SEC 1000000ull
#define MS 1000ull

static struct gw_acct ip_acct(struct fx *f, const char *id, uint64_t now)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, id, strlen(id), 1, now, &a), 0);
    return a;
}

static struct gw_admit_item item(struct gw_acct a, int cell, const char *window)
{
    struct gw_window w;
    assert_int_equal(gw_window_parse(window, &w), 0);
    struct gw_admit_item it = {.acct = a, .cell = (uint8_t)cell};
    assert_int_equal(gw_window_rate(&w, &it.rate), 0);
    return it;
}

static int admit(struct fx *f, const struct gw_admit_item *it, int n, uint64_t now, uint64_t *retry)
{
    uint64_t r = 0;
    int rc = gw_ledger_admit(&f->seg, it, n, now, &r);
    if (retry)
        *retry = r;
    return rc;
}

/* Admissions (relative times, sorted) inside [x, x + p): */
static int in_window(const uint64_t *at, int n, uint64_t x, uint64_t p)
{
    int in = 0;
    for (int i = 0; i < n; i++)
        in += at[i] >= x && at[i] < x + p;
    return in;
}

static void test_gcra_ten_per_minute_admits_nineteen_in_the_first_minute(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.1", T0), 0, "10 per minute");
    int ok = 0;
    for (int i = 0; i < 40; i++)
        ok += admit(f, &it, 1, T0, NULL) == 0;
    assert_int_equal(ok, 10);
    for (int s = 1; s < 60; s++)
        ok += admit(f, &it, 1, T0 + (uint64_t)s * SEC, NULL) == 0;
    assert_int_equal(ok, 19); /* the 9 more came at 6, 12, ..., 54 s */
    fx_close(f);
}

static void test_moving_ten_per_minute_admits_exactly_ten_of_forty(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.2", T0), 0, "10 per minute moving");
    assert_int_not_equal(it.rate.moving_period_ms, 0); /* the exact form */
    int ok = 0;
    for (int i = 0; i < 40; i++)
        ok += admit(f, &it, 1, T0 + (uint64_t)i * 1500000ull, NULL) == 0; /* 40 in 60 s */
    assert_int_equal(ok, 10);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, it.acct, 0, &it.rate, T0 + 59 * SEC), 0);
    fx_close(f);
}

static void test_exact_admits_exactly_ten_in_every_minute_of_three(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.3", T0), 0, "10 per minute moving");
    uint64_t at[200];
    int n = 0;
    for (uint64_t t = 0; t < 180 * SEC; t += SEC / 4) /* 4 a second for 3 minutes */
        if (admit(f, &it, 1, T0 + t, NULL) == 0)
            at[n++] = t;
    /* 10 at once, then 10 as soon as each is a minute old, and again */
    assert_int_equal(n, 30);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(at[i], (uint64_t)i * SEC / 4);
        assert_int_equal(at[10 + i], 60 * SEC + (uint64_t)i * SEC / 4);
        assert_int_equal(at[20 + i], 120 * SEC + (uint64_t)i * SEC / 4);
    }
    /* every 60 s window inside the run, at every ms: exactly 10 */
    for (uint64_t x = 0; x + 60 * SEC <= 180 * SEC; x += MS)
        if (in_window(at, n, x, 60 * SEC) != 10)
            fail_msg("window at %llu us holds %d", (unsigned long long)x,
                     in_window(at, n, x, 60 * SEC));
    fx_close(f);
}

/* The textbook sliding log: admit when fewer than n admissions (kept
 * here, in ms) are less than p_ms old. */
struct ref_log {
    uint64_t t[4096];
    int len;
};

static int ref_would(const struct ref_log *l, uint64_t now_ms, uint64_t n, uint64_t p_ms)
{
    uint64_t in = 0;
    for (int i = 0; i < l->len; i++)
        in += now_ms - l->t[i] < p_ms;
    return in < n;
}

static int ref_admit(struct ref_log *l, uint64_t now_ms, uint64_t n, uint64_t p_ms)
{
    if (!ref_would(l, now_ms, n, p_ms))
        return 0;
    l->t[l->len++] = now_ms;
    return 1;
}

static void test_exact_decides_as_a_sliding_log_for_every_n(void **state)
{
    (void)state;
    static const char *const windows[] = {"1 per second moving",  "2 per second moving",
                                          "5 per minute moving",  "10 per minute moving",
                                          "16 per minute moving", "16 per hour moving"};
    static struct ref_log ref;
    uint64_t seed = 88172645463325252ull;
    for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
        struct fx *f = fx_open(NULL);
        struct gw_admit_item it = item(ip_acct(f, "192.0.2.30", T0), 0, windows[w]);
        uint64_t n = it.rate.moving_limit, p = it.rate.moving_period_ms;
        assert_true(n >= 1 && n <= GW_MOVING_EXACT_MAX && p > 0);
        memset(&ref, 0, sizeof(ref));
        uint64_t now = T0, admitted = 0;
        for (int i = 0; i < 4000; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            /* bursts (same instant), short gaps, gaps near P, and idle spells */
            uint64_t kind = seed % 8, r = (seed >> 8) % (p * MS);
            now += kind < 2 ? 0 : kind < 6 ? r / n : kind < 7 ? r : 2 * p * MS + r;
            int want = ref_admit(&ref, now / MS, n, p);
            uint64_t retry;
            int got = admit(f, &it, 1, now, &retry) == 0;
            if (got != want)
                fail_msg("%s, request %d at +%llu us: ledger %d, sliding log %d", windows[w], i,
                         (unsigned long long)(now - T0), got, want);
            admitted += (uint64_t)got;
            if (!got) { /* Retry-After is the exact wait: refused 1 us before, admitted at it */
                assert_true(ref_would(&ref, (now + retry) / MS, n, p));
                assert_false(ref_would(&ref, (now + retry - 1) / MS, n, p));
            }
        }
        assert_true(admitted > n);
        fx_close(f);
    }
}

static void test_exact_one_per_second_is_one_in_any_second(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.31", T0), 0, "1 per second moving");
    uint64_t retry;
    assert_int_equal(admit(f, &it, 1, T0 + 500 * MS, NULL), 0);
    assert_int_equal(admit(f, &it, 1, T0 + 500 * MS, &retry), GW_EREFUSED);
    assert_int_equal(retry, SEC);
    assert_int_equal(admit(f, &it, 1, T0 + 1500 * MS - 1, &retry), GW_EREFUSED);
    assert_int_equal(retry, 1);
    assert_int_equal(admit(f, &it, 1, T0 + 1500 * MS, NULL), 0);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, it.acct, 0, &it.rate, T0 + 2 * SEC), 0);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, it.acct, 0, &it.rate, T0 + 2500 * MS), 1);
    fx_close(f);
}

static void test_exact_sixteen_is_the_largest_exact_limit(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.32", T0), 0, "16 per minute moving");
    assert_int_equal(it.rate.moving_period_ms, 60000);
    int ok = 0;
    for (int i = 0; i < 64; i++)
        ok += admit(f, &it, 1, T0 + (uint64_t)i * SEC, NULL) == 0;
    assert_int_equal(ok, 16 + 4); /* 0..15 s, then 60..63 s */
    struct gw_admit_item big = item(it.acct, 1, "17 per minute moving");
    assert_int_equal(big.rate.moving_period_ms, 0); /* the bucket form */
    assert_int_equal(big.rate.moving_bucket_us, 15 * SEC);
    fx_close(f);
}

static void test_exact_retry_after_is_when_the_oldest_is_a_period_old(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.4", T0), 0, "10 per minute moving");
    for (int i = 0; i < 10; i++)
        assert_int_equal(admit(f, &it, 1, T0 + (uint64_t)i * SEC, NULL), 0);
    uint64_t retry;
    assert_int_equal(admit(f, &it, 1, T0 + 10 * SEC, &retry), GW_EREFUSED);
    assert_int_equal(retry, 50 * SEC);
    assert_int_equal(admit(f, &it, 1, T0 + 60 * SEC - 1, &retry), GW_EREFUSED);
    assert_int_equal(retry, 1);
    assert_int_equal(admit(f, &it, 1, T0 + 60 * SEC, NULL), 0);
    assert_int_equal(admit(f, &it, 1, T0 + 60 * SEC, &retry), GW_EREFUSED);
    assert_int_equal(retry, SEC); /* the one of T0 + 1 s */
    fx_close(f);
}

/* Two items on one GCRA cell make the second refuse in phase 2, after the
 * moving cell took its unit: the rollback path of a lost race. */
static void test_exact_rollback_leaves_a_hole_that_is_a_free_place(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = ip_acct(f, "192.0.2.5", T0);
    struct gw_admit_item it[3] = {item(a, 0, "10 per minute moving"), item(a, 1, "1 per hour"),
                                  item(a, 1, "1 per hour")};
    assert_int_equal(admit(f, it, 3, T0, NULL), GW_EREFUSED);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, a, 0, &it[0].rate, T0), 10);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, a, 1, &it[1].rate, T0), 1);
    /* the claim stays in the head as a hole: still exactly 10 in the minute */
    int ok = 0;
    for (int i = 0; i < 30; i++)
        ok += admit(f, it, 1, T0 + SEC + (uint64_t)i * SEC, NULL) == 0;
    assert_int_equal(ok, 10);
    /* and with the moving cell refusing, the GCRA cell stays as it was */
    struct gw_admit_item jt[2] = {item(a, 1, "1 per hour"), item(a, 0, "10 per minute moving")};
    assert_int_equal(admit(f, jt, 2, T0 + 40 * SEC, NULL), GW_EREFUSED);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, a, 1, &jt[0].rate, T0 + 40 * SEC), 1);
    fx_close(f);
}

/* A writer that made its claim (the head's CAS) and then lost the CPU, or
 * died, before storing its time: the slot keeps the previous lap's parity
 * and is read as not written, bounded by the next landed claim's time. */
static uint64_t claim_without_store(struct fx *f, const struct gw_admit_item *it, uint64_t now)
{
    _Atomic uint64_t *cell = &f->seg.accounts[it->acct.index].cell[it->cell];
    uint64_t c = atomic_load(cell), nv, wait;
    assert_int_equal(gw__moving_decide(CELL_V(c), now, &it->rate,
                                       gw__mvlog(&f->seg, it->acct.index, it->cell), &nv, &wait),
                     1);
    assert_true(atomic_compare_exchange_strong(cell, &c, CELL(it->acct.gen, nv)));
    return nv;
}

static void test_exact_claim_whose_store_is_late_or_lost_only_refuses(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    for (int dead = 0; dead <= 1; dead++) {
        struct gw_admit_item it =
            item(ip_acct(f, dead ? "192.0.2.51" : "192.0.2.50", T0), 0, "4 per minute moving");
        for (int i = 0; i < 3; i++)
            assert_int_equal(admit(f, &it, 1, T0 + (uint64_t)i * SEC, NULL), 0);
        uint64_t nv = claim_without_store(f, &it, T0 + 3 * SEC); /* the 4th, at 3 s */
        for (int i = 0; i < 3; i++)                              /* the places of 0, 1 and 2 s */
            assert_int_equal(admit(f, &it, 1, T0 + (uint64_t)(60 + i) * SEC, NULL), 0);
        /* the 4th's slot still holds nothing: it counts as the next landed
         * claim's time (60 s), never as free or old */
        uint64_t retry;
        assert_int_equal(admit(f, &it, 1, T0 + 63 * SEC, &retry), GW_EREFUSED);
        if (!dead) { /* the store lands: the 4th counts at 3 s, exactly */
            gw__moving_taken(gw__mvlog(&f->seg, it.acct.index, 0), &it.rate, nv);
            assert_int_equal(admit(f, &it, 1, T0 + 63 * SEC, NULL), 0);
            assert_int_equal(admit(f, &it, 1, T0 + 64 * SEC, NULL), GW_EREFUSED);
        } else { /* never: refused until the bound is a minute old, then healed */
            assert_int_equal(retry, 57 * SEC);
            assert_int_equal(admit(f, &it, 1, T0 + 120 * SEC - 1, NULL), GW_EREFUSED);
            assert_int_equal(admit(f, &it, 1, T0 + 120 * SEC, NULL), 0);
            assert_int_equal(admit(f, &it, 1, T0 + 121 * SEC, NULL), 0); /* the place of 60 s */
        }
    }
    fx_close(f);
}

static void test_exact_clock_stepping_back_never_admits_extra(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.33", T0), 0, "10 per minute moving");
    for (int i = 0; i < 10; i++)
        assert_int_equal(admit(f, &it, 1, T0 + 30 * SEC, NULL), 0);
    /* the clock goes back 20 s, then forward again */
    uint64_t retry;
    assert_int_equal(admit(f, &it, 1, T0 + 10 * SEC, &retry), GW_EREFUSED);
    assert_int_equal(retry, 80 * SEC); /* when the clock is a minute past them again */
    assert_int_equal(admit(f, &it, 1, T0 + 89 * SEC, NULL), GW_EREFUSED);
    assert_int_equal(admit(f, &it, 1, T0 + 90 * SEC, NULL), 0);
    /* stamped with the last admission's time: an earlier clock reading
     * admitted after a later one counts at the later one's time */
    struct gw_admit_item jt = item(ip_acct(f, "192.0.2.34", T0), 0, "2 per minute moving");
    assert_int_equal(admit(f, &jt, 1, T0 + 10 * SEC, NULL), 0);
    assert_int_equal(admit(f, &jt, 1, T0 + 5 * SEC, NULL), 0); /* stamped T0 + 10 s */
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, jt.acct, 0, &jt.rate, T0 + 67 * SEC), 0);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, jt.acct, 0, &jt.rate, T0 + 70 * SEC), 2);
    fx_close(f);
}

static void test_exact_window_change_at_a_reload_starts_afresh(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = ip_acct(f, "192.0.2.35", T0);
    struct gw_admit_item ten = item(a, 0, "10 per minute moving");
    struct gw_admit_item twelve = item(a, 0, "12 per minute moving");
    struct gw_admit_item hour = item(a, 0, "10 per hour moving");
    for (int i = 0; i < 10; i++)
        assert_int_equal(admit(f, &ten, 1, T0, NULL), 0);
    /* the same N, a longer period: the same log, read with the new period */
    assert_int_equal(admit(f, &hour, 1, T0 + 61 * SEC, NULL), GW_EREFUSED);
    /* another N: a new log */
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += admit(f, &twelve, 1, T0 + SEC, NULL) == 0;
    assert_int_equal(ok, 12);
    fx_close(f);
}

static void test_exact_account_is_reclaimed_once_a_period_after_its_last(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.7", T0), 0, "10 per minute moving");
    assert_int_equal(admit(f, &it, 1, T0, NULL), 0);
    assert_int_equal(admit(f, &it, 1, T0 + 20 * SEC, NULL), 0);
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, T0 + 60 * SEC), 0);
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, T0 + 80 * SEC - 1), 0);
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, T0 + 80 * SEC), 1);
    /* its next owner starts with an empty log */
    struct gw_admit_item jt =
        item(ip_acct(f, "192.0.2.7", T0 + 80 * SEC), 0, "10 per minute moving");
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += admit(f, &jt, 1, T0 + 81 * SEC, NULL) == 0;
    assert_int_equal(ok, 10);
    fx_close(f);
}

static void test_exact_overflow_bucket_has_its_own_log(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_addr c;
    assert_int_equal(gw_addr_parse("198.51.100.7", 12, &c), 0);
    struct gw_admit_item it = item(gw_overflow_acct(&f->seg, &c), 0, "5 per minute moving");
    struct gw_admit_item known = item(ip_acct(f, "192.0.2.36", T0), 0, "5 per minute moving");
    int ok = 0, k = 0;
    for (int i = 0; i < 12; i++) {
        ok += admit(f, &it, 1, T0 + (uint64_t)i * SEC, NULL) == 0;
        k += admit(f, &known, 1, T0 + (uint64_t)i * SEC, NULL) == 0;
    }
    assert_int_equal(ok, 5);
    assert_int_equal(k, 5);
    assert_int_equal(admit(f, &it, 1, T0 + 60 * SEC, NULL), 0);
    fx_close(f);
}

/* ------------------------------------------------ the bucket form (N > 16) */

static void test_buckets_never_more_than_twenty_in_any_minute_of_three(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.13", T0), 0, "20 per minute moving");
    assert_int_equal(it.rate.moving_period_ms, 0);
    uint64_t at[200];
    int n = 0;
    for (uint64_t t = 0; t < 180 * SEC; t += SEC / 4) /* 4 a second for 3 minutes */
        if (admit(f, &it, 1, T0 + t, NULL) == 0)
            at[n++] = t;
    /* the first 20 at once; the next when the bucket of 0..15 s leaves the
     * view at 75 s; then at 150 s: 20 per 75 s, the form's price */
    assert_int_equal(n, 60);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(at[i], (uint64_t)i * SEC / 4);
        assert_int_equal(at[20 + i], 75 * SEC + (uint64_t)i * SEC / 4);
        assert_int_equal(at[40 + i], 150 * SEC + (uint64_t)i * SEC / 4);
    }
    for (int i = 0; i < n; i++)
        assert_true(in_window(at, n, at[i], 60 * SEC) <= 20);
    fx_close(f);
}

static void test_buckets_retry_after_and_rollback(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = ip_acct(f, "192.0.2.14", T0);
    struct gw_admit_item it = item(a, 0, "20 per minute moving");
    for (int i = 0; i < 20; i++)
        assert_int_equal(admit(f, &it, 1, T0, NULL), 0);
    uint64_t retry;
    assert_int_equal(admit(f, &it, 1, T0 + SEC, &retry), GW_EREFUSED);
    assert_int_equal(retry, 74 * SEC);
    assert_int_equal(admit(f, &it, 1, T0 + 75 * SEC - 1, &retry), GW_EREFUSED);
    assert_int_equal(retry, 1);
    struct gw_admit_item three[3] = {item(a, 2, "20 per minute moving"), item(a, 1, "1 per hour"),
                                     item(a, 1, "1 per hour")};
    assert_int_equal(admit(f, three, 3, T0, NULL), GW_EREFUSED);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, a, 2, &three[0].rate, T0), 20);
    fx_close(f);
}

static void test_buckets_account_is_reclaimed_only_once_idle(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.17", T0), 0, "20 per minute moving");
    assert_int_equal(admit(f, &it, 1, T0, NULL), 0);
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, T0 + 30 * SEC), 0);
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, T0 + 75 * SEC - 1), 0);
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, T0 + 75 * SEC), 1);
    fx_close(f);
}

static void test_moving_window_strings(void **state)
{
    (void)state;
    struct gw_window w;
    assert_int_equal(gw_window_parse("10 per minute moving", &w), 0);
    assert_int_equal(w.limit, 10);
    assert_int_equal(w.period_us, 60 * SEC);
    assert_int_equal(w.burst, 0);
    assert_int_equal(w.moving, 1);
    assert_int_equal(gw_window_parse("10 per minute", &w), 0);
    assert_int_equal(w.moving, 0);
    assert_int_equal(gw_window_parse("255 per day moving", &w), 0);
    assert_int_equal(gw_window_parse("256 per day moving", &w), -EDOM);
    assert_int_equal(gw_window_parse("10 per minute movin", &w), -EINVAL);
    assert_int_equal(gw_window_parse("10 per minute moving burst 2", &w), -EINVAL);
    assert_int_equal(gw_window_parse("10 per minute burst moving", &w), -EINVAL);
    struct gw_rate r;
    assert_int_equal(gw_rate_make_moving(&r, 10, 60 * SEC), 0);
    assert_int_equal(r.moving_period_ms, 60000);
    assert_int_equal(r.moving_bucket_us, 0);
    assert_int_equal(gw_rate_make_moving(&r, 16, 86400 * SEC), 0);
    assert_int_equal(r.moving_period_ms, 86400000);
    assert_int_equal(gw_rate_make_moving(&r, 16, 86401 * SEC), 0); /* over a day: buckets */
    assert_int_equal(r.moving_period_ms, 0);
    assert_int_equal(gw_rate_make_moving(&r, 200, 86400 * SEC), 0);
    assert_int_equal(r.moving_bucket_us, 21600 * SEC);
    assert_int_equal(r.moving_period_ms, 0);
    assert_int_equal(gw_rate_make_moving(&r, 20, 1 * SEC), 0);
    assert_int_equal(r.moving_bucket_us, 250000);
    assert_int_equal(gw_rate_make_moving(&r, 5, 4500), 0);
    assert_int_equal(r.moving_period_ms, 5); /* whole ms, rounded up */
    assert_int_equal(gw_rate_make_moving(&r, 0, 60 * SEC), -EINVAL);
    assert_int_equal(gw_rate_make_moving(&r, 256, 60 * SEC), -EINVAL);
    assert_int_equal(gw_rate_make_moving(&r, 5, 3999), -EINVAL);
}

/* --------------------------------------- real processes, the real clock */

#define HAMMER_KIDS 4
#define HAMMER_N 4
#define HAMMER_P_MS 5
#define HAMMER_MAX 4096

struct hammer {
    _Atomic int go;
    _Atomic int len;
    uint64_t at_ms[HAMMER_MAX]; /* admissions' clock readings, whole ms */
};

/* Admits on `it` with the real clock until `until_us`, recording each
 * admission's reading; nothing else in between (a tight race on purpose,
 * bounded in time). */
static void hammer_child(struct fx *f, const struct gw_admit_item *it, struct hammer *h,
                         uint64_t until_us)
{
    struct gw_segment seg;
    char err[256];
    if (gw_segment_attach(&seg, f->path, err, sizeof(err)) != 0)
        _exit(2);
    while (!atomic_load(&h->go))
        ;
    for (;;) {
        uint64_t now = gw_now_us(), retry;
        if (now >= until_us)
            break;
        if (gw_ledger_admit(&seg, it, 1, now, &retry) == 0) {
            int i = atomic_fetch_add(&h->len, 1);
            if (i < HAMMER_MAX)
                h->at_ms[i] = now / MS;
        }
    }
    _exit(0);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Largest count of recorded admissions in any window of p ms. */
static int most_in_any_window(struct hammer *h, uint64_t p)
{
    int n = atomic_load(&h->len);
    if (n > HAMMER_MAX)
        n = HAMMER_MAX;
    qsort(h->at_ms, (size_t)n, sizeof(uint64_t), cmp_u64);
    int most = 0;
    for (int i = 0, j = 0; i < n; i++) {
        while (h->at_ms[i] - h->at_ms[j] >= p)
            j++;
        if (i - j + 1 > most)
            most = i - j + 1;
    }
    return most;
}

static void test_exact_processes_hammering_one_cell_never_exceed_n(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.40", gw_now_us()), 0, "4 per second moving");
    it.rate.moving_period_ms = HAMMER_P_MS; /* 4 per 5 ms: many windows in a short run */
    struct hammer *h =
        mmap(NULL, sizeof(*h), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(h != MAP_FAILED);
    uint64_t until = gw_now_us() + 200 * MS;
    pid_t kid[HAMMER_KIDS];
    for (int k = 0; k < HAMMER_KIDS; k++)
        if ((kid[k] = fork()) == 0)
            hammer_child(f, &it, h, until);
    atomic_store(&h->go, 1);
    for (int k = 0; k < HAMMER_KIDS; k++) {
        int st;
        assert_int_equal(waitpid(kid[k], &st, 0), kid[k]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_true(atomic_load(&h->len) > HAMMER_N);
    assert_true(atomic_load(&h->len) < HAMMER_MAX);
    assert_int_equal(most_in_any_window(h, HAMMER_P_MS), HAMMER_N);
    munmap(h, sizeof(*h));
    fx_close(f);
}

static void test_exact_cell_admits_exactly_n_after_hammering_processes_are_killed(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(ip_acct(f, "192.0.2.41", gw_now_us()), 0, "4 per second moving");
    it.rate.moving_period_ms = HAMMER_P_MS;
    struct hammer *h =
        mmap(NULL, sizeof(*h), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(h != MAP_FAILED);
    uint64_t until = gw_now_us() + 2 * SEC; /* they are killed long before */
    pid_t kid[HAMMER_KIDS];
    for (int k = 0; k < HAMMER_KIDS; k++)
        if ((kid[k] = fork()) == 0)
            hammer_child(f, &it, h, until);
    atomic_store(&h->go, 1);
    srandom((unsigned)getpid());
    for (int k = 0; k < HAMMER_KIDS; k++) { /* each at a random instant */
        struct timespec ts = {0, (20 + random() % 40) * 1000000L};
        nanosleep(&ts, NULL);
        kill(kid[k], SIGKILL);
        int st;
        assert_int_equal(waitpid(kid[k], &st, 0), kid[k]);
        assert_true(WIFSIGNALED(st));
    }
    /* a death between the head's CAS and the slot's store leaves a slot of
     * the previous lap's parity: read as not written, never as old */
    assert_true(most_in_any_window(h, HAMMER_P_MS) <= HAMMER_N);
    /* nothing to repair: a period later the cell admits exactly N */
    uint64_t now = gw_now_us() + 10 * MS;
    int ok = 0;
    for (int i = 0; i < 3 * HAMMER_N; i++)
        ok += admit(f, &it, 1, now, NULL) == 0;
    assert_int_equal(ok, HAMMER_N);
    munmap(h, sizeof(*h));
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_ten_per_minute_admits_nineteen_in_the_first_minute),
        cmocka_unit_test(test_moving_ten_per_minute_admits_exactly_ten_of_forty),
        cmocka_unit_test(test_exact_admits_exactly_ten_in_every_minute_of_three),
        cmocka_unit_test(test_exact_decides_as_a_sliding_log_for_every_n),
        cmocka_unit_test(test_exact_one_per_second_is_one_in_any_second),
        cmocka_unit_test(test_exact_sixteen_is_the_largest_exact_limit),
        cmocka_unit_test(test_exact_retry_after_is_when_the_oldest_is_a_period_old),
        cmocka_unit_test(test_exact_rollback_leaves_a_hole_that_is_a_free_place),
        cmocka_unit_test(test_exact_claim_whose_store_is_late_or_lost_only_refuses),
        cmocka_unit_test(test_exact_clock_stepping_back_never_admits_extra),
        cmocka_unit_test(test_exact_window_change_at_a_reload_starts_afresh),
        cmocka_unit_test(test_exact_account_is_reclaimed_once_a_period_after_its_last),
        cmocka_unit_test(test_exact_overflow_bucket_has_its_own_log),
        cmocka_unit_test(test_buckets_never_more_than_twenty_in_any_minute_of_three),
        cmocka_unit_test(test_buckets_retry_after_and_rollback),
        cmocka_unit_test(test_buckets_account_is_reclaimed_only_once_idle),
        cmocka_unit_test(test_moving_window_strings),
        cmocka_unit_test(test_exact_processes_hammering_one_cell_never_exceed_n),
        cmocka_unit_test(test_exact_cell_admits_exactly_n_after_hammering_processes_are_killed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
