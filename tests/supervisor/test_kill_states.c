/* test_kill_states.c - a kill in every slot state, in one process.
 *
 * The processes of a node are played by separate attachments of one
 * segment, each with its own lane: a front, a worker (and a second one), and
 * the master, which runs the real watchdog (gw_watchdog_tick, with a
 * kill_pid that records instead of signalling) and the real admin socket
 * commands (gw_admin_request "kill"). The front and worker follow the
 * protocol of front.c and worker_proc.c through the common/ API; a process
 * "dies" by being left where it is and repaired by the master
 * (gw_lane_repair), which is what the master does after reaping it.
 *
 * Each test kills requests that are QUEUED (before a worker takes it),
 * RUNNING, or finishing (DONE, not yet settled), by the watchdog's cancel
 * word, its SIGKILL path, or `gpuwardenctl kill`, and then checks:
 * conservation (gw_ledger_check), every slot FREE, the tenant's and the
 * node's money charged exactly once to the microsecond (reserved, used and
 * refunded totals, and the budget left), no in-flight unit held, the kill
 * counted once, and the next request served. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "admin_stub.h"
#include "gw_supervisor.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MS 1000000ull
#define R_US 400000ull        /* what each request reserves */
#define BUDGET_US 60000000ull /* "60 GPU-seconds per minute": one us of budget per us */

static const struct gw_seg_config seg_cfg = {
    .accounts = 64,
    .budgets = 16,
    .slots = 8,
    .queue = 8,
    .lanes = 8,
    .prompt_bytes = 256,
    .output_bytes = 256,
};

struct ks {
    char dir[128];
    char path[256];
    struct gw_config *cfg;
    struct gw_segment m, f, w; /* master, front, worker */
    struct gw_watchdog *wd;
    struct gw_admin *admin;
    uint64_t now_ns; /* the watchdog's clock (CLOCK_MONOTONIC, moved by hand) */
    uint64_t t0;     /* wall clock of every money operation, us */
    pid_t killed[8]; /* what the watchdog asked to SIGKILL */
    int n_killed;
    /* what the tenant (and the node) must show, cumulative */
    uint64_t reserved, used, refunded;
    int next_id;
};

static int fake_kill(void *ctx, pid_t pid)
{
    struct ks *k = ctx;
    assert_true(k->n_killed < 8);
    k->killed[k->n_killed++] = pid;
    return 0;
}

static void attach(struct ks *k, struct gw_segment *s, int role)
{
    char err[256];
    assert_int_equal(gw_segment_attach(s, k->path, err, sizeof(err)), 0);
    assert_int_equal(gw_lane_acquire(s), 0);
    gw_proc_set_role(s, role, 0);
    gw_proc_set_state(s, GW_PROC_READY);
}

/* A process that died: its lane is left as it was, and its mapping goes
 * without touching the lane (the repair owns it now). */
static void die(struct gw_segment *s)
{
    s->lane = -1;
    gw_segment_close(s);
}

