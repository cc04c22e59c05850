/* gw_common/config.h - the node's configuration as the processes hold it
 * (one JSON file, config.c), and the rate and budget values it is made of.
 * Part of gw_common.h; include that, not this. */
#ifndef GW_COMMON_CONFIG_H
#define GW_COMMON_CONFIG_H

#include "gw_common/netaddr.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- GCRA rates */

/* One request-rate window: `limit` requests per `period_us`, plus `burst`
 * extra at once. Derived constants (GCRA): interval T = ceil(period/limit)
 * (rounded up so the rate never exceeds the limit), tolerance
 * tau = (limit + burst - 1) * T. At one instant exactly limit + burst
 * requests pass; after that exactly one per T. */
struct gw_rate {
    uint64_t interval_us;
    uint64_t tolerance_us;
    /* The "moving" kind (common/moving.c): at most moving_limit requests in
     * any window of the period. Exact form (a log of the admission times):
     * moving_period_ms set, moving_bucket_us 0; bucket form: counted in
     * buckets of moving_bucket_us, moving_period_ms 0. All 0 for GCRA. */
    uint64_t moving_limit;
    uint64_t moving_bucket_us;
    uint64_t moving_period_ms;
};
int gw_rate_make(struct gw_rate *r, uint64_t limit, uint64_t period_us, uint64_t burst);
/* A moving window: limit in [1, 255], period at least 4 ms. -EINVAL
 * otherwise. The exact form (a sliding log) for limit <= GW_MOVING_EXACT_MAX
 * and a period of at most a day, the bucket form (4 buckets of P/4 and the
 * current one) above. */
#define GW_MOVING_EXACT_MAX 16
int gw_rate_make_moving(struct gw_rate *r, uint64_t limit, uint64_t period_us);

/* A device-time budget: `amount_us` of device time per `period_us` of wall
 * time. A budget cell is a GCRA cell whose cost is weighted: spending x us of
 * device time advances the cell by ceil(x * period / amount) us. Full budget
 * when idle. */
struct gw_budget_rate {
    uint64_t amount_us;
    uint64_t period_us;
};

#define GW_RATE_CELLS 4 /* rate windows per account */

/* Sizes chosen from config when the segment is created. Every count must be
 * a power of two where noted; gw_segment_open checks. */
struct gw_seg_config {
    uint32_t accounts;      /* ledger entries, power of two >= GW_PROBE */
    uint32_t budgets;       /* budget records (tenant and global accounts) */
    uint32_t slots;         /* in-flight request records */
    uint32_t queue;         /* queue capacity, power of two >= 2 */
    uint32_t lanes;         /* processes that may attach at once (<= 255) */
    uint32_t prompt_bytes;  /* per slot */
    uint32_t output_bytes;  /* per slot */
    uint32_t resume_tokens; /* per slot: generated ids kept so another worker can
                               continue the request after its worker died; 0: none */
    uint32_t ip_farm_recs;  /* ip.farming.records: address farming records (farm_ip.c) */
    uint32_t reserved;      /* 0 */
};
/* It is also the segment header's record of its sizes (seg_internal.h):
 * part of the layout, like everything in the segment. */
_Static_assert(sizeof(struct gw_seg_config) == 40, "segment config layout");
_Static_assert(_Alignof(struct gw_seg_config) == 4, "segment config alignment");

/* ------------------------------------------------------------------ config */

/* One JSON file (jansson) describes the node; gw_config_load checks all of
 * it and reports every mistake with its JSON path, e.g.
 *   config: plans.free.rate[1]: "50 per fortnight": expected "N per second|minute|hour|day [burst
 * M]" See dist/gpuwarden.dev.json for a complete example and docs/CONFIG.md for every key. */

#define GW_MAX_LISTEN 8
#define GW_MAX_KEYS 32
#define GW_MAX_PLANS 64
#define GW_NAME_MAX 64
#define GW_ADMIN_PRINCIPALS 16
#define GW_MAX_TRUSTED 64 /* ip.trusted_proxies ranges */
#define GW_REQ_CLAIMS 8   /* auth.keys[].required_claims */

