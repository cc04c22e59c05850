/* config_watchdog.c - "watchdog": the limits the master's watchdog kills at
 * (node-wide, and a plan's or tenant's own), the scan's timings, the audit
 * log, the output guard's rules and the patterns that mark a prompt as
 * asking for endless output; their defaults; and the PCRE2 check every
 * pattern passes before a process compiles it.
 */
#include "config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---------------------------------------------------------------- patterns */

/* A PCRE2 pattern that compiles, or a mistake naming where it does not. */
static void check_pattern(struct gw_cfg_cx *c, const char *p, const char *pattern, uint32_t options)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &code, &off, NULL);
    if (re) {
        pcre2_code_free(re);
        return;
    }
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(code, msg, sizeof(msg));
    gw__cfg_bad(c, p, "not a valid PCRE2 pattern: %s at offset %zu", (const char *)msg,
                (size_t)off);
}

/* "unbounded_patterns": an array of at most GW_UNBOUNDED_MAX PCRE2 patterns
 * (each 1..255 bytes, compiled caseless) into *out. 1 when present and
 * valid, 0 when absent, -1 when wrong (reported, every bad element named). */
static int parse_pattern_list(struct gw_cfg_cx *c, json_t *o, const char *base, const char *key,
                              struct gw_pattern_list *out)
{
    char p[PATH_LEN], pi[PATH_LEN];
    gw__cfg_path_key(p, base, key);
    json_t *a = json_object_get(o, key);
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > GW_UNBOUNDED_MAX) {
        gw__cfg_bad(c, p, "expected an array of at most %d patterns", GW_UNBOUNDED_MAX);
        return -1;
    }
    int before = c->mistakes;
    memset(out, 0, sizeof(*out));
    size_t i;
    json_t *v;
    json_array_foreach (a, i, v) {
        gw__cfg_path_idx(pi, p, i);
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= GW_UNBOUNDED_LEN ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            gw__cfg_bad(c, pi, "expected a PCRE2 pattern of 1 to %d bytes", GW_UNBOUNDED_LEN - 1);
            continue;
        }
        check_pattern(c, pi, json_string_value(v), PCRE2_CASELESS);
        snprintf(out->pattern[out->n++], GW_UNBOUNDED_LEN, "%s", json_string_value(v));
    }
    return c->mistakes == before ? 1 : -1;
}

/* A plan's or tenant's own "unbounded_patterns": appended to
 * cfg->unb_lists, and l->unb_list names it. */
static void parse_own_patterns(struct gw_cfg_cx *c, json_t *o, const char *base,
                               struct gw_wd_limits *l)
{
    struct gw_pattern_list list;
    if (parse_pattern_list(c, o, base, "unbounded_patterns", &list) != 1 || !c->cfg)
        return;
    struct gw_config *cfg = c->cfg;
    struct gw_pattern_list *n =
        realloc(cfg->unb_lists, (size_t)(cfg->n_unb_lists + 1) * sizeof(*n));
    if (!n) {
        gw__cfg_bad(c, base, "out of memory");
        return;
    }
    cfg->unb_lists = n;
    cfg->unb_lists[cfg->n_unb_lists++] = list;
    l->unb_list = (uint32_t)cfg->n_unb_lists;
}

/* The limit keys of a "watchdog" object (node level and per plan):
 *   "max_tokens", "wall_time_ms", "device_time_ms",
 *   "repetition": {"max_period", "min_count", "min_tokens", "min_match",
 *                  "requested_max"},
 *   "near_repetition": {"max_period", "min_match"},
 *   "collapsed_sampling": {"min_top1_percent", "min_match"},
 *   "divergence": {"max_period", "min_tokens"}.
 * In a plan, 0 means "the node's value". */
