/* repair.c - what the master does for a process that died, and the
 * conservation check that proves it did it right.
 *
 * Who repairs what: the master, after reaping the child that held a lane
 * (and at start-up, for every lane whose pid is gone), and nobody else:
 *  - the lane's money journal: a reservation or settlement cut short is
 *    completed (if its first accounting write happened) or left undone (if
 *    not); single-writer columns make that decision exact;
 *  - the queue: a position it took but did not publish becomes a hole, a
 *    position it consumed but did not release is released and its slot
 *    re-queued if nobody took it;
 *  - its slots: every slot it owned and left short of a terminal state
 *    fails and is settled; terminal slots whose front is gone are released;
 *  - ledger entries it locked mid-insert or mid-reclaim go back to empty.
 */
#include "seg_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>

static inline uint64_t ld(_Atomic uint64_t *x)
{
    return atomic_load_explicit(x, memory_order_relaxed);
}

/* relaxed: the dead lane wrote these words and nobody else writes them; the
 * master is the only writer now, and later readers synchronise through the
 * slot and lane words it stores with release. */
static inline void st(_Atomic uint64_t *x, uint64_t v)
{
    atomic_store_explicit(x, v, memory_order_relaxed);
}

/* Sets a single-writer column to old + delta unless it already is. */
static void complete(_Atomic uint64_t *col, uint64_t old, uint64_t delta)
{
    if (ld(col) == old)
        st(col, old + delta);
}

static void repair_money(struct gw_segment *seg, int L)
{
    struct gw_lane *ln = lane_at(seg, L);
    /* acquire: pairs with the release that set j_op; the journal fields are
     * complete. */
    uint64_t op = atomic_load_explicit(&ln->j_op, memory_order_acquire);
    if (op == J_IDLE)
        return;
    uint64_t js = ld(&ln->j_slot), x = ld(&ln->j_amount);
    uint32_t idx = (uint32_t)(js >> 32);
    if (idx >= seg->cfg.slots)
        goto done;
    struct gw_slot *s = slot_at(seg, idx);
    uint64_t refs[2] = {ld(&s->tenant), ld(&s->global)};
    struct gw_budget *b[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++)
        if (refs[i] & AREF_VALID)
            b[i] = gw__acct_budget(seg, AREF_ACCT(refs[i]));

    if (op == J_RESERVE) {
        /* The tenant column is written first: if it moved, the decision was
         * taken and the rest of the accounting must follow. */
        if (!b[0] || !b[1] || SS_SEQ(ld(&s->state)) != (uint32_t)js)
            goto done;
        if (ld(&b[0]->col[L].reserved_us) == ld(&ln->j_old[0]) + x) {
            complete(&b[1]->col[L].reserved_us, ld(&ln->j_old[1]), x);
            complete(&s->reserved_us, ld(&ln->j_old[2]), x);
        }
    } else if (op == J_SETTLE) {
        uint64_t sw = atomic_load_explicit(&s->settled, memory_order_acquire);
        if (SETTLE_PHASE(sw) != 1 || SETTLE_LANE(sw) != L)
            goto done; /* it never won the claim, or finished */
        if (b[0] && b[1]) {
            uint64_t u = ld(&ln->j_old[4]), r = x;
            complete(&b[0]->col[L].used_us, ld(&ln->j_old[0]), u);
            complete(&b[0]->col[L].refunded_us, ld(&ln->j_old[1]), r - u);
            complete(&b[1]->col[L].used_us, ld(&ln->j_old[2]), u);
            complete(&b[1]->col[L].refunded_us, ld(&ln->j_old[3]), r - u);
            /* A refund to the decision cells that may or may not have
             * happened is not repeated (the operator's favour, at most one
             * refund). The in-flight unit is returned unless it surely was:
             * a tenant must not lose concurrency for good. */
            uint64_t step = ld(&b[0]->col[L].step);
            if (step < 3 && (ld(&s->flags) & SLOT_INFLIGHT_HELD))
                (void)gw_ledger_inflight_put(seg, AREF_ACCT(refs[0]));
            st(&b[0]->col[L].step, 3);
        }
        atomic_store_explicit(&s->settled, SETTLE_DONE(L), memory_order_release);
    }
done:
    atomic_store_explicit(&ln->j_op, J_IDLE, memory_order_release);
}

