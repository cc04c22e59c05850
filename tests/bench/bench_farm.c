/* bench_farm.c - what the prompt-farming step costs a front per request
 * (docs/BENCHMARKS.md, "Prompt farming"): gw_farm_text + gw_farm_simhash +
 * gw_farm_observe on a segment file, for prompts of several sizes, with a
 * full 64-entry window. Built, never run as a test.
 *
 *   bench_farm [iterations]      (default 20000 per size)
 */
#include "gw_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A prompt of about `bytes` bytes of varied words. */
static void make_prompt(char *buf, size_t bytes, unsigned seed)
{
    static const char *const w[] = {"the",    "quick",  "farm",   "prompt", "delta", "river",
                                    "seven",  "window", "stone",  "orbit",  "lemon", "cable",
                                    "honest", "market", "violet", "engine"};
    size_t at = 0;
    while (at + 8 < bytes) {
        seed = seed * 1103515245u + 12345u;
        at += (size_t)snprintf(buf + at, bytes - at, "%s ", w[(seed >> 16) % 16]);
    }
    buf[at] = '\0';
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20000;
    struct gw_seg_config c = {.accounts = 64,
                              .budgets = 4,
                              .slots = 1,
                              .queue = 2,
                              .lanes = 2,
                              .prompt_bytes = 256,
                              .output_bytes = 256};
    char path[64], err[256];
    snprintf(path, sizeof(path), "/tmp/bench-farm-%d", (int)getpid());
    unlink(path);
    struct gw_segment seg;
    if (gw_segment_open(&seg, path, &c, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct gw_acct a;
    gw_ledger_get(&seg, GW_KIND_TENANT, "bench", 5, 1, gw_now_us(), &a);
    struct gw_farm_limits l = {.enabled = 1,
                               .window = 64,
                               .min_samples = 16,
                               .near_bits = 18,
                               .sweep_cv_pct = 50,
                               .sweep_single_pct = 90,
                               .flag_score = 100,
                               .throttle_after = 100000,
                               .refuse_after = 100000,
                               .throttle = {.limit = 1, .period_us = 1000000},
                               .refuse_ttl_s = 600};
    static const size_t sizes[] = {64, 1024, 16384};
    uint64_t *ns = malloc(sizeof(uint64_t) * (size_t)iters);
    printf("%-8s %10s %10s %10s   (us per request, window 64, %d requests)\n", "bytes", "p50",
           "p99", "max", iters);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        char *p = malloc(sizes[s] + 1);
        for (int i = 0; i < iters; i++) {
            make_prompt(p, sizes[s], (unsigned)i);
            uint64_t t0 = gw_mono_ns();
            const char *t;
            size_t n;
            int single;
            gw_farm_text(p, strlen(p), 0, NULL, &t, &n, &single);
            struct gw_farm_verdict v;
            gw_farm_observe(&seg, a, gw_farm_simhash(t, n), single, gw_now_us(), &l, &v);
            ns[i] = gw_mono_ns() - t0;
        }
        qsort(ns, (size_t)iters, sizeof(ns[0]), cmp_u64);
        printf("%-8zu %10.2f %10.2f %10.2f\n", sizes[s], (double)ns[iters / 2] / 1e3,
               (double)ns[(size_t)iters * 99 / 100] / 1e3, (double)ns[iters - 1] / 1e3);
        free(p);
    }
    free(ns);
    gw_segment_close(&seg);
    unlink(path);
    return 0;
}
