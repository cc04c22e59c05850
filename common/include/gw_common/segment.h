/* gw_common/segment.h - the shared segment every process maps: ledger,
 * budgets, slots, queue, lanes, process records, metrics, limit overrides,
 * learned lengths and fairness counters (docs/ARCHITECTURE.md, "The segment"). The structs
 * that live in the segment are private to common/ (seg_internal.h) and
 * reached through functions; struct gw_slot_req is the value a slot's
 * request is copied in and out as (gw_slot_set_req, gw_slot_get_req). Part
 * of gw_common.h; include that, not this. */
#ifndef GW_COMMON_SEGMENT_H
#define GW_COMMON_SEGMENT_H

#include "gw_common/config.h"
#include "gw_util.h"

#include <float.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------- the segment */

#define GW_SEG_MAGIC "GWLEDGR" /* 7 chars + NUL = 8 bytes */
#define GW_SEG_VERSION                                                                             \
    15u              /* 3: account ban cell, lane drain word; 4: slot rep_max,                     \
                      * watchdog kill counters in the header; 5: learned                           \
                      * lengths region, 16 kill counters; 6: metrics and                           \
                      * limit-override areas after the learned lengths;                            \
                      * 7: a VTC counter in each budget record, the plan's                         \
                      * weight_milli in the slot request (both in former                           \
                      * padding: no size changed); 8: resume_tokens in the                         \
                      * config, a resume area after each slot's output;                            \
                      * 9: the repetition word's run, kind and top-1 fields                        \
                      * (same size), two more kill reasons; 10: the                                \
                      * farming region (farm.c) after the limit overrides;                         \
                      * 11: the address-range rules region after the farming                       \
                      * region (netrules.c), then the overflow buckets                             \
                      * (overflow.c) and the revoked JWT ids (jti.c); an                           \
                      * account's last word is `widths`;                                           \
                      * 12: the cluster region (area + one cell per                                \
                      * budget record) at the end;                                                 \
                      * 13: the cluster region's live-node names after its                         \
                      * area, and a GPU lease cell per budget record after                         \
                      * the rate cells; the API keys file's generation (apikey_gen.c)              \
                      * after the cluster region, then the                                         \
                      * exact moving windows' logs (moving.c); the                                 \
                      * widths word's lanes carry the form; then the                               \
                      * per-tenant counters (tstats.c, one record per                              \
                      * budget record); 14: an output-token lease cell                             \
                      * per budget record (cluster_out.c) at the end, and                          \
                      * seven more cluster counters (in the area's padding);                       \
                      * 15: the address farming records (farm_ip.c) after                          \
                      * the output cells, their count in the config (40                            \
                      * bytes), the header 512 */
#define GW_PROBE 16  /* accounts live within 16 entries of home */
#define GW_ID_MAX 40 /* bytes of account id kept for display */

struct gw_seg_header;
struct gw_account;
struct gw_budget;
struct gw_slot;
struct gw_qcell;
struct gw_lane;
struct gw_metrics_area;
struct gw_limits_area;
struct gw_net_area;
struct gw_ovf_area;
struct gw_jti_area;
struct gw_cluster_area;
struct gw_cluster_cell;
struct gw_apikey_area;
struct gw_mvlog;
struct gw_cl_peers;
struct gw_cluster_gpu;
struct gw_cluster_out;
struct gw_lenest_rec;
struct gw_farm_rec;
struct gw_tstat_rec;
struct gw_farm_iprec;

/* A process's view of the mapped segment. Not shared itself. */
struct gw_segment {
    char path[256];
    int fd;
    size_t size;
    uint8_t *base;
    struct gw_seg_header *hdr;
    struct gw_account *accounts;
    struct gw_budget *budgets;
    struct gw_slot *slots;
    struct gw_qcell *qcells;
    struct gw_lane *lanes;
    struct gw_lenest_rec *lenest; /* learned lengths, one per budget record (lenest.c) */
    struct gw_seg_config cfg;
    size_t budget_stride;             /* bytes per budget record (depends on lanes) */
    size_t slot_stride;               /* bytes per slot (depends on prompt/output) */
    int lane;                         /* our lane once gw_lane_acquire succeeded, else -1 */
    uint32_t slot_hint;               /* where our next free-slot search starts */
    struct gw_metrics_area *metrics;  /* node counters (gw_metrics_*) */
    struct gw_limits_area *limits;    /* run-time tenant limits (gw_limits_*) */
    struct gw_farm_rec *farm;         /* farming records, one per budget record (farm.c) */
    struct gw_net_area *nets;         /* address-range bans and allow entries (gw_net_*) */
    struct gw_ovf_area *ovf;          /* overflow buckets for a full address table (overflow.c) */
    struct gw_jti_area *jti;          /* revoked JWT ids (jti.c) */
    struct gw_cluster_area *cluster;  /* the farm's state on this node (gw_cluster_*) */
    struct gw_cluster_cell *cl_cells; /* one per budget record (cluster.c) */
    struct gw_apikey_area *apikeys;   /* the API keys file's generation (apikey_gen.c) */
    struct gw_mvlog *mvlog;           /* exact moving windows' logs (moving.c) */
    struct gw_tstat_rec *tstats;      /* per-tenant counters, one per budget record (tstats.c) */
    struct gw_cl_peers *cl_peers;     /* live nodes' names (cluster.c) */
    struct gw_cluster_gpu *cl_gpu;    /* GPU-us leases, one per budget record (cluster_gpu.c) */
    struct gw_cluster_out *cl_out; /* output-token leases, one per budget record (cluster_out.c) */
    struct gw_farm_iprec *farm_ip; /* address farming records (farm_ip.c) */
};

/* Opens `path`, creating it (mode 0600) with `cfg` when it does not exist.
 * When it exists it is attached and must have our magic, GW_SEG_VERSION, the
 * exact size its header states and region sizes equal to `cfg`; otherwise
 * GW_ELAYOUT with the file and the mismatch named in err, e.g.
 * "/var/lib/gpuwarden/ledger: layout version 7, this build reads 1". */
int gw_segment_open(struct gw_segment *seg, const char *path, const struct gw_seg_config *cfg,
                    char *err, size_t errlen);
/* Attaches an existing segment, taking the sizes from its header (children,
 * tools). Same checks as gw_segment_open. */
