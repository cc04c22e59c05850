/* moving.c - the "moving" window kind (issue 18): at most N requests in ANY
 * window of the period, where the GCRA kind (gcra.c) admits N at once and
 * then one every period/N (so "10 per minute" lets 19 through in the first
 * minute). docs/ARCHITECTURE.md, "Rate windows", states both exactly.
 *
 * A moving cell is one 64-bit word like every rate cell (8 bits of account
 * generation, 56 of value), so admission stays one CAS per cell, all or
 * nothing across cells, and reclaim keeps working. The value is a sliding
 * window counter made conservative: the period P is cut in 4 buckets of
 * b = P/4 (rounded up to what the account's width lane can hold, below),
 * and the cell counts the requests of the current bucket and of the 4
 * before it:
 *   bit 55      MV_FLAG: a moving cell (a GCRA TAT never reaches 2^55 us)
 *   bits 40..54 the current bucket's index (wall-clock us / b) mod 2^15
 *   bits 0..39  5 counts of 8 bits, count[0] the current bucket
 * A request is admitted when the 5 counts sum to less than N. Any window of
 * length P that ends now lies inside those 5 buckets (they cover at least
 * 4b >= P), so no window of length P ever holds more than N: the guarantee
 * is exact. The price is the other side: the 5 buckets cover up to 5b, so
 * a refused client waits up to b = P/4 longer than an exact sliding log
 * would make it wait, and a client sending steadily gets N per P to
 * 1.25 P. N is at most 255 (a count is 8 bits); larger limits use the GCRA
 * kind (config: "expected at most 255 for a moving window").
 *
 * Reclaim (ledger.c) must tell an idle moving cell without the config: the
 * account's `widths` word holds each rate cell's bucket width (16 bits per
 * cell, set by the admitting process before its CAS on the cell). A cell
 * whose width is unknown is busy (reclaim waits), never idle by mistake.
 * A wall clock stepping back makes the bucket index go back: the counts are
 * then dropped (read as long expired), which can admit up to N extra once;
 * an index that wraps (2^15 buckets, 8 days at P = 1 minute) may read old
 * counts as recent, which only refuses, for at most 5 buckets.
 */
#include "seg_internal.h"

#include <errno.h>

#define MV_FLAG (1ull << 55)
#define MV_EPOCH_SHIFT 40
#define MV_EPOCH_MASK 0x7fffull
#define MV_COUNTS_MASK ((1ull << 40) - 1)
#define MV_BUCKETS 5
#define MV_MAX_LIMIT 255

/* A bucket width as one 16-bit lane of the account's widths word: bit 15
 * set = seconds, clear = milliseconds, in the low 15 bits; 0 = unknown. */
static uint16_t width_code(uint64_t b_us)
{
    if (b_us % 1000 == 0 && b_us / 1000 <= 0x7fff)
        return (uint16_t)(b_us / 1000);
    if (b_us % 1000000 == 0 && b_us / 1000000 <= 0x7fff)
        return (uint16_t)(0x8000 | b_us / 1000000);
    return 0;
}

static uint64_t width_us(uint16_t code)
{
    return code & 0x8000 ? (uint64_t)(code & 0x7fff) * 1000000ull : (uint64_t)code * 1000ull;
}

int gw_rate_make_moving(struct gw_rate *r, uint64_t limit, uint64_t period_us)
{
    if (limit == 0 || limit > MV_MAX_LIMIT || period_us < 4000 ||
        period_us > 4ull * 0x7fff * 1000000ull)
        return -EINVAL;
    uint64_t q = (period_us + 3) / 4; /* b >= P/4: 4 buckets cover the period */
    uint64_t b = (q + 999) / 1000 * 1000;
    if (b / 1000 > 0x7fff)
        b = (q + 999999) / 1000000 * 1000000;
    r->interval_us = (period_us + limit - 1) / limit; /* for RateLimit's t */
    r->tolerance_us = 0;
    r->moving_limit = limit;
    r->moving_bucket_us = b;
    return 0;
}

/* The 5 counts as they stand at bucket `cur` (absolute index). */
static uint64_t counts_at(uint64_t v, uint64_t cur)
{
    if (!(v & MV_FLAG))
        return 0; /* an empty cell, or a GCRA TAT from before a reload */
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

int gw__moving_decide(uint64_t v, uint64_t now, const struct gw_rate *r, uint64_t *nv,
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

uint64_t gw__moving_undo(uint64_t v, uint64_t taken)
{
    if (!(v & MV_FLAG))
        return v;
    uint64_t d =
        (((v >> MV_EPOCH_SHIFT) & MV_EPOCH_MASK) - ((taken >> MV_EPOCH_SHIFT) & MV_EPOCH_MASK)) &
        MV_EPOCH_MASK;
    if (d >= MV_BUCKETS || ((v >> (8 * d)) & 0xff) == 0)
        return v; /* that bucket has left the view: nothing to give back */
    return v - (1ull << (8 * d));
}

uint64_t gw__moving_remaining(uint64_t v, uint64_t now, const struct gw_rate *r)
{
    uint64_t total = sum_of(counts_at(v, now / r->moving_bucket_us));
    return total >= r->moving_limit ? 0 : r->moving_limit - total;
}

int gw__moving_is(uint64_t v)
{
    return (v & MV_FLAG) != 0;
}

void gw__moving_note_width(struct gw_account *a, int cell, const struct gw_rate *r)
{
    uint64_t code = width_code(r->moving_bucket_us), sh = 16u * (unsigned)cell;
    /* relaxed: the widths word only tells reclaim how to read a cell; it is
     * set before our CAS on the cell and a reader that sees no width keeps
     * the account (busy), so no order beyond the CAS's own is needed. */
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
    uint64_t b = width_us((uint16_t)(w >> (16u * (unsigned)cell)));
    if (b == 0)
        return 0;
    return counts_at(v, now / b) == 0;
}
