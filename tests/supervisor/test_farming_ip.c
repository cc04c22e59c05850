/* test_farming_ip.c - prompt farming per client address end to end
 * (docs/ARCHITECTURE.md, "Prompt farming", per address): a real master on
 * loopback with "ip.farming" on. Six tenants send one template's fills
 * round-robin from 127.0.0.1, each too few to reach its own plan's
 * min_samples: no tenant is ever flagged, the address is flagged (audit
 * line with "address", metric) and then refused with 429 prompt_farming
 * whatever tenant it authenticates as, a tenant it never used included.
 * Two tenants chatting diversely from another address (a trusted proxy's
 * X-Forwarded-For) are never flagged; an allowed range is not judged;
 * gpuwardenctl ip show / ip clear-farming show and lift the address's
 * state, and their bad arguments are refused by name. The request at
 * which each step must come is computed first on a private segment with
 * the same library and limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>
#include <sys/un.h>

static struct svc S;
static char SOCK[108];

#define N_TENANTS 6
#define N_FARM 36 /* 6 per tenant: under the plan's min_samples (8) */

static const char *const colors[] = {"red", "blue", "green", "black", "white", "yellow"};
static const char *const materials[] = {"wooden", "metal", "plastic", "glass", "leather"};
static const char *const items[] = {"chair", "table", "lamp", "desk", "shelf", "sofa", "bench"};

static void farm_prompt(int i, char *buf, size_t len)
{
    snprintf(buf, len, "Write a product description for a %s %s %s.", colors[i % 6],
             materials[(i / 2) % 5], items[(i * 3) % 7]);
}

static const char *const human[] = {
    "How do I bake sourdough bread at home?",
    "Explain quantum entanglement to a child.",
    "What should I pack for a week of hiking in Norway in September?",
    "My tomato plants have yellow leaves, is that a watering problem?",
    "Can you suggest a name for a grey kitten who likes boxes?",
    "Why does the moon look bigger near the horizon?",
    "Translate 'good morning, neighbour' into Italian please.",
    "Is it safe to run a marathon two weeks after a cold?",
    "Summarise the plot of Hamlet in three sentences.",
    "Which is faster for sorting small arrays, insertion sort or quicksort?",
    "Give me a recipe for lentil soup without onions.",
    "How many bones does an adult human have?",
    "Write a haiku about a rainy bus stop.",
    "What causes inflation to rise after a war?",
    "Recommend two board games for four players who dislike trivia.",
    "How do vaccines train the immune system?",
    "What's the difference between a crocodile and an alligator?",
    "Help me word an apology to my landlord for a late payment.",
    "Why do cats knead blankets?",
    "Plan a cheap day trip from Lyon by train.",
};
#define N_HUMAN (sizeof(human) / sizeof(human[0]))

static const struct gw_farm_limits LIMITS = {.enabled = 1,
                                             .window = 16,
                                             .min_samples = 8,
                                             .near_bits = 20,
                                             .sweep_cv_pct = 0,
                                             .sweep_single_pct = 90,
                                             .flag_score = 60,
                                             .throttle_after = 12,
                                             .refuse_after = 12,
                                             .throttle = {.limit = 1, .period_us = 1000000},
                                             .refuse_ttl_s = 600};

/* Steps the address's ladder must take, by request number (1-based). */
static int want_flag, want_refuse;

