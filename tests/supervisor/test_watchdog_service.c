/* test_watchdog_service.c - the watchdog end to end: a real master, fronts
 * and a worker on SmolLM2 (greedy), driven over HTTP. A looping generation
 * is killed and named; a SIGSTOPped worker is SIGKILLed, named
 * "worker_stalled", replaced, and the next request is served; the output
 * guard redacts or kills in a stream. Every kill shows in the audit log
 * and in /metrics. Exits 77 (ctest: Skipped) when models/ lacks the model.
 *
 * The watchdog runs in another process on the wall clock, so what a test
 * here can know exactly is the kill's reason and that it came after its
 * limit was passed (the audit line's token count), not how many tokens or
 * milliseconds it took to land: that is test_kill_states' (an injected
 * clock) and test_watchdog_model's (in process, every token judged). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <sys/syscall.h>

#define STALL_MS 1000
#define GRACE_MS 300

static struct svc S;
static int started;

static int group_setup(void **state)
{
    (void)state;
    char extra[1024];
    snprintf(extra, sizeof(extra),
             "\"watchdog\": {\"stall_ms\": %d, \"grace_ms\": %d, \"guard\": ["
             "{\"name\": \"email\", \"pattern\": \"\\\\b[A-Za-z0-9._%%+-]+@[A-Za-z0-9-]+"
             "(?:\\\\.[A-Za-z0-9-]+)*\\\\.[A-Za-z]{2,}\\\\b\", \"action\": \"redact\"},"
             "{\"name\": \"code\", \"pattern\": \"Code: 1234\", \"action\": \"kill\"}]},",
             STALL_MS, GRACE_MS);
    svc_write_config(&S, extra);
    if (svc_start_or_dump(&S) != 0)
        return -1;
    started = 1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (started && svc_stop(&S) != 0) {
        fprintf(stderr, "master did not stop cleanly; its log:\n");
        svc_dump_log(&S);
        return -1;
    }
    return 0;
}

/* POST body to path, whole response (SSE bodies included) into r. */
static void post(const char *path, const char *body, struct resp *r)
{
    char *tok = svc_token(&S, "happy", 600);
    assert_int_equal(svc_http(&S, "POST", path, tok, body, r), 0);
    free(tok);
    if (r->status != 200)
        fail_msg("%s: status %d: %s", path, r->status, r->body);
}

