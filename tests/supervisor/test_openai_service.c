/* test_openai_service.c - what real OpenAI clients call, through real
 * processes (a master, two fronts and a worker on SmolLM2): GET /v1/models
 * and /v1/models/{id} behind the token, chat messages whose content is an
 * array of parts, stream_options.include_usage with OpenAI's usage chunk,
 * `user` in the access log and in the audit log of a killed request, the
 * RateLimit headers in the draft's structured-field syntax, and an API key
 * the model repeats, redacted by the default guard rules. Exact bodies,
 * headers and log lines. Exits 77 (ctest: Skipped) without the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>

static struct svc S;
static int started;
static char *tok;

static int group_setup(void **state)
{
    (void)state;
    /* the access log on; a prompt asking for endless output is killed
     * after 2 tokens (the audit test) */
    svc_write_config(&S, "\"log\": {\"access\": true},"
                         " \"watchdog\": {\"unbounded_cap_tokens\": 2},");
    if (svc_start_or_dump(&S) != 0)
        return -1;
    tok = svc_token(&S, "happy", 3600);
    started = 1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (!started)
        return 0;
    free(tok);
    return svc_stop_or_dump(&S) == 0 ? 0 : -1;
}

static void call(const char *method, const char *path, const char *token, const char *body,
                 struct resp *r)
{
    assert_int_equal(svc_http(&S, method, path, token, body, r), 0);
}

static void expect_status(struct resp *r, int status)
{
    if (r->status != status)
        fail_msg("expected %d, got %d: %s", status, r->status, r->body);
}

/* ------------------------------------------------------------ models */

static void test_models_list_and_retrieve_in_openai_shape(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(svc_model_path(), &st), 0);
    char want[512];
    struct resp r;
    call("GET", "/v1/models", tok, NULL, &r);
    expect_status(&r, 200);
    snprintf(want, sizeof(want),
             "{\"object\":\"list\",\"data\":[{\"id\":\"smollm2\",\"object\":\"model\","
             "\"created\":%lld,\"owned_by\":\"gpuwarden\"}]}",
             (long long)st.st_mtime);
    assert_string_equal(r.body, want);
    char h[128];
    assert_non_null(resp_header(&r, "Content-Type", h, sizeof(h)));
    assert_string_equal(h, "application/json");
    resp_free(&r);
    call("GET", "/v1/models/smollm2", tok, NULL, &r);
    expect_status(&r, 200);
    snprintf(
        want, sizeof(want),
        "{\"id\":\"smollm2\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"gpuwarden\"}",
        (long long)st.st_mtime);
    assert_string_equal(r.body, want);
    resp_free(&r);
    /* percent-encoded, the same model */
    call("GET", "/v1/models/smoll%6D2", tok, NULL, &r);
    expect_status(&r, 200);
    assert_string_equal(r.body, want);
    resp_free(&r);
}

