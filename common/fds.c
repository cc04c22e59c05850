/* fds.c - the descriptors a child inherits, as text in GW_FDS. */
#include "gw_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int put_list(char *buf, size_t len, size_t *at, const char *name, const int *v, int n)
{
    int w = snprintf(buf + *at, len - *at, "%s%s=", *at ? ";" : "", name);
    if (w < 0 || (size_t)w >= len - *at)
        return -ENOSPC;
    *at += (size_t)w;
    for (int i = 0; i < n; i++) {
        w = snprintf(buf + *at, len - *at, "%s%d", i ? "," : "", v[i]);
        if (w < 0 || (size_t)w >= len - *at)
            return -ENOSPC;
        *at += (size_t)w;
    }
    return 0;
}

int gw_fds_format(const struct gw_fds *fds, char *buf, size_t len)
{
    size_t at = 0;
    if (len == 0)
        return -ENOSPC;
    buf[0] = '\0';
    int rc = put_list(buf, len, &at, "listen", fds->listen, fds->n_listen);
    if (rc == 0)
        rc = put_list(buf, len, &at, "work", &fds->work, 1);
    if (rc == 0)
        rc = put_list(buf, len, &at, "fronts", fds->fronts, fds->n_fronts);
    if (rc == 0 && fds->metrics >= 0)
        rc = put_list(buf, len, &at, "metrics", &fds->metrics, 1);
    return rc;
}

static int parse_list(const char *s, size_t n, int *out, int max, int *count, const char *name,
                      char *err, size_t errlen)
{
    *count = 0;
    size_t i = 0;
    while (i < n) {
        char *end;
        errno = 0;
        long v = strtol(s + i, &end, 10);
        size_t used = (size_t)(end - (s + i));
        if (used == 0 || errno || v < 0 || v > 65535 || (i + used < n && s[i + used] != ',')) {
            snprintf(err, errlen, "GW_FDS: %s: expected comma-separated descriptor numbers", name);
            return -EINVAL;
        }
        if (*count >= max) {
            snprintf(err, errlen, "GW_FDS: %s: more than %d descriptors", name, max);
            return -EINVAL;
        }
        if (fcntl((int)v, F_GETFD) < 0) {
            snprintf(err, errlen, "GW_FDS: %s: descriptor %ld is not open", name, v);
            return -EBADF;
        }
        out[(*count)++] = (int)v;
        i += used + 1;
    }
    return 0;
}

int gw_fds_parse(const char *text, struct gw_fds *fds, char *err, size_t errlen)
{
    memset(fds, 0, sizeof(*fds));
    fds->work = -1;
    fds->metrics = -1;
    if (!text) {
        snprintf(err, errlen, "GW_FDS is not set (children are started by the gpuwarden master)");
        return -EINVAL;
    }
    const char *p = text;
    while (*p) {
        const char *semi = strchr(p, ';');
        size_t n = semi ? (size_t)(semi - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq) {
            snprintf(err, errlen, "GW_FDS: \"%.*s\": expected name=numbers", (int)n, p);
            return -EINVAL;
        }
        size_t kl = (size_t)(eq - p), vl = n - kl - 1;
        int rc, one = 0;
        if (kl == 6 && !memcmp(p, "listen", 6))
            rc = parse_list(eq + 1, vl, fds->listen, GW_MAX_LISTEN, &fds->n_listen, "listen", err,
                            errlen);
        else if (kl == 4 && !memcmp(p, "work", 4))
            rc = parse_list(eq + 1, vl, &fds->work, 1, &one, "work", err, errlen);
        else if (kl == 7 && !memcmp(p, "metrics", 7))
            rc = parse_list(eq + 1, vl, &fds->metrics, 1, &one, "metrics", err, errlen);
        else if (kl == 6 && !memcmp(p, "fronts", 6))
            rc = parse_list(eq + 1, vl, fds->fronts, GW_MAX_FRONTS, &fds->n_fronts, "fronts", err,
                            errlen);
        else {
            snprintf(err, errlen, "GW_FDS: unknown name \"%.*s\"", (int)kl, p);
            return -EINVAL;
        }
        if (rc != 0)
            return rc;
        p += n + (semi ? 1 : 0);
    }
    if (fds->work < 0) {
        snprintf(err, errlen, "GW_FDS: work= is missing");
        return -EINVAL;
    }
    return 0;
}

int gw_segment_path(const struct gw_config *cfg, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/ledger", cfg->state_dir[0] ? cfg->state_dir : ".");
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
