/* audit.c - what the master's watchdog and a worker's output guard share
 * about a kill: reason names, the cancel word that carries a reason, the
 * repetition words a worker publishes, and the audit log's JSON lines
 * (written with O_APPEND by whichever process decided the kill). */
#include "gw_common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MS UINT64_C(1000000)

static const char *const reason_names[GW_WD_REASONS] = {
    "max_tokens",        "wall_time",        "device_time",        "repetition",
    "divergence",        "anomalous_length", "worker_stalled",     "output_guard",
    "unbounded_request", "near_repetition",  "collapsed_sampling",
};

const char *gw_wd_reason_name(int reason)
{
    return reason >= 0 && reason < GW_WD_REASONS ? reason_names[reason] : "watchdog";
}

int gw_wd_reason_of_cancel(uint32_t cancel)
{
    if (cancel < GW_CANCEL_WATCHDOG || cancel >= GW_CANCEL_WATCHDOG + GW_WD_REASONS)
        return -1;
    return (int)(cancel - GW_CANCEL_WATCHDOG);
}

static uint64_t cover(uint64_t rep)
{
    return (uint64_t)GW_REP_PERIOD(rep) * GW_REP_COUNT(rep);
}

static uint64_t sat16(uint64_t v)
{
    return v > 0xffff ? 0xffff : v;
}

uint64_t gw_wd_rep_word(uint32_t period, uint64_t count, uint64_t run, int near, uint32_t top1)
{
    return GW_REP_WORD(period > 0xffff ? 0xffff : period, sat16(count), sat16(run),
                       near ? GW_REP_NEAR : 0, top1 > 0xff ? 0xff : top1);
}

uint64_t gw_wd_rep_fold(uint64_t rep_max, uint64_t rep)
{
    /* near words say nothing of an exact cycle: divergence reads exact ones */
    if (GW_REP_KIND(rep) & GW_REP_NEAR)
        return rep_max;
    return cover(rep) > cover(rep_max) ? rep : rep_max;
}

/* Appends s[0, n) to buf as the inside of a JSON string; bytes that are not
 * UTF-8 become U+FFFD. */
static size_t json_str(char *buf, size_t at, size_t len, const char *s, size_t n)
{
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (at + 1 < len)                                                                          \
            buf[at++] = (c);                                                                       \
    } while (0)
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
            if (k == 1 || i + k > n || !gw_utf8_valid(s + i, k)) {
                const char *fffd = "\xef\xbf\xbd";
                for (int j = 0; j < 3; j++)
                    PUT(fffd[j]);
                i++;
                continue;
            }
            for (size_t j = 0; j < k; j++)
                PUT(s[i + j]);
            i += k;
            continue;
        }
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c == '\n') {
            PUT('\\');
            PUT('n');
        } else if (c == '\r') {
            PUT('\\');
            PUT('r');
        } else if (c == '\t') {
            PUT('\\');
            PUT('t');
        } else if (c < 0x20 || c == 0x7f) {
            char u[8];
            snprintf(u, sizeof(u), "\\u%04x", c);
            for (int j = 0; u[j]; j++)
                PUT(u[j]);
        } else {
            PUT((char)c);
        }
        i++;
    }
#undef PUT
    return at;
}

/* Moves `at` on by what snprintf wrote (n), clamped to the buffer. */
static size_t advance(size_t at, size_t len, int n)
{
    return n < 0 || (size_t)n >= len - at ? len - 1 : at + (size_t)n;
}

/* `,"key":"value"` with value escaped (json_str). */
static size_t put_kv(char *buf, size_t at, size_t len, const char *key, const char *v, size_t n)
{
    at = advance(at, len, snprintf(buf + at, len - at, ",\"%s\":\"", key));
    at = json_str(buf, at, len, v, n);
    return advance(at, len, snprintf(buf + at, len - at, "\""));
}

/* What every audit line starts with: {"time":..,"request_id":..,"tenant":..,
 * "ip":.. (no closing brace). */
static size_t line_head(char *buf, size_t len, uint64_t now_us, const char *id, size_t id_len,
                        const char *tenant, size_t tenant_len, const char *ip, size_t ip_len)
{
    char when[48];
    time_t secs = (time_t)(now_us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof(when) - w, ".%03uZ", (unsigned)(now_us / 1000u % 1000u));
    size_t at = advance(0, len, snprintf(buf, len, "{\"time\":\"%s\"", when));
    at = put_kv(buf, at, len, "request_id", id, id_len);
    at = put_kv(buf, at, len, "tenant", tenant, tenant_len);
    return put_kv(buf, at, len, "ip", ip, ip_len);
}

size_t gw_audit_format(char *buf, size_t len, uint64_t now_us, const struct gw_slot_req *req,
                       int reason, uint64_t tokens, uint64_t device_ns, const char *out,
                       size_t out_len)
{
    if (!buf || len < 2)
        return 0;
    /* the last 200 characters: back up over 200 lead bytes */
    size_t from = out_len, chars = 0;
    while (from > 0 && chars < 200) {
        from--;
        if (((unsigned char)out[from] & 0xc0) != 0x80)
            chars++;
    }
    size_t at = line_head(buf, len, now_us, req->id, strnlen(req->id, sizeof(req->id)), req->tenant,
                          strnlen(req->tenant, sizeof(req->tenant)), req->ip,
                          strnlen(req->ip, sizeof(req->ip)));
    at = advance(at, len,
                 snprintf(buf + at, len - at,
                          ",\"reason\":\"%s\",\"tokens\":%" PRIu64 ",\"device_ms\":%" PRIu64,
                          gw_wd_reason_name(reason), tokens, device_ns / MS));
    at = put_kv(buf, at, len, "output_tail", out + from, out_len - from);
    at = advance(at, len, snprintf(buf + at, len - at, "}\n"));
    buf[at] = '\0';
    return at;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

size_t gw_audit_format_event(char *buf, size_t len, uint64_t now_us, const struct gw_audit_event *e)
{
    if (!buf || len < 2 || !e)
        return 0;
    size_t at = line_head(buf, len, now_us, e->request_id, slen(e->request_id), e->tenant,
                          slen(e->tenant), e->ip, slen(e->ip));
    if (e->user)
        at = put_kv(buf, at, len, "user", e->user, strlen(e->user));
    at = put_kv(buf, at, len, "event", e->event, slen(e->event));
    if (e->rule) {
        at = put_kv(buf, at, len, "rule", e->rule, strlen(e->rule));
        at = advance(at, len, snprintf(buf + at, len - at, ",\"count\":%" PRIu64, e->count));
    }
    if (e->killed_reason)
        at = put_kv(buf, at, len, "killed_reason", e->killed_reason, strlen(e->killed_reason));
    at = advance(at, len, snprintf(buf + at, len - at, "}\n"));
    buf[at] = '\0';
    return at;
}

int gw_audit_path(const struct gw_config *cfg, char *buf, size_t len)
{
    int n = cfg->audit_log[0]
                ? snprintf(buf, len, "%s", cfg->audit_log)
                : snprintf(buf, len, "%s/audit.log", cfg->state_dir[0] ? cfg->state_dir : ".");
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int gw_audit_open(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
}

int gw_audit_append(const char *path, const char *line, size_t len)
{
    int fd = gw_audit_open(path);
    if (fd < 0)
        return -errno;
    /* one write with O_APPEND: lines from the master and the workers never
     * interleave within a line */
    ssize_t w = write(fd, line, len);
    int rc = w == (ssize_t)len ? 0 : w < 0 ? -errno : -EIO;
    close(fd);
    return rc;
}
