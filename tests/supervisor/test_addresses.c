/* test_addresses.c - who is calling, against a real master (SmolLM2 on the
 * CPU; exit 77 when models/ lacks it). Clients bind to different
 * 127.0.0.x source addresses; 127.0.0.2 is the one trusted proxy. The
 * per-address limits are "3 per hour moving" and "100 per day", so a
 * fourth request from one client is refused however slowly the test runs.
 * Built a second time with GW_SEED_LIMITS (test_addresses_seed): the
 * seed's limits "10 per minute, 50 per hour, 200 per day" as moving
 * windows, taken from dist/gpuwarden.seed-limits.json, admit exactly 10 of
 * 40 requests sent within a minute; and a third time with GW_SEED_RUN too
 * (test_addresses_seed_run, label "slow"): a client sending every half
 * second for 3 minutes gets exactly 10 in every 60 s window.
 *  - a trusted proxy's X-Forwarded-For / Forwarded gives each client its
 *    own bucket, IPv4-mapped IPv6 shares the IPv4 bucket;
 *  - an untrusted peer's headers are ignored (spoofing buys nothing);
 *  - a trusted proxy's malformed header is a 400 with the exact reason;
 *  - two IPv6 clients in one /64 share a bucket, another /64 does not
 *    (through the proxy header: the test needs no IPv6 loopback);
 *  - a CIDR ban (admin socket and gpuwardenctl) refuses the range with 403
 *    before any token work, and unban lifts it; an allow entry exempts a
 *    range from the per-address windows; bad ranges get exact errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <jansson.h>
#include <sys/un.h>

static struct svc S;
static int started;
static char SOCK[108];
static char *TOKEN;

#ifdef GW_SEED_LIMITS
/* svc_ip_json with the rate windows of the example config that ships the
 * seed's per-address limits, as they are written there. */
static int seed_ip_json(void)
{
    static char out[1024];
    char path[1024];
    snprintf(path, sizeof(path), "%s/dist/gpuwarden.seed-limits.json", gw_source_dir());
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    json_t *rate = json_object_get(json_object_get(root, "ip"), "rate");
    char *text = rate ? json_dumps(rate, JSON_COMPACT) : NULL;
    int rc = text && strlen(text) < sizeof(out) - 16 ? 0 : -1;
    if (rc == 0) {
        snprintf(out, sizeof(out), "{\"rate\": %s}", text);
        svc_ip_json = out;
    } else {
        fprintf(stderr, "%s: no ip.rate (%s)\n", path, je.text);
    }
    free(text);
    json_decref(root);
    return rc;
}
#endif

static int group_setup(void **state)
{
    (void)state;
    snprintf(SOCK, sizeof(SOCK), "/tmp/gw-addr-%d.sock", (int)getpid());
    char extra[256];
    snprintf(extra, sizeof(extra), "\"admin\": {\"socket\": \"%s\"},", SOCK);
#if defined(GW_IPV6)
    svc_ipv6 = 1;
    svc_ip_json = "{\"rate\": [\"3 per hour moving\"], \"ipv6_prefix\": 64}";
#elif defined(GW_FLOOD)
    svc_ip_json = "{\"rate\": [\"100 per minute moving\"],"
                  " \"overflow_rate\": [\"5 per minute moving\"]}";
#elif defined(GW_PROXY_LISTENER)
    svc_ip_json = "{\"rate\": [\"3 per hour moving\"], \"trusted_proxies\": [\"127.0.0.2\"],"
                  " \"proxy_protocol\": [\"127.0.0.1:PROXYPORT\"], \"connections_per_address\": 2}";
    svc_http_preamble = "PROXY UNKNOWN\r\n"; /* svc_start's /readyz polls */
#elif defined(GW_SEED_LIMITS)
    if (seed_ip_json() != 0)
        return -1;
#else
    svc_ip_json = "{\"rate\": [\"3 per hour moving\", \"100 per day\"],"
                  " \"trusted_proxies\": [\"127.0.0.2\"],"
                  " \"ipv6_prefix\": 64}";
#endif
    svc_write_config(&S, extra);
#ifdef GW_FLOOD
    { /* a 16-entry address table, so that a flood fills it */
        FILE *ff = fopen(S.config, "r");
        static char t[16384];
        size_t l = fread(t, 1, sizeof(t) - 1, ff);
        fclose(ff);
        t[l] = '\0';
        char *acc = strstr(t, "\"accounts\": 1024");
        if (!acc)
            return -1;
        memcpy(acc, "\"accounts\":   16", 16);
        ff = fopen(S.config, "w");
        fputs(t, ff);
        fclose(ff);
    }
#endif
#ifdef GW_PROXY_LISTENER
    /* the port is the kernel's choice, known once svc_write_config listened */
    FILE *cf = fopen(S.config, "r");
    static char text[16384], out[16400];
    size_t tl = fread(text, 1, sizeof(text) - 1, cf);
    fclose(cf);
    text[tl] = '\0';
    char *at = strstr(text, "PROXYPORT"), *fr = strstr(text, "\"fronts\": 2");
    if (!at || !fr || fr > at)
        return -1;
    fr[10] = '1'; /* one front: connections are counted per front, accepted in order */
    snprintf(out, sizeof(out), "%.*s%d%s", (int)(at - text), text, S.port, at + 9);
    cf = fopen(S.config, "w");
    fputs(out, cf);
    fclose(cf);
#endif
    if (svc_start_or_dump(&S) != 0)
        return -1;
    started = 1;
    TOKEN = svc_token(&S, "happy", 3600);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(TOKEN);
    if (started && svc_stop_or_dump(&S) != 0)
        return -1;
    return 0;
}

/* GET /v1/models from source address `src` with the extra header lines
 * `hdrs` ("" or lines ending in \r\n); the status, the body in body. */
