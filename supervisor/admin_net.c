/* admin_net.c - the admin socket's address-range commands (issue 18):
 * bans and allow-list entries by CIDR with a TTL, kept in the segment's
 * rules region (common/netrules.c), which the fronts check before any
 * token work.
 *   ban   {"kind":"cidr","id":RANGE,"ttl_s":N}   unban {"kind":"cidr","id":RANGE}
 *   allow {"id":RANGE,"ttl_s":N}                 unallow {"id":RANGE}
 *   net.list                                     (operator level)
 * and the revocation of a token by its `jti`, kept until the token's exp:
 *   token.revoke {"jti":ID,"exp":UNIX_SECONDS}
 * The master is the one writer of both regions; see netrules.c and jti.c
 * for who repairs what when it dies mid-write. */
#include "admin_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NET_TTL_MAX_S (366ull * 86400) /* as the account bans: at most a year */

static json_t *nfail(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *nfail(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return gw__admin_error(code, msg);
}

/* "id" as a range; NULL and *err on a missing or bad one. */
static int range_arg(json_t *req, struct gw_cidr *c, json_t **err)
{
    json_t *v = json_object_get(req, "id");
    if (!v) {
        *err = nfail("missing_argument", "\"id\": missing (a CIDR range such as 10.0.0.0/8)");
        return -1;
    }
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        *err = nfail("bad_argument", "\"id\": expected a CIDR range such as 10.0.0.0/8");
        return -1;
    }
    char why[160];
    const char *s = json_string_value(v);
    if (gw_cidr_parse(s, c, why, sizeof(why)) != 0) {
        char q[72];
        snprintf(q, sizeof(q), "%.64s%s", s, strlen(s) > 64 ? "..." : "");
        for (char *p = q; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == '"')
                *p = '?';
        *err = nfail("bad_argument", "\"id\": \"%s\": %s", q, why);
        return -1;
    }
    return 0;
}

static int ttl_arg(json_t *req, uint64_t *ttl, json_t **err)
{
    json_t *v = json_object_get(req, "ttl_s");
    if (!v) {
        *err = nfail("missing_argument", "\"ttl_s\": missing (an integer)");
        return -1;
    }
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 1 || (uint64_t)x > NET_TTL_MAX_S) {
        *err = nfail("bad_argument", "\"ttl_s\": expected an integer in [1, %llu]",
                     (unsigned long long)NET_TTL_MAX_S);
        return -1;
    }
    *ttl = (uint64_t)x;
    return 0;
}

static const char *kind_name(int kind)
{
    return kind == GW_NET_BAN ? "ban" : "allow";
}

json_t *gw__admin_net_set(struct gw_admin *a, json_t *req, uid_t uid, int kind)
{
    json_t *err = NULL;
    struct gw_cidr c;
    uint64_t ttl;
    if (range_arg(req, &c, &err) != 0 || ttl_arg(req, &ttl, &err) != 0)
        return err;
    uint64_t now = gw_now_us();
    struct gw_net_rule r = {
        .kind = kind, .cidr = c, .until_us = now + ttl * 1000000ull, .created_us = now};
    char txt[GW_ADDR_STRLEN];
    gw_cidr_format(&c, txt);
    int rc = gw_net_set(a->seg, &r, now);
    if (rc == GW_EFULL)
        return nfail("failed", "%s %s: %d range rules are in force already (the most); lift one",
                     kind_name(kind), txt, GW_NET_RULES);
    if (rc != 0)
        return nfail("failed", "%s %s: %s", kind_name(kind), txt, gw_strerror(rc));
    say("uid %u: %s cidr %s for %" PRIu64 " s", (unsigned)uid, kind_name(kind), txt, ttl);
    return json_pack("{s:b,s:s,s:s,s:I,s:I}", "ok", 1, "kind", "cidr", "id", txt, "ttl_s",
                     (json_int_t)ttl, "until_us", (json_int_t)r.until_us);
}

