/* auth.c - JWT verification for the fronts, on libjwt 1.10.
 *
 * libjwt 1.10 verifies with whatever algorithm the token's own header names
 * and checks no claims at all. So everything an attacker controls is looked
 * at here before libjwt sees it: the size, the shape, the header (parsed by
 * us, so the key and its algorithm are chosen from our config, never from
 * the token), the payload's JSON; libjwt only computes the signature, and
 * its idea of the algorithm is checked against ours once more afterwards.
 * Then the claims: exp (required), nbf, iat, iss, aud, sub.
 *
 * Verified tokens are cached by a keyed hash of the whole token string until
 * their exp, so a client that repeats its token costs a hash lookup, not a
 * signature. Failures are never cached: a table keyed by attacker input
 * that remembers refusals is a table the attacker fills.
 *
 * A struct gw_auth is not shared between threads (one per front, which runs
 * one event loop).
 */
#include "gw_supervisor.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <xxhash.h>

#define TOKEN_MAX 8192 /* bytes of a token we are willing to look at */
#define CACHE_DEFAULT 4096
#define CACHE_MAX (1u << 20)
#define PROBE 8             /* a cached token lives within 8 entries of home */
#define HASH_SECRET_LEN 192 /* XXH3 secret; >= XXH3_SECRET_SIZE_MIN (136) */

struct auth_key {
    char kid[GW_NAME_MAX];
    const char *alg_name; /* "HS256", ...: the only alg a token for this key may name */
    jwt_alg_t jalg;
    unsigned char *key; /* own copy: the config may be freed on reload */
    size_t key_len;
    int n_required; /* claims a token for this key must carry (required_claims) */
    char required[GW_REQ_CLAIMS][32];
};

struct cache_entry {
    XXH128_hash_t h; /* keyed hash of the token string */
    uint32_t len;    /* token length, a second, free check */
    uint8_t used;
    struct gw_principal who; /* who.exp: the token's exp, the entry's end */
};

struct gw_auth {
    int n_keys;
    struct auth_key keys[GW_MAX_KEYS];
    char issuer[128];
    char audience[128];
    uint64_t leeway_s;
    uint64_t max_lifetime_s; /* 0: any; else exp - iat at most this (iat required) */
    struct cache_entry *cache;
    size_t mask;
    /* A random secret makes the cache key unpredictable: without it anyone
     * could search offline for a token whose (non-cryptographic) hash equals
     * a verified one. */
    unsigned char secret[HASH_SECRET_LEN];
    struct gw_auth_stats st;
};

/* -------------------------------------------------------------- helpers */

static int refuse(struct gw_auth *a, char *why, size_t whylen, const char *text)
{
    a->st.refused++;
    if (why && whylen)
        snprintf(why, whylen, "%s", text);
    return -EACCES;
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

/* Strict unpadded base64url: a length of 1 mod 4 and non-zero leftover
 * bits are refused, so each byte string has exactly one spelling. out must
 * hold n * 3 / 4 + 1 bytes; the result is NUL-terminated. */
static int b64url_decode(const char *s, size_t n, unsigned char *out, size_t *outlen)
{
    if (n % 4 == 1)
        return -EINVAL;
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
    out[o] = 0;
    *outlen = o;
    return 0;
}

/* base64url-decodes a segment and parses it as a JSON object. Duplicate
 * keys are refused: two "alg"s or two "sub"s are read differently by
 * different parsers, and we must read exactly what libjwt read. */
static json_t *segment_json(const char *s, size_t n)
{
    unsigned char buf[TOKEN_MAX];
    size_t len;
    if (n == 0 || b64url_decode(s, n, buf, &len))
        return NULL;
    json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static int sub_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._@:-", s[i]))
            return 0;
    return 1;
}

static int plan_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return 0;
    return 1;
}

/* A NumericDate claim: 1 and *t when present and a number, 0 when absent,
 * -1 when present but not a number. Clamped to [0, 2^62] so adding the
 * leeway cannot overflow. */
static int numeric_date(json_t *claims, const char *name, int64_t *t)
{
    json_t *v = json_object_get(claims, name);
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        *t = x < 0 ? 0 : x > (json_int_t)(1ll << 62) ? (int64_t)(1ll << 62) : (int64_t)x;
    } else if (json_is_real(v)) {
        double d = json_real_value(v); /* RFC 7519 allows fractions; we floor */
        *t = d < 0 ? 0 : d > 4.6e18 ? (int64_t)(1ll << 62) : (int64_t)d;
    } else {
        return -1;
    }
    return 1;
}