/* A rate window: limit per period, plus burst extra at once. */
struct gw_window {
    uint64_t limit;
    uint64_t period_us;
    uint64_t burst;
    int moving; /* "N per P moving": at most N in any window of P (no burst) */
};
/* The cell rate of a window, of either kind (gw_rate_make or
 * gw_rate_make_moving). */
int gw_window_rate(const struct gw_window *w, struct gw_rate *r);

/* What the watchdog kills (supervisor/watchdog.c; docs/CONFIG.md
 * "watchdog"). The node's values come from "watchdog"; a plan's "watchdog"
 * object overrides single fields (0 there = the node's value). At node
 * level 0 turns a detector off. */
struct gw_wd_limits {
    uint32_t max_tokens;  /* generated tokens */
    uint32_t wall_ms;     /* run time since a worker took the request */
    uint32_t device_ms;   /* device time used */
    uint32_t rep_period;  /* repetition: a cycle of period <= rep_period tokens ... */
    uint32_t rep_count;   /* ... repeated at least rep_count times in a row ... */
    uint32_t rep_tokens;  /* ... covering at least rep_tokens tokens; or ... */
    uint32_t rep_match;   /* ... whose second cycle matched rep_match tokens in a row */
    uint32_t near_period; /* near repetition: a cycle of period <= near_period symbols ... */
    uint32_t near_match;  /* ... once digits are ignored, matched near_match tokens in a row */
    uint32_t col_top1;    /* collapsed sampling: sampled, mean top-1 >= col_top1 percent ... */
    uint32_t col_match;   /* ... and an exact or near cycle matched col_match tokens */
    uint32_t div_period;  /* divergence: a cycle of period <= div_period ... */
    uint32_t div_tokens;  /* ... that covered >= div_tokens tokens, then broke off */
    uint32_t len_floor;   /* anomalous length: killed beyond max(len_floor, ... */
    uint32_t len_factor;  /* ... len_factor x the tenant's learned p99 length) once ... */
    uint32_t len_warmup;  /* ... len_warmup completions were seen; the floor before */
    uint32_t unb_cap;     /* unbounded request: a request flagged GW_REQ_UNBOUNDED is killed
                             beyond unb_cap tokens; 0 at node level: off */
    uint32_t unb_list;    /* the patterns that flag it: 0 = the node's (gw_config.unbounded),
                             k = gw_config.unb_lists[k - 1] (a plan's or tenant's own) */

    /* requested repetition: a prompt that asks for N repetitions lets a
     * cycle run min(N, rep_asked_max) cycles plus slack (gw_wd_asked_cycles)
     * before a repetition kill; 0: none */
    uint32_t rep_asked_max;
};

/* Patterns that flag a prompt asking for endless output ("forever",
 * "infinitely", ...): PCRE2, matched caseless over the prompt bytes by the
 * front at admission (supervisor/watchdog.c, gw_unbounded_*). */
#define GW_UNBOUNDED_MAX 16
#define GW_UNBOUNDED_LEN 256
struct gw_pattern_list {
    int n;
    char pattern[GW_UNBOUNDED_MAX][GW_UNBOUNDED_LEN];
};

/* One output-guard rule (worker/guard.c): a PCRE2 pattern matched over
 * the output stream before it is published. */
#define GW_GUARD_MAX 16
enum { GW_GUARD_KILL = 1, GW_GUARD_REDACT = 2 };
struct gw_guard_rule {
    char name[GW_NAME_MAX];
    char pattern[512];
    int action; /* GW_GUARD_KILL or GW_GUARD_REDACT */
    int luhn;   /* a match counts only when its digits pass the Luhn check */
};

/* Prompt-farming detection and its response ladder, per plan (a plan's or
 * tenant's "farming" object; common/farm.c, docs/CONFIG.md "farming").
 * Off unless `enabled`. The score and every threshold are described in
 * gw_common/farm.h. */
