/* seg_internal.h - the segment's layout, private to common/.
 *
 * Everything here lives in the shared file: fixed-width fields, explicit
 * alignment, a _Static_assert on each size and alignment with the value
 * written as a number, so that a layout change is a deliberate edit here
 * together with GW_SEG_VERSION. Changing any struct changes GW_SEG_VERSION.
 * The public structs that live in slots (struct gw_slot_req, struct
 * gw_slot_run) and in the header (struct gw_seg_config) carry the same
 * asserts where they are defined.
 */
#ifndef GW_SEG_INTERNAL_H
#define GW_SEG_INTERNAL_H

#include "gw_common.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>

/* Processes share these words through one mapping: their atomics must be
 * lock-free (a lock would live in one process's memory, not in the file). */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2 &&
                   ATOMIC_LLONG_LOCK_FREE == 2,
               "the segment's atomics are lock-free");

/* --------------------------------------------------------------- header */

struct gw_seg_header {
    char magic[8];
    uint32_t version;
    uint32_t header_bytes;
    uint64_t file_bytes;
    struct gw_seg_config cfg; /* 10 x u32 */
    uint64_t off_accounts, off_budgets, off_slots, off_qcells, off_lanes;
    uint64_t budget_stride, slot_stride;
    uint64_t created_us;
    uint64_t off_lenest; /* learned lengths: budgets x struct gw_lenest_rec */
    /* The queue's two cursors sit on their own cache lines: producers and
     * consumers hammer them from different processes. */
    alignas(64) _Atomic uint64_t enq_pos;
    alignas(64) _Atomic uint64_t deq_pos;
    alignas(64) _Atomic uint64_t budgets_used;
    _Atomic uint64_t accounts_live;
    _Atomic uint64_t accounts_reclaimed;
    _Atomic uint64_t table_full;
    _Atomic uint64_t repairs;
    /* Watchdog kills by reason (enum gw_wd_reason), gw_kills_add/get:
     * added with relaxed fetch_add, read on their own for metrics. */
    alignas(64) _Atomic uint64_t kills[16];
};
_Static_assert(sizeof(struct gw_seg_header) == 512, "header layout");
_Static_assert(_Alignof(struct gw_seg_header) == 64, "header alignment");

/* -------------------------------------------------------------- accounts */

/* Account tag word (one CAS decides who owns an entry):
 *   bit 63 = 1: locked by the process whose pid is in bits 8..29 (it is
 *               inserting or reclaiming this entry); bits 0..7 gen.
 *   bit 63 = 0: bits 0..7 gen, bits 8..9 kind (0 = empty), bits 10..62 the
 *               top 53 bits of the key's hash.
 * Identity is (kind, 53 hash bits, the 64-bit `key` word): 117 bits of XXH3. */
#define TAG_LOCK (1ull << 63)
#define TAG_GEN(t) ((uint8_t)((t)&0xff))
#define TAG_KIND(t) ((int)(((t) >> 8) & 3))
#define TAG_HASH(t) ((t) >> 10)
#define TAG_PID(t) ((pid_t)(((t) >> 8) & 0x3fffff))
#define TAG_LIVE(gen, kind, h53) (((uint64_t)(h53) << 10) | ((uint64_t)(kind) << 8) | (gen))
#define TAG_EMPTY(gen) ((uint64_t)(gen))
#define TAG_LOCKED(pid, gen) (TAG_LOCK | ((uint64_t)(pid)&0x3fffff) << 8 | (gen))

/* Cell word: bits 56..63 the account generation it belongs to, bits 0..55
 * the value (a GCRA theoretical arrival time in us since the epoch, or a
 * count). Every update is a CAS that expects the generation, so an update
 * through a stale reference fails instead of landing in a reused entry. */
#define CELL_VMASK ((1ull << 56) - 1)
#define CELL(gen, v) (((uint64_t)(gen) << 56) | ((v)&CELL_VMASK))
#define CELL_GEN(c) ((uint8_t)((c) >> 56))
#define CELL_V(c) ((c)&CELL_VMASK)

#define ACCT_CELLS (GW_RATE_CELLS + 3) /* rate[4], inflight, budget, ban */
#define CELL_INFLIGHT GW_RATE_CELLS
#define CELL_BUDGET (GW_RATE_CELLS + 1)
#define CELL_BAN (GW_RATE_CELLS + 2) /* banned until (us); idle once past */
#define NO_BUDGET UINT32_MAX