int gw_segment_attach(struct gw_segment *seg, const char *path, char *err, size_t errlen);
/* Unmaps and closes. Releases our lane if we hold one. */
void gw_segment_close(struct gw_segment *seg);
/* Bytes a segment with `cfg` occupies, or 0 if cfg is invalid (err says why). */
size_t gw_segment_size(const struct gw_seg_config *cfg, char *err, size_t errlen);

/* Segment-wide counters (monotonic; for status and metrics). */
struct gw_seg_stats {
    uint64_t accounts_live;
    uint64_t accounts_reclaimed;
    uint64_t table_full; /* new accounts refused for lack of room */
    uint64_t budgets_used;
    uint64_t repairs; /* dead lanes repaired */
};
void gw_segment_stats(const struct gw_segment *seg, struct gw_seg_stats *st);

/* ------------------------------------------------------------------- lanes */

/* A lane is a process's identity in the segment: each attached process that
 * changes money (fronts, workers, the master) holds one. A lane owns its
 * columns in every budget record (single writer) and a journal that records
 * the one money operation it has in progress, so a process killed at any
 * instruction leaves state the master can complete or roll back exactly. */

/* Takes a free lane for this process (pid). GW_EFULL when none is free. */
int gw_lane_acquire(struct gw_segment *seg);
/* Pid that holds lane i, 0 if free. */
pid_t gw_lane_pid(const struct gw_segment *seg, int lane);

/* ------------------------------------------------------------------ ledger */

enum gw_kind { GW_KIND_GLOBAL = 1, GW_KIND_TENANT = 2, GW_KIND_IP = 3 };

/* A reference to a live account: its index and the generation it had when
 * looked up. Operations through a reference whose account was reclaimed
 * since return GW_ESTALE; look it up again. */
struct gw_acct {
    uint32_t index;
    uint8_t gen;
};

/* Finds the account (kind, id); with `create`, inserts it when absent.
 * Tenant and global accounts get a budget record at creation. Ip accounts
 * whose cells are all idle are reclaimed when the probe window is full;
 * when nothing can be reclaimed, GW_EFULL (fail closed: a new ip is refused
 * rather than let through unlimited) and the table_full counter counts it.
 * Tenant and global accounts are never reclaimed: they carry budgets and
 * their accounting history. -ENOENT when absent and !create. */
int gw_ledger_get(struct gw_segment *seg, enum gw_kind kind, const void *id, size_t idlen,
                  int create, uint64_t now_us, struct gw_acct *out);

/* One rate check within an admission: account, which of its GW_RATE_CELLS,
 * and the window's rate. */
struct gw_admit_item {
    struct gw_acct acct;
    uint8_t cell;
    struct gw_rate rate;
};

/* Checks every item (typically ip, tenant and global windows) and takes one
 * unit from all of them or from none. 0 when admitted. GW_EREFUSED when any
 * refuses; then *retry_us is the earliest wait after which every item would
 * admit (for Retry-After), and no cell is left changed (a refusal found
 * before any write leaves every word bit-identical). GW_ESTALE if an account
 * was reclaimed under us (nothing taken). At most 16 items. */
int gw_ledger_admit(struct gw_segment *seg, const struct gw_admit_item *items, int n,
                    uint64_t now_us, uint64_t *retry_us);

/* Remaining units in one rate cell at now_us (for headers and status). */
uint64_t gw_ledger_rate_remaining(const struct gw_segment *seg, struct gw_acct a, int cell,
                                  const struct gw_rate *r, uint64_t now_us);
/* Device-time budget left in us at now_us. */
uint64_t gw_ledger_budget_left(const struct gw_segment *seg, struct gw_acct a,
                               const struct gw_budget_rate *b, uint64_t now_us);

/* Concurrency: takes one in-flight unit if fewer than `max` are taken.
 * GW_EREFUSED at the limit. An account with in-flight units is never
 * reclaimed. */
int gw_ledger_inflight_take(struct gw_segment *seg, struct gw_acct a, uint64_t max);
int gw_ledger_inflight_put(struct gw_segment *seg, struct gw_acct a);
uint64_t gw_ledger_inflight(const struct gw_segment *seg, struct gw_acct a);

/* Accounting totals of a budget account, summed over lanes (exact). */
struct gw_money {
    uint64_t reserved_us; /* taken from the budget by reservations, ever */
    uint64_t used_us;     /* device time charged at settlement, ever */
    uint64_t refunded_us; /* reservation returned at settlement, ever */
};
int gw_ledger_money(const struct gw_segment *seg, struct gw_acct a, struct gw_money *m);

/* Bans: an account's ban cell holds the wall-clock time (us) until which
 * admission refuses it (403 "banned"); 0 or a past time means not banned.
 * Gen-tagged like every cell, so a ban never lands in a reused entry; an ip
 * account under a ban is not idle and so is never reclaimed while the ban
 * lasts. Sets the ban to until_us (0 lifts it). GW_ESTALE for a stale ref. */
int gw_ledger_ban(struct gw_segment *seg, struct gw_acct a, uint64_t until_us);
/* The ban's end in us when the account is banned at now_us, else 0. */
uint64_t gw_ledger_banned_until(const struct gw_segment *seg, struct gw_acct a, uint64_t now_us);

/* Forgives a budget account everything its decision cell holds: the cell
 * goes back to "full budget" (as for an account never used), including what
 * in-flight reservations took; their refunds at settlement then change
 * nothing (a refund floors at an idle cell). The accounting columns
 * (gw_ledger_money) are history and stay as they are, so conservation
 * holds. -ENOENT for an account without a budget, GW_ESTALE for a stale
 * ref. */
int gw_ledger_budget_reset(struct gw_segment *seg, struct gw_acct a);

/* Account id for display; returns its length. */
size_t gw_ledger_id(const struct gw_segment *seg, struct gw_acct a, enum gw_kind *kind, char *buf,
                    size_t buflen);

/* Ages every ip account whose cells are idle at now_us out of the table
 * (the master does this periodically; inserts also reclaim on demand).
 * Returns how many were reclaimed. */
int gw_ledger_reclaim_idle(struct gw_segment *seg, uint64_t now_us);

/* ------------------------------------------------------------------- slots */

