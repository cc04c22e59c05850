/* test_apikeys_service.c - API keys end to end (issue 18), against a real
 * master, two fronts and a worker on SmolLM2 (exit 77 without the model):
 *  - gpuwardenctl apikey create prints the key once; the key is served
 *    (200) through the same plan as a JWT of its tenant: one rate bucket
 *    shared with the tenant's JWTs, the plan a --plan binding names;
 *  - apikey list shows ids, tenants, plans, names, times, never a secret
 *    or a hash; apikey revoke, and the very next request is a 401
 *    "revoked api key"; unknown and malformed keys are 401s with their
 *    exact words;
 *  - the keys file survives a master restart (revocation included);
 *  - a malformed keys file: check-config and reload refuse it with the
 *    field named, the running set stays in force, changes are refused
 *    until it is fixed;
 *  - bad admin arguments: exact errors, the node still serving;
 *  - no key appears in the master's log, the access log or the audit log:
 *    only the key's id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>

static struct svc S;
static int started;
static char SOCK[108], KEYS[256];
static char KEY_A[GW_APIKEY_LEN + 1], ID_A[16]; /* happy, revoked by the first test */
static char KEY_C[GW_APIKEY_LEN + 1];           /* happy, lives through the restart */
static char *ALL_KEYS[16];                      /* every key made, for the log check */
static int n_all;

/* The config with auth.api_keys_file, and tenant "single" allowed plan
 * "five" by a plan claim (or a key's --plan). */
static int group_setup(void **state)
{
    (void)state;
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-keys-%d.sock", (int)getpid());
    char extra[256];
    snprintf(extra, sizeof(extra), "\"admin\": {\"socket\": \"%s\"}, \"log\": {\"access\": true},",
             SOCK);
    svc_write_config(&S, extra);
    snprintf(KEYS, sizeof(KEYS), "%s/state/api-keys.json", S.dir);
    unlink(KEYS);
    FILE *f = fopen(S.config, "r");
    static char text[16384], out[16800];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *lee = strstr(text, "\"leeway_s\": 5"),
         *single = strstr(text, "\"single\": {\"plan\": \"one\"}");
    if (!lee || !single || single < lee)
        return -1;
    snprintf(out, sizeof(out),
             "%.*s\"leeway_s\": 5, \"api_keys_file\": \"%s\"%.*s\"single\": "
             "{\"plan\": \"one\", \"plans\": [\"five\"]}%s",
             (int)(lee - text), text, KEYS, (int)(single - lee - 13), lee + 13,
             single + strlen("\"single\": {\"plan\": \"one\"}"));
    f = fopen(S.config, "w");
    fputs(out, f);
    fclose(f);
    if (svc_start_or_dump(&S) != 0)
        return -1;
    started = 1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < n_all; i++)
        free(ALL_KEYS[i]);
    if (started && svc_stop_or_dump(&S) != 0)
        return -1;
    return 0;
}

/* gpuwardenctl -s SOCK ARGS; its output (stdout and stderr) and exit status. */
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

static void assert_prefix(const char *got, const char *want)
{
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("got: %s\nwant (a prefix): %s", got, want);
}

static void expect_line(const char *req, const char *want)
{
    char *r = svc_admin_line(SOCK, req);
    assert_non_null(r);
    assert_string_equal(r, want);
    free(r);
}

/* apikey create ARGS with --json: the key into key, the id into id. */
static void create(const char *args, char *key, char *id)
{
    char out[4096], cmd[512];
    snprintf(cmd, sizeof(cmd), "--json apikey create %s", args);
    assert_int_equal(ctl(out, sizeof(out), cmd), 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "ok")));
    snprintf(key, GW_APIKEY_LEN + 1, "%s", json_string_value(json_object_get(j, "key")));
    snprintf(id, 16, "%s", json_string_value(json_object_get(j, "id")));
    assert_int_equal(strlen(key), GW_APIKEY_LEN);
    assert_memory_equal(key + 6, id, 12);
    json_decref(j);
    if (n_all < 16)
        ALL_KEYS[n_all++] = strdup(key);
}

