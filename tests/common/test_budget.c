/* test_budget.c - device-time budgets: reserve, charge, refund, settle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>

#define T0 1800000000000000ull
#define SEC 1000000ull

/* Tenant: 10 s of device time per 10 s (cost of x us = x us of cell time);
 * global: 100 s per 10 s. */
static const struct gw_budget_rate tenant_rate = {.amount_us = 10 * SEC, .period_us = 10 * SEC};
static const struct gw_budget_rate global_rate = {.amount_us = 100 * SEC, .period_us = 10 * SEC};

struct world {
    struct fx *f;
    struct gw_acct tenant, global;
};

static struct world setup_world(void)
{
    struct world w = {.f = fx_open(NULL)};
    assert_int_equal(gw_ledger_get(&w.f->seg, GW_KIND_TENANT, "acme", 4, 1, T0, &w.tenant), 0);
    assert_int_equal(gw_ledger_get(&w.f->seg, GW_KIND_GLOBAL, "*", 1, 1, T0, &w.global), 0);
    return w;
}

static struct gw_slot_ref admitted(struct world *w, int inflight)
{
    struct gw_slot_ref r;
    assert_int_equal(gw_slot_claim(&w->f->seg, &r), 0);
    if (inflight)
        assert_int_equal(gw_ledger_inflight_take(&w->f->seg, w->tenant, 10), 0);
    assert_int_equal(gw_slot_set_accounts(&w->f->seg, r, w->tenant, w->global, inflight), 0);
    return r;
}

