/* gw_common/cluster.h - this node's side of the farm's shared budgets
 * (issue 19; docs/ARCHITECTURE.md, "The farm"): the segment's cluster
 * region, where the cluster agent (supervisor/cluster.c, the one process
 * that talks to Redis) puts leases of farm-wide capacity and the fronts
 * take from them without a lock and without waiting on Redis. Part of
 * gw_common.h; include that, not this. */
#ifndef GW_COMMON_CLUSTER_H
#define GW_COMMON_CLUSTER_H

#include "gw_common/config.h"
#include "gw_common/segment.h"

#include <stdint.h>

/* Redis as the agent last found it. OFF: no agent has reported yet (the
 * node has just started); requests wait for a lease up to cluster.wait_ms. */
enum gw_cl_state { GW_CL_OFF = 0, GW_CL_UP = 1, GW_CL_DOWN = 2 };

/* What gw_cluster_take found. */
enum gw_cl_take {
    GW_CL_TAKEN = 0,       /* one request token taken from the node's lease */
    GW_CL_WAIT = 1,        /* the lease is empty or expired: ask the agent and wait */
    GW_CL_DENIED = 2,      /* the farm-wide account is exhausted until *retry_us from now */
    GW_CL_UNAVAILABLE = 3, /* Redis is down: the plan's fail mode decides */
};

/* Takes one request token for tenant account `a` from this node's lease.
 * Lock-free (one CAS); never waits. *retry_us is set for GW_CL_DENIED. */
int gw_cluster_take(struct gw_segment *seg, struct gw_acct a, uint64_t now_us, uint64_t *retry_us);
/* A request of tenant `a` starts (+1) or stops (-1) waiting for a lease.
 * +1 also records the account in its cell (so the agent can name it) and
 * wakes the agent (futex). */
void gw_cluster_want(struct gw_segment *seg, struct gw_acct a, int delta);
/* Fail-open admission while Redis is down: the plan's windows divided by
 * the live nodes last seen (at least one request per window), on this
 * node's own cells. 0 admitted (and counted, for reconciliation when Redis
 * returns); GW_EREFUSED with *retry_us. */
int gw_cluster_open_admit(struct gw_segment *seg, struct gw_acct a, const struct gw_plan *p,
                          uint64_t now_us, uint64_t *retry_us);

/* ---------------------------------------------------------- the agent's side */

/* One tenant cell as the agent sees it. */
struct gw_cl_cell {
    struct gw_acct acct; /* the tenant account */
    uint64_t tokens;     /* unused request tokens of this node's lease */
    uint64_t expires_us; /* the lease's local end (wall clock) */
    uint64_t want;       /* requests waiting for a lease now */
    uint64_t deny_until; /* farm-wide exhausted until (wall us), 0 none */
    uint64_t open_spent; /* admitted fail-open, not yet charged to Redis */
    uint64_t granted;    /* request tokens granted to this node, ever */
};
/* Cell `i` (0 .. budgets-1): 0, or -ENOENT for a cell no request used. */
int gw_cluster_cell(const struct gw_segment *seg, uint32_t i, struct gw_cl_cell *out);
/* Adds k tokens to cell i's lease, which now ends at expires_us, and lifts
 * any denial. */
void gw_cluster_grant(struct gw_segment *seg, uint32_t i, uint64_t k, uint64_t expires_us);
/* Empties cell i's lease: the unused tokens it held (to give back). */
uint64_t gw_cluster_reclaim(struct gw_segment *seg, uint32_t i);
void gw_cluster_deny(struct gw_segment *seg, uint32_t i, uint64_t until_us);
/* Takes the fail-open admissions not yet reconciled (to charge to Redis). */
uint64_t gw_cluster_open_drain(struct gw_segment *seg, uint32_t i);
/* Sets cell i's waiting count to 0 if it is still `seen` (a count a dead
 * front left behind; see supervisor/cluster.c). */