/* A slot is one in-flight request. Its state word moves
 *   FREE -> ADMITTED -> QUEUED -> RUNNING -> DONE | FAILED | KILLED -> FREE
 * only by CAS (ADMITTED and QUEUED may also go straight to FAILED/KILLED:
 * refused or cancelled before a worker took it). Each claim bumps the slot's
 * sequence number, so a stale reference (index, seq) never touches a later
 * request. */
enum gw_slot_state {
    GW_SLOT_FREE = 0,
    GW_SLOT_ADMITTED = 1,
    GW_SLOT_QUEUED = 2,
    GW_SLOT_RUNNING = 3,
    GW_SLOT_DONE = 4,
    GW_SLOT_FAILED = 5,
    GW_SLOT_KILLED = 6,
};
const char *gw_slot_state_name(int state);

struct gw_slot_ref {
    uint32_t index;
    uint32_t seq;
};

/* Claims a FREE slot for this process's lane (state ADMITTED). GW_EFULL when
 * every slot is in use. */
int gw_slot_claim(struct gw_segment *seg, struct gw_slot_ref *out);
/* Moves the slot from `from` to `to` if that is a legal transition and the
 * slot is still (ref.seq, from). The new owner lane is ours. An ADMITTED or
 * RUNNING slot moves only by its owner lane (it may be writing money or
 * output into it); a QUEUED one by anyone (a worker taking it, its front
 * cancelling it). GW_ESTATE for an illegal transition, a slot that is not
 * in `from` any more, or a slot owned by another lane. */
int gw_slot_move(struct gw_segment *seg, struct gw_slot_ref ref, int from, int to);
/* Current state of the slot if it still has ref.seq, else -1. */
int gw_slot_state(const struct gw_segment *seg, struct gw_slot_ref ref);
/* Slot `index` as it is now, for status displays (admin socket, watchdog):
 * its state, with *ref set to its current sequence; -EINVAL when index is
 * out of range. A reader that copies the request afterwards checks with
 * gw_slot_state(ref) that it still has the same request. */
int gw_slot_peek(const struct gw_segment *seg, uint32_t index, struct gw_slot_ref *ref);
/* Lane that owns the slot now (or -1). */
int gw_slot_owner(const struct gw_segment *seg, struct gw_slot_ref ref);

/* The tenant account the slot's money comes from (gw_slot_set_accounts), if
 * the slot still has ref.seq: 0, GW_ESTATE for a stale ref, -ENOENT when
 * no account was set. For the watchdog's learned lengths. */
int gw_slot_tenant(const struct gw_segment *seg, struct gw_slot_ref ref, struct gw_acct *out);
/* Budget accounts the slot's money comes from (tenant and global). Set by the
 * claimer while ADMITTED, before any reservation. */
int gw_slot_set_accounts(struct gw_segment *seg, struct gw_slot_ref ref, struct gw_acct tenant,
                         struct gw_acct global, int inflight_held);
/* With inflight_held, the caller took one in-flight unit on the tenant
 * account (gw_ledger_inflight_take) and settlement gives it back. */

/* ------------------------------------------------------------------ budget */

/* Reserves `amount_us` of device time for the slot from both its budget
 * accounts (all or nothing). GW_EREFUSED with *retry_us when either budget
 * cannot cover it. The rates are remembered in each account's budget record
 * and used by later charges, settlement and repair. Journaled: a process
 * killed anywhere inside leaves accounting the repair makes exact. */
int gw_budget_reserve(struct gw_segment *seg, struct gw_slot_ref ref, uint64_t amount_us,
                      const struct gw_budget_rate *tenant, const struct gw_budget_rate *global,
                      uint64_t now_us, uint64_t *retry_us);
/* Records that the slot has used `used_us` of device time in total (monotone;
 * a smaller value than before is -EINVAL). When that exceeds what is
 * reserved, the difference is reserved first; GW_EREFUSED when the budget
 * cannot cover it (the generation must stop: finish_reason "budget"); the
 * slot's used time is then capped at its reservation, so an account never
 * goes below zero and the overspend of that one step is ours. */
int gw_budget_charge(struct gw_segment *seg, struct gw_slot_ref ref, uint64_t used_us,
                     uint64_t now_us);
/* Settles the slot's money exactly once: used device time stays spent, the
 * rest of the reservation goes back to both budgets, and the in-flight units
 * are returned. The slot must be in a terminal state (DONE, FAILED, KILLED).
 * Returns 1 when this call settled, 0 when it was already settled (a second
 * call is a no-op), GW_ESTATE when the slot is not terminal. */
int gw_budget_settle(struct gw_segment *seg, struct gw_slot_ref ref);
/* Reserved and used device time recorded in the slot. */
int gw_slot_money(const struct gw_segment *seg, struct gw_slot_ref ref, uint64_t *reserved_us,
                  uint64_t *used_us, int *settled);

/* A slot whose front died while a worker ran it (gw_lane_repair marks it
 * and sets its cancel word): once terminal, settles and releases it and
 * returns 1; 0 for any other slot (or one still running). For the master
 * only (its watchdog scan), the one process that releases such slots. */
int gw_slot_reap_orphan(struct gw_segment *seg, struct gw_slot_ref ref);

/* Frees a settled terminal slot (state -> FREE). GW_ESTATE otherwise. */
int gw_slot_release(struct gw_segment *seg, struct gw_slot_ref ref);

/* ------------------------------------------------------------------- queue */

/* Bounded MPMC ring of slot references (Vyukov's sequence-numbered cells,
 * one 64-bit word per cell so publication is a single CAS). Entries are
 * hints: a worker that pops one takes the request only by moving the slot
 * QUEUED -> RUNNING, so a stale or duplicated entry can never run twice. */
int gw_queue_push(struct gw_segment *seg, struct gw_slot_ref ref); /* GW_EFULL */
/* Pops the oldest entry (GW_EEMPTY when none). The entry stays recorded in
 * our lane's journal until our next queue operation, so if we die before
 * moving the slot QUEUED -> RUNNING, the repair puts it back. */
int gw_queue_pop(struct gw_segment *seg, struct gw_slot_ref *out);
uint64_t gw_queue_depth(const struct gw_segment *seg);

/* ------------------------------------------------------ request in a slot */

