/* bench_matvec.c - gw_mat_rows on SmolLM2-135M-sized Q4_1 matrices, one
 * thread, at each SIMD level this CPU has.
 *
 *   bench_matvec [ms-per-case] [runs]      (defaults 200 and 5)
 *
 * Matrices: 576 columns x 1536 rows (ffn_gate, ffn_up) and 1536 x 576
 * (ffn_down), random Q4_1 blocks, which stay in the cache from one call to
 * the next; then 576 x 262144 (90 MiB), which does not: its weights stream
 * from memory as a decode step's ~100 MB do. nb = 1, 2, 4, 8, 16
 * activation rows (decode rows of nb sequences in one step; the streaming
 * matrix stops at 8).
 *
 * The matrices are packed (packed.c) as the engine packs them. Each case
 * prints the time of one call over the whole matrix ("ns/call", the
 * median and the fastest of the runs), the median per activation row and
 * per block product (one 32-element block of one weight row against one
 * activation row), and the rate at which gw_mat_rows reads the weights
 * (GB/s, from the median). Levels: portable (the cached matrices only),
 * avx2 (AVX-512 without VNNI runs it too) and avx512 (VNNI, where the CPU
 * has it). Not a test: timings are never asserted. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

struct kernels {
    const char *name;
    int level, vnni;
};

/* One call over the matrix. */
static void run_once(const struct kernels *k, const gw_mat *W, const gw_q8 *xq, int nb, float *out)
{
    size_t xs = (size_t)W->cols / 32;
    gw_mat_rows_at(k->level, k->vnni, W, xq, xs, NULL, 0, nb, out, (size_t)W->rows, 0, W->rows);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ns per call: median and minimum over runs of about ms milliseconds. */
static void time_case(const struct kernels *k, const gw_mat *W, const gw_q8 *xq, int nb, float *out,
                      int ms, int runs, double *median, double *best)
{
    uint64_t t0 = now_ns();
    long calls = 0;
    while (now_ns() - t0 < 20000000ull) /* warm-up, and a calibration */
        run_once(k, W, xq, nb, out), calls++;
    long per_run = calls * ms / 20 > 0 ? calls * ms / 20 : 1;
    uint64_t t[32];
    for (int i = 0; i < runs; i++) {
        uint64_t a = now_ns();
        for (long c = 0; c < per_run; c++)
            run_once(k, W, xq, nb, out);
        t[i] = now_ns() - a;
    }
    qsort(t, (size_t)runs, sizeof t[0], cmp_u64);
    *median = (double)t[runs / 2] / (double)per_run;
    *best = (double)t[0] / (double)per_run;
}

int main(int argc, char **argv)
{
    int ms = argc > 1 ? atoi(argv[1]) : 200, runs = argc > 2 ? atoi(argv[2]) : 5;
    if (ms <= 0 || runs <= 0 || runs > 32) {
        fprintf(stderr, "usage: bench_matvec [ms-per-case > 0] [runs 1..32]\n");
        return 100;
    }
    int vnni, max = gw_simd_cpu_max(&vnni);
    struct kernels all[] = {
        {"portable", GW_SIMD_PORTABLE, 0},
        {"avx2", GW_SIMD_AVX2, 0},
        {"avx512", GW_SIMD_AVX512, 1},
    };
    const int nbs[] = {1, 2, 4, 8, 16};
    const struct {
        int cols, rows;
        const char *name;
        int max_nb;
    } shapes[] = {{576, 1536, "576 cols x 1536 rows (ffn_gate, ffn_up)", 16},
                  {1536, 576, "1536 cols x 576 rows (ffn_down)", 16},
                  {576, 262144, "576 cols x 262144 rows (90 MiB: streams from memory)", 8}};
    printf("bench_matvec: Q4_1, one thread, %d runs of ~%d ms per case; CPU level %d%s\n", runs, ms,
           max, vnni ? " with VNNI" : "");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        gw_mat W = {.type = GW_T_Q4_1, .rows = shapes[s].rows, .cols = shapes[s].cols};
        W.row_bytes = (size_t)W.cols / 32 * sizeof(gw_blk_q4_1);
        gw_blk_q4_1 *blk = malloc(W.row_bytes * (size_t)W.rows);
        size_t nblk = (size_t)W.rows * (size_t)W.cols / 32;
        gw_q8 *xq = malloc(sizeof(gw_q8) * (size_t)W.cols / 32 * 16);
        float *x = malloc(sizeof(float) * (size_t)W.cols * 16);
        float *out = malloc(sizeof(float) * (size_t)W.rows * 16);
        if (!blk || !xq || !x || !out) {
            fprintf(stderr, "bench_matvec: out of memory\n");
            return 111;
        }
        for (size_t i = 0; i < nblk; i++) {
            blk[i].d = gw_f32_to_fp16((float)(next() % 1000 + 1) * 1e-5f);
            blk[i].m = gw_f32_to_fp16(-(float)(next() % 1000) * 1e-4f);
            for (int j = 0; j < 16; j++)
                blk[i].qs[j] = (uint8_t)next();
        }
        W.data = (const uint8_t *)blk;
        if (gw_mat_pack(&W) != 0) {
            fprintf(stderr, "bench_matvec: out of memory\n");
            return 111;
        }
        for (int i = 0; i < W.cols * 16; i++)
            x[i] = (float)((int)(next() % 2001) - 1000) / 250.0f;
        gw_quantize_q8(x, xq, W.cols * 16);
        printf("\n%s\n%-9s %3s %14s %12s %10s %12s %6s\n", shapes[s].name, "kernels", "nb",
               "ns/call", "(fastest)", "ns/row", "ns/block", "GB/s");
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
            if (all[k].level > max || (all[k].vnni && !vnni) ||
                (all[k].level == GW_SIMD_PORTABLE && shapes[s].max_nb < 16))
                continue;
            for (size_t i = 0; i < sizeof nbs / sizeof nbs[0]; i++) {
                if (nbs[i] > shapes[s].max_nb)
                    break;
                double med, best;
                time_case(&all[k], &W, xq, nbs[i], out, ms, runs, &med, &best);
                printf("%-9s %3d %14.0f %12.0f %10.0f %12.3f %6.1f\n", all[k].name, nbs[i], med,
                       best, med / nbs[i], med / ((double)nblk * nbs[i]),
                       (double)(W.row_bytes * (size_t)W.rows) / med);
                fflush(stdout);
            }
        }
        gw_mat_pack_free(&W);
        free(blk);
        free(xq);
        free(x);
        free(out);
    }
    return 0;
}
