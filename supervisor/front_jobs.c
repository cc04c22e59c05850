/* front_jobs.c - a front's admitted requests as jobs: once a request is
 * queued, the front streams what the worker writes into its slot, and when
 * the slot is terminal it answers, settles the money and releases the slot,
 * whether or not the client is still there. Admission (front.c) creates
 * the jobs; the front's tick and wake-ups poll them. */
#include "front_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void job_unlink(struct job *j)
{
    struct job **pp = &j->f->jobs;
    while (*pp && *pp != j)
        pp = &(*pp)->next;
    if (*pp)
        *pp = j->next;
}

/* Sends what the worker has written since last time (streaming). */
static void job_stream(struct job *j)
{
    struct conn *c = j->c;
    struct front *f = j->f;
    /* the output bytes below w are complete (gw_run_written acquires) */
    size_t w = (size_t)gw_run_written(&f->seg, j->ref.index);
    if (w <= j->sent || !c)
        return;
    const char *out = gw_slot_output(&f->seg, j->ref.index);
    struct gw_completion comp = {.id = j->id,
                                 .created_s = j->created_s,
                                 .model = f->cfg->model_name,
                                 .text = out + j->sent,
                                 .text_len = w - j->sent,
                                 .include_usage = j->include_usage};
    char *ev;
    size_t len;
    if (gw_sse_chunk(j->route, &comp, 0, &ev, &len) == 0) {
        gw__conn_write(c, ev, len);
        free(ev);
    }
    j->sent = w;
}

static const char *killed_reason(uint32_t cancel, int state)
{
    /* A worker the watchdog had to SIGKILL leaves its slot FAILED (the
     * repair), but the cancel word set before the kill names the reason. */
    if (gw_wd_reason_of_cancel(cancel) >= 0)
        return gw_wd_reason_name(gw_wd_reason_of_cancel(cancel));
    if (state == GW_SLOT_FAILED)
        return "worker_lost";
    switch (cancel) {
    case GW_CANCEL_ADMIN:
        return "operator";
    case GW_CANCEL_DRAIN:
        return "draining";
    default:
        return cancel >= GW_CANCEL_WATCHDOG ? "watchdog" : "unknown";
    }
}

/* A killed request that named its end user (`user`): one audit line that
 * ties the kill's request_id to that user. The master's watchdog or the
 * worker wrote the kill's own line from the slot's request, which does not
 * carry `user` (it is the front's to know); this line, written by the front
 * that admitted the request, completes it. */
static void audit_end_user(struct job *j, const char *killed_reason)
{
    struct front *f = j->f;
    struct gw_slot_req rq;
    char path[300], line[1024];
    if (!j->user[0] || gw_slot_get_req(&f->seg, j->ref, &rq) < 0 ||
        gw_audit_path(f->cfg, path, sizeof(path)) != 0)
        return;
    struct gw_audit_event ev = {.request_id = rq.id,
                                .tenant = rq.tenant,
                                .ip = rq.ip,
                                .user = j->user,
                                .event = "end_user",
                                .killed_reason = killed_reason};
    size_t n = gw_audit_format_event(line, sizeof(line), gw_now_us(), &ev);
    int rc = gw_audit_append(path, line, n);
    if (rc < 0) {
        char who[32];
        snprintf(who, sizeof(who), "front %d", f->index);
        gw_logf(GW_LOG_WARNING, who, NULL, 0, "audit log %s: %s", path, gw_strerror(rc));
    }
}

/* The stream's end: the final chunk, the usage chunk when the client asked
 * for it (stream_options.include_usage), [DONE]. */
static void stream_finish(struct job *j, struct gw_completion *comp)
{
    struct conn *c = j->c;
    char *body;
    size_t len;
    job_stream(j);
    comp->include_usage = j->include_usage;
    if (gw_sse_chunk(j->route, comp, 1, &body, &len) == 0) {
        gw__conn_write(c, body, len);
        free(body);
    }
    if (j->include_usage && gw_sse_usage(j->route, comp, &body, &len) == 0) {
        gw__conn_write(c, body, len);
        free(body);
    }
    gw__conn_write(c, gw_sse_done(), strlen(gw_sse_done()));
    gw__conn_stream_end(c);
}

