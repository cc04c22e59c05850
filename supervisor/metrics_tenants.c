/* metrics_tenants.c - the tenants the segment knows, as rows (for
 * gpuwardenctl top) and as per-tenant /metrics series with bounded
 * cardinality: the top N tenants (metrics.tenants_top, by GPU time or by
 * refusals) each get their own `tenant` label value and every other tenant
 * is summed into one tenant="other", so an answer never holds more than
 * N + 1 tenant label values whatever tenants clients invent.
 *
 * Read from the segment only (common/tstats.c, the budget columns, the
 * farming records), like metrics.c: every front renders the same answer.
 * A label is the tenant's display id (its first 40 bytes, gw_ledger_id)
 * made valid UTF-8 without control bytes, so two accounts whose labels
 * come out equal are merged into one row (a scrape with a duplicate series
 * would be refused whole), and a tenant whose label is "other" is always
 * counted in the "other" row, never beside it. */
#include "gw_supervisor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The display id as a label value: bytes that are not UTF-8 and control
 * bytes as '?'. */
static void label_of(const char *id, size_t n, char *out, size_t outlen)
{
    char tmp[GW_TENANT_LABEL_MAX];
    if (n >= sizeof(tmp))
        n = sizeof(tmp) - 1;
    size_t w = gw_utf8_replace(tmp, id, n, "?", 1);
    for (size_t i = 0; i < w; i++)
        if ((unsigned char)tmp[i] < 0x20 || tmp[i] == 0x7f)
            tmp[i] = '?';
    if (w >= outlen)
        w = outlen - 1;
    memcpy(out, tmp, w);
    out[w] = '\0';
}

static void row_add(struct gw_tenant_row *to, const struct gw_tenant_row *r)
{
    to->accounts += r->accounts;
    to->st.admitted += r->st.admitted;
    to->st.output_tokens += r->st.output_tokens;
    for (int i = 0; i < GW_TSTAT_REASONS; i++) {
        to->st.refusals[i] += r->st.refusals[i];
        to->st.kills[i] += r->st.kills[i];
    }
    to->st.refusals_total += r->st.refusals_total;
    to->st.kills_total += r->st.kills_total;
    to->used_us += r->used_us;
    to->farm_refused += r->farm_refused;
    to->prompts += r->prompts;
    if (r->score > to->score)
        to->score = r->score;
    if (r->level > to->level)
        to->level = r->level;
}

static int by_label(const void *a, const void *b)
{
    return strcmp(((const struct gw_tenant_row *)a)->label,
                  ((const struct gw_tenant_row *)b)->label);
}

int gw_tenant_rows(const struct gw_segment *seg, uint64_t now_us, struct gw_tenant_row **out,
                   size_t *n_out)
{
    struct gw_seg_stats ss;
    gw_segment_stats(seg, &ss);
    size_t cap = ss.budgets_used < seg->cfg.budgets ? ss.budgets_used : seg->cfg.budgets;
    struct gw_tenant_row *rows = calloc(cap + 1, sizeof(*rows)); /* + the spare */
    if (!rows)
        return -ENOMEM;
    size_t n = 0;
    for (uint32_t b = 0; b < cap; b++) {
        struct gw_acct a;
        char id[GW_ID_MAX + 1];
        enum gw_kind kind;
        if (gw_tenant_at(seg, b, &a) != 0)
            continue;
        size_t idn = gw_ledger_id(seg, a, &kind, id, sizeof(id));
        struct gw_tenant_row *r = &rows[n];
        if (idn == 0 || kind != GW_KIND_TENANT || gw_tstat_get(seg, a, &r->st) != 0)
            continue;
        label_of(id, idn, r->label, sizeof(r->label));
        struct gw_money m = {0};
        gw_ledger_money(seg, a, &m);
        struct gw_farm_state fs;
        if (gw_farm_get(seg, a, now_us, &fs) == 0) {
            r->score = fs.score;
            r->level = fs.level;
            r->farm_refused = fs.refused_total;
            r->prompts = fs.seen;
        }
        r->acct = a;
        r->used_us = m.used_us;
        r->accounts = 1;
        n++;
    }
    /* one row per label */
    qsort(rows, n, sizeof(*rows), by_label);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && strcmp(rows[k - 1].label, rows[i].label) == 0)
            row_add(&rows[k - 1], &rows[i]);
        else
            rows[k++] = rows[i];
    }
    *out = rows;
    *n_out = k;
    return 0;
}

/* ------------------------------------------------------------ /metrics */

static int by_gpu(const void *a, const void *b)
{
    const struct gw_tenant_row *x = a, *y = b;
    if (x->used_us != y->used_us)
        return x->used_us < y->used_us ? 1 : -1;
    return strcmp(x->label, y->label);
}

static int by_refusals(const void *a, const void *b)
{
    const struct gw_tenant_row *x = a, *y = b;
    if (x->st.refusals_total != y->st.refusals_total)
        return x->st.refusals_total < y->st.refusals_total ? 1 : -1;
    return by_gpu(a, b);
}

