/* run.c - a slot's run record: what the worker running a request publishes
 * for the front that answers it, the master's watchdog and the admin socket.
 *
 * Who writes: the worker that moved the slot QUEUED -> RUNNING is the only
 * writer of every word but two: the cancel word (gw_slot_cancel: a front,
 * the watchdog, the admin socket) and, for a slot cancelled before any
 * worker took it, the finish reason (its front). The record is cleared by
 * gw_slot_release before the slot is FREE again (slot.c).
 *
 * Why relaxed is enough almost everywhere: the counters are statistics that
 * each reader takes one word at a time (a watchdog scan that sees 41 tokens
 * with the device time of 40 judges the next scan right); none of them
 * guards other memory. The two words that do are ordered elsewhere:
 *  - `written` guards the output area: release here, acquire in
 *    gw_run_written, so a reader never sees a byte count before its bytes;
 *  - `finish` and `error` are written before the worker's release of the
 *    slot's terminal state (gw_slot_move), and read by a front that saw that
 *    state with acquire, so the front reads them complete.
 */
#include "seg_internal.h"

#include <string.h>

void gw_run_read(const struct gw_segment *seg, uint32_t index, struct gw_run_view *out)
{
    const struct gw_slot_run *r = gw__slot_run(seg, index);
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    /* relaxed: statistics, each read once (see the top of this file) */
    out->tokens = atomic_load_explicit(&r->tokens, memory_order_relaxed);
    out->prompt_tokens = atomic_load_explicit(&r->prompt_tokens, memory_order_relaxed);
    out->device_ns = atomic_load_explicit(&r->device_ns, memory_order_relaxed);
    out->started_ns = atomic_load_explicit(&r->started_ns, memory_order_relaxed);
    out->progress_ns = atomic_load_explicit(&r->progress_ns, memory_order_relaxed);
    out->rep = atomic_load_explicit(&r->rep, memory_order_relaxed);
    out->rep_max = atomic_load_explicit(&r->rep_max, memory_order_relaxed);
    /* relaxed: a front reads finish after acquiring the terminal state,
     * which the worker released after writing it */
    out->finish = atomic_load_explicit(&r->finish, memory_order_relaxed);
    out->cancel = atomic_load_explicit(&r->cancel, memory_order_relaxed);
}

uint64_t gw_run_written(const struct gw_segment *seg, uint32_t index)
{
    const struct gw_slot_run *r = gw__slot_run(seg, index);
    /* acquire: pairs with gw_run_publish's release; the output bytes below
     * the count are complete when we read them */
    return r ? atomic_load_explicit(&r->written, memory_order_acquire) : 0;
}

uint32_t gw_run_cancel_word(const struct gw_segment *seg, uint32_t index)
{
    const struct gw_slot_run *r = gw__slot_run(seg, index);
    /* relaxed: a flag polled between tokens; it guards no other memory (the
     * worker reads nothing its setter wrote) and a late sight costs one
     * more token at most */
    return r ? atomic_load_explicit(&r->cancel, memory_order_relaxed) : 0;
}

uint32_t gw_run_finish_reason(const struct gw_segment *seg, uint32_t index)
{
    const struct gw_slot_run *r = gw__slot_run(seg, index);
    /* relaxed: ordered by the slot's terminal state (top of this file) */
    return r ? atomic_load_explicit(&r->finish, memory_order_relaxed) : 0;
}

size_t gw_run_error(const struct gw_segment *seg, uint32_t index, char *buf, size_t len)
{
    const struct gw_slot_run *r = gw__slot_run(seg, index);
    if (!buf || len == 0)
        return 0;
    buf[0] = '\0';
    if (!r)
        return 0;
    /* plain bytes: written before the terminal state was released, read by
     * a front that acquired it */
    size_t n = strnlen(r->error, sizeof(r->error) - 1);
    if (n >= len)
        n = len - 1;
    memcpy(buf, r->error, n);
    buf[n] = '\0';
    return n;
}

void gw_run_begin(struct gw_segment *seg, uint32_t index, uint64_t started_ns)
{
    struct gw_slot_run *r = gw__slot_run(seg, index);
    if (r) /* relaxed: a statistic (the watchdog's wall-time base) */
        atomic_store_explicit(&r->started_ns, started_ns, memory_order_relaxed);
}

