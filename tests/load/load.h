/* load.h - gpuwarden-load, the load-test harness that attacks while it
 * measures. Internal to tests/load/: prefix lt_; functions return 0 or a
 * negative errno and write one operator-facing line into `err`.
 *
 * Files: scenario.c (the scenario JSON), tokens.c (minting legitimate and
 * forged tokens), client.c (the libuv HTTP/1.1 + SSE client, arrivals and
 * the run loop), report.c (percentiles, the table, --json, thresholds),
 * ledger.c (conservation read from the target's segment), main.c (options).
 *
 * Latency in open loop is measured from each request's intended send time
 * (its place in the arrival schedule), not from when a connection became
 * free, so a server that stalls cannot hide its queue (coordinated
 * omission). Closed loop measures from the actual send. */
#ifndef GW_LOAD_H
#define GW_LOAD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define LT_MAX_CLASSES 32
#define LT_MAX_SOURCES 16
#define LT_MAX_CODES 12
#define LT_MAX_THRESHOLDS 64
#define LT_MAX_SETS 48   /* named prompt sets in a scenario */
#define LT_MAX_COMPOSE 8 /* sets one composed prompt is made of */

/* What a class of clients does. */
enum lt_behaviour {
    LT_LEGIT = 0,    /* a well-formed request with a valid token (flood: same, at a high rate) */
    LT_TOKENLESS,    /* no Authorization header */
    LT_ALG_NONE,     /* a token with alg "none" and no signature */
    LT_WRONG_KEY,    /* HS256 signed with a key the node does not trust */
    LT_EXPIRED,      /* signed with the right key, exp an hour ago */
    LT_SLOW_HEADERS, /* headers trickled one chunk per trickle_ms */
    LT_SLOW_BODY,    /* headers at once, the body trickled */
    LT_DISCONNECT,   /* streams, then closes after the first token */
};
const char *lt_behaviour_name(enum lt_behaviour b);

/* Outcome of one request; the report's status breakdown. */
enum lt_outcome {
    LT_O_200 = 0,
    LT_O_401,
    LT_O_408,
    LT_O_429,
    LT_O_503,
    LT_O_OTHER,      /* any other HTTP status */
    LT_O_CONN_ERROR, /* connect, reset or EOF before a whole response */
    LT_O_TIMEOUT,    /* sent, and no whole response within the class's timeout */
    LT_O_NOT_SENT,   /* never sent within the timeout: no connection (connects
                      * pending or the class's connections all busy) */
    LT_O_DISCONNECT, /* we closed it on purpose (LT_DISCONNECT) after a 200 began */
    LT_O_UNFINISHED, /* still in flight when the run's drain time ran out */
    LT_O_COUNT
};
const char *lt_outcome_name(int o);

enum lt_finish {
    LT_F_STOP = 0,
    LT_F_LENGTH,
    LT_F_BUDGET,
    LT_F_KILLED,
    LT_F_CANCELLED,
    LT_F_OTHER,
    LT_F_COUNT
};
const char *lt_finish_name(int f);

/* A growable array of latencies in microseconds (exact percentiles; the
 * request cap bounds its size). */
struct lt_samples {
    uint64_t *v;
    size_t n, cap;
};
int lt_samples_add(struct lt_samples *s, uint64_t us);
/* Time per output token in us: the gap from the first token's event
 * (first_ns) to the last one's (last_ns) over the tokens - 1 between
 * them, rounded down; 0 when tokens < 2 or last_ns < first_ns. */
uint64_t lt_tpot_us(uint64_t first_ns, uint64_t last_ns, uint64_t tokens);
/* The q-quantile (0..1, nearest rank) in us; sorts in place; 0 when empty. */
uint64_t lt_samples_quantile(struct lt_samples *s, double q);
void lt_samples_free(struct lt_samples *s);

