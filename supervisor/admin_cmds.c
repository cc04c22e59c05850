/* admin_cmds.c - the admin socket's commands: one JSON request line in,
 * one JSON response out (jansson, compact, keys in a fixed order), from a
 * client whose level admin.c has decided. The command table says which
 * level each command needs.
 *
 * The commands only read the segment, set words a process reads on its own
 * (cancel, drain, ban and budget cells) or call back into the master
 * (reload); none waits for another process.
 */
#include "admin_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TTL_MAX_S (366ull * 86400) /* bans and tokens: at most a year */

/* ------------------------------------------------------------ JSON helpers */

json_t *gw__admin_error(const char *code, const char *message)
{
    return json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code, "message", message);
}

static json_t *fail(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *fail(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return gw__admin_error(code, msg);
}

static json_t *ok(void)
{
    return json_pack("{s:b}", "ok", 1);
}

/* A required string argument; NULL and *err set when missing or wrong. */
static const char *arg_str(json_t *req, const char *key, json_t **err)
{
    json_t *v = json_object_get(req, key);
    if (!v) {
        *err = fail("missing_argument", "\"%s\": missing (a string)", key);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 255 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        *err = fail("bad_argument", "\"%s\": expected a string of 1 to 255 bytes", key);
        return NULL;
    }
    return json_string_value(v);
}

/* An optional string: NULL when absent; *err set when present but wrong. */
static const char *arg_opt_str(json_t *req, const char *key, json_t **err)
{
    return json_object_get(req, key) ? arg_str(req, key, err) : NULL;
}

/* A required integer in [lo, hi]; -1 and *err set when missing or wrong. */
static int arg_u64(json_t *req, const char *key, uint64_t lo, uint64_t hi, uint64_t *out,
                   json_t **err)
{
    json_t *v = json_object_get(req, key);
    if (!v) {
        *err = fail("missing_argument", "\"%s\": missing (an integer)", key);
        return -1;
    }
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 0 || (uint64_t)x < lo || (uint64_t)x > hi) {
        *err = fail("bad_argument", "\"%s\": expected an integer in [%" PRIu64 ", %" PRIu64 "]",
                    key, lo, hi);
        return -1;
    }
    *out = (uint64_t)x;
    return 0;
}

static const char *period_name(uint64_t us)
{
    switch (us) {
    case 1000000ull:
        return "second";
    case 60000000ull:
        return "minute";
    case 3600000000ull:
        return "hour";
    case 86400000000ull:
        return "day";
    default:
        return "?";
    }
}

static json_t *window_json(const struct gw_window *w)
{
    char s[96];
    if (w->burst)
        snprintf(s, sizeof(s), "%" PRIu64 " per %s burst %" PRIu64, w->limit,
                 period_name(w->period_us), w->burst);
    else
        snprintf(s, sizeof(s), "%" PRIu64 " per %s", w->limit, period_name(w->period_us));
    return json_string(s);
}

static json_t *plan_json(const struct gw_plan *p)
{
    json_t *rates = json_array();
    for (int i = 0; i < p->n_windows; i++)
        json_array_append_new(rates, window_json(&p->windows[i]));
    json_t *o = json_pack("{s:s,s:o}", "name", p->name, "rate", rates);
    if (p->has_budget) {
        char b[96];
        snprintf(b, sizeof(b), "%g GPU-seconds per %s", (double)p->budget.amount_us / 1e6,
                 period_name(p->budget.period_us));
        json_object_set_new(o, "budget", json_string(b));
    } else {
        json_object_set_new(o, "budget", json_null());
    }
    json_object_set_new(o, "max_inflight", json_integer(p->max_inflight));
    json_object_set_new(o, "max_tokens", json_integer(p->max_tokens));
    json_object_set_new(o, "on_budget", json_string(p->clamp_on_budget ? "clamp" : "refuse"));
    json_object_set_new(o, "weight", json_real(p->weight));
    return o;
}

/* ---------------------------------------------------------------- helpers */

static const char *proc_state_name(int st)
{
    switch (st) {
    case GW_PROC_STARTING:
        return "starting";
    case GW_PROC_READY:
        return "ready";
    case GW_PROC_DRAINING:
        return "draining";
    default:
        return "?";
    }
}

static int live_state(int st)
{
    return st == GW_SLOT_ADMITTED || st == GW_SLOT_QUEUED || st == GW_SLOT_RUNNING;
}

/* A copy of slot i's request when it is in flight and still the same
 * request after the copy; its state, or -1. */
static int slot_snapshot(const struct gw_segment *seg, uint32_t i, struct gw_slot_ref *ref,
                         struct gw_slot_req *req)
{
    int st = gw_slot_peek(seg, i, ref);
    if (st < 0 || !live_state(st))
        return -1;
    int again = gw_slot_get_req(seg, *ref, req);
    return again >= 0 && live_state(again) ? again : -1;
}

