/* front_cluster.c - step 3b of admission on a node in a farm: the tenant's
 * farm-wide unit (docs/ARCHITECTURE.md, "The farm").
 *
 * The front takes one request token from the node's lease in the segment
 * (gw_cluster_take: one CAS, no lock, no Redis). Only when the lease is
 * empty does the request wait: it is parked here, the agent is woken
 * through the demand futex, and the request resumes when the agent has put
 * a lease into the cell (it writes the fronts' eventfds) or is answered by
 * its plan's fail mode when Redis is down or nothing came within
 * cluster.wait_ms. The front's loop never blocks: parked requests are
 * looked at on each wake-up and each tick.
 */
#include "front_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void answer_denied(struct admission *a, uint64_t retry_us)
{
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (retry_us + 999999) / 1000000);
    gw_metrics_refusal(a->seg, GW_REF_TENANT_RATE);
    gw_tstat_refusal(a->seg, a->tenant, GW_REF_TENANT_RATE);
    gw__conn_error(a->c, 429, "rate_limit_error", "rate_limited",
                   "rate limit reached for this tenant across the farm", NULL, hdr);
}

/* Redis is away (or nothing came in time): the plan decides. 0 admitted
 * fail-open (go on), -1 answered. */
static int fail_mode(struct admission *a)
{
    const struct gw_cluster_cfg *cl = &a->cfg->cluster;
    uint64_t retry = 0;
    if (gw_cluster_fail_mode(cl, a->plan->name) == GW_FAIL_CLOSED) {
        gw_cluster_count(a->seg, GW_CLC_CLOSED_REFUSALS, 1);
        gw__conn_error(a->c, 503, "server_error", "budget_unavailable",
                       "the farm's budget service cannot be reached; this plan fails closed", NULL,
                       "Retry-After: 1\r\n");
        return -1;
    }
    if (gw_cluster_open_admit(a->seg, a->tenant, a->plan, a->now, &retry) != 0) {
        answer_denied(a, retry);
        return -1;
    }
    return 0;
}

int gw__front_cluster_gate(struct admission *a)
{
    if (!a->cfg->cluster.enabled || a->plan->n_windows == 0)
        return 0;
    uint64_t retry = 0;
    switch (gw_cluster_take(a->seg, a->tenant, a->now, &retry)) {
    case GW_CL_TAKEN:
        return 0;
    case GW_CL_DENIED:
        answer_denied(a, retry);
        return -1;
    case GW_CL_UNAVAILABLE:
        return fail_mode(a);
    default:
        break;
    }
    struct parked *p = calloc(1, sizeof(*p));
    if (!p) {
        gw_metrics_refusal(a->seg, GW_REF_OVERLOADED);
        gw__conn_error(a->c, 503, "server_error", "overloaded", "out of memory", NULL,
                       "Retry-After: 1\r\n");
        return -1;
    }
    p->a = *a;
    p->deadline_ns = gw_mono_ns() + (uint64_t)a->cfg->cluster.wait_ms * 1000000u;
    p->next = a->f->parked;
    a->f->parked = p;
    a->c->parked = p;
    gw_cluster_want(a->seg, a->tenant, +1);
    return 1;
}

/* Takes p off the front's list and its connection. */
static void unpark(struct front *f, struct parked *p)
{
    for (struct parked **pp = &f->parked; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (p->a.c)
        p->a.c->parked = NULL;
    gw_cluster_want(&f->seg, p->a.tenant, -1);
}

/* One parked request: 1 when it was resolved (answered or resumed). */
static int try_resume(struct front *f, struct parked *p, uint64_t now_ns)
{
    struct admission *a = &p->a;
    /* a reload may have replaced the config since: look the plan up again */
    const char *why = NULL;
    a->cfg = f->cfg;
    a->plan = gw_config_plan_for(f->cfg, a->who.tenant, a->who.plan[0] ? a->who.plan : NULL, &why);
    a->now = gw_now_us();
    uint64_t retry = 0;
    int rc = a->plan ? gw_cluster_take(a->seg, a->tenant, a->now, &retry) : GW_CL_UNAVAILABLE;
    if (rc == GW_CL_WAIT && now_ns < p->deadline_ns && !f->draining)
        return 0;
    unpark(f, p);
    struct admission copy = *a;
    free(p);
    if (!copy.plan) {
        gw__conn_error(copy.c, 403, "permission_error", "forbidden",
                       why ? why : "tenant not allowed", NULL, NULL);
        return 1;
    }
    if (rc == GW_CL_DENIED)
        answer_denied(&copy, retry);
    else if (rc == GW_CL_TAKEN || fail_mode(&copy) == 0)
        gw__front_generate_rest(&copy);
    return 1;
}

void gw__front_cluster_poll(struct front *f)
{
    uint64_t now = gw_mono_ns();
    for (struct parked *p = f->parked, *next; p; p = next) {
        next = p->next;
        try_resume(f, p, now);
    }
}

void gw__front_cluster_conn_gone(struct conn *c)
{
    struct parked *p = c->parked;
    if (!p)
        return;
    unpark(c->front, p);
    free(p);
}
