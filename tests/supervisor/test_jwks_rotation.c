/* test_jwks_rotation.c - key rotation through auth.jwks_file against a
 * real master with two fronts (SmolLM2 on the CPU; exit 77 when models/
 * lacks it). The config has no auth.keys: its keys are the key set's.
 * A is tests/fixtures/keys' RS256 key (kid "rs"), B its ES256 key (kid
 * "es"); the test signs their tokens itself with the private halves.
 *  - the set holds A: A's tokens pass, B's are "unknown key id";
 *  - the file is rewritten to A+B and the master gets SIGHUP: A and B both
 *    pass on the keep-alive connection opened before the reload;
 *  - a set with a private key, reloaded with gpuwardenctl: refused with the
 *    exact line (also by --check-config and in the master's log), and A
 *    and B still pass on that connection;
 *  - the file is rewritten to B only, SIGHUP: A is refused "unknown key id"
 *    and B passes, still on the same connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>
#include <jwt.h>

static struct svc S;
static int started, reloads;
static char SOCK[108], JWKS[256];
static json_t *fixture; /* tests/fixtures/keys/jwks.json: keys "rs", "es" */
static char *tok_a, *tok_b;

static char *slurp(const char *name)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/tests/fixtures/keys/%s", gw_source_dir(), name);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

/* A token for tenant "happy" signed by the fixture's private key `pem`. */
static char *sign(jwt_alg_t alg, const char *pem_name, const char *kid)
{
    char *pem = slurp(pem_name);
    jwt_t *j = NULL;
    uint64_t now = gw_now_us() / 1000000;
    if (!pem || jwt_new(&j) || jwt_set_alg(j, alg, (unsigned char *)pem, (int)strlen(pem)) ||
        jwt_add_header(j, "kid", kid) || jwt_add_grant(j, "sub", "happy") ||
        jwt_add_grant(j, "iss", "gw-test") || jwt_add_grant(j, "aud", "gpuwarden") ||
        jwt_add_grant_int(j, "iat", (long)now) || jwt_add_grant_int(j, "exp", (long)now + 3600))
        abort();
    char *t = jwt_encode_str(j);
    jwt_free(j);
    free(pem);
    return t;
}

/* The key set written as the fixture's keys `which` ("rs", "es", "rs es")
 * plus `extra` (a JWK, may be NULL), atomically: a temporary file renamed
 * over the old one, as an operator (or a tool) should replace it. */
static void write_jwks(const char *which, json_t *extra)
{
    json_t *keys = json_array(), *v;
    size_t i;
    json_array_foreach (json_object_get(fixture, "keys"), i, v) {
        if (strstr(which, json_string_value(json_object_get(v, "kid"))))
            json_array_append(keys, v);
    }
    if (extra)
        json_array_append_new(keys, extra);
    json_t *root = json_pack("{s:o}", "keys", keys);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", JWKS);
    assert_int_equal(json_dump_file(root, tmp, JSON_INDENT(1)), 0);
    json_decref(root);
    assert_int_equal(rename(tmp, JWKS), 0);
}

static int group_setup(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof(path), "%s/tests/fixtures/keys/jwks.json", gw_source_dir());
    fixture = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    if (!fixture)
        return -1;
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-jwks-%d.sock", (int)getpid());
    char extra[256];
    snprintf(extra, sizeof(extra), "\"admin\": {\"socket\": \"%s\"},", SOCK);
    svc_write_config(&S, extra);
    snprintf(JWKS, sizeof(JWKS), "%s/jwks.json", S.dir);
    write_jwks("rs", NULL);
    /* auth.keys out, auth.jwks_file in: the key set alone */
    FILE *f = fopen(S.config, "r");
    static char t[16384], o[16384];
    size_t l = fread(t, 1, sizeof(t) - 1, f);
    fclose(f);
    t[l] = '\0';
    char *from = strstr(t, "\"keys\": ["), *to = from ? strstr(from, "}],") : NULL;
    if (!to)
        return -1;
    snprintf(o, sizeof(o), "%.*s\"jwks_file\": \"%s\",%s", (int)(from - t), t, JWKS, to + 3);
    f = fopen(S.config, "w");
    fputs(o, f);
    fclose(f);
    if (svc_start_or_dump(&S) != 0)
        return -1;
    started = 1;
    tok_a = sign(JWT_ALG_RS256, "rs256.key.pem", "rs");
    tok_b = sign(JWT_ALG_ES256, "es256.key.pem", "es");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(tok_a);
    free(tok_b);
    json_decref(fixture);
    if (started && svc_stop_or_dump(&S) != 0)
        return -1;
    return 0;
}

