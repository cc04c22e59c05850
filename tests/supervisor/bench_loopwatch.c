/* bench_loopwatch.c - what the repetition detectors cost per token: the
 * worker's side (gw_loopwatch_push: the exact and near statistics and the
 * top-1 window; gw_loopwatch_stat and gw_wd_rep_word: the published word)
 * and the master's judgement of one word (gw_wd_judge), on three streams:
 * distinct tokens (no cycle: a lookup per token), a 100-token loop (one
 * comparison per token) and prose-like tokens over a small vocabulary that
 * keep offering and dropping short cycles (the worst case: the n-gram
 * check and the trace back). The judge is timed twice: for a plain prompt
 * and for one that asked for 30 repetitions (the allowance's extra
 * comparisons). Last, what the front's count of asked repetitions
 * (gw_asked_count, once per request at admission) costs per prompt byte.
 * Built, never run as a test:
 *
 *     build/tests/supervisor/bench_loopwatch [tokens]
 */
#include "gw_supervisor.h"
#include "gw_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void stream(int kind, int32_t *t, size_t n)
{
    uint64_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        if (kind == 0)
            t[i] = (int32_t)((x >> 33) % 49152);
        else if (kind == 1)
            t[i] = (int32_t)(1000 + i % 100);
        else /* copy from a few tokens back now and then: cycles start and break */
            t[i] = (i > 8 && (x >> 60) < 6) ? t[i - 1 - (x >> 40) % 8] : (int32_t)((x >> 33) % 40);
    }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000000u;
    int32_t *t = malloc(n * sizeof(*t));
    uint8_t *digits = calloc(49152, 1);
    gw_loopwatch *w = malloc(sizeof(*w));
    if (!t || !digits || !w)
        return 111;
    for (int d = 0; d < 10; d++)
        digits[30 + d] = 1; /* ten digit tokens, some of them in the streams */
    struct gw_wd_limits l = {.rep_period = 128,
                             .rep_count = 3,
                             .rep_tokens = 40,
                             .rep_match = 1u << 30, /* judged, never killed */
                             .near_period = 128,
                             .near_match = 1u << 30,
                             .col_top1 = 95,
                             .col_match = 1u << 30,
                             .div_period = 4,
                             .div_tokens = 1u << 30,
                             .rep_asked_max = 100};
    static const char *const names[] = {"distinct tokens", "100-token loop", "prose-like"};
    printf("%-16s %12s %12s %14s %8s\n", "stream", "worker ns", "judge ns", "judge asked ns",
           "kills");
    for (int kind = 0; kind < 3; kind++) {
        stream(kind, t, n);
        gw_loopwatch_init(w, GW_REPEAT_MAX_PERIOD, digits);
        uint64_t sink = 0, t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            gw_loopwatch_push(w, t[i], 0.5f);
            gw_loop_stat ls;
            gw_loopwatch_stat(w, &ls);
            sink +=
                gw_wd_rep_word((uint32_t)ls.period, ls.count, ls.run, ls.near, (uint32_t)ls.top1);
        }
        uint64_t t1 = now_ns();
        /* the master: one word per scan; judged here once per token */
        gw_loopwatch_init(w, GW_REPEAT_MAX_PERIOD, digits);
        uint64_t *words = malloc(n * sizeof(*words)), rep_max = 0;
        for (size_t i = 0; i < n; i++) {
            gw_loopwatch_push(w, t[i], 0.5f);
            gw_loop_stat ls;
            gw_loopwatch_stat(w, &ls);
            words[i] =
                gw_wd_rep_word((uint32_t)ls.period, ls.count, ls.run, ls.near, (uint32_t)ls.top1);
        }
        int kills = 0;
        uint64_t t2 = now_ns();
        for (size_t i = 0; i < n; i++) {
            rep_max = gw_wd_rep_fold(rep_max, words[i]);
            struct gw_wd_sample s = {.tokens = i + 1, .rep = words[i], .rep_max = rep_max};
            kills += gw_wd_judge(&l, &s) >= 0;
        }
        uint64_t t3 = now_ns();
        rep_max = 0;
        for (size_t i = 0; i < n; i++) {
            rep_max = gw_wd_rep_fold(rep_max, words[i]);
            struct gw_wd_sample s = {
                .tokens = i + 1, .rep = words[i], .rep_max = rep_max, .asked = 30};
            kills += gw_wd_judge(&l, &s) >= 0;
        }
        uint64_t t4 = now_ns();
        free(words);
        printf("%-16s %12.1f %12.1f %14.1f %8d%s\n", names[kind], (double)(t1 - t0) / (double)n,
               (double)(t3 - t2) / (double)n, (double)(t4 - t3) / (double)n, kills,
               sink == 1 ? " " : "");
    }
    /* the front's count: a 4 KiB message of ordinary words, a count at its end */
    static const char words[] = "please write the following sentence for me ";
    char msg[4096 + 64];
    size_t at = 0;
    while (at + sizeof(words) < 4096)
        at += (size_t)snprintf(msg + at, sizeof(msg) - at, "%s", words);
    at += (size_t)snprintf(msg + at, sizeof(msg) - at, "30 times");
    int reps = 2000;
    uint64_t t5 = now_ns(), got = 0;
    for (int i = 0; i < reps; i++)
        got += gw_asked_count(msg, at);
    uint64_t t6 = now_ns();
    printf("gw_asked_count: %.2f ns per prompt byte (%zu bytes, count %llu)\n",
           (double)(t6 - t5) / reps / (double)at, at, (unsigned long long)(got / (uint64_t)reps));
    free(w);
    free(digits);
    free(t);
    return 0;
}
