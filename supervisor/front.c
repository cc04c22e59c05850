/* front.c - a front process: what a request means, and who pays for it.
 *
 * Admission, cheapest check first, each through the ledger:
 *   ip rate cells -> JWT -> plan -> tenant and global rate cells (all or
 *   nothing) -> body -> model -> prompt farming and output_tokens
 *   (front_farm.c) -> tenant concurrency -> slot -> budget reservation ->
 *   queue.
 * A refusal at any step costs no GPU time. The ip cells are taken before
 * any signature work, so a flood of forged tokens pays per request.
 * Once queued, the request is a job (front_jobs.c): the front streams what
 * the worker writes into the slot, and when the slot is terminal it settles
 * the money and releases the slot, whether or not the client is still there.
 * The process around it (event loop, drain, reload) is front_loop.c.
 */
#include "front_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An "unlimited" budget for plans without one: reservations still go
 * through the ledger (accounting, conservation) but never refuse. */
static const struct gw_budget_rate unlimited = {.amount_us = 1ull << 50, .period_us = 1ull << 40};

static const struct gw_budget_rate *budget_of(const struct gw_plan *p)
{
    return p->has_budget ? &p->budget : &unlimited;
}

/* ------------------------------------------------------- small answers */

static void refuse_429(struct conn *c, const char *scope, const struct gw_plan *p,
                       const uint64_t *rem, const char *code, const char *msg, uint64_t retry_us)
{
    char hdr[512];
    gw__rate_headers(hdr, sizeof(hdr), scope, p, rem, retry_us);
    gw__conn_error(c, 429, "rate_limit_error", code, msg, NULL, hdr);
}

static void refuse_503(struct conn *c, const char *code, const char *msg)
{
    gw__conn_error(c, 503, "server_error", code, msg, NULL, "Retry-After: 1\r\n");
}

static int workers_ready(const struct front *f)
{
    int ready = 0;
    for (uint32_t l = 0; l < f->seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&f->seg, (int)l, &pi) == 0 && pi.role == GW_ROLE_WORKER &&
            pi.state == GW_PROC_READY)
            ready++;
    }
    return ready;
}

/* Device us per token for reservations: the slowest worker's measurement,
 * or the configured guess before any is measured. */
static uint64_t us_per_token(const struct front *f)
{
    uint64_t worst = 0;
    for (uint32_t l = 0; l < f->seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&f->seg, (int)l, &pi) == 0 && pi.role == GW_ROLE_WORKER &&
            pi.us_per_token > worst)
            worst = pi.us_per_token;
    }
    return worst ? worst : (f->cfg->initial_us_per_token ? f->cfg->initial_us_per_token : 20000);
}

/* Run-time tenant limits (gpuwardenctl tenant set-limit): when the master
 * moved the epoch on, every listed tenant gets its plan from the file back
 * and then the overrides in the segment; one acquire load when nothing
 * changed. */
static void limits_sync(struct front *f)
{
    uint64_t e = gw_limits_epoch(&f->seg) + 1;
    if (e == f->limits_epoch || !f->file_plans)
        return;
    for (int i = 0; i < f->cfg->n_tenants; i++)
        f->cfg->tenants[i].plan = f->file_plans[i];
    for (int k = 0; k < GW_LIMIT_OVERRIDES; k++) {
        struct gw_limit_override o;
        if (gw_limits_get(&f->seg, k, &o) != 0)
            continue;
        struct gw_tenant *t = (struct gw_tenant *)gw_config_tenant(f->cfg, o.tenant);
        if (!t)
            continue;
        t->plan.n_windows = o.n_windows;
        memcpy(t->plan.windows, o.windows, sizeof(t->plan.windows));
        t->plan.has_budget = o.has_budget;
        t->plan.budget = o.budget;
        t->plan.max_inflight = o.max_inflight;
        t->plan.max_tokens = o.max_tokens;
    }
    f->limits_epoch = e;
}

