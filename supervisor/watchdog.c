/* watchdog.c - the master's anomaly killer (docs/ARCHITECTURE.md, "The watchdog").
 *
 * The detectors read only what workers publish in the slot run record
 * (tokens, device time, progress time, the repetition words) and in their
 * lanes (heartbeat, current slot), so a scan costs O(slots + lanes) and
 * never waits on a worker. gw_wd_judge is a pure function of one sample:
 * the tests drive it with scripted token sequences through the worker's own
 * repetition statistic, exactly as the master does with live runs.
 *
 * A kill is two steps. The cancel word gets GW_CANCEL_WATCHDOG + reason
 * (the worker checks it before each token and finishes the slot as
 * "killed"); a worker that still holds the slot grace_ms later is stuck
 * (SIGSTOP, a wedged kernel) and is SIGKILLed through its pidfd. The
 * master's reaping path then repairs the lane (the slot goes FAILED and is
 * settled exactly once) and respawns the worker; the cancel word still
 * names the reason, so the front reports it rather than "worker_lost".
 */
#include "gw_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MS UINT64_C(1000000)
#define KILLED_PIDS 32 /* workers SIGKILLed and not yet reaped */

/* ---------------------------------------------------------------- detectors */

static uint64_t cover(uint64_t rep)
{
    return (uint64_t)GW_REP_PERIOD(rep) * GW_REP_COUNT(rep);
}

/* The repetition detectors on the current word: repetition (exact),
 * near_repetition (digits ignored), collapsed_sampling (either, sampled
 * with a near-certain top token); -1 when none. */
static int judge_repetition(const struct gw_wd_limits *l, uint64_t rep, uint32_t allow)
{
    uint32_t p = GW_REP_PERIOD(rep), c = GW_REP_COUNT(rep), run = GW_REP_RUN(rep);
    if (p == 0 || (allow && c <= allow))
        return -1; /* none, or no more cycles than the prompt asked for */
    if (GW_REP_KIND(rep) & GW_REP_NEAR) {
        if (l->near_period && l->near_match && p <= l->near_period && run >= l->near_match)
            return GW_WD_NEAR_REPETITION;
    } else if (l->rep_period && p <= l->rep_period) {
        if (l->rep_count && c >= l->rep_count && cover(rep) >= l->rep_tokens)
            return GW_WD_REPETITION;
        if (l->rep_match && run >= l->rep_match)
            return GW_WD_REPETITION;
    }
    /* top1 is 1 + percent, 0 for a greedy run: col_top1 0 would be off */
    uint32_t top1 = GW_REP_TOP1(rep);
    uint32_t maxp = l->rep_period > l->near_period ? l->rep_period : l->near_period;
    if (l->col_top1 && l->col_match && top1 >= 1 + l->col_top1 && p <= maxp && run >= l->col_match)
        return GW_WD_COLLAPSED;
    return -1;
}

int gw_wd_judge(const struct gw_wd_limits *l, const struct gw_wd_sample *s)
{
    if (l->max_tokens && s->tokens > l->max_tokens)
        return GW_WD_MAX_TOKENS;
    if (l->wall_ms && s->wall_ns > (uint64_t)l->wall_ms * MS)
        return GW_WD_WALL_TIME;
    if (l->device_ms && s->device_ns > (uint64_t)l->device_ms * MS)
        return GW_WD_DEVICE_TIME;
    if (s->unbounded && l->unb_cap && s->tokens > l->unb_cap)
        return GW_WD_UNBOUNDED;
    if (s->length_limit && s->tokens > s->length_limit)
        return GW_WD_ANOMALOUS_LENGTH;
    uint32_t allow = gw_wd_asked_cycles(s->asked, l->rep_asked_max);
    int why = judge_repetition(l, s->rep, allow);
    if (why >= 0)
        return why;
    /* a near word says the cycle goes on with other numbers: no divergence;
     * nor when the longest repetition stayed within what was asked (the
     * model wrote its 30 "hello"s and went on to say it is done) */
    uint32_t mp = GW_REP_PERIOD(s->rep_max);
    if (allow && GW_REP_COUNT(s->rep_max) <= allow)
        return -1;
    if (l->div_period && l->div_tokens && mp >= 1 && mp <= l->div_period &&
        !(GW_REP_KIND(s->rep) & GW_REP_NEAR) && cover(s->rep_max) >= l->div_tokens &&
        cover(s->rep) < cover(s->rep_max))
        return GW_WD_DIVERGENCE;
    return -1;
}

