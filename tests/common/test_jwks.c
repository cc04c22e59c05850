/* test_jwks.c - auth.jwks_file (RFC 7517): the fixture key set gives the
 * very PEM keys of tests/fixtures/keys, the file is read through the
 * config beside or instead of auth.keys, and every bad key set or key is
 * refused with the exact words naming the file, the key's index and kid. */
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

static char dir[64], secret[128];
static json_t *fixture; /* tests/fixtures/keys/jwks.json: keys "rs" (RS256), "es" (ES256) */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

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
    char path[600];
    snprintf(path, sizeof(path), "%s/tests/fixtures/keys/jwks.json", gw_source_dir());
    fixture = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    snprintf(dir, sizeof(dir), "/tmp/gw-jwks-XXXXXX");
    if (!fixture || !mkdtemp(dir))
        return -1;
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    write_file(secret, "0123456789abcdef0123456789abcdef01234567\n");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(secret);
    rmdir(dir);
    json_decref(fixture);
    return 0;
}

/* A copy of fixture key i ("rs" 0, "es" 1). */
static json_t *fixture_key(size_t i)
{
    return json_deep_copy(json_array_get(json_object_get(fixture, "keys"), i));
}

/* {"keys": [k...]} as text (takes the references); malloc'd. */
static char *set_of(int n, ...)
{
    json_t *arr = json_array();
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, va_arg(ap, json_t *));
    va_end(ap);
    json_t *root = json_pack("{s:o}", "keys", arr);
    char *text = json_dumps(root, JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

/* Fixture key i with member m set to the JSON text v (NULL: removed). */
static json_t *key_with(size_t i, const char *m, const char *v)
{
    json_t *k = fixture_key(i);
    if (v)
        json_object_set_new(k, m, json_loads(v, JSON_DECODE_ANY, NULL));
    else
        json_object_del(k, m);
    return k;
}

/* A config holding n_before HS256 keys "k0", "k1", ... */
static struct gw_config *cfg_with(int n_before)
{
    struct gw_config *cfg = calloc(1, sizeof(*cfg));
    assert_non_null(cfg);
    for (int i = 0; i < n_before; i++) {
        snprintf(cfg->keys[i].kid, sizeof(cfg->keys[i].kid), "k%d", i);
        cfg->keys[i].alg = GW_ALG_HS256;
    }
    cfg->n_keys = n_before;
    return cfg;
}

/* text (freed here) is refused with exactly `want`; n_left: the keys that
 * were valid and appended all the same. */
static void expect_jwks(char *text, int n_before, int n_left, const char *want)
{
    struct gw_config *cfg = cfg_with(n_before);
    char err[4096];
    int rc = gw_jwks_parse(cfg, text, strlen(text), "t.jwks", err, sizeof(err));
    if (rc != -EINVAL || strcmp(err, want) != 0)
        print_error("key set: %s\n", text);
    free(text);
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(err, want);
    assert_int_equal(cfg->n_keys, n_before + n_left);
    gw_config_free(cfg);
}

#define AT "config: auth.jwks_file: t.jwks: "

/* base64url of n bytes (no padding) into out */
static void b64url(const unsigned char *p, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        for (size_t j = 0; j < 4 && j <= n - i; j++)
            out[o++] = a[(v >> (18 - 6 * j)) & 63];
    }
    out[o] = '\0';
}

/* The fixture's member m of key i, decoded (b64url's inverse, test side). */
static size_t fixture_bytes(size_t i, const char *m, unsigned char *out)
{
    const char *s =
        json_string_value(json_object_get(json_array_get(json_object_get(fixture, "keys"), i), m));
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (; *s; s++) {
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        acc = acc << 6 | (uint32_t)(strchr(a, *s) - a);
        if ((bits += 6) >= 8)
            out[o++] = (unsigned char)(acc >> (bits -= 8));
    }
    return o;
}

/* ------------------------------------------------------------------ tests */

