/* test_config.c - the config file: the dev config loads, every mistake is
 * reported with its JSON path and the exact words, and the window, budget
 * and plan lookups return exact values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_common.h"
#include "skip.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Key files the configs below name, in a fresh directory. */
static char dir[64], secret[128], short_secret[128], pem[128], notpem[128];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup_files(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/gw-config-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    snprintf(short_secret, sizeof(short_secret), "%s/short", dir);
    snprintf(pem, sizeof(pem), "%s/pub.pem", dir);
    snprintf(notpem, sizeof(notpem), "%s/priv.pem", dir);
    /* 40 bytes and a newline that is not part of the secret */
    write_file(secret, "0123456789abcdef0123456789abcdef01234567\n");
    write_file(short_secret, "0123456789abcdef\n");
    write_file(pem, "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n");
    write_file(notpem, "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n");
    return 0;
}

static int teardown_files(void **state)
{
    (void)state;
    unlink(secret);
    unlink(short_secret);
    unlink(pem);
    unlink(notpem);
    rmdir(dir);
    return 0;
}

/* A complete, valid config; each case below changes one thing in it. */
static json_t *base_config(void)
{
    char text[4096];
    snprintf(
        text, sizeof(text),
        "{"
        " \"listen\": [\"127.0.0.1:8080\", \"[::1]:8080\"],"
        " \"fronts\": 2, \"workers\": 1, \"state_dir\": \"./run\","
        " \"segment\": {\"accounts\": 1024, \"budgets\": 64, \"slots\": 32, \"queue\": 32,"
        "               \"prompt_bytes\": 4096, \"output_bytes\": 4096},"
        " \"model\": {\"path\": \"m.gguf\", \"name\": \"tiny\", \"device\": \"cpu\"},"
        " \"http\": {\"header_bytes\": 8192},"
        " \"auth\": {\"keys\": [{\"kid\": \"dev\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}],"
        "           \"issuer\": \"iss\", \"audience\": \"aud\"},"
        " \"ip\": {\"rate\": [\"10 per second\"]},"
        " \"global\": {\"rate\": [\"100 per second\"], \"budget\": \"1 GPU-seconds per second\","
        "             \"max_inflight\": 32},"
        " \"plans\": {"
        "   \"free\": {\"rate\": [\"1 per second\", \"100 per day\"],"
        "              \"budget\": \"60 GPU-seconds per day\", \"max_tokens\": 256},"
        "   \"pro\": {\"rate\": [\"10 per second burst 5\"], \"budget\": \"0.5 GPU-seconds per "
        "second\","
        "             \"max_inflight\": 8, \"max_tokens\": 2048, \"on_budget\": \"clamp\"},"
        "   \"team\": {\"max_tokens\": 4096}"
        " },"
        " \"default_plan\": \"free\","
        " \"tenants\": {\"acme\": {\"plan\": \"pro\", \"plans\": [\"team\"]}},"
        " \"admin\": {\"socket\": \"./run/admin.sock\"},"
        " \"cost\": {\"initial_us_per_token\": 5000}"
        "}",
        secret);
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root)
        fail_msg("base config: %s at %d:%d", je.text, je.line, je.column);
    return root;
}

/* Sets (or with v == NULL deletes) the value at a path such as
 * "auth.keys[0].secret_file" or "tenants.bad id!" (a key may hold anything
 * but '.' and '['). Steals v. */
static void set_path(json_t *root, const char *path, json_t *v)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *cur = root;
    char *p = buf;
    for (;;) {
        size_t n = strcspn(p, ".[");
        char key[128];
        memcpy(key, p, n);
        key[n] = 0;
        p += n;
        long idx = -1;
        if (*p == '[') {
            idx = strtol(p + 1, &p, 10);
            assert_int_equal(*p, ']');
            p++;
        }
        int last = *p == 0;
        json_t *obj = key[0] ? json_object_get(cur, key) : cur;
        if (idx < 0) {
            if (last) {
                if (v)
                    json_object_set_new(cur, key, v);
                else
                    json_object_del(cur, key);
                return;
            }
            assert_non_null(obj);
            cur = obj;
        } else {
            assert_true(json_is_array(obj));
            if (last) {
                if (!v)
                    json_array_remove(obj, (size_t)idx);
                else if ((size_t)idx < json_array_size(obj))
                    json_array_set_new(obj, (size_t)idx, v);
                else
                    json_array_append_new(obj, v);
                return;
            }
            cur = json_array_get(obj, (size_t)idx);
            assert_non_null(cur);
        }
        assert_int_equal(*p, '.');
        p++;
    }
}

static json_t *val(const char *json)
{
    json_error_t je;
    json_t *v = json_loads(json, JSON_DECODE_ANY, &je);
    if (!v)
        fail_msg("test value %s: %s", json, je.text);
    return v;
}

static int parse_doc(json_t *root, struct gw_config **cfg, char *err, size_t errlen)
{
    char *text = json_dumps(root, JSON_PRESERVE_ORDER);
    assert_non_null(text);
    int rc = gw_config_parse(cfg, text, strlen(text), "test.json", err, errlen);
    free(text);
    return rc;
}

/* Parses the base config with one change and expects exactly `want`. */
static void expect_mistake(const char *path, json_t *v, const char *want)
{
    json_t *root = base_config();
    set_path(root, path, v);
    struct gw_config *cfg = (struct gw_config *)1;
    char err[2048];
    int rc = parse_doc(root, &cfg, err, sizeof(err));
    json_decref(root);
    if (rc != -EINVAL || strcmp(err, want) != 0)
        print_error("change at %s\n", path);
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_string_equal(err, want);
}

static struct gw_config *parse_ok(json_t *root)
{
    struct gw_config *cfg = NULL;
    char err[2048];
    int rc = parse_doc(root, &cfg, err, sizeof(err));
    json_decref(root);
    assert_string_equal(err, "");
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    return cfg;
}

/* ------------------------------------------------------------------ tests */

