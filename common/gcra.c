/* gcra.c - the generic cell rate algorithm on one 64-bit word per cell, and
 * all-or-nothing admission across several accounts.
 *
 * A cell holds a theoretical arrival time (TAT, us since the epoch). A
 * request at `now` passes when max(TAT, now) - now <= tolerance, and then
 * moves TAT to max(TAT, now) + interval. Every TAT at or before `now` means
 * the same thing (idle, full burst available), which is what makes a
 * rollback by subtraction exact in effect and an idle cell safe to reclaim.
 */
#include "seg_internal.h"

#include <errno.h>

#define MAX_ITEMS 16

int gw_rate_make(struct gw_rate *r, uint64_t limit, uint64_t period_us, uint64_t burst)
{
    if (limit == 0 || period_us == 0 || limit > (1ull << 40) || burst > (1ull << 40) ||
        period_us > (1ull << 50))
        return -EINVAL;
    uint64_t interval = period_us / limit + (period_us % limit != 0);
    unsigned __int128 tol = (unsigned __int128)(limit + burst - 1) * interval;
    if (tol >= (1ull << 54))
        return -ERANGE;
    r->interval_us = interval;
    r->tolerance_us = (uint64_t)tol;
    r->moving_limit = r->moving_bucket_us = r->moving_period_ms = 0;
    return 0;
}

int gw_window_rate(const struct gw_window *w, struct gw_rate *r)
{
    return w->moving ? gw_rate_make_moving(r, w->limit, w->period_us)
                     : gw_rate_make(r, w->limit, w->period_us, w->burst);
}

uint64_t gw__budget_cost(const struct gw_budget_rate *b, uint64_t x_us)
{
    if (x_us == 0)
        return 0;
    uint64_t p64;
    if (!__builtin_mul_overflow(x_us, b->period_us, &p64)) { /* the usual case: 64-bit */
        uint64_t c64 = p64 / b->amount_us + (p64 % b->amount_us != 0);
        return c64 > 2 * b->period_us ? 2 * b->period_us : c64;
    }
    unsigned __int128 num = (unsigned __int128)x_us * b->period_us;
    unsigned __int128 c = num / b->amount_us + (num % b->amount_us != 0);
    /* Anything dearer than two periods can never pass; keep it in range. */
    if (c > 2 * (unsigned __int128)b->period_us)
        c = 2 * (unsigned __int128)b->period_us;
    return (uint64_t)c;
}

int gw__cell_add(_Atomic uint64_t *cell, uint8_t gen, uint64_t delta, int sign)
{
    /* relaxed: the cell is self-contained (no other data is published with
     * it); the CAS alone makes the read-modify-write atomic. */
    uint64_t c = atomic_load_explicit(cell, memory_order_relaxed);
    for (;;) {
        if (CELL_GEN(c) != gen)
            return GW_ESTALE;
        uint64_t v = CELL_V(c);
        uint64_t nv = sign > 0 ? v + delta : (v > delta ? v - delta : 0);
        if (atomic_compare_exchange_weak_explicit(cell, &c, CELL(gen, nv), memory_order_relaxed,
                                                  memory_order_relaxed))
            return 0;
    }
}

/* 1 and the new TAT when a request passes; 0 and the wait when not. */
static inline int decide(uint64_t tat, uint64_t now, const struct gw_rate *r, uint64_t *new_tat,
                         uint64_t *wait)
{
    uint64_t base = tat > now ? tat : now;
    if (base - now > r->tolerance_us) {
        *wait = base - now - r->tolerance_us;
        return 0;
    }
    *new_tat = base + r->interval_us;
    return 1;
}

/* An account's cell, or an overflow bucket's (GW_OVF_INDEX set,
 * gw_overflow_acct). */
static inline _Atomic uint64_t *item_cell(const struct gw_segment *seg,
                                          const struct gw_admit_item *it)
{
    if (it->acct.index & GW_OVF_INDEX)
        return gw__ovf_cell(seg, it->acct.index & ~GW_OVF_INDEX, it->cell);
    return &acct_at(seg, it->acct.index)->cell[it->cell];
}

