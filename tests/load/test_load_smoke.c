/* test_load_smoke.c - gpuwarden-load end to end. One source, two programs
 * (the program's name picks the group):
 * - test_load_smoke_model: the shipped smoke scenario
 *   (dist/scenarios/smoke.json) against a real master, front and worker on
 *   SmolLM2, with the development config's limits (dist/gpuwarden.dev.json)
 *   moved to a temporary state_dir and the test's own listening socket
 *   (socket activation, service.h). The JSON report is read back and every
 *   class must have met exactly the fate the node promises it. Exits 77
 *   (ctest: Skipped) without models/.
 * - test_load_smoke: the harness's own refusals, no model needed: a
 *   non-loopback target, and a failed threshold's exit status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <ftw.h>
#include <jansson.h>

static struct svc S;
static int started;
static char src_dir[512];

/* The dev config with this test's port, state_dir, model path and a short
 * header/body timeout so slow clients meet their 408 within the run. The
 * pro plan's budget goes from 0.5 to 4 and the global one from 1 to 8
 * GPU-seconds per second: each bucket holds one second of budget, and the
 * reservations of queued requests (max_tokens x the cost estimate, 20 ms a
 * token before the worker has measured itself) pass that while the device
 * time actually used stays far below it; the dev limits would answer the
 * sponge and disconnect classes budget_exhausted, and this test is about
 * the harness seeing each behaviour's own outcome. */
static int write_config(struct svc *s)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/dist/gpuwarden.dev.json", src_dir);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/gw-load-%d", (int)getpid());
    mkdir(s->dir, 0700);
    svc_listen(s);
    snprintf(s->config, sizeof(s->config), "%s/gpuwarden.json", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/gpuwarden.log", s->dir);
    char buf[700];
    snprintf(buf, sizeof(buf), "127.0.0.1:%d", s->port);
    json_object_set_new(cfg, "listen", json_pack("[s]", buf));
    snprintf(buf, sizeof(buf), "%s/state", s->dir);
    json_object_set_new(cfg, "state_dir", json_string(buf));
    json_object_set_new(json_object_get(cfg, "model"), "path", json_string(svc_model_path()));
    json_object_set_new(json_object_get(cfg, "model"), "threads", json_integer(2));
    json_object_set_new(json_object_get(cfg, "model"), "device", json_string("cpu"));
    json_object_set_new(json_object_get(json_object_get(cfg, "plans"), "pro"), "budget",
                        json_string("4 GPU-seconds per second"));
    json_object_set_new(json_object_get(cfg, "global"), "budget",
                        json_string("8 GPU-seconds per second"));
    json_t *http = json_object_get(cfg, "http");
    json_object_set_new(http, "header_timeout_ms", json_integer(1500));
    json_object_set_new(http, "body_timeout_ms", json_integer(1500));
    json_object_set_new(http, "drain_timeout_ms", json_integer(5000));
    snprintf(buf, sizeof(buf), "%s/dist/dev-secret.key", src_dir);
    json_object_set_new(json_array_get(json_object_get(json_object_get(cfg, "auth"), "keys"), 0),
                        "secret_file", json_string(buf));
    snprintf(buf, sizeof(buf), "%s/admin.sock", s->dir);
    json_object_set_new(json_object_get(cfg, "admin"), "socket", json_string(buf));
    int rc = json_dump_file(cfg, s->config, JSON_INDENT(1));
    json_decref(cfg);
    return rc;
}

static int group_setup(void **state)
{
    (void)state;
    if (write_config(&S) != 0) {
        fprintf(stderr, "cannot write the test config from dist/gpuwarden.dev.json\n");
        return -1;
    }
    if (svc_start_or_dump(&S) != 0)
        return -1;
    started = 1;
    return 0;
}