static void test_models_refusals_are_exact(void **state)
{
    (void)state;
    struct resp r;
    call("GET", "/v1/models/gpt-4o", tok, NULL, &r);
    expect_status(&r, 404);
    assert_string_equal(r.body,
                        "{\"error\":{\"message\":\"The model 'gpt-4o' does not exist; this node "
                        "serves 'smollm2'\",\"type\":\"invalid_request_error\",\"param\":\"model\","
                        "\"code\":\"model_not_found\"}}");
    resp_free(&r);
    call("GET", "/v1/models/a%zz", tok, NULL, &r);
    expect_status(&r, 404);
    assert_non_null(strstr(r.body, "\"message\":\"The model 'a%zz' does not exist"));
    resp_free(&r);
    /* the same token check as generation */
    call("GET", "/v1/models", NULL, NULL, &r);
    expect_status(&r, 401);
    assert_string_equal(r.body, "{\"error\":{\"message\":\"missing bearer token\",\"type\":"
                                "\"authentication_error\",\"param\":null,\"code\":"
                                "\"invalid_token\"}}");
    char h[256];
    assert_non_null(resp_header(&r, "WWW-Authenticate", h, sizeof(h)));
    assert_string_equal(h, "Bearer error=\"invalid_token\", error_description=\"missing bearer "
                           "token\"");
    resp_free(&r);
    char *stranger = svc_token(&S, "stranger", 600);
    call("GET", "/v1/models/smollm2", stranger, NULL, &r);
    free(stranger);
    expect_status(&r, 403);
    assert_non_null(strstr(r.body, "\"code\":\"forbidden\""));
    resp_free(&r);
    char *expired = svc_token(&S, "happy", -60);
    call("GET", "/v1/models", expired, NULL, &r);
    free(expired);
    expect_status(&r, 401);
    assert_non_null(strstr(r.body, "\"message\":\"token expired\""));
    resp_free(&r);
    call("POST", "/v1/models", tok, "{}", &r);
    expect_status(&r, 405);
    assert_non_null(resp_header(&r, "Allow", h, sizeof(h)));
    assert_string_equal(h, "GET, HEAD");
    resp_free(&r);
    call("GET", "/v1/models/", tok, NULL, &r);
    expect_status(&r, 404);
    assert_non_null(strstr(r.body, "\"code\":\"not_found\""));
    resp_free(&r);
}

/* ------------------------------------------------------ content parts */

/* The assistant's content of a whole chat response (malloc'd). */
static char *chat_content(const char *body)
{
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    if (!j)
        fail_msg("not JSON: %s", body);
    const char *s = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content"));
    assert_non_null(s);
    char *out = strdup(s);
    json_decref(j);
    return out;
}

static void test_chat_content_parts_mean_their_joined_text(void **state)
{
    (void)state;
    struct resp a, b;
    /* greedy: the same prompt, once as parts, once as a string */
    call("POST", "/v1/chat/completions", tok,
         "{\"model\":\"smollm2\",\"temperature\":0,\"max_tokens\":12,\"messages\":["
         "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"Be brief.\"}]},"
         "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is the capital \"},"
         "{\"type\":\"text\",\"text\":\"of France?\"}]}]}",
         &a);
    expect_status(&a, 200);
    call("POST", "/v1/chat/completions", tok,
         "{\"model\":\"smollm2\",\"temperature\":0,\"max_tokens\":12,\"messages\":["
         "{\"role\":\"system\",\"content\":\"Be brief.\"},"
         "{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]}",
         &b);
    expect_status(&b, 200);
    char *ca = chat_content(a.body), *cb = chat_content(b.body);
    assert_true(strlen(ca) > 0);
    assert_string_equal(ca, cb);
    free(ca);
    free(cb);
    resp_free(&a);
    resp_free(&b);
}

static void test_chat_media_parts_are_refused_by_index_and_type(void **state)
{
    (void)state;
    struct resp r;
    call("POST", "/v1/chat/completions", tok,
         "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":["
         "{\"type\":\"text\",\"text\":\"What is in this image?\"},"
         "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/a.png\"}}]}]}",
         &r);
    expect_status(&r, 400);
    assert_string_equal(r.body, "{\"error\":{\"message\":\"messages[0].content[1].type: "
                                "\\\"image_url\\\" parts are not supported: this model reads "
                                "text only\",\"type\":\"invalid_request_error\",\"param\":"
                                "\"messages[0].content[1].type\",\"code\":\"invalid_request\"}}");
    resp_free(&r);
}

/* ----------------------------------------------------- include_usage */

/* The events of an SSE body, each parsed (NULL for [DONE]); their count. */
static int events(const char *body, json_t **ev, int max)
{
    int n = 0;
    for (const char *p = body; (p = strstr(p, "data: ")) && n < max;) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        if (strncmp(p, "[DONE]", 6) == 0) {
            ev[n++] = NULL;
        } else {
            json_error_t e;
            ev[n] = json_loadb(p, (size_t)(end - p), 0, &e);
            if (!ev[n])
                fail_msg("event %d is not JSON: %.*s", n, (int)(end - p), p);
            n++;
        }
        p = end + 2;
    }
    return n;
}