/* ------------------------------------------------------- admission */

static const char *id_prefix(enum gw_route r)
{
    return r == GW_ROUTE_CHAT ? "chatcmpl-" : r == GW_ROUTE_COMPLETIONS ? "cmpl-" : "gen-";
}

static void make_id(struct front *f, enum gw_route r, char *buf, size_t len)
{
    uint64_t x = f->id_seed ^ (++f->next_id * 0x9e3779b97f4a7c15ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    snprintf(buf, len, "%s%d%016" PRIx64, id_prefix(r), f->index, x);
}

/* Gives back a slot that never reached a worker. */
static void abandon(struct front *f, struct gw_slot_ref ref, int from)
{
    gw_slot_move(&f->seg, ref, from, GW_SLOT_FAILED);
    gw_budget_settle(&f->seg, ref);
    gw_slot_release(&f->seg, ref);
}

static int window_items(struct gw_admit_item *items, int n, struct gw_acct a,
                        const struct gw_plan *p)
{
    for (int i = 0; i < p->n_windows; i++) {
        items[n].acct = a;
        items[n].cell = (uint8_t)i;
        gw_window_rate(&p->windows[i], &items[n].rate);
        n++;
    }
    return n;
}

/* The slot's request and prompt, written while the slot is ADMITTED and
 * ours (the move to QUEUED publishes them). */
static int fill_slot(const struct admission *a, uint32_t flags, const char *id)
{
    const struct gw_gen_request *rq = &a->rq;
    struct gw_slot_req sr;
    memset(&sr, 0, sizeof(sr));
    sr.max_tokens = a->max_tokens;
    sr.top_k = rq->top_k;
    sr.temperature = rq->temperature;
    sr.top_p = rq->top_p;
    sr.seed = rq->seed;
    sr.flags = (rq->chat ? GW_REQ_CHAT : 0) | (rq->has_seed ? GW_REQ_SEED : 0) | flags;
    sr.prompt_len = (uint32_t)rq->prompt_len;
    sr.n_stops = (uint32_t)rq->n_stops;
    for (int i = 0; i < rq->n_stops && i < GW_STOP_MAX; i++) {
        size_t l = strnlen(rq->stops[i], GW_STOP_LEN);
        memcpy(sr.stops[i], rq->stops[i], l);
        sr.stop_len[i] = (uint8_t)l;
    }
    sr.front = (uint32_t)a->f->index;
    /* the plan the tenant was admitted under: its share of the worker */
    sr.weight_milli = gw_weight_milli(a->plan->weight);
    sr.created_us = gw_now_us();
    sr.us_per_token = a->upt;
    snprintf(sr.id, sizeof(sr.id), "%s", id);
    snprintf(sr.tenant, sizeof(sr.tenant), "%s", a->who.tenant);
    snprintf(sr.ip, sizeof(sr.ip), "%s", a->c->ip);
    memcpy(gw_slot_prompt(a->seg, a->ref.index), rq->prompt, rq->prompt_len);
    return gw_slot_set_req(a->seg, a->ref, &sr);
}

/* What each of the tenant's windows admits now, this request's unit taken
 * (RateLimit's r). Valid from step 3 on: items[i] is the tenant's window i. */
static const uint64_t *tenant_remaining(const struct admission *a, uint64_t *rem)
{
    for (int i = 0; i < a->plan->n_windows && i < GW_RATE_CELLS; i++)
        rem[i] = gw_ledger_rate_remaining(a->seg, a->tenant, i, &a->items[i].rate, a->now);
    return rem;
}

/* Each step returns 0 to go on, or -1 once it has answered the client and
 * given back what it took itself. */

/* A refusal once the tenant's account is known (from step 3 on): the
 * node's counter and the tenant's (per-tenant /metrics, gpuwardenctl top). */
static void refused(struct admission *a, int reason)
{
    gw_metrics_refusal(a->seg, reason);
    gw_tstat_refusal(a->seg, a->tenant, reason);
}

/* 1. the client address, before anything costs us */
static int admit_address(struct admission *a)
{
    struct conn *c = a->c;
    struct gw_segment *seg = a->seg;
    const struct gw_config *cfg = a->cfg;
    uint64_t retry;
    struct gw_acct ip;
    struct gw_addr client;
    char key[GW_ADDR_STRLEN];
    int allowed;
    if (gw__front_who(a->f, c, a->now, &client, key, &allowed) != 0)
        return -1;
    if (allowed) /* an allow entry: exempt from bans and the per-address windows */
        return 0;
    int rc = gw_ledger_get(seg, GW_KIND_IP, key, strlen(key), 1, a->now, &ip);
    const struct gw_plan *lim = &cfg->ip;
    if (rc == GW_EFULL && cfg->ip_overflow.n_windows > 0) {
        /* no room for a new address: its /24 or /48 shares an overflow
         * bucket's strict windows (common/overflow.c) */
        ip = gw_overflow_acct(seg, &client);
        lim = &cfg->ip_overflow;
        rc = 1;
    }
    if (rc == GW_EFULL) {
        gw_metrics_refusal(seg, GW_REF_OVERLOADED);
        refuse_503(c, "overloaded", "too many clients: the address table is full");
        return -1;
    }
    if (rc == 0) { /* its prompts are judged by ip.farming (front_farm.c) */
        a->ip = ip;
        a->ip_farm = 1;
        snprintf(a->ip_key, sizeof(a->ip_key), "%s", key);
    }
    if (rc == 0 && gw_ledger_banned_until(seg, ip, a->now)) {
        gw_metrics_refusal(seg, GW_REF_BANNED);
        gw__conn_error(c, 403, "permission_error", "banned", "this address is banned", NULL, NULL);
        return -1;
    }
    if ((rc == 0 || rc == 1) && lim->n_windows > 0) {
        int n = window_items(a->items, 0, ip, lim);
        if (gw_ledger_admit(seg, a->items, n, a->now, &retry) == GW_EREFUSED) {
            gw_metrics_refusal(seg, GW_REF_IP_RATE);
            refuse_429(c, "ip", lim, NULL, "rate_limited",
                       rc ? "too many requests from this address range"
                          : "too many requests from this address",
                       retry);
            return -1;
        }
    }
    return 0;
}

/* 2. who is asking */
static int admit_principal(struct admission *a)
{
    struct conn *c = a->c;
    struct gw_segment *seg = a->seg;
    char why[320];
    /* an API key ("Bearer sk-..."), else a JWT (apikeys.c, auth.c) */
    int bad = gw_apikeys_check(a->f->keys, seg, a->cfg, c->authz, c->authz_len, &a->who, c->acc_key,
                               why, sizeof(why));
    if (bad == -EAGAIN) { /* the keys file cannot be read: never a stale set */
        gw__front_log(a->f, "api keys: %s", why);
        gw_metrics_refusal(seg, GW_REF_OVERLOADED);
        refuse_503(c, "overloaded", "API keys cannot be checked now; retry");
        return -1;
    }
    if (bad == 1)
        bad = gw_auth_check(a->f->auth, c->authz, c->authz_len, a->now / 1000000, &a->who, why,
                            sizeof(why)) != 0;
    if (!bad && (bad = gw_jti_revoked(seg, &a->f->jtis, a->who.jti_hash, a->now)))
        snprintf(why, sizeof(why), "token revoked"); /* gpuwardenctl token revoke */
    if (bad) {
        char hdr[512];
        snprintf(hdr, sizeof(hdr),
                 "WWW-Authenticate: Bearer error=\"invalid_token\", "
                 "error_description=\"%s\"\r\n",
                 why);
        gw_metrics_refusal(seg, GW_REF_AUTH);
        gw__conn_error(c, 401, "authentication_error", "invalid_token", why, NULL, hdr);
        return -1;
    }
    const char *pwhy = NULL;
    a->plan = gw_config_plan_for(a->cfg, a->who.tenant, a->who.plan[0] ? a->who.plan : NULL, &pwhy);
    snprintf(c->acc_tenant, sizeof(c->acc_tenant), "%s", a->who.tenant);
    if (!a->plan) {
        gw_metrics_refusal(seg, GW_REF_FORBIDDEN);
        gw__conn_error(c, 403, "permission_error", "forbidden", pwhy ? pwhy : "tenant not allowed",
                       NULL, NULL);
        return -1;
    }
    return 0;
}

/* 3. the tenant's and the node's rates, all or nothing */
static int admit_rates(struct admission *a)
{
    struct conn *c = a->c;
    struct gw_segment *seg = a->seg;
    const char *tenant = a->who.tenant;
    uint64_t retry;
    int rc;
    if (gw_ledger_get(seg, GW_KIND_TENANT, tenant, strlen(tenant), 1, a->now, &a->tenant) != 0 ||
        gw_ledger_get(seg, GW_KIND_GLOBAL, "*", 1, 1, a->now, &a->global) != 0) {
        gw_metrics_refusal(seg, GW_REF_OVERLOADED);
        refuse_503(c, "overloaded", "account table full");
        return -1;
    }
    if (gw_ledger_banned_until(seg, a->tenant, a->now)) {
        refused(a, GW_REF_BANNED);
        gw__conn_error(c, 403, "permission_error", "banned", "this tenant is banned", NULL, NULL);
        return -1;
    }
    int n = window_items(a->items, 0, a->tenant, a->plan);
    n = window_items(a->items, n, a->global, &a->cfg->global);
    if (n > 0 && (rc = gw_ledger_admit(seg, a->items, n, a->now, &retry)) != 0) {
        refused(a, rc == GW_EREFUSED ? GW_REF_TENANT_RATE : GW_REF_OVERLOADED);
        if (rc == GW_EREFUSED)
            refuse_429(c, "tenant", a->plan, NULL, "rate_limited",
                       "rate limit reached for this tenant", retry);
        else
            refuse_503(c, "overloaded", "ledger busy; retry");
        return -1;
    }
    return 0;
}

/* 4. what is asked: a->rq, and the max_tokens the plan grants. On -1
 * a->rq holds nothing. */
static int admit_request(struct admission *a)
{
    struct conn *c = a->c;
    const struct gw_config *cfg = a->cfg;
    struct gw_gen_request *rq = &a->rq;
    char err[256], param[64];
    if (gw_request_parse(a->route, c->body, c->body_len, cfg, rq, err, sizeof(err), param,
                         sizeof(param)) != 0) {
        gw__conn_error(c, 400, "invalid_request_error", "invalid_request", err, param, NULL);
        return -1;
    }
    snprintf(c->acc_user, sizeof(c->acc_user), "%s", rq->user);
    if ((a->route != GW_ROUTE_GENERATE || rq->model[0]) &&
        strcmp(rq->model, cfg->model_name) != 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "The model '%.64s' does not exist; this node serves '%.64s'",
                 rq->model, cfg->model_name);
        gw__conn_error(c, 404, "invalid_request_error", "model_not_found", msg, "model", NULL);
        gw_request_free(rq);
        return -1;
    }
    const struct gw_plan *plan = a->plan;
    a->max_tokens = rq->max_tokens ? rq->max_tokens : plan->max_tokens;
    if (plan->max_tokens && a->max_tokens > plan->max_tokens)
        a->max_tokens = plan->max_tokens;
    if (a->max_tokens == 0)
        a->max_tokens = 256;
    return 0;
}

