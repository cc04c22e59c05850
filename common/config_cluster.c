/* config_cluster.c - the "cluster" section: the farm's Redis, this node's
 * name in it, the lease sizes and timeouts, and what each plan does when
 * Redis cannot be reached (docs/CONFIG.md, "cluster"). Absent: the node
 * runs alone, exactly as without this file. */
#include "config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int gw_cluster_fail_mode(const struct gw_cluster_cfg *cl, const char *plan)
{
    for (int i = 0; i < cl->n_plan_modes; i++)
        if (strcmp(cl->plan_mode_name[i], plan) == 0)
            return cl->plan_mode[i];
    return cl->fail_mode;
}

/* "fail_open" or "fail_closed" at path p; -1 (reported) otherwise. */
static int fail_mode_of(struct gw_cfg_cx *c, json_t *v, const char *p)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s && strcmp(s, "fail_open") == 0)
        return GW_FAIL_OPEN;
    if (s && strcmp(s, "fail_closed") == 0)
        return GW_FAIL_CLOSED;
    gw__cfg_bad(c, p, "expected \"fail_open\" or \"fail_closed\"");
    return -1;
}

/* "host:port" or "[v6]:port" into the config. */
static void parse_address(struct gw_cfg_cx *c, json_t *o, struct gw_cluster_cfg *cl)
{
    char s[300], q[96];
    if (gw__cfg_get_string(c, o, "cluster", "redis", 1, s, sizeof(s)) != 1)
        return;
    char *colon = strrchr(s, ':');
    uint64_t port;
    if (!colon || colon == s || gw__cfg_parse_count(colon + 1, 1, 65535, &port) != 0) {
        gw__cfg_bad(c, "cluster.redis", "\"%s\": expected \"host:port\" or \"[IPv6]:port\"",
                    gw__cfg_shown(s, q));
        return;
    }
    *colon = '\0';
    const char *host = s;
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host++;
        s[hl - 1] = '\0';
    } else if (strchr(host, ':') || host[0] == '[') {
        *colon = ':';
        gw__cfg_bad(c, "cluster.redis", "\"%s\": an IPv6 address goes in brackets: \"[::1]:6379\"",
                    gw__cfg_shown(s, q));
        return;
    }
    size_t n = strlen(host);
    if (n >= sizeof(cl->redis_host)) {
        gw__cfg_bad(c, "cluster.redis", "host longer than %zu bytes", sizeof(cl->redis_host) - 1);
        return;
    }
    memcpy(cl->redis_host, host, n + 1);
    cl->redis_port = (int)port;
}

/* The password file's bytes (one trailing newline dropped). */
static void parse_password(struct gw_cfg_cx *c, json_t *o, struct gw_cluster_cfg *cl)
{
    char path[256];
    if (gw__cfg_get_string(c, o, "cluster", "password_file", 0, path, sizeof(path)) != 1)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0) {
        gw__cfg_bad(c, "cluster.password_file", "%s: %s", path, strerror(errno));
        return;
    }
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode)
                    ? read(fd, cl->password, sizeof(cl->password))
                    : -2;
    close(fd);
    if (n == -2) {
        gw__cfg_bad(c, "cluster.password_file", "%s: not a regular file", path);
    } else if (n < 0) {
        gw__cfg_bad(c, "cluster.password_file", "%s: %s", path, strerror(errno));
    } else if ((size_t)n >= sizeof(cl->password)) {
        gw__cfg_bad(c, "cluster.password_file", "%s: longer than %d bytes", path,
                    GW_CLUSTER_PASS_MAX - 1);
    } else {
        cl->password[n] = '\0';
        if (n && cl->password[n - 1] == '\n')
            cl->password[--n] = '\0';
        if (n == 0)
            gw__cfg_bad(c, "cluster.password_file", "%s: empty", path);
    }
    if (c->mistakes)
        memset(cl->password, 0, sizeof(cl->password));
}

/* cluster.plans: {"plan name": "fail_open" | "fail_closed"} */
static void parse_plan_modes(struct gw_cfg_cx *c, json_t *o, struct gw_config *cfg)
{
    struct gw_cluster_cfg *cl = &cfg->cluster;
    json_t *pm = gw__cfg_get_object(c, o, "cluster", "plans", 0);
    const char *name;
    json_t *v;
    char p[PATH_LEN], q[96];
    json_object_foreach (pm, name, v) {
        gw__cfg_path_key(p, "cluster.plans", name);
        int known = 0;
        for (int i = 0; i < cfg->n_plans; i++)
            known |= strcmp(cfg->plans[i].name, name) == 0;
        if (!known) {
            gw__cfg_bad(c, p, "\"%s\" is not a plan in \"plans\"", gw__cfg_shown(name, q));
            continue;
        }
        int m = fail_mode_of(c, v, p);
        if (m < 0 || cl->n_plan_modes >= GW_MAX_PLANS)
            continue;
        snprintf(cl->plan_mode_name[cl->n_plan_modes], GW_NAME_MAX, "%s", name);
        cl->plan_mode[cl->n_plan_modes++] = m;
    }
}