static json_int_t usage_of(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(o, "usage"), key));
}

/* With include_usage: every chunk "usage": null, then one chunk with
 * "choices": [] and the usage, then [DONE]; the usage is the whole
 * response's. Without: the usage rides on the final chunk, no empty one. */
static void check_stream(const char *path, const char *object, const char *req_fmt)
{
    char body[512];
    struct resp whole, with, without;
    snprintf(body, sizeof(body), req_fmt, "");
    call("POST", path, tok, body, &whole);
    expect_status(&whole, 200);
    json_error_t e;
    json_t *w = json_loads(whole.body, 0, &e);
    assert_non_null(w);
    snprintf(body, sizeof(body), req_fmt,
             ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    call("POST", path, tok, body, &with);
    expect_status(&with, 200);
    json_t *ev[256];
    int n = events(with.body, ev, 256);
    assert_true(n >= 3);
    assert_null(ev[n - 1]); /* [DONE] */
    const json_t *u = ev[n - 2];
    assert_string_equal(json_string_value(json_object_get(u, "object")), object);
    assert_int_equal(json_array_size(json_object_get(u, "choices")), 0);
    assert_true(json_is_array(json_object_get(u, "choices")));
    assert_int_equal(usage_of(u, "prompt_tokens"), usage_of(w, "prompt_tokens"));
    assert_int_equal(usage_of(u, "completion_tokens"), usage_of(w, "completion_tokens"));
    assert_int_equal(usage_of(u, "total_tokens"), usage_of(w, "total_tokens"));
    assert_true(usage_of(u, "completion_tokens") >= 1);
    for (int i = 0; i < n - 2; i++) {
        const json_t *usage = json_object_get(ev[i], "usage");
        if (!usage || !json_is_null(usage))
            fail_msg("chunk %d: usage is not null", i);
        assert_int_equal(json_array_size(json_object_get(ev[i], "choices")), 1);
    }
    const json_t *fin = json_array_get(json_object_get(ev[n - 3], "choices"), 0);
    assert_true(json_is_string(json_object_get(fin, "finish_reason")));
    for (int i = 0; i < n; i++)
        json_decref(ev[i]);
    /* without it: usage on the final chunk, as before */
    snprintf(body, sizeof(body), req_fmt, ",\"stream\":true");
    call("POST", path, tok, body, &without);
    expect_status(&without, 200);
    n = events(without.body, ev, 256);
    assert_null(ev[n - 1]);
    assert_int_equal(json_array_size(json_object_get(ev[n - 2], "choices")), 1);
    assert_int_equal(usage_of(ev[n - 2], "completion_tokens"), usage_of(w, "completion_tokens"));
    for (int i = 0; i < n - 2; i++)
        assert_null(json_object_get(ev[i], "usage"));
    for (int i = 0; i < n; i++)
        json_decref(ev[i]);
    json_decref(w);
    resp_free(&whole);
    resp_free(&with);
    resp_free(&without);
}

static void test_stream_with_include_usage_ends_with_a_usage_chunk(void **state)
{
    (void)state;
    check_stream("/v1/chat/completions", "chat.completion.chunk",
                 "{\"model\":\"smollm2\",\"temperature\":0,\"max_tokens\":6,\"messages\":"
                 "[{\"role\":\"user\",\"content\":\"Name a colour.\"}]%s}");
    check_stream("/v1/completions", "text_completion",
                 "{\"model\":\"smollm2\",\"temperature\":0,\"max_tokens\":6,"
                 "\"prompt\":\"Once upon a time\"%s}");
}

/* ------------------------------------------------------------- user */

/* The id of a whole response (into buf). */
static const char *id_of(const char *body, char *buf, size_t len)
{
    const char *p = strstr(body, "\"id\":\"");
    assert_non_null(p);
    p += 6;
    size_t n = strcspn(p, "\"");
    assert_true(n < len);
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

static void test_user_reaches_the_access_log(void **state)
{
    (void)state;
    struct resp r;
    call("POST", "/v1/chat/completions", tok,
         "{\"model\":\"smollm2\",\"max_tokens\":2,\"user\":\"end-user-42\",\"messages\":"
         "[{\"role\":\"user\",\"content\":\"Hi\"}]}",
         &r);
    expect_status(&r, 200);
    char id[64], want[256];
    id_of(r.body, id, sizeof(id));
    resp_free(&r);
    /* the line, e.g. "access time=... id=chatcmpl-... tenant=happy
     * user=end-user-42 ip=127.0.0.1 route=chat status=200 ..." */
    snprintf(want, sizeof(want),
             " id=%s tenant=happy user=end-user-42 ip=127.0.0.1 route=chat "
             "status=200 ",
             id);
    char *log = NULL;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        free(log);
        log = svc_log_text(&S);
        if (strstr(log, want))
            break;
    }
    if (!strstr(log, want))
        fail_msg("no access line with [%s]", want);
    free(log);
    /* a user that is not one plain word is quoted, so it cannot forge a field */
    call("POST", "/v1/completions", tok,
         "{\"model\":\"smollm2\",\"max_tokens\":1,\"prompt\":\"Hi\",\"user\":\"a b\\nstatus=500\"}",
         &r);
    expect_status(&r, 200);
    id_of(r.body, id, sizeof(id));
    resp_free(&r);
    snprintf(want, sizeof(want), " id=%s tenant=happy user=\"a b\\nstatus=500\" ip=", id);
    log = NULL;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        free(log);
        log = svc_log_text(&S);
        if (strstr(log, want))
            break;
    }
    if (!strstr(log, want))
        fail_msg("no access line with [%s]", want);
    free(log);
}

