/* test_openai_client.c - the official openai Python client against a real
 * node (openai_client_check.py beside this file): models.list(), a chat
 * call with content parts, a stream with include_usage whose usage the
 * client reads.
 *
 * The client comes from PyPI: when `import openai` fails, it is installed
 * once into the build tree (GW_PYDEPS, `pip install --target`), never into
 * the system's Python. Exits 77 (ctest: Skipped) when it cannot be imported
 * or installed (no network, no pip), and without the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "service.h"

#define CLIENT_REQUIREMENT "openai>=1.40,<4"

static struct svc S;

/* Runs argv with PYTHONPATH=GW_PYDEPS; its exit status (-1: not run). */
static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("PYTHONPATH", GW_PYDEPS, 1);
        setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1", 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* 1 when `import openai` works, installing it into GW_PYDEPS if needed. */
static int have_client(void)
{
    char *const probe[] = {"python3", "-c", "import openai", NULL};
    if (run(probe) == 0)
        return 1;
    char *const install[] = {"python3",          "-m",        "pip",
                             "install",          "--quiet",   "--target",
                             GW_PYDEPS,          "--upgrade", "--no-warn-script-location",
                             CLIENT_REQUIREMENT, NULL};
    fprintf(stderr, "installing %s into %s\n", CLIENT_REQUIREMENT, GW_PYDEPS);
    if (run(install) != 0)
        return 0;
    return run(probe) == 0;
}

static void test_the_official_client_lists_chats_and_reads_the_usage_chunk(void **state)
{
    (void)state;
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1", S.port);
    char *tok = svc_token(&S, "happy", 3600);
    char script[512];
    snprintf(script, sizeof(script), "%s/tests/supervisor/openai_client_check.py", gw_source_dir());
    char *const argv[] = {"python3", script, base, tok, "smollm2", NULL};
    int rc = run(argv);
    free(tok);
    /* 77 here too is a failure: main() found the client importable */
    assert_int_equal(rc, 0);
}

static int group_setup(void **state)
{
    (void)state;
    svc_write_config(&S, "");
    return svc_start_or_dump(&S);
}

static int group_teardown(void **state)
{
    (void)state;
    return svc_stop_or_dump(&S) == 0 ? 0 : -1;
}

int main(void)
{
    gw_need_model(); /* exit 77 (ctest: Skipped) without models/ */
    if (!have_client())
        gw_skip("the openai Python package cannot be imported or installed from PyPI");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_official_client_lists_chats_and_reads_the_usage_chunk),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