static void test_dev_config_loads_from_the_repo_root(void **state)
{
    (void)state;
    const char *src = gw_source_dir();
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(src), 0);
    struct gw_config *cfg = NULL;
    char err[2048];
    int rc = gw_config_load(&cfg, "dist/gpuwarden.dev.json", err, sizeof(err));
    assert_int_equal(chdir(cwd), 0);
    assert_string_equal(err, "");
    assert_int_equal(rc, 0);

    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_string_equal(cfg->state_dir, "./run");
    assert_string_equal(cfg->model_path, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_string_equal(cfg->model_name, "smollm2-135m-instruct");
    assert_string_equal(cfg->device, "auto");
    assert_int_equal(cfg->segment.lanes, (uint32_t)(cfg->fronts + cfg->workers + 8));
    assert_int_equal(cfg->n_keys, 1);
    assert_string_equal(cfg->keys[0].kid, "dev");
    assert_int_equal(cfg->keys[0].alg, GW_ALG_HS256);
    assert_int_equal(cfg->keys[0].key_len, 64); /* 32 bytes as hex, newline stripped */
    assert_string_equal(cfg->issuer, "gpuwarden-dev");
    assert_string_equal(cfg->audience, "gpuwarden");
    assert_int_equal(cfg->leeway_s, 30);
    assert_int_equal(cfg->n_plans, 2);
    assert_true(cfg->default_plan >= 0);
    assert_string_equal(cfg->plans[cfg->default_plan].name, "free");
    assert_int_equal(cfg->n_tenants, 1);
    assert_string_equal(cfg->tenants[0].id, "acme");
    assert_string_equal(cfg->tenants[0].plan.name, "pro");
    gw_config_free(cfg);
}

/* dist/gpuwarden.seed-limits.json: the seed's per-address limits ("10 per
 * minute, 50 per hour, 200 per day") as moving windows behind a proxy. */
static void test_seed_limits_example_loads_with_moving_windows(void **state)
{
    (void)state;
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(gw_source_dir()), 0);
    struct gw_config *cfg = NULL;
    char err[2048];
    int rc = gw_config_load(&cfg, "dist/gpuwarden.seed-limits.json", err, sizeof(err));
    assert_int_equal(chdir(cwd), 0);
    assert_string_equal(err, "");
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->ip.n_windows, 3);
    static const uint64_t limit[3] = {10, 50, 200}, period_s[3] = {60, 3600, 86400};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cfg->ip.windows[i].limit, limit[i]);
        assert_int_equal(cfg->ip.windows[i].period_us, period_s[i] * 1000000ull);
        assert_int_equal(cfg->ip.windows[i].moving, 1);
    }
    assert_int_equal(cfg->n_trusted, 2);
    assert_int_equal(cfg->ipv6_prefix, 64);
    gw_config_free(cfg);
}

static void test_defaults_fill_what_the_file_leaves_out(void **state)
{
    (void)state;
    char text[512];
    snprintf(
        text, sizeof(text),
        "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"},"
        " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}]}}",
        secret);
    struct gw_config *cfg = NULL;
    char err[512];
    assert_int_equal(gw_config_parse(&cfg, text, strlen(text), "min.json", err, sizeof(err)), 0);
    assert_string_equal(cfg->path, "min.json");
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_int_equal(cfg->workers, 1);
    assert_true(cfg->fronts >= 1 && cfg->fronts <= 64);
    assert_string_equal(cfg->state_dir, "/var/lib/gpuwarden");
    assert_int_equal(cfg->segment.accounts, 65536);
    assert_int_equal(cfg->segment.budgets, 4096);
    assert_int_equal(cfg->segment.slots, 256);
    assert_int_equal(cfg->segment.queue, 256);
    assert_int_equal(cfg->segment.prompt_bytes, 65536);
    assert_int_equal(cfg->segment.output_bytes, 65536);
    assert_string_equal(cfg->device, "auto");
    assert_int_equal(cfg->threads, 0);
    assert_int_equal(cfg->context, 2048);
    assert_int_equal(cfg->max_batch, 0);       /* auto */
    assert_int_equal(cfg->kv_cache_tokens, 0); /* auto */
    assert_int_equal(cfg->prefill_chunk, 64);
    assert_int_equal(cfg->step_tokens, 256);
    assert_true(cfg->vtc_weight_prompt == 1.0);
    assert_true(cfg->vtc_weight_output == 2.0);
    assert_int_equal(cfg->priority_lead, 8);
    assert_int_equal(cfg->pin_threads, 1);
    assert_int_equal(cfg->header_bytes, 8192);
    assert_int_equal(cfg->body_bytes, 1048576);
    assert_int_equal(cfg->header_timeout_ms, 10000);
    assert_int_equal(cfg->body_timeout_ms, 30000);
    assert_int_equal(cfg->keepalive_ms, 60000);
    assert_int_equal(cfg->connections_per_front, 1024);
    assert_int_equal(cfg->drain_timeout_ms, 30000);
    assert_int_equal(cfg->leeway_s, 30);
    assert_string_equal(cfg->issuer, "");
    assert_string_equal(cfg->audience, "");
    assert_int_equal(cfg->keys[0].key_len, 40);
    assert_memory_equal(cfg->keys[0].key, "0123456789abcdef0123456789abcdef01234567", 40);
    assert_int_equal(cfg->ip.n_windows, 0);
    assert_int_equal(cfg->global.has_budget, 0);
    assert_int_equal(cfg->global.max_inflight, 0);
    assert_int_equal(cfg->n_plans, 0);
    assert_int_equal(cfg->default_plan, -1);
    assert_int_equal(cfg->n_tenants, 0);
    assert_null(cfg->tenants);
    assert_string_equal(cfg->admin_socket, "/run/gpuwarden/admin.sock");
    assert_int_equal(cfg->initial_us_per_token, 20000);
    gw_config_free(cfg);
}

static void test_base_config_values(void **state)
{
    (void)state;
    struct gw_config *cfg = parse_ok(base_config());
    assert_int_equal(cfg->n_listen, 2);
    assert_string_equal(cfg->listen[1], "[::1]:8080");
    assert_int_equal(cfg->segment.lanes, 11);
    assert_int_equal(cfg->ip.n_windows, 1);
    assert_int_equal(cfg->ip.windows[0].limit, 10);
    assert_int_equal(cfg->global.has_budget, 1);
    assert_int_equal(cfg->global.budget.amount_us, 1000000);
    assert_int_equal(cfg->global.max_inflight, 32);
    assert_int_equal(cfg->n_plans, 3);
    const struct gw_plan *free_plan = &cfg->plans[0], *pro = &cfg->plans[1];
    assert_string_equal(free_plan->name, "free");
    assert_int_equal(free_plan->n_windows, 2);
    assert_int_equal(free_plan->windows[1].limit, 100);
    assert_int_equal(free_plan->windows[1].period_us, 86400000000ull);
    assert_int_equal(free_plan->budget.amount_us, 60000000);
    assert_int_equal(free_plan->clamp_on_budget, 0);
    assert_string_equal(pro->name, "pro");
    assert_int_equal(pro->windows[0].burst, 5);
    assert_int_equal(pro->budget.amount_us, 500000);
    assert_int_equal(pro->budget.period_us, 1000000);
    assert_int_equal(pro->max_inflight, 8);
    assert_int_equal(pro->clamp_on_budget, 1);
    assert_int_equal(cfg->plans[2].max_tokens, 4096);
    assert_int_equal(cfg->plans[2].has_budget, 0);
    assert_int_equal(cfg->initial_us_per_token, 5000);
    gw_config_free(cfg);
}

