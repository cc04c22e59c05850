/* test_guard_secrets.c - the output guard's default rules against the
 * secrets that leak today (OpenAI and Anthropic API keys, GitHub, Slack and
 * Google tokens, JWTs, PEM private keys), fed through worker/guard.c byte by
 * byte, in chunks of every small size and split at every position: the
 * exact text that goes out, the kill at the exact byte, never a piece of
 * the secret in between. Then what makes redactions visible
 * (gw_guard_report: the node's counter and the audit lines) and the rules'
 * reload (gw_guard_reload). No processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../common/fixture.h"
#include "gw_worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ----------------------------------------------------------- helpers */

static char dir[128];

/* A config file with `extra` spliced into its top-level object; its path
 * into path. Only what gw_config_load needs besides: a model name and an
 * HS key (the model file is never opened). */
static void write_config(char *path, size_t len, const char *extra)
{
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/gw-guard-%d-%ld", (int)getpid(), random());
        assert_int_equal(mkdir(dir, 0700), 0);
        char key[200];
        snprintf(key, sizeof(key), "%s/secret.key", dir);
        FILE *f = fopen(key, "w");
        assert_non_null(f);
        fputs("guard-test-secret-0123456789abcdef", f);
        fclose(f);
    }
    snprintf(path, len, "%s/gpuwarden.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, \"state_dir\": \"%s\","
            " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\","
            " \"secret_file\": \"%s/secret.key\"}]}%s%s}",
            dir, dir, extra ? ", " : "", extra ? extra : "");
    fclose(f);
}

