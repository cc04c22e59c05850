/* test_counters.c - the segment's metrics area (exact counts, bucket
 * edges, +Inf == count) and the run-time limit overrides (set, replace,
 * clear, epoch, room, a half-written cell). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"
#include "seg_internal.h"

#include <errno.h>
#include <sys/wait.h>

#define MS 1000000ull

static void test_counts_land_where_the_event_says(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    for (int i = 0; i < 3; i++)
        gw_metrics_request(&f->seg, 1, 200);
    gw_metrics_request(&f->seg, 1, 401);
    gw_metrics_request(&f->seg, 1, 429);
    gw_metrics_request(&f->seg, 0, 408);
    gw_metrics_request(&f->seg, 1, 99);  /* ignored */
    gw_metrics_request(&f->seg, 8, 200); /* ignored */
    gw_metrics_refusal(&f->seg, GW_REF_AUTH);
    gw_metrics_refusal(&f->seg, GW_REF_REASONS); /* ignored */
    gw_metrics_finish(&f->seg, GW_FIN_LENGTH);
    gw_metrics_add(&f->seg, GW_MC_TOKENS, 16);
    gw_metrics_add(&f->seg, GW_MC_TOKENS, 4);
    gw_metrics_add(&f->seg, GW_MC_N, 4); /* ignored */
    struct gw_metrics_snap s;
    gw_metrics_read(&f->seg, &s);
    assert_int_equal(s.requests[1][2], 3);
    assert_int_equal(s.requests[1][4], 2);
    assert_int_equal(s.requests[0][4], 1);
    assert_int_equal(s.requests[1][5], 0);
    assert_int_equal(s.refusals[GW_REF_AUTH], 1);
    assert_int_equal(s.finish[GW_FIN_LENGTH], 1);
    assert_int_equal(s.counters[GW_MC_TOKENS], 20);
    assert_string_equal(gw_refusal_name(GW_REF_TENANT_RATE), "tenant_rate");
    assert_string_equal(gw_refusal_name(-1), "unknown");
    fx_close(f);
}

static void test_histogram_buckets_are_upper_inclusive(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    gw_metrics_observe(&f->seg, GW_MH_TTFT, 0);
    gw_metrics_observe(&f->seg, GW_MH_TTFT, 1 * MS);          /* le 0.001 */
    gw_metrics_observe(&f->seg, GW_MH_TTFT, 1 * MS + 1);      /* le 0.0025 */
    gw_metrics_observe(&f->seg, GW_MH_TTFT, 120000 * MS);     /* le 120 */
    gw_metrics_observe(&f->seg, GW_MH_TTFT, 120000 * MS + 1); /* +Inf */
    struct gw_metrics_snap s;
    gw_metrics_read(&f->seg, &s);
    assert_int_equal(s.hist[GW_MH_TTFT].bucket[0], 2);
    assert_int_equal(s.hist[GW_MH_TTFT].bucket[1], 1);
    assert_int_equal(s.hist[GW_MH_TTFT].bucket[GW_M_BUCKETS - 1], 1);
    assert_int_equal(s.hist[GW_MH_TTFT].bucket[GW_M_BUCKETS], 1);
    assert_int_equal(s.hist[GW_MH_TTFT].count, 5);
    assert_int_equal(s.hist[GW_MH_TTFT].sum_ns, 240002 * MS + 2);
    assert_int_equal(s.hist[GW_MH_E2E].count, 0);
    assert_int_equal(gw_metrics_bucket_ns(0), MS);
    assert_int_equal(gw_metrics_bucket_ns(GW_M_BUCKETS - 1), 120000 * MS);
    fx_close(f);
}

/* Processes adding at once lose nothing: 4 children x 20000 adds. */
static void test_concurrent_adds_from_processes_are_exact(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    for (int p = 0; p < 4; p++) {
        if (fork() == 0) {
            for (int i = 0; i < 20000; i++) {
                gw_metrics_request(&f->seg, 2, 200);
                gw_metrics_observe(&f->seg, GW_MH_QUEUE, (uint64_t)i * MS);
            }
            _exit(0);
        }
    }
    for (int p = 0; p < 4; p++)
        wait(NULL);
    struct gw_metrics_snap s;
    gw_metrics_read(&f->seg, &s);
    assert_int_equal(s.requests[2][2], 80000);
    assert_int_equal(s.hist[GW_MH_QUEUE].count, 80000);
    fx_close(f);
}