static void run(struct world *w, struct gw_slot_ref r)
{
    assert_int_equal(gw_slot_move(&w->f->seg, r, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_slot_move(&w->f->seg, r, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
}

static void test_reserve_charge_refund_settle(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry;
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 10 * SEC);

    struct gw_slot_ref a = admitted(&w, 1);
    assert_int_equal(gw_budget_reserve(seg, a, 4 * SEC, &tenant_rate, &global_rate, T0, &retry), 0);
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 6 * SEC);
    assert_int_equal(gw_ledger_budget_left(seg, w.global, &global_rate, T0), 96 * SEC);

    /* bigger than what is left: refused, nothing taken, retry when it fits */
    struct gw_slot_ref b = admitted(&w, 0);
    assert_int_equal(gw_budget_reserve(seg, b, 7 * SEC, &tenant_rate, &global_rate, T0, &retry),
                     GW_EREFUSED);
    assert_int_equal(retry, 1 * SEC);
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 6 * SEC);
    assert_int_equal(gw_ledger_budget_left(seg, w.global, &global_rate, T0), 96 * SEC);

    run(&w, a);
    assert_int_equal(gw_budget_charge(seg, a, 1500000, T0), 0);
    assert_int_equal(gw_budget_charge(seg, a, 1000000, T0), -EINVAL); /* used only grows */
    assert_int_equal(gw_budget_charge(seg, a, 5 * SEC, T0), 0);       /* extends by 1 s */
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 5 * SEC);
    uint64_t res, used;
    int settled;
    assert_int_equal(gw_slot_money(seg, a, &res, &used, &settled), 0);
    assert_int_equal(res, 5 * SEC);
    assert_int_equal(used, 5 * SEC);
    assert_int_equal(settled, 0);

    assert_int_equal(gw_budget_settle(seg, a), GW_ESTATE); /* not terminal yet */
    assert_int_equal(gw_slot_move(seg, a, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    assert_int_equal(gw_budget_settle(seg, a), 1);
    assert_int_equal(gw_budget_settle(seg, a), 0); /* exactly once */
    assert_int_equal(gw_ledger_inflight(seg, w.tenant), 0);

    /* partial use: the rest goes back */
    assert_int_equal(gw_budget_reserve(seg, b, 3 * SEC, &tenant_rate, &global_rate, T0, &retry), 0);
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 2 * SEC);
    run(&w, b);
    assert_int_equal(gw_budget_charge(seg, b, 1 * SEC, T0), 0);
    assert_int_equal(gw_slot_move(seg, b, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    assert_int_equal(gw_budget_settle(seg, b), 1);
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 4 * SEC);
    assert_int_equal(gw_ledger_budget_left(seg, w.global, &global_rate, T0), 94 * SEC);

    struct gw_money m;
    assert_int_equal(gw_ledger_money(seg, w.tenant, &m), 0);
    assert_int_equal(m.reserved_us, 8 * SEC);
    assert_int_equal(m.used_us, 6 * SEC);
    assert_int_equal(m.refunded_us, 2 * SEC);
    assert_int_equal(gw_ledger_check(seg, NULL, 0), 0);
    assert_int_equal(gw_slot_release(seg, a), 0);
    assert_int_equal(gw_slot_release(seg, b), 0);
    assert_int_equal(gw_ledger_check(seg, NULL, 0), 0);
    fx_close(w.f);
}

static void test_budget_never_goes_below_zero(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry;
    struct gw_slot_ref a = admitted(&w, 0);
    assert_int_equal(gw_budget_reserve(seg, a, 10 * SEC, &tenant_rate, &global_rate, T0, &retry),
                     0);
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 0);
    struct gw_slot_ref b = admitted(&w, 0);
    assert_int_equal(gw_budget_reserve(seg, b, 1, &tenant_rate, &global_rate, T0, &retry),
                     GW_EREFUSED);
    assert_int_equal(retry, 1);
    /* a generation that outruns an exhausted budget is stopped, and the step
     * that could not be covered is not billed past the reservation */
    run(&w, a);
    assert_int_equal(gw_budget_charge(seg, a, 10 * SEC + 250000, T0), GW_EREFUSED);
    uint64_t res, used;
    int settled;
    assert_int_equal(gw_slot_money(seg, a, &res, &used, &settled), 0);
    assert_int_equal(res, 10 * SEC);
    assert_int_equal(used, 10 * SEC);
    assert_int_equal(gw_ledger_budget_left(seg, w.tenant, &tenant_rate, T0), 0);
    /* a budget larger than a whole period can never pass */
    assert_int_equal(
        gw_budget_reserve(seg, b, 11 * SEC, &tenant_rate, &global_rate, T0 + 60 * SEC, &retry),
        GW_EREFUSED);
    assert_int_equal(retry, UINT64_MAX);
    fx_close(w.f);
}

static void test_reserve_checks_its_arguments(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry;
    struct gw_slot_ref a;
    assert_int_equal(gw_slot_claim(seg, &a), 0);
    /* no accounts set yet */
    assert_int_equal(gw_budget_reserve(seg, a, SEC, &tenant_rate, &global_rate, T0, &retry),
                     -EINVAL);
    struct gw_budget_rate zero = {0, 0};
    assert_int_equal(gw_slot_set_accounts(seg, a, w.tenant, w.global, 0), 0);
    assert_int_equal(gw_budget_reserve(seg, a, SEC, &zero, &global_rate, T0, &retry), -EINVAL);
    /* an ip account has no budget */
    struct gw_acct ip;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_IP, "1.2.3.4", 7, 1, T0, &ip), 0);
    struct gw_slot_ref b;
    assert_int_equal(gw_slot_claim(seg, &b), 0);
    assert_int_equal(gw_slot_set_accounts(seg, b, ip, w.global, 0), -EINVAL);
    /* a stale slot reference */
    struct gw_slot_ref stale = {.index = a.index, .seq = a.seq + 1};
    assert_int_equal(gw_budget_reserve(seg, stale, SEC, &tenant_rate, &global_rate, T0, &retry),
                     GW_ESTATE);
    fx_close(w.f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_charge_refund_settle),
        cmocka_unit_test(test_budget_never_goes_below_zero),
        cmocka_unit_test(test_reserve_checks_its_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
