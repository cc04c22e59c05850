/* threadpool.c: a fixed set of pthreads that run one function at a time,
 * split into shares (row ranges of the work) that the threads claim.
 *
 * A job is SHARES_PER_THREAD shares per thread, handed out one at a time
 * from a counter: each thread, the caller included, takes the next share
 * until none is left. A thread the kernel has descheduled (on a 2-vCPU
 * host, the fronts, the load or another VM's work) holds up at most the
 * one share it took, instead of a whole fixed half of every job: the
 * others take the rest. Which thread runs a share never changes its
 * result: a share is a fixed range, computed the same way wherever it
 * runs (t, the thread's index, picks only scratch memory).
 *
 * A forward pass dispatches a few hundred jobs per token, a few
 * microseconds apart. Both sides wait the same way: spin with pause for at
 * most SPIN_NS (the gap between two jobs of one token is shorter), then
 * sleep on a futex. Spinning longer is a disaster on a busy machine: with
 * two cores and a compiler on one, a thread that spins while the thread it
 * waits for is not running burns the only core that could run it (an
 * unbounded spin measured 36 tokens/s there, against 140 on an idle box).
 *
 * Pinning (cpus given): thread i runs only on cpus[i], the caller on
 * cpus[0]. Left to the kernel, the threads of a pool that slept through an
 * idle spell are woken onto one CPU and spread again only after several
 * milliseconds: the first passes after a pause then took 1.5-1.8x their
 * time on a 2-vCPU host (13-token prompts 300 ms apart, bench_step;
 * docs/BENCHMARKS.md). A pinned pool wakes where it ran.
 *
 * Wake-ups are never lost: a sleeper announces itself (seq_cst) before it
 * re-reads the word it sleeps on, and the waker changes the word (seq_cst)
 * before it reads the announcement; FUTEX_WAIT itself returns at once
 * when the word no longer holds the value the sleeper saw.
 */
#include "engine.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long a thread spins before it sleeps. Long enough to cover the
 * caller's serial work between two jobs of one token (a norm, RoPE, the
 * cache writes: a few microseconds), short enough that a descheduled
 * partner costs little. */
#define SPIN_NS 20000

/* Shares of a job per thread: enough that a descheduled thread holds up
 * a small part of it, few enough that a share is still many rows. */
#define SHARES_PER_THREAD 4

struct gw_pool {
    int n;                  /* threads, caller included */
    int shares;             /* shares per job: n * SHARES_PER_THREAD */
    pthread_t *th;          /* n - 1 workers */
    _Atomic uint32_t gen;   /* bumped once per job: the workers' futex */
    _Atomic int sleepers;   /* workers asleep (or about to be) on gen */
    _Atomic uint64_t claim; /* the job's number << 16 | its next share */
    _Atomic uint32_t done;  /* shares of the job finished: the caller's futex */
    _Atomic int caller_asleep;
    _Atomic bool stop;
    gw_pool_fn fn; /* the current job, published by claim */
    void *arg;
    uint64_t *wait_ns; /* gw_pool_prof: the caller's waits are added here */
};

struct worker_arg {
    gw_pool *p;
    int i;
};

static void futex_wait(_Atomic uint32_t *w, uint32_t seen)
{
#ifdef __linux__
    /* EAGAIN (the word changed) and EINTR both mean: look again. */
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
#else
    (void)w, (void)seen;
    sched_yield();
#endif
}

static void futex_wake(_Atomic uint32_t *w, int n)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#else
    (void)w, (void)n;
#endif
}

/* Spins until *w != seen or SPIN_NS pass; returns the value last read. The
 * clock is read once per 64 pauses. acquire: pairs with the writer's
 * release (or seq_cst) store, so what it wrote before is visible. */
static uint32_t spin_while(_Atomic uint32_t *w, uint32_t seen)
{
    uint64_t t0 = 0;
    for (unsigned i = 1;; i++) {
        uint32_t v = atomic_load_explicit(w, memory_order_acquire);
        if (v != seen)
            return v;
        cpu_relax();
        if (i % 64 == 0) {
            uint64_t t = gw_mono_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > SPIN_NS)
                return v;
        }
    }
}

/* Claims and runs shares of the current job until none is left. A share
 * is claimed by moving claim from (job, s) to (job, s + 1); fn and arg are
 * read after the claim, and the caller writes the next job's only once
 * every share of this one is done (this one included), so they are the
 * claimed job's. A thread that comes late finds the shares gone, or helps
 * with the job after (its claim word is newer, fn and arg with it). */