static int lane_alive(const struct gw_segment *seg, int lane)
{
    pid_t pid = gw_lane_pid(seg, lane);
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Whether a RUNNING slot of a dead worker can be continued by another:
 * nothing asked it to stop (a cancel word names the culprit of a kill, or
 * a client that left), it was not continued before (a request present in
 * two crashes fails), its run has not finished, its ids fit the resume
 * area, and its front is alive to answer. */
static int resumable(struct gw_segment *seg, struct gw_slot *s, uint32_t i, int origin)
{
    struct gw_run_view run;
    gw_run_read(seg, i, &run);
    int32_t none;
    return seg->cfg.resume_tokens > 0 && run.cancel == 0 && run.finish == 0 &&
           !(ld(&s->flags) & (SLOT_RESUMED | SLOT_ORPHAN)) && gw_run_ids(seg, i, &none, 0) >= 0 &&
           origin != seg->lane && lane_alive(seg, origin);
}

/* Puts a dead worker's running slot back in the queue to be continued:
 * flagged first (release: the worker that takes it, acquiring the state,
 * sees the flag), then QUEUED, then a queue entry (a wake-up; the master
 * also writes the work eventfd). 1 when it was. */
static int requeue(struct gw_segment *seg, struct gw_slot *s, struct gw_slot_ref ref)
{
    atomic_fetch_or_explicit(&s->flags, SLOT_RESUMED, memory_order_release);
    if (gw__slot_move_as(seg, ref, GW_SLOT_RUNNING, GW_SLOT_QUEUED, 1) != 0)
        return 0;
    (void)gw_queue_push(seg, ref); /* a full queue: workers scan the slots anyway */
    return 1;
}

/* Fails (or, with resumed, puts back to be continued), settles and releases
 * what the dead lane left behind. */
static int repair_slots(struct gw_segment *seg, int L, int *resumed)
{
    int failed = 0;
    for (uint32_t i = 0; i < seg->cfg.slots; i++) {
        struct gw_slot *s = slot_at(seg, i);
        uint64_t w = atomic_load_explicit(&s->state, memory_order_acquire);
        int state = SS_STATE(w);
        if (state == GW_SLOT_FREE)
            continue;
        struct gw_slot_ref ref = {.index = i, .seq = SS_SEQ(w)};
        int origin = (int)ld(&s->origin);
        if (resumed && SS_LANE(w) == L && state == GW_SLOT_RUNNING &&
            resumable(seg, s, i, origin) && requeue(seg, s, ref)) {
            (*resumed)++;
            continue;
        }
        if (SS_LANE(w) == L &&
            (state == GW_SLOT_ADMITTED || state == GW_SLOT_QUEUED || state == GW_SLOT_RUNNING)) {
            if (gw__slot_move_as(seg, ref, state, GW_SLOT_FAILED, 1) == 0)
                failed++;
            state = gw_slot_state(seg, ref);
        }
        int terminal = state == GW_SLOT_DONE || state == GW_SLOT_FAILED || state == GW_SLOT_KILLED;
        if (!terminal && origin == L && state == GW_SLOT_RUNNING) {
            /* Its front died while a worker runs it: nobody listens. The
             * worker is told to stop (within one token), and the slot is
             * marked so the master settles and releases it once it is
             * terminal (gw_slot_reap_orphan, from the watchdog's scan).
             * release: the mark is visible to whoever sees the slot
             * terminal afterwards and acquires the flags. */
            atomic_fetch_or_explicit(&s->flags, SLOT_ORPHAN, memory_order_release);
            (void)gw_slot_cancel(seg, ref, GW_CANCEL_CLIENT);
            continue;
        }
        if (!terminal)
            continue;
        if (SS_LANE(w) == L || origin == L)
            (void)gw_budget_settle(seg, ref);
        if (origin == L || (origin != seg->lane && !lane_alive(seg, origin))) {
            (void)gw_budget_settle(seg, ref);
            (void)gw_slot_release(seg, ref);
        }
    }
    return failed;
}

int gw_lane_repair(struct gw_segment *seg, int L)
{
    return gw_lane_repair_resume(seg, L, NULL);
}

int gw_lane_repair_resume(struct gw_segment *seg, int L, int *resumed)
{
    if (resumed)
        *resumed = 0;
    if (L < 0 || (uint32_t)L >= seg->cfg.lanes || seg->lane < 0 || L == seg->lane)
        return -EINVAL;
    struct gw_lane *ln = lane_at(seg, L);
    pid_t pid = (pid_t)ld(&ln->pid);
    repair_money(seg, L);
    gw__queue_repair(seg, ln);
    if (pid > 0)
        gw__ledger_unlock_dead(seg, pid);
    int failed = repair_slots(seg, L, resumed);
    atomic_fetch_add_explicit(&seg->hdr->repairs, 1, memory_order_relaxed);
    /* release: everything repaired above is visible to the lane's next
     * holder, which acquires the pid word. */
    atomic_store_explicit(&ln->pid, 0, memory_order_release);
    return failed;
}

int gw_ledger_check(const struct gw_segment *seg, char *err, size_t errlen)
{
    uint64_t used = atomic_load_explicit(&seg->hdr->budgets_used, memory_order_relaxed);
    if (used > seg->cfg.budgets)
        used = seg->cfg.budgets;
    int bad = 0;
    for (uint64_t bi = 0; bi < used; bi++) {
        struct gw_budget *b = budget_at(seg, (uint32_t)bi);
        uint64_t acct = ld(&b->account);
        if (acct == 0)
            continue; /* allocated by an insert that died before publishing */
        uint64_t reserved = 0, u = 0, refunded = 0, held = 0;
        for (uint32_t l = 0; l < seg->cfg.lanes; l++) {
            reserved += ld(&b->col[l].reserved_us);
            u += ld(&b->col[l].used_us);
            refunded += ld(&b->col[l].refunded_us);
        }
        for (uint32_t i = 0; i < seg->cfg.slots; i++) {
            struct gw_slot *s = slot_at(seg, i);
            uint64_t w = atomic_load_explicit(&s->state, memory_order_acquire);
            if (SS_STATE(w) == GW_SLOT_FREE ||
                SETTLE_PHASE(atomic_load_explicit(&s->settled, memory_order_acquire)) == 2)
                continue;
            uint64_t t = ld(&s->tenant), g = ld(&s->global);
            uint32_t ai = (uint32_t)(acct - 1);
            if (((t & AREF_VALID) && AREF_ACCT(t).index == ai) ||
                ((g & AREF_VALID) && AREF_ACCT(g).index == ai))
                held += ld(&s->reserved_us);
        }
        if (reserved != u + refunded + held) {
            if (!bad && err)
                snprintf(err, errlen,
                         "account %" PRIu64 ": reserved %" PRIu64 " us != used %" PRIu64
                         " + refunded %" PRIu64 " + held by live slots %" PRIu64,
                         acct - 1, reserved, u, refunded, held);
            bad++;
        }
    }
    return bad;
}