static int n_children(struct gw_admin *a, struct gw_admin_child *out, int max)
{
    return a->host.children(a->host.ctx, out, max);
}

/* The process record of a child when its lane is its own. */
static int child_proc(struct gw_admin *a, const struct gw_admin_child *c, struct gw_proc_info *pi)
{
    return c->pid && c->lane >= 0 && gw_proc_get(a->seg, c->lane, pi) == 0 && pi->pid == c->pid
               ? 0
               : -ENOENT;
}

static int tenant_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= GW_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("._@:-", s[i])))
            return 0;
    return 1;
}

/* ---------------------------------------------------------------- commands */

static json_t *cmd_status(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    (void)uid;
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    struct gw_admin_child ch[GW_MAX_FRONTS + MAX_WORKERS];
    int n = n_children(a, ch, (int)(sizeof(ch) / sizeof(ch[0])));
    int fronts = 0, fronts_up = 0, workers = 0, wready = 0, wdrain = 0;
    unsigned restarts = 0;
    for (int i = 0; i < n; i++) {
        struct gw_proc_info pi;
        int up = child_proc(a, &ch[i], &pi) == 0;
        restarts += ch[i].restarts;
        if (ch[i].role == GW_ROLE_FRONT) {
            fronts++;
            fronts_up += up;
        } else if (ch[i].role == GW_ROLE_WORKER) {
            workers++;
            wready += up && pi.state == GW_PROC_READY;
            wdrain += up && pi.state == GW_PROC_DRAINING;
        }
    }
    uint64_t in_flight = 0, running = 0;
    for (uint32_t i = 0; i < a->seg->cfg.slots; i++) {
        struct gw_slot_ref ref;
        int st = gw_slot_peek(a->seg, i, &ref);
        in_flight += live_state(st);
        running += st == GW_SLOT_RUNNING;
    }
    struct gw_seg_stats ss;
    gw_segment_stats(a->seg, &ss);
    struct gw_money m = {0};
    struct gw_acct g;
    if (gw_ledger_get(a->seg, GW_KIND_GLOBAL, "*", 1, 0, gw_now_us(), &g) == 0)
        gw_ledger_money(a->seg, g, &m);
    uint64_t up_s = (gw_mono_ns() - a->started_ns) / 1000000000ull;
    return json_pack(
        "{s:b,s:s,s:i,s:I,s:s,s:I,s:{s:i,s:i},s:{s:i,s:i,s:i},s:I,s:I,s:I,s:I,"
        "s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:b}",
        "ok", 1, "version", GW_VERSION, "pid", (int)getpid(), "uptime_s", (json_int_t)up_s,
        "config", cfg->path, "config_epoch", (json_int_t)a->host.epoch(a->host.ctx), "fronts",
        "running", fronts_up, "configured", fronts, "workers", "ready", wready, "draining", wdrain,
        "configured", workers, "queue_depth", (json_int_t)gw_queue_depth(a->seg), "in_flight",
        (json_int_t)in_flight, "running", (json_int_t)running, "restarts", (json_int_t)restarts,
        "totals", "device_us_reserved", (json_int_t)m.reserved_us, "device_us_used",
        (json_int_t)m.used_us, "device_us_refunded", (json_int_t)m.refunded_us, "accounts_live",
        (json_int_t)ss.accounts_live, "accounts_reclaimed", (json_int_t)ss.accounts_reclaimed,
        "table_full", (json_int_t)ss.table_full, "lane_repairs", (json_int_t)ss.repairs,
        "ledger_conserved", gw_ledger_check(a->seg, NULL, 0) == 0);
}

/* Requests the worker on `lane` runs now (its batch). */
static json_int_t running_on(struct gw_admin *a, int lane)
{
    json_int_t n = 0;
    for (uint32_t i = 0; i < a->seg->cfg.slots; i++) {
        struct gw_slot_ref ref;
        if (gw_slot_peek(a->seg, i, &ref) == GW_SLOT_RUNNING && gw_slot_owner(a->seg, ref) == lane)
            n++;
    }
    return n;
}

