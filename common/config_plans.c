/* config_plans.c - the limits a request is admitted under: "plans",
 * "tenants" (a plan plus the tenant's own overrides), the "ip" and "global"
 * limits, "default_plan", and the lookups the fronts make at admission
 * (gw_config_tenant, gw_config_plan_for).
 */
#include "config_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANTS_MAX 100000

/* The characters a tenant id (JWT sub) may hold; auth.c checks the same. */
#define TENANT_CHARS "._@:-"
#define PLAN_CHARS "._-"

/* ------------------------------------------------------------------ plans */

#define WINDOW_FORM "\"N per second|minute|hour|day [burst M | moving]\""
/* output_tokens counts tokens by GCRA (farm.c): no moving kind there */
#define OUTPUT_FORM "\"N per second|minute|hour|day [burst M]\""
#define BUDGET_FORM "\"X GPU-seconds per second|minute|hour|day\""

/* The keys a plan may hold, and which of them a given section allows. */
enum {
    PK_RATE = 1,
    PK_BUDGET = 2,
    PK_INFLIGHT = 4,
    PK_TOKENS = 8,
    PK_ON_BUDGET = 16,
    PK_WATCHDOG = 32,
    PK_WEIGHT = 64,
    PK_FARMING = 128,
    PK_OUTPUT = 256
};
#define PK_ALL                                                                                     \
    (PK_RATE | PK_BUDGET | PK_INFLIGHT | PK_TOKENS | PK_ON_BUDGET | PK_WATCHDOG | PK_WEIGHT |      \
     PK_FARMING | PK_OUTPUT)

