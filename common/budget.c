/* budget.c - device-time budgets: reserve, charge, settle.
 *
 * Two kinds of state, kept apart on purpose:
 *  - the decision cell in each account (a weighted GCRA cell, one CAS word)
 *    says whether a reservation fits. It is what admission reads, so it is
 *    shared by every process.
 *  - the accounting columns in the account's budget record say how much was
 *    reserved, used and refunded. Each lane (process) writes only its own
 *    column, so after a crash the master can tell exactly which of a dead
 *    lane's writes happened by comparing its column with the journal.
 * A process killed between a decision-cell CAS and the column write leaves
 * the decision cell off by that one amount (ordered so that the error is in
 * the operator's favour: taken before recorded, refunded after recorded);
 * the accounting stays exact, which is what conservation checks:
 *   for every budget account, reserved = used + refunded + held by live slots.
 */
#include "seg_internal.h"

#include <errno.h>

/* Takes `cost` from a budget cell if it fits within one period. */
static int cell_take(_Atomic uint64_t *cell, uint8_t gen, uint64_t cost, uint64_t period,
                     uint64_t now, uint64_t *wait)
{
    /* relaxed: self-contained word, see gw__cell_add. */
    uint64_t c = atomic_load_explicit(cell, memory_order_relaxed);
    for (;;) {
        if (CELL_GEN(c) != gen)
            return GW_ESTALE;
        uint64_t tat = CELL_V(c), base = tat > now ? tat : now;
        uint64_t nt = base + cost;
        if (nt - now > period) {
            *wait = cost > period ? UINT64_MAX : nt - now - period;
            return GW_EREFUSED;
        }
        if (atomic_compare_exchange_weak_explicit(cell, &c, CELL(gen, nt), memory_order_relaxed,
                                                  memory_order_relaxed))
            return 0;
    }
}

struct party {
    struct gw_acct acct;
    struct gw_budget *b;
    _Atomic uint64_t *cell;
    struct gw_budget_rate rate;
};

static int parties(const struct gw_segment *seg, const struct gw_slot *s, struct party p[2])
{
    uint64_t refs[2] = {atomic_load_explicit(&s->tenant, memory_order_relaxed),
                        atomic_load_explicit(&s->global, memory_order_relaxed)};
    for (int i = 0; i < 2; i++) {
        if (!(refs[i] & AREF_VALID))
            return -EINVAL;
        p[i].acct = AREF_ACCT(refs[i]);
        p[i].b = gw__acct_budget(seg, p[i].acct);
        if (!p[i].b)
            return GW_ESTALE;
        p[i].cell = &acct_at(seg, p[i].acct.index)->cell[CELL_BUDGET];
        /* relaxed: the rate is configuration, any recent value will do. */
        p[i].rate.amount_us = atomic_load_explicit(&p[i].b->amount_us, memory_order_relaxed);
        p[i].rate.period_us = atomic_load_explicit(&p[i].b->period_us, memory_order_relaxed);
    }
    return 0;
}

static inline uint64_t ld(_Atomic uint64_t *x)
{
    return atomic_load_explicit(x, memory_order_relaxed);
}

/* relaxed stores to single-writer words: the journal's release/acquire
 * (j_op) and the slot transitions order them for their readers. */
static inline void st(_Atomic uint64_t *x, uint64_t v)
{
    atomic_store_explicit(x, v, memory_order_relaxed);
}

/* The journaled reservation shared by reserve and charge. Journal:
 * j_old[0..1] = our reserved column in tenant, global; j_old[2] = the slot's
 * reserved_us; all before the operation. */
