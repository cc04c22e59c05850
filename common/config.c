/* config.c - the one JSON file that describes a node, checked completely.
 *
 * Every mistake is reported, not just the first: an operator fixing a config
 * by trial and error should need one run, not one per mistake. Each report
 * is one line "config: <json path>: <problem>" and names what would be
 * accepted. Unknown keys are mistakes (a misspelt limit that silently does
 * nothing is worse than a refusal). Every number has a range, everything
 * optional has a default; docs/CONFIG.md lists both.
 *
 * Relative paths (state_dir, model.path, key files, admin.socket) are used
 * as written, so they resolve against the working directory of the process.
 */
#include "gw_common.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEC_US 1000000ull
#define KEY_FILE_MAX 65536 /* a key file larger than this is not a key */
#define TENANTS_MAX 100000
#define PATH_LEN 192 /* a JSON path in a message */

/* --------------------------------------------------------- error reporting */

/* Collects mistakes. Only whole lines go into err; lines that do not fit are
 * counted but dropped (the caller still gets -EINVAL). */
struct cx {
    char *err;
    size_t errlen;
    size_t used;
    int mistakes;
    struct gw_config *cfg; /* being filled (plans' own pattern lists go into it) */
};

static void bad(struct cx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bad(struct cx *c, const char *path, const char *fmt, ...)
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
static const char *shown(const char *s, char buf[96])
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
static void path_key(char out[PATH_LEN], const char *base, const char *key)
{
    int n =
        base[0] ? snprintf(out, PATH_LEN, "%s.%s", base, key) : snprintf(out, PATH_LEN, "%s", key);
    if (n < 0)
        out[0] = 0;
}

static void path_idx(char out[PATH_LEN], const char *base, size_t i)
{
    if (snprintf(out, PATH_LEN, "%s[%zu]", base, i) < 0)
        out[0] = 0;
}

/* --------------------------------------------------------- typed getters */

/* Each getter returns 1 when the key is present and valid (the value is
 * stored), 0 when it is absent (the default stays), -1 when it is present
 * but wrong (reported). */

static void check_keys(struct cx *c, json_t *obj, const char *base, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(*a, key) == 0;
        if (!ok) {
            char p[PATH_LEN];
            path_key(p, base, key);
            bad(c, p, "unknown key");
        }
    }
}

static json_t *get_object(struct cx *c, json_t *obj, const char *base, const char *key,
                          int required)
{
    char p[PATH_LEN];
    path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            bad(c, p, "missing (required)");
        return NULL;
    }
    if (!json_is_object(v)) {
        bad(c, p, "expected an object");
        return NULL;
    }
    return v;
}

static int get_u64(struct cx *c, json_t *obj, const char *base, const char *key, uint64_t lo,
                   uint64_t hi, int pow2, uint64_t *out)
{
    char p[PATH_LEN];
    path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (!json_is_integer(v) || x < 0 || (uint64_t)x < lo || (uint64_t)x > hi ||
        (pow2 && (x & (x - 1)) != 0)) {
        bad(c, p, "expected %s in [%" PRIu64 ", %" PRIu64 "]",
            pow2 ? "a power of two" : "an integer", lo, hi);
        return -1;
    }
    *out = (uint64_t)x;
    return 1;
}

static int get_u32(struct cx *c, json_t *obj, const char *base, const char *key, uint32_t lo,
                   uint32_t hi, int pow2, uint32_t *out)
{
    uint64_t x;
    int rc = get_u64(c, obj, base, key, lo, hi, pow2, &x);
    if (rc == 1)
        *out = (uint32_t)x;
    return rc;
}

static int get_int(struct cx *c, json_t *obj, const char *base, const char *key, int lo, int hi,
                   int *out)
{
    uint64_t x;
    int rc = get_u64(c, obj, base, key, (uint64_t)lo, (uint64_t)hi, 0, &x);
    if (rc == 1)
        *out = (int)x;
    return rc;
}

/* A string of 1 .. outlen-1 bytes. */
static int get_string(struct cx *c, json_t *obj, const char *base, const char *key, int required,
                      char *out, size_t outlen)
{
    char p[PATH_LEN];
    path_key(p, base, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) {
            bad(c, p, "missing (required)");
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= outlen ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        bad(c, p, "expected a string of 1 to %zu bytes", outlen - 1);
        return -1;
    }
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 1;
}

/* Names of plans, tenants and keys: they appear in JSON paths, metrics and
 * the ledger, so keep them printable and unambiguous. */
static int name_ok(const char *s, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n >= GW_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
            return 0;
    return 1;
}

/* The characters a tenant id (JWT sub) may hold; auth.c checks the same. */
#define TENANT_CHARS "._@:-"
#define PLAN_CHARS "._-"

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
static int parse_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
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
    if (n != 3 && n != 5)
        return -EINVAL;
    struct gw_window x = {0};
    if (parse_count(t[0], 1, COUNT_MAX, &x.limit) || strcmp(t[1], "per") != 0 ||
        unit_us(t[2], &x.period_us))
        return -EINVAL;
    if (n == 5 && (strcmp(t[3], "burst") != 0 || parse_count(t[4], 0, COUNT_MAX, &x.burst)))
        return -EINVAL;
    struct gw_rate r;
    int rc = gw_rate_make(&r, x.limit, x.period_us, x.burst);
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

/* ------------------------------------------------------------------ plans */

#define WINDOW_FORM "\"N per second|minute|hour|day [burst M]\""
#define BUDGET_FORM "\"X GPU-seconds per second|minute|hour|day\""

/* The keys a plan may hold, and which of them a given section allows. */
enum { PK_RATE = 1, PK_BUDGET = 2, PK_INFLIGHT = 4, PK_TOKENS = 8, PK_ON_BUDGET = 16, PK_WATCHDOG = 32 };
#define PK_ALL (PK_RATE | PK_BUDGET | PK_INFLIGHT | PK_TOKENS | PK_ON_BUDGET | PK_WATCHDOG)

