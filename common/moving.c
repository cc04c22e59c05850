/* moving.c - the "moving" window kind (issue 18): at most N requests in ANY
 * window of the period, where the GCRA kind (gcra.c) admits N at once and
 * then one every period/N (so "10 per minute" lets 19 through in the first
 * minute). docs/ARCHITECTURE.md, "Rate windows", states both exactly. A
 * moving window is one of two forms, chosen by N (gw_rate_make_moving):
 *
 * EXACT (N <= GW_MOVING_EXACT_MAX = 16, period at most a day): a sliding
 * log. The rate cell (one 64-bit word, 8 bits of account generation, 56 of
 * value, like every rate cell) is the log's head, and the N admission times
 * live in a side region, one 64-byte log of 16 32-bit slots per (account,
 * rate cell), overflow buckets after the accounts (struct gw_mvlog). Head
 * value:
 *   bit 55      MV_FLAG: a moving cell (a GCRA TAT never reaches 2^55 us)
 *   bit 54      MX_FLAG: the exact form
 *   bits 50..53 N - 1 (a head written for another N reads as a new log)
 *   bit 49      full: N claims have been made since the head was new
 *   bits 44..48 k: claims made, mod 2N; claim k uses slot k mod N, and
 *               k / N is its lap parity
 *   bits 0..43  the last admission's time, ms since the epoch
 * A slot holds its claim's lap parity (bit 31) and time (ms mod 2^31), or
 * MX_NEVER (not written since the log was cleared) or MX_HOLE. A request
 * at now (whole ms) reads the head; when the log is full and its last
 * admission is less than P old, it reads the slot of claim k - N, the
 * N-th most recent admission, and passes when that is at least P old or a
 * hole. One CAS moves the head on (k + 1, last = max(now, last)) and a
 * plain store writes the same time into the slot. Admission times are
 * therefore never decreasing in the head's order (a front that read its
 * clock, then lost the CPU while another admitted, is stamped with the
 * other's time), and the check uses the request's own now, which is
 * stricter. The guarantee: no window of length P holds more than N
 * admission times (in whole ms), and a client sending faster than N per P
 * gets exactly N in every window (admitted at 0..9 s, 60..69 s, ... for
 * "10 per minute"). A rollback (another cell of the all-or-nothing
 * admission refused) turns the slot into a hole by CAS (only if it still
 * holds our value): a free place, which is exactly right
 * (docs/ARCHITECTURE.md gives the argument). A slot still holding the
 * previous lap's parity has not received its claim's store yet (the writer
 * is between its CAS and its store, or died there): it is read as the
 * next landed claim's time, or the head's last, never earlier than the
 * truth (mx_oldest), so a slow or dead writer only ever makes it refuse.
 *
 * BUCKETS (N in 17..255, or a period over a day): a sliding window counter
 * made conservative, in the cell alone: the period P is cut in 4 buckets of
 * b = P/4 (rounded up to what the account's width lane can hold, below),
 * and the cell counts the requests of the current bucket and of the 4
 * before it:
 *   bit 55      MV_FLAG, bit 54 clear
 *   bits 40..53 the current bucket's index (wall-clock us / b) mod 2^14
 *   bits 0..39  5 counts of 8 bits, count[0] the current bucket
 * A request is admitted when the 5 counts sum to less than N. Any window of
 * length P that ends now lies inside those 5 buckets (they cover at least
 * 4b >= P), so no window of length P ever holds more than N. The price is
 * the other side: a refused client waits up to b = P/4 longer than the
 * exact log would make it wait, and a client sending steadily gets N per P
 * to N per 1.25 P. N is at most 255 (a count is 8 bits); larger limits use
 * the GCRA kind (config: "expected at most 255 for a moving window").
 *
 * Reclaim (ledger.c) must tell an idle moving cell without the config: the
 * account's `widths` word holds, per rate cell, 16 bits set by the
 * admitting process before its CAS on the cell: the form (bit 15: exact),
 * a unit (bits 13..14: ms, s, min, h) and a count of units (bits 0..12):
 * the bucket width, or the exact form's period rounded up. A lane that is
 * unknown (0) or of the other form leaves the account busy (reclaim waits),
 * never idle by mistake. An exact cell is idle once its last admission is
 * P old (every slot then is).
 *
 * Dying at any instruction (docs/RELIABILITY.md): between the head's CAS
 * and the slot's store, the slot keeps the previous lap's parity and reads
 * as not written (above) until the slot's next claim rewrites it; between
 * a CAS and the rollback of a refused all-or-nothing admission, the unit
 * stays counted (refuses, never admits). Nothing needs repair: heads and
 * slots are single words. Reclaim clears an account's logs while it holds
 * the entry locked (gw__moving_clear), so a new owner's log has no slot
 * written; a store delayed past a period, a reclaim and a reuse of the
 * account could still land in the new owner's log, and a reload that
 * changes N starts a new log over the old one's slots: either may let one
 * admission through early, once. A wall clock stepping back makes the
 * exact form's requests look early (they are checked with their own
 * reading): it refuses until the clock is a period past the N-th most
 * recent admission, never admitting extra; it makes the bucket form's
 * index go back, which drops the counts (up to N extra once); a bucket
 * index that wraps (2^14 buckets, 2.8 days at P = 1 minute) may read old
 * counts as recent, which only refuses, for at most 5 buckets. Likewise an
 * exact slot 2^31 ms (24.8 days) or more older than the last admission (a
 * client that came back every few days) may read as recent: it refuses,
 * at most until the next admission a period later.
 */