static int expired(uint64_t exp, uint64_t now_s, uint64_t leeway)
{
    return now_s >= exp + leeway;
}

/* ---------------------------------------------------------------- cache */

static XXH128_hash_t token_hash(const struct gw_auth *a, const char *tok, size_t n)
{
    return XXH3_128bits_withSecret(tok, n, a->secret, sizeof(a->secret));
}

static struct cache_entry *cache_find(struct gw_auth *a, XXH128_hash_t h, size_t len)
{
    for (size_t i = 0; i < PROBE; i++) {
        struct cache_entry *e = &a->cache[(h.low64 + i) & a->mask];
        if (e->used && e->len == len && XXH128_isEqual(e->h, h))
            return e;
    }
    return NULL;
}

/* Takes a free entry in the probe window, else one that has expired, else
 * the one that expires first (it would have had the least use left). */
static void cache_put(struct gw_auth *a, XXH128_hash_t h, size_t len,
                      const struct gw_principal *who, uint64_t now_s)
{
    struct cache_entry *victim = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        struct cache_entry *e = &a->cache[(h.low64 + i) & a->mask];
        if (!e->used || expired(e->who.exp, now_s, a->leeway_s)) {
            victim = e;
            break;
        }
        if (!victim || e->who.exp < victim->who.exp)
            victim = e;
    }
    victim->h = h;
    victim->len = (uint32_t)len;
    victim->who = *who;
    victim->used = 1;
}

/* ----------------------------------------------------------------- keys */

static const struct {
    enum gw_alg alg;
    const char *name;
    jwt_alg_t jalg;
} alg_map[] = {
    {GW_ALG_HS256, "HS256", JWT_ALG_HS256}, {GW_ALG_HS384, "HS384", JWT_ALG_HS384},
    {GW_ALG_HS512, "HS512", JWT_ALG_HS512}, {GW_ALG_RS256, "RS256", JWT_ALG_RS256},
    {GW_ALG_ES256, "ES256", JWT_ALG_ES256},
};

static int alg_lookup(enum gw_alg alg, const char **name, jwt_alg_t *jalg)
{
    for (size_t i = 0; i < sizeof(alg_map) / sizeof(alg_map[0]); i++)
        if (alg_map[i].alg == alg) {
            *name = alg_map[i].name;
            *jalg = alg_map[i].jalg;
            return 0;
        }
    return -EINVAL;
}

static int is_hmac(jwt_alg_t a)
{
    return a == JWT_ALG_HS256 || a == JWT_ALG_HS384 || a == JWT_ALG_HS512;
}

int gw_auth_new(struct gw_auth **out, const struct gw_config *cfg, size_t cache_entries)
{
    if (!out || !cfg || cfg->n_keys < 0 || cfg->n_keys > GW_MAX_KEYS)
        return -EINVAL;
    *out = NULL;
    struct gw_auth *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    int rc;
    size_t want = cache_entries ? cache_entries : CACHE_DEFAULT;
    if (want > CACHE_MAX)
        want = CACHE_MAX;
    size_t cap = PROBE;
    while (cap < want)
        cap <<= 1;
    a->cache = calloc(cap, sizeof(*a->cache));
    if (!a->cache) {
        rc = -ENOMEM;
        goto fail;
    }
    a->mask = cap - 1;
    if (getrandom(a->secret, sizeof(a->secret), 0) != (ssize_t)sizeof(a->secret)) {
        rc = errno ? -errno : -EIO;
        goto fail;
    }
    for (int i = 0; i < cfg->n_keys; i++) {
        const struct gw_key *k = &cfg->keys[i];
        struct auth_key *ak = &a->keys[i];
        if (alg_lookup(k->alg, &ak->alg_name, &ak->jalg) || !k->key || k->key_len == 0 ||
            k->key_len > (1u << 20)) {
            rc = -EINVAL;
            goto fail;
        }
        snprintf(ak->kid, sizeof(ak->kid), "%s", k->kid);
        ak->key = malloc(k->key_len + 1);
        if (!ak->key) {
            rc = -ENOMEM;
            goto fail;
        }
        memcpy(ak->key, k->key, k->key_len);
        ak->key[k->key_len] = 0; /* PEM keys are also read as strings */
        ak->key_len = k->key_len;
        ak->n_required = k->n_required;
        memcpy(ak->required, k->required, sizeof(ak->required));
        a->n_keys = i + 1;
    }
    snprintf(a->issuer, sizeof(a->issuer), "%s", cfg->issuer);
    snprintf(a->audience, sizeof(a->audience), "%s", cfg->audience);
    a->leeway_s = cfg->leeway_s;
    a->max_lifetime_s = cfg->max_lifetime_s;
    *out = a;
    return 0;
fail:
    gw_auth_free(a);
    return rc;
}

