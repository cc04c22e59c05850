/* queue.c - bounded MPMC ring of slot references.
 *
 * Vyukov's algorithm with each cell packed into one word (sequence, value),
 * so that publishing and releasing a cell are single CASes. That is what
 * makes the queue repairable: a producer killed after taking a position but
 * before publishing would otherwise block every consumer at that position
 * forever; here the master fills the hole with QNIL by CAS, and if the
 * producer was only slow, its own publishing CAS fails and it retries at a
 * new position. Entries are hints (see gw_common.h): a consumer that pops a
 * stale or duplicated entry loses the QUEUED -> RUNNING CAS and moves on.
 */
#include "seg_internal.h"

#include <errno.h>

static inline struct gw_qcell *cell_at(const struct gw_segment *seg, uint64_t pos)
{
    return &seg->qcells[pos & (seg->cfg.queue - 1)];
}

int gw_queue_push(struct gw_segment *seg, struct gw_slot_ref ref)
{
    if (seg->lane < 0 || ref.index >= seg->cfg.slots)
        return -EINVAL;
    struct gw_lane *ln = lane_at(seg, seg->lane);
    uint32_t val = QV(ref);
    /* relaxed: the position is only a starting guess; the CAS on it decides. */
    uint64_t pos = atomic_load_explicit(&seg->hdr->enq_pos, memory_order_relaxed);
    for (;;) {
        struct gw_qcell *c = cell_at(seg, pos);
        /* acquire: pairs with the consumer's release of this cell. */
        uint64_t w = atomic_load_explicit(&c->w, memory_order_acquire);
        int32_t dif = (int32_t)(QW_SEQ(w) - (uint32_t)pos);
        if (dif == 0) {
            /* Journal the position before taking it (see gw_lane_repair). */
            atomic_store_explicit(&ln->q_pos, pos, memory_order_relaxed);
            atomic_store_explicit(&ln->q_val, val, memory_order_relaxed);
            atomic_store_explicit(&ln->q_op, Q_PUSH, memory_order_release);
            /* relaxed: the cursor orders nothing by itself; the cell's
             * sequence carries the publication. */
            if (atomic_compare_exchange_weak_explicit(&seg->hdr->enq_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                /* release: the value is visible with its sequence. A failure
                 * means the repair filled this hole: go round again. */
                int ok = atomic_compare_exchange_strong_explicit(
                    &c->w, &w, QW(pos + 1, val), memory_order_release, memory_order_relaxed);
                atomic_store_explicit(&ln->q_op, Q_IDLE, memory_order_release);
                if (ok)
                    return 0;
                pos = atomic_load_explicit(&seg->hdr->enq_pos, memory_order_relaxed);
            }
        } else if (dif < 0) {
            atomic_store_explicit(&ln->q_op, Q_IDLE, memory_order_release);
            return GW_EFULL;
        } else {
            pos = atomic_load_explicit(&seg->hdr->enq_pos, memory_order_relaxed);
        }
    }
}

int gw_queue_pop(struct gw_segment *seg, struct gw_slot_ref *out)
{
    if (seg->lane < 0)
        return -EINVAL;
    struct gw_lane *ln = lane_at(seg, seg->lane);
    uint64_t pos = atomic_load_explicit(&seg->hdr->deq_pos, memory_order_relaxed);
    for (;;) {
        struct gw_qcell *c = cell_at(seg, pos);
        /* acquire: pairs with the producer's release; the value is read from
         * the same word, before we take the position. */
        uint64_t w = atomic_load_explicit(&c->w, memory_order_acquire);
        int32_t dif = (int32_t)(QW_SEQ(w) - (uint32_t)(pos + 1));
        if (dif == 0) {
            atomic_store_explicit(&ln->q_pos, pos, memory_order_relaxed);
            atomic_store_explicit(&ln->q_op, Q_POP, memory_order_release);
            if (atomic_compare_exchange_weak_explicit(&seg->hdr->deq_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                /* release: hand the cell to the producer of the next lap. A
                 * failure means the repair released it already. */
                (void)atomic_compare_exchange_strong_explicit(
                    &c->w, &w, QW(pos + seg->cfg.queue, QNIL), memory_order_release,
                    memory_order_relaxed);
                uint32_t v = QW_VAL(w);
                if (v == QNIL) { /* a hole the repair left: skip it */
                    atomic_store_explicit(&ln->q_op, Q_IDLE, memory_order_release);
                    pos = atomic_load_explicit(&seg->hdr->deq_pos, memory_order_relaxed);
                    continue;
                }
                /* The entry is ours now but the slot is still QUEUED until
                 * the caller takes it (QUEUED -> RUNNING): the journal
                 * holds the entry until then, so a consumer killed in
                 * between does not lose the request (see the repair). */
                atomic_store_explicit(&ln->q_val, v, memory_order_relaxed);
                atomic_store_explicit(&ln->q_op, Q_HELD, memory_order_release);
                uint32_t idx = v >> 16;
                /* The queue carries 16 bits of the slot's sequence; the full
                 * one is taken from the slot when those bits agree, and the
                 * QUEUED -> RUNNING CAS rejects anything stale. */
                uint64_t sw = atomic_load_explicit(&slot_at(seg, idx)->state, memory_order_acquire);
                uint32_t seq = SS_SEQ(sw);
                if ((seq & 0xffff) != (v & 0xffff))
                    seq = (seq & ~0xffffu) | (v & 0xffff);
                *out = (struct gw_slot_ref){.index = idx, .seq = seq};
                return 0;
            }
        } else if (dif < 0) {
            atomic_store_explicit(&ln->q_op, Q_IDLE, memory_order_release);
            return GW_EEMPTY;
        } else {
            pos = atomic_load_explicit(&seg->hdr->deq_pos, memory_order_relaxed);
        }
    }
}

uint64_t gw_queue_depth(const struct gw_segment *seg)
{
    uint64_t e = atomic_load_explicit(&seg->hdr->enq_pos, memory_order_relaxed);
    uint64_t d = atomic_load_explicit(&seg->hdr->deq_pos, memory_order_relaxed);
    return e > d ? e - d : 0;
}

void gw__queue_repair(struct gw_segment *seg, struct gw_lane *ln)
{
    uint64_t op = atomic_load_explicit(&ln->q_op, memory_order_acquire);
    uint64_t pos = atomic_load_explicit(&ln->q_pos, memory_order_relaxed);
    struct gw_qcell *c = cell_at(seg, pos);
    uint64_t w = atomic_load_explicit(&c->w, memory_order_acquire);
    if (op == Q_PUSH && atomic_load_explicit(&seg->hdr->enq_pos, memory_order_relaxed) > pos &&
        QW_SEQ(w) == (uint32_t)pos) {
        /* Position taken (by the dead producer, or by a live one that has
         * not published yet), value not published: fill the hole. A live
         * producer's publish then fails and it retries elsewhere. */
        (void)atomic_compare_exchange_strong_explicit(&c->w, &w, QW(pos + 1, QNIL),
                                                      memory_order_release, memory_order_relaxed);
    } else if (op == Q_POP &&
               atomic_load_explicit(&seg->hdr->deq_pos, memory_order_relaxed) > pos &&
               QW_SEQ(w) == (uint32_t)(pos + 1)) {
        /* Consumed (by the dead consumer, or a live one about to release)
         * but not released: release it, and put the slot back if nobody
         * took it. A live consumer that had it wins the slot's CAS; the
         * re-queued entry is then stale and skipped. */
        uint32_t v = QW_VAL(w);
        if (atomic_compare_exchange_strong_explicit(&c->w, &w, QW(pos + seg->cfg.queue, QNIL),
                                                    memory_order_release, memory_order_relaxed) &&
            v != QNIL) {
            uint32_t idx = v >> 16;
            uint64_t sw = atomic_load_explicit(&slot_at(seg, idx)->state, memory_order_acquire);
            if (SS_STATE(sw) == GW_SLOT_QUEUED && (SS_SEQ(sw) & 0xffff) == (v & 0xffff))
                (void)gw_queue_push(seg, (struct gw_slot_ref){.index = idx, .seq = SS_SEQ(sw)});
        }
    }
    if (op == Q_HELD) {
        /* It had popped an entry: if its slot is still QUEUED nobody took
         * it, so it goes back in the queue. If a later incarnation is
         * QUEUED, the sequence bits differ and nothing happens. */
        uint32_t v = (uint32_t)atomic_load_explicit(&ln->q_val, memory_order_relaxed);
        uint32_t idx = v >> 16;
        if (v != QNIL && idx < seg->cfg.slots) {
            uint64_t sw = atomic_load_explicit(&slot_at(seg, idx)->state, memory_order_acquire);
            if (SS_STATE(sw) == GW_SLOT_QUEUED && (SS_SEQ(sw) & 0xffff) == (v & 0xffff))
                (void)gw_queue_push(seg, (struct gw_slot_ref){.index = idx, .seq = SS_SEQ(sw)});
        }
    }
    atomic_store_explicit(&ln->q_op, Q_IDLE, memory_order_release);
}