/* The audit log's text (malloc'd). */
static char *audit_log(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/state/audit.log", S.dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The "tokens" of the audit line of request `id` killed for `reason` in
 * the node's audit log under dir: how far the run had gone when the kill
 * was decided; -1 when there is no such line. */
static long audit_tokens(const char *dir, const char *id, const char *reason)
{
    char path[256], want[160], line[8192];
    snprintf(path, sizeof(path), "%s/state/audit.log", dir);
    snprintf(want, sizeof(want), "\"request_id\":\"%s\",", id);
    char why[80];
    snprintf(why, sizeof(why), "\"reason\":\"%s\",\"tokens\":", reason);
    FILE *f = fopen(path, "r");
    long tokens = -1;
    while (f && fgets(line, sizeof(line), f)) {
        const char *r = strstr(line, why);
        if (strstr(line, want) && r)
            tokens = strtol(r + strlen(why), NULL, 10);
    }
    if (f)
        fclose(f);
    return tokens;
}

/* The "id" and "completion_tokens" of a generate response. */
static long completion_of(const char *body, char id[64])
{
    const char *idp = strstr(body, "\"id\":\"");
    assert_non_null(idp);
    assert_int_equal(sscanf(idp + 6, "%63[^\"]", id), 1);
    const char *ct = strstr(body, "\"completion_tokens\":");
    assert_non_null(ct);
    return strtol(ct + 20, NULL, 10);
}

/* The value of `name {labels}` in /metrics, -1 when absent. */
static long metric(const char *series)
{
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/metrics", NULL, NULL, &r), 0);
    const char *p = strstr(r.body, series);
    long v = p ? strtol(p + strlen(series), NULL, 10) : -1;
    resp_free(&r);
    return v;
}

static void test_looping_generation_is_killed_named_audited_and_counted(void **state)
{
    (void)state;
    struct resp r;
    post("/v1/generate",
         "{\"prompt\":\"Say hello 1000 times: hello hello hello\",\"max_tokens\":200}", &r);
    if (!strstr(r.body, "\"finish_reason\":\"killed\"") ||
        !strstr(r.body, "\"killed_reason\":\"repetition\""))
        fail_msg("expected killed/repetition: %s", r.body);
    /* " hello" is a cycle of one token, and the prompt asks for 1000 of
     * them: the front carries the count in the slot (GW_REQ_ASKED), the
     * watchdog allows requested_max (100) x 1.125 + 2 = 114 cycles, so
     * the detector fires at 115 tokens (at 33 without the count); the
     * master judges what it samples, so the kill is decided at 115 or
     * later, and the worker stops after that */
    char id[64];
    long toks = completion_of(r.body, id);
    resp_free(&r);
    long at = audit_tokens(S.dir, id, "repetition");
    print_message("looping generation: kill decided at %ld tokens, stopped after %ld\n", at, toks);
    assert_true(at >= 115);
    assert_true(toks >= at && toks < 200); /* cut short of max_tokens */
    char want[192];
    snprintf(want, sizeof(want),
             "\"request_id\":\"%s\",\"tenant\":\"happy\",\"ip\":\"127.0.0.1\","
             "\"reason\":\"repetition\"",
             id);
    char *log = audit_log();
    if (!strstr(log, want))
        fail_msg("audit log lacks %s:\n%s", want, log);
    assert_non_null(strstr(strstr(log, want), "\"output_tail\":\"")); /* the text's tail */
    assert_non_null(strstr(log, "hello hello hello hello"));
    free(log);
    assert_int_equal(metric("gpuwarden_watchdog_kills_total{reason=\"repetition\"} "), 1);
}

static void test_streamed_loop_ends_with_a_killed_chunk_then_done(void **state)
{
    (void)state;
    struct resp r;
    post("/v1/chat/completions",
         "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"Repeat the word "
         "poem "
         "forever: poem poem poem\"}],\"max_tokens\":200,\"temperature\":0,\"stream\":true}",
         &r);
    const char *k = strstr(r.body, "\"finish_reason\":\"killed\",\"killed_reason\":\"repetition\"");
    const char *done = strstr(r.body, "data: [DONE]\n\n");
    if (!k || !done || done < k)
        fail_msg("expected a final killed/repetition chunk, then [DONE]:\n%s", r.body);
    resp_free(&r);
    assert_int_equal(metric("gpuwarden_watchdog_kills_total{reason=\"repetition\"} "), 2);
}

static void test_stalled_worker_is_killed_replaced_and_the_next_request_served(void **state)
{
    (void)state;
    pid_t w = svc_worker_pid(&S);
    assert_true(w > 0);
    char *tok = svc_token(&S, "happy", 600);
    int fd = svc_connect(&S);
    assert_true(fd >= 0);
    static const char body[] =
        "{\"prompt\":\"Once upon a time\",\"max_tokens\":256,\"stream\":true}";
    char head[4096];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     tok, strlen(body), body);
    free(tok);
    send_all(fd, head, (size_t)n);
    static char buf[1 << 16];
    size_t len = 0;
    /* text is flowing: the worker is mid-generation */
    while (!strstr(buf, "\"text\"")) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, SVC_DEADLINE_MS), 1);
        ssize_t got = recv(fd, buf + len, sizeof(buf) - len - 1, 0);
        assert_true(got > 0);
        len += (size_t)got;
        buf[len] = '\0';
    }
    assert_null(strstr(buf, "[DONE]"));
    /* readable once w has exited, whoever reaps it */
    int wfd = (int)syscall(SYS_pidfd_open, w, 0);
    assert_true(wfd >= 0);
    assert_int_equal(kill(w, SIGSTOP), 0);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, SVC_DEADLINE_MS) != 1)
            break;
        ssize_t got = recv(fd, buf + len, sizeof(buf) - len - 1, 0);
        if (got <= 0)
            break;
        len += (size_t)got;
        buf[len] = '\0';
        if (strstr(buf, "[DONE]"))
            break;
    }
    close(fd);
    if (!strstr(buf, "\"finish_reason\":\"killed\"") ||
        !strstr(buf, "\"killed_reason\":\"worker_stalled\"") || !strstr(buf, "data: [DONE]"))
        fail_msg("stream did not end with killed/worker_stalled:\n%s", buf);
    /* the stopped worker is gone, and it was the watchdog's SIGKILL after
     * the grace period (a stopped process answers no cancel word) */
    struct pollfd wp = {.fd = wfd, .events = POLLIN};
    assert_int_equal(poll(&wp, 1, SVC_DEADLINE_MS), 1);
    close(wfd);
    char line[160];
    snprintf(line, sizeof(line), "worker pid %d did not stop within the grace period: SIGKILL\n",
             (int)w);
    char *log = svc_log_text(&S);
    if (!strstr(log, line))
        fail_msg("no \"%s\" in the master's log:\n%s", line, log);
    snprintf(line, sizeof(line), "worker 0 (pid %d) killed by signal 9 (SIGKILL)\n", (int)w);
    if (!strstr(log, line))
        fail_msg("no \"%s\" in the master's log:\n%s", line, log);
    free(log);
    /* a new worker takes its place */
    pid_t w2 = -1;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS;
         (w2 = svc_worker_pid(&S)) <= 0 || w2 == w;) {
        assert_true(svc_now_ms() < end);
        usleep(5000);
    }
    struct resp r;
    post("/v1/generate", "{\"prompt\":\"The capital of France is\",\"max_tokens\":4}", &r);
    assert_non_null(strstr(r.body, "\"finish_reason\":\"length\""));
    resp_free(&r);
    assert_int_equal(metric("gpuwarden_watchdog_kills_total{reason=\"worker_stalled\"} "), 1);
    log = audit_log();
    assert_non_null(strstr(log, "\"reason\":\"worker_stalled\""));
    free(log);
}

