/* test_segment.c - the segment file: persistence and refusal of files that
 * are not ours, each with its exact message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#define T0 1800000000000000ull
#define SEC 1000000ull

static const struct gw_budget_rate rate = {.amount_us = 3600 * SEC, .period_us = 86400 * SEC};

static void test_state_survives_reattach(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_segment *seg = &f->seg;
    struct gw_acct ip, t, g;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_IP, "10.0.0.1", 8, 1, T0, &ip), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "acme", 4, 1, T0, &t), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_GLOBAL, "*", 1, 1, T0, &g), 0);
    struct gw_admit_item it = {.acct = ip, .cell = 2};
    assert_int_equal(gw_rate_make(&it.rate, 200, 3600 * SEC, 0), 0);
    uint64_t retry;
    for (int i = 0; i < 7; i++)
        assert_int_equal(gw_ledger_admit(seg, &it, 1, T0, &retry), 0);
    struct gw_slot_ref r;
    assert_int_equal(gw_slot_claim(seg, &r), 0);
    assert_int_equal(gw_slot_set_accounts(seg, r, t, g, 0), 0);
    assert_int_equal(gw_budget_reserve(seg, r, 90 * SEC, &rate, &rate, T0, &retry), 0);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    gw_segment_close(seg);

    assert_int_equal(gw_segment_open(seg, f->path, &fx_cfg, f->err, sizeof(f->err)), 0);
    struct gw_acct ip2, t2;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_IP, "10.0.0.1", 8, 0, T0, &ip2), 0);
    assert_int_equal(ip2.index, ip.index);
    assert_int_equal(ip2.gen, ip.gen);
    assert_int_equal(gw_ledger_rate_remaining(seg, ip2, 2, &it.rate, T0), 193);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "acme", 4, 0, T0, &t2), 0);
    assert_int_equal(gw_ledger_budget_left(seg, t2, &rate, T0), 3510 * SEC);
    struct gw_money m;
    assert_int_equal(gw_ledger_money(seg, t2, &m), 0);
    assert_int_equal(m.reserved_us, 90 * SEC);
    assert_int_equal(gw_slot_state(seg, r), GW_SLOT_ADMITTED);
    assert_int_equal(gw_ledger_check(seg, NULL, 0), 0);
    fx_close(f);
}

/* The learned completion lengths (the watchdog's anomalous-length
 * estimate) are in the file, per tenant: a master that restarts (closes
 * and opens the segment again) finds them as it left them, and another
 * process attached at the same time reads the same. */
static void test_learned_lengths_survive_reattach_and_are_shared(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_segment *seg = &f->seg;
    struct gw_acct t, u, ip;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "acme", 4, 1, T0, &t), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "bob", 3, 1, T0, &u), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_IP, "10.0.0.9", 8, 1, T0, &ip), 0);
    struct gw_lenest e, mine = {0};
    assert_int_equal(gw_lenest_get(seg, t, &e), 0);
    assert_int_equal(e.seen, 0);
    assert_int_equal(e.n, 0);
    for (int i = 0; i < 3000; i++) { /* past the first two halvings */
        uint64_t len = 20 + (uint64_t)(i % 13);
        assert_int_equal(gw_lenest_record(seg, t, len), 0);
        gw_lenest_add(&mine, len);
    }
    assert_int_equal(gw_lenest_record(seg, u, 500), 0);
    /* an ip account has no budget record, so no estimate */
    assert_int_equal(gw_lenest_record(seg, ip, 5), -ENOENT);
    assert_int_equal(gw_lenest_get(seg, ip, &e), -ENOENT);
    struct gw_acct stale = t;
    stale.gen++;
    assert_int_equal(gw_lenest_record(seg, stale, 5), GW_ESTALE);

    /* a second process's view, while the first is attached */
    struct gw_segment other;
    assert_int_equal(gw_segment_attach(&other, f->path, f->err, sizeof(f->err)), 0);
    assert_int_equal(gw_lenest_get(&other, t, &e), 0);
    assert_int_equal(e.seen, 3000);
    assert_int_equal(e.n, mine.n); /* the shared rule is the private one */
    assert_memory_equal(e.bucket, mine.bucket, sizeof(e.bucket));
    assert_int_equal(gw_lenest_quantile(&e, 0.99), 32);
    gw_segment_close(&other);

    gw_segment_close(seg); /* the master goes away ... */
    assert_int_equal(gw_segment_open(seg, f->path, &fx_cfg, f->err, sizeof(f->err)), 0);
    struct gw_acct t2, u2;
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "acme", 4, 0, T0, &t2), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "bob", 3, 0, T0, &u2), 0);
    assert_int_equal(gw_lenest_get(seg, t2, &e), 0); /* ... and its successor finds it */
    assert_int_equal(e.seen, 3000);
    assert_memory_equal(e.bucket, mine.bucket, sizeof(e.bucket));
    struct gw_wd_limits l = {.len_floor = 64, .len_factor = 4, .len_warmup = 50};
    assert_int_equal(gw_lenest_limit(&e, &l), 128); /* 4 x p99 32, not the floor */
    assert_int_equal(gw_lenest_get(seg, u2, &e), 0);
    assert_int_equal(e.seen, 1);
    assert_int_equal(gw_lenest_quantile(&e, 0.99), 512); /* the bucket (431, 512] */
    fx_close(f);
}

