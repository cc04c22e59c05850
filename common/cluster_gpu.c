/* cluster_gpu.c - this node's side of the farm's GPU-second budgets: the
 * segment's GPU lease cells (docs/ARCHITECTURE.md, "The farm").
 *
 * One cell per tenant budget record, beside the request-rate cell. `tokens`
 * is a pool of farm-wide GPU-microseconds the cluster agent took from Redis.
 * A front takes a request's whole reservation from it (one CAS) before it
 * reserves the same amount in the local ledger and marks the slot
 * SLOT_FARM_GPU; a worker whose request outgrows its reservation takes the
 * extension from it too (gw__cluster_gpu_extend, from gw_budget_charge),
 * and may overdraw it, down to -overdraft (the agent's bound: the smallest
 * lease), rather than stop a generation while the agent fetches a lease;
 * settlement puts the unused part back (gw__cluster_gpu_refund). So every
 * GPU-us the ledger charges on this node came out of a lease first, or is
 * a debt of at most `overdraft` that a later lease pays (never charged to
 * Redis any other way: the farm's account grants only what it has).
 *
 * Who repairs what: nothing here needs the master's repair. Every word is
 * changed by one atomic operation, so a process killed anywhere leaves each
 * word before or after its change:
 *  - a front killed between its take and the local reservation, or before
 *    it bound the slot, loses those GPU-us (the node under-admits by one
 *    reservation; the farm's bound holds);
 *  - a settlement the repair finishes does not repeat a refund that may or
 *    may not have happened (budget.c's rule for the decision cells): the
 *    refund may be lost, never doubled;
 *  - `want` left by a dead front: the agent takes a lease nobody uses and
 *    gives it back when it ends (as for the rate cells).
 */
#include "seg_internal.h"

#include <errno.h>

static struct gw_cluster_gpu *gpu_of(const struct gw_segment *seg, struct gw_acct a)
{
    struct gw_cluster_cell *c = gw__cluster_cell_of(seg, a);
    return c ? &seg->cl_gpu[c - seg->cl_cells] : NULL;
}

/* Takes x from the pool while its lease lasts: 1 taken, 0 not. The pool
 * may go as far as `floor` below zero (workers' extensions, within the
 * overdraft the agent allows); after the lease's end only that overdraft
 * is left (what the pool still holds goes back to Redis). */
static int pool_take(struct gw_cluster_gpu *g, uint64_t x, uint64_t now_us, uint64_t floor)
{
    /* acquire: pairs with the agent's release add in gw_cluster_gpu_grant,
     * so the end read below is the one those GPU-us came with (or later) */
    int64_t t = atomic_load_explicit(&g->tokens, memory_order_acquire);
    /* relaxed: ordered after the acquire above */
    uint64_t end = atomic_load_explicit(&g->expires_us, memory_order_relaxed);
    if (x > (1ull << 62) || floor > (1ull << 62))
        return 0;
    for (;;) {
        int64_t base = now_us < end ? t : (t < 0 ? t : 0); /* usable */
        if (base - (int64_t)x < -(int64_t)floor || (now_us >= end && t > 0))
            return 0;
        /* acquire on success, as the load */
        if (atomic_compare_exchange_weak_explicit(&g->tokens, &t, t - (int64_t)x,
                                                  memory_order_acquire, memory_order_acquire))
            return 1;
    }
}

int gw_cluster_gpu_take(struct gw_segment *seg, struct gw_acct a, uint64_t x, uint64_t now_us,
                        uint64_t *retry_us)
{
    struct gw_cluster_gpu *g = gpu_of(seg, a);
    if (!g)
        return GW_CL_UNAVAILABLE;
    /* no note of the account here (the hot path): only a want or a
     * fail-open admission brings GPU-us into the cell, and both note it */
    if (pool_take(g, x, now_us, 0))
        return GW_CL_TAKEN;
    /* relaxed: a hint, as the rate cell's */
    uint64_t deny = atomic_load_explicit(&g->deny_until, memory_order_relaxed);
    if (deny > now_us) {
        *retry_us = deny - now_us;
        return GW_CL_DENIED;
    }
    /* relaxed: the agent's view of Redis, read on its own */
    if (atomic_load_explicit(&seg->cluster->state, memory_order_relaxed) == GW_CL_DOWN)
        return GW_CL_UNAVAILABLE;
    return GW_CL_WAIT;
}

