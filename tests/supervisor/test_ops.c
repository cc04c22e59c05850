/* test_ops.c - operating gpuwarden end to end (real master, two fronts, a
 * worker on SmolLM2; exit 77 without the model): /metrics totals after a
 * known sequence of requests, the same from every scrape and from the
 * segment itself; the access log's exact line shape; a priority prefix on
 * every log line; JSON lines after a reload; gpuwardenctl tenant set-limit
 * enforced by the fronts at once. The tests run in this order on one
 * service: the first one's counts are absolute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>

static struct svc S;
static int started;
static char SOCK[108];

static int group_setup(void **state)
{
    (void)state;
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-ops-%d.sock", (int)getpid());
    char extra[512];
    snprintf(extra, sizeof(extra),
             "\"admin\": {\"socket\": \"%s\"}, \"log\": {\"format\": \"text\", \"access\": true},",
             SOCK);
    svc_write_config(&S, extra);
    if (svc_start_or_dump(&S) != 0)
        return -1;
    started = 1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (started && svc_stop_or_dump(&S) != 0)
        return -1;
    return 0;
}

static char *scrape(void)
{
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_non_null(resp_header(&r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "text/plain; version=0.0.4");
    return r.body; /* the caller frees it */
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (!strstr(text, want))
        fail_msg("missing line: %s", line);
}

static long json_num(const char *body, const char *key)
{
    char k[64];
    snprintf(k, sizeof(k), "\"%s\":", key);
    const char *p = strstr(body, k);
    return p ? strtol(p + strlen(k), NULL, 10) : -1;
}

/* The counters only: gauges (slots, in flight) may move between scrapes,
 * and /metrics counts its own requests. */
static char *counters_only(const char *text)
{
    char *out = calloc(1, strlen(text) + 1), *at = out;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        char line[512];
        snprintf(line, sizeof(line), "%.*s", (int)n, p);
        int counter = strstr(line, "_total") || strstr(line, "_bucket") || strstr(line, "_sum ") ||
                      strstr(line, "_count ");
        if (line[0] != '#' && counter && !strstr(line, "route=\"metrics\"")) {
            memcpy(at, p, n);
            at += n;
        }
        p += n;
    }
    return out;
}

static long tokens_sum, prompt_sum;