static int reserve_journaled(struct gw_segment *seg, struct gw_slot *s, struct gw_slot_ref ref,
                             uint64_t x, uint64_t now, uint64_t *wait)
{
    struct party p[2];
    int rc = parties(seg, s, p);
    if (rc != 0)
        return rc;
    int L = seg->lane;
    struct gw_lane *ln = lane_at(seg, L);
    st(&ln->j_slot, (uint64_t)ref.index << 32 | ref.seq);
    st(&ln->j_amount, x);
    st(&ln->j_old[0], ld(&p[0].b->col[L].reserved_us));
    st(&ln->j_old[1], ld(&p[1].b->col[L].reserved_us));
    st(&ln->j_old[2], ld(&s->reserved_us));
    /* release: the journal fields above are complete before j_op says so. */
    atomic_store_explicit(&ln->j_op, J_RESERVE, memory_order_release);

    uint64_t cost[2];
    for (int i = 0; i < 2; i++) {
        if (p[i].rate.amount_us == 0 || p[i].rate.period_us == 0) {
            rc = -EINVAL;
            goto refused;
        }
        cost[i] = gw__budget_cost(&p[i].rate, x);
    }
    rc = cell_take(p[0].cell, p[0].acct.gen, cost[0], p[0].rate.period_us, now, wait);
    if (rc != 0)
        goto refused;
    rc = cell_take(p[1].cell, p[1].acct.gen, cost[1], p[1].rate.period_us, now, wait);
    if (rc != 0) {
        (void)gw__cell_add(p[0].cell, p[0].acct.gen, cost[0], -1);
        goto refused;
    }
    st(&p[0].b->col[L].reserved_us, ld(&ln->j_old[0]) + x);
    st(&p[1].b->col[L].reserved_us, ld(&ln->j_old[1]) + x);
    st(&s->reserved_us, ld(&ln->j_old[2]) + x);
    /* release: the accounting above is done before the journal is idle. */
    atomic_store_explicit(&ln->j_op, J_IDLE, memory_order_release);
    return 0;
refused:
    atomic_store_explicit(&ln->j_op, J_IDLE, memory_order_release);
    return rc;
}

int gw_budget_reserve(struct gw_segment *seg, struct gw_slot_ref ref, uint64_t amount_us,
                      const struct gw_budget_rate *tenant, const struct gw_budget_rate *global,
                      uint64_t now, uint64_t *retry_us)
{
    *retry_us = 0;
    if (seg->lane < 0 || !tenant || !global || tenant->amount_us == 0 || tenant->period_us == 0 ||
        global->amount_us == 0 || global->period_us == 0)
        return -EINVAL;
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    /* Only the owner reserves: the front while ADMITTED, the worker while
     * RUNNING. Nobody else can move the slot to a terminal state then, so a
     * settlement never races a reservation. */
    if (!s || (SS_STATE(w) != GW_SLOT_ADMITTED && SS_STATE(w) != GW_SLOT_RUNNING) ||
        SS_LANE(w) != seg->lane)
        return GW_ESTATE;
    struct party p[2];
    int rc = parties(seg, s, p);
    if (rc != 0)
        return rc;
    const struct gw_budget_rate *r[2] = {tenant, global};
    for (int i = 0; i < 2; i++) {
        /* relaxed: configuration values; see parties(). */
        atomic_store_explicit(&p[i].b->amount_us, r[i]->amount_us, memory_order_relaxed);
        atomic_store_explicit(&p[i].b->period_us, r[i]->period_us, memory_order_relaxed);
    }
    return reserve_journaled(seg, s, ref, amount_us, now, retry_us);
}

int gw_budget_charge(struct gw_segment *seg, struct gw_slot_ref ref, uint64_t used_us, uint64_t now)
{
    if (seg->lane < 0)
        return -EINVAL;
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || SS_STATE(w) != GW_SLOT_RUNNING || SS_LANE(w) != seg->lane)
        return GW_ESTATE;
    uint64_t used = ld(&s->used_us), reserved = ld(&s->reserved_us);
    if (used_us < used)
        return -EINVAL;
    int rc = 0;
    if (used_us > reserved) {
        uint64_t wait, x = used_us - reserved;
        /* a farm-leased slot takes its extension from the GPU lease first
         * (cluster_gpu.c): what the ledger charges came out of a lease */
        struct gw_acct t = AREF_ACCT(ld(&s->tenant)), g = AREF_ACCT(ld(&s->global));
        int farm = (ld(&s->flags) & SLOT_FARM_GPU) != 0;
        int gfarm = (ld(&s->flags) & SLOT_FARM_GGPU) != 0; /* the global pool's lease */
        rc = farm ? gw__cluster_gpu_extend(seg, t, x, now) : 0;
        if (rc == 0 && gfarm && (rc = gw__cluster_gpu_extend(seg, g, x, now)) != 0 && farm)
            gw__cluster_gpu_refund(seg, t, x);
        if (rc == 0) {
            rc = reserve_journaled(seg, s, ref, x, now, &wait);
            if (rc != 0 && farm) /* taken from the lease, not reserved here */
                gw__cluster_gpu_refund(seg, t, x);
            if (rc != 0 && gfarm)
                gw__cluster_gpu_refund(seg, g, x);
        }
        if (rc != 0)
            used_us = reserved; /* the step we could not cover is on us */
    }
    /* relaxed: single writer (the owner); read by settlement after the
     * terminal transition's release. */
    st(&s->used_us, used_us);
    return rc;
}