static void predict(void)
{
    struct gw_segment seg;
    char path[128], err[256];
    snprintf(path, sizeof(path), "/tmp/gw-farmip-predict-%d", (int)getpid());
    unlink(path);
    struct gw_seg_config c = {.accounts = 64,
                              .budgets = 4,
                              .slots = 1,
                              .queue = 2,
                              .lanes = 2,
                              .prompt_bytes = 256,
                              .output_bytes = 256,
                              .ip_farm_recs = 16};
    assert_int_equal(gw_segment_open(&seg, path, &c, err, sizeof(err)), 0);
    struct gw_acct a;
    uint64_t now = gw_now_us();
    assert_int_equal(gw_ledger_get(&seg, GW_KIND_IP, "127.0.0.1", 9, 1, now, &a), 0);
    want_flag = want_refuse = 0;
    for (int i = 0; i < N_FARM; i++) {
        char p[256];
        farm_prompt(i, p, sizeof(p));
        struct gw_farm_verdict v;
        assert_int_equal(gw_farm_ip_observe(&seg, a, gw_farm_simhash(p, strlen(p)), 1,
                                            now + (uint64_t)i, &LIMITS, &v),
                         0);
        if (!want_flag && v.level >= GW_FARM_FLAGGED)
            want_flag = i + 1;
        if (!want_refuse && v.refuse)
            want_refuse = i + 1;
    }
    gw_segment_close(&seg);
    unlink(path);
    assert_true(want_flag >= 8 && want_flag <= 10);
    assert_true(want_refuse > want_flag && want_refuse <= 25);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-farmip-%d.sock", (int)getpid());
    char extra[256];
    snprintf(extra, sizeof(extra), "\"admin\": {\"socket\": \"%s\"},", SOCK);
    svc_ip_json = "{\"rate\": [\"1000 per second burst 100\"],"
                  " \"trusted_proxies\": [\"127.0.0.2\"],"
                  " \"farming\": {\"enabled\": true, \"window\": 16, \"min_samples\": 8,"
                  " \"sweep_cv_pct\": 0, \"throttle_after\": 12, \"refuse_after\": 12,"
                  " \"refuse_ttl_s\": 600, \"records\": 64}}";
    svc_write_config(&S, extra);
    json_error_t je;
    json_t *root = json_load_file(S.config, 0, &je);
    if (!root)
        return -1;
    /* each tenant's own plan judges it too, with the same thresholds */
    json_t *plan =
        json_pack("{s:[s],s:s,s:i,s:{s:b,s:i,s:i,s:i,s:i,s:i,s:i}}", "rate",
                  "1000 per minute burst 100", "budget", "1000 GPU-seconds per day", "max_tokens",
                  4, "farming", "enabled", 1, "window", 16, "min_samples", 8, "sweep_cv_pct", 0,
                  "throttle_after", 12, "refuse_after", 12, "refuse_ttl_s", 600);
    json_object_set_new(json_object_get(root, "plans"), "judged", plan);
    json_t *tenants = json_object_get(root, "tenants");
    const char *names[] = {"t1", "t2", "t3", "t4", "t5", "t6", "t7", "alice", "bob"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        json_object_set_new(tenants, names[i], json_pack("{s:s}", "plan", "judged"));
    /* tenants whose plan does not judge them (the allowed range's test) */
    json_object_set_new(tenants, "o1", json_pack("{s:s}", "plan", "open"));
    json_object_set_new(tenants, "o2", json_pack("{s:s}", "plan", "open"));
    if (json_dump_file(root, S.config, JSON_INDENT(1)) != 0)
        return -1;
    json_decref(root);
    return svc_start_or_dump(&S);
}

static int group_teardown(void **state)
{
    (void)state;
    return svc_stop_or_dump(&S);
}

/* POST /v1/completions as tenant from source address src with the extra
 * header lines hdrs: the status; the error code and message. */
static int complete_from(const char *src, const char *hdrs, const char *tenant, const char *prompt,
                         char *code, size_t codelen, char *msg, size_t msglen)
{
    char *tok = svc_token(&S, tenant, 600);
    json_t *b = json_pack("{s:s,s:s,s:i}", "model", "smollm2", "prompt", prompt, "max_tokens", 1);
    char *body = json_dumps(b, 0);
    int fd = svc_connect_from(&S, src);
    char head[4096];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s\r\n%s",
                     tok, strlen(body), hdrs, body);
    send_all(fd, head, (size_t)n);
    struct resp r;
    int rc = svc_read(fd, &r, SVC_DEADLINE_MS);
    close(fd);
    assert_int_equal(rc, 0);
    json_t *j = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *c = json_string_value(json_object_get(e, "code"));
    const char *m = json_string_value(json_object_get(e, "message"));
    snprintf(code, codelen, "%s", c ? c : "");
    if (msg)
        snprintf(msg, msglen, "%s", m ? m : "");
    int st = r.status;
    json_decref(j);
    resp_free(&r);
    free(body);
    json_decref(b);
    free(tok);
    return st;
}

static json_t *ask(const char *line)
{
    char framed[512];
    snprintf(framed, sizeof(framed), "%s\n", line);
    char *r = svc_admin_line(SOCK, framed);
    assert_non_null(r);
    json_t *j = json_loads(r, 0, NULL);
    free(r);
    assert_non_null(j);
    return j;
}

static void expect_line(const char *req, const char *want)
{
    char framed[512];
    snprintf(framed, sizeof(framed), "%s\n", req);
    char *r = svc_admin_line(SOCK, framed);
    assert_non_null(r);
    assert_string_equal(r, want);
    free(r);
}

