/* test_auth.c - JWT verification: every known attack is refused with its
 * own words, valid HS256, RS256 and ES256 tokens pass, and the cache of
 * verified tokens hits, expires and stays bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_supervisor.h"

#include <errno.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1800000000ull /* seconds; tokens below are made around it */
#define HS_SECRET "test-secret-0123456789abcdef-0123456789abcdef"

static struct gw_config *cfg;
static char *rs_pub, *rs_priv, *es_pub, *es_priv, *es_interop, *rs_interop;

static char *slurp(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/keys/%s", GW_FIXTURES, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: cannot open", path);
    char *buf = calloc(1, 16384);
    size_t n = fread(buf, 1, 16383, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static void set_key(struct gw_key *k, const char *kid, enum gw_alg alg, const char *bytes)
{
    snprintf(k->kid, sizeof(k->kid), "%s", kid);
    k->alg = alg;
    k->key_len = strlen(bytes);
    k->key = (unsigned char *)strdup(bytes);
}

static int setup(void **state)
{
    (void)state;
    rs_pub = slurp("rs256.pub.pem");
    rs_priv = slurp("rs256.key.pem");
    es_pub = slurp("es256.pub.pem");
    es_priv = slurp("es256.key.pem");
    es_interop = slurp("es256.interop.jwt");
    rs_interop = slurp("rs256.interop.jwt");
    es_interop[strcspn(es_interop, "\n")] = 0;
    rs_interop[strcspn(rs_interop, "\n")] = 0;
    cfg = calloc(1, sizeof(*cfg));
    set_key(&cfg->keys[0], "hs", GW_ALG_HS256, HS_SECRET);
    set_key(&cfg->keys[1], "rs", GW_ALG_RS256, rs_pub);
    set_key(&cfg->keys[2], "es", GW_ALG_ES256, es_pub);
    cfg->n_keys = 3;
    snprintf(cfg->issuer, sizeof(cfg->issuer), "gpuwarden-test");
    snprintf(cfg->audience, sizeof(cfg->audience), "gpuwarden");
    cfg->leeway_s = 30;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < cfg->n_keys; i++)
        free(cfg->keys[i].key);
    free(cfg);
    free(rs_pub);
    free(rs_priv);
    free(es_pub);
    free(es_priv);
    free(es_interop);
    free(rs_interop);
    return 0;
}

/* ----------------------------------------------------------- token makers */

/* Signs `claims` (a JSON object) with libjwt: alg, key bytes, header kid
 * (NULL: none). Returns "Bearer <token>", malloc'd. */
static char *sign(jwt_alg_t alg, const char *key, size_t keylen, const char *kid,
                  const char *claims)
{
    jwt_t *j = NULL;
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(jwt_set_alg(j, alg, (const unsigned char *)key, (int)keylen), 0);
    if (kid)
        assert_int_equal(jwt_add_header(j, "kid", kid), 0);
    assert_int_equal(jwt_add_grants_json(j, claims), 0);
    char *tok = jwt_encode_str(j);
    assert_non_null(tok);
    jwt_free(j);
    char *out = malloc(strlen(tok) + 8);
    sprintf(out, "Bearer %s", tok);
    free(tok);
    return out;
}

static char *hs(const char *claims)
{
    return sign(JWT_ALG_HS256, HS_SECRET, strlen(HS_SECRET), "hs", claims);
}

/* Good claims with one change: `extra` is spliced in (later keys replace
 * earlier ones in libjwt's add), or names to drop. */
static char *claims_with(const char *sub, const char *extra_json, long exp_delta, int with_exp)
{
    static char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "{\"iss\":\"gpuwarden-test\",\"aud\":\"gpuwarden\",\"iat\":%llu", NOW - 10);
    if (with_exp)
        n +=
            snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"exp\":%lld", (long long)NOW + exp_delta);
    if (sub)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"sub\":\"%s\"", sub);
    if (extra_json)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",%s", extra_json);
    snprintf(buf + n, sizeof(buf) - (size_t)n, "}");
    return buf;
}

static const char *good_claims(void)
{
    return claims_with("acme", "\"plan\":\"pro\"", 3600, 1);
}

static char *b64url(const char *s)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s);
    char *out = malloc(n * 4 / 3 + 4);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tbl[v & 63];
    }
    out[o] = 0;
    return out;
}

