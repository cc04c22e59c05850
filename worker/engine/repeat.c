/* repeat.c: the repetition statistics the watchdog reads (gw_engine.h).
 *
 * A loop is seen once it has repeated GW_REPEAT_NGRAM tokens, whatever its
 * period up to max_period: the table remembers where each recent n-gram
 * (rolling hash of the last GW_REPEAT_NGRAM tokens) last ended, and an
 * n-gram met again at distance p <= max_period offers p as the period.
 * The offer is checked against the ring (a hash can collide), its run
 * traced back at most GW_REPEAT_BACK tokens, and from then on one
 * comparison per token keeps or drops it. The table has 512 buckets of two
 * n-grams for the ~270 of the window; a collision forgets an n-gram, which
 * costs at most a later sighting.
 *
 * The near stream is the same statistic over tokens whose digit runs are
 * one symbol, so that a counter that ticks ("94. Texas", "95. Texas", and
 * "99." to "100.", which adds a digit token) does not break the cycle.
 */
#include "engine.h"

#include <errno.h>
#include <stdlib.h>

#define HASH_MUL UINT64_C(0x9e3779b97f4a7c15)
#define DIGITS_SYMBOL (-2) /* the near stream's symbol for a run of digits */

/* HASH_MUL^GW_REPEAT_NGRAM: what the oldest token of the n-gram weighs. */
static uint64_t oldest_weight(void)
{
    uint64_t w = 1;
    for (int i = 0; i < GW_REPEAT_NGRAM; i++)
        w *= HASH_MUL;
    return w;
}

int gw_repeat_init(gw_repeat *r, int max_period)
{
    if (!r || max_period < 1 || max_period > GW_REPEAT_MAX_PERIOD)
        return -EINVAL;
    memset(r, 0, sizeof *r);
    r->max_period = max_period;
    return 0;
}

static int32_t at(const gw_repeat *r, uint64_t t)
{
    return r->ring[t % GW_REPEAT_RING];
}

/* Offers the period d for the token just pushed (index r->n - 1): taken
 * when the last GW_REPEAT_NGRAM tokens equal those d before them. */
static void offer(gw_repeat *r, uint64_t d)
{
    uint64_t t = r->n - 1;
    for (uint64_t i = 0; i < GW_REPEAT_NGRAM; i++)
        if (at(r, t - i) != at(r, t - i - d))
            return; /* a hash collision */
    uint64_t run = GW_REPEAT_NGRAM;
    while (run < GW_REPEAT_NGRAM + GW_REPEAT_BACK && t - run >= d &&
           at(r, t - run) == at(r, t - run - d))
        run++;
    r->period = (int)d;
    r->run = r->srun = run;
}

/* Looks the n-gram that ends at the token just pushed up (offering its
 * distance when no cycle holds) and records where it ended. A bucket holds
 * two n-grams, the older one goes: a collision forgets one only when three
 * recent n-grams share a bucket. */
static void remember(gw_repeat *r)
{
    uint64_t b = ((r->hash * HASH_MUL) >> 54) & ~UINT64_C(1); /* top 10 bits: GW_REPEAT_TABLE */
    int victim = r->table[b].end <= r->table[b + 1].end ? 0 : 1;
    for (int i = 0; i < 2; i++) {
        uint64_t end = r->table[b + i].end;
        if (!end || r->table[b + i].hash != r->hash)
            continue;
        if (!r->period && r->n - end <= (uint64_t)r->max_period)
            offer(r, r->n - end);
        victim = i; /* the same n-gram: this is where it ends now */
        break;
    }
    r->table[b + victim].hash = r->hash;
    r->table[b + victim].end = r->n;
}

