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

/* One escalation of a tenant's ladder (address == 0) or an address's:
 * the ban of the last step when the limits ask for it, the audit line
 * with its evidence, the metric, a log line. */
static void escalated(struct front *f, int address, const char *id, struct gw_acct acct,
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
            "%s %s: prompt farming %s (score %" PRIu32 ", near %" PRIu32 "%%, cv %" PRIu32
            "%%, strikes %" PRIu32 ")",
            address ? "address" : "tenant", id, gw_farm_level_name(v->level), v->s.score,
            v->s.near_pct, v->s.cv_pct, v->strikes);
    if (gw_audit_path(f->cfg, path, sizeof(path)) != 0)
        return;
    size_t n = address ? gw_farm_ip_audit_line(line, sizeof(line), now, id, v)
                       : gw_farm_audit_line(line, sizeof(line), now, id, v);
    int rc = gw_audit_append(path, line, n);
    if (rc < 0)
        gw_logf(GW_LOG_WARNING, who, NULL, 0, "audit log %s: %s", path, gw_strerror(rc));
}

/* The answer to a verdict that refuses or throttles: -1 once answered. */
static int answer(struct admission *a, int address, const struct gw_farm_verdict *v)
{
    if (!v->refuse && !v->throttled)
        return 0;
    gw_metrics_refusal(a->seg, GW_REF_FARMING);
    gw_tstat_refusal(a->seg, a->tenant, GW_REF_FARMING);
    const char *whose = address ? "this address's" : "this tenant's";
    char hdr[64], msg[200];
    snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu64 "\r\n", (v->retry_us + 999999) / 1000000);
    if (v->refuse) {
        snprintf(msg, sizeof(msg),
                 "%s prompts look like prompt farming (score %" PRIu32 "); refused until %" PRIu64
                 " (unix time)",
                 whose, v->s.score, v->until_s);
        gw__conn_error(a->c, 429, "rate_limit_error", "prompt_farming", msg, NULL, hdr);
    } else {
        snprintf(msg, sizeof(msg),
                 "%s throttled: its prompts look like prompt farming (score %" PRIu32 ")",
                 address ? "this address is" : "this tenant is", v->s.score);
        gw__conn_error(a->c, 429, "rate_limit_error", "rate_limited", msg, NULL, hdr);
    }
    return -1;
}

int gw__front_farming(struct admission *a)
{
    const struct gw_farm_limits *l = &a->plan->farm, *il = &a->cfg->ip.farm;
    const struct gw_config *cfg = a->cfg;
    int by_tenant = l->enabled, by_address = il->enabled && a->ip_farm;
    if (!by_tenant && !by_address)
        return 0;
    /* one fingerprint for both steps, with the tenant plan's prefixes cut */
    const struct gw_farm_prefixes *pfx = NULL;
    if (l->prefixes && l->prefixes <= (uint32_t)cfg->n_farm_prefixes)
        pfx = &cfg->farm_prefixes[l->prefixes - 1];
    const char *text;
    size_t len;
    int single;
    gw_farm_text(a->rq.prompt, a->rq.prompt_len, a->rq.chat, pfx, &text, &len, &single);
    uint64_t fp = gw_farm_simhash(text, len);
    struct gw_farm_verdict tv = {0}, av = {0};
    /* a tenant without a farming record (the budget table was full) is
     * not judged: the budget records' own refusal covers that case; nor
     * an address without one (the table full: farm_ip.c) */
    if (by_tenant && gw_farm_observe(a->seg, a->tenant, fp, single, a->now, l, &tv) == 0 &&
        tv.level > tv.prev_level)
        escalated(a->f, 0, a->who.tenant, a->tenant, l, &tv, a->now);
    if (by_address && gw_farm_ip_observe(a->seg, a->ip, fp, single, a->now, il, &av) == 0 &&
        av.level > av.prev_level)
        escalated(a->f, 1, a->ip_key, a->ip, il, &av, a->now);
    if (answer(a, 0, &tv) != 0)
        return -1;
    return answer(a, 1, &av);
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