static int get_from(const char *src, const char *hdrs, char *body, size_t blen)
{
    int fd = svc_connect_from(&S, src);
    char head[12288];
    int n = snprintf(head, sizeof(head),
                     "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Authorization: Bearer %s\r\n%s\r\n",
                     TOKEN, hdrs);
    send_all(fd, head, (size_t)n);
    struct resp r;
    int rc = svc_read(fd, &r, SVC_DEADLINE_MS);
    close(fd);
    assert_int_equal(rc, 0);
    snprintf(body, blen, "%s", r.body);
    int st = r.status;
    resp_free(&r);
    return st;
}

static int xff(const char *src, const char *value)
{
    char h[512], body[4096];
    snprintf(h, sizeof(h), "X-Forwarded-For: %s\r\n", value);
    return get_from(src, h, body, sizeof(body));
}

static char *raw(const char *line)
{
    return svc_admin_line(SOCK, line);
}

static void expect_line(const char *req, const char *want)
{
    char *r = raw(req);
    assert_non_null(r);
    assert_string_equal(r, want);
    free(r);
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

static void test_trusted_proxy_header_gives_each_client_its_bucket(void **state)
{
    (void)state;
    char body[4096];
    for (int i = 0; i < 3; i++)
        assert_int_equal(xff("127.0.0.2", "198.51.100.1"), 200);
    char h[128];
    snprintf(h, sizeof(h), "X-Forwarded-For: 198.51.100.1\r\n");
    assert_int_equal(get_from("127.0.0.2", h, body, sizeof(body)), 429);
    assert_non_null(strstr(body, "\"message\":\"too many requests from this address\""));
    /* another client behind the same proxy: its own bucket */
    assert_int_equal(xff("127.0.0.2", "198.51.100.2"), 200);
    /* a fake leftmost entry written by the client changes nothing */
    assert_int_equal(xff("127.0.0.2", "6.6.6.6, 198.51.100.1"), 429);
    /* IPv4-mapped IPv6 is the IPv4 client */
    assert_int_equal(xff("127.0.0.2", "::ffff:198.51.100.1"), 429);
    /* RFC 7239 Forwarded, also read from the trusted proxy */
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            get_from("127.0.0.2", "Forwarded: for=198.51.100.3;proto=http\r\n", body, sizeof(body)),
            200);
    assert_int_equal(
        get_from("127.0.0.2", "Forwarded: for=\"198.51.100.3:4711\"\r\n", body, sizeof(body)), 429);
    /* no header from the proxy: the proxy itself is the client */
    assert_int_equal(get_from("127.0.0.2", "", body, sizeof(body)), 200);
}

static void test_spoofed_headers_from_an_untrusted_peer_are_ignored(void **state)
{
    (void)state;
    char v[32];
    for (int i = 1; i <= 3; i++) {
        snprintf(v, sizeof(v), "203.0.113.%d", i);
        assert_int_equal(xff("127.0.0.3", v), 200);
    }
    /* a fresh forged address each time: still the peer's one bucket */
    assert_int_equal(xff("127.0.0.3", "203.0.113.4"), 429);
    assert_int_equal(xff("127.0.0.3", "198.51.100.200"), 429);
    /* a malformed header from an untrusted peer is not even read */
    assert_int_equal(xff("127.0.0.4", "not an address"), 200);
}

static void test_malformed_header_from_the_proxy_is_refused_exactly(void **state)
{
    (void)state;
    char body[4096];
    assert_int_equal(get_from("127.0.0.2", "X-Forwarded-For: 1.2.3\r\n", body, sizeof(body)), 400);
    assert_non_null(strstr(body, "\"message\":\"X-Forwarded-For: element 1 \\\"1.2.3\\\": not an "
                                 "IP address\""));
    assert_non_null(strstr(body, "\"code\":\"malformed_request\""));
    assert_int_equal(
        get_from("127.0.0.2", "Forwarded: for=1.2.3.4;for=5.6.7.8\r\n", body, sizeof(body)), 400);
    assert_non_null(strstr(body, "\"message\":\"Forwarded: element 1: \\\"for\\\" given twice\""));
    /* two lines of one header are one list: the rightmost untrusted wins */
    assert_int_equal(get_from("127.0.0.2",
                              "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.9\r\n", body,
                              sizeof(body)),
                     200);
    char big[2200 + 64];
    memcpy(big, "X-Forwarded-For: ", 17);
    memset(big + 17, '1', 2100);
    memcpy(big + 17 + 2100, "\r\n", 3);
    assert_int_equal(get_from("127.0.0.2", big, body, sizeof(body)), 400);
    assert_non_null(strstr(body, "\"message\":\"X-Forwarded-For: longer than 2048 bytes\""));
    /* a listener without ip.proxy_protocol takes no PROXY header: it is
     * not HTTP */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)S.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    const char *pp =
        "PROXY TCP4 198.51.100.1 192.0.2.1 5000 443\r\nGET /v1/models HTTP/1.1\r\n\r\n";
    send_all(fd, pp, strlen(pp));
    struct resp r;
    assert_int_equal(svc_read(fd, &r, SVC_DEADLINE_MS), 0);
    close(fd);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"message\":\"malformed HTTP request: "));
    resp_free(&r);
    /* the front is still there */
    assert_int_equal(xff("127.0.0.2", "198.51.100.10"), 200);
}

