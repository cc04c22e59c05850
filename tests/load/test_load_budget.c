/* test_load_budget.c - gpuwarden-load's budget check (budget.c): parsing the
 * admin socket's tenant.show, talking to a socket, and the verdict on
 * synthetic figures, including overspends that must be reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "load.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SEC 1000000ull

/* What supervisor/admin.c's tenant.show writes for a pro tenant (dev config). */
static const char *const acme_line =
    "{\"ok\":true,\"tenant\":\"acme\",\"listed\":true,\"plan\":{\"name\":\"pro\",\"rate\":[\"20 "
    "per second burst 10\",\"10000 per day\"],\"budget\":\"30 GPU-seconds per "
    "minute\",\"max_inflight\":16,\"max_tokens\":2048,\"on_budget\":\"clamp\"},\"rate\":[],"
    "\"budget\":{\"used_us\":1500000,\"reserved_us\":4000000,\"refunded_us\":2400000,\"left_us\":"
    "28400000},\"in_flight\":1,\"banned_until_us\":null}";

static void test_parse_tenant_show(void **st)
{
    (void)st;
    struct lt_budget_fig f;
    char err[256] = "";
    assert_int_equal(lt_budget_fig_parse(acme_line, &f, err, sizeof(err)), 0);
    assert_int_equal(f.found, 1);
    assert_int_equal(f.has_budget, 1);
    assert_int_equal(f.amount_us, 30 * SEC);
    assert_int_equal(f.period_us, 60 * SEC);
    assert_int_equal(f.left_us, 28400000);
    assert_int_equal(f.reserved_us, 4000000);
    assert_int_equal(f.used_us, 1500000);
    assert_int_equal(f.refunded_us, 2400000);
    assert_int_equal(f.in_flight, 1);
    assert_int_equal(f.max_inflight, 16);
}

static void test_parse_refusal_and_garbage(void **st)
{
    (void)st;
    struct lt_budget_fig f;
    char err[256] = "";
    assert_int_equal(
        lt_budget_fig_parse("{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":"
                            "\"tenant \\\"zed\\\": not allowed\"}}",
                            &f, err, sizeof(err)),
        -ENOENT);
    assert_string_equal(err, "tenant.show refused: tenant \"zed\": not allowed");
    assert_int_equal(f.found, 0);
    assert_int_equal(lt_budget_fig_parse("not json", &f, err, sizeof(err)), -EPROTO);
    assert_string_equal(err, "tenant.show answer is not a JSON object: not json");
    assert_int_equal(lt_budget_fig_parse("{\"ok\":true,\"plan\":{\"budget\":null,"
                                         "\"max_inflight\":2}}",
                                         &f, err, sizeof(err)),
                     -EPROTO);
    assert_non_null(strstr(err, "lacks a plan, budget or in_flight field"));
    assert_int_equal(
        lt_budget_fig_parse("{\"ok\":true,\"plan\":{\"budget\":\"lots\",\"max_inflight\":2},"
                            "\"budget\":{\"used_us\":0,\"reserved_us\":0,\"refunded_us\":0,"
                            "\"left_us\":0},\"in_flight\":0}",
                            &f, err, sizeof(err)),
        -EPROTO);
    assert_string_equal(err, "tenant.show: plan budget \"lots\" not understood");
    /* a plan without a budget parses, with has_budget 0 */
    assert_int_equal(
        lt_budget_fig_parse("{\"ok\":true,\"plan\":{\"budget\":null,\"max_inflight\":0},"
                            "\"budget\":{\"used_us\":0,\"reserved_us\":0,\"refunded_us\":0,"
                            "\"left_us\":null},\"in_flight\":0}",
                            &f, err, sizeof(err)),
        0);
    assert_int_equal(f.found, 1);
    assert_int_equal(f.has_budget, 0);
}

/* 30 s per minute (0.5 s/s); before: 20 s left at t = 100 s. */
static struct lt_budget_fig fig(uint64_t reserved, uint64_t used, uint64_t refunded,
                                uint64_t left, uint64_t at_s)
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

/* A one-connection admin socket that checks the question and answers. */
struct fake {
    int lfd;
    char got[256];
};

static void *serve(void *arg)
{
    struct fake *f = arg;
    int c = accept(f->lfd, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t n = 0;
    while (n < sizeof(f->got) - 1) {
        ssize_t r = read(c, f->got + n, 1);
        if (r <= 0 || f->got[n] == '\n')
            break;
        n++;
    }
    f->got[n] = '\0';
    const char *tail = "\n";
    (void)!write(c, acme_line, strlen(acme_line));
    (void)!write(c, tail, 1);
    close(c);
    return NULL;
}

static void test_read_from_socket(void **st)
{
    (void)st;
    char dir[] = "/tmp/gw-ltb-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%.40s/admin.sock", dir);
    struct fake f = {.lfd = socket(AF_UNIX, SOCK_STREAM, 0)};
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f.lfd, 1), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, serve, &f), 0);
    struct lt_budget_fig fig1;
    char err[256] = "";
    assert_int_equal(lt_budget_read(path, "acme", &fig1, err, sizeof(err)), 0);
    pthread_join(th, NULL);
    assert_string_equal(f.got, "{\"cmd\":\"tenant.show\",\"tenant\":\"acme\"}");
    assert_int_equal(fig1.left_us, 28400000);
    assert_true(fig1.answered_us >= fig1.asked_us);
    close(f.lfd);
    unlink(path);
    /* nobody listening: an error naming the socket */
    assert_int_equal(lt_budget_read(path, "acme", &fig1, err, sizeof(err)), -ENOENT);
    char want[256];
    snprintf(want, sizeof(want), "admin socket %s: No such file or directory", path);
    assert_string_equal(err, want);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_tenant_show),
        cmocka_unit_test(test_parse_refusal_and_garbage),
        cmocka_unit_test(test_judge_within),
        cmocka_unit_test(test_judge_boundary_and_overspend),
        cmocka_unit_test(test_judge_step_slack),
        cmocka_unit_test(test_judge_refunds_of_earlier_reservations),
        cmocka_unit_test(test_judge_cannot_judge),
        cmocka_unit_test(test_read_from_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