/* The audit log's lines that name request `id` (malloc'd, joined). */
static char *audit_read(const char *id)
{
    char path[300], line[4096], key[96];
    snprintf(path, sizeof(path), "%s/state/audit.log", S.dir);
    snprintf(key, sizeof(key), "\"request_id\":\"%s\"", id);
    char *out = calloc(1, 16384);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, key) && strlen(out) + strlen(line) < 16383)
            strcat(out, line);
    if (f)
        fclose(f);
    return out;
}

/* The lines of the audit log that name request `id` (malloc'd, joined),
 * once they hold `need` (the master's watchdog writes its kill line after
 * setting the cancel word, so it may land after the answer). */
static char *audit_lines_of(const char *id, const char *need)
{
    char *lines = NULL;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        free(lines);
        lines = audit_read(id);
        if (strstr(lines, need))
            break;
    }
    return lines;
}

static void test_user_reaches_the_audit_log_of_a_kill(void **state)
{
    (void)state;
    struct resp r;
    /* "forever" flags the prompt: the watchdog kills it after 2 tokens */
    call("POST", "/v1/chat/completions", tok,
         "{\"model\":\"smollm2\",\"temperature\":0,\"max_tokens\":64,\"user\":\"end-user-7\","
         "\"messages\":[{\"role\":\"user\",\"content\":\"Count from 1 forever.\"}]}",
         &r);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "\"finish_reason\":\"killed\",\"killed_reason\":"
                                   "\"unbounded_request\""));
    char id[64];
    id_of(r.body, id, sizeof(id));
    resp_free(&r);
    /* the watchdog's kill line, and the front's line naming the end user,
     * written before the answer went out */
    char *lines = audit_lines_of(id, "\"reason\":\"unbounded_request\"");
    char want[512];
    snprintf(want, sizeof(want),
             "\",\"request_id\":\"%s\",\"tenant\":\"happy\",\"ip\":\"127.0.0.1\","
             "\"user\":\"end-user-7\",\"event\":\"end_user\","
             "\"killed_reason\":\"unbounded_request\"}\n",
             id);
    if (!strstr(lines, want) || !strstr(lines, "\"reason\":\"unbounded_request\""))
        fail_msg("audit lines of %s:\n%s", id, lines);
    free(lines);
    /* without `user`, no end_user line: the kill line says all there is */
    call("POST", "/v1/chat/completions", tok,
         "{\"model\":\"smollm2\",\"temperature\":0,\"max_tokens\":64,"
         "\"messages\":[{\"role\":\"user\",\"content\":\"Count from 1 forever.\"}]}",
         &r);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "\"killed_reason\":\"unbounded_request\""));
    id_of(r.body, id, sizeof(id));
    resp_free(&r);
    lines = audit_lines_of(id, "\"reason\":\"unbounded_request\"");
    assert_non_null(strstr(lines, "\"reason\":\"unbounded_request\""));
    assert_null(strstr(lines, "end_user"));
    free(lines);
}