struct gw_account {
    _Atomic uint64_t tag;
    _Atomic uint64_t key;
    _Atomic uint64_t cell[ACCT_CELLS];
    _Atomic uint32_t budget_idx; /* written before the tag is published */
    _Atomic uint32_t idlen;
    _Atomic uint64_t id[GW_ID_MAX / 8]; /* display only, seqlock-read */
    _Atomic uint64_t widths;            /* moving rate cells' form and span, 16 bits per
                                           cell (moving.c); tells reclaim how to read them */
};
_Static_assert(sizeof(struct gw_account) == 128, "account layout");
_Static_assert(_Alignof(struct gw_account) == 8, "account alignment");

/* ---------------------------------------------------------------- budgets */

/* One budget record per tenant/global account: each lane owns one column,
 * written only by that lane (or by the master repairing it once it is
 * dead), so every accounting total is exact and crash-repairable. */
struct gw_money_col {
    _Atomic uint64_t reserved_us;
    _Atomic uint64_t used_us;
    _Atomic uint64_t refunded_us;
    _Atomic uint64_t step; /* journal progress of the lane's current settle */
};
_Static_assert(sizeof(struct gw_money_col) == 32, "money column layout");
_Static_assert(_Alignof(struct gw_money_col) == 8, "money column alignment");

struct gw_budget {
    _Atomic uint64_t account;   /* index + 1 of the owning account */
    _Atomic uint64_t amount_us; /* the budget rate last used to reserve: */
    _Atomic uint64_t period_us; /* settle and repair refund with it */
    /* The tenant's virtual token counter (vtc.c): service received in
     * weighted units, changed only by fetch_add and by a CAS that raises it.
     * Here because a budget record is the one per-tenant record that is
     * never reclaimed, and it was padding: the record's size is unchanged.
     * Zero from the file's creation (records are never reused). */
    _Atomic uint64_t vtc;
    uint8_t pad[32];
    struct gw_money_col col[]; /* [lanes]; budget_stride bytes in all */
};
_Static_assert(sizeof(struct gw_budget) == 64, "budget header layout");
_Static_assert(_Alignof(struct gw_budget) == 8, "budget header alignment");

/* ------------------------------------------------------------------ slots */

/* Slot state word: bits 32..63 sequence (bumped on each claim), bits 8..15
 * the owner lane, bits 0..7 the state. */
#define SS_STATE(w) ((int)((w)&0xff))
#define SS_LANE(w) ((int)(((w) >> 8) & 0xff))
#define SS_SEQ(w) ((uint32_t)((w) >> 32))
#define SS(seq, lane, state) (((uint64_t)(seq) << 32) | ((uint64_t)(lane) << 8) | (uint64_t)(state))

/* Account reference packed for the slot: bit 40 valid, bits 8..39 index,
 * bits 0..7 gen. */
#define AREF_VALID (1ull << 40)
#define AREF(a) (AREF_VALID | ((uint64_t)(a).index << 8) | (a).gen)
#define AREF_ACCT(w)                                                                               \
    ((struct gw_acct){.index = (uint32_t)(((w) >> 8) & 0xffffffffu), .gen = (uint8_t)(w)})

#define SLOT_INFLIGHT_HELD 1ull
/* The slot's front died while a worker ran it: nobody will answer, settle
 * or release it but the master (gw_lane_repair sets it, gw_slot_reap_orphan
 * finishes it). */
#define SLOT_ORPHAN 2ull
/* The slot's worker died while it ran and the repair put it back in the
 * queue to be continued from its generated ids (gw_lane_repair); a second
 * death fails it (worker_lost). */
#define SLOT_RESUMED 4ull
/* The slot's reservation came from the farm's GPU lease (cluster_gpu.c):
 * worker extensions are taken from it and settlement refunds to it. */
#define SLOT_FARM_GPU 8ull
/* The same for the node's global pool (its budget is a farm-wide account
 * when the cluster is on): extensions and refunds go to the global
 * account's GPU cell. */
#define SLOT_FARM_GGPU 16ull

/* Settlement word: claimed by one CAS (exactly one settler), done once the
 * accounting is written. A slot is released only when done; the repair
 * finishes a dead settler's claimed settlement from its journal. */
#define SETTLE_CLAIMED(lane) (1ull | (uint64_t)(lane) << 8)
#define SETTLE_DONE(lane) (2ull | (uint64_t)(lane) << 8)
#define SETTLE_PHASE(w) ((int)((w)&3))
#define SETTLE_LANE(w) ((int)(((w) >> 8) & 0xff))

/* A slot's run record: what the worker running it publishes (gw_run_*,
 * common/run.c, says who writes each word and why its order suffices). */
