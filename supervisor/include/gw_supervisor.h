/* gw_supervisor.h - the supervisor library: what the master, the fronts and
 * the tools (gpuwardenctl, gpuwarden-token) are made of. It links gw_common
 * only, never the engine (docs/ARCHITECTURE.md, "Folders, libraries and who
 * links whom"). Prefix gw_; functions return 0 or a negative errno;
 * operator-facing failures write one line into `err`.
 *
 * Sections: auth (auth.c), requests and responses (request.c, routes.c),
 * the front (http.c, front.c, front_jobs.c), systemd (notify.c), the admin
 * socket (admin.c, admin_cmds.c), the master (master.c,
 * master_children.c), the watchdog (watchdog.c), metrics (metrics.c). The
 * untrusted bytes of a request are parsed only by the fronts; the master
 * never parses them.
 */
#ifndef GW_SUPERVISOR_H
#define GW_SUPERVISOR_H

#include "gw_common.h"

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* ---- auth ---- */
/* JWT verification on libjwt 1.10 (auth.c). libjwt trusts the token's own
 * `alg` and checks no claims, so this layer: refuses tokens over 8 KiB
 * before decoding; picks the key by `kid` (the only key when there is one
 * and the token names none); requires the token's alg to be the one
 * configured for that key (no alg confusion, never "none"); requires `exp`
 * and checks `exp`, `nbf`, `iat` (not in the future) with the configured
 * leeway, and `iss`/`aud` when configured; takes the tenant from `sub`
 * (required, 1..63 bytes of [A-Za-z0-9._@:-]) and an optional `plan`
 * claim. Verified tokens are cached by a hash of the whole token until
 * their exp, so a repeated token costs a hash lookup, not a signature. */

struct gw_auth;

struct gw_principal {
    char tenant[GW_NAME_MAX];
    char plan[GW_NAME_MAX]; /* the `plan` claim, "" when absent */
    char kid[GW_NAME_MAX];
    uint64_t exp;      /* seconds since the epoch */
    uint64_t jti_hash; /* gw_jti_hash of the `jti` claim; 0 when it has none */
};

/* A verifier for the keys and claim rules of cfg, with a cache of
 * `cache_entries` verified tokens (0: a default of 4096). */
int gw_auth_new(struct gw_auth **out, const struct gw_config *cfg, size_t cache_entries);
void gw_auth_free(struct gw_auth *a);

/* Checks an Authorization header value ("Bearer <jwt>"). 0 and *who on
 * success. Otherwise -EACCES and `why` says what was wrong, in words fit
 * for the 401 body: "missing bearer token", "token too large",
 * "malformed token", "unknown key id", "algorithm not allowed for this
 * key", "bad signature", "token expired", "token not yet valid",
 * "token issued in the future", "missing exp", "missing sub", "invalid
 * sub", "wrong issuer", "wrong audience". */
int gw_auth_check(struct gw_auth *a, const char *authz, size_t len, uint64_t now_s,
                  struct gw_principal *who, char *why, size_t whylen);

/* Cache statistics (for metrics and tests). */
struct gw_auth_stats {
    uint64_t hits, misses, verified, refused;
};
void gw_auth_stats(const struct gw_auth *a, struct gw_auth_stats *st);

/* Issues a token signed with `key` (HS* keys only; -ENOTSUP otherwise):
 * development tokens, tests, `gpuwardenctl token issue`. `plan`, `iss` and
 * `aud` may be NULL. *out is malloc'd. */
int gw_auth_issue(const struct gw_key *key, const char *sub, const char *plan, const char *iss,
                  const char *aud, uint64_t iat, uint64_t exp, char **out);
/* The same with a `jti` claim (1..255 bytes), for revocation tests. */
int gw_auth_issue_jti(const struct gw_key *key, const char *sub, const char *jti, const char *iss,
                      const char *aud, uint64_t iat, uint64_t exp, char **out);

