/* cluster_out.c - this node's side of the farm's output-token windows (a
 * plan's `output_tokens`): the segment's output lease cells
 * (docs/ARCHITECTURE.md, "The farm").
 *
 * One cell per tenant budget record, in its own region (layout 14). `tokens`
 * is a pool of farm-wide output tokens the cluster agent took from Redis.
 * Output tokens are known only as they are generated, so the pool works as
 * the local window does (farm.c: admitted while at least one token is
 * left, charged at the request's end), with the GPU lease's debt
 * (cluster_gpu.c): a front admitting a request takes one token from the
 * pool (one CAS), the request's "at least one left"; at the request's end
 * the front charges the n - 1 more it generated (gw_cluster_out_settle),
 * which may take the pool below 0. A pool at or below 0 admits nobody: the
 * next grant pays the debt first. So every output token charged on this
 * node came out of a lease, or is part of a debt of at most what the
 * requests running when the pool was last positive generated beyond their
 * first token (the bound: at most C x (max_tokens - 1) for C requests of
 * the tenant running at once on the node).
 * The pool's words and what works on them are the GPU cell's too
 * (cluster_lease.c); the charge at a request's end (the debt), the
 * `charged` count and the fail-open window cell are this file's.
 *
 * Who repairs what: nothing here needs the master's repair. Every word is
 * changed by one atomic operation, so a process killed anywhere leaves
 * each word before or after its change:
 *  - a front killed between its take and queueing the request loses that
 *    token (under-admission by one);
 *  - a front killed before a job's end never charges what the request
 *    generated (as the local window: farm.c), in the tenant's favour: the
 *    bound counts those requests' tokens apart;
 *  - `want` left by a dead front: the agent takes a lease nobody uses and
 *    drops the count when it ends unused (as for the rate cells).
 */
#include "seg_internal.h"

#include <errno.h>

static struct gw_cluster_out *out_of(const struct gw_segment *seg, struct gw_acct a)
{
    struct gw_cluster_cell *c = gw__cluster_cell_of(seg, a);
    return c ? &seg->cl_out[c - seg->cl_cells] : NULL;
}

int gw_cluster_out_take(struct gw_segment *seg, struct gw_acct a, uint64_t now_us,
                        uint64_t *retry_us)
{
    struct gw_cluster_out *o = out_of(seg, a);
    if (!o)
        return GW_CL_UNAVAILABLE;
    /* one token, while the lease lasts and the pool holds one (floor 0) */
    int rc = gw__lease_admit(seg, &o->lease, 1, now_us, retry_us);
    if (rc == GW_CL_TAKEN)
        /* relaxed: a count read on its own (the agent's demand figure) */
        atomic_fetch_add_explicit(&o->charged, 1, memory_order_relaxed);
    return rc;
}

void gw_cluster_out_settle(struct gw_segment *seg, struct gw_acct a, uint64_t n)
{
    struct gw_cluster_out *o = out_of(seg, a);
    if (!o || n > (1ull << 40))
        return;
    if (n == 0) {
        /* the admission's token unused: back to the pool (an end that
         * passed meanwhile makes the agent keep it for the next lease) */
        gw__lease_put(&o->lease, 1);
        /* relaxed: a count; nothing is published through it */
        atomic_fetch_sub_explicit(&o->charged, 1, memory_order_relaxed);
        return;
    }
    if (n == 1)
        return;
    /* relaxed: a count; whatever the pool holds, the charge lands (a debt
     * below 0 when it held less: the agent pays it from its next grant) */
    int64_t before =
        atomic_fetch_sub_explicit(&o->lease.tokens, (int64_t)(n - 1), memory_order_relaxed);
    /* relaxed: a count read on its own */
    atomic_fetch_add_explicit(&o->charged, n - 1, memory_order_relaxed);
    int64_t after = before - (int64_t)(n - 1);
    if (after < 0) {
        uint64_t over = before > 0 ? (uint64_t)-after : n - 1;
        gw_cluster_count(seg, GW_CLC_OUT_OVERRUN, over);
    }
}

void gw_cluster_out_want(struct gw_segment *seg, struct gw_acct a, int delta)
{
    struct gw_cluster_out *o = out_of(seg, a);
    if (o) /* one request */
        gw__lease_want(seg, &o->lease, a, 1, delta);
}

/* us of the fail-open cell that `tokens` cost under the share (limit per
 * period), rounded up: farm.c's cost. */
static uint64_t share_cost(uint64_t limit, uint64_t period_us, uint64_t tokens)
{
    unsigned __int128 x = (unsigned __int128)tokens * period_us + limit - 1;
    x /= limit;
    return x > UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)x;
}

/* The node's share of w while Redis is away: limit and burst / live nodes. */
static void share_of(const struct gw_segment *seg, const struct gw_window *w, uint64_t *limit,
                     uint64_t *burst)
{
    /* relaxed: a figure read on its own */
    uint64_t live = atomic_load_explicit(&seg->cluster->live_nodes, memory_order_relaxed);
    if (live == 0)
        live = 1;
    *limit = w->limit / live ? w->limit / live : 1;
    *burst = w->burst / live;
}