static json_t *ask(const char *line)
{
    char framed[1024];
    snprintf(framed, sizeof(framed), "%s\n", line);
    char *r = raw(framed);
    assert_non_null(r);
    json_t *j = json_loads(r, 0, NULL);
    if (!j)
        fprintf(stderr, "not JSON: %s\n", r);
    free(r);
    assert_non_null(j);
    return j;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_two_addresses_in_one_ipv6_64_share_a_bucket(void **state)
{
    (void)state;
    assert_int_equal(xff("127.0.0.2", "2001:db8:1:2::1"), 200);
    assert_int_equal(xff("127.0.0.2", "[2001:db8:1:2::2]:5000"), 200);
    assert_int_equal(xff("127.0.0.2", "2001:db8:1:2:ffff:ffff:ffff:9"), 200);
    assert_int_equal(xff("127.0.0.2", "2001:db8:1:2::77"), 429);
    /* the next /64 is another client */
    assert_int_equal(xff("127.0.0.2", "2001:db8:1:3::1"), 200);
    /* `ban ip` of one address bans its /64, as the fronts key it */
    json_t *b = ask("{\"cmd\":\"ban\",\"kind\":\"ip\",\"id\":\"2001:db8:1:3::abcd\",\"ttl_s\":60}");
    assert_true(json_is_true(json_object_get(b, "ok")));
    assert_string_equal(jstr(b, "id"), "2001:db8:1:3::/64");
    json_decref(b);
    assert_int_equal(xff("127.0.0.2", "2001:db8:1:3::2"), 403);
    expect_line("{\"cmd\":\"unban\",\"kind\":\"ip\",\"id\":\"2001:db8:1:3::1\"}\n",
                "{\"ok\":true,\"kind\":\"ip\",\"id\":\"2001:db8:1:3::/64\"}");
    assert_int_equal(xff("127.0.0.2", "2001:db8:1:3::2"), 200);
}

static void test_cidr_ban_and_unban(void **state)
{
    (void)state;
    char body[4096], out[4096];
    assert_int_equal(xff("127.0.0.2", "192.0.2.10"), 200);
    assert_int_equal(ctl(out, sizeof(out), "ban cidr 192.0.2.0/24 --ttl 10m"), 0);
    assert_int_equal(get_from("127.0.0.2", "X-Forwarded-For: 192.0.2.77\r\n", body, sizeof(body)),
                     403);
    assert_non_null(strstr(body, "\"message\":\"this address range is banned\""));
    assert_non_null(strstr(body, "\"code\":\"banned\""));
    assert_int_equal(xff("127.0.0.2", "192.0.3.1"), 200); /* outside the range */
    /* listed */
    json_t *l = ask("{\"cmd\":\"net.list\"}");
    json_t *rules = json_object_get(l, "rules");
    assert_int_equal(json_array_size(rules), 1);
    assert_string_equal(jstr(json_array_get(rules, 0), "kind"), "ban");
    assert_string_equal(jstr(json_array_get(rules, 0), "cidr"), "192.0.2.0/24");
    json_decref(l);
    assert_int_equal(ctl(out, sizeof(out), "net list"), 0);
    assert_non_null(strstr(out, "ban    192.0.2.0/24"));
    /* a banned peer, without any header */
    json_t *b = ask("{\"cmd\":\"ban\",\"kind\":\"cidr\",\"id\":\"127.0.0.5\",\"ttl_s\":60}");
    assert_string_equal(jstr(b, "id"), "127.0.0.5/32");
    json_decref(b);
    assert_int_equal(get_from("127.0.0.5", "", body, sizeof(body)), 403);
    assert_int_equal(get_from("127.0.0.6", "", body, sizeof(body)), 200);
    /* unban lifts exactly that range */
    expect_line("{\"cmd\":\"unban\",\"kind\":\"cidr\",\"id\":\"192.0.2.0/23\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"cidr 192.0.2.0/23 "
                "is not banned\"}}");
    assert_int_equal(ctl(out, sizeof(out), "unban cidr 192.0.2.0/24"), 0);
    assert_int_equal(xff("127.0.0.2", "192.0.2.77"), 200);
    expect_line("{\"cmd\":\"unban\",\"kind\":\"cidr\",\"id\":\"127.0.0.5/32\"}\n",
                "{\"ok\":true,\"kind\":\"cidr\",\"id\":\"127.0.0.5/32\"}");
    assert_int_equal(get_from("127.0.0.5", "", body, sizeof(body)), 200);
}

static void test_allow_entry_exempts_a_range_from_address_limits(void **state)
{
    (void)state;
    char body[4096];
    json_t *a = ask("{\"cmd\":\"allow\",\"id\":\"127.0.0.7/32\",\"ttl_s\":600}");
    assert_true(json_is_true(json_object_get(a, "ok")));
    json_decref(a);
    for (int i = 0; i < 6; i++)
        assert_int_equal(get_from("127.0.0.7", "", body, sizeof(body)), 200);
    expect_line("{\"cmd\":\"unallow\",\"id\":\"127.0.0.7/32\"}\n",
                "{\"ok\":true,\"kind\":\"cidr\",\"id\":\"127.0.0.7/32\"}");
    /* its own bucket was never touched: 3 more, then the limit */
    for (int i = 0; i < 3; i++)
        assert_int_equal(get_from("127.0.0.7", "", body, sizeof(body)), 200);
    assert_int_equal(get_from("127.0.0.7", "", body, sizeof(body)), 429);
}

/* A token revoked by its jti (gpuwardenctl token revoke) is refused with
 * 401 at every front from then on; other tokens are not. */
static void test_revoked_jti_is_refused(void **state)
{
    (void)state;
    char *tok = NULL, body[4096], out[4096], cmd[256];
    uint64_t now = gw_now_us() / 1000000;
    assert_int_equal(gw_auth_issue_jti(&S.key, "happy", "tok-revoke-1", "gw-test", "gpuwarden", now,
                                       now + 600, &tok),
                     0);
    char *keep = TOKEN;
    TOKEN = tok;
    assert_int_equal(get_from("127.0.0.20", "", body, sizeof(body)), 200);
    snprintf(cmd, sizeof(cmd), "token revoke --jti tok-revoke-1 --exp %llu",
             (unsigned long long)(now + 600));
    assert_int_equal(ctl(out, sizeof(out), cmd), 0);
    assert_int_equal(get_from("127.0.0.21", "", body, sizeof(body)), 401);
    assert_non_null(strstr(body, "\"message\":\"token revoked\""));
    assert_non_null(strstr(body, "\"code\":\"invalid_token\""));
    TOKEN = keep;
    free(tok);
    assert_int_equal(get_from("127.0.0.21", "", body, sizeof(body)), 200);
    /* bad input */
    expect_line("{\"cmd\":\"token.revoke\",\"exp\":1}\n",
                "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":"
                "\"\\\"jti\\\": missing (the token's jti, a string)\"}}");
    expect_line("{\"cmd\":\"token.revoke\",\"jti\":\"x\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":"
                "\"\\\"exp\\\": missing (the token's exp, Unix seconds)\"}}");
    expect_line("{\"cmd\":\"token.revoke\",\"jti\":7,\"exp\":1}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"jti\\\": expected a string of 1 to 255 bytes\"}}");
    char *r = raw("{\"cmd\":\"token.revoke\",\"jti\":\"x\",\"exp\":1}\n");
    assert_non_null(r);
    assert_non_null(strstr(r, "\"code\":\"bad_argument\",\"message\":\"\\\"exp\\\": expected "
                              "Unix seconds after now and within a year ("));
    free(r);
    assert_int_equal(ctl(out, sizeof(out), "token revoke --jti x"), 100);
    assert_non_null(strstr(out, "token revoke: expected --jti ID --exp UNIX_SECONDS"));
}

/* The config text with `from` replaced by `to` (once), written back. */
static void config_replace(const char *from, const char *to)
{
    FILE *f = fopen(S.config, "r");
    static char t[16384], o[16384 + 512];
    size_t l = fread(t, 1, sizeof(t) - 1, f);
    fclose(f);
    t[l] = '\0';
    char *at = strstr(t, from);
    assert_non_null(at);
    snprintf(o, sizeof(o), "%.*s%s%s", (int)(at - t), t, to, at + strlen(from));
    f = fopen(S.config, "w");
    fputs(o, f);
    fclose(f);
}

/* Reloads through the admin socket and waits until both fronts said they
 * reloaded (their log lines), so that every front holds the new keys. */
static void reload_and_wait(int *seen)
{
    char *r = raw("{\"cmd\":\"reload\"}\n");
    assert_non_null(r);
    assert_non_null(strstr(r, "\"ok\":true"));
    free(r);
    *seen += 1;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS;; usleep(20000)) {
        char *log = svc_log_text(&S);
        int n0 = 0, n1 = 0;
        for (const char *p = log; (p = strstr(p, "[front 0]: reloaded")); p++)
            n0++;
        for (const char *p = log; (p = strstr(p, "[front 1]: reloaded")); p++)
            n1++;
        free(log);
        if (n0 >= *seen && n1 >= *seen)
            return;
        assert_true(svc_now_ms() < end);
    }
}

