/* ledger.c - after the run, reads the target's ledger and checks that money
 * is conserved: for every budget account, reserved = used + refunded + what
 * live slots hold (gw_ledger_check). With a segment path (--ledger) the
 * harness maps the segment file itself (gw_segment_attach) and only reads
 * it: it takes no lane and calls nothing that writes; the violation it
 * finds is named. Without one, the admin socket's `status` says whether
 * the master's gw_ledger_check passed. A check may race a request settling
 * at that instant, so a violation is read again a few times before it is
 * reported; a real leak stays.
 *
 * With the admin socket (--admin), each tenant's budget figures are read
 * before and after the run and judged by lt_budget_judge (budget.c): no
 * tenant spent more than its budget allowed over the run, beyond one step
 * per request it had in flight. */
#include "load.h"

#include "gw_common.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The distinct tenants the scenario's token-carrying classes use. */
static void collect_tenants(const struct lt_scenario *sc, struct lt_ledger_result *r)
{
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
    }
}

void lt_ledger_before(const struct lt_scenario *sc, struct lt_ledger_result *r)
{
    memset(r, 0, sizeof(*r));
    collect_tenants(sc, r);
    if (!sc->admin[0])
        return;
    for (int i = 0; i < r->n_tenants; i++) {
        char err[512];
        if (lt_budget_read(sc->admin, r->tenants[i].tenant, &r->tenants[i].before, err,
                           sizeof(err)) != 0 &&
            !r->budget_detail[0])
            snprintf(r->budget_detail, sizeof(r->budget_detail), "before the run: %.400s", err);
    }
}

/* conservation from the admin socket's status (the master runs
 * gw_ledger_check); 1 conserved, 0 not, negative when it cannot say. */
static int admin_conserved(const char *sock, char *detail, size_t len)
{
    char *ans = NULL;
    int rc = lt_admin_query(sock, "{\"cmd\":\"status\"}\n", &ans, detail, len);
    if (rc != 0)
        return rc;
    json_t *o = json_loads(ans, 0, NULL);
    json_t *v = json_object_get(o, "ledger_conserved");
    rc = json_is_boolean(v) ? json_is_true(v) : -EPROTO;
    if (rc < 0)
        snprintf(detail, len, "status answer has no ledger_conserved: %.200s", ans);
    else if (rc == 0)
        snprintf(detail, len, "the master's gw_ledger_check found a violation (admin status)");
    json_decref(o);
    free(ans);
    return rc;
}

static void conservation(const struct lt_scenario *sc, struct gw_segment *seg, int attached,
                         struct lt_ledger_result *r)
{
    if (attached) {
        snprintf(r->method, sizeof(r->method),
                 "segment file %.64s mapped by gw_segment_attach and only read (no lane, no "
                 "writes), gw_ledger_check",
                 sc->ledger);
        r->checked = 1;
        for (r->attempts = 1; r->attempts <= 5; r->attempts++) {
            r->violations = gw_ledger_check(seg, r->detail, sizeof(r->detail));
            if (r->violations == 0)
                break;
            usleep(200000);
        }
    } else {
        snprintf(r->method, sizeof(r->method),
                 "admin socket %.64s: status.ledger_conserved (the master's gw_ledger_check)",
                 sc->admin);
        int v = -1;
        for (r->attempts = 1; r->attempts <= 5; r->attempts++) {
            v = admin_conserved(sc->admin, r->detail, sizeof(r->detail));
            if (v != 0)
                break;
            usleep(200000);
        }
        if (v < 0) { /* the socket could not say: not checked, detail says why */
            r->method[0] = '\0';
            return;
        }
        r->checked = 1;
        r->violations = v == 0;
    }
    if (r->attempts > 5)
        r->attempts = 5;
    r->conserved = r->violations == 0;
    if (r->conserved)
        r->detail[0] = '\0';
}

/* Slots in use and owned by a lane whose process is gone. The master
 * repairs a dead child's slots when it reaps it (a few ms), so one found is
 * read again a few times before it counts. */
static int dead_owned(const struct gw_segment *seg, uint32_t *busy, char *detail, size_t len)
{
    int dead = 0;
    *busy = 0;
    for (uint32_t i = 0; i < seg->cfg.slots; i++) {
        struct gw_slot_ref ref;
        int st = gw_slot_peek(seg, i, &ref);
        if (st <= GW_SLOT_FREE)
            continue;
        (*busy)++;
        int lane = gw_slot_owner(seg, ref);
        pid_t pid = lane >= 0 ? gw_lane_pid(seg, lane) : 0;
        if (gw_slot_state(seg, ref) != st) /* moved on meanwhile: not stuck */
            continue;
        if (pid > 0 && (kill(pid, 0) == 0 || errno == EPERM))
            continue;
        if (dead++ == 0)
            snprintf(detail, len, "slot %u (%s) owned by lane %d, pid %d: not running", i,
                     gw_slot_state_name(st), lane, (int)pid);
    }
    return dead;
}

