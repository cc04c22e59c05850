/* gpuwarden-token: issues an HS* token from a configured key, for
 * development, tests and the Quick start demo. Production tokens come from
 * your identity provider; this tool only reads the config and key files.
 *   gpuwarden-token -c CONFIG --tenant T [--ttl SECONDS] [--plan P] [--kid K]
 * Exit status: 0 printed a token, 100 misuse, 111 config or key problem. */
#include "gw_supervisor.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *config = NULL, *tenant = NULL, *plan = NULL, *kid = NULL;
    long ttl = 3600;
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"tenant", required_argument, 0, 't'},
        {"ttl", required_argument, 0, 'l'},    {"plan", required_argument, 0, 'p'},
        {"kid", required_argument, 0, 'k'},    {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "c:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 't':
            tenant = optarg;
            break;
        case 'l':
            ttl = strtol(optarg, NULL, 10);
            break;
        case 'p':
            plan = optarg;
            break;
        case 'k':
            kid = optarg;
            break;
        default:
            goto usage;
        }
    }
    if (!config || !tenant || ttl < 1 || ttl > 366L * 86400 || optind != argc)
        goto usage;
    struct gw_config *cfg;
    char err[4096];
    if (gw_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuwarden-token: %s\n", err);
        return 111;
    }
    const struct gw_key *key = NULL;
    for (int i = 0; i < cfg->n_keys && !key; i++)
        if ((!kid || strcmp(cfg->keys[i].kid, kid) == 0) && cfg->keys[i].alg <= GW_ALG_HS512)
            key = &cfg->keys[i];
    if (!key) {
        fprintf(stderr, "gpuwarden-token: %s: no HS256/384/512 key%s%s to sign with\n", config,
                kid ? " with kid " : "", kid ? kid : "");
        gw_config_free(cfg);
        return 111;
    }
    char *tok = NULL;
    uint64_t now = gw_now_us() / 1000000;
    int rc = gw_auth_issue(key, tenant, plan, cfg->issuer[0] ? cfg->issuer : NULL,
                           cfg->audience[0] ? cfg->audience : NULL, now, now + (uint64_t)ttl, &tok);
    gw_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "gpuwarden-token: cannot sign: %s\n", gw_strerror(rc));
        return 111;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
usage:
    fprintf(stderr,
            "usage: gpuwarden-token -c CONFIG --tenant T [--ttl SECONDS] [--plan P] [--kid K]\n");
    return 100;
}
