/* replay.c - runs one harness over files, without libFuzzer: the committed
 * seed corpus (tests/fuzz/corpus/<name>/) and every input that once crashed
 * it (tests/fuzz/crashes/<name>/), so the normal build keeps each finding
 * fixed. Usage: test_fuzz_replay_<name> [file or directory ...]; with no
 * arguments, the two directories above. Exit 0 when every input ran (a
 * broken contract aborts), 1 when the corpus is missing or empty. */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return -1;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        uint8_t *nb = realloc(buf, cap);
        if (!nb)
            free(buf);
        buf = nb;
    }
    fclose(f);
    /* an exact-size copy, so ASan sees a read past the input's end */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file in dir (sorted, so runs are repeatable); the
 * number run, or -1. A missing directory counts 0. */
static int run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char **nn = realloc(names, (n + 1) * sizeof(*names));
        if (!nn)
            break;
        names = nn;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), name_cmp);
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct stat st;
        if (names[i] && stat(path, &st) == 0 && S_ISREG(st.st_mode) && run_file(path) == 0)
            ran++;
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    int ran = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            struct stat st;
            if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
                ran += run_dir(argv[i]);
            else
                ran += run_file(argv[i]) == 0;
        }
    } else {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", GW_FUZZ_SOURCE_DIR, GW_FUZZ_NAME);
        int corpus = run_dir(dir);
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/crashes/%s", GW_FUZZ_SOURCE_DIR, GW_FUZZ_NAME);
        int crashes = run_dir(dir);
        if (corpus <= 0) {
            fprintf(stderr, "%s: no corpus under tests/fuzz/corpus/%s\n", argv[0], GW_FUZZ_NAME);
            return 1;
        }
        ran = corpus + (crashes > 0 ? crashes : 0);
    }
    printf("%s: %d inputs, every contract held\n", GW_FUZZ_NAME, ran);
    return 0;
}