static json_t *cmd_workers(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    (void)uid;
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    struct gw_admin_child ch[GW_MAX_FRONTS + MAX_WORKERS];
    int n = n_children(a, ch, (int)(sizeof(ch) / sizeof(ch[0])));
    json_t *arr = json_array();
    uint64_t now = gw_mono_ns();
    for (int i = 0; i < n; i++) {
        if (ch[i].role != GW_ROLE_WORKER)
            continue;
        struct gw_proc_info pi;
        int up = child_proc(a, &ch[i], &pi) == 0;
        const char *state = !ch[i].pid ? "down" : !up ? "starting" : proc_state_name(pi.state);
        json_t *w = json_pack("{s:i,s:i,s:s,s:s,s:b}", "index", ch[i].index, "pid", (int)ch[i].pid,
                              "device", cfg->device, "state", state, "drain",
                              ch[i].index < MAX_WORKERS && a->drained[ch[i].index]);
        json_t *rid = json_null();
        double tps = 0;
        uint64_t tokens = 0;
        struct gw_slot_ref ref;
        struct gw_slot_req rq;
        if (up && pi.slot >= 0 &&
            slot_snapshot(a->seg, (uint32_t)pi.slot, &ref, &rq) == GW_SLOT_RUNNING) {
            struct gw_run_view run;
            gw_run_read(a->seg, ref.index, &run);
            tokens = run.tokens;
            if (run.started_ns && now > run.started_ns)
                tps = (double)tokens * 1e9 / (double)(now - run.started_ns);
            json_decref(rid);
            rid = json_string(rq.id);
        }
        json_object_set_new(w, "request", rid);
        json_object_set_new(w, "running", json_integer(up ? running_on(a, ch[i].lane) : 0));
        json_object_set_new(w, "tokens", json_integer((json_int_t)tokens));
        json_object_set_new(w, "tokens_per_s", json_real((double)(int64_t)(tps * 10) / 10));
        json_object_set_new(w, "us_per_token", json_integer(up ? (json_int_t)pi.us_per_token : 0));
        json_object_set_new(w, "restarts", json_integer(ch[i].restarts));
        json_object_set_new(w, "crash_loop", json_boolean(ch[i].looping));
        json_array_append_new(arr, w);
    }
    json_t *r = ok();
    json_object_set_new(r, "workers", arr);
    return r;
}

static json_t *cmd_requests(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    (void)uid;
    json_t *arr = json_array();
    uint64_t now = gw_now_us();
    for (uint32_t i = 0; i < a->seg->cfg.slots; i++) {
        struct gw_slot_ref ref;
        struct gw_slot_req rq;
        int st = slot_snapshot(a->seg, i, &ref, &rq);
        if (st < 0)
            continue;
        struct gw_run_view run;
        gw_run_read(a->seg, i, &run);
        uint64_t rep = run.rep;
        json_t *o = json_pack(
            "{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:{s:I,s:I},s:i}", "id", rq.id, "tenant", rq.tenant,
            "ip", rq.ip, "state", gw_slot_state_name(st), "age_ms",
            (json_int_t)(now > rq.created_us ? (now - rq.created_us) / 1000 : 0), "tokens",
            (json_int_t)run.tokens, "prompt_tokens", (json_int_t)run.prompt_tokens, "device_ms",
            (json_int_t)(run.device_ns / 1000000), "repetition", "period",
            (json_int_t)GW_REP_PERIOD(rep), "count", (json_int_t)GW_REP_COUNT(rep), "cancel",
            (int)run.cancel);
        json_array_append_new(arr, o);
    }
    json_t *r = ok();
    json_object_set_new(r, "requests", arr);
    return r;
}

static json_t *cmd_kill(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL;
    const char *id = arg_str(req, "id", &err);
    if (!id)
        return err;
    const char *reason = arg_opt_str(req, "reason", &err);
    if (err)
        return err;
    for (uint32_t i = 0; i < a->seg->cfg.slots; i++) {
        struct gw_slot_ref ref;
        struct gw_slot_req rq;
        int st = slot_snapshot(a->seg, i, &ref, &rq);
        if (st < 0 || strcmp(rq.id, id) != 0)
            continue;
        int rc = gw_slot_cancel(a->seg, ref, GW_CANCEL_ADMIN);
        if (rc == -EALREADY)
            return fail("conflict", "request %s is already being stopped (cancel reason %u)", id,
                        gw_run_cancel_word(a->seg, i));
        if (rc != 0)
            break; /* finished between the look and the cancel */
        say("uid %u: kill %s (tenant %s, %s): %s", (unsigned)uid, id, rq.tenant,
            gw_slot_state_name(st), reason ? reason : "no reason given");
        return json_pack("{s:b,s:s,s:s,s:s,s:s}", "ok", 1, "id", id, "tenant", rq.tenant, "state",
                         gw_slot_state_name(st), "reason", reason ? reason : "");
    }
    return fail("not_found", "no request in flight with id \"%s\"", id);
}

/* The tenant's plan; NULL and *err when the node would refuse it. */
static const struct gw_plan *tenant_plan(const struct gw_config *cfg, const char *t, json_t **err)
{
    if (!tenant_ok(t)) {
        *err = fail("bad_argument", "\"tenant\": expected 1 to 63 bytes of [A-Za-z0-9._@:-]");
        return NULL;
    }
    const char *why = NULL;
    const struct gw_plan *p = gw_config_plan_for(cfg, t, NULL, &why);
    if (!p)
        *err = fail("not_found", "tenant \"%s\": %s", t, why ? why : "not allowed");
    return p;
}

/* The tenant's prompt-farming state (common/farm.c): the ladder and the
 * last prompt's score with its parts. */
