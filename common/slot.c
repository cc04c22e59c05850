/* slot.c - the slot state machine.
 *
 * The state word (sequence, owner lane, state) changes only by CAS, so each
 * transition happens once even when two processes (a worker finishing and
 * the watchdog killing) race for it; the loser gets GW_ESTATE. Claiming a
 * slot bumps its sequence, so a reference to a previous request can never
 * move the next one.
 */
#include "seg_internal.h"

#include <errno.h>
#include <string.h>

static const char *const names[] = {"free", "admitted", "queued", "running",
                                    "done", "failed",   "killed"};

const char *gw_slot_state_name(int state)
{
    return state >= 0 && state <= GW_SLOT_KILLED ? names[state] : "invalid";
}

static int terminal(int s)
{
    return s == GW_SLOT_DONE || s == GW_SLOT_FAILED || s == GW_SLOT_KILLED;
}

/* The transitions gw_slot_move allows (claim and release have their own
 * functions, with their own conditions). */
static int legal(int from, int to)
{
    switch (from) {
    case GW_SLOT_ADMITTED:
        return to == GW_SLOT_QUEUED || to == GW_SLOT_FAILED || to == GW_SLOT_KILLED;
    case GW_SLOT_QUEUED:
        return to == GW_SLOT_RUNNING || to == GW_SLOT_FAILED || to == GW_SLOT_KILLED;
    case GW_SLOT_RUNNING:
        return terminal(to);
    default:
        return 0;
    }
}

struct gw_slot *gw__slot_get(const struct gw_segment *seg, struct gw_slot_ref ref, uint64_t *w)
{
    if (ref.index >= seg->cfg.slots)
        return NULL;
    struct gw_slot *s = slot_at(seg, ref.index);
    /* acquire: pairs with the release of the transition that produced this
     * state, so the fields the previous owner wrote are visible. */
    *w = atomic_load_explicit(&s->state, memory_order_acquire);
    return SS_SEQ(*w) == ref.seq ? s : NULL;
}

int gw_slot_claim(struct gw_segment *seg, struct gw_slot_ref *out)
{
    if (seg->lane < 0)
        return -EINVAL;
    uint32_t n = seg->cfg.slots;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = (seg->slot_hint + i) % n;
        struct gw_slot *s = slot_at(seg, idx);
        uint64_t w = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (SS_STATE(w) != GW_SLOT_FREE)
            continue;
        uint32_t seq = SS_SEQ(w) + 1;
        /* acq_rel: acquire the release that freed the slot (its fields were
         * cleared before it became FREE); release our claim. */
        if (!atomic_compare_exchange_strong_explicit(&s->state, &w,
                                                     SS(seq, seg->lane, GW_SLOT_ADMITTED),
                                                     memory_order_acq_rel, memory_order_relaxed))
            continue;
        /* relaxed: fields of a slot we own, published by our next
         * transition's release (or read by the repair after we die). */
        atomic_store_explicit(&s->origin, (uint64_t)seg->lane, memory_order_relaxed);
        seg->slot_hint = (idx + 1) % n;
        *out = (struct gw_slot_ref){.index = idx, .seq = seq};
        return 0;
    }
    return GW_EFULL;
}