/* 5. under pressure on the node's budget, the heaviest users go first:
 * when less than a quarter of the global budget is left, only tenants
 * with at least half of their own budget left are admitted. Tenants
 * that stay within their plans can otherwise drain the shared pool
 * together and lock out the ones that barely use theirs. */
static int admit_pressure(struct admission *a)
{
    const struct gw_config *cfg = a->cfg;
    const struct gw_plan *plan = a->plan;
    if (cfg->global.has_budget && plan->has_budget) {
        uint64_t gleft = gw_ledger_budget_left(a->seg, a->global, &cfg->global.budget, a->now);
        uint64_t tleft = gw_ledger_budget_left(a->seg, a->tenant, &plan->budget, a->now);
        if (gleft < cfg->global.budget.amount_us / 4 && tleft < plan->budget.amount_us / 2) {
            refused(a, GW_REF_BUDGET);
            uint64_t rem[GW_RATE_CELLS];
            refuse_429(a->c, "tenant", plan, tenant_remaining(a, rem), "budget_exhausted",
                       "the node is short of GPU time and this tenant has used most of its budget",
                       1000000);
            return -1;
        }
    }
    return 0;
}

/* 6. concurrency, a slot, the money: first the tenant's in-flight unit and
 * a slot (a->ref) ... */
