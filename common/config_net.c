/* config_net.c - the "ip" section's address keys (issue 18): which peers
 * are trusted proxies whose forwarding headers name the client
 * ("trusted_proxies", CIDR strings), the IPv6 prefix that one bucket
 * covers ("ipv6_prefix", default 64), and the listeners whose connections
 * begin with a PROXY protocol header ("proxy_protocol"). The section's "rate" is a plan's
 * (config_plans.c). */
#include "config_internal.h"

#include <stdio.h>
#include <string.h>

void gw__cfg_net_defaults(struct gw_config *cfg)
{
    cfg->ipv6_prefix = 64;
    cfg->n_trusted = 0;
    cfg->conns_per_address = 0;
    gw__cfg_plan_defaults(&cfg->ip_overflow, "ip.overflow");
}

/* "127.0.0.1:8081" or "[::1]:8081": 0, or -1. */
static int host_port(const char *s, struct gw_addr *a, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[') {
        if (colon[-1] != ']')
            return -1;
        h++;
        hl -= 2;
    } else if (memchr(s, ':', hl)) {
        return -1; /* IPv6 needs its brackets */
    }
    uint64_t p;
    if (gw__cfg_parse_count(colon + 1, 1, 65535, &p) != 0 || gw_addr_parse(h, hl, a) != 0)
        return -1;
    *port = (uint16_t)p;
    return 0;
}

static void parse_proxy_listeners(struct gw_cfg_cx *c, json_t *ip, struct gw_config *cfg)
{
    json_t *list = json_object_get(ip, "proxy_protocol");
    if (!list)
        return;
    if (!json_is_array(list) || json_array_size(list) > GW_MAX_LISTEN) {
        gw__cfg_bad(c, "ip.proxy_protocol", "expected an array of at most %d listen addresses",
                    GW_MAX_LISTEN);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach (list, i, v) {
        char p[PATH_LEN], q[96];
        gw__cfg_path_idx(p, "ip.proxy_protocol", i);
        int k = cfg->n_proxy_listen;
        if (!json_is_string(v) || host_port(json_string_value(v), &cfg->proxy_listen[k].addr,
                                            &cfg->proxy_listen[k].port) != 0) {
            gw__cfg_bad(c, p, "%s%s%sexpected \"IPv4:PORT\" or \"[IPv6]:PORT\"",
                        json_is_string(v) ? "\"" : "",
                        json_is_string(v) ? gw__cfg_shown(json_string_value(v), q) : "",
                        json_is_string(v) ? "\": " : "");
            continue;
        }
        cfg->n_proxy_listen++;
    }
}

/* ip.overflow_rate: windows as a plan's "rate" (same words, same errors). */
static void parse_overflow(struct gw_cfg_cx *c, json_t *ip, struct gw_config *cfg)
{
    json_t *list = json_object_get(ip, "overflow_rate");
    if (!list)
        return;
    if (!json_is_array(list) || json_array_size(list) > GW_RATE_CELLS) {
        gw__cfg_bad(c, "ip.overflow_rate", "expected an array of at most %d windows",
                    GW_RATE_CELLS);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach (list, i, v) {
        char p[PATH_LEN], q[96];
        gw__cfg_path_idx(p, "ip.overflow_rate", i);
        struct gw_window *w = &cfg->ip_overflow.windows[cfg->ip_overflow.n_windows];
        if (!json_is_string(v) || gw_window_parse(json_string_value(v), w) != 0) {
            gw__cfg_bad(c, p, "%s%s%sexpected \"N per second|minute|hour|day [burst M | moving]\"",
                        json_is_string(v) ? "\"" : "",
                        json_is_string(v) ? gw__cfg_shown(json_string_value(v), q) : "",
                        json_is_string(v) ? "\": " : "");
            continue;
        }
        cfg->ip_overflow.n_windows++;
    }
}

void gw__cfg_parse_net(struct gw_cfg_cx *c, json_t *ip, struct gw_config *cfg)
{
    parse_overflow(c, ip, cfg);
    (void)gw__cfg_get_int(c, ip, "ip", "ipv6_prefix", 1, 128, &cfg->ipv6_prefix);
    (void)gw__cfg_get_u32(c, ip, "ip", "connections_per_address", 0, 1000000, 0,
                          &cfg->conns_per_address);
    parse_proxy_listeners(c, ip, cfg);
    json_t *list = json_object_get(ip, "trusted_proxies");
    if (!list)
        return;
    if (!json_is_array(list)) {
        gw__cfg_bad(c, "ip.trusted_proxies", "expected an array of CIDR strings");
        return;
    }
    if (json_array_size(list) > GW_MAX_TRUSTED) {
        gw__cfg_bad(c, "ip.trusted_proxies", "%zu ranges: at most %d", json_array_size(list),
                    GW_MAX_TRUSTED);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach (list, i, v) {
        char p[PATH_LEN], why[160], q[96];
        gw__cfg_path_idx(p, "ip.trusted_proxies", i);
        if (!json_is_string(v)) {
            gw__cfg_bad(c, p, "expected a CIDR string such as \"10.0.0.0/8\"");
            continue;
        }
        const char *s = json_string_value(v);
        if (gw_cidr_parse(s, &cfg->trusted[cfg->n_trusted], why, sizeof(why)) != 0) {
            gw__cfg_bad(c, p, "\"%s\": %s", gw__cfg_shown(s, q), why);
            continue;
        }
        cfg->n_trusted++;
    }
}