int gw_budget_settle(struct gw_segment *seg, struct gw_slot_ref ref)
{
    if (seg->lane < 0)
        return -EINVAL;
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s)
        return GW_ESTATE;
    int state = SS_STATE(w);
    if (state != GW_SLOT_DONE && state != GW_SLOT_FAILED && state != GW_SLOT_KILLED)
        return GW_ESTATE;
    /* acquire: pairs with the settler's CAS; a settled slot is left alone. */
    if (atomic_load_explicit(&s->settled, memory_order_acquire) != 0)
        return 0;
    int L = seg->lane;
    struct gw_lane *ln = lane_at(seg, L);
    uint64_t r = ld(&s->reserved_us), u = ld(&s->used_us);
    if (u > r)
        u = r;
    struct party p[2];
    int have = parties(seg, s, p) == 0; /* a slot refused before it had accounts holds nothing */

    /* Journal: which slot, and our used/refunded columns before. */
    st(&ln->j_slot, (uint64_t)ref.index << 32 | ref.seq);
    st(&ln->j_amount, r);
    st(&ln->j_old[4], u);
    if (have) {
        st(&ln->j_old[0], ld(&p[0].b->col[L].used_us));
        st(&ln->j_old[1], ld(&p[0].b->col[L].refunded_us));
        st(&ln->j_old[2], ld(&p[1].b->col[L].used_us));
        st(&ln->j_old[3], ld(&p[1].b->col[L].refunded_us));
        st(&p[0].b->col[L].step, 0);
    }
    atomic_store_explicit(&ln->j_op, J_SETTLE, memory_order_release);

    uint64_t zero = 0;
    /* acq_rel: exactly one settler wins; it acquires the owner's final
     * reserved/used and releases its own accounting to later readers. */
    if (!atomic_compare_exchange_strong_explicit(&s->settled, &zero, SETTLE_CLAIMED(L),
                                                 memory_order_acq_rel, memory_order_acquire)) {
        atomic_store_explicit(&ln->j_op, J_IDLE, memory_order_release);
        return 0;
    }
    if (have) {
        st(&p[0].b->col[L].used_us, ld(&ln->j_old[0]) + u);
        st(&p[0].b->col[L].refunded_us, ld(&ln->j_old[1]) + (r - u));
        st(&p[1].b->col[L].used_us, ld(&ln->j_old[2]) + u);
        st(&p[1].b->col[L].refunded_us, ld(&ln->j_old[3]) + (r - u));
        /* The decision cells get the unused part back. step records how far
         * we got, so the repair neither repeats nor skips a step. */
        st(&p[0].b->col[L].step, 1);
        for (int i = 0; i < 2; i++)
            (void)gw__cell_add(p[i].cell, p[i].acct.gen, gw__budget_cost(&p[i].rate, r - u), -1);
        if (ld(&s->flags) & SLOT_FARM_GPU) /* the farm's lease gets its part back too */
            gw__cluster_gpu_refund(seg, p[0].acct, r - u);
        if (ld(&s->flags) & SLOT_FARM_GGPU) /* and the farm's global pool */
            gw__cluster_gpu_refund(seg, p[1].acct, r - u);
        st(&p[0].b->col[L].step, 2);
        if (ld(&s->flags) & SLOT_INFLIGHT_HELD)
            (void)gw_ledger_inflight_put(seg, p[0].acct);
        st(&p[0].b->col[L].step, 3);
    }
    /* release: the accounting above is visible to whoever sees the slot
     * settled (the releaser, the conservation check). */
    atomic_store_explicit(&s->settled, SETTLE_DONE(L), memory_order_release);
    atomic_store_explicit(&ln->j_op, J_IDLE, memory_order_release);
    return 1;
}

int gw_ledger_budget_reset(struct gw_segment *seg, struct gw_acct a)
{
    if (!gw__acct_budget(seg, a))
        return gw__acct_ok(seg, a) ? -ENOENT : GW_ESTALE;
    _Atomic uint64_t *cell = &acct_at(seg, a.index)->cell[CELL_BUDGET];
    /* relaxed: the decision cell is self-contained, as in gw__cell_add; a
     * reservation racing the reset lands before it (forgiven) or after it
     * (charged against the full budget), either is a valid order. */
    uint64_t c = atomic_load_explicit(cell, memory_order_relaxed);
    for (;;) {
        if (CELL_GEN(c) != a.gen)
            return GW_ESTALE;
        if (atomic_compare_exchange_weak_explicit(cell, &c, CELL(a.gen, 0), memory_order_relaxed,
                                                  memory_order_relaxed))
            return 0;
    }
}