static int admit_slot(struct admission *a)
{
    struct gw_segment *seg = a->seg;
    const struct gw_plan *plan = a->plan;
    if (gw_ledger_inflight_take(seg, a->tenant,
                                plan->max_inflight ? plan->max_inflight : UINT64_MAX) != 0) {
        refused(a, GW_REF_CONCURRENCY);
        uint64_t rem[GW_RATE_CELLS];
        refuse_429(a->c, "tenant", plan, tenant_remaining(a, rem), "too_many_concurrent",
                   "too many requests in flight for this tenant", 1000000);
        return -1;
    }
    if (gw_slot_claim(seg, &a->ref) != 0) {
        gw_ledger_inflight_put(seg, a->tenant);
        refused(a, GW_REF_OVERLOADED);
        refuse_503(a->c, "overloaded", "every request slot is busy");
        return -1;
    }
    gw_slot_set_accounts(seg, a->ref, a->tenant, a->global, 1);
    return 0;
}

/* ... then the reservation for the slot (a->upt: the price of a token). On
 * -1 the slot is given back. */
static int admit_money(struct admission *a)
{
    struct gw_segment *seg = a->seg;
    const struct gw_plan *plan = a->plan;
    uint64_t now = a->now, retry;
    if (!a->upt) /* set once: a parked request resumes with the same price */
        a->upt = us_per_token(a->f);
    uint64_t upt = a->upt;
    /* Prompt tokens cost about half a decoded token each (batched
     * prefill); bytes / 4 estimates the tokens. The worker charges what it
     * really uses and extends the reservation when the estimate is short. */
    uint64_t prompt_est = a->rq.prompt_len / 8 + 1;
    const struct gw_budget_rate *tb = budget_of(plan), *gb = budget_of(&a->cfg->global);
    int rc =
        gw_budget_reserve(seg, a->ref, (a->max_tokens + prompt_est) * upt, tb, gb, now, &retry);
    if (rc == GW_EREFUSED && plan->clamp_on_budget) {
        uint64_t left = gw_ledger_budget_left(seg, a->tenant, tb, now);
        uint64_t gleft = gw_ledger_budget_left(seg, a->global, gb, now);
        if (gleft < left)
            left = gleft;
        uint64_t fit = left / upt;
        if (fit > prompt_est) {
            a->max_tokens =
                (uint32_t)(fit - prompt_est < a->max_tokens ? fit - prompt_est : a->max_tokens);
            rc = gw_budget_reserve(seg, a->ref, (a->max_tokens + prompt_est) * upt, tb, gb, now,
                                   &retry);
        }
    }
    if (rc != 0) {
        abandon(a->f, a->ref, GW_SLOT_ADMITTED);
        refused(a, rc == GW_EREFUSED ? GW_REF_BUDGET : GW_REF_OVERLOADED);
        uint64_t rem[GW_RATE_CELLS];
        if (rc == GW_EREFUSED)
            refuse_429(a->c, "tenant", plan, tenant_remaining(a, rem), "budget_exhausted",
                       "the tenant's GPU-time budget is exhausted",
                       retry == UINT64_MAX ? 3600ull * 1000000 : retry);
        else
            refuse_503(a->c, "overloaded", "could not reserve budget; retry");
        return -1;
    }
    uint64_t got = (a->max_tokens + prompt_est) * upt; /* less when clamped */
    if (a->farm_gpu) { /* from the farm's lease: the slot refunds it there */
        if (got < a->farm_gpu)
            gw_cluster_gpu_put(seg, a->tenant, a->farm_gpu - got);
        a->farm_gpu = 0;
        (void)gw_cluster_gpu_bind(seg, a->ref, 0); /* ours: ADMITTED on our lane */
    }
    if (a->farm_ggpu) { /* and from the farm's global pool */
        if (got < a->farm_ggpu)
            gw_cluster_gpu_put(seg, a->global, a->farm_ggpu - got);
        a->farm_ggpu = 0;
        (void)gw_cluster_gpu_bind(seg, a->ref, 1);
    }
    return 0;
}