void gw_wd_limits_for(const struct gw_config *cfg, const char *tenant, struct gw_wd_limits *out)
{
    *out = cfg->wd;
    const char *why;
    const struct gw_plan *pl = gw_config_plan_for(cfg, tenant, NULL, &why);
    if (!pl)
        return;
#define OVER(f)                                                                                    \
    if (pl->wd.f)                                                                                  \
    out->f = pl->wd.f
    OVER(max_tokens);
    OVER(wall_ms);
    OVER(device_ms);
    OVER(rep_period);
    OVER(rep_count);
    OVER(rep_tokens);
    OVER(rep_match);
    OVER(rep_asked_max);
    OVER(near_period);
    OVER(near_match);
    OVER(col_top1);
    OVER(col_match);
    OVER(div_period);
    OVER(div_tokens);
    OVER(len_floor);
    OVER(len_factor);
    OVER(len_warmup);
    OVER(unb_cap);
    OVER(unb_list);
#undef OVER
}

/* --------------------------------------------------------- unbounded requests */

/* One pattern list compiled as a single caseless alternation. */
struct unb_list {
    pcre2_code *re; /* NULL: the list is empty (nothing is flagged) */
    pcre2_match_data *md;
};

struct gw_unbounded {
    int n;                  /* 1 + cfg->n_unb_lists */
    struct unb_list *lists; /* [0] the node's, [k] cfg->unb_lists[k - 1] */
    pcre2_match_context *mc;
};

/* A prompt is attacker-controlled and up to prompt_bytes long: a pattern
 * that backtracks badly stops here, and the request counts as flagged. */
#define UNB_MATCH_LIMIT 1000000u
#define UNB_DEPTH_LIMIT 10000u

static int unb_compile(struct unb_list *l, const struct gw_pattern_list *pl, char *err,
                       size_t errlen)
{
    if (pl->n == 0)
        return 0;
    size_t cap = (size_t)pl->n * (GW_UNBOUNDED_LEN + 8), at = 0;
    char *alt = malloc(cap);
    if (!alt)
        return -ENOMEM;
    for (int i = 0; i < pl->n; i++)
        at += (size_t)snprintf(alt + at, cap - at, "%s(?:%s)", i ? "|" : "", pl->pattern[i]);
    int code;
    PCRE2_SIZE off;
    l->re = pcre2_compile((PCRE2_SPTR)alt, at, PCRE2_CASELESS, &code, &off, NULL);
    free(alt);
    if (!l->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        if (err && errlen)
            snprintf(err, errlen, "unbounded_patterns: %s", (const char *)msg);
        return -EINVAL;
    }
    l->md = pcre2_match_data_create_from_pattern(l->re, NULL);
    return l->md ? 0 : -ENOMEM;
}