/* ---- API keys ---- */
/* A second credential beside JWT (issue 18; apikeys.c, the admin commands
 * in admin_apikeys.c): "Authorization: Bearer sk-gw-<id>-<secret>", the id
 * 12 lowercase hex digits (public: logs, `apikey list`, `apikey revoke`),
 * the secret 64 lowercase hex digits (256 bits from getrandom). A key is
 * bound to a tenant and optionally a plan, and is then admitted exactly as
 * a JWT whose `sub` is that tenant and whose `plan` claim is that plan.
 *
 * The keys file (auth.api_keys_file) is JSON:
 *   {"version": 1, "keys": [{"id", "sha256", "tenant", "plan", "name",
 *                             "created", "revoked"}, ...]}
 * with the SHA-256 of the whole key text, never the key. Only the master
 * writes it (temp file in the same directory, fsync, rename, fsync of the
 * directory). The fronts read the master's live copy,
 * <state_dir>/api-keys.live.json, written the same way from a set the
 * master has parsed, after which it moves the segment's generation on
 * (gw_apikey_gen_bump); each front re-reads it when the generation moved.
 * A malformed keys file therefore never reaches a front. */
#define GW_APIKEY_ID_LEN 12
#define GW_APIKEY_SECRET_LEN 64
#define GW_APIKEY_PREFIX "sk-gw-"
#define GW_APIKEY_LEN (6 + GW_APIKEY_ID_LEN + 1 + GW_APIKEY_SECRET_LEN) /* 83 */
#define GW_APIKEYS_MAX 4096 /* records in the file, revoked ones included */
#define GW_APIKEY_NAME_MAX 64

struct gw_apikey {
    char id[GW_APIKEY_ID_LEN + 1];
    unsigned char sha256[32]; /* of the key text "sk-gw-<id>-<secret>" */
    char tenant[GW_NAME_MAX];
    char plan[GW_NAME_MAX]; /* "": the tenant's own plan */
    char name[GW_APIKEY_NAME_MAX + 1];
    uint64_t created_s;
    uint64_t revoked_s; /* 0: in force */
};

/* The file's records, in the file's order (creation order). */
struct gw_apikey_set {
    int n;
    struct gw_apikey *keys;
};

/* Parses a keys file's text; `name` (the path) starts each error line. 0
 * and *out, or -EINVAL and every mistake in err, one per line, e.g.
 *   "/var/lib/gpuwarden/api-keys.json: line 3 column 7: ..." (not JSON),
 *   "/var/lib/gpuwarden/api-keys.json: keys[2].sha256: expected 64 lowercase
 *   hex digits (the SHA-256 of the key)". */
int gw_apikeys_parse(const char *text, size_t len, const char *name, struct gw_apikey_set *out,
                     char *err, size_t errlen);
/* Reads and parses the file at path; a file that does not exist is the
 * empty set (0). */
int gw_apikeys_read(const char *path, struct gw_apikey_set *out, char *err, size_t errlen);
/* Writes set to path atomically: a reader sees the old file or the new
 * one, whole; after a crash, one of them. Mode 0600. */
int gw_apikeys_write(const char *path, const struct gw_apikey_set *set, char *err, size_t errlen);
void gw_apikeys_free(struct gw_apikey_set *set);
/* Appends a new key for tenant (plan, name: "" for none) created at now_s,
 * with an id no record of set has: the key text into key (GW_APIKEY_LEN +
 * 1 bytes), shown once and never kept. -EINVAL for a bad tenant, plan or
 * name; GW_EFULL at GW_APIKEYS_MAX records; -errno from getrandom. */
int gw_apikeys_add(struct gw_apikey_set *set, const char *tenant, const char *plan,
                   const char *name, uint64_t now_s, char *key);
/* The record with that id, or NULL. */
struct gw_apikey *gw_apikeys_find(const struct gw_apikey_set *set, const char *id);
/* 1 when s is 12 lowercase hex digits (a key id). */
int gw_apikey_id_ok(const char *s);

/* The master's live copy of cfg's keys file: "<state_dir>/api-keys.live.json",
 * or "" when API keys are off. -ENAMETOOLONG when it does not fit. */
int gw_apikeys_live_path(const struct gw_config *cfg, char *out, size_t len);
/* Master only: writes set as the live copy (gw_apikeys_write) and then
 * moves the segment's generation on. Nothing when API keys are off. */