static void test_output_guard_redacts_an_address_in_a_stream(void **state)
{
    (void)state;
    struct resp r;
    /* greedy SmolLM2 continues with " jsmith@example.com." over several
     * tokens: the address is redacted before any of it is sent */
    post("/v1/generate",
         "{\"prompt\":\"Email: john.smith@example.com. Email: john.smith@example.com. Email:\","
         "\"max_tokens\":12,\"stream\":true}",
         &r);
    if (!strstr(r.body, "[REDACTED]") || strchr(r.body, '@') || strstr(r.body, "example"))
        fail_msg("the address was not redacted in the stream:\n%s", r.body);
    assert_non_null(strstr(r.body, "data: [DONE]"));
    resp_free(&r);
}

static void test_output_guard_kill_rule_ends_the_generation(void **state)
{
    (void)state;
    struct resp r;
    /* greedy: " 1234. Code: 1234. Code:" - the rule "Code: 1234" matches
     * across tokens; what precedes it is sent, the match never */
    post("/v1/generate",
         "{\"prompt\":\"Code: SECRET-1234. Code: SECRET-1234. Code:\",\"max_tokens\":16}", &r);
    if (!strstr(r.body, "\"finish_reason\":\"killed\"") ||
        !strstr(r.body, "\"killed_reason\":\"output_guard\"") || strstr(r.body, "Code: 1234"))
        fail_msg("expected killed/output_guard without the match: %s", r.body);
    assert_non_null(strstr(r.body, "\"text\":\" 1234. \""));
    resp_free(&r);
    assert_int_equal(metric("gpuwarden_watchdog_kills_total{reason=\"output_guard\"} "), 1);
    char *log = audit_log();
    assert_non_null(strstr(log, "\"reason\":\"output_guard\""));
    free(log);
}