json_t *gw__admin_net_remove(struct gw_admin *a, json_t *req, uid_t uid, int kind)
{
    json_t *err = NULL;
    struct gw_cidr c;
    if (range_arg(req, &c, &err) != 0)
        return err;
    char txt[GW_ADDR_STRLEN];
    gw_cidr_format(&c, txt);
    if (gw_net_remove(a->seg, kind, &c, gw_now_us()) != 0)
        return nfail("not_found", "cidr %s is not %s", txt,
                     kind == GW_NET_BAN ? "banned" : "allowed");
    say("uid %u: un%s cidr %s", (unsigned)uid, kind_name(kind), txt);
    return json_pack("{s:b,s:s,s:s}", "ok", 1, "kind", "cidr", "id", txt);
}

json_t *gw__admin_cmd_allow(struct gw_admin *a, json_t *req, uid_t uid)
{
    return gw__admin_net_set(a, req, uid, GW_NET_ALLOW);
}

json_t *gw__admin_cmd_unallow(struct gw_admin *a, json_t *req, uid_t uid)
{
    return gw__admin_net_remove(a, req, uid, GW_NET_ALLOW);
}

json_t *gw__admin_cmd_net_list(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    (void)uid;
    static struct gw_net_rule rules[GW_NET_RULES]; /* the master has one thread */
    uint64_t now = gw_now_us();
    int n = gw_net_list(a->seg, now, rules, GW_NET_RULES);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        char txt[GW_ADDR_STRLEN];
        gw_cidr_format(&rules[i].cidr, txt);
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:I,s:I}", "kind", kind_name(rules[i].kind), "cidr", txt,
                           "until_us", (json_int_t)rules[i].until_us, "ttl_left_s",
                           (json_int_t)((rules[i].until_us - now + 999999) / 1000000)));
    }
    return json_pack("{s:b,s:o}", "ok", 1, "rules", arr);
}

json_t *gw__admin_cmd_token_revoke(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *j = json_object_get(req, "jti"), *e = json_object_get(req, "exp");
    if (!j)
        return nfail("missing_argument", "\"jti\": missing (the token's jti, a string)");
    if (!json_is_string(j) || json_string_length(j) == 0 || json_string_length(j) > 255)
        return nfail("bad_argument", "\"jti\": expected a string of 1 to 255 bytes");
    if (!e)
        return nfail("missing_argument", "\"exp\": missing (the token's exp, Unix seconds)");
    uint64_t now = gw_now_us(), now_s = now / 1000000ull;
    json_int_t x = json_is_integer(e) ? json_integer_value(e) : -1;
    if (x <= (json_int_t)now_s || (uint64_t)x > now_s + NET_TTL_MAX_S)
        return nfail("bad_argument",
                     "\"exp\": expected Unix seconds after now and within a year (%llu..%llu)",
                     (unsigned long long)now_s + 1, (unsigned long long)(now_s + NET_TTL_MAX_S));
    /* kept past exp by the leeway, during which the token is still taken */
    uint64_t until = ((uint64_t)x + a->host.config(a->host.ctx)->leeway_s + 1) * 1000000ull;
    int rc =
        gw_jti_revoke(a->seg, gw_jti_hash(json_string_value(j), json_string_length(j)), until, now);
    if (rc == GW_EFULL)
        return nfail("failed", "%d revocations are in force already (the most)", GW_JTI_MAX);
    if (rc != 0)
        return nfail("failed", "token.revoke: %s", gw_strerror(rc));
    say("uid %u: token revoked (jti of %zu bytes) until %llu", (unsigned)uid, json_string_length(j),
        (unsigned long long)(until / 1000000ull));
    return json_pack("{s:b,s:s,s:I,s:I}", "ok", 1, "jti", json_string_value(j), "until_us",
                     (json_int_t)until, "revoked", (json_int_t)gw_jti_count(a->seg, now));
}
