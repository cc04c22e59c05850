/* test_netaddr.c - client addresses (common/netaddr.c): exact parses and
 * refusals of addresses and CIDR ranges, family-aware matching, the keys
 * that put an IPv6 /64 in one bucket and IPv4-mapped IPv6 with IPv4, and
 * the client chosen behind trusted proxies from X-Forwarded-For and RFC
 * 7239 Forwarded, with the exact error of every malformed header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static struct gw_addr addr(const char *s)
{
    struct gw_addr a;
    assert_int_equal(gw_addr_parse(s, strlen(s), &a), 0);
    return a;
}

static struct gw_cidr cidr(const char *s)
{
    struct gw_cidr c;
    char why[128] = "";
    assert_int_equal(gw_cidr_parse(s, &c, why, sizeof(why)), 0);
    return c;
}

static void cidr_refused(const char *s, const char *expect)
{
    struct gw_cidr c;
    char why[128] = "";
    assert_int_equal(gw_cidr_parse(s, &c, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, expect);
}

static void test_addresses_parse_and_print_canonically(void **state)
{
    (void)state;
    char out[GW_ADDR_STRLEN];
    struct gw_addr a = addr("192.0.2.7");
    assert_true(gw_addr_is_v4(&a));
    gw_addr_format(&a, out);
    assert_string_equal(out, "192.0.2.7");
    struct gw_addr m = addr("::ffff:192.0.2.7");
    assert_true(gw_addr_is_v4(&m));
    assert_memory_equal(&a, &m, sizeof(a));
    struct gw_addr six = addr("2001:DB8:0:0:1::1");
    assert_false(gw_addr_is_v4(&six));
    gw_addr_format(&six, out);
    assert_string_equal(out, "2001:db8::1:0:0:1");
    struct gw_addr x;
    const char *bad[] = {"",         "1.2.3", "1.2.3.4.5", "01.2.3.4",   "256.1.1.1",
                         "1.2.3.4 ", "[::1]", "::1%lo",    "fe80::1::2", "example.com"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(gw_addr_parse(bad[i], strlen(bad[i]), &x), -EINVAL);
    assert_int_equal(gw_addr_parse("1.2.3.4\0"
                                   "5",
                                   9, &x),
                     -EINVAL);
}

static void test_ipv6_keys_by_prefix_and_ipv4_mapped_is_ipv4(void **state)
{
    (void)state;
    char k1[GW_ADDR_STRLEN], k2[GW_ADDR_STRLEN];
    struct gw_addr a = addr("2001:db8:1:2:aaaa::1"), b = addr("2001:db8:1:2:ffff:1:2:3");
    gw_addr_key(&a, 64, k1);
    gw_addr_key(&b, 64, k2);
    assert_string_equal(k1, "2001:db8:1:2::/64");
    assert_string_equal(k2, "2001:db8:1:2::/64");
    struct gw_addr c = addr("2001:db8:1:3::1");
    gw_addr_key(&c, 64, k2);
    assert_string_equal(k2, "2001:db8:1:3::/64");
    gw_addr_key(&c, 48, k2);
    assert_string_equal(k2, "2001:db8:1::/48");
    gw_addr_key(&a, 128, k1);
    assert_string_equal(k1, "2001:db8:1:2:aaaa::1");
    gw_addr_key(&a, 1, k1);
    assert_string_equal(k1, "::/1");
    struct gw_addr m = addr("::ffff:10.1.2.3");
    gw_addr_key(&m, 64, k1);
    assert_string_equal(k1, "10.1.2.3");
}

static void test_cidr_parses_exactly_and_refuses_with_reasons(void **state)
{
    (void)state;
    char out[GW_ADDR_STRLEN];
    struct gw_cidr c = cidr("10.0.0.0/8");
    assert_int_equal(c.bits, 104);
    assert_int_equal(c.v4, 1);
    gw_cidr_format(&c, out);
    assert_string_equal(out, "10.0.0.0/8");
    c = cidr("2001:db8::/32");
    assert_int_equal(c.bits, 32);
    assert_int_equal(c.v4, 0);
    gw_cidr_format(&c, out);
    assert_string_equal(out, "2001:db8::/32");
    c = cidr("192.0.2.1");
    gw_cidr_format(&c, out);
    assert_string_equal(out, "192.0.2.1/32");
    c = cidr("::ffff:10.0.0.0/104");
    assert_int_equal(c.v4, 1);
    gw_cidr_format(&c, out);
    assert_string_equal(out, "10.0.0.0/8");
    c = cidr("0.0.0.0/0");
    assert_int_equal(c.bits, 96);
    cidr_refused("10.0.0.1/8", "host bits set after /8 (did you mean 10.0.0.0/8?)");
    cidr_refused("10.0.0.0/33", "prefix length 33: expected 0..32 for IPv4");
    cidr_refused("::/129", "prefix length 129: expected 0..128 for IPv6");
    cidr_refused("10.0.0.0/", "prefix length \"\": expected 0..32");
    cidr_refused("10.0.0.0/-1", "prefix length \"-1\": expected 0..32");
    cidr_refused("10.0.0.0/8a", "prefix length \"8a\": expected 0..32");
    cidr_refused("10.0.0/8", "expected an IPv4 or IPv6 address, optionally /BITS");
    cidr_refused("", "empty: expected an address or ADDR/BITS");
    cidr_refused("2001:db8::1/32", "host bits set after /32 (did you mean 2001:db8::/32?)");
}

static void test_cidr_matches_within_its_family_only(void **state)
{
    (void)state;
    struct gw_cidr ten = cidr("10.0.0.0/8"), all6 = cidr("::/0"), all4 = cidr("0.0.0.0/0");
    struct gw_addr in = addr("10.255.0.1"), out = addr("11.0.0.0"),
                   mapped = addr("::ffff:10.0.0.9");
    struct gw_addr six = addr("2001:db8::1");
    assert_true(gw_cidr_contains(&ten, &in));
    assert_false(gw_cidr_contains(&ten, &out));
    assert_true(gw_cidr_contains(&ten, &mapped));
    assert_true(gw_cidr_contains(&all6, &six));
    assert_false(gw_cidr_contains(&all6, &in)); /* ::/0 is IPv6 only */
    assert_true(gw_cidr_contains(&all4, &in));
    assert_false(gw_cidr_contains(&all4, &six));
    struct gw_cidr odd = cidr("2001:db8:8000::/33");
    assert_true(gw_cidr_contains(&odd, &(struct gw_addr){{0x20, 0x01, 0x0d, 0xb8, 0x80}}));
    assert_false(gw_cidr_contains(&odd, &six));
}

