/* farm.c - prompt-farming signals and the response ladder, per tenant, in
 * the segment (gw_common/farm.h has the score and the ladder; this file
 * has how they are kept).
 *
 * Each tenant account's budget record index owns one struct gw_farm_rec
 * (seg_internal.h): a ring of its last GW_FARM_RING fingerprints and
 * arrival words, the ladder word, the throttle's GCRA word and a few
 * counters. A front recording a prompt takes a ring position with one
 * fetch_add on `seen`, stores the fingerprint and the arrival word there,
 * reads the window back, scores it and moves the ladder with one CAS.
 *
 * Why no word needs repair: each is changed by one atomic instruction and
 * read on its own.
 *   - A front killed between the fetch_add and its two stores leaves a
 *     position holding an older prompt's words (or zeros): the window reads
 *     one stale entry until the ring comes round. The score is a statistic
 *     over 4..64 entries; one stale entry moves it by at most one entry's
 *     share, and the next prompt overwrites it within one lap.
 *   - The two stores of one position are not atomic together: a reader may
 *     pair a new fingerprint with an old arrival time for that one entry.
 *     Same bound as above.
 *   - The ladder (level, strikes, refused-until) is one 64-bit word moved
 *     only by CAS from the value it was computed from, so it is always one
 *     whole decision; a front killed before its CAS made no decision, one
 *     killed after it made it whole. The audit line is written after the
 *     CAS by the one front whose CAS escalated: a front killed between the
 *     two loses that line (the ladder and the metric still show the step).
 *   - The throttle word and the output_tokens word are GCRA cells (one
 *     CAS per change), as the ledger's rate cells.
 * Every access is relaxed: no reader infers from one of these words that
 * any other memory was written (the fingerprint and its arrival word are
 * read as two independent samples, see above), and each RMW is atomic on
 * its own word whatever the order. The record lives in the segment file,
 * so the evidence and the ladder survive a master restart as they are;
 * the master clears nothing of it at start-up.
 */
#include "seg_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

/* The ladder word: level in bits 0..1, strikes in bits 2..23, the refusal's
 * end (unix seconds) in bits 24..63. */
#define LAD_LEVEL(w) ((int)((w)&3u))
#define LAD_STRIKES(w) ((uint32_t)(((w) >> 2) & 0x3fffffu))
#define LAD_UNTIL(w) ((w) >> 24)
#define LAD(level, strikes, until)                                                                 \
    ((uint64_t)(level) | (uint64_t)(strikes) << 2 | (uint64_t)(until) << 24)
#define STRIKES_MAX 0x3fffffu

/* An arrival word: us in bits 0..55, single-turn in bit 56. */
#define META_US(m) ((m) & ((1ull << 56) - 1))
#define META_SINGLE(m) ((int)(((m) >> 56) & 1u))
#define META(us, single) (((us) & ((1ull << 56) - 1)) | ((uint64_t)((single) != 0) << 56))

/* The last score's parts, for show: score, near_pct, sweep, single_pct,
 * n (8 bits each) and cv_pct (16 bits). */
#define LAST(s)                                                                                    \
    ((uint64_t)(s)->score | (uint64_t)(s)->near_pct << 8 | (uint64_t)(s)->sweep << 16 |            \
     (uint64_t)(s)->single_pct << 24 | (uint64_t)(s)->n << 32 | (uint64_t)(s)->cv_pct << 40)

/* ------------------------------------------------------------ fingerprint */

static int word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

/* English function words, sorted (strcmp): left out of the features.
 * Every long English text is full of them, so with them in, any two long
 * texts look alike (their SimHashes drift toward the one of "the, and, of,
 * to ..."); what tells texts apart, and a template's fills from each other,
 * is the rest. The list is the common closed-class words of English, not
 * a list tuned to any set of prompts. */