static void parse_wd_limits(struct gw_cfg_cx *c, json_t *o, const char *p, struct gw_wd_limits *l)
{
    static const char *const rep_keys[] = {"max_period", "min_count",     "min_tokens",
                                           "min_match",  "requested_max", NULL};
    static const char *const near_keys[] = {"max_period", "min_match", NULL};
    static const char *const col_keys[] = {"min_top1_percent", "min_match", NULL};
    static const char *const div_keys[] = {"max_period", "min_tokens", NULL};
    static const char *const len_keys[] = {"floor_tokens", "factor", "warmup", NULL};
    char q[PATH_LEN];
    gw__cfg_get_u32(c, o, p, "max_tokens", 0, 1u << 24, 0, &l->max_tokens);
    gw__cfg_get_u32(c, o, p, "wall_time_ms", 0, 86400000u, 0, &l->wall_ms);
    gw__cfg_get_u32(c, o, p, "device_time_ms", 0, 86400000u, 0, &l->device_ms);
    json_t *r;
    if ((r = gw__cfg_get_object(c, o, p, "repetition", 0))) {
        gw__cfg_path_key(q, p, "repetition");
        gw__cfg_check_keys(c, r, q, rep_keys);
        /* the worker's statistic covers periods up to 256 (GW_REPEAT_MAX_PERIOD) */
        gw__cfg_get_u32(c, r, q, "max_period", 0, 256, 0, &l->rep_period);
        gw__cfg_get_u32(c, r, q, "min_count", 0, 1u << 20, 0, &l->rep_count);
        gw__cfg_get_u32(c, r, q, "min_tokens", 0, 1u << 20, 0, &l->rep_tokens);
        /* the published run saturates at 65535 */
        gw__cfg_get_u32(c, r, q, "min_match", 0, 65535, 0, &l->rep_match);
        /* cycles; the slot carries the asked count in 16 bits */
        gw__cfg_get_u32(c, r, q, "requested_max", 0, 4096, 0, &l->rep_asked_max);
    }
    if ((r = gw__cfg_get_object(c, o, p, "near_repetition", 0))) {
        gw__cfg_path_key(q, p, "near_repetition");
        gw__cfg_check_keys(c, r, q, near_keys);
        gw__cfg_get_u32(c, r, q, "max_period", 0, 256, 0, &l->near_period);
        gw__cfg_get_u32(c, r, q, "min_match", 0, 65535, 0, &l->near_match);
    }
    if ((r = gw__cfg_get_object(c, o, p, "collapsed_sampling", 0))) {
        gw__cfg_path_key(q, p, "collapsed_sampling");
        gw__cfg_check_keys(c, r, q, col_keys);
        gw__cfg_get_u32(c, r, q, "min_top1_percent", 0, 100, 0, &l->col_top1);
        gw__cfg_get_u32(c, r, q, "min_match", 0, 65535, 0, &l->col_match);
    }
    if ((r = gw__cfg_get_object(c, o, p, "divergence", 0))) {
        gw__cfg_path_key(q, p, "divergence");
        gw__cfg_check_keys(c, r, q, div_keys);
        gw__cfg_get_u32(c, r, q, "max_period", 0, 32, 0, &l->div_period);
        gw__cfg_get_u32(c, r, q, "min_tokens", 0, 1u << 20, 0, &l->div_tokens);
    }
    if ((r = gw__cfg_get_object(c, o, p, "anomalous_length", 0))) {
        gw__cfg_path_key(q, p, "anomalous_length");
        gw__cfg_check_keys(c, r, q, len_keys);
        gw__cfg_get_u32(c, r, q, "floor_tokens", 0, 1u << 24, 0, &l->len_floor);
        gw__cfg_get_u32(c, r, q, "factor", 0, 1000, 0, &l->len_factor);
        gw__cfg_get_u32(c, r, q, "warmup", 0, 1000000, 0, &l->len_warmup);
    }
    gw__cfg_get_u32(c, o, p, "unbounded_cap_tokens", 0, 1u << 24, 0, &l->unb_cap);
}

/* The keys of a plan's or tenant's "watchdog" object. */
static const char *const wd_limit_keys[] = {"max_tokens",
                                            "wall_time_ms",
                                            "device_time_ms",
                                            "repetition",
                                            "near_repetition",
                                            "collapsed_sampling",
                                            "divergence",
                                            "anomalous_length",
                                            "unbounded_cap_tokens",
                                            "unbounded_patterns",
                                            NULL};

