/* front_cluster.c - steps 3b and 4b of admission on a node in a farm: the
 * tenant's farm-wide request token and GPU-us (docs/ARCHITECTURE.md, "The
 * farm").
 *
 * The front takes one request token from the node's lease in the segment
 * (gw_cluster_take: one CAS, no lock, no Redis). Only when the lease is
 * empty does the request wait: it is parked here, the agent is woken
 * through the demand futex, and the request resumes when the agent has put
 * a lease into the cell (it writes the fronts' eventfds) or is answered by
 * its plan's fail mode when Redis is down or nothing came within
 * cluster.wait_ms. The front's loop never blocks: parked requests are
 * looked at on each wake-up and each tick.
 *
 * The GPU step is the same with GPU-us instead of a token: after the body
 * is read, the request's whole reservation is taken from the node's GPU
 * lease (gw_cluster_gpu_take), or the request parks for it (`want` counts
 * the GPU-us waiting); admit_money then reserves the same amount in the
 * ledger and binds the slot to the lease, which gets the unused part back
 * at settlement.
 *
 * The output-token step (4c, after the GPU step) takes one token of the
 * tenant's farm-wide output_tokens window from the node's output lease
 * (gw_cluster_out_take), or parks for one; the job charges the rest of
 * what the request generated to the lease at its end (front_farm.c).
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

/* fail_closed: 503 budget_unavailable. */
static void answer_closed(struct admission *a)
{
    gw_cluster_count(a->seg, GW_CLC_CLOSED_REFUSALS, 1);
    gw__conn_error(a->c, 503, "server_error", "budget_unavailable",
                   "the farm's budget service cannot be reached; this plan fails closed", NULL,
                   "Retry-After: 1\r\n");
}

/* Redis is away (or nothing came in time): the plan decides. 0 admitted
 * fail-open (go on), -1 answered. */
static int fail_mode(struct admission *a)
{
    const struct gw_cluster_cfg *cl = &a->cfg->cluster;
    uint64_t retry = 0;
    if (gw_cluster_fail_mode(cl, a->plan->name) == GW_FAIL_CLOSED) {
        answer_closed(a);
        return -1;
    }
    if (gw_cluster_open_admit(a->seg, a->tenant, a->plan, a->now, &retry) != 0) {
        answer_denied(a, retry);
        return -1;
    }
    return 0;
}

static void answer_gpu_denied(struct admission *a, uint64_t retry_us, const char *msg)
{
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (retry_us + 999999) / 1000000);
    gw_metrics_refusal(a->seg, GW_REF_BUDGET);
    gw__conn_error(a->c, 429, "rate_limit_error", "budget_exhausted", msg, NULL, hdr);
}

/* The GPU lease's fail mode: fail_closed 503; fail_open reserves x from the
 * node's share of the budget. 0 go on, -1 answered. */
static int gpu_fail_mode(struct admission *a, uint64_t x)
{
    uint64_t retry = 0;
    if (gw_cluster_fail_mode(&a->cfg->cluster, a->plan->name) == GW_FAIL_CLOSED) {
        answer_closed(a);
        return -1;
    }
    if (gw_cluster_gpu_open_admit(a->seg, a->tenant, &a->plan->budget, x, a->now, &retry) != 0) {
        answer_gpu_denied(a, retry,
                          "the tenant's GPU-time budget is exhausted (this node's share while the "
                          "farm's budget service is away)");
        return -1;
    }
    a->gpu_passed = 1;
    return 0;
}

static void answer_out_denied(struct admission *a, uint64_t retry_us, const char *msg)
{
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (retry_us + 999999) / 1000000);
    gw_metrics_refusal(a->seg, GW_REF_OUTPUT);
    gw_tstat_refusal(a->seg, a->tenant, GW_REF_OUTPUT);
    gw__conn_error(a->c, 429, "rate_limit_error", "output_tokens_exhausted", msg, NULL, hdr);
}

/* The output lease's fail mode: fail_closed 503; fail_open takes a token
 * of the node's share of the window. 0 go on, -1 answered. */
static int out_fail_mode(struct admission *a)
{
    uint64_t retry = 0;
    if (gw_cluster_fail_mode(&a->cfg->cluster, a->plan->name) == GW_FAIL_CLOSED) {
        answer_closed(a);
        return -1;
    }
    if (gw_cluster_out_open_admit(a->seg, a->tenant, &a->plan->output, a->now, &retry) != 0) {
        answer_out_denied(a, retry,
                          "this tenant generated its plan's output_tokens for the window (this "
                          "node's share while the farm's budget service is away)");
        return -1;
    }
    a->farm_out = GW_FARM_OUT_OPEN;
    a->out_passed = 1;
    return 0;
}

/* Parks the request until the agent brings a lease (stage GW_PARK_*): 1,
 * or -1 answered (out of memory). */
static int park(struct admission *a, int stage, uint64_t gpu_us)
{
    struct parked *p = calloc(1, sizeof(*p));
    if (!p) {
        gw_metrics_refusal(a->seg, GW_REF_OVERLOADED);
        gw__conn_error(a->c, 503, "server_error", "overloaded", "out of memory", NULL,
                       "Retry-After: 1\r\n");
        return -1;
    }
    p->a = *a;
    /* the body is parsed again on resume; the caller frees this parse */
    memset(&p->a.rq, 0, sizeof(p->a.rq));
    p->stage = stage;
    p->gpu_us = gpu_us;
    p->deadline_ns = gw_mono_ns() + (uint64_t)a->cfg->cluster.wait_ms * 1000000u;
    p->next = a->f->parked;
    a->f->parked = p;
    a->c->parked = p;
    if (stage == GW_PARK_GPU)
        gw_cluster_gpu_want(a->seg, a->tenant, gpu_us, +1);
    else if (stage == GW_PARK_OUT)
        gw_cluster_out_want(a->seg, a->tenant, +1);
    else
        gw_cluster_want(a->seg, a->tenant, +1);
    return 1;
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
        return park(a, GW_PARK_RATE, 0);
    }
}