/* One request on a kept-alive connection: the status, or 0 when the
 * connection was closed. Reads exactly one response (Content-Length). */
static int keepalive_get(int fd, const char *token)
{
    char req[4096], buf[16384];
    int n = snprintf(req, sizeof(req),
                     "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     token);
    send_all(fd, req, (size_t)n);
    size_t len = 0;
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
            return st;
        }
    }
}

/* Key rotation by kid: a new key added by a reload is taken beside the
 * old one (both tokens pass), then the old one removed by another reload
 * is refused ("unknown key id") while the new one passes; a kept-alive
 * connection opened before the first reload serves across both. */
static void test_key_rotation_by_kid(void **state)
{
    (void)state;
    char path[300], body[4096];
    snprintf(path, sizeof(path), "%s/new.key", S.dir);
    static const char secret[] = "rotated-secret-0123456789abcdef-0123456789";
    FILE *f = fopen(path, "w");
    fputs(secret, f);
    fclose(f);
    struct gw_key nk = {.kid = "new", .alg = GW_ALG_HS256};
    nk.key = (unsigned char *)secret;
    nk.key_len = strlen(secret);
    uint64_t now = gw_now_us() / 1000000;
    char *newtok = NULL;
    assert_int_equal(
        gw_auth_issue(&nk, "happy", NULL, "gw-test", "gpuwarden", now, now + 600, &newtok), 0);
    /* an allow entry: this test's many requests from one address are not
     * what it is about */
    char *r = raw("{\"cmd\":\"allow\",\"id\":\"127.0.0.30/32\",\"ttl_s\":600}\n");
    assert_non_null(r);
    free(r);
    int ka = svc_connect_from(&S, "127.0.0.30"), reloads = 0;
    assert_int_equal(keepalive_get(ka, TOKEN), 200);
    assert_int_equal(get_from("127.0.0.30", "", body, sizeof(body)), 200); /* TOKEN, old key */
    char *keep = TOKEN;
    TOKEN = newtok;
    assert_int_equal(get_from("127.0.0.30", "", body, sizeof(body)), 401);
    assert_non_null(strstr(body, "\"message\":\"unknown key id\""));

    /* add the new key in front of the old one: keys [new, test] */
    char both[512], needle[64];
    snprintf(needle, sizeof(needle), "{\"kid\": \"test\"");
    snprintf(both, sizeof(both),
             "{\"kid\": \"new\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}, %s", path, needle);
    config_replace(needle, both);
    reload_and_wait(&reloads);
    assert_int_equal(get_from("127.0.0.30", "", body, sizeof(body)), 200); /* new key */
    TOKEN = keep;
    assert_int_equal(get_from("127.0.0.30", "", body, sizeof(body)), 200); /* old key, overlap */
    assert_int_equal(keepalive_get(ka, newtok), 200);

    /* remove the old key: "{new}, {test}" becomes "{new}" */
    FILE *cf = fopen(S.config, "r");
    static char t[16384];
    size_t l = fread(t, 1, sizeof(t) - 1, cf);
    fclose(cf);
    t[l] = '\0';
    char *o = strstr(t, needle), *close_ = o ? strchr(o, '}') : NULL;
    assert_non_null(close_);
    char old_obj[512];
    snprintf(old_obj, sizeof(old_obj), ", %.*s", (int)(close_ + 1 - o), o);
    config_replace(old_obj, "");
    reload_and_wait(&reloads);
    assert_int_equal(get_from("127.0.0.30", "", body, sizeof(body)), 401);
    assert_non_null(strstr(body, "\"message\":\"unknown key id\""));
    TOKEN = newtok;
    assert_int_equal(get_from("127.0.0.30", "", body, sizeof(body)), 200);
    TOKEN = keep;
    /* the connection opened before both reloads still serves */
    assert_int_equal(keepalive_get(ka, newtok), 200);
    assert_int_equal(keepalive_get(ka, keep), 401);
    close(ka);
    free(newtok);
}

