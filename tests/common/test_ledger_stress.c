/* test_ledger_stress.c - many processes hammer the same accounts, slots and
 * queue while the parent SIGKILLs some of them at random instants and runs
 * the master's repair for each. Afterwards:
 *  (a) no rate window admitted more than limit + burst + what its rate
 *      allows over the elapsed time;
 *  (b) conservation: for every budget account, reserved = used + refunded +
 *      held by live slots (gw_ledger_check), and no slot is left in use;
 *  (c) the queue lost no slot (every QUEUED slot is in the queue exactly
 *      once when the survivors are stopped) and no slot incarnation ran
 *      twice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"
#include "seg_internal.h"

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>

#define SEC 1000000ull
#define CHILDREN 6
#define MAX_ORDINALS 512
#define NIP 4
#define NTEN 2
#define RUN_US (4 * SEC)
#define KILL_EVERY_US 150000

/* Per-window limits: ip, tenant, global. */
static const uint64_t lim[3] = {100, 250, 400}, burst[3] = {20, 0, 30};

struct shared {
    _Atomic int stop;                 /* 1: finish the current cycle, then pause */
    _Atomic int paused[MAX_ORDINALS]; /* child k is paused */
    /* admissions counted by child k: [0..3] ips, [4..5] tenants, [6] global;
     * single writer each */
    _Atomic uint64_t admitted[MAX_ORDINALS][NIP + NTEN + 1];
    _Atomic uint64_t last_run_seq[64]; /* per slot: the incarnation last run */
    _Atomic uint64_t dup_runs;
    _Atomic uint64_t runs;
    _Atomic uint64_t reserves_refused;
};

static struct shared *sh;
static char seg_path[128];
static const struct gw_seg_config cfg = {
    .accounts = 256,
    .budgets = 16,
    .slots = 64,
    .queue = 32,
    .lanes = 32,
    .prompt_bytes = 64,
    .output_bytes = 64,
};
static const struct gw_budget_rate big = {.amount_us = 1000000 * SEC, .period_us = 1000 * SEC};
static const struct gw_budget_rate small = {.amount_us = 2 * SEC, .period_us = 1000 * SEC};

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Tenant and global accounts are made by the parent before any child starts
 * (as the master does from config), so children only look them up; ip
 * accounts come and go (idle ones are reclaimed), so children make them. */
static void get_or_die(struct gw_segment *seg, enum gw_kind k, const char *id, struct gw_acct *a)
{
    int rc = gw_ledger_get(seg, k, id, strlen(id), k == GW_KIND_IP, gw_now_us(), a);
    if (rc != 0) {
        fprintf(stderr, "child %d: account %s: %s\n", (int)getpid(), id, gw_strerror(rc));
        _exit(3);
    }
}

static void make_accounts(struct gw_segment *seg)
{
    struct gw_acct a;
    char id[32];
    for (int i = 0; i < NIP; i++) {
        snprintf(id, sizeof(id), "10.0.0.%d", i);
        assert_int_equal(gw_ledger_get(seg, GW_KIND_IP, id, strlen(id), 1, gw_now_us(), &a), 0);
    }
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "tenant-0", 8, 1, gw_now_us(), &a), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_TENANT, "tenant-1", 8, 1, gw_now_us(), &a), 0);
    assert_int_equal(gw_ledger_get(seg, GW_KIND_GLOBAL, "*", 1, 1, gw_now_us(), &a), 0);
}

