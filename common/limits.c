/* limits.c - tenant limits changed at run time, seen by every front.
 *
 * The master (one writer: its admin socket) writes a cell as a seqlock over
 * atomic words: seq goes odd, the fields are stored, seq goes even. A front
 * reads seq (acquire), the fields (relaxed), an acquire fence, seq again;
 * equal and even means it read one whole version (Boehm's C11 seqlock).
 * After every change the master moves the epoch on (release), so a front
 * that sees a new epoch (acquire) also sees the cells written before it.
 * A master killed mid-write leaves one odd cell that readers skip; the next
 * master clears the area at start-up, the config file being what runs.
 */
#include "seg_internal.h"

#include <errno.h>
#include <string.h>

static void cell_begin(struct gw_limit_cell *c)
{
    uint64_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
    atomic_store_explicit(&c->seq, s + 1, memory_order_relaxed);
    /* release fence: a reader that sees any field below sees the odd seq. */
    atomic_thread_fence(memory_order_release);
}

static void cell_end(struct gw_limit_cell *c)
{
    uint64_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
    /* release: the fields happen-before a reader's acquire of the even seq. */
    atomic_store_explicit(&c->seq, s + 1, memory_order_release);
}

static void bump_epoch(struct gw_segment *seg)
{
    /* release: pairs with the fronts' acquire in gw_limits_epoch; one writer. */
    atomic_fetch_add_explicit(&seg->limits->epoch, 1, memory_order_release);
}

static void id_words(const char *id, uint64_t w[8])
{
    memset(w, 0, 8 * sizeof(uint64_t));
    memcpy(w, id, strnlen(id, 63));
}

static int cell_is(const struct gw_limit_cell *c, const uint64_t w[8])
{
    for (int i = 0; i < 8; i++)
        /* relaxed: the master reads its own writes (one writer). */
        if (atomic_load_explicit(&c->id[i], memory_order_relaxed) != w[i])
            return 0;
    return 1;
}

int gw_limits_set(struct gw_segment *seg, const struct gw_limit_override *o)
{
    size_t len = strnlen(o->tenant, sizeof(o->tenant));
    if (!seg->limits || len == 0 || len >= 64 || o->n_windows < 0 || o->n_windows > GW_RATE_CELLS)
        return -EINVAL;
    uint64_t want[8], empty[8] = {0};
    id_words(o->tenant, want);
    struct gw_limit_cell *c = NULL;
    for (int i = 0; i < GW_LIMIT_OVERRIDES && !c; i++)
        if (cell_is(&seg->limits->cell[i], want))
            c = &seg->limits->cell[i];
    for (int i = 0; i < GW_LIMIT_OVERRIDES && !c; i++)
        if (cell_is(&seg->limits->cell[i], empty))
            c = &seg->limits->cell[i];
    if (!c)
        return GW_EFULL;
    cell_begin(c);
    /* relaxed stores inside the seqlock: ordered by cell_begin/cell_end. */
    for (int i = 0; i < 8; i++)
        atomic_store_explicit(&c->id[i], want[i], memory_order_relaxed);
    for (int i = 0; i < GW_RATE_CELLS; i++) {
        const struct gw_window *w = &o->windows[i];
        int on = i < o->n_windows;
        atomic_store_explicit(&c->win[i][0], on ? w->limit : 0, memory_order_relaxed);
        atomic_store_explicit(&c->win[i][1], on ? w->period_us : 0, memory_order_relaxed);
        /* the burst word carries the moving kind in its top bit */
        atomic_store_explicit(&c->win[i][2], on ? w->burst | (uint64_t)(w->moving != 0) << 63 : 0,
                              memory_order_relaxed);
    }
    atomic_store_explicit(&c->budget[0], o->budget.amount_us, memory_order_relaxed);
    atomic_store_explicit(&c->budget[1], o->budget.period_us, memory_order_relaxed);
    atomic_store_explicit(&c->misc, (uint64_t)o->n_windows | (uint64_t)(o->has_budget != 0) << 8,
                          memory_order_relaxed);
    atomic_store_explicit(&c->max_inflight, o->max_inflight, memory_order_relaxed);
    atomic_store_explicit(&c->max_tokens, o->max_tokens, memory_order_relaxed);
    cell_end(c);
    bump_epoch(seg);
    return 0;
}

void gw_limits_clear(struct gw_segment *seg)
{
    if (!seg->limits)
        return;
    for (int i = 0; i < GW_LIMIT_OVERRIDES; i++) {
        struct gw_limit_cell *c = &seg->limits->cell[i];
        /* A cell left odd by a dead master is made even again here. */
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) & 1)
            atomic_store_explicit(&c->seq, atomic_load_explicit(&c->seq, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
        cell_begin(c);
        for (int k = 0; k < 8; k++)
            atomic_store_explicit(&c->id[k], 0, memory_order_relaxed);
        cell_end(c);
    }
    bump_epoch(seg);
}

uint64_t gw_limits_epoch(const struct gw_segment *seg)
{
    if (!seg->limits)
        return 0;
    /* acquire: pairs with bump_epoch; the cells written before are visible. */
    return atomic_load_explicit(&seg->limits->epoch, memory_order_acquire);
}

int gw_limits_get(const struct gw_segment *seg, int i, struct gw_limit_override *o)
{
    if (!seg->limits || i < 0 || i >= GW_LIMIT_OVERRIDES)
        return -EINVAL;
    struct gw_limit_cell *c = &seg->limits->cell[i];
    for (int tries = 0; tries < 100; tries++) {
        /* acquire: pairs with cell_end's release; the fields read below are
         * at least that version's. */
        uint64_t s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (s1 & 1)
            continue;
        uint64_t id[8];
        memset(o, 0, sizeof(*o));
        for (int k = 0; k < 8; k++)
            id[k] = atomic_load_explicit(&c->id[k], memory_order_relaxed);
        for (int k = 0; k < GW_RATE_CELLS; k++) {
            o->windows[k].limit = atomic_load_explicit(&c->win[k][0], memory_order_relaxed);
            o->windows[k].period_us = atomic_load_explicit(&c->win[k][1], memory_order_relaxed);
            uint64_t bw = atomic_load_explicit(&c->win[k][2], memory_order_relaxed);
            o->windows[k].burst = bw & ~(1ull << 63);
            o->windows[k].moving = (int)(bw >> 63);
        }
        o->budget.amount_us = atomic_load_explicit(&c->budget[0], memory_order_relaxed);
        o->budget.period_us = atomic_load_explicit(&c->budget[1], memory_order_relaxed);
        uint64_t misc = atomic_load_explicit(&c->misc, memory_order_relaxed);
        o->max_inflight = (uint32_t)atomic_load_explicit(&c->max_inflight, memory_order_relaxed);
        o->max_tokens = (uint32_t)atomic_load_explicit(&c->max_tokens, memory_order_relaxed);
        /* acquire fence: the reads above happen-before the re-read of seq,
         * so an unchanged seq means no write overlapped them. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) != s1)
            continue;
        if (id[0] == 0)
            return -ENOENT;
        memcpy(o->tenant, id, 63);
        o->tenant[63] = '\0';
        o->n_windows = (int)(misc & 0xff);
        if (o->n_windows > GW_RATE_CELLS)
            o->n_windows = GW_RATE_CELLS;
        o->has_budget = (int)((misc >> 8) & 1);
        return 0;
    }
    return -EAGAIN;
}
