/* test_cluster_gpu.c - a node's side of the farm's GPU-second budgets
 * (common/cluster_gpu.c) and the lease sizing the cluster agent uses
 * (common/cluster.c): the GPU lease pool, a farm-leased slot's extensions
 * and refund, the fail-open share, the demand average and the live-node
 * names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>

#define T0 1800000000000000ull
#define SEC 1000000ull

static const struct gw_budget_rate tenant_rate = {.amount_us = 100 * SEC, .period_us = 100 * SEC};
static const struct gw_budget_rate global_rate = {.amount_us = 1000 * SEC, .period_us = 100 * SEC};

struct world {
    struct fx *f;
    struct gw_acct tenant, global;
    uint32_t cell; /* the tenant's cluster cell */
};

static struct world setup_world(void)
{
    struct world w = {.f = fx_open(NULL)};
    struct gw_segment *seg = &w.f->seg;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "acme", 4, 1, T0, &w.tenant), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_GLOBAL, "*", 1, 1, T0, &w.global), 0);
    /* no agent yet: a request waits, which names the account in its cell */
    uint64_t retry = 0;
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 1, T0, &retry), GW_CL_WAIT);
    gw_cluster_gpu_want(seg, w.tenant, 1, +1);
    gw_cluster_gpu_want(seg, w.tenant, 1, -1);
    w.cell = UINT32_MAX;
    for (uint32_t i = 0; i < seg->cfg.budgets; i++) {
        struct gw_cl_cell c;
        if (gw_cluster_cell(seg, i, &c) == 0 && c.acct.index == w.tenant.index)
            w.cell = i;
    }
    assert_int_not_equal(w.cell, UINT32_MAX);
    return w;
}

static int64_t pool(const struct world *w)
{
    struct gw_cl_gpu g;
    assert_int_equal(gw_cluster_gpu_cell(&w->f->seg, w->cell, &g), 0);
    return g.tokens;
}

static void test_gpu_lease_covers_reservations_until_it_ends(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry = 0;
    gw_cluster_gpu_grant(seg, w.cell, 1000, T0 + SEC, 0);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 600, T0, &retry), GW_CL_TAKEN);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 600, T0, &retry), GW_CL_WAIT);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 400, T0, &retry), GW_CL_TAKEN);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 1, T0, &retry), GW_CL_WAIT);
    gw_cluster_gpu_put(seg, w.tenant, 300); /* a reservation that was not made */
    assert_int_equal(pool(&w), 300);
    /* the lease's local end: what is left is not used after it */
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 300, T0 + SEC, &retry), GW_CL_WAIT);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 300, T0 + SEC - 1, &retry), GW_CL_TAKEN);
    struct gw_cl_gpu g;
    gw_cluster_gpu_cell(seg, w.cell, &g);
    assert_int_equal(g.granted, 1000);
    /* parked requests' GPU-us: what the agent sizes the next lease by */
    gw_cluster_gpu_want(seg, w.tenant, 700, +1);
    gw_cluster_gpu_want(seg, w.tenant, 200, +1);
    gw_cluster_gpu_want(seg, w.tenant, 700, -1);
    gw_cluster_gpu_cell(seg, w.cell, &g);
    assert_int_equal(g.want, 200);
    gw_cluster_gpu_want_reset(seg, w.cell, 100); /* not what it is: kept */
    gw_cluster_gpu_cell(seg, w.cell, &g);
    assert_int_equal(g.want, 200);
    gw_cluster_gpu_want_reset(seg, w.cell, 200);
    gw_cluster_gpu_cell(seg, w.cell, &g);
    assert_int_equal(g.want, 0);
    fx_close(w.f);
}

static void test_gpu_denied_until_redis_says_and_unavailable_when_down(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry = 0;
    gw_cluster_gpu_deny(seg, w.cell, T0 + 500);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 10, T0, &retry), GW_CL_DENIED);
    assert_int_equal(retry, 500);
    /* a grant lifts the denial */
    gw_cluster_gpu_grant(seg, w.cell, 10, T0 + SEC, 0);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 10, T0, &retry), GW_CL_TAKEN);
    gw_cluster_set_state(seg, GW_CL_DOWN, 3, T0);
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 10, T0, &retry), GW_CL_UNAVAILABLE);
    fx_close(w.f);
}

/* A slot reserved from the lease and bound to it: the worker's extensions
 * come from the lease, may overdraw it by up to the agent's overdraft (a
 * debt the next grant pays), are refused beyond that (and the agent
 * told), and settlement puts the unused part back. */
