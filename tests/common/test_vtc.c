/* test_vtc.c - the tenants' virtual token counters (common/vtc.c): exact
 * adds, a lift that raises but never lowers, stale and budget-less
 * references, exact sums when processes add and lift at once; and the plan
 * weight as the slot request carries it (weight_milli). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <sys/wait.h>

#define NOW 1700000000000000ull

static struct gw_acct tenant(struct fx *f, const char *id)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_TENANT, id, strlen(id), 1, NOW, &a), 0);
    return a;
}

/* A start line for forked children: each waits in start_wait until the
 * parent calls start_go, so they run at once instead of one after another. */
static void start_wait(int gate[2])
{
    char c;
    close(gate[1]);
    while (read(gate[0], &c, 1) < 0 && errno == EINTR)
        ;
}

static void start_go(int gate[2])
{
    close(gate[0]);
    close(gate[1]); /* every child's read returns 0 (end of file) */
}

static void test_adds_sum_exactly_per_tenant(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct acme = tenant(f, "acme"), bob = tenant(f, "bob");
    assert_int_equal(gw_vtc_get(&f->seg, acme), 0); /* a new record starts at 0 */
    assert_int_equal(gw_vtc_add(&f->seg, acme, 2000), 0);
    assert_int_equal(gw_vtc_add(&f->seg, acme, 0), 0);
    assert_int_equal(gw_vtc_add(&f->seg, acme, 333), 0);
    assert_int_equal(gw_vtc_add(&f->seg, bob, 7), 0);
    assert_int_equal(gw_vtc_get(&f->seg, acme), 2333);
    assert_int_equal(gw_vtc_get(&f->seg, bob), 7);
    /* large values are kept to the unit */
    assert_int_equal(gw_vtc_add(&f->seg, bob, 1ull << 62), 0);
    assert_int_equal(gw_vtc_get(&f->seg, bob), (1ull << 62) + 7);
    /* the same tenant looked up again is the same counter */
    assert_int_equal(gw_vtc_get(&f->seg, tenant(f, "acme")), 2333);
    fx_close(f);
}

static void test_lift_raises_but_never_lowers(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "acme");
    assert_int_equal(gw_vtc_lift(&f->seg, a, 5000), 5000); /* idle: starts at the floor */
    assert_int_equal(gw_vtc_get(&f->seg, a), 5000);
    assert_int_equal(gw_vtc_lift(&f->seg, a, 4999), 5000); /* below: unchanged */
    assert_int_equal(gw_vtc_lift(&f->seg, a, 0), 5000);
    assert_int_equal(gw_vtc_lift(&f->seg, a, 5000), 5000); /* equal: unchanged */
    assert_int_equal(gw_vtc_get(&f->seg, a), 5000);
    assert_int_equal(gw_vtc_add(&f->seg, a, 10), 0);
    assert_int_equal(gw_vtc_lift(&f->seg, a, 5005), 5010); /* an add is never undone */
    assert_int_equal(gw_vtc_lift(&f->seg, a, 9000), 9000);
    assert_int_equal(gw_vtc_get(&f->seg, a), 9000);
    fx_close(f);
}

/* A reference whose generation is not the account's, one out of range, and
 * an ip account (no budget record): nothing read, nothing written. */
static void test_stale_and_budgetless_refs_touch_nothing(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "acme");
    assert_int_equal(gw_vtc_add(&f->seg, a, 100), 0);
    struct gw_acct stale = {.index = a.index, .gen = (uint8_t)(a.gen + 1)};
    assert_int_equal(gw_vtc_get(&f->seg, stale), 0);
    assert_int_equal(gw_vtc_add(&f->seg, stale, 5), GW_ESTALE);
    assert_int_equal(gw_vtc_lift(&f->seg, stale, 1000), 0);
    struct gw_acct out = {.index = fx_cfg.accounts, .gen = a.gen};
    assert_int_equal(gw_vtc_get(&f->seg, out), 0);
    assert_int_equal(gw_vtc_add(&f->seg, out, 5), GW_ESTALE);
    assert_int_equal(gw_vtc_lift(&f->seg, out, 1000), 0);
    struct gw_acct ip;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "10.0.0.1", 8, 1, NOW, &ip), 0);
    assert_int_equal(gw_vtc_get(&f->seg, ip), 0);
    assert_int_equal(gw_vtc_add(&f->seg, ip, 5), -ENOENT);
    assert_int_equal(gw_vtc_lift(&f->seg, ip, 1000), 0);
    assert_int_equal(gw_vtc_get(&f->seg, a), 100);
    fx_close(f);
}

/* 4 processes x 20000 adds while a fifth keeps raising the counter: the
 * adds are exact. The adders add whole multiples of 2^20 and the lifter
 * raises only the low 20 bits (floor = the high part it read | k), so the
 * high part counts the adds exactly unless a raise stored over an add that
 * landed between its read and its write (a lift that checks, then stores). */
