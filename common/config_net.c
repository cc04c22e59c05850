/* config_net.c - the "ip" section's address keys (issue 18): which peers
 * are trusted proxies whose forwarding headers name the client
 * ("trusted_proxies", CIDR strings) and the IPv6 prefix that one bucket
 * covers ("ipv6_prefix", default 64). The section's "rate" is a plan's
 * (config_plans.c). */
#include "config_internal.h"

#include <stdio.h>
#include <string.h>

void gw__cfg_net_defaults(struct gw_config *cfg)
{
    cfg->ipv6_prefix = 64;
    cfg->n_trusted = 0;
}

void gw__cfg_parse_net(struct gw_cfg_cx *c, json_t *ip, struct gw_config *cfg)
{
    (void)gw__cfg_get_int(c, ip, "ip", "ipv6_prefix", 1, 128, &cfg->ipv6_prefix);
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
