/* test_farming.c - prompt farming end to end (docs/ARCHITECTURE.md,
 * "Prompt farming"): a real master on loopback with a plan whose farming
 * is on. A tenant that fills one template with words from lists is flagged
 * (audit line, metric), then refused with 429 prompt_farming, and stays
 * refused across a master restart; a tenant asking diverse questions on
 * the same plan is never flagged; gpuwardenctl tenant clear-farming lets
 * the farmer in again. The request at which each step must come is
 * computed first on a private segment with the same library and limits,
 * so the service is held to the exact count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>
#include <sys/un.h>

static struct svc S;
static char SOCK[108];

/* The plan under test: sweep part off (the test's pace is not the point),
 * a window of 16, scored from 8 prompts, refused at the 12th strike. */
static const char FARMING[] = "{\"enabled\": true, \"window\": 16, \"min_samples\": 8,"
                              " \"sweep_cv_pct\": 0, \"throttle_after\": 12, \"refuse_after\": 12,"
                              " \"refuse_ttl_s\": 600}";

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
#define N_FARM 30

/* Steps the ladder must take, by request number (1-based): computed on a
 * private segment with the same library and limits. */
static int want_flag, want_refuse;

static void predict(const struct gw_farm_limits *l)
{
    struct gw_segment seg;
    char path[128], err[256];
    snprintf(path, sizeof(path), "/tmp/gw-farm-predict-%d", (int)getpid());
    unlink(path);
    struct gw_seg_config c = {.accounts = 64,
                              .budgets = 4,
                              .slots = 1,
                              .queue = 2,
                              .lanes = 2,
                              .prompt_bytes = 256,
                              .output_bytes = 256};
    assert_int_equal(gw_segment_open(&seg, path, &c, err, sizeof(err)), 0);
    struct gw_acct a;
    uint64_t now = gw_now_us();
    assert_int_equal(gw_ledger_get(&seg, GW_KIND_TENANT, "f", 1, 1, now, &a), 0);
    want_flag = want_refuse = 0;
    for (int i = 0; i < N_FARM; i++) {
        char p[256];
        farm_prompt(i, p, sizeof(p));
        struct gw_farm_verdict v;
        assert_int_equal(
            gw_farm_observe(&seg, a, gw_farm_simhash(p, strlen(p)), 1, now + (uint64_t)i, l, &v),
            0);
        if (!want_flag && v.level >= GW_FARM_FLAGGED)
            want_flag = i + 1;
        if (!want_refuse && v.refuse)
            want_refuse = i + 1;
    }
    gw_segment_close(&seg);
    unlink(path);
    /* what the issue asks of a template farmer, on this plan */
    assert_true(want_flag >= 8 && want_flag <= 10);
    assert_true(want_refuse > want_flag && want_refuse <= 25);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-farm-%d.sock", (int)getpid());
    char extra[256];
    snprintf(extra, sizeof(extra), "\"admin\": {\"socket\": \"%s\"},", SOCK);
    svc_write_config(&S, extra);
    /* add the farming plan and its two tenants to the written config */
    json_error_t je;
    json_t *root = json_load_file(S.config, 0, &je);
    json_t *farming = json_loads(FARMING, 0, &je);
    if (!root || !farming)
        return -1;
    json_t *plan = json_pack("{s:[s],s:s,s:i,s:o}", "rate", "1000 per minute burst 100", "budget",
                             "1000 GPU-seconds per day", "max_tokens", 4, "farming", farming);
    json_object_set_new(json_object_get(root, "plans"), "farmed", plan);
    /* the same with the ladder's ban step */
    json_t *banning = json_deep_copy(plan);
    json_object_set_new(json_object_get(banning, "farming"), "ban_ttl_s", json_integer(3600));
    json_object_set_new(json_object_get(root, "plans"), "banning", banning);
    json_t *tenants = json_object_get(root, "tenants");
    json_object_set_new(tenants, "farmer", json_pack("{s:s}", "plan", "farmed"));
    json_object_set_new(tenants, "human", json_pack("{s:s}", "plan", "farmed"));
    json_object_set_new(tenants, "banned", json_pack("{s:s}", "plan", "banning"));
    /* a tenant whose own plan allows 6 generated tokens a day */
    json_object_set_new(tenants, "writer",
                        json_pack("{s:s,s:s}", "plan", "open", "output_tokens", "6 per day"));
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

/* POST /v1/completions for tenant: the status, and the error code in code. */
static int complete(const char *tenant, const char *prompt, char *code, size_t codelen, char *retry,
                    size_t retrylen)
{
    char *tok = svc_token(&S, tenant, 600);
    json_t *b = json_pack("{s:s,s:s,s:i}", "model", "smollm2", "prompt", prompt, "max_tokens", 1);
    char *body = json_dumps(b, 0);
    struct resp r;
    assert_int_equal(svc_http(&S, "POST", "/v1/completions", tok, body, &r), 0);
    code[0] = '\0';
    json_t *j = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    snprintf(code, codelen, "%s", c ? c : "");
    if (retry && !resp_header(&r, "Retry-After", retry, retrylen))
        retry[0] = '\0';
    int st = r.status;
    json_decref(j);
    resp_free(&r);
    free(body);
    json_decref(b);
    free(tok);
    return st;
}

/* One admin request; the parsed response. */
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

static json_t *farming_of(const char *tenant)
{
    char line[128];
    snprintf(line, sizeof(line), "{\"cmd\":\"tenant.show\",\"tenant\":\"%s\"}", tenant);
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

/* gpuwardenctl with args: its exit status, stdout in out. */
static int ctl(char *out, size_t outlen, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl -s %s %s 2>/dev/null", GW_BIN_DIR, SOCK, args);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_farmer_is_flagged_then_refused_human_never_flagged(void **state)
{
    (void)state;
    struct gw_farm_limits l;
    memset(&l, 0, sizeof(l));
    l = (struct gw_farm_limits){.enabled = 1,
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
    predict(&l);
    char code[64], retry[32];
    for (int i = 0; i < N_FARM; i++) {
        char p[256];
        farm_prompt(i, p, sizeof(p));
        int st = complete("farmer", p, code, sizeof(code), retry, sizeof(retry));
        if (i + 1 < want_refuse) {
            assert_int_equal(st, 200);
        } else {
            assert_int_equal(st, 429);
            assert_string_equal(code, "prompt_farming");
            assert_true(atoi(retry) > 500 && atoi(retry) <= 600);
        }
        if (i + 1 == want_flag) { /* flagged, still served */
            json_t *f = farming_of("farmer");
            assert_string_equal(jstr(f, "level"), "flagged");
            assert_int_equal(jint(f, "strikes"), 1);
            json_decref(f);
        }
        /* the benign tenant, interleaved, at the same volume */
        st = complete("human", human[(size_t)i % N_HUMAN], code, sizeof(code), NULL, 0);
        assert_int_equal(st, 200);
    }
    json_t *f = farming_of("farmer");
    assert_string_equal(jstr(f, "level"), "refused");
    assert_int_equal(jint(f, "strikes"), 12);
    assert_int_equal(jint(f, "prompts"), N_FARM);
    assert_int_equal(jint(f, "refused_total"), N_FARM - want_refuse + 1);
    assert_true(jint(f, "score") >= 60);
    json_decref(f);
    json_t *h = farming_of("human");
    assert_string_equal(jstr(h, "level"), "none");
    assert_int_equal(jint(h, "strikes_total"), 0);
    assert_int_equal(jint(h, "prompts"), N_FARM);
    json_decref(h);
    /* one audit line per step, with its evidence; none for the human */
    char *audit = audit_text();
    assert_non_null(strstr(audit, "\"event\":\"farming\",\"tenant\":\"farmer\",\"level\":"
                                  "\"flagged\",\"strikes\":1,"));
    assert_non_null(strstr(audit, "\"event\":\"farming\",\"tenant\":\"farmer\",\"level\":"
                                  "\"refused\",\"strikes\":12,\"score\":"));
    assert_null(strstr(audit, "\"tenant\":\"human\""));
    free(audit);
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/metrics", NULL, NULL, &r), 0);
    char want[128];
    snprintf(want, sizeof(want), "gpuwarden_admission_refusals_total{reason=\"farming\"} %d\n",
             N_FARM - want_refuse + 1);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "gpuwarden_farming_escalations_total{level=\"flagged\"} 1\n"));
    assert_non_null(strstr(r.body, "gpuwarden_farming_escalations_total{level=\"refused\"} 1\n"));
    resp_free(&r);
    /* gpuwardenctl top: the farmer first, by score; the tenants the
     * ledger knows (the two that sent requests), not the config's list */
    char out[8192];
    assert_int_equal(ctl(out, sizeof(out), "top 3"), 0);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++)
        lines++;
    assert_int_equal(lines, 3); /* the header, farmer and human */
    const char *row = strchr(out, '\n');
    assert_non_null(row);
    assert_int_equal(strncmp(out, "TENANT ", 7), 0);
    assert_int_equal(strncmp(row + 1, "farmer ", 7), 0);
    char *eol = strchr(row + 1, '\n');
    *eol = '\0';
    assert_non_null(strstr(row + 1, " yes    farmed     refused     "));
    assert_int_equal(ctl(out, sizeof(out), "top many"), 100);
}

static void test_refusal_survives_a_master_restart_and_clear_lifts_it(void **state)
{
    (void)state;
    assert_int_equal(svc_stop_or_dump(&S), 0);
    assert_int_equal(svc_start_or_dump(&S), 0);
    char code[64], p[256];
    farm_prompt(0, p, sizeof(p));
    assert_int_equal(complete("farmer", "Tell me about the sea.", code, sizeof(code), NULL, 0),
                     429);
    assert_string_equal(code, "prompt_farming");
    /* gpuwardenctl tenant clear-farming */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl -s %s tenant clear-farming farmer >/dev/null",
             GW_BIN_DIR, SOCK);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    json_t *f = farming_of("farmer");
    assert_string_equal(jstr(f, "level"), "none");
    assert_int_equal(jint(f, "strikes"), 0);
    json_decref(f);
    assert_int_equal(complete("farmer", p, code, sizeof(code), NULL, 0), 200);
    /* an unknown tenant is refused by name */
    json_t *r = ask("{\"cmd\":\"tenant.clear-farming\",\"tenant\":\"nobody\"}");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                        "not_found");
    json_decref(r);
}