static void test_bad_ranges_get_exact_errors(void **state)
{
    (void)state;
    char out[4096];
    expect_line("{\"cmd\":\"ban\",\"kind\":\"cidr\",\"id\":\"10.0.0.1/8\",\"ttl_s\":60}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":\"\\\"id\\\": "
                "\\\"10.0.0.1/8\\\": host bits set after /8 (did you mean 10.0.0.0/8?)\"}}");
    expect_line("{\"cmd\":\"ban\",\"kind\":\"cidr\",\"id\":\"10.0.0.0/33\",\"ttl_s\":60}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":\"\\\"id\\\": "
                "\\\"10.0.0.0/33\\\": prefix length 33: expected 0..32 for IPv4\"}}");
    expect_line("{\"cmd\":\"allow\",\"id\":\"example.com\",\"ttl_s\":60}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":\"\\\"id\\\": "
                "\\\"example.com\\\": expected an IPv4 or IPv6 address, optionally /BITS\"}}");
    expect_line("{\"cmd\":\"allow\",\"id\":\"10.0.0.0/8\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":"
                "\"\\\"ttl_s\\\": missing (an integer)\"}}");
    expect_line("{\"cmd\":\"allow\",\"id\":\"10.0.0.0/8\",\"ttl_s\":0}\n",
                "{\"ok\":false,\"error\":{\"code\":\"bad_argument\",\"message\":"
                "\"\\\"ttl_s\\\": expected an integer in [1, 31622400]\"}}");
    expect_line("{\"cmd\":\"unallow\"}\n",
                "{\"ok\":false,\"error\":{\"code\":\"missing_argument\",\"message\":"
                "\"\\\"id\\\": missing (a CIDR range such as 10.0.0.0/8)\"}}");
    assert_int_equal(ctl(out, sizeof(out), "ban cidr 10.0.0.1/8 --ttl 1m"), 100);
    assert_non_null(strstr(out, "host bits set after /8 (did you mean 10.0.0.0/8?)"));
    assert_int_equal(ctl(out, sizeof(out), "allow 10.0.0.0/8"), 100);
    assert_non_null(strstr(out, "allow: expected RANGE --ttl DURATION"));
    /* nothing was added */
    json_t *l = ask("{\"cmd\":\"net.list\"}");
    assert_int_equal(json_array_size(json_object_get(l, "rules")), 0);
    json_decref(l);
}

#if defined(GW_SEED_LIMITS) && !defined(GW_SEED_RUN)
/* 40 requests from one address as fast as they go: exactly 10 pass. The
 * claim is about one minute, so a machine too slow to send 40 requests in
 * 50 s skips rather than pass or fail on its speed. */
static void test_seed_limits_admit_exactly_10_of_40_in_a_minute(void **state)
{
    (void)state;
    char body[4096];
    int ok = 0, refused = 0;
    uint64_t t0 = svc_now_ms();
    for (int i = 0; i < 40; i++) {
        int st = get_from("127.0.0.9", "", body, sizeof(body));
        ok += st == 200;
        refused += st == 429;
    }
    if (svc_now_ms() - t0 > 50000)
        skip();
    assert_int_equal(ok, 10);
    assert_int_equal(refused, 30);
    assert_non_null(strstr(svc_ip_json, "\"10 per minute moving\""));
}
#endif

#ifdef GW_SEED_RUN
#define RUN_MS 180000 /* 3 minutes */
#define GAP_MS 500    /* between one answer and the next request */
#define WIN_US 60000000ull

struct sent {
    uint64_t send_us, recv_us; /* wall clock, as the node's (CLOCK_REALTIME) */
    int ok;
};

/* One address sends a request every half second for 3 minutes; every
 * answer is 200 or 429. The node stamps each request with its wall clock
 * in whole ms, somewhere between our send and receive times, so the rule
 * is checked on those bounds (never on how fast anything ran):
 *  (A) at most 10 in any 60 s window: the admission 10 after another is at
 *      least 60 s after it (recv[i+10] - send[i] > 60 s - 1 ms);
 *  (B) none refused without cause: a refused request came less than 60 s
 *      after the 10th admission before it (send - recv[that] < 60 s + 1 ms);
 *  (C) so a client sending continuously holds exactly 10 in every window:
 *      every 60 s window inside the run holds at most 10 (A), and at least
 *      10 counting those sent in it or just before it, by the lag the send
 *      cadence allows (an admission waits for the next send after its place
 *      frees: at most one send interval, plus, when places free faster
 *      than sends come, the interval's variation for each of the 10). */
