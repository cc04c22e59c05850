/* test_metrics.c - GET /metrics as rendered from the segment (no
 * processes): exact lines after a known sequence of events, histograms
 * cumulative with +Inf == _count, the same text from every process that
 * maps the segment, and dist/grafana-dashboard.json naming only metrics
 * that are emitted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../common/fixture.h"
#include "gw_supervisor.h"
#include "skip.h"

#include <jansson.h>
#include <sys/wait.h>

#define MS 1000000ull

/* /metrics as the segment renders it. The caller owns the struct (and
 * frees text): gw_metrics_render writes through pointers into it, so the
 * text is never reached through a variable of a frame that has returned
 * (which is what gcc's -Wdangling-pointer saw in a helper returning the
 * value of its own out-parameter). */
struct rendered {
    char *text;
    size_t len;
};

static void render(struct gw_segment *seg, struct rendered *r)
{
    assert_int_equal(gw_metrics_render(seg, &r->text, &r->len), 0);
    assert_int_equal(strlen(r->text), r->len);
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (!strstr(text, want))
        fail_msg("missing line: %s", line);
}

/* 3 x 200, 2 x 401, 1 x 429 on the native route, as a front counts them. */
static void known_sequence(struct gw_segment *seg)
{
    for (int i = 0; i < 3; i++) {
        gw_metrics_request(seg, GW_ROUTE_GENERATE, 200);
        gw_metrics_finish(seg, GW_FIN_LENGTH);
        gw_metrics_observe(seg, GW_MH_E2E, 300 * MS);
        gw_metrics_observe(seg, GW_MH_TTFT, 40 * MS);
    }
    for (int i = 0; i < 2; i++) {
        gw_metrics_refusal(seg, GW_REF_AUTH);
        gw_metrics_request(seg, GW_ROUTE_GENERATE, 401);
    }
    gw_metrics_refusal(seg, GW_REF_TENANT_RATE);
    gw_metrics_request(seg, GW_ROUTE_GENERATE, 429);
    gw_metrics_add(seg, GW_MC_TOKENS, 24);
    gw_metrics_add(seg, GW_MC_PROMPT_TOKENS, 15);
    gw_metrics_add(seg, GW_MC_DEVICE_NS, 1500 * MS);
    gw_metrics_add(seg, GW_MC_RESTARTS_WORKER, 1);
    gw_metrics_add(seg, GW_MC_GUARD_REDACTIONS, 2);
    gw_metrics_request(seg, GW_ROUTE_MODELS, 200);
    gw_kills_add(seg, GW_WD_REPETITION);
}

static void test_exact_lines_after_a_known_sequence(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    known_sequence(&f->seg);
    struct rendered r;
    render(&f->seg, &r);
    const char *t = r.text;
    expect_line(t, "# TYPE gpuwarden_http_requests_total counter");
    expect_line(t, "gpuwarden_http_requests_total{route=\"generate\",code=\"2xx\"} 3");
    expect_line(t, "gpuwarden_http_requests_total{route=\"generate\",code=\"4xx\"} 3");
    expect_line(t, "gpuwarden_http_requests_total{route=\"generate\",code=\"5xx\"} 0");
    expect_line(t, "gpuwarden_http_requests_total{route=\"chat\",code=\"2xx\"} 0");
    expect_line(t, "gpuwarden_http_requests_total{route=\"models\",code=\"2xx\"} 1");
    expect_line(t, "# TYPE gpuwarden_guard_redactions_total counter");
    expect_line(t, "gpuwarden_guard_redactions_total 2");
    expect_line(t, "gpuwarden_admission_refusals_total{reason=\"auth\"} 2");
    expect_line(t, "gpuwarden_admission_refusals_total{reason=\"tenant_rate\"} 1");
    expect_line(t, "gpuwarden_admission_refusals_total{reason=\"budget\"} 0");
    expect_line(t, "gpuwarden_watchdog_kills_total{reason=\"repetition\"} 1");
    expect_line(t, "gpuwarden_generations_total{finish_reason=\"length\"} 3");
    expect_line(t, "gpuwarden_generated_tokens_total 24");
    expect_line(t, "gpuwarden_prompt_tokens_total 15");
    expect_line(t, "gpuwarden_device_seconds_total 1.500000");
    expect_line(t, "gpuwarden_process_restarts_total{role=\"worker\"} 1");
    expect_line(t, "gpuwarden_process_restarts_total{role=\"front\"} 0");
    expect_line(t, "gpuwarden_requests_in_flight 0");
    expect_line(t, "gpuwarden_queue_depth 0");
    expect_line(t, "gpuwarden_workers{state=\"ready\"} 0");
    expect_line(t, "gpuwarden_slots_capacity 16");
    expect_line(t, "gpuwarden_ledger_accounts_capacity 64");
    expect_line(t, "gpuwarden_request_duration_seconds_bucket{le=\"0.25\"} 0");
    expect_line(t, "gpuwarden_request_duration_seconds_bucket{le=\"0.5\"} 3");
    expect_line(t, "gpuwarden_request_duration_seconds_bucket{le=\"+Inf\"} 3");
    expect_line(t, "gpuwarden_request_duration_seconds_sum 0.900000");
    expect_line(t, "gpuwarden_request_duration_seconds_count 3");
    expect_line(t, "gpuwarden_time_to_first_token_seconds_bucket{le=\"0.05\"} 3");
    expect_line(t, "gpuwarden_time_per_output_token_seconds_count 0");
    free(r.text);
    fx_close(f);
}