static json_t *farming_of(const char *what, const char *id)
{
    char line[160];
    snprintf(line, sizeof(line), "{\"cmd\":\"%s.show\",\"%s\":\"%s\"}", what,
             strcmp(what, "ip") ? "tenant" : "id", id);
    json_t *r = ask(line);
    json_t *f = json_incref(json_object_get(r, "farming"));
    json_decref(r);
    assert_non_null(f);
    return f;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_int_t jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static char *audit_text(void)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/state/audit.log", S.dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

/* gpuwardenctl with args: its exit status, stdout and stderr in out. */
static int ctl(char *out, size_t outlen, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl -s %s %s 2>&1", GW_BIN_DIR, SOCK, args);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define BENIGN_HDR "X-Forwarded-For: 198.51.100.7\r\n"

static void test_six_tenants_one_address_is_refused_benign_never_flagged(void **state)
{
    (void)state;
    predict();
    char code[64], msg[256];
    const char *tn[N_TENANTS] = {"t1", "t2", "t3", "t4", "t5", "t6"};
    for (int i = 0; i < N_FARM; i++) {
        char p[256];
        farm_prompt(i, p, sizeof(p));
        int st = complete_from("127.0.0.1", "", tn[i % N_TENANTS], p, code, sizeof(code), NULL, 0);
        assert_int_equal(st, i + 1 < want_refuse ? 200 : 429);
        if (st == 429)
            assert_string_equal(code, "prompt_farming");
        if (i + 1 == want_flag) {
            json_t *f = farming_of("ip", "127.0.0.1");
            assert_string_equal(jstr(f, "level"), "flagged");
            assert_int_equal(jint(f, "strikes"), 1);
            json_decref(f);
        }
        /* the benign class: two tenants behind a trusted proxy, one
         * client address, diverse questions at the same volume */
        st = complete_from("127.0.0.2", BENIGN_HDR, i % 2 ? "bob" : "alice",
                           human[(size_t)i % N_HUMAN], code, sizeof(code), NULL, 0);
        assert_int_equal(st, 200);
    }
    /* a tenant that never sent anything, from the refused address */
    char p[256];
    farm_prompt(N_FARM, p, sizeof(p));
    assert_int_equal(complete_from("127.0.0.1", "", "t7", p, code, sizeof(code), msg, sizeof(msg)),
                     429);
    assert_string_equal(code, "prompt_farming");
    json_t *f = farming_of("ip", "127.0.0.1");
    assert_string_equal(jstr(f, "level"), "refused");
    assert_int_equal(jint(f, "strikes"), 12);
    assert_int_equal(jint(f, "prompts"), N_FARM + 1);
    assert_int_equal(jint(f, "refused_total"), N_FARM - want_refuse + 2);
    char want[256];
    snprintf(want, sizeof(want),
             "this address's prompts look like prompt farming (score %lld); refused until %lld "
             "(unix time)",
             (long long)jint(f, "score"), (long long)jint(f, "refused_until"));
    assert_string_equal(msg, want);
    json_decref(f);
    /* no tenant reached its own threshold */
    for (int t = 0; t < N_TENANTS; t++) {
        json_t *tf = farming_of("tenant", tn[t]);
        assert_string_equal(jstr(tf, "level"), "none");
        assert_int_equal(jint(tf, "strikes_total"), 0);
        assert_int_equal(jint(tf, "prompts"), N_FARM / N_TENANTS);
        json_decref(tf);
    }
    json_t *b = farming_of("ip", "198.51.100.7");
    assert_string_equal(jstr(b, "level"), "none");
    assert_int_equal(jint(b, "strikes_total"), 0);
    assert_int_equal(jint(b, "prompts"), N_FARM);
    json_decref(b);
    for (int t = 0; t < 2; t++) {
        json_t *tf = farming_of("tenant", t ? "bob" : "alice");
        assert_string_equal(jstr(tf, "level"), "none");
        assert_int_equal(jint(tf, "strikes_total"), 0);
        json_decref(tf);
    }
    char *audit = audit_text();
    assert_non_null(strstr(audit, "\"event\":\"farming\",\"address\":\"127.0.0.1\",\"level\":"
                                  "\"flagged\",\"strikes\":1,"));
    assert_non_null(strstr(audit, "\"event\":\"farming\",\"address\":\"127.0.0.1\",\"level\":"
                                  "\"refused\",\"strikes\":12,\"score\":"));
    assert_null(strstr(audit, "\"tenant\":"));
    assert_null(strstr(audit, "198.51.100.7"));
    free(audit);
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/metrics", NULL, NULL, &r), 0);
    snprintf(want, sizeof(want), "gpuwarden_admission_refusals_total{reason=\"farming\"} %d\n",
             N_FARM - want_refuse + 2);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "gpuwarden_farming_escalations_total{level=\"flagged\"} 1\n"));
    assert_non_null(strstr(r.body, "gpuwarden_farming_escalations_total{level=\"refused\"} 1\n"));
    resp_free(&r);
}

