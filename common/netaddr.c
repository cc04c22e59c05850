/* netaddr.c - client addresses: parsing and matching IP addresses and CIDR
 * ranges, the key an address's limits live under, and the client behind
 * trusted proxies (X-Forwarded-For and RFC 7239 Forwarded).
 *
 * Every address is held in its 128-bit form with IPv4 IPv4-mapped, so one
 * compare serves both families and "::ffff:10.0.0.1" is 10.0.0.1. The
 * text forms go through inet_pton / inet_ntop (glibc's strict parsers: no
 * octal, no short IPv4 forms); what is written here is only the framing
 * around them (brackets, ports, the Forwarded header's grammar).
 *
 * The forwarding headers are untrusted bytes even from a trusted proxy
 * (the proxy appends; everything left of its entry is the client's): the
 * parser reads them within their length, copies at most one node into a
 * bounded buffer, and answers every malformed input with a message that
 * names the header, the element and the offending text.
 */
#include "gw_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int gw_addr_is_v4(const struct gw_addr *a)
{
    return memcmp(a->b, v4_mapped_prefix, 12) == 0;
}

/* One address, `len` bytes exactly; IPv4 text first (the common case). */
int gw_addr_parse(const char *s, size_t len, struct gw_addr *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) /* an embedded NUL would cut the text short */
        return -EINVAL;
    struct in_addr v4;
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        memcpy(out->b, v4_mapped_prefix, 12);
        memcpy(out->b + 12, &v4, 4);
        return 0;
    }
    struct in6_addr v6;
    if (inet_pton(AF_INET6, buf, &v6) == 1) {
        memcpy(out->b, &v6, 16);
        return 0;
    }
    return -EINVAL;
}

void gw_addr_format(const struct gw_addr *a, char out[GW_ADDR_STRLEN - 8])
{
    if (gw_addr_is_v4(a))
        inet_ntop(AF_INET, a->b + 12, out, INET6_ADDRSTRLEN);
    else
        inet_ntop(AF_INET6, a->b, out, INET6_ADDRSTRLEN);
}

/* Clears every bit after the first `bits`. */
static void mask_to(struct gw_addr *a, int bits)
{
    for (int i = 0; i < 16; i++) {
        int keep = bits - 8 * i;
        if (keep >= 8)
            continue;
        a->b[i] &= keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
    }
}

void gw_addr_prefix(const struct gw_addr *a, int v6_prefix, struct gw_addr *out)
{
    *out = *a;
    if (!gw_addr_is_v4(a) && v6_prefix >= 1 && v6_prefix < 128)
        mask_to(out, v6_prefix);
}

void gw_addr_key(const struct gw_addr *a, int v6_prefix, char out[GW_ADDR_STRLEN])
{
    if (gw_addr_is_v4(a) || v6_prefix >= 128 || v6_prefix < 1) {
        gw_addr_format(a, out);
        return;
    }
    struct gw_addr m = *a;
    mask_to(&m, v6_prefix);
    char txt[GW_ADDR_STRLEN - 8];
    gw_addr_format(&m, txt);
    snprintf(out, GW_ADDR_STRLEN, "%s/%d", txt, v6_prefix);
}

/* ----------------------------------------------------------------- CIDR */

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t whylen, const char *fmt,
                                                      ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* A value quoted in a message: at most 40 bytes, control bytes as '?'. */
