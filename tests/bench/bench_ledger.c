/* bench_ledger.c - the ledger's hot paths against the same work behind a
 * process-shared pthread mutex in the same kind of shared mapping.
 *
 *   bench_ledger [seconds-per-case]        (default 1)
 *
 * Cases, each with 1 and 2 processes on the same accounts:
 *   admit-1:        one admission on one account's rate cell;
 *   admit-3:        one admission over three accounts (ip, tenant, global),
 *                   one rate cell each, all or nothing;
 *                   (limits that never refuse within a run)
 *   reserve+settle: a request's whole money path: claim a slot, set its
 *                   accounts, reserve, fail it, settle, release.
 * Prints ops/s for the lock-free ledger and the mutex baseline and their
 * ratio. Then, lock-free only, refusals on one full cell of each window
 * kind: GCRA "10 per minute", moving "10 per minute moving" (the exact
 * log: the head and one slot read) and "100 per minute moving" (buckets).
 * Not a test: timings are never asserted.
 */
#include "gw_common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SEC 1000000ull

/* ----------------------------------------------------- mutex baseline */

/* The same state a mutex design would keep: three TATs, two budget TATs
 * with accounting totals, a slot table. One lock around each step. */
#define MSLOTS 64
struct mstate {
    pthread_mutex_t m;
    uint64_t tat[3];
    uint64_t btat[2], reserved[2], used[2], refunded[2];
    struct {
        int state;
        uint64_t reserved, used;
    } slot[MSLOTS];
};

static struct mstate *mstate_new(void)
{
    struct mstate *s =
        mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        abort();
    memset(s, 0, sizeof(*s));
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&s->m, &a);
    return s;
}

static int m_admit(struct mstate *s, int n, const struct gw_rate *r, uint64_t now)
{
    pthread_mutex_lock(&s->m);
    uint64_t nt[3];
    for (int i = 0; i < n; i++) {
        uint64_t base = s->tat[i] > now ? s->tat[i] : now;
        if (base - now > r->tolerance_us) {
            pthread_mutex_unlock(&s->m);
            return -1;
        }
        nt[i] = base + r->interval_us;
    }
    for (int i = 0; i < n; i++)
        s->tat[i] = nt[i];
    pthread_mutex_unlock(&s->m);
    return 0;
}

/* The budget cost, as the ledger computes it (device us -> cell us). */
static uint64_t cost_of(uint64_t x, uint64_t amount, uint64_t period)
{
    unsigned __int128 num = (unsigned __int128)x * period;
    return (uint64_t)(num / amount + (num % amount != 0));
}

static int m_request(struct mstate *s, uint64_t amount, uint64_t now)
{
    pthread_mutex_lock(&s->m); /* claim + reserve */
    int k = -1;
    for (int i = 0; i < MSLOTS; i++)
        if (s->slot[i].state == 0) {
            k = i;
            break;
        }
    if (k < 0) {
        pthread_mutex_unlock(&s->m);
        return -1;
    }
    s->slot[k].state = 1;
    for (int i = 0; i < 2; i++) {
        uint64_t base = s->btat[i] > now ? s->btat[i] : now;
        s->btat[i] = base + cost_of(amount, 1ull << 50, 1ull << 40);
        s->reserved[i] += amount;
    }
    s->slot[k].reserved = amount;
    pthread_mutex_unlock(&s->m);

    pthread_mutex_lock(&s->m); /* settle + release */
    uint64_t rest = s->slot[k].reserved - s->slot[k].used;
    for (int i = 0; i < 2; i++) {
        s->used[i] += s->slot[k].used;
        s->refunded[i] += rest;
        s->btat[i] -= cost_of(rest, 1ull << 50, 1ull << 40);
    }
    s->slot[k].state = 0;
    s->slot[k].reserved = s->slot[k].used = 0;
    pthread_mutex_unlock(&s->m);
    return 0;
}

/* ------------------------------------------------------------ harness */

enum { ADMIT1, ADMIT3, REQUEST, REFUSE_GCRA, REFUSE_EXACT, REFUSE_BUCKETS };

struct world {
    char path[64];
    struct gw_acct ip, tenant, global;
    struct gw_admit_item items[3];
    struct gw_admit_item refuse[3]; /* full cells: GCRA, exact moving, moving buckets */
    struct gw_budget_rate brate;
    struct mstate *ms;
};

static uint64_t run_case(struct world *w, int which, int lockfree, double seconds)
{
    struct gw_segment seg;
    char err[256];
    if (lockfree) {
        if (gw_segment_attach(&seg, w->path, err, sizeof(err)) != 0 || gw_lane_acquire(&seg) != 0) {
            fprintf(stderr, "bench: %s\n", err);
            exit(111);
        }
    }
    uint64_t n = 0, retry, now = gw_now_us();
    uint64_t end = gw_mono_ns() + (uint64_t)(seconds * 1e9);
    while (gw_mono_ns() < end) {
        for (int i = 0; i < 1024; i++) {
            if (which >= REFUSE_GCRA) {
                n += gw_ledger_admit(&seg, &w->refuse[which - REFUSE_GCRA], 1, now, &retry) ==
                     GW_EREFUSED;
            } else if (which != REQUEST) {
                int k = which == ADMIT1 ? 1 : 3;
                int rc = lockfree ? gw_ledger_admit(&seg, w->items, k, now, &retry)
                                  : m_admit(w->ms, k, &w->items[0].rate, now);
                n += rc == 0;
            } else if (lockfree) {
                struct gw_slot_ref r;
                if (gw_slot_claim(&seg, &r) != 0)
                    continue;
                gw_slot_set_accounts(&seg, r, w->tenant, w->global, 0);
                if (gw_budget_reserve(&seg, r, 5000, &w->brate, &w->brate, now, &retry) == 0)
                    n++;
                gw_slot_move(&seg, r, GW_SLOT_ADMITTED, GW_SLOT_FAILED);
                gw_budget_settle(&seg, r);
                gw_slot_release(&seg, r);
            } else {
                n += m_request(w->ms, 5000, now) == 0;
            }
        }
    }
    if (lockfree)
        gw_segment_close(&seg);
    return n;
}

