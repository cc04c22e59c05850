/* netrules.c - address-range bans and allow-list entries with a TTL, kept
 * in the segment's own region (issue 18) so that every front sees them and
 * they survive restarts of any process, the master included.
 *
 * One writer, many readers. Only the master writes (its admin socket:
 * gpuwardenctl ban|unban|allow|unallow cidr ...). Each rule is a seqlock
 * cell over atomic words, as the limit overrides are (limits.c): seq goes
 * odd, the fields are stored, seq goes even; the master then moves the
 * area's epoch on (release). A front keeps a private copy of the live
 * rules (struct gw_net_view) and re-reads the cells only when it sees a
 * new epoch (acquire), so the hot path is one atomic load and a scan of a
 * few rules in its own memory: no lock, no write, no shared cache line
 * written per request.
 *
 * Who repairs what: a master killed between the odd and the even store
 * leaves one cell with an odd seq. Readers skip it (a rule half written is
 * not in force: the command that wrote it got no answer, so the operator
 * retries it), and the next master, before it serves anything, clears
 * every odd cell and moves the epoch on (gw_net_repair). Expired rules
 * need no repair: readers ignore them by their end time, and the master
 * reuses their cells.
 */
#include "seg_internal.h"

#include <errno.h>
#include <string.h>

/* A rule cell. kind 0 = empty. addr[] is the range's base in its 128-bit
 * form (gw_addr), big-endian bytes in two words; meta = bits | v4 << 8. */
struct gw_net_cell {
    _Atomic uint64_t seq;
    _Atomic uint64_t kind;
    _Atomic uint64_t addr[2];
    _Atomic uint64_t meta;
    _Atomic uint64_t until_us;
    _Atomic uint64_t created_us;
    uint64_t pad;
};
_Static_assert(sizeof(struct gw_net_cell) == 64, "net rule cell layout");
_Static_assert(_Alignof(struct gw_net_cell) == 8, "net rule cell alignment");

struct gw_net_area {
    _Atomic uint64_t epoch;
    uint64_t pad[7];
    struct gw_net_cell cell[GW_NET_RULES];
};
/* 64 bytes of epoch, then GW_NET_RULES = 256 cells of 64 */
_Static_assert(sizeof(struct gw_net_area) == 16448, "net rules area layout");
_Static_assert(_Alignof(struct gw_net_area) == 8, "net rules area alignment");

size_t gw__net_area_bytes(void)
{
    return sizeof(struct gw_net_area);
}

static void cell_begin(struct gw_net_cell *c)
{
    /* relaxed: one writer reads its own seq. */
    uint64_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
    atomic_store_explicit(&c->seq, s + 1, memory_order_relaxed);
    /* release fence: a reader that sees any field stored after this sees the odd seq. */
    atomic_thread_fence(memory_order_release);
}

static void cell_end(struct gw_net_cell *c)
{
    uint64_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
    /* release: the fields happen-before a reader's acquire of the even seq. */
    atomic_store_explicit(&c->seq, s + 1, memory_order_release);
}

static void bump_epoch(struct gw_segment *seg)
{
    /* release: pairs with the acquire in gw_net_check; one writer. */
    atomic_fetch_add_explicit(&seg->nets->epoch, 1, memory_order_release);
}

static void addr_words(const struct gw_addr *a, uint64_t w[2])
{
    memcpy(w, a->b, 16);
}

/* Reads cell c as one version: 1 with *r filled, 0 empty or being written
 * (after a few tries: a master killed mid-write leaves it odd). */