static json_t *farming_json(struct gw_admin *a, const struct gw_acct *acct,
                            const struct gw_farm_limits *l, uint64_t now)
{
    struct gw_farm_state st = {0};
    if (acct)
        gw_farm_get(a->seg, *acct, now, &st);
    return gw__admin_farming_json(&st, l);
}

json_t *gw__admin_farming_json(const struct gw_farm_state *s, const struct gw_farm_limits *l)
{
    struct gw_farm_state st = *s;
    char fp[24];
    snprintf(fp, sizeof(fp), "%016" PRIx64, st.last_fp);
    json_t *o = json_pack(
        "{s:b,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "enabled", l->enabled, "level",
        gw_farm_level_name(st.level), "score", (json_int_t)st.score, "near_pct",
        (json_int_t)st.near_pct, "cv_pct", (json_int_t)st.cv_pct, "single_pct",
        (json_int_t)st.single_pct, "sweep", (json_int_t)st.sweep, "window", (json_int_t)st.n,
        "strikes", (json_int_t)st.strikes, "prompts", (json_int_t)st.seen, "strikes_total",
        (json_int_t)st.strikes_total, "refused_total", (json_int_t)st.refused_total, "last_fp", fp);
    json_object_set_new(o, "refused_until",
                        st.level == GW_FARM_REFUSED ? json_integer((json_int_t)st.until_s)
                                                    : json_null());
    return o;
}

static json_t *tenant_json(struct gw_admin *a, const struct gw_config *cfg, const char *t,
                           const struct gw_plan *p)
{
    uint64_t now = gw_now_us();
    struct gw_acct acct;
    int have = gw_ledger_get(a->seg, GW_KIND_TENANT, t, strlen(t), 0, now, &acct) == 0;
    json_t *o = json_pack("{s:s,s:b,s:o}", "tenant", t, "listed", gw_config_tenant(cfg, t) != NULL,
                          "plan", plan_json(p));
    json_t *rem = json_array();
    for (int i = 0; i < p->n_windows; i++) {
        struct gw_rate r;
        gw_window_rate(&p->windows[i], &r);
        uint64_t left = have ? gw_ledger_rate_remaining(a->seg, acct, i, &r, now)
                             : p->windows[i].limit + p->windows[i].burst;
        json_array_append_new(rem, json_pack("{s:o,s:I}", "window", window_json(&p->windows[i]),
                                             "remaining", (json_int_t)left));
    }
    json_object_set_new(o, "rate", rem);
    struct gw_money m = {0};
    if (have)
        gw_ledger_money(a->seg, acct, &m);
    json_t *b = json_pack("{s:I,s:I,s:I}", "used_us", (json_int_t)m.used_us, "reserved_us",
                          (json_int_t)m.reserved_us, "refunded_us", (json_int_t)m.refunded_us);
    if (p->has_budget)
        json_object_set_new(
            b, "left_us",
            json_integer((json_int_t)(have ? gw_ledger_budget_left(a->seg, acct, &p->budget, now)
                                           : p->budget.amount_us)));
    else
        json_object_set_new(b, "left_us", json_null());
    json_object_set_new(o, "budget", b);
    json_object_set_new(o, "in_flight",
                        json_integer(have ? (json_int_t)gw_ledger_inflight(a->seg, acct) : 0));
    uint64_t ban = have ? gw_ledger_banned_until(a->seg, acct, now) : 0;
    json_object_set_new(o, "banned_until_us", ban ? json_integer((json_int_t)ban) : json_null());
    /* the service the worker's fair scheduler counted for it (VTC units) */
    json_object_set_new(o, "vtc", json_integer(have ? (json_int_t)gw_vtc_get(a->seg, acct) : 0));
    json_object_set_new(o, "farming", farming_json(a, have ? &acct : NULL, &p->farm, now));
    /* the plan's output_tokens window and what is left of it now */
    if (p->has_output) {
        uint64_t left = p->output.limit + p->output.burst;
        if (have)
            gw_outq_check(a->seg, acct, &p->output, now, &left, NULL);
        json_object_set_new(
            o, "output_tokens",
            json_pack("{s:o,s:I}", "window", window_json(&p->output), "left", (json_int_t)left));
    } else {
        json_object_set_new(o, "output_tokens", json_null());
    }
    return o;
}

static json_t *cmd_tenant_show(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)uid;
    json_t *err = NULL;
    const char *t = arg_str(req, "tenant", &err);
    if (!t)
        return err;
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    const struct gw_plan *p = tenant_plan(cfg, t, &err);
    if (!p)
        return err;
    json_t *r = ok();
    json_t *o = tenant_json(a, cfg, t, p);
    json_object_update(r, o);
    json_decref(o);
    return r;
}

static json_t *cmd_tenant_list(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    (void)uid;
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    json_t *arr = json_array();
    for (int i = 0; i < cfg->n_tenants; i++)
        json_array_append_new(arr, tenant_json(a, cfg, cfg->tenants[i].id, &cfg->tenants[i].plan));
    json_t *r = ok();
    json_object_set_new(r, "default_plan",
                        cfg->default_plan >= 0 ? json_string(cfg->plans[cfg->default_plan].name)
                                               : json_null());
    json_object_set_new(r, "tenants", arr);
    return r;
}

