/* err.c - the one place that turns a gw_ return value into text, and the one
 * helper that writes an operator's error line into a caller's buffer. */
#include "gw_util.h"

#include <stdio.h>
#include <string.h>

const char *gw_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case GW_EREFUSED:
        return "refused by a rate or budget limit";
    case GW_ESTALE:
        return "account was reclaimed; look it up again";
    case GW_EFULL:
        return "no room left in a fixed-size region";
    case GW_EEMPTY:
        return "queue is empty";
    case GW_ESTATE:
        return "illegal slot state transition";
    case GW_ELAYOUT:
        return "segment file is not a gpuwarden segment of this layout";
    case GW_ECONTEXT:
        return "context full";
    }
    if (err < 0 && err > -GW_ERRBASE)
        return strerror(-err);
    return "unknown error";
}

void gw_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