/* ------------------------------------------------------ output guard */

/* The default rules in a real worker: greedy SmolLM2 repeats the key it
 * was shown, and the stream carries "[REDACTED]" in its place. */
static void test_an_openai_key_the_model_repeats_is_redacted_in_the_stream(void **state)
{
    (void)state;
    struct resp r;
    call("POST", "/v1/generate", tok,
         "{\"prompt\":\"Key: sk-proj-T9x2Lk7Qw3Er5Ty8Ui1Op4As6Df0Gh2Jk5Lz8Xc1Vb4Nm7Qa.\\n"
         "Key: sk-proj-T9x2Lk7Qw3Er5Ty8Ui1Op4As6Df0Gh2Jk5Lz8Xc1Vb4Nm7Qa.\\nKey:\","
         "\"max_tokens\":48,\"stream\":true}",
         &r);
    expect_status(&r, 200);
    if (!strstr(r.body, "[REDACTED]") || strstr(r.body, "T9x2Lk7Qw3") || strstr(r.body, "sk-proj"))
        fail_msg("the key was not redacted in the stream:\n%s", r.body);
    assert_non_null(strstr(r.body, "data: [DONE]"));
    resp_free(&r);
    /* the worker counted and audited it (never the key itself) */
    call("GET", "/metrics", NULL, NULL, &r);
    expect_status(&r, 200);
    const char *m = strstr(r.body, "\ngpuwarden_guard_redactions_total ");
    assert_non_null(m);
    assert_true(strtoull(m + strlen("\ngpuwarden_guard_redactions_total "), NULL, 10) >= 1);
    resp_free(&r);
    char path[300], line[4096];
    snprintf(path, sizeof(path), "%s/state/audit.log", S.dir);
    int found = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        assert_null(strstr(line, "T9x2Lk7Qw3"));
        found |= strstr(line, "\"event\":\"redaction\"") &&
                 strstr(line, "\"rule\":\"openai_api_key\"") != NULL;
    }
    if (f)
        fclose(f);
    assert_true(found);
}

/* SIGHUP reloads the guard rules in the workers too: a rule added to the
 * file redacts the next answer. Runs last: it changes the node's rules. */
static void test_guard_rules_reload_in_the_workers_on_sighup(void **state)
{
    (void)state;
    FILE *f = fopen(S.config, "r");
    assert_non_null(f);
    char *cfg = calloc(1, 1 << 16);
    size_t n = fread(cfg, 1, (1 << 16) - 1, f);
    fclose(f);
    cfg[n] = '\0';
    const char *old = "\"watchdog\": {\"unbounded_cap_tokens\": 2},";
    char *at = strstr(cfg, old);
    assert_non_null(at);
    f = fopen(S.config, "w");
    fprintf(f,
            "%.*s\"watchdog\": {\"unbounded_cap_tokens\": 2, \"guard\": [{\"name\": \"city\", "
            "\"pattern\": \"Paris\", \"action\": \"redact\"}]},%s",
            (int)(at - cfg), cfg, at + strlen(old));
    fclose(f);
    free(cfg);
    assert_int_equal(kill(S.master, SIGHUP), 0);
    char *log = NULL;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        free(log);
        log = svc_log_text(&S);
        if (strstr(log, "SIGHUP: output guard rules reload"))
            break;
    }
    assert_non_null(strstr(log, "SIGHUP: output guard rules reload"));
    free(log);
    struct resp r;
    call("POST", "/v1/completions", tok,
         "{\"model\":\"smollm2\",\"prompt\":\"The capital of France is\",\"max_tokens\":8,"
         "\"temperature\":0}",
         &r);
    expect_status(&r, 200);
    if (!strstr(r.body, "[REDACTED]") || strstr(r.body, "Paris"))
        fail_msg("the reloaded rule did not redact:\n%s", r.body);
    resp_free(&r);
}