static void test_ctl_shows_and_clears_the_address(void **state)
{
    (void)state;
    char out[8192], code[64], p[256];
    assert_int_equal(ctl(out, sizeof(out), "ip show 127.0.0.1"), 0);
    assert_non_null(strstr(out, "refused"));
    assert_int_equal(ctl(out, sizeof(out), "ip clear-farming 127.0.0.1"), 0);
    json_t *f = farming_of("ip", "127.0.0.1");
    assert_string_equal(jstr(f, "level"), "none");
    assert_int_equal(jint(f, "strikes"), 0);
    json_decref(f);
    farm_prompt(0, p, sizeof(p));
    assert_int_equal(complete_from("127.0.0.1", "", "t1", p, code, sizeof(code), NULL, 0), 200);
    /* bad arguments, named */
    assert_int_equal(ctl(out, sizeof(out), "ip show"), 100);
    assert_non_null(
        strstr(out, "gpuwardenctl: ip: expected show ADDRESS or clear-farming ADDRESS\n"));
    assert_int_equal(ctl(out, sizeof(out), "ip forget 127.0.0.1"), 100);
    assert_non_null(
        strstr(out, "gpuwardenctl: ip: expected show ADDRESS or clear-farming ADDRESS\n"));
    /* a request the daemon calls malformed is misuse too */
    assert_int_equal(ctl(out, sizeof(out), "ip show 1.2.3"), 100);
    assert_non_null(strstr(out, "\"id\": \"1.2.3\" is not an IPv4 or IPv6 address"));
    assert_int_equal(ctl(out, sizeof(out), "ip clear-farming 203.0.113.9"), 1);
    assert_non_null(strstr(out, "ip 203.0.113.9 has no account (nothing to clear)"));
    expect_line("{\"cmd\":\"ip.show\",\"id\":\"1.2.3\"}",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":\"\\\"id\\\": "
                "\\\"1.2.3\\\" is not an IPv4 or IPv6 address\"}}");
    expect_line("{\"cmd\":\"ip.show\",\"id\":7}",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":\"\\\"id\\\": "
                "(not a string) is not an IPv4 or IPv6 address\"}}");
    expect_line("{\"cmd\":\"ip.show\"}",
                "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":\"\\\"id\\\": "
                "missing (an IPv4 or IPv6 address)\"}}");
    expect_line("{\"cmd\":\"ip.clear-farming\",\"id\":\"203.0.113.9\"}",
                "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"ip 203.0.113.9 "
                "has no account (nothing to clear)\"}}");
    /* an address never seen: no account, nothing judged */
    json_t *r = ask("{\"cmd\":\"ip.show\",\"id\":\"203.0.113.9\"}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_true(json_is_false(json_object_get(r, "account")));
    assert_true(json_is_false(json_object_get(r, "farming_record")));
    json_decref(r);
}

/* An allowed range is exempt from the per-address steps: never judged. */
static void test_allowed_address_is_not_judged(void **state)
{
    (void)state;
    json_t *r = ask("{\"cmd\":\"allow\",\"id\":\"127.0.0.3/32\",\"ttl_s\":600}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    char code[64], p[256];
    for (int i = 0; i < want_refuse + 2; i++) {
        farm_prompt(i, p, sizeof(p));
        assert_int_equal(
            complete_from("127.0.0.3", "", i % 2 ? "o1" : "o2", p, code, sizeof(code), NULL, 0),
            200);
    }
    r = ask("{\"cmd\":\"ip.show\",\"id\":\"127.0.0.3\"}");
    assert_true(json_is_false(json_object_get(r, "farming_record")));
    json_decref(r);
}

int main(void)
{
    gw_need_model();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_six_tenants_one_address_is_refused_benign_never_flagged),
        cmocka_unit_test(test_ctl_shows_and_clears_the_address),
        cmocka_unit_test(test_allowed_address_is_not_judged),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
