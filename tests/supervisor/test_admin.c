/* test_admin.c - the admin socket and gpuwardenctl against a real master
 * (SmolLM2 on the CPU; exit 77 when models/ lacks it): every command, the
 * exact error line for each kind of bad input, peer-credential levels, and
 * gpuwardenctl's exit codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>
#include <grp.h>
#include <sys/un.h>

static struct svc S;
static int started;
static char SOCK[108];

static int group_setup(void **state)
{
    (void)state;
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-admin-%d.sock", (int)getpid());
    char extra[512];
    snprintf(extra, sizeof(extra),
             "\"admin\": {\"socket\": \"%s\", \"operators\": [\"gid:0\"], \"admins\": "
             "[\"uid:4242\"]},",
             SOCK);
    svc_max_batch = 1; /* a second request waits in the queue behind the first */
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

/* Connects to the admin socket, sends `line` verbatim, returns the first
 * response line (malloc'd) or NULL. */
static char *raw(const char *line)
{
    return svc_admin_line(SOCK, line);
}

/* One request; the parsed response. */
static json_t *ask(const char *line)
{
    char framed[4096];
    snprintf(framed, sizeof(framed), "%s\n", line);
    char *r = raw(framed);
    assert_non_null(r);
    json_error_t je;
    json_t *j = json_loads(r, 0, &je);
    if (!j)
        fprintf(stderr, "not JSON: %s\n", r);
    free(r);
    assert_non_null(j);
    return j;
}

static void expect_line(const char *req, const char *want)
{
    char *r = raw(req);
    assert_non_null(r);
    assert_string_equal(r, want);
    free(r);
}

/* Runs gpuwardenctl with args; its exit status, stdout in out. */
static int ctl(char *out, size_t outlen, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl %s 2>/dev/null", GW_BIN_DIR, args);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_int_t jint(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void test_status_reports_the_node(void **state)
{
    (void)state;
    json_t *r = ask("{\"cmd\":\"status\"}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "version")), GW_VERSION);
    assert_int_equal(jint(r, "config_epoch", NULL), 1);
    assert_int_equal(jint(r, "fronts", "running"), 2);
    assert_int_equal(jint(r, "fronts", "configured"), 2);
    assert_int_equal(jint(r, "workers", "ready"), 1);
    assert_int_equal(jint(r, "workers", "configured"), 1);
    assert_int_equal(jint(r, "queue_depth", NULL), 0);
    assert_int_equal(jint(r, "in_flight", NULL), 0);
    assert_true(json_is_true(json_object_get(r, "ledger_conserved")));
    json_decref(r);
}

static void test_workers_lists_the_worker(void **state)
{
    (void)state;
    json_t *r = ask("{\"cmd\":\"workers\"}");
    json_t *w = json_array_get(json_object_get(r, "workers"), 0);
    assert_int_equal(json_array_size(json_object_get(r, "workers")), 1);
    assert_int_equal(jint(w, "index", NULL), 0);
    assert_true(jint(w, "pid", NULL) > 0);
    assert_string_equal(json_string_value(json_object_get(w, "device")), "cpu");
    assert_string_equal(json_string_value(json_object_get(w, "state")), "ready");
    assert_true(json_is_null(json_object_get(w, "request")));
    assert_int_equal(jint(w, "running", NULL), 0);
    assert_int_equal(jint(w, "restarts", NULL), 0);
    json_decref(r);
}

/* A long generation in the background: its connection fd. */
static int start_long_request(const char *tenant)
{
    char *tok = svc_token(&S, tenant, 300);
    int fd = svc_connect(&S);
    const char *body = "{\"prompt\":\"Count from one to one thousand:\",\"max_tokens\":250,"
                       "\"temperature\":0}";
    char head[2048];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     tok, strlen(body), body);
    send_all(fd, head, (size_t)n);
    free(tok);
    return fd;
}

static void test_requests_and_kill(void **state)
{
    (void)state;
    int fd = start_long_request("happy");
    json_t *found = NULL;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; !found && svc_now_ms() < end;) {
        json_t *r = ask("{\"cmd\":\"requests\"}");
        json_t *q = json_array_get(json_object_get(r, "requests"), 0);
        if (q && !strcmp(json_string_value(json_object_get(q, "state")), "running"))
            found = json_incref(q);
        json_decref(r);
        if (!found)
            usleep(50000);
    }
    assert_non_null(found);
    assert_string_equal(json_string_value(json_object_get(found, "tenant")), "happy");
    assert_string_equal(json_string_value(json_object_get(found, "ip")), "127.0.0.1");
    const char *id = json_string_value(json_object_get(found, "id"));
    char line[256];
    /* workers shows it as the worker's current request */
    json_t *w = ask("{\"cmd\":\"workers\"}");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(w, "workers"), 0), "request")),
                        id);
    json_decref(w);
    snprintf(line, sizeof(line), "{\"cmd\":\"kill\",\"id\":\"%s\",\"reason\":\"test\"}", id);
    json_t *k = ask(line);
    assert_true(json_is_true(json_object_get(k, "ok")));
    assert_string_equal(json_string_value(json_object_get(k, "id")), id);
    assert_string_equal(json_string_value(json_object_get(k, "reason")), "test");
    json_decref(k);
    struct resp r;
    assert_int_equal(svc_read(fd, &r, SVC_DEADLINE_MS), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"finish_reason\":\"killed\""));
    resp_free(&r);
    char want[256];
    snprintf(want, sizeof(want),
             "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"no request in flight "
             "with id \\\"%s\\\"\"}}",
             id);
    snprintf(line, sizeof(line), "{\"cmd\":\"kill\",\"id\":\"%s\"}\n", id);
    expect_line(line, want);
    json_decref(found);
}