/* One mistake per case, the exact line it produces. */
static void test_each_mistake_is_named_exactly(void **state)
{
    (void)state;
    char want[512];

    expect_mistake("fronts", val("0"), "config: fronts: expected an integer in [1, 64]");
    expect_mistake("frontz", val("2"), "config: frontz: unknown key");
    expect_mistake("workers", val("\"2\""), "config: workers: expected an integer in [1, 64]");
    expect_mistake("plans.free.rate[1]", val("\"50 per fortnight\""),
                   "config: plans.free.rate[1]: \"50 per fortnight\": expected "
                   "\"N per second|minute|hour|day [burst M | moving]\"");
    expect_mistake("plans.free.rate[0]", val("\"1 per day burst 1000000000\""),
                   "config: plans.free.rate[0]: \"1 per day burst 1000000000\": burst too large "
                   "for the window");
    expect_mistake("plans.free.rate",
                   val("[\"1 per second\", \"2 per minute\", \"3 per hour\", \"4 per day\","
                       " \"5 per day\"]"),
                   "config: plans.free.rate: 5 windows; at most 4");
    expect_mistake("plans.free.budget", val("\"lots\""),
                   "config: plans.free.budget: \"lots\": expected "
                   "\"X GPU-seconds per second|minute|hour|day\"");
    expect_mistake("plans.free.on_budget", val("\"ignore\""),
                   "config: plans.free.on_budget: expected \"refuse\" or \"clamp\"");
    expect_mistake("plans.free.max_inflight", val("-1"),
                   "config: plans.free.max_inflight: expected an integer in [0, 1000000]");
    expect_mistake("plans.free.burst", val("5"), "config: plans.free.burst: unknown key");
    expect_mistake("plans.gold plan", val("{}"),
                   "config: plans.gold plan: \"gold plan\": a plan name is 1 to 63 bytes of "
                   "[A-Za-z0-9._-]");
    expect_mistake("tenants.acme.plan", val("\"gold\""),
                   "config: tenants.acme.plan: \"gold\" is not a configured plan");
    expect_mistake("tenants.acme.plans[0]", val("\"gold\""),
                   "config: tenants.acme.plans[0]: \"gold\" is not a configured plan");
    expect_mistake("tenants.acme.max_tokens", val("0"),
                   "config: tenants.acme.max_tokens: expected an integer in [1, 1048576]");
    expect_mistake("tenants.acme.plan", NULL, "config: tenants.acme.plan: missing (required)");
    expect_mistake("tenants.bad id!", val("{\"plan\": \"free\"}"),
                   "config: tenants.bad id!: \"bad id!\": a tenant id (the JWT sub) is 1 to 63 "
                   "bytes of [A-Za-z0-9._@:-]");
    expect_mistake("default_plan", val("\"gold\""),
                   "config: default_plan: \"gold\" is not a configured plan");
    snprintf(want, sizeof(want),
             "config: auth.keys[0].secret_file: /x/y: No such file or directory");
    expect_mistake("auth.keys[0].secret_file", val("\"/x/y\""), want);
    snprintf(want, sizeof(want),
             "config: auth.keys[0].secret_file: %s: 16 bytes; HS256 needs at least 32",
             short_secret);
    char v[256];
    snprintf(v, sizeof(v), "\"%s\"", short_secret);
    expect_mistake("auth.keys[0].secret_file", val(v), want);
    snprintf(want, sizeof(want),
             "config: auth.keys[0].secret_file: %s: 40 bytes; HS512 needs at least 64", secret);
    expect_mistake("auth.keys[0].alg", val("\"HS512\""), want);
    snprintf(want, sizeof(want), "config: auth.keys[0].secret_file: %s: not a regular file", dir);
    snprintf(v, sizeof(v), "\"%s\"", dir);
    expect_mistake("auth.keys[0].secret_file", val(v), want);
    expect_mistake("auth.keys[0].alg", val("\"none\""),
                   "config: auth.keys[0].alg: \"none\": expected one of HS256, HS384, HS512, "
                   "RS256, ES256");
    snprintf(v, sizeof(v), "{\"kid\": \"dev\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}",
             secret);
    expect_mistake("auth.keys[1]", val(v),
                   "config: auth.keys[1].kid: \"dev\" is also the kid of auth.keys[0]");
    snprintf(v, sizeof(v), "{\"kid\": \"rs\", \"alg\": \"RS256\", \"public_key_file\": \"%s\"}",
             notpem);
    snprintf(want, sizeof(want),
             "config: auth.keys[1].public_key_file: %s: expected a PEM public key "
             "(\"-----BEGIN PUBLIC KEY-----\")",
             notpem);
    expect_mistake("auth.keys[1]", val(v), want);
    snprintf(v, sizeof(v), "{\"kid\": \"rs\", \"alg\": \"RS256\", \"secret_file\": \"%s\"}",
             secret);
    expect_mistake("auth.keys[1]", val(v),
                   "config: auth.keys[1].secret_file: not used with RS256; use public_key_file\n"
                   "config: auth.keys[1].public_key_file: missing (required)");
    expect_mistake("auth.keys", NULL,
                   "config: auth.keys: missing (required unless auth.jwks_file is given)");
    expect_mistake("auth.keys", val("[]"), "config: auth.keys: expected an array of 1 to 32 keys");
    expect_mistake("auth.leeway_s", val("-1"),
                   "config: auth.leeway_s: expected an integer in [0, 600]");
    expect_mistake("auth.issuer", val("7"),
                   "config: auth.issuer: expected a string of 1 to 127 bytes");
    expect_mistake("listen[0]", val("\"localhost:8080\""),
                   "config: listen[0]: \"localhost:8080\": expected \"a.b.c.d:port\" or "
                   "\"[IPv6]:port\"");
    expect_mistake("listen[1]", val("\"[::1]:0\""),
                   "config: listen[1]: \"[::1]:0\": port must be an integer in [1, 65535]");
    expect_mistake("listen[1]", val("\"127.0.0.1:8080\""),
                   "config: listen[1]: \"127.0.0.1:8080\" is listed twice");
    expect_mistake("listen", val("[]"),
                   "config: listen: expected an array of 1 to 8 \"host:port\" strings");
    expect_mistake("state_dir", val("\"\""),
                   "config: state_dir: expected a string of 1 to 239 bytes");
    expect_mistake("segment.accounts", val("1000"),
                   "config: segment.accounts: expected a power of two in [16, 16777216]");
    expect_mistake("segment.lanes", val("16"),
                   "config: segment.lanes: not settable: it is fronts + workers + 8");
    expect_mistake("segment.slots", val("70000"),
                   "config: segment.slots: expected an integer in [1, 65535]");
    expect_mistake("segment.budgets", val("1"),
                   "config: segment.budgets: expected at least 2 (one per tenant and one for the "
                   "node)");
    json_t *big = base_config();
    set_path(big, "segment.slots", val("65535"));
    set_path(big, "segment.prompt_bytes", val("16777216"));
    set_path(big, "segment.budgets", val("64"));
    struct gw_config *cfg = NULL;
    char err[512];
    assert_int_equal(parse_doc(big, &cfg, err, sizeof(err)), -EINVAL);
    json_decref(big);
    struct gw_seg_config huge = {.accounts = 1024,
                                 .budgets = 64,
                                 .slots = 65535,
                                 .queue = 32,
                                 .lanes = 11,
                                 .prompt_bytes = 16777216,
                                 .output_bytes = 4096,
                                 .resume_tokens = 4096,
                                 .ip_farm_recs = 4096};
    snprintf(want, sizeof(want),
             "config: segment: %zu bytes with these sizes; at most 64 GiB (lower slots, "
             "prompt_bytes or output_bytes)",
             gw_segment_size(&huge, NULL, 0));
    assert_string_equal(err, want);
    expect_mistake("model.path", NULL, "config: model.path: missing (required)");
    expect_mistake("model.name", val("\"tiny model\""),
                   "config: model.name: \"tiny model\": expected 1 to 63 bytes of "
                   "[A-Za-z0-9._:/-]");
    expect_mistake("model.device", val("\"gpu\""),
                   "config: model.device: \"gpu\": expected \"auto\", \"cpu\" or \"cuda:N\" (N in "
                   "[0, 63])");
    expect_mistake("model.context", val("1.5"),
                   "config: model.context: expected an integer in [64, 131072]");
    expect_mistake("model", NULL, "config: model: missing (required)");
    expect_mistake("http.header_bytes", val("100"),
                   "config: http.header_bytes: expected an integer in [1024, 1048576]");
    expect_mistake("http.keepalive", val("100"), "config: http.keepalive: unknown key");
    expect_mistake("ip.budget", val("\"1 GPU-seconds per second\""),
                   "config: ip.budget: unknown key");
    expect_mistake("global.max_tokens", val("5"), "config: global.max_tokens: unknown key");
    expect_mistake("admin.socket",
                   val("\"/run/a/very/long/path/that/does/not/fit/into/the/sun_path/of/a/unix/"
                       "domain/socket/address/whatever/the/system.sock\""),
                   "config: admin.socket: expected a string of 1 to 107 bytes");
    expect_mistake("cost.initial_us_per_token", val("0"),
                   "config: cost.initial_us_per_token: expected an integer in [1, 10000000]");
    expect_mistake("cost", val("[]"), "config: cost: expected an object");
}

