/* fuzz_config.c - config files into gw_config_parse, run from the source
 * root so the key files the seeds name (dist/dev-secret.key,
 * tests/fixtures/keys/<alg>.pub.pem) are found. The contract: 0 with a config
 * and no message, or an error with no config and at least one message. */
#include "fuzz.h"
#include "gw_common.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        GW_FUZZ_CHECK(chdir(GW_FUZZ_SOURCE_DIR) == 0);
        ready = 1;
    }
    struct gw_config *cfg = (struct gw_config *)&ready; /* must be overwritten */
    char err[4096];
    int rc = gw_config_parse(&cfg, (const char *)data, size, "fuzz.json", err, sizeof(err));
    GW_FUZZ_CHECK(strnlen(err, sizeof(err)) < sizeof(err));
    if (rc == 0) {
        GW_FUZZ_CHECK(cfg != NULL && err[0] == '\0');
        GW_FUZZ_CHECK(cfg->n_keys >= 1 && cfg->n_listen >= 1);
        GW_FUZZ_CHECK(cfg->header_bytes >= 1024 && cfg->body_bytes >= 1024);
        gw_config_free(cfg);
    } else {
        GW_FUZZ_CHECK(rc < 0 && cfg == NULL && err[0] != '\0');
    }
    return 0;
}