/* Every histogram: le bounds increasing, counts cumulative, +Inf == _count. */
static void check_histograms(const char *t)
{
    static const char *const names[] = {
        "gpuwarden_time_to_first_token_seconds", "gpuwarden_time_per_output_token_seconds",
        "gpuwarden_request_duration_seconds", "gpuwarden_queue_time_seconds"};
    for (size_t h = 0; h < 4; h++) {
        char key[128];
        snprintf(key, sizeof(key), "\n%s_bucket{le=\"", names[h]);
        const char *p = t;
        double last_le = -1;
        unsigned long long last = 0, inf = 0, count = 0;
        int buckets = 0;
        while ((p = strstr(p, key))) {
            p += strlen(key);
            unsigned long long v;
            if (strncmp(p, "+Inf\"} ", 7) == 0) {
                assert_int_equal(sscanf(p + 7, "%llu", &inf), 1);
                assert_true(inf >= last);
            } else {
                double le;
                assert_int_equal(sscanf(p, "%lf\"} %llu", &le, &v), 2);
                assert_true(le > last_le);
                assert_true(v >= last);
                last_le = le;
                last = v;
            }
            buckets++;
        }
        assert_int_equal(buckets, GW_M_BUCKETS + 1);
        snprintf(key, sizeof(key), "\n%s_count ", names[h]);
        p = strstr(t, key);
        assert_non_null(p);
        assert_int_equal(sscanf(p + strlen(key), "%llu", &count), 1);
        assert_int_equal(inf, count);
    }
}

static void test_histograms_are_cumulative_and_inf_is_count(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    for (uint64_t i = 0; i < 200; i++) {
        gw_metrics_observe(&f->seg, GW_MH_TTFT, i * i * MS / 4);
        gw_metrics_observe(&f->seg, GW_MH_TPOT, i * MS / 8);
        gw_metrics_observe(&f->seg, GW_MH_QUEUE, i * 700 * MS);
    }
    struct rendered r;
    render(&f->seg, &r);
    check_histograms(r.text);
    expect_line(r.text, "gpuwarden_queue_time_seconds_bucket{le=\"120\"} 172");
    expect_line(r.text, "gpuwarden_queue_time_seconds_count 200");
    free(r.text);
    fx_close(f);
}

/* A front in another process counts through its own mapping; this one
 * and a third mapping render the same text. */
static void test_every_mapping_renders_the_same_totals(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    pid_t p = fork();
    if (p == 0) {
        struct gw_segment other;
        char err[256];
        if (gw_segment_attach(&other, f->path, err, sizeof(err)) != 0)
            _exit(1);
        known_sequence(&other);
        gw_segment_close(&other);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(p, &st, 0), p);
    assert_int_equal(WEXITSTATUS(st), 0);
    struct gw_segment third;
    char err[256];
    assert_int_equal(gw_segment_attach(&third, f->path, err, sizeof(err)), 0);
    struct rendered a, b;
    render(&f->seg, &a);
    render(&third, &b);
    assert_string_equal(a.text, b.text);
    expect_line(a.text, "gpuwarden_http_requests_total{route=\"generate\",code=\"2xx\"} 3");
    free(a.text);
    free(b.text);
    gw_segment_close(&third);
    fx_close(f);
}

/* Every gpuwarden_* name in a panel's expr is one /metrics emits. */
static void test_dashboard_names_only_emitted_metrics(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/dist/grafana-dashboard.json", gw_source_dir());
    json_error_t je;
    json_t *d = json_load_file(path, 0, &je);
    if (!d)
        fail_msg("%s: %s at line %d", path, je.text, je.line);
    assert_true(json_integer_value(json_object_get(d, "schemaVersion")) >= 36);
    struct fx *f = fx_open(NULL);
    struct rendered r;
    render(&f->seg, &r);
    const char *t = r.text;
    json_t *panels = json_object_get(d, "panels"), *panel, *target;
    size_t i, k;
    int names = 0;
    assert_true(json_array_size(panels) >= 12);
    json_array_foreach (panels, i, panel) {
        json_t *targets = json_object_get(panel, "targets");
        assert_true(json_array_size(targets) >= 1);
        json_array_foreach (targets, k, target) {
            const char *e = json_string_value(json_object_get(target, "expr"));
            assert_non_null(e);
            for (const char *p = e; (p = strstr(p, "gpuwarden_"));) {
                size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
                char name[128], a1[140], a2[140];
                snprintf(name, sizeof(name), "%.*s", (int)n, p);
                snprintf(a1, sizeof(a1), "\n%s ", name);
                snprintf(a2, sizeof(a2), "\n%s{", name);
                if (!strstr(t, a1) && !strstr(t, a2))
                    fail_msg("panel \"%s\" uses %s, which /metrics does not emit",
                             json_string_value(json_object_get(panel, "title")), name);
                names++;
                p += n;
            }
        }
    }
    assert_true(names >= 20);
    free(r.text);
    fx_close(f);
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_lines_after_a_known_sequence),
        cmocka_unit_test(test_histograms_are_cumulative_and_inf_is_count),
        cmocka_unit_test(test_every_mapping_renders_the_same_totals),
        cmocka_unit_test(test_dashboard_names_only_emitted_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
