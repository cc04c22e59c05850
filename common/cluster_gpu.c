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
 * The pool's words and what works on them are the output-token cell's too
 * (cluster_lease.c); the overdraft (gw__lease_take's floor), the shortfall
 * hint, the fail-open budget cell and the slot's binding are this file's.
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

int gw_cluster_gpu_take(struct gw_segment *seg, struct gw_acct a, uint64_t x, uint64_t now_us,
                        uint64_t *retry_us)
{
    struct gw_cluster_gpu *g = gpu_of(seg, a);
    if (!g)
        return GW_CL_UNAVAILABLE;
    /* no note of the account here (the hot path): only a want or a
     * fail-open admission brings GPU-us into the cell, and both note it */
    return gw__lease_admit(seg, &g->lease, x, now_us, retry_us);
}

void gw_cluster_gpu_put(struct gw_segment *seg, struct gw_acct a, uint64_t x)
{
    struct gw_cluster_gpu *g = gpu_of(seg, a);
    if (g)
        gw__lease_put(&g->lease, x);
}

void gw_cluster_gpu_want(struct gw_segment *seg, struct gw_acct a, uint64_t x, int sign)
{
    struct gw_cluster_gpu *g = gpu_of(seg, a);
    if (g)
        gw__lease_want(seg, &g->lease, a, x, sign);
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
    uint64_t tat = atomic_load_explicit(&g->lease.open_tat, memory_order_relaxed);
    for (;;) {
        uint64_t base = tat > now_us ? tat : now_us, nt = base + cost;
        if (nt - now_us > share.period_us) {
            *retry_us = nt - now_us - share.period_us;
            return GW_EREFUSED;
        }
        if (atomic_compare_exchange_weak_explicit(&g->lease.open_tat, &tat, nt,
                                                  memory_order_relaxed, memory_order_relaxed))
            break;
    }
    gw__cluster_note(gw__cluster_cell_of(seg, a), a);
    /* relaxed: counted; the agent drains it on its own */
    atomic_fetch_add_explicit(&g->lease.open_spent, x, memory_order_relaxed);
    gw_cluster_count(seg, GW_CLC_GPU_OPEN_US, x);
    return 0;
}

int gw__cluster_gpu_extend(struct gw_segment *seg, struct gw_acct tenant, uint64_t x,
                           uint64_t now_us)
{
    struct gw_cluster_gpu *g = gpu_of(seg, tenant);
    if (!g)
        return GW_EREFUSED;
    if (gw__lease_take(&g->lease, x, now_us, 0))
        return 0;
    /* relaxed: a bound the agent sets at each grant, read on its own */
    uint64_t od = atomic_load_explicit(&g->overdraft, memory_order_relaxed);
    int ok = gw__lease_take(&g->lease, x, now_us, od); /* within the overdraft */
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
    out->tokens = atomic_load_explicit(&g->lease.tokens, memory_order_relaxed);
    out->expires_us = atomic_load_explicit(&g->lease.expires_us, memory_order_relaxed);
    out->want = atomic_load_explicit(&g->lease.want, memory_order_relaxed);
    out->deny_until = atomic_load_explicit(&g->lease.deny_until, memory_order_relaxed);
    out->open_spent = atomic_load_explicit(&g->lease.open_spent, memory_order_relaxed);
    out->granted = atomic_load_explicit(&g->lease.granted, memory_order_relaxed);
    out->shortfall = atomic_load_explicit(&g->shortfall, memory_order_relaxed);
    out->overdraft = atomic_load_explicit(&g->overdraft, memory_order_relaxed);
    return 0;
}

void gw_cluster_gpu_grant(struct gw_segment *seg, uint32_t i, uint64_t x, uint64_t expires_us,
                          uint64_t overdraft_us)
{
    struct gw_cluster_gpu *g = &seg->cl_gpu[i];
    /* relaxed: published with the grant by its release add of the GPU-us
     * (gw__lease_grant) */
    atomic_store_explicit(&g->overdraft, overdraft_us, memory_order_relaxed);
    gw__lease_grant(&g->lease, x, expires_us);
}

uint64_t gw_cluster_gpu_reclaim(struct gw_segment *seg, uint32_t i)
{
    return gw__lease_reclaim(&seg->cl_gpu[i].lease);
}

void gw_cluster_gpu_deny(struct gw_segment *seg, uint32_t i, uint64_t until_us)
{
    gw__lease_deny(&seg->cl_gpu[i].lease, until_us);
}

uint64_t gw_cluster_gpu_open_drain(struct gw_segment *seg, uint32_t i)
{
    return gw__lease_open_drain(&seg->cl_gpu[i].lease);
}

void gw_cluster_gpu_open_undrain(struct gw_segment *seg, uint32_t i, uint64_t n)
{
    gw__lease_open_undrain(&seg->cl_gpu[i].lease, n);
}

uint64_t gw_cluster_gpu_shortfall(struct gw_segment *seg, uint32_t i)
{
    /* relaxed: a hint; the exchange reads and clears it at once */
    return atomic_exchange_explicit(&seg->cl_gpu[i].shortfall, 0, memory_order_relaxed);
}

void gw_cluster_gpu_want_reset(struct gw_segment *seg, uint32_t i, uint64_t seen)
{
    gw__lease_want_reset(&seg->cl_gpu[i].lease, seen);
}