int gw_apikeys_publish(struct gw_segment *seg, const struct gw_config *cfg,
                       const struct gw_apikey_set *set, char *err, size_t errlen);
/* Master only (start-up, reload): reads cfg's keys file (err: every
 * mistake) and publishes it. Nothing when API keys are off. */
int gw_apikeys_load_publish(struct gw_segment *seg, const struct gw_config *cfg, char *err,
                            size_t errlen);

/* A front's copy of the live file, re-read when the segment's generation
 * moved or the config names another one. Not shared between threads. */
struct gw_apikeys;
int gw_apikeys_new(struct gw_apikeys **out);
void gw_apikeys_drop(struct gw_apikeys *v);
/* Checks an Authorization value against the live copy of cfg's keys
 * (auth.api_keys_file unset: API keys off). 1: not an API key (no "Bearer
 * sk-"), the JWT path decides. 0: *who
 * (tenant, plan, kid "apikey"). -EACCES: refused, `why` fit for the 401:
 * "api keys are not enabled on this node", "malformed api key", "unknown
 * api key", "revoked api key". -EAGAIN: the file could not be read; `why`
 * says why, for the log (answer 503). key_id (GW_APIKEY_ID_LEN + 1 bytes)
 * gets the key's id once the token is well formed, else "". The compare
 * is constant-time (CRYPTO_memcmp over the SHA-256). */
int gw_apikeys_check(struct gw_apikeys *v, const struct gw_segment *seg,
                     const struct gw_config *cfg, const char *authz, size_t len,
                     struct gw_principal *who, char *key_id, char *why, size_t whylen);

/* ---- requests and responses ---- */
/* routes.c: from method and path to a route, and from results to the bytes
 * of a response (native and OpenAI shapes, whole or as server-sent events);
 * request.c: from a JSON body to a checked generation request. Pure
 * functions. */

enum gw_route {
    GW_ROUTE_GENERATE = 1, /* POST /v1/generate (native) */
    GW_ROUTE_COMPLETIONS,  /* POST /v1/completions (OpenAI) */
    GW_ROUTE_CHAT,         /* POST /v1/chat/completions (OpenAI) */
    GW_ROUTE_HEALTHZ,      /* GET /healthz */
    GW_ROUTE_READYZ,       /* GET /readyz */
    GW_ROUTE_METRICS,      /* GET /metrics */
    GW_ROUTE_MODELS,       /* GET /v1/models and GET /v1/models/{id} (OpenAI) */
};

/* The route for method + path (query string ignored). Returns 0, or the
 * HTTP status to answer: 404 (no such path) or 405 (path exists, method
 * not allowed; *allow gets the Allow header value). Paths are compared
 * exactly; the one prefix is "/v1/models/", followed by a model id of at
 * least one byte. */
int gw_route_match(const char *method, const char *path, size_t path_len, enum gw_route *out,
                   const char **allow);
/* The model id a GW_ROUTE_MODELS path names: 0 for "/v1/models" (the
 * list; id ""), 1 for "/v1/models/{id}" with the id percent-decoded into
 * id (so "a%2Fb" and "a/b" name the same model); -EINVAL for another path,
 * a bad %XX escape or an escaped NUL; -ENAMETOOLONG when the decoded id
 * does not fit idlen - 1 bytes. The query string is not part of the id. */
int gw_route_model_id(const char *path, size_t path_len, char *id, size_t idlen);
/* The OpenAI model object {"id","object":"model","created","owned_by"}, or
 * with list = 1 the list {"object":"list","data":[that object]}: the
 * bodies of GET /v1/models/{id} and GET /v1/models. *out is malloc'd. */
int gw_openai_models_body(const char *id, uint64_t created_s, const char *owned_by, int list,
                          char **out, size_t *len);

