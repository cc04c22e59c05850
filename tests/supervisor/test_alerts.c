/* test_alerts.c - dist/prometheus/gpuwarden-alerts.yml names only metrics
 * that /metrics exports (rendered from a segment, no processes), each with
 * a label value the node emits where the rule names one, and the file
 * passes `promtool check rules` (that case is skipped where promtool is
 * not installed: scripts/install-deps.sh installs it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../common/fixture.h"
#include "gw_supervisor.h"
#include "skip.h"

#include <ctype.h>
#include <sys/wait.h>

static char *read_rules(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/dist/prometheus/gpuwarden-alerts.yml", gw_source_dir());
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Every gpuwarden_* name in an expr: line has a "# TYPE" line in /metrics
 * (histogram series by their family), and every {label="value"} it names
 * appears on one of that metric's lines. */
static void test_rules_name_only_exported_metrics(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    char *node = NULL, *ten = NULL, *text = NULL;
    size_t len = 0, tlen = 0;
    assert_int_equal(gw_metrics_render(&f->seg, &node, &len), 0);
    /* and the per-tenant families, as a front appends them */
    struct gw_metrics_cfg mc = {.tenants_top = 20, .tenants_by = GW_MT_BY_GPU};
    assert_int_equal(gw_metrics_render_tenants(&f->seg, &mc, &ten, &tlen), 0);
    assert_true(asprintf(&text, "%s%s", node, ten) > 0);
    free(node);
    free(ten);
    const char *rules = read_rules();
    int names = 0;
    for (const char *p = strstr(rules, "gpuwarden_"); p; p = strstr(p + 1, "gpuwarden_")) {
        const char *line = p;
        while (line > rules && line[-1] != '\n')
            line--;
        if (!strstr(line, "expr:") || strstr(line, "expr:") > p)
            continue; /* annotations may name commands, not metrics */
        char name[128];
        size_t k = 0;
        while ((isalnum((unsigned char)p[k]) || p[k] == '_') && k < sizeof(name) - 1) {
            name[k] = p[k];
            k++;
        }
        name[k] = '\0';
        char want[160];
        snprintf(want, sizeof(want), "# TYPE %s ", name);
        if (!strstr(text, want))
            fail_msg("%s is named by a rule and not exported", name);
        names++;
        if (p[k] == '{') { /* label="value": a series the node emits */
            char sel[128];
            size_t e = strcspn(p + k + 1, "}");
            snprintf(sel, sizeof(sel), "%.*s", (int)e, p + k + 1);
            if (!strstr(sel, "=~")) {
                char series[256];
                snprintf(series, sizeof(series), "%s{%s", name, sel);
                if (!strstr(text, series))
                    fail_msg("%s{%s} is named by a rule and not exported", name, sel);
            }
        }
    }
    assert_int_equal(names, 12); /* the nine rules name twelve series */
    free(text);
    fx_close(f);
}

static void test_promtool_accepts_the_rules(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        skip(); /* scripts/install-deps.sh installs it (Debian: prometheus) */
        return;
    }
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "promtool check rules %s/dist/prometheus/gpuwarden-alerts.yml",
             gw_source_dir());
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_name_only_exported_metrics),
        cmocka_unit_test(test_promtool_accepts_the_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