void gw_cluster_want_reset(struct gw_segment *seg, uint32_t i, uint64_t seen);
/* Puts back n of them when the charge could not be made. */
void gw_cluster_open_undrain(struct gw_segment *seg, uint32_t i, uint64_t n);
/* The futex word fronts bump when they want a lease; the agent sleeps on it
 * up to ms (0 when woken or the word moved, -ETIMEDOUT, -EINTR). */
uint32_t gw_cluster_demand(const struct gw_segment *seg);
int gw_cluster_wait_demand(struct gw_segment *seg, uint32_t seen, uint32_t ms);
void gw_cluster_set_state(struct gw_segment *seg, int state, uint64_t live_nodes, uint64_t now_us);

/* Counters (monotone; /metrics and gpuwardenctl cluster). */
enum gw_cl_counter {
    GW_CLC_ROUND_TRIPS = 0, /* Redis calls made */
    GW_CLC_GRANTS,          /* leases granted (>= 1 token) */
    GW_CLC_TOKENS,          /* request tokens granted */
    GW_CLC_RETURNED,        /* unused tokens given back */
    GW_CLC_DENIALS,         /* lease asks answered "exhausted" */
    GW_CLC_TIMEOUTS,        /* Redis calls that timed out */
    GW_CLC_ERRORS,          /* other failures: refused connection, bad reply, auth */
    GW_CLC_OPEN_ADMITS,     /* requests admitted fail-open */
    GW_CLC_CLOSED_REFUSALS, /* requests refused 503 budget_unavailable */
    GW_CLC_RECONCILED,      /* fail-open admissions charged to Redis afterwards */
    GW_CLC_OPEN_US,         /* time spent with Redis down (us) */
    GW_CLC_LEASE_CALLS,     /* round trips for leases: take, give back, reconcile */
    GW_CLC_GPU_GRANTS,      /* GPU leases granted (>= 1 GPU-us) */
    GW_CLC_GPU_US,          /* GPU-us granted */
    GW_CLC_GPU_RETURNED,    /* unused GPU-us given back */
    GW_CLC_GPU_DENIALS,     /* GPU lease asks answered "exhausted" */
    GW_CLC_GPU_OPEN_US,     /* GPU-us reserved fail-open */
    GW_CLC_GPU_RECONCILED,  /* fail-open GPU-us charged to Redis afterwards */
    GW_CLC_GPU_SHORT,       /* worker extensions the lease could not cover (refused) */
    GW_CLC_GPU_OVERDRAWN,   /* GPU-us worker extensions took beyond the lease (its debt) */
    GW_CLC_OUT_GRANTS,      /* output-token leases granted (>= 1 token) */
    GW_CLC_OUT_TOKENS,      /* output tokens granted */
    GW_CLC_OUT_RETURNED,    /* unused output tokens given back */
    GW_CLC_OUT_DENIALS,     /* output-token lease asks answered "exhausted" */
    GW_CLC_OUT_OPEN,        /* output tokens generated by requests admitted fail-open */
    GW_CLC_OUT_RECONCILED,  /* fail-open output tokens charged to Redis afterwards */
    GW_CLC_OUT_OVERRUN,     /* output tokens charged beyond the pool (its debt) */
    GW_CLC_COUNT
};
void gw_cluster_count(struct gw_segment *seg, int counter, uint64_t n);

struct gw_cl_status {
    int state;           /* enum gw_cl_state */
    uint64_t since_us;   /* when it last changed */
    uint64_t live_nodes; /* from the last heartbeat (>= 1) */
    uint64_t counters[GW_CLC_COUNT];
};
void gw_cluster_status(const struct gw_segment *seg, struct gw_cl_status *out);
const char *gw_cluster_state_name(int state);

/* The live nodes' names (the agent, from the heartbeat it just made):
 * `names` newline-separated, cut at the region's size (1008 bytes). */
void gw_cluster_set_peers(struct gw_segment *seg, const char *names, uint64_t count);
/* Copies them into out (NUL-terminated, newline-separated); the number of
 * live nodes, or -EAGAIN when the agent kept writing while we read. */
int gw_cluster_peers(const struct gw_segment *seg, char *out, size_t len);

/* ------------------------------------------------------------ lease sizes */

