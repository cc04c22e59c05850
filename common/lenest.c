/* lenest.c - learned completion lengths, per tenant, in the segment.
 *
 * The master's watchdog records how long each tenant's generations ran and
 * kills one that runs far past the tenant's 99th percentile (docs/CONFIG.md,
 * "Anomalous length"). The histograms live in the segment, next to the
 * budget records (one per tenant account), so they survive a master restart
 * and any process may read them.
 *
 * No lock: a sample is two fetch_adds (seen, then its bucket); the decay
 * halves each bucket by CAS. Who repairs what when a process dies here:
 * nobody, on purpose. A writer killed between its two fetch_adds loses its
 * one sample; one killed in the middle of a halving leaves the buckets
 * after it unhalved, which weights older lengths a little more until the
 * next halvings wash it out. The histogram is an estimate used with a
 * factor (4x the p99 by default), so neither changes a decision that
 * matters, and nothing else depends on its words.
 */
#include "seg_internal.h"

#include <errno.h>

#define DECAY_FIRST 2048u /* halve before sample 2049, */
#define DECAY_EVERY 1024u /* then every 1024 samples */

/* Bucket b holds lengths in (edge(b-1), edge(b)], edge(b) = 2^(b/4)
 * rounded up: 1, 2, 2, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 10, ... */
static uint64_t edge(int b)
{
    static const double step[4] = {1.0, 1.189207115, 1.414213562, 1.681792831};
    double v = (double)(1ull << (b / 4)) * step[b % 4];
    uint64_t e = (uint64_t)v;
    return (double)e < v ? e + 1 : e;
}

static int bucket_of(uint64_t tokens)
{
    int b = 0;
    while (b < GW_LENEST_BUCKETS - 1 && edge(b) < tokens)
        b++;
    return b;
}

/* 1 when the sample after `seen` earlier ones comes after a halving. */
static int decay_due(uint64_t seen)
{
    return seen >= DECAY_FIRST && (seen - DECAY_FIRST) % DECAY_EVERY == 0;
}

void gw_lenest_add(struct gw_lenest *e, uint64_t tokens)
{
    if (decay_due(e->seen)) {
        e->n = 0;
        for (int b = 0; b < GW_LENEST_BUCKETS; b++)
            e->n += e->bucket[b] /= 2;
    }
    e->bucket[bucket_of(tokens)]++;
    e->n++;
    e->seen++;
}

uint64_t gw_lenest_quantile(const struct gw_lenest *e, double q)
{
    if (e->n == 0)
        return 0;
    double want = q * (double)e->n;
    uint64_t cum = 0;
    for (int b = 0; b < GW_LENEST_BUCKETS; b++) {
        cum += e->bucket[b];
        if ((double)cum >= want)
            return edge(b);
    }
    return edge(GW_LENEST_BUCKETS - 1);
}

uint64_t gw_lenest_limit(const struct gw_lenest *e, const struct gw_wd_limits *l)
{
    if (!l->len_floor)
        return 0;
    if (!e || e->seen < l->len_warmup || !l->len_factor)
        return l->len_floor;
    uint64_t learned = (uint64_t)l->len_factor * gw_lenest_quantile(e, 0.99);
    return learned > l->len_floor ? learned : l->len_floor;
}

/* The tenant's record: the one at its budget record's index. */
static struct gw_lenest_rec *rec_of(const struct gw_segment *seg, struct gw_acct a, int *rc)
{
    struct gw_budget *b = gw__acct_budget(seg, a);
    if (!b) {
        *rc = gw__acct_ok(seg, a) ? -ENOENT : GW_ESTALE;
        return NULL;
    }
    size_t i = (size_t)((uint8_t *)b - (uint8_t *)seg->budgets) / seg->budget_stride;
    *rc = 0;
    return &seg->lenest[i];
}

int gw_lenest_record(struct gw_segment *seg, struct gw_acct tenant, uint64_t tokens)
{
    int rc;
    struct gw_lenest_rec *r = rec_of(seg, tenant, &rc);
    if (!r)
        return rc;
    /* relaxed: seen hands each sample a distinct number, which decides
     * who halves; it publishes nothing (the buckets are read on their own). */
    uint64_t seen = atomic_fetch_add_explicit(&r->seen, 1, memory_order_relaxed);
    if (decay_due(seen)) {
        for (int b = 0; b < GW_LENEST_BUCKETS; b++) {
            /* relaxed: each bucket is a counter on its own; the CAS keeps an
             * add that lands meanwhile (it is halved, or it comes after). */
            uint32_t v = atomic_load_explicit(&r->bucket[b], memory_order_relaxed);
            while (v != 0 && !atomic_compare_exchange_weak_explicit(&r->bucket[b], &v, v / 2,
                                                                    memory_order_relaxed,
                                                                    memory_order_relaxed))
                ;
        }
    }
    /* relaxed: a counter; see above. */
    atomic_fetch_add_explicit(&r->bucket[bucket_of(tokens)], 1, memory_order_relaxed);
    return 0;
}

int gw_lenest_get(const struct gw_segment *seg, struct gw_acct tenant, struct gw_lenest *out)
{
    int rc;
    struct gw_lenest_rec *r = rec_of(seg, tenant, &rc);
    if (!r)
        return rc;
    /* relaxed: an estimate; a snapshot that mixes words from before and
     * after a concurrent sample or halving is as good as either. n is
     * counted from the buckets as read, so the quantile is consistent with
     * them. */
    out->seen = atomic_load_explicit(&r->seen, memory_order_relaxed);
    out->n = 0;
    for (int b = 0; b < GW_LENEST_BUCKETS; b++) {
        out->bucket[b] = atomic_load_explicit(&r->bucket[b], memory_order_relaxed);
        out->n += out->bucket[b];
    }
    return 0;
}