static const char *shown(const char *s, size_t n, char buf[48])
{
    size_t k = n < 40 ? n : 40;
    for (size_t i = 0; i < k; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '"' ? '?' : s[i];
    buf[k] = '\0';
    if (n > 40)
        memcpy(buf + 37, "...", 4);
    return buf;
}

int gw_cidr_parse(const char *s, struct gw_cidr *out, char *why, size_t whylen)
{
    char q[48];
    if (!s || !s[0])
        return fail(why, whylen, "empty: expected an address or ADDR/BITS");
    size_t n = strlen(s);
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : n;
    struct gw_addr a;
    if (gw_addr_parse(s, alen, &a) != 0)
        return fail(why, whylen, "expected an IPv4 or IPv6 address, optionally /BITS");
    int text_v4 = memchr(s, ':', alen) == NULL;
    int max = text_v4 ? 32 : 128, bits = max;
    if (slash) {
        const char *d = slash + 1;
        size_t dl = n - alen - 1;
        if (dl == 0 || dl > 3 || strspn(d, "0123456789") != dl)
            return fail(why, whylen, "prefix length \"%s\": expected 0..%d", shown(d, dl, q), max);
        bits = atoi(d);
        if (bits > max)
            return fail(why, whylen, "prefix length %d: expected 0..%d for %s", bits, max,
                        text_v4 ? "IPv4" : "IPv6");
    }
    int full = text_v4 ? bits + 96 : bits;
    struct gw_addr m = a;
    mask_to(&m, full);
    if (memcmp(&m, &a, sizeof(m)) != 0) {
        char base[GW_ADDR_STRLEN - 8];
        gw_addr_format(&m, base);
        return fail(why, whylen, "host bits set after /%d (did you mean %s/%d?)", bits, base, bits);
    }
    out->base = a;
    /* an IPv6-written range inside ::ffff:0:0/96 is an IPv4 range */
    out->v4 = (uint8_t)(text_v4 || (full >= 96 && gw_addr_is_v4(&a)));
    out->bits = (uint8_t)full;
    return 0;
}

int gw_cidr_contains(const struct gw_cidr *c, const struct gw_addr *a)
{
    if (c->v4 != gw_addr_is_v4(a))
        return 0;
    struct gw_addr m = *a;
    mask_to(&m, c->bits);
    return memcmp(&m, &c->base, sizeof(m)) == 0;
}

void gw_cidr_format(const struct gw_cidr *c, char out[GW_ADDR_STRLEN])
{
    char txt[GW_ADDR_STRLEN - 8];
    gw_addr_format(&c->base, txt);
    snprintf(out, GW_ADDR_STRLEN, "%s/%d", txt, c->v4 ? c->bits - 96 : c->bits);
}

/* ----------------------------------------------------- forwarding headers */

enum { HOP_ADDR = 1, HOP_NAMED = 2 }; /* an address; unknown, obfuscated or absent */

struct hops {
    int n;
    uint8_t kind[GW_FWD_MAX_HOPS];
    struct gw_addr addr[GW_FWD_MAX_HOPS];
};

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* A node as a forwarding header writes one: IPv4, IPv4:port, IPv6,
 * [IPv6], [IPv6]:port, "unknown" or an obfuscated "_name". 1 address, 0
 * named, -1 malformed. A port is 0..65535 (or an obfuscated "_name"). */
static int parse_node(const char *s, size_t n, struct gw_addr *a)
{
    if (n == 7 && strncasecmp(s, "unknown", 7) == 0)
        return 0;
    if (n >= 2 && s[0] == '_')
        return 0;
    const char *host = s, *port = NULL;
    size_t hl = n, pl = 0;
    if (n && s[0] == '[') {
        const char *end = memchr(s, ']', n);
        if (!end)
            return -1;
        host = s + 1;
        hl = (size_t)(end - s) - 1;
        if ((size_t)(end - s) + 1 < n) {
            if (end[1] != ':')
                return -1;
            port = end + 2;
            pl = n - (size_t)(end - s) - 2;
        }
        if (memchr(host, '.', hl) == NULL && memchr(host, ':', hl) == NULL)
            return -1;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon && memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) == NULL) {
            hl = (size_t)(colon - s); /* exactly one ':': IPv4:port */
            port = colon + 1;
            pl = n - hl - 1;
        }
    }
    if (port) {
        int digits = pl >= 1 && pl <= 5;
        unsigned v = 0;
        for (size_t i = 0; digits && i < pl; i++) {
            digits = port[i] >= '0' && port[i] <= '9';
            v = v * 10 + (unsigned)(port[i] - '0');
        }
        digits = digits && v <= 65535;
        if (!digits && !(pl >= 2 && port[0] == '_'))
            return -1;
    }
    return gw_addr_parse(host, hl, a) == 0 ? 1 : -1;
}

static int xff_hops(const char *h, size_t len, struct hops *out, char *why, size_t whylen)
{
    char q[48];
    size_t i = 0;
    int elem = 0;
    for (;;) {
        size_t start = i;
        while (i < len && h[i] != ',')
            i++;
        size_t a = start, b = i;
        while (a < b && is_ows(h[a]))
            a++;
        while (b > a && is_ows(h[b - 1]))
            b--;
        elem++;
        if (out->n == GW_FWD_MAX_HOPS)
            return fail(why, whylen, "X-Forwarded-For: more than %d addresses", GW_FWD_MAX_HOPS);
        int k = parse_node(h + a, b - a, &out->addr[out->n]);
        if (k < 0)
            return fail(why, whylen, "X-Forwarded-For: element %d \"%s\": not an IP address", elem,
                        shown(h + a, b - a, q));
        out->kind[out->n++] = k ? HOP_ADDR : HOP_NAMED;
        if (i >= len)
            return 0;
        i++; /* the comma */
    }
}

static int tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* One Forwarded value at h[*i] (token or quoted-string) into val (at most
 * vcap - 1 bytes, unquoted). 0, or -1 with *i at the offending byte. */
