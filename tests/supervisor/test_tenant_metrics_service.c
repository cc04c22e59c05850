/* test_tenant_metrics_service.c - per-tenant metrics with real processes
 * (issue 17, "Visibility"): a master, two fronts and a worker on SmolLM2.
 *
 * Node A: /metrics on its own address (metrics.listen, a port this test
 * reserves) behind a bearer token, the top 5 tenants by refusals. Five
 * listed tenants on "1 per minute" send 1 + k requests (k refused) and 50
 * subs no config names come in on the default plan; /metrics then holds
 * exactly 6 tenant label values, the values the clients saw, and the
 * public listener answers 404 for /metrics. gpuwardenctl top lists the
 * unlisted subs with their output tokens from the ledger, the counters
 * survive a master restart, and a worker SIGKILLed mid-generation leaves
 * the tenants' tokens adding up to the node's.
 * Node B: the output guard kills every generation (a rule matching any
 * letter or digit), /metrics on the public listener behind a token: the
 * kills land on the tenant that asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>

static struct svc S;
static char SOCK[108], TOKEN_FILE[160];
static const char TOKEN[] = "metrics-token-0123456789abcdef";
static int metrics_port, reserve_fd = -1;
static uint64_t sub_tokens, t_tokens[6]; /* completion tokens the clients were told */

/* A port for metrics.listen that nobody else can take while the test runs:
 * bound (SO_REUSEADDR) but never listening, so the master, binding it with
 * SO_REUSEADDR too, may listen on it and a third socket may not bind it. */
static int reserve_port(void)
{
    int one = 1;
    reserve_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (reserve_fd < 0 || setsockopt(reserve_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(reserve_fd, (struct sockaddr *)&a, sizeof(a)) ||
        getsockname(reserve_fd, (struct sockaddr *)&a, &l))
        return -1;
    return ntohs(a.sin_port);
}

/* One request to 127.0.0.1:port (Connection: close); extra: header lines. */
static int http_port(int port, const char *method, const char *path, const char *extra,
                     struct resp *r)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                     "Content-Length: 0\r\n\r\n",
                     method, path, extra ? extra : "");
    send_all(fd, head, (size_t)n);
    int rc = svc_read(fd, r, SVC_DEADLINE_MS);
    close(fd);
    return rc;
}

/* Edits the written config: default plan, the "once" plan, t1..t5, and
 * `metrics`. */
