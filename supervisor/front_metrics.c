/* front_metrics.c - GET /metrics in a front: which listener may serve it,
 * the bearer token it may require, and the answer (the node's totals,
 * metrics.c, then the per-tenant series, metrics_tenants.c).
 *
 * With metrics.listen the master opens that address and every front
 * accepts on it beside the public listeners (docs/CONFIG.md, "metrics"):
 * there /metrics is the only route, and on the public listeners /metrics
 * does not exist (404), so tenant names in its labels never reach the
 * serving port. With metrics.bearer_token_file every /metrics request,
 * on whichever listener, needs `Authorization: Bearer <that token>`.
 */
#include "front_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int gw__front_listener_route(struct conn *c, int st)
{
    /* the socket the front holds decides, not the config it reloaded:
     * metrics.listen changes only with a restart (the master says so) */
    if (!c->front->has_metrics)
        return st;
    enum gw_route r;
    int is_metrics =
        gw_route_match("GET", c->url, c->url_len, &r, NULL) == 0 && r == GW_ROUTE_METRICS;
    if (c->metrics_conn ? !is_metrics : is_metrics) {
        c->route = 0; /* counted as "other", not as /metrics */
        return 404;
    }
    return st;
}

/* 1 when the request carries the configured token (or none is asked);
 * else answers 401 and returns 0. The comparison takes the same time
 * whatever bytes differ. */
static int metrics_authorized(struct conn *c)
{
    const struct gw_metrics_cfg *m = &c->front->cfg->metrics;
    if (m->token_len == 0)
        return 1;
    const char *t = c->authz + 7;
    size_t n = c->authz_len >= 7 ? c->authz_len - 7 : 0;
    int bearer = c->authz_len >= 7 && strncasecmp(c->authz, "Bearer ", 7) == 0;
    while (bearer && n && (*t == ' ' || *t == '\t'))
        t++, n--;
    while (bearer && n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    const char *hdr = "WWW-Authenticate: Bearer realm=\"metrics\"\r\n";
    if (!bearer || n == 0) {
        gw__conn_error(c, 401, "authentication_error", "invalid_token",
                       "/metrics requires Authorization: Bearer <metrics token>", NULL, hdr);
        return 0;
    }
    unsigned char diff = n != m->token_len;
    for (size_t i = 0; i < m->token_len; i++)
        diff |= (unsigned char)(m->token[i] ^ (i < n ? t[i] : 0));
    if (diff) {
        gw__conn_error(c, 401, "authentication_error", "invalid_token",
                       "/metrics: wrong bearer token", NULL, hdr);
        return 0;
    }
    return 1;
}

void gw__front_metrics(struct conn *c)
{
    struct front *f = c->front;
    if (!metrics_authorized(c))
        return;
    char *node = NULL, *ten = NULL;
    size_t nlen = 0, tlen = 0;
    if (gw_metrics_render(&f->seg, &node, &nlen) != 0 ||
        gw_metrics_render_tenants(&f->seg, &f->cfg->metrics, &ten, &tlen) != 0) {
        free(node);
        gw__conn_error(c, 503, "server_error", "overloaded", "out of memory", NULL,
                       "Retry-After: 1\r\n");
        return;
    }
    char *all = realloc(node, nlen + tlen);
    if (!all) {
        free(node);
        free(ten);
        gw__conn_error(c, 503, "server_error", "overloaded", "out of memory", NULL,
                       "Retry-After: 1\r\n");
        return;
    }
    memcpy(all + nlen, ten, tlen);
    free(ten);
    gw__conn_respond(c, 200, "text/plain; version=0.0.4", all, nlen + tlen, NULL);
    free(all);
}
