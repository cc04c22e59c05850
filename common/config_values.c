/* config_values.c - the config checker's tools: mistakes reported with their
 * JSON path, typed getters with ranges, names, and the small value formats
 * (counts, rate windows "N per unit [burst M]", GPU-time budgets
 * "X GPU-seconds per unit"). gw_window_parse and gw_budget_parse are public
 * (the admin socket parses the same strings); the rest is shared by the
 * config's files through config_internal.h.
 */
#include "config_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* --------------------------------------------------------- error reporting */

void gw__cfg_bad(struct gw_cfg_cx *c, const char *path, const char *fmt, ...)
{
    char line[640];
    int k = snprintf(line, sizeof(line), "config: %s: ", path);
    if (k < 0 || (size_t)k >= sizeof(line))
        k = (int)sizeof(line) - 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
    va_end(ap);
    c->mistakes++;
    if (!c->err || c->errlen == 0)
        return;
    size_t n = strlen(line), sep = c->used ? 1 : 0;
    if (c->used + sep + n + 1 > c->errlen)
        return;
    if (sep)
        c->err[c->used++] = '\n';
    memcpy(c->err + c->used, line, n + 1);
    c->used += n;
}

/* A value quoted for a message: at most 80 bytes, control bytes as '?', so
 * one mistake stays one line whatever the file holds. */
const char *gw__cfg_shown(const char *s, char buf[96])
{
    size_t i = 0;
    for (; s[i] && i < 80; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = 0;
    return buf;
}

/* Paths longer than PATH_LEN are cut; the message still names where. */
void gw__cfg_path_key(char out[PATH_LEN], const char *base, const char *key)
{
    int n =
        base[0] ? snprintf(out, PATH_LEN, "%s.%s", base, key) : snprintf(out, PATH_LEN, "%s", key);
    if (n < 0)
        out[0] = 0;
}

void gw__cfg_path_idx(char out[PATH_LEN], const char *base, size_t i)
{
    if (snprintf(out, PATH_LEN, "%s[%zu]", base, i) < 0)
        out[0] = 0;
}

/* --------------------------------------------------------- typed getters */

/* Each getter returns 1 when the key is present and valid (the value is
 * stored), 0 when it is absent (the default stays), -1 when it is present
 * but wrong (reported). */

void gw__cfg_check_keys(struct gw_cfg_cx *c, json_t *obj, const char *base,
                        const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach (obj, key, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(*a, key) == 0;
        if (!ok) {
            char p[PATH_LEN];
            gw__cfg_path_key(p, base, key);
            gw__cfg_bad(c, p, "unknown key");
        }
    }
}

json_t *gw__cfg_get_object(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                           int required)
{
    char p[PATH_LEN];
    gw__cfg_path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            gw__cfg_bad(c, p, "missing (required)");
        return NULL;
    }
    if (!json_is_object(v)) {
        gw__cfg_bad(c, p, "expected an object");
        return NULL;
    }
    return v;
}

int gw__cfg_get_u64(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                    uint64_t lo, uint64_t hi, int pow2, uint64_t *out)
{
    char p[PATH_LEN];
    gw__cfg_path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (!json_is_integer(v) || x < 0 || (uint64_t)x < lo || (uint64_t)x > hi ||
        (pow2 && (x & (x - 1)) != 0)) {
        gw__cfg_bad(c, p, "expected %s in [%" PRIu64 ", %" PRIu64 "]",
                    pow2 ? "a power of two" : "an integer", lo, hi);
        return -1;
    }
    *out = (uint64_t)x;
    return 1;
}

int gw__cfg_get_u32(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                    uint32_t lo, uint32_t hi, int pow2, uint32_t *out)
{
    uint64_t x;
    int rc = gw__cfg_get_u64(c, obj, base, key, lo, hi, pow2, &x);
    if (rc == 1)
        *out = (uint32_t)x;
    return rc;
}

int gw__cfg_get_int(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key, int lo,
                    int hi, int *out)
{
    uint64_t x;
    int rc = gw__cfg_get_u64(c, obj, base, key, (uint64_t)lo, (uint64_t)hi, 0, &x);
    if (rc == 1)
        *out = (int)x;
    return rc;
}

int gw__cfg_get_int_auto(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                         int lo, int hi, int *out)
{
    char p[PATH_LEN];
    gw__cfg_path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x != 0 && (x < lo || x > hi)) {
        gw__cfg_bad(c, p, "expected 0 (auto) or an integer in [%d, %d]", lo, hi);
        return -1;
    }
    *out = (int)x;
    return 1;
}

