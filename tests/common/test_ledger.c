/* test_ledger.c - GCRA exactness, all-or-nothing admission, account table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"
#include "seg_internal.h"

#include <errno.h>

#define T0 1800000000000000ull /* a fixed "now" in us (2027-01-15) */
#define SEC 1000000ull

static struct gw_acct get(struct fx *f, enum gw_kind k, const char *id, uint64_t now)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(&f->seg, k, id, strlen(id), 1, now, &a), 0);
    return a;
}

static struct gw_admit_item item(struct gw_acct a, int cell, uint64_t limit, uint64_t period,
                                 uint64_t burst)
{
    struct gw_admit_item it = {.acct = a, .cell = (uint8_t)cell};
    assert_int_equal(gw_rate_make(&it.rate, limit, period, burst), 0);
    return it;
}

static void test_gcra_admits_exactly_limit_plus_burst(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(get(f, GW_KIND_IP, "10.0.0.1", T0), 0, 10, SEC, 5);
    uint64_t retry = 0;
    for (int i = 0; i < 15; i++)
        assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0, &retry), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0, &retry), GW_EREFUSED);
    assert_int_equal(retry, 100000); /* one emission interval: 1 s / 10 */
    /* then exactly one per interval */
    for (int k = 1; k <= 10; k++) {
        uint64_t t = T0 + (uint64_t)k * 100000;
        assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, t - 1, &retry), GW_EREFUSED);
        assert_int_equal(retry, 1);
        assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, t, &retry), 0);
        assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, t, &retry), GW_EREFUSED);
        assert_int_equal(retry, 100000);
    }
    fx_close(f);
}

static void test_gcra_retry_after_is_the_true_wait(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(get(f, GW_KIND_TENANT, "acme", T0), 1, 50, 60 * SEC, 0);
    uint64_t retry = 0;
    for (int i = 0; i < 50; i++)
        assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0, &retry), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0, &retry), GW_EREFUSED);
    assert_int_equal(retry, 1200000); /* 60 s / 50 */
    assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0 + retry - 1000, &retry), GW_EREFUSED);
    assert_int_equal(retry, 1000); /* one ms early: one ms to wait */
    assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0 + 1200000, &retry), 0);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, it.acct, 1, &it.rate, T0 + 1200000), 0);
    assert_int_equal(
        gw_ledger_rate_remaining(&f->seg, it.acct, 1, &it.rate, T0 + 60 * SEC + 1200000), 50);
    fx_close(f);
}

static void test_gcra_rate_rounds_interval_up(void **state)
{
    (void)state;
    struct gw_rate r;
    assert_int_equal(gw_rate_make(&r, 3, SEC, 0), 0);
    assert_int_equal(r.interval_us, 333334); /* never faster than 3 per second */
    assert_int_equal(r.tolerance_us, 2 * 333334);
    assert_int_equal(gw_rate_make(&r, 0, SEC, 0), -EINVAL);
    assert_int_equal(gw_rate_make(&r, 5, 0, 0), -EINVAL);
}

static void test_admit_is_all_or_nothing(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item items[3] = {
        item(get(f, GW_KIND_IP, "192.0.2.7", T0), 0, 10, SEC, 0),
        item(get(f, GW_KIND_TENANT, "acme", T0), 0, 2, SEC, 0),
        item(get(f, GW_KIND_GLOBAL, "*", T0), 0, 100, SEC, 0),
    };
    uint64_t retry;
    assert_int_equal(gw_ledger_admit(&f->seg, items, 3, T0, &retry), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, items, 3, T0, &retry), 0);
    _Atomic uint64_t *ipc = &f->seg.accounts[items[0].acct.index].cell[0];
    _Atomic uint64_t *glc = &f->seg.accounts[items[2].acct.index].cell[0];
    uint64_t ip_before = atomic_load(ipc), gl_before = atomic_load(glc);
    assert_int_equal(gw_ledger_admit(&f->seg, items, 3, T0, &retry), GW_EREFUSED);
    assert_int_equal(retry, 500000);
    assert_int_equal(atomic_load(ipc), ip_before); /* bit-identical */
    assert_int_equal(atomic_load(glc), gl_before);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, items[0].acct, 0, &items[0].rate, T0), 8);
    assert_int_equal(gw_ledger_rate_remaining(&f->seg, items[2].acct, 0, &items[2].rate, T0), 98);
    /* the retry is the longest wait of all refusing cells */
    struct gw_admit_item two[2] = {items[1], item(items[0].acct, 1, 1, 10 * SEC, 0)};
    assert_int_equal(gw_ledger_admit(&f->seg, &two[1], 1, T0, &retry), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, two, 2, T0, &retry), GW_EREFUSED);
    assert_int_equal(retry, 10 * SEC);
    fx_close(f);
}

static void test_admit_rejects_bad_items(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_admit_item it = item(get(f, GW_KIND_IP, "a", T0), 0, 1, SEC, 0);
    uint64_t retry;
    assert_int_equal(gw_ledger_admit(&f->seg, &it, 0, T0, &retry), -EINVAL);
    it.cell = GW_RATE_CELLS;
    assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0, &retry), -EINVAL);
    it.cell = 0;
    it.acct.index = 64;
    assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0, &retry), -EINVAL);
    fx_close(f);
}