static void test_three_mistakes_are_all_reported(void **state)
{
    (void)state;
    json_t *root = base_config();
    set_path(root, "fronts", val("0"));
    set_path(root, "frontz", val("2"));
    set_path(root, "tenants.acme.plan", val("\"gold\""));
    struct gw_config *cfg = NULL;
    char err[2048];
    assert_int_equal(parse_doc(root, &cfg, err, sizeof(err)), -EINVAL);
    json_decref(root);
    assert_string_equal(err, "config: frontz: unknown key\n"
                             "config: fronts: expected an integer in [1, 64]\n"
                             "config: tenants.acme.plan: \"gold\" is not a configured plan");
}

static void test_err_keeps_only_whole_lines(void **state)
{
    (void)state;
    json_t *root = base_config();
    set_path(root, "fronts", val("0"));
    set_path(root, "frontz", val("2"));
    struct gw_config *cfg = NULL;
    char err[40]; /* room for the first line (27 bytes), not the second */
    assert_int_equal(parse_doc(root, &cfg, err, sizeof(err)), -EINVAL);
    json_decref(root);
    assert_string_equal(err, "config: frontz: unknown key");
}

static void test_invalid_json_names_line_and_column(void **state)
{
    (void)state;
    struct gw_config *cfg = NULL;
    char err[512];
    const char *text = "{\n  \"fronts\": 2,\n}";
    assert_int_equal(gw_config_parse(&cfg, text, strlen(text), "x.json", err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "config: x.json: not valid JSON: string or '}' expected near '}' at "
                             "line 3 column 1");
    text = "{\"fronts\": 1, \"fronts\": 2}";
    assert_int_equal(gw_config_parse(&cfg, text, strlen(text), "x.json", err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err,
                        "config: x.json: not valid JSON: duplicate object key near '\"fronts\"' "
                        "at line 1 column 22");
    text = "[1, 2]";
    assert_int_equal(gw_config_parse(&cfg, text, strlen(text), "x.json", err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "config: x.json: expected a JSON object at the top level");
    assert_null(cfg);
}

static void test_load_names_a_missing_file(void **state)
{
    (void)state;
    struct gw_config *cfg = NULL;
    char err[512];
    assert_int_equal(gw_config_load(&cfg, "/nonexistent/gw.json", err, sizeof(err)), -ENOENT);
    assert_string_equal(err, "config: /nonexistent/gw.json: No such file or directory");
    assert_null(cfg);
}

static void test_public_key_file_is_read(void **state)
{
    (void)state;
    json_t *root = base_config();
    char v[256];
    snprintf(v, sizeof(v), "{\"kid\": \"es\", \"alg\": \"ES256\", \"public_key_file\": \"%s\"}",
             pem);
    set_path(root, "auth.keys[1]", val(v));
    struct gw_config *cfg = parse_ok(root);
    assert_int_equal(cfg->n_keys, 2);
    assert_int_equal(cfg->keys[1].alg, GW_ALG_ES256);
    assert_string_equal(cfg->keys[1].path, pem);
    assert_string_equal((const char *)cfg->keys[1].key,
                        "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n");
    gw_config_free(cfg);
}

static void test_window_parser_exact_values(void **state)
{
    (void)state;
    struct gw_window w;
    assert_int_equal(gw_window_parse("10 per second burst 5", &w), 0);
    assert_int_equal(w.limit, 10);
    assert_int_equal(w.period_us, 1000000);
    assert_int_equal(w.burst, 5);
    assert_int_equal(gw_window_parse("60 per minute", &w), 0);
    assert_int_equal(w.limit, 60);
    assert_int_equal(w.period_us, 60000000);
    assert_int_equal(w.burst, 0);
    assert_int_equal(gw_window_parse("1000 per hour", &w), 0);
    assert_int_equal(w.period_us, 3600000000ull);
    assert_int_equal(gw_window_parse("5 per day burst 0", &w), 0);
    assert_int_equal(w.limit, 5);
    assert_int_equal(w.period_us, 86400000000ull);
    assert_int_equal(gw_window_parse("1000000000 per second", &w), 0);
    assert_int_equal(w.limit, 1000000000);

    static const char *const bad[] = {
        "50 per fortnight",
        "0 per second",
        "-1 per second",
        "+1 per second",
        "1e3 per second",
        "10 per seconds",
        "10 Per second",
        "10per second",
        "10 per second burst",
        "10 per second burst -1",
        "10 per second burst 5 more",
        "10 per second bursts 5",
        "",
        "per second",
        "1000000001 per second",
        "10 per second\tburst 5",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        w.limit = 77;
        if (gw_window_parse(bad[i], &w) != -EINVAL)
            fail_msg("\"%s\" was accepted", bad[i]);
        assert_int_equal(w.limit, 77); /* untouched on failure */
    }
    assert_int_equal(gw_window_parse("1 per day burst 1000000000", &w), -ERANGE);
}

static void test_budget_parser_exact_values(void **state)
{
    (void)state;
    struct gw_budget_rate b;
    assert_int_equal(gw_budget_parse("3600 GPU-seconds per day", &b), 0);
    assert_int_equal(b.amount_us, 3600000000ull);
    assert_int_equal(b.period_us, 86400000000ull);
    assert_int_equal(gw_budget_parse("0.5 GPU-seconds per second", &b), 0);
    assert_int_equal(b.amount_us, 500000);
    assert_int_equal(b.period_us, 1000000);
    assert_int_equal(gw_budget_parse("0.1 GPU-seconds per minute", &b), 0);
    assert_int_equal(b.amount_us, 100000); /* exact: no floating point */
    assert_int_equal(b.period_us, 60000000);
    assert_int_equal(gw_budget_parse("2.000001 GPU-seconds per hour", &b), 0);
    assert_int_equal(b.amount_us, 2000001);
    assert_int_equal(b.period_us, 3600000000ull);
    assert_int_equal(gw_budget_parse("8 GPU-seconds per second", &b), 0);
    assert_int_equal(b.amount_us, 8000000);

    static const char *const bad[] = {
        "0 GPU-seconds per second",
        "0.0000001 GPU-seconds per second",
        ".5 GPU-seconds per second",
        "5. GPU-seconds per second",
        "1 GPU-second per second",
        "1 GPU-seconds per week",
        "-1 GPU-seconds per second",
        "1,5 GPU-seconds per second",
        "1 gpu-seconds per second",
        "1 GPU-seconds per second extra",
        "1 GPU-seconds",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gw_budget_parse(bad[i], &b) != -EINVAL)
            fail_msg("\"%s\" was accepted", bad[i]);
}

static void test_plan_for_tenants_claims_and_default(void **state)
{
    (void)state;
    json_t *root = base_config();
    set_path(root, "tenants.acme.max_tokens", val("100"));
    set_path(root, "tenants.zed", val("{\"plan\": \"free\"}"));
    set_path(root, "tenants.m", val("{\"plan\": \"team\", \"rate\": []}"));
    struct gw_config *cfg = parse_ok(root);
    const char *why = "untouched";

    /* tenants are sorted by id for bsearch */
    assert_int_equal(cfg->n_tenants, 3);
    assert_string_equal(cfg->tenants[0].id, "acme");
    assert_string_equal(cfg->tenants[1].id, "m");
    assert_string_equal(cfg->tenants[2].id, "zed");
    assert_ptr_equal(gw_config_tenant(cfg, "zed"), &cfg->tenants[2]);
    assert_ptr_equal(gw_config_tenant(cfg, "m"), &cfg->tenants[1]);
    assert_null(gw_config_tenant(cfg, "nobody"));

    /* a configured tenant gets its plan with its overrides */
    const struct gw_plan *p = gw_config_plan_for(cfg, "acme", NULL, &why);
    assert_ptr_equal(p, &cfg->tenants[0].plan);
    assert_null(why);
    assert_string_equal(p->name, "pro");
    assert_int_equal(p->max_tokens, 100);
    assert_int_equal(p->n_windows, 1);                /* inherited from pro */
    assert_int_equal(cfg->plans[1].max_tokens, 2048); /* the plan itself is unchanged */
    assert_ptr_equal(gw_config_plan_for(cfg, "acme", "", &why), &cfg->tenants[0].plan);
    assert_ptr_equal(gw_config_plan_for(cfg, "acme", "pro", &why), &cfg->tenants[0].plan);
    /* an override of the windows replaces them all */
    assert_int_equal(gw_config_plan_for(cfg, "m", NULL, &why)->n_windows, 0);

    /* a claim the tenant may select gives that plan as configured */
    p = gw_config_plan_for(cfg, "acme", "team", &why);
    assert_ptr_equal(p, &cfg->plans[2]);
    assert_int_equal(p->max_tokens, 4096);

    /* a claim it may not select is refused */
    assert_null(gw_config_plan_for(cfg, "acme", "free", &why));
    assert_string_equal(why, "plan not allowed for this tenant");
    why = NULL;
    assert_null(gw_config_plan_for(cfg, "acme", "enterprise", &why));
    assert_string_equal(why, "plan not allowed for this tenant");

    /* an unknown tenant gets the default plan, and may claim only it */
    why = "untouched";
    assert_ptr_equal(gw_config_plan_for(cfg, "stranger", NULL, &why), &cfg->plans[0]);
    assert_null(why);
    assert_ptr_equal(gw_config_plan_for(cfg, "stranger", "free", &why), &cfg->plans[0]);
    assert_null(gw_config_plan_for(cfg, "stranger", "pro", &why));
    assert_string_equal(why, "plan not allowed for this tenant");
    gw_config_free(cfg);

    /* without a default plan an unknown tenant is refused */
    root = base_config();
    set_path(root, "default_plan", json_null());
    cfg = parse_ok(root);
    assert_int_equal(cfg->default_plan, -1);
    why = NULL;
    assert_null(gw_config_plan_for(cfg, "stranger", NULL, &why));
    assert_string_equal(why, "unknown tenant");
    assert_non_null(gw_config_plan_for(cfg, "acme", NULL, &why));
    gw_config_free(cfg);
}

/* The continuous-batching keys of "model" and the plans' weight: each bad
 * value gives one line naming the key and what it accepts. */
static void test_batching_keys_name_key_and_range(void **state)
{
    (void)state;
    const char *batch = "config: model.max_batch: expected 0 (auto) or an integer in [1, 256]";
    expect_mistake("model.max_batch", val("257"), batch);
    expect_mistake("model.max_batch", val("-1"), batch);
    expect_mistake("model.max_batch", val("\"8\""), batch);
    expect_mistake("model.max_batch", val("8.5"), batch);
    const char *kv =
        "config: model.kv_cache_tokens: expected 0 (auto) or an integer in [64, 4194304]";
    expect_mistake("model.kv_cache_tokens", val("63"), kv);
    expect_mistake("model.kv_cache_tokens", val("4194305"), kv);
    expect_mistake("model.kv_cache_tokens", val("1024"),
                   "config: model.kv_cache_tokens: 1024 is less than model.context (2048, the "
                   "default): a single sequence of context tokens must fit; raise it, or 0 for "
                   "auto");
    expect_mistake("model",
                   val("{\"path\": \"m.gguf\", \"name\": \"tiny\", \"context\": 4096,"
                       " \"kv_cache_tokens\": 4095}"),
                   "config: model.kv_cache_tokens: 4095 is less than model.context (4096): a "
                   "single sequence of context tokens must fit; raise it, or 0 for auto");
    /* a context out of range is reported once, not again as a comparison */
    expect_mistake("model",
                   val("{\"path\": \"m.gguf\", \"name\": \"tiny\", \"context\": 1000000,"
                       " \"kv_cache_tokens\": 4096}"),
                   "config: model.context: expected an integer in [64, 131072]");
    expect_mistake("model.prefill_chunk", val("0"),
                   "config: model.prefill_chunk: expected an integer in [1, 4096]");
    expect_mistake("model.prefill_chunk", val("4097"),
                   "config: model.prefill_chunk: expected an integer in [1, 4096]");
    expect_mistake("model.step_tokens", val("65537"),
                   "config: model.step_tokens: expected an integer in [1, 65536]");
    expect_mistake("model.step_tokens", val("32"),
                   "config: model.step_tokens: 32 is less than model.prefill_chunk (64): one step "
                   "must hold a whole prefill chunk");
    expect_mistake("model.prefill_chunk", val("512"),
                   "config: model.step_tokens: 256 (the default) is less than "
                   "model.prefill_chunk (512): one step must hold a whole prefill chunk");
    expect_mistake("model.vtc_weight_prompt", val("0"),
                   "config: model.vtc_weight_prompt: expected a number > 0 and <= 100");
    expect_mistake("model.vtc_weight_prompt", val("-0.5"),
                   "config: model.vtc_weight_prompt: expected a number > 0 and <= 100");
    expect_mistake("model.vtc_weight_output", val("100.5"),
                   "config: model.vtc_weight_output: expected a number > 0 and <= 100");
    expect_mistake("model.vtc_weight_output", val("\"2\""),
                   "config: model.vtc_weight_output: expected a number > 0 and <= 100");
    expect_mistake("model.priority_lead", val("-1"),
                   "config: model.priority_lead: expected an integer in [0, 65536]");
    expect_mistake("model.priority_lead", val("65537"),
                   "config: model.priority_lead: expected an integer in [0, 65536]");
    expect_mistake("model.priority_lead", val("true"),
                   "config: model.priority_lead: expected an integer in [0, 65536]");
    expect_mistake("model.priority_lead", val("1.5"),
                   "config: model.priority_lead: expected an integer in [0, 65536]");
    expect_mistake("model.pin_threads", val("1"),
                   "config: model.pin_threads: expected true or false");
    expect_mistake("model.pin_threads", val("\"no\""),
                   "config: model.pin_threads: expected true or false");
    expect_mistake("model.max_batches", val("8"), "config: model.max_batches: unknown key");
    const char *w = "config: plans.free.weight: expected a number > 0 and <= 1000";
    expect_mistake("plans.free.weight", val("0"), w);
    expect_mistake("plans.free.weight", val("-1"), w);
    expect_mistake("plans.free.weight", val("1000.5"), w);
    expect_mistake("plans.free.weight", val("null"), w);
    expect_mistake("tenants.acme.weight", val("0"),
                   "config: tenants.acme.weight: expected a number > 0 and <= 1000");
    expect_mistake("ip.weight", val("1"), "config: ip.weight: unknown key");
    expect_mistake("global.weight", val("1"), "config: global.weight: unknown key");
}

/* ip.trusted_proxies and ip.ipv6_prefix (issue 18): every bad value is
 * one line naming its path; good ones are taken exactly. */
static void test_address_keys_name_path_and_reason(void **state)
{
    (void)state;
    expect_mistake("ip.trusted_proxies", val("\"10.0.0.0/8\""),
                   "config: ip.trusted_proxies: expected an array of CIDR strings");
    expect_mistake("ip.trusted_proxies", val("[\"10.0.0.0/8\", \"10.0.0.1/8\"]"),
                   "config: ip.trusted_proxies[1]: \"10.0.0.1/8\": host bits set after /8 (did "
                   "you mean 10.0.0.0/8?)");
    expect_mistake("ip.trusted_proxies", val("[\"10.0.0.0/33\"]"),
                   "config: ip.trusted_proxies[0]: \"10.0.0.0/33\": prefix length 33: expected "
                   "0..32 for IPv4");
    expect_mistake("ip.trusted_proxies", val("[\"proxy.local\"]"),
                   "config: ip.trusted_proxies[0]: \"proxy.local\": expected an IPv4 or IPv6 "
                   "address, optionally /BITS");
    expect_mistake("ip.trusted_proxies", val("[8]"),
                   "config: ip.trusted_proxies[0]: expected a CIDR string such as \"10.0.0.0/8\"");
    char many[1024] = "[";
    for (int i = 0; i < 65; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s\"10.0.%d.0/24\"",
                 i ? "," : "", i);
    strcat(many, "]");
    expect_mistake("ip.trusted_proxies", val(many),
                   "config: ip.trusted_proxies: 65 ranges: at most 64");
    expect_mistake("ip.rate", val("[\"300 per minute moving\"]"),
                   "config: ip.rate[0]: \"300 per minute moving\": a moving window admits at most "
                   "255 per period; drop \"moving\" for more");
    expect_mistake("ip.rate", val("[\"10 per minute moving burst 5\"]"),
                   "config: ip.rate[0]: \"10 per minute moving burst 5\": expected \"N per "
                   "second|minute|hour|day [burst M | moving]\"");
    expect_mistake("ip.proxy_protocol", val("[\"127.0.0.1\"]"),
                   "config: ip.proxy_protocol[0]: \"127.0.0.1\": expected \"IPv4:PORT\" or "
                   "\"[IPv6]:PORT\"");
    expect_mistake("ip.proxy_protocol", val("[\"::1:8080\"]"),
                   "config: ip.proxy_protocol[0]: \"::1:8080\": expected \"IPv4:PORT\" or "
                   "\"[IPv6]:PORT\"");
    expect_mistake("ip.proxy_protocol", val("[\"127.0.0.1:0\"]"),
                   "config: ip.proxy_protocol[0]: \"127.0.0.1:0\": expected \"IPv4:PORT\" or "
                   "\"[IPv6]:PORT\"");
    expect_mistake("ip.proxy_protocol", val("[8080]"),
                   "config: ip.proxy_protocol[0]: expected \"IPv4:PORT\" or \"[IPv6]:PORT\"");
    expect_mistake("ip.proxy_protocol", val("\"127.0.0.1:8080\""),
                   "config: ip.proxy_protocol: expected an array of at most 8 listen addresses");
    expect_mistake("auth.keys[0].required_claims", val("[\"jti\", \"a-b\"]"),
                   "config: auth.keys[0].required_claims[1]: \"a-b\": expected 1 to 31 bytes of "
                   "[A-Za-z0-9_]");
    expect_mistake("auth.keys[0].required_claims", val("\"jti\""),
                   "config: auth.keys[0].required_claims: expected an array of at most 8 claim "
                   "names");
    expect_mistake("auth.max_lifetime_s", val("31622401"),
                   "config: auth.max_lifetime_s: expected an integer in [0, 31622400]");
    expect_mistake("ip.overflow_rate", val("[\"5 per fortnight\"]"),
                   "config: ip.overflow_rate[0]: \"5 per fortnight\": expected \"N per "
                   "second|minute|hour|day [burst M | moving]\"");
    expect_mistake("ip.overflow_rate", val("\"5 per minute\""),
                   "config: ip.overflow_rate: expected an array of at most 4 windows");
    expect_mistake("ip.connections_per_address", val("-1"),
                   "config: ip.connections_per_address: expected an integer in [0, 1000000]");
    expect_mistake("ip.ipv6_prefix", val("0"),
                   "config: ip.ipv6_prefix: expected an integer in [1, 128]");
    expect_mistake("ip.ipv6_prefix", val("129"),
                   "config: ip.ipv6_prefix: expected an integer in [1, 128]");

    json_t *root = base_config();
    struct gw_config *cfg = parse_ok(json_incref(root));
    assert_int_equal(cfg->ipv6_prefix, 64);
    assert_int_equal(cfg->n_trusted, 0);
    gw_config_free(cfg);
    set_path(root, "ip.trusted_proxies", val("[\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\"]"));
    set_path(root, "ip.ipv6_prefix", val("48"));
    set_path(root, "auth.keys[0].required_claims", val("[\"jti\", \"iat\"]"));
    set_path(root, "ip.proxy_protocol", val("[\"127.0.0.1:8443\", \"[::1]:8443\"]"));
    cfg = parse_ok(root);
    assert_int_equal(cfg->n_proxy_listen, 2);
    assert_int_equal(cfg->conns_per_address, 0);
    assert_int_equal(cfg->keys[0].n_required, 2);
    assert_string_equal(cfg->keys[0].required[1], "iat");
    assert_int_equal(cfg->ip_overflow.n_windows, 0);
    assert_int_equal(cfg->proxy_listen[0].port, 8443);
    assert_int_equal(cfg->proxy_listen[1].port, 8443);
    assert_true(gw_addr_is_v4(&cfg->proxy_listen[0].addr));
    assert_false(gw_addr_is_v4(&cfg->proxy_listen[1].addr));
    assert_int_equal(cfg->ipv6_prefix, 48);
    assert_int_equal(cfg->n_trusted, 3);
    char out[GW_ADDR_STRLEN];
    gw_cidr_format(&cfg->trusted[0], out);
    assert_string_equal(out, "10.0.0.0/8");
    gw_cidr_format(&cfg->trusted[1], out);
    assert_string_equal(out, "2001:db8::/32");
    gw_cidr_format(&cfg->trusted[2], out);
    assert_string_equal(out, "192.0.2.1/32");
    gw_config_free(cfg);
}

/* The same keys at their edges are taken as written. */
static void test_batching_keys_accept_their_edges(void **state)
{
    (void)state;
    json_t *root = base_config();
    set_path(root, "model",
             val("{\"path\": \"m.gguf\", \"name\": \"tiny\", \"context\": 4096, \"max_batch\": 256,"
                 " \"kv_cache_tokens\": 4096, \"prefill_chunk\": 128, \"step_tokens\": 128,"
                 " \"vtc_weight_prompt\": 0.5, \"vtc_weight_output\": 100, \"priority_lead\": 0}"));
    set_path(root, "plans.pro.weight", val("2.5"));
    set_path(root, "plans.team.weight", val("1000"));
    set_path(root, "tenants.acme.weight", val("0.001"));
    struct gw_config *cfg = parse_ok(root);
    assert_int_equal(cfg->max_batch, 256);
    assert_int_equal(cfg->kv_cache_tokens, 4096); /* = context: one sequence fits */
    assert_int_equal(cfg->prefill_chunk, 128);
    assert_int_equal(cfg->step_tokens, 128); /* = prefill_chunk */
    assert_true(cfg->vtc_weight_prompt == 0.5);
    assert_true(cfg->vtc_weight_output == 100.0);
    assert_int_equal(cfg->priority_lead, 0);  /* no priority by service */
    assert_true(cfg->plans[0].weight == 1.0); /* free: the default */
    assert_true(cfg->plans[1].weight == 2.5);
    assert_true(cfg->plans[2].weight == 1000.0);
    assert_true(cfg->tenants[0].plan.weight == 0.001); /* acme's override of pro's */
    assert_int_equal(gw_weight_milli(cfg->tenants[0].plan.weight), 1);
    assert_int_equal(gw_weight_milli(cfg->plans[1].weight), 2500);
    gw_config_free(cfg);

    root = base_config();
    set_path(root, "model.max_batch", val("0"));
    set_path(root, "model.kv_cache_tokens", val("0"));
    set_path(root, "model.prefill_chunk", val("1"));
    set_path(root, "model.step_tokens", val("65536"));
    set_path(root, "model.pin_threads", val("false"));
    cfg = parse_ok(root);
    assert_int_equal(cfg->max_batch, 0);       /* auto, written out */
    assert_int_equal(cfg->kv_cache_tokens, 0); /* auto, whatever the context */
    assert_int_equal(cfg->prefill_chunk, 1);
    assert_int_equal(cfg->step_tokens, 65536);
    assert_int_equal(cfg->pin_threads, 0);
    gw_config_free(cfg);
}

/* The "cluster" section (issue 19): absent, the node runs alone; each
 * mistake named with its key path. */
static void test_cluster_section_values_and_mistakes(void **state)
{
    (void)state;
    struct gw_config *cfg = parse_ok(base_config());
    assert_int_equal(cfg->cluster.enabled, 0);
    gw_config_free(cfg);
    json_t *root = base_config();
    set_path(root, "cluster",
             val("{\"redis\": \"[::1]:6380\", \"node\": \"gpu-17\", \"timeout_ms\": 50,"
                 " \"fail_mode\": \"fail_closed\", \"plans\": {\"free\": \"fail_open\"}}"));
    char pw[160];
    snprintf(pw, sizeof(pw), "%s/redis.pass", dir);
    write_file(pw, "s3cret\n");
    set_path(root, "cluster.password_file", json_string(pw));
    cfg = parse_ok(root);
    unlink(pw);
    assert_int_equal(cfg->cluster.enabled, 1);
    assert_string_equal(cfg->cluster.redis_host, "::1");
    assert_int_equal(cfg->cluster.redis_port, 6380);
    assert_string_equal(cfg->cluster.node, "gpu-17");
    assert_string_equal(cfg->cluster.password, "s3cret");
    assert_string_equal(cfg->cluster.prefix, "gw");
    assert_int_equal(cfg->cluster.timeout_ms, 50);
    assert_int_equal(cfg->cluster.wait_ms, 1000);
    assert_int_equal(cfg->cluster.lease_ttl_ms, 10000);
    assert_int_equal(cfg->cluster.lease_percent, 5);
    assert_int_equal(cfg->cluster.lease_max_percent, 20);
    assert_int_equal(gw_cluster_fail_mode(&cfg->cluster, "free"), GW_FAIL_OPEN);
    assert_int_equal(gw_cluster_fail_mode(&cfg->cluster, "pro"), GW_FAIL_CLOSED);
    assert_int_equal(cfg->cluster.global_farm, 1); /* the global pool is farm-wide */
    gw_config_free(cfg);
    root = base_config();
    set_path(root, "cluster",
             val("{\"redis\": \"127.0.0.1:6379\", \"node\": \"n1\", \"global\": \"node\"}"));
    cfg = parse_ok(root);
    assert_int_equal(cfg->cluster.global_farm, 0);
    gw_config_free(cfg);

    const char *ok = "{\"redis\": \"127.0.0.1:6379\", \"node\": \"n1\"}";
    expect_mistake("cluster", val("{\"node\": \"n1\"}"),
                   "config: cluster.redis: missing (required)");
    expect_mistake("cluster", val("{\"redis\": \"127.0.0.1:6379\"}"),
                   "config: cluster.node: missing (required)");
    expect_mistake("cluster", val("[]"), "config: cluster: expected an object");
    char err[3][200];
    const char *bad[][2] = {
        {"redis", "\"127.0.0.1\""},
        {"redis", "\"127.0.0.1:0\""},
        {"redis", "\"::1:6379\""},
    };
    snprintf(err[0], 200,
             "config: cluster.redis: \"127.0.0.1\": expected \"host:port\" or "
             "\"[IPv6]:port\"");
    snprintf(err[1], 200,
             "config: cluster.redis: \"127.0.0.1:0\": expected \"host:port\" or "
             "\"[IPv6]:port\"");
    snprintf(err[2], 200,
             "config: cluster.redis: \"::1:6379\": an IPv6 address goes in "
             "brackets: \"[::1]:6379\"");
    for (int k = 0; k < 3; k++) {
        json_t *c = val(ok);
        json_object_set_new(c, bad[k][0], val(bad[k][1]));
        expect_mistake("cluster", c, err[k]);
    }
    struct {
        const char *key, *value, *want;
    } cases[] = {
        {"node", "\"gpu 17\"",
         "config: cluster.node: \"gpu 17\": expected 1 to 63 bytes of "
         "[A-Za-z0-9._-]"},
        {"timeout_ms", "0", "config: cluster.timeout_ms: expected an integer in [1, 10000]"},
        {"lease_ttl_ms", "300",
         "config: cluster.lease_ttl_ms: 300: must be more than twice timeout_ms (200)\n"
         "config: cluster.heartbeat_ms: 1000: at most lease_ttl_ms / 3 (100): a node's heartbeat "
         "key lives 3 periods"},
        {"heartbeat_ms", "5000",
         "config: cluster.heartbeat_ms: 5000: at most lease_ttl_ms / 3 "
         "(3333): a node's heartbeat key lives 3 periods"},
        {"lease_percent", "101", "config: cluster.lease_percent: expected an integer in [1, 100]"},
        {"lease_max_percent", "0",
         "config: cluster.lease_max_percent: expected an integer in [1, 100]"},
        {"lease_max_percent", "3",
         "config: cluster.lease_max_percent: 3: must be at least lease_percent (5)"},
        {"lease_max_percent", "\"20%\"",
         "config: cluster.lease_max_percent: expected an integer in [1, 100]"},
        {"fail_mode", "\"open\"",
         "config: cluster.fail_mode: expected \"fail_open\" or \"fail_closed\""},
        {"plans", "{\"gold\": \"fail_open\"}",
         "config: cluster.plans.gold: \"gold\" is not a plan in \"plans\""},
        {"plans", "{\"free\": 1}",
         "config: cluster.plans.free: expected \"fail_open\" or \"fail_closed\""},
        {"password_file", "\"/nonexistent/pass\"",
         "config: cluster.password_file: /nonexistent/pass: No such file or directory"},
        {"sentinel", "true", "config: cluster.sentinel: unknown key"},
        {"global", "\"both\"", "config: cluster.global: \"both\": expected \"farm\" or \"node\""},
        {"global", "true", "config: cluster.global: not a string: expected \"farm\" or \"node\""},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        json_t *c = val(ok);
        json_object_set_new(c, cases[k].key, val(cases[k].value));
        expect_mistake("cluster", c, cases[k].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dev_config_loads_from_the_repo_root),
        cmocka_unit_test(test_seed_limits_example_loads_with_moving_windows),
        cmocka_unit_test(test_defaults_fill_what_the_file_leaves_out),
        cmocka_unit_test(test_base_config_values),
        cmocka_unit_test(test_each_mistake_is_named_exactly),
        cmocka_unit_test(test_three_mistakes_are_all_reported),
        cmocka_unit_test(test_err_keeps_only_whole_lines),
        cmocka_unit_test(test_invalid_json_names_line_and_column),
        cmocka_unit_test(test_load_names_a_missing_file),
        cmocka_unit_test(test_public_key_file_is_read),
        cmocka_unit_test(test_window_parser_exact_values),
        cmocka_unit_test(test_budget_parser_exact_values),
        cmocka_unit_test(test_plan_for_tenants_claims_and_default),
        cmocka_unit_test(test_batching_keys_name_key_and_range),
        cmocka_unit_test(test_batching_keys_accept_their_edges),
        cmocka_unit_test(test_address_keys_name_path_and_reason),
        cmocka_unit_test(test_cluster_section_values_and_mistakes),
    };
    return cmocka_run_group_tests(tests, setup_files, teardown_files);
}
