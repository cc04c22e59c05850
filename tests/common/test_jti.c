/* test_jti.c - revoked JWT ids in the segment (common/jti.c): exact
 * verdicts, the end of a revocation, a later end standing, a full table and
 * reuse of ended cells, another process seeing a revocation at its next
 * check, and the repair of a cell a killed master left half written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <sys/wait.h>

#define NOW 1700000000000000ull
#define SEC 1000000ull

static struct gw_jti_view view; /* 16 KiB: not on the stack */

static int revoked(struct fx *f, const char *jti, uint64_t now)
{
    return gw_jti_revoked(&f->seg, &view, gw_jti_hash(jti, strlen(jti)), now);
}

static void test_revoked_until_its_end_and_no_other(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    memset(&view, 0, sizeof(view));
    assert_int_equal(gw_jti_hash("", 0) != 0, 1);
    uint64_t h = gw_jti_hash("tok-1", 5);
    assert_int_equal(gw_jti_revoke(&f->seg, h, NOW + 60 * SEC, NOW), 0);
    assert_int_equal(revoked(f, "tok-1", NOW), 1);
    assert_int_equal(revoked(f, "tok-2", NOW), 0);
    assert_int_equal(revoked(f, "tok-1", NOW + 60 * SEC - 1), 1);
    assert_int_equal(revoked(f, "tok-1", NOW + 60 * SEC), 0);
    assert_int_equal(gw_jti_revoked(&f->seg, &view, 0, NOW), 0); /* no jti: never */
    /* revoked again with an earlier end: the later one stands */
    assert_int_equal(gw_jti_revoke(&f->seg, h, NOW + 10 * SEC, NOW), 0);
    assert_int_equal(revoked(f, "tok-1", NOW + 30 * SEC), 1);
    assert_int_equal(gw_jti_count(&f->seg, NOW), 1);
    assert_int_equal(gw_jti_revoke(&f->seg, 0, NOW + SEC, NOW), -EINVAL);
    assert_int_equal(gw_jti_revoke(&f->seg, h, NOW, NOW), -EINVAL);
    fx_close(f);
}

static void test_full_table_and_reuse_of_ended_cells(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    memset(&view, 0, sizeof(view));
    for (int i = 0; i < GW_JTI_MAX; i++) {
        char id[32];
        snprintf(id, sizeof(id), "jti-%d", i);
        assert_int_equal(gw_jti_revoke(&f->seg, gw_jti_hash(id, strlen(id)),
                                       NOW + (i == 100 ? 5 : 60) * SEC, NOW),
                         0);
    }
    uint64_t more = gw_jti_hash("late", 4);
    assert_int_equal(gw_jti_revoke(&f->seg, more, NOW + 60 * SEC, NOW), GW_EFULL);
    assert_int_equal(gw_jti_revoke(&f->seg, more, NOW + 60 * SEC, NOW + 5 * SEC), 0);
    assert_int_equal(revoked(f, "late", NOW + 5 * SEC), 1);
    assert_int_equal(revoked(f, "jti-100", NOW + 5 * SEC), 0);
    assert_int_equal(revoked(f, "jti-1023", NOW + 5 * SEC), 1);
    assert_int_equal(gw_jti_count(&f->seg, NOW + 5 * SEC), GW_JTI_MAX);
    fx_close(f);
}

static void test_another_process_sees_a_revocation(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    int go[2], ready[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct gw_segment seg;
        char err[256], ch;
        static struct gw_jti_view v;
        if (gw_segment_attach(&seg, f->path, err, sizeof(err)) != 0)
            _exit(10);
        uint64_t h = gw_jti_hash("abc", 3);
        if (gw_jti_revoked(&seg, &v, h, NOW) != 0)
            _exit(11);
        if (write(ready[1], "x", 1) != 1 || read(go[0], &ch, 1) != 1)
            _exit(12);
        _exit(gw_jti_revoked(&seg, &v, h, NOW) == 1 ? 0 : 13);
    }
    char ch;
    assert_int_equal(read(ready[0], &ch, 1), 1);
    assert_int_equal(gw_jti_revoke(&f->seg, gw_jti_hash("abc", 3), NOW + SEC, NOW), 0);
    assert_int_equal(write(go[1], "x", 1), 1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    fx_close(f);
}

/* Cell i's seq is its first word, at 64 + 32 i bytes into the region
 * (jti.c's layout, asserted there). */
static void test_half_written_cell_is_skipped_then_repaired(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    memset(&view, 0, sizeof(view));
    assert_int_equal(gw_jti_revoke(&f->seg, gw_jti_hash("a", 1), NOW + SEC, NOW), 0);
    assert_int_equal(gw_jti_revoke(&f->seg, gw_jti_hash("b", 1), NOW + SEC, NOW), 0);
    _Atomic uint64_t *seq1 = (_Atomic uint64_t *)((char *)f->seg.jti + 64 + 32);
    atomic_fetch_add(seq1, 1);
    assert_int_equal(revoked(f, "a", NOW), 1);
    assert_int_equal(revoked(f, "b", NOW), 0);
    gw_jti_repair(&f->seg);
    assert_int_equal(atomic_load(seq1) & 1, 0);
    assert_int_equal(gw_jti_count(&f->seg, NOW), 1);
    assert_int_equal(gw_jti_revoke(&f->seg, gw_jti_hash("b", 1), NOW + SEC, NOW), 0);
    assert_int_equal(revoked(f, "b", NOW), 1);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_revoked_until_its_end_and_no_other),
        cmocka_unit_test(test_full_table_and_reuse_of_ended_cells),
        cmocka_unit_test(test_another_process_sees_a_revocation),
        cmocka_unit_test(test_half_written_cell_is_skipped_then_repaired),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