static struct gw_config *default_config(void)
{
    char path[256], err[2048];
    write_config(path, sizeof(path), NULL);
    struct gw_config *cfg = NULL;
    if (gw_config_load(&cfg, path, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return cfg;
}

static struct gw_guard *default_guard(void)
{
    char err[512];
    struct gw_config *cfg = default_config();
    struct gw_guard *g = NULL;
    assert_int_equal(gw_guard_new(&g, cfg->guard, cfg->n_guard, err, sizeof(err)), 0);
    gw_config_free(cfg);
    return g;
}

/* The index of the default rule called name. */
static int rule_index(const char *name)
{
    struct gw_config *cfg = default_config();
    int at = -1;
    for (int i = 0; i < cfg->n_guard; i++)
        if (strcmp(cfg->guard[i].name, name) == 0)
            at = i;
    gw_config_free(cfg);
    if (at < 0)
        fail_msg("no default rule %s", name);
    return at;
}

struct sink {
    char buf[1024];
    size_t len;
    const char *want; /* what must come out in the end: every step a prefix of it */
};

static void sink_emit(void *user, const char *text, size_t len)
{
    struct sink *s = user;
    assert_true(s->len + len < sizeof(s->buf));
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->buf[s->len] = '\0';
    /* never ahead of the answer, so never a byte of the secret */
    if (strncmp(s->buf, s->want, s->len) != 0)
        fail_msg("emitted [%s], which is not a prefix of [%s]", s->buf, s->want);
}

/* One run of text through a fresh request of g, cut into pieces whose
 * sizes repeat `sizes` (0-terminated); then the end of the stream. The
 * output must be exactly want; kill: 0, or the 1 + rule index that must
 * end the stream at the piece holding byte kill_at (the last byte of the
 * match). */
static void run(struct gw_guard *g, const char *text, const size_t *sizes, const char *want,
                int kill, size_t kill_at, const char *how)
{
    struct sink s = {.want = want};
    size_t n = strlen(text), at = 0, k = 0;
    int got = 0;
    gw_guard_reset(g);
    while (at < n) {
        size_t piece = sizes[k] ? sizes[k++] : (k = 0, sizes[k++]);
        if (piece > n - at)
            piece = n - at;
        int rc = gw_guard_feed(g, text + at, piece, 0, sink_emit, &s);
        if (rc != 0 && got == 0) {
            got = rc;
            if (kill_at < at || kill_at >= at + piece)
                fail_msg("%s: killed by the piece [%zu, %zu), expected at byte %zu", how, at,
                         at + piece, kill_at);
        } else if (rc != 0) {
            fail_msg("%s: a second verdict %d after the kill", how, rc);
        }
        at += piece;
    }
    assert_int_equal(gw_guard_feed(g, "", 0, 1, sink_emit, &s), 0);
    if (got != kill || strcmp(s.buf, want) != 0)
        fail_msg("%s: verdict %d (expected %d), output [%s] (expected [%s])", how, got, kill, s.buf,
                 want);
}

/* text through g byte by byte, in pieces of 2, 3, 5, 8 and 13 bytes, in
 * pieces of 1, 2, 3, ... cycling, and split in two at every position. */
static void run_every_cut(struct gw_guard *g, const char *text, const char *want, int kill,
                          size_t kill_at)
{
    static const size_t fixed[][2] = {{1, 0}, {2, 0}, {3, 0}, {5, 0}, {8, 0}, {13, 0}};
    static const size_t cycling[] = {1, 2, 3, 4, 5, 6, 7, 0};
    char how[64];
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        snprintf(how, sizeof(how), "pieces of %zu", fixed[i][0]);
        run(g, text, fixed[i], want, kill, kill_at, how);
    }
    run(g, text, cycling, want, kill, kill_at, "pieces of 1..7");
    size_t n = strlen(text);
    for (size_t cut = 1; cut < n; cut++) {
        size_t two[] = {cut, n, 0};
        snprintf(how, sizeof(how), "split at %zu", cut);
        run(g, text, two, want, kill, kill_at, how);
    }
}

/* ------------------------------------------------ the default rules */

/* Each secret in a sentence, and the sentence that must go out. */
static const struct {
    const char *rule;
    const char *secret;
} redacted[] = {
    {"openai_api_key", "sk-proj-T9x2Lk7Qw3Er5Ty8Ui1Op4As6Df0Gh2Jk5Lz8Xc1Vb4Nm7Qa_-Zz"},
    {"openai_api_key", "sk-svcacct-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3Ab4C"},
    {"openai_api_key", "sk-4f9XbT2kLm8Qp1Rz6Vw3Ys7Nc5Hd0Ja2Ke9Ug4Ti8Ox1Ml6Pb"},
    {"anthropic_api_key", "sk-ant-api03-Zx8Cv7Bn6Mq5Wr4Et3Yu2Io1Pa0Sd9Fg8Hj7Kl6Lz5Xc4V_b-AA"},
    {"github_token", "ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r"},
    {"github_token", "gho_9Z8y7X6w5V4u3T2s1R0q9P8o7N6m5L4k3J2i"},
    {"github_token", "github_pat_11ABCDEFG0123456789abc_defGHIjklMNOpqrSTUvwxYZ0123456789abcdefGH"
                     "IJKLmnopqRSTUV"},
    {"slack_token", "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"},
    {"slack_token", "xoxp-2468013579-1357924680-8642097531-0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
    {"google_api_key", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"},
    {"jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4g"
            "RG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"},
    {"jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhY21lIiwiZXhwIjo5OTl9."}, /* alg none: no signature */
};

static void test_each_token_is_redacted_exactly_however_it_is_cut(void **state)
{
    (void)state;
    struct gw_guard *g = default_guard();
    for (size_t i = 0; i < sizeof(redacted) / sizeof(redacted[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), "Use this key: %s and keep it safe.", redacted[i].secret);
        uint64_t before = gw_guard_redactions(g);
        run_every_cut(g, text, "Use this key: [REDACTED] and keep it safe.", 0, 0);
        /* one redaction per run, and by the rule named */
        size_t runs = 7 + strlen(text) - 1;
        assert_int_equal(gw_guard_redactions(g) - before, runs);
    }
    gw_guard_free(g);
}

/* The token at the very end of the stream (no character after it): the
 * end of the stream decides it. Two in a row: each is redacted. */
static void test_a_token_at_the_end_and_two_in_a_row_are_redacted(void **state)
{
    (void)state;
    struct gw_guard *g = default_guard();
    run_every_cut(g, "token=ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r", "token=[REDACTED]", 0, 0);
    run_every_cut(g,
                  "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q\n"
                  "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx\n",
                  "[REDACTED]\n[REDACTED]\n", 0, 0);
    gw_guard_free(g);
}

/* Which rule redacted: counted per rule, what gw_guard_report audits. */
static void test_each_token_is_counted_under_its_own_rule(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    char audit[200];
    snprintf(audit, sizeof(audit), "/tmp/gw-guard-audit-%d-%ld.log", (int)getpid(), random());
    unlink(audit);
    struct gw_guard *g = default_guard();
    struct gw_slot_req req;
    memset(&req, 0, sizeof(req));
    for (size_t i = 0; i < sizeof(redacted) / sizeof(redacted[0]); i++) {
        struct sink s = {.want = "x [REDACTED] y"};
        char text[512];
        snprintf(text, sizeof(text), "x %s y", redacted[i].secret);
        gw_guard_reset(g);
        for (size_t k = 0; text[k]; k++)
            assert_int_equal(gw_guard_feed(g, text + k, 1, 0, sink_emit, &s), 0);
        assert_int_equal(gw_guard_feed(g, "", 0, 1, sink_emit, &s), 0);
        snprintf(req.id, sizeof(req.id), "req-%zu", i);
        assert_int_equal(gw_guard_report(g, &f->seg, &req, audit), 1);
        char want[200];
        snprintf(want, sizeof(want), "\"request_id\":\"req-%zu\",", i);
        FILE *a = fopen(audit, "r");
        char line[1024], last[1024] = "";
        while (fgets(line, sizeof(line), a))
            memcpy(last, line, sizeof(last));
        fclose(a);
        char rule[96];
        snprintf(rule, sizeof(rule), "\"event\":\"redaction\",\"rule\":\"%s\",\"count\":1}\n",
                 redacted[i].rule);
        if (!strstr(last, want) || !strstr(last, rule))
            fail_msg("secret %zu: audit line %s", i, last);
    }
    gw_guard_free(g);
    unlink(audit);
    fx_close(f);
}

/* Kill rules: nothing from the header on goes out, and the stream ends at
 * the byte that completes the header. */
static void test_private_key_blocks_end_the_stream_at_the_header(void **state)
{
    (void)state;
    static const char *const headers[] = {
        "-----BEGIN PRIVATE KEY-----",           "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----",   "-----BEGIN ENCRYPTED PRIVATE KEY-----",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    };
    int kill = 1 + rule_index("pem_private_key");
    struct gw_guard *g = default_guard();
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "Here it is:\n%s\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n",
                 headers[i]);
        run_every_cut(g, text, "Here it is:\n", kill,
                      strlen("Here it is:\n") + strlen(headers[i]) - 1);
    }
    /* an AWS key id still ends it too */
    run_every_cut(g, "id AKIAIOSFODNN7EXAMPLE, secret", "id ", 1 + rule_index("aws_access_key_id"),
                  strlen("id AKIAIOSFODNN7EXAMPLE"));
    gw_guard_free(g);
}

/* Words that only look like the start of a token go out as they are. */
static void test_near_misses_go_out_unchanged(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "pip install sk-learn-compatible-estimators today",
        "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa is one short",
        "the sk-proj-tiny key is a placeholder",
        "ghp_short and gho_ are prefixes only",
        "github_pat_tooshort",
        "xoxb-123 is no Slack token",
        "AIzaShort is no Google key",
        "eyJhbGciOiJIUzI1NiJ9 is a header alone",
        "eyJhbGciOiJIUzI1NiJ9.eyJ.x has a short payload",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n",
        "-----BEGIN CERTIFICATE-----",
        "the task-4f9XbT2kLm8Qp1Rz6Vw3Ys7Nc5Hd0Ja2Ke9Ug4Ti8Ox1Ml6Pb id",
    };
    struct gw_guard *g = default_guard();
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        run_every_cut(g, texts[i], texts[i], 0, 0);
    assert_int_equal(gw_guard_redactions(g), 0);
    gw_guard_free(g);
}

