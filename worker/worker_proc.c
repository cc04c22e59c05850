/* worker_proc.c - a worker process: loads the model once, then runs the
 * queued requests of the segment in batches (worker_sched.c): every engine
 * step advances every running request by one forward pass; a request joins
 * when a place frees and leaves at the end of the step that ends it. Text
 * goes into each slot as it is generated, device time is charged as it is
 * spent, and a request stops within one step when its slot's cancel word is
 * set (worker_job.c).
 */
#include "worker_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static volatile sig_atomic_t stopping, reload;

static void on_signal(int sig)
{
    if (sig == SIGTERM || sig == SIGINT)
        stopping = 1;
    if (sig == SIGHUP)
        reload = 1;
}

void gw__wlog(const struct gw_worker *w, const char *fmt, ...)
{
    char who[32];
    snprintf(who, sizeof(who), "worker %d", w->index);
    va_list ap;
    va_start(ap, fmt);
    gw_vlog(who, fmt, ap);
    va_end(ap);
}

/* Places beyond max_batch for a tenant with a smaller counter than one in
 * the batch (worker_sched.c): a quarter of the batch, at least one. */
static int held_places(int batch)
{
    int held = batch > 1 ? (batch + 3) / 4 : 0;
    return batch + held > GW_MAX_SEQS ? GW_MAX_SEQS - batch : held;
}

/* The engine context the config asks for: model.max_batch sequences (auto:
 * 8; a GPU context takes one until its kernels batch) and the held places,
 * a KV pool of model.kv_cache_tokens (auto: sequences x context, at most
 * 2^20), prompt
 * chunks of model.prefill_chunk and passes of up to model.step_tokens rows
 * (and room for every sequence's token beside a chunk). */
static void ctx_opts(const struct gw_config *cfg, int index, gw_ctx_opts *co)
{
    int batch = cfg->max_batch ? cfg->max_batch : 8, seqs = batch + held_places(batch);
    long kv = cfg->kv_cache_tokens ? cfg->kv_cache_tokens : (long)seqs * cfg->context;
    if (!cfg->kv_cache_tokens && kv > (1L << 20))
        kv = 1L << 20;
    int rows = cfg->step_tokens > batch + cfg->prefill_chunk ? cfg->step_tokens
                                                             : batch + cfg->prefill_chunk;
    *co = (gw_ctx_opts){.n_ctx = cfg->context,
                        .n_threads = cfg->threads,
                        .device = cfg->device,
                        .auto_index = index,
                        .max_seqs = seqs,
                        .kv_tokens = (int)kv,
                        .n_batch = cfg->prefill_chunk,
                        .max_rows = rows};
}

/* The batch: the jobs the context has room for (max_batch and the held
 * places), each with its output guard, and the scheduler's scratch. */
static int batch_init(struct gw_worker *w, char *err, size_t errlen)
{
    int batch = w->cfg->max_batch ? w->cfg->max_batch : 8;
    w->n_jobs = gw_ctx_max_seqs(w->ctx);
    w->max_batch = batch < w->n_jobs ? batch : w->n_jobs;
    w->step_tokens = w->cfg->step_tokens;
    w->jobs = calloc((size_t)w->n_jobs, sizeof(*w->jobs));
    if (!w->jobs || gw__sched_init(w) != 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (int i = 0; i < w->n_jobs && w->cfg->n_guard > 0; i++)
        if (gw_guard_new(&w->jobs[i].guard, w->cfg->guard, w->cfg->n_guard, err, errlen) != 0)
            return -EINVAL;
    gw__wlog(w, "batch: %d sequences, KV cache %d tokens, steps of %d tokens, %d held places",
             w->max_batch, gw_ctx_kv_tokens(w->ctx), w->step_tokens, w->n_jobs - w->max_batch);
    return 0;
}

static void batch_free(struct gw_worker *w)
{
    if (w->jobs)
        for (int i = 0; i < w->n_jobs; i++)
            gw_guard_free(w->jobs[i].guard);
    free(w->jobs);
    gw__sched_free(w);
}

static int load(struct gw_worker *w, const char *config_path)
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
        gw__wlog(w, "segment: %s", err);
        return 111;
    }
    gw_proc_set_role(&w->seg, GW_ROLE_WORKER, w->index);
    if (gw_model_load(w->cfg->model_path, &w->model, err, sizeof(err)) != 0) {
        gw__wlog(w, "%s", err);
        return 111;
    }
    if (gw_tokenizer_load(gw_model_gguf(w->model), &w->tok, err, sizeof(err)) != 0) {
        gw__wlog(w, "%s", err);
        return 111;
    }
    /* the near-repetition statistic folds digit tokens: a map, once */
    if (gw_repeat_digit_map(w->tok, gw_model_cfg(w->model)->vocab, &w->digit_ids) != 0)
        gw__wlog(w, "out of memory for the digit map: near repetition is not detected");
    int rc = gw_chat_template_from_gguf(&w->ct, gw_model_gguf(w->model), w->tok, err, sizeof(err));
    if (rc == 0)
        w->have_ct = 1;
    else
        gw__wlog(w, "chat requests will fail: %s",
                 rc == -ENOENT ? "the model has no tokenizer.chat_template" : err);
    /* model.device: "auto" takes the first CUDA device that works and
     * otherwise runs on the CPU, saying why; "cuda:N" or nothing. */
    gw_ctx_opts co;
    ctx_opts(w->cfg, w->index, &co);
    gw__pin_threads(w, &co);
    if ((rc = gw_ctx_open(w->model, &co, &w->ctx, err, sizeof(err))) != 0) {
        gw__wlog(w, "cannot create a context of %d tokens on %s: %s", w->cfg->context,
                 w->cfg->device, err);
        return 111;
    }
    if (gw_ctx_note(w->ctx)[0])
        gw__wlog(w, "%s", gw_ctx_note(w->ctx));
    if (gw_ctx_on_gpu(w->ctx))
        gw__wlog(w, "ready: %s (%s), context %d, %s", w->cfg->model_name, w->cfg->model_path,
                 gw_ctx_n_ctx(w->ctx), gw_ctx_backend(w->ctx));
    else
        gw__wlog(w, "ready: %s (%s), context %d, %d threads%s, cpu engine", w->cfg->model_name,
                 w->cfg->model_path, gw_ctx_n_ctx(w->ctx), gw_ctx_n_threads(w->ctx), w->pin_note);
    if ((rc = batch_init(w, err, sizeof(err))) != 0) {
        gw__wlog(w, "%s", err);
        return 111;
    }
    gw_audit_path(w->cfg, w->audit_path, sizeof(w->audit_path));
    gw_proc_set_state(&w->seg, GW_PROC_READY);
    return 0;
}

