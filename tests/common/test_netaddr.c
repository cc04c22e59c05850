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

/* A PROXY v2 header: signature, ver/cmd, fam/proto, length, then `body`. */
static size_t v2(uint8_t *out, int cmd, int fam, size_t len, const uint8_t *body, size_t blen)
{
    static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    memcpy(out, sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = (uint8_t)fam;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static int proxy(const void *buf, size_t len, char *src, char *why)
{
    struct gw_addr a;
    int has = -1;
    why[0] = src[0] = '\0';
    int rc = gw_proxy_parse(buf, len, &a, &has, why, 160);
    if (rc > 0 && has)
        gw_addr_format(&a, src);
    if (rc > 0 && !has)
        strcpy(src, "-");
    return rc;
}

static void test_proxy_v1_headers_parse_exactly(void **state)
{
    (void)state;
    char src[GW_ADDR_STRLEN], why[160];
    const char *h = "PROXY TCP4 198.51.100.7 192.0.2.1 56324 443\r\nGET /";
    assert_int_equal(proxy(h, strlen(h), src, why), 45);
    assert_string_equal(src, "198.51.100.7");
    h = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
    assert_int_equal(proxy(h, strlen(h), src, why), (int)strlen(h));
    assert_string_equal(src, "2001:db8::1");
    h = "PROXY UNKNOWN whatever\r\n";
    assert_int_equal(proxy(h, strlen(h), src, why), (int)strlen(h));
    assert_string_equal(src, "-");
    /* incomplete: more bytes needed */
    assert_int_equal(proxy("PROX", 4, src, why), 0);
    h = "PROXY TCP4 198.51.100.7 192.0.2.1 56324 443";
    assert_int_equal(proxy(h, strlen(h), src, why), 0);
    static const char *const bad[][2] = {
        {"PROXY TCP4 1.2.3 192.0.2.1 1 2\r\n", "PROXY v1: \"1.2.3\" is not an IPv4 address"},
        {"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
         "PROXY v1: \"2001:db8::1\" is not an IPv4 address"},
        {"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY v1: \"1.2.3.4\" is not an IPv6 address"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "PROXY v1: port \"65536\": expected 0..65535"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY v1: port \"01\": expected 0..65535"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
         "PROXY v1: expected 6 fields separated by single spaces"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
         "PROXY v1: expected 6 fields separated by single spaces"},
        {"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
         "PROXY v1: protocol \"UDP4\": expected TCP4, TCP6 or UNKNOWN"},
        {"GET / HTTP/1.1\r\n", "not a PROXY protocol header"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(proxy(bad[i][0], strlen(bad[i][0]), src, why), -EINVAL);
        assert_string_equal(why, bad[i][1]);
    }
    char longline[200] = "PROXY TCP4 ";
    memset(longline + 11, '1', 150);
    assert_int_equal(proxy(longline, 161, src, why), -EINVAL);
    assert_string_equal(why, "PROXY v1: no CRLF within 107 bytes");
}

static void test_proxy_v2_headers_and_lying_lengths(void **state)
{
    (void)state;
    char src[GW_ADDR_STRLEN], why[160];
    uint8_t buf[2048];
    const uint8_t v4[12] = {198, 51, 100, 7, 192, 0, 2, 1, 0xdc, 0x04, 0x01, 0xbb};
    size_t n = v2(buf, 1, 0x11, 12, v4, 12);
    assert_int_equal(proxy(buf, n, src, why), 28);
    assert_string_equal(src, "198.51.100.7");
    /* with a TLV after the addresses: skipped, counted in the length */
    uint8_t v4tlv[16];
    memcpy(v4tlv, v4, 12);
    memcpy(v4tlv + 12, "\x04\x00\x01\x00", 4);
    n = v2(buf, 1, 0x11, 16, v4tlv, 16);
    memcpy(buf + n, "GET", 3);
    assert_int_equal(proxy(buf, n + 3, src, why), 32);
    uint8_t v6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 5};
    n = v2(buf, 1, 0x21, 36, v6, 36);
    assert_int_equal(proxy(buf, n, src, why), 52);
    assert_string_equal(src, "2001:db8::5");
    /* LOCAL (a health check): the socket's own peer stands */
    n = v2(buf, 0, 0x00, 0, NULL, 0);
    assert_int_equal(proxy(buf, n, src, why), 16);
    assert_string_equal(src, "-");
    /* a length that covers more than has arrived: wait for it */
    n = v2(buf, 1, 0x11, 12, v4, 6);
    assert_int_equal(proxy(buf, n, src, why), 0);
    /* lies about its length */
    n = v2(buf, 1, 0x11, 8, v4, 8);
    assert_int_equal(proxy(buf, n, src, why), -EINVAL);
    assert_string_equal(why, "PROXY v2: length 8 is shorter than the 12-byte IPv4 address block");
    n = v2(buf, 1, 0x21, 12, v6, 12);
    assert_int_equal(proxy(buf, n, src, why), -EINVAL);
    assert_string_equal(why, "PROXY v2: length 12 is shorter than the 36-byte IPv6 address block");
    n = v2(buf, 1, 0x11, 65535, v4, 12);
    assert_int_equal(proxy(buf, n, src, why), -EINVAL);
    assert_string_equal(why, "PROXY v2: length 65535 is longer than the 1024 bytes accepted");
    n = v2(buf, 1, 0x11, 12, v4, 12);
    buf[12] = 0x11;
    assert_int_equal(proxy(buf, n, src, why), -EINVAL);
    assert_string_equal(why, "PROXY v2: version 1: expected 2");
    buf[12] = 0x22;
    assert_int_equal(proxy(buf, n, src, why), -EINVAL);
    assert_string_equal(why, "PROXY v2: command 2: expected 0 (LOCAL) or 1 (PROXY)");
    /* a partial signature needs more; a wrong one is no header */
    assert_int_equal(proxy("\r\n\r\n", 4, src, why), 0);
    assert_int_equal(proxy("\r\n\r\nX", 5, src, why), -EINVAL);
    assert_string_equal(why, "not a PROXY protocol header");
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
        cmocka_unit_test(test_proxy_v1_headers_parse_exactly),
        cmocka_unit_test(test_proxy_v2_headers_and_lying_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
