/* bench_step.c - where a batched decode step's time goes, by operation,
 * for B = 1, 2, 4, 8 (and 16) sequences in one step.
 *
 *   bench_step [--prefill L] [--idle MS] [--pin] MODEL.gguf [threads]
 *              [steps] [B...]       (defaults 2, 64, 1 2 4 8)
 *
 * For each B: a context of B sequences, each prefilled with the same
 * 64-token prompt (token 504), then `steps` decode steps of B rows (every
 * sequence feeds back its greedy token), as the worker runs them. Each
 * step's wall time is split by the engine's profiling counters
 * (gw__ctx_prof: matrix products by matrix, attention, norms, activation
 * quantization, ...; "pool wait" is the part of those the calling thread
 * spent waiting for the other threads after its own share), plus the
 * greedy argmax over the vocabulary that sampling does. Printed: ms per
 * step and per operation, and the step's cost against B = 1's.
 *
 * --prefill L: each step is instead B prompt chunks of L tokens (each
 * sequence feeds L more prompt tokens at positions 64..64+L-1, the same
 * ones every step), as the worker runs prompts that arrive together.
 *
 * --idle MS: sleep MS milliseconds before each step, as a worker does
 * between the requests of a quiet node (the step is timed from its
 * start). --pin: the engine's threads pinned to the first `threads` CPUs
 * the process may use, as the worker's model.pin_threads does.
 * Not a test: timings are never asserted. */
#include "ctx.h"

#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <time.h>

static const char *const op_name[GW_PROF_N] = {
    [GW_PROF_EMBED] = "embedding, rope angles",
    [GW_PROF_NORM] = "rmsnorm",
    [GW_PROF_QUANT] = "quantize activations",
    [GW_PROF_QKV] = "matmul q,k,v",
    [GW_PROF_ROPE] = "rope, kv store",
    [GW_PROF_ATTN] = "attention",
    [GW_PROF_WO] = "matmul attn_output",
    [GW_PROF_GATE_UP] = "ffn_gate,up+swiglu+quant",
    [GW_PROF_DOWN] = "matmul ffn_down",
    [GW_PROF_RESID] = "residual adds",
    [GW_PROF_LOGITS] = "matmul output (lm_head)",
    [GW_PROF_WAIT] = "(of these: pool wait)",
};

static int prefill_len;           /* --prefill L, else 0 (decode steps) */
static int idle_ms;               /* --idle MS */
static int pin_cpus[256], pinned; /* --pin: the CPU of each thread */

/* One B: returns the mean ns of a step (forward + argmax), fills prof
 * (per step, ns) and *argmax_ns. */
static double run_b(const gw_model *m, int threads, int steps, int B, double *prof,
                    double *argmax_ns)
{
    gw_ctx_opts o = {.n_ctx = 512,
                     .n_threads = threads,
                     .max_seqs = B,
                     .n_batch = 64,
                     .cpus = pinned ? pin_cpus : NULL};
    gw_ctx *c;
    if (gw_ctx_new(m, &o, &c) < 0) {
        fprintf(stderr, "bench_step: context of %d sequences failed\n", B);
        exit(1);
    }
    enum { P = 64 };
    int32_t prompt[P], last[GW_MAX_SEQS];
    int seq[GW_MAX_SEQS];
    for (int i = 0; i < P; i++)
        prompt[i] = 504;
    int vocab = gw_model_cfg(m)->vocab;
    for (int b = 0; b < B; b++) {
        seq[b] = gw_seq_open(c, 512);
        gw_batch_item it = {.seq = seq[b], .tokens = prompt, .n = P, .pos = 0, .logits = 1};
        if (seq[b] < 0 || gw_ctx_eval_batch(c, &it, 1) < 0) {
            fprintf(stderr, "bench_step: prefill failed\n");
            exit(1);
        }
        last[b] = gw_argmax(gw_ctx_batch_logits(c, 0), vocab);
    }
    uint64_t counters[GW_PROF_N] = {0}, am = 0, total = 0;
    gw_batch_item items[GW_MAX_SEQS];
    for (int s = -4; s < steps; s++) { /* 4 steps of warm-up */
        if (s == 0)
            gw__ctx_prof(c, counters);
        if (idle_ms)
            nanosleep(&(struct timespec){idle_ms / 1000, idle_ms % 1000 * 1000000L}, NULL);
        uint64_t t0 = gw_mono_ns();
        for (int b = 0; b < B; b++)
            if (prefill_len)
                items[b] = (gw_batch_item){
                    .seq = seq[b], .tokens = prompt, .n = prefill_len, .pos = P, .logits = 1};
            else
                items[b] = (gw_batch_item){
                    .seq = seq[b], .tokens = &last[b], .n = 1, .pos = P + 4 + s, .logits = 1};
        if (gw_ctx_eval_batch(c, items, B) < 0) {
            fprintf(stderr, "bench_step: step failed\n");
            exit(1);
        }
        uint64_t t1 = gw_mono_ns();
        for (int b = 0; b < B; b++)
            last[b] = gw_argmax(gw_ctx_batch_logits(c, b), vocab);
        uint64_t t2 = gw_mono_ns();
        if (s >= 0)
            am += t2 - t1, total += t2 - t0;
    }
    gw__ctx_prof(c, NULL);
    for (int i = 0; i < GW_PROF_N; i++)
        prof[i] = (double)counters[i] / steps;
    *argmax_ns = (double)am / steps;
    gw_ctx_free(c);
    return (double)total / steps;
}

