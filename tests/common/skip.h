/* skip.h - how a test program says "cannot run here".
 *
 * A test that needs something this machine lacks (the model file, a CUDA
 * device, root, ...) exits 77, which every test is registered with as
 * SKIP_RETURN_CODE (tests/CMakeLists.txt): ctest then reports "Skipped",
 * never "Passed". Call these from main() before cmocka runs anything. */
#ifndef GW_TEST_SKIP_H
#define GW_TEST_SKIP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define GW_SKIP_EXIT 77

/* Exits 77 with "skipped: <why>" on stdout. */
static inline void gw_skip(const char *why)
{
    printf("skipped: %s\n", why);
    fflush(stdout);
    exit(GW_SKIP_EXIT);
}

/* The default model's path (GW_SOURCE_DIR/models/...), or an exit 77 when
 * it is not there (scripts/fetch-model.sh fetches it). */
static inline const char *gw_need_model(void)
{
    static char path[1024];
    const char *src = getenv("GW_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", src ? src : ".");
    if (access(path, R_OK) != 0) {
        char why[1100];
        snprintf(why, sizeof(why), "no model at %s (run scripts/fetch-model.sh)", path);
        gw_skip(why);
    }
    return path;
}

#endif
