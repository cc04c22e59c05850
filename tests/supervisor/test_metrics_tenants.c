/* test_metrics_tenants.c - the per-tenant /metrics series and the tenant
 * rows behind gpuwardenctl top, rendered from a private segment (no
 * processes): per-tenant counters land on their tenant only; the answer
 * holds the top N tenants by GPU time or by refusals plus one
 * tenant="other" holding exactly the rest, so 50 tenants with N = 5 give 6
 * label values; labels are escaped, made valid UTF-8, and two accounts
 * with one label (or a tenant named "other") never make a duplicate
 * series. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../common/fixture.h"
#include "gw_supervisor.h"

#include <errno.h>

#define T0 1700000000000000ull
#define SEC 1000000ull

static const struct gw_seg_config cfg64 = {
    .accounts = 256,
    .budgets = 64,
    .slots = 4,
    .queue = 4,
    .lanes = 4,
    .prompt_bytes = 64,
    .output_bytes = 64,
};

static struct gw_acct tenant(struct fx *f, const char *id)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_TENANT, id, strlen(id), 1, T0, &a), 0);
    return a;
}

/* Charges used_us of device time to t through one slot, as a front and a
 * worker do (reserve, charge, settle). */
static void spend(struct fx *f, struct gw_acct t, uint64_t used_us)
{
    static const struct gw_budget_rate rate = {.amount_us = 1000 * SEC, .period_us = 3600 * SEC};
    struct gw_segment *seg = &f->seg;
    struct gw_acct g;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_GLOBAL, "*", 1, 1, T0, &g), 0);
    struct gw_slot_ref r;
    uint64_t retry;
    assert_int_equal(gw_slot_claim(seg, &r), 0);
    assert_int_equal(gw_slot_set_accounts(seg, r, t, g, 0), 0);
    assert_int_equal(gw_budget_reserve(seg, r, used_us, &rate, &rate, T0, &retry), 0);
    assert_int_equal(gw_slot_move(seg, r, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_slot_move(seg, r, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
    assert_int_equal(gw_budget_charge(seg, r, used_us, T0), 0);
    assert_int_equal(gw_slot_move(seg, r, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    assert_int_equal(gw_budget_settle(seg, r), 1);
    assert_int_equal(gw_slot_release(seg, r), 0);
}

struct rendered {
    char *text;
    size_t len;
};

static void render(struct fx *f, uint32_t top, int by, struct rendered *r)
{
    struct gw_metrics_cfg mc = {.tenants_top = top, .tenants_by = by};
    assert_int_equal(gw_metrics_render_tenants(&f->seg, &mc, &r->text, &r->len), 0);
    assert_int_equal(strlen(r->text), r->len);
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (!strstr(text, want))
        fail_msg("missing line: %s\n--- in ---\n%s", line, text);
}

/* The distinct tenant label values of one family. */
static int label_values(const char *text, const char *family, char seen[][64], int max)
{
    int n = 0;
    char pre[128];
    int pl = snprintf(pre, sizeof(pre), "\n%s{tenant=\"", family);
    for (const char *p = strstr(text, pre); p; p = strstr(p + 1, pre)) {
        const char *v = p + pl, *e = strstr(v, "\"");
        assert_non_null(e);
        char val[64];
        snprintf(val, sizeof(val), "%.*s", (int)(e - v), v);
        int dup = 0;
        for (int i = 0; i < n; i++)
            dup |= strcmp(seen[i], val) == 0;
        if (!dup) {
            assert_true(n < max);
            snprintf(seen[n++], 64, "%s", val);
        }
    }
    return n;
}

static void test_counters_land_on_their_tenant_only(void **state)
{
    (void)state;
    struct fx *f = fx_open(&cfg64);
    struct gw_acct a = tenant(f, "acme"), b = tenant(f, "bolt");
    gw_tstat_admitted(&f->seg, a);
    gw_tstat_admitted(&f->seg, a);
    gw_tstat_refusal(&f->seg, a, GW_REF_TENANT_RATE);
    gw_tstat_refusal(&f->seg, b, GW_REF_FARMING);
    gw_tstat_refusal(&f->seg, b, GW_REF_REASONS); /* out of range: nothing */
    gw_tstat_kill(&f->seg, b, GW_WD_REPETITION);
    gw_tstat_kill(&f->seg, b, -1);
    gw_tstat_tokens(&f->seg, a, 17);
    struct gw_tstat s;
    assert_int_equal(gw_tstat_get(&f->seg, a, &s), 0);
    assert_int_equal(s.admitted, 2);
    assert_int_equal(s.output_tokens, 17);
    assert_int_equal(s.refusals[GW_REF_TENANT_RATE], 1);
    assert_int_equal(s.refusals_total, 1);
    assert_int_equal(s.kills_total, 0);
    assert_int_equal(gw_tstat_get(&f->seg, b, &s), 0);
    assert_int_equal(s.admitted, 0);
    assert_int_equal(s.refusals[GW_REF_FARMING], 1);
    assert_int_equal(s.refusals_total, 1);
    assert_int_equal(s.kills[GW_WD_REPETITION], 1);
    assert_int_equal(s.kills_total, 1);
    /* the node's own account has a budget record but is no tenant */
    struct gw_acct g, t;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_GLOBAL, "*", 1, 1, T0, &g), 0);
    assert_int_equal(gw_tenant_at(&f->seg, 0, &t), 0);
    assert_int_equal(t.index, a.index);
    assert_int_equal(gw_tenant_at(&f->seg, 1, &t), 0);
    assert_int_equal(t.index, b.index);
    assert_int_equal(gw_tenant_at(&f->seg, 2, &t), -ENOENT); /* the global account */
    assert_int_equal(gw_tenant_at(&f->seg, 3, &t), -ENOENT); /* unused */
    assert_int_equal(gw_tenant_at(&f->seg, 64, &t), -ENOENT);
    fx_close(f);
}

/* 50 tenants, t00 .. t49, tenant i refused i times and charged
 * (50 - i) ms; N = 5 by refusals: t49 .. t45, then "other" = t00 .. t44. */
static void fifty(struct fx *f)
{
    for (int i = 0; i < 50; i++) {
        char id[8];
        snprintf(id, sizeof(id), "t%02d", i);
        struct gw_acct a = tenant(f, id);
        gw_tstat_admitted(&f->seg, a);
        for (int k = 0; k < i; k++)
            gw_tstat_refusal(&f->seg, a, GW_REF_TENANT_RATE);
        gw_tstat_tokens(&f->seg, a, 10);
        spend(f, a, (uint64_t)(50 - i) * 1000);
    }
}

static void test_fifty_tenants_give_top_five_and_other(void **state)
{
    (void)state;
    struct fx *f = fx_open(&cfg64);
    fifty(f);
    struct rendered r;
    render(f, 5, GW_MT_BY_REFUSALS, &r);
    char seen[64][64];
    static const char *const families[] = {
        "gpuwarden_tenant_admitted_total",       "gpuwarden_tenant_refusals_total",
        "gpuwarden_tenant_device_seconds_total", "gpuwarden_tenant_generated_tokens_total",
        "gpuwarden_tenant_watchdog_kills_total", "gpuwarden_tenant_farming_score",
        "gpuwarden_tenant_farming_level"};
    for (size_t k = 0; k < sizeof(families) / sizeof(families[0]); k++)
        assert_int_equal(label_values(r.text, families[k], seen, 64), 6);
    static const char *const by_refusals[] = {"t49", "t48", "t47", "t46", "t45"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(seen[i], by_refusals[i]);
    assert_string_equal(seen[5], "other");
    expect_line(r.text,
                "gpuwarden_tenant_refusals_total{tenant=\"t47\",reason=\"tenant_rate\"} 47");
    expect_line(r.text, "gpuwarden_tenant_refusals_total{tenant=\"t47\",reason=\"farming\"} 0");
    /* other: t00 .. t44: 0 + 1 + ... + 44 = 990 refusals, 45 admitted */
    expect_line(r.text,
                "gpuwarden_tenant_refusals_total{tenant=\"other\",reason=\"tenant_rate\"} 990");
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"other\"} 45");
    expect_line(r.text, "gpuwarden_tenant_generated_tokens_total{tenant=\"other\"} 450");
    expect_line(r.text, "gpuwarden_tenant_generated_tokens_total{tenant=\"t45\"} 10");
    /* GPU time: t45 was charged 5 ms; other (50 .. 6 ms) 1260 ms */
    expect_line(r.text, "gpuwarden_tenant_device_seconds_total{tenant=\"t45\"} 0.005000");
    expect_line(r.text, "gpuwarden_tenant_device_seconds_total{tenant=\"other\"} 1.260000");
    expect_line(r.text, "gpuwarden_tenant_other_members 45");
    expect_line(r.text, "# TYPE gpuwarden_tenant_admitted_total counter");
    expect_line(r.text, "# TYPE gpuwarden_tenant_farming_score gauge");
    free(r.text);

    /* by GPU time: t00 (50 ms) .. t04 (46 ms) */
    render(f, 5, GW_MT_BY_GPU, &r);
    assert_int_equal(label_values(r.text, "gpuwarden_tenant_admitted_total", seen, 64), 6);
    static const char *const by_gpu[] = {"t00", "t01", "t02", "t03", "t04"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(seen[i], by_gpu[i]);
    expect_line(r.text, "gpuwarden_tenant_device_seconds_total{tenant=\"t00\"} 0.050000");
    expect_line(r.text, "gpuwarden_tenant_refusals_total{tenant=\"t04\",reason=\"tenant_rate\"} 4");
    free(r.text);

    /* N = 0: one label value, every tenant in it */
    render(f, 0, GW_MT_BY_GPU, &r);
    assert_int_equal(label_values(r.text, "gpuwarden_tenant_admitted_total", seen, 64), 1);
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"other\"} 50");
    expect_line(r.text, "gpuwarden_tenant_other_members 50");
    free(r.text);

    /* N beyond the tenants: all 50 and an empty "other" */
    render(f, 1000, GW_MT_BY_GPU, &r);
    assert_int_equal(label_values(r.text, "gpuwarden_tenant_admitted_total", seen, 64), 51);
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"other\"} 0");
    expect_line(r.text, "gpuwarden_tenant_other_members 0");
    free(r.text);
    fx_close(f);
}

/* Ids are the JWT's `sub`: anything a token may carry. */
static void test_labels_are_escaped_and_never_duplicated(void **state)
{
    (void)state;
    struct fx *f = fx_open(&cfg64);
    gw_tstat_admitted(&f->seg, tenant(f, "q\"uo\\te"));
    gw_tstat_admitted(&f->seg, tenant(f, "line\nbreak\x01"));
    gw_tstat_admitted(&f->seg, tenant(f, "bad\xff\xfeutf8"));
    /* two subs whose first 40 bytes are equal: one label, one row */
    gw_tstat_admitted(&f->seg, tenant(f, "0123456789012345678901234567890123456789-one"));
    gw_tstat_admitted(&f->seg, tenant(f, "0123456789012345678901234567890123456789-two"));
    /* a tenant named "other" is counted in "other", never beside it */
    struct gw_acct o = tenant(f, "other");
    gw_tstat_admitted(&f->seg, o);
    gw_tstat_admitted(&f->seg, o);
    /* a UTF-8 character cut by the 40-byte display id */
    gw_tstat_admitted(&f->seg, tenant(f, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
                                         "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9x\xc3"
                                         "\xa9"));
    struct rendered r;
    render(f, 10, GW_MT_BY_GPU, &r);
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"q\\\"uo\\\\te\"} 1");
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"line?break?\"} 1");
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"bad??utf8\"} 1");
    expect_line(
        r.text,
        "gpuwarden_tenant_admitted_total{tenant=\"0123456789012345678901234567890123456789\"}"
        " 2");
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"other\"} 2");
    expect_line(r.text, "gpuwarden_tenant_admitted_total{tenant=\"éééééééééééééééééééx?\"} 1");
    char seen[64][64];
    assert_int_equal(label_values(r.text, "gpuwarden_tenant_admitted_total", seen, 64), 6);
    expect_line(r.text, "gpuwarden_tenant_other_members 1");
    free(r.text);

    struct gw_tenant_row *rows;
    size_t n;
    assert_int_equal(gw_tenant_rows(&f->seg, T0, &rows, &n), 0);
    assert_int_equal(n, 6); /* 7 accounts, two share a label */
    assert_string_equal(rows[0].label, "0123456789012345678901234567890123456789");
    assert_int_equal(rows[0].accounts, 2);
    assert_int_equal(rows[0].st.admitted, 2);
    free(rows);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_land_on_their_tenant_only),
        cmocka_unit_test(test_fifty_tenants_give_top_five_and_other),
        cmocka_unit_test(test_labels_are_escaped_and_never_duplicated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