static int write_config(const char *metrics, const char *watchdog)
{
    char extra[256];
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-tms-%d.sock", (int)getpid());
    snprintf(extra, sizeof(extra), "\"admin\": {\"socket\": \"%s\"},", SOCK);
    svc_write_config(&S, extra);
    snprintf(TOKEN_FILE, sizeof(TOKEN_FILE), "%s/metrics.token", S.dir);
    FILE *f = fopen(TOKEN_FILE, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", TOKEN);
    fclose(f);
    json_error_t je;
    json_t *root = json_load_file(S.config, 0, &je);
    json_t *m = json_loads(metrics, 0, &je);
    if (!root || !m)
        return -1;
    json_object_set_new(m, "bearer_token_file", json_string(TOKEN_FILE));
    json_object_set_new(root, "metrics", m);
    json_object_set_new(root, "default_plan", json_string("open"));
    json_object_set_new(json_object_get(root, "plans"), "once",
                        json_pack("{s:[s],s:s,s:i}", "rate", "1 per minute", "budget",
                                  "1000 GPU-seconds per day", "max_tokens", 4));
    for (int k = 1; k <= 5; k++) {
        char id[8];
        snprintf(id, sizeof(id), "t%d", k);
        json_object_set_new(json_object_get(root, "tenants"), id,
                            json_pack("{s:s}", "plan", "once"));
    }
    if (watchdog)
        json_object_set_new(root, "watchdog", json_loads(watchdog, 0, &je));
    if (json_dump_file(root, S.config, JSON_INDENT(1)) != 0)
        return -1;
    json_decref(root);
    return 0;
}

/* POST /v1/generate as tenant; the status, and the completion tokens in
 * *tokens (200 only). */
static int generate(const char *tenant, uint64_t *tokens)
{
    char *tok = svc_token(&S, tenant, 600);
    struct resp r;
    assert_int_equal(svc_http(&S, "POST", "/v1/generate", tok,
                              "{\"prompt\": \"Hello there\", \"max_tokens\": 3}", &r),
                     0);
    free(tok);
    int st = r.status;
    if (st == 200) {
        json_error_t je;
        json_t *b = json_loads(r.body, 0, &je);
        assert_non_null(b);
        json_t *ct = json_object_get(json_object_get(b, "usage"), "completion_tokens");
        assert_true(json_is_integer(ct));
        *tokens += (uint64_t)json_integer_value(ct);
        json_decref(b);
    }
    resp_free(&r);
    return st;
}

static int setup_a(void **state)
{
    (void)state;
    if ((metrics_port = reserve_port()) < 0)
        return -1;
    char m[160];
    snprintf(m, sizeof(m),
             "{\"listen\": \"127.0.0.1:%d\", \"tenants_top\": 5, \"tenants_by\": \"refusals\"}",
             metrics_port);
    if (write_config(m, NULL) != 0 || svc_start_or_dump(&S) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = svc_stop_or_dump(&S);
    unlink(TOKEN_FILE);
    if (reserve_fd >= 0)
        close(reserve_fd);
    reserve_fd = -1;
    return rc;
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (!strstr(text, want))
        fail_msg("missing line: %s", line);
}

static uint64_t value_of(const char *text, const char *series)
{
    char want[256];
    snprintf(want, sizeof(want), "\n%s ", series);
    const char *p = strstr(text, want);
    if (!p)
        fail_msg("missing series: %s", series);
    return strtoull(p + strlen(want), NULL, 10);
}

/* The traffic, then /metrics on its own address with the token. */
static void test_fifty_subs_give_six_label_values_that_match_the_clients(void **state)
{
    (void)state;
    for (int k = 1; k <= 5; k++) {
        char id[8];
        snprintf(id, sizeof(id), "t%d", k);
        assert_int_equal(generate(id, &t_tokens[k]), 200);
        for (int i = 0; i < k; i++)
            assert_int_equal(generate(id, &t_tokens[k]), 429);
    }
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof(id), "sub-%02d", i);
        assert_int_equal(generate(id, &sub_tokens), 200);
    }
    char auth[128];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", TOKEN);
    struct resp r;
    assert_int_equal(http_port(metrics_port, "GET", "/metrics", auth, &r), 0);
    assert_int_equal(r.status, 200);
    /* the label values: t5 .. t1 by refusals, then other */
    int n = 0;
    const char *pre = "\ngpuwarden_tenant_admitted_total{tenant=\"";
    for (const char *p = strstr(r.body, pre); p; p = strstr(p + 1, pre))
        n++;
    assert_int_equal(n, 6);
    uint64_t sum = 0;
    char series[160];
    for (int k = 1; k <= 5; k++) {
        snprintf(series, sizeof(series), "gpuwarden_tenant_admitted_total{tenant=\"t%d\"} 1", k);
        expect_line(r.body, series);
        snprintf(series, sizeof(series),
                 "gpuwarden_tenant_refusals_total{tenant=\"t%d\",reason=\"tenant_rate\"} %d", k, k);
        expect_line(r.body, series);
        snprintf(series, sizeof(series), "gpuwarden_tenant_generated_tokens_total{tenant=\"t%d\"}",
                 k);
        assert_int_equal(value_of(r.body, series), t_tokens[k]);
        sum += t_tokens[k];
    }
    expect_line(r.body, "gpuwarden_tenant_admitted_total{tenant=\"other\"} 50");
    expect_line(r.body,
                "gpuwarden_tenant_refusals_total{tenant=\"other\",reason=\"tenant_rate\"} 0");
    expect_line(r.body, "gpuwarden_tenant_other_members 50");
    assert_int_equal(value_of(r.body, "gpuwarden_tenant_generated_tokens_total{tenant=\"other\"}"),
                     sub_tokens);
    sum += sub_tokens;
    /* the tenants' tokens are the node's */
    assert_int_equal(value_of(r.body, "gpuwarden_generated_tokens_total"), sum);
    expect_line(r.body, "gpuwarden_admission_refusals_total{reason=\"tenant_rate\"} 15");
    resp_free(&r);
}

