/* front_internal.h - what http.c, front.c, front_loop.c and the other
 * front_*.c files share inside a front process. Private to supervisor/. */
#ifndef GW_FRONT_INTERNAL_H
#define GW_FRONT_INTERNAL_H

#include "gw_supervisor.h"

#include <http_parser.h>
#include <uv.h>

enum { HF_OTHER = 0, HF_AUTHZ, HF_XFF, HF_FWD };

#define FWD_HDR_MAX 2048 /* bytes kept of X-Forwarded-For and of Forwarded */

struct job;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    http_parser parser;
    struct front *front;
    int handles_open;
    struct gw_addr peer;         /* the TCP peer, fixed for the connection */
    char ip[GW_ADDR_STRLEN - 8]; /* the client: the peer, or (per request) who a trusted
                                proxy's forwarding header names (front.c) */
    /* the request being read */
    char url[2048];
    size_t url_len;
    char authz[8448]; /* "Bearer " + an 8 KiB token; longer is refused */
    size_t authz_len;
    /* forwarding headers, read only when the peer is a trusted proxy; several
     * lines of one are joined with ", " (RFC 9110 5.3) */
    char xff[FWD_HDR_MAX], fwd[FWD_HDR_MAX];
    size_t xff_len, fwd_len;
    uint8_t has_xff, has_fwd, xff_long, fwd_long; /* present; longer than FWD_HDR_MAX */
    /* a PROXY protocol header still to come (front_addr.c): its bytes so far */
    uint8_t *proxy_buf; /* GW_PROXY_V2_MAX bytes while waiting, else NULL */
    size_t proxy_len;
    uint8_t conn_counted;    /* counted in the front's per-address table (front_addr.c) */
    uint8_t metrics_conn;    /* accepted on metrics.listen's socket (front_metrics.c) */
    struct gw_addr conn_key; /* ... under this key */
    char field_name[64];
    size_t field_len;
    int field, in_value;
    size_t header_bytes;
    char *body;
    size_t body_len, body_cap;
    char *pending; /* bytes of a pipelined next request */
    size_t pending_len;
    int method;
    int got_headers, got_message, too_large;
    int keep_alive, head_only;
    /* life */
    int busy; /* a request is being answered */
    int idle; /* between requests (keep-alive clock) */
    int closing, close_after_write, writes_pending, streaming;
    struct job *job;
    struct parked *parked; /* waiting for the farm's lease (front_cluster.c) */
    /* the request as /metrics and the access log see it (reset per request) */
    int route;                  /* enum gw_route, 0 before or without one */
    uint64_t start_ns;          /* CLOCK_MONOTONIC at its first byte */
    char acc_id[40];            /* request id once admitted, else "" */
    char acc_tenant[64];        /* tenant once authenticated, else "" */
    char acc_user[GW_USER_MAX]; /* the body's `user` once parsed, else "" */
    uint64_t acc_tokens;        /* generated tokens */
    uint64_t acc_device_ns;     /* device time charged */
    /* the API key's id (never the key) once its shape was checked, else "" */
    char acc_key[GW_APIKEY_ID_LEN + 1];
    char rbuf[65536];
};

struct front {
    const char *config_path;
    struct gw_config *cfg;
    struct gw_segment seg;
    struct gw_auth *auth;
    struct gw_apikeys *keys;  /* this front's copy of the API keys file (apikeys.c) */
    struct gw_unbounded *unb; /* flags prompts asking for endless output */
    const struct gw_fds *fds;
    int index;
    uv_loop_t *loop;
    uv_tcp_t listeners[GW_MAX_LISTEN];
    int n_listeners;
    uv_tcp_t metrics_listener; /* metrics.listen (fds->metrics), when has_metrics */
    int has_metrics;
    uv_poll_t wake;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t tick;
    int draining;
    uint64_t drain_deadline_ns;
    uint32_t n_conns;
    struct job *jobs;      /* requests with a slot, until settled and released */
    struct parked *parked; /* requests waiting for the farm's lease */
    uint64_t next_id;
    uint64_t id_seed;
    uint64_t limits_epoch;                 /* gw_limits_epoch last applied (+1; 0 = never) */
    struct gw_plan *file_plans;            /* cfg->tenants[i].plan as the file says */
    uint64_t model_created_s;              /* GET /v1/models "created": the model file's mtime */
    struct gw_net_view nets;               /* this front's copy of the address-range rules */
    uint8_t listener_proxy[GW_MAX_LISTEN]; /* 1: connections begin with a PROXY header */
    struct gw_jti_view jtis;               /* this front's copy of the revoked token ids */
    struct conn_count *cc;                 /* open connections per client key (front_addr.c) */
    uint32_t cc_mask;                      /* table size - 1 (a power of two) */
};

/* An admitted request, from its slot's queueing until the slot is released
 * (front.c creates it, front_jobs.c sees it through). */