static const char *const stopwords[] = {
    "a",      "about",  "above", "after",  "again",    "against",    "all",  "am",
    "an",     "and",    "any",   "are",    "as",       "at",         "be",   "because",
    "been",   "before", "being", "below",  "between",  "both",       "but",  "by",
    "can",    "could",  "did",   "do",     "does",     "doing",      "down", "during",
    "each",   "few",    "for",   "from",   "further",  "had",        "has",  "have",
    "having", "he",     "her",   "here",   "hers",     "herself",    "him",  "himself",
    "his",    "how",    "i",     "if",     "in",       "into",       "is",   "it",
    "its",    "itself", "just",  "me",     "more",     "most",       "my",   "myself",
    "no",     "nor",    "not",   "now",    "of",       "off",        "on",   "once",
    "only",   "or",     "other", "our",    "ours",     "ourselves",  "out",  "over",
    "own",    "same",   "she",   "should", "so",       "some",       "such", "than",
    "that",   "the",    "their", "theirs", "them",     "themselves", "then", "there",
    "these",  "they",   "this",  "those",  "through",  "to",         "too",  "under",
    "until",  "up",     "very",  "was",    "we",       "were",       "what", "when",
    "where",  "which",  "while", "who",    "whom",     "why",        "will", "with",
    "would",  "you",    "your",  "yours",  "yourself", "yourselves",
};

