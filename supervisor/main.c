/* gpuwarden: the master, and (started by the master only) the fronts.
 *
 *   gpuwarden -c CONFIG                 run the node (master)
 *   gpuwarden --check-config CONFIG     check CONFIG, print "config OK: CONFIG" or every mistake
 *   gpuwarden --version
 *   gpuwarden --front N -c CONFIG       front N (the master starts these; GW_FDS names
 *                                       the descriptors it inherits)
 *   gpuwarden --cluster -c CONFIG       the cluster agent (the master starts it when
 *                                       CONFIG has a "cluster" section)
 *
 * Exit status: 0 ok; 1 bad config, segment or address; 100 misuse;
 * 111 temporary failure. */
#include "gw_supervisor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: gpuwarden -c CONFIG\n"
                    "       gpuwarden --check-config CONFIG\n"
                    "       gpuwarden --version\n");
    return 100;
}

static int check_config(const char *path)
{
    struct gw_config *cfg = NULL;
    char err[8192] = "";
    if (gw_config_load(&cfg, path, err, sizeof(err)) != 0) {
        /* err holds one mistake per line. */
        size_t n = strlen(err);
        fprintf(stderr, "%s%s", err[0] ? err : "config: cannot load",
                n && err[n - 1] == '\n' ? "" : "\n");
        return 1;
    }
    struct gw_apikey_set keys = {0}; /* the API keys file, when it exists (apikeys.c) */
    int bad =
        cfg->api_keys_file[0] && gw_apikeys_read(cfg->api_keys_file, &keys, err, sizeof(err)) != 0;
    gw_config_free(cfg);
    if (bad) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    gw_apikeys_free(&keys);
    printf("config OK: %s\n", path);
    return 0;
}

static int front(const char *index_text, const char *config)
{
    char *end;
    long index = strtol(index_text, &end, 10);
    if (*end || end == index_text || index < 0 || index >= GW_MAX_FRONTS)
        return usage();
    struct gw_fds fds;
    char err[256];
    if (gw_fds_parse(getenv("GW_FDS"), &fds, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuwarden[front %ld]: %s\n", index, err);
        return 100;
    }
    return gw_front_main(config, (int)index, &fds);
}

static int cluster(const char *config)
{
    struct gw_fds fds;
    char err[256];
    if (gw_fds_parse(getenv("GW_FDS"), &fds, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuwarden[cluster]: %s\n", err);
        return 100;
    }
    return gw_cluster_main(config, &fds);
}

int main(int argc, char **argv)
{
    const char *config = NULL, *front_index = NULL;
    int agent = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--version")) {
            if (argc != 2)
                return usage();
            printf("gpuwarden %s\n", GW_VERSION);
            return 0;
        } else if (!strcmp(a, "--check-config")) {
            if (argc != 3 || i != 1)
                return usage();
            return check_config(argv[2]);
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && i + 1 < argc && !config) {
            config = argv[++i];
        } else if (!strcmp(a, "--cluster") && !agent && !front_index) {
            agent = 1;
        } else if (!strcmp(a, "--front") && i + 1 < argc && !front_index && !agent) {
            front_index = argv[++i];
        } else {
            return usage();
        }
    }
    if (!config)
        return usage();
    if (front_index)
        return front(front_index, config);
    if (agent)
        return cluster(config);
    return gw_master_main(config);
}
