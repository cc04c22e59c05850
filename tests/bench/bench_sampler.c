/* bench_sampler.c - what one temperature sample costs (the OpenAI routes'
 * default, temperature 1, no top-k or top-p): a softmax over the
 * vocabulary, then a walk of its cumulative sum. At each SIMD level, the
 * same seeded samples over the same logits; the hash of the choices shows
 * that every level makes the same ones.
 *
 *   bench_sampler [vocab] [samples]   (defaults 49152, as SmolLM2; 2000)
 *
 * Not a test: timings are never asserted. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int vocab = argc > 1 ? atoi(argv[1]) : 49152, n = argc > 2 ? atoi(argv[2]) : 2000;
    if (vocab < 1 || n < 1) {
        fprintf(stderr, "usage: bench_sampler [vocab] [samples]\n");
        return 2;
    }
    float *logits = malloc((size_t)vocab * sizeof(float)),
          *w = malloc((size_t)vocab * sizeof(float));
    if (!logits || !w)
        return 1;
    uint64_t x = 88172645463325252ull; /* logits in [-10, 10) */
    for (int i = 0; i < vocab; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        logits[i] = (float)(x >> 40) / 16777216.0f * 20.0f - 10.0f;
    }
    int top = gw_simd_set(-1);
    printf("vocab %d, %d samples at temperature 1\n", vocab, n);
    for (int level = 0; level <= top; level++) {
        gw_simd_set(level);
        gw_sampler_params p = {.temperature = 1.0f, .top_p = 1.0f, .seed = 7};
        gw_sampler *s;
        if (gw_sampler_new(&p, vocab, &s) != 0)
            return 1;
        uint64_t hash = 0, copy_ns = 0, t0 = gw_mono_ns();
        for (int i = 0; i < n; i++) {
            uint64_t c0 = gw_mono_ns();
            memcpy(w, logits, (size_t)vocab * sizeof(float));
            copy_ns += gw_mono_ns() - c0;
            hash = hash * 1000003u + (uint64_t)gw_sampler_sample(s, w);
        }
        double us = (double)(gw_mono_ns() - t0 - copy_ns) / n / 1e3;
        printf("SIMD level %d: %8.1f us per sample, choices' hash %016llx\n", level, us,
               (unsigned long long)hash);
        gw_sampler_free(s);
    }
    free(logits);
    free(w);
    return 0;
}