static int unlink_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_teardown(void **state)
{
    (void)state;
    if (started && svc_stop(&S) != 0) {
        fprintf(stderr, "master did not exit 0; its log:\n");
        svc_dump_log(&S);
        return -1;
    }
    if (started) /* failures printed the report and the log already */
        nftw(S.dir, unlink_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Runs gpuwarden-load from the source directory with argv; its stdout and
 * stderr go to `out`. Returns the exit status. */
static int run_load(const char *const *args, const char *out)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        if (chdir(src_dir) != 0)
            _exit(127);
        char *argv[32];
        int n = 0;
        argv[n++] = (char *)GW_LOAD_BIN;
        for (; args[n - 1] && n < 31; n++)
            argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(GW_LOAD_BIN, argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void dump(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f))
        fprintf(stderr, "  | %s", line);
    if (f)
        fclose(f);
}

static json_t *class_of(json_t *report, const char *name)
{
    json_t *c;
    size_t i;
    json_array_foreach (json_object_get(report, "classes"), i, c)
        if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return c;
    fail_msg("no class %s in the report", name);
    return NULL;
}

static json_int_t outcome(json_t *c, const char *what)
{
    return json_integer_value(json_object_get(json_object_get(c, "outcomes"), what));
}

static json_int_t sent(json_t *c)
{
    return json_integer_value(json_object_get(c, "sent"));
}

static void test_smoke_scenario_meets_every_promise(void **state)
{
    (void)state;
    char target[64], ledger[256], report[256], out[256], admin[256], timeline[256];
    snprintf(target, sizeof(target), "127.0.0.1:%d", S.port);
    snprintf(admin, sizeof(admin), "%s/admin.sock", S.dir);
    snprintf(timeline, sizeof(timeline), "%s/timeline.csv", S.dir);
    snprintf(ledger, sizeof(ledger), "%s/state/ledger", S.dir);
    snprintf(report, sizeof(report), "%s/report.json", S.dir);
    snprintf(out, sizeof(out), "%s/load.out", S.dir);
#ifndef GW_SANITIZE
    const char *args[] = {"--target", target, "--ledger",   ledger,
                          "--admin",  admin,  "--timeline", timeline,
                          "--json",   report, "--quiet",    "dist/scenarios/smoke.json",
                          NULL};
    int rc = run_load(args, out);
    if (rc != 0) {
        dump(out);
        fail_msg("gpuwarden-load exited %d", rc);
    }
#else
    /* The sanitizer build decodes several times slower: a fifth of the
     * arrivals, and the latency thresholds are not this build's to judge
     * (exit status 1 allowed); every outcome below still is. */
    const char *args[] = {"--target",   target,
                          "--ledger",   ledger,
                          "--admin",    admin,
                          "--json",     report,
                          "--timeline", timeline,
                          "--quiet",    "--rate-scale",
                          "0.2",        "dist/scenarios/smoke.json",
                          NULL};
    int rc = run_load(args, out);
    if (rc != 0 && rc != 1) {
        dump(out);
        fail_msg("gpuwarden-load exited %d", rc);
    }
#endif
    json_error_t je;
    json_t *r = json_load_file(report, 0, &je);
    assert_non_null(r);
#ifndef GW_SANITIZE
    const json_int_t least = 4;
    assert_int_equal(json_integer_value(json_object_get(r, "thresholds_failed")), 0);
#else
    const json_int_t least = 1;
#endif

    /* Legitimate tenants: every request answered 200 with a finish reason
     * (the sanitizer build: or held back by the plan's concurrency cap, or
     * still queued when the run ended). */
    const char *legit[] = {"legit-stream", "legit-whole"};
    for (int i = 0; i < 2; i++) {
        json_t *c = class_of(r, legit[i]);
        assert_true(sent(c) >= least);
        json_int_t ok = outcome(c, "200");
#ifdef GW_SANITIZE
        assert_int_equal(ok + outcome(c, "429") + outcome(c, "unfinished"), sent(c));
#else
        assert_int_equal(ok, sent(c));
#endif
        json_t *fin = json_object_get(c, "finish_reasons");
        assert_int_equal(json_integer_value(json_object_get(fin, "length")) +
                             json_integer_value(json_object_get(fin, "stop")),
                         ok);
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(c, "total_ok"), "samples")), ok);
    }
    /* Every forgery and the tokenless flood: 401 invalid_token, all of them. */
    const char *forged[] = {"tokenless", "alg-none", "wrong-key", "expired"};
    for (int i = 0; i < 4; i++) {
        json_t *c = class_of(r, forged[i]);
        assert_true(sent(c) >= least);
        assert_int_equal(outcome(c, "401"), sent(c));
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(c, "error_codes"), "invalid_token")),
            sent(c));
    }
    /* The flood is held to its plan (2 per second burst 3, 2 at once):
     * mostly 429, the rest served (or queued at the end), nothing else. */
    json_t *flood = class_of(r, "flood");
#ifndef GW_SANITIZE
    assert_true(outcome(flood, "429") * 2 > sent(flood));
#else
    assert_true(outcome(flood, "429") > 0); /* 3 a second, evenly, against 2 burst 3 */
#endif
    assert_int_equal(outcome(flood, "200") + outcome(flood, "429") + outcome(flood, "unfinished"),
                     sent(flood));
    /* Slow clients meet the 1.5 s header and body timeouts: 408. */
    json_t *slow_h = class_of(r, "slow-headers"), *slow_b = class_of(r, "slow-body");
    assert_true(sent(slow_h) >= 1);
    assert_int_equal(outcome(slow_h, "408"), sent(slow_h));
    assert_int_equal(outcome(slow_b, "408"), sent(slow_b));
    /* Clients that hang up after the first token: each saw one (or, in the
     * slow build, met the concurrency cap first). */
    json_t *dc = class_of(r, "disconnect");
    assert_true(sent(dc) >= 1);