static void test_seed_limits_admit_exactly_10_in_every_minute_of_3(void **state)
{
    (void)state;
    static struct sent r[RUN_MS / GAP_MS + 8];
    char body[4096];
    int n = 0, ok = 0;
    uint64_t t0 = gw_now_us(), gap = 0, gmin = UINT64_MAX, rtt = 0;
    while (gw_now_us() - t0 < RUN_MS * 1000ull && n < (int)(sizeof(r) / sizeof(r[0]))) {
        r[n].send_us = gw_now_us();
        int st = get_from("127.0.0.10", "", body, sizeof(body));
        r[n].recv_us = gw_now_us();
        if (st != 200 && st != 429)
            fail_msg("request %d: status %d: %s", n, st, body);
        r[n].ok = st == 200;
        ok += r[n].ok;
        if (n > 0 && r[n].send_us - r[n - 1].send_us > gap)
            gap = r[n].send_us - r[n - 1].send_us;
        if (n > 0 && r[n].send_us - r[n - 1].send_us < gmin)
            gmin = r[n].send_us - r[n - 1].send_us;
        if (r[n].recv_us - r[n].send_us > rtt)
            rtt = r[n].recv_us - r[n].send_us;
        n++;
        usleep(GAP_MS * 1000);
    }
    uint64_t end = r[n - 1].send_us;
    print_message("%d requests in %.1f s, %d admitted; sends %.3f..%.3f s apart, answers within "
                  "%.3f s\n",
                  n, (double)(end - t0) / 1e6, ok, (double)gmin / 1e6, (double)gap / 1e6,
                  (double)rtt / 1e6);
    /* the claim is about a client sending every half second or so: a
     * machine that could not keep a 2 s pace skips rather than pass or
     * fail on its speed */
    if (gap > 2000000)
        skip();
    int adm[sizeof(r) / sizeof(r[0])], na = 0;
    for (int i = 0; i < n; i++)
        if (r[i].ok)
            adm[na++] = i;
    /* 10 at once, then 10 a minute: 30 in 3 minutes (the fourth ten starts
     * at 180 s: 31 only if the last request reached the node that late) */
    if (ok != 30 && ok != 31)
        fail_msg("%d admitted of %d in %.1f s", ok, n, (double)(end - t0) / 1e6);
    for (int i = 0; i + 10 < na; i++) /* (A) */
        if (r[adm[i + 10]].recv_us - r[adm[i]].send_us <= WIN_US - 1000)
            fail_msg("admissions %d and %d are less than 60 s apart", adm[i], adm[i + 10]);
    for (int i = 0, seen = 0; i < n; i++) { /* (B) */
        if (r[i].ok) {
            seen++;
            continue;
        }
        if (seen < 10)
            fail_msg("request %d refused after %d admissions", i, seen);
        if (r[i].send_us - r[adm[seen - 10]].recv_us >= WIN_US + 1000)
            fail_msg("request %d refused with fewer than 10 in the last minute", i);
    }
    /* (C) every window [x, x + 60 s) inside the run, every 100 ms */
    uint64_t slack = gap + 10 * (gap - gmin) + 2 * rtt + 2000;
    for (uint64_t x = t0; x + WIN_US <= end; x += 100000) {
        int in = 0;
        for (int i = 0; i < na; i++)
            in += r[adm[i]].send_us + slack >= x && r[adm[i]].send_us < x + WIN_US + 1000;
        if (in < 10)
            fail_msg("the window at +%.1f s holds %d", (double)(x - t0) / 1e6, in);
    }
}
#endif