static void test_sigusr1_reopens_the_audit_log(void **state)
{
    (void)state;
    char path[256], old[300];
    snprintf(path, sizeof(path), "%s/state/audit.log", S.dir);
    snprintf(old, sizeof(old), "%s.1", path);
    assert_int_equal(rename(path, old), 0); /* what logrotate does */
    assert_int_equal(kill(S.master, SIGUSR1), 0);
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS;
         access(path, F_OK) != 0 && svc_now_ms() < end;)
        usleep(10000);
    assert_int_equal(access(path, F_OK), 0); /* reopened: created anew */
    struct resp r;
    post("/v1/generate",
         "{\"prompt\":\"Write the letter A 500 times: A A A A\",\"max_tokens\":200}", &r);
    assert_non_null(strstr(r.body, "\"killed_reason\":\"repetition\""));
    resp_free(&r);
    char *log = audit_log();
    assert_non_null(strstr(log, "\"reason\":\"repetition\""));
    assert_null(strstr(log, "worker_stalled")); /* the earlier lines stayed in the old file */
    free(log);
    unlink(old);
}

/* After every kill above (cooperative, SIGKILL, output guard): no slot is
 * left in use and every account is conserved (reserved = used + refunded
 * + held by live slots). */
static void test_ledger_is_conserved_and_no_slot_leaks_after_the_kills(void **state)
{
    (void)state;
    assert_int_equal(svc_wait_slots_free(&S), 0);
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", S.dir);
    assert_int_equal(gw_segment_attach(&seg, path, err, sizeof(err)), 0);
    int bad = gw_ledger_check(&seg, err, sizeof(err));
    if (bad != 0)
        fail_msg("%d accounts not conserved: %s", bad, err);
    gw_segment_close(&seg);
}

/* ------------------------------------------------ learned length */
/* A node of its own: floor 24 tokens, factor 2, warm-up 4 completions;
 * prompts that ask for endless output are cut at 12 tokens. */

static struct svc S2;
static int started2;

static int learned_setup(void **state)
{
    (void)state;
    svc_write_config(&S2, "\"watchdog\": {\"anomalous_length\": {\"floor_tokens\": 24,"
                          " \"factor\": 2, \"warmup\": 4}, \"unbounded_cap_tokens\": 12},");
    if (svc_start_or_dump(&S2) != 0)
        return -1;
    started2 = 1;
    return 0;
}

static int learned_teardown(void **state)
{
    (void)state;
    if (started2 && svc_stop_or_dump(&S2) != 0)
        return -1;
    return 0;
}

/* completion_tokens of a native generation, and whether it was killed for
 * `reason` (anomalous_length unless set); *at gets the audit line's token
 * count for that kill (-1 when it was not killed). */
static const char *gen2_reason = "anomalous_length";
static char gen2_body[8192];
static long gen2(const char *body, int *killed, long *at)
{
    char *tok = svc_token(&S2, "happy", 600);
    struct resp r;
    assert_int_equal(svc_http(&S2, "POST", "/v1/generate", tok, body, &r), 0);
    free(tok);
    if (r.status != 200)
        fail_msg("status %d: %s", r.status, r.body);
    char want[96];
    snprintf(want, sizeof(want), "\"killed_reason\":\"%s\"", gen2_reason);
    *killed = strstr(r.body, want) != NULL;
    snprintf(gen2_body, sizeof(gen2_body), "%s", r.body);
    char id[64];
    long n = completion_of(r.body, id);
    resp_free(&r);
    *at = *killed ? audit_tokens(S2.dir, id, gen2_reason) : -1;
    return n;
}