static json_t *cmd_tenant_set_limit(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL;
    const char *t = arg_str(req, "tenant", &err);
    if (!t)
        return err;
    struct gw_config *cfg = a->host.config(a->host.ctx);
    struct gw_tenant *ten = (struct gw_tenant *)gw_config_tenant(cfg, t);
    if (!ten)
        return fail("not_found",
                    "tenant \"%s\" is not listed in the config; set-limit changes listed tenants",
                    t);
    struct gw_plan np = ten->plan;
    int changed = 0;
    json_t *v;
    if ((v = json_object_get(req, "rate"))) {
        if (!json_is_array(v) || json_array_size(v) > GW_RATE_CELLS)
            return fail("bad_argument", "\"rate\": expected an array of at most %d windows",
                        GW_RATE_CELLS);
        np.n_windows = 0;
        size_t i;
        json_t *w;
        json_array_foreach (v, i, w) {
            if (!json_is_string(w) ||
                gw_window_parse(json_string_value(w), &np.windows[np.n_windows]) != 0)
                return fail(
                    "bad_argument",
                    "\"rate[%zu]\": expected \"N per second|minute|hour|day [burst M | moving]\"",
                    i);
            np.n_windows++;
        }
        changed++;
    }
    if ((v = json_object_get(req, "budget"))) {
        if (!json_is_string(v) || gw_budget_parse(json_string_value(v), &np.budget) != 0)
            return fail("bad_argument",
                        "\"budget\": expected \"X GPU-seconds per second|minute|hour|day\"");
        np.has_budget = 1;
        changed++;
    }
    uint64_t x;
    if (json_object_get(req, "max_inflight")) {
        if (arg_u64(req, "max_inflight", 0, UINT32_MAX, &x, &err) != 0)
            return err;
        np.max_inflight = (uint32_t)x;
        changed++;
    }
    if (json_object_get(req, "max_tokens")) {
        if (arg_u64(req, "max_tokens", 1, gw_request_tokens_cap(cfg), &x, &err) != 0)
            return err;
        np.max_tokens = (uint32_t)x;
        changed++;
    }
    if (!changed)
        return fail("missing_argument",
                    "nothing to set: give rate, budget, max_inflight or max_tokens");
    /* To the fronts first: a change they cannot see is not made at all. */
    struct gw_limit_override lo = {.n_windows = np.n_windows,
                                   .has_budget = np.has_budget,
                                   .budget = np.budget,
                                   .max_inflight = np.max_inflight,
                                   .max_tokens = np.max_tokens};
    snprintf(lo.tenant, sizeof(lo.tenant), "%s", t);
    memcpy(lo.windows, np.windows, sizeof(lo.windows));
    int rc = gw_limits_set(a->seg, &lo);
    if (rc == GW_EFULL)
        return fail("failed",
                    "run-time limits are set for %d tenants already; edit the config "
                    "file and run gpuwardenctl reload",
                    GW_LIMIT_OVERRIDES);
    if (rc != 0)
        return fail("failed", "tenant \"%s\": %s", t, gw_strerror(rc));
    ten->plan = np;
    say("uid %u: tenant %s: limits changed until the next reload", (unsigned)uid, t);
    json_t *r = ok();
    json_object_set_new(r, "tenant", json_string(t));
    json_object_set_new(r, "plan", plan_json(&np));
    json_object_set_new(r, "note",
                        json_string("in force at every front from its next request until "
                                    "the next reload or restart; edit the config file and run "
                                    "gpuwardenctl reload to make it stick"));
    return r;
}

/* An operation on a tenant's account (`op`), answered with the tenant's
 * state: `nothing` says why an account that does not exist yet needs none,
 * `done` is the log line's words. */
static json_t *tenant_account_cmd(struct gw_admin *a, json_t *req, uid_t uid,
                                  int (*op)(struct gw_segment *, struct gw_acct),
                                  const char *nothing, const char *done)
{
    json_t *err = NULL;
    const char *t = arg_str(req, "tenant", &err);
    if (!t)
        return err;
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    const struct gw_plan *p = tenant_plan(cfg, t, &err);
    if (!p)
        return err;
    struct gw_acct acct;
    if (gw_ledger_get(a->seg, GW_KIND_TENANT, t, strlen(t), 0, gw_now_us(), &acct) != 0)
        return fail("not_found", "tenant \"%s\" has no account yet (%s)", t, nothing);
    int rc = op(a->seg, acct);
    if (rc != 0)
        return fail("failed", "tenant \"%s\": %s", t, gw_strerror(rc));
    say("uid %u: tenant %s: %s", (unsigned)uid, t, done);
    json_t *r = ok();
    json_t *o = tenant_json(a, cfg, t, p);
    json_object_update(r, o);
    json_decref(o);
    return r;
}