#define LOW_BITS 20
#define LOW_MASK ((1ull << LOW_BITS) - 1)
static void test_concurrent_adds_and_lifts_from_processes_sum_exactly(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "acme");
    enum { PROCS = 4, ADDS = 20000, LIFTS = 200000 };
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    for (int p = 0; p < PROCS; p++) {
        if (fork() == 0) {
            start_wait(gate);
            for (int i = 0; i < ADDS; i++)
                if (gw_vtc_add(&f->seg, a, (uint64_t)((i % 7) + 1) << LOW_BITS) != 0)
                    _exit(1);
            _exit(0);
        }
    }
    if (fork() == 0) {
        start_wait(gate);
        for (uint64_t k = 1; k <= LIFTS; k++) {
            uint64_t floor = (gw_vtc_get(&f->seg, a) & ~LOW_MASK) | (k & LOW_MASK);
            if (gw_vtc_lift(&f->seg, a, floor) < floor)
                _exit(1);
        }
        _exit(0);
    }
    start_go(gate);
    for (int p = 0; p < PROCS + 1; p++) {
        int st;
        assert_true(wait(&st) > 0);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    /* 20000 adds of (i % 7) + 1: 2857 full cycles of 1..7 (28 each), then
     * i = 19999 (19999 % 7 = 0, so 1) */
    uint64_t per = 2857ull * 28 + 1;
    assert_int_equal(gw_vtc_get(&f->seg, a) >> LOW_BITS, PROCS * per);
    fx_close(f);
}

/* Processes lifting to different floors at once leave the largest. */
static void test_concurrent_lifts_leave_the_largest_floor(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = tenant(f, "acme");
    enum { PROCS = 4, LIFTS = 50000 };
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    for (int p = 0; p < PROCS; p++) {
        if (fork() == 0) {
            start_wait(gate);
            for (uint64_t x = 1; x <= LIFTS; x++)
                gw_vtc_lift(&f->seg, a, x * PROCS + (uint64_t)p);
            _exit(0);
        }
    }
    start_go(gate);
    for (int p = 0; p < PROCS; p++)
        assert_true(wait(NULL) > 0);
    assert_int_equal(gw_vtc_get(&f->seg, a), (uint64_t)LIFTS * PROCS + PROCS - 1);
    fx_close(f);
}

static void test_weight_milli_rounds_and_never_reaches_zero(void **state)
{
    (void)state;
    assert_int_equal(gw_weight_milli(1.0), 1000);
    assert_int_equal(gw_weight_milli(2.5), 2500);
    assert_int_equal(gw_weight_milli(0.25), 250);
    assert_int_equal(gw_weight_milli(0.0126), 13); /* 12.6 rounds up */
    assert_int_equal(gw_weight_milli(0.0124), 12); /* 12.4 rounds down */
    assert_int_equal(gw_weight_milli(1000.0), 1000000);
    assert_int_equal(gw_weight_milli(0.0001), 1); /* 0.1: at least 1 */
    assert_int_equal(gw_weight_milli(0.0), 1);
    struct gw_slot_req r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(gw_req_weight_milli(&r), 1000); /* unset: weight 1 */
    r.weight_milli = 1;
    assert_int_equal(gw_req_weight_milli(&r), 1);
    r.weight_milli = 2500;
    assert_int_equal(gw_req_weight_milli(&r), 2500);
}

/* The weight travels with the request through the slot. */
static void test_weight_milli_travels_in_the_slot_request(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_slot_ref ref;
    assert_int_equal(gw_slot_claim(&f->seg, &ref), 0);
    struct gw_slot_req in, out;
    memset(&in, 0, sizeof(in));
    in.max_tokens = 16;
    in.weight_milli = 2500;
    in.created_us = NOW;
    snprintf(in.tenant, sizeof(in.tenant), "acme");
    assert_int_equal(gw_slot_set_req(&f->seg, ref, &in), 0);
    assert_int_equal(gw_slot_move(&f->seg, ref, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_slot_get_req(&f->seg, ref, &out), GW_SLOT_QUEUED);
    assert_int_equal(out.weight_milli, 2500);
    assert_int_equal(out.created_us, NOW);
    assert_int_equal(gw_req_weight_milli(&out), 2500);
    assert_int_equal(offsetof(struct gw_slot_req, weight_milli) + 4,
                     offsetof(struct gw_slot_req, created_us)); /* where pad0 was */
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adds_sum_exactly_per_tenant),
        cmocka_unit_test(test_lift_raises_but_never_lowers),
        cmocka_unit_test(test_stale_and_budgetless_refs_touch_nothing),
        cmocka_unit_test(test_concurrent_adds_and_lifts_from_processes_sum_exactly),
        cmocka_unit_test(test_concurrent_lifts_leave_the_largest_floor),
        cmocka_unit_test(test_weight_milli_rounds_and_never_reaches_zero),
        cmocka_unit_test(test_weight_milli_travels_in_the_slot_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