void gw_repeat_push(gw_repeat *r, int32_t token)
{
    uint64_t t = r->n;
    if (r->period) {
        if (at(r, t - (uint64_t)r->period) == token)
            r->run++, r->srun++;
        else
            r->period = 0, r->run = 0, r->srun = 0;
    }
    /* the token leaving the n-gram, read before the ring slot is reused
     * (GW_REPEAT_RING > GW_REPEAT_NGRAM, so it is not this one's slot) */
    uint64_t out = t >= GW_REPEAT_NGRAM ? (uint64_t)(uint32_t)at(r, t - GW_REPEAT_NGRAM) + 1 : 0;
    r->ring[t % GW_REPEAT_RING] = token;
    r->n = t + 1;
    r->hash = r->hash * HASH_MUL + (uint64_t)(uint32_t)token + 1 - out * oldest_weight();
    if (r->n >= GW_REPEAT_NGRAM)
        remember(r);
    r->count = r->period ? (r->srun + (uint64_t)r->period) / (uint64_t)r->period : 0;
}

void gw_repeat_extend(gw_repeat *r)
{
    if (r->period)
        r->run++; /* a token, not a symbol: the count stays */
}

_Static_assert(GW_REPEAT_TABLE == 1024, "gw_repeat_push takes the hash's top 10 bits");
_Static_assert(GW_REPEAT_RING >= GW_REPEAT_MAX_PERIOD + GW_REPEAT_NGRAM + GW_REPEAT_BACK + 1,
               "the ring holds every token a check compares");

/* ------------------------------------------------------------ digit map */

int gw_repeat_digit_map(const struct gw_tokenizer *t, int vocab, uint8_t **out)
{
    if (!t || vocab < 1 || !out)
        return -EINVAL;
    uint8_t *m = calloc((size_t)vocab, 1);
    if (!m)
        return -ENOMEM;
    for (int id = 0; id < vocab; id++) {
        const char *s;
        size_t len;
        if (gw_tokenizer_token_text(t, id, &s, &len) != 0)
            continue;
        size_t i = 0;
        if (len >= 1 && s[0] == ' ')
            i = 1;
        else if (len >= 2 && (unsigned char)s[0] == 0xC4 && (unsigned char)s[1] == 0xA0)
            i = 2; /* "Ġ", GPT-2's stored space */
        if (i == len)
            continue;
        int digits = 1;
        for (; i < len && digits; i++)
            digits = s[i] >= '0' && s[i] <= '9';
        m[id] = (uint8_t)digits;
    }
    *out = m;
    return 0;
}

/* ---------------------------------------------------------- loopwatch */

int gw_loopwatch_init(gw_loopwatch *w, int max_period, const uint8_t *digits)
{
    if (!w)
        return -EINVAL;
    int rc = gw_repeat_init(&w->exact, max_period);
    if (rc == 0)
        rc = gw_repeat_init(&w->near, max_period);
    w->digits = digits;
    w->prev_digit = 0;
    w->top1_sum = 0;
    w->n_top1 = 0;
    return rc;
}

void gw_loopwatch_push(gw_loopwatch *w, int32_t token, float top1)
{
    gw_repeat_push(&w->exact, token);
    if (w->digits) {
        int digit = token >= 0 && w->digits[token];
        if (digit && w->prev_digit)
            gw_repeat_extend(&w->near);
        else
            gw_repeat_push(&w->near, digit ? DIGITS_SYMBOL : token);
        w->prev_digit = digit;
    }
    if (top1 >= 0) {
        int pct = (int)(top1 * 100.0f + 0.5f);
        uint8_t v = (uint8_t)(pct > 100 ? 100 : pct);
        uint32_t i = w->n_top1 % GW_TOP1_WINDOW;
        if (w->n_top1 >= GW_TOP1_WINDOW)
            w->top1_sum -= w->top1[i];
        w->top1[i] = v;
        w->top1_sum += v;
        w->n_top1++;
    }
}

void gw_loopwatch_stat(const gw_loopwatch *w, gw_loop_stat *out)
{
    const gw_repeat *r = &w->exact;
    int near = w->digits && w->near.run > w->exact.run;
    if (near)
        r = &w->near;
    *out = (gw_loop_stat){
        .period = r->period,
        .run = r->run,
        .count = r->count,
        .near = near,
        .top1 = w->n_top1 >= GW_TOP1_WINDOW ? 1 + (int)(w->top1_sum / GW_TOP1_WINDOW) : 0};
}