void gw_auth_free(struct gw_auth *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->n_keys; i++) {
        explicit_bzero(a->keys[i].key, a->keys[i].key_len);
        free(a->keys[i].key);
    }
    free(a->cache);
    explicit_bzero(a->secret, sizeof(a->secret));
    free(a);
}

void gw_auth_stats(const struct gw_auth *a, struct gw_auth_stats *st)
{
    *st = a->st;
}

/* ---------------------------------------------------------------- check */

/* The claims of a token whose signature checked out. 0 and *who, or the
 * words of the refusal. */
static const char *check_claims(const struct gw_auth *a, json_t *c, uint64_t now_s,
                                struct gw_principal *who)
{
    int64_t exp, nbf, iat;
    int r = numeric_date(c, "exp", &exp);
    if (r == 0)
        return "missing exp";
    if (r < 0)
        return "malformed token";
    if (expired((uint64_t)exp, now_s, a->leeway_s))
        return "token expired";
    r = numeric_date(c, "nbf", &nbf);
    if (r < 0)
        return "malformed token";
    if (r > 0 && (uint64_t)nbf > now_s + a->leeway_s)
        return "token not yet valid";
    r = numeric_date(c, "iat", &iat);
    if (r < 0)
        return "malformed token";
    if (r > 0 && (uint64_t)iat > now_s + a->leeway_s)
        return "token issued in the future";
    if (a->max_lifetime_s && r == 0)
        return "missing iat (auth.max_lifetime_s needs it)";
    if (a->max_lifetime_s && exp > iat && (uint64_t)(exp - iat) > a->max_lifetime_s)
        return "token lifetime exceeds auth.max_lifetime_s";
    if (a->issuer[0]) {
        const char *iss = json_string_value(json_object_get(c, "iss"));
        if (!iss || strcmp(iss, a->issuer) != 0)
            return "wrong issuer";
    }
    if (a->audience[0]) {
        json_t *aud = json_object_get(c, "aud");
        int found = 0;
        if (json_is_string(aud)) {
            found = strcmp(json_string_value(aud), a->audience) == 0;
        } else if (json_is_array(aud)) {
            size_t i;
            json_t *v;
            json_array_foreach (aud, i, v) {
                if (json_is_string(v) && strcmp(json_string_value(v), a->audience) == 0)
                    found = 1;
            }
        }
        if (!found)
            return "wrong audience";
    }
    json_t *sub = json_object_get(c, "sub");
    if (!sub)
        return "missing sub";
    /* strlen == length: a sub with an embedded NUL is not the sub it seems */
    if (!json_is_string(sub) || strlen(json_string_value(sub)) != json_string_length(sub) ||
        !sub_ok(json_string_value(sub)))
        return "invalid sub";
    json_t *plan = json_object_get(c, "plan");
    if (plan &&
        (!json_is_string(plan) || strlen(json_string_value(plan)) != json_string_length(plan) ||
         !plan_ok(json_string_value(plan))))
        return "malformed token";
    json_t *jti = json_object_get(c, "jti");
    if (jti &&
        (!json_is_string(jti) || json_string_length(jti) == 0 || json_string_length(jti) > 255))
        return "malformed token";
    who->jti_hash = jti ? gw_jti_hash(json_string_value(jti), json_string_length(jti)) : 0;
    snprintf(who->tenant, sizeof(who->tenant), "%s", json_string_value(sub));
    snprintf(who->plan, sizeof(who->plan), "%s", plan ? json_string_value(plan) : "");
    who->exp = (uint64_t)exp;
    return NULL;
}

/* The token of an Authorization value. NULL and *tok, *n, or the words of
 * the refusal. */