/* "Bearer " + b64url(header) + "." + b64url(payload) + "." + sig */
static char *handmade(const char *header, const char *payload, const char *sig)
{
    char *h = b64url(header), *p = b64url(payload);
    char *out = malloc(strlen(h) + strlen(p) + strlen(sig) + 16);
    sprintf(out, "Bearer %s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return out;
}

/* --------------------------------------------------------------- checking */

static struct gw_auth *auth(void)
{
    struct gw_auth *a = NULL;
    assert_int_equal(gw_auth_new(&a, cfg, 0), 0);
    return a;
}

static void expect_refused_at(struct gw_auth *a, const char *authz, uint64_t now, const char *want)
{
    struct gw_principal who;
    memset(&who, 0x5a, sizeof(who));
    char why[128];
    int rc = gw_auth_check(a, authz, strlen(authz), now, &who, why, sizeof(why));
    if (rc != -EACCES || strcmp(why, want) != 0)
        print_error("token %.200s\n", authz);
    assert_int_equal(rc, -EACCES);
    assert_string_equal(why, want);
}

static void expect_refused(const char *authz, const char *want)
{
    struct gw_auth *a = auth();
    expect_refused_at(a, authz, NOW, want);
    gw_auth_free(a);
}

static struct gw_principal expect_ok_at(struct gw_auth *a, const char *authz, uint64_t now)
{
    struct gw_principal who;
    memset(&who, 0, sizeof(who));
    char why[128] = "untouched";
    int rc = gw_auth_check(a, authz, strlen(authz), now, &who, why, sizeof(why));
    if (rc != 0)
        print_error("refused: %s\n", why);
    assert_int_equal(rc, 0);
    assert_string_equal(why, "");
    return who;
}

static struct gw_principal expect_ok(const char *authz)
{
    struct gw_auth *a = auth();
    struct gw_principal who = expect_ok_at(a, authz, NOW);
    gw_auth_free(a);
    return who;
}

/* ------------------------------------------------------------------ tests */

static void test_valid_hs256_token_gives_tenant_plan_kid_exp(void **state)
{
    (void)state;
    char *t = hs(good_claims());
    struct gw_principal who = expect_ok(t);
    assert_string_equal(who.tenant, "acme");
    assert_string_equal(who.plan, "pro");
    assert_string_equal(who.kid, "hs");
    assert_int_equal(who.exp, NOW + 3600);
    free(t);
    /* the scheme is case-insensitive, and the plan claim optional */
    t = hs(claims_with("acme", NULL, 3600, 1));
    t[0] = 'b';
    who = expect_ok(t);
    assert_string_equal(who.plan, "");
    free(t);
}

static void test_valid_rs256_and_es256_tokens_pass(void **state)
{
    (void)state;
    char *t = sign(JWT_ALG_RS256, rs_priv, strlen(rs_priv), "rs", good_claims());
    struct gw_principal who = expect_ok(t);
    assert_string_equal(who.kid, "rs");
    assert_string_equal(who.tenant, "acme");
    free(t);
    t = sign(JWT_ALG_ES256, es_priv, strlen(es_priv), "es", good_claims());
    who = expect_ok(t);
    assert_string_equal(who.kid, "es");
    free(t);
}

static void test_tokens_signed_outside_libjwt_pass(void **state)
{
    (void)state;
    char authz[2048];
    snprintf(authz, sizeof(authz), "Bearer %s", es_interop);
    struct gw_principal who = expect_ok(authz);
    assert_string_equal(who.tenant, "interop");
    assert_string_equal(who.kid, "es");
    assert_int_equal(who.exp, 4102444800ull);
    snprintf(authz, sizeof(authz), "Bearer %s", rs_interop);
    who = expect_ok(authz);
    assert_string_equal(who.kid, "rs");
}

static void test_alg_none_is_refused(void **state)
{
    (void)state;
    char *t = handmade("{\"alg\":\"none\",\"typ\":\"JWT\"}", good_claims(), "");
    expect_refused(t, "algorithm not allowed for this key");
    free(t);
    t = handmade("{\"alg\":\"None\",\"kid\":\"hs\"}", good_claims(), "");
    expect_refused(t, "algorithm not allowed for this key");
    free(t);
    /* with a signature part that is not empty either */
    t = handmade("{\"alg\":\"none\",\"kid\":\"hs\"}", good_claims(), "AAAA");
    expect_refused(t, "algorithm not allowed for this key");
    free(t);
}

static void test_alg_confusion_hmac_with_the_rsa_public_key_is_refused(void **state)
{
    (void)state;
    /* The classic: an HS256 token whose HMAC key is the server's RSA public
     * key (public, so the attacker has it). libjwt on its own accepts it. */
    char *t = sign(JWT_ALG_HS256, rs_pub, strlen(rs_pub), "rs", good_claims());
    jwt_t *j = NULL;
    assert_int_equal(jwt_decode(&j, t + 7, (const unsigned char *)rs_pub, (int)strlen(rs_pub)), 0);
    jwt_free(j);
    expect_refused(t, "algorithm not allowed for this key");
    free(t);
    /* an ES256 token presented for the RS256 key */
    t = sign(JWT_ALG_ES256, es_priv, strlen(es_priv), "rs", good_claims());
    expect_refused(t, "algorithm not allowed for this key");
    free(t);
    /* case games: libjwt would read "hs256" as HS256 */
    t = sign(JWT_ALG_HS256, HS_SECRET, strlen(HS_SECRET), "hs", good_claims());
    char *dot = strchr(t + 7, '.');
    char *hdr = b64url("{\"alg\":\"hs256\",\"kid\":\"hs\",\"typ\":\"JWT\"}");
    char *forged = malloc(strlen(t) + strlen(hdr) + 8);
    sprintf(forged, "Bearer %s%s", hdr, dot);
    expect_refused(forged, "algorithm not allowed for this key");
    free(forged);
    free(hdr);
    free(t);
}

static void test_wrong_key_and_tampering_are_bad_signatures(void **state)
{
    (void)state;
    const char *other = "another-secret-0123456789abcdef-0123456789abc";
    char *t = sign(JWT_ALG_HS256, other, strlen(other), "hs", good_claims());
    expect_refused(t, "bad signature");
    free(t);
    /* a payload swapped under a valid RS256 signature */
    t = sign(JWT_ALG_RS256, rs_priv, strlen(rs_priv), "rs", good_claims());
    char *p1 = strchr(t, '.') + 1, *p2 = strchr(p1, '.');
    char *evil = b64url(claims_with("victim", "\"plan\":\"pro\"", 3600, 1));
    char *forged = malloc(strlen(t) + strlen(evil) + 8);
    sprintf(forged, "%.*s%s%s", (int)(p1 - t), t, evil, p2);
    expect_refused(forged, "bad signature");
    free(forged);
    free(t);
    /* the same on HS256 */
    t = hs(good_claims());
    p1 = strchr(t, '.') + 1;
    p2 = strchr(p1, '.');
    forged = malloc(strlen(t) + strlen(evil) + 8);
    sprintf(forged, "%.*s%s%s", (int)(p1 - t), t, evil, p2);
    expect_refused(forged, "bad signature");
    free(forged);
    free(evil);
    /* a flipped signature character */
    char *last = t + strlen(t) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    expect_refused(t, "bad signature");
    free(t);
}

static void test_time_claims_with_leeway(void **state)
{
    (void)state;
    char *t = hs(claims_with("acme", NULL, -31, 1));
    expect_refused(t, "token expired");
    free(t);
    t = hs(claims_with("acme", NULL, -29, 1)); /* within the 30 s leeway */
    expect_ok(t);
    free(t);
    char extra[64];
    snprintf(extra, sizeof(extra), "\"nbf\":%llu", NOW + 31);
    t = hs(claims_with("acme", extra, 3600, 1));
    expect_refused(t, "token not yet valid");
    free(t);
    snprintf(extra, sizeof(extra), "\"nbf\":%llu", NOW + 30);
    t = hs(claims_with("acme", extra, 3600, 1));
    expect_ok(t);
    free(t);
    char c[512];
    snprintf(c, sizeof(c),
             "{\"iss\":\"gpuwarden-test\",\"aud\":\"gpuwarden\",\"sub\":\"acme\",\"iat\":%llu,"
             "\"exp\":%llu}",
             NOW + 31, NOW + 3600);
    t = hs(c);
    expect_refused(t, "token issued in the future");
    free(t);
    t = hs(claims_with("acme", NULL, 0, 0));
    expect_refused(t, "missing exp");
    free(t);
    t = hs(claims_with("acme", "\"exp\":\"soon\"", 0, 0));
    expect_refused(t, "malformed token");
    free(t);
}

/* auth.max_lifetime_s (issue 18): exp - iat at most the limit, iat then
 * required; 0 leaves any lifetime. claims_with sets iat = NOW - 10. */
static void test_max_lifetime_bounds_exp_minus_iat(void **state)
{
    (void)state;
    cfg->max_lifetime_s = 3600;
    struct gw_auth *a = auth();
    char *t = hs(claims_with("acme", NULL, 3590, 1)); /* exactly 3600 s */
    expect_ok_at(a, t, NOW);
    free(t);
    t = hs(claims_with("acme", NULL, 3591, 1));
    expect_refused_at(a, t, NOW, "token lifetime exceeds auth.max_lifetime_s");
    free(t);
    char c[256];
    snprintf(c, sizeof(c),
             "{\"iss\":\"gpuwarden-test\",\"aud\":\"gpuwarden\",\"sub\":\"acme\",\"exp\":%llu}",
             NOW + 60);
    t = hs(c);
    expect_refused_at(a, t, NOW, "missing iat (auth.max_lifetime_s needs it)");
    gw_auth_free(a);
    cfg->max_lifetime_s = 0; /* without the limit the same token passes */
    a = auth();
    expect_ok_at(a, t, NOW);
    free(t);
    gw_auth_free(a);
}

/* The jti claim (issue 18: revocation): its hash travels in the principal;
 * a jti that is no string of 1..255 bytes is a malformed token. */
static void test_jti_is_hashed_into_the_principal(void **state)
{
    (void)state;
    char *t = hs(claims_with("acme", "\"jti\":\"tok-42\"", 3600, 1));
    struct gw_auth *a = auth();
    struct gw_principal who = expect_ok_at(a, t, NOW);
    assert_int_equal(who.jti_hash, gw_jti_hash("tok-42", 6));
    who = expect_ok_at(a, t, NOW); /* from the cache: the same */
    assert_int_equal(who.jti_hash, gw_jti_hash("tok-42", 6));
    free(t);
    t = hs(claims_with("acme", NULL, 3600, 1));
    who = expect_ok_at(a, t, NOW);
    assert_int_equal(who.jti_hash, 0);
    free(t);
    gw_auth_free(a);
    t = hs(claims_with("acme", "\"jti\":42", 3600, 1));
    expect_refused(t, "malformed token");
    free(t);
    t = hs(claims_with("acme", "\"jti\":\"\"", 3600, 1));
    expect_refused(t, "malformed token");
    free(t);
    char *tok = NULL;
    struct gw_key k = {.kid = "hs", .alg = GW_ALG_HS256};
    k.key = (unsigned char *)HS_SECRET;
    k.key_len = strlen(HS_SECRET);
    assert_int_equal(gw_auth_issue_jti(&k, "acme", "", NULL, NULL, NOW, NOW + 60, &tok), -EINVAL);
    assert_int_equal(
        gw_auth_issue_jti(&k, "acme", "j1", "gpuwarden-test", "gpuwarden", NOW, NOW + 60, &tok), 0);
    char authz[2048];
    snprintf(authz, sizeof(authz), "Bearer %s", tok);
    a = auth();
    who = expect_ok_at(a, authz, NOW);
    assert_int_equal(who.jti_hash, gw_jti_hash("j1", 2));
    gw_auth_free(a);
    free(tok);
}

/* auth.keys[].required_claims: a token for that key lacking one is
 * refused by name; tokens for other keys are not held to it. */
static void test_required_claims_per_key(void **state)
{
    (void)state;
    cfg->keys[0].n_required = 2;
    snprintf(cfg->keys[0].required[0], 32, "jti");
    snprintf(cfg->keys[0].required[1], 32, "scope");
    struct gw_auth *a = auth();
    char *t = hs(claims_with("acme", "\"jti\":\"j\",\"scope\":\"gen\"", 3600, 1));
    expect_ok_at(a, t, NOW);
    free(t);
    t = hs(claims_with("acme", "\"jti\":\"j\"", 3600, 1));
    expect_refused_at(a, t, NOW, "missing required claim scope");
    free(t);
    t = hs(claims_with("acme", NULL, 3600, 1));
    expect_refused_at(a, t, NOW, "missing required claim jti");
    free(t);
    gw_auth_free(a);
    cfg->keys[0].n_required = 0;
}

static void test_sub_is_required_and_checked(void **state)
{
    (void)state;
    char *t = hs(claims_with(NULL, NULL, 3600, 1));
    expect_refused(t, "missing sub");
    free(t);
    static const char *const bad[] = {
        "acme corp",   "",
        "acme/../x",   "0123456789012345678901234567890123456789012345678901234567890123",
        "\\u00e9cole",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = hs(claims_with(bad[i], NULL, 3600, 1));
        expect_refused(t, "invalid sub");
        free(t);
    }
    t = hs(claims_with(NULL, "\"sub\":42", 3600, 1));
    expect_refused(t, "invalid sub");
    free(t);
    /* 63 bytes of every allowed character class is fine */
    char sub63[64];
    snprintf(sub63, sizeof(sub63), "a.b@c:d-EF%053d", 7);
    assert_int_equal(strlen(sub63), 63);
    t = hs(claims_with(sub63, NULL, 3600, 1));
    assert_string_equal(expect_ok(t).tenant, sub63);
    free(t);
}

static void test_issuer_and_audience(void **state)
{
    (void)state;
    char c[512];
    snprintf(c, sizeof(c), "{\"iss\":\"evil\",\"aud\":\"gpuwarden\",\"sub\":\"acme\",\"exp\":%llu}",
             NOW + 60);
    char *t = hs(c);
    expect_refused(t, "wrong issuer");
    free(t);
    snprintf(c, sizeof(c), "{\"aud\":\"gpuwarden\",\"sub\":\"acme\",\"exp\":%llu}", NOW + 60);
    t = hs(c);
    expect_refused(t, "wrong issuer");
    free(t);
    snprintf(c, sizeof(c),
             "{\"iss\":\"gpuwarden-test\",\"aud\":\"other\",\"sub\":\"acme\",\"exp\":%llu}",
             NOW + 60);
    t = hs(c);
    expect_refused(t, "wrong audience");
    free(t);
    snprintf(c, sizeof(c), "{\"iss\":\"gpuwarden-test\",\"sub\":\"acme\",\"exp\":%llu}", NOW + 60);
    t = hs(c);
    expect_refused(t, "wrong audience");
    free(t);
    snprintf(c, sizeof(c),
             "{\"iss\":\"gpuwarden-test\",\"aud\":[\"a\",\"b\"],\"sub\":\"acme\",\"exp\":%llu}",
             NOW + 60);
    t = hs(c);
    expect_refused(t, "wrong audience");
    free(t);
    snprintf(
        c, sizeof(c),
        "{\"iss\":\"gpuwarden-test\",\"aud\":[\"a\",\"gpuwarden\"],\"sub\":\"acme\",\"exp\":%llu}",
        NOW + 60);
    t = hs(c);
    expect_ok(t);
    free(t);
}

static void test_key_selection_by_kid(void **state)
{
    (void)state;
    char *t = sign(JWT_ALG_HS256, HS_SECRET, strlen(HS_SECRET), "nope", good_claims());
    expect_refused(t, "unknown key id");
    free(t);
    /* without a kid, only a single configured key may be meant */
    t = sign(JWT_ALG_HS256, HS_SECRET, strlen(HS_SECRET), NULL, good_claims());
    expect_refused(t, "unknown key id");
    struct gw_config one = *cfg;
    one.n_keys = 1;
    struct gw_auth *a = NULL;
    assert_int_equal(gw_auth_new(&a, &one, 0), 0);
    struct gw_principal who = expect_ok_at(a, t, NOW);
    assert_string_equal(who.kid, "hs");
    gw_auth_free(a);
    free(t);
}

static void test_oversized_token_refused_before_decoding(void **state)
{
    (void)state;
    size_t n = 7 + 8193;
    char *t = malloc(n + 1);
    memcpy(t, "Bearer ", 7);
    memset(t + 7, 'A', 8193);
    t[7 + 100] = '.';
    t[7 + 200] = '.';
    t[n] = 0;
    struct gw_auth *a = auth();
    expect_refused_at(a, t, NOW, "token too large");
    struct gw_auth_stats st;
    gw_auth_stats(a, &st);
    assert_int_equal(st.misses, 0); /* not even hashed */
    assert_int_equal(st.refused, 1);
    gw_auth_free(a);
    free(t);
}

static void test_malformed_tokens(void **state)
{
    (void)state;
    expect_refused("Bearer abc.def", "malformed token");
    expect_refused("Bearer a.b.c.d", "malformed token");
    expect_refused("Bearer ab$c.def.ghi", "malformed token");
    expect_refused("Bearer eyJhbGciOiJIUzI1NiJ9.e30=.abc", "malformed token"); /* padding */
    expect_refused("Bearer .e30.abc", "malformed token");
    expect_refused("Bearer e30..abc", "malformed token");
    expect_refused("Bearer eyJhbGciOiJIUzI1NiJ9.e30.ab c", "malformed token");
    char *t = handmade("not json", good_claims(), "abc");
    expect_refused(t, "malformed token");
    free(t);
    t = handmade("[\"alg\",\"HS256\"]", good_claims(), "abc");
    expect_refused(t, "malformed token");
    free(t);
    t = handmade("{\"kid\":\"hs\"}", good_claims(), "abc"); /* no alg */
    expect_refused(t, "malformed token");
    free(t);
    t = handmade("{\"alg\":\"HS256\",\"alg\":\"none\",\"kid\":\"hs\"}", good_claims(), "abc");
    expect_refused(t, "malformed token"); /* duplicate keys */
    free(t);
    t = handmade("{\"alg\":\"HS256\",\"kid\":\"hs\",\"crit\":[\"b64\"]}", good_claims(), "abc");
    expect_refused(t, "malformed token");
    free(t);
    /* a NUL inside a string: jansson (and so libjwt) refuses it */
    t = handmade("{\"alg\":\"HS256\",\"kid\":\"hs\"}", "{\"sub\":\"acme\\u0000x\"}", "abc");
    expect_refused(t, "malformed token");
    free(t);
    t = handmade("{\"alg\":\"HS256\",\"kid\":\"hs\"}", "not json", "abc");
    expect_refused(t, "malformed token");
    free(t);
    /* a base64 string with a bad length (1 mod 4) */
    expect_refused("Bearer eyJhbGciOiJIUzI1NiJ9A.e30.abc", "malformed token");
}

static void test_missing_bearer(void **state)
{
    (void)state;
    char *t = hs(good_claims());
    expect_refused(t + 7, "missing bearer token"); /* bare token */
    free(t);
    expect_refused("", "missing bearer token");
    expect_refused("Bearer", "missing bearer token");
    expect_refused("Bearer    ", "missing bearer token");
    expect_refused("Basic dXNlcjpwYXNz", "missing bearer token");
    expect_refused("BearerX.Y.Z", "missing bearer token");
}

static void test_cache_hits_and_expiry(void **state)
{
    (void)state;
    struct gw_auth *a = auth();
    char *t = hs(claims_with("acme", "\"plan\":\"pro\"", 100, 1));
    struct gw_principal w1 = expect_ok_at(a, t, NOW);
    struct gw_auth_stats st;
    gw_auth_stats(a, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 0);
    assert_int_equal(st.verified, 1);

    struct gw_principal w2 = expect_ok_at(a, t, NOW + 50);
    gw_auth_stats(a, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.verified, 1); /* no second signature check */
    assert_memory_equal(&w1, &w2, sizeof(w1));

    /* exp + leeway passed: the cached entry is refused, then gone */
    expect_refused_at(a, t, NOW + 100 + 30, "token expired");
    gw_auth_stats(a, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.refused, 1);
    expect_refused_at(a, t, NOW + 100 + 30, "token expired");
    gw_auth_stats(a, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2); /* verified again from scratch, and refused */
    assert_int_equal(st.verified, 1);
    free(t);
    gw_auth_free(a);
}

static void test_failures_are_not_cached(void **state)
{
    (void)state;
    struct gw_auth *a = auth();
    const char *other = "another-secret-0123456789abcdef-0123456789abc";
    char *t = sign(JWT_ALG_HS256, other, strlen(other), "hs", good_claims());
    expect_refused_at(a, t, NOW, "bad signature");
    expect_refused_at(a, t, NOW, "bad signature");
    struct gw_auth_stats st;
    gw_auth_stats(a, &st);
    assert_int_equal(st.hits, 0);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.verified, 0);
    assert_int_equal(st.refused, 2);
    free(t);
    gw_auth_free(a);
}