int gw__slot_move_as(struct gw_segment *seg, struct gw_slot_ref ref, int from, int to, int force)
{
    if (seg->lane < 0)
        return -EINVAL;
    /* RUNNING -> QUEUED only by the repair: a dead worker's request put
     * back to be continued (gw_lane_repair) */
    if (!legal(from, to) && !(force && from == GW_SLOT_RUNNING && to == GW_SLOT_QUEUED))
        return GW_ESTATE;
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || SS_STATE(w) != from)
        return GW_ESTATE;
    /* ADMITTED and RUNNING slots move only by their owner (the front, the
     * worker): the owner may be writing money or output into them. A QUEUED
     * slot is up for grabs: a worker takes it, or its front cancels it. The
     * repair moves a dead owner's slots (force). */
    if (from != GW_SLOT_QUEUED && SS_LANE(w) != seg->lane && !force)
        return GW_ESTATE;
    /* acq_rel: release what we wrote into the slot before this transition
     * (request, output) to the next owner; acquire the previous owner's. A
     * failed CAS means another process moved it first: it wins. */
    if (!atomic_compare_exchange_strong_explicit(&s->state, &w, SS(ref.seq, seg->lane, to),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return GW_ESTATE;
    return 0;
}

int gw_slot_move(struct gw_segment *seg, struct gw_slot_ref ref, int from, int to)
{
    return gw__slot_move_as(seg, ref, from, to, 0);
}

int gw_slot_state(const struct gw_segment *seg, struct gw_slot_ref ref)
{
    uint64_t w;
    return gw__slot_get(seg, ref, &w) ? SS_STATE(w) : -1;
}

int gw_slot_owner(const struct gw_segment *seg, struct gw_slot_ref ref)
{
    uint64_t w;
    return gw__slot_get(seg, ref, &w) ? SS_LANE(w) : -1;
}

int gw_slot_set_accounts(struct gw_segment *seg, struct gw_slot_ref ref, struct gw_acct tenant,
                         struct gw_acct global, int inflight_held)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || SS_STATE(w) != GW_SLOT_ADMITTED || SS_LANE(w) != seg->lane)
        return GW_ESTATE;
    if (!gw__acct_budget(seg, tenant) || !gw__acct_budget(seg, global))
        return -EINVAL;
    /* relaxed: owner-written fields; see gw_slot_claim. */
    atomic_store_explicit(&s->tenant, AREF(tenant), memory_order_relaxed);
    atomic_store_explicit(&s->global, AREF(global), memory_order_relaxed);
    atomic_store_explicit(&s->flags, inflight_held ? SLOT_INFLIGHT_HELD : 0, memory_order_relaxed);
    return 0;
}

int gw_slot_tenant(const struct gw_segment *seg, struct gw_slot_ref ref, struct gw_acct *out)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s)
        return GW_ESTATE;
    /* relaxed: written by the claimer before the slot left ADMITTED, and
     * the acquire in gw__slot_get pairs with that transition's release. */
    uint64_t t = atomic_load_explicit(&s->tenant, memory_order_relaxed);
    if (!(t & AREF_VALID))
        return -ENOENT;
    *out = AREF_ACCT(t);
    return 0;
}

int gw_slot_reap_orphan(struct gw_segment *seg, struct gw_slot_ref ref)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || !terminal(SS_STATE(w)))
        return 0;
    /* acquire: pairs with the repair's release of the mark. */
    if (!(atomic_load_explicit(&s->flags, memory_order_acquire) & SLOT_ORPHAN))
        return 0;
    int rc = gw_budget_settle(seg, ref);
    if (rc < 0)
        return rc;
    rc = gw_slot_release(seg, ref);
    return rc == 0 ? 1 : rc;
}

int gw_slot_money(const struct gw_segment *seg, struct gw_slot_ref ref, uint64_t *reserved_us,
                  uint64_t *used_us, int *settled)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s)
        return GW_ESTATE;
    *reserved_us = atomic_load_explicit(&s->reserved_us, memory_order_relaxed);
    *used_us = atomic_load_explicit(&s->used_us, memory_order_relaxed);
    *settled = SETTLE_PHASE(atomic_load_explicit(&s->settled, memory_order_acquire)) == 2;
    return 0;
}

int gw_slot_release(struct gw_segment *seg, struct gw_slot_ref ref)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || !terminal(SS_STATE(w)))
        return GW_ESTATE;
    /* acquire: the settlement's writes happen-before our clearing. */
    if (SETTLE_PHASE(atomic_load_explicit(&s->settled, memory_order_acquire)) != 2)
        return GW_ESTATE;
    /* Fields are cleared while the slot is still terminal, so whoever claims
     * it next finds them clean; a slot is FREE only with clean fields. Only
     * the CAS below decides who releases, so a second releaser changes
     * nothing that matters: the values it writes are the same zeros. */
    atomic_store_explicit(&s->reserved_us, 0, memory_order_relaxed);
    atomic_store_explicit(&s->used_us, 0, memory_order_relaxed);
    atomic_store_explicit(&s->tenant, 0, memory_order_relaxed);
    atomic_store_explicit(&s->global, 0, memory_order_relaxed);
    atomic_store_explicit(&s->flags, 0, memory_order_relaxed);
    atomic_store_explicit(&s->settled, 0, memory_order_relaxed);
    struct gw_slot_run *run = &s->run;
    atomic_store_explicit(&run->written, 0, memory_order_relaxed);
    atomic_store_explicit(&run->tokens, 0, memory_order_relaxed);
    atomic_store_explicit(&run->prompt_tokens, 0, memory_order_relaxed);
    atomic_store_explicit(&run->device_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&run->started_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&run->progress_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&run->rep, 0, memory_order_relaxed);
    atomic_store_explicit(&run->rep_max, 0, memory_order_relaxed);
    atomic_store_explicit(&run->finish, 0, memory_order_relaxed);
    atomic_store_explicit(&run->cancel, 0, memory_order_relaxed);
    run->error[0] = '\0';
    /* release: the cleared fields are visible to the next claimer, which
     * acquires this word. */
    if (!atomic_compare_exchange_strong_explicit(&s->state, &w,
                                                 SS(ref.seq, SS_LANE(w), GW_SLOT_FREE),
                                                 memory_order_release, memory_order_relaxed))
        return GW_ESTATE;
    return 0;
}

