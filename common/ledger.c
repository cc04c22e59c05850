/* ledger.c - the account table: lock-free lookup, insert and reclaim.
 *
 * Open addressing with a bounded probe window: an account lives within
 * GW_PROBE entries of its home, and a lookup reads the whole window (two
 * cache lines of tags' worth of entries), so an entry can go back to empty
 * without tombstones.
 *
 * Ownership of an entry is decided by one CAS on its tag word. Inserting or
 * reclaiming locks the tag with our pid for a handful of stores; a reader
 * that meets a locked entry treats it as "not the key", and the master
 * unlocks entries whose locker died (gw__ledger_unlock_dead).
 *
 * Reclaim bumps the generation in every cell by CAS, and only if every cell
 * is idle: an update through an old reference then fails (GW_ESTALE) rather
 * than landing in the entry's next owner. Two processes inserting the same
 * new key while a third reclaims inside that window can, rarely, create the
 * key twice; lookups then use the first in window order, the other goes idle
 * and is reclaimed. The cost is at most one request counted in the orphan.
 *
 * Table full: ip accounts whose cells are all idle are reclaimed; when none
 * is, a new ip account is refused (fail closed: an unknown client is turned
 * away rather than let through unlimited) and table_full counts it. Tenant
 * and global accounts carry budgets and history and are never reclaimed.
 */
#include "seg_internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

struct ident {
    int kind;
    uint64_t h53, key, home;
};

static struct ident ident_of(const struct gw_segment *seg, int kind, const void *id, size_t len)
{
    XXH128_hash_t h = XXH3_128bits_withSeed(id, len, (XXH64_hash_t)kind);
    return (struct ident){.kind = kind,
                          .h53 = h.low64 >> 11,
                          .key = h.high64,
                          .home = h.low64 & (seg->cfg.accounts - 1)};
}

static inline uint32_t win(const struct gw_segment *seg, const struct ident *id, int i)
{
    return (uint32_t)((id->home + (uint64_t)i) & (seg->cfg.accounts - 1));
}

static inline int tag_is(uint64_t t, const struct ident *id)
{
    return !(t & TAG_LOCK) && TAG_KIND(t) == id->kind && TAG_HASH(t) == id->h53;
}

/* Position of the key in the window, -1 if absent. The key word is checked
 * seqlock-style: tag (acquire), key, fence, tag again unchanged. */
static int find(const struct gw_segment *seg, const struct ident *id, uint8_t *gen)
{
    for (int i = 0; i < GW_PROBE; i++) {
        struct gw_account *a = acct_at(seg, win(seg, id, i));
        /* acquire: pairs with the release store that published the tag, so
         * the key, budget index and id written before it are visible. */
        uint64_t t = atomic_load_explicit(&a->tag, memory_order_acquire);
        if (!tag_is(t, id))
            continue;
        uint64_t k = atomic_load_explicit(&a->key, memory_order_relaxed);
        /* acquire fence: the re-read of the tag below is ordered after the
         * key read, so an unchanged tag proves the key belongs to it. */
        atomic_thread_fence(memory_order_acquire);
        if (k == id->key && atomic_load_explicit(&a->tag, memory_order_relaxed) == t) {
            *gen = TAG_GEN(t);
            return (int)win(seg, id, i);
        }
    }
    return -1;
}

static int cell_idle(const struct gw_account *a, int k, uint64_t c, uint64_t now)
{
    if (k == CELL_INFLIGHT)
        return CELL_V(c) == 0;
    if (k < GW_RATE_CELLS && gw__moving_is(CELL_V(c)))
        return gw__moving_idle(a, k, CELL_V(c), now); /* a moving window's counts */
    return CELL_V(c) <= now; /* rate and budget cells: TAT not in the future */
}

/* Takes the entry whose tag is `t` out of service if every cell is idle.
 * On success the entry is left locked by us with every cell at generation
 * gen+1 and value 0, and *g2 says that generation; the caller publishes a new
 * tag. Returns -EBUSY when the entry is in use or someone else moved first. */
