/* sampler.c: greedy, temperature, top-k and top-p sampling with a seeded
 * PRNG (xorshift64*): the same seed and the same logits give the same
 * choices on every machine. */
#include "engine.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

struct cand {
    float p;
    int32_t id;
};

struct gw_sampler {
    gw_sampler_params p;
    int vocab;
    uint64_t rng;
    struct cand *c; /* vocab entries of scratch */
    float top1;     /* the last sample's top-1 probability after temperature */
};

/* splitmix64 turns any seed (0 included) into a good non-zero state. */
static uint64_t seed_state(uint64_t s)
{
    s += 0x9E3779B97F4A7C15ull;
    s = (s ^ (s >> 30)) * 0xBF58476D1CE4E5B9ull;
    s = (s ^ (s >> 27)) * 0x94D049BB133111EBull;
    s ^= s >> 31;
    return s ? s : 1;
}

static uint64_t next_u64(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, 1) with 24 random bits. */
static float next_f32(uint64_t *x)
{
    return (float)(next_u64(x) >> 40) * (1.0f / 16777216.0f);
}

int gw_sampler_new(const gw_sampler_params *p, int vocab, gw_sampler **out)
{
    if (!p || !out || vocab < 1 || isnan(p->temperature) || isnan(p->top_p))
        return -EINVAL;
    gw_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    if (!(s->c = malloc((size_t)vocab * sizeof *s->c))) {
        free(s);
        return -ENOMEM;
    }
    s->p = *p;
    s->vocab = vocab;
    s->rng = seed_state(p->seed);
    *out = s;
    return 0;
}

void gw_sampler_free(gw_sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s);
}

/* Higher probability first; the lower id first on ties, so the order never
 * depends on the sort algorithm. */
static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* "a ranks below b" in the order above. */
static bool below(const struct cand *a, const struct cand *b)
{
    return cand_cmp(a, b) > 0;
}

/* Min-heap (by rank) of the k best candidates: O(vocab log k). */
static void sift_down(struct cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && below(&h[l], &h[m]))
            m = l;
        if (r < n && below(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

float gw_sampler_top1(const gw_sampler *s)
{
    return s->top1;
}

int32_t gw_sampler_sample(gw_sampler *s, float *logits)
{
    int n = s->vocab;
    if (s->p.temperature <= 0)
        return gw_argmax(logits, n);

    /* temperature and softmax: the same float operations at every SIMD
     * level (gw_argmax finds the first largest as `x[i] > max` does, level
     * 2's expf is glibc's bit for bit), the sum one chain in order of i.
     * Below level 2, plain loops and the C library's expf. */
    float max = logits[0], sum = 0;
    if (gw_simd_get() >= GW_SIMD_AVX512) {
        max = logits[gw_argmax(logits, n)];
        for (int i = 0; i < n; i++)
            logits[i] = (logits[i] - max) / s->p.temperature;
        gw__expf_avx512(logits, logits, n);
        for (int i = 0; i < n; i++)
            sum += logits[i];
    } else {
        for (int i = 1; i < n; i++)
            max = logits[i] > max ? logits[i] : max;
        for (int i = 0; i < n; i++) {
            logits[i] = expf((logits[i] - max) / s->p.temperature);
            sum += logits[i];
        }
    }
    for (int i = 0; i < n; i++)
        logits[i] /= sum;
    s->top1 = 1.0f / sum; /* the largest logit's exp is exactly 1 */

    bool use_k = s->p.top_k > 0 && s->p.top_k < n;
    bool use_p = s->p.top_p > 0 && s->p.top_p < 1;
    if (!use_k && !use_p) {
        float r = next_f32(&s->rng), cdf = 0;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (r < cdf)
                return i;
        }
        return gw_argmax(logits, n); /* rounding left r above the last cdf */
    }

    int nc = 0;
    if (use_k) {
        int k = s->p.top_k;
        for (int i = 0; i < n; i++) {
            struct cand c = {logits[i], i};
            if (nc < k) {
                s->c[nc++] = c;
                if (nc == k)
                    for (int j = k / 2 - 1; j >= 0; j--)
                        sift_down(s->c, k, j);
            } else if (below(&s->c[0], &c)) {
                s->c[0] = c;
                sift_down(s->c, k, 0);
            }
        }
    } else {
        /* Tokens under (1 - p) / (n - 1) cannot be in the nucleus (llama2.c). */
        float cutoff = (1.0f - s->p.top_p) / (float)(n - 1);
        for (int i = 0; i < n; i++)
            if (logits[i] >= cutoff)
                s->c[nc++] = (struct cand){logits[i], i};
    }
    qsort(s->c, (size_t)nc, sizeof *s->c, cand_cmp);

    float total = 0;
    for (int i = 0; i < nc; i++)
        total += s->c[i].p;
    if (use_p) {
        float cum = 0, want = s->p.top_p * total;
        int keep = nc;
        for (int i = 0; i < nc; i++) {
            cum += s->c[i].p;
            if (cum >= want) {
                keep = i + 1;
                break;
            }
        }
        nc = keep;
        total = cum;
    }
    float r = next_f32(&s->rng) * total, cdf = 0;
    for (int i = 0; i < nc; i++) {
        cdf += s->c[i].p;
        if (r < cdf)
            return s->c[i].id;
    }
    return s->c[nc - 1].id;
}