struct gw_slot_run {
    _Atomic uint64_t written; /* output bytes published (release) */
    _Atomic uint64_t tokens;  /* generated so far */
    _Atomic uint64_t prompt_tokens;
    _Atomic uint64_t device_ns;   /* device time used so far */
    _Atomic uint64_t started_ns;  /* CLOCK_MONOTONIC when the worker took it */
    _Atomic uint64_t progress_ns; /* CLOCK_MONOTONIC of the last token */
    _Atomic uint64_t rep;         /* repetition: period << 32 | count */
    _Atomic uint64_t rep_max;     /* the longest repetition seen in this run (largest
                                     period * count), same encoding; the divergence
                                     detector compares rep against it */
    _Atomic uint32_t finish;      /* enum gw_finish_reason, set before DONE */
    _Atomic uint32_t cancel;      /* enum gw_cancel_reason or watchdog code */
    char error[96];               /* with GW_FIN_ERROR: why, NUL-terminated */
};
_Static_assert(sizeof(struct gw_slot_run) == 168, "slot run record layout");
_Static_assert(_Alignof(struct gw_slot_run) == 8, "slot run record alignment");

/* The run record of slot index (NULL when out of range), for common/ only. */
struct gw_slot_run *gw__slot_run(const struct gw_segment *seg, uint32_t index);

struct gw_slot {
    _Atomic uint64_t state;
    _Atomic uint64_t settled;     /* 0, or SETTLE_CLAIMED/SETTLE_DONE(lane) */
    _Atomic uint64_t reserved_us; /* written by the owner lane only */
    _Atomic uint64_t used_us;     /* written by the owner lane only */
    _Atomic uint64_t tenant;      /* AREF or 0 */
    _Atomic uint64_t global;      /* AREF or 0 */
    _Atomic uint64_t flags;
    _Atomic uint64_t origin; /* lane that claimed it (the front) */
    struct gw_slot_run run;  /* then the request, prompt and output areas */
    struct gw_slot_req req;
};
_Static_assert(sizeof(struct gw_slot) == 704, "slot layout"); /* 64 + run 168 + req 472 */
_Static_assert(_Alignof(struct gw_slot) == 8, "slot alignment");
#define SLOT_FIXED_BYTES ((sizeof(struct gw_slot) + 63u) & ~(size_t)63u)
/* After the output area: the resume area, a count word then the generated
 * ids (int32), 8-aligned (gw_run_push_id). */
#define GW_RESUME_BYTES(n) ((n) ? ((8u + 4u * (uint64_t)(n) + 7u) & ~(uint64_t)7u) : 0u)

/* ------------------------------------------------------------------ queue */

/* Queue cell: bits 32..63 the Vyukov sequence (low 32 bits of a position),
 * bits 0..31 the value: slot index (bits 16..31) and the low 16 bits of its
 * sequence (bits 0..15); QNIL is a hole left by the repair. */
#define QV(ref) (((uint32_t)(ref).index << 16) | ((ref).seq & 0xffff))
#define QNIL 0xffffffffu
#define QW(seq, val) (((uint64_t)(uint32_t)(seq) << 32) | (uint32_t)(val))
#define QW_SEQ(w) ((uint32_t)((w) >> 32))
#define QW_VAL(w) ((uint32_t)(w))

struct gw_qcell {
    _Atomic uint64_t w;
};
_Static_assert(sizeof(struct gw_qcell) == 8, "queue cell layout");
_Static_assert(_Alignof(struct gw_qcell) == 8, "queue cell alignment");

/* ------------------------------------------------------------------ lanes */

enum { J_IDLE = 0, J_RESERVE = 1, J_SETTLE = 2 };
enum { Q_IDLE = 0, Q_PUSH = 1, Q_POP = 2, Q_HELD = 3 };

/* A lane's journal records its one money operation in progress (written by
 * the lane before it acts, read by the master only after the lane's process
 * is dead), and the one queue position it is acting on. */
struct gw_lane {
    _Atomic uint64_t pid;    /* 0 = free */
    _Atomic uint64_t j_op;   /* J_* */
    _Atomic uint64_t j_slot; /* index << 32 | seq */
    _Atomic uint64_t j_amount;
    _Atomic uint64_t j_old[6]; /* column values before: see budget.c */
    _Atomic uint64_t q_op;     /* Q_* */
    _Atomic uint64_t q_pos;
    _Atomic uint64_t q_val;
    /* the process record (gw_proc_*): written by the lane's process */
    _Atomic uint32_t role, index, state;
    _Atomic uint32_t drain; /* written by the master: 1 = take no new slot */
    _Atomic uint64_t heartbeat_ns;
    _Atomic uint64_t us_per_token;
    _Atomic int64_t slot;
    uint8_t pad[48];
};
_Static_assert(sizeof(struct gw_lane) == 192, "lane layout");
_Static_assert(_Alignof(struct gw_lane) == 8, "lane alignment");