/* -------------------------------------------- reporting redactions */

static void test_report_counts_and_audits_a_requests_redactions_once(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    char audit[200];
    snprintf(audit, sizeof(audit), "/tmp/gw-guard-audit-%d-%ld.log", (int)getpid(), random());
    unlink(audit);
    struct gw_guard *g = default_guard();
    struct gw_slot_req req;
    memset(&req, 0, sizeof(req));
    snprintf(req.id, sizeof(req.id), "chatcmpl-0abc");
    snprintf(req.tenant, sizeof(req.tenant), "acme");
    snprintf(req.ip, sizeof(req.ip), "10.0.0.7");
    struct sink s = {.want = "a [REDACTED], b [REDACTED], mail [REDACTED]."};
    static const char text[] = "a sk-4f9XbT2kLm8Qp1Rz6Vw3Ys7Nc5Hd0Ja2Ke9Ug4Ti8Ox1Ml6Pb, "
                               "b sk-proj-T9x2Lk7Qw3Er5Ty8Ui1Op4As6Df0Gh2Jk5Lz8Xc1Vb4Nm7Qa, "
                               "mail ann@example.com.";
    gw_guard_reset(g);
    assert_int_equal(gw_guard_feed(g, text, sizeof(text) - 1, 0, sink_emit, &s), 0);
    assert_int_equal(gw_guard_feed(g, "", 0, 1, sink_emit, &s), 0);
    assert_string_equal(s.buf, s.want);
    assert_int_equal(gw_guard_report(g, &f->seg, &req, audit), 3);
    struct gw_metrics_snap m;
    gw_metrics_read(&f->seg, &m);
    assert_int_equal(m.counters[GW_MC_GUARD_REDACTIONS], 3);
    /* one line per rule, in the rules' order, no secret in any */
    FILE *a = fopen(audit, "r");
    assert_non_null(a);
    char line[2][1024], more[1024];
    assert_non_null(fgets(line[0], sizeof(line[0]), a));
    assert_non_null(fgets(line[1], sizeof(line[1]), a));
    assert_null(fgets(more, sizeof(more), a));
    fclose(a);
    static const char *const want[2] = {
        "\",\"request_id\":\"chatcmpl-0abc\",\"tenant\":\"acme\",\"ip\":\"10.0.0.7\","
        "\"event\":\"redaction\",\"rule\":\"openai_api_key\",\"count\":2}\n",
        "\",\"request_id\":\"chatcmpl-0abc\",\"tenant\":\"acme\",\"ip\":\"10.0.0.7\","
        "\"event\":\"redaction\",\"rule\":\"email\",\"count\":1}\n",
    };
    for (int i = 0; i < 2; i++) {
        /* {"time":"YYYY-MM-DDTHH:MM:SS.mmmZ" then the rest, exactly */
        assert_int_equal(strncmp(line[i], "{\"time\":\"", 9), 0);
        assert_int_equal(line[i][9 + 23], 'Z');
        assert_string_equal(line[i] + 9 + 24, want[i]);
    }
    /* reported once: a second call has nothing to add */
    assert_int_equal(gw_guard_report(g, &f->seg, &req, audit), 0);
    gw_metrics_read(&f->seg, &m);
    assert_int_equal(m.counters[GW_MC_GUARD_REDACTIONS], 3);
    /* a new request starts from nothing, even if the last was not reported */
    s = (struct sink){.want = "[REDACTED]"};
    assert_int_equal(gw_guard_feed(g, "bo@x.io", 7, 1, sink_emit, &s), 0);
    gw_guard_reset(g);
    assert_int_equal(gw_guard_report(g, &f->seg, &req, audit), 0);
    /* no guard (a worker without rules): nothing, no error */
    assert_int_equal(gw_guard_report(NULL, &f->seg, &req, audit), 0);
    gw_guard_free(g);
    unlink(audit);
    fx_close(f);
}