static void parse_rates(struct cx *c, json_t *arr, const char *p, struct gw_plan *pl)
{
    char q[96], pi[PATH_LEN];
    if (!json_is_array(arr)) {
        bad(c, p, "expected an array of " WINDOW_FORM " strings");
        return;
    }
    if (json_array_size(arr) > GW_RATE_CELLS) {
        bad(c, p, "%zu windows; at most %d", json_array_size(arr), GW_RATE_CELLS);
        return;
    }
    int n = 0;
    struct gw_window w[GW_RATE_CELLS];
    size_t i;
    json_t *v;
    int ok = 1;
    json_array_foreach(arr, i, v)
    {
        path_idx(pi, p, i);
        if (!json_is_string(v)) {
            bad(c, pi, "expected a string " WINDOW_FORM);
            ok = 0;
            continue;
        }
        int rc = gw_window_parse(json_string_value(v), &w[n]);
        if (rc == -ERANGE) {
            bad(c, pi, "\"%s\": burst too large for the window", shown(json_string_value(v), q));
            ok = 0;
        } else if (rc) {
            bad(c, pi, "\"%s\": expected " WINDOW_FORM, shown(json_string_value(v), q));
            ok = 0;
        } else {
            n++;
        }
    }
    if (ok) {
        pl->n_windows = n;
        memcpy(pl->windows, w, sizeof(w[0]) * (size_t)n);
    }
}

/* Fills pl from the keys of obj that `allowed` names (absent keys leave pl
 * as it is, so a tenant's overrides are parsed onto a copy of its plan). */
/* ---------------------------------------------------------------- watchdog */

static void check_pattern(struct cx *c, const char *p, const char *pattern, uint32_t options);

/* "unbounded_patterns": an array of at most GW_UNBOUNDED_MAX PCRE2 patterns
 * (each 1..255 bytes, compiled caseless) into *out. 1 when present and
 * valid, 0 when absent, -1 when wrong (reported, every bad element named). */
static int parse_pattern_list(struct cx *c, json_t *o, const char *base, const char *key,
                              struct gw_pattern_list *out)
{
    char p[PATH_LEN], pi[PATH_LEN];
    path_key(p, base, key);
    json_t *a = json_object_get(o, key);
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > GW_UNBOUNDED_MAX) {
        bad(c, p, "expected an array of at most %d patterns", GW_UNBOUNDED_MAX);
        return -1;
    }
    int before = c->mistakes;
    memset(out, 0, sizeof(*out));
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        path_idx(pi, p, i);
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= GW_UNBOUNDED_LEN ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            bad(c, pi, "expected a PCRE2 pattern of 1 to %d bytes", GW_UNBOUNDED_LEN - 1);
            continue;
        }
        check_pattern(c, pi, json_string_value(v), PCRE2_CASELESS);
        snprintf(out->pattern[out->n++], GW_UNBOUNDED_LEN, "%s", json_string_value(v));
    }
    return c->mistakes == before ? 1 : -1;
}

/* A plan's or tenant's own "unbounded_patterns": appended to
 * cfg->unb_lists, and l->unb_list names it. */
static void parse_own_patterns(struct cx *c, json_t *o, const char *base, struct gw_wd_limits *l)
{
    struct gw_pattern_list list;
    if (parse_pattern_list(c, o, base, "unbounded_patterns", &list) != 1 || !c->cfg)
        return;
    struct gw_config *cfg = c->cfg;
    struct gw_pattern_list *n =
        realloc(cfg->unb_lists, (size_t)(cfg->n_unb_lists + 1) * sizeof(*n));
    if (!n) {
        bad(c, base, "out of memory");
        return;
    }
    cfg->unb_lists = n;
    cfg->unb_lists[cfg->n_unb_lists++] = list;
    l->unb_list = (uint32_t)cfg->n_unb_lists;
}

/* The limit keys of a "watchdog" object (node level and per plan):
 *   "max_tokens", "wall_time_ms", "device_time_ms",
 *   "repetition": {"max_period", "min_count", "min_tokens"},
 *   "divergence": {"max_period", "min_tokens"}.
 * In a plan, 0 means "the node's value". */
static void parse_wd_limits(struct cx *c, json_t *o, const char *p, struct gw_wd_limits *l)
{
    static const char *const rep_keys[] = {"max_period", "min_count", "min_tokens", NULL};
    static const char *const div_keys[] = {"max_period", "min_tokens", NULL};
    static const char *const len_keys[] = {"floor_tokens", "factor", "warmup", NULL};
    char q[PATH_LEN];
    get_u32(c, o, p, "max_tokens", 0, 1u << 24, 0, &l->max_tokens);
    get_u32(c, o, p, "wall_time_ms", 0, 86400000u, 0, &l->wall_ms);
    get_u32(c, o, p, "device_time_ms", 0, 86400000u, 0, &l->device_ms);
    json_t *r;
    if ((r = get_object(c, o, p, "repetition", 0))) {
        path_key(q, p, "repetition");
        check_keys(c, r, q, rep_keys);
        /* the worker's statistic covers periods up to 32 (GW_REPEAT_MAX_PERIOD) */
        get_u32(c, r, q, "max_period", 0, 32, 0, &l->rep_period);
        get_u32(c, r, q, "min_count", 0, 1u << 20, 0, &l->rep_count);
        get_u32(c, r, q, "min_tokens", 0, 1u << 20, 0, &l->rep_tokens);
    }
    if ((r = get_object(c, o, p, "divergence", 0))) {
        path_key(q, p, "divergence");
        check_keys(c, r, q, div_keys);
        get_u32(c, r, q, "max_period", 0, 32, 0, &l->div_period);
        get_u32(c, r, q, "min_tokens", 0, 1u << 20, 0, &l->div_tokens);
    }
    if ((r = get_object(c, o, p, "anomalous_length", 0))) {
        path_key(q, p, "anomalous_length");
        check_keys(c, r, q, len_keys);
        get_u32(c, r, q, "floor_tokens", 0, 1u << 24, 0, &l->len_floor);
        get_u32(c, r, q, "factor", 0, 1000, 0, &l->len_factor);
        get_u32(c, r, q, "warmup", 0, 1000000, 0, &l->len_warmup);
    }
    get_u32(c, o, p, "unbounded_cap_tokens", 0, 1u << 24, 0, &l->unb_cap);
}

static const char *const wd_limit_keys[] = {"max_tokens",           "wall_time_ms",
                                            "device_time_ms",       "repetition",
                                            "divergence",           "anomalous_length",
                                            "unbounded_cap_tokens", "unbounded_patterns",
                                            NULL};