static void test_fixture_set_gives_the_fixture_pem_keys(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof(path), "%s/tests/fixtures/keys/rs256.pub.pem", gw_source_dir());
    char *rs = slurp(path);
    snprintf(path, sizeof(path), "%s/tests/fixtures/keys/es256.pub.pem", gw_source_dir());
    char *es = slurp(path);
    struct gw_config *cfg = cfg_with(1);
    char err[1024], *text = json_dumps(fixture, 0);
    assert_int_equal(gw_jwks_parse(cfg, text, strlen(text), "t.jwks", err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(cfg->n_keys, 3);
    assert_string_equal(cfg->keys[1].kid, "rs");
    assert_int_equal(cfg->keys[1].alg, GW_ALG_RS256);
    assert_string_equal(cfg->keys[1].path, "t.jwks");
    /* byte for byte what `openssl pkey -pubout` wrote for the same key */
    assert_string_equal((const char *)cfg->keys[1].key, rs);
    assert_int_equal(cfg->keys[1].key_len, strlen(rs));
    assert_string_equal(cfg->keys[2].kid, "es");
    assert_int_equal(cfg->keys[2].alg, GW_ALG_ES256);
    assert_string_equal((const char *)cfg->keys[2].key, es);
    gw_config_free(cfg);
    free(text);
    free(rs);
    free(es);
}

/* Members the verifier does not use are ignored (RFC 7517 4); without
 * "alg" the key type names it (RSA: RS256, EC P-256: ES256, the only
 * algorithm each may verify here). */
static void test_unknown_members_and_a_missing_alg_are_taken(void **state)
{
    (void)state;
    json_t *rs = key_with(0, "alg", NULL), *es = key_with(1, "x5t", "\"abc\"");
    json_object_set_new(rs, "x5c", json_pack("[s]", "MIIC..."));
    json_object_set_new(rs, "key_ops", json_pack("[ss]", "verify", "encrypt"));
    json_object_set_new(rs, "kid", json_string("Nf_2e+/x=:9.-"));
    json_object_del(es, "use");
    char *text = set_of(2, rs, es), err[1024];
    struct gw_config *cfg = cfg_with(0);
    assert_int_equal(gw_jwks_parse(cfg, text, strlen(text), "t.jwks", err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(cfg->n_keys, 2);
    assert_string_equal(cfg->keys[0].kid, "Nf_2e+/x=:9.-");
    assert_int_equal(cfg->keys[0].alg, GW_ALG_RS256);
    assert_int_equal(cfg->keys[1].alg, GW_ALG_ES256);
    gw_config_free(cfg);
    free(text);
    /* an empty set beside other keys: rotation may empty it for a while */
    cfg = cfg_with(1);
    assert_int_equal(gw_jwks_parse(cfg, "{\"keys\": []}", 12, "t.jwks", err, sizeof(err)), 0);
    assert_int_equal(cfg->n_keys, 1);
    gw_config_free(cfg);
}

static void test_bad_key_sets_are_named_exactly(void **state)
{
    (void)state;
    expect_jwks(strdup("{\"keys\": [}"), 0, 0,
                AT "not valid JSON: unexpected token near '}' at line 1 column 11");
    expect_jwks(strdup("[]"), 0, 0, AT "expected a JSON Web Key Set: {\"keys\": [...]}");
    expect_jwks(strdup("{\"keys\": {}}"), 0, 0,
                AT "expected a JSON Web Key Set: {\"keys\": [...]}");
    expect_jwks(strdup("{\"keys\": [], \"keys\": []}"), 0, 0,
                AT "not valid JSON: duplicate object key near '\"keys\"' at line 1 column 19");
    expect_jwks(strdup("{\"keys\": []}"), 0, 0, AT "no keys, and auth.keys has none either");
    json_t *many = json_array();
    for (int i = 0; i < 31; i++)
        json_array_append_new(many, json_object());
    json_t *root = json_pack("{s:o}", "keys", many);
    char *text = json_dumps(root, 0);
    json_decref(root);
    expect_jwks(text, 2, 0, AT "31 keys; at most 32 in all (auth.keys has 2)");
    expect_jwks(set_of(2, json_string("rs"), fixture_key(1)), 0, 1,
                AT "keys[0]: expected an object (a JSON Web Key)");
}

static void test_kid_missing_malformed_or_taken_is_named(void **state)
{
    (void)state;
    expect_jwks(set_of(1, key_with(0, "kid", NULL)), 0, 0,
                AT "keys[0]: \"kid\": missing (tokens name their key by kid)");
    expect_jwks(set_of(1, key_with(0, "kid", "\"a b\"")), 0, 0,
                AT "keys[0]: \"kid\": \"a b\": expected 1 to 63 bytes of [A-Za-z0-9._:+/=-]");
    expect_jwks(set_of(1, key_with(0, "kid", "7")), 0, 0,
                AT "keys[0]: \"kid\": expected 1 to 63 bytes of [A-Za-z0-9._:+/=-]");
    expect_jwks(set_of(1, key_with(0, "kid", "\"k1\"")), 2, 0,
                AT "keys[0] (kid \"k1\"): kid also names auth.keys[1]; a kid must be unique");
    expect_jwks(set_of(3, fixture_key(0), fixture_key(1), key_with(1, "kid", "\"rs\"")), 0, 2,
                AT "keys[2] (kid \"rs\"): kid also names keys[0] of this file; a kid must be "
                   "unique");
}

/* A key set on a gateway holds public keys only: a private member is
 * refused (named, its value never shown), and so is a shared secret. */
static void test_private_members_and_secrets_are_refused(void **state)
{
    (void)state;
    json_t *k = key_with(0, "d", "\"c2VjcmV0\"");
    json_object_set_new(k, "p", json_string("AQAB"));
    json_object_set_new(k, "qi", json_string("AQAB"));
    expect_jwks(set_of(2, k, fixture_key(1)), 0, 1,
                AT "keys[0] (kid \"rs\"): \"d\" present: a private key; auth.jwks_file takes "
                   "public keys only\n" AT "keys[0] (kid \"rs\"): \"p\" present: a private key; "
                   "auth.jwks_file takes public keys only\n" AT "keys[0] (kid \"rs\"): \"qi\" "
                   "present: a private key; auth.jwks_file takes public keys only");
    expect_jwks(set_of(1, key_with(1, "d", "\"c2VjcmV0\"")), 0, 0,
                AT "keys[0] (kid \"es\"): \"d\" present: a private key; auth.jwks_file takes "
                   "public keys only");
    expect_jwks(set_of(1, json_pack("{s:s,s:s,s:s}", "kty", "oct", "kid", "h", "k",
                                    "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")),
                0, 0,
                AT "keys[0] (kid \"h\"): kty \"oct\": a shared secret is not taken from a key "
                   "set; put it in auth.keys[].secret_file");
}

static void test_kty_use_key_ops_and_alg_are_checked(void **state)
{
    (void)state;
    expect_jwks(set_of(1, key_with(0, "kty", NULL)), 0, 0,
                AT "keys[0] (kid \"rs\"): \"kty\": missing (expected \"RSA\" or \"EC\")");
    expect_jwks(set_of(1, key_with(0, "kty", "\"OKP\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"kty\": \"OKP\": expected \"RSA\" (RS256) or \"EC\" "
                   "(ES256)");
    expect_jwks(set_of(1, key_with(0, "kty", "5")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"kty\": not a string: expected \"RSA\" (RS256) or "
                   "\"EC\" (ES256)");
    expect_jwks(set_of(1, key_with(0, "use", "\"enc\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"use\": \"enc\": expected \"sig\" (this key is not "
                   "for signatures)");
    expect_jwks(set_of(1, key_with(1, "key_ops", "[\"sign\"]")), 0, 0,
                AT "keys[0] (kid \"es\"): \"key_ops\": expected an array that holds \"verify\"");
    expect_jwks(set_of(1, key_with(0, "alg", "\"RS384\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"alg\": \"RS384\": expected \"RS256\" for kty \"RSA\"");
    expect_jwks(set_of(1, key_with(1, "alg", "\"RS256\"")), 0, 0,
                AT "keys[0] (kid \"es\"): \"alg\": \"RS256\": expected \"ES256\" for kty \"EC\"");
    expect_jwks(set_of(1, key_with(0, "alg", "\"none\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"alg\": \"none\": expected \"RS256\" for kty \"RSA\"");
}

static void test_rsa_members_are_checked(void **state)
{
    (void)state;
    unsigned char n[600];
    char s[1200];
    size_t nl = fixture_bytes(0, "n", n);
    assert_int_equal(nl, 256);
    expect_jwks(set_of(1, key_with(0, "n", NULL)), 0, 0,
                AT "keys[0] (kid \"rs\"): \"n\": missing (required for kty \"RSA\")");
    expect_jwks(set_of(1, key_with(0, "e", "65537")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"e\": expected a base64url string");
    expect_jwks(set_of(1, key_with(0, "e", "\"AQAB=\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"e\": not base64url (RFC 7515: A-Z a-z 0-9 - _, no "
                   "padding)");
    expect_jwks(set_of(1, key_with(0, "e", "\"AQ+B\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"e\": not base64url (RFC 7515: A-Z a-z 0-9 - _, no "
                   "padding)");
    /* "AQB": the last character's leftover bits are not zero (a second
     * spelling of "AQA") */
    expect_jwks(set_of(1, key_with(0, "e", "\"AQB\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"e\": not base64url (RFC 7515: A-Z a-z 0-9 - _, no "
                   "padding)");
    expect_jwks(set_of(1, key_with(0, "e", "\"AQABAQABAQAB\"")), 0, 0,
                AT "keys[0] (kid \"rs\"): \"e\": longer than 8 bytes");
    expect_jwks(set_of(1, key_with(0, "e", "\"Aw\"")), 0, 0, /* 3 */
                AT "keys[0] (kid \"rs\"): \"e\": expected an odd exponent of at least 65537 "
                   "(usually AQAB)");
    expect_jwks(set_of(1, key_with(0, "e", "\"AQAA\"")), 0, 0, /* 65536 */
                AT "keys[0] (kid \"rs\"): \"e\": expected an odd exponent of at least 65537 "
                   "(usually AQAB)");
    b64url(n, 128, s); /* the modulus' top 1024 bits */
    json_t *k = fixture_key(0);
    json_object_set_new(k, "n", json_string(s));
    expect_jwks(set_of(1, k), 0, 0,
                AT "keys[0] (kid \"rs\"): \"n\": 1024 bits; RS256 keys are 2048 to 16384 bits");
    n[255] ^= 1; /* an even modulus: OpenSSL's check refuses it */
    b64url(n, nl, s);
    k = fixture_key(0);
    json_object_set_new(k, "n", json_string(s));
    expect_jwks(set_of(1, k), 0, 0,
                AT "keys[0] (kid \"rs\"): \"n\", \"e\": not a valid public key (OpenSSL's check "
                   "refused it)");
}

static void test_ec_members_are_checked(void **state)
{
    (void)state;
    unsigned char y[64];
    char s[128];
    size_t yl = fixture_bytes(1, "y", y);
    assert_int_equal(yl, 32);
    expect_jwks(set_of(1, key_with(1, "crv", NULL)), 0, 0,
                AT "keys[0] (kid \"es\"): \"crv\": missing (required for kty \"EC\"; expected "
                   "\"P-256\")");
    expect_jwks(set_of(1, key_with(1, "crv", "\"P-384\"")), 0, 0,
                AT "keys[0] (kid \"es\"): \"crv\": \"P-384\": expected \"P-256\" (ES256)");
    expect_jwks(set_of(1, key_with(1, "y", NULL)), 0, 0,
                AT "keys[0] (kid \"es\"): \"y\": missing (required for kty \"EC\")");
    b64url(y, 31, s); /* a coordinate one byte short (its leading zero dropped, say) */
    json_t *k = fixture_key(1);
    json_object_set_new(k, "x", json_string(s));
    expect_jwks(set_of(1, k), 0, 0,
                AT "keys[0] (kid \"es\"): \"x\": 31 bytes; P-256 coordinates are 32 bytes");
    y[31] ^= 1; /* a point off the curve (an invalid-curve attack's key) */
    b64url(y, 32, s);
    k = fixture_key(1);
    json_object_set_new(k, "y", json_string(s));
    expect_jwks(set_of(1, k), 0, 0, AT "keys[0] (kid \"es\"): \"x\", \"y\": not a point on P-256");
}

/* ------------------------------------------- through the config file */

static int load(const char *auth, struct gw_config **cfg, char *err, size_t errlen)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"listen\": [\"127.0.0.1:8080\"], \"model\": {\"path\": \"m.gguf\", \"name\": "
             "\"m\"}, \"auth\": %s, \"plans\": {\"p\": {\"rate\": [\"1 per second\"]}}, "
             "\"default_plan\": \"p\"}",
             auth);
    *cfg = NULL;
    return gw_config_parse(cfg, text, strlen(text), "t.json", err, errlen);
}

static void test_config_reads_the_file_beside_or_instead_of_keys(void **state)
{
    (void)state;
    char path[600], auth[1400], err[2048];
    snprintf(path, sizeof(path), "%s/tests/fixtures/keys/jwks.json", gw_source_dir());
    struct gw_config *cfg;
    snprintf(auth, sizeof(auth), "{\"jwks_file\": \"%s\"}", path);
    assert_int_equal(load(auth, &cfg, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(cfg->n_keys, 2);
    assert_string_equal(cfg->keys[0].kid, "rs");
    assert_string_equal(cfg->keys[0].path, path);
    assert_string_equal(cfg->keys[1].kid, "es");
    gw_config_free(cfg);
    snprintf(auth, sizeof(auth),
             "{\"keys\": [{\"kid\": \"hs\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}], "
             "\"jwks_file\": \"%s\"}",
             secret, path);
    assert_int_equal(load(auth, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg->n_keys, 3);
    assert_string_equal(cfg->keys[0].kid, "hs");
    assert_string_equal(cfg->keys[2].kid, "es");
    gw_config_free(cfg);
    /* a kid of auth.keys taken again by the key set */
    snprintf(auth, sizeof(auth),
             "{\"keys\": [{\"kid\": \"es\", \"alg\": \"HS256\", \"secret_file\": \"%s\"}], "
             "\"jwks_file\": \"%s\"}",
             secret, path);
    assert_int_equal(load(auth, &cfg, err, sizeof(err)), -EINVAL);
    char want[1024];
    snprintf(want, sizeof(want),
             "config: auth.jwks_file: %s: keys[1] (kid \"es\"): kid also names auth.keys[0]; a "
             "kid must be unique",
             path);
    assert_string_equal(err, want);
    assert_null(cfg);
    assert_int_equal(load("{}", &cfg, err, sizeof(err)), -EINVAL);
    assert_string_equal(err,
                        "config: auth.keys: missing (required unless auth.jwks_file is given)");
}

static void test_config_names_a_missing_odd_or_huge_file(void **state)
{
    (void)state;
    char auth[400], err[2048], want[600], big[256];
    struct gw_config *cfg;
    assert_int_equal(load("{\"jwks_file\": \"/nonexistent/jwks.json\"}", &cfg, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(
        err, "config: auth.jwks_file: /nonexistent/jwks.json: No such file or directory");
    snprintf(auth, sizeof(auth), "{\"jwks_file\": \"%s\"}", dir);
    assert_int_equal(load(auth, &cfg, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "config: auth.jwks_file: %s: not a regular file", dir);
    assert_string_equal(err, want);
    /* 1 MiB and one byte: refused before it is parsed */
    snprintf(big, sizeof(big), "%s/big.json", dir);
    FILE *f = fopen(big, "w");
    assert_non_null(f);
    fputs("{\"keys\": []}", f);
    for (long i = 12; i < (1l << 20) + 1; i++)
        fputc(' ', f);
    fclose(f);
    snprintf(auth, sizeof(auth), "{\"jwks_file\": \"%s\"}", big);
    assert_int_equal(load(auth, &cfg, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "config: auth.jwks_file: %s: larger than 1048576 bytes", big);
    assert_string_equal(err, want);
    assert_int_equal(truncate(big, 1l << 20), 0); /* exactly 1 MiB is taken */
    assert_int_equal(load(auth, &cfg, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want),
             "config: auth.jwks_file: %s: no keys, and auth.keys has none either", big);
    assert_string_equal(err, want);
    unlink(big);
    assert_int_equal(load("{\"jwks_file\": 7}", &cfg, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "config: auth.jwks_file: expected a string of 1 to 255 bytes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_set_gives_the_fixture_pem_keys),
        cmocka_unit_test(test_unknown_members_and_a_missing_alg_are_taken),
        cmocka_unit_test(test_bad_key_sets_are_named_exactly),
        cmocka_unit_test(test_kid_missing_malformed_or_taken_is_named),
        cmocka_unit_test(test_private_members_and_secrets_are_refused),
        cmocka_unit_test(test_kty_use_key_ops_and_alg_are_checked),
        cmocka_unit_test(test_rsa_members_are_checked),
        cmocka_unit_test(test_ec_members_are_checked),
        cmocka_unit_test(test_config_reads_the_file_beside_or_instead_of_keys),
        cmocka_unit_test(test_config_names_a_missing_odd_or_huge_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
