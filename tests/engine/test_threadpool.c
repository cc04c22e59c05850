/* test_threadpool.c: the engine's thread pool (worker/engine/threadpool.c)
 * hands every share of a job to exactly one thread, on a thread index in
 * range, and returns only once all are done; a thread stuck in a share
 * does not stop the others from taking the rest of the job (the shares
 * are claimed, not fixed per thread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

enum { MAX_SHARES = 64 };

struct job {
    _Atomic int runs[MAX_SHARES]; /* per share: how many times it ran */
    _Atomic int by[16];           /* per thread index: shares it ran */
    _Atomic int n_seen, bad_t, done;
    int threads;
    int out[MAX_SHARES]; /* share i writes i * i: read after the run */
};

static void count_share(void *arg, int i, int n, int t)
{
    struct job *j = arg;
    if (i < 0 || i >= MAX_SHARES || t < 0 || t >= j->threads)
        atomic_store(&j->bad_t, 1);
    else {
        atomic_fetch_add(&j->runs[i], 1);
        atomic_fetch_add(&j->by[t], 1);
        j->out[i] = i * i;
    }
    atomic_store(&j->n_seen, n);
}

/* Thousands of jobs on 1 to 4 threads: each share exactly once, every
 * thread index in [0, threads), the shares' writes visible when
 * gw_pool_run returns. */
static void test_every_share_runs_once(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 4; threads++) {
        gw_pool *p;
        assert_int_equal(gw_pool_new(threads, &p), 0);
        assert_int_equal(gw_pool_size(p), threads);
        for (int round = 0; round < 3000; round++) {
            struct job *j = calloc(1, sizeof *j);
            j->threads = threads;
            gw_pool_run(p, count_share, j);
            int n = atomic_load(&j->n_seen);
            assert_int_equal(atomic_load(&j->bad_t), 0);
            assert_true(n >= 1 && n <= MAX_SHARES);
            for (int i = 0; i < n; i++) {
                if (atomic_load(&j->runs[i]) != 1 || j->out[i] != i * i)
                    fail_msg("threads %d round %d share %d of %d: ran %d times, out %d", threads,
                             round, i, n, atomic_load(&j->runs[i]), j->out[i]);
            }
            int total = 0;
            for (int t = 0; t < threads; t++)
                total += atomic_load(&j->by[t]);
            assert_int_equal(total, n);
            free(j);
        }
        gw_pool_free(p);
    }
}

/* Waits (up to ~5 s) until cond(j) holds; 0 if it never did. */
static int wait_for(struct job *j, int (*cond)(struct job *))
{
    struct timespec ts = {0, 100000};
    for (int k = 0; k < 50000 && !cond(j); k++)
        nanosleep(&ts, NULL);
    return cond(j);
}

static int thread1_has_one(struct job *j)
{
    return atomic_load(&j->by[1]) >= 1;
}

/* The caller's first share waits until thread 1 has taken a share; thread
 * 1's share then blocks until every other share of the job is done. With
 * shares fixed per thread the job could never finish (thread 1's fixed
 * half would wait for the caller's); claimed, the caller takes the rest. */
static void stuck_share(void *arg, int i, int n, int t)
{
    struct job *j = arg;
    atomic_store(&j->n_seen, n);
    atomic_fetch_add(&j->runs[i], 1);
    atomic_fetch_add(&j->by[t], 1);
    if (t == 0 && atomic_load(&j->by[0]) == 1 && !wait_for(j, thread1_has_one))
        atomic_store(&j->bad_t, 2);
    if (t == 1) {
        struct timespec ts = {0, 100000};
        for (int k = 0; k < 50000 && atomic_load(&j->done) < n - 1; k++)
            nanosleep(&ts, NULL); /* up to ~5 s: then fail below */
        if (atomic_load(&j->done) < n - 1)
            atomic_store(&j->bad_t, 1);
    }
    atomic_fetch_add(&j->done, 1);
}

static void test_a_stuck_thread_does_not_hold_the_rest(void **state)
{
    (void)state;
    gw_pool *p;
    assert_int_equal(gw_pool_new(2, &p), 0);
    for (int round = 0; round < 20; round++) {
        struct job *j = calloc(1, sizeof *j);
        j->threads = 2;
        gw_pool_run(p, stuck_share, j);
        int n = atomic_load(&j->n_seen);
        assert_int_equal(atomic_load(&j->bad_t), 0);
        assert_int_equal(atomic_load(&j->done), n);
        assert_int_equal(atomic_load(&j->by[1]), 1); /* stuck in its first share */
        assert_int_equal(atomic_load(&j->by[0]) + atomic_load(&j->by[1]), n);
        free(j);
    }
    gw_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_every_share_runs_once),
        cmocka_unit_test(test_a_stuck_thread_does_not_hold_the_rest),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