#define GW_FARM_PREFIX_MAX 4   /* ignore_prefix strings per plan */
#define GW_FARM_PREFIX_LEN 512 /* bytes of one, NUL included */
struct gw_farm_limits {
    int enabled;               /* 0: no fingerprint, no score, no ladder */
    uint32_t window;           /* recent prompts the score reads, [4, 64], default 32 */
    uint32_t min_samples;      /* no score before this many prompts, [2, window], 16 */
    uint32_t near_bits;        /* SimHash Hamming distance that counts as near, [0, 32], 20 */
    uint32_t sweep_cv_pct;     /* inter-arrival CV (percent) at which the sweep part is 0,
                                  [0, 1000], 50; 0: no sweep part */
    uint32_t sweep_single_pct; /* share of single-turn prompts a sweep needs, [0, 100], 90 */
    uint32_t flag_score;       /* a prompt whose score reaches this is a strike, [1, 100], 60 */
    uint32_t throttle_after;   /* strikes to the throttle step, [1, 100000], 32 */
    uint32_t refuse_after;     /* strikes to the refusal step, [throttle_after, 100000], 64 */
    struct gw_window throttle; /* the throttled rate, default "1 per second" */
    uint32_t refuse_ttl_s;     /* how long a refusal lasts, [1, 2592000], 600 */
    uint32_t ban_ttl_s;        /* the ladder's last step: reaching refused also bans the
                                  tenant this long (403 banned), [0, 31622400]; 0: off */
    uint32_t prefixes;         /* 0: none; k: gw_config.farm_prefixes[k - 1] */
};
/* A plan's "ignore_prefix": the fixed instruction texts of a legitimate
 * template, cut from a prompt before it is fingerprinted. */
struct gw_farm_prefixes {
    int n;
    char s[GW_FARM_PREFIX_MAX][GW_FARM_PREFIX_LEN];
};

/* Limits that apply to one tenant (a plan), to each ip, or to the node. */
struct gw_plan {
    char name[GW_NAME_MAX];
    int n_windows;                           /* 0..GW_RATE_CELLS */
    struct gw_window windows[GW_RATE_CELLS]; /* "N per second|minute|hour|day [burst M]" */
    int has_budget;
    struct gw_budget_rate budget; /* "X GPU-seconds per second|minute|hour|day" */
    uint32_t max_inflight;        /* 0 = unlimited */
    uint32_t max_tokens;          /* cap on a request's max_tokens */
    int clamp_on_budget;          /* 1: clamp max_tokens to what the budget covers;
                                     0: refuse with 429 budget_exhausted */
    struct gw_wd_limits wd;       /* watchdog overrides; 0 = the node's value */
    double weight;                /* share of worker service under contention (the
                                     worker's VTC scheduler), (0, 1000], default 1.0:
                                     a tenant of weight 2 gets twice the tokens of one of
                                     weight 1 while both wait; reaches the worker as
                                     gw_slot_req.weight_milli (gw_weight_milli) */
    struct gw_farm_limits farm;   /* prompt-farming detection ("farming") */
    int has_output;               /* "output_tokens": generated tokens per window */
    struct gw_window output;      /* limit tokens per period_us, burst more at once */
};

/* A plan weight as the worker receives it (gw_slot_req.weight_milli):
 * weight x 1000 rounded to the nearest integer, at least 1 (so a tiny
 * weight still gets some service), at most 1000000. */
uint32_t gw_weight_milli(double weight);

enum gw_alg { GW_ALG_HS256 = 1, GW_ALG_HS384, GW_ALG_HS512, GW_ALG_RS256, GW_ALG_ES256 };

struct gw_key {
    char kid[GW_NAME_MAX];
    enum gw_alg alg;
    unsigned char *key; /* secret bytes (HS*) or PEM text (RS256/ES256), read from the file
                           (auth.jwks_file's keys: written as PEM from their JWK) */
    size_t key_len;
    char path[256]; /* where it came from, for messages (a key file or auth.jwks_file) */
    int n_required; /* required_claims: claims a token for this key must carry */
    char required[GW_REQ_CLAIMS][32];
};