static void help(gw_pool *p, int t)
{
    /* acquire (load and CAS): pairs with the caller's release store of the
     * job's claim word, so fn, arg and the reset done are visible. */
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    while ((int)(c & 0xffff) < p->shares) {
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue; /* c holds the newer word */
        p->fn(p->arg, (int)(c & 0xffff), p->shares, t);
        /* seq_cst: the share's outputs happen before the caller sees done
         * reach shares (release), and the increment is ordered before the
         * read of caller_asleep (against the caller's store and re-read). */
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_seq_cst) + 1 ==
                (uint32_t)p->shares &&
            atomic_load_explicit(&p->caller_asleep, memory_order_seq_cst))
            futex_wake(&p->done, 1);
        c = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static void *worker_main(void *v)
{
    struct worker_arg wa = *(struct worker_arg *)v;
    free(v);
    gw_pool *p = wa.p;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = spin_while(&p->gen, seen);
        while (g == seen) {
            /* seq_cst: ordered before our re-read of gen, against the
             * caller's gen increment and its read of sleepers. */
            atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
            if (atomic_load_explicit(&p->gen, memory_order_seq_cst) == seen)
                futex_wait(&p->gen, seen);
            atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        seen = g;
        /* relaxed: stop is written before the gen bump that woke us. */
        if (atomic_load_explicit(&p->stop, memory_order_relaxed))
            return NULL;
        help(p, wa.i);
    }
}

/* Publishes a new job (fn, arg already written) and wakes sleepers. */
static void bump(gw_pool *p)
{
    /* seq_cst: release for fn/arg/stop, and ordered before the read of
     * sleepers (see worker_main). */
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0)
        futex_wake(&p->gen, INT_MAX);
}

/* Pins the calling thread to cpu, or a thread about to be created (attr). */
static int pin_to(int cpu, pthread_attr_t *attr)
{
#ifdef __linux__
    cpu_set_t set;
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return EINVAL;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return attr ? pthread_attr_setaffinity_np(attr, sizeof set, &set)
                : pthread_setaffinity_np(pthread_self(), sizeof set, &set);
#else
    (void)cpu, (void)attr;
    return ENOTSUP;
#endif
}

/* Starts thread i (1..n-1), on cpus[i] when cpus is given. */
static int start_thread(gw_pool *p, int i, const int *cpus)
{
    struct worker_arg *wa = malloc(sizeof *wa);
    if (!wa)
        return ENOMEM;
    *wa = (struct worker_arg){.p = p, .i = i};
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        if (!cpus || (rc = pin_to(cpus[i], &attr)) == 0)
            rc = pthread_create(&p->th[i - 1], &attr, worker_main, wa);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0)
        free(wa);
    return rc;
}

int gw_pool_new(int n_threads, const int *cpus, gw_pool **out)
{
    if (n_threads < 1 || n_threads > 1024 || !out)
        return -EINVAL;
    gw_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->n = n_threads;
    p->shares = n_threads * SHARES_PER_THREAD;
    if (n_threads > 1 && !(p->th = calloc((size_t)n_threads - 1, sizeof *p->th))) {
        free(p);
        return -ENOMEM;
    }
    int rc = 0;
    for (int i = 1; i < n_threads && rc == 0; i++)
        if ((rc = start_thread(p, i, cpus)) != 0)
            p->n = i; /* threads 1..i-1 exist */
    /* the caller last: when a pin fails, its own mask is still as it was */
    if (rc == 0 && cpus)
        rc = pin_to(cpus[0], NULL);
    if (rc != 0) {
        gw_pool_free(p);
        return -rc;
    }
    *out = p;
    return 0;
}

void gw_pool_free(gw_pool *p)
{
    if (!p)
        return;
    atomic_store_explicit(&p->stop, true, memory_order_relaxed);
    bump(p);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i - 1], NULL);
    free(p->th);
    free(p);
}

int gw_pool_size(const gw_pool *p)
{
    return p->n;
}

void gw_pool_run(gw_pool *p, gw_pool_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    /* relaxed: every share of the last job is done (done reached shares,
     * so no increment is in flight); published by the release below. */
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    /* relaxed: only the caller writes the job number (the workers' CASes
     * change the share field alone). */
    uint64_t job = (atomic_load_explicit(&p->claim, memory_order_relaxed) >> 16) + 1;
    /* release: fn, arg and done before any claim of this job's shares. */
    atomic_store_explicit(&p->claim, job << 16, memory_order_release);
    bump(p);
    help(p, 0);
    uint64_t t0 = p->wait_ns ? gw_mono_ns() : 0;
    uint32_t v, all = (uint32_t)p->shares;
    /* acquire: pairs with each share's increment, so the shares' outputs
     * are visible once done reads all. Each change restarts the spin. */
    while ((v = atomic_load_explicit(&p->done, memory_order_acquire)) != all) {
        uint32_t w = spin_while(&p->done, v);
        if (w != v)
            continue;
        /* seq_cst: ordered before the re-read of done, against the last
         * share's increment and its read of caller_asleep. */
        atomic_store_explicit(&p->caller_asleep, 1, memory_order_seq_cst);
        if ((v = atomic_load_explicit(&p->done, memory_order_seq_cst)) != all)
            futex_wait(&p->done, v);
        atomic_store_explicit(&p->caller_asleep, 0, memory_order_relaxed);
    }
    if (p->wait_ns)
        *p->wait_ns += gw_mono_ns() - t0;
}

void gw_pool_prof(gw_pool *p, uint64_t *wait_ns)
{
    p->wait_ns = wait_ns;
}
