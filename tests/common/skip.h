/* skip.h - how a test program says "cannot run here".
 *
 * A test that needs something this machine lacks (the model file, a CUDA
 * device, root, ...) exits 77, which every test is registered with as
 * SKIP_RETURN_CODE (tests/CMakeLists.txt): ctest then reports "Skipped",
 * never "Passed". Call these from main() before cmocka runs anything: a
 * test skipped inside cmocka (its skip()) makes the program exit 0, and
 * ctest would count a test that never ran as passed. A program whose tests
 * only partly need the missing thing is split in two (one source, the
 * program's name picks the group: gw_prog_is()). */
#ifndef GW_TEST_SKIP_H
#define GW_TEST_SKIP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_SKIP_EXIT 77

/* Exits 77 with "skipped: <why>" on stdout. */
static inline void gw_skip(const char *why)
{
    printf("skipped: %s\n", why);
    fflush(stdout);
    exit(GW_SKIP_EXIT);
}

/* The source tree: GW_SOURCE_DIR (ctest sets it), else the one this test
 * was configured from (tests/CMakeLists.txt defines GW_TEST_SOURCE_DIR), so
 * that a program run by hand finds its fixtures too. */
static inline const char *gw_source_dir(void)
{
    const char *src = getenv("GW_SOURCE_DIR");
    if (src && *src)
        return src;
#ifdef GW_TEST_SOURCE_DIR
    return GW_TEST_SOURCE_DIR;
#else
    return ".";
#endif
}

/* The default model's path (<source>/models/...), or an exit 77 when it is
 * not there (scripts/fetch-model.sh fetches it). */
static inline const char *gw_need_model(void)
{
    static char path[1024];
    snprintf(path, sizeof(path), "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", gw_source_dir());
    if (access(path, R_OK) != 0) {
        char why[1100];
        snprintf(why, sizeof(why), "no model at %s (run scripts/fetch-model.sh)", path);
        gw_skip(why);
    }
    return path;
}

/* 1 when the program was started under the name `name` (argv[0]'s last
 * component): how one source picks the group of its second program. */
static inline int gw_prog_is(const char *argv0, const char *name)
{
    const char *base = strrchr(argv0, '/');
    return strcmp(base ? base + 1 : argv0, name) == 0;
}

#endif