static void parse_plan_keys(struct cx *c, json_t *obj, const char *base, int allowed,
                            struct gw_plan *pl)
{
    char p[PATH_LEN], q[96];
    json_t *v;
    if ((allowed & PK_RATE) && (v = json_object_get(obj, "rate"))) {
        path_key(p, base, "rate");
        parse_rates(c, v, p, pl);
    }
    if ((allowed & PK_BUDGET) && (v = json_object_get(obj, "budget"))) {
        path_key(p, base, "budget");
        if (json_is_null(v)) {
            pl->has_budget = 0; /* an override may lift a plan's budget */
        } else if (!json_is_string(v)) {
            bad(c, p, "expected a string " BUDGET_FORM " or null");
        } else if (gw_budget_parse(json_string_value(v), &pl->budget)) {
            bad(c, p, "\"%s\": expected " BUDGET_FORM, shown(json_string_value(v), q));
        } else {
            pl->has_budget = 1;
        }
    }
    if (allowed & PK_INFLIGHT)
        get_u32(c, obj, base, "max_inflight", 0, 1000000, 0, &pl->max_inflight);
    if (allowed & PK_TOKENS)
        get_u32(c, obj, base, "max_tokens", 1, 1u << 20, 0, &pl->max_tokens);
    if ((allowed & PK_ON_BUDGET) && (v = json_object_get(obj, "on_budget"))) {
        path_key(p, base, "on_budget");
        const char *s = json_string_value(v);
        if (s && strcmp(s, "refuse") == 0 && json_string_length(v) == 6)
            pl->clamp_on_budget = 0;
        else if (s && strcmp(s, "clamp") == 0 && json_string_length(v) == 5)
            pl->clamp_on_budget = 1;
        else
            bad(c, p, "expected \"refuse\" or \"clamp\"");
    }
    if ((allowed & PK_WATCHDOG) && (v = get_object(c, obj, base, "watchdog", 0))) {
        path_key(p, base, "watchdog");
        check_keys(c, v, p, wd_limit_keys);
        parse_wd_limits(c, v, p, &pl->wd);
        parse_own_patterns(c, v, p, &pl->wd);
    }
}

static const char *const plan_keys[] = {"rate",       "budget",    "max_inflight",
                                        "max_tokens", "on_budget", "watchdog", NULL};

static void plan_defaults(struct gw_plan *pl, const char *name)
{
    memset(pl, 0, sizeof(*pl));
    snprintf(pl->name, sizeof(pl->name), "%s", name);
    pl->max_tokens = 1024;
}

static int plan_index(const struct gw_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n_plans; i++)
        if (strcmp(cfg->plans[i].name, name) == 0)
            return i;
    return -1;
}

static void parse_plans(struct cx *c, json_t *root, struct gw_config *cfg)
{
    json_t *plans = get_object(c, root, "", "plans", 0);
    if (!plans)
        return;
    char p[PATH_LEN], q[96];
    const char *name;
    json_t *v;
    json_object_foreach(plans, name, v)
    {
        path_key(p, "plans", name);
        if (!name_ok(name, PLAN_CHARS)) {
            bad(c, p, "\"%s\": a plan name is 1 to %d bytes of [A-Za-z0-9._-]", shown(name, q),
                GW_NAME_MAX - 1);
            continue;
        }
        if (cfg->n_plans == GW_MAX_PLANS) {
            bad(c, p, "more than %d plans", GW_MAX_PLANS);
            break;
        }
        if (!json_is_object(v)) {
            bad(c, p, "expected an object");
            continue;
        }
        struct gw_plan *pl = &cfg->plans[cfg->n_plans++];
        plan_defaults(pl, name);
        check_keys(c, v, p, plan_keys);
        parse_plan_keys(c, v, p, PK_ALL, pl);
    }
}

/* ---------------------------------------------------------------- tenants */

static int tenant_cmp(const void *a, const void *b)
{
    return strcmp(((const struct gw_tenant *)a)->id, ((const struct gw_tenant *)b)->id);
}

static void parse_tenants(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"plan",         "plans",      "rate",      "budget",
                                       "max_inflight", "max_tokens", "on_budget", "watchdog",
                                       NULL};
    json_t *tenants = get_object(c, root, "", "tenants", 0);
    if (!tenants)
        return;
    size_t n = json_object_size(tenants);
    if (n > TENANTS_MAX) {
        bad(c, "tenants", "%zu tenants; at most %d", n, TENANTS_MAX);
        return;
    }
    if (n == 0)
        return;
    cfg->tenants = calloc(n, sizeof(*cfg->tenants));
    if (!cfg->tenants) {
        bad(c, "tenants", "out of memory");
        return;
    }
    char p[PATH_LEN], pp[PATH_LEN], pi[PATH_LEN], q[96];
    const char *id;
    json_t *v;
    json_object_foreach(tenants, id, v)
    {
        path_key(p, "tenants", id);
        if (!name_ok(id, TENANT_CHARS)) {
            bad(c, p, "\"%s\": a tenant id (the JWT sub) is 1 to %d bytes of [A-Za-z0-9._@:-]",
                shown(id, q), GW_NAME_MAX - 1);
            continue;
        }
        if (!json_is_object(v)) {
            bad(c, p, "expected an object");
            continue;
        }
        check_keys(c, v, p, keys);
        struct gw_tenant *t = &cfg->tenants[cfg->n_tenants];
        memset(t, 0, sizeof(*t));
        snprintf(t->id, sizeof(t->id), "%s", id);
        char plan[GW_NAME_MAX];
        int have = get_string(c, v, p, "plan", 1, plan, sizeof(plan));
        int pi_base = -1;
        if (have == 1) {
            pi_base = plan_index(cfg, plan);
            if (pi_base < 0) {
                path_key(pp, p, "plan");
                bad(c, pp, "\"%s\" is not a configured plan", shown(plan, q));
            }
        }
        if (pi_base >= 0)
            t->plan = cfg->plans[pi_base];
        else
            plan_defaults(&t->plan, "");
        parse_plan_keys(c, v, p, PK_ALL, &t->plan);
        json_t *allowed = json_object_get(v, "plans");
        if (allowed) {
            path_key(pp, p, "plans");
            if (!json_is_array(allowed) || json_array_size(allowed) > 8) {
                bad(c, pp, "expected an array of at most 8 plan names");
            } else {
                size_t i;
                json_t *a;
                json_array_foreach(allowed, i, a)
                {
                    path_idx(pi, pp, i);
                    const char *s = json_string_value(a);
                    if (!s) {
                        bad(c, pi, "expected a plan name");
                    } else if (plan_index(cfg, s) < 0) {
                        bad(c, pi, "\"%s\" is not a configured plan", shown(s, q));
                    } else {
                        snprintf(t->plans_allowed[t->n_plans_allowed++], GW_NAME_MAX, "%s", s);
                    }
                }
            }
        }
        cfg->n_tenants++;
    }
    qsort(cfg->tenants, (size_t)cfg->n_tenants, sizeof(*cfg->tenants), tenant_cmp);
}