static int fwd_value(const char *h, size_t len, size_t *i, char *val, size_t vcap, size_t *vl)
{
    *vl = 0;
    if (*i < len && h[*i] == '"') {
        for ((*i)++; *i < len && h[*i] != '"'; (*i)++) {
            if (h[*i] == '\\' && ++*i == len)
                return -1;
            if ((unsigned char)h[*i] < 0x20 && h[*i] != '\t')
                return -1;
            if (*vl + 1 >= vcap)
                return -1;
            val[(*vl)++] = h[*i];
        }
        if (*i >= len)
            return -1;
        (*i)++; /* closing quote */
        return 0;
    }
    while (*i < len && tchar(h[*i])) {
        if (*vl + 1 >= vcap)
            return -1;
        val[(*vl)++] = h[(*i)++];
    }
    return *vl ? 0 : -1;
}

/* The pairs of one Forwarded element, from h[*i] to the next ',' or the
 * end; its `for=` node (if any) becomes the next hop. */
static int fwd_element(const char *h, size_t len, size_t *i, int elem, struct hops *out, char *why,
                       size_t whylen)
{
    char val[128], q[48];
    int have_for = 0, kind = HOP_NAMED;
    struct gw_addr a;
    for (;;) {
        while (*i < len && is_ows(h[*i]))
            (*i)++;
        if (*i >= len || h[*i] == ',')
            break;
        if (h[*i] == ';') {
            (*i)++;
            continue;
        }
        size_t k = *i;
        while (*i < len && tchar(h[*i]))
            (*i)++;
        size_t klen = *i - k;
        if (klen == 0 || *i >= len || h[*i] != '=')
            return fail(why, whylen, "Forwarded: element %d: expected token=value at offset %zu",
                        elem, *i);
        (*i)++;
        size_t vl;
        if (fwd_value(h, len, i, val, sizeof(val), &vl) != 0)
            return fail(why, whylen, "Forwarded: element %d: bad value at offset %zu", elem, *i);
        while (*i < len && is_ows(h[*i]))
            (*i)++;
        if (*i < len && h[*i] != ';' && h[*i] != ',')
            return fail(why, whylen, "Forwarded: element %d: expected ';' or ',' at offset %zu",
                        elem, *i);
        if (klen == 3 && strncasecmp(h + k, "for", 3) == 0) {
            if (have_for)
                return fail(why, whylen, "Forwarded: element %d: \"for\" given twice", elem);
            have_for = 1;
            int r = parse_node(val, vl, &a);
            if (r < 0)
                return fail(why, whylen, "Forwarded: element %d: for=\"%s\": not a node", elem,
                            shown(val, vl, q));
            kind = r ? HOP_ADDR : HOP_NAMED;
        }
    }
    if (out->n == GW_FWD_MAX_HOPS)
        return fail(why, whylen, "Forwarded: more than %d elements", GW_FWD_MAX_HOPS);
    out->kind[out->n] = (uint8_t)kind;
    if (kind == HOP_ADDR)
        out->addr[out->n] = a;
    out->n++;
    return 0;
}

static int fwd_hops(const char *h, size_t len, struct hops *out, char *why, size_t whylen)
{
    size_t i = 0;
    for (int elem = 1;; elem++) {
        size_t at = i;
        while (at < len && is_ows(h[at]))
            at++;
        if (at >= len || h[at] == ',')
            return fail(why, whylen, "Forwarded: element %d is empty", elem);
        if (fwd_element(h, len, &i, elem, out, why, whylen) != 0)
            return -EINVAL;
        if (i >= len)
            return 0;
        i++; /* the comma */
    }
}

static int trusted_by(const struct gw_cidr *t, int n, const struct gw_addr *a)
{
    for (int i = 0; i < n; i++)
        if (gw_cidr_contains(&t[i], a))
            return 1;
    return 0;
}

int gw_fwd_client(const struct gw_addr *peer, const struct gw_cidr *trusted, int n_trusted,
                  const char *xff, size_t xff_len, const char *fwd, size_t fwd_len,
                  struct gw_addr *client, char *why, size_t whylen)
{
    *client = *peer;
    if (!trusted_by(trusted, n_trusted, peer) || (!xff && !fwd))
        return 0;
    struct hops h = {0};
    int rc =
        fwd ? fwd_hops(fwd, fwd_len, &h, why, whylen) : xff_hops(xff, xff_len, &h, why, whylen);
    if (rc != 0)
        return rc;
    const struct gw_addr *reporter = peer; /* the trusted hop that wrote hop i */
    for (int i = h.n - 1; i >= 0; i--) {
        if (h.kind[i] == HOP_NAMED) {
            *client = *reporter;
            return 0;
        }
        if (!trusted_by(trusted, n_trusted, &h.addr[i])) {
            *client = h.addr[i];
            return 0;
        }
        reporter = &h.addr[i];
    }
    *client = *reporter; /* every hop trusted: the leftmost */
    return 0;
}