/* ---------------------------------------------------------------- metrics */

/* The node's Prometheus counters (metrics.c), after the lanes. Every word
 * is a monotonic counter added with a relaxed fetch_add by whichever
 * process saw the event: fronts (requests, refusals, finishes, e2e), workers
 * (tokens, device time, TTFT, TPOT, queue time), the master (restarts).
 * Relaxed suffices because no reader infers anything about other memory
 * from a counter: each is read on its own for display, and an atomic RMW
 * never loses an increment whatever its order. A process killed at any
 * instruction loses at most the one increment it had not made yet; nothing
 * to repair. A histogram's _count is the sum of its buckets as read, so
 * +Inf always equals _count in one answer. */
#define GW_M_STATUS_CLASSES 6 /* [status / 100], 1xx..5xx; 0 unused; rows are 8 wide */
struct gw_hist_area {
    _Atomic uint64_t bucket[GW_M_BUCKETS + 1]; /* not cumulative; last = +Inf */
    _Atomic uint64_t sum_ns;
    uint64_t pad[6];
};
_Static_assert(sizeof(struct gw_hist_area) == 192, "histogram layout");
_Static_assert(_Alignof(struct gw_hist_area) == 8, "histogram alignment");

struct gw_metrics_area {
    _Atomic uint64_t requests[GW_M_ROUTES][GW_M_STATUS_CLASSES + 2]; /* [route][class] */
    _Atomic uint64_t refusals[16];                                   /* enum gw_refusal */
    _Atomic uint64_t finish[8];                                      /* enum gw_finish_reason */
    _Atomic uint64_t counters[8];                                    /* enum gw_mcounter */
    struct gw_hist_area hist[GW_MH_N];                               /* enum gw_mhist */
};
/* 96 words of counters (requests 8 x 8, refusals 16, finish 8, counters 8),
 * then GW_MH_N = 4 histograms of 192 bytes */
_Static_assert(sizeof(struct gw_metrics_area) == 1536, "metrics layout");
_Static_assert(_Alignof(struct gw_metrics_area) == 8, "metrics alignment");

/* ------------------------------------------------------- limit overrides */

/* Tenant limits changed at run time (gpuwardenctl tenant set-limit): one
 * writer, the master's admin socket; the fronts read. Each cell is a
 * seqlock over atomic words (odd seq = being written); the epoch moves on
 * after every change so a front re-reads only when something changed. A
 * master killed mid-write leaves a cell with an odd seq that readers skip;
 * the next master clears the whole area at start-up (the running config is
 * the file's again). */
struct gw_limit_cell {
    _Atomic uint64_t seq;
    _Atomic uint64_t id[8];                 /* tenant id, NUL padded; 0 = empty */
    _Atomic uint64_t win[GW_RATE_CELLS][3]; /* limit, period_us, burst */
    _Atomic uint64_t budget[2];             /* amount_us, period_us */
    _Atomic uint64_t misc;                  /* n_windows | has_budget << 8 */
    _Atomic uint64_t max_inflight;
    _Atomic uint64_t max_tokens;
    uint64_t pad[6];
};
_Static_assert(sizeof(struct gw_limit_cell) == 256, "limit cell layout");
_Static_assert(_Alignof(struct gw_limit_cell) == 8, "limit cell alignment");

struct gw_limits_area {
    _Atomic uint64_t epoch;
    uint64_t pad[7];
    struct gw_limit_cell cell[GW_LIMIT_OVERRIDES];
};
/* 64 bytes of epoch, then GW_LIMIT_OVERRIDES = 64 cells of 256 */
_Static_assert(sizeof(struct gw_limits_area) == 16448, "limits layout");
_Static_assert(_Alignof(struct gw_limits_area) == 8, "limits alignment");

/* -------------------------------------------------------- learned lengths */

/* One tenant's completion-length histogram (lenest.c), at the same index as
 * the tenant account's budget record (budget records and tenant accounts
 * are never reclaimed, so the index is the tenant's for the segment's
 * life). Every word is changed only by atomic read-modify-write, from any
 * process. */
struct gw_lenest_rec {
    _Atomic uint64_t seen;                      /* samples ever (fetch_add) */
    _Atomic uint32_t bucket[GW_LENEST_BUCKETS]; /* fetch_add, halved by CAS */
    uint8_t pad[40];
};
_Static_assert(sizeof(struct gw_lenest_rec) == 384, "learned length record layout");
_Static_assert(_Alignof(struct gw_lenest_rec) == 8, "learned length record alignment");

