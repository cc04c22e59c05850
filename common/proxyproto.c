/* proxyproto.c - HAProxy's PROXY protocol, versions 1 and 2 (the
 * specification: www.haproxy.org/download/2.9/doc/proxy-protocol.txt), read
 * at the start of a connection on a listener that enables it.
 *
 * The header comes from a proxy, but the bytes are still network input: a
 * v2 header states its own length, and a header that says it is longer than
 * we accept, or shorter than its address block, is refused by name before
 * anything is read past what the length covers. Nothing here allocates;
 * the caller holds the bytes (at most GW_PROXY_V2_MAX) and feeds what
 * follows the header to HTTP.
 */
#include "gw_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* A v1 field quoted in a message: printable bytes only, at most 40. */
static const char *shown(const char *s, size_t n, char buf[48])
{
    size_t k = n < 40 ? n : 40;
    for (size_t i = 0; i < k; i++)
        buf[i] = s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' ? '?' : s[i];
    buf[k] = '\0';
    return buf;
}

/* A v1 port: 1..5 digits, no leading zero, at most 65535. */
static int port_ok(const char *s, size_t n)
{
    if (n < 1 || n > 5 || (n > 1 && s[0] == '0'))
        return 0;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= 65535;
}

static int parse_v1(const uint8_t *buf, size_t len, struct gw_addr *src, int *has_src, char *why,
                    size_t whylen)
{
    const char *s = (const char *)buf;
    size_t lim = len < GW_PROXY_V1_MAX ? len : GW_PROXY_V1_MAX, end = 0;
    while (end + 1 < lim && !(s[end] == '\r' && s[end + 1] == '\n'))
        end++;
    if (end + 1 >= lim) {
        if (len >= GW_PROXY_V1_MAX)
            return bad(why, whylen, "PROXY v1: no CRLF within %d bytes", GW_PROXY_V1_MAX);
        return 0;
    }
    /* fields separated by single spaces: PROXY proto src dst sport dport */
    const char *f[7];
    size_t fl[7];
    int n = 0;
    size_t i = 0;
    while (i <= end && n < 7) {
        size_t j = i;
        while (j < end && s[j] != ' ')
            j++;
        f[n] = s + i;
        fl[n++] = j - i;
        i = j + 1;
    }
    char q[48];
    if (n >= 2 && fl[1] == 7 && memcmp(f[1], "UNKNOWN", 7) == 0) {
        *has_src = 0; /* the rest of the line is ignored by the spec */
        return (int)(end + 2);
    }
    if (n < 2 || !((fl[1] == 4 && (!memcmp(f[1], "TCP4", 4) || !memcmp(f[1], "TCP6", 4)))))
        return bad(why, whylen, "PROXY v1: protocol \"%s\": expected TCP4, TCP6 or UNKNOWN",
                   n >= 2 ? shown(f[1], fl[1], q) : "");
    if (n != 6 || i <= end)
        return bad(why, whylen, "PROXY v1: expected 6 fields separated by single spaces");
    int v6 = f[1][3] == '6';
    struct gw_addr a, d;
    for (int k = 2; k <= 3; k++) {
        struct gw_addr *x = k == 2 ? &a : &d;
        if (gw_addr_parse(f[k], fl[k], x) != 0 || (memchr(f[k], ':', fl[k]) != NULL) != v6)
            return bad(why, whylen, "PROXY v1: \"%s\" is not an %s address", shown(f[k], fl[k], q),
                       v6 ? "IPv6" : "IPv4");
    }
    for (int k = 4; k <= 5; k++)
        if (!port_ok(f[k], fl[k]))
            return bad(why, whylen, "PROXY v1: port \"%s\": expected 0..65535",
                       shown(f[k], fl[k], q));
    *src = a;
    *has_src = 1;
    return (int)(end + 2);
}

static int parse_v2(const uint8_t *buf, size_t len, struct gw_addr *src, int *has_src, char *why,
                    size_t whylen)
{
    if (len < 16)
        return 0;
    int ver = buf[12] >> 4, cmd = buf[12] & 0x0f, fam = buf[13] >> 4, proto = buf[13] & 0x0f;
    size_t body = (size_t)buf[14] << 8 | buf[15];
    if (ver != 2)
        return bad(why, whylen, "PROXY v2: version %d: expected 2", ver);
    if (cmd > 1)
        return bad(why, whylen, "PROXY v2: command %d: expected 0 (LOCAL) or 1 (PROXY)", cmd);
    if (body > GW_PROXY_V2_MAX - 16)
        return bad(why, whylen, "PROXY v2: length %zu is longer than the %d bytes accepted", body,
                   GW_PROXY_V2_MAX - 16);
    size_t need = fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
    if (cmd == 1 && body < need)
        return bad(why, whylen,
                   "PROXY v2: length %zu is shorter than the %zu-byte %s address block", body, need,
                   fam == 1   ? "IPv4"
                   : fam == 2 ? "IPv6"
                              : "unix");
    if (len < 16 + body)
        return 0;
    *has_src = 0;
    if (cmd == 1 && (fam == 1 || fam == 2) && (proto == 1 || proto == 2)) {
        if (fam == 1) {
            memset(src->b, 0, 10);
            src->b[10] = src->b[11] = 0xff;
            memcpy(src->b + 12, buf + 16, 4);
        } else {
            memcpy(src->b, buf + 16, 16);
        }
        *has_src = 1;
    }
    /* LOCAL, UNSPEC, unix sockets, UDP: the connection's own peer stands;
     * TLVs after the address block are skipped (none is needed here) */
    return (int)(16 + body);
}

int gw_proxy_parse(const uint8_t *buf, size_t len, struct gw_addr *src, int *has_src, char *why,
                   size_t whylen)
{
    *has_src = 0;
    size_t k = len < 12 ? len : 12;
    if (memcmp(buf, v2_sig, k) == 0)
        return len < 12 ? 0 : parse_v2(buf, len, src, has_src, why, whylen);
    k = len < 6 ? len : 6;
    if (memcmp(buf, "PROXY ", k) == 0)
        return len < 6 ? 0 : parse_v1(buf, len, src, has_src, why, whylen);
    return bad(why, whylen, "not a PROXY protocol header");
}