/* One class of clients as the scenario describes it, and what it measured. */
struct lt_class {
    /* scenario */
    char name[64];
    enum lt_behaviour behaviour;
    int closed;             /* 1: closed loop (`connections` clients back to back) */
    int poisson;            /* open loop: 1 exponential gaps, 0 constant */
    double rate;            /* open loop: requests per second */
    double start_s, stop_s; /* active window within the run (stop 0: the run's end) */
    char tenant[64];        /* sub of minted tokens ("" with a fixed token) */
    char *token;            /* fixed token (malloc'd), or NULL to mint */
    int n_sources;
    struct sockaddr_storage sources[LT_MAX_SOURCES]; /* port 0 */
    char source_text[LT_MAX_SOURCES][48];
    char route[64]; /* "/v1/completions", "/v1/chat/completions", "/v1/generate" */
    char **prompts; /* borrowed from the scenario's prompt sets */
    int n_prompts;
    char prompt_set[64];
    /* "compose": each request's prompt is one string from each of these
     * sets, joined by spaces, picked by a PRNG of (seed, class, request):
     * templates with slot word lists, paraphrases, long varied texts */
    int n_compose;
    char **compose[LT_MAX_COMPOSE];
    int compose_n[LT_MAX_COMPOSE];
    int turns;      /* chat: earlier user/assistant pairs sent before the prompt (0: none) */
    int max_tokens; /* 0: leave it out */
    int stream;
    int connections; /* open loop: most connections at once; closed: clients */
    int keepalive;
    double timeout_s;  /* per request */
    int trickle_ms;    /* slow clients: gap between chunks */
    int trickle_bytes; /* slow clients: bytes per chunk */
    /* measured */
    uint64_t sent; /* requests issued (the schedule reached them under the cap) */
    uint64_t due;  /* requests the schedule asked for */
    uint64_t outcome[LT_O_COUNT];
    uint64_t finish[LT_F_COUNT];
    struct {
        char code[40];
        uint64_t n;
    } codes[LT_MAX_CODES]; /* error.code of refusals */
    int n_codes;
    uint64_t completion_tokens;      /* usage.completion_tokens of 200s */
    uint64_t farming_first;          /* request number (1-based) of the first 429
                                        prompt_farming, 0: none */
    struct lt_samples ttft_ok;       /* 200: to the first token (stream) or first byte (whole) */
    struct lt_samples tpot_ok;       /* 200 streams of 2+ tokens: time per output token,
                                        (last token - first token) / (tokens - 1) */
    struct lt_samples total_ok;      /* 200: to the last byte */
    struct lt_samples total_refused; /* any other status: to the last byte */
    struct lt_samples send_lag;      /* open loop: actual minus intended send time */
    double active_s;                 /* seconds the class was scheduling */
    uint64_t first_send_ns;          /* the first byte of its first request sent, 0: none */
    uint64_t last_end_ns;            /* the end of its last request that was sent */
    uint64_t peak_inflight;          /* most requests of this class in flight at once */
    /* run state (client.c) */
    void *rt;
};

/* A threshold: class.metric compared to min/max, optionally as a ratio to
 * the same metric of another class. */
struct lt_threshold {
    char cls[64]; /* "" for run-wide metrics (ledger_conserved) */
    char metric[48];
    char relative_to[64]; /* "" or a class name */
    int has_min, has_max;
    double min, max;
    /* result */
    int evaluated, passed;
    double value;
    char why[160];
};

struct lt_auth {
    char secret_file[512];
    char kid[64];
    char issuer[128];
    char audience[128];
    unsigned char *secret; /* read from secret_file */
    size_t secret_len;
};

struct lt_scenario {
    char name[64];
    char description[512];
    char target[128]; /* "127.0.0.1:8080" or "[::1]:8080" */
    struct sockaddr_storage target_addr;
    char model[64];
    double duration_s;     /* scheduling stops here */
    double drain_s;        /* then in-flight requests get this long */
    uint64_t max_requests; /* cap over all classes */
    uint64_t seed;
    struct lt_auth auth;
    char ledger[512];      /* the target's segment file, "" to skip the check */
    char admin[512];       /* the target's admin socket, "" to skip the budget check */
    double budget_step_ms; /* one generation step's device time at most (budget check slack) */
    FILE *timeline;        /* --timeline: one CSV line per request as it ends, or NULL */
    int n_classes;
    struct lt_class classes[LT_MAX_CLASSES];
    int n_thresholds;
    struct lt_threshold thresholds[LT_MAX_THRESHOLDS];
    /* prompt sets, owned */
    int n_sets;
    struct {
        char name[64];
        char **v;
        int n;
    } sets[LT_MAX_SETS];
};

/* Overrides from the command line, applied after parsing. NULL: keep. */
struct lt_overrides {
    const char *target, *ledger, *secret_file, *admin;
    double duration_s;     /* <= 0: keep */
    uint64_t max_requests; /* 0: keep */
    double rate_scale;     /* > 0: multiplies every open-loop rate */
};

/* Parses and checks a scenario file (scenario.c); every mistake names its
 * JSON path. Refuses any target or source that is not loopback
 * (127.0.0.0/8 or ::1). Reads the secret file when a class mints tokens. */
int lt_scenario_load(struct lt_scenario *sc, const char *path, const struct lt_overrides *ov,
                     char *err, size_t errlen);
void lt_scenario_free(struct lt_scenario *sc);
/* 1 when the address is 127.0.0.0/8 or ::1. */
int lt_is_loopback(const struct sockaddr_storage *a);

