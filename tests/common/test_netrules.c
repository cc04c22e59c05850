/* test_netrules.c - address-range bans and allow entries in the segment
 * (common/netrules.c): exact verdicts for addresses in and out of a range,
 * allow over ban, end times, replace and lift, a full table, a second
 * process seeing a change through its own view, and the repair of a rule a
 * killed master left half written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <sys/wait.h>

#define NOW 1700000000000000ull
#define SEC 1000000ull

static struct gw_addr addr(const char *s)
{
    struct gw_addr a;
    assert_int_equal(gw_addr_parse(s, strlen(s), &a), 0);
    return a;
}

static struct gw_net_rule rule(int kind, const char *range, uint64_t until)
{
    struct gw_net_rule r = {.kind = kind, .until_us = until, .created_us = NOW};
    char why[128];
    assert_int_equal(gw_cidr_parse(range, &r.cidr, why, sizeof(why)), 0);
    return r;
}

static int verdict(struct fx *f, struct gw_net_view *v, const char *a, uint64_t now,
                   uint64_t *until)
{
    struct gw_addr x = addr(a);
    *until = 0;
    return gw_net_check(&f->seg, v, &x, now, until);
}

static void test_a_banned_range_covers_exactly_its_addresses(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    static struct gw_net_view v;
    memset(&v, 0, sizeof(v));
    uint64_t until;
    struct gw_net_rule r = rule(GW_NET_BAN, "203.0.113.0/24", NOW + 60 * SEC);
    assert_int_equal(gw_net_set(&f->seg, &r, NOW), 0);
    assert_int_equal(verdict(f, &v, "203.0.113.0", NOW, &until), GW_NET_BAN);
    assert_int_equal(until, NOW + 60 * SEC);
    assert_int_equal(verdict(f, &v, "203.0.113.255", NOW, &until), GW_NET_BAN);
    assert_int_equal(verdict(f, &v, "::ffff:203.0.113.9", NOW, &until), GW_NET_BAN);
    assert_int_equal(verdict(f, &v, "203.0.114.0", NOW, &until), 0);
    assert_int_equal(verdict(f, &v, "203.0.112.255", NOW, &until), 0);
    assert_int_equal(verdict(f, &v, "2001:db8::1", NOW, &until), 0);
    /* its end: in force until the microsecond before */
    assert_int_equal(verdict(f, &v, "203.0.113.7", NOW + 60 * SEC - 1, &until), GW_NET_BAN);
    assert_int_equal(verdict(f, &v, "203.0.113.7", NOW + 60 * SEC, &until), 0);
    struct gw_net_rule six = rule(GW_NET_BAN, "2001:db8:1::/48", NOW + 10 * SEC);
    assert_int_equal(gw_net_set(&f->seg, &six, NOW), 0);
    assert_int_equal(verdict(f, &v, "2001:db8:1:ffff::1", NOW, &until), GW_NET_BAN);
    assert_int_equal(until, NOW + 10 * SEC);
    assert_int_equal(verdict(f, &v, "2001:db8:2::1", NOW, &until), 0);
    fx_close(f);
}

static void test_allow_wins_over_ban_and_lifting_is_exact(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    static struct gw_net_view v;
    memset(&v, 0, sizeof(v));
    uint64_t until;
    struct gw_net_rule ban = rule(GW_NET_BAN, "10.0.0.0/8", NOW + 100 * SEC);
    struct gw_net_rule allow = rule(GW_NET_ALLOW, "10.1.2.0/24", NOW + 50 * SEC);
    assert_int_equal(gw_net_set(&f->seg, &ban, NOW), 0);
    assert_int_equal(gw_net_set(&f->seg, &allow, NOW), 0);
    assert_int_equal(verdict(f, &v, "10.1.2.3", NOW, &until), GW_NET_ALLOW);
    assert_int_equal(verdict(f, &v, "10.1.3.3", NOW, &until), GW_NET_BAN);
    /* the allow entry ends first: the ban applies again */
    assert_int_equal(verdict(f, &v, "10.1.2.3", NOW + 50 * SEC, &until), GW_NET_BAN);
    /* the same rule again replaces its end; a list shows two rules */
    ban.until_us = NOW + 200 * SEC;
    assert_int_equal(gw_net_set(&f->seg, &ban, NOW), 0);
    struct gw_net_rule list[GW_NET_RULES];
    assert_int_equal(gw_net_list(&f->seg, NOW, list, GW_NET_RULES), 2);
    assert_int_equal(verdict(f, &v, "10.9.9.9", NOW + 150 * SEC, &until), GW_NET_BAN);
    assert_int_equal(until, NOW + 200 * SEC);
    /* lifting needs the exact kind and range */
    struct gw_cidr wider;
    char why[64];
    assert_int_equal(gw_cidr_parse("10.0.0.0/7", &wider, why, sizeof(why)), 0);
    assert_int_equal(gw_net_remove(&f->seg, GW_NET_BAN, &wider, NOW), -ENOENT);
    assert_int_equal(gw_net_remove(&f->seg, GW_NET_ALLOW, &ban.cidr, NOW), -ENOENT);
    assert_int_equal(gw_net_remove(&f->seg, GW_NET_BAN, &ban.cidr, NOW), 0);
    assert_int_equal(verdict(f, &v, "10.9.9.9", NOW, &until), 0);
    assert_int_equal(gw_net_remove(&f->seg, GW_NET_BAN, &ban.cidr, NOW), -ENOENT);
    assert_int_equal(gw_net_list(&f->seg, NOW, list, GW_NET_RULES), 1);
    /* bad rules */
    struct gw_net_rule past = rule(GW_NET_BAN, "10.0.0.0/8", NOW);
    assert_int_equal(gw_net_set(&f->seg, &past, NOW), -EINVAL);
    struct gw_net_rule odd = rule(7, "10.0.0.0/8", NOW + SEC);
    assert_int_equal(gw_net_set(&f->seg, &odd, NOW), -EINVAL);
    fx_close(f);
}

