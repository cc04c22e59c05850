/* front_headers.c - the RateLimit-Policy and RateLimit response headers
 * (draft-ietf-httpapi-ratelimit-headers-09) that front.c's admissions and
 * refusals carry. */
#include "front_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

/* Appends printf output at *at, never past len - 1. */
__attribute__((format(printf, 4, 5))) static void putf(char *buf, size_t len, size_t *at,
                                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *at, len - *at, fmt, ap);
    va_end(ap);
    *at = n < 0 || (size_t)n >= len - *at ? len - 1 : *at + (size_t)n;
}

/* RateLimit-Policy and RateLimit as draft-ietf-httpapi-ratelimit-headers-09
 * writes them (structured fields, RFC 8941): one policy item per window of
 * the limits that apply, named by scope ("tenant" or "ip"; "tenant.1",
 * "tenant.2" for a plan's further windows), q the requests a full window
 * admits (limit + burst), w its length in seconds:
 *   RateLimit-Policy: "tenant";q=110;w=60
 *   RateLimit: "tenant";r=109;t=1
 * r is what the window admits now; t the seconds until it is full again.
 * `rem` holds r per window; NULL for a refusal, which reports the first
 * window empty until the retry. Retry-After goes first when retry_us. */
void gw__rate_headers(char *buf, size_t len, const char *scope, const struct gw_plan *p,
                      const uint64_t *rem, uint64_t retry_us)
{
    size_t at = 0;
    buf[0] = '\0';
    uint64_t retry_s = (retry_us + 999999) / 1000000;
    if (retry_us)
        putf(buf, len, &at, "Retry-After: %" PRIu64 "\r\n", retry_s);
    int n = p ? p->n_windows : 0;
    if (n <= 0)
        return;
    if (n > GW_RATE_CELLS)
        n = GW_RATE_CELLS;
    char names[GW_RATE_CELLS][24];
    for (int i = 0; i < n; i++)
        snprintf(names[i], sizeof(names[i]), i ? "%s.%d" : "%s", scope, i);
    putf(buf, len, &at, "RateLimit-Policy: ");
    for (int i = 0; i < n; i++)
        putf(buf, len, &at, "%s\"%s\";q=%" PRIu64 ";w=%" PRIu64, i ? ", " : "", names[i],
             p->windows[i].limit + p->windows[i].burst, p->windows[i].period_us / 1000000);
    putf(buf, len, &at, "\r\nRateLimit: ");
    if (!rem) {
        putf(buf, len, &at, "\"%s\";r=0;t=%" PRIu64 "\r\n", names[0], retry_s ? retry_s : 1);
        return;
    }
    for (int i = 0; i < n; i++) {
        const struct gw_window *w = &p->windows[i];
        uint64_t q = w->limit + w->burst, r = rem[i] < q ? rem[i] : q;
        /* GCRA gives one request back every period / limit */
        uint64_t t = (q - r) * (w->period_us / w->limit);
        putf(buf, len, &at, "%s\"%s\";r=%" PRIu64 ";t=%" PRIu64, i ? ", " : "", names[i], r,
             (t + 999999) / 1000000);
    }
    putf(buf, len, &at, "\r\n");
}