static int retire(struct gw_segment *seg, uint32_t pos, uint64_t t, uint64_t now, uint8_t *g2)
{
    struct gw_account *a = acct_at(seg, pos);
    uint8_t g = TAG_GEN(t);
    for (int k = 0; k < ACCT_CELLS; k++) {
        uint64_t c = atomic_load_explicit(&a->cell[k], memory_order_relaxed);
        if (CELL_GEN(c) != g || !cell_idle(a, k, c, now))
            return -EBUSY;
    }
    /* acq_rel: acquire so our cell reads below follow every update that
     * happened before the tag we saw; release so the lock is seen before any
     * cell we bump (readers that see a bumped cell and re-read the tag see
     * the lock). */
    if (!atomic_compare_exchange_strong_explicit(&a->tag, &t, TAG_LOCKED(getpid(), g),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return -EBUSY;
    uint64_t old[ACCT_CELLS];
    uint8_t ng = (uint8_t)(g + 1);
    int k;
    for (k = 0; k < ACCT_CELLS; k++) {
        old[k] = atomic_load_explicit(&a->cell[k], memory_order_relaxed);
        /* relaxed CAS: the cell's own modification order is all that
         * matters; a user's update either precedes ours (and we see a busy
         * cell, or our CAS fails) or follows it (and fails on the gen). */
        if (CELL_GEN(old[k]) != g || !cell_idle(a, k, old[k], now) ||
            !atomic_compare_exchange_strong_explicit(&a->cell[k], &old[k], CELL(ng, 0),
                                                     memory_order_relaxed, memory_order_relaxed))
            break;
    }
    if (k < ACCT_CELLS) {
        /* Someone is using it: put back what we bumped (only we write cells
         * of generation ng, so plain stores are safe) and unlock. */
        for (int j = 0; j < k; j++)
            atomic_store_explicit(&a->cell[j], old[j], memory_order_relaxed);
        /* release: the restored cells are visible before the unlocked tag. */
        atomic_store_explicit(&a->tag, t, memory_order_release);
        return -EBUSY;
    }
    gw__moving_clear(seg, pos); /* the exact moving windows' logs */
    *g2 = ng;
    /* relaxed: statistics. */
    atomic_fetch_sub_explicit(&seg->hdr->accounts_live, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&seg->hdr->accounts_reclaimed, 1, memory_order_relaxed);
    return 0;
}

static int alloc_budget(struct gw_segment *seg, uint32_t *out)
{
    _Atomic uint64_t *used = &seg->hdr->budgets_used;
    /* relaxed: the counter only hands out distinct indices; the record's
     * contents are published through the account tag's release store. */
    uint64_t n = atomic_load_explicit(used, memory_order_relaxed);
    do {
        if (n >= seg->cfg.budgets)
            return GW_EFULL;
    } while (!atomic_compare_exchange_weak_explicit(used, &n, n + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    *out = (uint32_t)n;
    return 0;
}

/* Fills an entry we hold locked (cells at generation g, idle) with the new
 * identity and publishes it. */
static int publish(struct gw_segment *seg, uint32_t pos, uint8_t g, const struct ident *id,
                   const void *idbytes, size_t idlen)
{
    struct gw_account *a = acct_at(seg, pos);
    uint32_t bidx = NO_BUDGET;
    if (id->kind != GW_KIND_IP) {
        int rc = alloc_budget(seg, &bidx);
        if (rc != 0) {
            atomic_store_explicit(&a->tag, TAG_EMPTY(g), memory_order_release);
            return rc;
        }
        /* relaxed: published by the tag's release store below. */
        atomic_store_explicit(&budget_at(seg, bidx)->account, (uint64_t)pos + 1,
                              memory_order_relaxed);
    }
    atomic_store_explicit(&a->budget_idx, bidx, memory_order_relaxed);
    atomic_store_explicit(&a->key, id->key, memory_order_relaxed);
    uint64_t words[GW_ID_MAX / 8] = {0};
    size_t n = idlen < GW_ID_MAX ? idlen : GW_ID_MAX;
    memcpy(words, idbytes, n);
    for (int i = 0; i < GW_ID_MAX / 8; i++)
        atomic_store_explicit(&a->id[i], words[i], memory_order_relaxed);
    atomic_store_explicit(&a->idlen, (uint32_t)n, memory_order_relaxed);
    /* release: key, budget index and id above happen-before any reader that
     * acquires this tag. */
    atomic_store_explicit(&a->tag, TAG_LIVE(g, id->kind, id->h53), memory_order_release);
    atomic_fetch_add_explicit(&seg->hdr->accounts_live, 1, memory_order_relaxed);
    return 0;
}

/* Locks an empty entry (tag `t`) for us and moves its cells to the next
 * generation, so no reference to its previous life can match. */
static int lock_empty(struct gw_segment *seg, uint32_t pos, uint64_t t, uint8_t *g2)
{
    struct gw_account *a = acct_at(seg, pos);
    /* acq_rel: as in retire(). */
    if (!atomic_compare_exchange_strong_explicit(&a->tag, &t, TAG_LOCKED(getpid(), TAG_GEN(t)),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return -EBUSY;
    uint8_t ng = (uint8_t)(TAG_GEN(t) + 1);
    for (int k = 0; k < ACCT_CELLS; k++)
        atomic_store_explicit(&a->cell[k], CELL(ng, 0), memory_order_relaxed);
    *g2 = ng;
    return 0;
}

/* After publishing at `pos`: if the same key also exists earlier in the
 * window (a concurrent insert won there), retire ours and use that one. */
static void settle_duplicate(struct gw_segment *seg, const struct ident *id, uint32_t *pos,
                             uint8_t *gen, uint64_t now)
{
    for (int i = 0; i < GW_PROBE; i++) {
        uint32_t p = win(seg, id, i);
        if (p == *pos)
            return; /* ours is first */
        struct gw_account *a = acct_at(seg, p);
        uint64_t t = atomic_load_explicit(&a->tag, memory_order_acquire);
        if (!tag_is(t, id) || atomic_load_explicit(&a->key, memory_order_relaxed) != id->key)
            continue;
        uint64_t mine = TAG_LIVE(*gen, id->kind, id->h53);
        uint8_t g2;
        if (retire(seg, *pos, mine, now, &g2) == 0)
            atomic_store_explicit(&acct_at(seg, *pos)->tag, TAG_EMPTY(g2), memory_order_release);
        *pos = p;
        *gen = TAG_GEN(t);
        return;
    }
}

int gw_ledger_get(struct gw_segment *seg, enum gw_kind kind, const void *idbytes, size_t idlen,
                  int create, uint64_t now, struct gw_acct *out)
{
    if (kind < GW_KIND_GLOBAL || kind > GW_KIND_IP || idlen > 4096)
        return -EINVAL;
    struct ident id = ident_of(seg, kind, idbytes, idlen);
    for (int attempt = 0; attempt < 8; attempt++) {
        uint8_t gen;
        int pos = find(seg, &id, &gen);
        if (pos >= 0) {
            *out = (struct gw_acct){.index = (uint32_t)pos, .gen = gen};
            return 0;
        }
        if (!create)
            return -ENOENT;
        int raced = 0;
        for (int i = 0; i < GW_PROBE; i++) {
            uint32_t p = win(seg, &id, i);
            uint64_t t = atomic_load_explicit(&acct_at(seg, p)->tag, memory_order_acquire);
            if ((t & TAG_LOCK) || TAG_KIND(t) != 0)
                continue;
            uint8_t g2;
            if (lock_empty(seg, p, t, &g2) != 0) {
                raced = 1; /* someone took it: maybe our key; look again */
                break;
            }
            int rc = publish(seg, p, g2, &id, idbytes, idlen);
            if (rc != 0) {
                atomic_fetch_add_explicit(&seg->hdr->table_full, 1, memory_order_relaxed);
                return rc;
            }
            uint32_t up = p;
            settle_duplicate(seg, &id, &up, &g2, now);
            *out = (struct gw_acct){.index = up, .gen = g2};
            return 0;
        }
        if (raced)
            continue;
        if (kind == GW_KIND_IP) {
            for (int i = 0; i < GW_PROBE; i++) {
                uint32_t p = win(seg, &id, i);
                uint64_t t = atomic_load_explicit(&acct_at(seg, p)->tag, memory_order_acquire);
                uint8_t g2;
                if ((t & TAG_LOCK) || TAG_KIND(t) != GW_KIND_IP || retire(seg, p, t, now, &g2) != 0)
                    continue;
                int rc = publish(seg, p, g2, &id, idbytes, idlen);
                if (rc != 0)
                    return rc;
                uint32_t up = p;
                settle_duplicate(seg, &id, &up, &g2, now);
                *out = (struct gw_acct){.index = up, .gen = g2};
                return 0;
            }
        }
        /* relaxed: statistics. */
        atomic_fetch_add_explicit(&seg->hdr->table_full, 1, memory_order_relaxed);
        return GW_EFULL;
    }
    atomic_fetch_add_explicit(&seg->hdr->table_full, 1, memory_order_relaxed);
    return GW_EFULL;
}

int gw_ledger_reclaim_idle(struct gw_segment *seg, uint64_t now)
{
    int n = 0;
    for (uint32_t p = 0; p < seg->cfg.accounts; p++) {
        uint64_t t = atomic_load_explicit(&acct_at(seg, p)->tag, memory_order_acquire);
        uint8_t g2;
        if ((t & TAG_LOCK) || TAG_KIND(t) != GW_KIND_IP || retire(seg, p, t, now, &g2) != 0)
            continue;
        /* release: the bumped cells are visible before the entry is empty. */
        atomic_store_explicit(&acct_at(seg, p)->tag, TAG_EMPTY(g2), memory_order_release);
        n++;
    }
    return n;
}

int gw__acct_ok(const struct gw_segment *seg, struct gw_acct a)
{
    if (a.index >= seg->cfg.accounts)
        return 0;
    uint64_t t = atomic_load_explicit(&acct_at(seg, a.index)->tag, memory_order_acquire);
    return !(t & TAG_LOCK) && TAG_KIND(t) != 0 && TAG_GEN(t) == a.gen;
}

struct gw_budget *gw__acct_budget(const struct gw_segment *seg, struct gw_acct a)
{
    if (!gw__acct_ok(seg, a))
        return NULL;
    /* relaxed: written before the tag's release, which gw__acct_ok acquired. */
    uint32_t b = atomic_load_explicit(&acct_at(seg, a.index)->budget_idx, memory_order_relaxed);
    if (b == NO_BUDGET || b >= seg->cfg.budgets)
        return NULL;
    return budget_at(seg, b);
}

int gw_ledger_inflight_take(struct gw_segment *seg, struct gw_acct a, uint64_t max)
{
    if (a.index >= seg->cfg.accounts)
        return -EINVAL;
    _Atomic uint64_t *cell = &acct_at(seg, a.index)->cell[CELL_INFLIGHT];
    /* relaxed: a counter; the CAS makes check-and-increment atomic. */
    uint64_t c = atomic_load_explicit(cell, memory_order_relaxed);
    for (;;) {
        if (CELL_GEN(c) != a.gen)
            return GW_ESTALE;
        if (CELL_V(c) >= max)
            return GW_EREFUSED;
        if (atomic_compare_exchange_weak_explicit(cell, &c, CELL(a.gen, CELL_V(c) + 1),
                                                  memory_order_relaxed, memory_order_relaxed))
            return 0;
    }
}

int gw_ledger_inflight_put(struct gw_segment *seg, struct gw_acct a)
{
    if (a.index >= seg->cfg.accounts)
        return -EINVAL;
    return gw__cell_add(&acct_at(seg, a.index)->cell[CELL_INFLIGHT], a.gen, 1, -1);
}

uint64_t gw_ledger_inflight(const struct gw_segment *seg, struct gw_acct a)
{
    if (a.index >= seg->cfg.accounts)
        return 0;
    uint64_t c =
        atomic_load_explicit(&acct_at(seg, a.index)->cell[CELL_INFLIGHT], memory_order_relaxed);
    return CELL_GEN(c) == a.gen ? CELL_V(c) : 0;
}

int gw_ledger_money(const struct gw_segment *seg, struct gw_acct a, struct gw_money *m)
{
    memset(m, 0, sizeof(*m));
    struct gw_budget *b = gw__acct_budget(seg, a);
    if (!b)
        return -ENOENT;
    for (uint32_t l = 0; l < seg->cfg.lanes; l++) {
        /* relaxed: each column is a single-writer total; a snapshot taken
         * while others work is approximate, and exact when quiescent. */
        m->reserved_us += atomic_load_explicit(&b->col[l].reserved_us, memory_order_relaxed);
        m->used_us += atomic_load_explicit(&b->col[l].used_us, memory_order_relaxed);
        m->refunded_us += atomic_load_explicit(&b->col[l].refunded_us, memory_order_relaxed);
    }
    return 0;
}

size_t gw_ledger_id(const struct gw_segment *seg, struct gw_acct a, enum gw_kind *kind, char *buf,
                    size_t buflen)
{
    if (!gw__acct_ok(seg, a) || buflen == 0)
        return 0;
    struct gw_account *acc = acct_at(seg, a.index);
    uint64_t words[GW_ID_MAX / 8];
    for (int i = 0; i < GW_ID_MAX / 8; i++)
        words[i] = atomic_load_explicit(&acc->id[i], memory_order_relaxed);
    size_t n = atomic_load_explicit(&acc->idlen, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    uint64_t t = atomic_load_explicit(&acc->tag, memory_order_relaxed);
    if ((t & TAG_LOCK) || TAG_GEN(t) != a.gen)
        return 0; /* changed while we read: the caller shows nothing */
    *kind = (enum gw_kind)TAG_KIND(t);
    if (n > GW_ID_MAX)
        n = GW_ID_MAX;
    if (n >= buflen)
        n = buflen - 1;
    memcpy(buf, words, n);
    buf[n] = '\0';
    return n;
}

void gw__ledger_unlock_dead(struct gw_segment *seg, pid_t pid)
{
    for (uint32_t p = 0; p < seg->cfg.accounts; p++) {
        struct gw_account *a = acct_at(seg, p);
        uint64_t t = atomic_load_explicit(&a->tag, memory_order_acquire);
        if (!(t & TAG_LOCK) || TAG_PID(t) != (pid & 0x3fffff))
            continue;
        /* The dead process was inserting (cells idle, identity maybe half
         * written) or reclaiming an idle ip account (the lock overwrote its
         * tag bits). Either way the entry goes back to empty at the next
         * generation: an idle account is equivalent to no account, and the
         * one request that may have raced a reclaim is all that is lost. */
        uint8_t ng = (uint8_t)(TAG_GEN(t) + 1);
        for (int k = 0; k < ACCT_CELLS; k++)
            atomic_store_explicit(&a->cell[k], CELL(ng, 0), memory_order_relaxed);
        gw__moving_clear(seg, p);
        /* release: the reset cells are visible before the entry is empty. */
        atomic_store_explicit(&a->tag, TAG_EMPTY(ng), memory_order_release);
    }
}

int gw_ledger_ban(struct gw_segment *seg, struct gw_acct a, uint64_t until_us)
{
    if (a.index >= seg->cfg.accounts || until_us > CELL_VMASK)
        return -EINVAL;
    _Atomic uint64_t *cell = &acct_at(seg, a.index)->cell[CELL_BAN];
    /* relaxed: the ban cell is self-contained (nothing is published with
     * it); the CAS only has to expect the generation. */
    uint64_t c = atomic_load_explicit(cell, memory_order_relaxed);
    for (;;) {
        if (CELL_GEN(c) != a.gen)
            return GW_ESTALE;
        if (atomic_compare_exchange_weak_explicit(cell, &c, CELL(a.gen, until_us),
                                                  memory_order_relaxed, memory_order_relaxed))
            return 0;
    }
}

uint64_t gw_ledger_banned_until(const struct gw_segment *seg, struct gw_acct a, uint64_t now_us)
{
    if (a.index >= seg->cfg.accounts)
        return 0;
    /* relaxed: a ban set a moment ago may be seen one request late. */
    uint64_t c = atomic_load_explicit(&acct_at(seg, a.index)->cell[CELL_BAN], memory_order_relaxed);
    if (CELL_GEN(c) != a.gen || CELL_V(c) <= now_us)
        return 0;
    return CELL_V(c);
}