int gw__front_cluster_gpu(struct admission *a, uint64_t x)
{
    if (!a->cfg->cluster.enabled || !a->plan->has_budget || a->gpu_passed)
        return 0;
    uint64_t retry = 0;
    switch (gw_cluster_gpu_take(a->seg, a->tenant, x, a->now, &retry)) {
    case GW_CL_TAKEN:
        a->farm_gpu = x;
        a->gpu_passed = 1;
        return 0;
    case GW_CL_DENIED:
        answer_gpu_denied(a, retry, "the tenant's GPU-time budget is exhausted across the farm");
        return -1;
    case GW_CL_UNAVAILABLE:
        return gpu_fail_mode(a, x);
    default:
        return park(a, GW_PARK_GPU, x);
    }
}

int gw__front_cluster_out(struct admission *a)
{
    if (!a->cfg->cluster.enabled || !a->plan->has_output || a->out_passed)
        return 0;
    uint64_t retry = 0;
    switch (gw_cluster_out_take(a->seg, a->tenant, a->now, &retry)) {
    case GW_CL_TAKEN:
        a->farm_out = GW_FARM_OUT_LEASE;
        a->out_passed = 1;
        return 0;
    case GW_CL_DENIED:
        answer_out_denied(a, retry,
                          "this tenant generated its plan's output_tokens for the window across "
                          "the farm");
        return -1;
    case GW_CL_UNAVAILABLE:
        return out_fail_mode(a);
    default:
        return park(a, GW_PARK_OUT, 0);
    }
}

void gw__front_cluster_put_back(struct admission *a)
{
    if (a->farm_gpu)
        gw_cluster_gpu_put(a->seg, a->tenant, a->farm_gpu);
    a->farm_gpu = 0;
    if (a->farm_out == GW_FARM_OUT_LEASE)
        gw_cluster_out_settle(a->seg, a->tenant, 0); /* the token, unused */
    a->farm_out = GW_FARM_OUT_NONE;
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
    if (p->stage == GW_PARK_GPU)
        gw_cluster_gpu_want(&f->seg, p->a.tenant, p->gpu_us, -1);
    else if (p->stage == GW_PARK_OUT)
        gw_cluster_out_want(&f->seg, p->a.tenant, -1);
    else
        gw_cluster_want(&f->seg, p->a.tenant, -1);
}

/* What the parked request's stage finds now (gw_cluster_take's results). A
 * plan that lost its budget in a reload passes the GPU stage. */
static int stage_take(struct parked *p, uint64_t *retry)
{
    struct admission *a = &p->a;
    if (!a->plan)
        return GW_CL_UNAVAILABLE;
    if (p->stage == GW_PARK_RATE)
        return gw_cluster_take(a->seg, a->tenant, a->now, retry);
    if (p->stage == GW_PARK_OUT) {
        if (!a->plan->has_output)
            return GW_CL_TAKEN;
        int rc = gw_cluster_out_take(a->seg, a->tenant, a->now, retry);
        if (rc == GW_CL_TAKEN)
            a->farm_out = GW_FARM_OUT_LEASE;
        return rc;
    }
    if (!a->plan->has_budget)
        return GW_CL_TAKEN;
    int rc = gw_cluster_gpu_take(a->seg, a->tenant, p->gpu_us, a->now, retry);
    if (rc == GW_CL_TAKEN)
        a->farm_gpu = p->gpu_us;
    return rc;
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
    int rc = stage_take(p, &retry);
    if (rc == GW_CL_WAIT && now_ns < p->deadline_ns && !f->draining)
        return 0;
    int gpu = p->stage == GW_PARK_GPU, out = p->stage == GW_PARK_OUT;
    uint64_t x = p->gpu_us;
    unpark(f, p);
    struct admission copy = *a;
    free(p);
    if (!copy.plan) {
        gw__front_cluster_put_back(&copy);
        gw__conn_error(copy.c, 403, "permission_error", "forbidden",
                       why ? why : "tenant not allowed", NULL, NULL);
        return 1;
    }
    if (gpu)
        copy.gpu_passed = rc == GW_CL_TAKEN;
    if (out)
        copy.out_passed = rc == GW_CL_TAKEN;
    int go = 0;
    if (rc == GW_CL_DENIED && gpu)
        answer_gpu_denied(&copy, retry,
                          "the tenant's GPU-time budget is exhausted across the farm");
    else if (rc == GW_CL_DENIED && out)
        answer_out_denied(&copy, retry,
                          "this tenant generated its plan's output_tokens for the window across "
                          "the farm");
    else if (rc == GW_CL_DENIED)
        answer_denied(&copy, retry);
    else
        go = rc == GW_CL_TAKEN || (gpu   ? gpu_fail_mode(&copy, x)
                                   : out ? out_fail_mode(&copy)
                                         : fail_mode(&copy)) == 0;
    if (go)
        gw__front_generate_rest(&copy);
    else
        gw__front_cluster_put_back(&copy); /* GPU-us an output stage held */
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
    gw__front_cluster_put_back(&p->a);
    free(p);
}