struct gw_tenant {
    char id[GW_NAME_MAX];               /* the JWT `sub` */
    struct gw_plan plan;                /* its plan with per-tenant overrides applied */
    char plans_allowed[8][GW_NAME_MAX]; /* plans a `plan` claim may select */
    int n_plans_allowed;
};

/* The farm (issue 19; docs/ARCHITECTURE.md, "The farm"): the "cluster"
 * section. enabled = 0 when the section is absent: the node runs alone. */
enum gw_fail_mode { GW_FAIL_OPEN = 0, GW_FAIL_CLOSED = 1 };
#define GW_CLUSTER_PASS_MAX 256
struct gw_cluster_cfg {
    int enabled;
    char redis_host[256];               /* "127.0.0.1", "::1" or a name */
    int redis_port;                     /* 1..65535 */
    char node[GW_NAME_MAX];             /* this node's name in the farm, unique */
    char password[GW_CLUSTER_PASS_MAX]; /* from password_file; "" = no AUTH */
    char prefix[32];                    /* Redis key prefix, default "gw" */
    uint32_t timeout_ms;                /* every Redis call (connect included), default 200 */
    uint32_t wait_ms;                   /* a request waits this long for a lease, default 1000 */
    uint32_t lease_ttl_ms;              /* a lease lives this long in Redis, default 10000 */
    uint32_t heartbeat_ms;              /* node heartbeat period (key TTL 3x), default 1000 */
    uint32_t lease_percent;             /* the smallest lease: this % of the window's limit
                                           (request tokens, at least 1) or of the budget
                                           (GPU-us), default 5 */
    uint32_t lease_max_percent;         /* the largest lease sized by demand: this % of the
                                           limit or budget, default 20 */
    uint32_t lease_max;                 /* cap on request tokens per lease, default 1000 */
    int fail_mode;                      /* enum gw_fail_mode for plans not listed, default open */
    int global_farm;                    /* "global": "farm" (1, default): the `global` limits
                                           are one farm-wide account; "node" (0): per node */
    int n_plan_modes;
    char plan_mode_name[GW_MAX_PLANS][GW_NAME_MAX];
    int plan_mode[GW_MAX_PLANS];
};
/* The fail mode of the plan named `plan` (cluster.plans, else
 * cluster.fail_mode). */
int gw_cluster_fail_mode(const struct gw_cluster_cfg *cl, const char *plan);

/* "metrics" (config_metrics.c; docs/CONFIG.md, "metrics"): where GET
 * /metrics is served and what it shows. */
#define GW_METRICS_TOKEN_MAX 257 /* bytes of a bearer token + NUL */
#define GW_METRICS_TOP_MAX 1000  /* tenants_top at most */
enum gw_metrics_by { GW_MT_BY_GPU = 0, GW_MT_BY_REFUSALS = 1 };
struct gw_metrics_cfg {
    char listen[64];                  /* "host:port" of its own listener; "" = the public ones */
    char token[GW_METRICS_TOKEN_MAX]; /* from bearer_token_file; token_len 0 = none asked */
    size_t token_len;
    uint32_t tenants_top; /* tenants with their own series (0: only "other"), default 20 */
    int tenants_by;       /* enum gw_metrics_by: which tenants are the top, default GPU time */
};

