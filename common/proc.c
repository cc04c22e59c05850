/* proc.c - what each lane says about its process: role, readiness,
 * heartbeat, and for workers the measured cost of a token. Each record is
 * written by its own process; readers (master, fronts, admin) take
 * snapshots with relaxed loads: every field is a number on its own, no
 * field publishes another. */
#include "seg_internal.h"

#include <errno.h>

static struct gw_lane *mine(struct gw_segment *seg)
{
    return seg->lane >= 0 ? lane_at(seg, seg->lane) : NULL;
}

void gw_proc_set_role(struct gw_segment *seg, int role, int index)
{
    struct gw_lane *ln = mine(seg);
    if (!ln)
        return;
    atomic_store_explicit(&ln->role, (uint32_t)role, memory_order_relaxed);
    atomic_store_explicit(&ln->index, (uint32_t)index, memory_order_relaxed);
    atomic_store_explicit(&ln->state, GW_PROC_STARTING, memory_order_relaxed);
    atomic_store_explicit(&ln->drain, 0, memory_order_relaxed);
    atomic_store_explicit(&ln->us_per_token, 0, memory_order_relaxed);
    atomic_store_explicit(&ln->slot, -1, memory_order_relaxed);
    atomic_store_explicit(&ln->heartbeat_ns, gw_mono_ns(), memory_order_relaxed);
}

void gw_proc_set_state(struct gw_segment *seg, int state)
{
    struct gw_lane *ln = mine(seg);
    if (ln)
        atomic_store_explicit(&ln->state, (uint32_t)state, memory_order_relaxed);
}

void gw_proc_heartbeat(struct gw_segment *seg, int64_t slot)
{
    struct gw_lane *ln = mine(seg);
    if (!ln)
        return;
    atomic_store_explicit(&ln->slot, slot, memory_order_relaxed);
    atomic_store_explicit(&ln->heartbeat_ns, gw_mono_ns(), memory_order_relaxed);
}

void gw_proc_set_cost(struct gw_segment *seg, uint64_t us_per_token)
{
    struct gw_lane *ln = mine(seg);
    if (ln)
        atomic_store_explicit(&ln->us_per_token, us_per_token, memory_order_relaxed);
}

int gw_proc_get(const struct gw_segment *seg, int lane, struct gw_proc_info *out)
{
    if (lane < 0 || (uint32_t)lane >= seg->cfg.lanes)
        return -EINVAL;
    struct gw_lane *ln = lane_at(seg, lane);
    uint64_t pid = atomic_load_explicit(&ln->pid, memory_order_acquire);
    if (pid == 0)
        return -ENOENT;
    out->pid = (pid_t)pid;
    out->role = (int)atomic_load_explicit(&ln->role, memory_order_relaxed);
    out->index = (int)atomic_load_explicit(&ln->index, memory_order_relaxed);
    out->state = (int)atomic_load_explicit(&ln->state, memory_order_relaxed);
    out->heartbeat_ns = atomic_load_explicit(&ln->heartbeat_ns, memory_order_relaxed);
    out->us_per_token = atomic_load_explicit(&ln->us_per_token, memory_order_relaxed);
    out->slot = atomic_load_explicit(&ln->slot, memory_order_relaxed);
    return 0;
}

int gw_proc_request_drain(struct gw_segment *seg, int lane, int drain)
{
    if (lane < 0 || (uint32_t)lane >= seg->cfg.lanes)
        return -EINVAL;
    /* relaxed: a flag on its own; the worker reads it before each slot and
     * at worst takes one more slot before it sees the request. */
    atomic_store_explicit(&lane_at(seg, lane)->drain, drain ? 1u : 0u, memory_order_relaxed);
    return 0;
}

int gw_proc_drain_of(const struct gw_segment *seg, int lane)
{
    if (lane < 0 || (uint32_t)lane >= seg->cfg.lanes)
        return 0;
    /* relaxed: see gw_proc_request_drain. */
    return atomic_load_explicit(&lane_at(seg, lane)->drain, memory_order_relaxed) != 0;
}

int gw_proc_drain_requested(const struct gw_segment *seg)
{
    return gw_proc_drain_of(seg, seg->lane);
}