struct job {
    struct job *next;
    struct front *f;
    struct conn *c; /* NULL once the client is gone */
    struct gw_slot_ref ref;
    enum gw_route route;
    int stream;
    size_t sent;
    int sent_first;
    char id[40];
    uint64_t created_s;
    uint64_t admitted_ns;   /* CLOCK_MONOTONIC at admission (e2e histogram) */
    char rate_hdr[384];     /* RateLimit headers for the success response */
    int include_usage;      /* stream_options.include_usage: a usage chunk before [DONE] */
    char user[GW_USER_MAX]; /* the body's `user` ("" none): the audit line of a kill */
    struct gw_acct tenant;  /* for the output_tokens charge at the end */
    int has_output;         /* the plan's output_tokens window, as admitted */
    struct gw_window output;
    int farm_out; /* GW_FARM_OUT_*: where the farm's output token came from */
};

/* Where a request's farm-wide output token came from (front_cluster.c):
 * none (no farm window), the node's lease, or a fail-open admission. */
enum { GW_FARM_OUT_NONE = 0, GW_FARM_OUT_LEASE = 1, GW_FARM_OUT_OPEN = 2 };

/* One request on its way through admission: what each step of generate
 * found, for the steps after it. */
struct admission {
    struct conn *c;
    struct front *f;
    struct gw_segment *seg;
    const struct gw_config *cfg;
    enum gw_route route;
    uint64_t now, admitted_ns;
    /* the rate cells asked for; after step 3 items[0] is the tenant's first
     * window (its RateLimit headers) */
    struct gw_admit_item items[3 * GW_RATE_CELLS];
    struct gw_principal who;
    const struct gw_plan *plan;
    struct gw_acct tenant, global;
    struct gw_gen_request rq; /* from step 4 on: freed by generate */
    uint32_t max_tokens;
    uint64_t upt;
    struct gw_slot_ref ref;
    /* the farm's GPU lease (front_cluster.c): GPU-us taken from it and not
     * yet bound to the slot (admit_money binds them), and whether the step
     * is behind us (taken, admitted fail-open, or no farm budget) */
    uint64_t farm_gpu;
    int gpu_passed;
    /* the same for the node's global pool when it has a budget (a farm-wide
     * account too), and whether the rate steps (tenant, global pool) are
     * behind us */
    uint64_t farm_ggpu;
    int ggpu_passed;
    int rate_passed, grate_passed;
    /* the farm's output-token lease: where the request's token came from
     * (GW_FARM_OUT_*, the job takes it over) and whether the step is behind
     * us */
    int farm_out;
    int out_passed;
    /* the client's ip account from step 1, judged by ip.farming when
     * ip_farm (not an allow entry, not an overflow bucket) */
    struct gw_acct ip;
    int ip_farm;
    char ip_key[GW_ADDR_STRLEN];
};

/* A request parked for the farm's lease (front_cluster.c): for a request
 * token (before the body is read) or for its GPU-us (after). */
enum { GW_PARK_RATE = 0, GW_PARK_GPU = 1, GW_PARK_OUT = 2, GW_PARK_GRATE = 3, GW_PARK_GGPU = 4 };
struct parked {
    struct parked *next;
    struct admission a;
    uint64_t deadline_ns; /* CLOCK_MONOTONIC: the plan's fail mode applies after */
    int stage;            /* GW_PARK_* */
    uint64_t gpu_us;      /* GW_PARK_GPU: the reservation it waits for */
};

/* http.c */
/* Feeds data to c's parser with the front's callbacks and limits, and
 * nothing else: no I/O, no response (c->timer must be initialised: the body
 * clock is started when the headers are in). Returns 0 when more bytes are
 * needed; 1 when a complete request is in c (method, url, authz, body) and
 * the *used bytes before the rest, which belong to the next request; or the
 * status the front answers: 400 (malformed), 413 (body too large), 431
 * (headers too large). The fuzz target tests/fuzz/fuzz_http.c drives it. */
int gw__conn_parse(struct conn *c, const char *data, size_t len, size_t *used);
void gw__front_on_connection(uv_stream_t *server, int status);
void gw__conn_write(struct conn *c, const char *data, size_t len);
void gw__conn_respond(struct conn *c, int status, const char *ctype, const char *body, size_t len,
                      const char *extra);
void gw__conn_error(struct conn *c, int status, const char *type, const char *code,
                    const char *message, const char *param, const char *extra);
void gw__conn_stream_begin(struct conn *c, const char *extra);
void gw__conn_stream_end(struct conn *c);
void gw__conn_request_done(struct conn *c);
void gw__conn_close(struct conn *c);
void gw__conn_on_timeout(uv_timer_t *t);

/* front.c: what a request means (routing) and who pays for it (admission) */
void gw__front_request(struct conn *c); /* a complete request is in c */