static json_t *cmd_tenant_reset_budget(struct gw_admin *a, json_t *req, uid_t uid)
{
    return tenant_account_cmd(a, req, uid, gw_ledger_budget_reset, "nothing spent", "budget reset");
}

/* Takes a tenant off the prompt-farming ladder and forgets its evidence
 * (gw_farm_clear): what an operator does for a false positive. */
static json_t *cmd_tenant_clear_farming(struct gw_admin *a, json_t *req, uid_t uid)
{
    return tenant_account_cmd(a, req, uid, gw_farm_clear, "nothing to clear",
                              "prompt-farming state cleared");
}

/* 1 when the request's kind is "cidr" (an address-range rule, admin_net.c). */
static int is_cidr(json_t *req)
{
    json_t *k = json_object_get(req, "kind");
    return json_is_string(k) && strcmp(json_string_value(k), "cidr") == 0;
}

/* kind and id of a ban target, normalised (an ip as the fronts key it: IPv6
 * by ip.ipv6_prefix); 0, or -1 with *err. */
static int ban_target(json_t *req, int v6_prefix, enum gw_kind *kind, char *id, size_t idlen,
                      json_t **err)
{
    const char *k = arg_str(req, "kind", err);
    if (!k)
        return -1;
    const char *v = arg_str(req, "id", err);
    if (!v)
        return -1;
    if (strcmp(k, "tenant") == 0) {
        if (!tenant_ok(v)) {
            *err = fail("bad_argument", "\"id\": expected 1 to 63 bytes of [A-Za-z0-9._@:-]");
            return -1;
        }
        *kind = GW_KIND_TENANT;
        snprintf(id, idlen, "%s", v);
        return 0;
    }
    if (strcmp(k, "ip") == 0) {
        struct gw_addr ad;
        char key[GW_ADDR_STRLEN];
        if (gw_addr_parse(v, strlen(v), &ad) != 0) {
            *err = fail("bad_argument", "\"id\": \"%.64s\" is not an IPv4 or IPv6 address", v);
            return -1;
        }
        gw_addr_key(&ad, v6_prefix, key); /* the fronts' key (front.c, client_of) */
        snprintf(id, idlen, "%s", key);
        *kind = GW_KIND_IP;
        return 0;
    }
    *err = fail("bad_argument", "\"kind\": expected \"tenant\", \"ip\" or \"cidr\"");
    return -1;
}

static json_t *cmd_ban(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL;
    enum gw_kind kind;
    char id[INET6_ADDRSTRLEN + GW_NAME_MAX];
    uint64_t ttl;
    if (is_cidr(req))
        return gw__admin_net_set(a, req, uid, GW_NET_BAN);
    int v6p = a->host.config(a->host.ctx)->ipv6_prefix;
    if (ban_target(req, v6p, &kind, id, sizeof(id), &err) != 0 ||
        arg_u64(req, "ttl_s", 1, TTL_MAX_S, &ttl, &err) != 0)
        return err;
    uint64_t now = gw_now_us(), until = now + ttl * 1000000ull;
    struct gw_acct acct;
    int rc = gw_ledger_get(a->seg, kind, id, strlen(id), 1, now, &acct);
    if (rc == 0)
        rc = gw_ledger_ban(a->seg, acct, until);
    if (rc != 0)
        return fail("failed", "ban %s %s: %s", kind == GW_KIND_IP ? "ip" : "tenant", id,
                    gw_strerror(rc));
    say("uid %u: ban %s %s for %" PRIu64 " s", (unsigned)uid, kind == GW_KIND_IP ? "ip" : "tenant",
        id, ttl);
    return json_pack("{s:b,s:s,s:s,s:I,s:I}", "ok", 1, "kind", kind == GW_KIND_IP ? "ip" : "tenant",
                     "id", id, "ttl_s", (json_int_t)ttl, "until_us", (json_int_t)until);
}

static json_t *cmd_unban(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL;
    enum gw_kind kind;
    char id[INET6_ADDRSTRLEN + GW_NAME_MAX];
    if (is_cidr(req))
        return gw__admin_net_remove(a, req, uid, GW_NET_BAN);
    int v6p = a->host.config(a->host.ctx)->ipv6_prefix;
    if (ban_target(req, v6p, &kind, id, sizeof(id), &err) != 0)
        return err;
    uint64_t now = gw_now_us();
    struct gw_acct acct;
    if (gw_ledger_get(a->seg, kind, id, strlen(id), 0, now, &acct) != 0 ||
        !gw_ledger_banned_until(a->seg, acct, now))
        return fail("not_found", "%s %s is not banned", kind == GW_KIND_IP ? "ip" : "tenant", id);
    int rc = gw_ledger_ban(a->seg, acct, 0);
    if (rc != 0)
        return fail("failed", "unban %s: %s", id, gw_strerror(rc));
    say("uid %u: unban %s %s", (unsigned)uid, kind == GW_KIND_IP ? "ip" : "tenant", id);
    return json_pack("{s:b,s:s,s:s}", "ok", 1, "kind", kind == GW_KIND_IP ? "ip" : "tenant", "id",
                     id);
}

