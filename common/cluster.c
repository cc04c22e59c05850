/* cluster.c - this node's side of the farm's shared budgets: the cluster
 * region of the segment (docs/ARCHITECTURE.md, "The farm").
 *
 * One cell per tenant budget record. The cluster agent (the only process
 * that talks to Redis) adds the request tokens of a lease to `tokens` and
 * sets its end; fronts take one token per request by CAS, never waiting.
 * A front that finds the lease empty bumps `want` and the demand futex and
 * parks the request; the agent takes a lease sized to the demand and wakes
 * the fronts.
 *
 * Who repairs what: nothing here needs the master's repair. Every word is
 * changed by one atomic operation, so a process killed anywhere leaves each
 * word either before or after its change:
 *  - a front killed between taking a token and queueing its request loses
 *    that token (under-admission by one; the farm's bound holds);
 *  - `want` left too high by a dead front makes the agent take one lease
 *    that nobody uses; when it ends unused the agent gives it back and
 *    drops the count (gw_cluster_want_reset);
 *  - the agent killed with a lease in the cell: the master restarts it, and
 *    the new agent finds the tokens there with their end; Redis expires the
 *    lease record after its TTL, later than the node stops using it.
 */
#include "seg_internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct gw_cluster_cell *gw__cluster_cell_of(const struct gw_segment *seg, struct gw_acct a)
{
    if (a.index >= seg->cfg.accounts)
        return NULL;
    /* relaxed: budget_idx is written before the account's tag is
     * published, and the caller got `a` through that tag (acquire). */
    uint32_t b = atomic_load_explicit(&seg->accounts[a.index].budget_idx, memory_order_relaxed);
    return b < seg->cfg.budgets ? &seg->cl_cells[b] : NULL;
}

int gw_cluster_take(struct gw_segment *seg, struct gw_acct a, uint64_t now_us, uint64_t *retry_us)
{
    struct gw_cluster_cell *c = gw__cluster_cell_of(seg, a);
    if (!c)
        return GW_CL_UNAVAILABLE;
    /* acquire: pairs with the agent's release add in gw_cluster_grant, so
     * the lease end read below is the one those tokens came with (or a
     * later one: ends only move forward while tokens remain). */
    uint64_t t = atomic_load_explicit(&c->tokens, memory_order_acquire);
    /* relaxed: ordered after the acquire above */
    uint64_t end = atomic_load_explicit(&c->expires_us, memory_order_relaxed);
    while (t > 0 && now_us < end) {
        /* acquire on success for the same reason as the load */
        if (atomic_compare_exchange_weak_explicit(&c->tokens, &t, t - 1, memory_order_acquire,
                                                  memory_order_acquire))
            return GW_CL_TAKEN;
    }
    return gw__cluster_refusal(seg, &c->deny_until, now_us, retry_us);
}

int gw__cluster_refusal(const struct gw_segment *seg, _Atomic uint64_t *deny_until, uint64_t now_us,
                        uint64_t *retry_us)
{
    /* relaxed: a hint; a stale value errs toward one more round trip or
     * one more refusal within the window Redis already named */
    uint64_t deny = atomic_load_explicit(deny_until, memory_order_relaxed);
    if (deny > now_us) {
        *retry_us = deny - now_us;
        return GW_CL_DENIED;
    }
    /* relaxed: the agent's view of Redis, read on its own */
    if (atomic_load_explicit(&seg->cluster->state, memory_order_relaxed) == GW_CL_DOWN)
        return GW_CL_UNAVAILABLE;
    return GW_CL_WAIT;
}

static long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    /* not FUTEX_PRIVATE_FLAG: the word is in a shared file mapping */
    return syscall(SYS_futex, (uint32_t *)w, op, val, ts, NULL, 0);
}

void gw__cluster_wake(struct gw_segment *seg)
{
    /* release: pairs with the agent's acquire (gw_cluster_demand), so the
     * counts written before are seen when it looks */
    atomic_fetch_add_explicit(&seg->cluster->demand, 1, memory_order_release);
    futex(&seg->cluster->demand, FUTEX_WAKE, INT_MAX, NULL);
}