#include "seg_internal.h"

#include <errno.h>
#include <stdalign.h>

#define MV_FLAG (1ull << 55)
#define MX_FLAG (1ull << 54)
/* buckets */
#define MV_EPOCH_SHIFT 40
#define MV_EPOCH_MASK 0x3fffull
#define MV_COUNTS_MASK ((1ull << 40) - 1)
#define MV_BUCKETS 5
#define MV_MAX_LIMIT 255
/* exact */
#define MX_N_SHIFT 50
#define MX_FULL_SHIFT 49
#define MX_K_SHIFT 44
#define MX_LAST_MASK ((1ull << 44) - 1)
#define MX_MAX_PERIOD_US (86400ull * 1000000ull)
#define MX_T_MASK 0x7fffffffu /* a slot's stamp bits */
#define MX_NEVER 0u           /* a slot not written since the log was cleared */
#define MX_HOLE MX_T_MASK     /* a claim rolled back: a free place */
_Static_assert(GW_MOVING_EXACT_MAX <= 16, "N - 1 in 4 bits, claims mod 2N in 5");

/* One exact cell's log: the last N admissions, each as its lap parity
 * (bit 31) and its time (ms since the epoch, mod 2^31; MX_NEVER, MX_HOLE).
 * One cache line. */
struct gw_mvlog {
    alignas(64) _Atomic uint32_t t[GW_MOVING_EXACT_MAX];
};
_Static_assert(sizeof(struct gw_mvlog) == 64, "moving log layout");
_Static_assert(_Alignof(struct gw_mvlog) == 64, "moving log alignment");

size_t gw__mvlog_area_bytes(uint32_t accounts)
{
    return ((size_t)accounts + GW_OVF_BUCKETS) * GW_RATE_CELLS * sizeof(struct gw_mvlog);
}

struct gw_mvlog *gw__mvlog(const struct gw_segment *seg, uint32_t index, int cell)
{
    size_t row =
        index & GW_OVF_INDEX ? seg->cfg.accounts + (index & ~GW_OVF_INDEX) % GW_OVF_BUCKETS : index;
    return &seg->mvlog[row * GW_RATE_CELLS + (size_t)cell];
}

/* ------------------------------------------------------- width lanes */

#define LANE_EXACT 0x8000u
static const uint64_t lane_unit_us[4] = {1000ull, 1000000ull, 60000000ull, 3600000000ull};

/* The smallest lane value of at least `us` (exact: the period, rounded up
 * so that reclaim never calls a cell idle early), 0 if none fits. */
static uint16_t lane_code(uint64_t us, int exact)
{
    for (unsigned u = 0; u < 4; u++) {
        uint64_t n = (us + lane_unit_us[u] - 1) / lane_unit_us[u];
        if (n <= 0x1fff)
            return (uint16_t)((exact ? LANE_EXACT : 0) | u << 13 | n);
    }
    return 0;
}

static uint64_t lane_us(uint16_t code)
{
    return (uint64_t)(code & 0x1fff) * lane_unit_us[(code >> 13) & 3];
}

