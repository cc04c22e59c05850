/* admin_stub.h - the master's side of the admin socket (struct
 * gw_admin_host) for tests that run gw_admin on a segment without a master:
 * a fixed config, epoch 1, no children, reloads refused. */
#ifndef GW_TEST_ADMIN_STUB_H
#define GW_TEST_ADMIN_STUB_H

#include "gw_supervisor.h"

#include <stdio.h>

static inline struct gw_config *stub_config(void *ctx)
{
    return *(struct gw_config **)ctx;
}

static inline uint64_t stub_epoch(void *ctx)
{
    (void)ctx;
    return 1;
}

static inline int stub_children(void *ctx, struct gw_admin_child *out, int max)
{
    (void)ctx;
    (void)out;
    (void)max;
    return 0;
}

static inline int stub_reload(void *ctx, char *why, size_t whylen)
{
    (void)ctx;
    snprintf(why, whylen, "not in this test");
    return 0;
}

/* A host whose config is *cfg (read at each call, so the test may swap it). */
static inline struct gw_admin_host gw_test_admin_host(struct gw_config **cfg)
{
    return (struct gw_admin_host){.ctx = cfg,
                                  .config = stub_config,
                                  .epoch = stub_epoch,
                                  .children = stub_children,
                                  .reload = stub_reload};
}

#endif