static void test_report_names_an_audit_log_it_cannot_write(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_guard *g = default_guard();
    struct gw_slot_req req;
    memset(&req, 0, sizeof(req));
    struct sink s = {.want = "[REDACTED]"};
    assert_int_equal(gw_guard_feed(g, "bo@x.io", 7, 1, sink_emit, &s), 0);
    assert_int_equal(gw_guard_report(g, &f->seg, &req, "/nonexistent-dir/audit.log"), -ENOENT);
    /* counted all the same */
    struct gw_metrics_snap m;
    gw_metrics_read(&f->seg, &m);
    assert_int_equal(m.counters[GW_MC_GUARD_REDACTIONS], 1);
    gw_guard_free(g);
    fx_close(f);
}

static void test_audit_event_lines_are_exact(void **state)
{
    (void)state;
    char line[1024];
    struct gw_audit_event red = {.request_id = "gen-1",
                                 .tenant = "acme",
                                 .ip = "127.0.0.1",
                                 .event = "redaction",
                                 .rule = "jwt",
                                 .count = 4};
    size_t n = gw_audit_format_event(line, sizeof(line), 1700000000123456ull, &red);
    assert_string_equal(line, "{\"time\":\"2023-11-14T22:13:20.123Z\",\"request_id\":\"gen-1\","
                              "\"tenant\":\"acme\",\"ip\":\"127.0.0.1\",\"event\":\"redaction\","
                              "\"rule\":\"jwt\",\"count\":4}\n");
    assert_int_equal(n, strlen(line));
    struct gw_audit_event who = {.request_id = "chatcmpl-9",
                                 .tenant = "acme",
                                 .ip = "::1",
                                 .user = "end \"user\"\n42",
                                 .event = "end_user",
                                 .killed_reason = "repetition"};
    n = gw_audit_format_event(line, sizeof(line), 1700000000123456ull, &who);
    assert_string_equal(line,
                        "{\"time\":\"2023-11-14T22:13:20.123Z\",\"request_id\":\"chatcmpl-9\","
                        "\"tenant\":\"acme\",\"ip\":\"::1\",\"user\":\"end \\\"user\\\"\\n42\","
                        "\"event\":\"end_user\",\"killed_reason\":\"repetition\"}\n");
    assert_int_equal(n, strlen(line));
    /* cut to the buffer, still one line */
    char small[40];
    n = gw_audit_format_event(small, sizeof(small), 1700000000123456ull, &who);
    assert_int_equal(n, sizeof(small) - 1);
    assert_int_equal(strlen(small), n);
}