/* The reservation admit_money will make, for the farm's GPU lease first. */
static uint64_t reservation(struct admission *a)
{
    if (!a->upt)
        a->upt = us_per_token(a->f);
    return (a->max_tokens + a->rq.prompt_len / 8 + 1) * a->upt;
}

/* The admitted request as a job, its slot filled for the worker; NULL
 * (answered, slot given back) when out of memory. */
static struct job *admit_job(struct admission *a)
{
    struct conn *c = a->c;
    struct front *f = a->f;
    const struct gw_gen_request *rq = &a->rq;
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        abandon(f, a->ref, GW_SLOT_ADMITTED);
        refused(a, GW_REF_OVERLOADED);
        refuse_503(c, "overloaded", "out of memory");
        return NULL;
    }
    make_id(f, a->route, j->id, sizeof(j->id));
    /* a prompt asking for endless output gets the watchdog's lower cap */
    uint32_t flags = gw_unbounded_match(f->unb, a->cfg, a->who.tenant, rq->prompt, rq->prompt_len)
                         ? GW_REQ_UNBOUNDED
                         : 0;
    /* one that asks for N repetitions gets them (watchdog.repetition.requested_max) */
    flags |= gw_asked_count_prompt(rq->prompt, rq->prompt_len, rq->chat) << GW_REQ_ASKED_SHIFT;
    if (fill_slot(a, flags, j->id) != 0) {
        /* the slot is ADMITTED and ours until we move it: cannot happen */
        free(j);
        abandon(f, a->ref, GW_SLOT_ADMITTED);
        refused(a, GW_REF_OVERLOADED);
        refuse_503(c, "overloaded", "the request slot was lost");
        return NULL;
    }
    j->f = f;
    j->c = c;
    j->ref = a->ref;
    j->route = a->route;
    j->stream = rq->stream;
    j->include_usage = rq->include_usage;
    snprintf(j->user, sizeof(j->user), "%s", rq->user);
    j->tenant = a->tenant;
    j->has_output = a->plan->has_output;
    j->output = a->plan->output;
    j->created_s = a->now / 1000000;
    j->admitted_ns = a->admitted_ns;
    snprintf(c->acc_id, sizeof(c->acc_id), "%s", j->id);
    return j;
}