/* A tenant's consumption of one lease kind on a node, smoothed: an
 * exponentially weighted moving average of units (request tokens or GPU-us)
 * per second, sampled by the agent at each lease it takes. */
struct gw_cl_ewma {
    double per_s;       /* the average */
    uint64_t last_ns;   /* CLOCK_MONOTONIC of the last sample, 0 none */
    uint64_t last_used; /* the consumption counter then */
};
/* Samples the counter `used` at now_ns: the rate since the last sample
 * moves the average by dt / (dt + ttl), so it forgets what is older than
 * about one lease's life. The first sample (and a counter that went back,
 * as after an agent restart) only sets the baseline. Returns the average. */
double gw_cluster_ewma_sample(struct gw_cl_ewma *e, uint64_t used, uint64_t now_ns,
                              uint32_t ttl_ms);
/* A lease's size for a tenant whose limit (the first window's, or the
 * budget's amount in GPU-us) is `limit`: its recent demand per_s over one
 * lease TTL, within [lease_percent, lease_max_percent] % of the limit (at
 * least 1); at least `need` (what waits now beyond what the node holds);
 * at most cap. */
uint64_t gw_cluster_lease_size(const struct gw_cluster_cfg *cl, uint64_t limit, double per_s,
                               uint64_t need, uint64_t cap);

/* ------------------------------------------------ GPU-microsecond leases */

/* Takes x GPU-us for tenant account `a` from this node's GPU lease (a
 * request's reservation). Lock-free (one CAS); never waits. Same results
 * as gw_cluster_take. */
int gw_cluster_gpu_take(struct gw_segment *seg, struct gw_acct a, uint64_t x, uint64_t now_us,
                        uint64_t *retry_us);
/* Puts x GPU-us back (a reservation that was not made). */
void gw_cluster_gpu_put(struct gw_segment *seg, struct gw_acct a, uint64_t x);
/* A request parked for a GPU lease wants x GPU-us (+1) or no longer (-1);
 * +1 wakes the agent. */
void gw_cluster_gpu_want(struct gw_segment *seg, struct gw_acct a, uint64_t x, int sign);
/* The slot's reservation came from the lease (global 0: its tenant's;
 * 1: the node's global pool's): settlement refunds its unused part there
 * and a worker's extension is taken from it. 0, or GW_ESTATE when the slot
 * is not ours any more. */
int gw_cluster_gpu_bind(struct gw_segment *seg, struct gw_slot_ref ref, int global);
/* Fail-open reservation of x GPU-us while Redis is down: the budget divided
 * by the live nodes last seen, on this node's own cell; counted for
 * reconciliation. 0, or GW_EREFUSED with *retry_us. */
int gw_cluster_gpu_open_admit(struct gw_segment *seg, struct gw_acct a,
                              const struct gw_budget_rate *b, uint64_t x, uint64_t now_us,
                              uint64_t *retry_us);

/* One tenant's GPU cell as the agent sees it (the account is the rate
 * cell's: gw_cluster_cell). */
struct gw_cl_gpu {
    int64_t tokens;      /* unused GPU-us of this node's lease; below 0: overdrawn */
    uint64_t expires_us; /* the lease's local end (wall clock) */
    uint64_t want;       /* GPU-us of requests waiting for a lease now */
    uint64_t deny_until; /* farm-wide exhausted until (wall us), 0 none */
    uint64_t open_spent; /* GPU-us reserved fail-open, not yet charged to Redis */
    uint64_t granted;    /* GPU-us granted to this node, ever */
    uint64_t shortfall;  /* GPU-us a worker's extension lacked since the last look */
    uint64_t overdraft;  /* how far below 0 workers' extensions may take the pool */
};
int gw_cluster_gpu_cell(const struct gw_segment *seg, uint32_t i, struct gw_cl_gpu *out);
/* Adds x GPU-us to cell i's pool (paying its debt first), which now ends
 * at expires_us and may be overdrawn by up to overdraft_us; lifts any
 * denial. */
void gw_cluster_gpu_grant(struct gw_segment *seg, uint32_t i, uint64_t x, uint64_t expires_us,
                          uint64_t overdraft_us);
