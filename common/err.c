/* err.c - one place that turns a gw_ return value into text. */
#include "gw_common.h"

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
    }
    if (err < 0 && err > -GW_ERRBASE)
        return strerror(-err);
    return "unknown error";
}
