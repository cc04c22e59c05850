/* fixture.h - a fresh segment file per test, removed afterwards. */
#ifndef GW_TEST_FIXTURE_H
#define GW_TEST_FIXTURE_H

#include "gw_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct gw_seg_config fx_cfg = {
    .accounts = 64,
    .budgets = 16,
    .slots = 16,
    .queue = 8,
    .lanes = 8,
    .prompt_bytes = 256,
    .output_bytes = 256,
};

struct fx {
    char path[128];
    struct gw_segment seg;
    char err[256];
};

static inline struct fx *fx_open(const struct gw_seg_config *cfg)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->path, sizeof(f->path), "/tmp/gw-test-%d-%ld.seg", (int)getpid(), random());
    unlink(f->path);
    if (gw_segment_open(&f->seg, f->path, cfg ? cfg : &fx_cfg, f->err, sizeof(f->err)) != 0) {
        fprintf(stderr, "fx_open: %s\n", f->err);
        abort();
    }
    if (gw_lane_acquire(&f->seg) != 0)
        abort();
    return f;
}

static inline void fx_close(struct fx *f)
{
    gw_segment_close(&f->seg);
    unlink(f->path);
    free(f);
}

#endif
