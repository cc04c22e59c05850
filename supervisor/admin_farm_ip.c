/* admin_farm_ip.c - the admin socket's commands on one client address's
 * prompt-farming record (common/farm_ip.c; docs/ADMIN.md):
 *   ip.show {"id":ADDRESS}            (operator level) the address's ip
 *                                     account, ban and farming state
 *   ip.clear-farming {"id":ADDRESS}   takes it off the ladder and forgets
 *                                     its evidence (the totals stay)
 * ADDRESS is keyed as the fronts key it (IPv6 by ip.ipv6_prefix). */
#include "admin_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static json_t *ifail(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *ifail(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return gw__admin_error(code, msg);
}

/* "id" as the fronts' address key; -1 and *err on a missing or bad one. */
static int addr_arg(struct gw_admin *a, json_t *req, char key[GW_ADDR_STRLEN], json_t **err)
{
    json_t *v = json_object_get(req, "id");
    if (!v) {
        *err = ifail("missing_argument", "\"id\": missing (an IPv4 or IPv6 address)");
        return -1;
    }
    const char *s = json_string_value(v);
    struct gw_addr ad;
    if (!s || strlen(s) != json_string_length(v) || gw_addr_parse(s, strlen(s), &ad) != 0) {
        char q[72] = "(not a string)";
        if (s) {
            snprintf(q, sizeof(q), "\"%.64s%s\"", s, strlen(s) > 64 ? "..." : "");
            for (char *p = q + 1; p[1]; p++)
                if ((unsigned char)*p < 0x20 || *p == '"')
                    *p = '?';
        }
        *err = ifail("bad_argument", "\"id\": %s is not an IPv4 or IPv6 address", q);
        return -1;
    }
    gw_addr_key(&ad, a->host.config(a->host.ctx)->ipv6_prefix, key); /* front.c's key */
    return 0;
}

static json_t *ip_json(struct gw_admin *a, const char *key)
{
    const struct gw_config *cfg = a->host.config(a->host.ctx);
    uint64_t now = gw_now_us();
    struct gw_acct acct;
    struct gw_farm_state st = {0};
    int have = gw_ledger_get(a->seg, GW_KIND_IP, key, strlen(key), 0, now, &acct) == 0;
    int rec = have && gw_farm_ip_get(a->seg, acct, now, &st) == 0;
    uint64_t ban = have ? gw_ledger_banned_until(a->seg, acct, now) : 0;
    json_t *o =
        json_pack("{s:b,s:s,s:b,s:b}", "ok", 1, "ip", key, "account", have, "farming_record", rec);
    json_object_set_new(o, "banned_until_us", ban ? json_integer((json_int_t)ban) : json_null());
    json_object_set_new(o, "farming", gw__admin_farming_json(&st, &cfg->ip.farm));
    return o;
}

json_t *gw__admin_cmd_ip_show(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)uid;
    json_t *err = NULL;
    char key[GW_ADDR_STRLEN];
    if (addr_arg(a, req, key, &err) != 0)
        return err;
    return ip_json(a, key);
}

json_t *gw__admin_cmd_ip_clear_farming(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL;
    char key[GW_ADDR_STRLEN];
    if (addr_arg(a, req, key, &err) != 0)
        return err;
    struct gw_acct acct;
    if (gw_ledger_get(a->seg, GW_KIND_IP, key, strlen(key), 0, gw_now_us(), &acct) != 0)
        return ifail("not_found", "ip %s has no account (nothing to clear)", key);
    int rc = gw_farm_ip_clear(a->seg, acct);
    if (rc == -ENOENT)
        return ifail("not_found", "ip %s has no prompt-farming record (nothing to clear)", key);
    if (rc != 0)
        return ifail("failed", "ip %s: %s", key, gw_strerror(rc));
    say("uid %u: ip %s: prompt-farming state cleared", (unsigned)uid, key);
    return ip_json(a, key);
}