static void test_table_full_then_expired_cells_are_reused(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    for (int i = 0; i < GW_NET_RULES; i++) {
        char range[32];
        snprintf(range, sizeof(range), "10.%d.%d.0/24", i / 256, i % 256);
        struct gw_net_rule r = rule(GW_NET_BAN, range, NOW + (i == 7 ? 5 : 60) * SEC);
        assert_int_equal(gw_net_set(&f->seg, &r, NOW), 0);
    }
    struct gw_net_rule more = rule(GW_NET_BAN, "192.0.2.0/24", NOW + 60 * SEC);
    assert_int_equal(gw_net_set(&f->seg, &more, NOW), GW_EFULL);
    /* rule 7 ended: its cell takes the new one */
    assert_int_equal(gw_net_set(&f->seg, &more, NOW + 5 * SEC), 0);
    static struct gw_net_view v;
    memset(&v, 0, sizeof(v));
    uint64_t until;
    assert_int_equal(verdict(f, &v, "192.0.2.1", NOW + 5 * SEC, &until), GW_NET_BAN);
    assert_int_equal(verdict(f, &v, "10.0.7.1", NOW + 5 * SEC, &until), 0);
    assert_int_equal(verdict(f, &v, "10.0.255.1", NOW + 5 * SEC, &until), GW_NET_BAN);
    fx_close(f);
}

/* A front's view is read once per epoch: a change the master makes is seen
 * by another process at its next check, and not before it is made. */
static void test_another_process_sees_a_change_at_its_next_check(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct gw_segment seg;
        char err[256];
        static struct gw_net_view v;
        if (gw_segment_attach(&seg, f->path, err, sizeof(err)) != 0)
            _exit(10);
        struct gw_addr a = addr("198.51.100.20");
        uint64_t until = 0;
        if (gw_net_check(&seg, &v, &a, NOW, &until) != 0)
            _exit(11);
        char ch;
        if (write(done[1], "x", 1) != 1 || read(go[0], &ch, 1) != 1)
            _exit(12);
        if (gw_net_check(&seg, &v, &a, NOW, &until) != GW_NET_BAN || until != NOW + 9 * SEC)
            _exit(13);
        _exit(0);
    }
    char ch;
    assert_int_equal(read(done[0], &ch, 1), 1);
    struct gw_net_rule r = rule(GW_NET_BAN, "198.51.100.0/24", NOW + 9 * SEC);
    assert_int_equal(gw_net_set(&f->seg, &r, NOW), 0);
    assert_int_equal(write(go[1], "x", 1), 1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    fx_close(f);
}

/* A master killed between a cell's odd and even seq: readers skip the
 * cell, and gw_net_repair clears it. The cell's seq is the first word of
 * cell i at 64 + 64 i bytes into the region (netrules.c's layout,
 * asserted there). */
static void test_half_written_rule_is_skipped_then_repaired(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_net_rule a = rule(GW_NET_BAN, "192.0.2.0/24", NOW + 60 * SEC);
    struct gw_net_rule b = rule(GW_NET_BAN, "198.51.100.0/24", NOW + 60 * SEC);
    assert_int_equal(gw_net_set(&f->seg, &a, NOW), 0);
    assert_int_equal(gw_net_set(&f->seg, &b, NOW), 0);
    _Atomic uint64_t *seq1 = (_Atomic uint64_t *)((char *)f->seg.nets + 64 + 64);
    atomic_fetch_add(seq1, 1); /* cell 1 (rule b) now looks mid-write */
    static struct gw_net_view v;
    memset(&v, 0, sizeof(v));
    uint64_t until;
    assert_int_equal(verdict(f, &v, "192.0.2.1", NOW, &until), GW_NET_BAN);
    assert_int_equal(verdict(f, &v, "198.51.100.1", NOW, &until), 0);
    struct gw_net_rule list[GW_NET_RULES];
    assert_int_equal(gw_net_list(&f->seg, NOW, list, GW_NET_RULES), 1);
    gw_net_repair(&f->seg);
    assert_int_equal(atomic_load(seq1) & 1, 0);
    assert_int_equal(gw_net_list(&f->seg, NOW, list, GW_NET_RULES), 1);
    /* the repaired cell is free again */
    assert_int_equal(gw_net_set(&f->seg, &b, NOW), 0);
    assert_int_equal(verdict(f, &v, "198.51.100.1", NOW, &until), GW_NET_BAN);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_banned_range_covers_exactly_its_addresses),
        cmocka_unit_test(test_allow_wins_over_ban_and_lifting_is_exact),
        cmocka_unit_test(test_table_full_then_expired_cells_are_reused),
        cmocka_unit_test(test_another_process_sees_a_change_at_its_next_check),
        cmocka_unit_test(test_half_written_rule_is_skipped_then_repaired),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