/* What travels through a slot besides money. The front writes the request
 * (gw_slot_req, the prompt) while the slot is ADMITTED; the QUEUED ->
 * RUNNING transition (acq_rel) hands it to the worker. The worker writes the
 * output and publishes it through run.written (release); the front reads
 * up to written (acquire). The cancel word is the only thing written from
 * outside (front on disconnect, watchdog, admin): the worker reads it
 * between tokens. */

#define GW_STOP_MAX 4
#define GW_STOP_LEN 64

enum gw_finish_reason {
    GW_FIN_NONE = 0,
    GW_FIN_STOP,      /* end-of-generation token or stop sequence */
    GW_FIN_LENGTH,    /* max_tokens, output buffer or context full */
    GW_FIN_BUDGET,    /* the budget could not cover the next step */
    GW_FIN_KILLED,    /* the watchdog or an operator killed it (see cancel) */
    GW_FIN_CANCELLED, /* the client went away, or the node is draining */
    GW_FIN_ERROR,     /* the worker could not run it (run.error says why) */
};
const char *gw_finish_name(int reason); /* "stop", "length", ... */

/* Cancel reasons (slot run.cancel); 0 = none. */
enum gw_cancel_reason {
    GW_CANCEL_CLIENT = 1, /* client disconnected */
    GW_CANCEL_DRAIN,      /* node shutting down */
    GW_CANCEL_ADMIN,      /* gpuwardenctl kill */
    GW_CANCEL_WATCHDOG,   /* first kill reason code of the watchdog; more follow */
};

/* The watchdog's kill reasons: cancel code GW_CANCEL_WATCHDOG + reason, and
 * the index of the reason's kill counter. Names (gw_wd_reason_name, in
 * gw_supervisor.h) are what clients see as killed_reason. */
enum gw_wd_reason {
    GW_WD_MAX_TOKENS = 0,   /* "max_tokens": hard cap on generated tokens */
    GW_WD_WALL_TIME,        /* "wall_time": hard cap on run time */
    GW_WD_DEVICE_TIME,      /* "device_time": hard cap on device time */
    GW_WD_REPETITION,       /* "repetition": a short cycle repeated many times */
    GW_WD_DIVERGENCE,       /* "divergence": a long repetition, then a change of course */
    GW_WD_ANOMALOUS_LENGTH, /* "anomalous_length": far longer than the tenant's usual */
    GW_WD_STALLED,          /* "worker_stalled": no progress for stall_ms */
    GW_WD_OUTPUT_GUARD,     /* "output_guard": a kill pattern matched the output */
    GW_WD_UNBOUNDED,        /* "unbounded_request": the prompt asked for endless output
                               (GW_REQ_UNBOUNDED) and the run passed the lower cap */
    GW_WD_NEAR_REPETITION,  /* "near_repetition": a cycle repeated with only its numbers
                               changed ("94. Texas / 95. Texas") */
    GW_WD_COLLAPSED,        /* "collapsed_sampling": sampled at temperature > 0 with a
                               near-certain top token while repeating */
    GW_WD_REASONS
};

/* Kill counters by reason (segment header; monotonic, for metrics): added
 * by whoever decides the kill (the master's watchdog, a worker's output
 * guard). reason outside [0, GW_WD_REASONS) is ignored / reads 0. */
void gw_kills_add(struct gw_segment *seg, int reason);
uint64_t gw_kills_get(const struct gw_segment *seg, int reason);

#define GW_REQ_CHAT 1u /* prompt holds role NUL content NUL ... */
#define GW_REQ_SEED 2u
#define GW_REQ_UNBOUNDED                                                                           \
    4u /* the front found the prompt asking for endless output                                     \
          (watchdog.unbounded_patterns): the watchdog applies                                      \
          unbounded_cap_tokens */
/* Bits 16..31 of flags: the repetitions the prompt asked for
 * (gw_asked_count, saturated at 65535), 0 = none. */
#define GW_REQ_ASKED_SHIFT 16
#define GW_REQ_ASKED(flags) ((uint32_t)(flags) >> GW_REQ_ASKED_SHIFT)

/* A request as its slot carries it. One copy lives in the segment (inside
 * struct gw_slot, seg_internal.h), so: fixed-width fields only, size and
 * alignment asserted below, and a change changes GW_SEG_VERSION. float is
 * IEEE 754 binary32 on every target (asserted), so temperature and top_p
 * are fixed-width too. */
struct gw_slot_req {
    uint32_t max_tokens;
    uint32_t top_k;
    float temperature;
    float top_p;
    uint64_t seed;
    uint32_t flags;      /* GW_REQ_* */
    uint32_t prompt_len; /* bytes in the prompt area */
    uint32_t n_stops;
    uint32_t front; /* index of the front to wake on output */
    uint8_t stop_len[GW_STOP_MAX];
    char stops[GW_STOP_MAX][GW_STOP_LEN];
    uint32_t weight_milli; /* the tenant's plan weight x 1000 (gw_weight_milli), >= 1;
                              0 (a writer that did not set it) reads as 1000: read it
                              through gw_req_weight_milli */
    uint64_t created_us;   /* wall clock at admission */
    uint64_t us_per_token; /* the device time per token the reservation assumed */
    char id[40];           /* request id, NUL-terminated */
    char tenant[64];
    char ip[48];
};
_Static_assert(sizeof(float) == 4 && FLT_MANT_DIG == 24 && FLT_MAX_EXP == 128,
               "float is binary32 (gw_slot_req)");
_Static_assert(sizeof(struct gw_slot_req) == 472, "slot request layout");
_Static_assert(_Alignof(struct gw_slot_req) == 8, "slot request alignment");

/* The run record of a slot lives beside the request (struct gw_slot_run in
 * seg_internal.h) and is reached only through the gw_run_* functions below,
 * so every atomic access to it and the reason for its memory order sit in
 * one file (common/run.c). The worker that runs the slot is its only
 * writer, except the cancel word (gw_slot_cancel) and the finish reason a
 * front sets on a slot it cancels before any worker took it. */

