/* log.c - one line per event on stderr, each written with a single
 * write(2) so that the lines of different processes never cut into each
 * other. Each line starts with its syslog priority ("<6>", sd-daemon
 * style): journald strips it and keeps the level. Text lines carry no time
 * (journald or the terminal adds one); JSON lines do, for shippers that
 * read the stream without journald. */
#include "gw_util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

/* Set once by each process after reading its config, before it forks
 * anything or starts threads that log; read-only afterwards. */
static int log_format = GW_LOG_TEXT;

void gw_log_set_format(int format)
{
    log_format = format == GW_LOG_JSON ? GW_LOG_JSON : GW_LOG_TEXT;
}

static const char *level_name(int level)
{
    switch (level) {
    case GW_LOG_ERR:
        return "error";
    case GW_LOG_WARNING:
        return "warning";
    case GW_LOG_NOTICE:
        return "notice";
    case GW_LOG_DEBUG:
        return "debug";
    default:
        return "info";
    }
}

struct out {
    char *buf;
    size_t cap, at; /* at <= cap - 2 always: room for '\n' and NUL */
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->at + n > o->cap - 2)
        n = o->cap - 2 - o->at;
    memcpy(o->buf + o->at, s, n);
    o->at += n;
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->at, o->cap - 1 - o->at, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    o->at += (size_t)n > o->cap - 2 - o->at ? o->cap - 2 - o->at : (size_t)n;
}

/* A JSON string (quotes included); control bytes as \u00XX. */
static void put_json_str(struct out *o, const char *s)
{
    put(o, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            put(o, e, 2);
        } else if (ch == '\n') {
            put(o, "\\n", 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            putf(o, "\\u%04x", ch);
        } else {
            put(o, (const char *)&ch, 1);
        }
    }
    put(o, "\"", 1);
}

/* A text field value: bare when it is one plain word, else JSON-quoted so
 * a value can never forge another field. */
static void put_text_value(struct out *o, const char *s)
{
    int plain = *s != '\0';
    for (const char *p = s; *p && plain; p++)
        plain = isalnum((unsigned char)*p) || strchr("._:@/-+", *p);
    if (plain)
        put(o, s, strlen(s));
    else
        put_json_str(o, s);
}

static void put_field_value(struct out *o, const struct gw_log_field *f, int json)
{
    if (f->str)
        json ? put_json_str(o, f->str) : put_text_value(o, f->str);
    else if (f->is_real)
        putf(o, "%.3f", f->real);
    else
        putf(o, "%lld", (long long)f->num);
}

/* "front 0" -> role "front", index 0; "master: watchdog" -> role "master",
 * part "watchdog". */
static void put_who_json(struct out *o, const char *who)
{
    size_t rl = strcspn(who, " :");
    char role[32];
    snprintf(role, sizeof(role), "%.*s", (int)(rl < 31 ? rl : 31), who);
    put(o, "\"role\":", 7);
    put_json_str(o, role);
    const char *rest = who + rl;
    if (*rest == ' ' && isdigit((unsigned char)rest[1])) {
        putf(o, ",\"index\":%ld", strtol(rest + 1, NULL, 10));
    } else if (*rest == ':') {
        rest++;
        while (*rest == ' ')
            rest++;
        if (*rest) {
            put(o, ",\"part\":", 8);
            put_json_str(o, rest);
        }
    }
}

size_t gw_log_format(char *buf, size_t cap, int format, int level, const char *who, uint64_t now_us,
                     int pid, const struct gw_log_field *fields, int n_fields, const char *msg)
{
    if (cap < 16)
        return 0;
    struct out o = {.buf = buf, .cap = cap};
    if (level < GW_LOG_ERR || level > GW_LOG_DEBUG)
        level = GW_LOG_INFO;
    putf(&o, "<%d>", level);
    if (format == GW_LOG_JSON) {
        time_t s = (time_t)(now_us / 1000000);
        struct tm tm;
        gmtime_r(&s, &tm);
        char ts[40];
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        putf(&o, "{\"time\":\"%s.%03uZ\",\"level\":\"%s\",", ts, (unsigned)(now_us / 1000 % 1000),
             level_name(level));
        put_who_json(&o, who);
        putf(&o, ",\"pid\":%d,\"msg\":", pid);
        put_json_str(&o, msg);
        for (int i = 0; i < n_fields; i++) {
            put(&o, ",", 1);
            put_json_str(&o, fields[i].key);
            put(&o, ":", 1);
            put_field_value(&o, &fields[i], 1);
        }
        /* a line cut at the limit must still end the object */
        if (o.at > cap - 3)
            o.at = cap - 3;
        put(&o, "}", 1);
    } else {
        putf(&o, "gpuwarden[%s]: %s", who, msg);
        for (int i = 0; i < n_fields; i++) {
            putf(&o, " %s=", fields[i].key);
            put_field_value(&o, &fields[i], 0);
        }
    }
    buf[o.at++] = '\n';
    buf[o.at] = '\0';
    return o.at;
}

void gw_vlogl(int level, const char *who, const struct gw_log_field *fields, int n_fields,
              const char *fmt, va_list ap)
{
    char msg[LINE_MAX_BYTES / 2], line[LINE_MAX_BYTES];
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        return;
    if (log_format == GW_LOG_TEXT) /* one event, one line */
        for (char *p = msg; (p = strchr(p, '\n'));)
            *p = ' ';
    size_t len = gw_log_format(line, sizeof(line), log_format, level, who, gw_now_us(),
                               (int)getpid(), fields, n_fields, msg);
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere left to report a failed log write */
}

void gw_logf(int level, const char *who, const struct gw_log_field *fields, int n_fields,
             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_vlogl(level, who, fields, n_fields, fmt, ap);
    va_end(ap);
}

void gw_vlog(const char *who, const char *fmt, va_list ap)
{
    gw_vlogl(GW_LOG_INFO, who, NULL, 0, fmt, ap);
}

void gw_log(const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_vlogl(GW_LOG_INFO, who, NULL, 0, fmt, ap);
    va_end(ap);
}