int gw__cfg_get_number(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                       double hi, double *out)
{
    char p[PATH_LEN];
    gw__cfg_path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    /* JSON has no NaN or infinity, so a number is finite here. */
    double x = json_is_number(v) ? json_number_value(v) : -1.0;
    if (!(x > 0.0 && x <= hi)) {
        gw__cfg_bad(c, p, "expected a number > 0 and <= %g", hi);
        return -1;
    }
    *out = x;
    return 1;
}

/* A string of 1 .. outlen-1 bytes. */
int gw__cfg_get_string(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                       int required, char *out, size_t outlen)
{
    char p[PATH_LEN];
    gw__cfg_path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) {
            gw__cfg_bad(c, p, "missing (required)");
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= outlen ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        gw__cfg_bad(c, p, "expected a string of 1 to %zu bytes", outlen - 1);
        return -1;
    }
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 1;
}

/* Names of plans, tenants and keys: they appear in JSON paths, metrics and
 * the ledger, so keep them printable and unambiguous. */
int gw__cfg_name_ok(const char *s, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n >= GW_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
            return 0;
    return 1;
}

/* ------------------------------------------------------- windows, budgets */

static int unit_us(const char *w, uint64_t *us)
{
    static const struct {
        const char *name;
        uint64_t us;
    } units[] = {{"second", SEC_US},
                 {"minute", 60 * SEC_US},
                 {"hour", 3600 * SEC_US},
                 {"day", 86400 * SEC_US}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(w, units[i].name) == 0) {
            *us = units[i].us;
            return 0;
        }
    return -EINVAL;
}

/* Digits only (no sign, no space), value in [lo, hi]. */
int gw__cfg_parse_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!*s || strlen(s) > 10)
        return -EINVAL;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    if (x < lo || x > hi)
        return -EINVAL;
    *out = x;
    return 0;
}

/* Splits s on single or repeated spaces into at most max words. */
static int split_words(const char *s, char *buf, size_t buflen, char **words, int max)
{
    size_t n = strlen(s);
    if (n >= buflen)
        return -EINVAL;
    memcpy(buf, s, n + 1);
    int k = 0;
    char *save = NULL;
    for (char *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (k == max)
            return -EINVAL;
        words[k++] = w;
    }
    return k;
}

#define COUNT_MAX 1000000000ull

int gw_window_parse(const char *s, struct gw_window *w)
{
    char buf[128];
    char *t[5];
    if (!s || !w)
        return -EINVAL;
    int n = split_words(s, buf, sizeof(buf), t, 5);
    if (n != 3 && n != 4 && n != 5)
        return -EINVAL;
    struct gw_window x = {0};
    if (gw__cfg_parse_count(t[0], 1, COUNT_MAX, &x.limit) || strcmp(t[1], "per") != 0 ||
        unit_us(t[2], &x.period_us))
        return -EINVAL;
    if (n == 4 && strcmp(t[3], "moving") != 0)
        return -EINVAL;
    x.moving = n == 4;
    if (n == 5 && (strcmp(t[3], "burst") != 0 || gw__cfg_parse_count(t[4], 0, COUNT_MAX, &x.burst)))
        return -EINVAL;
    struct gw_rate r;
    if (x.moving && gw_rate_make_moving(&r, x.limit, x.period_us) != 0)
        return -EDOM;
    int rc = gw_window_rate(&x, &r);
    if (rc)
        return rc; /* -ERANGE: the burst does not fit the cell's arithmetic */
    *w = x;
    return 0;
}

int gw_budget_parse(const char *s, struct gw_budget_rate *b)
{
    char buf[128];
    char *t[4];
    if (!s || !b)
        return -EINVAL;
    if (split_words(s, buf, sizeof(buf), t, 4) != 4 || strcmp(t[1], "GPU-seconds") != 0 ||
        strcmp(t[2], "per") != 0)
        return -EINVAL;
    struct gw_budget_rate x;
    if (unit_us(t[3], &x.period_us))
        return -EINVAL;
    /* X = digits [ "." 1..6 digits ]: exact in microseconds, no floating
     * point, so "0.1" is 100000 us and not 99999. */
    const char *p = t[0];
    uint64_t whole = 0, frac = 0;
    int nd = 0, nf = 0;
    for (; *p >= '0' && *p <= '9'; p++, nd++) {
        if (nd == 10)
            return -EINVAL;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (nd == 0)
        return -EINVAL;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, nf++) {
            if (nf == 6)
                return -EINVAL;
            frac = frac * 10 + (uint64_t)(*p - '0');
        }
        if (nf == 0)
            return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    for (int i = nf; i < 6; i++)
        frac *= 10;
    if (whole > COUNT_MAX)
        return -EINVAL;
    x.amount_us = whole * SEC_US + frac;
    if (x.amount_us == 0)
        return -EINVAL;
    *b = x;
    return 0;
}