/* The slot is terminal: answer (if the client is there), settle, release. */
static void job_finish(struct job *j, int state)
{
    struct front *f = j->f;
    struct conn *c = j->c;
    /* Settled before the client hears the answer: its next request, at
     * whichever front, finds its in-flight unit and unused reservation
     * back (a tenant with max_inflight 1 asking in sequence is never
     * refused by its own finished request), and so does an operator who
     * reads the ledger. 0 when the repair settled it already. The slot
     * (output, run record) stays ours until released. */
    gw_budget_settle(&f->seg, j->ref);
    /* the worker wrote finish and error before releasing the terminal state
     * that gw_slot_state acquired */
    struct gw_run_view run;
    gw_run_read(&f->seg, j->ref.index, &run);
    int fin = (int)run.finish;
    uint32_t cancel = run.cancel;
    if (state != GW_SLOT_DONE && fin != GW_FIN_CANCELLED)
        fin = GW_FIN_KILLED; /* the worker died under it (the repair failed it) */
    if (fin > GW_FIN_ERROR || fin == GW_FIN_NONE)
        fin = GW_FIN_ERROR;
    gw_metrics_finish(&f->seg, fin);
    gw_metrics_observe(&f->seg, GW_MH_E2E, gw_mono_ns() - j->admitted_ns);
    if (fin == GW_FIN_KILLED)
        audit_end_user(j, killed_reason(cancel, state));
    uint64_t toks = run.tokens;
    gw__front_output_charge(j, toks);
    if (c) {
        c->acc_tokens = toks;
        c->acc_device_ns = run.device_ns;
        struct gw_completion comp = {
            .id = j->id,
            .created_s = j->created_s,
            .model = f->cfg->model_name,
            .finish_reason = gw_finish_name(fin),
            .killed_reason = fin == GW_FIN_KILLED ? killed_reason(cancel, state) : NULL,
            .prompt_tokens = run.prompt_tokens,
            .completion_tokens = toks,
        };
        char *body;
        size_t len;
        if (fin == GW_FIN_ERROR && !j->sent_first) {
            char err[128];
            const char *why = gw_run_error(&f->seg, j->ref.index, err, sizeof(err))
                                  ? err
                                  : "the worker could not run the request";
            int is_ctx = strncmp(why, "prompt is ", 10) == 0;
            gw__conn_error(c, is_ctx ? 400 : 500, is_ctx ? "invalid_request_error" : "server_error",
                           is_ctx ? "context_length_exceeded" : "generation_failed", why,
                           is_ctx ? "prompt" : NULL, NULL);
        } else if (j->stream) {
            stream_finish(j, &comp);
        } else {
            size_t w = (size_t)gw_run_written(&f->seg, j->ref.index);
            comp.text = gw_slot_output(&f->seg, j->ref.index);
            comp.text_len = w;
            if (gw_response_body(j->route, &comp, &body, &len) == 0) {
                /* Server-Timing: the device time this request was charged */
                char hdr[512];
                snprintf(hdr, sizeof(hdr), "%sServer-Timing: device;dur=%.3f\r\n", j->rate_hdr,
                         (double)run.device_ns / 1e6);
                gw__conn_respond(c, 200, "application/json", body, len, hdr);
                free(body);
            } else {
                gw__conn_error(c, 500, "server_error", "internal", "could not build the response",
                               NULL, NULL);
            }
        }
        c->job = NULL;
    }
    gw_slot_release(&f->seg, j->ref);
    job_unlink(j);
    free(j);
}

/* Looks at every job: new output to stream, terminal slots to finish. */
void gw__front_jobs_poll(struct front *f)
{
    struct job *j = f->jobs;
    while (j) {
        struct job *next = j->next;
        int state = gw_slot_state(&f->seg, j->ref);
        if (state == GW_SLOT_DONE || state == GW_SLOT_FAILED || state == GW_SLOT_KILLED) {
            job_finish(j, state);
        } else if (state < 0) {
            /* released by someone else (a repair that took our lane for
             * dead): nothing left to answer with */
            if (j->c) {
                j->c->job = NULL;
                gw__conn_error(j->c, 500, "server_error", "request_lost", "the request was lost",
                               NULL, NULL);
            }
            job_unlink(j);
            free(j);
        } else if (j->stream && state == GW_SLOT_RUNNING) {
            job_stream(j);
        }
        j = next;
    }
}

void gw__front_conn_gone(struct conn *c)
{
    gw__front_cluster_conn_gone(c);
    struct job *j = c->job;
    if (!j)
        return;
    j->c = NULL;
    c->job = NULL;
    /* Nobody is listening any more: a queued request is withdrawn, a
     * running one is told to stop (within one token). The slot is settled
     * and released by gw__front_jobs_poll when terminal. */
    if (gw_slot_move(&j->f->seg, j->ref, GW_SLOT_QUEUED, GW_SLOT_FAILED) != 0)
        gw_slot_cancel(&j->f->seg, j->ref, GW_CANCEL_CLIENT);
    else
        gw_run_finish(&j->f->seg, j->ref.index, GW_FIN_CANCELLED);
}
