/* admin_tenants.c - the admin socket's `tenant.top` command (gpuwardenctl
 * top): every tenant the segment has an account for, listed in the config
 * or not, with what it was admitted, refused, killed and generated, its
 * GPU time and its prompt-farming state (metrics_tenants.c collects the
 * rows; common/tstats.c keeps the counters). Operator level.
 *
 * Arguments: "by" (the order: "score" (the default: prompt-farming score,
 * then farming refusals, then GPU time), "gpu_time", "output_tokens",
 * "kills", "refusals"), "limit" (rows at most, 0 or absent: all). */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

enum { BY_SCORE, BY_GPU, BY_TOKENS, BY_KILLS, BY_REFUSALS };
static const char *const by_names[] = {"score", "gpu_time", "output_tokens", "kills", "refusals"};

static int cmp_u64(uint64_t x, uint64_t y)
{
    return x < y ? 1 : x > y ? -1 : 0; /* larger first */
}

static int by_key; /* qsort has no context argument */

static int top_cmp(const void *pa, const void *pb)
{
    const struct gw_tenant_row *x = pa, *y = pb;
    int d = 0;
    switch (by_key) {
    case BY_SCORE:
        d = cmp_u64(x->score, y->score);
        if (!d)
            d = cmp_u64(x->farm_refused, y->farm_refused);
        break;
    case BY_TOKENS:
        d = cmp_u64(x->st.output_tokens, y->st.output_tokens);
        break;
    case BY_KILLS:
        d = cmp_u64(x->st.kills_total, y->st.kills_total);
        break;
    case BY_REFUSALS:
        d = cmp_u64(x->st.refusals_total, y->st.refusals_total);
        break;
    default:
        break;
    }
    if (!d)
        d = cmp_u64(x->used_us, y->used_us);
    return d ? d : strcmp(x->label, y->label);
}

/* Only the reasons that happened, so a row stays readable. */
static json_t *reasons_json(const uint64_t *v, int n, const char *(*name)(int))
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++)
        if (v[i])
            json_object_set_new(o, name(i), json_integer((json_int_t)v[i]));
    return o;
}

static json_t *row_json(const struct gw_config *cfg, const struct gw_tenant_row *r)
{
    const char *why = NULL;
    const struct gw_plan *p = gw_config_plan_for(cfg, r->label, NULL, &why);
    json_t *o =
        json_pack("{s:s,s:b,s:o,s:I,s:I,s:o,s:I,s:o,s:I,s:I,s:{s:b,s:s,s:I,s:I,s:I},s:I}", "tenant",
                  r->label, "listed", gw_config_tenant(cfg, r->label) != NULL, "plan",
                  p ? json_string(p->name) : json_null(), "admitted", (json_int_t)r->st.admitted,
                  "refusals_total", (json_int_t)r->st.refusals_total, "refusals",
                  reasons_json(r->st.refusals, GW_REF_REASONS, gw_refusal_name), "kills_total",
                  (json_int_t)r->st.kills_total, "kills",
                  reasons_json(r->st.kills, GW_WD_REASONS, gw_wd_reason_name), "output_tokens",
                  (json_int_t)r->st.output_tokens, "used_us", (json_int_t)r->used_us, "farming",
                  "enabled", p && p->farm.enabled, "level", gw_farm_level_name(r->level), "score",
                  (json_int_t)r->score, "refused_total", (json_int_t)r->farm_refused, "prompts",
                  (json_int_t)r->prompts, "accounts", (json_int_t)r->accounts);
    return o;
}

json_t *gw__admin_cmd_tenant_top(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)uid;
    int by = BY_SCORE;
    json_t *v = json_object_get(req, "by");
    if (v) {
        by = -1;
        for (int i = 0; json_is_string(v) && i < (int)(sizeof(by_names) / sizeof(by_names[0])); i++)
            if (strcmp(json_string_value(v), by_names[i]) == 0)
                by = i;
        if (by < 0)
            return gw__admin_error("bad_argument", "\"by\": expected \"score\", \"gpu_time\", "
                                                   "\"output_tokens\", \"kills\" or \"refusals\"");
    }
    json_int_t limit = 0;
    if ((v = json_object_get(req, "limit"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return gw__admin_error("bad_argument",
                                   "\"limit\": expected an integer >= 0 (0: every tenant)");
        limit = json_integer_value(v);
    }
    struct gw_tenant_row *rows;
    size_t n;
    if (gw_tenant_rows(a->seg, gw_now_us(), &rows, &n) != 0)
        return gw__admin_error("failed", "out of memory");
    by_key = by;
    qsort(rows, n, sizeof(*rows), top_cmp);
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    json_t *arr = json_array();
    for (size_t i = 0; i < n && (limit == 0 || (json_int_t)i < limit); i++)
        json_array_append_new(arr, row_json(cfg, &rows[i]));
    free(rows);
    return json_pack("{s:b,s:s,s:I,s:o}", "ok", 1, "by", by_names[by], "tenants_total",
                     (json_int_t)n, "tenants", arr);
}