/* output_tokens: admitted while the tenant's generated tokens so far are
 * under the window's 6, refused with 429 output_tokens_exhausted after. */
static void test_output_tokens_refuses_once_the_window_is_spent(void **state)
{
    (void)state;
    char *tok = svc_token(&S, "writer", 600);
    long used = 0;
    int refused = 0;
    for (int i = 0; i < 10 && !refused; i++) {
        struct resp r;
        assert_int_equal(svc_http(&S, "POST", "/v1/completions", tok,
                                  "{\"model\":\"smollm2\",\"prompt\":\"Count from one to "
                                  "ten:\",\"max_tokens\":4}",
                                  &r),
                         0);
        json_t *j = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
        if (used < 6) {
            assert_int_equal(r.status, 200);
            used += (long)json_integer_value(
                json_object_get(json_object_get(j, "usage"), "completion_tokens"));
        } else {
            assert_int_equal(r.status, 429);
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                "output_tokens_exhausted");
            char ra[32];
            assert_non_null(resp_header(&r, "Retry-After", ra, sizeof(ra)));
            assert_true(atol(ra) > 3600); /* a token comes back every 4 hours */
            refused = 1;
        }
        json_decref(j);
        resp_free(&r);
    }
    assert_true(refused);
    assert_true(used >= 6 && used <= 9); /* the last request may overshoot by its own */
    json_t *t = ask("{\"cmd\":\"tenant.show\",\"tenant\":\"writer\"}");
    json_t *o = json_object_get(t, "output_tokens");
    assert_int_equal(json_integer_value(json_object_get(o, "left")), 0);
    assert_string_equal(json_string_value(json_object_get(o, "window")), "6 per day");
    json_decref(t);
    t = ask("{\"cmd\":\"tenant.show\",\"tenant\":\"human\"}");
    assert_true(json_is_null(json_object_get(t, "output_tokens")));
    json_decref(t);
    free(tok);
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_non_null(
        strstr(r.body, "gpuwarden_admission_refusals_total{reason=\"output_tokens\"} 1\n"));
    resp_free(&r);
}