static void test_metrics_listener_serves_metrics_only_and_needs_the_token(void **state)
{
    (void)state;
    struct resp r;
    /* the public listener has no /metrics */
    assert_int_equal(svc_http(&S, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "\"message\":\"no such route\""));
    resp_free(&r);
    /* the metrics listener has nothing else */
    assert_int_equal(http_port(metrics_port, "GET", "/healthz", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    assert_int_equal(http_port(metrics_port, "POST", "/v1/generate", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    /* missing, wrong, other scheme: 401 with the words */
    static const struct {
        const char *hdr, *msg;
    } bad[] = {
        {NULL, "/metrics requires Authorization: Bearer <metrics token>"},
        {"Authorization: Bearer metrics-token-0123456789abcdeF\r\n",
         "/metrics: wrong bearer token"},
        {"Authorization: Bearer metrics-token-0123456789abcdef0\r\n",
         "/metrics: wrong bearer token"},
        {"Authorization: Basic bWV0cmljczp4\r\n",
         "/metrics requires Authorization: Bearer <metrics token>"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(http_port(metrics_port, "GET", "/metrics", bad[i].hdr, &r), 0);
        assert_int_equal(r.status, 401);
        char want[200], h[128];
        snprintf(want, sizeof(want),
                 "{\"error\":{\"message\":\"%s\",\"type\":\"authentication_error\",\"param\":null,"
                 "\"code\":\"invalid_token\"}}",
                 bad[i].msg);
        assert_string_equal(r.body, want);
        assert_string_equal(resp_header(&r, "WWW-Authenticate", h, sizeof(h)),
                            "Bearer realm=\"metrics\"");
        resp_free(&r);
    }
    /* the scheme is case-insensitive */
    assert_int_equal(http_port(metrics_port, "HEAD", "/metrics",
                               "Authorization: bearer metrics-token-0123456789abcdef\r\n", &r),
                     0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static json_t *ask(const char *line)
{
    char *s = svc_admin_line(SOCK, line);
    assert_non_null(s);
    json_error_t je;
    json_t *r = json_loads(s, 0, &je);
    free(s);
    assert_non_null(r);
    return r;
}

static void test_top_lists_unlisted_tenants_from_the_ledger(void **state)
{
    (void)state;
    json_t *r = ask("{\"cmd\":\"tenant.top\",\"by\":\"refusals\",\"limit\":2}\n");
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "tenants_total")), 55);
    json_t *rows = json_object_get(r, "tenants");
    assert_int_equal(json_array_size(rows), 2);
    json_t *t5 = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(t5, "tenant")), "t5");
    assert_true(json_is_true(json_object_get(t5, "listed")));
    assert_string_equal(json_string_value(json_object_get(t5, "plan")), "once");
    assert_int_equal(json_integer_value(json_object_get(t5, "refusals_total")), 5);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(t5, "refusals"), "tenant_rate")), 5);
    assert_int_equal(json_integer_value(json_object_get(t5, "admitted")), 1);
    assert_int_equal(json_integer_value(json_object_get(t5, "output_tokens")),
                     (json_int_t)t_tokens[5]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 1), "tenant")),
                        "t4");
    json_decref(r);
    /* every sub, unlisted, on the default plan, with its tokens */
    r = ask("{\"cmd\":\"tenant.top\",\"by\":\"output_tokens\"}\n");
    rows = json_object_get(r, "tenants");
    assert_int_equal(json_array_size(rows), 55);
    uint64_t subs = 0, admitted = 0;
    size_t i;
    json_t *t;
    json_array_foreach (rows, i, t) {
        const char *id = json_string_value(json_object_get(t, "tenant"));
        if (strncmp(id, "sub-", 4) != 0)
            continue;
        assert_false(json_is_true(json_object_get(t, "listed")));
        assert_string_equal(json_string_value(json_object_get(t, "plan")), "open");
        subs += (uint64_t)json_integer_value(json_object_get(t, "output_tokens"));
        admitted += (uint64_t)json_integer_value(json_object_get(t, "admitted"));
        assert_true(json_integer_value(json_object_get(t, "used_us")) > 0);
        /* sorted by output tokens, larger first */
        if (i > 0)
            assert_true(
                json_integer_value(json_object_get(t, "output_tokens")) <=
                json_integer_value(json_object_get(json_array_get(rows, i - 1), "output_tokens")));
    }
    assert_int_equal(subs, sub_tokens);
    assert_int_equal(admitted, 50);
    json_decref(r);
    /* bad arguments: named, nothing else happens */
    r = ask("{\"cmd\":\"tenant.top\",\"by\":\"loudest\"}\n");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r, "error"), "message")),
        "\"by\": expected \"score\", \"gpu_time\", \"output_tokens\", \"kills\" or \"refusals\"");
    json_decref(r);
    r = ask("{\"cmd\":\"tenant.top\",\"limit\":-1}\n");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                        "\"limit\": expected an integer >= 0 (0: every tenant)");
    json_decref(r);
    /* gpuwardenctl top: the table */
    char cmd[512], out[8192];
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl -s %s top 2 --by refusals 2>&1", GW_BIN_DIR, SOCK);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    char want[512];
    snprintf(want, sizeof(want),
             "TENANT                   LISTED PLAN       FARMING   SCORE ADMITTED  REFUSED "
             "FARM_REF  KILLS OUT_TOKENS      GPU_S\n"
             "t5                       yes    once       off           0        1        5 "
             "       0      0 %10" PRIu64 " ",
             t_tokens[5]);
    assert_true(strncmp(out, want, strlen(want)) == 0);
    assert_non_null(strstr(out, "\nt4                       yes    once       off  "));
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl -s %s top --by nothing 2>&1", GW_BIN_DIR, SOCK);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(WEXITSTATUS(pclose(p)), 100);
}

