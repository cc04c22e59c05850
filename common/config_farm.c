/* config_farm.c - a plan's or tenant's "farming" object: prompt-farming
 * detection and its ladder (gw_common/farm.h; docs/CONFIG.md, "farming").
 * A tenant's object overrides single keys of its plan's.
 */
#include "config_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void gw__cfg_farm_defaults(struct gw_farm_limits *l)
{
    memset(l, 0, sizeof(*l));
    l->window = 32;
    l->min_samples = 16;
    l->near_bits = 20;
    l->sweep_cv_pct = 50;
    l->sweep_single_pct = 90;
    l->flag_score = 60;
    l->throttle_after = 32;
    l->refuse_after = 64;
    l->throttle = (struct gw_window){.limit = 1, .period_us = SEC_US, .burst = 0};
    l->refuse_ttl_s = 600;
}

/* "ignore_prefix": an array of 1..GW_FARM_PREFIX_MAX strings, appended to
 * cfg->farm_prefixes; l->prefixes names the list. */
static void parse_prefixes(struct gw_cfg_cx *c, json_t *v, const char *p, struct gw_farm_limits *l)
{
    char pi[PATH_LEN];
    struct gw_farm_prefixes list = {0};
    if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > GW_FARM_PREFIX_MAX) {
        gw__cfg_bad(c, p, "expected an array of 1 to %d strings", GW_FARM_PREFIX_MAX);
        return;
    }
    size_t i;
    json_t *s;
    int ok = 1;
    json_array_foreach (v, i, s) {
        gw__cfg_path_idx(pi, p, i);
        if (!json_is_string(s) || json_string_length(s) == 0 ||
            json_string_length(s) >= GW_FARM_PREFIX_LEN ||
            strlen(json_string_value(s)) != json_string_length(s)) {
            gw__cfg_bad(c, pi, "expected a string of 1 to %d bytes", GW_FARM_PREFIX_LEN - 1);
            ok = 0;
            continue;
        }
        memcpy(list.s[list.n++], json_string_value(s), json_string_length(s) + 1);
    }
    if (!ok || !c->cfg)
        return;
    struct gw_config *cfg = c->cfg;
    struct gw_farm_prefixes *n =
        realloc(cfg->farm_prefixes, (size_t)(cfg->n_farm_prefixes + 1) * sizeof(*n));
    if (!n) {
        gw__cfg_bad(c, p, "out of memory");
        return;
    }
    cfg->farm_prefixes = n;
    cfg->farm_prefixes[cfg->n_farm_prefixes++] = list;
    l->prefixes = (uint32_t)cfg->n_farm_prefixes;
}

void gw__cfg_plan_farming(struct gw_cfg_cx *c, json_t *o, const char *p, struct gw_farm_limits *l,
                          uint32_t *records)
{
    /* the address object ("ip.farming", records != NULL) has "records" in
     * place of "ignore_prefix": a request's fingerprint is computed once,
     * with its tenant plan's prefixes, for both steps */
    static const char *const keys[] = {"enabled",       "window",
                                       "min_samples",   "near_bits",
                                       "sweep_cv_pct",  "sweep_single_pct",
                                       "flag_score",    "throttle_after",
                                       "refuse_after",  "throttle",
                                       "refuse_ttl_s",  "ban_ttl_s",
                                       "ignore_prefix", NULL};
    static const char *const ip_keys[] = {
        "enabled",          "window",     "min_samples",    "near_bits",     "sweep_cv_pct",
        "sweep_single_pct", "flag_score", "throttle_after", "refuse_after",  "throttle",
        "refuse_ttl_s",     "ban_ttl_s",  "records",        "ignore_prefix", NULL};
    char q[PATH_LEN], sh[96];
    if (records && json_object_get(o, "ignore_prefix")) {
        gw__cfg_path_key(q, p, "ignore_prefix");
        gw__cfg_bad(c, q,
                    "not an address key: the fingerprint cuts the tenant plan's "
                    "ignore_prefix");
    }
    gw__cfg_check_keys(c, o, p, records ? ip_keys : keys);
    json_t *v = json_object_get(o, "enabled");
    if (v) {
        gw__cfg_path_key(q, p, "enabled");
        if (json_is_boolean(v))
            l->enabled = json_is_true(v);
        else
            gw__cfg_bad(c, q, "expected true or false");
    }
    gw__cfg_get_u32(c, o, p, "window", 4, GW_FARM_RING, 0, &l->window);
    gw__cfg_get_u32(c, o, p, "min_samples", 2, GW_FARM_RING, 0, &l->min_samples);
    gw__cfg_get_u32(c, o, p, "near_bits", 0, 32, 0, &l->near_bits);
    gw__cfg_get_u32(c, o, p, "sweep_cv_pct", 0, 1000, 0, &l->sweep_cv_pct);
    gw__cfg_get_u32(c, o, p, "sweep_single_pct", 0, 100, 0, &l->sweep_single_pct);
    gw__cfg_get_u32(c, o, p, "flag_score", 1, 100, 0, &l->flag_score);
    gw__cfg_get_u32(c, o, p, "throttle_after", 1, 100000, 0, &l->throttle_after);
    gw__cfg_get_u32(c, o, p, "refuse_after", 1, 100000, 0, &l->refuse_after);
    gw__cfg_get_u32(c, o, p, "refuse_ttl_s", 1, 2592000, 0, &l->refuse_ttl_s);
    gw__cfg_get_u32(c, o, p, "ban_ttl_s", 0, 31622400, 0, &l->ban_ttl_s);
    if ((v = json_object_get(o, "throttle"))) {
        gw__cfg_path_key(q, p, "throttle");
        struct gw_window w;
        const char *s = json_string_value(v);
        if (!s || gw_window_parse(s, &w) != 0)
            gw__cfg_bad(c, q, "\"%s\": expected \"N per second|minute|hour|day [burst M]\"",
                        s ? gw__cfg_shown(s, sh) : "(not a string)");
        else
            l->throttle = w;
    }
    if (records)
        gw__cfg_get_u32(c, o, p, "records", 0, 1u << 20, 0, records);
    if (!records && (v = json_object_get(o, "ignore_prefix"))) {
        gw__cfg_path_key(q, p, "ignore_prefix");
        parse_prefixes(c, v, q, l);
    }
    /* relations between keys, checked on the merged values */
    if (l->min_samples > l->window) {
        gw__cfg_path_key(q, p, "min_samples");
        gw__cfg_bad(c, q, "%u is more than window (%u)", l->min_samples, l->window);
    }
    if (records && l->enabled && *records < GW_PROBE) {
        gw__cfg_path_key(q, p, "records");
        gw__cfg_bad(c, q, "%u: at least %d while enabled", *records, GW_PROBE);
    }
    if (l->refuse_after < l->throttle_after) {
        gw__cfg_path_key(q, p, "refuse_after");
        gw__cfg_bad(c, q, "%u is less than throttle_after (%u)", l->refuse_after,
                    l->throttle_after);
    }
}