/* GW_STOP_MAX, GW_STOP_LEN: gw_common.h (the slot carries the stops). */
#define GW_USER_MAX 257 /* `user`: at most 256 bytes */
struct gw_gen_request {
    enum gw_route route;
    char model[GW_NAME_MAX]; /* "" when the request named none (native route only) */
    /* The prompt: plain text, or for chat the messages serialised as
     * role NUL content NUL role NUL content NUL ... (chat = 1). */
    char *prompt;
    size_t prompt_len;
    int chat;
    uint32_t max_tokens; /* 0: not given (the plan's cap applies) */
    float temperature;   /* default 1.0 (OpenAI); 0 = greedy */
    float top_p;         /* default 1.0 */
    uint32_t top_k;      /* default 0 = off */
    uint64_t seed;
    int has_seed;
    int n_stops;
    char stops[GW_STOP_MAX][GW_STOP_LEN];
    int stream;
    /* stream_options.include_usage: the stream ends with a usage chunk
     * (gw_sse_usage) and no other chunk carries usage */
    int include_usage;
    /* `user`: the end user the application names, "" when not given; for
     * the access log and the audit log, never for the model */
    char user[GW_USER_MAX];
};

/* Parses and checks a request body for `route`. On success 0 and *req
 * (free with gw_request_free). On a bad request -EINVAL, `err` gets the
 * message for a 400 invalid_request_error naming the field and the
 * reason ("max_tokens: expected an integer in [1, 8192]", "prompt: not
 * valid UTF-8", "messages[2].role: expected one of system, user,
 * assistant", "body: not valid JSON: <jansson's text> at line L column C"),
 * and `param` the field ("max_tokens", "messages[2].role", or ""). The
 * model name is checked by the caller (404 model_not_found). Limits come
 * from cfg (max_tokens cap, prompt size vs the segment's prompt_bytes). */
int gw_request_parse(enum gw_route route, const char *body, size_t len, const struct gw_config *cfg,
                     struct gw_gen_request *req, char *err, size_t errlen, char *param,
                     size_t paramlen);
/* (request.c) Details of the contract above: the prompt is malloc'd with a
 * NUL after prompt_len bytes; defaults are max_tokens 16 on completions
 * (OpenAI's) and 0 on chat and native, temperature 0 (greedy) on native;
 * JSON null stands for an absent optional field; unknown fields are refused
 * ("<name>: unknown parameter"), and OpenAI parameters we do not implement
 * are accepted only at their no-op value ("presence_penalty: not supported;
 * omit it or send 0"). Errors about the whole body read "body: ..." with
 * param "". Other returns: -ENOMEM; -EFAULT for a NULL req or cfg or a
 * route that takes no body. On any failure req holds no allocation. */
void gw_request_free(struct gw_gen_request *req);

/* The largest max_tokens gw_request_parse accepts: the largest max_tokens of
 * any plan in cfg (plans and tenants' own plans), or 4096 when none sets
 * one. The per-tenant cap is admission's to apply (clamp or refuse); this
 * one only refuses what no plan on the node could grant. */
uint32_t gw_request_tokens_cap(const struct gw_config *cfg);

/* The OpenAI error shape: {"error":{"message":..,"type":..,"param":..,"code":..}}
 * (param null when NULL or ""). *out is malloc'd, NUL-terminated. */
int gw_error_body(const char *message, const char *type, const char *code, const char *param,
                  char **out, size_t *len);

/* A finished or in-progress completion, as a response needs it. */
struct gw_completion {
    const char *id; /* "cmpl-..." / "chatcmpl-..." / "gen-..." */
    uint64_t created_s;
    const char *model;
    const char *text; /* the whole text, or this chunk's delta */
    size_t text_len;
    const char *
        finish_reason; /* "stop", "length", "budget", "killed", "cancelled"; NULL while streaming */
    const char *killed_reason; /* with "killed": which detector; else NULL */
    uint64_t prompt_tokens, completion_tokens;
    /* stream_options.include_usage (chunks only): every chunk says
     * "usage": null and the final one carries no usage; gw_sse_usage sends
     * it instead */
    int include_usage;
};

/* Whole (non-streaming) response body for the route: OpenAI's
 * text_completion / chat.completion objects with `usage`, or the native
 * {"id","model","text","finish_reason","usage"} object. With finish_reason
 * "killed", "killed_reason" follows it (in the choice for OpenAI shapes).
 * Text bytes that are not UTF-8 become U+FFFD. -EINVAL for a route without
 * a body or text NULL with text_len > 0; -EOVERFLOW for a count or time
 * beyond INT64_MAX (JSON integers here are signed 64-bit); -ENOMEM. */