/* ------------------------------------------------------------------- auth */

static const struct {
    const char *name;
    enum gw_alg alg;
    size_t min_secret; /* RFC 7518 3.2: at least the hash's size */
} algs[] = {
    {"HS256", GW_ALG_HS256, 32}, {"HS384", GW_ALG_HS384, 48}, {"HS512", GW_ALG_HS512, 64},
    {"RS256", GW_ALG_RS256, 0},  {"ES256", GW_ALG_ES256, 0},
};

/* Reads a whole key file into a NUL-terminated malloc'd buffer. */
static int read_key_file(const char *path, unsigned char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EISDIR; /* reported as "not a regular file" */
        goto done;
    }
    if (st.st_size > KEY_FILE_MAX) {
        rc = -EFBIG;
        goto done;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto done;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto done;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = 0;
    *out = buf;
    *len = got;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return rc;
}

static void free_key(struct gw_key *k)
{
    if (k->key) {
        explicit_bzero(k->key, k->key_len);
        free(k->key);
    }
    k->key = NULL;
    k->key_len = 0;
}

static void parse_key(struct cx *c, json_t *v, const char *p, struct gw_config *cfg)
{
    static const char *const keys[] = {"kid", "alg", "secret_file", "public_key_file", NULL};
    char pp[PATH_LEN], q[96];
    if (!json_is_object(v)) {
        bad(c, p, "expected an object");
        return;
    }
    check_keys(c, v, p, keys);
    struct gw_key k = {0};
    int ok = 1;
    if (get_string(c, v, p, "kid", 1, k.kid, sizeof(k.kid)) == 1) {
        path_key(pp, p, "kid");
        if (!name_ok(k.kid, "._:-")) {
            bad(c, pp, "\"%s\": expected 1 to %d bytes of [A-Za-z0-9._:-]", shown(k.kid, q),
                GW_NAME_MAX - 1);
            ok = 0;
        }
        for (int i = 0; i < cfg->n_keys; i++)
            if (strcmp(cfg->keys[i].kid, k.kid) == 0) {
                bad(c, pp, "\"%s\" is also the kid of auth.keys[%d]", shown(k.kid, q), i);
                ok = 0;
            }
    } else {
        ok = 0;
    }
    char alg[16];
    size_t min_secret = 0;
    int hs = -1; /* unknown */
    int arc = get_string(c, v, p, "alg", 1, alg, sizeof(alg));
    if (arc == 1) {
        k.alg = 0;
        for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
            if (strcmp(alg, algs[i].name) == 0) {
                k.alg = algs[i].alg;
                min_secret = algs[i].min_secret;
            }
        if (!k.alg) {
            path_key(pp, p, "alg");
            bad(c, pp, "\"%s\": expected one of HS256, HS384, HS512, RS256, ES256", shown(alg, q));
        } else {
            hs = min_secret > 0;
        }
    }
    if (hs < 0)
        ok = 0;
    const char *want = hs == 1 ? "secret_file" : "public_key_file";
    const char *other = hs == 1 ? "public_key_file" : "secret_file";
    if (hs >= 0 && json_object_get(v, other)) {
        path_key(pp, p, other);
        bad(c, pp, "not used with %s; use %s", alg, want);
        ok = 0;
    }
    if (hs >= 0 && get_string(c, v, p, want, 1, k.path, sizeof(k.path)) == 1) {
        path_key(pp, p, want);
        int rc = read_key_file(k.path, &k.key, &k.key_len);
        if (rc == -EISDIR) {
            bad(c, pp, "%s: not a regular file", k.path);
        } else if (rc == -EFBIG) {
            bad(c, pp, "%s: larger than %d bytes; not a key", k.path, KEY_FILE_MAX);
        } else if (rc) {
            bad(c, pp, "%s: %s", k.path, strerror(-rc));
        } else if (hs == 1) {
            /* The secret is the file's bytes; one trailing newline (as an
             * editor or `echo` leaves) is not part of it. */
            if (k.key_len && k.key[k.key_len - 1] == '\n')
                k.key[--k.key_len] = 0;
            if (k.key_len && k.key[k.key_len - 1] == '\r')
                k.key[--k.key_len] = 0;
            if (k.key_len < min_secret) {
                bad(c, pp, "%s: %zu bytes; %s needs at least %zu", k.path, k.key_len, alg,
                    min_secret);
                rc = -EINVAL;
            }
        } else if (strncmp((const char *)k.key, "-----BEGIN PUBLIC KEY-----", 26) != 0) {
            bad(c, pp, "%s: expected a PEM public key (\"-----BEGIN PUBLIC KEY-----\")", k.path);
            rc = -EINVAL;
        }
        if (rc)
            ok = 0;
    } else {
        ok = 0;
    }
    if (!ok || cfg->n_keys == GW_MAX_KEYS) {
        free_key(&k);
        return;
    }
    cfg->keys[cfg->n_keys++] = k;
}

static void parse_auth(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"keys", "issuer", "audience", "leeway_s", NULL};
    json_t *auth = get_object(c, root, "", "auth", 1);
    if (!auth)
        return;
    check_keys(c, auth, "auth", keys);
    json_t *arr = json_object_get(auth, "keys");
    if (!arr) {
        bad(c, "auth.keys", "missing (required)");
    } else if (!json_is_array(arr) || json_array_size(arr) < 1 ||
               json_array_size(arr) > GW_MAX_KEYS) {
        bad(c, "auth.keys", "expected an array of 1 to %d keys", GW_MAX_KEYS);
    } else {
        size_t i;
        json_t *v;
        char p[PATH_LEN];
        json_array_foreach(arr, i, v)
        {
            path_idx(p, "auth.keys", i);
            parse_key(c, v, p, cfg);
        }
    }
    get_string(c, auth, "auth", "issuer", 0, cfg->issuer, sizeof(cfg->issuer));
    get_string(c, auth, "auth", "audience", 0, cfg->audience, sizeof(cfg->audience));
    get_u32(c, auth, "auth", "leeway_s", 0, 600, 0, &cfg->leeway_s);
}

/* ---------------------------------------------------------- the rest */