static void test_metrics_exact_after_known_requests(void **state)
{
    (void)state;
    char *tok = svc_token(&S, "limited", 300); /* plan "five": 5 per minute */
    struct resp r;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(svc_http(&S, "POST", "/v1/generate", tok,
                                  "{\"prompt\":\"The capital of France is\",\"max_tokens\":3}", &r),
                         0);
        if (r.status != 200)
            fail_msg("request %d: %d %s", i, r.status, r.body);
        tokens_sum += json_num(r.body, "completion_tokens");
        prompt_sum += json_num(r.body, "prompt_tokens");
        resp_free(&r);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(svc_http(&S, "POST", "/v1/generate", "not-a-token",
                                  "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r),
                         0);
        assert_int_equal(r.status, 401);
        resp_free(&r);
    }
    assert_int_equal(
        svc_http(&S, "POST", "/v1/generate", tok, "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r), 0);
    assert_int_equal(r.status, 429);
    resp_free(&r);
    free(tok);

    char *m = scrape();
    expect_line(m, "gpuwarden_http_requests_total{route=\"generate\",code=\"2xx\"} 5");
    expect_line(m, "gpuwarden_http_requests_total{route=\"generate\",code=\"4xx\"} 3");
    expect_line(m, "gpuwarden_http_requests_total{route=\"generate\",code=\"5xx\"} 0");
    expect_line(m, "gpuwarden_admission_refusals_total{reason=\"auth\"} 2");
    expect_line(m, "gpuwarden_admission_refusals_total{reason=\"tenant_rate\"} 1");
    expect_line(m, "gpuwarden_admission_refusals_total{reason=\"ip_rate\"} 0");
    expect_line(m, "gpuwarden_time_to_first_token_seconds_count 5");
    expect_line(m, "gpuwarden_queue_time_seconds_count 5");
    expect_line(m, "gpuwarden_request_duration_seconds_count 5");
    expect_line(m, "gpuwarden_workers_ready 1");
    expect_line(m, "gpuwarden_workers{state=\"ready\"} 1");
    expect_line(m, "gpuwarden_requests_in_flight 0");
    expect_line(m, "gpuwarden_ledger_accounts_capacity 1024");
    char line[128];
    snprintf(line, sizeof(line), "gpuwarden_generated_tokens_total %ld", tokens_sum);
    expect_line(m, line);
    snprintf(line, sizeof(line), "gpuwarden_prompt_tokens_total %ld", prompt_sum);
    expect_line(m, line);
    /* every generation finished as "stop" or "length": 5 in all */
    const char *a = strstr(m, "gpuwarden_generations_total{finish_reason=\"stop\"} ");
    const char *b = strstr(m, "gpuwarden_generations_total{finish_reason=\"length\"} ");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(strtol(strchr(a, '}') + 2, NULL, 10) + strtol(strchr(b, '}') + 2, NULL, 10),
                     5);
    free(m);
}

static void test_metrics_same_from_every_front_and_the_segment(void **state)
{
    (void)state;
    /* Two fronts share the listening socket: several scrapes reach both.
     * Each must give the same counters, and so must a rendering straight
     * from the segment file, which is all a front reads. */
    char *m0 = scrape(), *first = counters_only(m0);
    free(m0);
    for (int i = 0; i < 6; i++) {
        char *m = scrape(), *c = counters_only(m);
        assert_string_equal(c, first);
        free(c);
        free(m);
    }
    struct gw_segment seg;
    char path[256], err[256], *text;
    size_t len;
    snprintf(path, sizeof(path), "%s/state/ledger", S.dir);
    assert_int_equal(gw_segment_attach(&seg, path, err, sizeof(err)), 0);
    assert_int_equal(gw_metrics_render(&seg, &text, &len), 0);
    /* then the per-tenant series, under the config's defaults (top 20 by
     * GPU time) as a front appends them */
    struct gw_metrics_cfg mc = {.tenants_top = 20, .tenants_by = GW_MT_BY_GPU};
    char *ten, *all;
    size_t tlen;
    assert_int_equal(gw_metrics_render_tenants(&seg, &mc, &ten, &tlen), 0);
    assert_true(asprintf(&all, "%s%s", text, ten) > 0);
    char *c = counters_only(all);
    assert_string_equal(c, first);
    free(c);
    free(all);
    free(ten);
    free(text);
    gw_segment_close(&seg);
    free(first);
}

/* Reads the service log. */
static char *log_text(void)
{
    FILE *f = fopen(S.log, "r");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_access_log_line_shape(void **state)
{
    (void)state;
    const char *log = log_text();
    /* a 200 on the native route, e.g.
     * <6>gpuwarden[front 1]: access time=2026-11-25T23:59:01.123Z id=gen-1... tenant=limited
     *   user=- ip=127.0.0.1 route=generate status=200 tokens=3 device_ms=41.250 duration_ms=48.000
     *   apikey=-
     */
    int ok200 = 0, ok401 = 0;
    for (const char *p = log; (p = strstr(p, "]: access time=")); p++) {
        const char *bol = p;
        while (bol > log && bol[-1] != '\n')
            bol--;
        int front, y, mo, d, h, mi, s, ms, status, tokens;
        char id[48], tenant[64], user[260], ip[48], route[32], key[16];
        double dev, dur;
        int n = sscanf(bol,
                       "<6>gpuwarden[front %d]: access time=%4d-%2d-%2dT%2d:%2d:%2d.%3dZ id=%47s "
                       "tenant=%63s user=%259s ip=%47s route=%31s status=%d tokens=%d "
                       "device_ms=%lf duration_ms=%lf apikey=%15s",
                       &front, &y, &mo, &d, &h, &mi, &s, &ms, id, tenant, user, ip, route, &status,
                       &tokens, &dev, &dur, key);
        assert_int_equal(n, 18);
        assert_string_equal(key, "-");  /* JWTs: no API key */
        assert_string_equal(user, "-"); /* these requests name no end user */
        assert_string_equal(ip, "127.0.0.1");
        if (status == 200 && !strcmp(route, "generate")) {
            assert_string_equal(tenant, "limited");
            assert_int_equal(strncmp(id, "gen-", 4), 0);
            assert_true(tokens >= 1 && tokens <= 3);
            assert_true(dev > 0 && dur >= dev);
            ok200++;
        }
        if (status == 401) {
            assert_string_equal(id, "-");
            assert_string_equal(tenant, "-");
            assert_string_equal(route, "generate");
            assert_int_equal(tokens, 0);
            ok401++;
        }
    }
    assert_int_equal(ok200, 5);
    assert_int_equal(ok401, 2);
}

static void test_every_log_line_has_a_priority_prefix(void **state)
{
    (void)state;
    const char *log = log_text();
    int lines = 0;
    for (const char *p = log; *p;) {
        const char *nl = strchr(p, '\n');
        if (!(p[0] == '<' && p[1] >= '3' && p[1] <= '7' && p[2] == '>'))
            fail_msg("line without a priority: %.*s", nl ? (int)(nl - p) : (int)strlen(p), p);
        lines++;
        p = nl ? nl + 1 : p + strlen(p);
    }
    assert_true(lines > 10);
}

/* Runs gpuwardenctl; its exit status. */
static int ctl(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl -s %s %s >/dev/null 2>&1", GW_BIN_DIR, SOCK, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int gen(const char *tenant, struct resp *r)
{
    char *tok = svc_token(&S, tenant, 300);
    int rc = svc_http(&S, "POST", "/v1/generate", tok, "{\"prompt\":\"Hi\",\"max_tokens\":1}", r);
    free(tok);
    return rc;
}

static void test_set_limit_takes_effect_at_the_fronts(void **state)
{
    (void)state;
    /* "single" has 100 per minute burst 10 from the file: a third request
     * at once would pass. Lowered to 2 per minute, the third is refused by
     * whichever front takes it. */
    assert_int_equal(ctl("tenant set-limit single --rate \"2 per minute\""), 0);
    struct resp r;
    char pol[128];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gen("single", &r), 0);
        if (r.status != 200)
            fail_msg("request %d: %d %s", i, r.status, r.body);
        assert_non_null(resp_header(&r, "RateLimit-Policy", pol, sizeof(pol)));
        assert_string_equal(pol, "\"tenant\";q=2;w=60");
        resp_free(&r);
    }
    assert_int_equal(gen("single", &r), 0);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.body, "\"code\":\"rate_limited\""));
    resp_free(&r);
    /* a reload puts the file's limit back at every front */
    assert_int_equal(ctl("reload"), 0);
    assert_int_equal(gen("single", &r), 0);
    if (r.status != 200)
        fail_msg("after reload: %d %s", r.status, r.body);
    assert_non_null(resp_header(&r, "RateLimit-Policy", pol, sizeof(pol)));
    assert_string_equal(pol, "\"tenant\";q=110;w=60");
    resp_free(&r);
}