int gw_response_body(enum gw_route route, const struct gw_completion *c, char **out, size_t *len);
/* One server-sent event: "data: {...}\n\n". With final = 0 a delta chunk
 * (c->text), with final = 1 the last chunk carrying finish_reason (and
 * usage); the caller then sends gw_sse_done(). Chat: a delta chunk with no
 * text is the opening chunk, delta {"role":"assistant","content":""} as
 * OpenAI sends first; send it once before the first text. Native: deltas
 * are {"text":..}, the final event {"finish_reason":..,"usage":..} (with
 * "text" first when the final chunk carries text). */
int gw_sse_chunk(enum gw_route route, const struct gw_completion *c, int final, char **out,
                 size_t *len);
/* With include_usage, after the final chunk and before gw_sse_done(): the
 * usage chunk as OpenAI sends it, the envelope of the route's chunks with
 * "choices": [] and "usage": {...}. -EINVAL on the native route (its final
 * event carries usage). */
int gw_sse_usage(enum gw_route route, const struct gw_completion *c, char **out, size_t *len);
const char *gw_sse_done(void); /* "data: [DONE]\n\n" */

/* ---- systemd ---- */
/* notify.c: the master's side of the sd_notify protocol (Type=notify) and
 * of socket activation. Every gw_notify* call is a no-op returning 0 when
 * NOTIFY_SOCKET is not set (not started by systemd, or a test that did not
 * ask), so callers never branch on it. They return 0 or a negative errno
 * from sd_notify; a failed notification is worth a log line, never a stop. */

/* 1 when NOTIFY_SOCKET is set. */
int gw_notify_enabled(void);
/* Sends `state` as is ("READY=1", "STATUS=...", several lines allowed). */
int gw_notify(const char *state);
/* Same, printf-style. */
int gw_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* READY=1 with a STATUS= line (status may be NULL). */
int gw_notify_ready(const char *status);
/* RELOADING=1 with MONOTONIC_USEC=<now>, as systemd's Type=notify-reload
 * expects; READY=1 ends the reload. */
int gw_notify_reloading(void);
/* STOPPING=1 with a STATUS= line (may be NULL). */
int gw_notify_stopping(const char *status);
int gw_notify_status(const char *status);
int gw_notify_watchdog(void);
/* The watchdog interval systemd asked for (WATCHDOG_USEC, for this pid), in
 * microseconds; 0 when there is none. */
uint64_t gw_notify_watchdog_usec(void);
/* Strips the variables of the protocol (NOTIFY_SOCKET, WATCHDOG_USEC,
 * WATCHDOG_PID, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) from the
 * environment: children call it before exec, so only the master talks to
 * systemd. */
void gw_notify_unset_env(void);
/* Socket activation: the number of listening descriptors systemd passed
 * (from SD_LISTEN_FDS_START on, marked close-on-exec; LISTEN_* are removed
 * from the environment), 0 when none, or a negative errno. */
int gw_notify_listen_fds(void);
/* The first descriptor systemd passes (SD_LISTEN_FDS_START, 3). */
#define GW_LISTEN_FDS_START 3

/* ---- admin socket ---- */
/* admin.c (the socket, its clients) and admin_cmds.c (the commands): the
 * master's admin socket, what gpuwardenctl talks to. A Unix
 * stream socket at cfg->admin_socket (mode 0660, group admin.group or the
 * master's own); each client's credentials (SO_PEERCRED, SO_PEERGROUPS)
 * give it a level when it connects: admin (uid 0, the service's own uid,
 * admin.admins) may change things, operator (admin.operators) may read,
 * anyone else gets one "forbidden" line and is closed. One JSON request
 * per line, one JSON response per line:
 *   {"cmd":"status"}  ->  {"ok":true,...}
 *   anything wrong    ->  {"ok":false,"error":{"code":C,"message":M}}
 * Commands and codes: docs/ADMIN.md. Nothing here blocks: clients are
 * non-blocking, bounded (16 at once, 64 KiB a line) and served from the
 * master's poll loop. */

struct gw_admin;