/* The id of the first request in `state`, waiting for one to be there
 * (malloc'd; NULL after SVC_DEADLINE_MS). */
static char *request_in(const char *state)
{
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end;) {
        json_t *r = ask("{\"cmd\":\"requests\"}");
        json_t *q;
        size_t k;
        char *id = NULL;
        json_array_foreach (json_object_get(r, "requests"), k, q)
            if (!id && !strcmp(json_string_value(json_object_get(q, "state")), state))
                id = strdup(json_string_value(json_object_get(q, "id")));
        json_decref(r);
        if (id)
            return id;
        usleep(50000);
    }
    return NULL;
}

/* A request killed while it waits in the queue (the one worker is busy)
 * is answered "killed" by "operator" without being run: no prompt token
 * is evaluated, nothing is charged, and the ledger stays conserved. */
static void test_kill_of_a_queued_request_never_runs_it(void **state)
{
    (void)state;
    int busy = start_long_request("happy");
    char *running = request_in("running");
    assert_non_null(running);
    json_t *ws = ask("{\"cmd\":\"workers\"}");
    json_t *w0 = json_array_get(json_object_get(ws, "workers"), 0);
    assert_int_equal(jint(w0, "running", NULL), 1); /* its batch: the one running */
    assert_string_equal(json_string_value(json_object_get(w0, "request")), running);
    json_decref(ws);
    int fd = start_long_request("happy");
    char *queued = request_in("queued");
    assert_non_null(queued);
    char line[256];
    snprintf(line, sizeof(line), "{\"cmd\":\"kill\",\"id\":\"%s\"}", queued);
    json_t *k = ask(line);
    assert_true(json_is_true(json_object_get(k, "ok")));
    assert_string_equal(json_string_value(json_object_get(k, "state")), "queued");
    json_decref(k);
    snprintf(line, sizeof(line), "{\"cmd\":\"kill\",\"id\":\"%s\"}", running);
    k = ask(line);
    assert_true(json_is_true(json_object_get(k, "ok")));
    json_decref(k);
    struct resp r;
    assert_int_equal(svc_read(fd, &r, SVC_DEADLINE_MS), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    if (!strstr(r.body, "\"finish_reason\":\"killed\",\"killed_reason\":\"operator\"") ||
        !strstr(r.body, "\"prompt_tokens\":0,\"completion_tokens\":0"))
        fail_msg("expected killed/operator without a token evaluated: %s", r.body);
    char hdr[128];
    assert_string_equal(resp_header(&r, "Server-Timing", hdr, sizeof(hdr)), "device;dur=0.000");
    resp_free(&r);
    assert_int_equal(svc_read(busy, &r, SVC_DEADLINE_MS), 0);
    close(busy);
    assert_non_null(strstr(r.body, "\"killed_reason\":\"operator\""));
    resp_free(&r);
    free(running);
    free(queued);
    json_t *st = ask("{\"cmd\":\"status\"}");
    assert_true(json_is_true(json_object_get(st, "ledger_conserved")));
    json_decref(st);
}

static void test_tenant_show_list_reset_and_set_limit(void **state)
{
    (void)state;
    struct resp r;
    char *tok = svc_token(&S, "limited", 300);
    assert_int_equal(
        svc_http(&S, "POST", "/v1/generate", tok, "{\"prompt\":\"Hi\",\"max_tokens\":2}", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    free(tok);
    json_t *t = ask("{\"cmd\":\"tenant.show\",\"tenant\":\"limited\"}");
    assert_true(json_is_true(json_object_get(t, "ok")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(t, "plan"), "name")),
                        "five");
    json_t *w0 = json_array_get(json_object_get(t, "rate"), 0);
    assert_string_equal(json_string_value(json_object_get(w0, "window")), "5 per minute");
    assert_int_equal(jint(w0, "remaining", NULL), 4);
    assert_int_equal(jint(t, "in_flight", NULL), 0);
    /* the plan's default weight, and the fairness counter is shown (its
     * exact arithmetic is test_vtc's; what a worker adds is the worker's) */
    assert_true(json_real_value(json_object_get(json_object_get(t, "plan"), "weight")) == 1.0);
    assert_true(jint(t, "vtc", NULL) >= 0);
    assert_true(jint(t, "budget", "used_us") > 0);
    json_int_t left = jint(t, "budget", "left_us");
    assert_true(left < 1000000000);
    json_decref(t);

    t = ask("{\"cmd\":\"tenant.reset-budget\",\"tenant\":\"limited\"}");
    assert_true(json_is_true(json_object_get(t, "ok")));
    assert_int_equal(jint(t, "budget", "left_us"), 1000000000); /* 1000 GPU-seconds */
    json_decref(t);

    t = ask("{\"cmd\":\"tenant.list\"}");
    /* every listed tenant (service.h lists them), in id order */
    json_t *arr = json_object_get(t, "tenants");
    int seen = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        if (!strcmp(json_string_value(json_object_get(e, "tenant")), "limited")) {
            seen++;
            assert_int_equal(jint(e, "budget", "left_us"), 1000000000);
        }
        if (i > 0)
            assert_true(
                strcmp(json_string_value(json_object_get(json_array_get(arr, i - 1), "tenant")),
                       json_string_value(json_object_get(e, "tenant"))) < 0);
    }
    assert_int_equal(seen, 1);
    assert_true(json_is_null(json_object_get(t, "default_plan")));
    json_decref(t);

    t = ask("{\"cmd\":\"tenant.set-limit\",\"tenant\":\"limited\",\"rate\":[\"7 per minute\"],"
            "\"max_inflight\":3}");
    assert_true(json_is_true(json_object_get(t, "ok")));
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(json_object_get(t, "plan"), "rate"), 0)),
        "7 per minute");
    assert_int_equal(jint(t, "plan", "max_inflight"), 3);
    assert_non_null(strstr(json_string_value(json_object_get(t, "note")), "until the next reload"));
    json_decref(t);

    expect_line("{\"cmd\":\"tenant.show\",\"tenant\":\"nobody\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"tenant "
                "\\\"nobody\\\": unknown tenant\"}}");
}