/* ---------------------------------------------------------------- farming */

/* One tenant's prompt-farming evidence and response ladder (farm.c), at
 * the same index as the tenant account's budget record (never reclaimed,
 * so the index is the tenant's for the segment's life). Every word is
 * changed by one atomic store, add or CAS on its own: no word's meaning
 * depends on another being written in the same step, so a process killed
 * between two of them leaves nothing to repair (farm.c's opening). */
struct gw_farm_rec {
    _Atomic uint64_t seen;             /* prompts ever recorded; ring position = seen % RING */
    _Atomic uint64_t ladder;           /* level | strikes << 2 | until_s << 24 (farm.c, LAD) */
    _Atomic uint64_t tat;              /* the throttle's GCRA theoretical arrival time, us */
    _Atomic uint64_t last;             /* the last score's parts (farm.c, LAST), for show */
    _Atomic uint64_t strikes;          /* prompts ever at or over flag_score */
    _Atomic uint64_t refused;          /* requests ever refused by the ladder */
    _Atomic uint64_t last_fp;          /* the last prompt's fingerprint, for show */
    _Atomic uint64_t out_tat;          /* output_tokens quota: GCRA theoretical arrival time, us */
    _Atomic uint64_t fp[GW_FARM_RING]; /* recent fingerprints; 0 = empty */
    _Atomic uint64_t meta[GW_FARM_RING]; /* arrival us | single-turn << 56 */
};
_Static_assert(sizeof(struct gw_farm_rec) == 1088, "farming record layout");
_Static_assert(_Alignof(struct gw_farm_rec) == 8, "farming record alignment");

/* farm.c's record-level steps, shared by the tenant records (farm.c) and
 * the address records (farm_ip.c): the same ring, score and ladder. */
struct gw_farm_verdict;
struct gw_farm_state;
void gw__farm_rec_observe(struct gw_farm_rec *r, uint64_t fp, int single, uint64_t now_us,
                          const struct gw_farm_limits *l, struct gw_farm_verdict *v);
void gw__farm_rec_get(const struct gw_farm_rec *r, uint64_t now_us, struct gw_farm_state *out);
void gw__farm_rec_clear(struct gw_farm_rec *r);
/* The audit line with `field` naming `who` (its bytes outside
 * [A-Za-z0-9] and `extra` shown as '?'). */
size_t gw__farm_audit_line(char *buf, size_t len, uint64_t now_us, const char *field,
                           const char *who, const char *extra, const struct gw_farm_verdict *v);

/* One client address's prompt-farming record (farm_ip.c): the tenant
 * record's words behind a tag naming the ip account it belongs to,
 * (index + 1) << 8 | gen, with FIP_CLEANING while the claimer resets the
 * record for a new owner; 0 = never used. In the address-farming region,
 * seg_config.ip_farm_recs of them. */
struct gw_farm_iprec {
    _Atomic uint64_t tag;
    uint8_t pad[56];
    struct gw_farm_rec rec;
};
_Static_assert(sizeof(struct gw_farm_iprec) == 1152, "address farming record layout");
_Static_assert(_Alignof(struct gw_farm_iprec) == 8, "address farming record alignment");

/* --------------------------------------------------- moving rate cells */

/* moving.c: the "moving" window kind on a rate cell's 56-bit value, and
 * the exact form's logs (struct gw_mvlog, one per account or overflow
 * bucket and rate cell, in their own region). */
struct gw_mvlog;
size_t gw__mvlog_area_bytes(uint32_t accounts);
/* The log of (account index or GW_OVF_INDEX | bucket, rate cell). */
struct gw_mvlog *gw__mvlog(const struct gw_segment *seg, uint32_t index, int cell);
int gw__moving_is(uint64_t v);
/* 1 and the new value when a request passes at now, 0 and the wait. */
int gw__moving_decide(uint64_t v, uint64_t now, const struct gw_rate *r, const struct gw_mvlog *log,
                      uint64_t *nv, uint64_t *wait);
/* After the CAS that wrote nv: the exact form's time into its slot. */
void gw__moving_taken(struct gw_mvlog *log, const struct gw_rate *r, uint64_t nv);
/* Gives back the one unit whose CAS wrote `took` (all or nothing). */
void gw__moving_give_back(_Atomic uint64_t *cell, uint8_t gen, struct gw_mvlog *log,
                          const struct gw_rate *r, uint64_t took);
uint64_t gw__moving_remaining(uint64_t v, uint64_t now, const struct gw_rate *r,
                              const struct gw_mvlog *log);
/* Empties the logs of account `index` (held locked by us: retired, or a
 * dead locker's), so that its next owner's log starts with no slot written. */