struct gw_config {
    char path[256];
    /* listening */
    int n_listen;
    char listen[GW_MAX_LISTEN][64]; /* "127.0.0.1:8080", "[::1]:8080" */
    /* processes */
    int fronts;  /* default: number of cores */
    int workers; /* default: 1 per GPU, or 1 on CPU */
    /* state */
    char state_dir[256];          /* the segment file is state_dir/ledger */
    struct gw_seg_config segment; /* sizes; lanes derived from fronts + workers */
    /* the model */
    char model_path[256];
    char model_name[GW_NAME_MAX]; /* what requests must name in "model" */
    char device[32];              /* "auto", "cpu", "cuda:N" */
    int threads;                  /* per CPU worker; 0 = cores / workers */
    int context;                  /* tokens one sequence may hold (prompt + output) */
    /* continuous batching (the worker's scheduler; docs/CONFIG.md, "model") */
    int max_batch;            /* sequences a worker runs at once, [1, 256]; 0 = auto:
                                 the worker decides (8 on the CPU engine, 1 on a GPU) */
    int kv_cache_tokens;      /* KV cache pool per worker in tokens, [64, 4194304] and
                                 >= context; 0 = auto (max_batch x context, capped by
                                 the worker) */
    int prefill_chunk;        /* prompt tokens one sequence prefills per step, [1, 4096],
                                 default 64 */
    int step_tokens;          /* token budget of one engine step across all sequences,
                                 [1, 65536] and >= prefill_chunk, default 256 */
    double vtc_weight_prompt; /* VTC service per prompt token, (0, 100], default 1.0 */
    double vtc_weight_output; /* VTC service per generated token, (0, 100], default 2.0 */
    int priority_lead;        /* generated tokens (of a weight-1 tenant) by which a tenant's
                                 counter must lead another's in a step for the less served
                                 to get priority steps, [0, 65536]; 0 = none; default 8 */
    int pin_threads;          /* CPU engine: pin each worker's threads, one per CPU, when the
                                 workers' threads fit in the CPUs the process may use;
                                 default 1 (true) */
    /* HTTP limits */
    uint32_t header_bytes;      /* default 8 KiB */
    uint32_t body_bytes;        /* default 1 MiB */
    uint32_t header_timeout_ms; /* time to receive the headers: 408 after */
    uint32_t body_timeout_ms;   /* time to receive the body: 408 after */
    uint32_t keepalive_ms;      /* idle keep-alive connection closed after */
    uint32_t connections_per_front;
    uint32_t drain_timeout_ms; /* SIGTERM: in-flight requests get this long */
    /* auth */
    int n_keys;
    struct gw_key keys[GW_MAX_KEYS];
    char issuer[128];        /* required `iss` when non-empty */
    char audience[128];      /* required in `aud` when non-empty */
    uint32_t leeway_s;       /* clock skew allowed on exp/nbf/iat */
    uint32_t max_lifetime_s; /* auth.max_lifetime_s: exp - iat at most this, iat then
                                required; 0 = no limit */
    char api_keys_file[256]; /* auth.api_keys_file: the API keys (supervisor/apikeys.c);
                                "" = API keys off */
    /* limits */
    struct gw_plan ip; /* per client address (windows only) */
    int ipv6_prefix;   /* ip.ipv6_prefix: IPv6 clients share a bucket per prefix, [1, 128] */
    int n_trusted;     /* ip.trusted_proxies: peers whose forwarding headers are read */
    struct gw_cidr trusted[GW_MAX_TRUSTED];
    struct gw_plan ip_overflow; /* ip.overflow_rate: windows per overflow bucket (a new
                                   address's /24 or /48) when the address table is full;
                                   none: a full table refuses new addresses (503) */
    uint32_t conns_per_address; /* ip.connections_per_address: open connections one client
                                   key (IPv4, IPv6 prefix) may hold in each front; 0 = no
                                   cap; trusted proxies are exempt */
    int n_proxy_listen;         /* ip.proxy_protocol: listeners whose connections begin with a
                                   PROXY protocol header (matched by the socket's own address) */
    struct {
        struct gw_addr addr;
        uint16_t port;
    } proxy_listen[GW_MAX_LISTEN];
    struct gw_plan global; /* the whole node */
    int n_plans;
    struct gw_plan plans[GW_MAX_PLANS];
    int default_plan; /* index in plans, -1: unknown tenants are refused (403) */
    int n_tenants;
    struct gw_tenant *tenants; /* sorted by id */
    /* admin */
    char admin_socket[108]; /* sun_path's size, NUL included */
    /* cost model: device time reserved per token before one is measured */
    uint64_t initial_us_per_token;
    /* admin socket access (admin.c): the group the socket file is given
     * (""; the master's own group), and who may read (operators) and change
     * (admins): "user:NAME", "uid:N", "group:NAME" or "gid:N". uid 0 and
     * the service's own uid are always admins. */
    char admin_group[GW_NAME_MAX];
    int n_admin_operators;
    char admin_operators[GW_ADMIN_PRINCIPALS][GW_NAME_MAX];
    int n_admin_admins;
    char admin_admins[GW_ADMIN_PRINCIPALS][GW_NAME_MAX];
    /* watchdog (supervisor/watchdog.c) and output guard (guard.c) */
    struct gw_wd_limits wd;  /* node values; plans override (gw_plan.wd) */
    uint32_t wd_interval_ms; /* scan period, default 10 */
    uint32_t wd_stall_ms;    /* no heartbeat or token this long: stalled, default 10000 */
    uint32_t wd_grace_ms;    /* cancel to SIGKILL, default 500 */
    char audit_log[256];     /* JSON lines, one per kill; default <state_dir>/audit.log */
    int n_guard;             /* rules in guard[]; 0 = no output guard */
    struct gw_guard_rule guard[GW_GUARD_MAX];
    /* logs (log.c): "log.format" text|json, "log.access" one line per
     * finished request (off by default) */
    int log_format; /* enum gw_log_format */
    int log_access;
    struct gw_pattern_list unbounded; /* watchdog.unbounded_patterns (defaults: forever, ...) */
    int n_unb_lists;                  /* plans' and tenants' own unbounded_patterns */
    struct gw_pattern_list *unb_lists;
    int n_farm_prefixes; /* plans' and tenants' "farming.ignore_prefix" lists */
    struct gw_farm_prefixes *farm_prefixes;
    struct gw_cluster_cfg cluster; /* "cluster": the farm's shared budgets (config_cluster.c) */
    struct gw_metrics_cfg metrics; /* "metrics": its listener, credential, per-tenant series */
};