/* 7. to the workers; then the answer starts (headers now when streaming). */
static void admit_queue(struct admission *a, struct job *j)
{
    struct conn *c = a->c;
    struct front *f = a->f;
    struct gw_segment *seg = a->seg;
    const struct gw_plan *plan = a->plan;
    if (gw_slot_move(seg, a->ref, GW_SLOT_ADMITTED, GW_SLOT_QUEUED) != 0 ||
        gw_queue_push(seg, a->ref) != 0) {
        abandon(f, a->ref, gw_slot_state(seg, a->ref));
        if (j->farm_out == GW_FARM_OUT_LEASE) /* the output token, unused */
            gw_cluster_out_settle(seg, a->tenant, 0);
        free(j);
        refused(a, GW_REF_OVERLOADED);
        refuse_503(c, "overloaded", "the request queue is full");
        return;
    }
    gw_tstat_admitted(seg, a->tenant);
    uint64_t one = 1;
    if (write(f->fds->work, &one, sizeof(one)) < 0)
        gw__front_log(f, "work eventfd: %s", strerror(errno));
    j->next = f->jobs;
    f->jobs = j;
    c->job = j;
    uint64_t rem[GW_RATE_CELLS];
    gw__rate_headers(j->rate_hdr, sizeof(j->rate_hdr), "tenant", plan, tenant_remaining(a, rem), 0);
    if (j->stream) {
        gw__conn_stream_begin(c, j->rate_hdr);
        j->sent_first = 1;
        if (a->route == GW_ROUTE_CHAT) { /* OpenAI opens a chat stream with the role */
            struct gw_completion open = {.id = j->id,
                                         .created_s = j->created_s,
                                         .model = a->cfg->model_name,
                                         .text = "",
                                         .text_len = 0,
                                         .include_usage = j->include_usage};
            char *ev;
            size_t len;
            if (gw_sse_chunk(a->route, &open, 0, &ev, &len) == 0) {
                gw__conn_write(c, ev, len);
                free(ev);
            }
        }
    }
}