void gw__moving_clear(struct gw_segment *seg, uint32_t index);
/* Records the cell's form and span in the account before a CAS on it. */
void gw__moving_note_width(struct gw_account *a, int cell, const struct gw_rate *r);
/* 1 when a moving cell holds nothing in view at now (reclaim). */
int gw__moving_idle(const struct gw_account *a, int cell, uint64_t v, uint64_t now);

/* ------------------------------------------------- address-range rules */

/* The rules region after the limit overrides (netrules.c defines it). */
size_t gw__net_area_bytes(void);
/* The revoked JWT ids after the overflow buckets (jti.c defines them). */
size_t gw__jti_area_bytes(void);
/* The API keys file's generation at the end (apikey_gen.c defines it). */
size_t gw__apikey_area_bytes(void);
/* The overflow buckets after the rules (overflow.c defines them). */
size_t gw__ovf_area_bytes(void);
_Atomic uint64_t *gw__ovf_cell(const struct gw_segment *seg, uint32_t bucket, int cell);

/* ----------------------------------------------------------- shared helpers */

static inline struct gw_account *acct_at(const struct gw_segment *seg, uint32_t i)
{
    return &seg->accounts[i];
}

static inline struct gw_slot *slot_at(const struct gw_segment *seg, uint32_t i)
{
    return (struct gw_slot *)((uint8_t *)seg->slots + (size_t)i * seg->slot_stride);
}

static inline struct gw_budget *budget_at(const struct gw_segment *seg, uint32_t i)
{
    return (struct gw_budget *)((uint8_t *)seg->budgets + (size_t)i * seg->budget_stride);
}

static inline struct gw_lane *lane_at(const struct gw_segment *seg, int i)
{
    return &seg->lanes[i];
}

/* GCRA cost of x us of device time under budget b, in us of wall time. */
uint64_t gw__budget_cost(const struct gw_budget_rate *b, uint64_t x_us);
/* Adds (sign > 0) or removes (sign < 0) `delta` from a cell's value by CAS,
 * expecting generation gen. Removal floors at 0. GW_ESTALE on a gen change. */
int gw__cell_add(_Atomic uint64_t *cell, uint8_t gen, uint64_t delta, int sign);
/* The account's budget record, or NULL (stale ref, or no budget). */
struct gw_budget *gw__acct_budget(const struct gw_segment *seg, struct gw_acct a);
/* Validates a reference: the account's tag still carries a.gen. */
int gw__acct_ok(const struct gw_segment *seg, struct gw_acct a);
/* The slot if it still has `seq`, with its state word in *w. */
struct gw_slot *gw__slot_get(const struct gw_segment *seg, struct gw_slot_ref ref, uint64_t *w);
/* gw_slot_move, with `force` letting the repair move a dead owner's slot. */
int gw__slot_move_as(struct gw_segment *seg, struct gw_slot_ref ref, int from, int to, int force);
/* Repair helpers for the master. */
void gw__ledger_unlock_dead(struct gw_segment *seg, pid_t pid);
void gw__queue_repair(struct gw_segment *seg, struct gw_lane *ln);

/* ---------------------------------------------------------------- cluster */

/* The farm (common/cluster.c): one area, then one cell per budget record,
 * indexed like the budget records (a tenant account's budget_idx). Every
 * word is written with one atomic operation by the process named beside it;
 * nothing here needs repair (see cluster.c's opening comment). */
struct gw_cluster_area {
    _Atomic uint64_t state;      /* enum gw_cl_state: the agent */
    _Atomic uint64_t since_us;   /* the agent */
    _Atomic uint64_t live_nodes; /* the agent, from each heartbeat */
    _Atomic uint32_t demand;     /* futex word: fronts bump it, the agent sleeps on it */
    uint32_t pad0;
    _Atomic uint64_t counters[GW_CLC_COUNT]; /* relaxed fetch_add, anyone */
    uint8_t pad[256 - 32 - 8 * GW_CLC_COUNT];
};
_Static_assert(sizeof(struct gw_cluster_area) == 256, "cluster area layout");
_Static_assert(_Alignof(struct gw_cluster_area) == 8, "cluster area alignment");

