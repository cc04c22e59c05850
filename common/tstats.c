/* tstats.c - per-tenant counters (gw_common/tstats.h), one struct
 * gw_tstat_rec per budget record, in their own region at the end of the
 * segment (seg_internal.h).
 *
 * Every word is a monotonic counter changed only by a relaxed fetch_add
 * from whichever process saw the event: fronts (admitted, refused), workers
 * (output tokens, output-guard kills), the master's watchdog (kills).
 * Relaxed suffices for the same reason as the node's counters (metrics.c):
 * no reader infers from a counter that any other memory was written, each
 * is read on its own for display, and an atomic add never loses an
 * increment whatever its order. A process killed at any instruction loses
 * at most the one add it had not made; there is nothing half-written and
 * nothing to repair. Records start at zero with the file and are never
 * reused (budget records are never reclaimed).
 */
#include "seg_internal.h"

#include <errno.h>
#include <string.h>

_Static_assert(GW_REF_REASONS <= GW_TSTAT_REASONS, "a refusal counter per reason");
_Static_assert(GW_WD_REASONS <= GW_TSTAT_REASONS, "a kill counter per reason");

/* The tenant's record, or NULL (no budget record, stale reference). */
static struct gw_tstat_rec *rec_of(const struct gw_segment *seg, struct gw_acct a)
{
    if (!seg || !seg->tstats || !gw__acct_ok(seg, a))
        return NULL;
    /* relaxed: budget_idx was written before the tag's release store, which
     * gw__acct_ok acquired. */
    uint32_t b = atomic_load_explicit(&seg->accounts[a.index].budget_idx, memory_order_relaxed);
    if (b == NO_BUDGET || b >= seg->cfg.budgets)
        return NULL;
    return &seg->tstats[b];
}

static void add(_Atomic uint64_t *w, uint64_t n)
{
    /* relaxed: a statistic read on its own (the file's opening). */
    atomic_fetch_add_explicit(w, n, memory_order_relaxed);
}

void gw_tstat_admitted(struct gw_segment *seg, struct gw_acct tenant)
{
    struct gw_tstat_rec *r = rec_of(seg, tenant);
    if (r)
        add(&r->admitted, 1);
}

void gw_tstat_refusal(struct gw_segment *seg, struct gw_acct tenant, int reason)
{
    struct gw_tstat_rec *r = reason >= 0 && reason < GW_REF_REASONS ? rec_of(seg, tenant) : NULL;
    if (r)
        add(&r->refusals[reason], 1);
}

void gw_tstat_kill(struct gw_segment *seg, struct gw_acct tenant, int reason)
{
    struct gw_tstat_rec *r = reason >= 0 && reason < GW_WD_REASONS ? rec_of(seg, tenant) : NULL;
    if (r)
        add(&r->kills[reason], 1);
}

void gw_tstat_tokens(struct gw_segment *seg, struct gw_acct tenant, uint64_t n)
{
    struct gw_tstat_rec *r = n ? rec_of(seg, tenant) : NULL;
    if (r)
        add(&r->output_tokens, n);
}

static uint64_t get(const _Atomic uint64_t *w)
{
    /* relaxed: each counter is read on its own for display. */
    return atomic_load_explicit(w, memory_order_relaxed);
}

int gw_tstat_get(const struct gw_segment *seg, struct gw_acct tenant, struct gw_tstat *out)
{
    memset(out, 0, sizeof(*out));
    if (!seg || !seg->tstats || !gw__acct_ok(seg, tenant))
        return GW_ESTALE;
    const struct gw_tstat_rec *r = rec_of(seg, tenant);
    if (!r)
        return -ENOENT;
    out->admitted = get(&r->admitted);
    out->output_tokens = get(&r->output_tokens);
    for (int i = 0; i < GW_TSTAT_REASONS; i++) {
        out->refusals[i] = get(&r->refusals[i]);
        out->kills[i] = get(&r->kills[i]);
        out->refusals_total += out->refusals[i];
        out->kills_total += out->kills[i];
    }
    return 0;
}

int gw_tenant_at(const struct gw_segment *seg, uint32_t b, struct gw_acct *out)
{
    if (!seg || b >= seg->cfg.budgets)
        return -ENOENT;
    /* relaxed: the record's owner is published by the account's tag (its
     * release store); we acquire the tag below before trusting either. */
    uint64_t owner = atomic_load_explicit(&budget_at(seg, b)->account, memory_order_relaxed);
    if (owner == 0 || owner > seg->cfg.accounts)
        return -ENOENT;
    uint32_t idx = (uint32_t)(owner - 1);
    /* acquire: pairs with publish()'s release, so budget_idx below is the
     * one written for this generation. */
    uint64_t t = atomic_load_explicit(&seg->accounts[idx].tag, memory_order_acquire);
    if ((t & TAG_LOCK) || TAG_KIND(t) != GW_KIND_TENANT)
        return -ENOENT;
    /* relaxed: ordered by the acquire above. */
    if (atomic_load_explicit(&seg->accounts[idx].budget_idx, memory_order_relaxed) != b)
        return -ENOENT;
    out->index = idx;
    out->gen = TAG_GEN(t);
    return 0;
}