/* A copy of a run record's counters, each word read once. */
struct gw_run_view {
    uint64_t tokens; /* generated so far */
    uint64_t prompt_tokens;
    uint64_t device_ns;   /* device time used so far */
    uint64_t started_ns;  /* CLOCK_MONOTONIC when the worker took it, 0 before */
    uint64_t progress_ns; /* CLOCK_MONOTONIC of the last token */
    uint64_t rep;         /* repetition word: GW_REP(period, count) */
    uint64_t rep_max;     /* the longest repetition in this run, same encoding */
    uint32_t finish;      /* enum gw_finish_reason, 0 while running */
    uint32_t cancel;      /* enum gw_cancel_reason or a watchdog code, 0 = none */
};
/* The resume area (segment.resume_tokens ids per slot): the worker records
 * each generated id before its text is published, so that when the worker
 * dies the repair can put the request back in the queue and another worker
 * continue it exactly (re-prefill the prompt, replay the ids, publish only
 * what the client has not had). gw_run_push_id writes id k (k <
 * resume_tokens; others are ignored and make the run not resumable) and
 * then the count k + 1 (release); gw_run_ids copies up to cap ids and
 * returns the count (acquire): -1 when the area overflowed or is absent.
 * gw_run_ids_reset starts a fresh run (count 0). Written by the worker that
 * owns the RUNNING slot only. */
void gw_run_push_id(struct gw_segment *seg, uint32_t index, uint64_t k, int32_t id);
int64_t gw_run_ids(const struct gw_segment *seg, uint32_t index, int32_t *out, uint64_t cap);
void gw_run_ids_reset(struct gw_segment *seg, uint32_t index);
/* 1 when the repair re-queued the slot after its worker died (the worker
 * that takes it continues the run), 0 otherwise or for a stale ref. */
int gw_slot_resumed(const struct gw_segment *seg, struct gw_slot_ref ref);

/* Readers (fronts, watchdog, admin). Out-of-range indexes read zeros. */
void gw_run_read(const struct gw_segment *seg, uint32_t index, struct gw_run_view *out);
/* Output bytes published so far. Everything in the output area before that
 * many bytes is readable once this returns (acquire). */
uint64_t gw_run_written(const struct gw_segment *seg, uint32_t index);
/* The cancel word (0 = none): what the worker polls between tokens. */
uint32_t gw_run_cancel_word(const struct gw_segment *seg, uint32_t index);
/* The finish reason (enum gw_finish_reason, 0 while running). */
uint32_t gw_run_finish_reason(const struct gw_segment *seg, uint32_t index);
/* Copies the error text of a GW_FIN_ERROR run into buf (NUL-terminated);
 * returns its length, 0 when there is none. */
size_t gw_run_error(const struct gw_segment *seg, uint32_t index, char *buf, size_t len);

/* Writers: the worker running the slot. */
void gw_run_begin(struct gw_segment *seg, uint32_t index, uint64_t started_ns);
void gw_run_set_prompt_tokens(struct gw_segment *seg, uint32_t index, uint64_t n);
/* After each token: what the watchdog judges. */
struct gw_run_step {
    uint64_t tokens, device_ns, progress_ns, rep, rep_max;
};
void gw_run_step(struct gw_segment *seg, uint32_t index, const struct gw_run_step *st);
/* Publishes the output area's first `written` bytes (release). */
void gw_run_publish(struct gw_segment *seg, uint32_t index, uint64_t written);
/* Sets the finish reason before the slot goes terminal (the worker; a front
 * for a slot it cancels while QUEUED). */
void gw_run_finish(struct gw_segment *seg, uint32_t index, uint32_t finish);
/* GW_FIN_ERROR with its reason (cut to fit). */
void gw_run_fail(struct gw_segment *seg, uint32_t index, const char *why);

/* The request of a slot (struct gw_slot_req is its copy; the one in the
 * segment is reached only through these two).
 * gw_slot_set_req: the front that claimed the slot writes it while the slot
 * is ADMITTED and ours; GW_ESTATE otherwise. The move to QUEUED publishes it.
 * gw_slot_get_req: a copy (strings NUL-terminated) of the request of a slot
 * that still has ref.seq, checked again after the copy, so the copy is one
 * request's: the slot's state, or GW_ESTATE. Complete once the slot is past
 * ADMITTED (an ADMITTED slot's front may still be writing it). */
int gw_slot_set_req(struct gw_segment *seg, struct gw_slot_ref ref, const struct gw_slot_req *req);
int gw_slot_get_req(const struct gw_segment *seg, struct gw_slot_ref ref, struct gw_slot_req *out);
/* The prompt area (cfg.prompt_bytes) and output area (cfg.output_bytes) of
 * slot `index`; NULL when index is out of range. */
char *gw_slot_prompt(const struct gw_segment *seg, uint32_t index);
char *gw_slot_output(const struct gw_segment *seg, uint32_t index);
/* Asks the slot's worker to stop (first reason wins; 0 when set by us,
 * -EALREADY when another reason was set first). */
int gw_slot_cancel(struct gw_segment *seg, struct gw_slot_ref ref, uint32_t reason);

/* ------------------------------------------------------- process records */

/* Each lane also says what its process is, for readiness, status and the
 * watchdog. Written by the lane's process. */
enum gw_role {
    GW_ROLE_NONE = 0,
    GW_ROLE_MASTER,
    GW_ROLE_FRONT,
    GW_ROLE_WORKER,
    GW_ROLE_TOOL,
    GW_ROLE_CLUSTER /* the cluster agent (supervisor/cluster.c) */
};
enum gw_proc_state { GW_PROC_STARTING = 0, GW_PROC_READY, GW_PROC_DRAINING };

struct gw_proc_info {
    int role, index, state;
    pid_t pid;
    uint64_t heartbeat_ns; /* CLOCK_MONOTONIC */
    uint64_t us_per_token; /* workers: measured device us per token (EWMA), 0 = unknown */
    int64_t slot;          /* workers: slot being run, -1 none */
};
/* Sets our lane's role and index (after gw_lane_acquire). */
void gw_proc_set_role(struct gw_segment *seg, int role, int index);
void gw_proc_set_state(struct gw_segment *seg, int state);
void gw_proc_heartbeat(struct gw_segment *seg, int64_t slot);
void gw_proc_set_cost(struct gw_segment *seg, uint64_t us_per_token);
/* Drain request for lane i's worker, written by the master (admin socket),
 * read by the worker before it takes a slot: a draining worker finishes
 * what it runs and takes nothing new (state GW_PROC_DRAINING) until the
 * request is lifted. gw_proc_set_role clears it (a respawned worker starts
 * undrained; the admin socket sets it again). -EINVAL for a bad lane. */