struct gw_cluster_cell {
    _Atomic uint64_t tokens;     /* agent adds (grant), fronts CAS -1, agent exchanges to 0 */
    _Atomic uint64_t expires_us; /* agent, before the tokens it covers */
    _Atomic uint64_t want;       /* fronts: +1 waiting, -1 done */
    _Atomic uint64_t deny_until; /* agent */
    _Atomic uint64_t account;    /* fronts: AREF of the tenant account (set once) */
    _Atomic uint64_t open_spent; /* fronts add, agent drains */
    _Atomic uint64_t granted;    /* agent */
    uint64_t pad0;
    _Atomic uint64_t open_tat[GW_RATE_CELLS]; /* fail-open GCRA cells: fronts */
    uint8_t pad[32];
};
_Static_assert(sizeof(struct gw_cluster_cell) == 128, "cluster cell layout");
_Static_assert(_Alignof(struct gw_cluster_cell) == 8, "cluster cell alignment");

/* ------------------------------------------------------- tenant counters */

/* One tenant's counters (tstats.c), at the same index as the tenant
 * account's budget record, in their own region after the cluster cells
 * (layout 13). Monotonic words, each changed only by a relaxed fetch_add
 * and read on its own: nothing to repair (tstats.c's opening). */
struct gw_tstat_rec {
    _Atomic uint64_t admitted;                   /* fronts: queued for a worker */
    _Atomic uint64_t output_tokens;              /* workers: generated, at a job's end */
    uint64_t pad[6];                             /* the counters start on a cache line */
    _Atomic uint64_t refusals[GW_TSTAT_REASONS]; /* fronts: enum gw_refusal */
    _Atomic uint64_t kills[GW_TSTAT_REASONS];    /* watchdog, output guard: enum gw_wd_reason */
};
_Static_assert(sizeof(struct gw_tstat_rec) == 320, "tenant counter record layout");
_Static_assert(_Alignof(struct gw_tstat_rec) == 8, "tenant counter record alignment");

/* The live nodes' names as the agent last read them from Redis (after the
 * area): a sequence word (odd while the agent writes) and the names,
 * newline-separated, in 8-byte words each stored atomically, so a reader
 * copying them while the agent writes sees a torn copy it throws away,
 * never undefined behaviour. */
#define GW_CL_PEER_WORDS 126
struct gw_cl_peers {
    _Atomic uint64_t seq;   /* the agent: odd while writing */
    _Atomic uint64_t count; /* live nodes listed (the names may be cut short) */
    _Atomic uint64_t words[GW_CL_PEER_WORDS];
};
_Static_assert(sizeof(struct gw_cl_peers) == 1024, "cluster peers layout");
_Static_assert(_Alignof(struct gw_cl_peers) == 8, "cluster peers alignment");

/* The words a GPU lease cell and an output-token lease cell share, first in
 * each, at the same offsets as before they were named (layouts 13, 14): a
 * pool of farm-wide units (GPU-us, or output tokens) the cluster agent took
 * from Redis, its end, the fronts' demand and the fail-open cell. One set
 * of functions works on both (cluster_lease.c). */
struct gw_cluster_lease {
    _Atomic int64_t tokens;      /* agent adds (grant); fronts (and GPU workers) take by
                                    CAS; GPU settlement adds back, output settlement
                                    subtracts; below 0: a debt a later grant pays first */
    _Atomic uint64_t expires_us; /* agent, before the tokens it covers */
    _Atomic uint64_t want;       /* fronts: units of requests parked for a lease */
    _Atomic uint64_t deny_until; /* agent */
    _Atomic uint64_t open_spent; /* fronts add (fail-open), agent drains */
    _Atomic uint64_t open_tat;   /* fail-open cell (GCRA): fronts */
    _Atomic uint64_t granted;    /* agent: units granted to this node, ever */
};
_Static_assert(sizeof(struct gw_cluster_lease) == 56, "cluster lease words layout");
_Static_assert(_Alignof(struct gw_cluster_lease) == 8, "cluster lease words alignment");

/* A tenant's GPU-microsecond lease on this node (cluster_gpu.c), indexed
 * like the rate cells. `lease.tokens` is a pool of farm-wide GPU-us: fronts
 * take a request's reservation from it, workers take extensions (and may
 * overdraw it, down to -overdraft), settlement puts the unused part back;
 * the agent fills it from Redis and gives back what is left when the lease
 * ends. `lease.want` counts GPU-us, `lease.open_tat` is the fail-open
 * budget cell (weighted GCRA). */
struct gw_cluster_gpu {
    struct gw_cluster_lease lease;
    _Atomic uint64_t shortfall; /* workers: an extension the pool could not cover (hint) */
    _Atomic uint64_t overdraft; /* agent: how far below 0 extensions may take the pool */
    uint64_t pad[7];
};
_Static_assert(sizeof(struct gw_cluster_gpu) == 128, "cluster GPU cell layout");
_Static_assert(_Alignof(struct gw_cluster_gpu) == 8, "cluster GPU cell alignment");
_Static_assert(offsetof(struct gw_cluster_gpu, shortfall) == 56 &&
                   offsetof(struct gw_cluster_gpu, overdraft) == 64,
               "cluster GPU cell layout (13)");