void gw_run_set_prompt_tokens(struct gw_segment *seg, uint32_t index, uint64_t n)
{
    struct gw_slot_run *r = gw__slot_run(seg, index);
    if (r) /* relaxed: a statistic */
        atomic_store_explicit(&r->prompt_tokens, n, memory_order_relaxed);
}

void gw_run_step(struct gw_segment *seg, uint32_t index, const struct gw_run_step *st)
{
    struct gw_slot_run *r = gw__slot_run(seg, index);
    if (!r)
        return;
    /* relaxed: each word is judged on its own by the watchdog */
    atomic_store_explicit(&r->tokens, st->tokens, memory_order_relaxed);
    atomic_store_explicit(&r->device_ns, st->device_ns, memory_order_relaxed);
    atomic_store_explicit(&r->progress_ns, st->progress_ns, memory_order_relaxed);
    atomic_store_explicit(&r->rep, st->rep, memory_order_relaxed);
    atomic_store_explicit(&r->rep_max, st->rep_max, memory_order_relaxed);
}

void gw_run_publish(struct gw_segment *seg, uint32_t index, uint64_t written)
{
    struct gw_slot_run *r = gw__slot_run(seg, index);
    /* release: the output bytes below `written` are visible to a reader
     * that acquires the count (gw_run_written) */
    if (r)
        atomic_store_explicit(&r->written, written, memory_order_release);
}

void gw_run_finish(struct gw_segment *seg, uint32_t index, uint32_t finish)
{
    struct gw_slot_run *r = gw__slot_run(seg, index);
    /* relaxed: published by the release of the slot's terminal state */
    if (r)
        atomic_store_explicit(&r->finish, finish, memory_order_relaxed);
}

void gw_run_fail(struct gw_segment *seg, uint32_t index, const char *why)
{
    struct gw_slot_run *r = gw__slot_run(seg, index);
    if (!r)
        return;
    size_t n = strnlen(why ? why : "", sizeof(r->error) - 1);
    memcpy(r->error, why ? why : "", n);
    r->error[n] = '\0';
    /* relaxed: error and finish are published by the release of the slot's
     * terminal state */
    atomic_store_explicit(&r->finish, GW_FIN_ERROR, memory_order_relaxed);
}

/* The resume area: a count word, then the ids. NULL without one. */
static _Atomic uint64_t *resume_area(const struct gw_segment *seg, uint32_t index)
{
    if (index >= seg->cfg.slots || seg->cfg.resume_tokens == 0)
        return NULL;
    char *out = gw_slot_output(seg, index);
    return (_Atomic uint64_t *)(void *)(out + seg->cfg.output_bytes);
}

/* The count word's top bit: an id past the area was pushed. */
#define RESUME_OVERFLOW (1ull << 63)

void gw_run_push_id(struct gw_segment *seg, uint32_t index, uint64_t k, int32_t id)
{
    _Atomic uint64_t *a = resume_area(seg, index);
    if (!a)
        return;
    if (k >= seg->cfg.resume_tokens) {
        /* relaxed: only the repair reads it, after this process is dead */
        atomic_store_explicit(a, RESUME_OVERFLOW, memory_order_relaxed);
        return;
    }
    int32_t *ids = (int32_t *)(void *)(a + 1);
    ids[k] = id;
    /* release: the id above is written before the count that covers it */
    atomic_store_explicit(a, k + 1, memory_order_release);
}

int64_t gw_run_ids(const struct gw_segment *seg, uint32_t index, int32_t *out, uint64_t cap)
{
    _Atomic uint64_t *a = resume_area(seg, index);
    if (!a)
        return -1;
    /* acquire: pairs with gw_run_push_id's release */
    uint64_t n = atomic_load_explicit(a, memory_order_acquire);
    if (n & RESUME_OVERFLOW)
        return -1;
    const int32_t *ids = (const int32_t *)(const void *)(a + 1);
    memcpy(out, ids, (n < cap ? n : cap) * sizeof(int32_t));
    return (int64_t)n;
}

void gw_run_ids_reset(struct gw_segment *seg, uint32_t index)
{
    _Atomic uint64_t *a = resume_area(seg, index);
    if (a) /* relaxed: the slot's new owner is its only writer */
        atomic_store_explicit(a, 0, memory_order_relaxed);
}