/* Admission from step 4 on: at once, or when the farm's lease came
 * (front_cluster.c). */
void gw__front_generate_rest(struct admission *a)
{
    if (admit_request(a) != 0) {
        /* taken for a parked request whose body a reload refuses now */
        gw__front_cluster_put_back(a);
        return;
    }
    /* 4b, 4c: the farm's GPU and output-token leases (front_cluster.c),
     * which may park it (the parked request keeps what it took) */
    int parked = gw__front_cluster_gpu(a, reservation(a));
    if (parked == 0)
        parked = gw__front_cluster_out(a);
    if (parked != 0) {
        if (parked < 0)
            gw__front_cluster_put_back(a);
        gw_request_free(&a->rq);
        return;
    }
    /* a reload raised max_tokens: what the leases gave covers less */
    uint64_t leased =
        a->farm_gpu && (!a->farm_ggpu || a->farm_gpu < a->farm_ggpu) ? a->farm_gpu : a->farm_ggpu;
    if (leased && reservation(a) > leased)
        a->max_tokens = (uint32_t)(leased / a->upt - (a->rq.prompt_len / 8 + 1));
    /* a->rq holds the prompt from here: the job copies it into the slot */
    struct job *j = NULL;
    if (gw__front_farming(a) == 0 &&
        gw__front_output_quota(a->c, a->f, a->plan, a->tenant, a->now) == 0 &&
        admit_pressure(a) == 0 && admit_slot(a) == 0 && admit_money(a) == 0)
        j = admit_job(a);
    if (j) { /* the job charges what it generates to the output lease */
        j->farm_out = a->farm_out;
        a->farm_out = GW_FARM_OUT_NONE;
    }
    /* refused before the reservation (GPU-us) or the job: back to the leases */
    gw__front_cluster_put_back(a);
    gw_request_free(&a->rq);
    if (j)
        admit_queue(a, j);
}

/* Admission, step by step (the order is the file's opening comment); a
 * node in a farm takes the tenant's farm-wide unit after its own rates
 * (3b, front_cluster.c), which may park the request for a lease. */
static void generate(struct conn *c, enum gw_route route)
{
    struct front *f = c->front;
    struct admission a = {.c = c, .f = f, .seg = &f->seg, .cfg = f->cfg, .route = route};
    a.now = gw_now_us();
    a.admitted_ns = gw_mono_ns();
    limits_sync(f);
    if (admit_address(&a) != 0 || admit_principal(&a) != 0 || admit_rates(&a) != 0 ||
        gw__front_cluster_gate(&a) != 0)
        return;
    gw__front_generate_rest(&a);
}