/* A tenant's output-token lease on this node (cluster_out.c), indexed like
 * the rate cells, in its own region after the per-tenant counters (layout 14).
 * `lease.tokens` is a pool of farm-wide output tokens: a front takes one for
 * each request it admits (the "at least one token left" of the local window,
 * made atomic) and charges the rest of what the request generated at its
 * end, which may take the pool below 0 (a debt a later grant pays first).
 * `lease.want` counts requests, `lease.open_tat` is the fail-open output
 * cell (GCRA of tokens). */
struct gw_cluster_out {
    struct gw_cluster_lease lease;
    _Atomic uint64_t charged; /* fronts: tokens charged to the pool, ever */
    uint64_t pad[8];
};
_Static_assert(sizeof(struct gw_cluster_out) == 128, "cluster output cell layout");
_Static_assert(_Alignof(struct gw_cluster_out) == 8, "cluster output cell alignment");
_Static_assert(offsetof(struct gw_cluster_out, charged) == 56, "cluster output cell layout (14)");

/* The rate cell of tenant account a (NULL when it has no budget record). */
struct gw_cluster_cell *gw__cluster_cell_of(const struct gw_segment *seg, struct gw_acct a);
/* Wakes the agent: the demand word and its futex. */
void gw__cluster_wake(struct gw_segment *seg);
/* Why a lease of any kind had nothing to take: GW_CL_DENIED while the
 * cell's deny_until is ahead (*retry_us set), GW_CL_UNAVAILABLE while
 * Redis is down, else GW_CL_WAIT. */
int gw__cluster_refusal(const struct gw_segment *seg, _Atomic uint64_t *deny_until, uint64_t now_us,
                        uint64_t *retry_us);
/* Records the tenant account in its cell so the agent can name it. */
void gw__cluster_note(struct gw_cluster_cell *c, struct gw_acct a);
/* budget.c's side of a farm-leased slot (SLOT_FARM_GPU): a worker's
 * extension of x GPU-us from the tenant's lease (0, or GW_EREFUSED when the
 * lease is short or ended: the extension is refused and the agent told),
 * and the unused part put back at settlement. */
int gw__cluster_gpu_extend(struct gw_segment *seg, struct gw_acct tenant, uint64_t x,
                           uint64_t now_us);
void gw__cluster_gpu_refund(struct gw_segment *seg, struct gw_acct tenant, uint64_t x);

/* cluster_lease.c: the lease words' operations, for both kinds of cell. */
/* Takes x from the pool while its lease lasts: 1 taken, 0 not. The pool may
 * go as far as `floor` below zero (a GPU worker's extension within the
 * overdraft the agent allows; 0 for an admission); after the lease's end
 * only that overdraft is left (what the pool still holds goes back). */
int gw__lease_take(struct gw_cluster_lease *l, uint64_t x, uint64_t now_us, uint64_t floor);
/* An admission's take of x (floor 0), else why not: GW_CL_TAKEN,
 * GW_CL_DENIED (with *retry_us), GW_CL_UNAVAILABLE (Redis down) or
 * GW_CL_WAIT. */
int gw__lease_admit(const struct gw_segment *seg, struct gw_cluster_lease *l, uint64_t x,
                    uint64_t now_us, uint64_t *retry_us);
/* Puts x back into the pool (0 < x < 2^62; else nothing). */
void gw__lease_put(struct gw_cluster_lease *l, uint64_t x);
/* A request of tenant `a` parked for x units (sign > 0: also notes the
 * account in its rate cell and wakes the agent), or no longer (never below
 * zero). */
void gw__lease_want(struct gw_segment *seg, struct gw_cluster_lease *l, struct gw_acct a,
                    uint64_t x, int sign);
/* The agent's side: a grant of x ending at expires_us (lifts a denial,
 * pays a debt first); what the pool holds taken back (a debt stays); a
 * denial; the fail-open count drained and put back; a dead front's want
 * cleared if still `seen`. */
void gw__lease_grant(struct gw_cluster_lease *l, uint64_t x, uint64_t expires_us);
uint64_t gw__lease_reclaim(struct gw_cluster_lease *l);
void gw__lease_deny(struct gw_cluster_lease *l, uint64_t until_us);
uint64_t gw__lease_open_drain(struct gw_cluster_lease *l);
void gw__lease_open_undrain(struct gw_cluster_lease *l, uint64_t n);
void gw__lease_want_reset(struct gw_cluster_lease *l, uint64_t seen);

#endif
