/* metrics.c - GET /metrics: the node's counters as Prometheus text (format
 * 0.0.4), read from the shared segment only, so every front gives the same
 * answer and a test can render what a front would from the same file.
 * Names follow Prometheus conventions: gpuwarden_ prefix, base units
 * (seconds), _total on counters; no per-tenant labels (gpuwardenctl tenant
 * shows per-tenant figures). The list is in README.md ("Metrics"). */
#include "gw_supervisor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void bput(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bput(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0 || b->oom)
            return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        char *q = realloc(b->p, b->cap * 2 + (size_t)n);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = b->cap * 2 + (size_t)n;
    }
}

static void head(struct buf *b, const char *name, const char *type, const char *help)
{
    bput(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *const route_names[GW_M_ROUTES] = {
    "other", "generate", "completions", "chat", "healthz", "readyz", "metrics", "models",
};

static const char *const hist_names[GW_MH_N][2] = {
    {"gpuwarden_time_to_first_token_seconds", "Admission to the first generated token."},
    {"gpuwarden_time_per_output_token_seconds",
     "Mean time per output token after the first, one observation per generation."},
    {"gpuwarden_request_duration_seconds",
     "Admission to the end of a generation's answer (end to end)."},
    {"gpuwarden_queue_time_seconds", "Admission to a worker taking the request."},
};

static void histogram(struct buf *b, const struct gw_metrics_snap *s, int h)
{
    const char *name = hist_names[h][0];
    head(b, name, "histogram", hist_names[h][1]);
    uint64_t cum = 0;
    for (int i = 0; i < GW_M_BUCKETS; i++) {
        cum += s->hist[h].bucket[i];
        bput(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, (double)gw_metrics_bucket_ns(i) / 1e9,
             cum);
    }
    cum += s->hist[h].bucket[GW_M_BUCKETS];
    bput(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", name, cum,
         name, (double)s->hist[h].sum_ns / 1e9, name, s->hist[h].count);
}

/* Gauges read from the segment's live state. */
struct live {
    uint64_t in_flight, slots_used;
    uint64_t workers[3]; /* by enum gw_proc_state */
};

static void live_of(const struct gw_segment *seg, struct live *l)
{
    memset(l, 0, sizeof(*l));
    for (uint32_t i = 0; i < seg->cfg.slots; i++) {
        struct gw_slot_ref r;
        int st = gw_slot_peek(seg, i, &r);
        if (st > GW_SLOT_FREE)
            l->slots_used++;
        if (st == GW_SLOT_ADMITTED || st == GW_SLOT_QUEUED || st == GW_SLOT_RUNNING)
            l->in_flight++;
    }
    for (uint32_t i = 0; i < seg->cfg.lanes; i++) {
        struct gw_proc_info pi;
        if (gw_proc_get(seg, (int)i, &pi) == 0 && pi.role == GW_ROLE_WORKER && pi.state >= 0 &&
            pi.state <= GW_PROC_DRAINING)
            l->workers[pi.state]++;
    }
}

/* The farm's lines (issue 19), only on a node whose cluster agent has
 * reported: a node alone renders exactly what it did before. */
static void cluster_lines(struct buf *b, const struct gw_segment *seg)
{
    struct gw_cl_status st;
    gw_cluster_status(seg, &st);
    if (st.state == GW_CL_OFF && st.counters[GW_CLC_ROUND_TRIPS] == 0)
        return;
    static const struct {
        int c;
        const char *name, *help;
    } cs[] = {
        {GW_CLC_ROUND_TRIPS, "redis_round_trips_total", "Calls the cluster agent made to Redis."},
        {GW_CLC_GRANTS, "lease_grants_total", "Leases Redis granted to this node."},
        {GW_CLC_TOKENS, "lease_tokens_total", "Request tokens in the leases granted."},
        {GW_CLC_RETURNED, "lease_returned_tokens_total", "Unused lease tokens given back."},
        {GW_CLC_DENIALS, "lease_denials_total", "Lease asks the farm-wide account refused."},
        {GW_CLC_TIMEOUTS, "redis_timeouts_total", "Redis calls that got no answer in time."},
        {GW_CLC_ERRORS, "redis_errors_total", "Redis calls that failed otherwise."},
        {GW_CLC_OPEN_ADMITS, "fail_open_admits_total", "Requests admitted fail-open."},
        {GW_CLC_CLOSED_REFUSALS, "fail_closed_refusals_total",
         "Requests refused 503 budget_unavailable."},
        {GW_CLC_RECONCILED, "reconciled_total", "Fail-open admissions charged to Redis later."},
        {GW_CLC_LEASE_CALLS, "lease_round_trips_total",
         "Redis calls for leases (take, give back, reconcile)."},
        {GW_CLC_GPU_GRANTS, "gpu_lease_grants_total", "GPU-us leases Redis granted to this node."},
        {GW_CLC_GPU_US, "gpu_lease_us_total", "GPU-us in the leases granted."},
        {GW_CLC_GPU_RETURNED, "gpu_lease_returned_us_total", "Unused leased GPU-us given back."},
        {GW_CLC_GPU_DENIALS, "gpu_lease_denials_total", "GPU lease asks the farm refused."},
        {GW_CLC_GPU_OPEN_US, "gpu_fail_open_us_total", "GPU-us reserved fail-open."},
        {GW_CLC_GPU_RECONCILED, "gpu_reconciled_us_total", "Fail-open GPU-us charged later."},
        {GW_CLC_GPU_SHORT, "gpu_lease_shortfalls_total",
         "Worker extensions the node's GPU lease could not cover."},
        {GW_CLC_GPU_OVERDRAWN, "gpu_overdrawn_us_total", "GPU-us extensions took beyond a lease."},
        {GW_CLC_OUT_GRANTS, "output_lease_grants_total",
         "Output-token leases Redis granted to this node."},
        {GW_CLC_OUT_TOKENS, "output_lease_tokens_total", "Output tokens in the leases granted."},
        {GW_CLC_OUT_RETURNED, "output_lease_returned_tokens_total",
         "Unused leased output tokens given back."},
        {GW_CLC_OUT_DENIALS, "output_lease_denials_total", "Output lease asks the farm refused."},
        {GW_CLC_OUT_OPEN, "output_fail_open_tokens_total",
         "Output tokens generated by requests admitted fail-open."},
        {GW_CLC_OUT_RECONCILED, "output_reconciled_tokens_total",
         "Fail-open output tokens charged later."},
        {GW_CLC_OUT_OVERRUN, "output_overrun_tokens_total",
         "Output tokens charged beyond the node's lease (its debt)."},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
        char name[96];
        snprintf(name, sizeof(name), "gpuwarden_cluster_%s", cs[i].name);
        head(b, name, "counter", cs[i].help);
        bput(b, "%s %" PRIu64 "\n", name, st.counters[cs[i].c]);
    }
    head(b, "gpuwarden_cluster_fail_open_seconds_total", "counter",
         "Time this node ran without Redis (each plan per its fail mode).");
    bput(b, "gpuwarden_cluster_fail_open_seconds_total %.6f\n",
         (double)st.counters[GW_CLC_OPEN_US] / 1e6);
    head(b, "gpuwarden_cluster_redis_up", "gauge", "1 when the cluster agent reaches Redis.");
    bput(b, "gpuwarden_cluster_redis_up %d\n", st.state == GW_CL_UP);
    head(b, "gpuwarden_cluster_live_nodes", "gauge", "Live nodes at the last heartbeat.");
    bput(b, "gpuwarden_cluster_live_nodes %" PRIu64 "\n", st.live_nodes);
}

int gw_metrics_render(const struct gw_segment *seg, char **out, size_t *len)
{
    struct buf b = {.p = malloc(16384), .cap = 16384};
    if (!b.p)
        return -ENOMEM;
    struct gw_metrics_snap s;
    gw_metrics_read(seg, &s);
    struct live l;
    live_of(seg, &l);
    struct gw_seg_stats ss;
    gw_segment_stats(seg, &ss);

    head(&b, "gpuwarden_http_requests_total", "counter",
         "HTTP responses by route and status class.");
    static const char *const classes[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int r = 0; r <= GW_ROUTE_MODELS; r++)
        for (int c = 2; c <= 5; c++)
            if (c != 3)
                bput(&b, "gpuwarden_http_requests_total{route=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                     route_names[r], classes[c], s.requests[r][c]);
    head(&b, "gpuwarden_admission_refusals_total", "counter",
         "Requests admission refused, by reason.");
    for (int i = 0; i < GW_REF_REASONS; i++)
        bput(&b, "gpuwarden_admission_refusals_total{reason=\"%s\"} %" PRIu64 "\n",
             gw_refusal_name(i), s.refusals[i]);
    head(&b, "gpuwarden_watchdog_kills_total", "counter",
         "Generations the watchdog or the output guard killed, by reason.");
    for (int r = 0; r < GW_WD_REASONS; r++)
        bput(&b, "gpuwarden_watchdog_kills_total{reason=\"%s\"} %" PRIu64 "\n",
             gw_wd_reason_name(r), gw_kills_get(seg, r));
    head(&b, "gpuwarden_generations_total", "counter", "Generations finished, by finish reason.");
    for (int r = GW_FIN_STOP; r <= GW_FIN_ERROR; r++)
        bput(&b, "gpuwarden_generations_total{finish_reason=\"%s\"} %" PRIu64 "\n",
             gw_finish_name(r), s.finish[r]);
    head(&b, "gpuwarden_generated_tokens_total", "counter", "Tokens generated.");
    bput(&b, "gpuwarden_generated_tokens_total %" PRIu64 "\n", s.counters[GW_MC_TOKENS]);
    head(&b, "gpuwarden_prompt_tokens_total", "counter", "Prompt tokens processed.");
    bput(&b, "gpuwarden_prompt_tokens_total %" PRIu64 "\n", s.counters[GW_MC_PROMPT_TOKENS]);
    head(&b, "gpuwarden_device_seconds_total", "counter", "Device time used by generations.");
    bput(&b, "gpuwarden_device_seconds_total %.6f\n", (double)s.counters[GW_MC_DEVICE_NS] / 1e9);
    head(&b, "gpuwarden_guard_redactions_total", "counter",
         "Output-guard matches sent as [REDACTED] instead of the text.");
    bput(&b, "gpuwarden_guard_redactions_total %" PRIu64 "\n", s.counters[GW_MC_GUARD_REDACTIONS]);
    head(&b, "gpuwarden_farming_escalations_total", "counter",
         "Prompt-farming ladder steps taken: from none (flagged), to refused (refused).");
    bput(&b, "gpuwarden_farming_escalations_total{level=\"flagged\"} %" PRIu64 "\n",
         s.counters[GW_MC_FARM_FLAGGED]);
    bput(&b, "gpuwarden_farming_escalations_total{level=\"refused\"} %" PRIu64 "\n",
         s.counters[GW_MC_FARM_REFUSED]);
    head(&b, "gpuwarden_requests_in_flight", "gauge",
         "Requests admitted and not finished (queued or running).");
    bput(&b, "gpuwarden_requests_in_flight %" PRIu64 "\n", l.in_flight);
    head(&b, "gpuwarden_queue_depth", "gauge", "Requests waiting for a worker.");
    bput(&b, "gpuwarden_queue_depth %" PRIu64 "\n", gw_queue_depth(seg));
    head(&b, "gpuwarden_workers", "gauge", "Worker processes by state.");
    static const char *const wstates[] = {"starting", "ready", "draining"};
    for (int i = 0; i < 3; i++)
        bput(&b, "gpuwarden_workers{state=\"%s\"} %" PRIu64 "\n", wstates[i], l.workers[i]);
    head(&b, "gpuwarden_workers_ready", "gauge", "Workers ready to take requests.");
    bput(&b, "gpuwarden_workers_ready %" PRIu64 "\n", l.workers[GW_PROC_READY]);
    head(&b, "gpuwarden_process_restarts_total", "counter",
         "Fronts and workers the master started again after they exited.");
    bput(&b, "gpuwarden_process_restarts_total{role=\"front\"} %" PRIu64 "\n",
         s.counters[GW_MC_RESTARTS_FRONT]);
    bput(&b, "gpuwarden_process_restarts_total{role=\"worker\"} %" PRIu64 "\n",
         s.counters[GW_MC_RESTARTS_WORKER]);
    head(&b, "gpuwarden_ledger_accounts", "gauge", "Ledger accounts in use.");
    bput(&b, "gpuwarden_ledger_accounts %" PRIu64 "\n", ss.accounts_live);
    head(&b, "gpuwarden_ledger_accounts_capacity", "gauge", "Ledger account entries.");
    bput(&b, "gpuwarden_ledger_accounts_capacity %" PRIu32 "\n", seg->cfg.accounts);
    head(&b, "gpuwarden_ledger_budgets", "gauge", "Budget records in use.");
    bput(&b, "gpuwarden_ledger_budgets %" PRIu64 "\n", ss.budgets_used);
    head(&b, "gpuwarden_ledger_budgets_capacity", "gauge", "Budget records.");
    bput(&b, "gpuwarden_ledger_budgets_capacity %" PRIu32 "\n", seg->cfg.budgets);
    head(&b, "gpuwarden_ledger_table_full_total", "counter",
         "New accounts refused because the ledger table had no room.");
    bput(&b, "gpuwarden_ledger_table_full_total %" PRIu64 "\n", ss.table_full);
    head(&b, "gpuwarden_slots_in_use", "gauge", "Request slots in use.");
    bput(&b, "gpuwarden_slots_in_use %" PRIu64 "\n", l.slots_used);
    head(&b, "gpuwarden_slots_capacity", "gauge", "Request slots.");
    bput(&b, "gpuwarden_slots_capacity %" PRIu32 "\n", seg->cfg.slots);
    for (int h = 0; h < GW_MH_N; h++)
        histogram(&b, &s, h);
    cluster_lines(&b, seg);
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
