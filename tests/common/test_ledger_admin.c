/* test_ledger_admin.c - the ledger operations behind the admin socket: bans
 * (a gen-tagged ban-until cell) and the budget reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>

#define SEC 1000000ull
#define T0 (1700000000ull * SEC)

static void test_ban_holds_until_its_end_and_lifts(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_segment *seg = &f->seg;
    struct gw_acct ip;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_IP, "10.0.0.1", 8, 1, T0, &ip), 0);
    assert_int_equal(gw_ledger_banned_until(seg, ip, T0), 0);
    assert_int_equal(gw_ledger_ban(seg, ip, T0 + 60 * SEC), 0);
    assert_int_equal(gw_ledger_banned_until(seg, ip, T0), T0 + 60 * SEC);
    assert_int_equal(gw_ledger_banned_until(seg, ip, T0 + 60 * SEC - 1), T0 + 60 * SEC);
    assert_int_equal(gw_ledger_banned_until(seg, ip, T0 + 60 * SEC), 0); /* over at its end */
    /* a banned ip is in use: the idle sweep keeps it, and the ban with it */
    assert_int_equal(gw_ledger_reclaim_idle(seg, T0 + SEC), 0);
    assert_int_equal(gw_ledger_banned_until(seg, ip, T0 + SEC), T0 + 60 * SEC);
    assert_int_equal(gw_ledger_ban(seg, ip, 0), 0);
    assert_int_equal(gw_ledger_banned_until(seg, ip, T0), 0);
    /* lifted: idle again, so reclaimed; the old reference is stale */
    assert_int_equal(gw_ledger_reclaim_idle(seg, T0 + SEC), 1);
    assert_int_equal(gw_ledger_ban(seg, ip, T0 + 60 * SEC), GW_ESTALE);
    assert_int_equal(gw_ledger_banned_until(seg, ip, T0), 0);
    fx_close(f);
}

static void test_budget_reset_gives_the_whole_budget_back(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_segment *seg = &f->seg;
    struct gw_acct t, g, ip;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "acme", 4, 1, T0, &t), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_GLOBAL, "*", 1, 1, T0, &g), 0);
    const struct gw_budget_rate day = {.amount_us = 10 * SEC, .period_us = 86400 * SEC};
    const struct gw_budget_rate node = {.amount_us = 1000 * SEC, .period_us = 86400 * SEC};
    struct gw_slot_ref r;
    uint64_t retry;
    assert_int_equal(gw_slot_claim(seg, &r), 0);
    assert_int_equal(gw_slot_set_accounts(seg, r, t, g, 0), 0);
    assert_int_equal(gw_budget_reserve(seg, r, 8 * SEC, &day, &node, T0, &retry), 0);
    assert_int_equal(gw_ledger_budget_left(seg, t, &day, T0), 2 * SEC);
    assert_int_equal(gw_ledger_budget_reset(seg, t), 0);
    assert_int_equal(gw_ledger_budget_left(seg, t, &day, T0), 10 * SEC);
    /* the global budget is its own account: untouched */
    assert_int_equal(gw_ledger_budget_left(seg, g, &node, T0), 992 * SEC);
    /* settling the forgiven reservation changes nothing, and the
     * accounting history stays exact */
    assert_int_equal(gw_slot_move(seg, r, GW_SLOT_ADMITTED, GW_SLOT_FAILED), 0);
    assert_int_equal(gw_budget_settle(seg, r), 1);
    assert_int_equal(gw_ledger_budget_left(seg, t, &day, T0), 10 * SEC);
    struct gw_money m;
    assert_int_equal(gw_ledger_money(seg, t, &m), 0);
    assert_int_equal(m.reserved_us, 8 * SEC);
    assert_int_equal(m.refunded_us, 8 * SEC);
    assert_int_equal(gw_ledger_check(seg, NULL, 0), 0);
    /* an ip account has no budget */
    assert_int_equal(gw_ledger_get(seg, GW_KIND_IP, "10.0.0.2", 8, 1, T0, &ip), 0);
    assert_int_equal(gw_ledger_budget_reset(seg, ip), -ENOENT);
    struct gw_acct stale = {.index = t.index, .gen = (uint8_t)(t.gen + 1)};
    assert_int_equal(gw_ledger_budget_reset(seg, stale), GW_ESTALE);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ban_holds_until_its_end_and_lifts),
        cmocka_unit_test(test_budget_reset_gives_the_whole_budget_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