/* Loads and checks `path`. On failure returns -EINVAL and writes every
 * mistake, one per line ("config: <json path>: <problem>"), into err (as
 * many as fit). Files named in the config (keys) are read here; a missing
 * or unreadable one is a mistake naming its path. */
int gw_config_load(struct gw_config **out, const char *path, char *err, size_t errlen);
/* The same from a JSON string (tests, fuzzing); `name` stands for the path. */
int gw_config_parse(struct gw_config **out, const char *json, size_t len, const char *name,
                    char *err, size_t errlen);
void gw_config_free(struct gw_config *cfg);
/* The text of a JSON Web Key Set (auth.jwks_file, RFC 7517) `path` stands
 * for: its RS256 and ES256 public keys appended to cfg->keys as PEM, after
 * the keys cfg holds (their kids must differ). 0, or -EINVAL with each
 * mistake in err ("config: auth.jwks_file: <path>: keys[i] (kid "k"): ...");
 * the valid keys are appended either way (gw_config_free frees them). The
 * config's own reading of the file (gw_config_load) goes through the same
 * code; this entry is for tests and fuzzing. */
int gw_jwks_parse(struct gw_config *cfg, const char *text, size_t len, const char *path, char *err,
                  size_t errlen);
/* The tenant's entry, or NULL when it is not configured. */
const struct gw_tenant *gw_config_tenant(const struct gw_config *cfg, const char *id);
/* The plan for tenant `id` (NULL = not configured) with an optional `plan`
 * claim: the tenant's own plan, or the claimed one if the tenant may select
 * it, or the default plan for unknown tenants. NULL means refused (403),
 * and *why says why. */
const struct gw_plan *gw_config_plan_for(const struct gw_config *cfg, const char *id,
                                         const char *plan_claim, const char **why);
/* Parses "N per second|minute|hour|day [burst M | moving]" (for tests and
 * the admin socket); -EINVAL on anything else, -ERANGE for a burst too
 * large, -EDOM for a moving window over 255 per period. */
int gw_window_parse(const char *s, struct gw_window *w);
/* Parses "X GPU-seconds per second|minute|hour|day" (X may have a fraction). */
int gw_budget_parse(const char *s, struct gw_budget_rate *b);

#endif /* GW_COMMON_CONFIG_H */