int gw_rate_make_moving(struct gw_rate *r, uint64_t limit, uint64_t period_us)
{
    if (limit == 0 || limit > MV_MAX_LIMIT || period_us < 4000 ||
        period_us > 4ull * 0x1fff * 3600000000ull)
        return -EINVAL;
    r->interval_us = (period_us + limit - 1) / limit; /* for RateLimit's t */
    r->tolerance_us = 0;
    r->moving_limit = limit;
    if (limit <= GW_MOVING_EXACT_MAX && period_us <= MX_MAX_PERIOD_US) {
        r->moving_bucket_us = 0;
        r->moving_period_ms = (period_us + 999) / 1000; /* whole ms, never shorter */
        return 0;
    }
    /* b >= P/4 (4 buckets cover the period), as a width lane can hold it */
    r->moving_bucket_us = lane_us(lane_code((period_us + 3) / 4, 0));
    r->moving_period_ms = 0;
    return 0;
}

/* ------------------------------------------------------- bucket form */

/* The 5 counts as they stand at bucket `cur` (absolute index). */
static uint64_t counts_at(uint64_t v, uint64_t cur)
{
    if ((v & (MV_FLAG | MX_FLAG)) != MV_FLAG)
        return 0; /* empty, a GCRA TAT or an exact head from before a reload */
    uint64_t d = ((cur & MV_EPOCH_MASK) - ((v >> MV_EPOCH_SHIFT) & MV_EPOCH_MASK)) & MV_EPOCH_MASK;
    if (d >= MV_BUCKETS)
        return 0;
    return (v << (8 * d)) & MV_COUNTS_MASK;
}

static uint64_t sum_of(uint64_t counts)
{
    uint64_t s = 0;
    for (int i = 0; i < MV_BUCKETS; i++)
        s += (counts >> (8 * i)) & 0xff;
    return s;
}

static int buckets_decide(uint64_t v, uint64_t now, const struct gw_rate *r, uint64_t *nv,
                          uint64_t *wait)
{
    uint64_t b = r->moving_bucket_us, cur = now / b;
    uint64_t counts = counts_at(v, cur), total = sum_of(counts);
    if (total < r->moving_limit) {
        *nv = MV_FLAG | (cur & MV_EPOCH_MASK) << MV_EPOCH_SHIFT | (counts + 1);
        return 1;
    }
    /* the oldest buckets leave the view one by one: when enough have gone */
    uint64_t left = total;
    for (int i = MV_BUCKETS - 1; i >= 0; i--) {
        left -= (counts >> (8 * i)) & 0xff;
        if (left < r->moving_limit) {
            *wait = (cur - (uint64_t)i + MV_BUCKETS) * b - now;
            return 0;
        }
    }
    *wait = b; /* not reached: left is 0 < limit after the last bucket */
    return 0;
}

static uint64_t buckets_undo(uint64_t v, uint64_t taken)
{
    if ((v & (MV_FLAG | MX_FLAG)) != MV_FLAG)
        return v;
    uint64_t d =
        (((v >> MV_EPOCH_SHIFT) & MV_EPOCH_MASK) - ((taken >> MV_EPOCH_SHIFT) & MV_EPOCH_MASK)) &
        MV_EPOCH_MASK;
    if (d >= MV_BUCKETS || ((v >> (8 * d)) & 0xff) == 0)
        return v; /* that bucket has left the view: nothing to give back */
    return v - (1ull << (8 * d));
}

/* -------------------------------------------------------- exact form */

/* Claim k (mod 2N) belongs to lap k / N; a slot carries its writer's lap
 * parity so that a reader can tell the claim it expects (N before its
 * own) from one a lap older whose store has not landed yet. */
static uint64_t mx_parity(uint64_t k, uint64_t n)
{
    return k >= n;
}

struct mx_head {
    uint64_t n, k, full, last; /* k: claims mod 2N; last: last admission, ms */
};

/* The head as it stands for limit n: a new log when the cell holds
 * something else (nothing, a GCRA TAT, the bucket form, another N). */
static struct mx_head mx_read(uint64_t v, const struct gw_rate *r)
{
    struct mx_head h = {.n = r->moving_limit};
    if ((v & (MV_FLAG | MX_FLAG)) != (MV_FLAG | MX_FLAG) || ((v >> MX_N_SHIFT) & 15) + 1 != h.n)
        return h;
    h.k = (v >> MX_K_SHIFT) & 31;
    h.full = (v >> MX_FULL_SHIFT) & 1;
    h.last = v & MX_LAST_MASK;
    if (h.k >= 2 * h.n || (!h.full && h.k >= h.n))
        return (struct mx_head){.n = r->moving_limit}; /* not a value we write */
    return h;
}

/* The slot value claim k writes for a stamp in ms: its lap parity, then
 * the stamp mod 2^31 kept off MX_NEVER (0) and MX_HOLE (one or two ms
 * later, which only refuses that much longer). */
