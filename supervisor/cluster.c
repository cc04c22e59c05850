/* cluster.c - the cluster agent: the one process of a node that talks to
 * the farm's Redis (docs/ARCHITECTURE.md, "The farm").
 *
 * The master starts it (`gpuwarden --cluster -c CONFIG`) when the config
 * has a "cluster" section and restarts it like any child. It sleeps on the
 * segment's demand futex; when fronts wait for a lease, it takes one from
 * Redis (a Lua script: all windows of the tenant's farm-wide account at
 * once), puts the tokens into the tenant's cell and wakes the fronts. It
 * gives back what a lease left unused when the lease ends, beats the node's
 * heartbeat, and charges to Redis what the node admitted fail-open while
 * Redis was away.
 *
 * Every Redis call is bounded: hiredis's blocking context with a connect
 * timeout and socket send/receive timeouts of cluster.timeout_ms. Blocking
 * is safe here because this process serves no client: the fronts never
 * wait on it beyond cluster.wait_ms (they apply the plan's fail mode). A
 * failure closes the connection, marks Redis down in the segment and
 * reconnects with backoff.
 */
#include "cluster_lua.h"
#include "gw_supervisor.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS 1000000ull

struct agent {
    struct gw_config *cfg;
    const struct gw_cluster_cfg *cl;
    struct gw_segment seg;
    const struct gw_fds *fds;
    redisContext *rc;
    char sha[3][48]; /* take, give, beat */
    int state;       /* enum gw_cl_state as we last published it */
    char last_err[256];
    uint64_t next_connect_ns, backoff_ms, next_beat_ns, down_mark_ns;
    uint64_t live;
    uint64_t *after_grant; /* per cell: its tokens right after our last grant */
};