int gw_unbounded_new(struct gw_unbounded **out, const struct gw_config *cfg, char *err,
                     size_t errlen)
{
    struct gw_unbounded *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->n = 1 + cfg->n_unb_lists;
    u->lists = calloc((size_t)u->n, sizeof(*u->lists));
    u->mc = pcre2_match_context_create(NULL);
    int rc = !u->lists || !u->mc ? -ENOMEM : 0;
    if (rc == 0) {
        pcre2_set_match_limit(u->mc, UNB_MATCH_LIMIT);
        pcre2_set_depth_limit(u->mc, UNB_DEPTH_LIMIT);
    }
    for (int i = 0; rc == 0 && i < u->n; i++)
        rc = unb_compile(&u->lists[i], i ? &cfg->unb_lists[i - 1] : &cfg->unbounded, err, errlen);
    if (rc != 0) {
        gw_unbounded_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

void gw_unbounded_free(struct gw_unbounded *u)
{
    if (!u)
        return;
    for (int i = 0; u->lists && i < u->n; i++) {
        pcre2_match_data_free(u->lists[i].md);
        pcre2_code_free(u->lists[i].re);
    }
    free(u->lists);
    pcre2_match_context_free(u->mc);
    free(u);
}

int gw_unbounded_match(struct gw_unbounded *u, const struct gw_config *cfg, const char *tenant,
                       const char *prompt, size_t len)
{
    if (!u || !cfg || !tenant)
        return 0;
    struct gw_wd_limits lim;
    gw_wd_limits_for(cfg, tenant, &lim);
    if (!lim.unb_cap || lim.unb_list >= (uint32_t)u->n)
        return 0;
    struct unb_list *l = &u->lists[lim.unb_list];
    if (!l->re)
        return 0;
    int rc = pcre2_match(l->re, (PCRE2_SPTR)prompt, len, 0, 0, l->md, u->mc);
    if (rc >= 0)
        return 1;
    /* no match: not flagged; out of match limits: flagged (fail closed) */
    return rc == PCRE2_ERROR_NOMATCH ? 0 : 1;
}

/* ----------------------------------------------------------------- master */

/* What the watchdog remembers about one slot it acted on. */
struct wd_slot {
    uint32_t obs_seq; /* the request whose length is being observed */
    int obs_have;     /* 1: obs_acct is its tenant account */
    struct gw_acct obs_acct;
    uint64_t obs_tokens; /* its token count at the last scan */
    uint32_t seq;        /* the request the entry is about */
    int reason;          /* -1: nothing pending */
    uint64_t cancel_ns;  /* when the cancel word was set */
    uint64_t tokens;     /* tokens when the cancel word was set */
    pid_t worker;        /* the worker running it then, 0 unknown */
    int sigkilled;       /* escalated to SIGKILL */
};

struct gw_watchdog {
    struct gw_segment *seg;
    struct gw_wd_host host;
    int audit_fd;
    char audit_path[256];
    uint64_t next_ns;          /* when the next scan is due */
    struct wd_slot *slots;     /* seg->cfg.slots entries */
    pid_t killed[KILLED_PIDS]; /* SIGKILLed, not yet reaped */
    /* per-lane view built each scan */
    int64_t *busy_lane; /* slot -> worker lane running it, -1 none */
    /* A stalled worker runs a batch: the watchdog kills it for one slot
     * (the culprit, worker_stalled); the repair continues the others on
     * another worker (gw_lane_repair). The pid a lane's stall was judged
     * for, so no second slot of it is named. */
    pid_t stall_pid[256];
};

#define wd_say(...) gw_log("master: watchdog", __VA_ARGS__)

int gw_watchdog_reopen(struct gw_watchdog *wd, const struct gw_config *cfg)
{
    if (!wd)
        return -EINVAL;
    char path[256];
    int rc = gw_audit_path(cfg, path, sizeof(path));
    if (rc != 0) {
        wd_say("audit log path too long; kills are not audited");
        return rc;
    }
    int fd = gw_audit_open(path);
    if (fd < 0) {
        rc = -errno;
        wd_say("audit log %s: cannot open: %s (kills are still made and counted)", path,
               strerror(-rc));
        return rc; /* keep the old descriptor, if any */
    }
    if (wd->audit_fd >= 0)
        close(wd->audit_fd);
    wd->audit_fd = fd;
    snprintf(wd->audit_path, sizeof(wd->audit_path), "%s", path);
    return 0;
}

int gw_watchdog_new(struct gw_watchdog **out, struct gw_segment *seg, const struct gw_config *cfg,
                    const struct gw_wd_host *host)
{
    struct gw_watchdog *wd = calloc(1, sizeof(*wd));
    if (!wd)
        return -ENOMEM;
    wd->seg = seg;
    wd->host = *host;
    wd->audit_fd = -1;
    wd->slots = calloc(seg->cfg.slots, sizeof(*wd->slots));
    wd->busy_lane = calloc(seg->cfg.slots, sizeof(*wd->busy_lane));
    if (!wd->slots || !wd->busy_lane) {
        gw_watchdog_free(wd);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < seg->cfg.slots; i++)
        wd->slots[i].reason = -1;
    gw_watchdog_reopen(wd, cfg);
    *out = wd;
    return 0;
}

void gw_watchdog_free(struct gw_watchdog *wd)
{
    if (!wd)
        return;
    if (wd->audit_fd >= 0)
        close(wd->audit_fd);
    free(wd->slots);
    free(wd->busy_lane);
    free(wd);
}

int gw_watchdog_reaped(struct gw_watchdog *wd, pid_t pid)
{
    if (!wd || pid <= 0)
        return 0;
    for (int i = 0; i < KILLED_PIDS; i++)
        if (wd->killed[i] == pid) {
            wd->killed[i] = 0;
            return 1;
        }
    return 0;
}

static void remember_killed(struct gw_watchdog *wd, pid_t pid)
{
    for (int i = 0; i < KILLED_PIDS; i++)
        if (wd->killed[i] == 0 || wd->killed[i] == pid) {
            wd->killed[i] = pid;
            return;
        }
    wd->killed[0] = pid; /* 32 stuck workers at once: forget the oldest slot */
}

/* Step one of a kill: the cancel word, the counter, the audit line. */
static void kill_start(struct gw_watchdog *wd, struct gw_slot_ref ref, int reason, uint64_t now,
                       pid_t worker)
{
    struct gw_segment *seg = wd->seg;
    struct wd_slot *ws = &wd->slots[ref.index];
    struct gw_run_view run;
    gw_run_read(seg, ref.index, &run);
    uint64_t tokens = run.tokens, dev = run.device_ns;
    *ws = (struct wd_slot){
        .seq = ref.seq, .reason = reason, .cancel_ns = now, .tokens = tokens, .worker = worker};
    int rc = gw_slot_cancel(seg, ref, GW_WD_CANCEL(reason));
    if (rc != 0) {
        /* Someone cancelled first (client, drain, operator): theirs is the
         * reason; we still escalate if the worker does not let go. */
        return;
    }
    gw_kills_add(seg, reason);
    struct gw_acct tenant;
    if (gw_slot_tenant(seg, ref, &tenant) == 0)
        gw_tstat_kill(seg, tenant, reason);
    struct gw_slot_req req;
    if (gw_slot_get_req(seg, ref, &req) < 0)
        memset(&req, 0, sizeof(req)); /* finished and released since the cancel */
    /* the bytes below w are complete (gw_run_written acquires); later ones
     * may change under us: the audit line shows what had been published */
    size_t w = (size_t)gw_run_written(seg, ref.index);
    if (w > seg->cfg.output_bytes)
        w = seg->cfg.output_bytes;
    char line[4096];
    size_t n = gw_audit_format(line, sizeof(line), gw_now_us(), &req, reason, tokens, dev,
                               gw_slot_output(seg, ref.index), w);
    if (wd->audit_fd >= 0 && write(wd->audit_fd, line, n) != (ssize_t)n)
        wd_say("audit log %s: write failed: %s", wd->audit_path, strerror(errno));
    wd_say("slot %u (request %.40s, tenant %.64s): %s after %" PRIu64 " tokens, %" PRIu64
           " ms device time: cancelled",
           ref.index, req.id, req.tenant, gw_wd_reason_name(reason), tokens, dev / MS);
}

/* Step two: the worker did not let go of the slot within grace_ms. */
static void kill_hard(struct gw_watchdog *wd, uint32_t index, pid_t pid)
{
    struct wd_slot *ws = &wd->slots[index];
    ws->sigkilled = 1;
    if (pid <= 0)
        return; /* no worker holds it any more: the repair of its lane will */
    int rc = wd->host.kill_pid ? wd->host.kill_pid(wd->host.ctx, pid) : -ENOSYS;
    if (rc == 0)
        remember_killed(wd, pid);
    wd_say("slot %u: worker pid %d did not stop within the grace period: SIGKILL%s%s", index,
           (int)pid, rc ? ": " : "", rc ? strerror(-rc) : "");
}

/* The run observed in slot i ended (or the slot holds another request
 * now): its length joins its tenant's estimate in the segment (lenest.c),
 * unless the watchdog killed it. The count is the one seen at the last
 * scan: the slot is usually released (and its record cleared) before the
 * next scan, so a length is up to a scan period's tokens short. */
static void observe_end(struct gw_watchdog *wd, struct wd_slot *ws)
{
    if (ws->obs_have && ws->obs_tokens > 0 && !(ws->reason >= 0 && ws->seq == ws->obs_seq)) {
        int rc = gw_lenest_record(wd->seg, ws->obs_acct, ws->obs_tokens);
        if (rc != 0)
            wd_say("learned length: cannot record a run: %s", gw_strerror(rc));
    }
    ws->obs_have = 0;
    ws->obs_tokens = 0;
}

/* What the worker lanes say, by lane: for each slot a worker runs
 * (wd->busy_lane), that worker's last sign of life, its cost per token and
 * its pid. */
struct workers {
    uint64_t beat[256], cost_us[256];
    pid_t pids[256];
};

/* which worker runs which slot, and how recently it showed life: a
 * RUNNING slot is owned by the lane of the worker that took it (a worker
 * runs many at once: continuous batching) */
static void map_workers(struct gw_watchdog *wd, const struct gw_config *cfg, struct workers *w)
{
    struct gw_segment *seg = wd->seg;
    uint32_t n_slots = seg->cfg.slots;
    int is_worker[256] = {0};
    for (int l = 0; l < (int)seg->cfg.lanes && l < 256; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(seg, l, &pi) != 0 || pi.role != GW_ROLE_WORKER)
            continue;
        is_worker[l] = 1;
        w->beat[l] = pi.heartbeat_ns;
        w->cost_us[l] = pi.us_per_token ? pi.us_per_token : cfg->initial_us_per_token;
        w->pids[l] = pi.pid;
    }
    for (uint32_t i = 0; i < n_slots; i++) {
        struct gw_slot_ref ref;
        wd->busy_lane[i] = -1;
        if (gw_slot_peek(seg, i, &ref) != GW_SLOT_RUNNING)
            continue;
        int l = gw_slot_owner(seg, ref);
        if (l >= 0 && l < 256 && is_worker[l])
            wd->busy_lane[i] = l;
    }
}

/* Slot i's kill is over: the worker let go (or its lane was repaired); the
 * run record still holds the request while the slot is terminal. */
static void kill_over(struct gw_watchdog *wd, uint32_t i, struct gw_slot_ref ref, int st,
                      uint64_t now)
{
    struct wd_slot *ws = &wd->slots[i];
    struct gw_run_view run;
    gw_run_read(wd->seg, i, &run);
    uint64_t toks = run.tokens;
    if (ws->seq == ref.seq && !ws->sigkilled && st >= GW_SLOT_DONE && toks >= ws->tokens)
        wd_say("slot %u: stopped within %.1f ms of the cancel, %" PRIu64 " tokens later", i,
               (double)(now - ws->cancel_ns) / 1e6, toks - ws->tokens);
    else if (!ws->sigkilled)
        wd_say("slot %u: stopped within %.1f ms of the cancel", i,
               (double)(now - ws->cancel_ns) / 1e6);
    ws->reason = -1;
}

/* Whether the worker on `lane` has shown no progress on the run for longer
 * than stall_ms allows. */
static int stalled(const struct gw_config *cfg, const struct workers *w, int64_t lane,
                   const struct gw_run_view *run, uint64_t now)
{
    uint64_t last = w->beat[lane];
    if (run->progress_ns > last)
        last = run->progress_ns;
    if (run->started_ns > last)
        last = run->started_ns;
    /* The prompt is evaluated in one call that sends no heartbeat:
     * before the first token, allow it what its tokens cost at the
     * worker's measured rate per generated token (prefill costs
     * less per token than decoding, so this is generous). */
    uint64_t allow = (uint64_t)cfg->wd_stall_ms * MS;
    if (run->tokens == 0)
        allow += run->prompt_tokens * w->cost_us[lane] * 1000u;
    return now > last && now - last >= allow;
}

/* The running slot i, not being killed yet: the first limit its run breaks
 * (gw_wd_judge, then a stall), or -1. Also keeps the observed length for
 * observe_end. */
static int judge_run(struct gw_watchdog *wd, const struct gw_config *cfg, uint64_t now, uint32_t i,
                     struct gw_slot_ref ref, int64_t lane, const struct workers *w)
{
    struct gw_segment *seg = wd->seg;
    struct wd_slot *ws = &wd->slots[i];
    /* each word is a counter the worker publishes on its own; a sample
     * mixing two consecutive tokens judges the same */
    struct gw_run_view run;
    gw_run_read(seg, i, &run);
    uint64_t started = run.started_ns;
    if (started == 0)
        return -1; /* taken, not started yet */
    struct gw_wd_sample s = {
        .tokens = run.tokens,
        .wall_ns = now > started ? now - started : 0,
        .device_ns = run.device_ns,
        .rep = run.rep,
        .rep_max = run.rep_max,
    };
    struct gw_slot_req req;
    if (gw_slot_get_req(seg, ref, &req) < 0)
        return -1; /* the request changed while we read it */
    const char *tenant = req.tenant;
    s.unbounded = (req.flags & GW_REQ_UNBOUNDED) != 0;
    s.asked = GW_REQ_ASKED(req.flags);
    struct gw_acct acct;
    int have_acct = gw_slot_tenant(seg, ref, &acct) == 0;
    if (gw_slot_state(seg, ref) != GW_SLOT_RUNNING)
        return -1; /* the request changed while we read it */
    struct gw_wd_limits lim;
    gw_wd_limits_for(cfg, tenant, &lim);
    if (!ws->obs_have || ws->obs_seq != ref.seq) {
        ws->obs_seq = ref.seq;
        ws->obs_have = have_acct;
        ws->obs_acct = acct;
    }
    ws->obs_tokens = s.tokens;
    struct gw_lenest est;
    int have_est = have_acct && gw_lenest_get(seg, acct, &est) == 0;
    s.length_limit = gw_lenest_limit(have_est ? &est : NULL, &lim);
    int reason = gw_wd_judge(&lim, &s);
    if (reason < 0 && lane >= 0 && lane < 256 && wd->stall_pid[lane] != w->pids[lane] &&
        cfg->wd_stall_ms && stalled(cfg, w, lane, &run, now)) {
        wd->stall_pid[lane] = w->pids[lane];
        reason = GW_WD_STALLED;
    }
    return reason;
}

static void scan(struct gw_watchdog *wd, const struct gw_config *cfg, uint64_t now)
{
    struct gw_segment *seg = wd->seg;
    struct workers w;
    map_workers(wd, cfg, &w);
    uint64_t grace_ns = (uint64_t)cfg->wd_grace_ms * MS;
    for (uint32_t i = 0; i < seg->cfg.slots; i++) {
        struct gw_slot_ref ref;
        int st = gw_slot_peek(seg, i, &ref);
        struct wd_slot *ws = &wd->slots[i];
        int64_t lane = wd->busy_lane[i];
        pid_t worker = lane >= 0 ? w.pids[lane] : 0;
        if (ws->obs_have && (ws->obs_seq != ref.seq || st != GW_SLOT_RUNNING))
            observe_end(wd, ws);
        if (ws->reason >= 0 && (ws->seq != ref.seq || st != GW_SLOT_RUNNING))
            kill_over(wd, i, ref, st, now);
        if (st >= GW_SLOT_DONE) {
            /* a dead front's request the worker finished: ours to settle
             * and release (gw_lane_repair marked it) */
            int rc = gw_slot_reap_orphan(seg, ref);
            if (rc == 1)
                wd_say("slot %u: its front is gone; settled and released", i);
            else if (rc < 0)
                wd_say("slot %u: its front is gone; cannot release it: %s", i, gw_strerror(rc));
            continue;
        }
        if (st != GW_SLOT_RUNNING)
            continue;
        if (ws->reason >= 0) {
            if (!ws->sigkilled && now - ws->cancel_ns >= grace_ns)
                kill_hard(wd, i, worker ? worker : ws->worker);
            continue;
        }
        int reason = judge_run(wd, cfg, now, i, ref, lane, &w);
        if (reason >= 0)
            kill_start(wd, ref, reason, now, worker);
    }
}

int gw_watchdog_tick(struct gw_watchdog *wd, const struct gw_config *cfg, uint64_t now_ns)
{
    uint64_t interval = (uint64_t)(cfg->wd_interval_ms ? cfg->wd_interval_ms : 10) * MS;
    if (!wd)
        return 1000;
    if (now_ns < wd->next_ns)
        return (int)((wd->next_ns - now_ns + MS - 1) / MS);
    wd->next_ns = now_ns + interval;
    scan(wd, cfg, now_ns);
    return (int)(interval / MS);
}
