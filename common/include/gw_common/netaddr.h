/* gw_common/netaddr.h - client addresses (issue 18): IP addresses and CIDR
 * ranges, the key an address's limits are kept under (IPv6 by prefix), and
 * who the client is behind trusted proxies (X-Forwarded-For, RFC 7239
 * Forwarded). Pure functions, no segment, no allocation. Part of
 * gw_common.h; include that, not this. */
#ifndef GW_COMMON_NETADDR_H
#define GW_COMMON_NETADDR_H

#include <stddef.h>
#include <stdint.h>

/* An address in its 128-bit form: IPv4 is kept IPv4-mapped
 * (::ffff:a.b.c.d), so "10.0.0.1" and "::ffff:10.0.0.1" are the same
 * address and both are IPv4 (gw_addr_is_v4). */
struct gw_addr {
    uint8_t b[16];
};

/* A range: the first `bits` bits of `base` over the 128-bit form (an IPv4
 * /8 is bits = 104). `v4` says which family it matches: a range written in
 * IPv4 notation, or IPv6 notation inside ::ffff:0:0/96, matches only IPv4
 * addresses; any other IPv6 range matches only IPv6 addresses (so "::/0"
 * is every IPv6 address, not every address). */
struct gw_cidr {
    struct gw_addr base; /* host bits zero */
    uint8_t bits;        /* 0..128 over the 128-bit form */
    uint8_t v4;          /* 1: an IPv4 range */
};

#define GW_ADDR_STRLEN 56 /* an address (46 with NUL) or an address key (+ "/128") */

/* Parses one address: dotted-quad IPv4 or IPv6 text (inet_pton), exactly
 * `len` bytes, no brackets, port or zone. 0 or -EINVAL. */
int gw_addr_parse(const char *s, size_t len, struct gw_addr *out);
/* 1 when a is IPv4 (IPv4-mapped in the 128-bit form). */
int gw_addr_is_v4(const struct gw_addr *a);
/* The address as text: dotted quad for IPv4, RFC 5952 for IPv6. */
void gw_addr_format(const struct gw_addr *a, char out[GW_ADDR_STRLEN - 8]);
/* The key under which an address's limits and bans apply: IPv4 itself
 * ("192.0.2.7"); IPv6 with everything after the first `v6_prefix` bits
 * (1..128) cleared, as "2001:db8:1:2::/64" (128: the bare address). Two
 * addresses with the same key share one bucket. */
void gw_addr_key(const struct gw_addr *a, int v6_prefix, char out[GW_ADDR_STRLEN]);
/* The same key as an address: IPv4 as is, IPv6 with the bits after
 * v6_prefix cleared. */
void gw_addr_prefix(const struct gw_addr *a, int v6_prefix, struct gw_addr *out);

/* Parses "ADDR/BITS" or a bare ADDR (a single address: /32 or /128).
 * BITS is 0..32 for IPv4 text, 0..128 for IPv6 text. Host bits after the
 * prefix must be zero. On -EINVAL writes why into `why` (what follows the
 * value's path in a message), e.g. `host bits set after /8 (10.0.0.0/8?)`
 * or `prefix length 33: expected 0..32 for IPv4`; the caller names the value. */
int gw_cidr_parse(const char *s, struct gw_cidr *out, char *why, size_t whylen);
/* 1 when a lies in c (same family, same first c->bits bits). */
int gw_cidr_contains(const struct gw_cidr *c, const struct gw_addr *a);
/* The range as text ("10.0.0.0/8", "2001:db8::/32"). */
void gw_cidr_format(const struct gw_cidr *c, char out[GW_ADDR_STRLEN]);

/* ------------------------------------------------------ forwarding headers */

#define GW_FWD_MAX_HOPS 64 /* addresses one header may list */

/* Who the client is. When `peer` lies in none of the `n_trusted` ranges,
 * the client is the peer and the headers are not even read. Otherwise the
 * hops are read from `fwd` (RFC 7239 Forwarded: its `for=` parameters)
 * when it is non-NULL, else from `xff` (X-Forwarded-For: comma-separated
 * addresses, optionally [IPv6]:port or IPv4:port), else the client is the
 * peer. The list is walked from the right (the hop nearest us): the client
 * is the first address not in a trusted range; when every address is
 * trusted it is the leftmost. A `for=unknown` or obfuscated (`_name`)
 * node, or a Forwarded element without `for=`, ends the walk: the client
 * is then the trusted hop that reported it (the stricter choice: that
 * proxy's clients share its bucket).
 * Returns 0 with *client set, or -EINVAL with `why` saying what is wrong,
 * naming the header: `X-Forwarded-For: element 2 "1.2.3": not an IP
 * address`, `Forwarded: element 1: expected token=value at byte 4`,
 * `X-Forwarded-For: more than 64 addresses`. A NULL header is absent; an
 * empty or all-blank one is malformed. */
int gw_fwd_client(const struct gw_addr *peer, const struct gw_cidr *trusted, int n_trusted,
                  const char *xff, size_t xff_len, const char *fwd, size_t fwd_len,
                  struct gw_addr *client, char *why, size_t whylen);

/* ------------------------------------------------------- PROXY protocol */

/* HAProxy's PROXY protocol (www.haproxy.org/download/2.9/doc/proxy-protocol.txt),
 * version 1 (text) and 2 (binary), as the first bytes of a connection on a
 * listener that enables it. */
#define GW_PROXY_V1_MAX 107  /* the longest v1 line, CRLF included */
#define GW_PROXY_V2_MAX 1040 /* 16 bytes of header + at most 1024 of addresses and TLVs */

/* Reads a PROXY header from the first `len` bytes of a connection.
 * Returns the header's length when it is complete (the bytes after it are
 * the client's), with *has_src 1 and *src the client's address for
 * "TCP4"/"TCP6" (v1) or PROXY over AF_INET/AF_INET6 (v2), and *has_src 0
 * for v1 "UNKNOWN", a v2 LOCAL command (a health check) or another family
 * (the connection's own peer stands). Returns 0 when more bytes are needed
 * and -EINVAL when the bytes are not a valid header, with `why`, e.g.
 * `PROXY v2: length 8 is shorter than the 12-byte IPv4 address block`,
 * `PROXY v1: no CRLF within 107 bytes`, `PROXY v1: "1.2.3" is not an IPv4
 * address`, `not a PROXY protocol header`. */
int gw_proxy_parse(const uint8_t *buf, size_t len, struct gw_addr *src, int *has_src, char *why,
                   size_t whylen);

#endif /* GW_COMMON_NETADDR_H */
