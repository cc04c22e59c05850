/* gw_common/tstats.h - per-tenant counters in the shared segment
 * (common/tstats.c; docs/ARCHITECTURE.md, "The segment"): what each
 * tenant was admitted, refused (by reason), killed (by reason) and
 * generated, for the per-tenant /metrics series (top-N plus "other",
 * supervisor/metrics_tenants.c) and gpuwardenctl top. Part of gw_common.h;
 * include that, not this.
 *
 * One record per budget record, indexed like the farming record: a tenant
 * account's budget record is never reclaimed, so the index is the tenant's
 * for the segment's life and the counters survive a master restart in the
 * file. Only tenants with an account are counted: a request refused before
 * its token was verified and its plan found (auth, forbidden, the address's
 * own limits) has no tenant, so an invented `sub` never gets a record.
 */
#ifndef GW_COMMON_TSTATS_H
#define GW_COMMON_TSTATS_H

#include <stddef.h>
#include <stdint.h>

struct gw_segment;
struct gw_acct;

#define GW_TSTAT_REASONS 16 /* refusal and kill counters per record (>= both enums) */

/* Each adds to one counter of the tenant's record with one relaxed
 * fetch_add; nothing for an account without a budget record or a stale
 * reference, or a reason out of range. No lock, no repair: a process
 * killed at any instruction loses at most the one add it had not made. */
void gw_tstat_admitted(struct gw_segment *seg, struct gw_acct tenant);
void gw_tstat_refusal(struct gw_segment *seg, struct gw_acct tenant, int reason);
void gw_tstat_kill(struct gw_segment *seg, struct gw_acct tenant, int reason);
void gw_tstat_tokens(struct gw_segment *seg, struct gw_acct tenant, uint64_t n);

/* A tenant's counters as read now (each word read on its own). */
struct gw_tstat {
    uint64_t admitted;      /* requests queued for a worker */
    uint64_t output_tokens; /* tokens generated for it (counted when a generation ends) */
    uint64_t refusals[GW_TSTAT_REASONS]; /* enum gw_refusal */
    uint64_t kills[GW_TSTAT_REASONS];    /* enum gw_wd_reason */
    uint64_t refusals_total, kills_total;
};
/* -ENOENT without a budget record, GW_ESTALE for a stale reference. */
int gw_tstat_get(const struct gw_segment *seg, struct gw_acct tenant, struct gw_tstat *out);

/* The tenant account that owns budget record b, for walking every tenant
 * the segment knows (b from 0 to gw_seg_stats.budgets_used): 0 and *out,
 * or -ENOENT when record b is the node's (global) account, not yet
 * published or out of range. */
int gw_tenant_at(const struct gw_segment *seg, uint32_t b, struct gw_acct *out);

#endif /* GW_COMMON_TSTATS_H */
