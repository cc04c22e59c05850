/* repeat.c: the repetition statistic the watchdog reads.
 *
 * For each period p, run[p] counts the consecutive most recent positions t
 * with tok[t] == tok[t - p]; the last run[p] + p tokens are then p-periodic,
 * a cycle of p tokens repeated (run[p] + p) / p times. Pushing a token
 * updates every run[p] in O(P) from a ring of the last P tokens.
 */
#include "engine.h"

#include <errno.h>

int gw_repeat_init(gw_repeat *r, int max_period)
{
    if (!r || max_period < 1 || max_period > GW_REPEAT_MAX_PERIOD)
        return -EINVAL;
    memset(r, 0, sizeof *r);
    r->max_period = max_period;
    return 0;
}

void gw_repeat_push(gw_repeat *r, int32_t token)
{
    int P = r->max_period;
    uint64_t best_cover = 0;
    r->period = 0;
    r->count = 0;
    for (int p = 1; p <= P; p++) {
        if (r->n >= (uint64_t)p && r->ring[(r->n - (uint64_t)p) % (uint64_t)P] == token)
            r->run[p]++;
        else
            r->run[p] = 0;
        uint64_t count = (r->run[p] + (uint64_t)p) / (uint64_t)p;
        uint64_t cover = count * (uint64_t)p;
        if (count >= 2 && cover > best_cover) {
            best_cover = cover;
            r->period = p;
            r->count = count;
        }
    }
    r->ring[r->n % (uint64_t)P] = token;
    r->n++;
}
