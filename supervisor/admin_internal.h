/* admin_internal.h - what the admin socket's two halves share: admin.c
 * (the socket, its clients and their levels) and admin_cmds.c (the
 * commands). Private to supervisor/. */
#ifndef GW_ADMIN_INTERNAL_H
#define GW_ADMIN_INTERNAL_H

#include "gw_supervisor.h"

#include <jansson.h>
#include <sys/socket.h>
#include <sys/un.h>

#define MAX_CLIENTS 16
#define LINE_MAX_BYTES 65536
#define MAX_WORKERS 256 /* drain requests remembered per worker index */

struct client {
    int fd;    /* -1: unused */
    int level; /* GW_ADMIN_* */
    uid_t uid;
    char in[LINE_MAX_BYTES];
    size_t in_len;
    char *out; /* pending response bytes */
    size_t out_len, out_off;
    int closing; /* close once out is flushed */
    uint64_t last_ns;
};

struct gw_admin {
    struct gw_admin_host host;
    struct gw_segment *seg;
    int lfd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    uint64_t started_ns;
    struct client cl[MAX_CLIENTS];
    unsigned char drained[MAX_WORKERS]; /* worker index -> drain asked */
};

#define say(...) gw_log("master: admin", __VA_ARGS__)

/* admin_cmds.c */
/* {"ok":false,"error":{"code":code,"message":message}} */
json_t *gw__admin_error(const char *code, const char *message);
/* The response to one request line from a client of `level` (never NULL
 * but when out of memory). */
json_t *gw__admin_dispatch(struct gw_admin *a, const char *line, size_t len, int level, uid_t uid);
/* r as one compact line (key order kept), malloc'd; consumes r. */
char *gw__admin_dump(json_t *r);
/* Sets each running worker's drain word from a->drained. */
void gw__admin_apply_drains(struct gw_admin *a);

/* The "farming" object of tenant.show and ip.show: a record's state under
 * limits l. */
json_t *gw__admin_farming_json(const struct gw_farm_state *st, const struct gw_farm_limits *l);

/* admin_farm_ip.c: ip.show and ip.clear-farming, an address's
 * prompt-farming record (common/farm_ip.c) */
json_t *gw__admin_cmd_ip_show(struct gw_admin *a, json_t *req, uid_t uid);
json_t *gw__admin_cmd_ip_clear_farming(struct gw_admin *a, json_t *req, uid_t uid);

/* admin_net.c: the address-range rules (ban/unban with kind "cidr",
 * allow, unallow, net.list) */
json_t *gw__admin_net_set(struct gw_admin *a, json_t *req, uid_t uid, int kind);
json_t *gw__admin_net_remove(struct gw_admin *a, json_t *req, uid_t uid, int kind);
json_t *gw__admin_cmd_allow(struct gw_admin *a, json_t *req, uid_t uid);
json_t *gw__admin_cmd_unallow(struct gw_admin *a, json_t *req, uid_t uid);
json_t *gw__admin_cmd_net_list(struct gw_admin *a, json_t *req, uid_t uid);
json_t *gw__admin_cmd_token_revoke(struct gw_admin *a, json_t *req, uid_t uid);

/* admin_apikeys.c: apikey.create, apikey.list, apikey.revoke (issue 18) */
json_t *gw__admin_cmd_apikey_create(struct gw_admin *a, json_t *req, uid_t uid);
json_t *gw__admin_cmd_apikey_list(struct gw_admin *a, json_t *req, uid_t uid);
json_t *gw__admin_cmd_apikey_revoke(struct gw_admin *a, json_t *req, uid_t uid);

/* admin_cluster.c: `cluster`, the farm as this node sees it */
json_t *gw__admin_cmd_cluster(struct gw_admin *a, json_t *req, uid_t uid);

/* admin_tenants.c: `tenant.top`, every tenant the segment knows */
json_t *gw__admin_cmd_tenant_top(struct gw_admin *a, json_t *req, uid_t uid);

#endif