static int cell_read(const struct gw_net_cell *c, struct gw_net_rule *r)
{
    for (int tries = 0; tries < 4; tries++) {
        /* acquire: the fields below are at least as new as this seq. */
        uint64_t s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (s1 & 1)
            continue;
        /* relaxed loads inside the seqlock: checked by the seq re-read. */
        uint64_t kind = atomic_load_explicit(&c->kind, memory_order_relaxed);
        uint64_t w[2] = {atomic_load_explicit(&c->addr[0], memory_order_relaxed),
                         atomic_load_explicit(&c->addr[1], memory_order_relaxed)};
        uint64_t meta = atomic_load_explicit(&c->meta, memory_order_relaxed);
        uint64_t until = atomic_load_explicit(&c->until_us, memory_order_relaxed);
        uint64_t created = atomic_load_explicit(&c->created_us, memory_order_relaxed);
        /* acquire fence: the loads above complete before seq is read again. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) != s1)
            continue;
        if (kind != GW_NET_BAN && kind != GW_NET_ALLOW)
            return 0;
        memset(r, 0, sizeof(*r));
        r->kind = (int)kind;
        memcpy(r->cidr.base.b, w, 16);
        r->cidr.bits = (uint8_t)(meta & 0xff);
        r->cidr.v4 = (uint8_t)((meta >> 8) & 1);
        r->until_us = until;
        r->created_us = created;
        return 1;
    }
    return 0;
}

static void cell_write(struct gw_net_cell *c, const struct gw_net_rule *r)
{
    uint64_t w[2] = {0, 0};
    if (r)
        addr_words(&r->cidr.base, w);
    cell_begin(c);
    /* relaxed stores inside the seqlock: ordered by cell_begin/cell_end. */
    atomic_store_explicit(&c->kind, r ? (uint64_t)r->kind : 0, memory_order_relaxed);
    atomic_store_explicit(&c->addr[0], w[0], memory_order_relaxed);
    atomic_store_explicit(&c->addr[1], w[1], memory_order_relaxed);
    atomic_store_explicit(&c->meta, r ? (uint64_t)r->cidr.bits | (uint64_t)r->cidr.v4 << 8 : 0,
                          memory_order_relaxed);
    atomic_store_explicit(&c->until_us, r ? r->until_us : 0, memory_order_relaxed);
    atomic_store_explicit(&c->created_us, r ? r->created_us : 0, memory_order_relaxed);
    cell_end(c);
}

static int same(const struct gw_net_rule *a, int kind, const struct gw_cidr *c)
{
    return a->kind == kind && a->cidr.bits == c->bits && a->cidr.v4 == c->v4 &&
           memcmp(&a->cidr.base, &c->base, sizeof(c->base)) == 0;
}

int gw_net_set(struct gw_segment *seg, const struct gw_net_rule *r, uint64_t now_us)
{
    if (!seg->nets || (r->kind != GW_NET_BAN && r->kind != GW_NET_ALLOW) || r->until_us <= now_us)
        return -EINVAL;
    struct gw_net_cell *slot = NULL, *free_cell = NULL;
    for (int i = 0; i < GW_NET_RULES && !slot; i++) {
        struct gw_net_rule cur;
        struct gw_net_cell *c = &seg->nets->cell[i];
        if (!cell_read(c, &cur) || cur.until_us <= now_us) {
            if (!free_cell)
                free_cell = c;
        } else if (same(&cur, r->kind, &r->cidr)) {
            slot = c; /* the same rule again: its end time is replaced */
        }
    }
    if (!slot)
        slot = free_cell;
    if (!slot)
        return GW_EFULL;
    cell_write(slot, r);
    bump_epoch(seg);
    return 0;
}

int gw_net_remove(struct gw_segment *seg, int kind, const struct gw_cidr *c, uint64_t now_us)
{
    if (!seg->nets)
        return -EINVAL;
    for (int i = 0; i < GW_NET_RULES; i++) {
        struct gw_net_rule cur;
        struct gw_net_cell *cell = &seg->nets->cell[i];
        if (cell_read(cell, &cur) && cur.until_us > now_us && same(&cur, kind, c)) {
            cell_write(cell, NULL);
            bump_epoch(seg);
            return 0;
        }
    }
    return -ENOENT;
}

int gw_net_list(const struct gw_segment *seg, uint64_t now_us, struct gw_net_rule *out, int max)
{
    int n = 0;
    for (int i = 0; seg->nets && i < GW_NET_RULES && n < max; i++)
        if (cell_read(&seg->nets->cell[i], &out[n]) && out[n].until_us > now_us)
            n++;
    return n;
}

void gw_net_repair(struct gw_segment *seg)
{
    int fixed = 0;
    for (int i = 0; seg->nets && i < GW_NET_RULES; i++) {
        struct gw_net_cell *c = &seg->nets->cell[i];
        /* relaxed: the master runs this before any other writer exists. */
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) & 1) {
            /* make the seq even first, then write the empty rule as usual */
            atomic_fetch_add_explicit(&c->seq, 1, memory_order_relaxed);
            cell_write(c, NULL);
            fixed = 1;
        }
    }
    if (fixed)
        bump_epoch(seg);
}

int gw_net_check(const struct gw_segment *seg, struct gw_net_view *v, const struct gw_addr *a,
                 uint64_t now_us, uint64_t *until_us)
{
    if (!seg->nets)
        return 0;
    /* acquire: pairs with bump_epoch; a new epoch means the cells written
     * before it are visible to the re-read below. */
    uint64_t e = atomic_load_explicit(&seg->nets->epoch, memory_order_acquire);
    if (!v->valid || e != v->epoch) {
        v->n = gw_net_list(seg, now_us, v->rules, GW_NET_RULES);
        v->epoch = e;
        v->valid = 1;
    }
    int verdict = 0;
    for (int i = 0; i < v->n; i++) {
        const struct gw_net_rule *r = &v->rules[i];
        if (r->until_us <= now_us || !gw_cidr_contains(&r->cidr, a))
            continue;
        if (r->kind == GW_NET_ALLOW)
            return GW_NET_ALLOW; /* an allow entry wins over any ban */
        if (!verdict || r->until_us > *until_us)
            *until_us = r->until_us;
        verdict = GW_NET_BAN;
    }
    return verdict;
}
