/* admin_cluster.c - the admin socket's `cluster` command (issue 19): the
 * farm as this node sees it, read from the segment's cluster region
 * (common/cluster.c) that the cluster agent keeps. Operator level. */
#include "admin_internal.h"

#include <stdio.h>
#include <string.h>

/* A tenant's GPU lease on this node: what is left of it (GPU-us), when it
 * ends, what waits for one, and what was granted. */
static json_t *gpu_lease(const struct gw_segment *seg, uint32_t i, uint64_t now)
{
    struct gw_cl_gpu g;
    gw_cluster_gpu_cell(seg, i, &g);
    uint64_t left = g.expires_us > now ? g.expires_us - now : 0;
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I}", "us", (json_int_t)(left || g.tokens < 0 ? g.tokens : 0),
        "ends_in_ms", (json_int_t)(left / 1000), "waiting_us", (json_int_t)g.want, "denied_for_ms",
        (json_int_t)(g.deny_until > now ? (g.deny_until - now) / 1000 : 0), "granted_us",
        (json_int_t)g.granted, "fail_open_unreconciled_us", (json_int_t)g.open_spent);
}

/* A tenant's output-token lease on this node: what is left of it (below 0:
 * a debt), when it ends, the requests waiting, and what was granted. */
static json_t *out_lease(const struct gw_segment *seg, uint32_t i, uint64_t now)
{
    struct gw_cl_out o;
    gw_cluster_out_cell(seg, i, &o);
    uint64_t left = o.expires_us > now ? o.expires_us - now : 0;
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "tokens",
                     (json_int_t)(left || o.tokens < 0 ? o.tokens : 0), "ends_in_ms",
                     (json_int_t)(left / 1000), "waiting", (json_int_t)o.want, "denied_for_ms",
                     (json_int_t)(o.deny_until > now ? (o.deny_until - now) / 1000 : 0), "granted",
                     (json_int_t)o.granted, "charged", (json_int_t)o.charged,
                     "fail_open_unreconciled", (json_int_t)o.open_spent);
}

/* The farm as this node sees it (issue 19): Redis's state, live nodes,
 * the agent's counters, and each tenant's lease on this node. */
json_t *gw__admin_cmd_cluster(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    (void)uid;
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    const struct gw_cluster_cfg *cl = &cfg->cluster;
    if (!cl->enabled)
        return json_pack("{s:b,s:b}", "ok", 1, "enabled", 0);
    struct gw_cl_status st;
    gw_cluster_status(a->seg, &st);
    static const char *const names[] = {"redis_round_trips",
                                        "lease_grants",
                                        "lease_tokens",
                                        "returned_tokens",
                                        "denials",
                                        "redis_timeouts",
                                        "redis_errors",
                                        "fail_open_admits",
                                        "fail_closed_refusals",
                                        "reconciled",
                                        "fail_open_us",
                                        "lease_round_trips",
                                        "gpu_lease_grants",
                                        "gpu_lease_us",
                                        "gpu_returned_us",
                                        "gpu_denials",
                                        "gpu_fail_open_us",
                                        "gpu_reconciled_us",
                                        "gpu_shortfalls",
                                        "gpu_overdrawn_us",
                                        "output_lease_grants",
                                        "output_lease_tokens",
                                        "output_returned_tokens",
                                        "output_denials",
                                        "output_fail_open_tokens",
                                        "output_reconciled_tokens",
                                        "output_overrun_tokens"};
    _Static_assert(sizeof(names) / sizeof(names[0]) == GW_CLC_COUNT, "a name per counter");
    json_t *counters = json_object();
    for (int i = 0; i < GW_CLC_COUNT; i++)
        json_object_set_new(counters, names[i], json_integer((json_int_t)st.counters[i]));
    json_t *leases = json_array();
    uint64_t now = gw_now_us();
    for (uint32_t i = 0; i < a->seg->cfg.budgets; i++) {
        struct gw_cl_cell c;
        char id[GW_ID_MAX + 1];
        enum gw_kind kind;
        if (gw_cluster_cell(a->seg, i, &c) != 0 ||
            gw_ledger_id(a->seg, c.acct, &kind, id, sizeof(id)) == 0)
            continue;
        uint64_t left = c.tokens && c.expires_us > now ? c.expires_us - now : 0;
        json_t *l =
            json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "tenant", id, "tokens",
                      (json_int_t)(left ? c.tokens : 0), "ends_in_ms", (json_int_t)(left / 1000),
                      "waiting", (json_int_t)c.want, "denied_for_ms",
                      (json_int_t)(c.deny_until > now ? (c.deny_until - now) / 1000 : 0), "granted",
                      (json_int_t)c.granted, "fail_open_unreconciled", (json_int_t)c.open_spent);
        json_object_set_new(l, "gpu", gpu_lease(a->seg, i, now));
        json_object_set_new(l, "output", out_lease(a->seg, i, now));
        json_array_append_new(leases, l);
    }
    char peers[1024];
    json_t *nodes = json_array();
    if (gw_cluster_peers(a->seg, peers, sizeof(peers)) >= 0)
        for (char *save = NULL, *n = strtok_r(peers, "\n", &save); n;
             n = strtok_r(NULL, "\n", &save))
            json_array_append_new(nodes, json_string(n));
    char redis[300];
    snprintf(redis, sizeof(redis), strchr(cl->redis_host, ':') ? "[%s]:%d" : "%s:%d",
             cl->redis_host, cl->redis_port);
    return json_pack("{s:b,s:b,s:s,s:s,s:s,s:I,s:I,s:o,s:o,s:o}", "ok", 1, "enabled", 1, "node",
                     cl->node, "redis", redis, "redis_state", gw_cluster_state_name(st.state),
                     "state_since_us", (json_int_t)st.since_us, "live_nodes",
                     (json_int_t)st.live_nodes, "nodes", nodes, "counters", counters, "leases",
                     leases);
}