int gw_proc_request_drain(struct gw_segment *seg, int lane, int drain);
/* 1 when the master asked our lane to drain. */
int gw_proc_drain_requested(const struct gw_segment *seg);
/* 1 when lane i has a drain request. */
int gw_proc_drain_of(const struct gw_segment *seg, int lane);
/* Reads lane i's record; -ENOENT when the lane is free. */
int gw_proc_get(const struct gw_segment *seg, int lane, struct gw_proc_info *out);

/* ------------------------------------------------------------------ repair */

/* Run by the master after reaping the process that held `lane` (and by the
 * master at start-up for every lane whose pid is gone). It
 *  - completes or rolls back the lane's journaled money operation so that
 *    accounting stays exact;
 *  - unblocks queue cells the dead process had claimed but not published or
 *    consumed but not released, and re-queues a slot it popped and had not
 *    started;
 *  - puts a dead worker's RUNNING slots back in the queue, flagged to be
 *    continued (gw_slot_resumed), when nothing asked them to stop (no cancel
 *    word: not the culprit of a kill), they were not continued before, their
 *    ids fit the resume area and their front lives;
 *  - moves every other slot the lane owned that is not terminal to FAILED
 *    (a dead front's clients are gone; a request in a second crash is
 *    lost), settles it, and releases terminal slots whose front (origin
 *    lane) is gone;
 *  - cancels a dead front's slots that a worker is running and marks them
 *    for gw_slot_reap_orphan (the master settles and releases them when the
 *    worker is done);
 *  - unlocks ledger entries the process had locked mid-insert or reclaim;
 *  - frees the lane.
 * Returns the number of slots it failed. Not for concurrent use with
 * itself (one master). */
int gw_lane_repair(struct gw_segment *seg, int lane);
/* gw_lane_repair puts nothing back (the master's start: the fronts of an
 * earlier run are gone, a zombie's pid may still answer kill(pid, 0));
 * this one does, for a worker that died under a live node, and counts
 * them in *resumed. */
int gw_lane_repair_resume(struct gw_segment *seg, int lane, int *resumed);

/* Conservation check over the whole segment, for tests and the admin
 * socket: for every budget account, reserved = used + refunded + what live
 * slots hold. Returns the number of accounts that violate it (0 = conserved);
 * with a buffer, describes the first violation. */
int gw_ledger_check(const struct gw_segment *seg, char *err, size_t errlen);

/* ----------------------------------------------------------------- metrics */

/* The node's counters for GET /metrics live in the segment (metrics.c), so
 * every front answers with the same totals whichever one a scrape reaches.
 * Each is monotonic and added with one relaxed atomic add by the process
 * that saw the event; a process that dies loses at most the increment it
 * had not made yet. Out-of-range arguments are ignored. */

/* Routes as counted: enum gw_route's values (1..6), 0 for a request that
 * matched no route or was refused before routing (malformed, timeout). */
#define GW_M_ROUTES 8
/* Why admission said no (a label of gpuwarden_admission_refusals_total). */
enum gw_refusal {
    GW_REF_IP_RATE = 0, /* "ip_rate": the client address's rate */
    GW_REF_TENANT_RATE, /* "tenant_rate": the tenant's or the node's rate */
    GW_REF_BUDGET,      /* "budget": GPU-time budget exhausted */
    GW_REF_CONCURRENCY, /* "concurrency": too many in flight for the tenant */
    GW_REF_BANNED,      /* "banned": tenant or address banned */
    GW_REF_AUTH,        /* "auth": missing or invalid token */
    GW_REF_FORBIDDEN,   /* "forbidden": tenant or plan not allowed */
    GW_REF_OVERLOADED,  /* "overloaded": no slot, queue or table room */
    GW_REF_DRAINING,    /* "draining": the node is shutting down */
    GW_REF_FARMING,     /* "farming": prompt farming refused or throttled (farm.c) */
    GW_REF_OUTPUT,      /* "output_tokens": the plan's output_tokens window is spent */
    GW_REF_REASONS
};
const char *gw_refusal_name(int reason);
/* Plain counters. */
enum gw_mcounter {
    GW_MC_TOKENS = 0,       /* generated tokens */
    GW_MC_PROMPT_TOKENS,    /* prompt tokens processed */
    GW_MC_DEVICE_NS,        /* device time, ns */
    GW_MC_RESTARTS_FRONT,   /* fronts respawned by the master */
    GW_MC_RESTARTS_WORKER,  /* workers respawned by the master */
    GW_MC_GUARD_REDACTIONS, /* output-guard matches sent as "[REDACTED]" (gw_guard_report) */
    GW_MC_FARM_FLAGGED,     /* tenants and addresses at the ladder's flagged step */
    GW_MC_FARM_REFUSED,     /* tenants and addresses at its refused step */
    GW_MC_N
};
/* Histograms; every one in seconds with the same fixed bucket bounds
 * (gw_metrics_bucket_ns). */
enum gw_mhist {
    GW_MH_TTFT = 0, /* admission to the first generated token */
    GW_MH_TPOT,     /* per output token after the first */
    GW_MH_E2E,      /* admission to the last byte of a generation's answer */
    GW_MH_QUEUE,    /* admission to a worker taking it */
    GW_MH_N
};
#define GW_M_BUCKETS 16 /* finite bounds; a 17th bucket is +Inf */
/* The upper bound of finite bucket i in ns (0 <= i < GW_M_BUCKETS). */
uint64_t gw_metrics_bucket_ns(int i);

void gw_metrics_request(struct gw_segment *seg, int route, int status);
void gw_metrics_refusal(struct gw_segment *seg, int reason);
void gw_metrics_finish(struct gw_segment *seg, int finish_reason);
void gw_metrics_add(struct gw_segment *seg, int counter, uint64_t n);
void gw_metrics_observe(struct gw_segment *seg, int hist, uint64_t ns);

