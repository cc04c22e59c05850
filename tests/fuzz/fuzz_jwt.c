/* fuzz_jwt.c - Authorization header values into gw_auth_check, with one
 * key of each kind (HS256 "hs", RS256 "rs", ES256 "es": the test keys of
 * tests/fixtures/keys/), an issuer, an audience and a fixed clock. Each
 * input is checked twice: the second answer comes from the cache when the
 * first verified, and must be the same answer. */
#include "fuzz.h"
#include "gw_supervisor.h"

#include <errno.h>
#include <string.h>

#define NOW 1800000000ull
#define HS_SECRET "test-secret-0123456789abcdef-0123456789abcdef"

static struct gw_config cfg;
static struct gw_auth *auth;

static unsigned char *slurp(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/keys/%s", GW_FUZZ_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    GW_FUZZ_CHECK(f != NULL);
    unsigned char *buf = calloc(1, 16384);
    GW_FUZZ_CHECK(buf != NULL);
    *len = fread(buf, 1, 16383, f);
    fclose(f);
    return buf;
}

static void set_key(struct gw_key *k, const char *kid, enum gw_alg alg, unsigned char *bytes,
                    size_t len)
{
    snprintf(k->kid, sizeof(k->kid), "%s", kid);
    k->alg = alg;
    k->key = bytes;
    k->key_len = len;
}

static void init(void)
{
    size_t len;
    unsigned char *hs = (unsigned char *)strdup(HS_SECRET);
    set_key(&cfg.keys[0], "hs", GW_ALG_HS256, hs, strlen(HS_SECRET));
    unsigned char *rs = slurp("rs256.pub.pem", &len);
    set_key(&cfg.keys[1], "rs", GW_ALG_RS256, rs, len);
    unsigned char *es = slurp("es256.pub.pem", &len);
    set_key(&cfg.keys[2], "es", GW_ALG_ES256, es, len);
    cfg.n_keys = 3;
    snprintf(cfg.issuer, sizeof(cfg.issuer), "gpuwarden-test");
    snprintf(cfg.audience, sizeof(cfg.audience), "gpuwarden");
    cfg.leeway_s = 30;
    GW_FUZZ_CHECK(gw_auth_new(&auth, &cfg, 64) == 0);
}

static int sub_ok(const char *s)
{
    size_t n = strnlen(s, GW_NAME_MAX);
    if (n == 0 || n >= GW_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@:-", s[i]))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!auth)
        init();
    /* the header value as the front holds it: NUL-terminated after len */
    char *authz = malloc(size + 1);
    GW_FUZZ_CHECK(authz != NULL);
    memcpy(authz, data, size);
    authz[size] = '\0';
    struct gw_principal who, again;
    char why[256], why2[256];
    memset(&who, 0, sizeof(who));
    why[0] = why2[0] = '\0';
    int rc = gw_auth_check(auth, authz, size, NOW, &who, why, sizeof(why));
    GW_FUZZ_CHECK(rc == 0 || rc == -EACCES || rc == -ENOMEM);
    if (rc == -EACCES)
        GW_FUZZ_CHECK(why[0] != '\0' && strnlen(why, sizeof(why)) < sizeof(why));
    if (rc == 0) {
        GW_FUZZ_CHECK(sub_ok(who.tenant));
        GW_FUZZ_CHECK(strnlen(who.plan, GW_NAME_MAX) < GW_NAME_MAX);
        GW_FUZZ_CHECK(who.exp + cfg.leeway_s >= NOW);
        GW_FUZZ_CHECK(!strcmp(who.kid, "hs") || !strcmp(who.kid, "rs") || !strcmp(who.kid, "es"));
        memset(&again, 0, sizeof(again));
        GW_FUZZ_CHECK(gw_auth_check(auth, authz, size, NOW, &again, why2, sizeof(why2)) == 0);
        GW_FUZZ_CHECK(!strcmp(who.tenant, again.tenant) && !strcmp(who.plan, again.plan) &&
                      who.exp == again.exp);
    }
    free(authz);
    return 0;
}