static int get_models(const char *key, char *msg, size_t msglen)
{
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/v1/models", key, NULL, &r), 0);
    int st = r.status;
    if (msg) {
        json_error_t je;
        json_t *j = json_loads(r.body, 0, &je);
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        snprintf(msg, msglen, "%s", m ? m : "");
        char h[256];
        if (st == 401) /* the 401's header says the same words */
            assert_non_null(resp_header(&r, "WWW-Authenticate", h, sizeof(h)));
        json_decref(j);
    }
    resp_free(&r);
    return st;
}

static int generate(const char *cred, char *policy, size_t plen)
{
    struct resp r;
    assert_int_equal(svc_http(&S, "POST", "/v1/generate", cred,
                              "{\"prompt\": \"Hello\", \"max_tokens\": 1}", &r),
                     0);
    int st = r.status;
    if (policy && !resp_header(&r, "RateLimit-Policy", policy, plen))
        policy[0] = '\0';
    resp_free(&r);
    return st;
}

static void test_create_use_list_revoke(void **state)
{
    (void)state;
    char out[8192], msg[256];
    create("happy --name ci-bot", KEY_A, ID_A);
    assert_int_equal(get_models(KEY_A, NULL, 0), 200);
    assert_int_equal(generate(KEY_A, NULL, 0), 200);
    /* the human output shows the key once, with the note */
    assert_int_equal(ctl(out, sizeof(out), "apikey create happy --name second"), 0);
    char *k = strstr(out, "sk-gw-");
    assert_non_null(k);
    assert_non_null(strstr(out, "the key is shown only now; gpuwarden keeps only its SHA-256"));
    char second[GW_APIKEY_LEN + 1];
    snprintf(second, sizeof(second), "%.83s", k);
    ALL_KEYS[n_all++] = strdup(second);
    assert_int_equal(get_models(second, NULL, 0), 200);
    /* list: the records' public fields, never a secret or a hash */
    assert_int_equal(ctl(out, sizeof(out), "apikey list"), 0);
    char head[128];
    snprintf(head, sizeof(head), "%-12s %-20s %-10s %-20s %-10s %-10s \n", "ID", "TENANT", "PLAN",
             "NAME", "CREATED", "REVOKED");
    assert_prefix(out, head);
    assert_non_null(strstr(out, ID_A));
    assert_non_null(strstr(out, "ci-bot"));
    assert_null(strstr(out, "sk-gw-"));
    assert_null(strstr(out, KEY_A + 19));
    assert_int_equal(ctl(out, sizeof(out), "--json apikey list"), 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je), *rec = json_array_get(json_object_get(j, "keys"), 0);
    assert_int_equal(json_object_size(rec), 6);
    const char *fields[] = {"id", "tenant", "plan", "name", "created", "revoked"};
    for (int i = 0; i < 6; i++)
        assert_non_null(json_object_get(rec, fields[i]));
    assert_string_equal(json_string_value(json_object_get(rec, "id")), ID_A);
    assert_true(json_is_null(json_object_get(rec, "revoked")));
    json_decref(j);
    /* revoke: refused at the very next request, on every front */
    char args[64];
    snprintf(args, sizeof(args), "apikey revoke %s", ID_A);
    assert_int_equal(ctl(out, sizeof(out), args), 0);
    for (int i = 0; i < 4; i++) { /* two fronts: each connection may meet either */
        assert_int_equal(get_models(KEY_A, msg, sizeof(msg)), 401);
        assert_string_equal(msg, "revoked api key");
    }
    assert_int_equal(get_models(second, NULL, 0), 200); /* the other key stays */
    /* unknown and malformed keys */
    char wrong[GW_APIKEY_LEN + 1];
    snprintf(wrong, sizeof(wrong), "%s", second);
    wrong[82] = wrong[82] == '0' ? '1' : '0';
    assert_int_equal(get_models(wrong, msg, sizeof(msg)), 401);
    assert_string_equal(msg, "unknown api key");
    assert_int_equal(get_models("sk-gw-123", msg, sizeof(msg)), 401);
    assert_string_equal(msg, "malformed api key");
    assert_int_equal(get_models("sk-proj-0123456789abcdef0123456789abcdef", msg, sizeof(msg)), 401);
    assert_string_equal(msg, "malformed api key");
}