void gw__cfg_plan_watchdog(struct gw_cfg_cx *c, json_t *o, const char *p, struct gw_wd_limits *l)
{
    gw__cfg_check_keys(c, o, p, wd_limit_keys);
    parse_wd_limits(c, o, p, l);
    parse_own_patterns(c, o, p, l);
}

/* ------------------------------------------------------- the node's watchdog */

/* The output guard's rules when the config names none: what a harvesting
 * prompt is after. A PEM block is killed: its header is all a pattern can
 * recognise, and only ending the stream keeps the key lines after it from
 * going out. An AWS key id is killed for the same reason: the secret key
 * that travels with it has no shape of its own (40 base64 characters). A
 * token that is all the secret there is (API keys, GitHub, Slack, Google,
 * JWTs) is redacted: exactly the token is replaced, so an answer that shows
 * how to use a key stays useful and the key never leaves. Personal data is
 * redacted. The token rules ask for the lengths the issuers use, so a word
 * like "sk-learn" is no key. (docs/CONFIG.md "watchdog.guard") */
static const struct gw_guard_rule guard_defaults[] = {
    {"pem_private_key", "-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", GW_GUARD_KILL, 0},
    {"aws_access_key_id", "\\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\\b",
     GW_GUARD_KILL, 0},
    /* sk-ant-api03-..., sk-ant-admin01-... */
    {"anthropic_api_key", "\\bsk-ant-[a-z]+[0-9]{2}-[A-Za-z0-9_-]{32,}", GW_GUARD_REDACT, 0},
    /* sk-proj-..., sk-svcacct-..., sk-admin-..., sk-None-..., and the
     * older sk- followed by 48 letters and digits */
    {"openai_api_key", "\\bsk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{32,}|[A-Za-z0-9]{32,})",
     GW_GUARD_REDACT, 0},
    /* classic (ghp_, gho_, ghu_, ghs_, ghr_: 36 characters) and
     * fine-grained (github_pat_) tokens */
    {"github_token", "\\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
     GW_GUARD_REDACT, 0},
    {"slack_token", "\\bxox[abpr]-[A-Za-z0-9-]{10,}", GW_GUARD_REDACT, 0},
    {"google_api_key", "\\bAIza[A-Za-z0-9_-]{35}", GW_GUARD_REDACT, 0},
    /* header and payload are JSON objects, so both start eyJ ("{\"");
     * the signature may be empty (alg none) */
    {"jwt", "\\beyJ[A-Za-z0-9_-]{10,}\\.eyJ[A-Za-z0-9_-]{10,}\\.[A-Za-z0-9_-]*", GW_GUARD_REDACT,
     0},
    {"email", "\\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}\\b",
     GW_GUARD_REDACT, 0},
    {"card_number", "\\b[0-9](?:[ -]?[0-9]){12,18}\\b", GW_GUARD_REDACT, 1},
};
_Static_assert(sizeof(guard_defaults) / sizeof(guard_defaults[0]) <= GW_GUARD_MAX,
               "the default rules fit the config's table");

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

/* "watchdog": the node's limits (parse_wd_limits), the scan's timings, the
 * audit log and the output guard's rules. */
