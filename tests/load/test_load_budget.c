/* test_load_budget.c - gpuwarden-load's budget check (budget.c): parsing the
 * admin socket's tenant.show, talking to that socket, and the verdict on
 * synthetic figures, including overspends that must be reported.
 *
 * What is parsed is what supervisor/admin_cmds.c really writes: a segment and a
 * config made here, known money moved through the ledger (reserve, charge,
 * settle), and the answer built by the admin's own request function
 * (gw_admin_request) or served on a real admin socket (gw_admin_open, a
 * thread running its poll loop), as gpuwarden-load meets it. No copy of
 * the answer is written by hand, so a change in admin_cmds.c's fields shows
 * here. Only the malformed answers (not JSON, missing fields) are made up:
 * the admin never writes them, the parser must still refuse them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "load.h"

#include "admin_stub.h"
#include "gw_supervisor.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SEC 1000000ull

/* ---------------------------------------------------- a node without processes */

static const struct gw_seg_config seg_cfg = {
    .accounts = 64,
    .budgets = 16,
    .slots = 8,
    .queue = 8,
    .lanes = 8,
    .prompt_bytes = 256,
    .output_bytes = 256,
};

/* The money moved for "acme" (plan "pro": 30 GPU-seconds per minute, 16 at
 * once): one request reserved 4 s, used 1.5 s and was settled (2.5 s
 * refunded); one still runs, 1 s reserved, nothing used yet. Both an hour
 * ago, so the bucket has refilled to its full 30 s since. */
#define ACME_RESERVED (5 * SEC)
#define ACME_USED (1500 * 1000ull)
#define ACME_REFUNDED (2500 * 1000ull)
#define PRO_AMOUNT (30 * SEC)
#define PRO_PERIOD (60 * SEC)

struct node {
    char dir[64];
    char ledger[128];
    char sock[128];
    struct gw_config *cfg;
    struct gw_segment seg;
    struct gw_admin *admin;
};

/* One request of `tenant` as a front and a worker move its money: in-flight
 * unit, slot, reservation at `at_us`, a charge of used_us; settled and
 * released unless `running`. */