static void parse_rates(struct gw_cfg_cx *c, json_t *arr, const char *p, struct gw_plan *pl)
{
    char q[96], pi[PATH_LEN];
    if (!json_is_array(arr)) {
        gw__cfg_bad(c, p, "expected an array of " WINDOW_FORM " strings");
        return;
    }
    if (json_array_size(arr) > GW_RATE_CELLS) {
        gw__cfg_bad(c, p, "%zu windows; at most %d", json_array_size(arr), GW_RATE_CELLS);
        return;
    }
    int n = 0;
    struct gw_window w[GW_RATE_CELLS];
    size_t i;
    json_t *v;
    int ok = 1;
    json_array_foreach (arr, i, v) {
        gw__cfg_path_idx(pi, p, i);
        if (!json_is_string(v)) {
            gw__cfg_bad(c, pi, "expected a string " WINDOW_FORM);
            ok = 0;
            continue;
        }
        int rc = gw_window_parse(json_string_value(v), &w[n]);
        if (rc == -ERANGE) {
            gw__cfg_bad(c, pi, "\"%s\": burst too large for the window",
                        gw__cfg_shown(json_string_value(v), q));
            ok = 0;
        } else if (rc == -EDOM) {
            gw__cfg_bad(c, pi,
                        "\"%s\": a moving window admits at most 255 per period; drop "
                        "\"moving\" for more",
                        gw__cfg_shown(json_string_value(v), q));
            ok = 0;
        } else if (rc) {
            gw__cfg_bad(c, pi, "\"%s\": expected " WINDOW_FORM,
                        gw__cfg_shown(json_string_value(v), q));
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
static void parse_plan_keys(struct gw_cfg_cx *c, json_t *obj, const char *base, int allowed,
                            struct gw_plan *pl)
{
    char p[PATH_LEN], q[96];
    json_t *v;
    if ((allowed & PK_RATE) && (v = json_object_get(obj, "rate"))) {
        gw__cfg_path_key(p, base, "rate");
        parse_rates(c, v, p, pl);
    }
    if ((allowed & PK_BUDGET) && (v = json_object_get(obj, "budget"))) {
        gw__cfg_path_key(p, base, "budget");
        if (json_is_null(v)) {
            pl->has_budget = 0; /* an override may lift a plan's budget */
        } else if (!json_is_string(v)) {
            gw__cfg_bad(c, p, "expected a string " BUDGET_FORM " or null");
        } else if (gw_budget_parse(json_string_value(v), &pl->budget)) {
            gw__cfg_bad(c, p, "\"%s\": expected " BUDGET_FORM,
                        gw__cfg_shown(json_string_value(v), q));
        } else {
            pl->has_budget = 1;
        }
    }
    if (allowed & PK_INFLIGHT)
        gw__cfg_get_u32(c, obj, base, "max_inflight", 0, 1000000, 0, &pl->max_inflight);
    if (allowed & PK_TOKENS)
        gw__cfg_get_u32(c, obj, base, "max_tokens", 1, 1u << 20, 0, &pl->max_tokens);
    if ((allowed & PK_ON_BUDGET) && (v = json_object_get(obj, "on_budget"))) {
        gw__cfg_path_key(p, base, "on_budget");
        const char *s = json_string_value(v);
        if (s && strcmp(s, "refuse") == 0 && json_string_length(v) == 6)
            pl->clamp_on_budget = 0;
        else if (s && strcmp(s, "clamp") == 0 && json_string_length(v) == 5)
            pl->clamp_on_budget = 1;
        else
            gw__cfg_bad(c, p, "expected \"refuse\" or \"clamp\"");
    }
    if ((allowed & PK_WATCHDOG) && (v = gw__cfg_get_object(c, obj, base, "watchdog", 0))) {
        gw__cfg_path_key(p, base, "watchdog");
        gw__cfg_plan_watchdog(c, v, p, &pl->wd);
    }
    if (allowed & PK_WEIGHT)
        gw__cfg_get_number(c, obj, base, "weight", 1000, &pl->weight);
    if ((allowed & PK_OUTPUT) && (v = json_object_get(obj, "output_tokens"))) {
        gw__cfg_path_key(p, base, "output_tokens");
        struct gw_window w;
        if (json_is_null(v)) {
            pl->has_output = 0; /* an override may lift a plan's quota */
        } else if (!json_is_string(v) || gw_window_parse(json_string_value(v), &w) != 0 ||
                   w.moving) {
            gw__cfg_bad(c, p, "%s%s%s: expected " OUTPUT_FORM " or null",
                        json_is_string(v) ? "\"" : "",
                        json_is_string(v) ? gw__cfg_shown(json_string_value(v), q) : "not a string",
                        json_is_string(v) ? "\"" : "");
        } else {
            pl->has_output = 1;
            pl->output = w;
        }
    }
    if ((allowed & PK_FARMING) && (v = gw__cfg_get_object(c, obj, base, "farming", 0))) {
        gw__cfg_path_key(p, base, "farming");
        gw__cfg_plan_farming(c, v, p, &pl->farm, NULL);
    }
}

static const char *const plan_keys[] = {"rate",          "budget",   "max_inflight", "max_tokens",
                                        "on_budget",     "watchdog", "weight",       "farming",
                                        "output_tokens", NULL};

void gw__cfg_plan_defaults(struct gw_plan *pl, const char *name)
{
    memset(pl, 0, sizeof(*pl));
    snprintf(pl->name, sizeof(pl->name), "%s", name);
    pl->max_tokens = 1024;
    pl->weight = 1.0;
    gw__cfg_farm_defaults(&pl->farm);
}

uint32_t gw_weight_milli(double weight)
{
    /* !(x >= 1) also catches NaN: a weight that reached here unchecked
     * still gets the smallest share, never none. */
    double x = weight * 1000.0 + 0.5;
    if (!(x >= 1.0))
        return 1;
    if (x >= 1000000.0)
        return 1000000;
    return (uint32_t)x;
}

static int plan_index(const struct gw_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n_plans; i++)
        if (strcmp(cfg->plans[i].name, name) == 0)
            return i;
    return -1;
}

void gw__cfg_parse_plans(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    json_t *plans = gw__cfg_get_object(c, root, "", "plans", 0);
    if (!plans)
        return;
    char p[PATH_LEN], q[96];
    const char *name;
    json_t *v;
    json_object_foreach (plans, name, v) {
        gw__cfg_path_key(p, "plans", name);
        if (!gw__cfg_name_ok(name, PLAN_CHARS)) {
            gw__cfg_bad(c, p, "\"%s\": a plan name is 1 to %d bytes of [A-Za-z0-9._-]",
                        gw__cfg_shown(name, q), GW_NAME_MAX - 1);
            continue;
        }
        if (cfg->n_plans == GW_MAX_PLANS) {
            gw__cfg_bad(c, p, "more than %d plans", GW_MAX_PLANS);
            break;
        }
        if (!json_is_object(v)) {
            gw__cfg_bad(c, p, "expected an object");
            continue;
        }
        struct gw_plan *pl = &cfg->plans[cfg->n_plans++];
        gw__cfg_plan_defaults(pl, name);
        gw__cfg_check_keys(c, v, p, plan_keys);
        parse_plan_keys(c, v, p, PK_ALL, pl);
    }
}

/* ---------------------------------------------------------------- tenants */

static int tenant_cmp(const void *a, const void *b)
{
    return strcmp(((const struct gw_tenant *)a)->id, ((const struct gw_tenant *)b)->id);
}

void gw__cfg_parse_tenants(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"plan",         "plans",      "rate",          "budget",
                                       "max_inflight", "max_tokens", "on_budget",     "watchdog",
                                       "weight",       "farming",    "output_tokens", NULL};
    json_t *tenants = gw__cfg_get_object(c, root, "", "tenants", 0);
    if (!tenants)
        return;
    size_t n = json_object_size(tenants);
    if (n > TENANTS_MAX) {
        gw__cfg_bad(c, "tenants", "%zu tenants; at most %d", n, TENANTS_MAX);
        return;
    }
    if (n == 0)
        return;
    cfg->tenants = calloc(n, sizeof(*cfg->tenants));
    if (!cfg->tenants) {
        gw__cfg_bad(c, "tenants", "out of memory");
        return;
    }
    char p[PATH_LEN], pp[PATH_LEN], pi[PATH_LEN], q[96];
    const char *id;
    json_t *v;
    json_object_foreach (tenants, id, v) {
        gw__cfg_path_key(p, "tenants", id);
        if (!gw__cfg_name_ok(id, TENANT_CHARS)) {
            gw__cfg_bad(c, p,
                        "\"%s\": a tenant id (the JWT sub) is 1 to %d bytes of [A-Za-z0-9._@:-]",
                        gw__cfg_shown(id, q), GW_NAME_MAX - 1);
            continue;
        }
        if (!json_is_object(v)) {
            gw__cfg_bad(c, p, "expected an object");
            continue;
        }
        gw__cfg_check_keys(c, v, p, keys);
        struct gw_tenant *t = &cfg->tenants[cfg->n_tenants];
        memset(t, 0, sizeof(*t));
        snprintf(t->id, sizeof(t->id), "%s", id);
        char plan[GW_NAME_MAX];
        int have = gw__cfg_get_string(c, v, p, "plan", 1, plan, sizeof(plan));
        int pi_base = -1;
        if (have == 1) {
            pi_base = plan_index(cfg, plan);
            if (pi_base < 0) {
                gw__cfg_path_key(pp, p, "plan");
                gw__cfg_bad(c, pp, "\"%s\" is not a configured plan", gw__cfg_shown(plan, q));
            }
        }
        if (pi_base >= 0)
            t->plan = cfg->plans[pi_base];
        else
            gw__cfg_plan_defaults(&t->plan, "");
        parse_plan_keys(c, v, p, PK_ALL, &t->plan);
        json_t *allowed = json_object_get(v, "plans");
        if (allowed) {
            gw__cfg_path_key(pp, p, "plans");
            if (!json_is_array(allowed) || json_array_size(allowed) > 8) {
                gw__cfg_bad(c, pp, "expected an array of at most 8 plan names");
            } else {
                size_t i;
                json_t *a;
                json_array_foreach (allowed, i, a) {
                    gw__cfg_path_idx(pi, pp, i);
                    const char *s = json_string_value(a);
                    if (!s) {
                        gw__cfg_bad(c, pi, "expected a plan name");
                    } else if (plan_index(cfg, s) < 0) {
                        gw__cfg_bad(c, pi, "\"%s\" is not a configured plan", gw__cfg_shown(s, q));
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

/* ------------------------------------------------------- ip, global, default */

/* "ip" and "global": the limits every request passes besides its tenant's. */
void gw__cfg_parse_limits(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const ip_keys[] = {"rate",
                                          "trusted_proxies",
                                          "ipv6_prefix",
                                          "proxy_protocol",
                                          "connections_per_address",
                                          "overflow_rate",
                                          "farming",
                                          NULL};
    static const char *const global_keys[] = {"rate", "budget", "max_inflight", NULL};
    json_t *o;
    if ((o = gw__cfg_get_object(c, root, "", "ip", 0))) {
        gw__cfg_check_keys(c, o, "ip", ip_keys);
        parse_plan_keys(c, o, "ip", PK_RATE, &cfg->ip);
        gw__cfg_parse_net(c, o, cfg);
        json_t *fo = gw__cfg_get_object(c, o, "ip", "farming", 0);
        if (fo) /* per client address (farm_ip.c) */
            gw__cfg_plan_farming(c, fo, "ip.farming", &cfg->ip.farm, &cfg->segment.ip_farm_recs);
    }
    if ((o = gw__cfg_get_object(c, root, "", "global", 0))) {
        gw__cfg_check_keys(c, o, "global", global_keys);
        parse_plan_keys(c, o, "global", PK_RATE | PK_BUDGET | PK_INFLIGHT, &cfg->global);
    }
}

void gw__cfg_parse_default_plan(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    json_t *v = json_object_get(root, "default_plan");
    char q[96];
    if (!v || json_is_null(v))
        return;
    if (!json_is_string(v)) {
        gw__cfg_bad(c, "default_plan", "expected a plan name or null");
        return;
    }
    cfg->default_plan = plan_index(cfg, json_string_value(v));
    if (cfg->default_plan < 0)
        gw__cfg_bad(c, "default_plan", "\"%s\" is not a configured plan",
                    gw__cfg_shown(json_string_value(v), q));
}

/* ---------------------------------------------------------------- lookups */

/* The tenants are sorted by id (gw__cfg_parse_tenants, tenant_cmp). */
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