/* What the master tells the admin socket about one of its children. */
struct gw_admin_child {
    int role; /* GW_ROLE_FRONT or GW_ROLE_WORKER */
    int index;
    pid_t pid;         /* 0 while it waits to be restarted */
    int lane;          /* its lane, -1 when not attached yet */
    unsigned restarts; /* exits so far */
    int looping;       /* in a crash loop */
};

/* The master's side, as callbacks on its own state (ctx). */
struct gw_admin_host {
    void *ctx;
    struct gw_config *(*config)(void *ctx); /* the running config (set-limit edits it) */
    uint64_t (*epoch)(void *ctx);           /* config epoch */
    int (*children)(void *ctx, struct gw_admin_child *out, int max); /* how many filled */
    /* Reloads now: 1 when the new config was taken (why may then name
     * settings that need a restart), 0 when refused (why says why). */
    int (*reload)(void *ctx, char *why, size_t whylen);
};

/* Creates the socket (replacing a stale one; -EADDRINUSE when another
 * process serves it). seg is the master's segment. err names path and
 * problem. */
int gw_admin_open(struct gw_admin **out, const struct gw_admin_host *host, struct gw_segment *seg,
                  char *err, size_t errlen);
/* Adds the admin descriptors (listener, clients) to a poll set: at most
 * max entries from p on; returns how many. */
int gw_admin_pollfds(struct gw_admin *a, struct pollfd *p, int max);
/* After poll(): serves what the entries filled by gw_admin_pollfds report. */
void gw_admin_serve(struct gw_admin *a, const struct pollfd *p, int n);
/* Closes every client and the socket, and removes the socket file. */
void gw_admin_close(struct gw_admin *a);
/* The response line (no newline) for one request line from a client of
 * `level` (GW_ADMIN_OPERATOR or GW_ADMIN_ADMIN). *out is malloc'd. */
enum { GW_ADMIN_NONE = 0, GW_ADMIN_OPERATOR = 1, GW_ADMIN_ADMIN = 2 };
int gw_admin_request(struct gw_admin *a, const char *line, size_t len, int level, char **out);

/* ---- processes ---- */
/* How the master starts its children (fork + exec, so no libuv loop and no
 * CUDA context crosses a fork):
 *   front i:  <dir of gpuwarden>/gpuwarden --front i -c CONFIG
 *   worker i: <dir of gpuwarden>/gpuwarden-worker --index i -c CONFIG
 * Each inherits, by descriptor number, the listening sockets (fronts only),
 * the work eventfd (EFD_SEMAPHORE, blocking: fronts add 1 per queued
 * request, workers read) and one eventfd per front (EFD_NONBLOCK: workers
 * add 1 when they publish output for that front's requests). The numbers
 * travel in the environment variable GW_FDS, e.g.
 * "listen=3,4;work=5;fronts=6,7"; nothing else stays open across exec.
 * Children attach the segment by path (cfg state_dir/ledger), take a lane,
 * set their role, and die with the master (PR_SET_PDEATHSIG). */

/* A front process: serves HTTP on fds->listen until SIGTERM (then stops
 * accepting and lets in-flight requests finish within drain_timeout_ms).
 * SIGHUP re-reads the config file (limits, keys). Returns the exit status
 * (0 ok, 111 temporary failure). front.c */
int gw_front_main(const char *config_path, int index, const struct gw_fds *fds);

/* The master: validates the config, opens the segment and sockets, starts
 * and supervises the children. master.c */
int gw_master_main(const char *config_path);
/* The cluster agent (cluster.c): `gpuwarden --cluster -c CONFIG`, started
 * by the master when the config has a "cluster" section. Exit status as
 * gw_front_main. */
int gw_cluster_main(const char *config_path, const struct gw_fds *fds);

/* ---- watchdog ---- */
/* watchdog.c: the master's anomaly killer, and guard.c: the workers' output
 * guard. Every few ms (watchdog.interval_ms) the master scans RUNNING slots
 * and worker lanes and judges each run against its plan's limits
 * (gw_wd_judge: hard caps, repetition, divergence) and each busy worker's
 * progress (stall). A kill is two steps: the slot's cancel word gets
 * GW_CANCEL_WATCHDOG + reason (the worker stops within one token and
 * finishes the slot as "killed"); a worker that has not left the slot
 * grace_ms later is SIGKILLed through its pidfd, the master's reaping path
 * repairs its lane (slot FAILED, settled once), and the front names the
 * reason from the cancel word. Each kill adds to the segment's counter for
 * its reason (gw_kills_add) and appends one JSON line to the audit log. */

