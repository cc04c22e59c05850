/* front_addr.c - who is calling, in a front (issue 18): the client behind
 * a PROXY protocol header on listeners that enable it (ip.proxy_protocol),
 * then behind a trusted proxy's Forwarded / X-Forwarded-For
 * (ip.trusted_proxies), and the key its limits live under (IPv6 by
 * ip.ipv6_prefix). The parsers are common/netaddr.c and proxyproto.c; this
 * file applies them to a connection and answers what they refuse. */
#include "front_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int trusted(const struct gw_config *cfg, const struct gw_addr *a)
{
    for (int i = 0; i < cfg->n_trusted; i++)
        if (gw_cidr_contains(&cfg->trusted[i], a))
            return 1;
    return 0;
}

int gw__front_client(struct conn *c, const struct gw_config *cfg, struct gw_addr *client,
                     char key[GW_ADDR_STRLEN])
{
    char why[200];
    if (trusted(cfg, &c->peer) && (c->xff_long || c->fwd_long)) {
        snprintf(why, sizeof(why), "%s: longer than %d bytes",
                 c->fwd_long ? "Forwarded" : "X-Forwarded-For", FWD_HDR_MAX);
        gw__conn_error(c, 400, "invalid_request_error", "malformed_request", why, NULL, NULL);
        return -1;
    }
    if (gw_fwd_client(&c->peer, cfg->trusted, cfg->n_trusted, c->has_xff ? c->xff : NULL,
                      c->xff_len, c->has_fwd ? c->fwd : NULL, c->fwd_len, client, why,
                      sizeof(why)) != 0) {
        gw__conn_error(c, 400, "invalid_request_error", "malformed_request", why, NULL, NULL);
        return -1;
    }
    gw_addr_format(client, c->ip);
    gw_addr_key(client, cfg->ipv6_prefix, key);
    return 0;
}

int gw__front_who(struct front *f, struct conn *c, uint64_t now, struct gw_addr *client,
                  char key[GW_ADDR_STRLEN], int *allowed)
{
    uint64_t until = 0;
    *allowed = 0;
    if (gw__front_client(c, f->cfg, client, key) != 0)
        return -1;
    int rule = gw_net_check(&f->seg, &f->nets, client, now, &until);
    if (rule == GW_NET_BAN) {
        gw_metrics_refusal(&f->seg, GW_REF_BANNED);
        gw__conn_error(c, 403, "permission_error", "banned", "this address range is banned", NULL,
                       NULL);
        return -1;
    }
    *allowed = rule == GW_NET_ALLOW;
    return 0;
}

void gw__front_mark_proxy_listeners(struct front *f)
{
    for (int i = 0; i < f->n_listeners; i++) {
        struct sockaddr_storage ss;
        int sl = sizeof(ss);
        struct gw_addr a = {{0}};
        uint16_t port = 0;
        f->listener_proxy[i] = 0;
        if (uv_tcp_getsockname(&f->listeners[i], (struct sockaddr *)&ss, &sl) != 0)
            continue;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
            a.b[10] = a.b[11] = 0xff;
            memcpy(a.b + 12, &s4->sin_addr, 4);
            port = ntohs(s4->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
            memcpy(a.b, &s6->sin6_addr, 16);
            port = ntohs(s6->sin6_port);
        }
        for (int k = 0; k < f->cfg->n_proxy_listen; k++)
            if (f->cfg->proxy_listen[k].port == port &&
                memcmp(&f->cfg->proxy_listen[k].addr, &a, sizeof(a)) == 0)
                f->listener_proxy[i] = 1;
    }
}

/* The connection is refused: its first bytes were no valid PROXY header. */
static int refuse(struct conn *c, const char *why)
{
    free(c->proxy_buf);
    c->proxy_buf = NULL;
    c->busy = 1;
    c->close_after_write = 1;
    gw__conn_error(c, 400, "invalid_request_error", "malformed_request", why, NULL, NULL);
    return -1;
}