/* ------------------------------------------------------ reloading */

static void test_reload_takes_the_new_rules_or_keeps_the_old(void **state)
{
    (void)state;
    char path[256], err[2048];
    struct gw_guard *g = default_guard();
    struct gw_guard *first = g;
    /* new rules */
    write_config(path, sizeof(path),
                 "\"watchdog\": {\"guard\": [{\"name\": \"fruit\", \"pattern\": \"banana\","
                 " \"action\": \"redact\"}]}");
    assert_int_equal(gw_guard_reload(&g, path, err, sizeof(err)), 0);
    assert_non_null(g);
    assert_ptr_not_equal(g, first); /* freed and replaced */
    assert_string_equal(gw_guard_rule_name(g, 0), "fruit");
    run_every_cut(g, "a banana and ann@example.com", "a [REDACTED] and ann@example.com", 0, 0);
    /* a bad file: refused, named, and the running rules stay */
    write_config(path, sizeof(path),
                 "\"watchdog\": {\"guard\": [{\"name\": \"x\", \"pattern\": \"a(b\"}]}");
    struct gw_guard *kept = g;
    assert_int_equal(gw_guard_reload(&g, path, err, sizeof(err)), -EINVAL);
    assert_ptr_equal(g, kept);
    assert_non_null(strstr(err, "config: watchdog.guard[0].pattern: not a valid PCRE2 pattern"));
    run_every_cut(g, "a banana", "a [REDACTED]", 0, 0);
    /* "guard": [] turns the guard off */
    write_config(path, sizeof(path), "\"watchdog\": {\"guard\": []}");
    assert_int_equal(gw_guard_reload(&g, path, err, sizeof(err)), 0);
    assert_null(g);
    /* and no "guard" at all brings the defaults back */
    write_config(path, sizeof(path), NULL);
    assert_int_equal(gw_guard_reload(&g, path, err, sizeof(err)), 0);
    assert_non_null(g);
    run_every_cut(g, "k sk-4f9XbT2kLm8Qp1Rz6Vw3Ys7Nc5Hd0Ja2Ke9Ug4Ti8Ox1Ml6Pb.", "k [REDACTED].", 0,
                  0);
    /* a file that is not there */
    assert_int_equal(gw_guard_reload(&g, "/nonexistent/gpuwarden.json", err, sizeof(err)), -ENOENT);
    if (!strstr(err, "/nonexistent/gpuwarden.json"))
        fail_msg("the error does not name the file: %s", err);
    assert_non_null(g);
    assert_int_equal(gw_guard_reload(NULL, path, err, sizeof(err)), -EINVAL);
    gw_guard_free(g);
}

static int teardown(void **state)
{
    (void)state;
    if (dir[0]) {
        char p[256];
        snprintf(p, sizeof(p), "%s/secret.key", dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/gpuwarden.json", dir);
        unlink(p);
        rmdir(dir);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_token_is_redacted_exactly_however_it_is_cut),
        cmocka_unit_test(test_a_token_at_the_end_and_two_in_a_row_are_redacted),
        cmocka_unit_test(test_each_token_is_counted_under_its_own_rule),
        cmocka_unit_test(test_private_key_blocks_end_the_stream_at_the_header),
        cmocka_unit_test(test_near_misses_go_out_unchanged),
        cmocka_unit_test(test_report_counts_and_audits_a_requests_redactions_once),
        cmocka_unit_test(test_report_names_an_audit_log_it_cannot_write),
        cmocka_unit_test(test_audit_event_lines_are_exact),
        cmocka_unit_test(test_reload_takes_the_new_rules_or_keeps_the_old),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