/* "a.b.c.d:port" or "[v6]:port", IP literals only: the master binds them
 * before anything resolves names, and a name would make the bind depend on
 * DNS at start-up. */
static void parse_listen(struct cx *c, json_t *root, struct gw_config *cfg)
{
    json_t *arr = json_object_get(root, "listen");
    if (!arr)
        return; /* default set by the caller */
    if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > GW_MAX_LISTEN) {
        bad(c, "listen", "expected an array of 1 to %d \"host:port\" strings", GW_MAX_LISTEN);
        return;
    }
    cfg->n_listen = 0;
    size_t i;
    json_t *v;
    char p[PATH_LEN], q[96];
    json_array_foreach(arr, i, v)
    {
        path_idx(p, "listen", i);
        const char *s = json_string_value(v);
        if (!s) {
            bad(c, p, "expected a string \"host:port\"");
            continue;
        }
        char host[64];
        const char *colon = strrchr(s, ':');
        size_t hl = colon ? (size_t)(colon - s) : 0;
        int v6 = hl >= 2 && s[0] == '[' && s[hl - 1] == ']';
        unsigned char addr[16];
        int okaddr = 0;
        if (colon && hl > 0 && hl < sizeof(host) && strlen(s) < sizeof(cfg->listen[0])) {
            memcpy(host, s + v6, hl - 2 * (size_t)v6);
            host[hl - 2 * (size_t)v6] = 0;
            okaddr = inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) == 1;
        }
        uint64_t port;
        if (!okaddr) {
            bad(c, p, "\"%s\": expected \"a.b.c.d:port\" or \"[IPv6]:port\"", shown(s, q));
        } else if (parse_count(colon + 1, 1, 65535, &port)) {
            bad(c, p, "\"%s\": port must be an integer in [1, 65535]", shown(s, q));
        } else {
            int dup = 0;
            for (int j = 0; j < cfg->n_listen; j++)
                dup |= strcmp(cfg->listen[j], s) == 0;
            if (dup)
                bad(c, p, "\"%s\" is listed twice", shown(s, q));
            else
                snprintf(cfg->listen[cfg->n_listen++], sizeof(cfg->listen[0]), "%s", s);
        }
    }
}

static void parse_segment(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"accounts", "budgets",      "slots",        "queue",
                                       "lanes",    "prompt_bytes", "output_bytes", NULL};
    struct gw_seg_config *s = &cfg->segment;
    json_t *o = get_object(c, root, "", "segment", 0);
    if (o) {
        check_keys(c, o, "segment", keys);
        if (json_object_get(o, "lanes"))
            bad(c, "segment.lanes", "not settable: it is fronts + workers + 8");
        get_u32(c, o, "segment", "accounts", GW_PROBE, 1u << 24, 1, &s->accounts);
        get_u32(c, o, "segment", "budgets", 1, 1u << 20, 0, &s->budgets);
        get_u32(c, o, "segment", "slots", 1, 65535, 0, &s->slots);
        get_u32(c, o, "segment", "queue", 2, 1u << 16, 1, &s->queue);
        get_u32(c, o, "segment", "prompt_bytes", 256, 16u << 20, 0, &s->prompt_bytes);
        get_u32(c, o, "segment", "output_bytes", 256, 16u << 20, 0, &s->output_bytes);
    }
    s->lanes = (uint32_t)(cfg->fronts + cfg->workers + 8);
    if (s->lanes > 255)
        bad(c, "segment", "fronts + workers + 8 = %u lanes; at most 255", s->lanes);
}

static void parse_model(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"path", "name", "device", "threads", "context", NULL};
    json_t *m = get_object(c, root, "", "model", 1);
    if (!m)
        return;
    check_keys(c, m, "model", keys);
    get_string(c, m, "model", "path", 1, cfg->model_path, sizeof(cfg->model_path));
    char q[96];
    if (get_string(c, m, "model", "name", 1, cfg->model_name, sizeof(cfg->model_name)) == 1 &&
        !name_ok(cfg->model_name, "._:/-"))
        bad(c, "model.name", "\"%s\": expected 1 to %d bytes of [A-Za-z0-9._:/-]",
            shown(cfg->model_name, q), GW_NAME_MAX - 1);
    char dev[32];
    if (get_string(c, m, "model", "device", 0, dev, sizeof(dev)) == 1) {
        uint64_t n;
        if (strcmp(dev, "auto") == 0 || strcmp(dev, "cpu") == 0 ||
            (strncmp(dev, "cuda:", 5) == 0 && parse_count(dev + 5, 0, 63, &n) == 0 &&
             strlen(dev + 5) <= 2))
            snprintf(cfg->device, sizeof(cfg->device), "%s", dev);
        else
            bad(c, "model.device",
                "\"%s\": expected \"auto\", \"cpu\" or \"cuda:N\" (N in [0, 63])", shown(dev, q));
    }
    get_int(c, m, "model", "threads", 0, 256, &cfg->threads);
    get_int(c, m, "model", "context", 64, 131072, &cfg->context);
}

static void parse_http(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"header_bytes",      "body_bytes",
                                       "header_timeout_ms", "body_timeout_ms",
                                       "keepalive_ms",      "connections_per_front",
                                       "drain_timeout_ms",  NULL};
    json_t *h = get_object(c, root, "", "http", 0);
    if (!h)
        return;
    check_keys(c, h, "http", keys);
    get_u32(c, h, "http", "header_bytes", 1024, 1u << 20, 0, &cfg->header_bytes);
    get_u32(c, h, "http", "body_bytes", 1024, 64u << 20, 0, &cfg->body_bytes);
    get_u32(c, h, "http", "header_timeout_ms", 100, 600000, 0, &cfg->header_timeout_ms);
    get_u32(c, h, "http", "body_timeout_ms", 100, 600000, 0, &cfg->body_timeout_ms);
    get_u32(c, h, "http", "keepalive_ms", 0, 3600000, 0, &cfg->keepalive_ms);
    get_u32(c, h, "http", "connections_per_front", 1, 1000000, 0, &cfg->connections_per_front);
    get_u32(c, h, "http", "drain_timeout_ms", 0, 3600000, 0, &cfg->drain_timeout_ms);
}

