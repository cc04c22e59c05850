/* test_cluster_out.c - a node's side of the farm's output-token windows
 * (common/cluster_out.c): a token per admission from the lease, the rest
 * charged at the request's end (a debt below 0 that admits nobody and that
 * the next grant pays first), the give-back, the fail-open share and its
 * count for reconciliation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>

#define T0 1800000000000000ull
#define SEC 1000000ull

struct world {
    struct fx *f;
    struct gw_acct tenant;
    uint32_t cell; /* the tenant's cluster cell */
};

static struct world setup_world(void)
{
    struct world w = {.f = fx_open(NULL)};
    struct gw_segment *seg = &w.f->seg;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "acme", 4, 1, T0, &w.tenant), 0);
    /* no agent yet: a request waits, which names the account in its cell */
    uint64_t retry = 0;
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_WAIT);
    gw_cluster_out_want(seg, w.tenant, +1);
    w.cell = UINT32_MAX;
    for (uint32_t i = 0; i < seg->cfg.budgets; i++) {
        struct gw_cl_cell c;
        if (gw_cluster_cell(seg, i, &c) == 0 && c.acct.index == w.tenant.index)
            w.cell = i;
    }
    assert_int_not_equal(w.cell, UINT32_MAX);
    struct gw_cl_out o;
    assert_int_equal(gw_cluster_out_cell(seg, w.cell, &o), 0);
    assert_int_equal(o.want, 1);
    gw_cluster_out_want(seg, w.tenant, -1);
    gw_cluster_out_want(seg, w.tenant, -1); /* never below zero */
    assert_int_equal(gw_cluster_out_cell(seg, w.cell, &o), 0);
    assert_int_equal(o.want, 0);
    return w;
}

static struct gw_cl_out cell(const struct world *w)
{
    struct gw_cl_out o;
    assert_int_equal(gw_cluster_out_cell(&w->f->seg, w->cell, &o), 0);
    return o;
}

/* Three tokens: three admissions, then the pool is empty (WAIT); the
 * requests' ends charge what they generated beyond their first token: the
 * pool goes below 0, admits nobody, and a grant pays the debt first. */
static void test_output_lease_admits_per_token_and_charges_the_rest_as_debt(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry = 0;
    gw_cluster_out_grant(seg, w.cell, 3, T0 + SEC);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_TAKEN);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_WAIT);
    assert_int_equal(cell(&w).tokens, 0);
    gw_cluster_out_settle(seg, w.tenant, 8); /* 7 beyond its token */
    gw_cluster_out_settle(seg, w.tenant, 1); /* nothing beyond */
    gw_cluster_out_settle(seg, w.tenant, 0); /* its token back */
    struct gw_cl_out o = cell(&w);
    assert_int_equal(o.tokens, -6);
    assert_int_equal(o.charged, 3 + 7 - 1);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_WAIT);
    struct gw_cl_status st;
    gw_cluster_status(seg, &st);
    assert_int_equal(st.counters[GW_CLC_OUT_OVERRUN], 7); /* all beyond an empty pool */
    /* a grant of 5 pays 5 of the debt: still nobody admitted */
    gw_cluster_out_grant(seg, w.cell, 5, T0 + SEC);
    assert_int_equal(cell(&w).tokens, -1);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_WAIT);
    gw_cluster_out_grant(seg, w.cell, 3, T0 + 2 * SEC);
    assert_int_equal(cell(&w).tokens, 2);
    assert_int_equal(cell(&w).granted, 11);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_TAKEN);
    /* the lease's local end: what is left is not used after it, and the
     * agent takes it back to give it back; a debt would stay */
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0 + 2 * SEC, &retry), GW_CL_WAIT);
    assert_int_equal(gw_cluster_out_reclaim(seg, w.cell), 1);
    assert_int_equal(gw_cluster_out_reclaim(seg, w.cell), 0);
    gw_cluster_out_settle(seg, w.tenant, 4); /* a request running across the end */
    assert_int_equal(cell(&w).tokens, -3);
    assert_int_equal(gw_cluster_out_reclaim(seg, w.cell), 0); /* the debt stays */
    assert_int_equal(cell(&w).tokens, -3);
    fx_close(w.f);
}