#ifdef GW_PROXY_LISTENER
/* Sends `pre` (a PROXY header, `plen` bytes) then GET /v1/models from src. */
static int proxied(const char *src, const void *pre, size_t plen, char *body, size_t blen)
{
    int fd = svc_connect_from(&S, src);
    char req[12288];
    memcpy(req, pre, plen);
    int n = snprintf(req + plen, sizeof(req) - plen,
                     "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     TOKEN);
    send_all(fd, req, plen + (size_t)n);
    struct resp r;
    int rc = svc_read(fd, &r, SVC_DEADLINE_MS);
    close(fd);
    assert_int_equal(rc, 0);
    snprintf(body, blen, "%s", r.body);
    int st = r.status;
    resp_free(&r);
    return st;
}

static size_t v2_header(uint8_t *out, int cmd, size_t len, const char *src4)
{
    static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    memcpy(out, sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = 0x11; /* AF_INET, STREAM */
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    memset(out + 16, 0, 12);
    inet_pton(AF_INET, src4, out + 16);
    inet_pton(AF_INET, "192.0.2.1", out + 20);
    out[24] = 0xdc, out[25] = 0x04, out[26] = 0x01, out[27] = 0xbb;
    return 28;
}

/* A request on an open connection: its status (0 when the connection was
 * closed without an answer). */
static int ask_on(int fd, const char *client)
{
    char req[12288], pre[128] = "PROXY UNKNOWN\r\n";
    if (client)
        snprintf(pre, sizeof(pre), "PROXY TCP4 %s 192.0.2.1 5000 443\r\n", client);
    int n = snprintf(req, sizeof(req),
                     "%sGET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\nAuthorization: Bearer %s\r\n\r\n",
                     pre, TOKEN);
    send(fd, req, (size_t)n, MSG_NOSIGNAL);
    struct resp r;
    int st = svc_read(fd, &r, SVC_DEADLINE_MS) == 0 ? r.status : 0;
    if (st)
        resp_free(&r);
    close(fd);
    return st;
}

/* ip.connections_per_address 2, one front: the third open connection from
 * one address is closed at once, unanswered; a closed one frees its place;
 * a trusted proxy is not counted. */
static void test_connections_per_address_are_capped(void **state)
{
    (void)state;
    int a = svc_connect_from(&S, "127.0.0.3"), b = svc_connect_from(&S, "127.0.0.3");
    int third = svc_connect_from(&S, "127.0.0.3");
    char c;
    struct pollfd p = {.fd = third, .events = POLLIN};
    assert_int_equal(poll(&p, 1, SVC_DEADLINE_MS), 1);
    assert_int_equal(recv(third, &c, 1, 0), 0); /* closed, not a byte */
    close(third);
    assert_int_equal(ask_on(a, NULL), 200); /* the first two were kept */
    /* a's place is free once its answer is out: the front closed it */
    assert_int_equal(ask_on(svc_connect_from(&S, "127.0.0.3"), NULL), 200);
    assert_int_equal(ask_on(b, NULL), 200);
    /* the trusted proxy is not counted (its clients come by PROXY header) */
    int px[3] = {svc_connect_from(&S, "127.0.0.2"), svc_connect_from(&S, "127.0.0.2"),
                 svc_connect_from(&S, "127.0.0.2")};
    assert_int_equal(ask_on(svc_connect_from(&S, "127.0.0.2"), "198.51.100.50"), 200);
    static const char *const who[3] = {"198.51.100.51", "198.51.100.52", "198.51.100.53"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(ask_on(px[i], who[i]), 200);
}

static void test_proxy_v1_names_the_client(void **state)
{
    (void)state;
    char body[4096];
    const char *h = "PROXY TCP4 198.51.100.1 192.0.2.1 5000 443\r\n";
    for (int i = 0; i < 3; i++)
        assert_int_equal(proxied("127.0.0.2", h, strlen(h), body, sizeof(body)), 200);
    assert_int_equal(proxied("127.0.0.2", h, strlen(h), body, sizeof(body)), 429);
    assert_non_null(strstr(body, "\"message\":\"too many requests from this address\""));
    const char *other = "PROXY TCP4 198.51.100.2 192.0.2.1 5000 443\r\n";
    assert_int_equal(proxied("127.0.0.2", other, strlen(other), body, sizeof(body)), 200);
    const char *unknown = "PROXY UNKNOWN\r\n"; /* the proxy itself stands */
    assert_int_equal(proxied("127.0.0.2", unknown, strlen(unknown), body, sizeof(body)), 200);
}

static void test_proxy_v2_names_the_client(void **state)
{
    (void)state;
    char body[4096];
    uint8_t h[64];
    size_t n = v2_header(h, 1, 12, "198.51.100.20");
    for (int i = 0; i < 3; i++)
        assert_int_equal(proxied("127.0.0.2", h, n, body, sizeof(body)), 200);
    assert_int_equal(proxied("127.0.0.2", h, n, body, sizeof(body)), 429);
    n = v2_header(h, 1, 12, "198.51.100.21");
    assert_int_equal(proxied("127.0.0.2", h, n, body, sizeof(body)), 200);
    /* the same client through v1 shares its bucket */
    const char *v1 = "PROXY TCP4 198.51.100.20 192.0.2.1 5000 443\r\n";
    assert_int_equal(proxied("127.0.0.2", v1, strlen(v1), body, sizeof(body)), 429);
}

static void test_proxy_headers_that_lie_are_refused_exactly(void **state)
{
    (void)state;
    char body[4096];
    uint8_t h[64];
    size_t n = v2_header(h, 1, 8, "198.51.100.30");
    assert_int_equal(proxied("127.0.0.2", h, n, body, sizeof(body)), 400);
    assert_non_null(strstr(body, "\"message\":\"PROXY v2: length 8 is shorter than the 12-byte "
                                 "IPv4 address block\""));
    n = v2_header(h, 1, 4000, "198.51.100.30");
    assert_int_equal(proxied("127.0.0.2", h, n, body, sizeof(body)), 400);
    assert_non_null(strstr(
        body, "\"message\":\"PROXY v2: length 4000 is longer than the 1024 bytes accepted\""));
    const char *bad = "PROXY TCP4 198.51.100.300 192.0.2.1 5000 443\r\n";
    assert_int_equal(proxied("127.0.0.2", bad, strlen(bad), body, sizeof(body)), 400);
    assert_non_null(
        strstr(body, "\"message\":\"PROXY v1: \\\"198.51.100.300\\\" is not an IPv4 address\""));
    /* no header at all on a PROXY listener */
    assert_int_equal(proxied("127.0.0.2", "", 0, body, sizeof(body)), 400);
    assert_non_null(strstr(body, "\"message\":\"not a PROXY protocol header\""));
    /* a header from a peer that is no trusted proxy */
    const char *h1 = "PROXY TCP4 198.51.100.40 192.0.2.1 5000 443\r\n";
    assert_int_equal(proxied("127.0.0.3", h1, strlen(h1), body, sizeof(body)), 400);
    assert_non_null(strstr(body, "\"message\":\"PROXY header from 127.0.0.3, which is not in "
                                 "ip.trusted_proxies\""));
    /* the front still serves */
    n = v2_header(h, 1, 12, "198.51.100.31");
    assert_int_equal(proxied("127.0.0.2", h, n, body, sizeof(body)), 200);
}
#endif

#ifdef GW_FLOOD
/* 600 requests from 600 fresh addresses (127.1.0.1 .. 127.1.2.200, three
 * /24s) with 4 known clients' requests among them: the table (16 entries)
 * fills with the first flooders, the rest share their /24s' overflow
 * buckets (5 per minute each), and every known client's request passes. */
static void test_rotating_flood_leaves_known_clients_served(void **state)
{
    (void)state;
    char body[4096], src[32];
    static const char *const known[4] = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
    for (int k = 0; k < 4; k++)
        assert_int_equal(get_from(known[k], "", body, sizeof(body)), 200);
    int flood_ok = 0, flood_429 = 0, known_ok = 0, known_n = 0, range_msg = 0;
    for (int i = 0; i < 600; i++) {
        snprintf(src, sizeof(src), "127.1.%d.%d", i / 200, i % 200 + 1);
        int st = get_from(src, "", body, sizeof(body));
        flood_ok += st == 200;
        flood_429 += st == 429;
        range_msg += st == 429 && strstr(body, "\"message\":\"too many requests from this "
                                               "address range\"") != NULL;
        if (i % 10 == 0) {
            known_n++;
            known_ok += get_from(known[(i / 10) % 4], "", body, sizeof(body)) == 200;
        }
    }
    assert_int_equal(known_n, 60);
    assert_int_equal(known_ok, 60); /* 100% (the issue asks >= 99.9%) */
    /* exactly: the table's 12 free entries (16, less the 4 known clients;
     * /v1/models opens no tenant or node account), then 5 per overflow
     * bucket, the three /24s' buckets as this segment hashes them */
    char path[300], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", S.dir);
    struct gw_segment seg;
    assert_int_equal(gw_segment_attach(&seg, path, err, sizeof(err)), 0);
    uint32_t b[3];
    for (int n = 0; n < 3; n++) {
        snprintf(src, sizeof(src), "127.1.%d.1", n);
        struct gw_addr x;
        assert_int_equal(gw_addr_parse(src, strlen(src), &x), 0);
        b[n] = gw_overflow_acct(&seg, &x).index;
    }
    gw_segment_close(&seg);
    int buckets = 1 + (b[1] != b[0]) + (b[2] != b[0] && b[2] != b[1]);
    assert_int_equal(flood_ok, 12 + 5 * buckets);
    assert_int_equal(flood_ok + flood_429, 600);
    assert_int_equal(range_msg, flood_429);
}
#endif

#ifdef GW_IPV6
/* A real IPv6 client (::1, the one IPv6 loopback address here): keyed by
 * its /64, "::/64", which `ban ip ::1` names too; limited per that key. */
static void test_ipv6_peer_is_keyed_by_its_64(void **state)
{
    (void)state;
    struct resp r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(svc_http(&S, "GET", "/v1/models", TOKEN, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        resp_free(&r);
    }
    assert_int_equal(svc_http(&S, "GET", "/v1/models", TOKEN, NULL, &r), 0);
    assert_int_equal(r.status, 429);
    resp_free(&r);
    json_t *b = ask("{\"cmd\":\"ban\",\"kind\":\"ip\",\"id\":\"::1\",\"ttl_s\":60}");
    assert_string_equal(jstr(b, "id"), "::/64");
    json_decref(b);
    assert_int_equal(svc_http(&S, "GET", "/v1/models", TOKEN, NULL, &r), 0);
    assert_int_equal(r.status, 403); /* the front keys ::1 as ::/64 too */
    assert_non_null(strstr(r.body, "\"message\":\"this address is banned\""));
    resp_free(&r);
    expect_line("{\"cmd\":\"unban\",\"kind\":\"ip\",\"id\":\"::1\"}\n",
                "{\"ok\":true,\"kind\":\"ip\",\"id\":\"::/64\"}");
}
#endif

int main(void)
{
    gw_need_model();
#ifdef GW_IPV6
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 lo = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    if (probe < 0 || bind(probe, (struct sockaddr *)&lo, sizeof(lo)) != 0) {
        fprintf(stderr, "skipped: no IPv6 loopback here\n");
        return 77;
    }
    close(probe);
    const struct CMUnitTest six[] = {
        cmocka_unit_test(test_ipv6_peer_is_keyed_by_its_64),
    };
    return cmocka_run_group_tests(six, group_setup, group_teardown);
#endif
#ifdef GW_FLOOD
    const struct CMUnitTest flood[] = {
        cmocka_unit_test(test_rotating_flood_leaves_known_clients_served),
    };
    return cmocka_run_group_tests(flood, group_setup, group_teardown);
#endif
#ifdef GW_PROXY_LISTENER
    const struct CMUnitTest proxy_tests[] = {
        cmocka_unit_test(test_proxy_v1_names_the_client),
        cmocka_unit_test(test_proxy_v2_names_the_client),
        cmocka_unit_test(test_proxy_headers_that_lie_are_refused_exactly),
        cmocka_unit_test(test_connections_per_address_are_capped),
    };
    return cmocka_run_group_tests(proxy_tests, group_setup, group_teardown);
#endif
#ifdef GW_SEED_RUN
    const struct CMUnitTest run[] = {
        cmocka_unit_test(test_seed_limits_admit_exactly_10_in_every_minute_of_3),
    };
    return cmocka_run_group_tests(run, group_setup, group_teardown);
#endif
#if defined(GW_SEED_LIMITS) && !defined(GW_SEED_RUN)
    const struct CMUnitTest seed[] = {
        cmocka_unit_test(test_seed_limits_admit_exactly_10_of_40_in_a_minute),
    };
    return cmocka_run_group_tests(seed, group_setup, group_teardown);
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trusted_proxy_header_gives_each_client_its_bucket),
        cmocka_unit_test(test_spoofed_headers_from_an_untrusted_peer_are_ignored),
        cmocka_unit_test(test_malformed_header_from_the_proxy_is_refused_exactly),
        cmocka_unit_test(test_two_addresses_in_one_ipv6_64_share_a_bucket),
        cmocka_unit_test(test_cidr_ban_and_unban),
        cmocka_unit_test(test_allow_entry_exempts_a_range_from_address_limits),
        cmocka_unit_test(test_bad_ranges_get_exact_errors),
        cmocka_unit_test(test_revoked_jti_is_refused),
        cmocka_unit_test(test_key_rotation_by_kid),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