int gw__conn_proxy(struct conn *c, const char *data, size_t len, size_t *used)
{
    size_t room = GW_PROXY_V2_MAX - c->proxy_len, take = len < room ? len : room;
    memcpy(c->proxy_buf + c->proxy_len, data, take);
    c->proxy_len += take;
    struct gw_addr src;
    int has = 0;
    char why[200];
    int n = gw_proxy_parse(c->proxy_buf, c->proxy_len, &src, &has, why, sizeof(why));
    if (n < 0)
        return refuse(c, why);
    if (n == 0) {
        if (c->proxy_len == GW_PROXY_V2_MAX) /* cannot happen: each form is bounded below this */
            return refuse(c, "PROXY header longer than accepted");
        return 0;
    }
    if (has && !trusted(c->front->cfg, &c->peer)) {
        char peer[GW_ADDR_STRLEN];
        gw_addr_format(&c->peer, peer);
        snprintf(why, sizeof(why), "PROXY header from %s, which is not in ip.trusted_proxies",
                 peer);
        return refuse(c, why);
    }
    if (has) {
        c->peer = src; /* the proxied client is this connection's peer from now on */
        gw_addr_format(&c->peer, c->ip);
    }
    /* the header ended n bytes into the buffer: that many of this read's
     * bytes belong to it, the rest is HTTP */
    *used = take - (c->proxy_len - (size_t)n);
    free(c->proxy_buf);
    c->proxy_buf = NULL;
    return 1;
}

/* ------------------------------------------- connections per address */

/* Open connections per client key, in this front's own memory (one
 * thread): open addressing with linear probing, sized at start to twice
 * connections_per_front (at least 64), so it never fills while the front
 * holds at most that many connections; an entry whose count drops to zero
 * is removed by backward shift, so there are no tombstones. */
struct conn_count {
    struct gw_addr key;
    uint32_t n; /* 0 = empty */
};

static uint32_t cc_home(const struct front *f, const struct gw_addr *k)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over the 16 bytes */
    for (int i = 0; i < 16; i++)
        h = (h ^ k->b[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ h >> 32) & f->cc_mask;
}

static int cc_init(struct front *f)
{
    uint32_t want = f->cfg->connections_per_front * 2u, size = 64;
    while (size < want && size < (1u << 21))
        size <<= 1;
    f->cc = calloc(size, sizeof(*f->cc));
    if (!f->cc)
        return -1;
    f->cc_mask = size - 1;
    return 0;
}

int gw__front_conn_count(struct front *f, struct conn *c)
{
    uint32_t cap = f->cfg->conns_per_address;
    if (cap == 0 || trusted(f->cfg, &c->peer))
        return 0;
    if (!f->cc && cc_init(f) != 0)
        return -1; /* out of memory: fail closed */
    struct gw_addr k;
    gw_addr_prefix(&c->peer, f->cfg->ipv6_prefix, &k);
    c->conn_key = k; /* the socket's peer: a PROXY header does not move it */
    for (uint32_t i = cc_home(f, &k), step = 0; step <= f->cc_mask;
         i = (i + 1) & f->cc_mask, step++) {
        struct conn_count *e = &f->cc[i];
        if (e->n && memcmp(&e->key, &k, sizeof(k)) != 0)
            continue;
        if (e->n >= cap)
            return -1;
        e->key = k;
        e->n++;
        c->conn_counted = 1;
        return 0;
    }
    return -1; /* full (a reload raised connections_per_front): fail closed */
}

void gw__front_conn_uncount(struct front *f, struct conn *c)
{
    if (!c->conn_counted || !f->cc)
        return;
    c->conn_counted = 0;
    struct gw_addr k = c->conn_key;
    uint32_t i = cc_home(f, &k);
    for (uint32_t step = 0; f->cc[i].n && step <= f->cc_mask; i = (i + 1) & f->cc_mask, step++)
        if (memcmp(&f->cc[i].key, &k, sizeof(k)) == 0)
            break;
    if (!f->cc[i].n || memcmp(&f->cc[i].key, &k, sizeof(k)) != 0 || --f->cc[i].n > 0)
        return;
    /* backward shift: pull later entries of the run into the hole when
     * their home does not lie cyclically in (hole, j] */
    uint32_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & f->cc_mask;
        if (!f->cc[j].n)
            break;
        uint32_t h = cc_home(f, &f->cc[j].key);
        int stays = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
        if (!stays) {
            f->cc[hole] = f->cc[j];
            hole = j;
        }
    }
    f->cc[hole].n = 0;
}