#define MODELS_PREFIX_LEN (sizeof("/v1/models/") - 1)

/* GET /v1/models and /v1/models/{id}: the one model this node serves,
 * behind the same address check and token as generation (and the same
 * refusals); no tenant rate is taken, since a listing costs no GPU time. */
static void models(struct conn *c)
{
    struct front *f = c->front;
    struct admission a = {.c = c, .f = f, .seg = &f->seg, .cfg = f->cfg, .route = GW_ROUTE_MODELS};
    a.now = gw_now_us();
    if (admit_address(&a) != 0 || admit_principal(&a) != 0)
        return;
    char id[2 * GW_NAME_MAX];
    int rc = gw_route_model_id(c->url, c->url_len, id, sizeof(id));
    if (rc < 0 || (rc == 1 && strcmp(id, f->cfg->model_name) != 0)) {
        char msg[200];
        if (rc < 0) /* not a name we could read: echo the path's piece */
            snprintf(id, sizeof(id), "%.*s", (int)strcspn(c->url + MODELS_PREFIX_LEN, "?"),
                     c->url + MODELS_PREFIX_LEN);
        snprintf(msg, sizeof(msg), "The model '%.64s' does not exist; this node serves '%.64s'", id,
                 f->cfg->model_name);
        gw__conn_error(c, 404, "invalid_request_error", "model_not_found", msg, "model", NULL);
        return;
    }
    char *body;
    size_t len;
    if (gw_openai_models_body(f->cfg->model_name, f->model_created_s, "gpuwarden", rc == 0, &body,
                              &len) != 0) {
        refuse_503(c, "overloaded", "out of memory");
        return;
    }
    gw__conn_respond(c, 200, "application/json", body, len, NULL);
    free(body);
}

void gw__front_request(struct conn *c)
{
    struct front *f = c->front;
    const char *method = http_method_str((enum http_method)c->method);
    enum gw_route route;
    const char *allow = NULL;
    int st = gw_route_match(method, c->url, c->url_len, &route, &allow);
    if (st == 0)
        c->route = (int)route;
    st = gw__front_listener_route(c, st);
    if (st == 404) {
        gw__conn_error(c, 404, "invalid_request_error", "not_found", "no such route", NULL, NULL);
        return;
    }
    if (st == 405) {
        char hdr[128];
        snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow ? allow : "");
        gw__conn_error(c, 405, "invalid_request_error", "method_not_allowed",
                       "method not allowed on this route", NULL, hdr);
        return;
    }
    switch (route) {
    case GW_ROUTE_HEALTHZ:
        gw__conn_respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
        return;
    case GW_ROUTE_READYZ: {
        int ready = workers_ready(f);
        char body[128];
        int len;
        if (ready >= f->cfg->workers && !f->draining) {
            len =
                snprintf(body, sizeof(body), "{\"status\":\"ready\",\"workers_ready\":%d}", ready);
            gw__conn_respond(c, 200, "application/json", body, (size_t)len, NULL);
        } else {
            char msg[96];
            snprintf(msg, sizeof(msg), "%s: %d of %d workers ready",
                     f->draining ? "draining" : "not ready", ready, f->cfg->workers);
            refuse_503(c, f->draining ? "draining" : "not_ready", msg);
        }
        return;
    }
    case GW_ROUTE_METRICS:
        gw__front_metrics(c);
        return;
    case GW_ROUTE_MODELS:
        models(c);
        return;
    default:
        break;
    }
    if (f->draining) {
        gw_metrics_refusal(&f->seg, GW_REF_DRAINING);
        refuse_503(c, "draining", "this node is shutting down");
        return;
    }
    generate(c, route);
}