static struct gw_limit_override ovr(const char *tenant, uint64_t limit)
{
    struct gw_limit_override o = {.n_windows = 1,
                                  .max_inflight = 3,
                                  .max_tokens = 64,
                                  .has_budget = 1,
                                  .budget = {.amount_us = 5000000, .period_us = 60000000}};
    snprintf(o.tenant, sizeof(o.tenant), "%s", tenant);
    o.windows[0] = (struct gw_window){.limit = limit, .period_us = 60000000, .burst = 1};
    return o;
}

static void test_limit_overrides_set_replace_clear(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_limit_override o, got;
    uint64_t e0 = gw_limits_epoch(&f->seg);
    assert_int_equal(gw_limits_get(&f->seg, 0, &got), -ENOENT);
    o = ovr("acme", 2);
    assert_int_equal(gw_limits_set(&f->seg, &o), 0);
    assert_int_equal(gw_limits_epoch(&f->seg), e0 + 1);
    assert_int_equal(gw_limits_get(&f->seg, 0, &got), 0);
    assert_string_equal(got.tenant, "acme");
    assert_int_equal(got.n_windows, 1);
    assert_int_equal(got.windows[0].limit, 2);
    assert_int_equal(got.windows[0].period_us, 60000000);
    assert_int_equal(got.windows[0].burst, 1);
    assert_int_equal(got.has_budget, 1);
    assert_int_equal(got.budget.amount_us, 5000000);
    assert_int_equal(got.max_inflight, 3);
    assert_int_equal(got.max_tokens, 64);
    /* the same tenant again replaces its cell */
    o = ovr("acme", 7);
    assert_int_equal(gw_limits_set(&f->seg, &o), 0);
    assert_int_equal(gw_limits_get(&f->seg, 0, &got), 0);
    assert_int_equal(got.windows[0].limit, 7);
    assert_int_equal(gw_limits_get(&f->seg, 1, &got), -ENOENT);
    /* room for GW_LIMIT_OVERRIDES tenants, then GW_EFULL */
    for (int i = 1; i < GW_LIMIT_OVERRIDES; i++) {
        char t[16];
        snprintf(t, sizeof(t), "t%d", i);
        o = ovr(t, 1);
        assert_int_equal(gw_limits_set(&f->seg, &o), 0);
    }
    o = ovr("one-too-many", 1);
    assert_int_equal(gw_limits_set(&f->seg, &o), GW_EFULL);
    o = ovr("", 1);
    assert_int_equal(gw_limits_set(&f->seg, &o), -EINVAL);
    uint64_t e1 = gw_limits_epoch(&f->seg);
    gw_limits_clear(&f->seg);
    assert_int_equal(gw_limits_epoch(&f->seg), e1 + 1);
    for (int i = 0; i < GW_LIMIT_OVERRIDES; i++)
        assert_int_equal(gw_limits_get(&f->seg, i, &got), -ENOENT);
    fx_close(f);
}

/* A master killed between the two seq stores leaves an odd cell: readers
 * give up on it (-EAGAIN) instead of using half a write, and the next
 * master's clear makes it usable again. */
static void test_half_written_cell_is_skipped_then_repaired(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_limit_override o = ovr("acme", 2), got;
    assert_int_equal(gw_limits_set(&f->seg, &o), 0);
    atomic_fetch_add(&f->seg.limits->cell[0].seq, 1); /* as if killed mid-write */
    assert_int_equal(gw_limits_get(&f->seg, 0, &got), -EAGAIN);
    gw_limits_clear(&f->seg);
    assert_int_equal(gw_limits_get(&f->seg, 0, &got), -ENOENT);
    assert_int_equal(gw_limits_set(&f->seg, &o), 0);
    assert_int_equal(gw_limits_get(&f->seg, 0, &got), 0);
    assert_string_equal(got.tenant, "acme");
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_land_where_the_event_says),
        cmocka_unit_test(test_histogram_buckets_are_upper_inclusive),
        cmocka_unit_test(test_concurrent_adds_from_processes_are_exact),
        cmocka_unit_test(test_limit_overrides_set_replace_clear),
        cmocka_unit_test(test_half_written_cell_is_skipped_then_repaired),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