/* The client chosen with trusted = 10.0.0.0/8 and 192.0.2.1, peer 10.0.0.1. */
static const char *client_of(const char *xff, const char *fwd, char *why)
{
    static char out[GW_ADDR_STRLEN];
    struct gw_cidr t[2] = {cidr("10.0.0.0/8"), cidr("192.0.2.1")};
    struct gw_addr peer = addr("10.0.0.1"), cl;
    why[0] = '\0';
    int rc = gw_fwd_client(&peer, t, 2, xff, xff ? strlen(xff) : 0, fwd, fwd ? strlen(fwd) : 0, &cl,
                           why, 160);
    if (rc != 0) {
        assert_int_equal(rc, -EINVAL);
        return NULL;
    }
    gw_addr_format(&cl, out);
    return out;
}

static void test_client_is_rightmost_untrusted_hop(void **state)
{
    (void)state;
    char why[160];
    assert_string_equal(client_of("198.51.100.7", NULL, why), "198.51.100.7");
    /* the client wrote a fake leftmost entry: the proxies' view wins */
    assert_string_equal(client_of("6.6.6.6, 198.51.100.7, 10.9.9.9", NULL, why), "198.51.100.7");
    assert_string_equal(client_of("198.51.100.7,192.0.2.1", NULL, why), "198.51.100.7");
    /* every hop trusted: the leftmost */
    assert_string_equal(client_of("10.1.1.1, 10.2.2.2", NULL, why), "10.1.1.1");
    assert_string_equal(client_of("[2001:db8::5]:4711, 10.2.2.2", NULL, why), "2001:db8::5");
    assert_string_equal(client_of("198.51.100.7:8080", NULL, why), "198.51.100.7");
    assert_string_equal(client_of("2001:db8::5", NULL, why), "2001:db8::5");
    assert_string_equal(client_of("::ffff:198.51.100.7", NULL, why), "198.51.100.7");
    /* no header: the peer */
    assert_string_equal(client_of(NULL, NULL, why), "10.0.0.1");
    /* "unknown" ends the walk at the proxy that reported it */
    assert_string_equal(client_of("unknown, 10.2.2.2", NULL, why), "10.2.2.2");
    assert_string_equal(client_of("unknown", NULL, why), "10.0.0.1");
}