void gw_cluster_want(struct gw_segment *seg, struct gw_acct a, int delta)
{
    struct gw_cluster_cell *c = gw__cluster_cell_of(seg, a);
    if (!c)
        return;
    if (delta > 0) {
        gw__cluster_note(c, a);
        /* relaxed: a count the agent reads on its own; the demand bump
         * below (release, paired with the agent's acquire) makes it look */
        atomic_fetch_add_explicit(&c->want, 1, memory_order_relaxed);
        gw__cluster_wake(seg);
    } else {
        /* relaxed: a count read on its own; never below zero */
        uint64_t w = atomic_load_explicit(&c->want, memory_order_relaxed);
        while (w > 0 && !atomic_compare_exchange_weak_explicit(
                            &c->want, &w, w - 1, memory_order_relaxed, memory_order_relaxed))
            ;
    }
}

void gw__cluster_note(struct gw_cluster_cell *c, struct gw_acct a)
{
    /* release: pairs with the agent's acquire in gw_cluster_cell; what it
     * then reads of the cell are counters read on their own */
    atomic_store_explicit(&c->account, ((uint64_t)a.index << 8) | a.gen | (1ull << 40),
                          memory_order_release);
}

/* One GCRA step on a bare cell (no generation: the cluster cells belong to
 * tenant accounts, which are never reclaimed). */
static int gcra_take(_Atomic uint64_t *cell, const struct gw_rate *r, uint64_t now, uint64_t *retry)
{
    /* relaxed: the cell is self-contained; the CAS makes it atomic */
    uint64_t tat = atomic_load_explicit(cell, memory_order_relaxed);
    for (;;) {
        uint64_t base = tat > now ? tat : now;
        if (base - now > r->tolerance_us) {
            *retry = base - now - r->tolerance_us;
            return GW_EREFUSED;
        }
        if (atomic_compare_exchange_weak_explicit(cell, &tat, base + r->interval_us,
                                                  memory_order_relaxed, memory_order_relaxed))
            return 0;
    }
}

int gw_cluster_open_admit(struct gw_segment *seg, struct gw_acct a, const struct gw_plan *p,
                          uint64_t now_us, uint64_t *retry_us)
{
    struct gw_cluster_cell *c = gw__cluster_cell_of(seg, a);
    if (!c) {
        *retry_us = 1000000;
        return GW_EREFUSED;
    }
    /* relaxed: a figure read on its own */
    uint64_t live = atomic_load_explicit(&seg->cluster->live_nodes, memory_order_relaxed);
    if (live == 0)
        live = 1;
    /* Window by window; a refusal after an earlier window passed leaves that
     * one charged (fail-open errs toward refusing, never past the share). */
    for (int i = 0; i < p->n_windows && i < GW_RATE_CELLS; i++) {
        uint64_t lim = p->windows[i].limit / live, burst = p->windows[i].burst / live;
        struct gw_rate r;
        if (gw_rate_make(&r, lim ? lim : 1, p->windows[i].period_us, burst) != 0 ||
            gcra_take(&c->open_tat[i], &r, now_us, retry_us) != 0)
            return GW_EREFUSED;
    }
    gw__cluster_note(c, a);
    /* relaxed: counted; the agent drains it on its own */
    atomic_fetch_add_explicit(&c->open_spent, 1, memory_order_relaxed);
    gw_cluster_count(seg, GW_CLC_OPEN_ADMITS, 1);
    return 0;
}

int gw_cluster_cell(const struct gw_segment *seg, uint32_t i, struct gw_cl_cell *out)
{
    if (i >= seg->cfg.budgets)
        return -EINVAL;
    struct gw_cluster_cell *c = &seg->cl_cells[i];
    /* acquire: pairs with a front's release bump of the demand word after
     * it set the account (gw_cluster_want); the rest are read on their own */
    uint64_t acc = atomic_load_explicit(&c->account, memory_order_acquire);
    if (!(acc & (1ull << 40)))
        return -ENOENT;
    out->acct.index = (uint32_t)((acc >> 8) & 0xffffffffu);
    out->acct.gen = (uint8_t)(acc & 0xff);
    out->tokens = atomic_load_explicit(&c->tokens, memory_order_relaxed);
    out->expires_us = atomic_load_explicit(&c->expires_us, memory_order_relaxed);
    out->want = atomic_load_explicit(&c->want, memory_order_relaxed);
    out->deny_until = atomic_load_explicit(&c->deny_until, memory_order_relaxed);
    out->open_spent = atomic_load_explicit(&c->open_spent, memory_order_relaxed);
    out->granted = atomic_load_explicit(&c->granted, memory_order_relaxed);
    return 0;
}