int gw_cluster_out_open_admit(struct gw_segment *seg, struct gw_acct a, const struct gw_window *w,
                              uint64_t now_us, uint64_t *retry_us)
{
    struct gw_cluster_out *o = out_of(seg, a);
    if (!o || !w->limit || !w->period_us) {
        *retry_us = 1000000;
        return GW_EREFUSED;
    }
    uint64_t lim, burst;
    share_of(seg, w, &lim, &burst);
    uint64_t one = share_cost(lim, w->period_us, 1),
             tau = share_cost(lim, w->period_us, lim + burst);
    /* relaxed: the cell is self-contained; the CAS makes it atomic */
    uint64_t tat = atomic_load_explicit(&o->lease.open_tat, memory_order_relaxed);
    for (;;) {
        uint64_t base = tat > now_us ? tat : now_us;
        if (base + one > now_us + tau) {
            *retry_us = base + one - now_us - tau;
            return GW_EREFUSED;
        }
        if (atomic_compare_exchange_weak_explicit(&o->lease.open_tat, &tat, base + one,
                                                  memory_order_relaxed, memory_order_relaxed))
            break;
    }
    gw__cluster_note(gw__cluster_cell_of(seg, a), a);
    return 0;
}

void gw_cluster_out_open_settle(struct gw_segment *seg, struct gw_acct a, const struct gw_window *w,
                                uint64_t n, uint64_t now_us)
{
    struct gw_cluster_out *o = out_of(seg, a);
    if (!o || !w->limit || !w->period_us || n > (1ull << 40))
        return;
    if (n > 1) {
        uint64_t lim, burst;
        share_of(seg, w, &lim, &burst);
        uint64_t cost = share_cost(lim, w->period_us, n - 1);
        /* relaxed: as in gw_cluster_out_open_admit */
        uint64_t tat = atomic_load_explicit(&o->lease.open_tat, memory_order_relaxed);
        for (;;) {
            uint64_t base = tat > now_us ? tat : now_us;
            if (atomic_compare_exchange_weak_explicit(&o->lease.open_tat, &tat, base + cost,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        }
    }
    /* relaxed: counted; the agent drains it on its own */
    atomic_fetch_add_explicit(&o->lease.open_spent, n, memory_order_relaxed);
    gw_cluster_count(seg, GW_CLC_OUT_OPEN, n);
    if (n)
        gw__cluster_wake(seg); /* the agent reconciles it when Redis is back */
}

/* ---------------------------------------------------------- the agent's side */

int gw_cluster_out_cell(const struct gw_segment *seg, uint32_t i, struct gw_cl_out *out)
{
    if (i >= seg->cfg.budgets)
        return -EINVAL;
    struct gw_cluster_out *o = &seg->cl_out[i];
    /* relaxed: counters read on their own; the account is the rate cell's
     * (acquired in gw_cluster_cell) */
    out->tokens = atomic_load_explicit(&o->lease.tokens, memory_order_relaxed);
    out->expires_us = atomic_load_explicit(&o->lease.expires_us, memory_order_relaxed);
    out->want = atomic_load_explicit(&o->lease.want, memory_order_relaxed);
    out->deny_until = atomic_load_explicit(&o->lease.deny_until, memory_order_relaxed);
    out->open_spent = atomic_load_explicit(&o->lease.open_spent, memory_order_relaxed);
    out->granted = atomic_load_explicit(&o->lease.granted, memory_order_relaxed);
    out->charged = atomic_load_explicit(&o->charged, memory_order_relaxed);
    return 0;
}

void gw_cluster_out_grant(struct gw_segment *seg, uint32_t i, uint64_t x, uint64_t expires_us)
{
    gw__lease_grant(&seg->cl_out[i].lease, x, expires_us);
}

uint64_t gw_cluster_out_reclaim(struct gw_segment *seg, uint32_t i)
{
    return gw__lease_reclaim(&seg->cl_out[i].lease);
}

void gw_cluster_out_deny(struct gw_segment *seg, uint32_t i, uint64_t until_us)
{
    gw__lease_deny(&seg->cl_out[i].lease, until_us);
}

uint64_t gw_cluster_out_open_drain(struct gw_segment *seg, uint32_t i)
{
    return gw__lease_open_drain(&seg->cl_out[i].lease);
}

void gw_cluster_out_open_undrain(struct gw_segment *seg, uint32_t i, uint64_t n)
{
    gw__lease_open_undrain(&seg->cl_out[i].lease, n);
}

void gw_cluster_out_want_reset(struct gw_segment *seg, uint32_t i, uint64_t seen)
{
    gw__lease_want_reset(&seg->cl_out[i].lease, seen);
}
