/* farm_ip.c - prompt-farming records per client address (gw_common/farm.h,
 * "Per address"; docs/ARCHITECTURE.md, "Prompt farming").
 *
 * Ip accounts have no budget record and are reclaimed when idle, so their
 * farming records live in a region of their own: seg_config.ip_farm_recs
 * entries (struct gw_farm_iprec, seg_internal.h), each a tenant record's
 * words (the same ring, score and ladder: farm.c's gw__farm_rec_*) behind a
 * tag that names the ip account owning it: its index, its generation and
 * 23 bits of its key word. An account's entry is found within GW_PROBE
 * entries of a home picked by its index; a reclaimed and reused account
 * has another generation (and key), so it never reads its predecessor's
 * evidence: its first prompt claims a free or stale entry and starts clean.
 *
 * Claiming an entry (no lock):
 *   1. CAS the tag from the value read (0, or a tag whose account is no
 *      longer live with that generation and key) to ours | CLEANING;
 *   2. reset every word of the record (relaxed stores);
 *   3. CAS the tag from ours | CLEANING to ours (release).
 * Repair: a process killed between 1 and 3 leaves the tag CLEANING. Whoever
 * next looks the same account up (any front, or gpuwardenctl) finds its tag
 * with CLEANING set and does 2 and 3 itself: the reset is idempotent, so
 * the record is repaired by its next user and nothing else needs it. If
 * the account is never seen again, its tag goes stale with it and the next
 * claimer resets the entry anyway. Two finishers at once may erase a prompt
 * recorded between one's step 3 and the other's last reset store: the
 * record of a just-claimed entry loses at most the prompts of that
 * instant, in the address's favour, never a step another address took.
 * Every other word is the tenant record's, changed and repaired as farm.c's
 * opening says. The region lives in the segment file: an address's state
 * survives a master restart with its ip account.
 *
 * Two fronts claiming for the same account at once: the second's CAS fails
 * on the first's entry, or they claim two entries when a third went stale
 * between their looks; then the account's prompts go to the first entry in
 * probe order, and the other holds what it got until the account goes
 * stale. Table full (every entry of the probe window owned by a live
 * account): GW_EFULL, and the front does not judge the address.
 */
#include "seg_internal.h"

#include <errno.h>
#include <string.h>

#define FIP_CLEANING (1ull << 63)
/* 23 bits of the key word, index + 1 (32 bits), the generation. */
#define FIP_TAG(index, gen, key)                                                                   \
    (((uint64_t)(key)&0x7fffffull) << 40 | ((uint64_t)(index) + 1) << 8 | (uint64_t)(gen))
#define FIP_INDEX1(t) ((uint32_t)((t) >> 8 & 0xffffffffu))
#define FIP_GEN(t) ((uint8_t)((t)&0xffu))

/* The tag account a would own now: 0 when it is not live with a.gen. */
static uint64_t live_tag(const struct gw_segment *seg, struct gw_acct a)
{
    if (!gw__acct_ok(seg, a))
        return 0;
    /* relaxed: written before the account's tag was published, which
     * gw__acct_ok acquired; the second look rules out a reclaim between. */
    uint64_t key = atomic_load_explicit(&seg->accounts[a.index].key, memory_order_relaxed);
    return gw__acct_ok(seg, a) ? FIP_TAG(a.index, a.gen, key) : 0;
}

/* 1 when an entry tagged t may be claimed: never used, or its account is
 * no longer the one that claimed it. */
static int stale(const struct gw_segment *seg, uint64_t t)
{
    if (!t)
        return 1;
    uint32_t i1 = FIP_INDEX1(t);
    if (!i1)
        return 1;
    struct gw_acct a = {.index = i1 - 1, .gen = FIP_GEN(t)};
    return live_tag(seg, a) != (t & ~FIP_CLEANING);
}

/* Steps 2 and 3 of a claim (the file's opening), by the claimer or by
 * whoever finds the tag still CLEANING. */
