/* test_config_metrics.c - the config's "metrics" section: defaults when
 * absent, every value read, and every mistake refused with its key path
 * and the exact words (gpuwarden --check-config prints the same lines). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64], secret[128], token[128], short_token[128], spaced[128];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/gw-cfgm-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    snprintf(token, sizeof(token), "%s/token", dir);
    snprintf(short_token, sizeof(short_token), "%s/short", dir);
    snprintf(spaced, sizeof(spaced), "%s/spaced", dir);
    write_file(secret, "0123456789abcdef0123456789abcdef01234567\n");
    write_file(token, "scrape-0123456789abcdef\n");
    write_file(short_token, "short\n");
    write_file(spaced, "scrape 0123456789abcdef\n");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(secret);
    unlink(token);
    unlink(short_token);
    unlink(spaced);
    rmdir(dir);
    return 0;
}

/* A small valid config with `metrics` (a JSON value, or NULL: absent). */
static int parse(const char *metrics, struct gw_config **cfg, char *err, size_t errlen)
{
    char text[2048];
    int n = snprintf(
        text, sizeof(text),
        "{\"listen\": [\"127.0.0.1:8080\"], \"state_dir\": \"./run\","
        " \"model\": {\"path\": \"m.gguf\", \"name\": \"tiny\", \"device\": \"cpu\"},"
        " \"auth\": {\"keys\": [{\"kid\": \"dev\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}],"
        "           \"issuer\": \"iss\", \"audience\": \"aud\"},"
        " \"plans\": {\"free\": {\"rate\": [\"1 per second\"]}}, \"default_plan\": \"free\"%s%s}",
        secret, metrics ? ", \"metrics\": " : "", metrics ? metrics : "");
    assert_true(n > 0 && (size_t)n < sizeof(text));
    return gw_config_parse(cfg, text, (size_t)n, "test.json", err, errlen);
}

static void test_absent_section_keeps_metrics_public_top_20_by_gpu(void **state)
{
    (void)state;
    struct gw_config *cfg = NULL;
    char err[1024];
    assert_int_equal(parse(NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->metrics.listen, "");
    assert_int_equal(cfg->metrics.token_len, 0);
    assert_int_equal(cfg->metrics.tenants_top, 20);
    assert_int_equal(cfg->metrics.tenants_by, GW_MT_BY_GPU);
    gw_config_free(cfg);
}

static void test_every_value_is_read(void **state)
{
    (void)state;
    char m[512], err[1024];
    snprintf(m, sizeof(m),
             "{\"listen\": \"[::1]:9464\", \"bearer_token_file\": \"%s\", \"tenants_top\": 0,"
             " \"tenants_by\": \"refusals\"}",
             token);
    struct gw_config *cfg = NULL;
    assert_int_equal(parse(m, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->metrics.listen, "[::1]:9464");
    assert_int_equal(cfg->metrics.token_len, 23); /* the newline is not part of it */
    assert_string_equal(cfg->metrics.token, "scrape-0123456789abcdef");
    assert_int_equal(cfg->metrics.tenants_top, 0);
    assert_int_equal(cfg->metrics.tenants_by, GW_MT_BY_REFUSALS);
    gw_config_free(cfg);
}

static void expect_mistake(const char *metrics, const char *want)
{
    struct gw_config *cfg = (struct gw_config *)1;
    char err[1024];
    int rc = parse(metrics, &cfg, err, sizeof(err));
    if (rc != -EINVAL || strcmp(err, want) != 0)
        print_error("metrics: %s\n", metrics);
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_string_equal(err, want);
}

static void test_mistakes_are_named_by_path(void **state)
{
    (void)state;
    expect_mistake("[]", "config: metrics: expected an object");
    expect_mistake("{\"listen\": \"localhost:9464\"}",
                   "config: metrics.listen: \"localhost:9464\": expected \"a.b.c.d:port\" or "
                   "\"[IPv6]:port\"");
    expect_mistake(
        "{\"listen\": \"127.0.0.1:0\"}",
        "config: metrics.listen: \"127.0.0.1:0\": port must be an integer in [1, 65535]");
    expect_mistake("{\"listen\": \"127.0.0.1:8080\"}",
                   "config: metrics.listen: \"127.0.0.1:8080\" is also in \"listen\": /metrics "
                   "needs its own address");
    expect_mistake("{\"listen\": 9464}",
                   "config: metrics.listen: expected a string of 1 to 63 bytes");
    expect_mistake("{\"tenants_top\": 1001}",
                   "config: metrics.tenants_top: expected an integer in [0, 1000]");
    expect_mistake("{\"tenants_top\": -1}",
                   "config: metrics.tenants_top: expected an integer in [0, 1000]");
    expect_mistake("{\"tenants_by\": \"score\"}",
                   "config: metrics.tenants_by: expected \"gpu_time\" or \"refusals\"");
    expect_mistake("{\"token\": \"x\"}", "config: metrics.token: unknown key");
    expect_mistake("{\"bearer_token_file\": \"/nonexistent/token\"}",
                   "config: metrics.bearer_token_file: /nonexistent/token: No such file or "
                   "directory");
    char m[256], want[512];
    snprintf(m, sizeof(m), "{\"bearer_token_file\": \"%s\"}", short_token);
    snprintf(want, sizeof(want),
             "config: metrics.bearer_token_file: %s: 5 bytes; a token needs at least 16",
             short_token);
    expect_mistake(m, want);
    snprintf(m, sizeof(m), "{\"bearer_token_file\": \"%s\"}", spaced);
    snprintf(want, sizeof(want),
             "config: metrics.bearer_token_file: %s: only visible ASCII (no spaces or control "
             "bytes) may be in it",
             spaced);
    expect_mistake(m, want);
    snprintf(m, sizeof(m), "{\"bearer_token_file\": \"%s\"}", dir);
    snprintf(want, sizeof(want), "config: metrics.bearer_token_file: %s: not a regular file", dir);
    expect_mistake(m, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent_section_keeps_metrics_public_top_20_by_gpu),
        cmocka_unit_test(test_every_value_is_read),
        cmocka_unit_test(test_mistakes_are_named_by_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