void gw_cluster_gpu_put(struct gw_segment *seg, struct gw_acct a, uint64_t x)
{
    struct gw_cluster_gpu *g = gpu_of(seg, a);
    if (g && x && x < (1ull << 62))
        /* relaxed: a count; an end that passed meanwhile makes the agent
         * give these back or keep them for the next lease (cluster.c) */
        atomic_fetch_add_explicit(&g->tokens, (int64_t)x, memory_order_relaxed);
}

void gw_cluster_gpu_want(struct gw_segment *seg, struct gw_acct a, uint64_t x, int sign)
{
    struct gw_cluster_gpu *g = gpu_of(seg, a);
    if (!g)
        return;
    if (sign > 0) {
        gw__cluster_note(gw__cluster_cell_of(seg, a), a);
        /* relaxed: published by the release bump in gw__cluster_wake */
        atomic_fetch_add_explicit(&g->want, x, memory_order_relaxed);
        gw__cluster_wake(seg);
        return;
    }
    /* relaxed: a count read on its own; never below zero */
    uint64_t w = atomic_load_explicit(&g->want, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&g->want, &w, w > x ? w - x : 0,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

int gw_cluster_gpu_bind(struct gw_segment *seg, struct gw_slot_ref ref, int global)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || SS_LANE(w) != seg->lane)
        return GW_ESTATE;
    /* relaxed: the slot's later transitions (release) publish it to the
     * worker and the settler, who acquire the state word */
    atomic_fetch_or_explicit(&s->flags, global ? SLOT_FARM_GGPU : SLOT_FARM_GPU,
                             memory_order_relaxed);
    return 0;
}