static void parse_limits(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const ip_keys[] = {"rate", NULL};
    static const char *const global_keys[] = {"rate", "budget", "max_inflight", NULL};
    json_t *o;
    if ((o = get_object(c, root, "", "ip", 0))) {
        check_keys(c, o, "ip", ip_keys);
        parse_plan_keys(c, o, "ip", PK_RATE, &cfg->ip);
    }
    if ((o = get_object(c, root, "", "global", 0))) {
        check_keys(c, o, "global", global_keys);
        parse_plan_keys(c, o, "global", PK_RATE | PK_BUDGET | PK_INFLIGHT, &cfg->global);
    }
}

static void parse_default_plan(struct cx *c, json_t *root, struct gw_config *cfg)
{
    json_t *v = json_object_get(root, "default_plan");
    char q[96];
    if (!v || json_is_null(v))
        return;
    if (!json_is_string(v)) {
        bad(c, "default_plan", "expected a plan name or null");
        return;
    }
    cfg->default_plan = plan_index(cfg, json_string_value(v));
    if (cfg->default_plan < 0)
        bad(c, "default_plan", "\"%s\" is not a configured plan", shown(json_string_value(v), q));
}

/* admin.operators / admin.admins: ["user:NAME" | "uid:N" | "group:NAME" |
 * "gid:N", ...]. Names are resolved when a client connects (the accounts
 * database may change while the node runs). */
static void parse_principals(struct cx *c, json_t *o, const char *key,
                             char out[GW_ADMIN_PRINCIPALS][GW_NAME_MAX], int *n)
{
    char p[PATH_LEN], q[96];
    path_key(p, "admin", key);
    json_t *arr = json_object_get(o, key);
    if (!arr)
        return;
    if (!json_is_array(arr) || json_array_size(arr) > GW_ADMIN_PRINCIPALS) {
        bad(c, p, "expected an array of at most %d strings", GW_ADMIN_PRINCIPALS);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        char pi[PATH_LEN];
        path_idx(pi, p, i);
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        const char *colon = s ? strchr(s, ':') : NULL;
        int ok = colon && strlen(s) < GW_NAME_MAX && name_ok(colon + 1, "._-");
        if (ok && (strncmp(s, "uid:", 4) == 0 || strncmp(s, "gid:", 4) == 0)) {
            uint64_t x;
            ok = parse_count(colon + 1, 0, UINT32_MAX - 1, &x) == 0;
        } else if (ok) {
            ok = strncmp(s, "user:", 5) == 0 || strncmp(s, "group:", 6) == 0;
        }
        if (!ok) {
            bad(c, pi, "%s: expected \"user:NAME\", \"uid:N\", \"group:NAME\" or \"gid:N\"",
                s ? shown(s, q) : "not a string");
            continue;
        }
        snprintf(out[*n], GW_NAME_MAX, "%s", s);
        (*n)++;
    }
}

static void parse_admin_cost(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const admin_keys[] = {"socket", "group", "operators", "admins", NULL};
    static const char *const cost_keys[] = {"initial_us_per_token", NULL};
    json_t *o;
    if ((o = get_object(c, root, "", "admin", 0))) {
        check_keys(c, o, "admin", admin_keys);
        /* sun_path holds 108 bytes with its NUL */
        char sock[108];
        if (get_string(c, o, "admin", "socket", 0, sock, sizeof(sock)) == 1)
            snprintf(cfg->admin_socket, sizeof(cfg->admin_socket), "%s", sock);
        char grp[GW_NAME_MAX];
        if (get_string(c, o, "admin", "group", 0, grp, sizeof(grp)) == 1) {
            if (!name_ok(grp, "._-"))
                bad(c, "admin.group", "expected a group name or number");
            else
                memcpy(cfg->admin_group, grp, sizeof(grp));
        }
        parse_principals(c, o, "operators", cfg->admin_operators, &cfg->n_admin_operators);
        parse_principals(c, o, "admins", cfg->admin_admins, &cfg->n_admin_admins);
    }
    if ((o = get_object(c, root, "", "cost", 0))) {
        check_keys(c, o, "cost", cost_keys);
        get_u64(c, o, "cost", "initial_us_per_token", 1, 10 * SEC_US, 0,
                &cfg->initial_us_per_token);
    }
}

/* "log": the line format on stderr and the optional access log. */
static void parse_log(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"format", "access", NULL};
    json_t *o = get_object(c, root, "", "log", 0);
    if (!o)
        return;
    check_keys(c, o, "log", keys);
    json_t *v = json_object_get(o, "format");
    if (v) {
        const char *f = json_is_string(v) ? json_string_value(v) : NULL;
        if (f && strcmp(f, "text") == 0)
            cfg->log_format = GW_LOG_TEXT;
        else if (f && strcmp(f, "json") == 0)
            cfg->log_format = GW_LOG_JSON;
        else if (f) {
            char b[96];
            bad(c, "log.format", "\"%s\": expected \"text\" or \"json\"", shown(f, b));
        } else
            bad(c, "log.format", "expected \"text\" or \"json\"");
    }
    v = json_object_get(o, "access");
    if (v) {
        if (json_is_boolean(v))
            cfg->log_access = json_is_true(v);
        else
            bad(c, "log.access", "expected true or false");
    }
}

/* The output guard's rules when the config names none: what a harvesting
 * prompt is after. Keys and credentials end the generation; personal data
 * is redacted. (docs/CONFIG.md "watchdog.guard") */
static const struct gw_guard_rule guard_defaults[] = {
    {"pem_private_key", "-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----", GW_GUARD_KILL, 0},
    {"aws_access_key_id", "\\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\\b",
     GW_GUARD_KILL, 0},
    {"email", "\\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}\\b",
     GW_GUARD_REDACT, 0},
    {"card_number", "\\b[0-9](?:[ -]?[0-9]){12,18}\\b", GW_GUARD_REDACT, 1},
};

/* Prompts that ask for endless output get the lower unbounded_cap_tokens
 * (docs/CONFIG.md "watchdog.unbounded_patterns"); compiled caseless. */
static const char *const unbounded_defaults[] = {
    "\\bforever\\b",
    "\\b(?:infinitely|endlessly|indefinitely|eternally|ad infinitum)\\b",
    "\\bnever\\s+(?:stop|end|finish)",
    "\\bwithout\\s+(?:stopping|end|ending|limit)\\b",
    "\\b(?:over\\s+and\\s+over|again\\s+and\\s+again|non-?stop)\\b",
    "\\bas\\s+(?:many|long)(?:\\s+\\w+){0,3}\\s+as\\s+(?:you\\s+(?:can|could)|possible)\\b",
    "\\b(?:[0-9]{3,}|[0-9]{1,3}(?:,[0-9]{3})+|thousands?|millions?|billions?)\\s+times\\b",
};

