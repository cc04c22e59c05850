/* tokens.c - the Authorization header of each request: a token minted from
 * the scenario's HS256 secret (gw_auth_issue, the node's own issuer), a
 * fixed token from the scenario, or one of the forgeries the node must
 * refuse with 401. Forged tokens carry a per-request sub so that no two
 * are alike: a verifier's cache of refusals cannot absorb the flood, each
 * one costs the node a parse (and a signature check for wrong_key). */
#include "load.h"

#include "gw_supervisor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void b64url(const char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (uint32_t)(unsigned char)in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tab[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tab[v & 63];
    }
    out[o] = '\0';
}

/* header.payload. with alg "none": what a verifier that trusts the token's
 * own alg would accept. */
static int alg_none(const struct lt_scenario *sc, const char *sub, uint64_t now_s, char **out)
{
    char hdr[128], pay[512];
    int hn =
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"none\",\"typ\":\"JWT\"%s%s%s}",
                 sc->auth.kid[0] ? ",\"kid\":\"" : "", sc->auth.kid, sc->auth.kid[0] ? "\"" : "");
    int pn = snprintf(pay, sizeof(pay),
                      "{\"sub\":\"%s\",\"iss\":\"%s\",\"aud\":\"%s\",\"iat\":%llu,\"exp\":%llu}",
                      sub, sc->auth.issuer, sc->auth.audience, (unsigned long long)now_s,
                      (unsigned long long)(now_s + 3600));
    if (hn < 0 || pn < 0 || (size_t)hn >= sizeof(hdr) || (size_t)pn >= sizeof(pay))
        return -EOVERFLOW;
    char *t = malloc(((size_t)hn + (size_t)pn) * 2 + 8);
    if (!t)
        return -ENOMEM;
    b64url(hdr, (size_t)hn, t);
    size_t l = strlen(t);
    t[l++] = '.';
    b64url(pay, (size_t)pn, t + l);
    strcat(t, ".");
    *out = t;
    return 0;
}

int lt_token_for(const struct lt_scenario *sc, const struct lt_class *c, uint64_t seq,
                 uint64_t now_s, char **out)
{
    *out = NULL;
    if (c->behaviour == LT_TOKENLESS)
        return 0;
    char *tok = NULL;
    if (c->token) {
        tok = strdup(c->token);
        if (!tok)
            return -ENOMEM;
    } else {
        struct gw_key key = {.alg = GW_ALG_HS256};
        snprintf(key.kid, sizeof(key.kid), "%s", sc->auth.kid);
        key.key = sc->auth.secret;
        key.key_len = sc->auth.secret_len;
        char sub[64];
        snprintf(sub, sizeof(sub), "%s", c->tenant);
        if (c->behaviour == LT_ALG_NONE || c->behaviour == LT_WRONG_KEY ||
            c->behaviour == LT_EXPIRED)
            snprintf(sub, sizeof(sub), "%.40s-%llu", c->tenant[0] ? c->tenant : "forger",
                     (unsigned long long)seq);
        uint64_t iat = now_s, exp = now_s + 3600;
        unsigned char wrong[32];
        switch (c->behaviour) {
        case LT_ALG_NONE: {
            int rc = alg_none(sc, sub, now_s, &tok);
            if (rc != 0)
                return rc;
            goto done;
        }
        case LT_WRONG_KEY:
            for (size_t i = 0; i < sizeof(wrong); i++)
                wrong[i] = (unsigned char)('a' + (seq + i * 7) % 26);
            key.key = wrong;
            key.key_len = sizeof(wrong);
            break;
        case LT_EXPIRED: /* well past any leeway a node would configure */
            iat = now_s - 7200;
            exp = now_s - 3600;
            break;
        default:
            break;
        }
        int rc = gw_auth_issue(&key, sub, NULL, sc->auth.issuer[0] ? sc->auth.issuer : NULL,
                               sc->auth.audience[0] ? sc->auth.audience : NULL, iat, exp, &tok);
        if (rc != 0)
            return rc;
    }
done:;
    size_t n = strlen(tok) + 8;
    *out = malloc(n);
    if (!*out) {
        free(tok);
        return -ENOMEM;
    }
    snprintf(*out, n, "Bearer %s", tok);
    free(tok);
    return 0;
}