static void test_farm_slot_extends_from_lease_and_refunds_at_settle(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry = 0;
    gw_cluster_gpu_grant(seg, w.cell, 10 * SEC, T0 + 60 * SEC, SEC);

    struct gw_slot_ref a, b;
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 4 * SEC, T0, &retry), GW_CL_TAKEN);
    assert_int_equal(gw_slot_claim(seg, &a), 0);
    assert_int_equal(gw_slot_set_accounts(seg, a, w.tenant, w.global, 0), 0);
    assert_int_equal(gw_budget_reserve(seg, a, 4 * SEC, &tenant_rate, &global_rate, T0, &retry), 0);
    assert_int_equal(gw_cluster_gpu_bind(seg, a, 0), 0);
    assert_int_equal(pool(&w), 6 * SEC);
    assert_int_equal(gw_slot_move(seg, a, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_slot_move(seg, a, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
    assert_int_equal(gw_budget_charge(seg, a, 3 * SEC, T0), 0); /* within the reservation */
    assert_int_equal(pool(&w), 6 * SEC);
    assert_int_equal(gw_budget_charge(seg, a, 5 * SEC, T0), 0); /* 1 s more, from the lease */
    assert_int_equal(pool(&w), 5 * SEC);
    /* 7 s more: the lease holds 5 and may be overdrawn by 1: refused,
     * nothing taken, the agent told */
    assert_int_equal(gw_budget_charge(seg, a, 12 * SEC, T0), GW_EREFUSED);
    assert_int_equal(pool(&w), 5 * SEC);
    assert_int_equal(gw_cluster_gpu_shortfall(seg, w.cell), 7 * SEC);
    assert_int_equal(gw_cluster_gpu_shortfall(seg, w.cell), 0);
    struct gw_cl_status st;
    gw_cluster_status(seg, &st);
    assert_int_equal(st.counters[GW_CLC_GPU_SHORT], 1);
    /* 6 s more: the 5 and 1 of overdraft, a debt */
    assert_int_equal(gw_budget_charge(seg, a, 11 * SEC, T0), 0);
    assert_int_equal(pool(&w), -(int64_t)SEC);
    gw_cluster_status(seg, &st);
    assert_int_equal(st.counters[GW_CLC_GPU_OVERDRAWN], 6 * SEC);
    assert_int_equal(gw_cluster_gpu_shortfall(seg, w.cell), 6 * SEC); /* a lease is wanted */
    assert_int_equal(gw_cluster_gpu_reclaim(seg, w.cell), 0);         /* a debt stays */
    assert_int_equal(pool(&w), -(int64_t)SEC);
    uint64_t res, used;
    int settled;
    assert_int_equal(gw_slot_money(seg, a, &res, &used, &settled), 0);
    assert_int_equal(res, 11 * SEC);
    assert_int_equal(used, 11 * SEC);
    assert_int_equal(gw_slot_move(seg, a, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    assert_int_equal(gw_budget_settle(seg, a), 1);
    assert_int_equal(pool(&w), -(int64_t)SEC); /* all used: nothing back */
    /* an overdrawn pool covers no reservation; the next grant pays the
     * debt first */
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 1, T0, &retry), GW_CL_WAIT);
    gw_cluster_gpu_grant(seg, w.cell, 6 * SEC, T0 + 60 * SEC, SEC);
    assert_int_equal(pool(&w), 5 * SEC);
    /* after the lease's end: only the overdraft, never what the pool holds
     * (the agent gives that back) */
    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 1, T0 + 60 * SEC, &retry), GW_CL_WAIT);
    assert_int_equal(gw_cluster_gpu_reclaim(seg, w.cell), 5 * SEC);
    assert_int_equal(gw_cluster_gpu_reclaim(seg, w.cell), 0);
    gw_cluster_gpu_put(seg, w.tenant, 5 * SEC);

    assert_int_equal(gw_cluster_gpu_take(seg, w.tenant, 2 * SEC, T0, &retry), GW_CL_TAKEN);
    assert_int_equal(gw_slot_claim(seg, &b), 0);
    assert_int_equal(gw_slot_set_accounts(seg, b, w.tenant, w.global, 0), 0);
    assert_int_equal(gw_budget_reserve(seg, b, 2 * SEC, &tenant_rate, &global_rate, T0, &retry), 0);
    assert_int_equal(gw_cluster_gpu_bind(seg, b, 0), 0);
    assert_int_equal(gw_slot_move(seg, b, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_slot_move(seg, b, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
    assert_int_equal(gw_budget_charge(seg, b, SEC / 2, T0), 0);
    assert_int_equal(gw_slot_move(seg, b, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    assert_int_equal(gw_budget_settle(seg, b), 1);
    assert_int_equal(gw_budget_settle(seg, b), 0); /* once */
    assert_int_equal(pool(&w), 3 * SEC + 3 * SEC / 2);
    fx_close(w.f);
}

/* Redis down, fail_open: the node reserves from its share, the budget over
 * the live nodes last seen, and counts it for reconciliation. */
static void test_gpu_open_admit_takes_the_node_share(void **state)
{
    (void)state;
    struct world w = setup_world();
    struct gw_segment *seg = &w.f->seg;
    uint64_t retry = 0;
    const struct gw_budget_rate b = {.amount_us = 10 * SEC, .period_us = 10 * SEC};
    gw_cluster_set_state(seg, GW_CL_DOWN, 2, T0); /* 5 s each */
    assert_int_equal(gw_cluster_gpu_open_admit(seg, w.tenant, &b, 3 * SEC, T0, &retry), 0);
    assert_int_equal(gw_cluster_gpu_open_admit(seg, w.tenant, &b, 3 * SEC, T0, &retry),
                     GW_EREFUSED);
    /* 6 s of the 5 s share: 1 s of the share refills in 2 s */
    assert_int_equal(retry, 2 * SEC);
    assert_int_equal(gw_cluster_gpu_open_admit(seg, w.tenant, &b, 2 * SEC, T0, &retry), 0);
    assert_int_equal(gw_cluster_gpu_open_drain(seg, w.cell), 5 * SEC);
    assert_int_equal(gw_cluster_gpu_open_drain(seg, w.cell), 0);
    gw_cluster_gpu_open_undrain(seg, w.cell, 2 * SEC); /* a charge that failed */
    assert_int_equal(gw_cluster_gpu_open_drain(seg, w.cell), 2 * SEC);
    struct gw_cl_status st;
    gw_cluster_status(seg, &st);
    assert_int_equal(st.counters[GW_CLC_GPU_OPEN_US], 5 * SEC);
    fx_close(w.f);
}

static void test_lease_size_follows_demand_within_its_bounds(void **state)
{
    (void)state;
    struct gw_cluster_cfg cl = {.lease_percent = 5, .lease_max_percent = 20, .lease_ttl_ms = 10000};
    assert_int_equal(gw_cluster_lease_size(&cl, 1000, 0, 0, 1000), 50);     /* the least */
    assert_int_equal(gw_cluster_lease_size(&cl, 1000, 10.0, 0, 1000), 100); /* 10/s x 10 s */
    assert_int_equal(gw_cluster_lease_size(&cl, 1000, 1e6, 0, 1000), 200);  /* the most */
    assert_int_equal(gw_cluster_lease_size(&cl, 1000, 0, 300, 1000), 300);  /* what waits */
    assert_int_equal(gw_cluster_lease_size(&cl, 1000, 0, 300, 250), 250);   /* the cap */
    assert_int_equal(gw_cluster_lease_size(&cl, 10, 0, 0, 1000), 1);        /* at least 1 */
    assert_int_equal(gw_cluster_lease_size(&cl, 10, 1e6, 0, 1000), 2);
    /* GPU-us: 2 GPU-seconds per period, demand 30 ms/s */
    assert_int_equal(gw_cluster_lease_size(&cl, 2 * SEC, 30000.0, 0, UINT64_MAX), 300000);
}

static void test_demand_average_forgets_over_a_lease_ttl(void **state)
{
    (void)state;
    struct gw_cl_ewma e = {0};
    uint64_t t = 5 * 1000000000ull;
    assert_true(gw_cluster_ewma_sample(&e, 1000, t, 10000) == 0.0); /* the baseline */
    /* 100 in 1 s: moves by 1 / (1 + 10) of the way to 100/s */
    double v = gw_cluster_ewma_sample(&e, 1100, t + 1000000000ull, 10000);
    assert_true(v > 9.0908 && v < 9.0910);
    /* 1000 in 10 s: half way to 100/s */
    v = gw_cluster_ewma_sample(&e, 2100, t + 11000000000ull, 10000);
    assert_true(v > 54.545 && v < 54.546);
    /* a counter that went back (a restarted agent): a new baseline only */
    v = gw_cluster_ewma_sample(&e, 10, t + 12000000000ull, 10000);
    assert_true(v > 54.545 && v < 54.546);
    v = gw_cluster_ewma_sample(&e, 10, t + 22000000000ull, 10000); /* idle 10 s: half way to 0 */
    assert_true(v > 27.272 && v < 27.273);
}

static void test_live_node_names_round_trip(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    char out[1024];
    assert_int_equal(gw_cluster_peers(&f->seg, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    gw_cluster_set_peers(&f->seg, "gpu-17\ngpu-18\ngpu-2", 3);
    assert_int_equal(gw_cluster_peers(&f->seg, out, sizeof(out)), 3);
    assert_string_equal(out, "gpu-17\ngpu-18\ngpu-2");
    gw_cluster_set_peers(&f->seg, "gpu-2", 1);
    assert_int_equal(gw_cluster_peers(&f->seg, out, sizeof(out)), 1);
    assert_string_equal(out, "gpu-2");
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpu_lease_covers_reservations_until_it_ends),
        cmocka_unit_test(test_gpu_denied_until_redis_says_and_unavailable_when_down),
        cmocka_unit_test(test_farm_slot_extends_from_lease_and_refunds_at_settle),
        cmocka_unit_test(test_gpu_open_admit_takes_the_node_share),
        cmocka_unit_test(test_lease_size_follows_demand_within_its_bounds),
        cmocka_unit_test(test_demand_average_forgets_over_a_lease_ttl),
        cmocka_unit_test(test_live_node_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