/* One cycle of a front and a worker. */
static void cycle(struct gw_segment *seg, int k, uint64_t *seed, struct gw_acct *ip,
                  struct gw_acct *ten, struct gw_acct glob, struct gw_rate *rates)
{
    int i = (int)(rnd(seed) % NIP), t = (int)(rnd(seed) % NTEN);
    struct gw_admit_item items[3] = {
        {.acct = ip[i], .cell = 0, .rate = rates[0]},
        {.acct = ten[t], .cell = 0, .rate = rates[1]},
        {.acct = glob, .cell = 0, .rate = rates[2]},
    };
    uint64_t retry, now = gw_now_us();
    int rc = gw_ledger_admit(seg, items, 3, now, &retry);
    if (rc == GW_ESTALE) { /* the ip account was reclaimed while idle */
        char id[32];
        snprintf(id, sizeof(id), "10.0.0.%d", i);
        get_or_die(seg, GW_KIND_IP, id, &ip[i]);
        return;
    }
    if (rc == 0) {
        _Atomic uint64_t *c = sh->admitted[k];
        atomic_store_explicit(&c[i], atomic_load_explicit(&c[i], memory_order_relaxed) + 1,
                              memory_order_relaxed);
        atomic_store_explicit(&c[NIP + t],
                              atomic_load_explicit(&c[NIP + t], memory_order_relaxed) + 1,
                              memory_order_relaxed);
        atomic_store_explicit(&c[NIP + NTEN],
                              atomic_load_explicit(&c[NIP + NTEN], memory_order_relaxed) + 1,
                              memory_order_relaxed);
        struct gw_slot_ref r;
        if (gw_slot_claim(seg, &r) == 0) {
            int held = gw_ledger_inflight_take(seg, ten[t], 1000000) == 0;
            gw_slot_set_accounts(seg, r, ten[t], glob, held);
            const struct gw_budget_rate *tr = t == 0 ? &big : &small;
            if (gw_budget_reserve(seg, r, 1 + rnd(seed) % 20000, tr, &big, now, &retry) != 0) {
                atomic_fetch_add(&sh->reserves_refused, 1);
                gw_slot_move(seg, r, GW_SLOT_ADMITTED, GW_SLOT_FAILED);
                gw_budget_settle(seg, r);
                gw_slot_release(seg, r);
            } else if (gw_slot_move(seg, r, GW_SLOT_ADMITTED, GW_SLOT_QUEUED) == 0 &&
                       gw_queue_push(seg, r) != 0) {
                if (gw_slot_move(seg, r, GW_SLOT_QUEUED, GW_SLOT_FAILED) == 0) {
                    gw_budget_settle(seg, r);
                    gw_slot_release(seg, r);
                }
            }
        }
    }
    /* churn ip accounts (each busy for 1 ms after a request) so inserts
     * and reclaims race with everything else */
    char id[32];
    snprintf(id, sizeof(id), "198.51.100.%d", (int)(rnd(seed) % 120));
    struct gw_acct x;
    if (gw_ledger_get(seg, GW_KIND_IP, id, strlen(id), 1, now, &x) == 0) {
        struct gw_admit_item it = {.acct = x, .cell = 1};
        gw_rate_make(&it.rate, 1000, SEC, 0);
        gw_ledger_admit(seg, &it, 1, now, &retry);
    }
    /* worker: take a queued request, run it, settle it */
    struct gw_slot_ref w;
    if (rnd(seed) % 3 == 0) /* workers lag behind so the queue holds work */
        return;
    if (gw_queue_pop(seg, &w) != 0 || gw_slot_move(seg, w, GW_SLOT_QUEUED, GW_SLOT_RUNNING) != 0)
        return;
    uint64_t prev = atomic_exchange(&sh->last_run_seq[w.index], w.seq);
    if (prev == w.seq)
        atomic_fetch_add(&sh->dup_runs, 1);
    atomic_fetch_add(&sh->runs, 1);
    uint64_t res, used;
    int settled;
    gw_slot_money(seg, w, &res, &used, &settled);
    /* charge in steps, as a worker does per token; the last may exceed the
     * reservation and extend it */
    uint64_t total = rnd(seed) % (res + res / 2 + 1);
    for (int step = 1; step <= 4; step++) {
        gw_budget_charge(seg, w, total * (uint64_t)step / 4, gw_now_us());
        sched_yield();
    }
    gw_slot_move(seg, w, GW_SLOT_RUNNING, GW_SLOT_DONE);
    gw_budget_settle(seg, w);
    gw_slot_release(seg, w);
}