#ifdef GW_SANITIZE
    assert_int_equal(outcome(dc, "disconnected") + outcome(dc, "429") + outcome(dc, "unfinished"),
                     sent(dc));
#else
    assert_int_equal(outcome(dc, "disconnected"), sent(dc));
    /* The sponge is cut at its max_tokens. */
    json_t *sp = class_of(r, "sponge");
    assert_int_equal(outcome(sp, "200"), sent(sp));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(sp, "finish_reasons"), "length")),
        sent(sp));
    /* Its streams' usage counts 16 tokens each, and each gives one time
     * per output token (whole answers give none). A 16-token stream holds
     * 15 of them between its first and last token, inside its total
     * latency, request by request: so at the median too. */
    assert_int_equal(json_integer_value(json_object_get(sp, "completion_tokens")), 16 * sent(sp));
    json_t *tpot = json_object_get(sp, "tpot_ok");
    assert_int_equal(json_integer_value(json_object_get(tpot, "samples")), sent(sp));
    assert_true(15 * json_real_value(json_object_get(tpot, "p50_ms")) <=
                json_real_value(json_object_get(json_object_get(sp, "total_ok"), "p50_ms")) + 1e-6);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(class_of(r, "legit-whole"), "tpot_ok"), "samples")),
                     0);
#endif
    /* And the money adds up afterwards. */
    json_t *led = json_object_get(r, "ledger");
    assert_true(json_is_true(json_object_get(led, "checked")));
    assert_true(json_is_true(json_object_get(led, "conserved")));
    /* No tenant spent beyond its budget: the four tenants (acme on pro,
     * smoke-flood, smoke-sponge and smoke-dc on the default free plan) all
     * have budgets and were judged from tenant.show before and after. */
    assert_int_equal(json_integer_value(json_object_get(led, "budgets_checked")), 4);
    assert_int_equal(json_integer_value(json_object_get(led, "budgets_over")), 0);
    json_t *t;
    size_t ti;
    json_array_foreach (json_object_get(led, "tenants"), ti, t) {
        json_t *b = json_object_get(t, "budget");
        assert_true(json_is_true(json_object_get(b, "within")));
        assert_true(json_integer_value(json_object_get(b, "spent_us")) <=
                    json_integer_value(json_object_get(b, "allowed_us")));
    }
    /* The timeline: a header, then one line of 7 fields per request sent. */
    json_int_t total = 0;
    json_t *c;
    json_array_foreach (json_object_get(r, "classes"), ti, c)
        total += sent(c);
    FILE *tf = fopen(timeline, "r");
    assert_non_null(tf);
    char line[512];
    assert_non_null(fgets(line, sizeof(line), tf));
    assert_string_equal(line, "intended_s,class,outcome,status,ttft_ms,total_ms,sent\n");
    json_int_t lines = 0;
    while (fgets(line, sizeof(line), tf)) {
        int commas = 0;
        for (char *p = line; *p; p++)
            commas += *p == ',';
        assert_int_equal(commas, 6);
        lines++;
    }
    fclose(tf);
    assert_int_equal(lines, total);
    json_decref(r);
}

static void test_non_loopback_target_is_refused(void **state)
{
    (void)state;
    char out[] = "/tmp/gw-load-out-XXXXXX";
    int fd = mkstemp(out);
    close(fd);
    const char *args[] = {"--target", "10.1.2.3:8080", "dist/scenarios/smoke.json", NULL};
    assert_int_equal(run_load(args, out), 100);
    FILE *f = fopen(out, "r");
    char line[512] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    unlink(out);
    assert_non_null(strstr(line, "target: \"10.1.2.3:8080\": not a loopback address"));
}

/* A run against nobody: a loopback port this test holds bound without
 * listening (every connection is refused, and no other process can take
 * the port meanwhile) and a scratch directory with the scenario's path,
 * the output's and one more (`extra`, a report or a timeline). */
struct nobody {
    int held, port;
    char dir[32], scen[64], out[64], extra[64];
};

static void nobody_open(struct nobody *n, const char *extra)
{
    n->held = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(n->held, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(n->held, (struct sockaddr *)&a, &al), 0);
    n->port = ntohs(a.sin_port);
    snprintf(n->dir, sizeof(n->dir), "/tmp/gw-load-XXXXXX");
    assert_non_null(mkdtemp(n->dir));
    snprintf(n->scen, sizeof(n->scen), "%s/s.json", n->dir);
    snprintf(n->out, sizeof(n->out), "%s/out", n->dir);
    snprintf(n->extra, sizeof(n->extra), "%s/%s", n->dir, extra);
}

static void nobody_close(struct nobody *n)
{
    unlink(n->scen);
    unlink(n->out);
    unlink(n->extra);
    rmdir(n->dir);
    close(n->held);
}