static volatile sig_atomic_t stop_flag;
static void on_term(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void alog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void alog(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_vlog("cluster", fmt, ap);
    va_end(ap);
}

/* Every front looks at its waiting requests now. */
static void wake_fronts(struct agent *a)
{
    uint64_t one = 1;
    for (int i = 0; i < a->fds->n_fronts; i++)
        if (write(a->fds->fronts[i], &one, sizeof(one)) < 0 && errno != EAGAIN)
            alog("front %d eventfd: %s", i, strerror(errno));
}

/* The connection failed (why): closed, Redis marked down, reconnect later.
 * Logged once per change of reason, not per retry. */
static void fail(struct agent *a, int timeout, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct agent *a, int timeout, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    gw_cluster_count(&a->seg, timeout ? GW_CLC_TIMEOUTS : GW_CLC_ERRORS, 1);
    if (strcmp(why, a->last_err) != 0 || a->state != GW_CL_DOWN)
        gw_logf(GW_LOG_WARNING, "cluster", NULL, 0, "redis %s:%d: %s; %s", a->cl->redis_host,
                a->cl->redis_port, why, "requests that need a lease follow their plan's fail mode");
    snprintf(a->last_err, sizeof(a->last_err), "%s", why);
    if (a->rc) {
        redisFree(a->rc);
        a->rc = NULL;
    }
    if (a->state != GW_CL_DOWN) {
        a->state = GW_CL_DOWN;
        a->down_mark_ns = gw_mono_ns();
        gw_cluster_set_state(&a->seg, GW_CL_DOWN, 0, gw_now_us());
        wake_fronts(a);
    }
    a->backoff_ms = a->backoff_ms ? a->backoff_ms * 2 : 50;
    if (a->backoff_ms > 1000)
        a->backoff_ms = 1000;
    a->next_connect_ns = gw_mono_ns() + a->backoff_ms * MS;
}

/* What a call returned: the reply, or NULL after fail() when the call
 * failed (no answer within timeout_ms, a broken connection, bytes that are
 * not Redis's protocol) or Redis answered an error (its text in the log). */
static redisReply *checked(struct agent *a, const char *what, redisReply *r)
{
    if (!r) {
        int to = a->rc->err == REDIS_ERR_IO && (errno == EAGAIN || errno == ETIMEDOUT);
        if (to)
            fail(a, 1, "%s: no answer within %u ms", what, a->cl->timeout_ms);
        else
            fail(a, 0, "%s: %s", what, a->rc->errstr[0] ? a->rc->errstr : "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fail(a, 0, "%s: %.*s", what, (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* One command (argv form: nothing is ever formatted into it); the caller
 * checks the reply's shape. */
static redisReply *call(struct agent *a, const char *what, int argc, const char **argv,
                        const size_t *lens)
{
    if (!a->rc)
        return NULL;
    gw_cluster_count(&a->seg, GW_CLC_ROUND_TRIPS, 1);
    return checked(a, what, redisCommandArgv(a->rc, argc, argv, lens));
}

static int load_script(struct agent *a, int i, const char *src)
{
    const char *argv[] = {"SCRIPT", "LOAD", src};
    redisReply *r = call(a, "SCRIPT LOAD", 3, argv, NULL);
    if (!r)
        return -EIO;
    int ok = r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok)
        memcpy(a->sha[i], r->str, 41);
    freeReplyObject(r);
    if (!ok)
        fail(a, 0, "SCRIPT LOAD: unexpected reply (not a 40-byte SHA1)");
    return ok ? 0 : -EPROTO;
}

static int beat(struct agent *a);

/* Connects, authenticates, loads the scripts and beats once. */
static void connect_redis(struct agent *a)
{
    const struct gw_cluster_cfg *cl = a->cl;
    struct timeval tv = {.tv_sec = cl->timeout_ms / 1000,
                         .tv_usec = (long)(cl->timeout_ms % 1000) * 1000};
    a->rc = redisConnectWithTimeout(cl->redis_host, cl->redis_port, tv);
    if (!a->rc || a->rc->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", a->rc ? a->rc->errstr : "out of memory");
        int to = a->rc && strstr(why, "timed out") != NULL;
        fail(a, to, "connect: %s", why);
        return;
    }
    if (redisSetTimeout(a->rc, tv) != REDIS_OK) {
        fail(a, 0, "cannot set the socket timeouts");
        return;
    }
    if (cl->password[0]) {
        const char *argv[] = {"AUTH", cl->password};
        redisReply *r = call(a, "AUTH", 2, argv, NULL);
        if (!r)
            return;
        freeReplyObject(r);
    }
    if (load_script(a, 0, GW_LUA_TAKE) || load_script(a, 1, GW_LUA_GIVE) ||
        load_script(a, 2, GW_LUA_BEAT))
        return;
    if (beat(a) != 0)
        return;
    alog("redis %s:%d: connected; node \"%s\", %" PRIu64 " live", cl->redis_host, cl->redis_port,
         cl->node, a->live);
}

/* EVALSHA of script i; on NOSCRIPT (Redis restarted empty) the source. */
static redisReply *eval(struct agent *a, int i, const char *src, int nkeys, int argc,
                        const char **argv)
{
    const char *v[40];
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    v[0] = "EVALSHA";
    v[1] = a->sha[i];
    v[2] = nk;
    for (int j = 0; j < argc && j < 37; j++)
        v[3 + j] = argv[j];
    if (!a->rc)
        return NULL;
    gw_cluster_count(&a->seg, GW_CLC_ROUND_TRIPS, 1);
    redisReply *r = redisCommandArgv(a->rc, 3 + argc, v, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* Redis restarted empty: the source once, which loads it again */
        freeReplyObject(r);
        v[0] = "EVAL";
        v[1] = src;
        return call(a, "EVAL", 3 + argc, v, NULL);
    }
    return checked(a, "EVALSHA", r);
}

static int beat(struct agent *a)
{
    const struct gw_cluster_cfg *cl = a->cl;
    char zkey[128], nkey[160], ttl[16], info[96];
    snprintf(zkey, sizeof(zkey), "%s:nodes", cl->prefix);
    snprintf(nkey, sizeof(nkey), "%s:node:%s", cl->prefix, cl->node);
    snprintf(ttl, sizeof(ttl), "%u", 3 * cl->heartbeat_ms);
    snprintf(info, sizeof(info), "pid=%d", (int)getpid());
    const char *argv[] = {zkey, nkey, cl->node, ttl, info};
    redisReply *r = eval(a, 2, GW_LUA_BEAT, 2, 5, argv);
    if (!r)
        return -EIO;
    int ok = r->type == REDIS_REPLY_INTEGER && r->integer >= 1;
    if (ok)
        a->live = (uint64_t)r->integer;
    freeReplyObject(r);
    if (!ok) {
        fail(a, 0, "heartbeat: unexpected reply");
        return -EPROTO;
    }
    a->next_beat_ns = gw_mono_ns() + (uint64_t)cl->heartbeat_ms * MS;
    a->backoff_ms = 0;
    if (a->state != GW_CL_UP) {
        if (a->state == GW_CL_DOWN) {
            gw_cluster_count(&a->seg, GW_CLC_OPEN_US, (gw_mono_ns() - a->down_mark_ns) / 1000);
            alog("redis %s:%d: back", cl->redis_host, cl->redis_port);
        }
        a->state = GW_CL_UP;
        a->last_err[0] = '\0';
        wake_fronts(a);
    }
    gw_cluster_set_state(&a->seg, GW_CL_UP, a->live, gw_now_us());
    return 0;
}

/* The Redis keys and window arguments of one tenant's account. */
struct acct_args {
    int nw;
    char keys[GW_RATE_CELLS + 1][160];
    char win[GW_RATE_CELLS][2][24];
    const struct gw_plan *plan;
};

static int account_args(struct agent *a, const struct gw_cl_cell *c, struct acct_args *x)
{
    char id[GW_ID_MAX + 1];
    enum gw_kind kind;
    size_t n = gw_ledger_id(&a->seg, c->acct, &kind, id, sizeof(id));
    if (n == 0 || kind != GW_KIND_TENANT)
        return -ENOENT;
    const char *why = NULL;
    x->plan = gw_config_plan_for(a->cfg, id, NULL, &why);
    if (!x->plan || x->plan->n_windows == 0)
        return -ENOENT;
    x->nw = x->plan->n_windows;
    for (int w = 0; w < x->nw; w++) {
        const struct gw_window *win = &x->plan->windows[w];
        struct gw_rate r;
        if (gw_rate_make(&r, win->limit, win->period_us, win->burst) != 0)
            return -EINVAL;
        /* the window's figures are in the key: a plan change starts afresh */
        snprintf(x->keys[w], sizeof(x->keys[w]), "%s:rate:%s:%" PRIu64 "/%" PRIu64 "+%" PRIu64,
                 a->cl->prefix, id, win->limit, win->period_us, win->burst);
        snprintf(x->win[w][0], 24, "%" PRIu64, r.interval_us);
        snprintf(x->win[w][1], 24, "%" PRIu64, r.tolerance_us);
    }
    snprintf(x->keys[x->nw], sizeof(x->keys[0]), "%s:lease:%s", a->cl->prefix, id);
    return 0;
}

/* Request tokens per lease for a tenant: lease_percent of its first
 * window's limit, at least 1, at most lease_max; more when more requests
 * wait now. */
static uint64_t lease_size(const struct agent *a, const struct gw_plan *p, uint64_t want)
{
    uint64_t k = p->windows[0].limit * a->cl->lease_percent / 100;
    if (k < 1)
        k = 1;
    if (want > k)
        k = want;
    return k > a->cl->lease_max ? a->cl->lease_max : k;
}

/* take (force 0: a lease; 1: reconcile) or give for cell i; the reply's
 * first integer (tokens granted or given back), -1 on failure. */
static int64_t run_script(struct agent *a, int give, const struct acct_args *x, uint64_t k,
                          int force, uint64_t held, uint64_t *retry_us)
{
    const char *argv[2 * GW_RATE_CELLS + GW_RATE_CELLS + 8];
    char ks[24], ttl[24], fs[4], hs[24];
    int n = 0;
    for (int w = 0; w <= x->nw; w++)
        argv[n++] = x->keys[w];
    snprintf(ks, sizeof(ks), "%" PRIu64, k);
    snprintf(ttl, sizeof(ttl), "%u", a->cl->lease_ttl_ms);
    snprintf(fs, sizeof(fs), "%d", force);
    snprintf(hs, sizeof(hs), "%" PRIu64, held);
    argv[n++] = a->cl->node;
    argv[n++] = ks;
    argv[n++] = ttl;
    argv[n++] = fs;
    argv[n++] = hs;
    for (int w = 0; w < x->nw; w++) {
        argv[n++] = x->win[w][0];
        argv[n++] = x->win[w][1];
    }
    gw_cluster_count(&a->seg, GW_CLC_LEASE_CALLS, 1);
    redisReply *r = give ? eval(a, 1, GW_LUA_GIVE, x->nw + 1, n, argv)
                         : eval(a, 0, GW_LUA_TAKE, x->nw + 1, n, argv);
    if (!r)
        return -1;
    int64_t v = -1;
    if (give && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
        v = r->integer;
    } else if (!give && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= 0 &&
               r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer >= 0) {
        v = r->element[0]->integer;
        *retry_us = (uint64_t)r->element[1]->integer;
    }
    freeReplyObject(r);
    if (v < 0)
        fail(a, 0, "%s: unexpected reply", give ? "lease return" : "lease");
    return v;
}

/* One tenant cell: give back an ended lease, take one when requests wait,
 * charge fail-open admissions. 1 when the fronts should look again. */
static int serve_cell(struct agent *a, uint32_t i, const struct gw_cl_cell *c, uint64_t now)
{
    struct acct_args x;
    if (account_args(a, c, &x) != 0)
        return 0;
    int woke = 0;
    uint64_t retry = 0;
    if (c->tokens > 0 && now >= c->expires_us) {
        uint64_t r = gw_cluster_reclaim(&a->seg, i);
        if (r && run_script(a, 1, &x, r, 0, 0, &retry) > 0)
            gw_cluster_count(&a->seg, GW_CLC_RETURNED, r);
        /* A whole lease went unused while `want` said requests waited: no
         * front had one (a front killed with requests parked leaves its
         * count). Drop it, unless a request parked meanwhile (the CAS). */
        if (r && r == a->after_grant[i] && c->want > 0)
            gw_cluster_want_reset(&a->seg, i, c->want);
        a->after_grant[i] = 0;
    }
    if (c->open_spent > 0 && a->rc) {
        uint64_t n = gw_cluster_open_drain(&a->seg, i);
        if (n && run_script(a, 0, &x, n, 1, 0, &retry) < 0)
            gw_cluster_open_undrain(&a->seg, i, n);
        else if (n)
            gw_cluster_count(&a->seg, GW_CLC_RECONCILED, n);
    }
    if (c->want > 0 && c->deny_until <= now && a->rc) {
        struct gw_cl_cell cur;
        gw_cluster_cell(&a->seg, i, &cur);
        int live = cur.tokens > 0 && now < cur.expires_us;
        if (cur.want == 0 || (live && cur.tokens >= cur.want))
            return woke; /* resolved meanwhile, or covered */
        uint64_t held = live ? cur.tokens : 0;
        uint64_t sent = gw_now_us();
        int64_t got = run_script(a, 0, &x, lease_size(a, x.plan, cur.want - held), 0, held, &retry);
        if (got < 0)
            return 1;
        if (got > 0) {
            /* the node stops using it one timeout before Redis can reap it */
            uint64_t ttl = (uint64_t)a->cl->lease_ttl_ms * 1000;
            uint64_t margin = (uint64_t)a->cl->timeout_ms * 1000;
            gw_cluster_grant(&a->seg, i, (uint64_t)got, sent + ttl - margin);
            a->after_grant[i] = held + (uint64_t)got;
            gw_cluster_count(&a->seg, GW_CLC_GRANTS, 1);
            gw_cluster_count(&a->seg, GW_CLC_TOKENS, (uint64_t)got);
        } else {
            /* exhausted farm-wide: refuse here until Redis says a token is
             * back, and ask again no later than a second from now */
            gw_cluster_deny(&a->seg, i, now + (retry < 1000000 ? (retry ? retry : 1) : 1000000));
            gw_cluster_count(&a->seg, GW_CLC_DENIALS, 1);
        }
        woke = 1;
    }
    return woke;
}

static void serve(struct agent *a)
{
    uint64_t now = gw_now_us();
    int woke = 0;
    for (uint32_t i = 0; i < a->seg.cfg.budgets; i++) {
        struct gw_cl_cell c;
        if (gw_cluster_cell(&a->seg, i, &c) != 0)
            continue;
        if (c.want == 0 && c.open_spent == 0 && (c.tokens == 0 || now < c.expires_us))
            continue;
        woke |= serve_cell(a, i, &c, now);
    }
    if (woke)
        wake_fronts(a);
}

/* Milliseconds to sleep: until the next heartbeat, reconnect or lease end. */
static uint32_t sleep_ms(const struct agent *a)
{
    uint64_t now = gw_mono_ns(), next = a->rc ? a->next_beat_ns : a->next_connect_ns;
    uint64_t ms = next > now ? (next - now) / MS + 1 : 1;
    /* lease ends are found by the scan: look at least every 100 ms */
    return ms > 100 ? 100 : (uint32_t)ms;
}

static void agent_loop(struct agent *a)
{
    while (!stop_flag) {
        uint32_t seen = gw_cluster_demand(&a->seg);
        uint64_t now = gw_mono_ns();
        if (!a->rc && now >= a->next_connect_ns)
            connect_redis(a);
        else if (a->rc && now >= a->next_beat_ns)
            beat(a);
        if (a->state == GW_CL_DOWN) {
            gw_cluster_count(&a->seg, GW_CLC_OPEN_US, (now - a->down_mark_ns) / 1000);
            a->down_mark_ns = now;
        }
        serve(a);
        gw_proc_heartbeat(&a->seg, -1);
        if (gw_cluster_demand(&a->seg) == seen)
            gw_cluster_wait_demand(&a->seg, seen, sleep_ms(a));
    }
}

int gw_cluster_main(const char *config_path, const struct gw_fds *fds)
{
    struct agent a = {.fds = fds};
    char err[4096];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* the cluster section needs a restart */
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (gw_config_load(&a.cfg, config_path, err, sizeof(err)) != 0) {
        gw_logf(GW_LOG_ERR, "cluster", NULL, 0, "%s", err);
        return 111;
    }
    gw_log_set_format(a.cfg->log_format);
    a.cl = &a.cfg->cluster;
    if (!a.cl->enabled) {
        gw_logf(GW_LOG_ERR, "cluster", NULL, 0, "%s: no \"cluster\" section", config_path);
        gw_config_free(a.cfg);
        return 100;
    }
    char path[300];
    gw_segment_path(a.cfg, path, sizeof(path));
    if (gw_segment_attach(&a.seg, path, err, sizeof(err)) != 0 || gw_lane_acquire(&a.seg) != 0) {
        gw_logf(GW_LOG_ERR, "cluster", NULL, 0, "segment: %s", err);
        gw_config_free(a.cfg);
        return 111;
    }
    a.after_grant = calloc(a.seg.cfg.budgets, sizeof(*a.after_grant));
    if (!a.after_grant) {
        gw_logf(GW_LOG_ERR, "cluster", NULL, 0, "out of memory");
        gw_segment_close(&a.seg);
        gw_config_free(a.cfg);
        return 111;
    }
    gw_proc_set_role(&a.seg, GW_ROLE_CLUSTER, 0);
    gw_proc_set_state(&a.seg, GW_PROC_READY);
    a.state = GW_CL_OFF;
    agent_loop(&a);
    if (a.rc)
        redisFree(a.rc);
    free(a.after_grant);
    gw_segment_close(&a.seg);
    gw_config_free(a.cfg);
    return 0;
}
