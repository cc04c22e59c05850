/* kills.c - the watchdog's kill counters, one per reason, in the segment
 * header (a region every process maps), so the master's watchdog and a
 * worker's output guard count into the same place and every front's
 * /metrics reads the node's totals. */
#include "seg_internal.h"

_Static_assert(GW_WD_REASONS <= 16, "one header counter per watchdog reason");

void gw_kills_add(struct gw_segment *seg, int reason)
{
    if (!seg || !seg->hdr || reason < 0 || reason >= GW_WD_REASONS)
        return;
    /* relaxed: a statistic; it orders nothing else. */
    atomic_fetch_add_explicit(&seg->hdr->kills[reason], 1, memory_order_relaxed);
}

uint64_t gw_kills_get(const struct gw_segment *seg, int reason)
{
    if (!seg || !seg->hdr || reason < 0 || reason >= GW_WD_REASONS)
        return 0;
    /* relaxed: read on its own for display. */
    return atomic_load_explicit(&seg->hdr->kills[reason], memory_order_relaxed);
}