static const char *const finish_names[] = {"none",   "stop",      "length", "budget",
                                           "killed", "cancelled", "error"};

const char *gw_finish_name(int reason)
{
    return reason >= 0 && reason <= GW_FIN_ERROR ? finish_names[reason] : "unknown";
}

int gw_slot_set_req(struct gw_segment *seg, struct gw_slot_ref ref, const struct gw_slot_req *req)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || SS_STATE(w) != GW_SLOT_ADMITTED || SS_LANE(w) != seg->lane)
        return GW_ESTATE;
    /* Plain bytes: nobody else reads an ADMITTED slot's request; the
     * ADMITTED -> QUEUED transition (acq_rel, gw_slot_move) publishes it to
     * whoever acquires the slot's state afterwards. */
    memcpy(&s->req, req, sizeof(s->req));
    return 0;
}

int gw_slot_get_req(const struct gw_segment *seg, struct gw_slot_ref ref, struct gw_slot_req *out)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s)
        return GW_ESTATE;
    /* The request is written once, while ADMITTED, before the acq_rel move
     * to QUEUED that the acquire in gw__slot_get pairs with; past ADMITTED
     * it is complete. (While ADMITTED its front may still be writing it:
     * only the admin socket's listings read it then.) A slot released and
     * claimed again while we copy may hand us a mix of two requests: the
     * sequence is read again below and such a copy is refused. */
    memcpy(out, &s->req, sizeof(*out));
    out->id[sizeof(out->id) - 1] = '\0';
    out->tenant[sizeof(out->tenant) - 1] = '\0';
    out->ip[sizeof(out->ip) - 1] = '\0';
    if (SS_STATE(w) == GW_SLOT_FREE || !gw__slot_get(seg, ref, &w))
        return GW_ESTATE;
    return SS_STATE(w);
}

struct gw_slot_run *gw__slot_run(const struct gw_segment *seg, uint32_t index)
{
    return index < seg->cfg.slots ? &slot_at(seg, index)->run : NULL;
}

char *gw_slot_prompt(const struct gw_segment *seg, uint32_t index)
{
    return index < seg->cfg.slots ? (char *)slot_at(seg, index) + SLOT_FIXED_BYTES : NULL;
}

char *gw_slot_output(const struct gw_segment *seg, uint32_t index)
{
    return index < seg->cfg.slots
               ? (char *)slot_at(seg, index) + SLOT_FIXED_BYTES + seg->cfg.prompt_bytes
               : NULL;
}

int gw_slot_cancel(struct gw_segment *seg, struct gw_slot_ref ref, uint32_t reason)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    if (!s || reason == 0)
        return -EINVAL;
    uint32_t none = 0;
    /* relaxed: a flag the worker polls between tokens; it publishes
     * nothing else. */
    return atomic_compare_exchange_strong_explicit(&s->run.cancel, &none, reason,
                                                   memory_order_relaxed, memory_order_relaxed)
               ? 0
               : -EALREADY;
}

int gw_slot_peek(const struct gw_segment *seg, uint32_t index, struct gw_slot_ref *ref)
{
    if (index >= seg->cfg.slots)
        return -EINVAL;
    /* acquire: pairs with the transition that published this state, so a
     * request read afterwards is at least as new as the state. */
    uint64_t w = atomic_load_explicit(&slot_at(seg, index)->state, memory_order_acquire);
    *ref = (struct gw_slot_ref){.index = index, .seq = SS_SEQ(w)};
    return SS_STATE(w);
}

int gw_slot_resumed(const struct gw_segment *seg, struct gw_slot_ref ref)
{
    uint64_t w;
    struct gw_slot *s = gw__slot_get(seg, ref, &w);
    /* acquire: pairs with the repair's release of the flag */
    return s && (atomic_load_explicit(&s->flags, memory_order_acquire) & SLOT_RESUMED) ? 1 : 0;
}