/* A PCRE2 pattern that compiles, or a mistake naming where it does not. */
static void check_pattern(struct cx *c, const char *p, const char *pattern, uint32_t options)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &code,
                                   &off, NULL);
    if (re) {
        pcre2_code_free(re);
        return;
    }
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(code, msg, sizeof(msg));
    bad(c, p, "not a valid PCRE2 pattern: %s at offset %zu", (const char *)msg, (size_t)off);
}

/* "watchdog": the node's limits (parse_wd_limits), the scan's timings, the
 * audit log and the output guard's rules. */
static void parse_watchdog(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"max_tokens", "wall_time_ms", "device_time_ms",
                                       "repetition", "divergence",   "anomalous_length",
                                       "interval_ms",
                                       "stall_ms",   "grace_ms",     "audit_log",
                                       "guard",      "unbounded_cap_tokens",
                                       "unbounded_patterns",          NULL};
    static const char *const rule_keys[] = {"name", "pattern", "action", "luhn", NULL};
    json_t *o = get_object(c, root, "", "watchdog", 0);
    if (!o)
        return;
    check_keys(c, o, "watchdog", keys);
    parse_wd_limits(c, o, "watchdog", &cfg->wd);
    get_u32(c, o, "watchdog", "interval_ms", 1, 1000, 0, &cfg->wd_interval_ms);
    get_u32(c, o, "watchdog", "stall_ms", 10, 3600000u, 0, &cfg->wd_stall_ms);
    get_u32(c, o, "watchdog", "grace_ms", 1, 60000, 0, &cfg->wd_grace_ms);
    char path[256];
    if (get_string(c, o, "watchdog", "audit_log", 0, path, sizeof(path)) == 1)
        memcpy(cfg->audit_log, path, sizeof(path));
    parse_pattern_list(c, o, "watchdog", "unbounded_patterns", &cfg->unbounded);
    json_t *g = json_object_get(o, "guard");
    if (!g)
        return;
    if (!json_is_array(g) || json_array_size(g) > GW_GUARD_MAX) {
        bad(c, "watchdog.guard", "expected an array of at most %d rules", GW_GUARD_MAX);
        return;
    }
    cfg->n_guard = 0;
    size_t i;
    json_t *v;
    json_array_foreach(g, i, v)
    {
        char p[PATH_LEN], pp[PATH_LEN];
        path_idx(p, "watchdog.guard", i);
        if (!json_is_object(v)) {
            bad(c, p, "expected an object {\"name\", \"pattern\", \"action\"}");
            continue;
        }
        check_keys(c, v, p, rule_keys);
        struct gw_guard_rule *r = &cfg->guard[cfg->n_guard];
        memset(r, 0, sizeof(*r));
        r->action = GW_GUARD_KILL;
        if (get_string(c, v, p, "name", 1, r->name, sizeof(r->name)) != 1 ||
            get_string(c, v, p, "pattern", 1, r->pattern, sizeof(r->pattern)) != 1)
            continue;
        path_key(pp, p, "pattern");
        check_pattern(c, pp, r->pattern, 0);
        json_t *a = json_object_get(v, "action");
        const char *as = a ? json_string_value(a) : "kill";
        if (as && strcmp(as, "kill") == 0) {
            r->action = GW_GUARD_KILL;
        } else if (as && strcmp(as, "redact") == 0) {
            r->action = GW_GUARD_REDACT;
        } else {
            path_key(pp, p, "action");
            bad(c, pp, "expected \"kill\" or \"redact\"");
        }
        json_t *l = json_object_get(v, "luhn");
        if (l && !json_is_boolean(l)) {
            path_key(pp, p, "luhn");
            bad(c, pp, "expected true or false");
        }
        r->luhn = l && json_is_true(l);
        cfg->n_guard++;
    }
}

static void wd_defaults(struct gw_config *cfg)
{
    cfg->wd = (struct gw_wd_limits){
        .max_tokens = 16384,
        .wall_ms = 600000,
        .device_ms = 300000,
        /* measured on SmolLM2-135M (docs/CONFIG.md "watchdog"): loops reach
         * 40 tokens within 40..48 tokens of their start; no ordinary answer
         * repeated a cycle 3 times over 27 tokens */
        .rep_period = 32,
        .rep_count = 3,
        .rep_tokens = 40,
        .div_period = 4,
        .div_tokens = 16,
        /* a tenant's answers are rarely 4x its 99th percentile; until 50
         * completions were seen, only runs over 2048 tokens */
        .len_floor = 2048,
        .len_factor = 4,
        .len_warmup = 50,
        /* a prompt that asks for endless output gets 256 tokens: enough for
         * an honest "list as many as you can", far below max_tokens */
        .unb_cap = 256,
    };
    cfg->wd_interval_ms = 10;
    cfg->wd_stall_ms = 10000;
    cfg->wd_grace_ms = 500;
    cfg->n_guard = (int)(sizeof(guard_defaults) / sizeof(guard_defaults[0]));
    memcpy(cfg->guard, guard_defaults, sizeof(guard_defaults));
    cfg->unbounded.n = (int)(sizeof(unbounded_defaults) / sizeof(unbounded_defaults[0]));
    for (int i = 0; i < cfg->unbounded.n; i++)
        snprintf(cfg->unbounded.pattern[i], GW_UNBOUNDED_LEN, "%s", unbounded_defaults[i]);
}

static void set_defaults(struct gw_config *cfg, const char *name)
{
    snprintf(cfg->path, sizeof(cfg->path), "%s", name ? name : "(config)");
    cfg->n_listen = 1;
    snprintf(cfg->listen[0], sizeof(cfg->listen[0]), "127.0.0.1:8080");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->fronts = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
    cfg->workers = 1;
    snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/var/lib/gpuwarden");
    cfg->segment = (struct gw_seg_config){
        .accounts = 65536,
        .budgets = 4096,
        .slots = 256,
        .queue = 256,
        .prompt_bytes = 65536,
        .output_bytes = 65536,
    };
    snprintf(cfg->device, sizeof(cfg->device), "auto");
    cfg->threads = 0;
    cfg->context = 2048;
    cfg->header_bytes = 8192;
    cfg->body_bytes = 1048576;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 30000;
    cfg->keepalive_ms = 60000;
    cfg->connections_per_front = 1024;
    cfg->drain_timeout_ms = 30000;
    cfg->leeway_s = 30;
    plan_defaults(&cfg->ip, "ip");
    plan_defaults(&cfg->global, "global");
    cfg->default_plan = -1;
    snprintf(cfg->admin_socket, sizeof(cfg->admin_socket), "/run/gpuwarden/admin.sock");
    cfg->initial_us_per_token = 20000;
    wd_defaults(cfg);
}

