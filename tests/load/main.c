/* gpuwarden-load: runs a scenario of legitimate and hostile clients
 * against a gpuwarden on this machine and reports per class what the node
 * did to each.
 *   gpuwarden-load [options] SCENARIO.json
 * Exit status: 0 every threshold held, 1 a threshold failed (the report
 * says which), 100 misuse or a bad scenario, 111 the run could not start. */
#include "load.h"

#include "gw_common.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpuwarden-load [options] SCENARIO.json\n"
            "  --json FILE          write the full report as JSON (units in the field names)\n"
            "  --target HOST:PORT   override the scenario's target (loopback only)\n"
            "  --ledger PATH        the target's segment file (<state_dir>/ledger) to check\n"
            "  --admin PATH         the target's admin socket: tenants' budgets read before and\n"
            "                       after the run (and conservation when there is no --ledger)\n"
            "  --timeline FILE      one CSV line per request: intended send time, class, outcome,\n"
            "                       status, TTFT and total latency, sent or not\n"
            "                       (scripts/plot-latency.sh draws it)\n"
            "  --secret-file PATH   HS256 secret to mint tokens with (overrides auth.secret_file)\n"
            "  --duration S         override duration_s\n"
            "  --max-requests N     override max_requests\n"
            "  --rate-scale X       multiply every open-loop rate by X (e.g. 0.2 on a slow build)\n"
            "  --progress | --quiet force the live progress line on or off (default: on a tty)\n");
}

int main(int argc, char **argv)
{
    struct lt_overrides ov = {0};
    const char *json = NULL, *timeline = NULL;
    int progress = isatty(STDERR_FILENO);
    static const struct option opts[] = {{"json", required_argument, 0, 'j'},
                                         {"target", required_argument, 0, 't'},
                                         {"ledger", required_argument, 0, 'l'},
                                         {"admin", required_argument, 0, 'a'},
                                         {"timeline", required_argument, 0, 'T'},
                                         {"secret-file", required_argument, 0, 's'},
                                         {"duration", required_argument, 0, 'd'},
                                         {"max-requests", required_argument, 0, 'n'},
                                         {"rate-scale", required_argument, 0, 'r'},
                                         {"progress", no_argument, 0, 'p'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = optarg;
            break;
        case 't':
            ov.target = optarg;
            break;
        case 'l':
            ov.ledger = optarg;
            break;
        case 'a':
            ov.admin = optarg;
            break;
        case 'T':
            timeline = optarg;
            break;
        case 's':
            ov.secret_file = optarg;
            break;
        case 'd':
            ov.duration_s = strtod(optarg, &end);
            if (*end || ov.duration_s <= 0 || ov.duration_s > 86400) {
                fprintf(stderr, "gpuwarden-load: --duration %s: expected seconds in (0, 86400]\n",
                        optarg);
                return 100;
            }
            break;
        case 'n':
            ov.max_requests = strtoull(optarg, &end, 10);
            if (*end || ov.max_requests == 0) {
                fprintf(stderr, "gpuwarden-load: --max-requests %s: expected a positive count\n",
                        optarg);
                return 100;
            }
            break;
        case 'r':
            ov.rate_scale = strtod(optarg, &end);
            if (*end || ov.rate_scale <= 0 || ov.rate_scale > 100) {
                fprintf(stderr, "gpuwarden-load: --rate-scale %s: expected a factor in (0, 100]\n",
                        optarg);
                return 100;
            }
            break;
        case 'p':
            progress = 1;
            break;
        case 'q':
            progress = 0;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 100;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 100;
    }
    static struct lt_scenario sc; /* large: classes hold their address lists */
    char err[1024];
    if (lt_scenario_load(&sc, argv[optind], &ov, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuwarden-load: %s\n", err);
        return 100;
    }
    if (timeline) {
        sc.timeline = fopen(timeline, "we");
        if (!sc.timeline) {
            fprintf(stderr, "gpuwarden-load: --timeline %s: %s\n", timeline, strerror(errno));
            lt_scenario_free(&sc);
            return 100;
        }
        fprintf(sc.timeline, "intended_s,class,outcome,status,ttft_ms,total_ms,sent\n");
    }
    static struct lt_ledger_result lr; /* large: before/after figures per tenant */
    lt_ledger_before(&sc, &lr);
    double elapsed = 0;
    int rc = lt_run(&sc, progress, &elapsed, err, sizeof(err));
    if (sc.timeline && fclose(sc.timeline) != 0) {
        fprintf(stderr, "gpuwarden-load: --timeline %s: %s\n", timeline, strerror(errno));
        rc = rc ? rc : -EIO;
        snprintf(err, sizeof(err), "--timeline %s: write failed", timeline);
    }
    sc.timeline = NULL;
    if (rc != 0) {
        fprintf(stderr, "gpuwarden-load: %s\n", err);
        lt_scenario_free(&sc);
        return 111;
    }
    lt_ledger_check(&sc, &lr);
    int failed = lt_thresholds_eval(&sc, &lr);
    lt_report_table(&sc, &lr, elapsed);
    fflush(stdout); /* the table before any complaint on stderr */
    if (json && lt_report_json(&sc, &lr, elapsed, json, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuwarden-load: %s\n", err);
        failed++;
    }
    if (lr.checked && !lr.conserved) {
        fprintf(stderr, "gpuwarden-load: ledger not conserved: %s\n", lr.detail);
        failed++;
    }
    if (lr.slots_dead_owner) {
        fprintf(stderr, "gpuwarden-load: %u slot%s owned by a dead process: %s\n",
                lr.slots_dead_owner, lr.slots_dead_owner == 1 ? "" : "s", lr.slots_detail);
        failed++;
    }
    if (lr.budget_over) {
        fprintf(stderr, "gpuwarden-load: %d tenant%s over budget: %s\n", lr.budget_over,
                lr.budget_over == 1 ? "" : "s", lr.budget_detail);
        failed++;
    }
    if (failed)
        fprintf(stderr, "gpuwarden-load: %d check%s failed\n", failed, failed == 1 ? "" : "s");
    lt_scenario_free(&sc);
    return failed ? 1 : 0;
}
