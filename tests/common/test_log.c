/* test_log.c - the exact shape of log lines (text and JSON), and the
 * "log" config keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T 1795737541123456ull /* 2026-11-26T23:59:01.123456Z in us */

static void test_text_line_has_priority_who_message_and_fields(void **state)
{
    (void)state;
    char buf[512];
    struct gw_log_field f[] = {
        {.key = "id", .str = "gen-0abc"},
        {.key = "tenant", .str = "two words"},
        {.key = "status", .num = 429},
        {.key = "device_ms", .real = 12.3456, .is_real = 1},
    };
    size_t n =
        gw_log_format(buf, sizeof(buf), GW_LOG_TEXT, GW_LOG_INFO, "front 1", T, 42, f, 4, "access");
    assert_string_equal(buf, "<6>gpuwarden[front 1]: access id=gen-0abc tenant=\"two words\" "
                             "status=429 device_ms=12.346\n");
    assert_int_equal(n, strlen(buf));
    gw_log_format(buf, sizeof(buf), GW_LOG_TEXT, GW_LOG_ERR, "master", T, 42, NULL, 0,
                  "listen 127.0.0.1:1: cannot bind");
    assert_string_equal(buf, "<3>gpuwarden[master]: listen 127.0.0.1:1: cannot bind\n");
    /* a level outside 3..7 is logged as info */
    gw_log_format(buf, sizeof(buf), GW_LOG_TEXT, 9, "worker 0", T, 42, NULL, 0, "x");
    assert_string_equal(buf, "<6>gpuwarden[worker 0]: x\n");
}

static void test_json_line_is_one_object_with_time_level_role_pid(void **state)
{
    (void)state;
    char buf[512];
    struct gw_log_field f[] = {
        {.key = "tenant", .str = "a\"b\\c\n"},
        {.key = "tokens", .num = 8},
        {.key = "duration_ms", .real = 0.5, .is_real = 1},
    };
    gw_log_format(buf, sizeof(buf), GW_LOG_JSON, GW_LOG_INFO, "front 1", T, 42, f, 3, "access");
    assert_string_equal(buf, "<6>{\"time\":\"2026-11-26T23:59:01.123Z\",\"level\":\"info\","
                             "\"role\":\"front\",\"index\":1,\"pid\":42,\"msg\":\"access\","
                             "\"tenant\":\"a\\\"b\\\\c\\n\",\"tokens\":8,\"duration_ms\":0.500}\n");
    gw_log_format(buf, sizeof(buf), GW_LOG_JSON, GW_LOG_WARNING, "master: watchdog", T, 7, NULL, 0,
                  "slot 3: \x01killed");
    assert_string_equal(buf, "<4>{\"time\":\"2026-11-26T23:59:01.123Z\",\"level\":\"warning\","
                             "\"role\":\"master\",\"part\":\"watchdog\",\"pid\":7,"
                             "\"msg\":\"slot 3: \\u0001killed\"}\n");
}

static void test_long_lines_are_cut_and_still_end_the_line(void **state)
{
    (void)state;
    char big[600], buf[128];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    size_t n =
        gw_log_format(buf, sizeof(buf), GW_LOG_TEXT, GW_LOG_INFO, "master", T, 1, NULL, 0, big);
    assert_int_equal(n, sizeof(buf) - 1);
    assert_int_equal(buf[n - 1], '\n');
    n = gw_log_format(buf, sizeof(buf), GW_LOG_JSON, GW_LOG_INFO, "master", T, 1, NULL, 0, big);
    assert_int_equal(buf[n - 2], '}');
    assert_int_equal(buf[n - 1], '\n');
}

/* A minimal valid config (a model and one key) with `extra` added. */
static int parse(const char *extra, char *err, size_t errlen, struct gw_config **cfg)
{
    char secret[64], json[1024];
    snprintf(secret, sizeof(secret), "/tmp/gw-test-log-%d.key", (int)getpid());
    FILE *f = fopen(secret, "w");
    fputs("a-test-secret-of-more-than-32-bytes-0123456789", f);
    fclose(f);
    snprintf(json, sizeof(json),
             "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, \"auth\": {\"keys\": "
             "[{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}]}, %s}",
             secret, extra);
    int rc = gw_config_parse(cfg, json, strlen(json), "t.json", err, errlen);
    unlink(secret);
    return rc;
}

static void test_config_log_keys_and_their_mistakes(void **state)
{
    (void)state;
    struct gw_config *cfg;
    char err[1024];
    assert_int_equal(parse("\"log\": {}", err, sizeof(err), &cfg), 0);
    assert_int_equal(cfg->log_format, GW_LOG_TEXT);
    assert_int_equal(cfg->log_access, 0);
    gw_config_free(cfg);
    assert_int_equal(
        parse("\"log\": {\"format\": \"json\", \"access\": true}", err, sizeof(err), &cfg), 0);
    assert_int_equal(cfg->log_format, GW_LOG_JSON);
    assert_int_equal(cfg->log_access, 1);
    gw_config_free(cfg);
    assert_int_equal(parse("\"log\": {\"format\": \"xml\", \"access\": \"yes\", \"level\": 3}", err,
                           sizeof(err), &cfg),
                     -EINVAL);
    assert_string_equal(err, "config: log.level: unknown key\n"
                             "config: log.format: \"xml\": expected \"text\" or \"json\"\n"
                             "config: log.access: expected true or false");
    assert_int_equal(parse("\"log\": {\"format\": 1}", err, sizeof(err), &cfg), -EINVAL);
    assert_string_equal(err, "config: log.format: expected \"text\" or \"json\"");
    assert_int_equal(parse("\"log\": \"json\"", err, sizeof(err), &cfg), -EINVAL);
    assert_string_equal(err, "config: log: expected an object");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_line_has_priority_who_message_and_fields),
        cmocka_unit_test(test_json_line_is_one_object_with_time_level_role_pid),
        cmocka_unit_test(test_long_lines_are_cut_and_still_end_the_line),
        cmocka_unit_test(test_config_log_keys_and_their_mistakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