/* What the watchdog reads of one run. */
struct gw_wd_sample {
    uint64_t tokens;       /* generated so far */
    uint64_t wall_ns;      /* since the worker took it */
    uint64_t device_ns;    /* device time used */
    uint64_t rep;          /* current repetition word */
    uint64_t rep_max;      /* longest repetition word so far */
    uint64_t length_limit; /* learned length limit for this tenant, 0 = none */
    int unbounded;         /* the front flagged the prompt (GW_REQ_UNBOUNDED) */
    uint32_t asked;        /* repetitions the prompt asked for (GW_REQ_ASKED), 0 none */
};
/* The first limit the sample breaks, in the order hard caps (max_tokens,
 * wall_time, device_time), the unbounded-request cap (unbounded and
 * tokens > unb_cap), anomalous length (tokens > length_limit),
 * repetition, divergence; -1 when none:
 *  - repetition (an exact word): period <= rep_period, and count >=
 *    rep_count and period * count >= rep_tokens, or run >= rep_match;
 *  - near_repetition (a GW_REP_NEAR word): period <= near_period and
 *    run >= near_match;
 *  - collapsed_sampling: a sampled run (top1 != 0) whose mean top-1
 *    probability is >= col_top1 percent, either kind of word with period
 *    <= max(rep_period, near_period) and run >= col_match;
 *  - divergence: rep_max has period <= div_period and covered
 *    >= div_tokens tokens, and the current repetition covers fewer (the
 *    cycle broke off: what the "repeat a word forever" extraction attack
 *    looks like when the model starts emitting other text); not while a
 *    near word is published (the cycle goes on with other numbers).
 * A prompt that asked for repetitions (asked > 0) lets a cycle run
 * gw_wd_asked_cycles(asked, rep_asked_max) cycles before any of the
 * repetition kills (and a repetition that stayed within them may break
 * off without a divergence kill).
 * A zero limit is off. Pure: the tests drive it with scripted sequences. */
int gw_wd_judge(const struct gw_wd_limits *l, const struct gw_wd_sample *s);
/* The learned completion lengths (struct gw_lenest, gw_lenest_*) live in
 * the segment: gw_common.h. */

/* The limits for a request of `tenant`: its plan's (gw_config_plan_for, no
 * plan claim) field by field over the node's. */
void gw_wd_limits_for(const struct gw_config *cfg, const char *tenant, struct gw_wd_limits *out);

/* Unbounded requests: at admission the front matches the prompt against
 * the pattern list of the tenant's plan (watchdog.unbounded_patterns,
 * compiled caseless) and flags the slot GW_REQ_UNBOUNDED; the watchdog then
 * kills the run beyond unbounded_cap_tokens ("unbounded_request"). One
 * compiled set per config (the node's list and every plan's own). */
struct gw_unbounded;
int gw_unbounded_new(struct gw_unbounded **out, const struct gw_config *cfg, char *err,
                     size_t errlen);
void gw_unbounded_free(struct gw_unbounded *u);
/* 1 when the prompt of a request by `tenant` asks for endless output: a
 * pattern of its list matched, or the match ran into PCRE2's limits (fail
 * closed). 0 otherwise, and always when the tenant's unbounded_cap_tokens
 * is 0. Not for concurrent use (one match buffer per list). */
int gw_unbounded_match(struct gw_unbounded *u, const struct gw_config *cfg, const char *tenant,
                       const char *prompt, size_t len);

/* Requested repetition (supervisor/repeat_ask.c): "write 'hello' 30
 * times" asks for a loop of 30 cycles. The count a message asks for: the
 * largest number beside a cue ("N times", "twice", "N copies", a range
 * "from A to B" or "A-B", "N <noun>" or "all the US states" in a message
 * that also says "each"/"every"; a few Spanish, French, German and Italian
 * forms), 0 when none or when the message also asks for endless output
 * ("forever", "again and again", "without stopping"). Saturates at
 * GW_ASKED_MAX. Reads at most GW_ASK_WORDS words; 0 when out of memory. */
