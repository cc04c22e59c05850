/* cluster_lease.c - the words a GPU lease cell (cluster_gpu.c) and an
 * output-token lease cell (cluster_out.c) share (struct gw_cluster_lease,
 * first in each): a pool of farm-wide units the cluster agent took from
 * Redis (GPU-us, or output tokens), the lease's end, the units of requests
 * parked for a lease, a denial's end and the fail-open count
 * (docs/ARCHITECTURE.md, "The farm").
 *
 * The two kinds differ in what may take the pool below zero, and each says
 * so where it calls in: a GPU worker's extension takes with a floor of
 * -overdraft (gw__lease_take's `floor`: a bounded overdraft the agent sets
 * at each grant, cluster_gpu.c); an output-token request's end charges
 * what it generated whatever the pool holds (gw_cluster_out_settle: a debt
 * bounded by the requests running, cluster_out.c). Admissions take with
 * floor 0 in both. A grant pays either debt first.
 *
 * Who repairs what: nothing here needs the master's repair. Every word is
 * changed by one atomic operation, so a process killed anywhere leaves each
 * word before or after its change (what each kind loses then: the opening
 * comments of cluster_gpu.c and cluster_out.c).
 */
#include "seg_internal.h"

int gw__lease_take(struct gw_cluster_lease *l, uint64_t x, uint64_t now_us, uint64_t floor)
{
    /* acquire: pairs with the agent's release add in gw__lease_grant, so
     * the end read below is the one those units came with (or later) */
    int64_t t = atomic_load_explicit(&l->tokens, memory_order_acquire);
    /* relaxed: ordered after the acquire above */
    uint64_t end = atomic_load_explicit(&l->expires_us, memory_order_relaxed);
    if (x > (1ull << 62) || floor > (1ull << 62))
        return 0;
    for (;;) {
        int64_t base = now_us < end ? t : (t < 0 ? t : 0); /* usable */
        if (base - (int64_t)x < -(int64_t)floor || (now_us >= end && t > 0))
            return 0;
        /* acquire on success, as the load */
        if (atomic_compare_exchange_weak_explicit(&l->tokens, &t, t - (int64_t)x,
                                                  memory_order_acquire, memory_order_acquire))
            return 1;
    }
}

int gw__lease_admit(const struct gw_segment *seg, struct gw_cluster_lease *l, uint64_t x,
                    uint64_t now_us, uint64_t *retry_us)
{
    if (gw__lease_take(l, x, now_us, 0))
        return GW_CL_TAKEN;
    return gw__cluster_refusal(seg, &l->deny_until, now_us, retry_us);
}

void gw__lease_put(struct gw_cluster_lease *l, uint64_t x)
{
    if (x && x < (1ull << 62))
        /* relaxed: a count; an end that passed meanwhile makes the agent
         * give these back or keep them for the next lease (cluster.c) */
        atomic_fetch_add_explicit(&l->tokens, (int64_t)x, memory_order_relaxed);
}

void gw__lease_want(struct gw_segment *seg, struct gw_cluster_lease *l, struct gw_acct a,
                    uint64_t x, int sign)
{
    if (sign > 0) {
        gw__cluster_note(gw__cluster_cell_of(seg, a), a);
        /* relaxed: published by the release bump in gw__cluster_wake */
        atomic_fetch_add_explicit(&l->want, x, memory_order_relaxed);
        gw__cluster_wake(seg);
        return;
    }
    /* relaxed: a count read on its own; never below zero */
    uint64_t w = atomic_load_explicit(&l->want, memory_order_relaxed);
    while (w > 0 &&
           !atomic_compare_exchange_weak_explicit(&l->want, &w, w > x ? w - x : 0,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---------------------------------------------------------- the agent's side */

void gw__lease_grant(struct gw_cluster_lease *l, uint64_t x, uint64_t expires_us)
{
    /* relaxed stores, published by the release add of the tokens below (so
     * is what the caller stored before the call: the GPU cell's overdraft) */
    atomic_store_explicit(&l->expires_us, expires_us, memory_order_relaxed);
    atomic_store_explicit(&l->deny_until, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->granted, x, memory_order_relaxed);
    /* release: pairs with gw__lease_take's acquire; a pool in debt pays it
     * first: the add does both */
    atomic_fetch_add_explicit(&l->tokens, (int64_t)x, memory_order_release);
}

uint64_t gw__lease_reclaim(struct gw_cluster_lease *l)
{
    /* relaxed: the CAS below decides */
    int64_t t = atomic_load_explicit(&l->tokens, memory_order_relaxed);
    /* acq_rel: the CAS races the fronts' and workers' CAS and the settlers'
     * refunds and charges; whatever it removes nobody took. A debt stays. */
    while (t > 0 && !atomic_compare_exchange_weak_explicit(&l->tokens, &t, 0, memory_order_acq_rel,
                                                           memory_order_relaxed))
        ;
    return t > 0 ? (uint64_t)t : 0;
}

void gw__lease_deny(struct gw_cluster_lease *l, uint64_t until_us)
{
    /* relaxed: a hint read on its own (gw__cluster_refusal) */
    atomic_store_explicit(&l->deny_until, until_us, memory_order_relaxed);
}

uint64_t gw__lease_open_drain(struct gw_cluster_lease *l)
{
    /* relaxed: a count; the exchange keeps every unit counted once */
    return atomic_exchange_explicit(&l->open_spent, 0, memory_order_relaxed);
}

void gw__lease_open_undrain(struct gw_cluster_lease *l, uint64_t n)
{
    /* relaxed: as gw__lease_open_drain */
    atomic_fetch_add_explicit(&l->open_spent, n, memory_order_relaxed);
}

void gw__lease_want_reset(struct gw_cluster_lease *l, uint64_t seen)
{
    /* relaxed: a count read on its own; the CAS keeps a request that
     * parked since */
    atomic_compare_exchange_strong_explicit(&l->want, &seen, 0, memory_order_relaxed,
                                            memory_order_relaxed);
}