static void child(int k)
{
    struct gw_segment seg;
    char err[256];
    if (gw_segment_attach(&seg, seg_path, err, sizeof(err)) != 0 || gw_lane_acquire(&seg) != 0)
        _exit(2);
    struct gw_acct ip[NIP], ten[NTEN], glob;
    char id[32];
    for (int i = 0; i < NIP; i++) {
        snprintf(id, sizeof(id), "10.0.0.%d", i);
        get_or_die(&seg, GW_KIND_IP, id, &ip[i]);
    }
    get_or_die(&seg, GW_KIND_TENANT, "tenant-0", &ten[0]);
    get_or_die(&seg, GW_KIND_TENANT, "tenant-1", &ten[1]);
    get_or_die(&seg, GW_KIND_GLOBAL, "*", &glob);
    struct gw_rate rates[3];
    for (int i = 0; i < 3; i++)
        gw_rate_make(&rates[i], lim[i], SEC, burst[i]);
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 20) ^ (uint64_t)k;
    while (!atomic_load(&sh->stop))
        cycle(&seg, k, &seed, ip, ten, glob, rates);
    atomic_store(&sh->paused[k], 1);
    for (;;)
        pause(); /* the parent checks the queue, then kills us */
}

static int lane_of(struct gw_segment *seg, pid_t pid)
{
    for (int i = 0; i < (int)cfg.lanes; i++)
        if (gw_lane_pid(seg, i) == pid)
            return i;
    return -1;
}

static pid_t spawn(int k)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failing parent takes us along */
        child(k);
    }
    return p;
}

