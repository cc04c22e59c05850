/* front_farm.c - admission's prompt-farming step and output_tokens quota (docs/ARCHITECTURE.md,
 * "Prompt farming"): the fingerprint of the prompt, the tenant's record in
 * the segment (common/farm.c), and the answer the ladder asks for. Runs
 * after the body is parsed and before any slot or money is taken, so a
 * refused farmer costs no GPU time. O(prompt length), no lock.
 */
#include "front_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* One escalation: the ban of the last step when the plan asks for it, the
 * audit line with its evidence, the metric, a log line. */
static void escalated(struct front *f, const char *tenant, struct gw_acct acct,
                      const struct gw_farm_limits *l, struct gw_farm_verdict *v, uint64_t now)
{
    char who[32], path[300], line[1024];
    snprintf(who, sizeof(who), "front %d", f->index);
    if (v->level == GW_FARM_REFUSED && l->ban_ttl_s &&
        gw_ledger_ban(&f->seg, acct, now + (uint64_t)l->ban_ttl_s * 1000000u) == 0)
        v->banned_until_s = now / 1000000u + l->ban_ttl_s;
    if (v->prev_level == GW_FARM_NONE)
        gw_metrics_add(&f->seg, GW_MC_FARM_FLAGGED, 1);
    if (v->level == GW_FARM_REFUSED)
        gw_metrics_add(&f->seg, GW_MC_FARM_REFUSED, 1);
    gw_logf(GW_LOG_WARNING, who, NULL, 0,
            "tenant %s: prompt farming %s (score %" PRIu32 ", near %" PRIu32 "%%, cv %" PRIu32
            "%%, strikes %" PRIu32 ")",
            tenant, gw_farm_level_name(v->level), v->s.score, v->s.near_pct, v->s.cv_pct,
            v->strikes);
    if (gw_audit_path(f->cfg, path, sizeof(path)) != 0)
        return;
    size_t n = gw_farm_audit_line(line, sizeof(line), now, tenant, v);
    int rc = gw_audit_append(path, line, n);
    if (rc < 0)
        gw_logf(GW_LOG_WARNING, who, NULL, 0, "audit log %s: %s", path, gw_strerror(rc));
}

int gw__front_farming(struct conn *c, struct front *f, const struct gw_plan *plan,
                      struct gw_acct tenant, const char *tenant_id, const struct gw_gen_request *rq,
                      uint64_t now)
{
    const struct gw_farm_limits *l = &plan->farm;
    const struct gw_config *cfg = f->cfg;
    if (!l->enabled)
        return 0;
    const struct gw_farm_prefixes *pfx = NULL;
    if (l->prefixes && l->prefixes <= (uint32_t)cfg->n_farm_prefixes)
        pfx = &cfg->farm_prefixes[l->prefixes - 1];
    const char *text;
    size_t len;
    int single;
    gw_farm_text(rq->prompt, rq->prompt_len, rq->chat, pfx, &text, &len, &single);
    struct gw_farm_verdict v;
    /* a tenant without a farming record (the budget table was full) is
     * not judged: the budget records' own refusal covers that case */
    if (gw_farm_observe(&f->seg, tenant, gw_farm_simhash(text, len), single, now, l, &v) != 0)
        return 0;
    if (v.level > v.prev_level)
        escalated(f, tenant_id, tenant, l, &v, now);
    if (!v.refuse && !v.throttled)
        return 0;
    gw_metrics_refusal(&f->seg, GW_REF_FARMING);
    gw_tstat_refusal(&f->seg, tenant, GW_REF_FARMING);
    char hdr[64], msg[200];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (v.retry_us + 999999) / 1000000);
    if (v.refuse) {
        snprintf(msg, sizeof(msg),
                 "this tenant's prompts look like prompt farming (score %" PRIu32
                 "); refused until %" PRIu64 " (unix time)",
                 v.s.score, v.until_s);
        gw__conn_error(c, 429, "rate_limit_error", "prompt_farming", msg, NULL, hdr);
    } else {
        snprintf(msg, sizeof(msg),
                 "this tenant is throttled: its prompts look like prompt farming (score %" PRIu32
                 ")",
                 v.s.score);
        gw__conn_error(c, 429, "rate_limit_error", "rate_limited", msg, NULL, hdr);
    }
    return -1;
}

int gw__front_output_quota(struct conn *c, struct front *f, const struct gw_plan *plan,
                           struct gw_acct tenant, uint64_t now)
{
    if (!plan->has_output)
        return 0;
    uint64_t left = 0, retry = 0;
    if (gw_outq_check(&f->seg, tenant, &plan->output, now, &left, &retry) != GW_EREFUSED)
        return 0;
    gw_metrics_refusal(&f->seg, GW_REF_OUTPUT);
    gw_tstat_refusal(&f->seg, tenant, GW_REF_OUTPUT);
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (retry + 999999) / 1000000);
    gw__conn_error(c, 429, "rate_limit_error", "output_tokens_exhausted",
                   "this tenant generated its plan's output_tokens for the window", NULL, hdr);
    return -1;
}

void gw__front_output_charge(const struct job *j, uint64_t tokens)
{
    uint64_t now = gw_now_us();
    if (j->has_output)
        gw_outq_charge(&j->f->seg, j->tenant, &j->output, tokens, now);
    /* the farm's output lease: the rest beyond the admission's token */
    if (j->farm_out == GW_FARM_OUT_LEASE)
        gw_cluster_out_settle(&j->f->seg, j->tenant, tokens);
    else if (j->farm_out == GW_FARM_OUT_OPEN)
        gw_cluster_out_open_settle(&j->f->seg, j->tenant, &j->output, tokens, now);
}
