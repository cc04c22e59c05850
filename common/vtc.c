/* vtc.c - the tenants' Virtual Token Counters, the fairness state the
 * worker's continuous-batching scheduler shares (gw_common/segment.h,
 * "fairness"; Sheng et al., OSDI 2024).
 *
 * One 64-bit word per budget record (struct gw_budget.vtc), so one per
 * tenant account for the segment's life: budget records and tenant
 * accounts are never reclaimed, and a record is zero when it is first
 * handed out (the file is created zeroed and records are never reused).
 *
 * Every access is relaxed. A counter is a number compared with other
 * counters to pick whom to serve next; no reader infers from it that any
 * other memory was written, so no ordering with other words is needed.
 * What must hold is within the one word, and its modification order gives
 * it: fetch_add never loses an add whatever its order, and the CAS in
 * gw_vtc_lift replaces only a value it saw below the floor, so a raise
 * never undoes an add that landed meanwhile (the CAS fails and looks
 * again). A reader may see a counter a moment old; the scheduler is then
 * fair a step later, which VTC's bound already allows for.
 *
 * Who repairs what when a process dies here: nobody, and nothing needs it.
 * Each operation is one atomic instruction on one word (the lift's loop
 * writes only with its final successful CAS), so a process killed at any
 * instruction has either made its add or raise or not made it; a worker
 * killed between generating tokens and adding their units under-counts
 * that tenant by one step, in the tenant's favour, and the counters stay
 * monotone.
 */
#include "seg_internal.h"

#include <errno.h>

uint64_t gw_vtc_get(const struct gw_segment *seg, struct gw_acct a)
{
    struct gw_budget *b = gw__acct_budget(seg, a);
    if (!b)
        return 0;
    /* relaxed: a value compared on its own; see the file's opening. */
    return atomic_load_explicit(&b->vtc, memory_order_relaxed);
}

int gw_vtc_add(struct gw_segment *seg, struct gw_acct a, uint64_t units)
{
    struct gw_budget *b = gw__acct_budget(seg, a);
    if (!b)
        return gw__acct_ok(seg, a) ? -ENOENT : GW_ESTALE;
    /* relaxed: an RMW loses no add in any order; it publishes nothing. */
    atomic_fetch_add_explicit(&b->vtc, units, memory_order_relaxed);
    return 0;
}

uint64_t gw_vtc_lift(struct gw_segment *seg, struct gw_acct a, uint64_t floor)
{
    struct gw_budget *b = gw__acct_budget(seg, a);
    if (!b)
        return 0;
    /* relaxed: the CAS compares against the word's latest value in its
     * modification order, so it raises only a counter still below the
     * floor and never overwrites a concurrent add; a failed CAS reloads v. */
    uint64_t v = atomic_load_explicit(&b->vtc, memory_order_relaxed);
    while (v < floor && !atomic_compare_exchange_weak_explicit(
                            &b->vtc, &v, floor, memory_order_relaxed, memory_order_relaxed))
        ;
    return v < floor ? floor : v;
}

uint32_t gw_req_weight_milli(const struct gw_slot_req *req)
{
    return req->weight_milli ? req->weight_milli : 1000u;
}