static void test_processes_killed_mid_run_lose_nothing(void **state)
{
    (void)state;
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
    snprintf(seg_path, sizeof(seg_path), "/tmp/gw-stress-%d.seg", (int)getpid());
    unlink(seg_path);
    struct gw_segment seg;
    char err[256];
    assert_int_equal(gw_segment_open(&seg, seg_path, &cfg, err, sizeof(err)), 0);
    assert_int_equal(gw_lane_acquire(&seg), 0); /* the parent plays the master */
    make_accounts(&seg);

    pid_t pids[CHILDREN];
    int ord[CHILDREN], next = 0, kills = 0, repaired_slots = 0;
    uint64_t t_start = gw_now_us();
    for (int i = 0; i < CHILDREN; i++) {
        ord[i] = next++;
        pids[i] = spawn(ord[i]);
    }
    uint64_t seed = 12345;
    while (gw_now_us() - t_start < RUN_US && next < MAX_ORDINALS) {
        struct timespec ts = {0, (long)(KILL_EVERY_US / 2 + rnd(&seed) % KILL_EVERY_US) * 1000};
        nanosleep(&ts, NULL);
        int status;
        pid_t gone = waitpid(-1, &status, WNOHANG);
        if (gone > 0)
            fail_msg("child %d exited on its own (status 0x%x)", (int)gone, status);
        int v = (int)(rnd(&seed) % CHILDREN);
        int lane = lane_of(&seg, pids[v]);
        kill(pids[v], SIGKILL);
        assert_int_equal(waitpid(pids[v], NULL, 0), pids[v]);
        kills++;
        if (lane >= 0) {
            int n = gw_lane_repair(&seg, lane);
            assert_true(n >= 0);
            repaired_slots += n;
        }
        ord[v] = next++;
        pids[v] = spawn(ord[v]);
    }
    /* stop the survivors at a cycle boundary and look at the queue */
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < CHILDREN; i++)
        while (!atomic_load(&sh->paused[ord[i]])) {
            int status;
            if (waitpid(pids[i], &status, WNOHANG) == pids[i])
                fail_msg("child %d exited on its own (status 0x%x)", (int)pids[i], status);
            usleep(1000);
        }
    uint64_t elapsed = gw_now_us() - t_start;

    struct gw_slot_ref entries[64];
    int n = 0;
    while (n < 64 && gw_queue_pop(&seg, &entries[n]) == 0)
        n++;
    int queued = 0;
    for (uint32_t i = 0; i < cfg.slots; i++) {
        uint64_t w = atomic_load(&slot_at(&seg, i)->state);
        if (SS_STATE(w) != GW_SLOT_QUEUED)
            continue;
        queued++;
        uint32_t seq = SS_SEQ(w);
        int found = 0;
        for (int e = 0; e < n; e++)
            if (entries[e].index == i && (entries[e].seq & 0xffff) == (seq & 0xffff))
                found++;
        if (found != 1)
            fail_msg("slot %u (seq %u) is QUEUED but appears %d times in the queue", i, seq, found);
        /* run it as the master would hand it to a worker */
        struct gw_slot_ref r = {.index = i, .seq = seq};
        assert_int_equal(gw_slot_move(&seg, r, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
        assert_int_equal(gw_slot_move(&seg, r, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
        assert_int_equal(gw_budget_settle(&seg, r), 1);
        assert_int_equal(gw_slot_release(&seg, r), 0);
    }
    /* now everyone goes; the master repairs every lane */
    for (int i = 0; i < CHILDREN; i++) {
        int lane = lane_of(&seg, pids[i]);
        kill(pids[i], SIGKILL);
        assert_int_equal(waitpid(pids[i], NULL, 0), pids[i]);
        if (lane >= 0)
            assert_true(gw_lane_repair(&seg, lane) >= 0);
    }

    /* (b) conservation, and nothing left in use */
    char why[256] = "";
    int bad = gw_ledger_check(&seg, why, sizeof(why));
    if (bad)
        fail_msg("conservation violated in %d account(s): %s", bad, why);
    for (uint32_t i = 0; i < cfg.slots; i++) {
        uint64_t w = atomic_load(&slot_at(&seg, i)->state);
        if (SS_STATE(w) != GW_SLOT_FREE)
            fail_msg("slot %u left in state %s", i, gw_slot_state_name(SS_STATE(w)));
    }
    struct gw_acct t0, t1, glob;
    assert_int_equal(gw_ledger_get(&seg, GW_KIND_TENANT, "tenant-0", 8, 0, 0, &t0), 0);
    assert_int_equal(gw_ledger_get(&seg, GW_KIND_TENANT, "tenant-1", 8, 0, 0, &t1), 0);
    assert_int_equal(gw_ledger_get(&seg, GW_KIND_GLOBAL, "*", 1, 0, 0, &glob), 0);
    /* in-flight units: exact but for a kill between taking one and
     * recording it in the slot (at most one per kill) */
    assert_true(gw_ledger_inflight(&seg, t0) + gw_ledger_inflight(&seg, t1) <= (uint64_t)kills);

    /* (a) no window admitted more than it allows */
    uint64_t total[NIP + NTEN + 1] = {0};
    for (int k = 0; k < next; k++)
        for (int j = 0; j < NIP + NTEN + 1; j++)
            total[j] += atomic_load(&sh->admitted[k][j]);
    for (int j = 0; j < NIP + NTEN + 1; j++) {
        int w = j < NIP ? 0 : j < NIP + NTEN ? 1 : 2;
        uint64_t interval = (SEC + lim[w] - 1) / lim[w];
        uint64_t bound = lim[w] + burst[w] + elapsed / interval + 1;
        if (total[j] > bound)
            fail_msg("window %d admitted %llu > bound %llu", j, (unsigned long long)total[j],
                     (unsigned long long)bound);
        assert_true(total[j] > 0);
    }
    /* (c) no incarnation ran twice, and the run did real work */
    assert_int_equal(atomic_load(&sh->dup_runs), 0);
    assert_true(atomic_load(&sh->runs) > 100);
    struct gw_money m0, m1;
    assert_int_equal(gw_ledger_money(&seg, t0, &m0), 0);
    assert_int_equal(gw_ledger_money(&seg, t1, &m1), 0);
    assert_true(m0.reserved_us > 0 && m0.used_us > 0 && m0.refunded_us > 0);
    assert_true(atomic_load(&sh->reserves_refused) > 0); /* tenant-1's small budget said no */
    print_message("stress: %.1f s, %d kills, %d slots failed by repair, %llu runs, queued at stop "
                  "%d, admitted ip0 %llu tenant0 %llu global %llu, refused reserves %llu\n",
                  (double)elapsed / 1e6, kills, repaired_slots,
                  (unsigned long long)atomic_load(&sh->runs), queued, (unsigned long long)total[0],
                  (unsigned long long)total[NIP], (unsigned long long)total[NIP + NTEN],
                  (unsigned long long)atomic_load(&sh->reserves_refused));
    gw_segment_close(&seg);
    unlink(seg_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_processes_killed_mid_run_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