/* Sets each running worker's drain word from a->drained (a respawned
 * worker starts undrained: its lane was cleared). */
void gw__admin_apply_drains(struct gw_admin *a)
{
    struct gw_admin_child ch[GW_MAX_FRONTS + MAX_WORKERS];
    int n = n_children(a, ch, (int)(sizeof(ch) / sizeof(ch[0])));
    for (int i = 0; i < n; i++) {
        struct gw_proc_info pi;
        if (ch[i].role != GW_ROLE_WORKER || ch[i].index >= MAX_WORKERS ||
            child_proc(a, &ch[i], &pi) != 0)
            continue;
        if (gw_proc_drain_of(a->seg, ch[i].lane) != a->drained[ch[i].index])
            gw_proc_request_drain(a->seg, ch[i].lane, a->drained[ch[i].index]);
    }
}

static json_t *drain_cmd(struct gw_admin *a, json_t *req, uid_t uid, int drain)
{
    json_t *err = NULL;
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    uint64_t w;
    if (arg_u64(req, "worker", 0, (uint64_t)(cfg->workers > 0 ? cfg->workers - 1 : 0), &w, &err) !=
        0)
        return err;
    if (w >= MAX_WORKERS)
        return fail("bad_argument", "\"worker\": at most %d workers can be drained", MAX_WORKERS);
    a->drained[w] = (unsigned char)drain;
    gw__admin_apply_drains(a);
    say("uid %u: %s worker %" PRIu64, (unsigned)uid, drain ? "drain" : "undrain", w);
    return json_pack("{s:b,s:I,s:b,s:s}", "ok", 1, "worker", (json_int_t)w, "drain", drain, "note",
                     drain ? "the worker finishes what it runs and takes no new requests"
                           : "the worker takes requests again");
}

static json_t *cmd_drain(struct gw_admin *a, json_t *req, uid_t uid)
{
    return drain_cmd(a, req, uid, 1);
}

static json_t *cmd_undrain(struct gw_admin *a, json_t *req, uid_t uid)
{
    return drain_cmd(a, req, uid, 0);
}

static json_t *cmd_reload(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    char why[4096] = "";
    say("uid %u: reload", (unsigned)uid);
    if (!a->host.reload(a->host.ctx, why, sizeof(why)))
        return fail("reload_refused", "%s", why[0] ? why : "the new config was not taken");
    json_t *r = json_pack("{s:b,s:b,s:I}", "ok", 1, "taken", 1, "config_epoch",
                          (json_int_t)a->host.epoch(a->host.ctx));
    json_object_set_new(r, "note", why[0] ? json_string(why) : json_null());
    return r;
}

static json_t *cmd_token_issue(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL;
    const char *t = arg_str(req, "tenant", &err);
    if (!t)
        return err;
    uint64_t ttl;
    if (arg_u64(req, "ttl_s", 1, TTL_MAX_S, &ttl, &err) != 0)
        return err;
    const char *plan = arg_opt_str(req, "plan", &err);
    const char *kid = err ? NULL : arg_opt_str(req, "kid", &err);
    if (err)
        return err;
    if (!tenant_ok(t))
        return fail("bad_argument", "\"tenant\": expected 1 to 63 bytes of [A-Za-z0-9._@:-]");
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    const struct gw_key *key = NULL;
    for (int i = 0; i < cfg->n_keys && !key; i++) {
        const struct gw_key *k = &cfg->keys[i];
        int hs = k->alg == GW_ALG_HS256 || k->alg == GW_ALG_HS384 || k->alg == GW_ALG_HS512;
        if (kid ? strcmp(k->kid, kid) == 0 : hs)
            key = k;
    }
    if (!key)
        return fail("not_found", kid ? "no key with kid \"%s\"" : "no HS256/384/512 key%s",
                    kid ? kid : " in the config");
    uint64_t now = gw_now_us() / 1000000;
    char *tok = NULL;
    int rc = gw_auth_issue(key, t, plan, cfg->issuer[0] ? cfg->issuer : NULL,
                           cfg->audience[0] ? cfg->audience : NULL, now, now + ttl, &tok);
    if (rc != 0)
        return fail("failed", "key %s: %s", key->kid,
                    rc == -ENOTSUP ? "only HS* keys can issue tokens" : gw_strerror(rc));
    say("uid %u: token issued for tenant %s (kid %s, %" PRIu64 " s)", (unsigned)uid, t, key->kid,
        ttl);
    json_t *r = json_pack("{s:b,s:s,s:s,s:s,s:I}", "ok", 1, "token", tok, "tenant", t, "kid",
                          key->kid, "expires", (json_int_t)(now + ttl));
    free(tok);
    return r;
}