#define GW_ASKED_MAX 65535u
#define GW_ASK_WORDS 8192
uint32_t gw_asked_count(const char *text, size_t len);
/* The same over a slot's prompt: with chat set (GW_REQ_CHAT: role NUL
 * content NUL ...), over the last "user" message only. */
uint32_t gw_asked_count_prompt(const char *prompt, size_t len, int chat);
/* The cycles a repetition may run when asked cycles were asked for and the
 * plan caps them at cap: n + n / 8 + 2 for n = min(asked, cap), the slack
 * for a model that miscounts or adds a heading; 0 when either is 0. */
uint32_t gw_wd_asked_cycles(uint32_t asked, uint32_t cap);

struct gw_watchdog;
/* The master's side: kills a worker by pid through its pidfd (0 or -errno). */
struct gw_wd_host {
    void *ctx;
    int (*kill_pid)(void *ctx, pid_t pid);
};
/* A watchdog over seg, writing the audit log named by cfg (opened now;
 * a failure is logged on stderr and kills still happen). */
int gw_watchdog_new(struct gw_watchdog **out, struct gw_segment *seg, const struct gw_config *cfg,
                    const struct gw_wd_host *host);
void gw_watchdog_free(struct gw_watchdog *wd);
/* One scan when it is due at now_ns (CLOCK_MONOTONIC) with the running
 * config; returns the milliseconds until the next one is due. */
int gw_watchdog_tick(struct gw_watchdog *wd, const struct gw_config *cfg, uint64_t now_ns);
/* The master reaped pid: 1 when the watchdog had SIGKILLed it (respawn it
 * at once: a kill is not a crash), else 0. */
int gw_watchdog_reaped(struct gw_watchdog *wd, pid_t pid);
/* SIGUSR1: reopens the audit log at the path cfg names (log rotation). */
int gw_watchdog_reopen(struct gw_watchdog *wd, const struct gw_config *cfg);

/* ---- metrics ---- */
/* metrics.c: GET /metrics as Prometheus text (format 0.0.4), from the
 * segment only (gw_metrics_read, live slots and lanes, ledger stats), so
 * any process that maps the segment renders the same totals. *out is
 * malloc'd (the caller frees it). 0 or -ENOMEM. */
int gw_metrics_render(const struct gw_segment *seg, char **out, size_t *len);

/* metrics_tenants.c: every tenant the segment knows (its accounts, not
 * the config's list), one row per label. */
#define GW_TENANT_LABEL_MAX 48 /* a display id (GW_ID_MAX bytes) + NUL, with room */
struct gw_tenant_row {
    char label[GW_TENANT_LABEL_MAX]; /* display id, valid UTF-8, control bytes as '?' */
    struct gw_acct acct;             /* the (first) account behind it */
    uint32_t accounts;               /* accounts merged into this row (same label) */
    struct gw_tstat st;              /* admitted, refusals, kills, output tokens */
    uint64_t used_us;                /* device time charged, ever (gw_ledger_money) */
    uint32_t score;                  /* the last prompt-farming score (merged: the highest) */
    int level;                       /* enum gw_farm_level now (merged: the highest) */
    uint64_t farm_refused;           /* requests the farming ladder refused, ever */
    uint64_t prompts;                /* prompts the farming record saw, ever */
};
/* *out (malloc'd, with one spare entry after the n rows) sorted by label.
 * 0 or -ENOMEM. */
int gw_tenant_rows(const struct gw_segment *seg, uint64_t now_us, struct gw_tenant_row **out,
                   size_t *n);
/* The per-tenant families (gpuwarden_tenant_*) as Prometheus text: the
 * top mc->tenants_top rows by mc->tenants_by, then tenant="other" for the
 * rest (always present). *out is malloc'd. 0 or -ENOMEM. */
int gw_metrics_render_tenants(const struct gw_segment *seg, const struct gw_metrics_cfg *mc,
                              char **out, size_t *len);

#endif