static const char *bearer_token(const char *authz, size_t len, const char **tok, size_t *n)
{
    /* "Bearer" is a case-insensitive scheme (RFC 7235), then spaces. */
    if (!authz || len < 7 || strncasecmp(authz, "Bearer ", 7) != 0)
        return "missing bearer token";
    const char *t = authz + 7;
    size_t m = len - 7;
    while (m && (*t == ' ' || *t == '\t'))
        t++, m--;
    while (m && (t[m - 1] == ' ' || t[m - 1] == '\t'))
        m--;
    if (m == 0)
        return "missing bearer token";
    if (m > TOKEN_MAX)
        return "token too large";
    *tok = t;
    *n = m;
    return NULL;
}

/* Shape: three base64url segments, the first two non-empty. NULL and the
 * offsets of the two dots, or the words of the refusal. */
static const char *token_shape(const char *tok, size_t n, size_t *dot1, size_t *dot2)
{
    int dots = 0;
    for (size_t i = 0; i < n; i++) {
        if (tok[i] == '.') {
            if (++dots == 1)
                *dot1 = i;
            else if (dots == 2)
                *dot2 = i;
            else
                break;
        } else if (b64url_value((unsigned char)tok[i]) < 0) {
            return "malformed token";
        }
    }
    if (dots != 2 || *dot1 == 0 || *dot2 == *dot1 + 1)
        return "malformed token";
    return NULL;
}

/* Our own reading of the header picks the key and the algorithm, and the
 * payload must be a JSON object we read the same way libjwt will. NULL and
 * *key, or the words of the refusal. */
static const char *token_key(const struct gw_auth *a, const char *tok, size_t dot1, size_t dot2,
                             const struct auth_key **key)
{
    json_t *hdr = segment_json(tok, dot1);
    const char *text = NULL;
    const struct auth_key *k = NULL;
    if (!hdr)
        return "malformed token";
    json_t *alg = json_object_get(hdr, "alg"), *kid = json_object_get(hdr, "kid");
    json_t *typ = json_object_get(hdr, "typ");
    if (!json_is_string(alg) || (kid && !json_is_string(kid)) ||
        (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) ||
        json_object_get(hdr, "crit")) {
        /* crit names extensions we would have to understand: we know none */
        text = "malformed token";
        goto out;
    }
    if (strcasecmp(json_string_value(alg), "none") == 0) {
        text = "algorithm not allowed for this key";
        goto out;
    }
    if (kid) {
        for (int i = 0; i < a->n_keys && !k; i++)
            if (strcmp(a->keys[i].kid, json_string_value(kid)) == 0)
                k = &a->keys[i];
    } else if (a->n_keys == 1) {
        k = &a->keys[0];
    }
    if (!k) {
        text = "unknown key id";
        goto out;
    }
    /* Exact, case-sensitive: libjwt would also take "hs256". */
    if (strcmp(json_string_value(alg), k->alg_name) != 0) {
        text = "algorithm not allowed for this key";
        goto out;
    }
    /* The payload must be a JSON object we read the same way libjwt will. */
    json_t *payload = segment_json(tok + dot1 + 1, dot2 - dot1 - 1);
    if (!payload) {
        text = "malformed token";
        goto out;
    }
    json_decref(payload);
    *key = k;
out:
    json_decref(hdr);
    return text;
}

/* libjwt computes the signature with key k, its idea of the algorithm must
 * be ours, then the claims. NULL and *who, or the words of the refusal. */
static const char *token_verify(const struct gw_auth *a, const char *tok, size_t n,
                                const struct auth_key *k, uint64_t now_s, struct gw_principal *who)
{
    const char *text = NULL;
    jwt_t *jwt = NULL;
    char *claims_text = NULL;
    json_t *claims = NULL;
    char buf[TOKEN_MAX + 1];
    memcpy(buf, tok, n);
    buf[n] = 0;
    if (jwt_decode(&jwt, buf, k->key, (int)k->key_len) != 0 || !jwt) {
        text = "bad signature";
        goto out;
    }
    if (jwt_get_alg(jwt) != k->jalg) {
        text = "algorithm not allowed for this key";
        goto out;
    }
    claims_text = jwt_get_grants_json(jwt, NULL);
    claims = claims_text ? json_loads(claims_text, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(claims)) {
        text = "malformed token";
        goto out;
    }
    text = check_claims(a, claims, now_s, who);
    for (int i = 0; !text && i < k->n_required; i++)
        if (!json_object_get(claims, k->required[i])) {
            /* one thread per process; the name is [A-Za-z0-9_], safe in a header */
            static char missing[64];
            snprintf(missing, sizeof(missing), "missing required claim %s", k->required[i]);
            text = missing;
        }
out:
    json_decref(claims);
    free(claims_text);
    if (jwt)
        jwt_free(jwt);
    return text;
}