/* The tenant's learned-length histogram as the segment holds it. */
static struct gw_lenest lenest_of(const char *tenant)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", S2.dir);
    assert_int_equal(gw_segment_attach(&seg, path, err, sizeof(err)), 0);
    struct gw_acct a;
    struct gw_lenest e = {0};
    if (gw_ledger_get(&seg, GW_KIND_TENANT, tenant, strlen(tenant), 0, 0, &a) == 0)
        assert_int_equal(gw_lenest_get(&seg, a, &e), 0);
    gw_segment_close(&seg);
    return e;
}

/* The length limit the watchdog applies to `tenant`'s next run, from the
 * histogram in the segment and the node's config (gw_lenest_limit). */
static uint64_t limit_of(const char *tenant)
{
    struct gw_config *cfg = NULL;
    char err[1024];
    if (gw_config_load(&cfg, S2.config, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    struct gw_wd_limits l;
    gw_wd_limits_for(cfg, tenant, &l);
    gw_config_free(cfg);
    struct gw_lenest e = lenest_of(tenant);
    return gw_lenest_limit(&e, &l);
}

/* The limit learned in the first test, for the tests after it. */
static uint64_t learned_limit;

static void test_learned_length_floor_before_warmup_then_the_tenants_p99(void **state)
{
    (void)state;
    assert_true(started2); /* the node of this group is up */
    static const char long_one[] = "{\"prompt\":\"Once upon a time, in a small village,\","
                                   "\"max_tokens\":80}";
    int killed;
    long at;
    /* before warm-up: the floor (24); a killed run teaches nothing */
    assert_int_equal(limit_of("happy"), 24);
    long n = gen2(long_one, &killed, &at);
    print_message("before warm-up: killed=%d, decided at %ld tokens, stopped after %ld (floor "
                  "24)\n",
                  killed, at, n);
    if (!killed)
        fail_msg("expected killed/anomalous_length: %s", gen2_body);
    assert_true(at > 24);
    assert_true(n >= at && n < 80);
    assert_int_equal(lenest_of("happy").seen, 0);
    /* warm-up: four ordinary completions of 20 tokens, each observed ending
     * by the watchdog (the segment's count says when) */
    for (int i = 0; i < 4; i++) {
        n = gen2("{\"prompt\":\"Once upon a time, in a small village,\",\"max_tokens\":20}",
                 &killed, &at);
        assert_false(killed);
        assert_int_equal(n, 20);
    }
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; lenest_of("happy").seen < 4;) {
        assert_true(svc_now_ms() < end);
        usleep(10000);
    }
    assert_int_equal(lenest_of("happy").seen, 4);
    /* after: factor 2 x the p99 of what was observed (20 tokens, or a scan's
     * worth fewer: bucket (16, 20], limit 40), above the floor */
    learned_limit = limit_of("happy");
    print_message("learned limit %llu\n", (unsigned long long)learned_limit);
    assert_true(learned_limit > 24 && learned_limit <= 40);
    n = gen2(long_one, &killed, &at);
    print_message("after warm-up: killed=%d, decided at %ld tokens, stopped after %ld (learned "
                  "limit %llu)\n",
                  killed, at, n, (unsigned long long)learned_limit);
    if (!killed)
        fail_msg("expected killed/anomalous_length: %s", gen2_body);
    assert_true(at > (long)learned_limit);
    assert_true(n >= at && n < 80);
}

/* The estimate is in the segment: a master that restarts (and its new
 * watchdog) applies the tenant's learned limit at once, not the floor. */
static void test_learned_length_survives_a_master_restart(void **state)
{
    (void)state;
    assert_true(started2);           /* the node of this group is up */
    assert_true(learned_limit > 24); /* the test before learned it */
    assert_int_equal(svc_stop(&S2), 0);
    started2 = 0;
    if (svc_start(&S2) != 0) {
        svc_dump_log(&S2);
        fail_msg("the master did not come back");
    }
    started2 = 1;
    assert_int_equal(limit_of("happy"), learned_limit);
    int killed;
    long at;
    long n = gen2("{\"prompt\":\"Once upon a time, in a small village,\",\"max_tokens\":80}",
                  &killed, &at);
    print_message("after a restart: killed=%d, decided at %ld tokens, stopped after %ld (learned "
                  "limit %llu, floor 24)\n",
                  killed, at, n, (unsigned long long)learned_limit);
    if (!killed)
        fail_msg("expected killed/anomalous_length: %s", gen2_body);
    assert_true(at > (long)learned_limit);
    assert_true(n >= at && n < 80);
}

/* The same max_tokens, with and without "forever": only the prompt that
 * asks for endless output is cut at unbounded_cap_tokens (12). Both stay
 * within the tenant's learned length limit, so only the cap can cut. */
static void test_unbounded_request_gets_the_lower_cap_and_its_own_reason(void **state)
{
    (void)state;
    assert_true(started2); /* the node of this group is up */
    assert_true(learned_limit > 24);
    int max = (int)learned_limit;
    char body[160];
    int killed;
    long at;
    gen2_reason = "unbounded_request";
    snprintf(body, sizeof(body),
             "{\"prompt\":\"Count upward forever: 1, 2, 3,\",\"max_tokens\":%d}", max);
    long n = gen2(body, &killed, &at);
    print_message("flagged: killed=%d, decided at %ld tokens, stopped after %ld (cap 12)\n", killed,
                  at, n);
    if (!killed || !strstr(gen2_body, "\"finish_reason\":\"killed\""))
        fail_msg("expected killed/unbounded_request: %s", gen2_body);
    assert_true(at > 12);
    assert_true(n >= at && n < max);
    snprintf(body, sizeof(body), "{\"prompt\":\"Count upward: 1, 2, 3,\",\"max_tokens\":%d}", max);
    n = gen2(body, &killed, &at);
    print_message("ordinary: killed=%d after %ld tokens\n", killed, n);
    if (strstr(gen2_body, "\"finish_reason\":\"killed\"") ||
        !strstr(gen2_body, "\"finish_reason\":\"length\""))
        fail_msg("expected finish_reason length: %s", gen2_body);
    assert_int_equal(n, max);
    gen2_reason = "anomalous_length";
    struct resp r;
    assert_int_equal(svc_http(&S2, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_non_null(
        strstr(r.body, "gpuwarden_watchdog_kills_total{reason=\"unbounded_request\"} 1\n"));
    resp_free(&r);
    char path[256];
    snprintf(path, sizeof(path), "%s/state/audit.log", S2.dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int lines = 0;
    while (fgets(line, sizeof(line), f))
        lines += strstr(line, "\"tenant\":\"happy\",\"ip\":\"127.0.0.1\","
                              "\"reason\":\"unbounded_request\"") != NULL;
    fclose(f);
    assert_int_equal(lines, 1);
}

int main(void)
{
    gw_need_model(); /* exit 77 (ctest: Skipped) without models/ */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_looping_generation_is_killed_named_audited_and_counted),
        cmocka_unit_test(test_streamed_loop_ends_with_a_killed_chunk_then_done),
        cmocka_unit_test(test_stalled_worker_is_killed_replaced_and_the_next_request_served),
        cmocka_unit_test(test_output_guard_redacts_an_address_in_a_stream),
        cmocka_unit_test(test_output_guard_kill_rule_ends_the_generation),
        cmocka_unit_test(test_sigusr1_reopens_the_audit_log),
        cmocka_unit_test(test_ledger_is_conserved_and_no_slot_leaks_after_the_kills),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    const struct CMUnitTest learned[] = {
        cmocka_unit_test(test_learned_length_floor_before_warmup_then_the_tenants_p99),
        cmocka_unit_test(test_learned_length_survives_a_master_restart),
        cmocka_unit_test(test_unbounded_request_gets_the_lower_cap_and_its_own_reason),
    };
    return rc + cmocka_run_group_tests(learned, learned_setup, learned_teardown);
}