/* --pin: the first `threads` CPUs this process may use; 0 when fewer. */
static int plan_pins(int threads)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 0;
    for (int c = 0; c < CPU_SETSIZE && n < threads && n < 256; c++)
        if (CPU_ISSET(c, &set))
            pin_cpus[n++] = c;
    return n == threads;
}

int main(int argc, char **argv)
{
    int pin = 0;
    for (;;) {
        if (argc > 2 && strcmp(argv[1], "--prefill") == 0)
            prefill_len = atoi(argv[2]), argv += 2, argc -= 2;
        else if (argc > 2 && strcmp(argv[1], "--idle") == 0)
            idle_ms = atoi(argv[2]), argv += 2, argc -= 2;
        else if (argc > 1 && strcmp(argv[1], "--pin") == 0)
            pin = 1, argv++, argc--;
        else
            break;
    }
    if (argc < 2 || prefill_len < 0 || prefill_len > 64 || idle_ms < 0 || idle_ms > 10000) {
        fprintf(stderr, "usage: bench_step [--prefill L (1-64)] [--idle MS (0-10000)] [--pin] "
                        "MODEL.gguf [threads] [steps] [B...]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 2, steps = argc > 3 ? atoi(argv[3]) : 64;
    if (pin && !(pinned = plan_pins(threads))) {
        fprintf(stderr, "bench_step: --pin: fewer CPUs than %d threads\n", threads);
        return 2;
    }
    int bs[16] = {1, 2, 4, 8}, nbs = 4;
    if (argc > 4) {
        nbs = 0;
        for (int i = 4; i < argc && nbs < 16; i++)
            bs[nbs++] = atoi(argv[i]);
    }
    char err[512];
    gw_model *m;
    if (gw_model_load(argv[1], &m, err, sizeof err) < 0) {
        fprintf(stderr, "bench_step: %s\n", err);
        return 1;
    }
    printf("threads %d, %d steps per B, SIMD level %d; ms per step", threads, steps, gw_simd_get());
    if (prefill_len)
        printf(" of B prompt chunks of %d tokens", prefill_len);
    if (idle_ms)
        printf(", each after %d ms idle", idle_ms);
    printf("%s\n", pinned ? ", threads pinned" : "");
    double prof[16][GW_PROF_N], am[16], tot[16];
    for (int i = 0; i < nbs; i++)
        tot[i] = run_b(m, threads, steps, bs[i], prof[i], &am[i]);
    printf("%-26s", "operation");
    for (int i = 0; i < nbs; i++)
        printf(" %9s%-3d", "B=", bs[i]);
    printf("\n");
    for (int op = 0; op < GW_PROF_N; op++) {
        printf("%-26s", op_name[op]);
        for (int i = 0; i < nbs; i++)
            printf(" %12.3f", prof[i][op] / 1e6);
        printf("\n");
    }
    printf("%-26s", "argmax (sampling)");
    for (int i = 0; i < nbs; i++)
        printf(" %12.3f", am[i] / 1e6);
    printf("\n%-26s", "step total");
    for (int i = 0; i < nbs; i++)
        printf(" %12.3f", tot[i] / 1e6);
    printf("\n%-26s", "x B=1 step");
    for (int i = 0; i < nbs; i++)
        printf(" %12.2f", tot[i] / tot[0]);
    printf("\n%-26s", "tok/s");
    for (int i = 0; i < nbs; i++)
        printf(" %12.1f", bs[i] * (prefill_len ? prefill_len : 1) * 1e9 / tot[i]);
    printf("\n");
    gw_model_free(m);
    return 0;
}