static int setup(void **state)
{
    struct ks *k = calloc(1, sizeof(*k));
    snprintf(k->dir, sizeof(k->dir), "/tmp/gw-ks-%d-%ld", (int)getpid(), random());
    assert_int_equal(mkdir(k->dir, 0700), 0);
    char secret[256], text[4096], err[2048];
    snprintf(secret, sizeof(secret), "%s/secret", k->dir);
    FILE *fp = fopen(secret, "w");
    fputs("kill-states-test-secret-0123456789abcdef", fp);
    fclose(fp);
    snprintf(
        text, sizeof(text),
        "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, \"state_dir\": \"%s\","
        " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}]},"
        " \"global\": {\"budget\": \"60 GPU-seconds per minute\"},"
        " \"plans\": {\"p\": {\"budget\": \"60 GPU-seconds per minute\", \"max_inflight\": 4}},"
        " \"tenants\": {\"acme\": {\"plan\": \"p\"}},"
        " \"admin\": {\"socket\": \"%s/admin.sock\"},"
        " \"watchdog\": {\"max_tokens\": 10, \"grace_ms\": 50, \"interval_ms\": 1}}",
        k->dir, secret, k->dir);
    if (gw_config_parse(&k->cfg, text, strlen(text), "ks.json", err, sizeof(err)) != 0)
        fail_msg("%s", err);
    snprintf(k->path, sizeof(k->path), "%s/ledger", k->dir);
    assert_int_equal(gw_segment_open(&k->m, k->path, &seg_cfg, err, sizeof(err)), 0);
    assert_int_equal(gw_lane_acquire(&k->m), 0);
    gw_proc_set_role(&k->m, GW_ROLE_MASTER, 0);
    attach(k, &k->f, GW_ROLE_FRONT);
    attach(k, &k->w, GW_ROLE_WORKER);
    struct gw_wd_host h = {.ctx = k, .kill_pid = fake_kill};
    assert_int_equal(gw_watchdog_new(&k->wd, &k->m, k->cfg, &h), 0);
    struct gw_admin_host ah = gw_test_admin_host(&k->cfg);
    assert_int_equal(gw_admin_open(&k->admin, &ah, &k->m, err, sizeof(err)), 0);
    k->now_ns = gw_mono_ns();
    k->t0 = gw_now_us();
    *state = k;
    return 0;
}

static int teardown(void **state)
{
    struct ks *k = *state;
    gw_admin_close(k->admin);
    gw_watchdog_free(k->wd);
    gw_segment_close(&k->w);
    gw_segment_close(&k->f);
    gw_segment_close(&k->m);
    gw_config_free(k->cfg);
    char p[300];
    snprintf(p, sizeof(p), "%s/secret", k->dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/audit.log", k->dir);
    unlink(p);
    unlink(k->path);
    rmdir(k->dir);
    free(k);
    return 0;
}

/* ------------------------------------------------- the processes' parts */

static struct gw_acct tenant_of(struct gw_segment *s)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(s, GW_KIND_TENANT, "acme", 4, 1, 0, &a), 0);
    return a;
}

static struct gw_acct global_of(struct gw_segment *s)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(s, GW_KIND_GLOBAL, "*", 1, 1, 0, &a), 0);
    return a;
}

/* The front's admission (front.c generate): in-flight unit, slot,
 * reservation, request, queue. Returns the slot; *id its request id. */