/* Last: switch the running service to JSON lines by a reload. */
static void test_json_lines_after_reload(void **state)
{
    (void)state;
    /* the same config but "format": "json" (same length, in place) */
    FILE *f = fopen(S.config, "r+");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    char *at = strstr(buf, "\"format\": \"text\"");
    assert_non_null(at);
    memcpy(at, "\"format\": \"json\"", 16);
    rewind(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    assert_int_equal(ctl("reload"), 0);
    /* The fronts take SIGHUP in their loops: ask until one answers in
     * JSON (a hang after SVC_DEADLINE_MS). */
    int access = 0, master_reloaded = 0;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; !access && svc_now_ms() < end;) {
        struct resp r;
        assert_int_equal(svc_http(&S, "GET", "/healthz", NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        usleep(100000);
        access = master_reloaded = 0;
        const char *log = log_text();
        for (const char *p = strstr(log, "<6>{\"time\":"); p; p = strstr(p + 1, "\n<")) {
            if (*p == '\n')
                p++;
            if (!(p[0] == '<' && p[2] == '>' && p[3] == '{'))
                continue;
            const char *nl = strchr(p, '\n');
            char line[2048];
            snprintf(line, sizeof(line), "%.*s", nl ? (int)(nl - p - 3) : (int)strlen(p + 3),
                     p + 3);
            json_error_t je;
            json_t *o = json_loads(line, 0, &je);
            if (!o)
                fail_msg("not JSON: %s", line);
            assert_true(json_is_string(json_object_get(o, "time")));
            assert_true(json_is_string(json_object_get(o, "level")));
            assert_true(json_is_string(json_object_get(o, "role")));
            assert_true(json_is_integer(json_object_get(o, "pid")));
            const char *msg = json_string_value(json_object_get(o, "msg"));
            const char *role = json_string_value(json_object_get(o, "role"));
            assert_non_null(msg);
            if (!strcmp(role, "master") && !strncmp(msg, "reloaded ", 9))
                master_reloaded++;
            if (!strcmp(msg, "access")) {
                assert_string_equal(role, "front");
                assert_true(json_is_integer(json_object_get(o, "index")));
                assert_string_equal(json_string_value(json_object_get(o, "route")), "healthz");
                assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
                assert_string_equal(json_string_value(json_object_get(o, "ip")), "127.0.0.1");
                assert_string_equal(json_string_value(json_object_get(o, "id")), "-");
                assert_string_equal(json_string_value(json_object_get(o, "user")), "-");
                assert_true(json_is_real(json_object_get(o, "duration_ms")));
                access++;
            }
            json_decref(o);
        }
    }
    assert_true(access >= 1);
    assert_int_equal(master_reloaded, 1);
}

int main(void)
{
    gw_need_model(); /* exit 77 (ctest: Skipped) without models/ */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_exact_after_known_requests),
        cmocka_unit_test(test_metrics_same_from_every_front_and_the_segment),
        cmocka_unit_test(test_access_log_line_shape),
        cmocka_unit_test(test_every_log_line_has_a_priority_prefix),
        cmocka_unit_test(test_set_limit_takes_effect_at_the_fronts),
        cmocka_unit_test(test_json_lines_after_reload),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
