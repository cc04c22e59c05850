/* ledger.c - after the run, reads the target's ledger and checks that money
 * is conserved: for every budget account, reserved = used + refunded + what
 * live slots hold (gw_ledger_check). The admin socket that will serve this
 * does not exist yet, so the harness maps the segment file itself
 * (gw_segment_attach) and only reads it: it takes no lane and calls nothing
 * that writes. A check may race a request settling at that instant, so a
 * violation is read again a few times before it is reported; a real leak
 * stays. */
#include "load.h"

#include "gw_common.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void lt_ledger_check(const struct lt_scenario *sc, struct lt_ledger_result *r)
{
    memset(r, 0, sizeof(*r));
    if (!sc->ledger[0]) {
        snprintf(r->detail, sizeof(r->detail), "no ledger path in the scenario or --ledger");
        return;
    }
    struct gw_segment seg;
    char err[512];
    int rc = gw_segment_attach(&seg, sc->ledger, err, sizeof(err));
    if (rc != 0) {
        snprintf(r->detail, sizeof(r->detail), "%s", err);
        return;
    }
    snprintf(r->method, sizeof(r->method),
             "segment file %.64s mapped by gw_segment_attach and only read (no lane, no writes), "
             "gw_ledger_check; the admin socket does not exist yet",
             sc->ledger);
    r->checked = 1;
    for (r->attempts = 1; r->attempts <= 5; r->attempts++) {
        r->violations = gw_ledger_check(&seg, r->detail, sizeof(r->detail));
        if (r->violations == 0)
            break;
        usleep(200000);
    }
    if (r->attempts > 5)
        r->attempts = 5;
    r->conserved = r->violations == 0;
    if (r->conserved)
        r->detail[0] = '\0';
    /* Per-tenant money, for the report: each distinct tenant a class used. */
    for (int i = 0; i < sc->n_classes && r->n_tenants < LT_MAX_CLASSES; i++) {
        const char *t = sc->classes[i].tenant;
        if (!t[0] || sc->classes[i].behaviour == LT_ALG_NONE ||
            sc->classes[i].behaviour == LT_WRONG_KEY || sc->classes[i].behaviour == LT_EXPIRED)
            continue;
        int seen = 0;
        for (int k = 0; k < r->n_tenants; k++)
            seen |= strcmp(r->tenants[k].tenant, t) == 0;
        if (seen)
            continue;
        int n = r->n_tenants++;
        snprintf(r->tenants[n].tenant, sizeof(r->tenants[n].tenant), "%s", t);
        struct gw_acct a;
        struct gw_money m;
        /* create = 0: a lookup only, it writes nothing */
        if (gw_ledger_get(&seg, GW_KIND_TENANT, t, strlen(t), 0, gw_now_us(), &a) != 0 ||
            gw_ledger_money(&seg, a, &m) != 0)
            continue;
        r->tenants[n].found = 1;
        r->tenants[n].reserved_us = m.reserved_us;
        r->tenants[n].used_us = m.used_us;
        r->tenants[n].refunded_us = m.refunded_us;
        r->tenants[n].inflight = gw_ledger_inflight(&seg, a);
    }
    gw_segment_close(&seg);
}