static void slots(struct gw_segment *seg, struct lt_ledger_result *r)
{
    r->slots_checked = 1;
    r->slots = seg->cfg.slots;
    for (int i = 0; i < 5; i++) {
        r->slots_dead_owner =
            (uint32_t)dead_owned(seg, &r->slots_busy, r->slots_detail, sizeof(r->slots_detail));
        if (r->slots_dead_owner == 0)
            break;
        usleep(200000);
    }
    if (r->slots_dead_owner == 0)
        r->slots_detail[0] = '\0';
}

/* Per-tenant money from the segment, for the report. */
static void tenant_money(struct gw_segment *seg, struct lt_ledger_result *r)
{
    for (int n = 0; n < r->n_tenants; n++) {
        const char *t = r->tenants[n].tenant;
        struct gw_acct a;
        struct gw_money m;
        /* create = 0: a lookup only, it writes nothing */
        if (gw_ledger_get(seg, GW_KIND_TENANT, t, strlen(t), 0, gw_now_us(), &a) != 0 ||
            gw_ledger_money(seg, a, &m) != 0)
            continue;
        r->tenants[n].found = 1;
        r->tenants[n].reserved_us = m.reserved_us;
        r->tenants[n].used_us = m.used_us;
        r->tenants[n].refunded_us = m.refunded_us;
        r->tenants[n].inflight = gw_ledger_inflight(seg, a);
    }
}

static void budgets(const struct lt_scenario *sc, struct lt_ledger_result *r)
{
    uint64_t step_us = (uint64_t)(sc->budget_step_ms * 1000.0);
    for (int n = 0; n < r->n_tenants; n++) {
        struct lt_tenant_ledger *t = &r->tenants[n];
        char err[512];
        if (lt_budget_read(sc->admin, t->tenant, &t->after, err, sizeof(err)) != 0) {
            if (!r->budget_detail[0])
                snprintf(r->budget_detail, sizeof(r->budget_detail), "after the run: %.400s", err);
            continue;
        }
        if (!t->found) { /* no segment mapped: the admin's figures */
            t->found = 1;
            t->reserved_us = t->after.reserved_us;
            t->used_us = t->after.used_us;
            t->refunded_us = t->after.refunded_us;
            t->inflight = t->after.in_flight;
        }
        uint64_t peak = 0, sent = 0;
        for (int i = 0; i < sc->n_classes; i++)
            if (strcmp(sc->classes[i].tenant, t->tenant) == 0) {
                peak += sc->classes[i].peak_inflight;
                sent += sc->classes[i].sent;
            }
        if (t->after.max_inflight && peak > t->after.max_inflight)
            peak = t->after.max_inflight;
        peak += t->before.in_flight; /* other clients' requests running when we began */
        if (lt_budget_judge(&t->before, &t->after, peak, step_us, sent, &t->budget) != 0)
            continue;
        r->budget_checked++;
        if (!t->budget.ok) {
            if (!r->budget_over)
                snprintf(r->budget_detail, sizeof(r->budget_detail), "tenant %s: %s", t->tenant,
                         t->budget.why);
            r->budget_over++;
        }
    }
}

void lt_ledger_check(const struct lt_scenario *sc, struct lt_ledger_result *r)
{
    if (!sc->ledger[0] && !sc->admin[0]) {
        snprintf(r->detail, sizeof(r->detail),
                 "no ledger path or admin socket in the scenario or --ledger/--admin");
        snprintf(r->budget_detail, sizeof(r->budget_detail), "no admin socket (--admin)");
        return;
    }
    struct gw_segment seg;
    int attached = 0;
    if (sc->ledger[0]) {
        char err[512];
        if (gw_segment_attach(&seg, sc->ledger, err, sizeof(err)) == 0)
            attached = 1;
        else if (!sc->admin[0]) {
            snprintf(r->detail, sizeof(r->detail), "%s", err);
            return;
        }
    }
    conservation(sc, &seg, attached, r);
    if (attached) {
        tenant_money(&seg, r);
        slots(&seg, r);
        gw_segment_close(&seg);
    }
    if (sc->admin[0] && !r->budget_detail[0])
        budgets(sc, r);
    else if (!sc->admin[0])
        snprintf(r->budget_detail, sizeof(r->budget_detail), "no admin socket (--admin)");
}
