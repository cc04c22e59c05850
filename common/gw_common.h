/* gw_common.h - what every gpuwarden process shares: errors, clocks, and the
 * shared segment (ledger, slots, queue, lanes) that all processes map.
 *
 * Conventions (as in libuv): functions return 0 or a negative errno; an
 * operator-facing failure also writes one line into `err` naming the thing,
 * the place and the problem. Nothing here calls exit().
 *
 * Shared-memory rules (DESIGN.md): no mutex or spinlock on any path here.
 * Every shared word is a C11 _Atomic accessed with an explicit memory order,
 * and each access says why that order is enough. Any process may die at any
 * instruction; the "repair" functions at the end are what the master runs on
 * reaping a child, and each region's comment says what they repair.
 */
#ifndef GW_COMMON_H
#define GW_COMMON_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------------ errors */

/* Error codes beyond errno; all negative, all below -GW_ERRBASE. */
#define GW_ERRBASE 10000
enum {
    GW_EREFUSED = -(GW_ERRBASE + 1), /* a rate or budget cell said no (429) */
    GW_ESTALE = -(GW_ERRBASE + 2),   /* account reference outlived its account */
    GW_EFULL = -(GW_ERRBASE + 3),    /* a fixed-size region has no room */
    GW_EEMPTY = -(GW_ERRBASE + 4),   /* queue empty */
    GW_ESTATE = -(GW_ERRBASE + 5),   /* illegal slot transition */
    GW_ELAYOUT = -(GW_ERRBASE + 6),  /* segment file is not ours / not this layout */
};

/* Text for a value returned by any gw_ function (negative errno or GW_E*). */
const char *gw_strerror(int err);

/* ------------------------------------------------------------------ clocks */

/* Wall clock (CLOCK_REALTIME) in microseconds since the Unix epoch: the unit
 * of every time stored in the segment, so budgets mean the same after a
 * reboot. */
uint64_t gw_now_us(void);
/* CLOCK_MONOTONIC in nanoseconds: timeouts and the watchdog. */
uint64_t gw_mono_ns(void);

/* ------------------------------------------------------------- GCRA rates */

/* One request-rate window: `limit` requests per `period_us`, plus `burst`
 * extra at once. Derived constants (GCRA): interval T = ceil(period/limit)
 * (rounded up so the rate never exceeds the limit), tolerance
 * tau = (limit + burst - 1) * T. At one instant exactly limit + burst
 * requests pass; after that exactly one per T. */
struct gw_rate {
    uint64_t interval_us;
    uint64_t tolerance_us;
};
int gw_rate_make(struct gw_rate *r, uint64_t limit, uint64_t period_us, uint64_t burst);

/* A device-time budget: `amount_us` of device time per `period_us` of wall
 * time. A budget cell is a GCRA cell whose cost is weighted: spending x us of
 * device time advances the cell by ceil(x * period / amount) us. Full budget
 * when idle. */
struct gw_budget_rate {
    uint64_t amount_us;
    uint64_t period_us;
};

/* ------------------------------------------------------------- the segment */

#define GW_SEG_MAGIC "GWLEDGR"  /* 7 chars + NUL = 8 bytes */
#define GW_SEG_VERSION 1u
#define GW_RATE_CELLS 4          /* rate windows per account */
#define GW_PROBE 16              /* accounts live within 16 entries of home */
#define GW_ID_MAX 40             /* bytes of account id kept for display */

/* Sizes chosen from config when the segment is created. Every count must be
 * a power of two where noted; gw_segment_open checks. */
struct gw_seg_config {
    uint32_t accounts;     /* ledger entries, power of two >= GW_PROBE */
    uint32_t budgets;      /* budget records (tenant and global accounts) */
    uint32_t slots;        /* in-flight request records */
    uint32_t queue;        /* queue capacity, power of two >= 2 */
    uint32_t lanes;        /* processes that may attach at once (<= 255) */
    uint32_t prompt_bytes; /* per slot */
    uint32_t output_bytes; /* per slot */
};

struct gw_seg_header;
struct gw_account;
struct gw_budget;
struct gw_slot;
struct gw_qcell;
struct gw_lane;

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
    struct gw_seg_config cfg;
    size_t budget_stride; /* bytes per budget record (depends on lanes) */
    size_t slot_stride;   /* bytes per slot (depends on prompt/output) */
    int lane;             /* our lane once gw_lane_acquire succeeded, else -1 */
    uint32_t slot_hint;   /* where our next free-slot search starts */
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
    uint64_t table_full;     /* new accounts refused for lack of room */
    uint64_t budgets_used;
    uint64_t repairs;        /* dead lanes repaired */
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

/* Account id for display; returns its length. */
size_t gw_ledger_id(const struct gw_segment *seg, struct gw_acct a, enum gw_kind *kind,
                    char *buf, size_t buflen);

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
/* Lane that owns the slot now (or -1). */
int gw_slot_owner(const struct gw_segment *seg, struct gw_slot_ref ref);

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

/* Frees a settled terminal slot (state -> FREE). GW_ESTATE otherwise. */
int gw_slot_release(struct gw_segment *seg, struct gw_slot_ref ref);

/* ------------------------------------------------------------------- queue */

/* Bounded MPMC ring of slot references (Vyukov's sequence-numbered cells,
 * one 64-bit word per cell so publication is a single CAS). Entries are
 * hints: a worker that pops one takes the request only by moving the slot
 * QUEUED -> RUNNING, so a stale or duplicated entry can never run twice. */
int gw_queue_push(struct gw_segment *seg, struct gw_slot_ref ref); /* GW_EFULL */
int gw_queue_pop(struct gw_segment *seg, struct gw_slot_ref *out); /* GW_EEMPTY */
uint64_t gw_queue_depth(const struct gw_segment *seg);

/* ------------------------------------------------------------------ repair */

/* Run by the master after reaping the process that held `lane` (and by the
 * master at start-up for every lane whose pid is gone). It
 *  - completes or rolls back the lane's journaled money operation so that
 *    accounting stays exact;
 *  - unblocks queue cells the dead process had claimed but not published or
 *    consumed but not released, and re-queues a slot it popped and had not
 *    started;
 *  - moves every slot the lane owned that is not terminal to FAILED (a dead
 *    front's clients are gone; a dead worker's generation is lost), settles
 *    it, and releases terminal slots whose front (origin lane) is gone;
 *  - unlocks ledger entries the process had locked mid-insert or reclaim;
 *  - frees the lane.
 * Returns the number of slots it failed. Not for concurrent use with
 * itself (one master). */
int gw_lane_repair(struct gw_segment *seg, int lane);

/* Conservation check over the whole segment, for tests and the admin
 * socket: for every budget account, reserved = used + refunded + what live
 * slots hold. Returns the number of accounts that violate it (0 = conserved);
 * with a buffer, describes the first violation. */
int gw_ledger_check(const struct gw_segment *seg, char *err, size_t errlen);

#endif