/* Nobody listens: every request is a connection error, the success
 * threshold fails, and the exit status says so. The TPOT threshold is
 * accepted and holds (no stream, no sample: 0), and the class has no
 * span (nothing was sent). */
static void test_failed_threshold_exits_1(void **state)
{
    (void)state;
    struct nobody n;
    nobody_open(&n, "r.json");
    FILE *f = fopen(n.scen, "w");
    fprintf(f,
            "{\"name\":\"nobody\",\"target\":\"127.0.0.1:%d\",\"duration_s\":0.5,\"drain_s\":1,"
            "\"classes\":[{\"name\":\"c\",\"behaviour\":\"tokenless\",\"rate\":20,"
            "\"arrival\":\"constant\"}],"
            "\"thresholds\":[{\"class\":\"c\",\"metric\":\"success_rate\",\"min\":0.999},"
            "{\"class\":\"c\",\"metric\":\"tpot_p99_ms\",\"max\":1}]}",
            n.port);
    fclose(f);
    const char *args[] = {"--json", n.extra, n.scen, NULL};
    assert_int_equal(run_load(args, n.out), 1);
    json_error_t je;
    json_t *r = json_load_file(n.extra, 0, &je);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(r, "thresholds_failed")), 1);
    json_t *c = json_array_get(json_object_get(r, "classes"), 0);
    assert_int_equal(sent(c), 10);
    assert_int_equal(outcome(c, "conn_error"), 10);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "tpot_ok"), "samples")),
                     0);
    assert_true(json_real_value(json_object_get(c, "span_s")) == 0);
    json_decref(r);
    nobody_close(&n);
}

/* The first intended time of each class in a timeline, by class name
 * ("a", "b", "k"); -1 when it sent nothing. */
static void first_arrivals(const char *timeline, double first[3])
{
    first[0] = first[1] = first[2] = -1;
    FILE *f = fopen(timeline, "r");
    assert_non_null(f);
    char line[512];
    assert_non_null(fgets(line, sizeof(line), f)); /* the header */
    double t;
    char name[16];
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%lf,%15[^,]", &t, name) == 2 && strlen(name) == 1) {
            int i = name[0] == 'a' ? 0 : name[0] == 'b' ? 1 : 2;
            if (first[i] < 0 || t < first[i])
                first[i] = t;
        }
    fclose(f);
}

/* A Poisson class's first request comes one drawn gap after its start,
 * not at the start: classes that start together do not all send in the
 * same instant. A constant class sends at its start. Against a port that
 * refuses connections: only the schedule matters. The gaps are the seeded
 * streams' first draws (seed 4: a's 28.7 ms, b's 11.0 ms), not timings;
 * before, both came within a millisecond of k's. */
static void test_poisson_classes_start_one_gap_in(void **state)
{
    (void)state;
    struct nobody n;
    nobody_open(&n, "t.csv");
    FILE *f = fopen(n.scen, "w");
    fprintf(f,
            "{\"name\":\"first\",\"target\":\"127.0.0.1:%d\",\"duration_s\":0.6,"
            "\"drain_s\":1,\"seed\":4,\"classes\":["
            "{\"name\":\"k\",\"behaviour\":\"tokenless\",\"rate\":40,\"start_s\":0.2,"
            "\"arrival\":\"constant\"},"
            "{\"name\":\"a\",\"behaviour\":\"tokenless\",\"rate\":40,\"start_s\":0.2},"
            "{\"name\":\"b\",\"behaviour\":\"tokenless\",\"rate\":40,\"start_s\":0.2}]}",
            n.port);
    fclose(f);
    const char *args[] = {"--timeline", n.extra, n.scen, NULL};
    assert_int_equal(run_load(args, n.out), 0);
    double first[3];
    first_arrivals(n.extra, first);
    /* k at its start; a and b their drawn gap after their own start,
     * which is k's or later (their timers fire after k's) */
    assert_true(first[2] > 0.15 && first[2] < 0.3);
    assert_true(first[0] - first[2] > 0.02);
    assert_true(first[1] - first[2] > 0.008);
    nobody_close(&n);
}

int main(int argc, char **argv)
{
    (void)argc;
    snprintf(src_dir, sizeof(src_dir), "%s", gw_source_dir());
    if (gw_prog_is(argv[0], "test_load_smoke_model")) {
        gw_need_model();
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_smoke_scenario_meets_every_promise),
        };
        return cmocka_run_group_tests_name("load_smoke_model", tests, group_setup, group_teardown);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_non_loopback_target_is_refused),
        cmocka_unit_test(test_failed_threshold_exits_1),
        cmocka_unit_test(test_poisson_classes_start_one_gap_in),
    };
    return cmocka_run_group_tests_name("load_smoke", tests, NULL, NULL);
}