/* The same for a cell of either kind: a moving window (moving.c, whose
 * exact form reads the item's log) or GCRA. A GCRA cell still holding a
 * moving value (the window's kind changed at a reload) reads as idle. */
static inline int decide_cell(const struct gw_segment *seg, const struct gw_admit_item *it,
                              uint64_t v, uint64_t now, uint64_t *nv, uint64_t *wait)
{
    if (it->rate.moving_limit)
        return gw__moving_decide(v, now, &it->rate, gw__mvlog(seg, it->acct.index, it->cell), nv,
                                 wait);
    return decide(gw__moving_is(v) ? 0 : v, now, &it->rate, nv, wait);
}

/* A reference gw_ledger_admit can take: a table entry, or an overflow
 * bucket (generation 0). */
static inline int item_ok(const struct gw_segment *seg, const struct gw_admit_item *it)
{
    if (it->cell >= GW_RATE_CELLS)
        return 0;
    if (it->acct.index & GW_OVF_INDEX)
        return (it->acct.index & ~GW_OVF_INDEX) < GW_OVF_BUCKETS && it->acct.gen == 0;
    return it->acct.index < seg->cfg.accounts;
}

/* Longest wait over all items as the cells stand now (for Retry-After). */
static uint64_t max_wait(const struct gw_segment *seg, const struct gw_admit_item *items, int n,
                         uint64_t now)
{
    uint64_t worst = 0;
    for (int i = 0; i < n; i++) {
        uint64_t c = atomic_load_explicit(item_cell(seg, &items[i]), memory_order_relaxed);
        uint64_t nt, w;
        if (!decide_cell(seg, &items[i], CELL_V(c), now, &nt, &w) && w > worst)
            worst = w;
    }
    return worst;
}