/* A copy of every counter, each read once (relaxed). */
struct gw_metrics_snap {
    uint64_t requests[GW_M_ROUTES][6]; /* [route][status / 100] */
    uint64_t refusals[GW_REF_REASONS];
    uint64_t finish[8];
    uint64_t counters[GW_MC_N];
    struct {
        uint64_t bucket[GW_M_BUCKETS + 1]; /* not cumulative; last = +Inf */
        uint64_t count;                    /* the buckets' sum */
        uint64_t sum_ns;
    } hist[GW_MH_N];
};
void gw_metrics_read(const struct gw_segment *seg, struct gw_metrics_snap *out);

/* ------------------------------------------------------- limit overrides */

/* Run-time tenant limits (gpuwardenctl tenant set-limit): the master writes
 * them here and every front applies them at its next admission, until the
 * next reload or restart clears them. */
#define GW_LIMIT_OVERRIDES 64
/* Not stored in the segment: gw_limits_set and gw_limits_get copy it to and
 * from the fixed-width words of a limit cell (seg_internal.h), so its int
 * fields are free to be ints. */
struct gw_limit_override {
    char tenant[64]; /* NUL-terminated */
    int n_windows;
    struct gw_window windows[GW_RATE_CELLS];
    int has_budget;
    struct gw_budget_rate budget;
    uint32_t max_inflight, max_tokens;
};
/* Master only (one writer). Sets the tenant's override, replacing an older
 * one. GW_EFULL when GW_LIMIT_OVERRIDES tenants have one; -EINVAL for an
 * empty or too long tenant id. */
int gw_limits_set(struct gw_segment *seg, const struct gw_limit_override *o);
/* Master only: drops every override (start-up, reload). */
void gw_limits_clear(struct gw_segment *seg);
/* Moves on after every set or clear; a reader that saw the same epoch has
 * nothing new to read. */
uint64_t gw_limits_epoch(const struct gw_segment *seg);
/* Override i: 0, -ENOENT when the cell is empty, -EAGAIN when it was being
 * written every time we looked (a master killed mid-write). */
int gw_limits_get(const struct gw_segment *seg, int i, struct gw_limit_override *o);
/* -------------------------------------------------------- learned lengths */

/* A tenant's completion lengths (the watchdog's "anomalous length"
 * detector): a histogram in logarithmic buckets (4 per octave, up to 2^20
 * tokens), every bucket halved before samples 2049, 3073, 4097, ... (each
 * 1024 after the first 2048) so that it follows the tenant's recent
 * traffic. The segment keeps one per budget record, so one per tenant (a
 * tenant account is never reclaimed), shared by every process and kept
 * across restarts (lenest.c). This plain struct is a snapshot of one. */
#define GW_LENEST_BUCKETS 84
struct gw_lenest {
    uint32_t n;    /* samples held (after halvings) */
    uint64_t seen; /* samples ever */
    uint32_t bucket[GW_LENEST_BUCKETS];
};
/* Adds one length to a private histogram (same rule as gw_lenest_record). */
void gw_lenest_add(struct gw_lenest *e, uint64_t tokens);
/* The q-quantile (0 < q <= 1) as the upper edge of its bucket (at most
 * 19% above the true value); 0 when empty. */
uint64_t gw_lenest_quantile(const struct gw_lenest *e, double q);
/* The length limit for the next run: 0 when len_floor is 0 (off); the floor
 * before len_warmup samples were ever seen (or with e NULL); else
 * max(floor, len_factor x the p99). */
uint64_t gw_lenest_limit(const struct gw_lenest *e, const struct gw_wd_limits *l);
/* Adds a completed run's length to the tenant account's shared histogram.
 * Lock-free (fetch_add on the words), callable from any process; two
 * concurrent writers lose nothing but may halve once more than needed.
 * GW_ESTALE for a stale ref, -ENOENT for an account without a budget
 * record (ip accounts). */
int gw_lenest_record(struct gw_segment *seg, struct gw_acct tenant, uint64_t tokens);
/* A snapshot of the tenant account's histogram (n is the sum of the
 * buckets as read). Same errors as gw_lenest_record. */
int gw_lenest_get(const struct gw_segment *seg, struct gw_acct tenant, struct gw_lenest *out);

/* ---------------------------------------------------------------- fairness */

/* (vtc.c) Virtual Token Counters (Sheng et al., "Fairness in Serving Large
 * Language Models", OSDI 2024): each tenant account with a budget record
 * has one 64-bit counter of the service it received, in weighted units.
 * The worker's scheduler serves the waiting tenant with the smallest
 * counter, so tenants that compete get service in proportion to their
 * plan weights whatever their request sizes.
 *
 * Units: a step that processed p prompt tokens and generated o tokens for
 * a tenant of plan weight w is worth
 *     (model.vtc_weight_prompt x p + model.vtc_weight_output x o) x 1000 / w
 *   = (vtc_weight_prompt x p + vtc_weight_output x o) x 10^6 / weight_milli
 * units; the caller computes them. At the defaults (1.0, 2.0, weight 1) an
 * output token is 2000 units: 2^64 units is 9 x 10^15 tokens, so the
 * counters do not wrap in the segment's life.
 *
 * The counters live in the segment, so every worker of the node shares
 * them (one tenant's service on worker 0 counts on worker 1) and they
 * survive restarts. Only atomic read-modify-writes change them, from any
 * process, and they only grow: a process killed at any instruction has
 * made its one add or raise, or not made it; nothing to repair. */

/* The tenant's counter; 0 for an account without a budget record (ip
 * accounts) or a stale reference. */
uint64_t gw_vtc_get(const struct gw_segment *seg, struct gw_acct a);
/* Adds `units` of service received (fetch_add). 0; GW_ESTALE for a stale
 * reference, -ENOENT for an account without a budget record. */
int gw_vtc_add(struct gw_segment *seg, struct gw_acct a, uint64_t units);
/* Raises the counter to at least `floor` (never lowers it) and returns its
 * value after: VTC's rule that a tenant that becomes active starts at the
 * smallest counter of the active tenants, so idle time cannot be banked
 * for a burst later. 0 for a stale reference or an account without a
 * budget record. */
uint64_t gw_vtc_lift(struct gw_segment *seg, struct gw_acct a, uint64_t floor);
/* The request's weight_milli, or 1000 (weight 1) when it is 0: a writer
 * that did not set it (older code, tools, tests) means the default plan
 * weight, never a zero share. */