/* The counters live in the segment file: a new master (SIGTERM, start
 * again on the same config and port) shows the same values. */
static void test_counters_survive_a_master_restart(void **state)
{
    (void)state;
    assert_int_equal(svc_stop(&S), 0);
    assert_int_equal(svc_start_or_dump(&S), 0);
    char auth[128];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", TOKEN);
    struct resp r;
    assert_int_equal(http_port(metrics_port, "GET", "/metrics", auth, &r), 0);
    assert_int_equal(r.status, 200);
    expect_line(r.body, "gpuwarden_tenant_admitted_total{tenant=\"other\"} 50");
    expect_line(r.body, "gpuwarden_tenant_refusals_total{tenant=\"t3\",reason=\"tenant_rate\"} 3");
    assert_int_equal(value_of(r.body, "gpuwarden_tenant_generated_tokens_total{tenant=\"other\"}"),
                     sub_tokens);
    resp_free(&r);
}

/* 1 when a slot of the node is RUNNING with at least one token out. */
static int generating(void)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", S.dir);
    if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
        return 0;
    int running = 0;
    for (uint32_t i = 0; i < seg.cfg.slots; i++) {
        struct gw_slot_ref ref;
        struct gw_run_view run;
        if (gw_slot_peek(&seg, i, &ref) == GW_SLOT_RUNNING) {
            gw_run_read(&seg, i, &run);
            running |= run.tokens > 0;
        }
    }
    gw_segment_close(&seg);
    return running;
}

/* The sum of a family's per-tenant values in one answer. */
static uint64_t family_sum(const char *text, const char *family)
{
    char pre[128];
    snprintf(pre, sizeof(pre), "\n%s{tenant=\"", family);
    uint64_t sum = 0;
    for (const char *p = strstr(text, pre); p; p = strstr(p + 1, pre))
        sum += strtoull(strstr(p, "} ") + 2, NULL, 10);
    return sum;
}

/* A worker SIGKILLed while it generates for "happy": the repair requeues
 * the request, a new worker finishes it, and the tenants' tokens still add
 * up to the node's (both are counted where a generation ends, by the
 * worker that ends it); happy's equal what its client was told. */
