/* worker_proc.c - a worker process: loads the model once, then takes queued
 * requests from the segment and runs them, writing text into the slot as it
 * is generated, charging device time as it goes, and stopping within one
 * token when the slot's cancel word is set.
 *
 * Device time on the CPU engine is the wall time of the work
 * (CLOCK_MONOTONIC from taking the slot, prefill included); the CUDA engine
 * will report event-measured time through the same path.
 */
#include "gw_worker.h"
#include "gw_engine.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* Charge the ledger every this many tokens (and at the end): overspend past
 * the budget is bounded by this many steps. */
#define CHARGE_EVERY 4

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    if (sig == SIGTERM || sig == SIGINT)
        stopping = 1;
}

struct worker {
    struct gw_config *cfg;
    struct gw_segment seg;
    const struct gw_fds *fds;
    int index;
    gw_model *model;
    gw_tokenizer *tok;
    gw_chat_template ct;
    int have_ct;
    gw_ctx *ctx;
    uint64_t ewma_us_per_token; /* measured cost, published in our lane */
    struct gw_guard *guard;     /* output guard (guard.c); NULL: no rules */
    char audit_path[256];       /* where an output-guard kill is audited */
    struct served {             /* start-time fair queueing per tenant */
        char tenant[64];
        double finish;  /* finish tag of its last request (device ms) */
        uint64_t at_ns; /* last use, for replacement */
    } served[128];
    double vtime;    /* start tag of the request last taken */
    int device_lost; /* a CUDA call failed: this context is not trusted again */
};

/* Fair scheduling (start-time fair queueing, per tenant): a request's
 * start tag is max(virtual time, its tenant's last finish tag); a worker
 * takes the queued request with the smallest start tag (the oldest on a
 * tie) and, when it is done, moves the tenant's finish tag on by the device
 * time it took. A tenant that keeps the queue full only gets its turn in
 * the rotation; a tenant that was idle starts at the current virtual time
 * (no credit saved up, no penalty). The queue's entries only wake workers
 * up; any QUEUED slot may be taken. */
static struct served *served_of(struct worker *w, const char *tenant, uint64_t now)
{
    struct served *oldest = &w->served[0];
    for (size_t i = 0; i < sizeof(w->served) / sizeof(w->served[0]); i++) {
        struct served *e = &w->served[i];
        if (e->tenant[0] && strcmp(e->tenant, tenant) == 0) {
            e->at_ns = now;
            return e;
        }
        if (e->at_ns < oldest->at_ns)
            oldest = e;
    }
    snprintf(oldest->tenant, sizeof(oldest->tenant), "%s", tenant);
    oldest->finish = 0;
    oldest->at_ns = now;
    return oldest;
}

/* The queued slot to run next, or 0 when nothing is queued. */
static int pick(struct worker *w, struct gw_slot_ref *out)
{
    uint64_t now = gw_mono_ns();
    double best_ms = 0;
    uint64_t best_created = 0;
    int found = 0;
    for (uint32_t i = 0; i < w->seg.cfg.slots; i++) {
        struct gw_slot_ref r;
        if (gw_slot_peek(&w->seg, i, &r) != GW_SLOT_QUEUED)
            continue;
        struct gw_slot_req rq;
        if (gw_slot_get_req(&w->seg, r, &rq) != GW_SLOT_QUEUED) /* changed while we read */
            continue;
        const char *tenant = rq.tenant;
        uint64_t created = rq.created_us;
        double f = served_of(w, tenant, now)->finish;
        double ms = f > w->vtime ? f : w->vtime; /* the start tag */
        if (!found || ms < best_ms || (ms == best_ms && created < best_created)) {
            found = 1;
            best_ms = ms;
            best_created = created;
            *out = r;
        }
    }
    return found;
}

