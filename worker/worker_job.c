/* worker_job.c - one request of the batch, from taking its slot to DONE:
 * the prompt rendered and tokenized, the generation's hooks (text through
 * the output guard into the slot, progress into the run record, the
 * cancel word read before each token), charges from the engine's shares
 * of each step, the fairness counter, and the end: final charge, finish
 * reason, the front woken.
 *
 * Device time is what the engine's steps charged this request
 * (gw_gen_device_us): its share of every pass it took part in, measured
 * by CUDA events on a GPU and as the step's wall time on the CPU.
 */
#include "worker_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void wake_front(const struct gw_worker *w, uint32_t front)
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
    struct gw_job *j = user;
    /* recorded before its text is published: a worker that takes the
     * request over after our death replays exactly what the client saw */
    gw_run_push_id(&j->w->seg, j->ref.index, j->ids_pushed++, tok);
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
    struct gw_job *j = user;
    if (j->skip) { /* a continued request: its client has these bytes */
        size_t d = len < j->skip ? len : j->skip;
        text += d;
        len -= d;
        j->skip -= d;
        if (!len)
            return;
    }
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
    struct gw_job *j = user;
    if (!j->guard) {
        publish_text(j, text, len);
        return;
    }
    int rc = gw_guard_feed(j->guard, text, len, 0, publish_text, j);
    if (rc > 0)
        j->guard_kill = rc;
}

static uint64_t device_us(const struct gw_job *j)
{
    return j->base_us + (j->gen ? gw_gen_device_us(j->gen) : 0);
}

static void on_step(void *user, const gw_gen_step *st)
{
    struct gw_job *j = user;
    uint64_t now = gw_mono_ns();
    j->tokens = st->n_tokens;
    if (!j->first_ns && st->n_tokens >= 1) {
        j->first_ns = now;
        j->first_us = device_us(j);
        uint64_t wall = gw_now_us();
        if (wall > j->req.created_us)
            gw_metrics_observe(&j->w->seg, GW_MH_TTFT, (wall - j->req.created_us) * 1000u);
    }
    const gw_loop_stat *ls = &st->loop;
    uint64_t rep =
        gw_wd_rep_word((uint32_t)ls->period, ls->count, ls->run, ls->near, (uint32_t)ls->top1);
    j->rep_max = gw_wd_rep_fold(j->rep_max, rep);
    struct gw_run_step pub = {.tokens = st->n_tokens,
                              .device_ns = device_us(j) * 1000u,
                              .progress_ns = now,
                              .rep = rep,
                              .rep_max = j->rep_max};
    gw_run_step(&j->w->seg, j->ref.index, &pub);
}

static int should_cancel(void *user)
{
    struct gw_job *j = user;
    return j->stop_budget || j->stop_full || j->guard_kill ||
           gw_run_cancel_word(&j->w->seg, j->ref.index) != 0;
}

static void fail_job(struct gw_job *j, const char *why)
{
    gw_run_fail(&j->w->seg, j->ref.index, why);
}

/* An output-guard kill: the cancel word names it (so the front reports
 * killed_reason "output_guard"), and it is counted and audited here, where
 * it was decided. */
static void guard_killed(struct gw_job *j)
{
    struct gw_worker *w = j->w;
    gw_slot_cancel(&w->seg, j->ref, GW_WD_CANCEL(GW_WD_OUTPUT_GUARD));
    gw_kills_add(&w->seg, GW_WD_OUTPUT_GUARD);
    struct gw_acct tenant;
    if (gw_slot_tenant(&w->seg, j->ref, &tenant) == 0)
        gw_tstat_kill(&w->seg, tenant, GW_WD_OUTPUT_GUARD);
    char line[4096];
    size_t n = gw_audit_format(line, sizeof(line), gw_now_us(), &j->req, GW_WD_OUTPUT_GUARD,
                               j->tokens, (gw_mono_ns() - j->started_ns), j->out, j->written);
    int rc = gw_audit_append(w->audit_path, line, n);
    gw__wlog(w, "slot %u (request %.40s): output guard rule %s matched: killed%s%s", j->ref.index,
             j->req.id, gw_guard_rule_name(j->guard, j->guard_kill - 1), rc ? "; audit log: " : "",
             rc ? strerror(-rc) : "");
}