static void write_at(const char *path, off_t off, const void *buf, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, n, off), (ssize_t)n);
    close(fd);
}

static void expect_attach_error(const char *path, int rc, const char *msg)
{
    struct gw_segment seg;
    char err[256] = "";
    assert_int_equal(gw_segment_attach(&seg, path, err, sizeof(err)), rc);
    assert_string_equal(err, msg);
}

static void test_refuses_foreign_files(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    char path[160], msg[300];
    snprintf(path, sizeof(path), "%s", f->path);
    size_t size = f->seg.size;
    gw_segment_close(&f->seg);

    write_at(path, 0, "GWLEDGX", 7);
    snprintf(msg, sizeof(msg), "%s: not a gpuwarden segment (bad magic)", path);
    expect_attach_error(path, GW_ELAYOUT, msg);
    write_at(path, 0, "GWLEDGR", 7);

    uint32_t v = GW_SEG_VERSION + 1; /* a later build's file */
    write_at(path, 8, &v, 4);
    snprintf(msg, sizeof(msg), "%s: layout version %u, this build reads %u", path, v,
             GW_SEG_VERSION);
    expect_attach_error(path, GW_ELAYOUT, msg);
    v = GW_SEG_VERSION;
    write_at(path, 8, &v, 4);

    assert_int_equal(truncate(path, (off_t)size - 64), 0);
    snprintf(msg, sizeof(msg), "%s: truncated: %zu bytes, its header says %zu", path, size - 64,
             size);
    expect_attach_error(path, GW_ELAYOUT, msg);

    assert_int_equal(truncate(path, 10), 0);
    snprintf(msg, sizeof(msg), "%s: 10 bytes, smaller than a segment header (512)", path);
    expect_attach_error(path, GW_ELAYOUT, msg);

    unlink(path);
    snprintf(msg, sizeof(msg), "%s: cannot open: No such file or directory", path);
    expect_attach_error(path, -ENOENT, msg);
    free(f);
}

static void test_refuses_a_file_made_with_other_sizes(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    gw_segment_close(&f->seg);
    struct gw_seg_config cfg = fx_cfg;
    cfg.accounts = 128;
    char msg[300];
    assert_int_equal(gw_segment_open(&f->seg, f->path, &cfg, f->err, sizeof(f->err)), GW_ELAYOUT);
    snprintf(msg, sizeof(msg),
             "%s: created with accounts=64, config asks for 128 (move the file away to start "
             "over with new sizes)",
             f->path);
    assert_string_equal(f->err, msg);
    unlink(f->path);
    free(f);
}

static void test_refuses_invalid_sizes(void **state)
{
    (void)state;
    struct gw_segment seg;
    char err[256];
    struct gw_seg_config cfg = fx_cfg;
    cfg.accounts = 100;
    assert_int_equal(gw_segment_open(&seg, "/tmp/gw-never", &cfg, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "/tmp/gw-never: accounts=100: must be a power of two in [16, 2^30]");
    cfg = fx_cfg;
    cfg.queue = 6;
    assert_int_equal(gw_segment_open(&seg, "/tmp/gw-never", &cfg, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "/tmp/gw-never: queue=6: must be a power of two in [2, 2^30]");
    cfg = fx_cfg;
    cfg.slots = 70000;
    assert_int_equal(gw_segment_open(&seg, "/tmp/gw-never", &cfg, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "/tmp/gw-never: slots=70000: must be in [1, 65535]");
    cfg = fx_cfg;
    cfg.lanes = 0;
    assert_int_equal(gw_segment_open(&seg, "/tmp/gw-never", &cfg, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "/tmp/gw-never: lanes=0: must be in [1, 255]");
    assert_int_equal(access("/tmp/gw-never", F_OK), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_survives_reattach),
        cmocka_unit_test(test_learned_lengths_survive_reattach_and_are_shared),
        cmocka_unit_test(test_refuses_foreign_files),
        cmocka_unit_test(test_refuses_a_file_made_with_other_sizes),
        cmocka_unit_test(test_refuses_invalid_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