/* One request in flight. */
struct job {
    struct worker *w;
    struct gw_slot_ref ref;
    struct gw_slot_req req; /* a copy: the slot's request does not change while it runs */
    char *out;
    size_t cap;
    size_t written;
    gw_tok_decoder dec;
    uint64_t started_ns;
    uint64_t dev_ns; /* GPU time of the forward passes so far (CUDA events) */
    int on_gpu;      /* charge dev_ns; on the CPU the wall time is the device time */
    uint64_t tokens;
    int stop_budget;   /* the ledger refused to extend the reservation */
    int stop_full;     /* the output area is full */
    int guard_kill;    /* 1 + the output-guard rule that ended it, 0 none */
    uint64_t first_ns; /* CLOCK_MONOTONIC of the first token, 0 before */
    uint64_t rep_max;  /* longest repetition so far (gw_wd_rep_fold) */
};

static void log_line(const struct worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void log_line(const struct worker *w, const char *fmt, ...)
{
    char who[32];
    snprintf(who, sizeof(who), "worker %d", w->index);
    va_list ap;
    va_start(ap, fmt);
    gw_vlog(who, fmt, ap);
    va_end(ap);
}

static void wake_front(const struct worker *w, uint32_t front)
{
    if (front < (uint32_t)w->fds->n_fronts) {
        uint64_t one = 1;
        /* EAGAIN (counter at its maximum) means the front is already woken */
        ssize_t n = write(w->fds->fronts[front], &one, sizeof(one));
        (void)n;
    }
}

static int piece(void *user, int32_t tok, char *buf, size_t cap)
{
    struct job *j = user;
    const char *chunk;
    size_t len;
    if (gw_tok_decoder_push(&j->dec, tok, &chunk, &len, NULL, 0) < 0)
        return -1;
    if (len > cap)
        len = cap;
    memcpy(buf, chunk, len);
    return (int)len;
}

/* Publishes text into the slot (after the output guard passed it). */
static void publish_text(void *user, const char *text, size_t len)
{
    struct job *j = user;
    if (j->written + len > j->cap) {
        len = j->cap - j->written;
        j->stop_full = 1;
    }
    memcpy(j->out + j->written, text, len);
    j->written += len;
    /* the bytes above are visible to the front once it reads the count
     * (release, gw_run_publish) */
    gw_run_publish(&j->w->seg, j->ref.index, j->written);
    wake_front(j->w, j->req.front);
}

static void on_text(void *user, const char *text, size_t len)
{
    struct job *j = user;
    if (!j->w->guard) {
        publish_text(j, text, len);
        return;
    }
    int rc = gw_guard_feed(j->w->guard, text, len, 0, publish_text, j);
    if (rc > 0)
        j->guard_kill = rc;
}

/* What budgets charge: on a GPU the device time the CUDA events measured
 * (the prompt included); on the CPU the wall time since the job started,
 * since the CPU is the device and is held all that time. */
static uint64_t device_ns(const struct job *j)
{
    return j->on_gpu ? j->dev_ns : gw_mono_ns() - j->started_ns;
}

static uint64_t device_us(const struct job *j)
{
    return device_ns(j) / 1000u;
}

static void on_step(void *user, const gw_gen_step *st)
{
    struct job *j = user;
    uint64_t now = gw_mono_ns();
    j->tokens = st->n_tokens;
    j->dev_ns += st->device_ns;
    if (!j->first_ns && st->n_tokens >= 1) {
        j->first_ns = now;
        uint64_t wall = gw_now_us();
        if (wall > j->req.created_us)
            gw_metrics_observe(&j->w->seg, GW_MH_TTFT, (wall - j->req.created_us) * 1000u);
    }
    uint64_t rep = GW_REP(st->rep_period, st->rep_count);
    j->rep_max = gw_wd_rep_fold(j->rep_max, rep);
    struct gw_run_step pub = {.tokens = st->n_tokens,
                              .device_ns = device_ns(j),
                              .progress_ns = now,
                              .rep = rep,
                              .rep_max = j->rep_max};
    gw_run_step(&j->w->seg, j->ref.index, &pub);
    gw_proc_heartbeat(&j->w->seg, (int64_t)j->ref.index);
    if (st->n_tokens % CHARGE_EVERY == 0 &&
        gw_budget_charge(&j->w->seg, j->ref, device_us(j), gw_now_us()) == GW_EREFUSED)
        j->stop_budget = 1;
}

static int should_cancel(void *user)
{
    struct job *j = user;
    return j->stop_budget || j->stop_full || j->guard_kill ||
           gw_run_cancel_word(&j->w->seg, j->ref.index) != 0;
}

static void fail_job(struct job *j, const char *why)
{
    gw_run_fail(&j->w->seg, j->ref.index, why);
}

/* An output-guard kill: the cancel word names it (so the front reports
 * killed_reason "output_guard"), and it is counted and audited here, where
 * it was decided. */
static void guard_killed(struct job *j)
{
    struct worker *w = j->w;
    gw_slot_cancel(&w->seg, j->ref, GW_WD_CANCEL(GW_WD_OUTPUT_GUARD));
    gw_kills_add(&w->seg, GW_WD_OUTPUT_GUARD);
    char line[4096];
    size_t n = gw_audit_format(line, sizeof(line), gw_now_us(), &j->req, GW_WD_OUTPUT_GUARD,
                               j->tokens, (gw_mono_ns() - j->started_ns), j->out, j->written);
    int rc = gw_audit_append(w->audit_path, line, n);
    log_line(w, "slot %u (request %.40s): output guard rule %s matched: killed%s%s", j->ref.index,
             j->req.id, gw_guard_rule_name(w->guard, j->guard_kill - 1), rc ? "; audit log: " : "",
             rc ? strerror(-rc) : "");
}

/* Renders the prompt text (chat messages through the model's template). */
static int prompt_text(struct worker *w, struct job *j, char **text, size_t *len, char *err,
                       size_t errlen)
{
    const char *p = gw_slot_prompt(&w->seg, j->ref.index);
    size_t plen = j->req.prompt_len;
    if (plen > w->seg.cfg.prompt_bytes) {
        snprintf(err, errlen, "prompt length %zu exceeds the slot", plen);
        return -EINVAL;
    }
    if (!(j->req.flags & GW_REQ_CHAT)) {
        *text = malloc(plen + 1);
        if (!*text)
            return -ENOMEM;
        memcpy(*text, p, plen);
        (*text)[plen] = '\0';
        *len = plen;
        return 0;
    }
    if (!w->have_ct) {
        snprintf(err, errlen, "the model has no chat template");
        return -ENOTSUP;
    }
    gw_chat_msg msgs[256];
    size_t n = 0, at = 0;
    while (at < plen && n < 256) {
        const char *role = p + at;
        const char *z = memchr(role, '\0', plen - at);
        if (!z)
            break;
        const char *content = z + 1;
        size_t rest = plen - (size_t)(content - p);
        const char *z2 = memchr(content, '\0', rest);
        if (!z2)
            break;
        msgs[n++] = (gw_chat_msg){role, (size_t)(z - role), content, (size_t)(z2 - content)};
        at = (size_t)(z2 + 1 - p);
    }
    if (n == 0 || at != plen) {
        snprintf(err, errlen, "malformed chat messages in the slot");
        return -EINVAL;
    }
    return gw_chat_format(&w->ct, msgs, n, text, len, err, errlen);
}

/* Takes the slot: its request (copied by the caller), the job's pointers
 * into it, the run's start time, the queue-time metric. */
static void job_start(struct worker *w, struct gw_slot_ref ref, const struct gw_slot_req *req,
                      struct job *j)
{
    *j = (struct job){.w = w, .ref = ref, .req = *req};
    j->out = gw_slot_output(&w->seg, ref.index);
    j->cap = w->seg.cfg.output_bytes;
    j->started_ns = gw_mono_ns();
    j->on_gpu = gw_ctx_on_gpu(w->ctx);
    gw_run_begin(&w->seg, ref.index, j->started_ns);
    gw_proc_heartbeat(&w->seg, (int64_t)ref.index);
    uint64_t wall = gw_now_us();
    if (wall > j->req.created_us)
        gw_metrics_observe(&w->seg, GW_MH_QUEUE, (wall - j->req.created_us) * 1000u);
}

/* Cancelled while it was queued (gpuwardenctl kill, the client left
 * between the front's look and ours): finish it without a prefill, so
 * nothing is spent on it. The cancel word is a flag (gw_run_cancel_word). 1 when it
 * was. */
static int cancelled_in_queue(struct job *j)
{
    uint32_t early = gw_run_cancel_word(&j->w->seg, j->ref.index);
    if (early == 0)
        return 0;
    gw_run_finish(&j->w->seg, j->ref.index,
                  early == GW_CANCEL_CLIENT || early == GW_CANCEL_DRAIN ? GW_FIN_CANCELLED
                                                                        : GW_FIN_KILLED);
    return 1;
}

/* The prompt as token ids (malloc'd into *ids), or the job failed (run.error
 * says why) and -1. */
static int prompt_ids(struct worker *w, struct job *j, int32_t **ids, size_t *n_ids)
{
    char err[256] = ""; /* not every failure (out of memory) writes it */
    char *text = NULL;
    size_t text_len = 0;
    int rc = prompt_text(w, j, &text, &text_len, err, sizeof(err));
    if (rc == 0) {
        /* Chat prompts carry the template's control tokens; plain prompts
         * are text only, so "<|im_end|>" typed by a user stays text. */
        unsigned flags = GW_TOK_ADD_BOS | ((j->req.flags & GW_REQ_CHAT) ? GW_TOK_PARSE_SPECIAL : 0);
        rc = gw_tokenizer_encode(w->tok, text, text_len, flags, ids, n_ids, err, sizeof(err));
    }
    free(text);
    int n_ctx = gw_ctx_n_ctx(w->ctx);
    if (rc == 0 && (*n_ids == 0 || (int)*n_ids >= n_ctx)) {
        snprintf(err, sizeof(err), "prompt is %zu tokens; the context holds %d", *n_ids, n_ctx);
        rc = GW_ECONTEXT;
    }
    if (rc != 0) {
        if (!err[0])
            snprintf(err, sizeof(err), "%s", gw_strerror(rc));
        fail_job(j, err);
        return -1;
    }
    gw_run_set_prompt_tokens(&w->seg, j->ref.index, *n_ids);
    gw_metrics_add(&w->seg, GW_MC_PROMPT_TOKENS, *n_ids);
    return 0;
}

/* The request's stop sequences, NUL-terminated (the slot's are not). */
struct stops {
    const char *s[GW_STOP_MAX];
    size_t n;
    char buf[GW_STOP_MAX][GW_STOP_LEN + 1];
};

/* The generation's parameters from the request; gp points into *st and *j. */
static void gen_params(struct job *j, size_t n_ids, struct stops *st, gw_gen_params *gp)
{
    struct worker *w = j->w;
    st->n = 0;
    for (uint32_t i = 0; i < j->req.n_stops && i < GW_STOP_MAX; i++) {
        size_t l = j->req.stop_len[i] < GW_STOP_LEN ? j->req.stop_len[i] : GW_STOP_LEN;
        memcpy(st->buf[i], j->req.stops[i], l);
        st->buf[i][l] = '\0';
        st->s[st->n++] = st->buf[i];
    }
    const int32_t *eog;
    size_t n_eog;
    gw_tokenizer_eog_ids(w->tok, &eog, &n_eog);
    int n_ctx = gw_ctx_n_ctx(w->ctx);
    int max_tokens = (int)j->req.max_tokens;
    if (max_tokens > n_ctx - (int)n_ids)
        max_tokens = n_ctx - (int)n_ids;
    if (max_tokens < 1)
        max_tokens = 1;
    *gp = (gw_gen_params){
        .max_tokens = max_tokens,
        .sampling = {.temperature = j->req.temperature,
                     .top_k = (int)j->req.top_k,
                     .top_p = j->req.top_p,
                     .seed = (j->req.flags & GW_REQ_SEED) ? j->req.seed : gw_mono_ns()},
        .eog_ids = eog,
        .n_eog = n_eog,
        .stops = st->s,
        .n_stops = st->n,
        .cancel_cb = should_cancel,
        .user = j,
        .on_step = on_step,
        .piece = piece,
        .on_text = on_text,
    };
}

/* After the last token: the decoder's tail, then the output guard's verdict
 * on what it held back. */
static void end_of_stream(struct job *j)
{
    struct worker *w = j->w;
    const char *tail;
    size_t tail_len;
    gw_tok_decoder_flush(&j->dec, &tail, &tail_len);
    if (tail_len && !j->stop_full)
        on_text(j, tail, tail_len);
    if (w->guard && !j->guard_kill && !j->stop_full) {
        /* the end of the stream: the held-back tail is decided now */
        int g = gw_guard_feed(w->guard, "", 0, 1, publish_text, j);
        if (g > 0)
            j->guard_kill = g;
    }
    if (j->guard_kill)
        guard_killed(j);
}

/* Why the generation ended, as the slot reports it. */
static int finish_of(const struct job *j, const gw_gen_result *res)
{
    uint32_t cancel = gw_run_cancel_word(&j->w->seg, j->ref.index);
    int fin;
    switch (res->finish) {
    case GW_FINISH_EOG:
    case GW_FINISH_STOP:
        fin = GW_FIN_STOP;
        break;
    case GW_FINISH_CANCEL:
        fin = j->stop_budget                                            ? GW_FIN_BUDGET
              : j->stop_full                                            ? GW_FIN_LENGTH
              : cancel == GW_CANCEL_CLIENT || cancel == GW_CANCEL_DRAIN ? GW_FIN_CANCELLED
                                                                        : GW_FIN_KILLED;
        break;
    default:
        fin = GW_FIN_LENGTH;
    }
    if (j->guard_kill)
        fin = GW_FIN_KILLED; /* also when the match came with the last token */
    return fin;
}

/* EWMA of device us per decoded token, alpha 1/8, published in our lane.
 * Prefill is not in it: one long prompt would make every reservation after
 * it look expensive (the fronts add the prompt separately). */
static void learn_cost(struct worker *w, const struct job *j, const gw_gen_result *res)
{
    if (j->tokens == 0)
        return;
    uint64_t per = res->n_tokens ? res->decode_ns / 1000 / res->n_tokens : device_us(j) / j->tokens;
    if (per == 0)
        per = 1;
    w->ewma_us_per_token = w->ewma_us_per_token ? (w->ewma_us_per_token * 7 + per) / 8 : per;
    gw_proc_set_cost(&w->seg, w->ewma_us_per_token);
}

/* Runs the generation over the prompt's ids and records how it ended: the
 * output, the final charge, the finish reason and the learned cost. */
static void generate(struct worker *w, struct job *j, const int32_t *ids, size_t n_ids)
{
    struct stops st;
    gw_gen_params gp;
    gen_params(j, n_ids, &st, &gp);
    if (w->guard)
        gw_guard_reset(w->guard);
    if (gw_tok_decoder_init(&j->dec, w->tok, 0) < 0) {
        fail_job(j, "out of memory");
        return;
    }
    gw_gen_result res;
    int rc = gw_generate(w->ctx, ids, n_ids, &gp, NULL, 0, &res);
    end_of_stream(j);
    gw_tok_decoder_free(&j->dec);
    if (rc < 0) {
        char err[256];
        snprintf(err, sizeof(err), "generation failed: %s", gw_strerror(rc));
        if (rc == -EIO && gw_ctx_on_gpu(w->ctx)) {
            /* A CUDA error can leave the context unusable (a fault poisons
             * it for good): fail this request, then exit so the master
             * starts a fresh worker; only a new process gets a new context. */
            log_line(w, "CUDA: %s; exiting so the master starts a fresh worker",
                     gw_ctx_error(w->ctx));
            w->device_lost = 1;
        }
        fail_job(j, err);
        return;
    }
    /* The final charge: what this request really used (on a GPU, every
     * pass, also those after the last token's report). */
    if (j->on_gpu && res.device_ns > j->dev_ns)
        j->dev_ns = res.device_ns;
    if (gw_budget_charge(&w->seg, j->ref, device_us(j), gw_now_us()) == GW_EREFUSED)
        j->stop_budget = 1;
    gw_run_finish(&w->seg, j->ref.index, (uint32_t)finish_of(j, &res));
    learn_cost(w, j, &res);
}

/* Hands the finished slot back to its front: the node's counters, then
 * DONE, then the front's wake-up. */
static void job_end(struct worker *w, struct job *j)
{
    /* The node's counters, before DONE lets the front answer: a client
     * that asks /metrics after its answer finds its request counted. */
    uint64_t end_ns = gw_mono_ns();
    gw_metrics_add(&w->seg, GW_MC_TOKENS, j->tokens);
    gw_metrics_add(&w->seg, GW_MC_DEVICE_NS, j->on_gpu ? j->dev_ns : end_ns - j->started_ns);
    if (j->tokens >= 2 && j->first_ns)
        gw_metrics_observe(&w->seg, GW_MH_TPOT, (end_ns - j->first_ns) / (j->tokens - 1));
    /* acq_rel (in gw_slot_move): the output, run record and charges above
     * happen-before the front sees DONE. */
    if (gw_slot_move(&w->seg, j->ref, GW_SLOT_RUNNING, GW_SLOT_DONE) != 0)
        log_line(w, "slot %u: could not move to done", j->ref.index);
    wake_front(w, j->req.front);
    gw_proc_heartbeat(&w->seg, -1);
}

/* One request, from taking the slot to DONE. */
static void run_job(struct worker *w, struct gw_slot_ref ref, const struct gw_slot_req *req)
{
    struct job j;
    job_start(w, ref, req, &j);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (!cancelled_in_queue(&j) && prompt_ids(w, &j, &ids, &n_ids) == 0)
        generate(w, &j, ids, n_ids);
    free(ids);
    job_end(w, &j);
}

static int load(struct worker *w, const char *config_path)
{
    char err[2048];
    if (gw_config_load(&w->cfg, config_path, err, sizeof(err)) != 0) {
        char who[32];
        snprintf(who, sizeof(who), "worker %d", w->index);
        gw_logf(GW_LOG_ERR, who, NULL, 0, "%s", err);
        return 111;
    }
    gw_log_set_format(w->cfg->log_format);
    char path[300];
    gw_segment_path(w->cfg, path, sizeof(path));
    if (gw_segment_attach(&w->seg, path, err, sizeof(err)) != 0 || gw_lane_acquire(&w->seg) != 0) {
        log_line(w, "segment: %s", err);
        return 111;
    }
    gw_proc_set_role(&w->seg, GW_ROLE_WORKER, w->index);
    if (gw_model_load(w->cfg->model_path, &w->model, err, sizeof(err)) != 0) {
        log_line(w, "%s", err);
        return 111;
    }
    if (gw_tokenizer_load(gw_model_gguf(w->model), &w->tok, err, sizeof(err)) != 0) {
        log_line(w, "%s", err);
        return 111;
    }
    int rc = gw_chat_template_from_gguf(&w->ct, gw_model_gguf(w->model), w->tok, err, sizeof(err));
    if (rc == 0)
        w->have_ct = 1;
    else
        log_line(w, "chat requests will fail: %s",
                 rc == -ENOENT ? "the model has no tokenizer.chat_template" : err);
    /* model.device: "auto" takes the first CUDA device that works and
     * otherwise runs on the CPU, saying why; "cuda:N" or nothing. */
    gw_ctx_opts co = {.n_ctx = w->cfg->context,
                      .n_threads = w->cfg->threads,
                      .device = w->cfg->device,
                      .auto_index = w->index};
    if ((rc = gw_ctx_open(w->model, &co, &w->ctx, err, sizeof(err))) != 0) {
        log_line(w, "cannot create a context of %d tokens on %s: %s", w->cfg->context,
                 w->cfg->device, err);
        return 111;
    }
    if (gw_ctx_note(w->ctx)[0])
        log_line(w, "%s", gw_ctx_note(w->ctx));
    if (gw_ctx_on_gpu(w->ctx))
        log_line(w, "ready: %s (%s), context %d, %s", w->cfg->model_name, w->cfg->model_path,
                 gw_ctx_n_ctx(w->ctx), gw_ctx_backend(w->ctx));
    else
        log_line(w, "ready: %s (%s), context %d, %d threads, cpu engine", w->cfg->model_name,
                 w->cfg->model_path, gw_ctx_n_ctx(w->ctx), gw_ctx_n_threads(w->ctx));
    if (w->cfg->n_guard > 0 &&
        gw_guard_new(&w->guard, w->cfg->guard, w->cfg->n_guard, err, sizeof(err)) != 0) {
        log_line(w, "%s", err);
        return 111;
    }
    gw_audit_path(w->cfg, w->audit_path, sizeof(w->audit_path));
    gw_proc_set_state(&w->seg, GW_PROC_READY);
    return 0;
}

/* 1 when the master asked us to drain; keeps our lane's state in step so
 * status shows it. */
static int drain_check(struct worker *w)
{
    int d = gw_proc_drain_requested(&w->seg);
    struct gw_proc_info pi;
    if (gw_proc_get(&w->seg, w->seg.lane, &pi) == 0 &&
        pi.state != (d ? GW_PROC_DRAINING : GW_PROC_READY)) {
        gw_proc_set_state(&w->seg, d ? GW_PROC_DRAINING : GW_PROC_READY);
        log_line(w, d ? "draining: taking no new requests" : "undrained: taking requests");
    }
    return d;
}

int gw_worker_main(const char *config_path, int index, const struct gw_fds *fds)
{
    struct worker w = {.index = index, .fds = fds};
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: a read returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGHUP, SIG_IGN); /* nothing a worker reloads: the model needs a restart */
    signal(SIGPIPE, SIG_IGN);
    int status = load(&w, config_path);
    while (status == 0 && !stopping) {
        struct gw_slot_ref ref;
        /* Run everything queued before sleeping: entries re-queued by a
         * repair come without a wake-up. */
        while (!stopping && !drain_check(&w)) {
            while (gw_queue_pop(&w.seg, &ref) == 0)
                ; /* the entries were wake-ups; pick() decides what runs */
            if (!pick(&w, &ref))
                break;
            if (gw_slot_move(&w.seg, ref, GW_SLOT_QUEUED, GW_SLOT_RUNNING) != 0)
                continue; /* another worker took it */
            struct gw_slot_req rq;
            if (gw_slot_get_req(&w.seg, ref, &rq) < 0)
                memset(&rq, 0, sizeof(rq)); /* cannot happen: RUNNING and ours */
            struct served *sv = served_of(&w, rq.tenant, gw_mono_ns());
            double start = sv->finish > w.vtime ? sv->finish : w.vtime;
            w.vtime = start;
            uint64_t t0 = gw_mono_ns(); /* the slot may be released once done: */
            run_job(&w, ref, &rq);      /* time the job here */
            sv = served_of(&w, rq.tenant, gw_mono_ns());
            sv->finish = start + (double)(gw_mono_ns() - t0) / 1e6;
            if (w.device_lost)
                break;
        }
        if (w.device_lost) {
            status = 111;
            break;
        }
        if (drain_check(&w)) {
            /* Drained (gpuwardenctl drain): take nothing, and leave the
             * work wake-ups to the other workers. */
            usleep(100000);
            continue;
        }
        uint64_t n;
        if (read(fds->work, &n, sizeof(n)) < 0 && errno != EINTR && errno != EAGAIN) {
            log_line(&w, "work eventfd: %s", strerror(errno));
            status = 111;
        } else if (drain_check(&w)) {
            /* Asked to drain while asleep: pass the wake-up on. */
            uint64_t one = 1;
            if (write(fds->work, &one, sizeof(one)) < 0)
                log_line(&w, "work eventfd: %s", strerror(errno));
        }
    }
    if (w.ctx)
        gw_ctx_free(w.ctx);
    if (w.have_ct)
        gw_chat_template_free(&w.ct);
    gw_guard_free(w.guard);
    gw_tokenizer_free(w.tok);
    gw_model_free(w.model);
    if (w.seg.base) {
        gw_proc_set_state(&w.seg, GW_PROC_DRAINING);
        gw_segment_close(&w.seg);
    }
    gw_config_free(w.cfg);
    return status;
}