static const struct {
    const char *name;
    int level;
    json_t *(*fn)(struct gw_admin *, json_t *, uid_t);
} COMMANDS[] = {
    {"status", GW_ADMIN_OPERATOR, cmd_status},
    {"workers", GW_ADMIN_OPERATOR, cmd_workers},
    {"requests", GW_ADMIN_OPERATOR, cmd_requests},
    {"tenant.list", GW_ADMIN_OPERATOR, cmd_tenant_list},
    {"tenant.show", GW_ADMIN_OPERATOR, cmd_tenant_show},
    {"tenant.top", GW_ADMIN_OPERATOR, gw__admin_cmd_tenant_top},
    {"kill", GW_ADMIN_ADMIN, cmd_kill},
    {"tenant.set-limit", GW_ADMIN_ADMIN, cmd_tenant_set_limit},
    {"tenant.reset-budget", GW_ADMIN_ADMIN, cmd_tenant_reset_budget},
    {"tenant.clear-farming", GW_ADMIN_ADMIN, cmd_tenant_clear_farming},
    {"ban", GW_ADMIN_ADMIN, cmd_ban},
    {"unban", GW_ADMIN_ADMIN, cmd_unban},
    {"ip.show", GW_ADMIN_OPERATOR, gw__admin_cmd_ip_show},
    {"ip.clear-farming", GW_ADMIN_ADMIN, gw__admin_cmd_ip_clear_farming},
    {"allow", GW_ADMIN_ADMIN, gw__admin_cmd_allow},
    {"unallow", GW_ADMIN_ADMIN, gw__admin_cmd_unallow},
    {"net.list", GW_ADMIN_OPERATOR, gw__admin_cmd_net_list},
    {"drain", GW_ADMIN_ADMIN, cmd_drain},
    {"undrain", GW_ADMIN_ADMIN, cmd_undrain},
    {"reload", GW_ADMIN_ADMIN, cmd_reload},
    {"token.issue", GW_ADMIN_ADMIN, cmd_token_issue},
    {"token.revoke", GW_ADMIN_ADMIN, gw__admin_cmd_token_revoke},
    {"cluster", GW_ADMIN_OPERATOR, gw__admin_cmd_cluster},
    {"apikey.create", GW_ADMIN_ADMIN, gw__admin_cmd_apikey_create},
    {"apikey.list", GW_ADMIN_OPERATOR, gw__admin_cmd_apikey_list},
    {"apikey.revoke", GW_ADMIN_ADMIN, gw__admin_cmd_apikey_revoke},
};

json_t *gw__admin_dispatch(struct gw_admin *a, const char *line, size_t len, int level, uid_t uid)
{
    json_error_t je;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!req)
        return fail("bad_json", "not valid JSON: %s at column %d", je.text, je.column);
    json_t *r = NULL;
    json_t *c = json_object_get(req, "cmd");
    if (!json_is_object(req)) {
        r = fail("bad_request", "expected a JSON object with \"cmd\"");
    } else if (!c) {
        r = fail("bad_request", "\"cmd\": missing (a string)");
    } else if (!json_is_string(c)) {
        r = fail("bad_request", "\"cmd\": expected a string");
    } else {
        const char *cmd = json_string_value(c);
        size_t i, n = sizeof(COMMANDS) / sizeof(COMMANDS[0]);
        for (i = 0; i < n && strcmp(COMMANDS[i].name, cmd) != 0; i++)
            ;
        if (i == n) {
            char q[96];
            snprintf(q, sizeof(q), "%.64s%s", cmd, strlen(cmd) > 64 ? "..." : "");
            for (char *p = q; *p; p++)
                if ((unsigned char)*p < 0x20)
                    *p = '?';
            r = fail("unknown_command",
                     "unknown command \"%s\"; commands: status, workers, requests, kill, "
                     "tenant.list, tenant.show, tenant.top, tenant.set-limit, tenant.reset-budget, "
                     "tenant.clear-farming, ban, unban, ip.show, ip.clear-farming, allow, "
                     "unallow, net.list, drain, undrain, "
                     "reload, token.issue, token.revoke, cluster, apikey.create, apikey.list, "
                     "apikey.revoke",
                     q);
        } else if (level < COMMANDS[i].level) {
            r = fail("forbidden", "\"%s\" needs the admin level; uid %u is an operator", cmd,
                     (unsigned)uid);
        } else {
            r = COMMANDS[i].fn(a, req, uid);
        }
    }
    json_decref(req);
    return r ? r : fail("failed", "out of memory");
}

char *gw__admin_dump(json_t *r)
{
    char *s = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(r);
    return s;
}

int gw_admin_request(struct gw_admin *a, const char *line, size_t len, int level, char **out)
{
    *out = gw__admin_dump(gw__admin_dispatch(a, line, len, level, 0));
    return *out ? 0 : -ENOMEM;
}
