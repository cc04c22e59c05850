/* test_overflow.c - a full address table (common/overflow.c): new
 * addresses get GW_EFULL from the ledger, and their /24 or /48 share an
 * overflow bucket whose windows admit exactly their limit, all or nothing
 * with other cells, while the addresses the table holds keep their own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>

#define NOW 1700000000000000ull
#define SEC 1000000ull

static struct gw_addr addr(const char *s)
{
    struct gw_addr a;
    assert_int_equal(gw_addr_parse(s, strlen(s), &a), 0);
    return a;
}

static struct gw_admit_item item(struct gw_acct a, int cell, const char *window)
{
    struct gw_window w;
    assert_int_equal(gw_window_parse(window, &w), 0);
    struct gw_admit_item it = {.acct = a, .cell = (uint8_t)cell};
    assert_int_equal(gw_window_rate(&w, &it.rate), 0);
    return it;
}

static void test_same_prefix_shares_a_bucket(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_acct a = gw_overflow_acct(&f->seg, &(struct gw_addr){0});
    assert_true((a.index & GW_OVF_INDEX) && (a.index & ~GW_OVF_INDEX) < GW_OVF_BUCKETS);
    assert_int_equal(a.gen, 0);
    struct gw_addr v1 = addr("198.51.100.7"), v2 = addr("198.51.100.250");
    struct gw_addr m = addr("::ffff:198.51.100.9");
    assert_int_equal(gw_overflow_acct(&f->seg, &v1).index, gw_overflow_acct(&f->seg, &v2).index);
    assert_int_equal(gw_overflow_acct(&f->seg, &v1).index, gw_overflow_acct(&f->seg, &m).index);
    struct gw_addr s1 = addr("2001:db8:1::1"), s2 = addr("2001:db8:1:ffff:ffff::9");
    assert_int_equal(gw_overflow_acct(&f->seg, &s1).index, gw_overflow_acct(&f->seg, &s2).index);
    /* 256 other /24s do not all land in one bucket */
    int other = 0;
    for (int i = 0; i < 256; i++) {
        char s[32];
        snprintf(s, sizeof(s), "10.%d.0.1", i);
        struct gw_addr x = addr(s);
        other += gw_overflow_acct(&f->seg, &x).index != gw_overflow_acct(&f->seg, &v1).index;
    }
    assert_true(other >= 250);
    fx_close(f);
}

static void test_full_table_sends_new_addresses_to_their_bucket(void **state)
{
    (void)state;
    static const struct gw_seg_config small = {.accounts = 16,
                                               .budgets = 4,
                                               .slots = 4,
                                               .queue = 4,
                                               .lanes = 4,
                                               .prompt_bytes = 64,
                                               .output_bytes = 64};
    struct fx *f = fx_open(&small);
    /* 16 known clients, each busy (a window taken) */
    struct gw_acct known[16];
    for (int i = 0; i < 16; i++) {
        char id[32];
        snprintf(id, sizeof(id), "192.0.2.%d", i);
        assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, id, strlen(id), 1, NOW, &known[i]), 0);
        struct gw_admit_item it = item(known[i], 0, "5 per hour");
        uint64_t r;
        assert_int_equal(gw_ledger_admit(&f->seg, &it, 1, NOW, &r), 0);
    }
    struct gw_acct x;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, "203.0.113.1", 11, 1, NOW, &x), GW_EFULL);
    /* the newcomer's /24 bucket: exactly 2 per minute for the whole /24 */
    struct gw_addr n1 = addr("203.0.113.1"), n2 = addr("203.0.113.2"), o = addr("203.0.114.1");
    struct gw_admit_item b1 = item(gw_overflow_acct(&f->seg, &n1), 0, "2 per minute");
    struct gw_admit_item b2 = item(gw_overflow_acct(&f->seg, &n2), 0, "2 per minute");
    struct gw_admit_item bo = item(gw_overflow_acct(&f->seg, &o), 0, "2 per minute");
    uint64_t r;
    assert_int_equal(gw_ledger_admit(&f->seg, &b1, 1, NOW, &r), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, &b2, 1, NOW, &r), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, &b1, 1, NOW, &r), GW_EREFUSED);
    assert_int_equal(r, 30 * SEC);
    if (bo.acct.index != b1.acct.index) /* another /24 (unless it hashed alike) */
        assert_int_equal(gw_ledger_admit(&f->seg, &bo, 1, NOW, &r), 0);
    /* known clients keep their own windows: 4 more each */
    struct gw_admit_item k = item(known[3], 0, "5 per hour");
    for (int i = 0; i < 4; i++)
        assert_int_equal(gw_ledger_admit(&f->seg, &k, 1, NOW, &r), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, &k, 1, NOW, &r), GW_EREFUSED);
    /* all or nothing with another cell: a refusal leaves the bucket as it was */
    struct gw_addr z = addr("198.18.0.1");
    struct gw_admit_item pair[2] = {item(gw_overflow_acct(&f->seg, &z), 0, "3 per minute"),
                                    item(known[5], 0, "1 per hour")};
    assert_int_equal(gw_ledger_admit(&f->seg, pair, 2, NOW, &r), GW_EREFUSED); /* known[5] */
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_ledger_admit(&f->seg, pair, 1, NOW, &r), 0);
    assert_int_equal(gw_ledger_admit(&f->seg, pair, 1, NOW, &r), GW_EREFUSED);
    /* a reference past the buckets is refused */
    struct gw_admit_item bad = b1;
    bad.acct.index = GW_OVF_INDEX | GW_OVF_BUCKETS;
    assert_int_equal(gw_ledger_admit(&f->seg, &bad, 1, NOW, &r), -EINVAL);
    bad.acct.index = b1.acct.index;
    bad.acct.gen = 1; /* buckets have generation 0 only */
    assert_int_equal(gw_ledger_admit(&f->seg, &bad, 1, NOW, &r), -EINVAL);
    bad.acct.index = small.accounts; /* past the table, no overflow bit */
    bad.acct.gen = 0;
    assert_int_equal(gw_ledger_admit(&f->seg, &bad, 1, NOW, &r), -EINVAL);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_prefix_shares_a_bucket),
        cmocka_unit_test(test_full_table_sends_new_addresses_to_their_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
