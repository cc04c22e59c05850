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
 *
 * The node's global pool (config `global`: its windows and GPU budget) is
 * one more farm-wide account, in the global account's cells: each rate
 * and GPU step takes the tenant's unit first, then the pool's, and a
 * request may park for either; its plan's fail mode applies to both.
 */
#include "front_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Which account a step is for: the tenant's (its plan) or the node's
 * global pool (config `global`). */
enum { WHO_TENANT = 0, WHO_GLOBAL = 1 };

static struct gw_acct acct_of(const struct admission *a, int g)
{
    return g ? a->global : a->tenant;
}

/* The limits a step enforces: the tenant's plan, or the node's `global`
 * when the farm shares it (cluster.global "farm"; "node": none here, the
 * node's own ledger alone enforces them). */
static const struct gw_plan *limits_of(const struct admission *a, int g)
{
    static const struct gw_plan none;
    return !g ? a->plan : a->cfg->cluster.global_farm ? &a->cfg->global : &none;
}

static void answer_denied(struct admission *a, uint64_t retry_us, int g)
{
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (retry_us + 999999) / 1000000);
    gw_metrics_refusal(a->seg, GW_REF_TENANT_RATE);
    gw_tstat_refusal(a->seg, a->tenant, GW_REF_TENANT_RATE);
    gw__conn_error(a->c, 429, "rate_limit_error", "rate_limited",
                   g ? "the farm's global rate limit is reached"
                     : "rate limit reached for this tenant across the farm",
                   NULL, hdr);
}

/* fail_closed: 503 budget_unavailable. */
static void answer_closed(struct admission *a)
{
    gw_cluster_count(a->seg, GW_CLC_CLOSED_REFUSALS, 1);
    gw__conn_error(a->c, 503, "server_error", "budget_unavailable",
                   "the farm's budget service cannot be reached; this plan fails closed", NULL,
                   "Retry-After: 1\r\n");
}

/* Redis is away (or nothing came in time): the request's plan decides,
 * for the global pool too. 0 admitted fail-open (go on), -1 answered. */
static int fail_mode(struct admission *a, int g)
{
    const struct gw_cluster_cfg *cl = &a->cfg->cluster;
    uint64_t retry = 0;
    if (gw_cluster_fail_mode(cl, a->plan->name) == GW_FAIL_CLOSED) {
        answer_closed(a);
        return -1;
    }
    if (gw_cluster_open_admit(a->seg, acct_of(a, g), limits_of(a, g), a->now, &retry) != 0) {
        answer_denied(a, retry, g);
        return -1;
    }
    return 0;
}

static void answer_gpu_denied(struct admission *a, uint64_t retry_us, int g, int open)
{
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (retry_us + 999999) / 1000000);
    gw_metrics_refusal(a->seg, GW_REF_BUDGET);
    const char *msg =
        open ? (g ? "the node's GPU-time budget is exhausted (this node's share of the farm's "
                    "global budget while the farm's budget service is away)"
                  : "the tenant's GPU-time budget is exhausted (this node's share while the "
                    "farm's budget service is away)")
             : (g ? "the farm's global GPU-time budget is exhausted"
                  : "the tenant's GPU-time budget is exhausted across the farm");
    gw__conn_error(a->c, 429, "rate_limit_error", "budget_exhausted", msg, NULL, hdr);
}

/* The GPU lease's fail mode: fail_closed 503; fail_open reserves x from the
 * node's share of the budget. 0 go on, -1 answered. */
