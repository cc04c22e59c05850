/* fuzz_jwks.c - a JSON Web Key Set (auth.jwks_file's contents) into
 * gw_jwks_parse (common/config_jwks.c: jansson, strict base64url, OpenSSL's
 * key import and check), beside one HS256 key "k" that the set's kids must
 * not repeat. Contract: 0 and no message, or -EINVAL and at least one;
 * either way every key appended has a kid unique among the keys, RS256 or
 * ES256, and a PEM public key as its NUL-terminated bytes; no more than
 * GW_MAX_KEYS keys in all. */
#include "fuzz.h"
#include "gw_common.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_config *cfg = calloc(1, sizeof(*cfg));
    GW_FUZZ_CHECK(cfg != NULL);
    snprintf(cfg->keys[0].kid, sizeof(cfg->keys[0].kid), "k");
    cfg->keys[0].alg = GW_ALG_HS256;
    cfg->n_keys = 1;
    char err[4096];
    int rc = gw_jwks_parse(cfg, (const char *)data, size, "fuzz.jwks", err, sizeof(err));
    GW_FUZZ_CHECK(strnlen(err, sizeof(err)) < sizeof(err));
    GW_FUZZ_CHECK(rc == 0 ? err[0] == '\0' : rc == -EINVAL && err[0] != '\0');
    GW_FUZZ_CHECK(cfg->n_keys >= 1 && cfg->n_keys <= GW_MAX_KEYS);
    for (int i = 1; i < cfg->n_keys; i++) {
        const struct gw_key *k = &cfg->keys[i];
        GW_FUZZ_CHECK(k->alg == GW_ALG_RS256 || k->alg == GW_ALG_ES256);
        GW_FUZZ_CHECK(k->key && k->key_len == strlen((const char *)k->key));
        GW_FUZZ_CHECK(strncmp((const char *)k->key, "-----BEGIN PUBLIC KEY-----\n", 27) == 0);
        GW_FUZZ_CHECK(k->kid[0] != '\0');
        for (int j = 0; j < i; j++)
            GW_FUZZ_CHECK(strcmp(cfg->keys[j].kid, k->kid) != 0);
    }
    gw_config_free(cfg);
    return 0;
}