static struct gw_slot_ref admit(struct ks *k, struct gw_segment *front, char id[40])
{
    struct gw_acct t = tenant_of(front), g = global_of(front);
    assert_int_equal(gw_ledger_inflight_take(front, t, 4), 0);
    struct gw_slot_ref ref;
    assert_int_equal(gw_slot_claim(front, &ref), 0);
    assert_int_equal(gw_slot_set_accounts(front, ref, t, g, 1), 0);
    const struct gw_plan *pl = gw_config_plan_for(k->cfg, "acme", NULL, NULL);
    uint64_t retry;
    assert_int_equal(
        gw_budget_reserve(front, ref, R_US, &pl->budget, &k->cfg->global.budget, k->t0, &retry), 0);
    k->reserved += R_US;
    struct gw_slot_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.max_tokens = 64;
    rq.created_us = k->t0;
    snprintf(rq.id, sizeof(rq.id), "req-%d", ++k->next_id);
    snprintf(rq.tenant, sizeof(rq.tenant), "acme");
    snprintf(rq.ip, sizeof(rq.ip), "192.0.2.1");
    snprintf(id, 40, "%s", rq.id);
    assert_int_equal(gw_slot_set_req(front, ref, &rq), 0);
    assert_int_equal(gw_slot_move(front, ref, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_queue_push(front, ref), 0);
    return ref;
}

/* The worker takes the oldest queued request (worker_proc.c's loop). */
static struct gw_slot_ref take(struct ks *k, struct gw_segment *w)
{
    struct gw_slot_ref ref;
    assert_int_equal(gw_queue_pop(w, &ref), 0);
    assert_int_equal(gw_slot_move(w, ref, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
    gw_run_begin(w, ref.index, k->now_ns);
    gw_proc_heartbeat(w, (int64_t)ref.index);
    return ref;
}

/* One token step as on_step publishes it, with the device time so far. */
static void step(struct ks *k, struct gw_segment *w, struct gw_slot_ref ref, uint64_t tokens,
                 uint64_t used_us)
{
    struct gw_run_step st = {
        .tokens = tokens, .device_ns = used_us * 1000, .progress_ns = k->now_ns};
    gw_run_step(w, ref.index, &st);
    gw_proc_heartbeat(w, (int64_t)ref.index);
    assert_int_equal(gw_budget_charge(w, ref, used_us, k->t0), 0);
}

static uint32_t cancel_of(struct gw_segment *s, struct gw_slot_ref ref)
{
    return gw_run_cancel_word(s, ref.index);
}

/* The end of run_job: the final charge, the finish reason (killed when the
 * cancel word is the watchdog's or the operator's), DONE. */
static void finish(struct ks *k, struct gw_segment *w, struct gw_slot_ref ref, uint64_t used_us,
                   int fin)
{
    assert_int_equal(gw_budget_charge(w, ref, used_us, k->t0), 0);
    gw_run_finish(w, ref.index, (uint32_t)fin);
    assert_int_equal(gw_slot_move(w, ref, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    gw_proc_heartbeat(w, -1);
}

/* The front's job_finish: settle (1 = this call settled, 0 = someone had),
 * release. */
static void front_settle(struct gw_segment *front, struct gw_slot_ref ref, int want_settled)
{
    assert_int_equal(gw_budget_settle(front, ref), want_settled);
    assert_int_equal(gw_budget_settle(front, ref), 0); /* never twice */
    assert_int_equal(gw_slot_release(front, ref), 0);
}

static void tick(struct ks *k, uint64_t ms)
{
    k->now_ns += (ms ? ms : 2) * MS;
    gw_watchdog_tick(k->wd, k->cfg, k->now_ns);
}

static json_t *admin(struct ks *k, const char *line)
{
    char *out = NULL;
    assert_int_equal(gw_admin_request(k->admin, line, strlen(line), GW_ADMIN_ADMIN, &out), 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j)
        fail_msg("admin answered with no JSON: %s", out);
    free(out);
    return j;
}

enum { KILL_TAKEN = 1, KILL_NOT_FOUND, KILL_CONFLICT };

/* gpuwardenctl kill ID: KILL_TAKEN (and the slot state it reports is
 * `state`), KILL_NOT_FOUND (not in flight), KILL_CONFLICT (already being
 * stopped, for the cancel reason `cancel`), each with its exact message. */
static int admin_kill_c(struct ks *k, const char *id, const char *state, uint32_t cancel)
{
    char line[200];
    snprintf(line, sizeof(line), "{\"cmd\":\"kill\",\"id\":\"%s\",\"reason\":\"test\"}", id);
    json_t *j = admin(k, line);
    int rc;
    if (json_is_true(json_object_get(j, "ok"))) {
        assert_string_equal(json_string_value(json_object_get(j, "id")), id);
        assert_string_equal(json_string_value(json_object_get(j, "state")), state);
        rc = KILL_TAKEN;
    } else {
        json_t *e = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        char want[160];
        if (strcmp(code, "not_found") == 0) {
            snprintf(want, sizeof(want), "no request in flight with id \"%s\"", id);
            rc = KILL_NOT_FOUND;
        } else {
            assert_string_equal(code, "conflict");
            snprintf(want, sizeof(want), "request %s is already being stopped (cancel reason %u)",
                     id, cancel);
            rc = KILL_CONFLICT;
        }
        assert_string_equal(msg, want);
    }
    json_decref(j);
    return rc;
}

static int admin_kill(struct ks *k, const char *id, const char *state)
{
    return admin_kill_c(k, id, state, GW_CANCEL_ADMIN);
}

/* -------------------------------------------------------------- checks */

static void expect_money(struct ks *k, struct gw_segment *s)
{
    struct gw_acct acct[2] = {tenant_of(s), global_of(s)};
    for (int i = 0; i < 2; i++) {
        struct gw_money m;
        assert_int_equal(gw_ledger_money(s, acct[i], &m), 0);
        assert_int_equal(m.reserved_us, k->reserved);
        assert_int_equal(m.used_us, k->used);
        assert_int_equal(m.refunded_us, k->refunded);
        const struct gw_budget_rate *b =
            i == 0 ? &gw_config_plan_for(k->cfg, "acme", NULL, NULL)->budget
                   : &k->cfg->global.budget;
        assert_int_equal(gw_ledger_budget_left(s, acct[i], b, k->t0), BUDGET_US - k->used);
    }
    assert_int_equal(gw_ledger_inflight(s, acct[0]), 0);
}

/* Conservation, no slot in use, the money exact. */
static void expect_clean(struct ks *k)
{
    char err[256] = "";
    int bad = gw_ledger_check(&k->m, err, sizeof(err));
    if (bad)
        fail_msg("%d accounts not conserved: %s", bad, err);
    for (uint32_t i = 0; i < seg_cfg.slots; i++) {
        struct gw_slot_ref r;
        if (gw_slot_peek(&k->m, i, &r) != GW_SLOT_FREE)
            fail_msg("slot %u is %s", i, gw_slot_state_name(gw_slot_peek(&k->m, i, &r)));
    }
    expect_money(k, &k->m);
}

/* The next request is served whole by (front, worker), charged `used`. */
static void next_request_served(struct ks *k, struct gw_segment *front, struct gw_segment *w,
                                uint64_t used)
{
    char id[40];
    struct gw_slot_ref a = admit(k, front, id);
    struct gw_slot_ref b = take(k, w);
    assert_int_equal(a.index, b.index);
    assert_int_equal(a.seq, b.seq);
    step(k, w, b, 4, used / 2);
    tick(k, 0);
    assert_int_equal(cancel_of(w, b), 0); /* 4 tokens: nothing to kill */
    finish(k, w, b, used, GW_FIN_STOP);
    tick(k, 0);
    front_settle(front, a, 1);
    k->used += used;
    k->refunded += R_US - used;
    expect_clean(k);
}

static int audit_lines(struct ks *k, const char *reason)
{
    char p[300], want[64];
    snprintf(p, sizeof(p), "%s/audit.log", k->dir);
    snprintf(want, sizeof(want), "\"reason\":\"%s\"", reason);
    FILE *fp = fopen(p, "r");
    int n = 0;
    char line[4096];
    while (fp && fgets(line, sizeof(line), fp))
        n += strstr(line, want) != NULL;
    if (fp)
        fclose(fp);
    return n;
}

/* ------------------------------------------------------------- queued */

static void test_queued_request_killed_by_the_operator_is_refunded_whole(void **state)
{
    struct ks *k = *state;
    char id[40];
    struct gw_slot_ref a = admit(k, &k->f, id);
    assert_int_equal(admin_kill(k, id, "queued"), KILL_TAKEN);
    assert_int_equal(admin_kill(k, id, "queued"), KILL_CONFLICT); /* the first reason stays */
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_QUEUED);
    assert_int_equal(cancel_of(&k->m, a), GW_CANCEL_ADMIN);
    /* the worker takes it, finds the cancel word set, and finishes it
     * without running it (worker_proc.c run_job): nothing is used */
    struct gw_slot_ref b = take(k, &k->w);
    assert_int_equal(b.seq, a.seq);
    tick(k, 0);
    finish(k, &k->w, b, 0, GW_FIN_KILLED);
    tick(k, 100); /* the watchdog has nothing pending: no SIGKILL */
    assert_int_equal(k->n_killed, 0);
    front_settle(&k->f, a, 1);
    k->refunded += R_US;
    expect_clean(k);
    assert_int_equal(admin_kill(k, id, ""), KILL_NOT_FOUND);
    next_request_served(k, &k->f, &k->w, 1234);
}

static void test_queued_request_survives_its_worker_dying_before_it_ran(void **state)
{
    struct ks *k = *state;
    char id[40];
    struct gw_slot_ref a = admit(k, &k->f, id);
    /* the worker popped the entry (its journal holds it) and was killed
     * before moving the slot to RUNNING: the master's repair re-queues it */
    struct gw_slot_ref popped;
    assert_int_equal(gw_queue_pop(&k->w, &popped), 0);
    int lane = k->w.lane;
    die(&k->w);
    assert_int_equal(gw_lane_repair(&k->m, lane), 0); /* nothing failed */
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_QUEUED);
    /* its replacement runs it, once */
    attach(k, &k->w, GW_ROLE_WORKER);
    struct gw_slot_ref b = take(k, &k->w);
    assert_int_equal(b.seq, a.seq);
    step(k, &k->w, b, 3, 800);
    finish(k, &k->w, b, 900, GW_FIN_STOP);
    front_settle(&k->f, a, 1);
    k->used += 900;
    k->refunded += R_US - 900;
    expect_clean(k);
    next_request_served(k, &k->f, &k->w, 2000);
}

static void test_queued_request_of_a_dead_front_is_failed_settled_and_freed(void **state)
{
    struct ks *k = *state;
    char id[40];
    struct gw_slot_ref a = admit(k, &k->f, id);
    int lane = k->f.lane;
    die(&k->f);
    assert_int_equal(gw_lane_repair(&k->m, lane), 1);        /* the queued slot failed */
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_FREE); /* settled and released */
    k->refunded += R_US;
    expect_clean(k);
    /* the worker finds only the stale queue entry: it cannot run it */
    struct gw_slot_ref stale;
    assert_int_equal(gw_queue_pop(&k->w, &stale), 0);
    assert_int_equal(gw_slot_move(&k->w, stale, GW_SLOT_QUEUED, GW_SLOT_RUNNING), GW_ESTATE);
    attach(k, &k->f, GW_ROLE_FRONT);
    next_request_served(k, &k->f, &k->w, 3000);
}

/* ------------------------------------------------------------- running */

static void test_running_request_killed_by_the_watchdog_stops_and_is_charged_once(void **state)
{
    struct ks *k = *state;
    char id[40];
    struct gw_slot_ref a = admit(k, &k->f, id);
    struct gw_slot_ref b = take(k, &k->w);
    step(k, &k->w, b, 10, 3000);
    tick(k, 0);
    assert_int_equal(cancel_of(&k->m, a), 0); /* 10 tokens: at the cap, not over */
    step(k, &k->w, b, 11, 3300);
    tick(k, 0);
    assert_int_equal(gw_wd_reason_of_cancel(cancel_of(&k->m, a)), GW_WD_MAX_TOKENS);
    assert_int_equal(gw_kills_get(&k->m, GW_WD_MAX_TOKENS), 1);
    assert_int_equal(audit_lines(k, "max_tokens"), 1);
    /* an operator's kill now changes nothing: the watchdog's reason stays */
    assert_int_equal(admin_kill_c(k, id, "running", GW_WD_CANCEL(GW_WD_MAX_TOKENS)), KILL_CONFLICT);
    /* the worker stops before its next token */
    finish(k, &k->w, b, 3400, GW_FIN_KILLED);
    tick(k, 100);
    assert_int_equal(k->n_killed, 0); /* it let go: no SIGKILL */
    front_settle(&k->f, a, 1);
    k->used += 3400;
    k->refunded += R_US - 3400;
    expect_clean(k);
    assert_int_equal(gw_kills_get(&k->m, GW_WD_MAX_TOKENS), 1);
    next_request_served(k, &k->f, &k->w, 1000);
}

static void test_running_request_whose_worker_ignores_the_cancel_is_sigkilled_once(void **state)
{
    struct ks *k = *state;
    char id[40];
    struct gw_slot_ref a = admit(k, &k->f, id);
    struct gw_slot_ref b = take(k, &k->w);
    step(k, &k->w, b, 11, 2500);
    tick(k, 0);
    assert_int_equal(gw_wd_reason_of_cancel(cancel_of(&k->m, a)), GW_WD_MAX_TOKENS);
    tick(k, 20);
    assert_int_equal(k->n_killed, 0); /* within grace_ms (50) */
    tick(k, 40);
    assert_int_equal(k->n_killed, 1); /* stuck (SIGSTOP, a wedged kernel): SIGKILL */
    assert_int_equal(k->killed[0], getpid());
    tick(k, 100);
    assert_int_equal(k->n_killed, 1); /* once */
    /* the master reaps it (a watchdog kill, not a crash) and repairs its
     * lane: the slot fails and is settled with what was charged */
    assert_int_equal(gw_watchdog_reaped(k->wd, getpid()), 1);
    assert_int_equal(gw_watchdog_reaped(k->wd, getpid()), 0);
    int lane = k->w.lane;
    die(&k->w);
    assert_int_equal(gw_lane_repair(&k->m, lane), 1);
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_FAILED);
    /* the cancel word still names the reason for the front's answer */
    assert_int_equal(gw_wd_reason_of_cancel(cancel_of(&k->m, a)), GW_WD_MAX_TOKENS);
    tick(k, 0);
    front_settle(&k->f, a, 0); /* the repair settled it; the front only releases */
    k->used += 2500;
    k->refunded += R_US - 2500;
    expect_clean(k);
    assert_int_equal(gw_kills_get(&k->m, GW_WD_MAX_TOKENS), 1);
    assert_int_equal(audit_lines(k, "max_tokens"), 1);
    attach(k, &k->w, GW_ROLE_WORKER); /* the respawned worker serves the next */
    next_request_served(k, &k->f, &k->w, 1500);
    assert_int_equal(k->n_killed, 1);
}

static void test_running_request_killed_by_the_operator_stops_and_is_charged_once(void **state)
{
    struct ks *k = *state;
    char id[40];
    struct gw_slot_ref a = admit(k, &k->f, id);
    struct gw_slot_ref b = take(k, &k->w);
    step(k, &k->w, b, 5, 1200);
    assert_int_equal(admin_kill(k, id, "running"), KILL_TAKEN);
    assert_int_equal(cancel_of(&k->m, a), GW_CANCEL_ADMIN);
    tick(k, 0);
    finish(k, &k->w, b, 1500, GW_FIN_KILLED);
    assert_int_equal(admin_kill(k, id, ""), KILL_NOT_FOUND); /* done: not in flight */
    tick(k, 100);
    assert_int_equal(k->n_killed, 0); /* the watchdog did not act on it */
    front_settle(&k->f, a, 1);
    k->used += 1500;
    k->refunded += R_US - 1500;
    expect_clean(k);
    for (int r = 0; r < GW_WD_REASONS; r++)
        assert_int_equal(gw_kills_get(&k->m, r), 0);
    next_request_served(k, &k->f, &k->w, 700);
}

static void test_running_request_of_a_dead_front_is_stopped_and_freed_by_the_master(void **state)
{
    struct ks *k = *state;
    char id[40];
    struct gw_slot_ref a = admit(k, &k->f, id);
    struct gw_slot_ref b = take(k, &k->w);
    step(k, &k->w, b, 4, 900);
    int lane = k->f.lane;
    die(&k->f);
    /* nobody listens any more: the worker is told to stop; the slot is
     * not failed under it (it still writes into it) */
    assert_int_equal(gw_lane_repair(&k->m, lane), 0);
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_RUNNING);
    assert_int_equal(cancel_of(&k->m, a), GW_CANCEL_CLIENT);
    tick(k, 0);
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_RUNNING); /* not before it is done */
    finish(k, &k->w, b, 1000, GW_FIN_CANCELLED);
    /* the master's scan settles and releases what no front will */
    tick(k, 0);
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_FREE);
    tick(k, 0);
    k->used += 1000;
    k->refunded += R_US - 1000;
    expect_clean(k);
    assert_int_equal(k->n_killed, 0);
    attach(k, &k->f, GW_ROLE_FRONT);
    next_request_served(k, &k->f, &k->w, 800);
}

