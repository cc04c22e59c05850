/* jti.c - revoked JWT ids (issue 18), kept in the segment's own region
 * until the token's own expiry, so every front refuses a revoked token
 * from its next request and the list survives restarts.
 *
 * The same one-writer design as the address-range rules (netrules.c): the
 * master (admin `token.revoke`) writes a cell as a seqlock over atomic
 * words, then moves the epoch on (release); a front keeps a private copy of
 * the live entries and re-reads the cells only when the epoch moved
 * (acquire). An id is kept as its 64-bit XXH3 hash (never 0); two ids
 * with one hash would revoke each other, a 2^-64 chance per pair.
 *
 * Who repairs what: a master killed mid-write leaves one odd cell; readers
 * skip it (that revocation is not in force: its command got no answer) and
 * the next master clears it at start-up (gw_jti_repair). An entry past its
 * end is ignored and its cell reused.
 */
#include "seg_internal.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

struct gw_jti_cell {
    _Atomic uint64_t seq;
    _Atomic uint64_t hash; /* 0 = empty */
    _Atomic uint64_t until_us;
    uint64_t pad;
};
_Static_assert(sizeof(struct gw_jti_cell) == 32, "jti cell layout");
_Static_assert(_Alignof(struct gw_jti_cell) == 8, "jti cell alignment");

struct gw_jti_area {
    _Atomic uint64_t epoch;
    uint64_t pad[7];
    struct gw_jti_cell cell[GW_JTI_MAX];
};
_Static_assert(sizeof(struct gw_jti_area) == 64 + 32 * GW_JTI_MAX, "jti area layout");
_Static_assert(_Alignof(struct gw_jti_area) == 8, "jti area alignment");

size_t gw__jti_area_bytes(void)
{
    return sizeof(struct gw_jti_area);
}

uint64_t gw_jti_hash(const char *jti, size_t len)
{
    uint64_t h = XXH3_64bits(jti, len);
    return h ? h : 1;
}

/* One version of cell c: 1 with *hash, *until; 0 empty or being written. */
static int cell_read(const struct gw_jti_cell *c, uint64_t *hash, uint64_t *until)
{
    for (int tries = 0; tries < 4; tries++) {
        /* acquire: the fields below are at least as new as this seq. */
        uint64_t s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (s1 & 1)
            continue;
        /* relaxed inside the seqlock: checked by the seq re-read. */
        *hash = atomic_load_explicit(&c->hash, memory_order_relaxed);
        *until = atomic_load_explicit(&c->until_us, memory_order_relaxed);
        /* acquire fence: the loads above complete before seq is read again. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) == s1)
            return *hash != 0;
    }
    return 0;
}

static void cell_write(struct gw_jti_cell *c, uint64_t hash, uint64_t until)
{
    /* relaxed: one writer reads its own seq. */
    uint64_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
    atomic_store_explicit(&c->seq, s + 1, memory_order_relaxed);
    /* release fence: a reader that sees a field below sees the odd seq. */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&c->hash, hash, memory_order_relaxed);
    atomic_store_explicit(&c->until_us, until, memory_order_relaxed);
    /* release: the fields happen-before a reader's acquire of the even seq. */
    atomic_store_explicit(&c->seq, s + 2, memory_order_release);
}

static void bump_epoch(struct gw_segment *seg)
{
    /* release: pairs with the acquire in gw_jti_revoked; one writer. */
    atomic_fetch_add_explicit(&seg->jti->epoch, 1, memory_order_release);
}

int gw_jti_revoke(struct gw_segment *seg, uint64_t hash, uint64_t until_us, uint64_t now_us)
{
    if (!seg->jti || hash == 0 || until_us <= now_us)
        return -EINVAL;
    struct gw_jti_cell *slot = NULL, *free_cell = NULL;
    for (int i = 0; i < GW_JTI_MAX && !slot; i++) {
        uint64_t h, u;
        struct gw_jti_cell *c = &seg->jti->cell[i];
        if (!cell_read(c, &h, &u) || u <= now_us) {
            if (!free_cell)
                free_cell = c;
        } else if (h == hash) {
            slot = c; /* revoked again: the later end stands */
            if (u > until_us)
                until_us = u;
        }
    }
    if (!slot)
        slot = free_cell;
    if (!slot)
        return GW_EFULL;
    cell_write(slot, hash, until_us);
    bump_epoch(seg);
    return 0;
}

int gw_jti_count(const struct gw_segment *seg, uint64_t now_us)
{
    int n = 0;
    for (int i = 0; seg->jti && i < GW_JTI_MAX; i++) {
        uint64_t h, u;
        n += cell_read(&seg->jti->cell[i], &h, &u) && u > now_us;
    }
    return n;
}

void gw_jti_repair(struct gw_segment *seg)
{
    int fixed = 0;
    for (int i = 0; seg->jti && i < GW_JTI_MAX; i++) {
        struct gw_jti_cell *c = &seg->jti->cell[i];
        /* relaxed: the master runs this before any other writer exists. */
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) & 1) {
            atomic_fetch_add_explicit(&c->seq, 1, memory_order_relaxed);
            cell_write(c, 0, 0);
            fixed = 1;
        }
    }
    if (fixed)
        bump_epoch(seg);
}

int gw_jti_revoked(const struct gw_segment *seg, struct gw_jti_view *v, uint64_t hash,
                   uint64_t now_us)
{
    if (!seg->jti || hash == 0)
        return 0;
    /* acquire: pairs with bump_epoch; a new epoch shows the cells before it. */
    uint64_t e = atomic_load_explicit(&seg->jti->epoch, memory_order_acquire);
    if (!v->valid || e != v->epoch) {
        v->n = 0;
        for (int i = 0; i < GW_JTI_MAX; i++)
            if (cell_read(&seg->jti->cell[i], &v->hash[v->n], &v->until[v->n]) &&
                v->until[v->n] > now_us)
                v->n++;
        v->epoch = e;
        v->valid = 1;
    }
    for (int i = 0; i < v->n; i++)
        if (v->hash[i] == hash && v->until[i] > now_us)
            return 1;
    return 0;
}