/* One GET /v1/models on the kept-alive connection fd: the status (0 when
 * the connection was closed), the body in body. Reads exactly one
 * response (Content-Length). */
static int keepalive_get(int fd, const char *token, char *body, size_t blen)
{
    char req[4096], buf[16384];
    int n = snprintf(req, sizeof(req),
                     "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     token);
    send_all(fd, req, (size_t)n);
    size_t len = 0;
    body[0] = '\0';
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, SVC_DEADLINE_MS) != 1)
            return 0;
        ssize_t got = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (got <= 0)
            return 0;
        len += (size_t)got;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "Content-Length:");
        if (end && cl && len >= (size_t)(end + 4 - buf) + (size_t)atol(cl + 15)) {
            int st = 0;
            sscanf(buf, "HTTP/1.1 %d", &st);
            snprintf(body, blen, "%s", end + 4);
            return st;
        }
    }
}

/* A request on its own connection: the status, the body in body. */
static int fresh_get(const char *token, char *body, size_t blen)
{
    struct resp r;
    assert_int_equal(svc_http(&S, "GET", "/v1/models", token, NULL, &r), 0);
    snprintf(body, blen, "%s", r.body);
    int st = r.status;
    resp_free(&r);
    return st;
}

/* SIGHUP to the master, then waits until both fronts said they reloaded
 * (their log lines), so that every front holds the new keys. */
static void sighup_and_wait(void)
{
    assert_int_equal(kill(S.master, SIGHUP), 0);
    reloads++;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS;; usleep(20000)) {
        char *log = svc_log_text(&S);
        int n0 = 0, n1 = 0;
        for (const char *p = log; (p = strstr(p, "[front 0]: reloaded")); p++)
            n0++;
        for (const char *p = log; (p = strstr(p, "[front 1]: reloaded")); p++)
            n1++;
        free(log);
        if (n0 >= reloads && n1 >= reloads)
            return;
        assert_true(svc_now_ms() < end);
    }
}

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

static void test_rotation_overlap_and_removal_keep_the_connection(void **state)
{
    (void)state;
    char body[8192];
    int ka = svc_connect(&S);
    assert_true(ka >= 0);
    /* the set holds A */
    assert_int_equal(keepalive_get(ka, tok_a, body, sizeof(body)), 200);
    assert_int_equal(fresh_get(tok_b, body, sizeof(body)), 401);
    assert_non_null(strstr(body, "\"message\":\"unknown key id\""));

    /* overlap: A and B, on the connection opened before the reload */
    write_jwks("rs es", NULL);
    sighup_and_wait();
    assert_int_equal(keepalive_get(ka, tok_b, body, sizeof(body)), 200);
    assert_int_equal(keepalive_get(ka, tok_a, body, sizeof(body)), 200);
    assert_int_equal(fresh_get(tok_b, body, sizeof(body)), 200);
    assert_int_equal(fresh_get(tok_a, body, sizeof(body)), 200);

    /* a bad set is refused by the reload and the running keys stay */
    json_t *priv =
        json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "kid", "c", "crv", "P-256", "d", "AAAA");
    write_jwks("rs es", priv);
    char out[4096], want[600];
    snprintf(want, sizeof(want),
             "config: auth.jwks_file: %s: keys[2] (kid \"c\"): \"d\" present: a private key; "
             "auth.jwks_file takes public keys only",
             JWKS);
    assert_int_equal(ctl(out, sizeof(out), "reload"), 1);
    assert_non_null(strstr(out, want));
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "%s/gpuwarden --check-config %s 2>&1", GW_BIN_DIR, S.config);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    assert_non_null(strstr(out, want));
    char *log = svc_log_text(&S);
    assert_non_null(strstr(log, want));
    assert_non_null(strstr(log, "reload refused; keeping the running config"));
    free(log);
    assert_int_equal(keepalive_get(ka, tok_a, body, sizeof(body)), 200);
    assert_int_equal(keepalive_get(ka, tok_b, body, sizeof(body)), 200);

    /* A removed: refused, B passes, the connection still serves */
    write_jwks("es", NULL);
    sighup_and_wait();
    assert_int_equal(keepalive_get(ka, tok_a, body, sizeof(body)), 401);
    assert_non_null(strstr(body, "\"message\":\"unknown key id\""));
    assert_int_equal(keepalive_get(ka, tok_b, body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"object\":\"list\""));
    assert_int_equal(fresh_get(tok_a, body, sizeof(body)), 401);
    assert_non_null(strstr(body, "\"message\":\"unknown key id\""));
    assert_int_equal(fresh_get(tok_b, body, sizeof(body)), 200);
    close(ka);
}

int main(void)
{
    svc_model_path(); /* exit 77 without the model */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotation_overlap_and_removal_keep_the_connection),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