uint32_t gw_req_weight_milli(const struct gw_slot_req *req);

/* ---------------------------------------------------- kills and the audit log */

/* (audit.c) What the master's watchdog and a worker's output guard share
 * about a kill: the reason's name, the cancel word that carries it, the
 * repetition words the worker publishes, and the audit log's lines. */

/* The client-facing name of a reason ("max_tokens", "wall_time",
 * "device_time", "repetition", "divergence", "anomalous_length",
 * "worker_stalled", "output_guard", "unbounded_request", "near_repetition",
 * "collapsed_sampling"); "watchdog" for an
 * unknown one. */
const char *gw_wd_reason_name(int reason);
/* The reason a cancel word carries, or -1 when it is not the watchdog's. */
int gw_wd_reason_of_cancel(uint32_t cancel);
#define GW_WD_CANCEL(reason) ((uint32_t)GW_CANCEL_WATCHDOG + (uint32_t)(reason))

/* Repetition words (gw_slot_run.rep), one 64-bit word so that a scan reads
 * a consistent statistic without a lock:
 *   bits  0..15 count:  cycles in a row, (run + period) / period, saturated
 *   bits 16..31 run:    consecutive recent tokens equal to the one `period`
 *                       before (the repeated part after the first cycle)
 *   bits 32..47 period: the cycle's length in tokens, 0 = no repetition
 *   bits 48..55 kind:   GW_REP_NEAR: found on the digit-normalised stream
 *   bits 56..63 top1:   0 = greedy (not sampled); else 1 + the mean top-1
 *                       probability in percent over the last 32 samples
 * GW_REP(period, count) is the plain word older callers build (run 0). */
#define GW_REP(period, count) ((uint64_t)(uint16_t)(period) << 32 | (uint16_t)(count))
#define GW_REP_WORD(period, count, run, kind, top1)                                                \
    ((uint64_t)(uint8_t)(top1) << 56 | (uint64_t)(uint8_t)(kind) << 48 | GW_REP(period, count) |   \
     (uint64_t)(uint16_t)(run) << 16)
#define GW_REP_PERIOD(w) ((uint32_t)((w) >> 32) & 0xffffu)
#define GW_REP_COUNT(w) ((uint32_t)(w)&0xffffu)
#define GW_REP_RUN(w) ((uint32_t)((w) >> 16) & 0xffffu)
#define GW_REP_KIND(w) ((uint32_t)((w) >> 48) & 0xffu)
#define GW_REP_TOP1(w) ((uint32_t)((w) >> 56))
#define GW_REP_NEAR 1u /* kind: the cycle repeats once digits are ignored */
/* The word for a detector's result, count and run saturated at 65535. */
uint64_t gw_wd_rep_word(uint32_t period, uint64_t count, uint64_t run, int near, uint32_t top1);
/* The longer (period * count) of the run's longest repetition so far and
 * the current one: what the worker publishes as rep_max after each token. */
uint64_t gw_wd_rep_fold(uint64_t rep_max, uint64_t rep);

/* One audit line (JSON, newline-terminated) for a kill, into buf: time
 * (RFC 3339 UTC, ms), request id, tenant, ip, reason, tokens, device_ms and
 * the last 200 characters of the output (bytes that are not UTF-8 become
 * U+FFFD). Returns its length (truncated to len - 1). */
size_t gw_audit_format(char *buf, size_t len, uint64_t now_us, const struct gw_slot_req *req,
                       int reason, uint64_t tokens, uint64_t device_ns, const char *out,
                       size_t out_len);
/* An audit line for what is not a kill: a request's output-guard redactions
 * (event "redaction", written by the worker through gw_guard_report), and
 * the end user of a killed request (event "end_user", written by the front
 * that admitted it: the end user is the front's to know, the slot's request
 * does not carry it). Lines of one request share its request_id. */
struct gw_audit_event {
    const char *request_id, *tenant, *ip; /* NULL reads "" */
    const char *user;                     /* the request's `user`; NULL: no "user" key */
    const char *event;                    /* "redaction", "end_user" */
    const char *rule;                     /* redaction: the guard rule's name; NULL: no key */
    uint64_t count;                       /* redaction: matches redacted (with rule) */
    const char *killed_reason;            /* end_user: the kill's reason; NULL: no key */
};
/* The line (JSON, newline-terminated) into buf: time (as gw_audit_format),
 * request_id, tenant, ip, then user, event, rule and count, killed_reason
 * where given; strings escaped, bytes that are not UTF-8 become U+FFFD.
 * Returns its length (truncated to len - 1). */
size_t gw_audit_format_event(char *buf, size_t len, uint64_t now_us,
                             const struct gw_audit_event *e);
/* Opens the audit log for appending (O_APPEND, created 0600): the fd, or -1
 * with errno. The master's watchdog keeps it open (kills come in bursts). */
int gw_audit_open(const char *path);
/* Appends a line to the file at path (O_APPEND, one write; created 0600);
 * for processes that write rarely (a worker's output guard). */
int gw_audit_append(const char *path, const char *line, size_t len);
/* The audit log's path for cfg: watchdog.audit_log or <state_dir>/audit.log. */
int gw_audit_path(const struct gw_config *cfg, char *buf, size_t len);

/* ------------------------------------------------------ children's descriptors */

/* (fds.c) How the master hands descriptors to the children it starts:
 * see gw_supervisor.h, "processes", for who gets which. */
#define GW_MAX_FRONTS 64

struct gw_fds {
    int n_listen;
    int listen[GW_MAX_LISTEN];
    int work;
    int n_fronts;
    int fronts[GW_MAX_FRONTS];
    int metrics; /* metrics.listen's socket (fronts only), -1 none */
};

/* GW_FDS text for fds (into buf); -ENOSPC when it does not fit. */
int gw_fds_format(const struct gw_fds *fds, char *buf, size_t len);
/* Parses GW_FDS text; -EINVAL with err naming the problem. Each number must
 * be an open descriptor. */
int gw_fds_parse(const char *text, struct gw_fds *fds, char *err, size_t errlen);

/* Path of the segment file for cfg ("<state_dir>/ledger"). */
int gw_segment_path(const struct gw_config *cfg, char *buf, size_t len);

#endif /* GW_COMMON_SEGMENT_H */