/* 1 when the master asked us to drain; keeps our lane's state in step so
 * status shows it. */
static int drain_check(struct gw_worker *w)
{
    int d = gw_proc_drain_requested(&w->seg);
    struct gw_proc_info pi;
    if (gw_proc_get(&w->seg, w->seg.lane, &pi) == 0 &&
        pi.state != (d ? GW_PROC_DRAINING : GW_PROC_READY)) {
        gw_proc_set_state(&w->seg, d ? GW_PROC_DRAINING : GW_PROC_READY);
        gw__wlog(w, d ? "draining: taking no new requests" : "undrained: taking requests");
    }
    return d;
}

/* Sleeps until a front queues work (the work eventfd), or a signal. 0, or
 * 111 when the eventfd fails. */
static int wait_work(struct gw_worker *w)
{
    uint64_t n;
    if (read(w->fds->work, &n, sizeof(n)) < 0 && errno != EINTR && errno != EAGAIN) {
        gw__wlog(w, "work eventfd: %s", strerror(errno));
        return 111;
    }
    if (drain_check(w)) {
        /* Asked to drain while asleep: pass the wake-up on. */
        uint64_t one = 1;
        if (write(w->fds->work, &one, sizeof(one)) < 0)
            gw__wlog(w, "work eventfd: %s", strerror(errno));
    }
    return 0;
}

/* The loop: fill the batch (unless draining or stopping), step it, sleep
 * when there is nothing to do. On SIGTERM the running requests finish
 * first (the master cancels them with its drain); a request waiting for KV
 * blocks is failed. */
static int serve(struct gw_worker *w)
{
    for (;;) {
        if (reload) {
            reload = 0;
            w->guard_gen++; /* each job's guard is rebuilt before its next request */
            gw__wlog(w, "SIGHUP: output guard rules reload from %s between requests",
                     w->config_path);
        }
        int draining = drain_check(w);
        if (stopping && w->parked)
            gw__job_fail_parked(w, "the worker is stopping");
        if (!stopping && !draining)
            gw__sched_admit(w);
        if (w->n_running > 0) {
            gw__sched_step(w);
            if (w->device_lost)
                return 111;
            continue;
        }
        gw_proc_heartbeat(&w->seg, -1);
        if (stopping)
            return 0;
        if (draining) {
            /* Drained (gpuwardenctl drain): take nothing, and leave the
             * work wake-ups to the other workers. */
            usleep(100000);
            continue;
        }
        int rc = wait_work(w);
        if (rc)
            return rc;
    }
}

int gw_worker_main(const char *config_path, int index, const struct gw_fds *fds)
{
    struct gw_worker w = {.index = index, .fds = fds, .config_path = config_path};
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: a read returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL); /* the output guard's rules; the model needs a restart */
    signal(SIGPIPE, SIG_IGN);
    int status = load(&w, config_path);
    if (status == 0)
        status = serve(&w);
    batch_free(&w);
    if (w.ctx)
        gw_ctx_free(w.ctx);
    if (w.have_ct)
        gw_chat_template_free(&w.ct);
    gw_tokenizer_free(w.tok);
    free(w.digit_ids);
    gw_model_free(w.model);
    if (w.seg.base) {
        gw_proc_set_state(&w.seg, GW_PROC_DRAINING);
        gw_segment_close(&w.seg);
    }
    gw_config_free(w.cfg);
    return status;
}