static void test_cache_is_bounded(void **state)
{
    (void)state;
    struct gw_auth *a = NULL;
    assert_int_equal(gw_auth_new(&a, cfg, 16), 0);
    char *tok[100];
    for (int i = 0; i < 100; i++) {
        char sub[16];
        snprintf(sub, sizeof(sub), "t%d", i);
        tok[i] = hs(claims_with(sub, NULL, 3600 + i, 1));
        struct gw_principal who = expect_ok_at(a, tok[i], NOW);
        assert_string_equal(who.tenant, sub);
    }
    for (int i = 0; i < 100; i++) {
        char sub[16];
        snprintf(sub, sizeof(sub), "t%d", i);
        struct gw_principal who = expect_ok_at(a, tok[i], NOW);
        assert_string_equal(who.tenant, sub); /* a hit never returns another token's principal */
        free(tok[i]);
    }
    struct gw_auth_stats st;
    gw_auth_stats(a, &st);
    assert_int_equal(st.hits + st.misses, 200);
    assert_true(st.hits <= 16);
    assert_int_equal(st.verified, st.misses);
    gw_auth_free(a);
}

static void test_issue_round_trips_and_refuses_public_keys(void **state)
{
    (void)state;
    char *tok = NULL;
    assert_int_equal(gw_auth_issue(&cfg->keys[0], "acme", "pro", "gpuwarden-test", "gpuwarden", NOW,
                                   NOW + 600, &tok),
                     0);
    char authz[1024];
    snprintf(authz, sizeof(authz), "Bearer %s", tok);
    struct gw_principal who = expect_ok(authz);
    assert_string_equal(who.tenant, "acme");
    assert_string_equal(who.plan, "pro");
    assert_string_equal(who.kid, "hs");
    assert_int_equal(who.exp, NOW + 600);
    free(tok);
    tok = (char *)1;
    assert_int_equal(gw_auth_issue(&cfg->keys[1], "acme", NULL, NULL, NULL, NOW, NOW + 600, &tok),
                     -ENOTSUP);
    assert_null(tok);
    assert_int_equal(
        gw_auth_issue(&cfg->keys[0], "acme corp", NULL, NULL, NULL, NOW, NOW + 600, &tok), -EINVAL);
    assert_int_equal(gw_auth_issue(&cfg->keys[0], "acme", NULL, NULL, NULL, NOW, NOW, &tok),
                     -EINVAL);
    /* without iss and aud the token fails this verifier's rules */
    assert_int_equal(gw_auth_issue(&cfg->keys[0], "acme", NULL, NULL, NULL, NOW, NOW + 600, &tok),
                     0);
    snprintf(authz, sizeof(authz), "Bearer %s", tok);
    expect_refused(authz, "wrong issuer");
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_hs256_token_gives_tenant_plan_kid_exp),
        cmocka_unit_test(test_valid_rs256_and_es256_tokens_pass),
        cmocka_unit_test(test_tokens_signed_outside_libjwt_pass),
        cmocka_unit_test(test_alg_none_is_refused),
        cmocka_unit_test(test_alg_confusion_hmac_with_the_rsa_public_key_is_refused),
        cmocka_unit_test(test_wrong_key_and_tampering_are_bad_signatures),
        cmocka_unit_test(test_time_claims_with_leeway),
        cmocka_unit_test(test_max_lifetime_bounds_exp_minus_iat),
        cmocka_unit_test(test_jti_is_hashed_into_the_principal),
        cmocka_unit_test(test_required_claims_per_key),
        cmocka_unit_test(test_sub_is_required_and_checked),
        cmocka_unit_test(test_issuer_and_audience),
        cmocka_unit_test(test_key_selection_by_kid),
        cmocka_unit_test(test_oversized_token_refused_before_decoding),
        cmocka_unit_test(test_malformed_tokens),
        cmocka_unit_test(test_missing_bearer),
        cmocka_unit_test(test_cache_hits_and_expiry),
        cmocka_unit_test(test_failures_are_not_cached),
        cmocka_unit_test(test_cache_is_bounded),
        cmocka_unit_test(test_issue_round_trips_and_refuses_public_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