static uint32_t mx_value(uint64_t k, uint64_t n, uint64_t stamp_ms)
{
    uint32_t t = (uint32_t)(stamp_ms & MX_T_MASK);
    if (t == MX_NEVER || t == MX_HOLE)
        t = 1;
    return (uint32_t)mx_parity(k, n) << 31 | t;
}

/* How old (ms, may be negative) the stamp in slot value x is at now_ms,
 * through the head's last admission, which is at or after every stamp and
 * less than 2^31 ms after any the log holds (N gaps of under a day). */
static int64_t mx_age(uint32_t x, const struct mx_head *h, uint64_t now_ms)
{
    uint64_t behind = ((uint32_t)h->last - x) & MX_T_MASK;
    if (behind > MX_T_MASK - (1u << 24))
        behind = 0; /* a stamp moved a ms or two later (mx_value) */
    return (int64_t)behind + (int64_t)now_ms - (int64_t)h->last;
}

/* The time claim k - N was admitted at, as far as the log can tell: 1 and
 * *age when it is known or bounded, 0 when it is a free place. A slot not
 * yet holding claim k - N (its writer has not stored it yet, or died
 * before) is bounded by the next claim's stamp that has landed, or by the
 * head's last admission: the stamps never decrease, so the bound is never
 * earlier than the truth and the check only errs towards refusing. */
static int mx_oldest(const struct gw_mvlog *log, const struct mx_head *h, uint64_t now_ms,
                     int64_t *age)
{
    uint64_t n = h->n;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t claim = (h->k + n + j) % (2 * n); /* claim k - N + j */
        /* relaxed: a slot is a value on its own; the parity it carries,
         * not an order, says whose value it is (see mx_value). */
        uint32_t x = atomic_load_explicit(&log->t[claim % n], memory_order_relaxed);
        int ours = (x >> 31) == mx_parity(claim, n) && (x & MX_T_MASK) != MX_NEVER;
        if (ours && (x & MX_T_MASK) == MX_HOLE) {
            if (j == 0)
                return 0; /* claim k - N was rolled back */
            continue;     /* no time there: look further */
        }
        if (ours) {
            *age = mx_age(x, h, now_ms);
            return 1;
        }
    }
    *age = (int64_t)now_ms - (int64_t)h->last;
    return 1;
}

static int exact_decide(uint64_t v, uint64_t now, const struct gw_rate *r,
                        const struct gw_mvlog *log, uint64_t *nv, uint64_t *wait)
{
    uint64_t now_ms = now / 1000, p = r->moving_period_ms;
    struct mx_head h = mx_read(v, r);
    int64_t age;
    /* a full log whose last admission is less than P old: the N-th most
     * recent admission decides (every slot is older than P otherwise) */
    if (h.full && now_ms < h.last + p && mx_oldest(log, &h, now_ms, &age) && age < (int64_t)p) {
        *wait = (uint64_t)((int64_t)p - age) * 1000 - now % 1000;
        return 0;
    }
    uint64_t k = (h.k + 1) % (2 * h.n), full = h.full || k == h.n;
    uint64_t stamp = now_ms > h.last ? now_ms : h.last;
    *nv = MV_FLAG | MX_FLAG | (h.n - 1) << MX_N_SHIFT | full << MX_FULL_SHIFT | k << MX_K_SHIFT |
          (stamp & MX_LAST_MASK);
    return 1;
}

/* The claim (mod 2N) whose CAS wrote head value nv. */
static uint64_t mx_claim_of(uint64_t nv, uint64_t n)
{
    return (((nv >> MX_K_SHIFT) & 31) + 2 * n - 1) % (2 * n);
}

/* --------------------------------------------------------- either form */

int gw__moving_decide(uint64_t v, uint64_t now, const struct gw_rate *r, const struct gw_mvlog *log,
                      uint64_t *nv, uint64_t *wait)
{
    if (r->moving_period_ms)
        return exact_decide(v, now, r, log, nv, wait);
    return buckets_decide(v, now, r, nv, wait);
}

void gw__moving_taken(struct gw_mvlog *log, const struct gw_rate *r, uint64_t nv)
{
    if (!r->moving_period_ms)
        return;
    uint64_t n = r->moving_limit, k = mx_claim_of(nv, n);
    /* relaxed: nothing is published with the slot, and its readers tell
     * by its parity whether it holds this claim yet (mx_oldest). */
    atomic_store_explicit(&log->t[k % n], mx_value(k, n, nv & MX_LAST_MASK), memory_order_relaxed);
}