void gw__cfg_parse_cluster(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"redis",
                                       "node",
                                       "password_file",
                                       "prefix",
                                       "timeout_ms",
                                       "wait_ms",
                                       "lease_ttl_ms",
                                       "heartbeat_ms",
                                       "lease_percent",
                                       "lease_max",
                                       "lease_max_percent",
                                       "fail_mode",
                                       "plans",
                                       "global",
                                       NULL};
    struct gw_cluster_cfg *cl = &cfg->cluster;
    memset(cl, 0, sizeof(*cl));
    snprintf(cl->prefix, sizeof(cl->prefix), "gw");
    cl->timeout_ms = 200;
    cl->wait_ms = 1000;
    cl->lease_ttl_ms = 10000;
    cl->heartbeat_ms = 1000;
    cl->lease_percent = 5;
    cl->lease_max = 1000;
    cl->lease_max_percent = 20;
    cl->fail_mode = GW_FAIL_OPEN;
    cl->global_farm = 1;
    json_t *o = gw__cfg_get_object(c, root, "", "cluster", 0);
    if (!o)
        return;
    cl->enabled = 1;
    gw__cfg_check_keys(c, o, "cluster", keys);
    parse_address(c, o, cl);
    char q[96];
    if (gw__cfg_get_string(c, o, "cluster", "node", 1, cl->node, sizeof(cl->node)) == 1 &&
        !gw__cfg_name_ok(cl->node, "._-"))
        gw__cfg_bad(c, "cluster.node", "\"%s\": expected 1 to %d bytes of [A-Za-z0-9._-]",
                    gw__cfg_shown(cl->node, q), GW_NAME_MAX - 1);
    parse_password(c, o, cl);
    if (gw__cfg_get_string(c, o, "cluster", "prefix", 0, cl->prefix, sizeof(cl->prefix)) == 1 &&
        !gw__cfg_name_ok(cl->prefix, "._-"))
        gw__cfg_bad(c, "cluster.prefix", "\"%s\": expected 1 to 31 bytes of [A-Za-z0-9._-]",
                    gw__cfg_shown(cl->prefix, q));
    gw__cfg_get_u32(c, o, "cluster", "timeout_ms", 1, 10000, 0, &cl->timeout_ms);
    gw__cfg_get_u32(c, o, "cluster", "wait_ms", 1, 60000, 0, &cl->wait_ms);
    gw__cfg_get_u32(c, o, "cluster", "lease_ttl_ms", 100, 3600000, 0, &cl->lease_ttl_ms);
    gw__cfg_get_u32(c, o, "cluster", "heartbeat_ms", 10, 60000, 0, &cl->heartbeat_ms);
    gw__cfg_get_u32(c, o, "cluster", "lease_percent", 1, 100, 0, &cl->lease_percent);
    gw__cfg_get_u32(c, o, "cluster", "lease_max", 1, 1000000, 0, &cl->lease_max);
    gw__cfg_get_u32(c, o, "cluster", "lease_max_percent", 1, 100, 0, &cl->lease_max_percent);
    if (cl->lease_max_percent < cl->lease_percent)
        gw__cfg_bad(c, "cluster.lease_max_percent", "%u: must be at least lease_percent (%u)",
                    cl->lease_max_percent, cl->lease_percent);
    json_t *fm = json_object_get(o, "fail_mode");
    if (fm) {
        int m = fail_mode_of(c, fm, "cluster.fail_mode");
        if (m >= 0)
            cl->fail_mode = m;
    }
    parse_plan_modes(c, o, cfg);
    json_t *gv = json_object_get(o, "global");
    const char *gs = json_is_string(gv) ? json_string_value(gv) : NULL;
    if (gs && strcmp(gs, "node") == 0)
        cl->global_farm = 0;
    else if (gv && !(gs && strcmp(gs, "farm") == 0))
        gw__cfg_bad(c, "cluster.global", "%s%s%s: expected \"farm\" or \"node\"", gs ? "\"" : "",
                    gs ? gw__cfg_shown(gs, q) : "not a string", gs ? "\"" : "");
    /* A lease must outlive a round trip, or every one would expire on its
     * way back; the node's local expiry is the TTL less one timeout. */
    if (cl->lease_ttl_ms <= 2 * cl->timeout_ms)
        gw__cfg_bad(c, "cluster.lease_ttl_ms", "%u: must be more than twice timeout_ms (%u)",
                    cl->lease_ttl_ms, cl->timeout_ms);
    if (cl->heartbeat_ms * 3 > cl->lease_ttl_ms)
        gw__cfg_bad(c, "cluster.heartbeat_ms",
                    "%u: at most lease_ttl_ms / 3 (%u): a node's heartbeat key lives 3 periods",
                    cl->heartbeat_ms, cl->lease_ttl_ms / 3);
}