int gw_cluster_gpu_open_admit(struct gw_segment *seg, struct gw_acct a,
                              const struct gw_budget_rate *b, uint64_t x, uint64_t now_us,
                              uint64_t *retry_us)
{
    struct gw_cluster_gpu *g = gpu_of(seg, a);
    /* relaxed: a figure read on its own */
    uint64_t live = atomic_load_explicit(&seg->cluster->live_nodes, memory_order_relaxed);
    struct gw_budget_rate share = {.amount_us = b->amount_us / (live ? live : 1),
                                   .period_us = b->period_us};
    if (!g || share.amount_us == 0 || share.period_us == 0) {
        *retry_us = 1000000;
        return GW_EREFUSED;
    }
    /* the weighted GCRA of budget.c: x costs x * period / share of time,
     * and passes while the cell stays within one period of now */
    uint64_t cost = gw__budget_cost(&share, x);
    /* relaxed: the cell is self-contained; the CAS makes it atomic */
    uint64_t tat = atomic_load_explicit(&g->open_tat, memory_order_relaxed);
    for (;;) {
        uint64_t base = tat > now_us ? tat : now_us, nt = base + cost;
        if (nt - now_us > share.period_us) {
            *retry_us = nt - now_us - share.period_us;
            return GW_EREFUSED;
        }
        if (atomic_compare_exchange_weak_explicit(&g->open_tat, &tat, nt, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    gw__cluster_note(gw__cluster_cell_of(seg, a), a);
    /* relaxed: counted; the agent drains it on its own */
    atomic_fetch_add_explicit(&g->open_spent, x, memory_order_relaxed);
    gw_cluster_count(seg, GW_CLC_GPU_OPEN_US, x);
    return 0;
}

int gw__cluster_gpu_extend(struct gw_segment *seg, struct gw_acct tenant, uint64_t x,
                           uint64_t now_us)
{
    struct gw_cluster_gpu *g = gpu_of(seg, tenant);
    if (!g)
        return GW_EREFUSED;
    if (pool_take(g, x, now_us, 0))
        return 0;
    /* relaxed: a bound the agent sets at each grant, read on its own */
    uint64_t od = atomic_load_explicit(&g->overdraft, memory_order_relaxed);
    int ok = pool_take(g, x, now_us, od);
    /* relaxed: a hint (a lease is wanted: the pool is overdrawn or short);
     * the wake's release bump makes the agent look */
    atomic_fetch_add_explicit(&g->shortfall, x, memory_order_relaxed);
    gw_cluster_count(seg, ok ? GW_CLC_GPU_OVERDRAWN : GW_CLC_GPU_SHORT, ok ? x : 1);
    gw__cluster_wake(seg); /* a debt or a shortfall: the agent takes a lease */
    return ok ? 0 : GW_EREFUSED;
}

void gw__cluster_gpu_refund(struct gw_segment *seg, struct gw_acct tenant, uint64_t x)
{
    gw_cluster_gpu_put(seg, tenant, x);
}

/* ---------------------------------------------------------- the agent's side */

int gw_cluster_gpu_cell(const struct gw_segment *seg, uint32_t i, struct gw_cl_gpu *out)
{
    if (i >= seg->cfg.budgets)
        return -EINVAL;
    struct gw_cluster_gpu *g = &seg->cl_gpu[i];
    /* relaxed: counters read on their own; the account is the rate cell's
     * (acquired in gw_cluster_cell) */
    out->tokens = atomic_load_explicit(&g->tokens, memory_order_relaxed);
    out->expires_us = atomic_load_explicit(&g->expires_us, memory_order_relaxed);
    out->want = atomic_load_explicit(&g->want, memory_order_relaxed);
    out->deny_until = atomic_load_explicit(&g->deny_until, memory_order_relaxed);
    out->open_spent = atomic_load_explicit(&g->open_spent, memory_order_relaxed);
    out->granted = atomic_load_explicit(&g->granted, memory_order_relaxed);
    out->shortfall = atomic_load_explicit(&g->shortfall, memory_order_relaxed);
    out->overdraft = atomic_load_explicit(&g->overdraft, memory_order_relaxed);
    return 0;
}

void gw_cluster_gpu_grant(struct gw_segment *seg, uint32_t i, uint64_t x, uint64_t expires_us,
                          uint64_t overdraft_us)
{
    struct gw_cluster_gpu *g = &seg->cl_gpu[i];
    /* relaxed stores, published by the release add of the GPU-us below */
    atomic_store_explicit(&g->expires_us, expires_us, memory_order_relaxed);
    atomic_store_explicit(&g->deny_until, 0, memory_order_relaxed);
    atomic_store_explicit(&g->overdraft, overdraft_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->granted, x, memory_order_relaxed);
    /* an overdrawn pool pays its debt first: the add does both */
    atomic_fetch_add_explicit(&g->tokens, (int64_t)x, memory_order_release);
}

uint64_t gw_cluster_gpu_reclaim(struct gw_segment *seg, uint32_t i)
{
    _Atomic int64_t *w = &seg->cl_gpu[i].tokens;
    /* relaxed: the CAS below decides */
    int64_t t = atomic_load_explicit(w, memory_order_relaxed);
    /* acq_rel: the CAS races the fronts' and workers' CAS and the settlers'
     * refunds; whatever it removes nobody took. A debt stays. */
    while (t > 0 && !atomic_compare_exchange_weak_explicit(w, &t, 0, memory_order_acq_rel,
                                                           memory_order_relaxed))
        ;
    return t > 0 ? (uint64_t)t : 0;
}

void gw_cluster_gpu_deny(struct gw_segment *seg, uint32_t i, uint64_t until_us)
{
    /* relaxed: a hint read on its own (gw_cluster_gpu_take) */
    atomic_store_explicit(&seg->cl_gpu[i].deny_until, until_us, memory_order_relaxed);
}

uint64_t gw_cluster_gpu_open_drain(struct gw_segment *seg, uint32_t i)
{
    /* relaxed: a count; the exchange keeps every GPU-us counted once */
    return atomic_exchange_explicit(&seg->cl_gpu[i].open_spent, 0, memory_order_relaxed);
}

void gw_cluster_gpu_open_undrain(struct gw_segment *seg, uint32_t i, uint64_t n)
{
    /* relaxed: as gw_cluster_gpu_open_drain */
    atomic_fetch_add_explicit(&seg->cl_gpu[i].open_spent, n, memory_order_relaxed);
}

uint64_t gw_cluster_gpu_shortfall(struct gw_segment *seg, uint32_t i)
{
    /* relaxed: a hint; the exchange reads and clears it at once */
    return atomic_exchange_explicit(&seg->cl_gpu[i].shortfall, 0, memory_order_relaxed);
}

void gw_cluster_gpu_want_reset(struct gw_segment *seg, uint32_t i, uint64_t seen)
{
    /* relaxed: a count read on its own; the CAS keeps a request that
     * parked since */
    atomic_compare_exchange_strong_explicit(&seg->cl_gpu[i].want, &seen, 0, memory_order_relaxed,
                                            memory_order_relaxed);
}