void gw__moving_give_back(_Atomic uint64_t *cell, uint8_t gen, struct gw_mvlog *log,
                          const struct gw_rate *r, uint64_t took)
{
    if (r->moving_period_ms) {
        /* A hole, only if the slot still holds our value: if the next lap
         * has overwritten it, ours is out of the log already. relaxed: as
         * gw__moving_taken; the CAS makes it ours-or-nothing. The head is
         * left as it is: the claim stays counted in k, as a free place. */
        uint64_t n = r->moving_limit, k = mx_claim_of(took, n);
        uint32_t mine = mx_value(k, n, took & MX_LAST_MASK);
        (void)atomic_compare_exchange_strong_explicit(&log->t[k % n], &mine,
                                                      (uint32_t)mx_parity(k, n) << 31 | MX_HOLE,
                                                      memory_order_relaxed, memory_order_relaxed);
        return;
    }
    /* relaxed: as gw__cell_add, the cell is self-contained. */
    uint64_t c = atomic_load_explicit(cell, memory_order_relaxed);
    while (CELL_GEN(c) == gen && !atomic_compare_exchange_weak_explicit(
                                     cell, &c, CELL(gen, buckets_undo(CELL_V(c), took)),
                                     memory_order_relaxed, memory_order_relaxed))
        ;
}

uint64_t gw__moving_remaining(uint64_t v, uint64_t now, const struct gw_rate *r,
                              const struct gw_mvlog *log)
{
    if (!r->moving_period_ms) {
        uint64_t total = sum_of(counts_at(v, now / r->moving_bucket_us));
        return total >= r->moving_limit ? 0 : r->moving_limit - total;
    }
    uint64_t now_ms = now / 1000, p = r->moving_period_ms;
    struct mx_head h = mx_read(v, r);
    if (now_ms >= h.last + p)
        return h.n;
    uint64_t used = h.full ? h.n : h.k, in = 0;
    for (uint64_t i = 0; i < used; i++) {
        /* relaxed: a figure for headers and status, each slot on its own */
        uint32_t x = atomic_load_explicit(&log->t[i], memory_order_relaxed);
        uint32_t t = x & MX_T_MASK;
        in += t != MX_NEVER && t != MX_HOLE && mx_age(x, &h, now_ms) < (int64_t)p;
    }
    return in >= h.n ? 0 : h.n - in;
}

void gw__moving_clear(struct gw_segment *seg, uint32_t index)
{
    for (int c = 0; c < GW_RATE_CELLS; c++) {
        struct gw_mvlog *log = gw__mvlog(seg, index, c);
        for (int i = 0; i < GW_MOVING_EXACT_MAX; i++)
            /* relaxed: the entry is locked by us; the tag's release store
             * that publishes it again orders these before its next user */
            atomic_store_explicit(&log->t[i], MX_NEVER, memory_order_relaxed);
    }
}

int gw__moving_is(uint64_t v)
{
    return (v & MV_FLAG) != 0;
}

void gw__moving_note_width(struct gw_account *a, int cell, const struct gw_rate *r)
{
    uint64_t code = r->moving_period_ms ? lane_code(r->moving_period_ms * 1000, 1)
                                        : lane_code(r->moving_bucket_us, 0);
    uint64_t sh = 16u * (unsigned)cell;
    /* relaxed: the widths word only tells reclaim how to read a cell; it is
     * set before our CAS on the cell and a reader that sees no width, or
     * one of the other form, keeps the account (busy), so no order beyond
     * the CAS's own is needed. */
    uint64_t w = atomic_load_explicit(&a->widths, memory_order_relaxed);
    while (((w >> sh) & 0xffff) != code) {
        uint64_t nw = (w & ~(0xffffull << sh)) | code << sh;
        if (atomic_compare_exchange_weak_explicit(&a->widths, &w, nw, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
}

int gw__moving_idle(const struct gw_account *a, int cell, uint64_t v, uint64_t now)
{
    /* relaxed: see gw__moving_note_width. */
    uint64_t w = atomic_load_explicit(&a->widths, memory_order_relaxed);
    uint16_t code = (uint16_t)(w >> (16u * (unsigned)cell));
    uint64_t span = lane_us(code);
    int exact = (v & MX_FLAG) != 0;
    if (span == 0 || exact != ((code & LANE_EXACT) != 0))
        return 0;
    if (exact) /* every slot is at or before the last admission */
        return now / 1000 >= (v & MX_LAST_MASK) + (span + 999) / 1000;
    return counts_at(v, now / span) == 0;
}