static void test_forwarded_header_is_read_by_rfc_7239(void **state)
{
    (void)state;
    char why[160];
    assert_string_equal(client_of(NULL, "for=198.51.100.7", why), "198.51.100.7");
    assert_string_equal(
        client_of(NULL, "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.3.3.3",
                  why),
        "2001:db8:cafe::17");
    assert_string_equal(client_of(NULL, "For=\"198.51.100.7:80\";by=10.0.0.1;host=\"a,b\"", why),
                        "198.51.100.7");
    /* Forwarded wins over X-Forwarded-For when both are there */
    assert_string_equal(client_of("6.6.6.6", "for=198.51.100.9", why), "198.51.100.9");
    assert_string_equal(client_of(NULL, "for=_hidden, for=10.4.4.4", why), "10.4.4.4");
    assert_string_equal(client_of(NULL, "proto=https", why), "10.0.0.1");
    assert_string_equal(client_of(NULL, "for=\"\\1\\98.51.100.7\"", why), "198.51.100.7");
}

static void test_malformed_forwarding_headers_get_exact_errors(void **state)
{
    (void)state;
    char why[160];
    static const char *const cases[][3] = {
        {"1.2.3", NULL, "X-Forwarded-For: element 1 \"1.2.3\": not an IP address"},
        {"198.51.100.7,,10.0.0.2", NULL, "X-Forwarded-For: element 2 \"\": not an IP address"},
        {"", NULL, "X-Forwarded-For: element 1 \"\": not an IP address"},
        {"1.2.3.4:99999", NULL, "X-Forwarded-For: element 1 \"1.2.3.4:99999\": not an IP address"},
        {"[2001:db8::1", NULL, "X-Forwarded-For: element 1 \"[2001:db8::1\": not an IP address"},
        {"[1.2.3.4]x", NULL, "X-Forwarded-For: element 1 \"[1.2.3.4]x\": not an IP address"},
        {"a\x01"
         "b",
         NULL, "X-Forwarded-For: element 1 \"a?b\": not an IP address"},
        {NULL, "", "Forwarded: element 1 is empty"},
        {NULL, "for=1.2.3.4,", "Forwarded: element 2 is empty"},
        {NULL, "for", "Forwarded: element 1: expected token=value at offset 3"},
        {NULL, "for=", "Forwarded: element 1: bad value at offset 4"},
        {NULL, "for=\"1.2.3.4", "Forwarded: element 1: bad value at offset 12"},
        {NULL, "for=1.2.3.4 x", "Forwarded: element 1: expected ';' or ',' at offset 12"},
        {NULL, "for=1.2.3.4;for=5.6.7.8", "Forwarded: element 1: \"for\" given twice"},
        {NULL, "for=\"[::1\"", "Forwarded: element 1: for=\"[::1\": not a node"},
        {NULL, "for=999.1.1.1", "Forwarded: element 1: for=\"999.1.1.1\": not a node"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = client_of(cases[i][0], cases[i][1], why);
        if (got)
            fail_msg("case %zu: admitted as %s", i, got);
        assert_string_equal(why, cases[i][2]);
    }
    char many[64 * 9 + 16] = "";
    for (int i = 0; i < 65; i++)
        strcat(many, i ? ",10.0.0.2" : "10.0.0.2");
    assert_null(client_of(many, NULL, why));
    assert_string_equal(why, "X-Forwarded-For: more than 64 addresses");
}

static void test_headers_from_an_untrusted_peer_are_not_read(void **state)
{
    (void)state;
    struct gw_cidr t = cidr("10.0.0.0/8");
    struct gw_addr peer = addr("203.0.113.5"), cl;
    char why[64] = "", out[GW_ADDR_STRLEN];
    /* even a malformed header is no error: it is not looked at */
    assert_int_equal(gw_fwd_client(&peer, &t, 1, "garbage", 7, NULL, 0, &cl, why, sizeof(why)), 0);
    gw_addr_format(&cl, out);
    assert_string_equal(out, "203.0.113.5");
    assert_int_equal(gw_fwd_client(&peer, &t, 0, "1.1.1.1", 7, NULL, 0, &cl, why, sizeof(why)), 0);
    gw_addr_format(&cl, out);
    assert_string_equal(out, "203.0.113.5");
    assert_string_equal(why, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses_parse_and_print_canonically),
        cmocka_unit_test(test_ipv6_keys_by_prefix_and_ipv4_mapped_is_ipv4),
        cmocka_unit_test(test_cidr_parses_exactly_and_refuses_with_reasons),
        cmocka_unit_test(test_cidr_matches_within_its_family_only),
        cmocka_unit_test(test_client_is_rightmost_untrusted_hop),
        cmocka_unit_test(test_forwarded_header_is_read_by_rfc_7239),
        cmocka_unit_test(test_malformed_forwarding_headers_get_exact_errors),
        cmocka_unit_test(test_headers_from_an_untrusted_peer_are_not_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