/* Denied by the agent: refused until the denial's end, then WAIT again;
 * Redis down: UNAVAILABLE (the plan's fail mode). */
static void test_output_lease_denial_and_redis_down(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry = 0;
    gw_cluster_out_deny(seg, w.cell, T0 + 500000);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_DENIED);
    assert_int_equal(retry, 500000);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0 + 500000, &retry), GW_CL_WAIT);
    gw_cluster_set_state(seg, GW_CL_DOWN, 3, T0);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0 + 500000, &retry), GW_CL_UNAVAILABLE);
    /* a grant lifts the denial */
    gw_cluster_out_deny(seg, w.cell, T0 + 500000);
    gw_cluster_out_grant(seg, w.cell, 1, T0 + SEC);
    assert_int_equal(cell(&w).deny_until, 0);
    assert_int_equal(gw_cluster_out_take(seg, w.tenant, T0, &retry), GW_CL_TAKEN);
    fx_close(w.f);
}

/* Fail-open: "30 per hour" over 3 live nodes is 10 here, a token per
 * admission; what the requests generated beyond it is charged to the same
 * cell, and all they generated is counted for reconciliation. */
static void test_output_fail_open_share_and_reconciliation_count(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    struct gw_window win = {.limit = 30, .period_us = 3600 * SEC};
    gw_cluster_set_state(seg, GW_CL_DOWN, 3, T0);
    uint64_t retry = 0;
    for (int i = 0; i < 10; i++)
        assert_int_equal(gw_cluster_out_open_admit(seg, w.tenant, &win, T0, &retry), 0);
    assert_int_equal(gw_cluster_out_open_admit(seg, w.tenant, &win, T0, &retry), GW_EREFUSED);
    assert_int_equal(retry, 360 * SEC); /* one token of 10 per hour */
    gw_cluster_out_open_settle(seg, w.tenant, &win, 3, T0);
    gw_cluster_out_open_settle(seg, w.tenant, &win, 1, T0);
    assert_int_equal(cell(&w).open_spent, 4);
    struct gw_cl_status st;
    gw_cluster_status(seg, &st);
    assert_int_equal(st.counters[GW_CLC_OUT_OPEN], 4);
    /* the 2 beyond the first token moved the cell by 2 x 360 s */
    assert_int_equal(gw_cluster_out_open_admit(seg, w.tenant, &win, T0 + 360 * SEC, &retry),
                     GW_EREFUSED);
    assert_int_equal(retry, 2 * 360 * SEC);
    assert_int_equal(gw_cluster_out_open_drain(seg, w.cell), 4);
    assert_int_equal(cell(&w).open_spent, 0);
    gw_cluster_out_open_undrain(seg, w.cell, 4); /* Redis failed the charge */
    assert_int_equal(cell(&w).open_spent, 4);
    fx_close(w.f);
}

/* A count a dead front left waiting is dropped only if it is still what
 * the agent saw. */
static void test_output_want_reset_keeps_a_new_request(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    gw_cluster_out_want(seg, w.tenant, +1);
    gw_cluster_out_want(seg, w.tenant, +1);
    gw_cluster_out_want_reset(seg, w.cell, 1); /* not what it is: kept */
    assert_int_equal(cell(&w).want, 2);
    gw_cluster_out_want_reset(seg, w.cell, 2);
    assert_int_equal(cell(&w).want, 0);
    fx_close(w.f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_lease_admits_per_token_and_charges_the_rest_as_debt),
        cmocka_unit_test(test_output_lease_denial_and_redis_down),
        cmocka_unit_test(test_output_fail_open_share_and_reconciliation_count),
        cmocka_unit_test(test_output_want_reset_keeps_a_new_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
