/* expf_all.c - level 2's expf (matvec_avx512.c, glibc's algorithm 16
 * lanes at a time) against the C library's expf on every one of the 2^32
 * floats, and what each costs a value.
 *
 *   expf_all [STRIDE]   (default 1: every float; STRIDE k checks every
 *                        k-th bit pattern)
 *
 * Prints the values checked, the ones whose bits differ (the first few
 * shown) and ns per value of each; exits 1 on any difference, 77 on a CPU
 * without level 2. Not a ctest test (about a minute for all floats):
 * test_kernels checks 2^24 of them on every run. */
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CHUNK = 1 << 16 };

/* Both exponentials of x[0, n): level 2's into a, libm's into b, each
 * one's time added to *ns_vec and *ns_libm. */
static void both(const float *x, float *a, float *b, int n, uint64_t *ns_vec, uint64_t *ns_libm)
{
    uint64_t t0 = gw_mono_ns();
    gw__expf_avx512(x, a, n);
    uint64_t t1 = gw_mono_ns();
    for (int i = 0; i < n; i++)
        b[i] = expf(x[i]);
    *ns_vec += t1 - t0;
    *ns_libm += gw_mono_ns() - t1;
}

int main(int argc, char **argv)
{
    uint64_t stride = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
    if (stride < 1) {
        fprintf(stderr, "expf_all: STRIDE must be a positive integer\n");
        return 2;
    }
    if (gw_simd_cpu_max(NULL) < GW_SIMD_AVX512) {
        fprintf(stderr, "expf_all: this CPU has no AVX-512 (level 2)\n");
        return 77;
    }
    static float x[CHUNK], a[CHUNK], b[CHUNK];
    uint64_t checked = 0, differ = 0, ns_vec = 0, ns_libm = 0;
    uint64_t bits = 0;
    while (bits < (1ull << 32)) {
        int n = 0;
        for (; n < CHUNK && bits < (1ull << 32); n++, bits += stride) {
            uint32_t u = (uint32_t)bits;
            memcpy(&x[n], &u, 4);
        }
        both(x, a, b, n, &ns_vec, &ns_libm);
        for (int i = 0; i < n; i++) {
            uint32_t ua, ub, ux;
            memcpy(&ua, &a[i], 4), memcpy(&ub, &b[i], 4), memcpy(&ux, &x[i], 4);
            if (ua != ub && !(isnan(a[i]) && isnan(b[i])) && differ++ < 10)
                printf("x = %a (0x%08x): level 2 %a, expf %a\n", (double)x[i], ux, (double)a[i],
                       (double)b[i]);
        }
        checked += (uint64_t)n;
    }
    printf("checked %llu floats (stride %llu): %llu differ; level 2 %.2f ns a value, libm expf "
           "%.2f ns\n",
           (unsigned long long)checked, (unsigned long long)stride, (unsigned long long)differ,
           (double)ns_vec / (double)checked, (double)ns_libm / (double)checked);
    /* what the softmax sees: x - max in [-87, 0], glibc's fast path */
    for (int i = 0; i < CHUNK; i++)
        x[i] = -87.0f * (float)i / CHUNK;
    ns_vec = ns_libm = 0;
    for (int r = 0; r < 64; r++) {
        both(x, a, b, CHUNK, &ns_vec, &ns_libm);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    printf("x in [-87, 0] (the softmax's range): level 2 %.2f ns a value, libm expf %.2f ns\n",
           (double)ns_vec / (64.0 * CHUNK), (double)ns_libm / (64.0 * CHUNK));
    return differ ? 1 : 0;
}
