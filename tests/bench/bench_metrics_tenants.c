/* bench_metrics_tenants.c - what the per-tenant /metrics series cost a
 * scrape: a segment file holding T tenants (each with counters in its
 * record and device time charged), gw_metrics_render_tenants with the
 * default top 20 by GPU time, timed over R renders (docs/BENCHMARKS.md,
 * "Per-tenant metrics"). The answer's size does not grow with T (21 label
 * values); the walk over the budget records does.
 *
 *     bench_metrics_tenants [TENANTS [RENDERS]]   (default 4096 100) */
#include "gw_supervisor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint32_t tenants = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 4096;
    int renders = argc > 2 ? atoi(argv[2]) : 100;
    if (tenants < 1 || tenants > 1000000 || renders < 1) {
        fprintf(stderr, "usage: bench_metrics_tenants [TENANTS [RENDERS]]\n");
        return 100;
    }
    uint32_t acc = 64;
    while (acc < tenants * 4)
        acc *= 2;
    struct gw_seg_config c = {.accounts = acc,
                              .budgets = tenants + 1,
                              .slots = 4,
                              .queue = 4,
                              .lanes = 8,
                              .prompt_bytes = 64,
                              .output_bytes = 64};
    char path[128], err[256];
    snprintf(path, sizeof(path), "/tmp/gw-bench-mt-%d", (int)getpid());
    unlink(path);
    struct gw_segment seg;
    if (gw_segment_open(&seg, path, &c, err, sizeof(err)) != 0 || gw_lane_acquire(&seg) != 0) {
        fprintf(stderr, "segment: %s\n", err);
        return 111;
    }
    uint64_t t0 = gw_now_us();
    struct gw_acct g;
    gw_ledger_get(&seg, GW_KIND_GLOBAL, "*", 1, 1, t0, &g);
    const struct gw_budget_rate rate = {.amount_us = 1000000000000ull, .period_us = 3600000000ull};
    for (uint32_t i = 0; i < tenants; i++) {
        char id[32];
        snprintf(id, sizeof(id), "tenant-%06u", i);
        struct gw_acct a;
        if (gw_ledger_get(&seg, GW_KIND_TENANT, id, strlen(id), 1, t0, &a) != 0) {
            fprintf(stderr, "ledger full at %u tenants\n", i);
            return 111;
        }
        gw_tstat_admitted(&seg, a);
        gw_tstat_refusal(&seg, a, GW_REF_TENANT_RATE);
        gw_tstat_tokens(&seg, a, 100 + i);
        struct gw_slot_ref r;
        uint64_t retry;
        if (gw_slot_claim(&seg, &r) != 0 || gw_slot_set_accounts(&seg, r, a, g, 0) != 0 ||
            gw_budget_reserve(&seg, r, 1000 + i, &rate, &rate, t0, &retry) != 0 ||
            gw_slot_move(&seg, r, GW_SLOT_ADMITTED, GW_SLOT_QUEUED) != 0 ||
            gw_slot_move(&seg, r, GW_SLOT_QUEUED, GW_SLOT_RUNNING) != 0 ||
            gw_budget_charge(&seg, r, 1000 + i, t0) != 0 ||
            gw_slot_move(&seg, r, GW_SLOT_RUNNING, GW_SLOT_DONE) != 0 ||
            gw_budget_settle(&seg, r) != 1 || gw_slot_release(&seg, r) != 0) {
            fprintf(stderr, "charging tenant %u failed\n", i);
            return 111;
        }
    }
    struct gw_metrics_cfg mc = {.tenants_top = 20, .tenants_by = GW_MT_BY_GPU};
    double *ms = calloc((size_t)renders, sizeof(*ms));
    size_t bytes = 0;
    for (int k = 0; k < renders; k++) {
        char *text;
        size_t len;
        double s = now_s();
        if (gw_metrics_render_tenants(&seg, &mc, &text, &len) != 0)
            return 111;
        ms[k] = (now_s() - s) * 1e3;
        bytes = len;
        free(text);
    }
    for (int i = 1; i < renders; i++) /* insertion sort: renders is small */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            double t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    printf("tenants %u, renders %d: p50 %.3f ms, p99 %.3f ms, max %.3f ms; answer %zu bytes\n",
           tenants, renders, ms[renders / 2], ms[(renders * 99) / 100], ms[renders - 1], bytes);
    free(ms);
    gw_segment_close(&seg);
    unlink(path);
    return 0;
}