/* A label value in the text format: \ " and newline escaped (the label has
 * no other control byte, label_of). */
static void put_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        fputc(*s, f);
    }
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One family over the shown rows: each row's value by `get`, optionally
 * one line per reason (reasons > 0: name(i) labels reason i). */
struct family {
    const char *name, *type, *help;
    int reasons;
    const char *(*reason_name)(int);
    void (*get)(const struct gw_tenant_row *r, int reason, char *val, size_t len);
};

static void get_admitted(const struct gw_tenant_row *r, int i, char *v, size_t n)
{
    (void)i;
    snprintf(v, n, "%" PRIu64, r->st.admitted);
}
static void get_refusals(const struct gw_tenant_row *r, int i, char *v, size_t n)
{
    snprintf(v, n, "%" PRIu64, r->st.refusals[i]);
}
static void get_kills(const struct gw_tenant_row *r, int i, char *v, size_t n)
{
    snprintf(v, n, "%" PRIu64, r->st.kills[i]);
}
static void get_tokens(const struct gw_tenant_row *r, int i, char *v, size_t n)
{
    (void)i;
    snprintf(v, n, "%" PRIu64, r->st.output_tokens);
}
static void get_device(const struct gw_tenant_row *r, int i, char *v, size_t n)
{
    (void)i;
    snprintf(v, n, "%.6f", (double)r->used_us / 1e6);
}
static void get_score(const struct gw_tenant_row *r, int i, char *v, size_t n)
{
    (void)i;
    snprintf(v, n, "%" PRIu32, r->score);
}
static void get_level(const struct gw_tenant_row *r, int i, char *v, size_t n)
{
    (void)i;
    snprintf(v, n, "%d", r->level);
}

static const struct family families[] = {
    {"gpuwarden_tenant_admitted_total", "counter",
     "Requests admitted (queued for a worker), per tenant.", 0, NULL, get_admitted},
    {"gpuwarden_tenant_refusals_total", "counter",
     "Requests refused once the tenant was known, per tenant and reason.", GW_REF_REASONS,
     gw_refusal_name, get_refusals},
    {"gpuwarden_tenant_device_seconds_total", "counter",
     "Device (GPU) time charged to the tenant's budget.", 0, NULL, get_device},
    {"gpuwarden_tenant_generated_tokens_total", "counter", "Tokens generated for the tenant.", 0,
     NULL, get_tokens},
    {"gpuwarden_tenant_watchdog_kills_total", "counter",
     "Generations the watchdog or the output guard killed, per tenant and reason.", GW_WD_REASONS,
     gw_wd_reason_name, get_kills},
    {"gpuwarden_tenant_farming_score", "gauge",
     "The tenant's last prompt-farming score, 0..100 (\"other\": the highest).", 0, NULL,
     get_score},
    {"gpuwarden_tenant_farming_level", "gauge",
     "The tenant's farming ladder: 0 none, 1 flagged, 2 throttled, 3 refused (\"other\": the "
     "highest).",
     0, NULL, get_level},
};

static void family_lines(FILE *f, const struct family *fam, const struct gw_tenant_row *rows,
                         size_t n)
{
    head(f, fam->name, fam->type, fam->help);
    char v[32];
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < (fam->reasons ? fam->reasons : 1); k++) {
            fprintf(f, "%s{tenant=\"", fam->name);
            put_label(f, rows[i].label);
            if (fam->reasons)
                fprintf(f, "\",reason=\"%s", fam->reason_name(k));
            fam->get(&rows[i], k, v, sizeof(v));
            fprintf(f, "\"} %s\n", v);
        }
}

int gw_metrics_render_tenants(const struct gw_segment *seg, const struct gw_metrics_cfg *mc,
                              char **out, size_t *len)
{
    struct gw_tenant_row *rows;
    size_t n;
    int rc = gw_tenant_rows(seg, gw_now_us(), &rows, &n);
    if (rc != 0)
        return rc;
    /* "other" is never a tenant's own row: it joins the rest */
    struct gw_tenant_row other = {0};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows[i].label, "other") == 0)
            row_add(&other, &rows[i]);
        else
            rows[k++] = rows[i];
    }
    qsort(rows, k, sizeof(*rows), mc->tenants_by == GW_MT_BY_REFUSALS ? by_refusals : by_gpu);
    size_t top = k < mc->tenants_top ? k : mc->tenants_top;
    for (size_t i = top; i < k; i++)
        row_add(&other, &rows[i]);
    snprintf(other.label, sizeof(other.label), "other");
    rows[top] = other; /* top <= n, and rows has one spare entry */
    FILE *f = open_memstream(out, len);
    if (!f) {
        free(rows);
        return -ENOMEM;
    }
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
        family_lines(f, &families[i], rows, top + 1);
    head(f, "gpuwarden_tenant_other_members", "gauge",
         "Tenants summed into tenant=\"other\" (beyond metrics.tenants_top).");
    fprintf(f, "gpuwarden_tenant_other_members %" PRIu32 "\n", other.accounts);
    free(rows);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}
