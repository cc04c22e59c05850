/* config_auth.c - "auth": the keys that sign tenants' tokens (kid,
 * algorithm, and the secret or public key, read from its file while the
 * config is checked), the issuer, the audience and the leeway. The keys of
 * auth.jwks_file are read by config_jwks.c.
 */
#include "config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_FILE_MAX 65536 /* a key file larger than this is not a key */

static const struct {
    const char *name;
    enum gw_alg alg;
    size_t min_secret; /* RFC 7518 3.2: at least the hash's size */
} algs[] = {
    {"HS256", GW_ALG_HS256, 32}, {"HS384", GW_ALG_HS384, 48}, {"HS512", GW_ALG_HS512, 64},
    {"RS256", GW_ALG_RS256, 0},  {"ES256", GW_ALG_ES256, 0},
};

int gw__cfg_read_file(const char *path, size_t max, unsigned char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EISDIR; /* reported as "not a regular file" */
        goto done;
    }
    if ((uint64_t)st.st_size > max) {
        rc = -EFBIG;
        goto done;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto done;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto done;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = 0;
    *out = buf;
    *len = got;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return rc;
}

void gw__cfg_free_key(struct gw_key *k)
{
    if (k->key) {
        explicit_bzero(k->key, k->key_len);
        free(k->key);
    }
    k->key = NULL;
    k->key_len = 0;
}

/* A key's "required_claims": names a token for it must carry (issue 18). */
static int parse_required(struct gw_cfg_cx *c, json_t *v, const char *p, struct gw_key *k)
{
    json_t *list = json_object_get(v, "required_claims");
    char pp[PATH_LEN], pi[PATH_LEN], q[96];
    if (!list)
        return 0;
    gw__cfg_path_key(pp, p, "required_claims");
    if (!json_is_array(list) || json_array_size(list) > GW_REQ_CLAIMS) {
        gw__cfg_bad(c, pp, "expected an array of at most %d claim names", GW_REQ_CLAIMS);
        return -1;
    }
    size_t i;
    json_t *n;
    int rc = 0;
    json_array_foreach (list, i, n) {
        gw__cfg_path_idx(pi, pp, i);
        const char *s = json_is_string(n) ? json_string_value(n) : NULL;
        if (!s || strlen(s) >= sizeof(k->required[0]) || !gw__cfg_name_ok(s, "_")) {
            gw__cfg_bad(c, pi, "%s%s%sexpected 1 to 31 bytes of [A-Za-z0-9_]", s ? "\"" : "",
                        s ? gw__cfg_shown(s, q) : "", s ? "\": " : "");
            rc = -1;
            continue;
        }
        snprintf(k->required[k->n_required++], sizeof(k->required[0]), "%s", s);
    }
    return rc;
}