int gw_auth_check(struct gw_auth *a, const char *authz, size_t len, uint64_t now_s,
                  struct gw_principal *who, char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = 0;
    if (!a || !who)
        return -EINVAL;
    const char *tok = NULL, *text;
    size_t n = 0, dot1 = 0, dot2 = 0;
    if ((text = bearer_token(authz, len, &tok, &n)) != NULL ||
        (text = token_shape(tok, n, &dot1, &dot2)) != NULL)
        return refuse(a, why, whylen, text);

    XXH128_hash_t h = token_hash(a, tok, n);
    struct cache_entry *e = cache_find(a, h, n);
    if (e) {
        a->st.hits++;
        if (expired(e->who.exp, now_s, a->leeway_s)) {
            e->used = 0;
            return refuse(a, why, whylen, "token expired");
        }
        *who = e->who;
        return 0;
    }
    a->st.misses++;

    const struct auth_key *k = NULL;
    struct gw_principal p = {0};
    if ((text = token_key(a, tok, dot1, dot2, &k)) != NULL ||
        (text = token_verify(a, tok, n, k, now_s, &p)) != NULL)
        return refuse(a, why, whylen, text);
    snprintf(p.kid, sizeof(p.kid), "%s", k->kid);
    a->st.verified++;
    cache_put(a, h, n, &p, now_s);
    *who = p;
    return 0;
}

/* ---------------------------------------------------------------- issue */

static int issue(const struct gw_key *key, const char *sub, const char *plan, const char *jti,
                 const char *iss, const char *aud, uint64_t iat, uint64_t exp, char **out);

int gw_auth_issue(const struct gw_key *key, const char *sub, const char *plan, const char *iss,
                  const char *aud, uint64_t iat, uint64_t exp, char **out)
{
    return issue(key, sub, plan, NULL, iss, aud, iat, exp, out);
}

int gw_auth_issue_jti(const struct gw_key *key, const char *sub, const char *jti, const char *iss,
                      const char *aud, uint64_t iat, uint64_t exp, char **out)
{
    if (!jti || !jti[0] || strlen(jti) > 255)
        return -EINVAL;
    return issue(key, sub, NULL, jti, iss, aud, iat, exp, out);
}

static int issue(const struct gw_key *key, const char *sub, const char *plan, const char *jti,
                 const char *iss, const char *aud, uint64_t iat, uint64_t exp, char **out)
{
    if (!key || !sub || !out)
        return -EINVAL;
    *out = NULL;
    const char *name;
    jwt_alg_t jalg;
    if (alg_lookup(key->alg, &name, &jalg))
        return -EINVAL;
    if (!is_hmac(jalg))
        return -ENOTSUP;
    if (!sub_ok(sub) || (plan && !plan_ok(plan)) || !key->key || key->key_len == 0 ||
        key->key_len > (1u << 20) || exp <= iat || exp > (1ull << 62))
        return -EINVAL;
    jwt_t *jwt = NULL;
    int rc = jwt_new(&jwt);
    if (rc)
        return -rc;
    if ((rc = jwt_set_alg(jwt, jalg, key->key, (int)key->key_len)) ||
        (key->kid[0] && (rc = jwt_add_header(jwt, "kid", key->kid))) ||
        (rc = jwt_add_grant(jwt, "sub", sub)) ||
        (plan && (rc = jwt_add_grant(jwt, "plan", plan))) ||
        (jti && (rc = jwt_add_grant(jwt, "jti", jti))) ||
        (iss && (rc = jwt_add_grant(jwt, "iss", iss))) ||
        (aud && (rc = jwt_add_grant(jwt, "aud", aud))) ||
        (rc = jwt_add_grant_int(jwt, "iat", (long)iat)) ||
        (rc = jwt_add_grant_int(jwt, "exp", (long)exp)))
        goto done;
    *out = jwt_encode_str(jwt);
    if (!*out)
        rc = errno ? errno : ENOMEM;
done:
    jwt_free(jwt);
    return -rc;
}