/* Tokens (tokens.c). The Authorization value for request number `seq` of
 * class c, malloc'd into *out ("" for a tokenless class: *out NULL).
 * Forged tokens differ per request, so a verifier's cache cannot absorb
 * them. now_s: the wall clock. */
int lt_token_for(const struct lt_scenario *sc, const struct lt_class *c, uint64_t seq,
                 uint64_t now_s, char **out);

/* The run (client.c): schedules, sends and measures every class until the
 * duration and request cap stop it, then waits drain_s for what is in
 * flight. progress: 1 to redraw a status line on stderr every second. */
int lt_run(struct lt_scenario *sc, int progress, double *elapsed_s, char *err, size_t errlen);

/* Budget figures of one tenant as the admin socket's tenant.show gives
 * them (budget.c). */
struct lt_budget_fig {
    int found;                     /* tenant.show answered ok */
    int has_budget;                /* the tenant's plan has a budget */
    uint64_t amount_us, period_us; /* the plan's budget rate */
    uint64_t left_us, reserved_us, used_us, refunded_us;
    uint64_t in_flight, max_inflight; /* now; the plan's cap (0: none) */
    uint64_t asked_us, answered_us;   /* wall clock around the question */
};
/* The verdict on one tenant: spent <= allowed. */
struct lt_budget_verdict {
    int checked, ok;
    int64_t spent_us; /* (reserved - refunded) after minus before */
    uint64_t left_before_us, refill_us, slack_us, rounding_us, allowed_us, inflight;
    char why[384]; /* why not checked, or by how much it overspent */
};
/* One line to the admin socket, one line back (malloc'd, no newline). */
int lt_admin_query(const char *sock_path, const char *line, char **answer, char *err,
                   size_t errlen);
/* Parses a tenant.show answer. -ENOENT when the node refused the question. */
int lt_budget_fig_parse(const char *answer, struct lt_budget_fig *f, char *err, size_t errlen);
/* tenant.show for one tenant. */
int lt_budget_read(const char *sock_path, const char *tenant, struct lt_budget_fig *f, char *err,
                   size_t errlen);
/* Judges before/after: inflight = requests the tenant can have had in
 * flight at once, step_us = one step's device time, requests = requests
 * the tenant sent (each may round by a few us). 0 with v->checked and v->ok
 * set; -ENOENT/-ESTALE with v->why when it cannot judge. Pure: unit-tested
 * with synthetic figures (test_load_budget.c). */
int lt_budget_judge(const struct lt_budget_fig *before, const struct lt_budget_fig *after,
                    uint64_t inflight, uint64_t step_us, uint64_t requests,
                    struct lt_budget_verdict *v);

/* The ledger check (ledger.c), after the run. */
struct lt_ledger_result {
    int checked;   /* 0: no ledger path, or it could not be attached */
    int conserved; /* gw_ledger_check found no violation */
    int violations;
    int attempts;
    char method[256]; /* how it was read */
    char detail[512]; /* the first violation, or why it was not checked */
    int n_tenants;
    struct lt_tenant_ledger {
        char tenant[64];
        int found;
        uint64_t reserved_us, used_us, refunded_us, inflight;
        /* the budget check (budget.c), from the admin socket */
        struct lt_budget_fig before, after;
        struct lt_budget_verdict budget;
    } tenants[LT_MAX_CLASSES];
    /* slots (segment only): in use after the run, and owned by a lane whose
     * pid is gone (the master's repair should have taken those) */
    int slots_checked;
    uint32_t slots, slots_busy, slots_dead_owner;
    char slots_detail[256];  /* the first dead-owned slot */
    int budget_checked;      /* tenants whose budget was judged */
    int budget_over;         /* of those, how many overspent */
    char budget_detail[512]; /* why not checked, or the first overspend */
};
void lt_ledger_check(const struct lt_scenario *sc, struct lt_ledger_result *r);
/* Before the run: the tenants' budget figures from the admin socket (no-op
 * without one). After it, lt_ledger_check reads them again and judges. */
void lt_ledger_before(const struct lt_scenario *sc, struct lt_ledger_result *r);

/* Report (report.c): thresholds are evaluated first; returns the number
 * that failed. */
int lt_thresholds_eval(struct lt_scenario *sc, const struct lt_ledger_result *lr);
void lt_report_table(struct lt_scenario *sc, const struct lt_ledger_result *lr, double elapsed_s);
int lt_report_json(struct lt_scenario *sc, const struct lt_ledger_result *lr, double elapsed_s,
                   const char *path, char *err, size_t errlen);
/* A metric of a class by name (success_rate, rate_429, ttft_p99_ms, ...);
 * -ENOENT for an unknown name. */
int lt_metric(struct lt_class *c, const char *metric, double *out);

#endif
