/* config_jwks.c - "auth.jwks_file": the public keys that sign tenants'
 * tokens as a JSON Web Key Set (RFC 7517), the form identity providers
 * publish them in, beside or instead of auth.keys' one file per key.
 *
 * Each JWK becomes a struct gw_key like a public_key_file's: OpenSSL 3
 * builds the key from its members (EVP_PKEY_fromdata), checks it
 * (EVP_PKEY_public_check: an RSA modulus with small factors, an EC point
 * off the curve) and writes it as the PEM text libjwt verifies with, so the
 * verifier (supervisor/auth.c) has one kind of public key, wherever it came
 * from. Taken: kty "RSA" (n, e; 2048 to 16384 bits) as RS256 and kty "EC"
 * crv "P-256" (x, y) as ES256. Refused, each with its own message:
 * private members (d, p, q, dp, dq, qi, oth, k: a gateway holds public
 * keys only), kty "oct" (a shared secret belongs in a secret_file, not in a
 * key set), other key types and curves, "use" other than "sig", "key_ops"
 * without "verify", an "alg" the key type cannot verify, a duplicate kid
 * (in the file or in auth.keys), and base64url that is not strict (RFC
 * 7515: no padding, no other alphabet, no stray bits). Members this file
 * does not know (x5c, x5t, ...) are ignored, as RFC 7517 4 says.
 *
 * The file is read whenever the config is: at start, by --check-config and
 * on every reload (SIGHUP, gpuwardenctl reload), so a rotation is "rewrite
 * the file, reload"; a file that fails here fails the reload and the
 * running keys stay.
 */
#include "config_internal.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JWKS_FILE_MAX (1u << 20) /* 32 keys with certificate chains fit easily */
#define RSA_BITS_MIN 2048        /* RFC 7518 3.3: "2048 bits or larger MUST" */
#define RSA_BITS_MAX 16384
#define MEMBER_MAX (RSA_BITS_MAX / 8) /* decoded bytes of n, the largest member */

/* Where a message is: the file, the key's index and, once read, its kid. */
struct jwk_at {
    struct gw_cfg_cx *c;
    const char *path;
    size_t i;
    const char *kid; /* NULL until read and valid */
};

