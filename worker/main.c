/* gpuwarden-worker: one model worker, started by the gpuwarden master.
 * Exit status: 0 stopped on SIGTERM, 100 misuse, 111 could not start. */
#include "gw_worker.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *config = NULL;
    int index = -1, c;
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"index", required_argument, 0, 'i'}, {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, "c:i:", opts, NULL)) != -1) {
        if (c == 'c')
            config = optarg;
        else if (c == 'i')
            index = atoi(optarg);
        else
            goto usage;
    }
    if (!config || index < 0 || optind != argc)
        goto usage;
    struct gw_fds fds;
    char err[256];
    if (gw_fds_parse(getenv("GW_FDS"), &fds, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuwarden-worker: %s\n", err);
        return 100;
    }
    return gw_worker_main(config, index, &fds);
usage:
    fprintf(stderr,
            "usage: gpuwarden-worker --index N -c CONFIG (started by the gpuwarden master)\n");
    return 100;
}