/* ----------------------------------------------------------- finishing */

static void test_finishing_request_is_settled_once_whatever_kills_it(void **state)
{
    struct ks *k = *state;
    char id[40];
    /* (1) the watchdog's cancel and the worker's last token cross: the
     * worker finishes "length" without having seen the cancel word */
    struct gw_slot_ref a = admit(k, &k->f, id);
    struct gw_slot_ref b = take(k, &k->w);
    step(k, &k->w, b, 11, 4000);
    tick(k, 0);
    assert_int_equal(gw_wd_reason_of_cancel(cancel_of(&k->m, a)), GW_WD_MAX_TOKENS);
    finish(k, &k->w, b, 4100, GW_FIN_LENGTH);
    tick(k, 100); /* past grace_ms: the slot is DONE, so no SIGKILL */
    assert_int_equal(k->n_killed, 0);
    assert_int_equal(admin_kill(k, id, ""), KILL_NOT_FOUND); /* an operator is too late */
    front_settle(&k->f, a, 1);
    k->used += 4100;
    k->refunded += R_US - 4100;
    expect_clean(k);

    /* (2) the worker dies right after DONE, before the front settled: the
     * repair of its lane settles; the front finds it settled and releases */
    a = admit(k, &k->f, id);
    b = take(k, &k->w);
    step(k, &k->w, b, 6, 5000);
    finish(k, &k->w, b, 5000, GW_FIN_STOP);
    int lane = k->w.lane;
    die(&k->w);
    assert_int_equal(gw_lane_repair(&k->m, lane), 0); /* DONE stays DONE */
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_DONE);
    uint64_t r, u;
    int settled;
    assert_int_equal(gw_slot_money(&k->m, a, &r, &u, &settled), 0);
    assert_int_equal(r, R_US);
    assert_int_equal(u, 5000);
    assert_int_equal(settled, 1);
    front_settle(&k->f, a, 0);
    k->used += 5000;
    k->refunded += R_US - 5000;
    expect_clean(k);
    attach(k, &k->w, GW_ROLE_WORKER);

    /* (3) the front dies with a DONE slot it never settled: the repair of
     * the front's lane settles and frees it */
    a = admit(k, &k->f, id);
    b = take(k, &k->w);
    step(k, &k->w, b, 2, 600);
    finish(k, &k->w, b, 600, GW_FIN_STOP);
    lane = k->f.lane;
    die(&k->f);
    assert_int_equal(gw_lane_repair(&k->m, lane), 0);
    assert_int_equal(gw_slot_state(&k->m, a), GW_SLOT_FREE); /* settled and released */
    k->used += 600;
    k->refunded += R_US - 600;
    expect_clean(k);
    attach(k, &k->f, GW_ROLE_FRONT);
    assert_int_equal(gw_kills_get(&k->m, GW_WD_MAX_TOKENS), 1);
    next_request_served(k, &k->f, &k->w, 4321);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_queued_request_killed_by_the_operator_is_refunded_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queued_request_survives_its_worker_dying_before_it_ran,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_queued_request_of_a_dead_front_is_failed_settled_and_freed, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_running_request_killed_by_the_watchdog_stops_and_is_charged_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_running_request_whose_worker_ignores_the_cancel_is_sigkilled_once, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_running_request_killed_by_the_operator_stops_and_is_charged_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_running_request_of_a_dead_front_is_stopped_and_freed_by_the_master, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_finishing_request_is_settled_once_whatever_kills_it,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
