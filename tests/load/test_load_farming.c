/* test_load_farming.c - the prompt-farming scenario in CI, short form
 * (issue 17, "Done means"): dist/scenarios/farming-short.json (every class
 * of farming.json at 2 requests per second for 25 s) against a real master,
 * front and worker on SmolLM2 configured from dist/gpuwarden.farming.json,
 * its ladder shortened to refuse at 16 strikes (throttle_after 8,
 * refuse_after 16; window, samples and thresholds as shipped).
 *
 * Asserted: every farming class (template, paraphrase, three sweep
 * tenants) is flagged at its 16th request (the audit line's "n":16, the
 * first scored prompt) and refused with prompt_farming by its 40th (from
 * its 31st when its requests reach the node in order); the benign classes
 * (two human chats, the declared application) get no audit line and no
 * prompt_farming refusal; the undeclared application is what it looks like
 * (flagged); the ledger stays conserved. Exits 77 without the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#include <ftw.h>
#include <jansson.h>

static struct svc S;
static int started;
static char src_dir[512];

/* dist/gpuwarden.farming.json with this test's socket, state, model and
 * secret paths, and both plans' ladders shortened. */
static int write_config(struct svc *s)
{
    char path[700], buf[700];
    snprintf(path, sizeof(path), "%s/dist/gpuwarden.farming.json", src_dir);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/gw-loadfarm-%d", (int)getpid());
    mkdir(s->dir, 0700);
    svc_listen(s);
    snprintf(s->config, sizeof(s->config), "%s/gpuwarden.json", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/gpuwarden.log", s->dir);
    snprintf(buf, sizeof(buf), "127.0.0.1:%d", s->port);
    json_object_set_new(cfg, "listen", json_pack("[s]", buf));
    snprintf(buf, sizeof(buf), "%s/state", s->dir);
    json_object_set_new(cfg, "state_dir", json_string(buf));
    json_t *model = json_object_get(cfg, "model");
    json_object_set_new(model, "path", json_string(svc_model_path()));
    json_object_set_new(model, "threads", json_integer(2));
    snprintf(buf, sizeof(buf), "%s/dist/dev-secret.key", src_dir);
    json_object_set_new(json_array_get(json_object_get(json_object_get(cfg, "auth"), "keys"), 0),
                        "secret_file", json_string(buf));
    snprintf(buf, sizeof(buf), "%s/admin.sock", s->dir);
    json_object_set_new(json_object_get(cfg, "admin"), "socket", json_string(buf));
    const char *plan;
    json_t *p;
    json_object_foreach (json_object_get(cfg, "plans"), plan, p) {
        json_t *f = json_object_get(p, "farming");
        json_object_set_new(f, "throttle_after", json_integer(8));
        json_object_set_new(f, "refuse_after", json_integer(16));
    }
    int rc = json_dump_file(cfg, s->config, JSON_INDENT(1));
    json_decref(cfg);
    return rc;
}

static int group_setup(void **state)
{
    (void)state;
    if (write_config(&S) != 0) {
        fprintf(stderr, "cannot write the test config from dist/gpuwarden.farming.json\n");
        return -1;
    }
    if (svc_start_or_dump(&S) != 0)
        return -1;
    started = 1;
    return 0;
}

static int unlink_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_teardown(void **state)
{
    (void)state;
    if (started && svc_stop(&S) != 0) {
        fprintf(stderr, "master did not exit 0; its log:\n");
        svc_dump_log(&S);
        return -1;
    }
    if (started)
        nftw(S.dir, unlink_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* gpuwarden-load from the source directory; stdout and stderr to `out`. */
static int run_load(const char *const *args, const char *out)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        if (chdir(src_dir) != 0)
            _exit(127);
        char *argv[32];
        int n = 0;
        argv[n++] = (char *)GW_LOAD_BIN;
        for (; args[n - 1] && n < 31; n++)
            argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(GW_LOAD_BIN, argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void dump(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f))
        fprintf(stderr, "  | %s", line);
    if (f)
        fclose(f);
}

static json_t *class_of(json_t *report, const char *name)
{
    json_t *c;
    size_t i;
    json_array_foreach (json_object_get(report, "classes"), i, c)
        if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return c;
    fail_msg("no class %s in the report", name);
    return NULL;
}

static json_int_t farming_refusals(json_t *c)
{
    return json_integer_value(json_object_get(json_object_get(c, "error_codes"), "prompt_farming"));
}

/* The audit log's first "farming" line for tenant with level "flagged":
 * its window size n, or 0 when there is none; *lines counts the tenant's
 * farming lines. */
static json_int_t flagged_at(const char *tenant, int *lines)
{
    char path[256], line[4096];
    snprintf(path, sizeof(path), "%s/state/audit.log", S.dir);
    FILE *f = fopen(path, "r");
    json_int_t n = 0;
    *lines = 0;
    while (f && fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (j && !strcmp(json_string_value(json_object_get(j, "event")) ?: "", "farming") &&
            !strcmp(json_string_value(json_object_get(j, "tenant")) ?: "", tenant)) {
            (*lines)++;
            if (!n && !strcmp(json_string_value(json_object_get(j, "level")) ?: "", "flagged"))
                n = json_integer_value(json_object_get(j, "n"));
        }
        json_decref(j);
    }
    if (f)
        fclose(f);
    return n;
}

static void test_short_scenario_flags_and_refuses_farmers_only(void **state)
{
    (void)state;
    char target[64], ledger[256], report[256], out[256], admin[256];
    snprintf(target, sizeof(target), "127.0.0.1:%d", S.port);
    snprintf(admin, sizeof(admin), "%s/admin.sock", S.dir);
    snprintf(ledger, sizeof(ledger), "%s/state/ledger", S.dir);
    snprintf(report, sizeof(report), "%s/report.json", S.dir);
    snprintf(out, sizeof(out), "%s/load.out", S.dir);
    const char *args[] = {
        "--target", target,   "--ledger", ledger,    "--admin",
        admin,      "--json", report,     "--quiet", "dist/scenarios/farming-short.json",
        NULL};
    int rc = run_load(args, out);
    dump(out); /* the per-class lines: detection counts in the test's log */
    assert_int_equal(rc, 0);
    json_error_t je;
    json_t *r = json_load_file(report, 0, &je);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(r, "thresholds_failed")), 0);
    static const char *const farmers[] = {"farm-template", "farm-paraphrase", "farm-sweep-1",
                                          "farm-sweep-2",  "farm-sweep-3",    "app-plain"};
    for (size_t i = 0; i < sizeof(farmers) / sizeof(farmers[0]); i++) {
        json_t *c = class_of(r, farmers[i]);
        int lines;
        assert_int_equal(flagged_at(farmers[i], &lines), 16);
        json_int_t at = json_integer_value(json_object_get(c, "farming_refused_at"));
        if (at < 31 || at > 40)
            fail_msg("%s: refused from request %lld, expected 31..40", farmers[i], (long long)at);
        assert_true(farming_refusals(c) > 0);
    }
    static const char *const benign[] = {"human-1", "human-2", "app-declared"};
    for (size_t i = 0; i < sizeof(benign) / sizeof(benign[0]); i++) {
        json_t *c = class_of(r, benign[i]);
        int lines;
        assert_int_equal(flagged_at(benign[i], &lines), 0);
        assert_int_equal(lines, 0);
        assert_int_equal(farming_refusals(c), 0);
        assert_int_equal(json_integer_value(json_object_get(c, "farming_refused_at")), 0);
        assert_true(json_integer_value(json_object_get(c, "sent")) >= 40);
    }
    json_t *led = json_object_get(r, "ledger");
    assert_true(json_is_true(json_object_get(led, "conserved")));
    json_decref(r);
}

int main(void)
{
    snprintf(src_dir, sizeof(src_dir), "%s", gw_source_dir());
    gw_need_model();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_scenario_flags_and_refuses_farmers_only),
    };
    return cmocka_run_group_tests_name("load_farming", tests, group_setup, group_teardown);
}
