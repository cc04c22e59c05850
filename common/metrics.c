/* metrics.c - the node's Prometheus counters in the shared segment.
 *
 * Every front, worker and the master adds to the same words, so any front's
 * GET /metrics reads the node's totals. Each word is monotonic and changed
 * only by a relaxed fetch_add: no reader orders anything else by a counter
 * (each is read on its own for display), and an atomic add never loses an
 * increment whichever order it lands in. A process killed at any
 * instruction loses at most the one increment it had not made; there is
 * nothing half-written to repair.
 */
#include "seg_internal.h"

#include <string.h>

/* Seconds: 1 ms .. 2 min, roughly x2.5 a step; fits TPOT (ms) and e2e (s). */
static const uint64_t bucket_ns[GW_M_BUCKETS] = {
    1000000ull,     2500000ull,     5000000ull,     10000000ull,     25000000ull,   50000000ull,
    100000000ull,   250000000ull,   500000000ull,   1000000000ull,   2500000000ull, 5000000000ull,
    10000000000ull, 30000000000ull, 60000000000ull, 120000000000ull,
};

static const char *const refusal_names[GW_REF_REASONS] = {
    "ip_rate",   "tenant_rate", "budget",   "concurrency", "banned",        "auth",
    "forbidden", "overloaded",  "draining", "farming",     "output_tokens",
};

_Static_assert(GW_REF_REASONS <= 16, "refusal counters in the area");
_Static_assert(GW_MC_N <= 8, "plain counters in the area");

const char *gw_refusal_name(int reason)
{
    return reason >= 0 && reason < GW_REF_REASONS ? refusal_names[reason] : "unknown";
}

uint64_t gw_metrics_bucket_ns(int i)
{
    return i >= 0 && i < GW_M_BUCKETS ? bucket_ns[i] : UINT64_MAX;
}

static void add(_Atomic uint64_t *w, uint64_t n)
{
    /* relaxed: a statistic read on its own; the add itself is atomic, so
     * concurrent adders never lose a count (see the file comment). */
    atomic_fetch_add_explicit(w, n, memory_order_relaxed);
}

void gw_metrics_request(struct gw_segment *seg, int route, int status)
{
    if (!seg || !seg->metrics || route < 0 || route >= GW_M_ROUTES || status < 100 || status > 599)
        return;
    add(&seg->metrics->requests[route][status / 100], 1);
}

void gw_metrics_refusal(struct gw_segment *seg, int reason)
{
    if (seg && seg->metrics && reason >= 0 && reason < GW_REF_REASONS)
        add(&seg->metrics->refusals[reason], 1);
}

void gw_metrics_finish(struct gw_segment *seg, int finish_reason)
{
    if (seg && seg->metrics && finish_reason > 0 && finish_reason < 8)
        add(&seg->metrics->finish[finish_reason], 1);
}

void gw_metrics_add(struct gw_segment *seg, int counter, uint64_t n)
{
    if (seg && seg->metrics && counter >= 0 && counter < GW_MC_N && n)
        add(&seg->metrics->counters[counter], n);
}

void gw_metrics_observe(struct gw_segment *seg, int hist, uint64_t ns)
{
    if (!seg || !seg->metrics || hist < 0 || hist >= GW_MH_N)
        return;
    int b = 0;
    while (b < GW_M_BUCKETS && ns > bucket_ns[b])
        b++;
    struct gw_hist_area *h = &seg->metrics->hist[hist];
    add(&h->bucket[b], 1);
    add(&h->sum_ns, ns);
}

static uint64_t get(const _Atomic uint64_t *w)
{
    /* relaxed: each counter is read on its own for display. */
    return atomic_load_explicit(w, memory_order_relaxed);
}

void gw_metrics_read(const struct gw_segment *seg, struct gw_metrics_snap *out)
{
    memset(out, 0, sizeof(*out));
    if (!seg || !seg->metrics)
        return;
    const struct gw_metrics_area *m = seg->metrics;
    for (int r = 0; r < GW_M_ROUTES; r++)
        for (int c = 1; c < 6; c++)
            out->requests[r][c] = get(&m->requests[r][c]);
    for (int i = 0; i < GW_REF_REASONS; i++)
        out->refusals[i] = get(&m->refusals[i]);
    for (int i = 0; i < 8; i++)
        out->finish[i] = get(&m->finish[i]);
    for (int i = 0; i < GW_MC_N; i++)
        out->counters[i] = get(&m->counters[i]);
    for (int h = 0; h < GW_MH_N; h++) {
        /* _count is the sum of the buckets as read here, so the +Inf
         * bucket equals it in every answer even while others add. */
        for (int b = 0; b <= GW_M_BUCKETS; b++) {
            out->hist[h].bucket[b] = get(&m->hist[h].bucket[b]);
            out->hist[h].count += out->hist[h].bucket[b];
        }
        out->hist[h].sum_ns = get(&m->hist[h].sum_ns);
    }
}
