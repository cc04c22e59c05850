/* gw_common/access.h - the segment regions that decide who may call
 * (issue 18): revoked JWT ids (jti.c), the API keys file's generation
 * (apikey_gen.c), overflow buckets for a full address table (overflow.c)
 * and address-range rules (netrules.c). Each region's
 * place in the segment is in segment.c; who repairs what is in each file's
 * opening comment. Part of gw_common.h; include that, not this. */
#ifndef GW_COMMON_ACCESS_H
#define GW_COMMON_ACCESS_H

#include "gw_common/netaddr.h"
#include "gw_common/segment.h"

/* ---------------------------------------------------- revoked JWT ids */

/* `gpuwardenctl token revoke`: a token's `jti`, kept as a hash until the
 * token's own exp (jti.c). The master writes; fronts check every verified
 * token against their copy (lock-free: one acquire load when nothing
 * changed). */
#define GW_JTI_MAX 1024
/* The id as stored: XXH3-64 of its bytes, never 0. */
uint64_t gw_jti_hash(const char *jti, size_t len);
/* Master only: revokes `hash` until until_us (a later end of the same id
 * stands). -EINVAL for hash 0 or an end not after now; GW_EFULL when
 * GW_JTI_MAX revocations are in force. */
int gw_jti_revoke(struct gw_segment *seg, uint64_t hash, uint64_t until_us, uint64_t now_us);
/* Revocations in force at now_us. */
int gw_jti_count(const struct gw_segment *seg, uint64_t now_us);
/* Master, at start-up: clears a cell a killed master left half written. */
void gw_jti_repair(struct gw_segment *seg);
/* A front's private copy, re-read when the epoch moved. Zero-initialise. */
struct gw_jti_view {
    int valid, n;
    uint64_t epoch;
    uint64_t hash[GW_JTI_MAX], until[GW_JTI_MAX];
};
/* 1 when `hash` is revoked at now_us, else 0 (hash 0: no jti, never). */
int gw_jti_revoked(const struct gw_segment *seg, struct gw_jti_view *v, uint64_t hash,
                   uint64_t now_us);

/* ------------------------------------------- the API keys file's generation */

/* The API keys file (supervisor/apikeys.c) is rewritten by the master
 * only; after each rename (and each accepted reload, and at start-up) it
 * moves this generation on (release), and a front re-reads the file when
 * the generation it loaded is not the current one (acquire). One word in
 * its own region (apikey_gen.c); nothing to repair. */
uint64_t gw_apikey_gen(const struct gw_segment *seg);
void gw_apikey_gen_bump(struct gw_segment *seg);

/* -------------------------------------------------- overflow buckets */

/* When the address table has no room for a new address (gw_ledger_get:
 * GW_EFULL), the front admits it against an overflow bucket instead, if
 * ip.overflow_rate is set (common/overflow.c): the bucket of its /24
 * (IPv4) or /48 (IPv6), one of GW_OVF_BUCKETS in the segment's own region.
 * The reference is taken by gw_ledger_admit only (cells 0..n_windows-1,
 * never reclaimed, never stale). */
#define GW_OVF_BUCKETS 1024
#define GW_OVF_INDEX 0x80000000u /* an overflow reference's index: this bit | the bucket */
struct gw_acct gw_overflow_acct(const struct gw_segment *seg, const struct gw_addr *client);

/* ------------------------------------------------- address-range rules */

/* Bans and allow-list entries by CIDR range with an end time, kept in the
 * segment (netrules.c): the master writes them (admin socket), every front
 * checks each request's client address against them before any token
 * work. A banned range is refused (403 "banned"); an allowed one is exempt
 * from bans and from the per-address rate windows (tenant and node limits
 * still apply). An allow entry wins over a ban that also covers the
 * address. Survive restarts (the file does); expired rules are ignored and
 * their cells reused. */
#define GW_NET_RULES 256
enum { GW_NET_BAN = 1, GW_NET_ALLOW = 2 };
struct gw_net_rule {
    int kind; /* GW_NET_BAN or GW_NET_ALLOW */
    struct gw_cidr cidr;
    uint64_t until_us;   /* wall clock: in force while now < until_us */
    uint64_t created_us; /* when it was set */
};
/* Master only (one writer). Adds the rule, or replaces the end time of the
 * same kind and range. -EINVAL for a bad kind or an end not after now,
 * GW_EFULL when GW_NET_RULES rules are in force. */
int gw_net_set(struct gw_segment *seg, const struct gw_net_rule *r, uint64_t now_us);
/* Master only. Lifts the rule of that kind and exactly that range;
 * -ENOENT when none is in force. */
int gw_net_remove(struct gw_segment *seg, int kind, const struct gw_cidr *c, uint64_t now_us);
/* The rules in force at now_us into out (at most max); returns how many. */
int gw_net_list(const struct gw_segment *seg, uint64_t now_us, struct gw_net_rule *out, int max);
/* Master, at start-up before serving: clears a cell a killed master left
 * half written. */
void gw_net_repair(struct gw_segment *seg);
/* A front's private copy of the rules, re-read only when the master moved
 * the epoch on. Zero-initialise it. */
struct gw_net_view {
    int valid, n;
    uint64_t epoch;
    struct gw_net_rule rules[GW_NET_RULES];
};
/* The verdict for address a at now_us: 0 (no rule), GW_NET_ALLOW, or
 * GW_NET_BAN with *until_us the latest end of the bans covering it.
 * Lock-free: one acquire load when nothing changed. */
int gw_net_check(const struct gw_segment *seg, struct gw_net_view *v, const struct gw_addr *a,
                 uint64_t now_us, uint64_t *until_us);

#endif