static int gpu_fail_mode(struct admission *a, uint64_t x, int g)
{
    uint64_t retry = 0;
    if (gw_cluster_fail_mode(&a->cfg->cluster, a->plan->name) == GW_FAIL_CLOSED) {
        answer_closed(a);
        return -1;
    }
    if (gw_cluster_gpu_open_admit(a->seg, acct_of(a, g), &limits_of(a, g)->budget, x, a->now,
                                  &retry) != 0) {
        answer_gpu_denied(a, retry, g, 1);
        return -1;
    }
    *(g ? &a->ggpu_passed : &a->gpu_passed) = 1;
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

static const char out_msg[] =
    "this tenant generated its plan's output_tokens for the window across the farm";

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

static int stage_is_global(int stage)
{
    return stage == GW_PARK_GRATE || stage == GW_PARK_GGPU;
}

/* A parked request of this stage starts (+1) or stops (-1) waiting. */
static void stage_want(struct admission *a, int stage, uint64_t gpu_us, int sign)
{
    struct gw_acct acct = acct_of(a, stage_is_global(stage));
    if (stage == GW_PARK_GPU || stage == GW_PARK_GGPU)
        gw_cluster_gpu_want(a->seg, acct, gpu_us, sign);
    else if (stage == GW_PARK_OUT)
        gw_cluster_out_want(a->seg, acct, sign);
    else
        gw_cluster_want(a->seg, acct, sign);
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
    stage_want(a, stage, gpu_us, +1);
    return 1;
}

/* One account's request token (the tenant's, then the global pool's). */
static int rate_gate(struct admission *a, int g)
{
    int *passed = g ? &a->grate_passed : &a->rate_passed;
    if (limits_of(a, g)->n_windows == 0 || *passed)
        return 0;
    uint64_t retry = 0;
    int rc;
    switch (gw_cluster_take(a->seg, acct_of(a, g), a->now, &retry)) {
    case GW_CL_TAKEN:
        *passed = 1;
        return 0;
    case GW_CL_DENIED:
        answer_denied(a, retry, g);
        return -1;
    case GW_CL_UNAVAILABLE:
        if ((rc = fail_mode(a, g)) == 0)
            *passed = 1;
        return rc;
    default:
        return park(a, g ? GW_PARK_GRATE : GW_PARK_RATE, 0);
    }
}

int gw__front_cluster_gate(struct admission *a)
{
    if (!a->cfg->cluster.enabled)
        return 0;
    int rc = rate_gate(a, WHO_TENANT);
    return rc ? rc : rate_gate(a, WHO_GLOBAL);
}

/* One account's GPU-us (the tenant's budget, then the global pool's). */
static int gpu_gate(struct admission *a, uint64_t x, int g)
{
    int *passed = g ? &a->ggpu_passed : &a->gpu_passed;
    if (!limits_of(a, g)->has_budget || *passed)
        return 0;
    uint64_t retry = 0;
    switch (gw_cluster_gpu_take(a->seg, acct_of(a, g), x, a->now, &retry)) {
    case GW_CL_TAKEN:
        *(g ? &a->farm_ggpu : &a->farm_gpu) = x;
        *passed = 1;
        return 0;
    case GW_CL_DENIED:
        answer_gpu_denied(a, retry, g, 0);
        return -1;
    case GW_CL_UNAVAILABLE:
        return gpu_fail_mode(a, x, g);
    default:
        return park(a, g ? GW_PARK_GGPU : GW_PARK_GPU, x);
    }
}

int gw__front_cluster_gpu(struct admission *a, uint64_t x)
{
    if (!a->cfg->cluster.enabled)
        return 0;
    int rc = gpu_gate(a, x, WHO_TENANT);
    return rc ? rc : gpu_gate(a, x, WHO_GLOBAL);
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
        answer_out_denied(a, retry, out_msg);
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
    if (a->farm_ggpu)
        gw_cluster_gpu_put(a->seg, a->global, a->farm_ggpu);
    a->farm_gpu = a->farm_ggpu = 0;
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
    stage_want(&p->a, p->stage, p->gpu_us, -1);
}

/* What the parked request's stage finds now (gw_cluster_take's results),
 * and what it took recorded in the admission. A limit that a reload
 * removed passes its stage. */
static int stage_take(struct parked *p, uint64_t *retry)
{
    struct admission *a = &p->a;
    if (!a->plan)
        return GW_CL_UNAVAILABLE;
    int g = stage_is_global(p->stage), rc;
    const struct gw_plan *l = limits_of(a, g);
    struct gw_acct acct = acct_of(a, g);
    switch (p->stage) {
    case GW_PARK_RATE:
    case GW_PARK_GRATE:
        rc = l->n_windows ? gw_cluster_take(a->seg, acct, a->now, retry) : GW_CL_TAKEN;
        if (rc == GW_CL_TAKEN)
            *(g ? &a->grate_passed : &a->rate_passed) = 1;
        return rc;
    case GW_PARK_OUT:
        rc = l->has_output ? gw_cluster_out_take(a->seg, acct, a->now, retry) : GW_CL_TAKEN;
        if (rc == GW_CL_TAKEN && l->has_output)
            a->farm_out = GW_FARM_OUT_LEASE;
        a->out_passed = rc == GW_CL_TAKEN;
        return rc;
    default:
        rc = l->has_budget ? gw_cluster_gpu_take(a->seg, acct, p->gpu_us, a->now, retry)
                           : GW_CL_TAKEN;
        if (rc == GW_CL_TAKEN && l->has_budget)
            *(g ? &a->farm_ggpu : &a->farm_gpu) = p->gpu_us;
        *(g ? &a->ggpu_passed : &a->gpu_passed) = rc == GW_CL_TAKEN;
        return rc;
    }
}

/* A parked request's stage was refused: the answer. */
static void answer_stage_denied(struct admission *a, int stage, uint64_t retry)
{
    int g = stage_is_global(stage);
    if (stage == GW_PARK_GPU || stage == GW_PARK_GGPU)
        answer_gpu_denied(a, retry, g, 0);
    else if (stage == GW_PARK_OUT)
        answer_out_denied(a, retry, out_msg);
    else
        answer_denied(a, retry, g);
}

/* A parked request's stage found Redis away or waited too long: the fail
 * mode. 0 go on, -1 answered. */
static int stage_fail_mode(struct admission *a, int stage, uint64_t x)
{
    int g = stage_is_global(stage);
    if (stage == GW_PARK_GPU || stage == GW_PARK_GGPU)
        return gpu_fail_mode(a, x, g);
    if (stage == GW_PARK_OUT)
        return out_fail_mode(a);
    if (fail_mode(a, g) != 0)
        return -1;
    *(g ? &a->grate_passed : &a->rate_passed) = 1;
    return 0;
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
    int stage = p->stage;
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
    int go = -1;
    if (rc == GW_CL_DENIED)
        answer_stage_denied(&copy, stage, retry);
    else if (rc == GW_CL_TAKEN || stage_fail_mode(&copy, stage, x) == 0)
        /* the rate stages go on with the global pool's token (which may
         * park it again); the others with the rest of admission */
        go = stage == GW_PARK_RATE || stage == GW_PARK_GRATE ? gw__front_cluster_gate(&copy) : 0;
    if (go == 0)
        gw__front_generate_rest(&copy);
    else if (go < 0)
        gw__front_cluster_put_back(&copy); /* what an earlier stage held */
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
