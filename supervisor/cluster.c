/* cluster.c - the cluster agent: the one process of a node that talks to
 * the farm's Redis (docs/ARCHITECTURE.md, "The farm").
 *
 * The master starts it (`gpuwarden --cluster -c CONFIG`) when the config
 * has a "cluster" section and restarts it like any child. It sleeps on the
 * segment's demand futex; when fronts wait for a lease, it takes one from
 * Redis (a Lua script: all windows of the tenant's farm-wide account at
 * once, or its GPU budget's cell), puts the tokens (or GPU-us) into the
 * tenant's cell and wakes the fronts. Leases are sized by the node's recent
 * demand (gw_cluster_lease_size). It gives back what a lease left unused
 * when the lease ends (and deletes its record), charges what workers
 * overdrew, beats the node's heartbeat (and keeps the live nodes' names),
 * and charges to Redis what the node admitted fail-open while Redis was
 * away.
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
    struct cellmem *mem; /* per cell: what this agent remembers of it */
};

struct cellmem {
    uint64_t after_grant;             /* request tokens right after our last grant */
    uint64_t gpu_after_grant;         /* GPU-us right after our last grant */
    uint64_t reclaimed;               /* request tokens taken back from the cell (this agent) */
    int64_t gpu_reclaimed;            /* GPU-us taken back from the cell (this agent); a debt
                                         charged counts negative */
    int rate_open;                    /* a request lease record of ours may be in Redis */
    int gpu_open;                     /* a GPU lease record of ours may be in Redis */
    uint64_t out_after_grant;         /* output tokens right after our last grant */
    int out_open;                     /* an output lease record of ours may be in Redis */
    struct gw_cl_ewma rate, gpu, out; /* recent demand (gw_cluster_ewma_sample) */
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
    char npre[64];
    snprintf(npre, sizeof(npre), "%s:node:", cl->prefix);
    const char *argv[] = {zkey, nkey, cl->node, ttl, info, npre};
    redisReply *r = eval(a, 2, GW_LUA_BEAT, 2, 6, argv);
    if (!r)
        return -EIO;
    /* the live nodes' names: at least ours */
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements >= 1;
    char names[1024];
    size_t at = 0;
    names[0] = '\0';
    for (size_t k = 0; ok && k < r->elements; k++) {
        const redisReply *e = r->element[k];
        ok = e->type == REDIS_REPLY_STRING && e->len < GW_NAME_MAX;
        if (ok && at + e->len + 2 < sizeof(names))
            at += (size_t)snprintf(names + at, sizeof(names) - at, "%s%.*s", k ? "\n" : "",
                                   (int)e->len, e->str);
    }
    if (ok) {
        a->live = r->elements;
        gw_cluster_set_peers(&a->seg, names, a->live);
    }
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

/* The Redis keys and window arguments of one kind of a tenant's account:
 * its GCRA cells (request-rate windows, or the GPU budget) and its lease
 * hash. */
struct kind_args {
    int nw;
    char keys[GW_RATE_CELLS + 1][160];
    char win[GW_RATE_CELLS][2][32];
};

struct acct_args {
    const struct gw_plan *plan;
    struct kind_args rate; /* nw 0: the plan has no window */
    struct kind_args gpu;  /* nw 0: the plan has no budget */
    struct kind_args out;  /* nw 0: the plan has no output_tokens window */
};

static int account_args(struct agent *a, const struct gw_cl_cell *c, struct acct_args *x)
{
    char id[GW_ID_MAX + 1];
    enum gw_kind kind;
    size_t n = gw_ledger_id(&a->seg, c->acct, &kind, id, sizeof(id));
    if (n == 0 || (kind != GW_KIND_TENANT && kind != GW_KIND_GLOBAL) ||
        (kind == GW_KIND_GLOBAL && !a->cl->global_farm))
        return -ENOENT;
    const char *why = NULL;
    /* the node's global pool is one farm-wide account too, its keys apart
     * from every tenant's: <prefix>:global:rate:*:..., <prefix>:global:lease:* */
    char pre[80];
    snprintf(pre, sizeof(pre), "%s%s", a->cl->prefix, kind == GW_KIND_GLOBAL ? ":global" : "");
    x->plan = kind == GW_KIND_GLOBAL ? &a->cfg->global : gw_config_plan_for(a->cfg, id, NULL, &why);
    if (!x->plan)
        return -ENOENT;
    x->rate.nw = x->plan->n_windows;
    for (int w = 0; w < x->rate.nw; w++) {
        const struct gw_window *win = &x->plan->windows[w];
        struct gw_rate r;
        if (gw_rate_make(&r, win->limit, win->period_us, win->burst) != 0)
            return -EINVAL;
        /* the window's figures are in the key: a plan change starts afresh */
        snprintf(x->rate.keys[w], sizeof(x->rate.keys[w]),
                 "%s:rate:%s:%" PRIu64 "/%" PRIu64 "+%" PRIu64, pre, id, win->limit, win->period_us,
                 win->burst);
        snprintf(x->rate.win[w][0], 32, "%" PRIu64, r.interval_us);
        snprintf(x->rate.win[w][1], 32, "%" PRIu64, r.tolerance_us);
    }
    snprintf(x->rate.keys[x->rate.nw], sizeof(x->rate.keys[0]), "%s:lease:%s", pre, id);
    x->gpu.nw = x->plan->has_budget ? 1 : 0;
    if (x->gpu.nw) {
        const struct gw_budget_rate *b = &x->plan->budget;
        /* the budget as a GCRA cell of GPU-us: T us of time per GPU-us */
        double T = (double)b->period_us / (double)b->amount_us;
        snprintf(x->gpu.keys[0], sizeof(x->gpu.keys[0]), "%s:gpu:%s:%" PRIu64 "/%" PRIu64, pre, id,
                 b->amount_us, b->period_us);
        snprintf(x->gpu.keys[1], sizeof(x->gpu.keys[1]), "%s:gpulease:%s", pre, id);
        snprintf(x->gpu.win[0][0], 32, "%.17g", T);
        snprintf(x->gpu.win[0][1], 32, "%.17g", (double)b->period_us - T);
    }
    x->out.nw = x->plan->has_output && x->plan->output.limit ? 1 : 0;
    if (x->out.nw) {
        const struct gw_window *o = &x->plan->output;
        /* output tokens as a GCRA cell: T = period / limit (fractional),
         * tau = (limit + burst - 1) T, so a full cell grants limit + burst */
        double T = (double)o->period_us / (double)o->limit;
        snprintf(x->out.keys[0], sizeof(x->out.keys[0]),
                 "%s:out:%s:%" PRIu64 "/%" PRIu64 "+%" PRIu64, pre, id, o->limit, o->period_us,
                 o->burst);
        snprintf(x->out.keys[1], sizeof(x->out.keys[1]), "%s:outlease:%s", pre, id);
        snprintf(x->out.win[0][0], 32, "%.17g", T);
        snprintf(x->out.win[0][1], 32, "%.17g", (double)(o->limit + o->burst - 1) * T);
    }
    return 0;
}

/* take (force 0: a lease; 1: reconcile) or give for one kind of a cell;
 * the reply's first integer (granted or given back), -1 on failure. */
static int64_t run_script(struct agent *a, int give, const struct kind_args *x, uint64_t k,
                          int force, int64_t held, uint64_t *retry_us)
{
    const char *argv[2 * GW_RATE_CELLS + GW_RATE_CELLS + 8];
    char ks[24], ttl[24], fs[4], hs[24];
    int n = 0;
    for (int w = 0; w <= x->nw; w++)
        argv[n++] = x->keys[w];
    snprintf(ks, sizeof(ks), "%" PRIu64, k);
    snprintf(ttl, sizeof(ttl), "%u", a->cl->lease_ttl_ms);
    snprintf(fs, sizeof(fs), "%d", force);
    snprintf(hs, sizeof(hs), "%" PRId64, held);
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

/* The local end of a lease asked for at `sent`: the node stops using it
 * one timeout before Redis can reap it. */
static uint64_t local_end(const struct agent *a, uint64_t sent)
{
    return sent + (uint64_t)a->cl->lease_ttl_ms * 1000 - (uint64_t)a->cl->timeout_ms * 1000;
}

/* Until when an exhausted account refuses here: Redis's retry time, at
 * least now + 1 us, at most a second from now (then the agent asks again). */
static uint64_t deny_end(uint64_t now, uint64_t retry)
{
    return now + (retry < 1000000 ? (retry ? retry : 1) : 1000000);
}

/* The request-rate kind of one tenant cell: give back an ended lease, take
 * one when requests wait, charge fail-open admissions. 1 when the fronts
 * should look again. */
static int serve_rate(struct agent *a, uint32_t i, const struct gw_cl_cell *c,
                      const struct acct_args *x, uint64_t now)
{
    struct cellmem *m = &a->mem[i];
    int woke = 0;
    uint64_t retry = 0;
    if (now >= c->expires_us && (c->tokens > 0 || m->rate_open) && a->rc) {
        /* the lease ended: what is left goes back, and the give-back
         * deletes our record even when nothing is left (a record left
         * behind would be reaped later and give back tokens we used) */
        uint64_t r = gw_cluster_reclaim(&a->seg, i);
        m->reclaimed += r;
        int64_t back = run_script(a, 1, &x->rate, r, 0, 0, &retry);
        if (back > 0)
            gw_cluster_count(&a->seg, GW_CLC_RETURNED, (uint64_t)back);
        if (back >= 0)
            m->rate_open = 0;
        /* A whole lease went unused while `want` said requests waited: no
         * front had one (a front killed with requests parked leaves its
         * count). Drop it, unless a request parked meanwhile (the CAS). */
        if (r && r == m->after_grant && c->want > 0)
            gw_cluster_want_reset(&a->seg, i, c->want);
        m->after_grant = 0;
    }
    if (c->open_spent > 0 && a->rc) {
        uint64_t n = gw_cluster_open_drain(&a->seg, i);
        if (n && run_script(a, 0, &x->rate, n, 1, 0, &retry) < 0)
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
        uint64_t held = live ? cur.tokens : 0, sent = gw_now_us();
        double per_s = gw_cluster_ewma_sample(&m->rate, cur.granted - m->reclaimed - cur.tokens,
                                              gw_mono_ns(), a->cl->lease_ttl_ms);
        uint64_t k = gw_cluster_lease_size(a->cl, x->plan->windows[0].limit, per_s, cur.want - held,
                                           a->cl->lease_max);
        int64_t got = run_script(a, 0, &x->rate, k, 0, (int64_t)held, &retry);
        if (got < 0)
            return 1;
        if (got > 0) {
            gw_cluster_grant(&a->seg, i, (uint64_t)got, local_end(a, sent));
            m->after_grant = held + (uint64_t)got;
            m->rate_open = 1;
            gw_cluster_count(&a->seg, GW_CLC_GRANTS, 1);
            gw_cluster_count(&a->seg, GW_CLC_TOKENS, (uint64_t)got);
        } else {
            /* exhausted farm-wide: refuse here until Redis says a token is
             * back, and ask again no later than a second from now */
            gw_cluster_deny(&a->seg, i, deny_end(now, retry));
            gw_cluster_count(&a->seg, GW_CLC_DENIALS, 1);
        }
        woke = 1;
    }
    return woke;
}

/* What the node consumed of a tenant's GPU leases since this agent
 * started: granted, less what went back (or, for a debt, plus what was
 * charged), less what the pool holds. */
static uint64_t gpu_used(const struct cellmem *m, const struct gw_cl_gpu *g)
{
    int64_t u = (int64_t)g->granted - m->gpu_reclaimed - g->tokens;
    return u > 0 ? (uint64_t)u : 0;
}

/* Whether a GPU lease in use should be renewed now: its last quarter has
 * begun and the node consumed from it since the last lease was taken.
 * Requests that run across a lease's end take their extensions from the
 * pool; renewing a lease in use keeps them from finding it ended. */
static int gpu_renew(const struct agent *a, uint32_t i, const struct gw_cl_gpu *g, uint64_t now)
{
    const struct cellmem *m = &a->mem[i];
    return m->gpu_open && m->gpu.last_ns && now < g->expires_us &&
           g->expires_us - now <= (uint64_t)a->cl->lease_ttl_ms * 250 &&
           gpu_used(m, g) > m->gpu.last_used;
}

/* Whether our GPU lease has ended: its unused GPU-us go back. */
static int gpu_ended(const struct agent *a, uint32_t i, const struct gw_cl_gpu *g, uint64_t now)
{
    return now >= g->expires_us && a->mem[i].gpu_open;
}

/* Whether the GPU kind of cell i needs the agent now. */
static int gpu_busy(const struct agent *a, uint32_t i, const struct gw_cl_gpu *g, uint64_t now)
{
    return g->want > 0 || g->shortfall > 0 || g->open_spent > 0 || gpu_ended(a, i, g, now) ||
           gpu_renew(a, i, g, now);
}

/* An ended GPU lease: what the pool holds goes back to Redis (the record
 * caps it: never twice), and the give-back deletes our record even when
 * nothing is left (a record left behind would be reaped later and give
 * back GPU-us we used). A debt the workers' extensions left stays for the
 * next grant to pay. Refunds that settle after this stay in the pool for
 * the next lease (Redis counts them spent: no record holds them), whose
 * record reports them as held. */
static void gpu_end_lease(struct agent *a, uint32_t i, const struct acct_args *x,
                          const struct gw_cl_gpu *g)
{
    struct cellmem *m = &a->mem[i];
    uint64_t retry = 0, r = gw_cluster_gpu_reclaim(&a->seg, i);
    m->gpu_reclaimed += (int64_t)r;
    int64_t back = run_script(a, 1, &x->gpu, r, 0, 0, &retry);
    if (back > 0)
        gw_cluster_count(&a->seg, GW_CLC_GPU_RETURNED, (uint64_t)back);
    /* a whole lease unused while GPU-us waited: a dead front's count */
    if (r > 0 && r == m->gpu_after_grant && g->want > 0)
        gw_cluster_gpu_want_reset(&a->seg, i, g->want);
    if (back >= 0)
        m->gpu_open = 0;
    m->gpu_after_grant = 0;
}

/* The GPU kind of one tenant cell, as serve_rate: an ended lease settled,
 * fail-open reservations charged, a lease taken when GPU-us wait, a
 * worker's extension found the pool short or overdrew it, or a lease in
 * use nears its end (renewed). */
static int serve_gpu(struct agent *a, uint32_t i, const struct acct_args *x, uint64_t now)
{
    struct cellmem *m = &a->mem[i];
    struct gw_cl_gpu g;
    uint64_t retry = 0;
    gw_cluster_gpu_cell(&a->seg, i, &g);
    if (!x->gpu.nw || !gpu_busy(a, i, &g, now))
        return 0;
    if (gpu_ended(a, i, &g, now) && a->rc) {
        gpu_end_lease(a, i, x, &g);
        gw_cluster_gpu_cell(&a->seg, i, &g);
    }
    if (g.open_spent > 0 && a->rc) {
        uint64_t n = gw_cluster_gpu_open_drain(&a->seg, i);
        if (n && run_script(a, 0, &x->gpu, n, 1, 0, &retry) < 0)
            gw_cluster_gpu_open_undrain(&a->seg, i, n);
        else if (n)
            gw_cluster_count(&a->seg, GW_CLC_GPU_RECONCILED, n);
    }
    /* what waits beyond the pool (a debt is paid first: it counts as
     * waiting, but alone asks for nothing until demand comes: it stays
     * within the overdraft); an ended pool (refunds kept for the next
     * lease) covers nobody until a grant renews its end */
    uint64_t held = g.tokens > 0 ? (uint64_t)g.tokens : 0;
    uint64_t need = g.want + (g.tokens < 0 ? (uint64_t)-g.tokens : 0);
    need = need > held ? need - held : 0;
    int ask = (now < g.expires_us ? need > 0 && g.want > 0 : g.want > 0) || g.shortfall > 0 ||
              gpu_renew(a, i, &g, now);
    if (!ask || g.deny_until > now || !a->rc)
        return 0;
    uint64_t shortfall = gw_cluster_gpu_shortfall(&a->seg, i), sent = gw_now_us();
    if (shortfall > need)
        need = shortfall;
    double per_s =
        gw_cluster_ewma_sample(&m->gpu, gpu_used(m, &g), gw_mono_ns(), a->cl->lease_ttl_ms);
    const struct gw_budget_rate *b = &x->plan->budget;
    uint64_t k = gw_cluster_lease_size(a->cl, b->amount_us, per_s, need, UINT64_MAX);
    int64_t got = run_script(a, 0, &x->gpu, k, 0, (int64_t)held, &retry);
    if (got < 0)
        return 1;
    if (got > 0) {
        /* the overdraft: the smallest lease, lease_percent of the budget */
        uint64_t od = gw_cluster_lease_size(a->cl, b->amount_us, 0, 0, UINT64_MAX);
        gw_cluster_gpu_grant(&a->seg, i, (uint64_t)got, local_end(a, sent), od);
        m->gpu_open = 1;
        m->gpu_after_grant = held + (uint64_t)got;
        gw_cluster_count(&a->seg, GW_CLC_GPU_GRANTS, 1);
        gw_cluster_count(&a->seg, GW_CLC_GPU_US, (uint64_t)got);
    }
    if ((uint64_t)got < need) {
        /* the farm's budget cannot cover what waits: refuse what the pool
         * cannot cover until the budget refills that much (or Redis's
         * retry time), at most a second */
        double T = (double)b->period_us / (double)b->amount_us;
        uint64_t refill = (uint64_t)((double)(need - (uint64_t)got) * T);
        gw_cluster_gpu_deny(&a->seg, i, deny_end(now, retry > refill ? retry : refill));
        gw_cluster_count(&a->seg, GW_CLC_GPU_DENIALS, 1);
    }
    return 1;
}

/* Whether the output kind of cell i needs the agent now. */
static int out_busy(const struct agent *a, uint32_t i, const struct gw_cl_out *o, uint64_t now)
{
    return o->want > 0 || o->open_spent > 0 || (now >= o->expires_us && a->mem[i].out_open);
}

/* An ended output lease: what the pool holds goes back (the record caps it),
 * and the give-back deletes our record. A debt stays for the next grant;
 * a token put back after this stays in the pool for the next lease, whose
 * record reports it as held. */
static void out_end_lease(struct agent *a, uint32_t i, const struct acct_args *x,
                          const struct gw_cl_out *o)
{
    struct cellmem *m = &a->mem[i];
    uint64_t retry = 0, r = gw_cluster_out_reclaim(&a->seg, i);
    int64_t back = run_script(a, 1, &x->out, r, 0, 0, &retry);
    if (back > 0)
        gw_cluster_count(&a->seg, GW_CLC_OUT_RETURNED, (uint64_t)back);
    /* a whole lease unused while requests waited: a dead front's count */
    if (r > 0 && r == m->out_after_grant && o->want > 0)
        gw_cluster_out_want_reset(&a->seg, i, o->want);
    if (back >= 0)
        m->out_open = 0;
    m->out_after_grant = 0;
}

/* The output kind of one tenant cell, as serve_gpu: an ended lease given
 * back, fail-open tokens charged, a lease taken when requests wait (its
 * grant pays the pool's debt first). */
static int serve_out(struct agent *a, uint32_t i, const struct acct_args *x, uint64_t now)
{
    struct cellmem *m = &a->mem[i];
    struct gw_cl_out o;
    uint64_t retry = 0;
    gw_cluster_out_cell(&a->seg, i, &o);
    if (!x->out.nw)
        m->out_open = 0; /* no window: no record of ours to give back */
    if (!x->out.nw || !out_busy(a, i, &o, now) || !a->rc)
        return 0;
    if (now >= o.expires_us && m->out_open) {
        out_end_lease(a, i, x, &o);
        gw_cluster_out_cell(&a->seg, i, &o);
    }
    if (o.open_spent > 0 && a->rc) {
        uint64_t n = gw_cluster_out_open_drain(&a->seg, i);
        if (n && run_script(a, 0, &x->out, n, 1, 0, &retry) < 0)
            gw_cluster_out_open_undrain(&a->seg, i, n);
        else if (n)
            gw_cluster_count(&a->seg, GW_CLC_OUT_RECONCILED, n);
    }
    uint64_t held = o.tokens > 0 ? (uint64_t)o.tokens : 0;
    uint64_t debt = o.tokens < 0 ? (uint64_t)-o.tokens : 0;
    /* a live pool with a token for each waiting request covers them */
    if (o.want == 0 || (now < o.expires_us && held >= o.want) || o.deny_until > now || !a->rc)
        return 0;
    uint64_t need = o.want + debt > held ? o.want + debt - held : 0, sent = gw_now_us();
    double per_s = gw_cluster_ewma_sample(&m->out, o.charged, gw_mono_ns(), a->cl->lease_ttl_ms);
    const struct gw_window *w = &x->plan->output;
    uint64_t k = gw_cluster_lease_size(a->cl, w->limit, per_s, need, UINT64_MAX);
    /* the record says what the node holds unused: a debt counts against it */
    int64_t got = run_script(a, 0, &x->out, k, 0, debt ? -(int64_t)debt : (int64_t)held, &retry);
    if (got < 0)
        return 1;
    if (got > 0) {
        gw_cluster_out_grant(&a->seg, i, (uint64_t)got, local_end(a, sent));
        m->out_open = 1;
        m->out_after_grant = held + (uint64_t)got;
        gw_cluster_count(&a->seg, GW_CLC_OUT_GRANTS, 1);
        gw_cluster_count(&a->seg, GW_CLC_OUT_TOKENS, (uint64_t)got);
    }
    if ((uint64_t)got < need) {
        /* the farm's window cannot cover what waits (and the debt): refuse
         * here until it refills that much or Redis's retry time, at most a
         * second */
        uint64_t refill = (need - (uint64_t)got) * (w->period_us / w->limit + 1);
        gw_cluster_out_deny(&a->seg, i, deny_end(now, retry > refill ? retry : refill));
        gw_cluster_count(&a->seg, GW_CLC_OUT_DENIALS, 1);
    }
    return 1;
}

static void serve(struct agent *a)
{
    uint64_t now = gw_now_us();
    int woke = 0;
    for (uint32_t i = 0; i < a->seg.cfg.budgets; i++) {
        struct gw_cl_cell c;
        struct gw_cl_gpu g;
        if (gw_cluster_cell(&a->seg, i, &c) != 0)
            continue;
        gw_cluster_gpu_cell(&a->seg, i, &g);
        struct gw_cl_out o;
        gw_cluster_out_cell(&a->seg, i, &o);
        int rate = c.want > 0 || c.open_spent > 0 ||
                   (now >= c.expires_us && (c.tokens > 0 || a->mem[i].rate_open));
        if (!rate && !gpu_busy(a, i, &g, now) && !out_busy(a, i, &o, now))
            continue;
        struct acct_args x;
        if (account_args(a, &c, &x) != 0)
            continue;
        if (rate && x.rate.nw)
            woke |= serve_rate(a, i, &c, &x, now);
        woke |= serve_gpu(a, i, &x, now);
        woke |= serve_out(a, i, &x, now);
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
    a.mem = calloc(a.seg.cfg.budgets, sizeof(*a.mem));
    if (!a.mem) {
        gw_logf(GW_LOG_ERR, "cluster", NULL, 0, "out of memory");
        gw_segment_close(&a.seg);
        gw_config_free(a.cfg);
        return 111;
    }
    /* A lease a previous agent left is given back when it ends (the record
     * caps what Redis takes back, and the give-back deletes it): never kept
     * past its end, where Redis may already have reaped its record. */
    for (uint32_t i = 0; i < a.seg.cfg.budgets; i++)
        a.mem[i].rate_open = a.mem[i].gpu_open = a.mem[i].out_open = 1;
    gw_proc_set_role(&a.seg, GW_ROLE_CLUSTER, 0);
    gw_proc_set_state(&a.seg, GW_PROC_READY);
    a.state = GW_CL_OFF;
    agent_loop(&a);
    if (a.rc)
        redisFree(a.rc);
    free(a.mem);
    gw_segment_close(&a.seg);
    gw_config_free(a.cfg);
    return 0;
}