/* ban_ttl_s: the request that reaches the refused step gets 429
 * prompt_farming and bans the tenant; the next ones 403 banned until
 * gpuwardenctl unban. */
static void test_ban_step_bans_until_unban(void **state)
{
    (void)state;
    char code[64], p[256];
    for (int i = 0; i < want_refuse; i++) {
        farm_prompt(i, p, sizeof(p));
        int st = complete("banned", p, code, sizeof(code), NULL, 0);
        assert_int_equal(st, i + 1 < want_refuse ? 200 : 429);
    }
    assert_string_equal(code, "prompt_farming");
    assert_int_equal(complete("banned", "Tell me about the sea.", code, sizeof(code), NULL, 0),
                     403);
    assert_string_equal(code, "banned");
    char *audit = audit_text();
    assert_non_null(strstr(audit, "\"tenant\":\"banned\",\"level\":\"refused\""));
    assert_non_null(strstr(audit, "\"banned_until\":"));
    free(audit);
    json_t *r = ask("{\"cmd\":\"unban\",\"kind\":\"tenant\",\"id\":\"banned\"}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    /* unbanned, and still on the ladder's refused step until its TTL */
    assert_int_equal(complete("banned", "Tell me about the sea.", code, sizeof(code), NULL, 0),
                     429);
    assert_string_equal(code, "prompt_farming");
}

int main(void)
{
    gw_need_model();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_farmer_is_flagged_then_refused_human_never_flagged),
        cmocka_unit_test(test_refusal_survives_a_master_restart_and_clear_lifts_it),
        cmocka_unit_test(test_output_tokens_refuses_once_the_window_is_spent),
        cmocka_unit_test(test_ban_step_bans_until_unban),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