static void test_lookup_is_stable_and_kinds_are_distinct(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = get(f, GW_KIND_TENANT, "acme", T0), b = get(f, GW_KIND_TENANT, "acme", T0);
    struct gw_acct c = get(f, GW_KIND_IP, "acme", T0);
    assert_int_equal(a.index, b.index);
    assert_int_equal(a.gen, b.gen);
    assert_int_not_equal(a.index, c.index);
    struct gw_acct d;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_TENANT, "nobody", 6, 0, T0, &d), -ENOENT);
    assert_int_equal(gw_ledger_get(&f->seg, 7, "x", 1, 1, T0, &d), -EINVAL);
    char buf[64];
    enum gw_kind k;
    assert_int_equal(gw_ledger_id(&f->seg, a, &k, buf, sizeof(buf)), 4);
    assert_string_equal(buf, "acme");
    assert_int_equal(k, GW_KIND_TENANT);
    struct gw_seg_stats st;
    gw_segment_stats(&f->seg, &st);
    assert_int_equal(st.accounts_live, 2);
    assert_int_equal(st.budgets_used, 1); /* only the tenant has a budget */
    fx_close(f);
}

static void test_full_table_reclaims_idle_ip_accounts_else_refuses(void **state)
{
    (void)state;
    struct gw_seg_config cfg = fx_cfg;
    cfg.accounts = 16; /* the probe window is the whole table */
    struct fx *f = fx_open(&cfg);
    struct gw_acct ips[16];
    char id[32];
    uint64_t retry;
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof(id), "10.1.0.%d", i);
        ips[i] = get(f, GW_KIND_IP, id, T0);
        struct gw_admit_item it = item(ips[i], 0, 1, SEC, 0);
        assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, T0, &retry), 0);
    }
    struct gw_acct x;
    /* every account busy until T0 + 1 s: fail closed */
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "10.9.9.9", 8, 1, T0, &x), GW_EFULL);
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_TENANT, "acme", 4, 1, T0, &x), GW_EFULL);
    struct gw_seg_stats st;
    gw_segment_stats(&f->seg, &st);
    assert_int_equal(st.table_full, 2);
    /* one second later they are idle: the new ip takes a reclaimed entry */
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "10.9.9.9", 8, 1, T0 + SEC, &x), 0);
    gw_segment_stats(&f->seg, &st);
    assert_int_equal(st.accounts_reclaimed, 1);
    assert_int_equal(st.accounts_live, 16);
    /* the reference to the reclaimed account is stale now */
    int stale = -1;
    for (int i = 0; i < 16; i++)
        if (ips[i].index == x.index)
            stale = i;
    assert_true(stale >= 0);
    struct gw_admit_item old = item(ips[stale], 0, 1, SEC, 0);
    assert_int_equal(gw_ledger_admit(&f->seg, &old, 1, T0 + 2 * SEC, &retry), GW_ESTALE);
    /* an account with a request in flight is never reclaimed */
    for (int i = 0; i < 16; i++)
        if (i != stale)
            assert_int_equal(gw_ledger_inflight_take(&f->seg, ips[i], 4), 0);
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, T0 + 10 * SEC), 1); /* only the new one */
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "10.9.9.8", 8, 1, T0 + 10 * SEC, &x), 0);
    struct gw_admit_item busy = item(x, 0, 1, SEC, 0);
    assert_int_equal(gw_ledger_admit(&f->seg, &busy, 1, T0 + 10 * SEC, &retry), 0);
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "10.9.9.7", 8, 1, T0 + 10 * SEC, &x),
                     GW_EFULL);
    fx_close(f);
}

static void test_inflight_limit(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = get(f, GW_KIND_TENANT, "acme", T0);
    assert_int_equal(gw_ledger_inflight_take(&f->seg, a, 2), 0);
    assert_int_equal(gw_ledger_inflight_take(&f->seg, a, 2), 0);
    assert_int_equal(gw_ledger_inflight_take(&f->seg, a, 2), GW_EREFUSED);
    assert_int_equal(gw_ledger_inflight(&f->seg, a), 2);
    assert_int_equal(gw_ledger_inflight_put(&f->seg, a), 0);
    assert_int_equal(gw_ledger_inflight(&f->seg, a), 1);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_admits_exactly_limit_plus_burst),
        cmocka_unit_test(test_gcra_retry_after_is_the_true_wait),
        cmocka_unit_test(test_gcra_rate_rounds_interval_up),
        cmocka_unit_test(test_admit_is_all_or_nothing),
        cmocka_unit_test(test_admit_rejects_bad_items),
        cmocka_unit_test(test_lookup_is_stable_and_kinds_are_distinct),
        cmocka_unit_test(test_full_table_reclaims_idle_ip_accounts_else_refuses),
        cmocka_unit_test(test_inflight_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