static void test_ban_refuses_with_403_then_unban(void **state)
{
    (void)state;
    json_t *b = ask("{\"cmd\":\"ban\",\"kind\":\"tenant\",\"id\":\"happy\",\"ttl_s\":60}");
    assert_true(json_is_true(json_object_get(b, "ok")));
    assert_int_equal(jint(b, "ttl_s", NULL), 60);
    json_decref(b);
    char *tok = svc_token(&S, "happy", 300);
    struct resp r;
    assert_int_equal(
        svc_http(&S, "POST", "/v1/generate", tok, "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r), 0);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.body, "\"code\":\"banned\""));
    resp_free(&r);
    expect_line("{\"cmd\":\"unban\",\"kind\":\"tenant\",\"id\":\"happy\"}\n",
                "{\"ok\":true,\"kind\":\"tenant\",\"id\":\"happy\"}");
    assert_int_equal(
        svc_http(&S, "POST", "/v1/generate", tok, "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    b = ask("{\"cmd\":\"ban\",\"kind\":\"ip\",\"id\":\"127.0.0.1\",\"ttl_s\":60}");
    assert_true(json_is_true(json_object_get(b, "ok")));
    json_decref(b);
    assert_int_equal(
        svc_http(&S, "POST", "/v1/generate", tok, "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r), 0);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.body, "this address is banned"));
    resp_free(&r);
    expect_line("{\"cmd\":\"unban\",\"kind\":\"ip\",\"id\":\"127.0.0.1\"}\n",
                "{\"ok\":true,\"kind\":\"ip\",\"id\":\"127.0.0.1\"}");
    expect_line("{\"cmd\":\"unban\",\"kind\":\"ip\",\"id\":\"127.0.0.1\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"ip 127.0.0.1 is "
                "not banned\"}}");
    free(tok);
}

static void test_drain_and_undrain_worker(void **state)
{
    (void)state;
    json_t *d = ask("{\"cmd\":\"drain\",\"worker\":0}");
    assert_true(json_is_true(json_object_get(d, "ok")));
    json_decref(d);
    /* The worker sees it on its next wake-up: give it one. */
    int fd = start_long_request("happy");
    const char *st = NULL;
    json_t *w = NULL;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end;) {
        json_decref(w);
        w = ask("{\"cmd\":\"workers\"}");
        st = json_string_value(
            json_object_get(json_array_get(json_object_get(w, "workers"), 0), "state"));
        if (!strcmp(st, "draining"))
            break;
        usleep(50000);
    }
    assert_string_equal(st, "draining");
    json_decref(w);
    json_t *s = ask("{\"cmd\":\"status\"}");
    assert_int_equal(jint(s, "queue_depth", NULL), 1); /* nobody takes it */
    assert_int_equal(jint(s, "workers", "draining"), 1);
    json_decref(s);
    d = ask("{\"cmd\":\"undrain\",\"worker\":0}");
    assert_true(json_is_true(json_object_get(d, "ok")));
    json_decref(d);
    struct resp r;
    assert_int_equal(svc_read(fd, &r, SVC_DEADLINE_MS), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    expect_line("{\"cmd\":\"drain\",\"worker\":5}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":\"\\\"worker\\\": "
                "expected an integer in [0, 0]\"}}");
}

static void test_reload_says_taken_or_why_not(void **state)
{
    (void)state;
    json_t *r = ask("{\"cmd\":\"reload\"}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_true(json_is_true(json_object_get(r, "taken")));
    assert_int_equal(jint(r, "config_epoch", NULL), 2);
    json_decref(r);
    /* break the file: refused, with the config's own message */
    char saved[16384];
    FILE *f = fopen(S.config, "r");
    size_t n = fread(saved, 1, sizeof(saved) - 1, f);
    fclose(f);
    saved[n] = '\0';
    f = fopen(S.config, "w");
    fputs("{\"listen\": 5}", f);
    fclose(f);
    r = ask("{\"cmd\":\"reload\"}");
    json_t *e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "reload_refused");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "config: listen:"));
    json_decref(r);
    char out[4096];
    assert_int_equal(ctl(out, sizeof(out), "-s /dev/null/x reload"), 111);
    char args[256];
    snprintf(args, sizeof(args), "-s %s reload", SOCK);
    assert_int_equal(ctl(out, sizeof(out), args), 1);
    f = fopen(S.config, "w");
    fputs(saved, f);
    fclose(f);
    assert_int_equal(ctl(out, sizeof(out), args), 0);
    assert_non_null(strstr(out, "config_epoch"));
}

static void test_token_issue_gives_a_working_token(void **state)
{
    (void)state;
    json_t *t = ask("{\"cmd\":\"token.issue\",\"tenant\":\"happy\",\"ttl_s\":120}");
    assert_true(json_is_true(json_object_get(t, "ok")));
    assert_string_equal(json_string_value(json_object_get(t, "kid")), "test");
    struct resp r;
    assert_int_equal(svc_http(&S, "POST", "/v1/generate",
                              json_string_value(json_object_get(t, "token")),
                              "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r),
                     0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    json_decref(t);
}

static void test_bad_input_gets_exact_errors(void **state)
{
    (void)state;
    expect_line("{\"cmd\":\n", "{\"ok\":false,\"error\":{\"code\":\"bad_json\",\"message\":\"not "
                               "valid JSON: unexpected token near end of file at column 7\"}}");
    expect_line("[1]\n", "{\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"expected "
                         "a JSON object with \\\"cmd\\\"\"}}");
    expect_line("{}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"\\\"cmd\\\": "
                "missing (a string)\"}}");
    expect_line("{\"cmd\":\"frobnicate\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"unknown_command\",\"message\":\"unknown "
                "command \\\"frobnicate\\\"; commands: status, workers, requests, kill, "
                "tenant.list, tenant.show, tenant.top, tenant.set-limit, tenant.reset-budget, "
                "tenant.clear-farming, ban, unban, ip.show, ip.clear-farming, allow, "
                "unallow, net.list, drain, undrain, reload, token.issue, token.revoke, cluster, "
                "apikey.create, apikey.list, "
                "apikey.revoke\"}}");
    expect_line("{\"cmd\":\"kill\"}\n", "{\"ok\":false,\"error\":{\"code\":\"missing_argument\","
                                        "\"message\":\"\\\"id\\\": missing (a string)\"}}");
    expect_line(
        "{\"cmd\":\"ban\",\"kind\":\"ip\",\"id\":\"1.2.3.4\"}\n",
        "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":\"\\\"ttl_s\\\": "
        "missing (an integer)\"}}");
    expect_line("{\"cmd\":\"ban\",\"kind\":\"ip\",\"id\":\"1.2.3\",\"ttl_s\":5}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":\"\\\"id\\\": "
                "\\\"1.2.3\\\" is not an IPv4 or IPv6 address\"}}");
    expect_line(
        "{\"cmd\":\"token.issue\",\"tenant\":\"a\"}\n",
        "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":\"\\\"ttl_s\\\": "
        "missing (an integer)\"}}");
}

/* A client whose uid is listed nowhere is refused at connect; an operator
 * may read but not change. Needs root to take other identities: the
 * program test_admin_peers, which exits 77 when not run as root. */
static void test_peer_credentials_decide_the_level(void **state)
{
    (void)state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        char out[3][512] = {"", "", ""};
        /* gid 0 reaches the 0660 socket and is an operator (gid:0) */
        if (setgroups(0, NULL) != 0 || setgid(0) != 0 || setuid(65534) != 0)
            _exit(3);
        char *a = raw("{\"cmd\":\"status\"}\n");
        char *b = raw("{\"cmd\":\"reload\"}\n");
        snprintf(out[0], sizeof(out[0]), "%s", a && strstr(a, "\"ok\":true") ? "ok" : "no");
        snprintf(out[1], sizeof(out[1]), "%s", b ? b : "");
        dprintf(pfd[1], "%s\n%s\n", out[0], out[1]);
        _exit(0);
    }
    close(pfd[1]);
    char buf[2048] = "";
    size_t n = 0;
    ssize_t k;
    while ((k = read(pfd[0], buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = '\0';
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    assert_string_equal(buf, "ok\n{\"ok\":false,\"error\":{\"code\":\"forbidden\",\"message\":"
                             "\"\\\"reload\\\" needs the admin level; uid 65534 is an "
                             "operator\"}}\n");

    /* uid 65534 with gid 65534: the socket file (0660, root's) is closed to
     * it. */
    pid = fork();
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            _exit(3);
        char out[4096];
        char args[256];
        snprintf(args, sizeof(args), "-s %s status", SOCK);
        _exit(ctl(out, sizeof(out), args));
    }
    int st;
    waitpid(pid, &st, 0);
    assert_int_equal(WEXITSTATUS(st), 111);
}

static void test_ctl_exit_codes_and_tables(void **state)
{
    (void)state;
    char out[16384], args[512];
    assert_int_equal(ctl(out, sizeof(out), "frobnicate"), 100);
    assert_int_equal(ctl(out, sizeof(out), "ban ip 1.2.3.4 --ttl forever"), 100);
    assert_int_equal(ctl(out, sizeof(out), "-s /tmp/gw-admin-no-such.sock status"), 111);
    snprintf(args, sizeof(args), "-s %s workers", SOCK);
    assert_int_equal(ctl(out, sizeof(out), args), 0);
    assert_true(strncmp(out, "WORKER PID      DEVICE  STATE", 29) == 0);
    snprintf(args, sizeof(args), "-s %s --json status", SOCK);
    assert_int_equal(ctl(out, sizeof(out), args), 0);
    assert_true(strncmp(out, "{\"ok\":true,\"version\":", 21) == 0);
    snprintf(args, sizeof(args), "-s %s tenant show nobody", SOCK);
    assert_int_equal(ctl(out, sizeof(out), args), 1);
    snprintf(args, sizeof(args), "-s %s ban ip 1.2.3 --ttl 1m", SOCK);
    assert_int_equal(ctl(out, sizeof(out), args), 100); /* the daemon calls it bad_argument */
    snprintf(args, sizeof(args), "-s %s token issue --tenant happy --ttl 10m", SOCK);
    assert_int_equal(ctl(out, sizeof(out), args), 0);
    assert_non_null(strstr(out, "token"));
    snprintf(args, sizeof(args), "-c %s tenant list", S.config);
    assert_int_equal(ctl(out, sizeof(out), args), 0);
    assert_non_null(strstr(out, "limited"));
}

/* One source, two programs: test_admin (every test but one) and
 * test_admin_peers (the peer-credential levels, as root only). Both exit
 * 77 (ctest: Skipped) without models/, test_admin_peers also when not
 * root. */
int main(int argc, char **argv)
{
    (void)argc;
    gw_need_model();
    if (gw_prog_is(argv[0], "test_admin_peers")) {
        if (geteuid() != 0)
            gw_skip("not root: the test takes other uids and gids (setuid, setgid)");
        const struct CMUnitTest peers[] = {
            cmocka_unit_test(test_peer_credentials_decide_the_level),
        };
        return cmocka_run_group_tests_name("admin_peers", peers, group_setup, group_teardown);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_reports_the_node),
        cmocka_unit_test(test_workers_lists_the_worker),
        cmocka_unit_test(test_requests_and_kill),
        cmocka_unit_test(test_kill_of_a_queued_request_never_runs_it),
        cmocka_unit_test(test_tenant_show_list_reset_and_set_limit),
        cmocka_unit_test(test_ban_refuses_with_403_then_unban),
        cmocka_unit_test(test_drain_and_undrain_worker),
        cmocka_unit_test(test_reload_says_taken_or_why_not),
        cmocka_unit_test(test_token_issue_gives_a_working_token),
        cmocka_unit_test(test_bad_input_gets_exact_errors),
        cmocka_unit_test(test_ctl_exit_codes_and_tables),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