/* Empties cell i's pool of what it holds (to give back); a debt (a pool
 * below 0) stays for a later grant to pay. */
uint64_t gw_cluster_gpu_reclaim(struct gw_segment *seg, uint32_t i);
void gw_cluster_gpu_deny(struct gw_segment *seg, uint32_t i, uint64_t until_us);
uint64_t gw_cluster_gpu_open_drain(struct gw_segment *seg, uint32_t i);
void gw_cluster_gpu_open_undrain(struct gw_segment *seg, uint32_t i, uint64_t n);
/* As gw_cluster_want_reset, for the GPU-us a dead front left waiting. */
void gw_cluster_gpu_want_reset(struct gw_segment *seg, uint32_t i, uint64_t seen);
/* Takes (and clears) the shortfall hint. */
uint64_t gw_cluster_gpu_shortfall(struct gw_segment *seg, uint32_t i);

/* -------------------------------------------------- output-token leases */

/* Takes one output token for tenant account `a` from this node's output
 * lease (a request's admission: "at least one token left", made atomic).
 * Lock-free (one CAS); never waits. Same results as gw_cluster_take. */
int gw_cluster_out_take(struct gw_segment *seg, struct gw_acct a, uint64_t now_us,
                        uint64_t *retry_us);
/* A request admitted from the lease ends having generated n tokens: the
 * n - 1 beyond its admission's token are charged to the pool, which may go
 * below 0 (a debt the next grant pays first); n == 0 puts the token back. */
void gw_cluster_out_settle(struct gw_segment *seg, struct gw_acct a, uint64_t n);
/* A request parked for an output lease starts (+1) or stops (-1) waiting;
 * +1 wakes the agent. */
void gw_cluster_out_want(struct gw_segment *seg, struct gw_acct a, int delta);
/* Fail-open admission while Redis is down: one token of the window w
 * divided by the live nodes last seen (at least 1), on this node's own
 * cell. 0, or GW_EREFUSED with *retry_us. */
int gw_cluster_out_open_admit(struct gw_segment *seg, struct gw_acct a, const struct gw_window *w,
                              uint64_t now_us, uint64_t *retry_us);
/* ... and its end with n tokens generated: the n - 1 beyond the admission's
 * token charged to the node's cell, all n counted for reconciliation. */
void gw_cluster_out_open_settle(struct gw_segment *seg, struct gw_acct a, const struct gw_window *w,
                                uint64_t n, uint64_t now_us);

/* One tenant's output cell as the agent sees it (the account is the rate
 * cell's: gw_cluster_cell). */
struct gw_cl_out {
    int64_t tokens;      /* unused output tokens of this node's lease; below 0: a debt */
    uint64_t expires_us; /* the lease's local end (wall clock) */
    uint64_t want;       /* requests waiting for a lease now */
    uint64_t deny_until; /* farm-wide exhausted until (wall us), 0 none */
    uint64_t open_spent; /* tokens generated fail-open, not yet charged to Redis */
    uint64_t granted;    /* tokens granted to this node, ever */
    uint64_t charged;    /* tokens charged to the pool, ever */
};
int gw_cluster_out_cell(const struct gw_segment *seg, uint32_t i, struct gw_cl_out *out);
/* Adds x tokens to cell i's pool (paying its debt first), which now ends at
 * expires_us; lifts any denial. */
void gw_cluster_out_grant(struct gw_segment *seg, uint32_t i, uint64_t x, uint64_t expires_us);
/* Empties cell i's pool of what it holds (to give back); a debt stays. */
uint64_t gw_cluster_out_reclaim(struct gw_segment *seg, uint32_t i);
void gw_cluster_out_deny(struct gw_segment *seg, uint32_t i, uint64_t until_us);
uint64_t gw_cluster_out_open_drain(struct gw_segment *seg, uint32_t i);
void gw_cluster_out_open_undrain(struct gw_segment *seg, uint32_t i, uint64_t n);
/* As gw_cluster_want_reset, for the requests a dead front left waiting. */
void gw_cluster_out_want_reset(struct gw_segment *seg, uint32_t i, uint64_t seen);

#endif