static void request(struct node *n, const char *tenant, uint64_t reserve_us, uint64_t used_us,
                    uint64_t at_us, int running)
{
    struct gw_acct t, g;
    assert_int_equal(gw_ledger_get(&n->seg, GW_KIND_TENANT, tenant, strlen(tenant), 1, at_us, &t),
                     0);
    assert_int_equal(gw_ledger_get(&n->seg, GW_KIND_GLOBAL, "*", 1, 1, at_us, &g), 0);
    const struct gw_plan *pl = gw_config_plan_for(n->cfg, tenant, NULL, NULL);
    assert_non_null(pl);
    assert_int_equal(gw_ledger_inflight_take(&n->seg, t, 16), 0);
    struct gw_slot_ref ref;
    assert_int_equal(gw_slot_claim(&n->seg, &ref), 0);
    assert_int_equal(gw_slot_set_accounts(&n->seg, ref, t, g, 1), 0);
    uint64_t retry;
    assert_int_equal(gw_budget_reserve(&n->seg, ref, reserve_us,
                                       pl->has_budget ? &pl->budget : NULL, &n->cfg->global.budget,
                                       at_us, &retry),
                     0);
    assert_int_equal(gw_slot_move(&n->seg, ref, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_queue_push(&n->seg, ref), 0);
    struct gw_slot_ref got;
    assert_int_equal(gw_queue_pop(&n->seg, &got), 0);
    assert_int_equal(got.index, ref.index);
    assert_int_equal(gw_slot_move(&n->seg, ref, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
    if (used_us)
        assert_int_equal(gw_budget_charge(&n->seg, ref, used_us, at_us), 0);
    if (running)
        return;
    assert_int_equal(gw_slot_move(&n->seg, ref, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    assert_int_equal(gw_budget_settle(&n->seg, ref), 1);
    assert_int_equal(gw_slot_release(&n->seg, ref), 0);
}

static int node_setup(void **state)
{
    struct node *n = calloc(1, sizeof(*n));
    snprintf(n->dir, sizeof(n->dir), "/tmp/gw-ltb-XXXXXX");
    if (!mkdtemp(n->dir))
        return -1;
    char secret[128], text[4096], err[2048];
    snprintf(secret, sizeof(secret), "%s/secret", n->dir);
    FILE *fp = fopen(secret, "w");
    fputs("load-budget-test-secret-0123456789abcdef", fp);
    fclose(fp);
    snprintf(n->sock, sizeof(n->sock), "%s/admin.sock", n->dir);
    snprintf(
        text, sizeof(text),
        "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, \"state_dir\": \"%s\","
        " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}]},"
        " \"global\": {\"budget\": \"1000 GPU-seconds per second\"},"
        " \"plans\": {\"pro\": {\"rate\": [\"20 per second burst 10\", \"10000 per day\"],"
        "   \"budget\": \"30 GPU-seconds per minute\", \"max_inflight\": 16,"
        "   \"max_tokens\": 2048},"
        "  \"open\": {\"rate\": [\"100 per second\"]}},"
        " \"tenants\": {\"acme\": {\"plan\": \"pro\"}, \"free\": {\"plan\": \"open\"}},"
        " \"default_plan\": null,"
        " \"admin\": {\"socket\": \"%s\"}}",
        n->dir, secret, n->sock);
    if (gw_config_parse(&n->cfg, text, strlen(text), "ltb.json", err, sizeof(err)) != 0)
        fail_msg("%s", err);
    snprintf(n->ledger, sizeof(n->ledger), "%s/ledger", n->dir);
    assert_int_equal(gw_segment_open(&n->seg, n->ledger, &seg_cfg, err, sizeof(err)), 0);
    assert_int_equal(gw_lane_acquire(&n->seg), 0);
    gw_proc_set_role(&n->seg, GW_ROLE_MASTER, 0);
    struct gw_admin_host ah = gw_test_admin_host(&n->cfg);
    if (gw_admin_open(&n->admin, &ah, &n->seg, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    uint64_t hour_ago = gw_now_us() - 3600 * SEC;
    request(n, "acme", 4 * SEC, ACME_USED, hour_ago, 0);
    request(n, "acme", 1 * SEC, 0, hour_ago, 1);
    *state = n;
    return 0;
}

static int node_teardown(void **state)
{
    struct node *n = *state;
    gw_admin_close(n->admin);
    gw_segment_close(&n->seg);
    gw_config_free(n->cfg);
    char p[160];
    snprintf(p, sizeof(p), "%s/secret", n->dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/audit.log", n->dir);
    unlink(p);
    unlink(n->ledger);
    unlink(n->sock);
    rmdir(n->dir);
    free(n);
    return 0;
}

/* The admin's answer to one request line, as an operator asks it. */
static char *admin_answer(struct node *n, const char *line)
{
    char *out = NULL;
    assert_int_equal(gw_admin_request(n->admin, line, strlen(line), GW_ADMIN_OPERATOR, &out), 0);
    assert_non_null(out);
    return out;
}

/* acme's figures as the admin reports them, whichever way they were read. */
static void expect_acme(const struct lt_budget_fig *f)
{
    assert_int_equal(f->found, 1);
    assert_int_equal(f->has_budget, 1);
    assert_int_equal(f->amount_us, PRO_AMOUNT);
    assert_int_equal(f->period_us, PRO_PERIOD);
    assert_int_equal(f->left_us, PRO_AMOUNT); /* refilled: an hour went by */
    assert_int_equal(f->reserved_us, ACME_RESERVED);
    assert_int_equal(f->used_us, ACME_USED);
    assert_int_equal(f->refunded_us, ACME_REFUNDED);
    assert_int_equal(f->in_flight, 1);
    assert_int_equal(f->max_inflight, 16);
}

/* ------------------------------------------------------------------- parsing */

static void test_parse_what_the_admin_writes_for_tenant_show(void **state)
{
    struct node *n = *state;
    char *ans = admin_answer(n, "{\"cmd\":\"tenant.show\",\"tenant\":\"acme\"}");
    struct lt_budget_fig f;
    char err[256] = "";
    assert_int_equal(lt_budget_fig_parse(ans, &f, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    expect_acme(&f);
    free(ans);
}

static void test_parse_a_plan_without_a_budget(void **state)
{
    struct node *n = *state;
    char *ans = admin_answer(n, "{\"cmd\":\"tenant.show\",\"tenant\":\"free\"}");
    struct lt_budget_fig f;
    char err[256] = "";
    assert_int_equal(lt_budget_fig_parse(ans, &f, err, sizeof(err)), 0);
    assert_int_equal(f.found, 1);
    assert_int_equal(f.has_budget, 0);
    assert_int_equal(f.left_us, 0);
    assert_int_equal(f.reserved_us, 0);
    assert_int_equal(f.in_flight, 0);
    assert_int_equal(f.max_inflight, 0);
    free(ans);
}

static void test_parse_the_admins_refusal(void **state)
{
    struct node *n = *state;
    char *ans = admin_answer(n, "{\"cmd\":\"tenant.show\",\"tenant\":\"zed\"}");
    struct lt_budget_fig f;
    char err[256] = "";
    assert_int_equal(lt_budget_fig_parse(ans, &f, err, sizeof(err)), -ENOENT);
    assert_string_equal(err, "tenant.show refused: tenant \"zed\": unknown tenant");
    assert_int_equal(f.found, 0);
    free(ans);
}

/* Answers the admin never writes: refused, each with its reason. */
static void test_parse_refuses_garbage(void **st)
{
    (void)st;
    struct lt_budget_fig f;
    char err[256] = "";
    assert_int_equal(lt_budget_fig_parse("not json", &f, err, sizeof(err)), -EPROTO);
    assert_string_equal(err, "tenant.show answer is not a JSON object: not json");
    assert_int_equal(lt_budget_fig_parse("{\"ok\":true,\"plan\":{\"budget\":null,"
                                         "\"max_inflight\":2}}",
                                         &f, err, sizeof(err)),
                     -EPROTO);
    assert_string_equal(err, "tenant.show answer lacks a plan, budget or in_flight field: "
                             "{\"ok\":true,\"plan\":{\"budget\":null,\"max_inflight\":2}}");
    assert_int_equal(
        lt_budget_fig_parse("{\"ok\":true,\"plan\":{\"budget\":\"lots\",\"max_inflight\":2},"
                            "\"budget\":{\"used_us\":0,\"reserved_us\":0,\"refunded_us\":0,"
                            "\"left_us\":0},\"in_flight\":0}",
                            &f, err, sizeof(err)),
        -EPROTO);
    assert_string_equal(err, "tenant.show: plan budget \"lots\" not understood");
    assert_int_equal(f.found, 0);
}

/* 30 s per minute (0.5 s/s); before: 20 s left at t = 100 s. */
static struct lt_budget_fig fig(uint64_t reserved, uint64_t used, uint64_t refunded, uint64_t left,
                                uint64_t at_s)
{
    return (struct lt_budget_fig){.found = 1,
                                  .has_budget = 1,
                                  .amount_us = 30 * SEC,
                                  .period_us = 60 * SEC,
                                  .left_us = left,
                                  .reserved_us = reserved,
                                  .used_us = used,
                                  .refunded_us = refunded,
                                  .max_inflight = 16,
                                  .asked_us = at_s * SEC,
                                  .answered_us = at_s * SEC};
}

static void test_judge_within(void **st)
{
    (void)st;
    struct lt_budget_fig b = fig(10 * SEC, 6 * SEC, 4 * SEC, 20 * SEC, 100);
    /* 40 s later: 20 s left + 20 s refilled = 40 s; spent 30 s net */
    struct lt_budget_fig a = fig(50 * SEC, 30 * SEC, 14 * SEC, 5 * SEC, 140);
    struct lt_budget_verdict v;
    assert_int_equal(lt_budget_judge(&b, &a, 0, 0, 0, &v), 0);
    assert_int_equal(v.checked, 1);
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.spent_us, 30 * SEC);
    assert_int_equal(v.left_before_us, 20 * SEC);
    assert_int_equal(v.refill_us, 20 * SEC);
    assert_int_equal(v.allowed_us, 40 * SEC);
    assert_string_equal(v.why, "");
}

static void test_judge_boundary_and_overspend(void **st)
{
    (void)st;
    struct lt_budget_fig b = fig(0, 0, 0, 20 * SEC, 100);
    struct lt_budget_fig a = fig(40 * SEC, 0, 0, 0, 140); /* spent exactly 40 s: allowed */
    struct lt_budget_verdict v;
    assert_int_equal(lt_budget_judge(&b, &a, 0, 0, 0, &v), 0);
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.spent_us, (int64_t)v.allowed_us);

    a.reserved_us = 40 * SEC + 1; /* one us more: reported */
    assert_int_equal(lt_budget_judge(&b, &a, 0, 0, 0, &v), 0);
    assert_int_equal(v.checked, 1);
    assert_int_equal(v.ok, 0);
    assert_string_equal(v.why, "spent 40.000001 s of device time in 40.000 s, allowed 40.000000 s "
                               "(left 20.000000 + refill 20.000000 + 0 in flight x step "
                               "0.000000 + rounding 0.000000): over by 0.000001 s");

    /* A real overspend: 25 s spent in 2 s with 20 s left, 4 in flight,
     * 250 ms steps: allowed 20 + 1 + 1 + rounding. */
    b = fig(100 * SEC, 80 * SEC, 20 * SEC, 20 * SEC, 100);
    a = fig(125 * SEC, 80 * SEC, 20 * SEC, 0, 102);
    assert_int_equal(lt_budget_judge(&b, &a, 4, 250000, 10, &v), 0);
    assert_int_equal(v.ok, 0);
    assert_int_equal(v.spent_us, 25 * SEC);
    assert_int_equal(v.slack_us, 1 * SEC);
    assert_int_equal(v.refill_us, 1 * SEC);
    assert_int_equal(v.rounding_us, 10 * 2 * 1); /* 30 s / 60 s = 0 us per us, + 1 */
    assert_int_equal(v.allowed_us, 22 * SEC + 20);
    assert_string_equal(v.why, "spent 25.000000 s of device time in 2.000 s, allowed 22.000020 s "
                               "(left 20.000000 + refill 1.000000 + 4 in flight x step "
                               "0.250000 + rounding 0.000020): over by 2.999980 s");
}

static void test_judge_step_slack(void **st)
{
    (void)st;
    /* 0.9 s over the bucket, 4 requests in flight of 250 ms steps: within
     * one step per in-flight request. */
    struct lt_budget_fig b = fig(0, 0, 0, 10 * SEC, 100);
    struct lt_budget_fig a = fig(10 * SEC + 900000, 0, 0, 0, 100);
    struct lt_budget_verdict v;
    assert_int_equal(lt_budget_judge(&b, &a, 4, 250000, 0, &v), 0);
    assert_int_equal(v.ok, 1);
    /* 3 in flight: 0.75 s of slack is not enough */
    assert_int_equal(lt_budget_judge(&b, &a, 3, 250000, 0, &v), 0);
    assert_int_equal(v.ok, 0);
    assert_non_null(strstr(v.why, "over by 0.150000 s"));
}

static void test_judge_refunds_of_earlier_reservations(void **st)
{
    (void)st;
    /* Refunds of what was reserved before the run make net spending negative:
     * within, whatever the bucket says. */
    struct lt_budget_fig b = fig(10 * SEC, 0, 0, 0, 100);
    struct lt_budget_fig a = fig(10 * SEC, 2 * SEC, 8 * SEC, 8 * SEC, 101);
    struct lt_budget_verdict v;
    assert_int_equal(lt_budget_judge(&b, &a, 1, 0, 1, &v), 0);
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.spent_us, -8 * (int64_t)SEC);
}

static void test_judge_cannot_judge(void **st)
{
    (void)st;
    struct lt_budget_fig b = fig(0, 0, 0, 10 * SEC, 100), a = b;
    struct lt_budget_verdict v;
    b.found = 0;
    assert_int_equal(lt_budget_judge(&b, &a, 0, 0, 0, &v), -ENOENT);
    assert_int_equal(v.checked, 0);
    assert_string_equal(v.why, "tenant.show not read before the run");
    b.found = 1;
    a.period_us = 3600 * SEC; /* reloaded with another plan */
    assert_int_equal(lt_budget_judge(&b, &a, 0, 0, 0, &v), -ESTALE);
    assert_string_equal(v.why, "the plan's budget changed during the run (reload?)");
    a = b;
    a.has_budget = 0;
    assert_int_equal(lt_budget_judge(&b, &a, 0, 0, 0, &v), -ENOENT);
    assert_string_equal(v.why, "the tenant's plan has no budget");
    /* history that goes backwards is a finding, not a pass */
    a = b;
    b.used_us = 5 * SEC;
    a.used_us = 4 * SEC;
    assert_int_equal(lt_budget_judge(&b, &a, 0, 0, 0, &v), 0);
    assert_int_equal(v.checked, 1);
    assert_int_equal(v.ok, 0);
    assert_non_null(strstr(v.why, "ledger history went backwards"));
}

/* ------------------------------------------------------------- the socket */

/* The admin socket served as the master serves it (poll, serve) until
 * `stop`. */
struct server {
    struct node *n;
    atomic_int stop;
};

static void *serve(void *arg)
{
    struct server *sv = arg;
    while (!atomic_load(&sv->stop)) {
        struct pollfd p[32];
        int k = gw_admin_pollfds(sv->n->admin, p, 32);
        if (poll(p, (nfds_t)k, 20) > 0)
            gw_admin_serve(sv->n->admin, p, k);
    }
    return NULL;
}

static void test_read_from_the_admin_socket(void **state)
{
    struct node *n = *state;
    struct server sv = {.n = n};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, serve, &sv), 0);
    struct lt_budget_fig acme, zed;
    char err[256] = "", zerr[256] = "";
    int rc = lt_budget_read(n->sock, "acme", &acme, err, sizeof(err));
    int zrc = lt_budget_read(n->sock, "zed", &zed, zerr, sizeof(zerr));
    atomic_store(&sv.stop, 1);
    pthread_join(th, NULL);
    if (rc != 0)
        fail_msg("%s", err);
    expect_acme(&acme);
    assert_true(acme.answered_us >= acme.asked_us);
    assert_int_equal(zrc, -ENOENT);
    assert_string_equal(zerr, "tenant.show refused: tenant \"zed\": unknown tenant");
    assert_int_equal(zed.found, 0);
    /* nobody at that path: an error naming the socket */
    char none[160], want[256];
    snprintf(none, sizeof(none), "%s/none.sock", n->dir);
    assert_int_equal(lt_budget_read(none, "acme", &acme, err, sizeof(err)), -ENOENT);
    snprintf(want, sizeof(want), "admin socket %s: No such file or directory", none);
    assert_string_equal(err, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parse_what_the_admin_writes_for_tenant_show,
                                        node_setup, node_teardown),
        cmocka_unit_test_setup_teardown(test_parse_a_plan_without_a_budget, node_setup,
                                        node_teardown),
        cmocka_unit_test_setup_teardown(test_parse_the_admins_refusal, node_setup, node_teardown),
        cmocka_unit_test(test_parse_refuses_garbage),
        cmocka_unit_test(test_judge_within),
        cmocka_unit_test(test_judge_boundary_and_overspend),
        cmocka_unit_test(test_judge_step_slack),
        cmocka_unit_test(test_judge_refunds_of_earlier_reservations),
        cmocka_unit_test(test_judge_cannot_judge),
        cmocka_unit_test_setup_teardown(test_read_from_the_admin_socket, node_setup, node_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