/* "config: auth.jwks_file: PATH: keys[I] (kid "K"): <fmt...>" */
static void jwk_bad(const struct jwk_at *at, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void jwk_bad(const struct jwk_at *at, const char *fmt, ...)
{
    char what[400], q[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (at->kid)
        gw__cfg_bad(at->c, "auth.jwks_file", "%s: keys[%zu] (kid \"%s\"): %s", at->path, at->i,
                    gw__cfg_shown(at->kid, q), what);
    else
        gw__cfg_bad(at->c, "auth.jwks_file", "%s: keys[%zu]: %s", at->path, at->i, what);
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict unpadded base64url (RFC 7515 2): a length of 1 mod 4 and non-zero
 * leftover bits are refused, so each byte string has one spelling. 0,
 * -EINVAL (not base64url) or -E2BIG (more than cap bytes). */
static int b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    if (n % 4 == 1)
        return -EINVAL;
    if (n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
        return -E2BIG;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    if (acc != 0)
        return -EINVAL;
    *outlen = o;
    return 0;
}

/* The JWK member `name` (a base64url string) decoded into out: 0, or -1
 * after the message. */
static int member_bytes(const struct jwk_at *at, json_t *jwk, const char *kty, const char *name,
                        unsigned char *out, size_t cap, size_t *len)
{
    json_t *v = json_object_get(jwk, name);
    if (!v) {
        jwk_bad(at, "\"%s\": missing (required for kty \"%s\")", name, kty);
        return -1;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        jwk_bad(at, "\"%s\": expected a base64url string", name);
        return -1;
    }
    int rc = b64url_decode(json_string_value(v), json_string_length(v), out, cap, len);
    if (rc == -E2BIG)
        jwk_bad(at, "\"%s\": longer than %zu bytes", name, cap);
    else if (rc)
        jwk_bad(at, "\"%s\": not base64url (RFC 7515: A-Z a-z 0-9 - _, no padding)", name);
    return rc ? -1 : 0;
}

/* pkey checked and written as PEM into k->key: 0, or -1 after the message. */
static int to_pem(const struct jwk_at *at, EVP_PKEY *pkey, const char *what, struct gw_key *k)
{
    EVP_PKEY_CTX *vc = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    BIO *b = NULL;
    int rc = -1;
    if (!vc || EVP_PKEY_public_check(vc) != 1) {
        jwk_bad(at, "%s: not a valid public key (OpenSSL's check refused it)", what);
        goto out;
    }
    char *data = NULL;
    long n;
    if (!(b = BIO_new(BIO_s_mem())) || PEM_write_bio_PUBKEY(b, pkey) != 1 ||
        (n = BIO_get_mem_data(b, &data)) <= 0 || !(k->key = malloc((size_t)n + 1))) {
        jwk_bad(at, "%s: cannot write it as PEM (out of memory?)", what);
        goto out;
    }
    memcpy(k->key, data, (size_t)n);
    k->key[n] = 0;
    k->key_len = (size_t)n;
    rc = 0;
out:
    BIO_free(b);
    EVP_PKEY_CTX_free(vc);
    ERR_clear_error(); /* nothing of ours stays queued for libjwt to find */
    return rc;
}

/* An EVP_PKEY of type `type` ("RSA", "EC") from params; NULL when OpenSSL
 * refuses them (an EC point off the curve is refused here). */
static EVP_PKEY *from_params(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

static int rsa_key(const struct jwk_at *at, json_t *jwk, struct gw_key *k)
{
    unsigned char n[MEMBER_MAX], e[MEMBER_MAX];
    size_t nl = 0, el = 0;
    int bad = member_bytes(at, jwk, "RSA", "n", n, sizeof(n), &nl);
    bad |= member_bytes(at, jwk, "RSA", "e", e, 8, &el);
    if (bad)
        return -1;
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    int rc = -1;
    if (!bn || !be || !bld) {
        jwk_bad(at, "out of memory");
        goto out;
    }
    int bits = BN_num_bits(bn);
    if (bits < RSA_BITS_MIN || bits > RSA_BITS_MAX) {
        jwk_bad(at, "\"n\": %d bits; RS256 keys are %d to %d bits", bits, RSA_BITS_MIN,
                RSA_BITS_MAX);
        goto out;
    }
    /* OpenSSL's check (SP 800-56B) takes odd exponents from 65537 up: say so
     * here in our words rather than in its */
    if (!BN_is_odd(be) || BN_num_bits(be) < 17) {
        jwk_bad(at, "\"e\": expected an odd exponent of at least 65537 (usually AQAB)");
        goto out;
    }
    if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1 ||
        !(params = OSSL_PARAM_BLD_to_param(bld))) {
        jwk_bad(at, "out of memory");
        goto out;
    }
    if (!(pkey = from_params("RSA", params))) {
        jwk_bad(at, "\"n\", \"e\": not a valid RSA public key");
        goto out;
    }
    rc = to_pem(at, pkey, "\"n\", \"e\"", k);
out:
    EVP_PKEY_free(pkey);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    ERR_clear_error();
    return rc;
}

static int ec_key(const struct jwk_at *at, json_t *jwk, struct gw_key *k)
{
    json_t *crv = json_object_get(jwk, "crv");
    char q[96];
    if (!crv) {
        jwk_bad(at, "\"crv\": missing (required for kty \"EC\"; expected \"P-256\")");
        return -1;
    }
    if (!json_is_string(crv) || strcmp(json_string_value(crv), "P-256") != 0) {
        jwk_bad(at, "\"crv\": %s%s%s: expected \"P-256\" (ES256)", json_is_string(crv) ? "\"" : "",
                json_is_string(crv) ? gw__cfg_shown(json_string_value(crv), q) : "not a string",
                json_is_string(crv) ? "\"" : "");
        return -1;
    }
    /* the uncompressed point: 0x04 || x || y, each coordinate full size
     * (RFC 7518 6.2.1.2: "MUST be the full size") */
    unsigned char x[33], y[33], pub[65];
    size_t xl = 0, yl = 0;
    int bad = member_bytes(at, jwk, "EC", "x", x, sizeof(x), &xl);
    bad |= member_bytes(at, jwk, "EC", "y", y, sizeof(y), &yl);
    if (!bad && (xl != 32 || yl != 32)) {
        jwk_bad(at, "\"%s\": %zu bytes; P-256 coordinates are 32 bytes", xl != 32 ? "x" : "y",
                xl != 32 ? xl : yl);
        bad = 1;
    }
    if (bad)
        return -1;
    pub[0] = 0x04;
    memcpy(pub + 1, x, 32);
    memcpy(pub + 33, y, 32);
    char group[] = "prime256v1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)),
        OSSL_PARAM_END,
    };
    EVP_PKEY *pkey = from_params("EC", params);
    int rc = -1;
    if (!pkey)
        jwk_bad(at, "\"x\", \"y\": not a point on P-256");
    else
        rc = to_pem(at, pkey, "\"x\", \"y\"", k);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

/* kid: required, unique in the file and beside auth.keys (the first
 * n_cfg keys of cfg). 0, or -1 after the message. */
static int jwk_kid(struct jwk_at *at, json_t *jwk, const struct gw_config *cfg, int n_cfg,
                   const size_t *index, struct gw_key *k)
{
    json_t *v = json_object_get(jwk, "kid");
    char q[96];
    if (!v) {
        jwk_bad(at, "\"kid\": missing (tokens name their key by kid)");
        return -1;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!s || strlen(s) != json_string_length(v) || strlen(s) >= sizeof(k->kid) ||
        !gw__cfg_name_ok(s, "._:+/=-")) {
        jwk_bad(at, "\"kid\": %s%s%sexpected 1 to %d bytes of [A-Za-z0-9._:+/=-]", s ? "\"" : "",
                s ? gw__cfg_shown(s, q) : "", s ? "\": " : "", GW_NAME_MAX - 1);
        return -1;
    }
    snprintf(k->kid, sizeof(k->kid), "%s", s);
    at->kid = k->kid;
    for (int i = 0; i < cfg->n_keys; i++) {
        if (strcmp(cfg->keys[i].kid, s) != 0)
            continue;
        if (i < n_cfg)
            jwk_bad(at, "kid also names auth.keys[%d]; a kid must be unique", i);
        else
            jwk_bad(at, "kid also names keys[%zu] of this file; a kid must be unique",
                    index[i - n_cfg]);
        return -1;
    }
    return 0;
}

/* "use", "key_ops" and "alg" against the key type: 0, or -1 after the
 * messages. */
static int jwk_usage(const struct jwk_at *at, json_t *jwk, enum gw_alg alg)
{
    const char *want = alg == GW_ALG_RS256 ? "RS256" : "ES256";
    json_t *use = json_object_get(jwk, "use"), *ops = json_object_get(jwk, "key_ops");
    json_t *a = json_object_get(jwk, "alg");
    char q[96];
    int rc = 0;
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0)) {
        jwk_bad(at, "\"use\": %s%s%s: expected \"sig\" (this key is not for signatures)",
                json_is_string(use) ? "\"" : "",
                json_is_string(use) ? gw__cfg_shown(json_string_value(use), q) : "not a string",
                json_is_string(use) ? "\"" : "");
        rc = -1;
    }
    if (ops) {
        int verify = 0;
        size_t i;
        json_t *o;
        if (json_is_array(ops))
            json_array_foreach (ops, i, o)
                verify |= json_is_string(o) && strcmp(json_string_value(o), "verify") == 0;
        if (!verify) {
            jwk_bad(at, "\"key_ops\": expected an array that holds \"verify\"");
            rc = -1;
        }
    }
    if (a && (!json_is_string(a) || strcmp(json_string_value(a), want) != 0)) {
        jwk_bad(at, "\"alg\": %s%s%s: expected \"%s\" for kty \"%s\"",
                json_is_string(a) ? "\"" : "",
                json_is_string(a) ? gw__cfg_shown(json_string_value(a), q) : "not a string",
                json_is_string(a) ? "\"" : "", want, alg == GW_ALG_RS256 ? "RSA" : "EC");
        rc = -1;
    }
    return rc;
}

/* keys[i] of the file into k: 0, or -1 after the messages. */
static int jwk_parse(struct jwk_at *at, json_t *jwk, const struct gw_config *cfg, int n_cfg,
                     const size_t *index, struct gw_key *k)
{
    static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    char q[96];
    if (!json_is_object(jwk)) {
        jwk_bad(at, "expected an object (a JSON Web Key)");
        return -1;
    }
    int rc = jwk_kid(at, jwk, cfg, n_cfg, index, k);
    json_t *kty = json_object_get(jwk, "kty");
    const char *t = json_is_string(kty) ? json_string_value(kty) : NULL;
    if (t && strcmp(t, "oct") == 0) {
        /* checked before "k": the message says what to do instead */
        jwk_bad(at, "kty \"oct\": a shared secret is not taken from a key set; put it in "
                    "auth.keys[].secret_file");
        return -1;
    }
    for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
        if (json_object_get(jwk, private_members[i])) {
            jwk_bad(at, "\"%s\" present: a private key; auth.jwks_file takes public keys only",
                    private_members[i]);
            rc = -1;
        }
    if (!kty) {
        jwk_bad(at, "\"kty\": missing (expected \"RSA\" or \"EC\")");
        return -1;
    }
    if (!t || (strcmp(t, "RSA") != 0 && strcmp(t, "EC") != 0)) {
        jwk_bad(at, "\"kty\": %s%s%s: expected \"RSA\" (RS256) or \"EC\" (ES256)", t ? "\"" : "",
                t ? gw__cfg_shown(t, q) : "not a string", t ? "\"" : "");
        return -1;
    }
    k->alg = strcmp(t, "RSA") == 0 ? GW_ALG_RS256 : GW_ALG_ES256;
    if (jwk_usage(at, jwk, k->alg) != 0 || rc != 0)
        return -1;
    return k->alg == GW_ALG_RS256 ? rsa_key(at, jwk, k) : ec_key(at, jwk, k);
}

/* The key set's text: its keys appended to cfg->keys. */
static void jwks_text(struct gw_cfg_cx *c, const char *path, const char *text, size_t len,
                      struct gw_config *cfg)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        gw__cfg_bad(c, "auth.jwks_file", "%s: not valid JSON: %s at line %d column %d", path,
                    je.text, je.line, je.column);
        return;
    }
    json_t *keys = json_is_object(root) ? json_object_get(root, "keys") : NULL;
    int n_cfg = cfg->n_keys, room = GW_MAX_KEYS - n_cfg;
    if (!json_is_array(keys)) {
        gw__cfg_bad(c, "auth.jwks_file", "%s: expected a JSON Web Key Set: {\"keys\": [...]}",
                    path);
    } else if (json_array_size(keys) > (size_t)room) {
        gw__cfg_bad(c, "auth.jwks_file", "%s: %zu keys; at most %d in all (auth.keys has %d)", path,
                    json_array_size(keys), GW_MAX_KEYS, n_cfg);
    } else if (json_array_size(keys) == 0 && n_cfg == 0) {
        gw__cfg_bad(c, "auth.jwks_file", "%s: no keys, and auth.keys has none either", path);
    } else {
        size_t index[GW_MAX_KEYS], i;
        json_t *v;
        json_array_foreach (keys, i, v) {
            struct jwk_at at = {.c = c, .path = path, .i = i};
            struct gw_key k = {0};
            if (jwk_parse(&at, v, cfg, n_cfg, index, &k) != 0) {
                gw__cfg_free_key(&k);
                continue;
            }
            snprintf(k.path, sizeof(k.path), "%s", path);
            index[cfg->n_keys - n_cfg] = i;
            cfg->keys[cfg->n_keys++] = k;
        }
    }
    json_decref(root);
}

void gw__cfg_parse_jwks(struct gw_cfg_cx *c, const char *path, struct gw_config *cfg)
{
    unsigned char *text = NULL;
    size_t len = 0;
    int rc = gw__cfg_read_file(path, JWKS_FILE_MAX, &text, &len);
    if (rc == -EISDIR)
        gw__cfg_bad(c, "auth.jwks_file", "%s: not a regular file", path);
    else if (rc == -EFBIG)
        gw__cfg_bad(c, "auth.jwks_file", "%s: larger than %u bytes", path, JWKS_FILE_MAX);
    else if (rc)
        gw__cfg_bad(c, "auth.jwks_file", "%s: %s", path, strerror(-rc));
    else
        jwks_text(c, path, (const char *)text, len, cfg);
    free(text);
}

int gw_jwks_parse(struct gw_config *cfg, const char *text, size_t len, const char *path, char *err,
                  size_t errlen)
{
    struct gw_cfg_cx c = {.err = err, .errlen = errlen, .cfg = cfg};
    if (err && errlen)
        err[0] = 0;
    if (!cfg || (!text && len) || !path)
        return -EINVAL;
    jwks_text(&c, path, text ? text : "", len, cfg);
    return c.mistakes ? -EINVAL : 0;
}