static int stopword(const char *w, size_t n)
{
    if (n > 10)
        return 0;
    char k[12];
    memcpy(k, w, n);
    k[n] = '\0';
    size_t lo = 0, hi = sizeof(stopwords) / sizeof(stopwords[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(k, stopwords[mid]);
        if (c == 0)
            return 1;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

/* The bit sums, eight bits at a time: SPREAD[v] has byte i = bit i of v,
 * so adding SPREAD[byte j of h] to acc[j] counts the eight bits of that
 * byte in eight 8-bit lanes at once (8 adds a feature instead of 64).
 * A lane holds at most 255, so the lanes are emptied into the 32-bit sums
 * every 255 features. */
#define SP1(v)                                                                                     \
    ((uint64_t)((v)&1u) | (uint64_t)((v) >> 1 & 1u) << 8 | (uint64_t)((v) >> 2 & 1u) << 16 |       \
     (uint64_t)((v) >> 3 & 1u) << 24 | (uint64_t)((v) >> 4 & 1u) << 32 |                           \
     (uint64_t)((v) >> 5 & 1u) << 40 | (uint64_t)((v) >> 6 & 1u) << 48 |                           \
     (uint64_t)((v) >> 7 & 1u) << 56)
#define SP4(v) SP1(v), SP1((v) + 1), SP1((v) + 2), SP1((v) + 3)
#define SP16(v) SP4(v), SP4((v) + 4), SP4((v) + 8), SP4((v) + 12)
#define SP64(v) SP16(v), SP16((v) + 16), SP16((v) + 32), SP16((v) + 48)
static const uint64_t SPREAD[256] = {SP64(0u), SP64(64u), SP64(128u), SP64(192u)};

struct bitsums {
    uint64_t acc[8];  /* lanes: byte i of acc[j] counts bit 8j + i */
    uint32_t sum[64]; /* emptied lanes */
    uint32_t in_acc;  /* features in the lanes */
    uint64_t n;       /* features in all */
};

static void sums_flush(struct bitsums *s)
{
    for (int j = 0; j < 8; j++) {
        for (int i = 0; i < 8; i++)
            s->sum[j * 8 + i] += (uint32_t)(s->acc[j] >> (8 * i) & 0xffu);
        s->acc[j] = 0;
    }
    s->in_acc = 0;
}

static void add_feature(struct bitsums *s, uint64_t h)
{
    for (int j = 0; j < 8; j++)
        s->acc[j] += SPREAD[h >> (8 * j) & 0xffu];
    s->n++;
    if (++s->in_acc == 255)
        sums_flush(s);
}

uint64_t gw_farm_simhash(const char *text, size_t len)
{
    if (!text)
        return 0;
    if (len > GW_FARM_MAX_BYTES)
        len = GW_FARM_MAX_BYTES;
    struct bitsums sums = {0};
    char word[64];
    uint64_t prev = 0;
    int have_prev = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && !word_byte((unsigned char)text[i]))
            i++;
        if (i == len)
            break;
        size_t wl = 0;
        /* a word longer than 64 bytes is hashed on its first 64 */
        while (i < len && word_byte((unsigned char)text[i])) {
            unsigned char c = (unsigned char)text[i++];
            if (wl < sizeof(word))
                word[wl++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
        }
        if (stopword(word, wl))
            continue; /* neither a feature nor half of a pair */
        uint64_t h = XXH3_64bits_withSeed(word, wl, 0);
        add_feature(&sums, h);
        if (have_prev) {
            uint64_t pair[2] = {prev, h};
            add_feature(&sums, XXH3_64bits_withSeed(pair, sizeof(pair), 1));
        }
        prev = h;
        have_prev = 1;
    }
    if (!sums.n)
        return 0;
    sums_flush(&sums);
    /* bit b: more features with it set than clear */
    uint64_t fp = 0;
    for (int b = 0; b < 64; b++)
        if (2u * (uint64_t)sums.sum[b] > sums.n)
            fp |= 1ull << b;
    return fp ? fp : 1;
}

/* Cuts the first prefix of pfx that t begins with. */
static void cut_prefix(const struct gw_farm_prefixes *pfx, const char **t, size_t *n)
{
    if (!pfx)
        return;
    for (int k = 0; k < pfx->n && k < GW_FARM_PREFIX_MAX; k++) {
        size_t pl = strnlen(pfx->s[k], GW_FARM_PREFIX_LEN);
        if (pl && pl <= *n && memcmp(*t, pfx->s[k], pl) == 0) {
            *t += pl;
            *n -= pl;
            return;
        }
    }
}

void gw_farm_text(const char *prompt, size_t len, int chat, const struct gw_farm_prefixes *pfx,
                  const char **text, size_t *text_len, int *single)
{
    *text = prompt ? prompt : "";
    *text_len = prompt ? len : 0;
    *single = 1;
    if (chat && prompt) {
        /* role NUL content NUL ...: walk the pairs, keep the last content */
        size_t i = 0;
        while (i < len) {
            const char *role = prompt + i;
            size_t rl = strnlen(role, len - i);
            if (i + rl >= len)
                break;
            const char *content = role + rl + 1;
            size_t cl = strnlen(content, len - i - rl - 1);
            if (rl == 9 && memcmp(role, "assistant", 9) == 0)
                *single = 0;
            *text = content;
            *text_len = cl;
            i += rl + 1 + cl + 1;
        }
    }
    cut_prefix(pfx, text, text_len);
}

/* ------------------------------------------------------------------ score */

static uint32_t pct_floor(uint64_t num, uint64_t den)
{
    return den ? (uint32_t)(100u * num / den) : 0;
}

/* Coefficient of variation of the gaps between the sorted arrivals, in
 * percent, rounded; 0 when fewer than two gaps or the mean gap is 0. */
static uint32_t gaps_cv_pct(const uint64_t *at, uint32_t n)
{
    uint64_t s[GW_FARM_RING];
    for (uint32_t i = 0; i < n; i++) { /* insertion sort: n <= 64 */
        uint64_t x = at[i];
        uint32_t j = i;
        while (j > 0 && s[j - 1] > x) {
            s[j] = s[j - 1];
            j--;
        }
        s[j] = x;
    }
    if (n < 3)
        return 0;
    double mean = (double)(s[n - 1] - s[0]) / (double)(n - 1), var = 0;
    if (mean <= 0)
        return 0;
    for (uint32_t i = 1; i < n; i++) {
        double d = (double)(s[i] - s[i - 1]) - mean;
        var += d * d;
    }
    double cv = sqrt(var / (double)(n - 1)) / mean * 100.0 + 0.5;
    return cv >= 9999.0 ? 9999u : (uint32_t)cv;
}

void gw_farm_score_window(const uint64_t *fp, const uint64_t *at_us, const uint8_t *single,
                          uint32_t n, const struct gw_farm_limits *l, struct gw_farm_score *out)
{
    memset(out, 0, sizeof(*out));
    out->nearest_bits = 64;
    uint64_t f[GW_FARM_RING], at[GW_FARM_RING];
    uint32_t m = 0, singles = 0;
    for (uint32_t i = 0; i < n && i < GW_FARM_RING; i++) {
        if (!fp[i])
            continue;
        f[m] = fp[i];
        at[m++] = at_us[i];
        singles += single[i] != 0;
    }
    out->n = m;
    if (!m)
        return;
    out->fp = f[m - 1];
    for (uint32_t i = 1; i < m; i++) {
        int near = 0;
        for (uint32_t j = 0; j < i; j++) {
            uint32_t d = (uint32_t)__builtin_popcountll(f[i] ^ f[j]);
            if (d <= l->near_bits)
                near = 1;
            if (i == m - 1 && d < out->nearest_bits) {
                out->nearest_bits = d;
                out->nearest_fp = f[j];
            }
        }
        out->near += (uint32_t)near;
    }
    out->near_pct = pct_floor(out->near, m - 1);
    out->cv_pct = gaps_cv_pct(at, m);
    out->single_pct = pct_floor(singles, m);
    if (l->sweep_cv_pct && out->single_pct >= l->sweep_single_pct &&
        out->cv_pct < l->sweep_cv_pct && m >= 3)
        out->sweep = 100u - 100u * out->cv_pct / l->sweep_cv_pct;
    if (m >= l->min_samples)
        out->score = out->near_pct > out->sweep ? out->near_pct : out->sweep;
}

/* ----------------------------------------------------------------- ladder */

static struct gw_farm_rec *rec_of(const struct gw_segment *seg, struct gw_acct a, int *rc)
{
    struct gw_budget *b = gw__acct_budget(seg, a);
    if (!b) {
        *rc = gw__acct_ok(seg, a) ? -ENOENT : GW_ESTALE;
        return NULL;
    }
    size_t i = (size_t)((uint8_t *)b - (uint8_t *)seg->budgets) / seg->budget_stride;
    *rc = 0;
    return &seg->farm[i];
}

const char *gw_farm_level_name(int level)
{
    static const char *const names[] = {"none", "flagged", "throttled", "refused"};
    return level >= 0 && level <= GW_FARM_REFUSED ? names[level] : "unknown";
}

/* The ladder word after one prompt scored `score` at now_s. */
static uint64_t ladder_next(uint64_t w, uint32_t score, uint64_t now_s,
                            const struct gw_farm_limits *l)
{
    if (LAD_LEVEL(w) == GW_FARM_REFUSED) {
        if (now_s < LAD_UNTIL(w))
            return w; /* refused: the prompt changes nothing until the TTL passes */
        w = 0;        /* the TTL passed: start again from no strikes */
    }
    uint32_t k = LAD_STRIKES(w);
    if (score >= l->flag_score)
        k = k < STRIKES_MAX ? k + 1 : k;
    else if (k)
        k--;
    if (k >= l->refuse_after)
        return LAD(GW_FARM_REFUSED, k, now_s + l->refuse_ttl_s);
    return LAD(k == 0                   ? GW_FARM_NONE
               : k >= l->throttle_after ? GW_FARM_THROTTLED
                                        : GW_FARM_FLAGGED,
               k, 0);
}

/* Reads the newest n ring entries ending at position `pos`, oldest first. */
static uint32_t read_window(const struct gw_farm_rec *r, uint64_t pos, uint32_t n, uint64_t *fp,
                            uint64_t *at, uint8_t *single)
{
    if (n > pos + 1)
        n = (uint32_t)(pos + 1);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t p = (pos + 1 - n + i) % GW_FARM_RING;
        /* relaxed: each entry is an independent sample (the file's opening) */
        fp[i] = atomic_load_explicit(&r->fp[p], memory_order_relaxed);
        uint64_t m = atomic_load_explicit(&r->meta[p], memory_order_relaxed);
        at[i] = META_US(m);
        single[i] = (uint8_t)META_SINGLE(m);
    }
    return n;
}

/* The throttle: a GCRA cell at the plan's throttle rate. 0 admitted, else
 * the wait in us. */
static uint64_t throttle_take(struct gw_farm_rec *r, const struct gw_farm_limits *l, uint64_t now)
{
    struct gw_rate rate;
    if (gw_rate_make(&rate, l->throttle.limit, l->throttle.period_us, l->throttle.burst) != 0)
        return 0;
    /* relaxed: the cell is a value on its own; the CAS makes
     * check-and-advance atomic and a failed CAS reloads it. */
    uint64_t tat = atomic_load_explicit(&r->tat, memory_order_relaxed);
    for (;;) {
        uint64_t base = tat > now ? tat : now;
        if (base - now > rate.tolerance_us)
            return base - now - rate.tolerance_us;
        if (atomic_compare_exchange_weak_explicit(&r->tat, &tat, base + rate.interval_us,
                                                  memory_order_relaxed, memory_order_relaxed))
            return 0;
    }
}

void gw__farm_rec_observe(struct gw_farm_rec *r, uint64_t fp, int single, uint64_t now_us,
                          const struct gw_farm_limits *l, struct gw_farm_verdict *v)
{
    memset(v, 0, sizeof(*v));
    uint64_t f[GW_FARM_RING], at[GW_FARM_RING];
    uint8_t sg[GW_FARM_RING];
    if (fp) {
        /* relaxed: the position is ours alone whatever the order */
        uint64_t pos = atomic_fetch_add_explicit(&r->seen, 1, memory_order_relaxed);
        /* relaxed: samples read on their own (the file's opening) */
        atomic_store_explicit(&r->fp[pos % GW_FARM_RING], fp, memory_order_relaxed);
        atomic_store_explicit(&r->meta[pos % GW_FARM_RING], META(now_us, single),
                              memory_order_relaxed);
        atomic_store_explicit(&r->last_fp, fp, memory_order_relaxed);
        uint32_t n = read_window(r, pos, l->window, f, at, sg);
        /* our own entry, whatever a racing lap wrote there meanwhile */
        f[n - 1] = fp;
        at[n - 1] = now_us;
        sg[n - 1] = (uint8_t)(single != 0);
        gw_farm_score_window(f, at, sg, n, l, &v->s);
        /* relaxed: display only */
        atomic_store_explicit(&r->last, LAST(&v->s), memory_order_relaxed);
    }
    uint64_t now_s = now_us / 1000000u;
    /* relaxed: the ladder is one word; the CAS moves it only from the value
     * the next one was computed from, and a failed CAS reloads it. */
    uint64_t w = atomic_load_explicit(&r->ladder, memory_order_relaxed), nw;
    do {
        nw = ladder_next(w, v->s.score, now_s, l);
    } while (nw != w && !atomic_compare_exchange_weak_explicit(
                            &r->ladder, &w, nw, memory_order_relaxed, memory_order_relaxed));
    v->prev_level = LAD_LEVEL(w);
    if (v->prev_level == GW_FARM_REFUSED && now_s >= LAD_UNTIL(w))
        v->prev_level = GW_FARM_NONE; /* an expired refusal was no level */
    v->level = LAD_LEVEL(nw);
    v->strikes = LAD_STRIKES(nw);
    if (v->s.score >= l->flag_score && LAD_LEVEL(w) != GW_FARM_REFUSED)
        atomic_fetch_add_explicit(&r->strikes, 1, memory_order_relaxed); /* relaxed: a count */
    if (v->level == GW_FARM_REFUSED) {
        v->until_s = LAD_UNTIL(nw);
        v->refuse = 1;
        v->retry_us = (v->until_s - now_s) * 1000000u;
    } else if (v->level == GW_FARM_THROTTLED) {
        v->retry_us = throttle_take(r, l, now_us);
        v->throttled = v->retry_us != 0;
    }
    if (v->refuse || v->throttled)
        atomic_fetch_add_explicit(&r->refused, 1, memory_order_relaxed); /* relaxed: a count */
}

int gw_farm_observe(struct gw_segment *seg, struct gw_acct tenant, uint64_t fp, int single,
                    uint64_t now_us, const struct gw_farm_limits *l, struct gw_farm_verdict *v)
{
    if (!seg || !seg->farm || !l || !v || l->window < 1 || l->window > GW_FARM_RING)
        return -EINVAL;
    int rc;
    struct gw_farm_rec *r = rec_of(seg, tenant, &rc);
    if (!r) {
        memset(v, 0, sizeof(*v));
        return rc;
    }
    gw__farm_rec_observe(r, fp, single, now_us, l, v);
    return 0;
}

void gw__farm_rec_get(const struct gw_farm_rec *r, uint64_t now_us, struct gw_farm_state *out)
{
    memset(out, 0, sizeof(*out));
    /* relaxed: each word read on its own, for display */
    out->seen = atomic_load_explicit(&r->seen, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&r->ladder, memory_order_relaxed);
    uint64_t last = atomic_load_explicit(&r->last, memory_order_relaxed);
    out->last_fp = atomic_load_explicit(&r->last_fp, memory_order_relaxed);
    out->strikes_total = atomic_load_explicit(&r->strikes, memory_order_relaxed);
    out->refused_total = atomic_load_explicit(&r->refused, memory_order_relaxed);
    out->level = LAD_LEVEL(w);
    out->strikes = LAD_STRIKES(w);
    if (out->level == GW_FARM_REFUSED) {
        out->until_s = LAD_UNTIL(w);
        if (now_us / 1000000u >= out->until_s) {
            out->level = GW_FARM_NONE;
            out->strikes = 0;
        }
    }
    out->score = (uint32_t)(last & 0xff);
    out->near_pct = (uint32_t)(last >> 8 & 0xff);
    out->sweep = (uint32_t)(last >> 16 & 0xff);
    out->single_pct = (uint32_t)(last >> 24 & 0xff);
    out->n = (uint32_t)(last >> 32 & 0xff);
    out->cv_pct = (uint32_t)(last >> 40 & 0xffff);
}

int gw_farm_get(const struct gw_segment *seg, struct gw_acct tenant, uint64_t now_us,
                struct gw_farm_state *out)
{
    if (!seg || !seg->farm || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    int rc;
    struct gw_farm_rec *r = rec_of(seg, tenant, &rc);
    if (!r)
        return rc;
    gw__farm_rec_get(r, now_us, out);
    return 0;
}

void gw__farm_rec_clear(struct gw_farm_rec *r)
{
    /* relaxed: every word is reset on its own; a prompt recorded while this
     * runs is kept or lost as one entry, which is all a clear promises. */
    atomic_store_explicit(&r->ladder, 0, memory_order_relaxed);
    atomic_store_explicit(&r->tat, 0, memory_order_relaxed);
    atomic_store_explicit(&r->last, 0, memory_order_relaxed);
    for (int i = 0; i < GW_FARM_RING; i++) {
        atomic_store_explicit(&r->fp[i], 0, memory_order_relaxed);
        atomic_store_explicit(&r->meta[i], 0, memory_order_relaxed);
    }
}

int gw_farm_clear(struct gw_segment *seg, struct gw_acct tenant)
{
    if (!seg || !seg->farm)
        return -EINVAL;
    int rc;
    struct gw_farm_rec *r = rec_of(seg, tenant, &rc);
    if (!r)
        return rc;
    gw__farm_rec_clear(r);
    return 0;
}

/* ------------------------------------------------------------------ audit */

size_t gw_farm_audit_line(char *buf, size_t len, uint64_t now_us, const char *tenant,
                          const struct gw_farm_verdict *v)
{
    return gw__farm_audit_line(buf, len, now_us, "tenant", tenant, "._@:-", v);
}

size_t gw__farm_audit_line(char *buf, size_t len, uint64_t now_us, const char *field,
                           const char *who, const char *extra, const struct gw_farm_verdict *v)
{
    if (!buf || len < 2)
        return 0;
    char when[48], id[GW_NAME_MAX];
    time_t secs = (time_t)(now_us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof(when) - w, ".%03uZ", (unsigned)(now_us / 1000u % 1000u));
    /* a tenant id is [A-Za-z0-9._@:-] (auth.c), an address key adds '/';
     * anything else is shown as '?' */
    size_t k = 0;
    for (; who && who[k] && k < sizeof(id) - 1; k++) {
        char c = who[k];
        id[k] =
            (word_byte((unsigned char)c) && (unsigned char)c < 0x80) || strchr(extra, c) ? c : '?';
    }
    id[k] = '\0';
    const struct gw_farm_score *s = &v->s;
    int n = snprintf(
        buf, len,
        "{\"time\":\"%s\",\"event\":\"farming\",\"%s\":\"%s\",\"level\":\"%s\","
        "\"strikes\":%" PRIu32 ",\"score\":%" PRIu32 ",\"near_pct\":%" PRIu32 ",\"near\":%" PRIu32
        ",\"n\":%" PRIu32 ",\"cv_pct\":%" PRIu32 ",\"single_pct\":%" PRIu32 ",\"sweep\":%" PRIu32
        ",\"fp\":\"%016" PRIx64 "\",\"nearest_fp\":\"%016" PRIx64 "\",\"nearest_bits\":%" PRIu32,
        when, field, id, gw_farm_level_name(v->level), v->strikes, s->score, s->near_pct, s->near,
        s->n, s->cv_pct, s->single_pct, s->sweep, s->fp, s->nearest_fp, s->nearest_bits);
    size_t at = n < 0 ? 0 : (size_t)n >= len ? len - 1 : (size_t)n;
    if (v->level == GW_FARM_REFUSED) {
        n = snprintf(buf + at, len - at, ",\"until\":%" PRIu64, v->until_s);
        at = n < 0 ? at : (size_t)n >= len - at ? len - 1 : at + (size_t)n;
    }
    if (v->banned_until_s) {
        n = snprintf(buf + at, len - at, ",\"banned_until\":%" PRIu64, v->banned_until_s);
        at = n < 0 ? at : (size_t)n >= len - at ? len - 1 : at + (size_t)n;
    }
    n = snprintf(buf + at, len - at, "}\n");
    at = n < 0 ? at : (size_t)n >= len - at ? len - 1 : at + (size_t)n;
    return at;
}

/* ------------------------------------------------------ output_tokens */

/* us of the cell that `tokens` cost under w, rounded up. */
static uint64_t out_cost(const struct gw_window *w, uint64_t tokens)
{
    unsigned __int128 x = (unsigned __int128)tokens * w->period_us + w->limit - 1;
    x /= w->limit;
    return x > UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)x;
}

/* The cell's depth: (limit + burst) tokens' worth of us. */
static uint64_t out_tau(const struct gw_window *w)
{
    return out_cost(w, w->limit + w->burst);
}

int gw_outq_check(const struct gw_segment *seg, struct gw_acct tenant, const struct gw_window *w,
                  uint64_t now_us, uint64_t *left, uint64_t *retry_us)
{
    if (!seg || !seg->farm || !w || !w->limit || !w->period_us)
        return -EINVAL;
    int rc;
    struct gw_farm_rec *r = rec_of(seg, tenant, &rc);
    if (!r)
        return rc;
    /* relaxed: the cell is read on its own; a charge racing with this
     * check is the overshoot the contract allows */
    uint64_t tat = atomic_load_explicit(&r->out_tat, memory_order_relaxed);
    uint64_t base = tat > now_us ? tat : now_us, top = now_us + out_tau(w);
    uint64_t one = out_cost(w, 1);
    if (left) {
        unsigned __int128 k = base < top ? (unsigned __int128)(top - base) * w->limit : 0;
        *left = (uint64_t)(k / w->period_us);
    }
    if (base + one <= top)
        return 0;
    if (retry_us)
        *retry_us = base + one - top;
    return GW_EREFUSED;
}

int gw_outq_charge(struct gw_segment *seg, struct gw_acct tenant, const struct gw_window *w,
                   uint64_t tokens, uint64_t now_us)
{
    if (!seg || !seg->farm || !w || !w->limit || !w->period_us)
        return -EINVAL;
    int rc;
    struct gw_farm_rec *r = rec_of(seg, tenant, &rc);
    if (!r)
        return rc;
    if (!tokens)
        return 0;
    uint64_t cost = out_cost(w, tokens);
    /* relaxed: one CAS on one word, reloaded on failure; nothing else is
     * published through it. A front killed before it lands charges
     * nothing for that request, in the tenant's favour. */
    uint64_t tat = atomic_load_explicit(&r->out_tat, memory_order_relaxed);
    for (;;) {
        uint64_t base = tat > now_us ? tat : now_us;
        if (atomic_compare_exchange_weak_explicit(&r->out_tat, &tat, base + cost,
                                                  memory_order_relaxed, memory_order_relaxed))
            return 0;
    }
}