/* Renders the prompt text (chat messages through the model's template). */
static int prompt_text(struct gw_worker *w, struct gw_job *j, char **text, size_t *len, char *err,
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

/* A request whose worker died, put back by the repair: what it had
 * generated and published, and what was charged, are where that worker
 * left them; the run's start and first-token times stand. */
static void resume(struct gw_worker *w, struct gw_job *j)
{
    j->resumed = 1;
    uint32_t cap = w->seg.cfg.resume_tokens;
    int64_t n = (j->forced = malloc((size_t)cap * sizeof(int32_t) + 1))
                    ? gw_run_ids(&w->seg, j->ref.index, j->forced, cap)
                    : 0;
    j->n_forced = n > 0 ? (size_t)n : 0;
    j->written = (size_t)gw_run_written(&w->seg, j->ref.index);
    j->skip = j->written;
    uint64_t reserved, used;
    int settled;
    if (gw_slot_money(&w->seg, j->ref, &reserved, &used, &settled) == 0)
        j->base_us = used;
    j->first_ns = j->started_ns; /* its TTFT was observed by the first worker */
    gw__wlog(w, "slot %u (request %.40s): continuing after its worker died: %zu tokens replayed",
             j->ref.index, j->req.id, j->n_forced);
}

/* Takes the slot: its request, the job's pointers into it, the run's
 * start time, the queue-time metric. */
static void job_start(struct gw_worker *w, struct gw_slot_ref ref, const struct gw_slot_req *req,
                      struct gw_job *j)
{
    struct gw_guard *guard = j->guard; /* the job's own, kept across requests */
    unsigned gen = j->guard_gen;
    *j = (struct gw_job){
        .w = w, .busy = 1, .guard = guard, .guard_gen = gen, .ref = ref, .req = *req};
    j->have_tenant = gw_slot_tenant(&w->seg, ref, &j->tenant) == 0;
    j->out = gw_slot_output(&w->seg, ref.index);
    j->cap = w->seg.cfg.output_bytes;
    j->started_ns = gw_mono_ns();
    if (gw_slot_resumed(&w->seg, ref)) {
        resume(w, j);
        return;
    }
    gw_run_ids_reset(&w->seg, ref.index);
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
static int cancelled_in_queue(struct gw_job *j)
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
static int prompt_ids(struct gw_worker *w, struct gw_job *j)
{
    char err[256] = ""; /* not every failure (out of memory) writes it */
    char *text = NULL;
    size_t text_len = 0;
    int rc = prompt_text(w, j, &text, &text_len, err, sizeof(err));
    if (rc == 0) {
        /* Chat prompts carry the template's control tokens; plain prompts
         * are text only, so "<|im_end|>" typed by a user stays text. */
        unsigned flags = GW_TOK_ADD_BOS | ((j->req.flags & GW_REQ_CHAT) ? GW_TOK_PARSE_SPECIAL : 0);
        rc = gw_tokenizer_encode(w->tok, text, text_len, flags, &j->ids, &j->n_ids, err,
                                 sizeof(err));
    }
    free(text);
    int n_ctx = gw_ctx_n_ctx(w->ctx);
    if (rc == 0 && (j->n_ids == 0 || (int)j->n_ids >= n_ctx)) {
        snprintf(err, sizeof(err), "prompt is %zu tokens; the context holds %d", j->n_ids, n_ctx);
        rc = GW_ECONTEXT;
    }
    if (rc != 0) {
        if (!err[0])
            snprintf(err, sizeof(err), "%s", gw_strerror(rc));
        fail_job(j, err);
        return -1;
    }
    gw_run_set_prompt_tokens(&w->seg, j->ref.index, j->n_ids);
    if (!j->resumed)
        gw_metrics_add(&w->seg, GW_MC_PROMPT_TOKENS, j->n_ids);
    return 0;
}

/* The generation's parameters from the request (pointing into the job). */
static void gen_params(struct gw_job *j)
{
    struct gw_worker *w = j->w;
    struct gw_stops *st = &j->stops;
    size_t n_ids = j->n_ids;
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
    j->gp = (gw_gen_params){
        .max_tokens = max_tokens,
        .sampling = {.temperature = j->req.temperature,
                     .top_k = (int)j->req.top_k,
                     .top_p = j->req.top_p,
                     .seed = (j->req.flags & GW_REQ_SEED) ? j->req.seed : gw_mono_ns()},
        .eog_ids = eog,
        .n_eog = n_eog,
        .digit_ids = w->digit_ids,
        .stops = st->s,
        .n_stops = st->n,
        .cancel_cb = should_cancel,
        .user = j,
        .on_step = on_step,
        .piece = piece,
        .on_text = on_text,
        .forced = j->forced,
        .n_forced = j->n_forced,
    };
    if (j->n_forced >= (size_t)max_tokens) /* cannot happen: it had tokens to go */
        j->gp.n_forced = (size_t)max_tokens - 1;
}

/* After the last token: the decoder's tail, then the output guard's verdict
 * on what it held back. */
static void end_of_stream(struct gw_job *j)
{
    const char *tail;
    size_t tail_len;
    gw_tok_decoder_flush(&j->dec, &tail, &tail_len);
    if (tail_len && !j->stop_full)
        on_text(j, tail, tail_len);
    if (j->guard && !j->guard_kill && !j->stop_full) {
        /* the end of the stream: the held-back tail is decided now */
        int g = gw_guard_feed(j->guard, "", 0, 1, publish_text, j);
        if (g > 0)
            j->guard_kill = g;
    }
    if (j->guard_kill)
        guard_killed(j);
    /* its redactions: counted and audited once, at the end of its text */
    int rc = gw_guard_report(j->guard, &j->w->seg, &j->req, j->w->audit_path);
    if (rc < 0)
        gw__wlog(j->w, "audit log %s: %s", j->w->audit_path, strerror(-rc));
}

/* Why the generation ended, as the slot reports it. */
static int finish_of(const struct gw_job *j, const gw_gen_result *res)
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
 * The prompt's share is not in it (the share up to the first token): one
 * long prompt would make every reservation after it look expensive (the
 * fronts add the prompt separately). */
static void learn_cost(struct gw_worker *w, const struct gw_job *j)
{
    if (j->tokens < 2 || j->resumed)
        return;
    uint64_t per = (device_us(j) - j->first_us) / (j->tokens - 1);
    if (per == 0)
        per = 1;
    w->ewma_us_per_token = w->ewma_us_per_token ? (w->ewma_us_per_token * 7 + per) / 8 : per;
    gw_proc_set_cost(&w->seg, w->ewma_us_per_token);
}

/* Hands the finished slot back to its front: the node's counters, then
 * DONE, then the front's wake-up; the job is free again. */
static void job_end(struct gw_worker *w, struct gw_job *j)
{
    /* The node's counters, before DONE lets the front answer: a client
     * that asks /metrics after its answer finds its request counted. */
    uint64_t end_ns = gw_mono_ns();
    gw_metrics_add(&w->seg, GW_MC_TOKENS, j->tokens);
    struct gw_acct tenant; /* the tenant's share of the same count */
    if (gw_slot_tenant(&w->seg, j->ref, &tenant) == 0)
        gw_tstat_tokens(&w->seg, tenant, j->tokens);
    if (j->tokens >= 2 && j->first_ns && !j->resumed)
        gw_metrics_observe(&w->seg, GW_MH_TPOT, (end_ns - j->first_ns) / (j->tokens - 1));
    /* acq_rel (in gw_slot_move): the output, run record and charges above
     * happen-before the front sees DONE. */
    if (gw_slot_move(&w->seg, j->ref, GW_SLOT_RUNNING, GW_SLOT_DONE) != 0)
        gw__wlog(w, "slot %u: could not move to done", j->ref.index);
    wake_front(w, j->req.front);
    if (j->have_dec)
        gw_tok_decoder_free(&j->dec);
    if (j->gen)
        gw_gen_free(j->gen);
    free(j->ids);
    free(j->forced);
    if (w->parked == j)
        w->parked = NULL;
    struct gw_guard *guard = j->guard;
    unsigned gen = j->guard_gen;
    *j = (struct gw_job){.guard = guard, .guard_gen = gen};
}

/* The charge so far: the engine's shares for this request. GW_EREFUSED
 * from the ledger stops it at the next step (finish_reason "budget"). */
static void charge(struct gw_worker *w, struct gw_job *j)
{
    j->charged_at = j->tokens;
    if (gw_budget_charge(&w->seg, j->ref, device_us(j), gw_now_us()) == GW_EREFUSED)
        j->stop_budget = 1;
}

/* The fairness counter: the service this step gave the tenant, weighted
 * (docs/ARCHITECTURE.md, "Continuous batching"). */
static void count_service(struct gw_worker *w, struct gw_job *j)
{
    size_t fed = gw_gen_prompt_fed(j->gen);
    uint64_t toks = gw_gen_res(j->gen)->n_tokens;
    double units = (w->cfg->vtc_weight_prompt * (double)(fed - j->vtc_fed) +
                    w->cfg->vtc_weight_output * (double)(toks - j->vtc_tokens)) *
                   1e6 / (double)gw_req_weight_milli(&j->req);
    j->vtc_fed = fed;
    j->vtc_tokens = toks;
    if (j->have_tenant && units >= 1)
        gw_vtc_add(&w->seg, j->tenant, (uint64_t)units);
}

/* The generation has ended: the decoder's and the guard's tails, the final
 * charge, the finish reason, the learned cost. */
static void job_finished(struct gw_worker *w, struct gw_job *j)
{
    const gw_gen_result *res = gw_gen_res(j->gen);
    end_of_stream(j);
    if (gw_gen_error(j->gen) < 0) {
        char err[256];
        snprintf(err, sizeof(err), "generation failed: %s", gw_strerror(gw_gen_error(j->gen)));
        charge(w, j);
        fail_job(j, err);
        return;
    }
    charge(w, j);
    gw_run_finish(&w->seg, j->ref.index, (uint32_t)finish_of(j, res));
    learn_cost(w, j);
}

void gw__job_after_step(struct gw_worker *w, struct gw_job *j)
{
    count_service(w, j);
    if (!gw_gen_done(j->gen)) {
        if (j->tokens - j->charged_at >= GW_CHARGE_EVERY)
            charge(w, j);
        return;
    }
    job_finished(w, j);
    w->n_running--;
    job_end(w, j);
}

void gw__job_fail_step(struct gw_worker *w, struct gw_job *j, int rc)
{
    char err[256];
    snprintf(err, sizeof(err), "generation failed: %s", gw_strerror(rc));
    charge(w, j);
    fail_job(j, err);
    w->n_running--;
    job_end(w, j);
}

int gw__job_place(struct gw_worker *w, struct gw_job *j)
{
    int rc = gw_gen_new(w->ctx, j->ids, j->n_ids, &j->gp, NULL, 0, &j->gen);
    if (rc == 0) {
        w->n_running++;
        if (w->parked == j)
            w->parked = NULL;
        return 1;
    }
    if (rc == -EAGAIN) {
        w->parked = j; /* waits for blocks; the batch takes nothing else meanwhile */
        return 0;
    }
    char err[256];
    if (rc == GW_ECONTEXT)
        snprintf(err, sizeof(err),
                 "prompt of %zu tokens + max_tokens %d does not fit the KV cache (%d tokens, "
                 "model.kv_cache_tokens)",
                 j->n_ids, j->gp.max_tokens, gw_ctx_kv_tokens(w->ctx));
    else
        snprintf(err, sizeof(err), "%s", gw_strerror(rc));
    j->gen = NULL;
    fail_job(j, err);
    job_end(w, j);
    return -1;
}

int gw__job_take(struct gw_worker *w, struct gw_job *j, struct gw_slot_ref ref)
{
    if (gw_slot_move(&w->seg, ref, GW_SLOT_QUEUED, GW_SLOT_RUNNING) != 0)
        return 0; /* another worker took it, or its front cancelled it */
    struct gw_slot_req rq;
    if (gw_slot_get_req(&w->seg, ref, &rq) < 0)
        memset(&rq, 0, sizeof(rq)); /* cannot happen: RUNNING and ours */
    job_start(w, ref, &rq, j);
    if (cancelled_in_queue(j) || prompt_ids(w, j) != 0) {
        job_end(w, j);
        return 0;
    }
    gen_params(j);
    if (j->guard)
        gw_guard_reset(j->guard);
    if (gw_tok_decoder_init(&j->dec, w->tok, 0) < 0) {
        fail_job(j, "out of memory");
        job_end(w, j);
        return 0;
    }
    j->have_dec = 1;
    return gw__job_place(w, j) >= 0;
}

void gw__job_fail_parked(struct gw_worker *w, const char *why)
{
    struct gw_job *j = w->parked;
    fail_job(j, why);
    job_end(w, j);
}