int gw_ledger_admit(struct gw_segment *seg, const struct gw_admit_item *items, int n, uint64_t now,
                    uint64_t *retry_us)
{
    uint64_t seen[MAX_ITEMS], took[MAX_ITEMS]; /* took: a moving cell's new value */
    *retry_us = 0;
    if (n < 1 || n > MAX_ITEMS)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (!item_ok(seg, &items[i]))
            return -EINVAL;

    /* Phase 1: read-only. A refusal found here writes nothing at all. */
    int refused = 0;
    uint64_t worst = 0;
    for (int i = 0; i < n; i++) {
        /* relaxed: see gw__cell_add; a stale read only makes the CAS below
         * fail and retry. */
        seen[i] = atomic_load_explicit(item_cell(seg, &items[i]), memory_order_relaxed);
        if (CELL_GEN(seen[i]) != items[i].acct.gen)
            return GW_ESTALE;
        uint64_t nt, w;
        if (!decide_cell(seg, &items[i], CELL_V(seen[i]), now, &nt, &w)) {
            refused = 1;
            if (w > worst)
                worst = w;
        }
    }
    if (refused) {
        *retry_us = worst;
        return GW_EREFUSED;
    }

    /* Phase 2: take one unit from each cell in turn. A busy cell (TAT not
     * before now) is the common case under load, and there GCRA is a pure
     * addition: one fetch_add, which never retries however many processes
     * hammer the cell, and which an undo (fetch_sub) reverses exactly
     * because additions commute. An idle cell needs max(TAT, now) and takes
     * the CAS loop. If a cell refuses now, what was taken is given back
     * (subtracting the interval is exact in effect, see the top). A moving
     * cell (moving.c) always takes the CAS; its exact form then writes the
     * admission's time into the log slot the CAS claimed, and its undo
     * turns that slot into a hole (the bucket form takes the unit back out
     * of the bucket it went into). */
    int taken = 0, rc = 0;
    for (; taken < n; taken++) {
        const struct gw_admit_item *it = &items[taken];
        _Atomic uint64_t *cell = item_cell(seg, it);
        uint64_t c = seen[taken];
        if (it->rate.moving_limit) { /* the width lane first: reclaim reads it (moving.c) */
            if (!(it->acct.index & GW_OVF_INDEX)) /* overflow buckets are never reclaimed */
                gw__moving_note_width(acct_at(seg, it->acct.index), it->cell, &it->rate);
        } else if (CELL_V(c) >= now && !gw__moving_is(CELL_V(c))) {
            /* relaxed: see gw__cell_add. */
            uint64_t old =
                atomic_fetch_add_explicit(cell, it->rate.interval_us, memory_order_relaxed);
            if (CELL_GEN(old) == it->acct.gen && CELL_V(old) >= now &&
                CELL_V(old) - now <= it->rate.tolerance_us)
                continue;
            atomic_fetch_sub_explicit(cell, it->rate.interval_us, memory_order_relaxed);
            if (CELL_GEN(old) != it->acct.gen) {
                rc = GW_ESTALE;
                goto undo;
            }
            if (CELL_V(old) >= now) {
                rc = GW_EREFUSED;
                goto undo;
            }
            c = atomic_load_explicit(cell, memory_order_relaxed); /* went idle: CAS */
        }
        uint64_t nt = 0, w;
        for (;;) {
            if (CELL_GEN(c) != it->acct.gen) {
                rc = GW_ESTALE;
                goto undo;
            }
            if (!decide_cell(seg, it, CELL_V(c), now, &nt, &w)) {
                rc = GW_EREFUSED;
                goto undo;
            }
            if (atomic_compare_exchange_weak_explicit(cell, &c, CELL(it->acct.gen, nt),
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        }
        if (it->rate.moving_limit) /* the exact form's time into its slot */
            gw__moving_taken(gw__mvlog(seg, it->acct.index, it->cell), &it->rate, nt);
        took[taken] = nt;
    }
    return 0;
undo:
    for (int i = 0; i < taken; i++) {
        if (items[i].rate.moving_limit)
            gw__moving_give_back(item_cell(seg, &items[i]), items[i].acct.gen,
                                 gw__mvlog(seg, items[i].acct.index, items[i].cell), &items[i].rate,
                                 took[i]);
        else
            (void)gw__cell_add(item_cell(seg, &items[i]), items[i].acct.gen,
                               items[i].rate.interval_us, -1);
    }
    if (rc == GW_EREFUSED)
        *retry_us = max_wait(seg, items, n, now);
    return rc;
}

uint64_t gw_ledger_rate_remaining(const struct gw_segment *seg, struct gw_acct a, int cell,
                                  const struct gw_rate *r, uint64_t now)
{
    if (a.index >= seg->cfg.accounts || cell < 0 || cell >= GW_RATE_CELLS)
        return 0;
    uint64_t c = atomic_load_explicit(&acct_at(seg, a.index)->cell[cell], memory_order_relaxed);
    if (CELL_GEN(c) != a.gen)
        return 0;
    if (r->moving_limit)
        return gw__moving_remaining(CELL_V(c), now, r, gw__mvlog(seg, a.index, cell));
    uint64_t tat = gw__moving_is(CELL_V(c)) ? 0 : CELL_V(c), base = tat > now ? tat : now;
    if (base - now > r->tolerance_us)
        return 0;
    return (r->tolerance_us - (base - now)) / r->interval_us + 1;
}

uint64_t gw_ledger_budget_left(const struct gw_segment *seg, struct gw_acct a,
                               const struct gw_budget_rate *b, uint64_t now)
{
    if (a.index >= seg->cfg.accounts)
        return 0;
    uint64_t c =
        atomic_load_explicit(&acct_at(seg, a.index)->cell[CELL_BUDGET], memory_order_relaxed);
    if (CELL_GEN(c) != a.gen)
        return 0;
    uint64_t tat = CELL_V(c), base = tat > now ? tat : now;
    if (base - now >= b->period_us)
        return 0;
    return (uint64_t)((unsigned __int128)(b->period_us - (base - now)) * b->amount_us /
                      b->period_us);
}
