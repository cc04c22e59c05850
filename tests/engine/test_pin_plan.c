/* test_pin_plan.c: model.pin_threads (worker/worker_pin.c): which CPUs a
 * worker's engine threads are pinned to, from the CPUs the process may
 * use, the node's workers and threads, and the worker's index; when they
 * are not pinned; and what the ready line says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker_internal.h"

static void expect_cpus(const int *got, const int *want, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(got[i], want[i]);
}

/* Runs of `threads` CPUs by worker index, over a set with holes. */
static void test_each_worker_takes_its_run_of_cpus(void **state)
{
    (void)state;
    int cpus[4] = {-1, -1, -1, -1};
    assert_int_equal(gw__pin_plan((int[]){0, 1}, 2, 1, 2, 0, cpus), 2);
    expect_cpus(cpus, (int[]){0, 1}, 2);
    int holes[] = {2, 5, 6, 9, 12};
    assert_int_equal(gw__pin_plan(holes, 5, 2, 2, 0, cpus), 2);
    expect_cpus(cpus, (int[]){2, 5}, 2);
    assert_int_equal(gw__pin_plan(holes, 5, 2, 2, 1, cpus), 2);
    expect_cpus(cpus, (int[]){6, 9}, 2);
    assert_int_equal(gw__pin_plan(holes, 5, 1, 4, 0, cpus), 4);
    expect_cpus(cpus, (int[]){2, 5, 6, 9}, 4);
}

/* More threads than CPUs, a single thread, an index out of range: not
 * pinned, and cpus untouched. */
static void test_not_pinned_when_they_do_not_fit(void **state)
{
    (void)state;
    int cpus[4] = {-1, -1, -1, -1}, none[4] = {-1, -1, -1, -1};
    int four[] = {0, 1, 2, 3};
    assert_int_equal(gw__pin_plan(four, 3, 2, 2, 0, cpus), 0); /* 4 threads, 3 CPUs */
    assert_int_equal(gw__pin_plan(four, 4, 1, 5, 0, cpus), 0);
    assert_int_equal(gw__pin_plan(four, 4, 2, 1, 0, cpus), 0); /* one thread each */
    assert_int_equal(gw__pin_plan(four, 4, 2, 2, 2, cpus), 0); /* no worker 2 of 2 */
    assert_int_equal(gw__pin_plan(four, 4, 2, 2, -1, cpus), 0);
    assert_int_equal(gw__pin_plan(four, 4, 0, 2, 0, cpus), 0);
    expect_cpus(cpus, none, 4);
}

/* gw__pin_threads on this machine: model.threads 0 becomes the CPUs the
 * test may use over the workers; pinned when two or more threads fit, with
 * the note the ready line prints; not with pin_threads false. */
static void test_the_worker_pins_what_fits(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int n = CPU_COUNT(&set), first = -1, second = -1;
    for (int c = 0; c < CPU_SETSIZE && second < 0; c++)
        if (CPU_ISSET(c, &set))
            first < 0 ? (first = c) : (second = c);
    struct gw_config *cfg = calloc(1, sizeof *cfg);
    struct gw_worker *w = calloc(1, sizeof *w);
    w->cfg = cfg;
    cfg->workers = 1, cfg->pin_threads = 1;
    gw_ctx_opts co = {.n_threads = 0};
    gw__pin_threads(w, &co);
    assert_int_equal(co.n_threads, n > 256 ? 256 : n);
    if (n >= 2) {
        assert_ptr_equal(co.cpus, w->cpus);
        assert_int_equal(w->cpus[0], first);
        assert_int_equal(w->cpus[1], second);
        /* two threads: the first two CPUs, as the ready line writes them */
        co = (gw_ctx_opts){.n_threads = 2};
        gw__pin_threads(w, &co);
        assert_ptr_equal(co.cpus, w->cpus);
        char want[64];
        if (second == first + 1)
            snprintf(want, sizeof want, " pinned to CPUs %d-%d", first, second);
        else
            snprintf(want, sizeof want, " pinned to CPUs %d,%d", first, second);
        assert_string_equal(w->pin_note, want);
    } else
        assert_null(co.cpus);

    cfg->workers = n + 1; /* two threads each cannot fit */
    co = (gw_ctx_opts){.n_threads = 2};
    gw__pin_threads(w, &co);
    assert_null(co.cpus);
    char want[160];
    snprintf(want, sizeof want,
             ", not pinned: %d workers x 2 threads exceed the %d CPUs this process may use", n + 1,
             n);
    assert_string_equal(w->pin_note, want);

    cfg->workers = 1, cfg->pin_threads = 0;
    co = (gw_ctx_opts){.n_threads = 2};
    gw__pin_threads(w, &co);
    assert_null(co.cpus);
    assert_string_equal(w->pin_note, "");
    free(w);
    free(cfg);
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_each_worker_takes_its_run_of_cpus),
        cmocka_unit_test(test_not_pinned_when_they_do_not_fit),
        cmocka_unit_test(test_the_worker_pins_what_fits),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