/* ------------------------------------------------------- RateLimit */

static void test_ratelimit_headers_follow_the_structured_field_draft(void **state)
{
    (void)state;
    /* tenant "limited": "5 per minute", one request back every 12 s */
    char *lim = svc_token(&S, "limited", 600);
    char h[256], want[128];
    struct resp r;
    for (int i = 1; i <= 5; i++) {
        call("POST", "/v1/generate", lim, "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r);
        expect_status(&r, 200);
        assert_non_null(resp_header(&r, "RateLimit-Policy", h, sizeof(h)));
        assert_string_equal(h, "\"tenant\";q=5;w=60");
        assert_non_null(resp_header(&r, "RateLimit", h, sizeof(h)));
        snprintf(want, sizeof(want), "\"tenant\";r=%d;t=%d", 5 - i, 12 * i);
        assert_string_equal(h, want);
        assert_null(resp_header(&r, "Retry-After", h, sizeof(h)));
        resp_free(&r);
    }
    call("POST", "/v1/generate", lim, "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r);
    expect_status(&r, 429);
    assert_non_null(strstr(r.body, "\"code\":\"rate_limited\""));
    char retry[32];
    assert_non_null(resp_header(&r, "Retry-After", retry, sizeof(retry)));
    assert_true(atoi(retry) >= 11 && atoi(retry) <= 12);
    assert_non_null(resp_header(&r, "RateLimit-Policy", h, sizeof(h)));
    assert_string_equal(h, "\"tenant\";q=5;w=60");
    assert_non_null(resp_header(&r, "RateLimit", h, sizeof(h)));
    snprintf(want, sizeof(want), "\"tenant\";r=0;t=%s", retry);
    assert_string_equal(h, want);
    resp_free(&r);
    free(lim);
    /* tenant "happy": "1000 per minute burst 100", q = limit + burst */
    call("POST", "/v1/generate", tok, "{\"prompt\":\"Hi\",\"max_tokens\":1}", &r);
    expect_status(&r, 200);
    assert_non_null(resp_header(&r, "RateLimit-Policy", h, sizeof(h)));
    assert_string_equal(h, "\"tenant\";q=1100;w=60");
    int rr = -1, tt = -1;
    assert_non_null(resp_header(&r, "RateLimit", h, sizeof(h)));
    assert_int_equal(sscanf(h, "\"tenant\";r=%d;t=%d", &rr, &tt), 2);
    assert_true(rr >= 1000 && rr < 1100);
    assert_true(tt >= 1 && tt <= 7); /* (1100 - r) requests at 60 ms each */
    resp_free(&r);
}

int main(void)
{
    gw_need_model(); /* exit 77 (ctest: Skipped) without models/ */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_list_and_retrieve_in_openai_shape),
        cmocka_unit_test(test_models_refusals_are_exact),
        cmocka_unit_test(test_chat_content_parts_mean_their_joined_text),
        cmocka_unit_test(test_chat_media_parts_are_refused_by_index_and_type),
        cmocka_unit_test(test_stream_with_include_usage_ends_with_a_usage_chunk),
        cmocka_unit_test(test_user_reaches_the_access_log),
        cmocka_unit_test(test_user_reaches_the_audit_log_of_a_kill),
        cmocka_unit_test(test_ratelimit_headers_follow_the_structured_field_draft),
        cmocka_unit_test(test_an_openai_key_the_model_repeats_is_redacted_in_the_stream),
        cmocka_unit_test(test_guard_rules_reload_in_the_workers_on_sighup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