static void test_worker_killed_mid_generation_keeps_tenant_sums(void **state)
{
    (void)state;
    char *tok = svc_token(&S, "happy", 600);
    char req[1024];
    const char *body = "{\"prompt\": \"Tell me a long story about the sea\", \"max_tokens\": 200}";
    snprintf(req, sizeof(req),
             "POST /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             "Content-Type: application/json\r\nAuthorization: Bearer %s\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             tok, strlen(body), body);
    free(tok);
    int killed = 0, sent = 0;
    uint64_t happy_usage = 0;
    for (int attempt = 0; attempt < 5 && !killed; attempt++) {
        pid_t w = svc_worker_pid(&S);
        assert_true(w > 0);
        int fd = svc_connect(&S);
        assert_true(fd >= 0);
        send_all(fd, req, strlen(req));
        sent++;
        for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; !killed && svc_now_ms() < end;) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 0) == 1)
                break; /* answered before we saw it run: again */
            if (generating())
                killed = kill(w, SIGKILL) == 0;
            else
                usleep(2000);
        }
        struct resp r;
        assert_int_equal(svc_read(fd, &r, SVC_DEADLINE_MS), 0);
        close(fd);
        assert_int_equal(r.status, 200);
        json_error_t je;
        json_t *b = json_loads(r.body, 0, &je);
        assert_non_null(b);
        happy_usage += (uint64_t)json_integer_value(
            json_object_get(json_object_get(b, "usage"), "completion_tokens"));
        json_decref(b);
        resp_free(&r);
    }
    assert_true(killed);
    char auth[128];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", TOKEN);
    struct resp r;
    assert_int_equal(http_port(metrics_port, "GET", "/metrics", auth, &r), 0);
    assert_int_equal(family_sum(r.body, "gpuwarden_tenant_generated_tokens_total"),
                     value_of(r.body, "gpuwarden_generated_tokens_total"));
    assert_int_equal(value_of(r.body, "gpuwarden_tenant_admitted_total{tenant=\"other\"}"),
                     50 + (uint64_t)sent);
    resp_free(&r);
    json_t *top = ask("{\"cmd\":\"tenant.top\",\"by\":\"gpu_time\"}\n");
    size_t i;
    json_t *t;
    json_array_foreach (json_object_get(top, "tenants"), i, t) {
        if (strcmp(json_string_value(json_object_get(t, "tenant")), "happy") != 0)
            continue;
        assert_int_equal(json_integer_value(json_object_get(t, "admitted")), sent);
        /* the continued request's tokens, replayed ones included, once */
        assert_int_equal(json_integer_value(json_object_get(t, "output_tokens")), happy_usage);
    }
    json_decref(top);
}

/* ------------------------------------------------------------- node B */

static int setup_b(void **state)
{
    (void)state;
    const char *wd = "{\"guard\": [{\"name\": \"any\", \"pattern\": \"[A-Za-z0-9]\","
                     " \"action\": \"kill\"}]}";
    if (write_config("{}", wd) != 0 || svc_start_or_dump(&S) != 0)
        return -1;
    return 0;
}

static void test_guard_kills_land_on_their_tenant(void **state)
{
    (void)state;
    uint64_t tok = 0;
    assert_int_equal(generate("happy", &tok), 200);
    assert_int_equal(generate("happy", &tok), 200);
    assert_int_equal(generate("single", &tok), 200);
    struct resp r;
    /* a token and no metrics.listen: /metrics on the public listener, with it */
    assert_int_equal(svc_http(&S, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    assert_int_equal(svc_http(&S, "GET", "/metrics", TOKEN, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_line(
        r.body,
        "gpuwarden_tenant_watchdog_kills_total{tenant=\"happy\",reason=\"output_guard\"} 2");
    expect_line(
        r.body,
        "gpuwarden_tenant_watchdog_kills_total{tenant=\"single\",reason=\"output_guard\"} 1");
    expect_line(r.body,
                "gpuwarden_tenant_watchdog_kills_total{tenant=\"happy\",reason=\"repetition\"} 0");
    expect_line(r.body, "gpuwarden_watchdog_kills_total{reason=\"output_guard\"} 3");
    expect_line(r.body, "gpuwarden_tenant_admitted_total{tenant=\"happy\"} 2");
    resp_free(&r);
    json_t *j = ask("{\"cmd\":\"tenant.top\",\"by\":\"kills\",\"limit\":1}\n");
    json_t *row = json_array_get(json_object_get(j, "tenants"), 0);
    assert_string_equal(json_string_value(json_object_get(row, "tenant")), "happy");
    assert_int_equal(json_integer_value(json_object_get(row, "kills_total")), 2);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(row, "kills"), "output_guard")), 2);
    json_decref(j);
}

int main(void)
{
    gw_need_model();
    const struct CMUnitTest a[] = {
        cmocka_unit_test(test_fifty_subs_give_six_label_values_that_match_the_clients),
        cmocka_unit_test(test_metrics_listener_serves_metrics_only_and_needs_the_token),
        cmocka_unit_test(test_top_lists_unlisted_tenants_from_the_ledger),
        cmocka_unit_test(test_counters_survive_a_master_restart),
        cmocka_unit_test(test_worker_killed_mid_generation_keeps_tenant_sums),
    };
    const struct CMUnitTest b[] = {
        cmocka_unit_test(test_guard_kills_land_on_their_tenant),
    };
    int failed = cmocka_run_group_tests_name("metrics.listen", a, setup_a, teardown);
    failed += cmocka_run_group_tests_name("guard kills", b, setup_b, teardown);
    return failed;
}