void gw_cluster_grant(struct gw_segment *seg, uint32_t i, uint64_t k, uint64_t expires_us)
{
    struct gw_cluster_cell *c = &seg->cl_cells[i];
    /* relaxed stores, published by the release add of the tokens below */
    atomic_store_explicit(&c->expires_us, expires_us, memory_order_relaxed);
    atomic_store_explicit(&c->deny_until, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->granted, k, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->tokens, k, memory_order_release);
}

uint64_t gw_cluster_reclaim(struct gw_segment *seg, uint32_t i)
{
    /* acq_rel: the exchange races the fronts' CAS; whatever it removes no
     * front took */
    return atomic_exchange_explicit(&seg->cl_cells[i].tokens, 0, memory_order_acq_rel);
}

void gw_cluster_deny(struct gw_segment *seg, uint32_t i, uint64_t until_us)
{
    /* relaxed: a hint read on its own (gw_cluster_take) */
    atomic_store_explicit(&seg->cl_cells[i].deny_until, until_us, memory_order_relaxed);
}

uint64_t gw_cluster_open_drain(struct gw_segment *seg, uint32_t i)
{
    /* relaxed: a count; the exchange keeps every admission counted once */
    return atomic_exchange_explicit(&seg->cl_cells[i].open_spent, 0, memory_order_relaxed);
}

void gw_cluster_want_reset(struct gw_segment *seg, uint32_t i, uint64_t seen)
{
    /* relaxed: a count read on its own; the CAS keeps a request that
     * parked since (its +1) */
    atomic_compare_exchange_strong_explicit(&seg->cl_cells[i].want, &seen, 0, memory_order_relaxed,
                                            memory_order_relaxed);
}

void gw_cluster_open_undrain(struct gw_segment *seg, uint32_t i, uint64_t n)
{
    /* relaxed: as gw_cluster_open_drain */
    atomic_fetch_add_explicit(&seg->cl_cells[i].open_spent, n, memory_order_relaxed);
}

uint32_t gw_cluster_demand(const struct gw_segment *seg)
{
    /* acquire: pairs with the fronts' release bump (gw_cluster_want) */
    return atomic_load_explicit(&seg->cluster->demand, memory_order_acquire);
}

int gw_cluster_wait_demand(struct gw_segment *seg, uint32_t seen, uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    if (futex(&seg->cluster->demand, FUTEX_WAIT, seen, &ts) == 0)
        return 0;
    return errno == EAGAIN ? 0 : -errno;
}

void gw_cluster_set_state(struct gw_segment *seg, int state, uint64_t live_nodes, uint64_t now_us)
{
    struct gw_cluster_area *a = seg->cluster;
    /* relaxed: each word is read on its own, for decisions that tolerate a
     * moment's staleness (the fail mode, the fair share) and for display */
    if (atomic_load_explicit(&a->state, memory_order_relaxed) != (uint64_t)state) {
        atomic_store_explicit(&a->since_us, now_us, memory_order_relaxed);
        atomic_store_explicit(&a->state, (uint64_t)state, memory_order_relaxed);
    }
    if (live_nodes)
        atomic_store_explicit(&a->live_nodes, live_nodes, memory_order_relaxed);
}

void gw_cluster_count(struct gw_segment *seg, int counter, uint64_t n)
{
    if (counter >= 0 && counter < GW_CLC_COUNT)
        /* relaxed: a statistic */
        atomic_fetch_add_explicit(&seg->cluster->counters[counter], n, memory_order_relaxed);
}