/* front_loop.c: the process (event loop, tick, drain, reload) */
/* A line in the log as "front <index>". */
void gw__front_log(const struct front *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* front_metrics.c: the route status st (gw_route_match's) as c's listener
 * allows it: 404 for anything but /metrics on metrics.listen's socket, and
 * for /metrics on the public ones when metrics.listen is set. */
int gw__front_listener_route(struct conn *c, int st);
/* GET /metrics: the bearer token when one is configured (401 otherwise),
 * then the node's and the tenants' series. */
void gw__front_metrics(struct conn *c);
/* Admission from step 4 (the body) on. */
void gw__front_generate_rest(struct admission *a);

/* front_cluster.c: the farm's unit of a request (docs/ARCHITECTURE.md,
 * "The farm"). Step 3b of admission: 0 to go on (a token of the node's
 * lease taken, or no farm, or admitted fail-open), -1 when it answered (429
 * exhausted farm-wide, 503 budget_unavailable), 1 when the request is
 * parked until the agent brings a lease; it then resumes through
 * gw__front_generate_rest or is answered by the fail mode, from
 * gw__front_cluster_poll (wake-ups and the tick). */
int gw__front_cluster_gate(struct admission *a);
/* Step 4b, after the body: the request's reservation of x GPU-us from the
 * node's GPU lease, for a plan with a budget; same results (a->farm_gpu
 * holds what was taken). */
int gw__front_cluster_gpu(struct admission *a, uint64_t x);
/* Step 4c: one token of the tenant's farm-wide output_tokens window from
 * the node's output lease (or fail-open); same results (a->farm_out says
 * where it came from). */
int gw__front_cluster_out(struct admission *a);
/* Gives back what a request that will not run took of the farm's leases
 * (its GPU-us and its output token). */
void gw__front_cluster_put_back(struct admission *a);
void gw__front_cluster_poll(struct front *f);
void gw__front_cluster_conn_gone(struct conn *c);

/* front_farm.c: the plan's output_tokens quota at admission: 0 go on, -1
 * answered (429 output_tokens_exhausted with Retry-After). */
int gw__front_output_quota(struct conn *c, struct front *f, const struct gw_plan *plan,
                           struct gw_acct tenant, uint64_t now);
/* ... and the tokens a finished job generated, charged to it. */
void gw__front_output_charge(const struct job *j, uint64_t tokens);
/* front_farm.c: the prompt-farming step of admission for the parsed
 * request a->rq: the tenant's record under its plan's "farming", then the
 * client address's under "ip.farming" (when a->ip_farm), one fingerprint
 * for both. 0: go on; -1: answered (429 prompt_farming, or rate_limited
 * when throttled). */
int gw__front_farming(struct admission *a);

/* front_headers.c */
/* RateLimit-Policy and RateLimit for the windows of p, named by scope
 * ("tenant", "ip"), into buf: rem holds what each window admits now, or
 * NULL for a refusal (the first window empty until the retry); a
 * Retry-After line goes first when retry_us. */
void gw__rate_headers(char *buf, size_t len, const char *scope, const struct gw_plan *p,
                      const uint64_t *rem, uint64_t retry_us);

/* front_addr.c */
/* Who the client is (the peer, or who a trusted proxy's forwarding header
 * names) into c->ip and *client, and the key its limits live under (IPv6
 * by ip.ipv6_prefix). -1 once it has answered a trusted proxy's malformed
 * header (400). */
int gw__front_client(struct conn *c, const struct gw_config *cfg, struct gw_addr *client,
                     char key[GW_ADDR_STRLEN]);
/* Step 1 of admission before the ledger: who the client is
 * (gw__front_client) and the address-range rules. -1 once it has answered
 * (400 malformed header, 403 banned range); else 0 with *allowed 1 when
 * an allow entry covers the client. */
int gw__front_who(struct front *f, struct conn *c, uint64_t now, struct gw_addr *client,
                  char key[GW_ADDR_STRLEN], int *allowed);
/* Sets f->listener_proxy[] from ip.proxy_protocol and each listening
 * socket's own address (so socket activation works as well). */
void gw__front_mark_proxy_listeners(struct front *f);
/* Counts a new connection against ip.connections_per_address: 0, or -1
 * when its peer's key is at the cap (the caller closes it; nothing is
 * counted). Trusted proxies are not counted. */
int gw__front_conn_count(struct front *f, struct conn *c);
/* Gives a counted connection's place back (on close). */
void gw__front_conn_uncount(struct front *f, struct conn *c);
/* Bytes read on a connection that still owes its PROXY header: 1 when the
 * header is complete (*used bytes of data were its end; the rest is HTTP),
 * 0 when more are needed, -1 once it has refused the connection (400, the
 * reason, then close). */
int gw__conn_proxy(struct conn *c, const char *data, size_t len, size_t *used);

/* front_jobs.c */
/* Looks at every job: new output to stream, terminal slots to finish. */
void gw__front_jobs_poll(struct front *f);
void gw__front_conn_gone(struct conn *c); /* the connection is closing */

#endif