/* ops/s summed over `procs` processes running the case at once; *share is
 * the slowest process's fraction of the total (0.5 = perfectly fair). */
static double measure(struct world *w, int which, int lockfree, int procs, double seconds,
                      double *share)
{
    uint64_t *out = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid[8];
    for (int p = 0; p < procs; p++) {
        pid[p] = fork();
        if (pid[p] == 0) {
            out[p] = run_case(w, which, lockfree, seconds);
            _exit(0);
        }
    }
    uint64_t total = 0, least = UINT64_MAX;
    for (int p = 0; p < procs; p++) {
        waitpid(pid[p], NULL, 0);
        total += out[p];
        if (out[p] < least)
            least = out[p];
    }
    *share = total ? (double)least / (double)total : 0;
    munmap(out, 4096);
    return (double)total / seconds;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (seconds <= 0 || seconds > 60) {
        fprintf(stderr, "usage: bench_ledger [seconds-per-case (0..60]]\n");
        return 100;
    }
    struct world w = {0};
    snprintf(w.path, sizeof(w.path), "/tmp/gw-bench-%d.seg", (int)getpid());
    unlink(w.path);
    struct gw_seg_config cfg = {.accounts = 1024,
                                .budgets = 64,
                                .slots = 256,
                                .queue = 256,
                                .lanes = 16,
                                .prompt_bytes = 0,
                                .output_bytes = 0};
    struct gw_segment seg;
    char err[256];
    if (gw_segment_open(&seg, w.path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench: %s\n", err);
        return 111;
    }
    uint64_t now = gw_now_us();
    gw_ledger_get(&seg, GW_KIND_IP, "203.0.113.9", 11, 1, now, &w.ip);
    gw_ledger_get(&seg, GW_KIND_TENANT, "acme", 4, 1, now, &w.tenant);
    gw_ledger_get(&seg, GW_KIND_GLOBAL, "*", 1, 1, now, &w.global);
    struct gw_acct accts[3] = {w.ip, w.tenant, w.global};
    for (int i = 0; i < 3; i++) {
        w.items[i].acct = accts[i];
        w.items[i].cell = 0;
        /* 1 us interval and a huge burst: never refuses within a run */
        gw_rate_make(&w.items[i].rate, SEC, SEC, 1ull << 39);
    }
    static const char *const full[3] = {"10 per minute", "10 per minute moving",
                                        "100 per minute moving"};
    for (int i = 0; i < 3; i++) {
        struct gw_window win;
        uint64_t retry;
        w.refuse[i] = (struct gw_admit_item){.acct = w.ip, .cell = (uint8_t)(1 + i)};
        if (gw_window_parse(full[i], &win) != 0 || gw_window_rate(&win, &w.refuse[i].rate) != 0)
            return 111;
        while (gw_ledger_admit(&seg, &w.refuse[i], 1, now, &retry) == 0)
            ; /* fill it: every later attempt at `now` or soon after is refused */
    }
    /* a budget so large that reserve never refuses */
    w.brate = (struct gw_budget_rate){.amount_us = 1ull << 50, .period_us = 1ull << 40};
    gw_segment_close(&seg);
    w.ms = mstate_new();

    printf("%-16s %5s %16s %16s %8s %13s\n", "case", "procs", "lock-free ops/s", "mutex ops/s",
           "ratio", "slowest share");
    const char *names[] = {"admit-1", "admit-3", "reserve+settle"};
    for (int which = ADMIT1; which <= REQUEST; which++)
        for (int procs = 1; procs <= 2; procs++) {
            double lfs, mxs;
            double lf = measure(&w, which, 1, procs, seconds, &lfs);
            double mx = measure(&w, which, 0, procs, seconds, &mxs);
            char sh[32] = "-";
            if (procs > 1)
                snprintf(sh, sizeof(sh), "%.2f / %.2f", lfs, mxs);
            printf("%-16s %5d %16.0f %16.0f %7.1fx %13s\n", names[which], procs, lf, mx, lf / mx,
                   sh);
            fflush(stdout);
        }
    printf("\n%-24s %5s %16s %13s\n", "refusals on a full cell", "procs", "lock-free ops/s",
           "slowest share");
    const char *rnames[] = {"gcra 10/min", "moving exact 10/min", "moving buckets 100/min"};
    for (int which = REFUSE_GCRA; which <= REFUSE_BUCKETS; which++)
        for (int procs = 1; procs <= 2; procs++) {
            double share;
            double lf = measure(&w, which, 1, procs, seconds, &share);
            char sh[32] = "-";
            if (procs > 1)
                snprintf(sh, sizeof(sh), "%.2f", share);
            printf("%-24s %5d %16.0f %13s\n", rnames[which - REFUSE_GCRA], procs, lf, sh);
            fflush(stdout);
        }
    unlink(w.path);
    return 0;
}