static void parse_key(struct gw_cfg_cx *c, json_t *v, const char *p, struct gw_config *cfg)
{
    static const char *const keys[] = {
        "kid", "alg", "secret_file", "public_key_file", "required_claims", NULL};
    char pp[PATH_LEN], q[96];
    if (!json_is_object(v)) {
        gw__cfg_bad(c, p, "expected an object");
        return;
    }
    gw__cfg_check_keys(c, v, p, keys);
    struct gw_key k = {0};
    int ok = 1;
    if (gw__cfg_get_string(c, v, p, "kid", 1, k.kid, sizeof(k.kid)) == 1) {
        gw__cfg_path_key(pp, p, "kid");
        if (!gw__cfg_name_ok(k.kid, "._:-")) {
            gw__cfg_bad(c, pp, "\"%s\": expected 1 to %d bytes of [A-Za-z0-9._:-]",
                        gw__cfg_shown(k.kid, q), GW_NAME_MAX - 1);
            ok = 0;
        }
        for (int i = 0; i < cfg->n_keys; i++)
            if (strcmp(cfg->keys[i].kid, k.kid) == 0) {
                gw__cfg_bad(c, pp, "\"%s\" is also the kid of auth.keys[%d]",
                            gw__cfg_shown(k.kid, q), i);
                ok = 0;
            }
    } else {
        ok = 0;
    }
    char alg[16];
    size_t min_secret = 0;
    int hs = -1; /* unknown */
    int arc = gw__cfg_get_string(c, v, p, "alg", 1, alg, sizeof(alg));
    if (arc == 1) {
        k.alg = 0;
        for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
            if (strcmp(alg, algs[i].name) == 0) {
                k.alg = algs[i].alg;
                min_secret = algs[i].min_secret;
            }
        if (!k.alg) {
            gw__cfg_path_key(pp, p, "alg");
            gw__cfg_bad(c, pp, "\"%s\": expected one of HS256, HS384, HS512, RS256, ES256",
                        gw__cfg_shown(alg, q));
        } else {
            hs = min_secret > 0;
        }
    }
    if (hs < 0)
        ok = 0;
    const char *want = hs == 1 ? "secret_file" : "public_key_file";
    const char *other = hs == 1 ? "public_key_file" : "secret_file";
    if (hs >= 0 && json_object_get(v, other)) {
        gw__cfg_path_key(pp, p, other);
        gw__cfg_bad(c, pp, "not used with %s; use %s", alg, want);
        ok = 0;
    }
    if (hs >= 0 && gw__cfg_get_string(c, v, p, want, 1, k.path, sizeof(k.path)) == 1) {
        gw__cfg_path_key(pp, p, want);
        int rc = gw__cfg_read_file(k.path, KEY_FILE_MAX, &k.key, &k.key_len);
        if (rc == -EISDIR) {
            gw__cfg_bad(c, pp, "%s: not a regular file", k.path);
        } else if (rc == -EFBIG) {
            gw__cfg_bad(c, pp, "%s: larger than %d bytes; not a key", k.path, KEY_FILE_MAX);
        } else if (rc) {
            gw__cfg_bad(c, pp, "%s: %s", k.path, strerror(-rc));
        } else if (hs == 1) {
            /* The secret is the file's bytes; one trailing newline (as an
             * editor or `echo` leaves) is not part of it. */
            if (k.key_len && k.key[k.key_len - 1] == '\n')
                k.key[--k.key_len] = 0;
            if (k.key_len && k.key[k.key_len - 1] == '\r')
                k.key[--k.key_len] = 0;
            if (k.key_len < min_secret) {
                gw__cfg_bad(c, pp, "%s: %zu bytes; %s needs at least %zu", k.path, k.key_len, alg,
                            min_secret);
                rc = -EINVAL;
            }
        } else if (strncmp((const char *)k.key, "-----BEGIN PUBLIC KEY-----", 26) != 0) {
            gw__cfg_bad(c, pp, "%s: expected a PEM public key (\"-----BEGIN PUBLIC KEY-----\")",
                        k.path);
            rc = -EINVAL;
        }
        if (rc)
            ok = 0;
    } else {
        ok = 0;
    }
    if (parse_required(c, v, p, &k) != 0)
        ok = 0;
    if (!ok || cfg->n_keys == GW_MAX_KEYS) {
        gw__cfg_free_key(&k);
        return;
    }
    cfg->keys[cfg->n_keys++] = k;
}

void gw__cfg_parse_auth(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"keys",     "jwks_file",      "issuer",        "audience",
                                       "leeway_s", "max_lifetime_s", "api_keys_file", NULL};
    json_t *auth = gw__cfg_get_object(c, root, "", "auth", 1);
    if (!auth)
        return;
    gw__cfg_check_keys(c, auth, "auth", keys);
    json_t *arr = json_object_get(auth, "keys");
    char jwks[256];
    int has_jwks = gw__cfg_get_string(c, auth, "auth", "jwks_file", 0, jwks, sizeof(jwks));
    if (!arr) {
        if (has_jwks == 0)
            gw__cfg_bad(c, "auth.keys", "missing (required unless auth.jwks_file is given)");
    } else if (!json_is_array(arr) || json_array_size(arr) < 1 ||
               json_array_size(arr) > GW_MAX_KEYS) {
        gw__cfg_bad(c, "auth.keys", "expected an array of 1 to %d keys", GW_MAX_KEYS);
    } else {
        size_t i;
        json_t *v;
        char p[PATH_LEN];
        json_array_foreach (arr, i, v) {
            gw__cfg_path_idx(p, "auth.keys", i);
            parse_key(c, v, p, cfg);
        }
    }
    if (has_jwks == 1) /* after auth.keys: its kids must differ from theirs */
        gw__cfg_parse_jwks(c, jwks, cfg);
    gw__cfg_get_string(c, auth, "auth", "issuer", 0, cfg->issuer, sizeof(cfg->issuer));
    gw__cfg_get_string(c, auth, "auth", "audience", 0, cfg->audience, sizeof(cfg->audience));
    gw__cfg_get_u32(c, auth, "auth", "leeway_s", 0, 600, 0, &cfg->leeway_s);
    gw__cfg_get_u32(c, auth, "auth", "max_lifetime_s", 0, 31622400, 0, &cfg->max_lifetime_s);
    /* issue 18: the file's contents are the master's to check (supervisor/apikeys.c) */
    gw__cfg_get_string(c, auth, "auth", "api_keys_file", 0, cfg->api_keys_file,
                       sizeof(cfg->api_keys_file));
}