static void test_key_has_exactly_the_limits_of_a_jwt_for_its_tenant(void **state)
{
    (void)state;
    char key[GW_APIKEY_LEN + 1], id[16], pol[128];
    /* "limited": plan five, "5 per minute": key and JWT share the bucket */
    create("limited", key, id);
    char *jwt = svc_token(&S, "limited", 600);
    for (int i = 0; i < 5; i++)
        assert_int_equal(generate(i % 2 ? jwt : key, pol, sizeof(pol)), 200);
    assert_string_equal(pol, "\"tenant\";q=5;w=60");
    assert_int_equal(generate(key, NULL, 0), 429);
    assert_int_equal(generate(jwt, NULL, 0), 429);
    free(jwt);
    /* a key bound to a plan the tenant may select gets that plan's windows */
    create("single --plan five --name bound", key, id);
    assert_int_equal(generate(key, pol, sizeof(pol)), 200);
    assert_string_equal(pol, "\"tenant\";q=5;w=60");
    char *own = svc_token(&S, "single", 600); /* no plan claim: the tenant's own, "one" */
    assert_int_equal(generate(own, pol, sizeof(pol)), 200);
    assert_string_equal(pol, "\"tenant\";q=110;w=60");
    free(own);
}

static void test_bad_admin_arguments_have_exact_errors(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(ctl(out, sizeof(out), "apikey create"), 100);
    assert_prefix(out, "gpuwardenctl: apikey: expected create TENANT [--plan P] [--name N], "
                       "list, or revoke ID\nusage: ");
    assert_int_equal(ctl(out, sizeof(out), "apikey create happy --color red"), 100);
    assert_prefix(out, "gpuwardenctl: apikey create: bad option --color (expected --plan P or "
                       "--name N)\nusage: ");
    assert_int_equal(ctl(out, sizeof(out), "apikey revoke"), 100);
    assert_prefix(out, "gpuwardenctl: apikey: expected create TENANT");
    assert_int_equal(ctl(out, sizeof(out), "apikey create nobody"), 100);
    assert_string_equal(out, "gpuwardenctl: bad_argument: tenant nobody: unknown tenant\n");
    assert_int_equal(ctl(out, sizeof(out), "apikey revoke 000000000000"), 1);
    assert_string_equal(out, "gpuwardenctl: not_found: no api key with id 000000000000\n");
    expect_line("{\"cmd\":\"apikey.create\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":"
                "\"\\\"tenant\\\": missing (a string)\"}}");
    expect_line("{\"cmd\":\"apikey.create\",\"tenant\":\"a b\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"tenant\\\": expected 1 to 63 bytes of [A-Za-z0-9._@:-]\"}}");
    expect_line("{\"cmd\":\"apikey.create\",\"tenant\":7}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"tenant\\\": expected a string of 1 to 63 bytes\"}}");
    expect_line("{\"cmd\":\"apikey.create\",\"tenant\":\"happy\",\"plan\":\"five\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"tenant happy, plan five: plan not allowed for this tenant\"}}");
    expect_line("{\"cmd\":\"apikey.create\",\"tenant\":\"happy\",\"plan\":\"x/y\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"plan\\\": expected 1 to 63 bytes of [A-Za-z0-9._-]\"}}");
    expect_line("{\"cmd\":\"apikey.create\",\"tenant\":\"happy\",\"name\":\"a\\u0001\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"name\\\": control characters are not allowed\"}}");
    expect_line("{\"cmd\":\"apikey.create\",\"tenant\":\"happy\",\"name\":7}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"name\\\": expected a string of 0 to 64 bytes\"}}");
    expect_line("{\"cmd\":\"apikey.revoke\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":"
                "\"\\\"id\\\": missing (a key id from gpuwardenctl apikey list)\"}}");
    expect_line("{\"cmd\":\"apikey.revoke\",\"id\":\"sk-gw-0123\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"id\\\": expected 12 lowercase hex digits (a key id from gpuwardenctl "
                "apikey list)\"}}");
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_malformed_keys_file_is_refused_and_the_running_set_stays(void **state)
{
    (void)state;
    char id[16], out[4096], want[600];
    create("happy --name survivor", KEY_C, id);
    FILE *f = fopen(KEYS, "r");
    static char good[1 << 16];
    size_t n = fread(good, 1, sizeof(good) - 1, f);
    fclose(f);
    good[n] = '\0';
    f = fopen(KEYS, "w");
    fputs("{\"version\": 1, \"keys\": 7}\n", f);
    fclose(f);
    snprintf(want, sizeof(want), "%s: keys: expected an array of at most 4096 keys", KEYS);
    /* check-config names the file and the field */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/gpuwarden --check-config %s 2>&1", GW_BIN_DIR, S.config);
    FILE *p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    assert_int_equal(WEXITSTATUS(st), 1);
    char line[700];
    snprintf(line, sizeof(line), "%s\n", want);
    assert_string_equal(out, line);
    /* reload refused, the old set in force on every front */
    assert_int_equal(ctl(out, sizeof(out), "reload"), 1);
    snprintf(line, sizeof(line), "gpuwardenctl: reload_refused: %s\n", want);
    assert_string_equal(out, line);
    for (int i = 0; i < 4; i++)
        assert_int_equal(get_models(KEY_C, NULL, 0), 200);
    /* changes refused until the file is fixed: nothing written over it */
    assert_int_equal(ctl(out, sizeof(out), "apikey create happy"), 1);
    snprintf(line, sizeof(line), "gpuwardenctl: failed: %s\n", want);
    assert_string_equal(out, line);
    assert_int_equal(ctl(out, sizeof(out), "apikey list"), 1);
    assert_string_equal(out, line);
    f = fopen(KEYS, "w");
    fputs(good, f);
    fclose(f);
    assert_int_equal(ctl(out, sizeof(out), "reload"), 0);
    assert_int_equal(get_models(KEY_C, NULL, 0), 200);
}

static void test_keys_survive_a_master_restart(void **state)
{
    (void)state;
    char msg[256], out[8192];
    assert_int_equal(svc_stop(&S), 0);
    started = 0;
    assert_int_equal(svc_start_or_dump(&S), 0);
    started = 1;
    assert_int_equal(get_models(KEY_C, NULL, 0), 200);
    assert_int_equal(get_models(KEY_A, msg, sizeof(msg)), 401);
    assert_string_equal(msg, "revoked api key");
    assert_int_equal(ctl(out, sizeof(out), "--json apikey list"), 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    json_t *keys = json_object_get(j, "keys");
    assert_int_equal(json_array_size(keys), 5); /* A, second, limited, single, C */
    json_t *a = json_array_get(keys, 0);
    assert_string_equal(json_string_value(json_object_get(a, "id")), ID_A);
    assert_true(json_is_integer(json_object_get(a, "revoked")));
    json_decref(j);
    struct stat st;
    assert_int_equal(stat(KEYS, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", KEYS);
    assert_int_equal(access(tmp, F_OK), -1);
}

/* Last: every line the node wrote, and the keys file, against every key. */
static void test_no_key_in_any_log(void **state)
{
    (void)state;
    char *log = svc_log_text(&S);
    char path[300];
    snprintf(path, sizeof(path), "%s/state/audit.log", S.dir);
    FILE *f = fopen(path, "r");
    static char audit[1 << 20];
    size_t n = f ? fread(audit, 1, sizeof(audit) - 1, f) : 0;
    audit[n] = '\0';
    if (f)
        fclose(f);
    FILE *kf = fopen(KEYS, "r");
    static char keys[1 << 16];
    n = fread(keys, 1, sizeof(keys) - 1, kf);
    keys[n] = '\0';
    fclose(kf);
    assert_int_equal(n_all, 5);
    for (int i = 0; i < n_all; i++) {
        const char *secret = ALL_KEYS[i] + 19;
        assert_null(strstr(log, secret));
        assert_null(strstr(audit, secret));
        assert_null(strstr(keys, secret));
    }
    assert_null(strstr(log, "sk-gw-"));
    /* what the logs say instead: the key's id */
    char want[64];
    snprintf(want, sizeof(want), "apikey=%s", ID_A);
    assert_non_null(strstr(log, want));
    snprintf(want, sizeof(want), "api key %s created for tenant happy", ID_A);
    assert_non_null(strstr(log, want));
    free(log);
}

int main(void)
{
    gw_need_model();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_use_list_revoke),
        cmocka_unit_test(test_key_has_exactly_the_limits_of_a_jwt_for_its_tenant),
        cmocka_unit_test(test_bad_admin_arguments_have_exact_errors),
        cmocka_unit_test(test_malformed_keys_file_is_refused_and_the_running_set_stays),
        cmocka_unit_test(test_keys_survive_a_master_restart),
        cmocka_unit_test(test_no_key_in_any_log),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
