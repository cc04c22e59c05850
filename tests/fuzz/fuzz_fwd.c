/* fuzz_fwd.c - the client-address parsers (common/netaddr.c): byte 0
 * picks the input, the rest is its text.
 *   0: X-Forwarded-For from a trusted peer (10.0.0.1; trusted 10.0.0.0/8,
 *      2001:db8::/32)
 *   1: Forwarded (RFC 7239) from the same peer
 *   2: a CIDR range (ip.trusted_proxies, gpuwardenctl ban)
 *   3: the first bytes of a connection on a PROXY protocol listener
 * Contract: a header gives 0 and a client that is the peer or that
 * formats and parses back to itself, or -EINVAL and a message naming the
 * header; a range gives 0 and prints back to a range that parses to the
 * same, or -EINVAL and a reason; a PROXY header gives its length (within
 * the input and the bound of its version), 0 (more needed, and then a
 * prefix of every longer input says the same or completes), or -EINVAL and
 * a reason. Nothing is read past the input. */
#include "fuzz.h"
#include "gw_common.h"

#include <errno.h>
#include <string.h>

static void check_header(int forwarded, const char *h, size_t n)
{
    struct gw_cidr t[2];
    char why[200];
    GW_FUZZ_CHECK(gw_cidr_parse("10.0.0.0/8", &t[0], why, sizeof(why)) == 0);
    GW_FUZZ_CHECK(gw_cidr_parse("2001:db8::/32", &t[1], why, sizeof(why)) == 0);
    struct gw_addr peer, client;
    GW_FUZZ_CHECK(gw_addr_parse("10.0.0.1", 8, &peer) == 0);
    why[0] = '\0';
    int rc = forwarded ? gw_fwd_client(&peer, t, 2, NULL, 0, h, n, &client, why, sizeof(why))
                       : gw_fwd_client(&peer, t, 2, h, n, NULL, 0, &client, why, sizeof(why));
    if (rc == 0) {
        char txt[GW_ADDR_STRLEN];
        struct gw_addr back;
        gw_addr_format(&client, txt);
        GW_FUZZ_CHECK(gw_addr_parse(txt, strlen(txt), &back) == 0);
        GW_FUZZ_CHECK(memcmp(&back, &client, sizeof(back)) == 0);
        return;
    }
    GW_FUZZ_CHECK(rc == -EINVAL);
    const char *name = forwarded ? "Forwarded: " : "X-Forwarded-For: ";
    GW_FUZZ_CHECK(strncmp(why, name, strlen(name)) == 0);
}

static void check_cidr(const char *s)
{
    struct gw_cidr c, again;
    char why[200] = "";
    int rc = gw_cidr_parse(s, &c, why, sizeof(why));
    if (rc != 0) {
        GW_FUZZ_CHECK(rc == -EINVAL && why[0] != '\0');
        return;
    }
    char txt[GW_ADDR_STRLEN];
    gw_cidr_format(&c, txt);
    GW_FUZZ_CHECK(gw_cidr_parse(txt, &again, why, sizeof(why)) == 0);
    GW_FUZZ_CHECK(memcmp(&again, &c, sizeof(c)) == 0);
    GW_FUZZ_CHECK(gw_cidr_contains(&c, &c.base));
}

static void check_proxy(const uint8_t *b, size_t n)
{
    struct gw_addr a;
    int has = -1;
    char why[200] = "";
    int rc = gw_proxy_parse(b, n, &a, &has, why, sizeof(why));
    if (rc < 0) {
        GW_FUZZ_CHECK(rc == -EINVAL && why[0] != '\0');
        return;
    }
    GW_FUZZ_CHECK(has == 0 || has == 1);
    GW_FUZZ_CHECK((size_t)rc <= n && rc <= GW_PROXY_V2_MAX);
    if (rc == 0)
        return;
    GW_FUZZ_CHECK(rc >= 8); /* "PROXY X\r\n" at the least */
    /* the header alone parses to the same length */
    int has2 = -1;
    GW_FUZZ_CHECK(gw_proxy_parse(b, (size_t)rc, &a, &has2, why, sizeof(why)) == rc && has2 == has);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    /* an exact-size copy, so ASan sees any read past the header's end */
    size_t n = size - 1;
    char *h = malloc(n ? n : 1);
    GW_FUZZ_CHECK(h != NULL);
    memcpy(h, data + 1, n);
    switch (data[0] % 4) {
    case 0:
    case 1:
        check_header(data[0] % 4, h, n);
        break;
    case 3:
        check_proxy((const uint8_t *)h, n);
        break;
    default: {
        char *s = malloc(n + 1);
        GW_FUZZ_CHECK(s != NULL);
        memcpy(s, h, n);
        s[n] = '\0';
        check_cidr(s);
        free(s);
    }
    }
    free(h);
    return 0;
}
