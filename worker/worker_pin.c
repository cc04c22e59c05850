/* worker_pin.c - model.pin_threads: the CPUs a worker's engine threads run
 * on.
 *
 * The CPU engine's pool (threadpool.c) hands a forward pass out in a few
 * hundred jobs whose threads spin, then sleep, between them. Left to the
 * kernel, the threads of a worker that idled between requests are woken
 * onto one CPU and spread again only milliseconds later: on a 2-vCPU host a
 * 13-token prompt after 300 ms idle took 15-18 ms instead of 9-10, and a
 * quiet node's answers a third longer (docs/BENCHMARKS.md, "Pinned
 * threads"). So worker k of W pins its T threads, one per CPU, to the k-th
 * run of T CPUs among those the process may use (systemd's CPUAffinity=,
 * taskset, a cpuset), in ascending order, when the W x T threads fit in
 * them. When they do not, the operator asked for more threads than CPUs and
 * the kernel places them; a single thread has no partner to meet and is not
 * pinned. The master and the fronts are never pinned: they take whatever
 * CPU is free. Several gpuwarden instances on one host would pin onto the
 * same first CPUs: give each its own CPUAffinity=, or set pin_threads
 * false.
 */
#include "worker_internal.h"

#include <sched.h>
#include <stdio.h>

int gw__pin_plan(const int *allowed, int n_allowed, int workers, int threads, int index, int *cpus)
{
    if (threads < 2 || workers < 1 || index < 0 || index >= workers ||
        (long)workers * threads > n_allowed)
        return 0;
    for (int i = 0; i < threads; i++)
        cpus[i] = allowed[index * threads + i];
    return threads;
}

/* "0-3,8,10-11" into out. */
static void cpu_list(const int *cpus, int n, char *out, size_t len)
{
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < n && at < len; i++) {
        int j = i;
        while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
            j++;
        int k = j > i ? snprintf(out + at, len - at, "%s%d-%d", i ? "," : "", cpus[i], cpus[j])
                      : snprintf(out + at, len - at, "%s%d", i ? "," : "", cpus[i]);
        at += k > 0 ? (size_t)k : 0;
        i = j;
    }
}

void gw__pin_threads(struct gw_worker *w, gw_ctx_opts *co)
{
    cpu_set_t set;
    int allowed[CPU_SETSIZE];
    int n = 0, workers = w->cfg->workers > 0 ? w->cfg->workers : 1;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        snprintf(w->pin_note, sizeof w->pin_note, ", not pinned: sched_getaffinity: %m");
        return;
    }
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            allowed[n++] = c;
    /* model.threads 0: the CPUs this process may use, shared among the
     * workers */
    if (co->n_threads == 0)
        co->n_threads = n / workers > 0 ? (n / workers > 256 ? 256 : n / workers) : 1;
    w->pin_note[0] = '\0';
    if (!w->cfg->pin_threads || co->n_threads < 2)
        return;
    if (gw__pin_plan(allowed, n, workers, co->n_threads, w->index, w->cpus) == 0) {
        snprintf(w->pin_note, sizeof w->pin_note,
                 ", not pinned: %d workers x %d threads exceed the %d CPUs this process may use",
                 workers, co->n_threads, n);
        return;
    }
    char list[96];
    cpu_list(w->cpus, co->n_threads, list, sizeof list);
    snprintf(w->pin_note, sizeof w->pin_note, " pinned to CPUs %s", list);
    co->cpus = w->cpus;
}