void gw__cfg_parse_watchdog(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"max_tokens",
                                       "wall_time_ms",
                                       "device_time_ms",
                                       "repetition",
                                       "near_repetition",
                                       "collapsed_sampling",
                                       "divergence",
                                       "anomalous_length",
                                       "interval_ms",
                                       "stall_ms",
                                       "grace_ms",
                                       "audit_log",
                                       "guard",
                                       "unbounded_cap_tokens",
                                       "unbounded_patterns",
                                       NULL};
    static const char *const rule_keys[] = {"name", "pattern", "action", "luhn", NULL};
    json_t *o = gw__cfg_get_object(c, root, "", "watchdog", 0);
    if (!o)
        return;
    gw__cfg_check_keys(c, o, "watchdog", keys);
    parse_wd_limits(c, o, "watchdog", &cfg->wd);
    gw__cfg_get_u32(c, o, "watchdog", "interval_ms", 1, 1000, 0, &cfg->wd_interval_ms);
    gw__cfg_get_u32(c, o, "watchdog", "stall_ms", 10, 3600000u, 0, &cfg->wd_stall_ms);
    gw__cfg_get_u32(c, o, "watchdog", "grace_ms", 1, 60000, 0, &cfg->wd_grace_ms);
    char path[256];
    if (gw__cfg_get_string(c, o, "watchdog", "audit_log", 0, path, sizeof(path)) == 1)
        memcpy(cfg->audit_log, path, sizeof(path));
    parse_pattern_list(c, o, "watchdog", "unbounded_patterns", &cfg->unbounded);
    json_t *g = json_object_get(o, "guard");
    if (!g)
        return;
    if (!json_is_array(g) || json_array_size(g) > GW_GUARD_MAX) {
        gw__cfg_bad(c, "watchdog.guard", "expected an array of at most %d rules", GW_GUARD_MAX);
        return;
    }
    cfg->n_guard = 0;
    size_t i;
    json_t *v;
    json_array_foreach (g, i, v) {
        char p[PATH_LEN], pp[PATH_LEN];
        gw__cfg_path_idx(p, "watchdog.guard", i);
        if (!json_is_object(v)) {
            gw__cfg_bad(c, p, "expected an object {\"name\", \"pattern\", \"action\"}");
            continue;
        }
        gw__cfg_check_keys(c, v, p, rule_keys);
        struct gw_guard_rule *r = &cfg->guard[cfg->n_guard];
        memset(r, 0, sizeof(*r));
        r->action = GW_GUARD_KILL;
        if (gw__cfg_get_string(c, v, p, "name", 1, r->name, sizeof(r->name)) != 1 ||
            gw__cfg_get_string(c, v, p, "pattern", 1, r->pattern, sizeof(r->pattern)) != 1)
            continue;
        gw__cfg_path_key(pp, p, "pattern");
        check_pattern(c, pp, r->pattern, 0);
        json_t *a = json_object_get(v, "action");
        const char *as = a ? json_string_value(a) : "kill";
        if (as && strcmp(as, "kill") == 0) {
            r->action = GW_GUARD_KILL;
        } else if (as && strcmp(as, "redact") == 0) {
            r->action = GW_GUARD_REDACT;
        } else {
            gw__cfg_path_key(pp, p, "action");
            gw__cfg_bad(c, pp, "expected \"kill\" or \"redact\"");
        }
        json_t *l = json_object_get(v, "luhn");
        if (l && !json_is_boolean(l)) {
            gw__cfg_path_key(pp, p, "luhn");
            gw__cfg_bad(c, pp, "expected true or false");
        }
        r->luhn = l && json_is_true(l);
        cfg->n_guard++;
    }
}

void gw__cfg_wd_defaults(struct gw_config *cfg)
{
    cfg->wd = (struct gw_wd_limits){
        .max_tokens = 16384,
        .wall_ms = 600000,
        .device_ms = 300000,
        /* measured on SmolLM2-135M over tests/fixtures/loops.json
         * (docs/CONFIG.md "watchdog"): a loop is killed rep_match tokens
         * into its second cycle, near_match tokens into a near one's; the
         * answers that end by themselves repeated at most 29 tokens in a
         * row (35 near) unless they were asked for repetitive lists */
        .rep_period = 128,
        .rep_count = 3,
        .rep_tokens = 40,
        .rep_match = 32,
        /* "write 'hello' 30 times" runs its 30 cycles; "repeat it a
         * million times" gets 100 (docs/CONFIG.md) */
        .rep_asked_max = 100,
        .near_period = 128,
        .near_match = 48,
        .col_top1 = 95,
        .col_match = 12,
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