void gw_cluster_status(const struct gw_segment *seg, struct gw_cl_status *out)
{
    const struct gw_cluster_area *a = seg->cluster;
    /* relaxed: a display of independent words */
    out->state = (int)atomic_load_explicit(&a->state, memory_order_relaxed);
    out->since_us = atomic_load_explicit(&a->since_us, memory_order_relaxed);
    out->live_nodes = atomic_load_explicit(&a->live_nodes, memory_order_relaxed);
    for (int i = 0; i < GW_CLC_COUNT; i++)
        out->counters[i] = atomic_load_explicit(&a->counters[i], memory_order_relaxed);
}

const char *gw_cluster_state_name(int state)
{
    return state == GW_CL_UP ? "up" : state == GW_CL_DOWN ? "down" : "connecting";
}

void gw_cluster_set_peers(struct gw_segment *seg, const char *names, uint64_t count)
{
    struct gw_cl_peers *p = seg->cl_peers;
    char buf[8 * GW_CL_PEER_WORDS] = {0};
    size_t n = strlen(names);
    memcpy(buf, names, n < sizeof(buf) - 1 ? n : sizeof(buf) - 1);
    /* relaxed: the agent is the only writer */
    uint64_t s = atomic_load_explicit(&p->seq, memory_order_relaxed);
    /* relaxed store, then a release fence: a reader that sees any word
     * below also sees the odd sequence (seqlock writer side) */
    atomic_store_explicit(&p->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (int i = 0; i < GW_CL_PEER_WORDS; i++) {
        uint64_t w;
        memcpy(&w, buf + 8 * i, 8);
        /* relaxed: ordered by the fence above and the release below */
        atomic_store_explicit(&p->words[i], w, memory_order_relaxed);
    }
    atomic_store_explicit(&p->count, count, memory_order_relaxed);
    /* release: the words above before the even sequence */
    atomic_store_explicit(&p->seq, s + 2, memory_order_release);
}

int gw_cluster_peers(const struct gw_segment *seg, char *out, size_t len)
{
    const struct gw_cl_peers *p = seg->cl_peers;
    char buf[8 * GW_CL_PEER_WORDS + 1];
    for (int attempt = 0; attempt < 16; attempt++) {
        /* acquire: pairs with the writer's final release */
        uint64_t s0 = atomic_load_explicit(&p->seq, memory_order_acquire);
        if (s0 & 1)
            continue;
        for (int i = 0; i < GW_CL_PEER_WORDS; i++) {
            /* relaxed: checked against the sequence below */
            uint64_t w = atomic_load_explicit(&p->words[i], memory_order_relaxed);
            memcpy(buf + 8 * i, &w, 8);
        }
        uint64_t count = atomic_load_explicit(&p->count, memory_order_relaxed);
        /* acquire fence: the loads above before the second sequence load
         * (seqlock reader side) */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&p->seq, memory_order_relaxed) != s0)
            continue;
        buf[sizeof(buf) - 1] = '\0';
        snprintf(out, len, "%s", buf);
        return (int)count;
    }
    return -EAGAIN;
}

double gw_cluster_ewma_sample(struct gw_cl_ewma *e, uint64_t used, uint64_t now_ns, uint32_t ttl_ms)
{
    if (e->last_ns && now_ns > e->last_ns && used >= e->last_used) {
        double dt = (double)(now_ns - e->last_ns) / 1e9, tau = ttl_ms / 1000.0;
        double rate = (double)(used - e->last_used) / dt;
        e->per_s += dt / (dt + tau) * (rate - e->per_s);
    }
    e->last_ns = now_ns;
    e->last_used = used;
    return e->per_s;
}

/* p percent of x without overflow */
static uint64_t percent(uint64_t x, uint32_t p)
{
    return x / 100 * p + x % 100 * p / 100;
}

uint64_t gw_cluster_lease_size(const struct gw_cluster_cfg *cl, uint64_t limit, double per_s,
                               uint64_t need, uint64_t cap)
{
    uint64_t lo = percent(limit, cl->lease_percent), hi = percent(limit, cl->lease_max_percent);
    if (lo < 1)
        lo = 1;
    if (hi < lo)
        hi = lo;
    double d = per_s * cl->lease_ttl_ms / 1000.0;
    uint64_t k = d <= (double)lo ? lo : d >= (double)hi ? hi : (uint64_t)d;
    if (need > k)
        k = need;
    return k > cap ? cap : k;
}
