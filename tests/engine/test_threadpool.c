/* test_threadpool.c: the engine's thread pool (worker/engine/threadpool.c)
 * hands every share of a job to exactly one thread, on a thread index in
 * range, and returns only once all are done; a thread stuck in a share
 * does not stop the others from taking the rest of the job (the shares
 * are claimed, not fixed per thread); a pinned pool's threads run on
 * their CPUs, and a CPU they may not use is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
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
        assert_int_equal(gw_pool_new(threads, NULL, &p), 0);
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
    assert_int_equal(gw_pool_new(2, NULL, &p), 0);
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

/* Each share records the CPU its thread ran on, by thread index. With
 * wait_other, a thread's share, once recorded, waits up to 1 ms for the
 * other thread to have recorded one: shares take a microsecond, and
 * whichever thread claims first could otherwise take all 8 before the
 * other wakes (seen in the sanitizer build: thread 1 ran none in 400
 * rounds; and, thread 1 kept awake, the caller none in a round). */
struct where {
    _Atomic int cpu[2];
    _Atomic int bad;
    int wait_other;
};

static void record_cpu(void *arg, int i, int n, int t)
{
    (void)i, (void)n;
    struct where *w = arg;
    int c = sched_getcpu();
    if (t < 0 || t > 1) {
        atomic_store(&w->bad, 1);
        return;
    }
    int before = atomic_exchange(&w->cpu[t], c);
    if (before >= 0 && before != c)
        atomic_store(&w->bad, 1); /* thread t moved within the job */
    if (w->wait_other)
        for (uint64_t end = gw_mono_ns() + 1000000;
             atomic_load(&w->cpu[1 - t]) < 0 && gw_mono_ns() < end;)
            sched_yield();
}

/* Two threads pinned to the last two CPUs the test may use, in reverse
 * order, then both to the last: every share of thread t runs on cpus[t];
 * a CPU outside the set
 * is -EINVAL and leaves the caller where it was. Skipped with fewer than
 * two CPUs. */
static void test_pinned_threads_run_on_their_cpus(void **state)
{
    (void)state;
    cpu_set_t was;
    assert_int_equal(sched_getaffinity(0, sizeof was, &was), 0);
    int allowed[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &was))
            allowed[n++] = c;
    if (n < 2)
        skip();
    /* apart, then both on one CPU (left alone, the kernel would spread them) */
    int layouts[2][2] = {{allowed[n - 1], allowed[n - 2]}, {allowed[n - 1], allowed[n - 1]}};
    int *cpus = layouts[0], ran[2] = {0, 0};
    gw_pool *p;
    for (int l = 0; l < 2; l++) {
        cpus = layouts[l];
        assert_int_equal(gw_pool_new(2, cpus, &p), 0);
        for (int round = 0; round < 200; round++) {
            struct where w = {{-1, -1}, 0, l == 0}; /* apart: both can run */
            gw_pool_run(p, record_cpu, &w);
            assert_int_equal(atomic_load(&w.bad), 0);
            for (int t = 0; t < 2; t++) { /* a thread may find every share taken */
                int ct = atomic_load(&w.cpu[t]);
                if (ct >= 0)
                    assert_int_equal(ct, cpus[t]);
                ran[t] += ct >= 0;
            }
        }
        gw_pool_free(p);
    }
    assert_true(ran[0] > 0 && ran[1] > 0);
    cpu_set_t now;
    assert_int_equal(sched_getaffinity(0, sizeof now, &now), 0);
    assert_int_equal(CPU_COUNT(&now), 1); /* the caller stays pinned */
    assert_true(CPU_ISSET(cpus[0], &now));

    assert_int_equal(sched_setaffinity(0, sizeof was, &was), 0);
    int bad[2] = {allowed[0], CPU_SETSIZE}; /* thread 1: no such CPU */
    assert_int_equal(gw_pool_new(2, bad, &p), -EINVAL);
    assert_int_equal(sched_getaffinity(0, sizeof now, &now), 0);
    assert_true(CPU_EQUAL(&now, &was)); /* the caller's mask untouched */
    int absent = -1;
    for (int c = 0; c < CPU_SETSIZE && absent < 0; c++)
        if (!CPU_ISSET(c, &was))
            absent = c;
    int outside[2] = {absent, allowed[0]}; /* the caller: a CPU not in its set */
    assert_int_equal(gw_pool_new(2, outside, &p), -EINVAL);
    assert_int_equal(sched_getaffinity(0, sizeof now, &now), 0);
    assert_true(CPU_EQUAL(&now, &was));
}

int main(void)
{
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_every_share_runs_once),
        cmocka_unit_test(test_a_stuck_thread_does_not_hold_the_rest),
        cmocka_unit_test(test_pinned_threads_run_on_their_cpus),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