static void finish_claim(struct gw_farm_iprec *e, uint64_t cleaning)
{
    struct gw_farm_rec *r = &e->rec;
    gw__farm_rec_clear(r);
    /* relaxed: reset on their own; the tag's release below orders them
     * before the clean tag for whoever acquires it */
    atomic_store_explicit(&r->seen, 0, memory_order_relaxed);
    atomic_store_explicit(&r->strikes, 0, memory_order_relaxed);
    atomic_store_explicit(&r->refused, 0, memory_order_relaxed);
    atomic_store_explicit(&r->last_fp, 0, memory_order_relaxed);
    atomic_store_explicit(&r->out_tat, 0, memory_order_relaxed);
    uint64_t t = cleaning;
    /* release: the reset above is seen by whoever acquires the clean tag;
     * a failed CAS means another finisher published it already */
    atomic_compare_exchange_strong_explicit(&e->tag, &t, cleaning & ~FIP_CLEANING,
                                            memory_order_release, memory_order_relaxed);
}

/* The account's record; with `create`, claims one. 0 or -errno in *rc. */
static struct gw_farm_rec *find(const struct gw_segment *seg, struct gw_acct a, int create, int *rc)
{
    uint32_t n = seg->cfg.ip_farm_recs;
    if (!seg->farm_ip || !n) {
        *rc = -ENOENT;
        return NULL;
    }
    uint64_t want = live_tag(seg, a);
    if (!want) {
        *rc = GW_ESTALE;
        return NULL;
    }
    uint32_t probe = n < GW_PROBE ? n : GW_PROBE;
    uint32_t home = (uint32_t)(((uint64_t)a.index * 0x9E3779B97F4A7C15ull) >> 32) % n;
    for (int attempt = 0; attempt < 4; attempt++) {
        for (uint32_t k = 0; k < probe; k++) {
            struct gw_farm_iprec *e = &seg->farm_ip[(home + k) % n];
            /* acquire: pairs with finish_claim's release (a clean record) */
            uint64_t t = atomic_load_explicit(&e->tag, memory_order_acquire);
            if ((t & ~FIP_CLEANING) != want)
                continue;
            if (t & FIP_CLEANING)
                finish_claim(e, t); /* its claimer died or is slow: finish it */
            *rc = 0;
            return &e->rec;
        }
        if (!create) {
            *rc = -ENOENT;
            return NULL;
        }
        int raced = 0;
        for (uint32_t k = 0; k < probe && !raced; k++) {
            struct gw_farm_iprec *e = &seg->farm_ip[(home + k) % n];
            /* relaxed: the CAS below decides; what the entry held is reset */
            uint64_t t = atomic_load_explicit(&e->tag, memory_order_relaxed);
            if (!stale(seg, t))
                continue;
            /* relaxed: the entry is ours from here; its words are reset
             * before the clean tag is released */
            if (!atomic_compare_exchange_strong_explicit(
                    &e->tag, &t, want | FIP_CLEANING, memory_order_relaxed, memory_order_relaxed)) {
                raced = 1; /* look again: it may be our own account's now */
                break;
            }
            finish_claim(e, want | FIP_CLEANING);
            *rc = 0;
            return &e->rec;
        }
        if (!raced)
            break;
    }
    *rc = GW_EFULL;
    return NULL;
}

int gw_farm_ip_observe(struct gw_segment *seg, struct gw_acct ip, uint64_t fp, int single,
                       uint64_t now_us, const struct gw_farm_limits *l, struct gw_farm_verdict *v)
{
    if (!seg || !l || !v || l->window < 1 || l->window > GW_FARM_RING)
        return -EINVAL;
    memset(v, 0, sizeof(*v));
    int rc;
    struct gw_farm_rec *r = find(seg, ip, 1, &rc);
    if (!r)
        return rc;
    gw__farm_rec_observe(r, fp, single, now_us, l, v);
    return 0;
}

int gw_farm_ip_get(const struct gw_segment *seg, struct gw_acct ip, uint64_t now_us,
                   struct gw_farm_state *out)
{
    if (!seg || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    int rc;
    struct gw_farm_rec *r = find(seg, ip, 0, &rc);
    if (!r)
        return rc;
    gw__farm_rec_get(r, now_us, out);
    return 0;
}

int gw_farm_ip_clear(struct gw_segment *seg, struct gw_acct ip)
{
    if (!seg)
        return -EINVAL;
    int rc;
    struct gw_farm_rec *r = find(seg, ip, 0, &rc);
    if (!r)
        return rc;
    gw__farm_rec_clear(r);
    return 0;
}

size_t gw_farm_ip_audit_line(char *buf, size_t len, uint64_t now_us, const char *address,
                             const struct gw_farm_verdict *v)
{
    return gw__farm_audit_line(buf, len, now_us, "address", address, ".:/", v);
}