static void check_all(struct cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {
        "listen", "fronts", "workers", "state_dir",    "segment", "model", "http", "auth",
        "ip",     "global", "plans",   "default_plan", "tenants", "admin", "cost", "watchdog",
        "log",    NULL};
    check_keys(c, root, "", keys);
    parse_listen(c, root, cfg);
    get_int(c, root, "", "fronts", 1, 64, &cfg->fronts);
    get_int(c, root, "", "workers", 1, 64, &cfg->workers);
    /* room for "/ledger" after it in a 256-byte segment path */
    char dir[240];
    if (get_string(c, root, "", "state_dir", 0, dir, sizeof(dir)) == 1)
        snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s", dir);
    parse_segment(c, root, cfg);
    parse_model(c, root, cfg);
    parse_http(c, root, cfg);
    parse_auth(c, root, cfg);
    parse_limits(c, root, cfg);
    parse_plans(c, root, cfg);
    parse_default_plan(c, root, cfg);
    parse_tenants(c, root, cfg);
    parse_admin_cost(c, root, cfg);
    parse_watchdog(c, root, cfg);
    parse_log(c, root, cfg);

    /* Every configured tenant and the global account hold a budget record
     * from their first request on; unknown tenants on the default plan need
     * more. */
    if (cfg->segment.budgets < (uint32_t)cfg->n_tenants + 1)
        bad(c, "segment.budgets", "expected at least %d (one per tenant and one for the node)",
            cfg->n_tenants + 1);
    /* The segment is one file mapped by every process: slots times
     * (prompt + output) adds up fast, so keep it below 64 GiB. */
    char serr[160];
    size_t bytes = c->mistakes ? 1 : gw_segment_size(&cfg->segment, serr, sizeof(serr));
    if (bytes == 0)
        bad(c, "segment", "%s", serr);
    else if ((uint64_t)bytes > (64ull << 30))
        bad(c, "segment",
            "%zu bytes with these sizes; at most 64 GiB (lower slots, "
            "prompt_bytes or output_bytes)",
            bytes);
}

/* ------------------------------------------------------------ public API */

int gw_config_parse(struct gw_config **out, const char *json, size_t len, const char *name,
                    char *err, size_t errlen)
{
    struct cx c = {.err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = 0;
    if (!out || (!json && len))
        return -EINVAL;
    *out = NULL;
    if (!name)
        name = "(config)";
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        bad(&c, name, "not valid JSON: %s at line %d column %d", je.text, je.line, je.column);
        return -EINVAL;
    }
    struct gw_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        json_decref(root);
        return -ENOMEM;
    }
    set_defaults(cfg, name);
    c.cfg = cfg;
    if (!json_is_object(root))
        bad(&c, name, "expected a JSON object at the top level");
    else
        check_all(&c, root, cfg);
    json_decref(root);
    if (c.mistakes) {
        gw_config_free(cfg);
        return -EINVAL;
    }
    *out = cfg;
    return 0;
}

int gw_config_load(struct gw_config **out, const char *path, char *err, size_t errlen)
{
    struct cx c = {.err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = 0;
    if (!out || !path)
        return -EINVAL;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        bad(&c, path, "%s", strerror(e));
        return -e;
    }
    /* A config is kilobytes; 16 MiB leaves room for many tenants and keeps
     * a wrong path (a device, a huge log) from being read whole. */
    size_t cap = 16u << 20, n = 0, size = 65536;
    char *buf = malloc(size);
    int rc = 0;
    if (!buf) {
        rc = -ENOMEM;
        goto done;
    }
    for (;;) {
        if (n == size) {
            if (size >= cap) {
                bad(&c, path, "larger than %zu bytes", cap);
                rc = -EFBIG;
                goto done;
            }
            char *nb = realloc(buf, size * 2);
            if (!nb) {
                rc = -ENOMEM;
                goto done;
            }
            buf = nb;
            size *= 2;
        }
        ssize_t r = read(fd, buf + n, size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            bad(&c, path, "%s", strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    rc = gw_config_parse(out, buf, n, path, err, errlen);
done:
    free(buf);
    close(fd);
    return rc;
}

void gw_config_free(struct gw_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < cfg->n_keys; i++)
        free_key(&cfg->keys[i]);
    free(cfg->tenants);
    free(cfg->unb_lists);
    free(cfg);
}

const struct gw_tenant *gw_config_tenant(const struct gw_config *cfg, const char *id)
{
    if (!cfg || !id || cfg->n_tenants == 0)
        return NULL;
    struct gw_tenant key;
    if (strlen(id) >= sizeof(key.id))
        return NULL;
    memcpy(key.id, id, strlen(id) + 1);
    return bsearch(&key, cfg->tenants, (size_t)cfg->n_tenants, sizeof(*cfg->tenants), tenant_cmp);
}

const struct gw_plan *gw_config_plan_for(const struct gw_config *cfg, const char *id,
                                         const char *plan_claim, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    *why = NULL;
    if (!cfg) {
        *why = "no configuration";
        return NULL;
    }
    int claimed = plan_claim && plan_claim[0];
    const struct gw_tenant *t = gw_config_tenant(cfg, id);
    if (!t) {
        if (cfg->default_plan < 0) {
            *why = "unknown tenant";
            return NULL;
        }
        const struct gw_plan *d = &cfg->plans[cfg->default_plan];
        if (claimed && strcmp(plan_claim, d->name) != 0) {
            *why = "plan not allowed for this tenant";
            return NULL;
        }
        return d;
    }
    /* The tenant's own plan carries its overrides; a plan selected by the
     * claim applies as configured. */
    if (!claimed || strcmp(plan_claim, t->plan.name) == 0)
        return &t->plan;
    for (int i = 0; i < t->n_plans_allowed; i++)
        if (strcmp(plan_claim, t->plans_allowed[i]) == 0) {
            int k = plan_index(cfg, plan_claim);
            if (k >= 0)
                return &cfg->plans[k];
        }
    *why = "plan not allowed for this tenant";
    return NULL;
}
