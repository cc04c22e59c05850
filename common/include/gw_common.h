/* gw_common.h - what every gpuwarden process shares: the shared segment
 * (ledger, slots, queue, lanes) that all processes map, the config model,
 * and through gw_util.h errors, logs and clocks.
 *
 * Conventions (as in libuv): functions return 0 or a negative errno; an
 * operator-facing failure also writes one line into `err` naming the thing,
 * the place and the problem. Nothing here calls exit().
 *
 * Shared-memory rules (docs/ARCHITECTURE.md, "The segment"): no mutex or
 * spinlock on any path here.
 * Every shared word is a C11 _Atomic accessed with an explicit memory order,
 * and each access says why that order is enough. Any process may die at any
 * instruction; the "repair" functions at the end are what the master runs on
 * reaping a child, and each region's comment says what they repair.
 */
#ifndef GW_COMMON_H
#define GW_COMMON_H

/* The public header of gw_common, in parts along its seams (as uv.h
 * includes uv/unix.h): gw_util.h (errors, logs, clocks, UTF-8: gw_util's
 * own header, common/util/), config.h (the config model), netaddr.h
 * (addresses, CIDR ranges, forwarding headers) and segment.h (the shared
 * segment and what lives in it). */
#include "gw_util.h"
#include "gw_common/config.h"
#include "gw_common/netaddr.h"
#include "gw_common/segment.h"
#include "gw_common/access.h"
#include "gw_common/farm.h"
#include "gw_common/cluster.h"
#include "gw_common/tstats.h"

#endif /* GW_COMMON_H */
