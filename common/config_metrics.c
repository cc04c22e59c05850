/* config_metrics.c - the "metrics" section: where GET /metrics is served
 * (its own listener, or the public ones), the bearer token it may require,
 * and how many tenants get their own series (docs/CONFIG.md, "metrics").
 * Absent: /metrics on the public listeners, no credential, the top 20
 * tenants by GPU time. */
#include "config_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* metrics.listen: "a.b.c.d:port" or "[IPv6]:port", not one of `listen`. */
static void parse_metrics_listen(struct gw_cfg_cx *c, json_t *o, struct gw_config *cfg)
{
    struct gw_metrics_cfg *m = &cfg->metrics;
    char s[sizeof(m->listen)], q[96];
    if (gw__cfg_get_string(c, o, "metrics", "listen", 0, s, sizeof(s)) != 1)
        return;
    const char *colon = strrchr(s, ':');
    size_t hl = colon ? (size_t)(colon - s) : 0;
    int v6 = hl >= 2 && s[0] == '[' && s[hl - 1] == ']';
    char host[64];
    unsigned char addr[16];
    uint64_t port;
    int okaddr = 0;
    if (colon && hl > 0 && hl < sizeof(host)) {
        memcpy(host, s + v6, hl - 2 * (size_t)v6);
        host[hl - 2 * (size_t)v6] = 0;
        okaddr = inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) == 1;
    }
    if (!okaddr) {
        gw__cfg_bad(c, "metrics.listen", "\"%s\": expected \"a.b.c.d:port\" or \"[IPv6]:port\"",
                    gw__cfg_shown(s, q));
        return;
    }
    if (gw__cfg_parse_count(colon + 1, 1, 65535, &port) != 0) {
        gw__cfg_bad(c, "metrics.listen", "\"%s\": port must be an integer in [1, 65535]",
                    gw__cfg_shown(s, q));
        return;
    }
    for (int i = 0; i < cfg->n_listen; i++)
        if (strcmp(cfg->listen[i], s) == 0) {
            gw__cfg_bad(c, "metrics.listen",
                        "\"%s\" is also in \"listen\": /metrics needs its own address",
                        gw__cfg_shown(s, q));
            return;
        }
    memcpy(m->listen, s, strlen(s) + 1);
}

/* metrics.bearer_token_file: the token's bytes, one trailing newline
 * dropped; 16 to GW_METRICS_TOKEN_MAX - 1 visible ASCII bytes (it travels
 * in an Authorization header). */
static void parse_metrics_token(struct gw_cfg_cx *c, json_t *o, struct gw_metrics_cfg *m)
{
    char path[256];
    const char *p = "metrics.bearer_token_file";
    if (gw__cfg_get_string(c, o, "metrics", "bearer_token_file", 0, path, sizeof(path)) != 1)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        gw__cfg_bad(c, p, "%s: %s", path, strerror(errno));
        return;
    }
    struct stat st;
    ssize_t n =
        fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, m->token, sizeof(m->token)) : -2;
    int e = errno;
    close(fd);
    if (n == -2) {
        gw__cfg_bad(c, p, "%s: not a regular file", path);
        n = 0;
    } else if (n < 0) {
        gw__cfg_bad(c, p, "%s: %s", path, strerror(e));
        n = 0;
    } else if ((size_t)n >= sizeof(m->token)) {
        gw__cfg_bad(c, p, "%s: longer than %d bytes", path, GW_METRICS_TOKEN_MAX - 1);
        n = 0;
    } else {
        if (n && m->token[n - 1] == '\n')
            n--;
        int visible = 1;
        for (ssize_t i = 0; i < n; i++)
            visible &= m->token[i] > 0x20 && m->token[i] < 0x7f;
        if (n < 16)
            gw__cfg_bad(c, p, "%s: %zd bytes; a token needs at least 16", path, n);
        else if (!visible)
            gw__cfg_bad(c, p, "%s: only visible ASCII (no spaces or control bytes) may be in it",
                        path);
    }
    m->token_len = c->mistakes ? 0 : (size_t)n;
    memset(m->token + m->token_len, 0, sizeof(m->token) - m->token_len);
}

void gw__cfg_parse_metrics(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"listen", "bearer_token_file", "tenants_top", "tenants_by",
                                       NULL};
    struct gw_metrics_cfg *m = &cfg->metrics;
    memset(m, 0, sizeof(*m));
    m->tenants_top = 20;
    m->tenants_by = GW_MT_BY_GPU;
    json_t *o = gw__cfg_get_object(c, root, "", "metrics", 0);
    if (!o)
        return;
    gw__cfg_check_keys(c, o, "metrics", keys);
    parse_metrics_listen(c, o, cfg);
    parse_metrics_token(c, o, m);
    gw__cfg_get_u32(c, o, "metrics", "tenants_top", 0, GW_METRICS_TOP_MAX, 0, &m->tenants_top);
    json_t *by = json_object_get(o, "tenants_by");
    if (by) {
        const char *s = json_is_string(by) ? json_string_value(by) : NULL;
        if (s && strcmp(s, "gpu_time") == 0)
            m->tenants_by = GW_MT_BY_GPU;
        else if (s && strcmp(s, "refusals") == 0)
            m->tenants_by = GW_MT_BY_REFUSALS;
        else
            gw__cfg_bad(c, "metrics.tenants_by", "expected \"gpu_time\" or \"refusals\"");
    }
}
