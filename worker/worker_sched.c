/* worker_sched.c - continuous batching: which queued request joins the
 * batch when a place frees, and the engine steps over the batch.
 *
 * Fair by tenant, as Virtual Token Counters (Sheng et al., OSDI 2024): each
 * tenant has a counter in the segment (gw_vtc_*) that grows with the
 * service its requests receive, weighted prompt and output tokens divided
 * by its plan's weight (worker_job.c, count_service). When a place frees,
 * the queued request of the tenant with the smallest counter joins (the
 * oldest on a tie). A tenant that becomes active (seen with no queued or
 * running request for GW_VTC_IDLE_NS) is first lifted to the smallest
 * counter among the tenants that stayed active, so idleness cannot be
 * banked. Every worker of the node reads and writes the same counters, so
 * the order is node-wide. The queue's entries only wake workers up; any
 * QUEUED slot may be taken.
 *
 * Held places: a request does not wait for a running sequence to end when
 * its tenant's counter is below one in the batch. The worker has a quarter
 * of max_batch more jobs (and KV room for them) than a step runs; once
 * max_batch are busy, a request joins only if its counter is smaller than
 * the largest counter among the busy jobs, and each step runs the
 * max_batch jobs of smallest counter: the sequence of the most-served
 * tenant sits the step out, keeping its KV cache, and goes on when its
 * counter is no longer the largest. So a tenant that arrives while others'
 * long generations fill the batch (attackers' admitted sponges) gets its
 * first token at the next step, not when one of them ends; a tenant whose
 * own requests fill the batch never displaces itself. A held job whose
 * client went away is stepped anyway, for the engine to end it at once.
 *
 * Within a step, every decoding sequence takes a token; the prompts being
 * prefilled take chunks in the same order (smallest counter first) while
 * the step's token budget (model.step_tokens) lasts, so a long prompt
 * never stalls the others' next token for its whole prefill.
 *
 * Priority steps, every other step (gw__sched_priority): the priority
 * sequences are the prefilling ones with at most twice the prompt tokens
 * left of the one with fewest and, when a tenant in the step leads
 * another's counter by more than model.priority_lead generated tokens (of
 * a weight-1 tenant), the decoding ones of the tenants within that lead
 * of the smallest counter, if they are fewer than the other decoding ones.
 * When some but not all of the step's sequences have priority and the
 * last step was not already such a step, the step runs only them (the
 * others sit it out, their KV cache kept).
 * - Prompts first: a newcomer's first token waits for its own prompt, not
 *   for every running sequence's row and attention as well: on the CPU a
 *   full batch's decode rows cost as much as a short prompt's (8 rows:
 *   ~12 ms against 3 ms alone, docs/BENCHMARKS.md). The rows computed are
 *   the same ones, so throughput is unchanged.
 * - Shortest prompts first: prompts that arrive together (an attack's
 *   onset: six tenants' first prompts in one instant) would share one
 *   pass whose time grows with all their rows (38 rows: 27-36 ms against
 *   3.5 ms for a 3-token prompt alone on the CPU). Those with more than
 *   twice the fewest tokens left wait for the next step, which is a full
 *   one, so a 3-token question is not held up by the 13- and 500-token
 *   prompts that came with it, and a long prompt loses one step at most.
 *   Prompts of like length (a wave of one client's) still share a pass.
 * - Less served first: a tenant with one short request among a heavy
 *   tenant's (an attacker's admitted floods, a batch job) gets every other
 *   token from a step of its own rows, at a single sequence's speed, so it
 *   barely notices the other. VTC alone decides who takes a place; this
 *   decides how fast the places of the less served advance. Its price is
 *   the heavy tenant's: while the light one runs, its sequences sit out
 *   every other step (the node computes fewer rows per second). Light
 *   means fewer sequences too: one against one, a step of one row saves
 *   a row's time and costs the other sequence a whole step, so both run.
 * Sequences without priority lose at most every other step, however many
 * prompts and light tenants arrive.
 */
#include "worker_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A tenant not seen queued or running for this long is idle. */
#define GW_VTC_IDLE_NS 1000000000ull

struct cand {
    struct gw_slot_ref ref;
    struct gw_acct tenant;
    int have_tenant;
    int was_active; /* its tenant was seen active before this look */
    uint64_t created_us;
};

/* Whether tenant t was seen queued or running within GW_VTC_IDLE_NS. */
static int was_active(const struct gw_worker *w, struct gw_acct t, uint64_t now)
{
    uint64_t s = t.index < w->seg.cfg.accounts ? w->seen_ns[t.index] : 0;
    return s && now - s <= GW_VTC_IDLE_NS;
}

static void mark_seen(struct gw_worker *w, struct gw_acct t, uint64_t now)
{
    if (t.index < w->seg.cfg.accounts)
        w->seen_ns[t.index] = now;
}

/* The queued slots (up to cap), and *floor: the smallest counter among the
 * tenants that were active before this look (UINT64_MAX when none). Then
 * every tenant seen queued or running is marked active. */
static int scan(struct gw_worker *w, struct cand *c, int cap, uint64_t *floor)
{
    uint64_t now = gw_mono_ns();
    int n = 0;
    *floor = UINT64_MAX;
    for (uint32_t i = 0; i < w->seg.cfg.slots; i++) {
        struct gw_slot_ref r;
        struct gw_acct t;
        int st = gw_slot_peek(&w->seg, i, &r);
        if ((st != GW_SLOT_QUEUED && st != GW_SLOT_RUNNING) || gw_slot_tenant(&w->seg, r, &t) != 0)
            t = (struct gw_acct){.index = UINT32_MAX};
        int was = was_active(w, t, now);
        if (was) {
            uint64_t v = gw_vtc_get(&w->seg, t);
            *floor = v < *floor ? v : *floor;
        }
        struct gw_slot_req rq;
        if (st != GW_SLOT_QUEUED || n >= cap ||
            gw_slot_get_req(&w->seg, r, &rq) != GW_SLOT_QUEUED) /* changed while we read */
            continue;
        c[n++] = (struct cand){.ref = r,
                               .tenant = t,
                               .have_tenant = t.index != UINT32_MAX,
                               .was_active = was,
                               .created_us = rq.created_us};
    }
    for (uint32_t i = 0; i < w->seg.cfg.slots; i++) {
        struct gw_slot_ref r;
        struct gw_acct t;
        int st = gw_slot_peek(&w->seg, i, &r);
        if ((st == GW_SLOT_QUEUED || st == GW_SLOT_RUNNING) && gw_slot_tenant(&w->seg, r, &t) == 0)
            mark_seen(w, t, now);
    }
    return n;
}

/* The queued request to take next (*vtc: its tenant's counter), or 0 when
 * nothing is queued: the smallest counter, a newly active tenant lifted to
 * the floor first. */
static int pick(struct gw_worker *w, struct gw_slot_ref *out, uint64_t *vtc)
{
    struct cand *c = w->cands;
    uint64_t floor;
    int n = scan(w, c, (int)w->seg.cfg.slots, &floor);
    int best = -1;
    uint64_t best_v = 0;
    for (int k = 0; k < n; k++) {
        uint64_t v = 0;
        if (c[k].have_tenant)
            v = !c[k].was_active && floor != UINT64_MAX ? gw_vtc_lift(&w->seg, c[k].tenant, floor)
                                                        : gw_vtc_get(&w->seg, c[k].tenant);
        if (best < 0 || v < best_v || (v == best_v && c[k].created_us < c[best].created_us)) {
            best = k;
            best_v = v;
        }
    }
    if (best < 0)
        return 0;
    *out = c[best].ref;
    *vtc = best_v;
    return 1;
}

/* The largest counter among the busy jobs (0 when none has a tenant), and
 * *busy their count. */
static uint64_t busy_max(struct gw_worker *w, int *busy)
{
    uint64_t mx = 0;
    *busy = 0;
    for (int i = 0; i < w->n_jobs; i++) {
        struct gw_job *j = &w->jobs[i];
        if (!j->busy)
            continue;
        ++*busy;
        uint64_t v = j->have_tenant ? gw_vtc_get(&w->seg, j->tenant) : 0;
        mx = v > mx ? v : mx;
    }
    return mx;
}

int gw__sched_init(struct gw_worker *w)
{
    w->seen_ns = calloc(w->seg.cfg.accounts, sizeof(*w->seen_ns));
    w->cands = calloc(w->seg.cfg.slots, sizeof(*w->cands));
    return w->seen_ns && w->cands ? 0 : -ENOMEM;
}

void gw__sched_free(struct gw_worker *w)
{
    free(w->seen_ns);
    free(w->cands);
}

int gw__sched_admit(struct gw_worker *w)
{
    if (w->parked && !gw__job_place(w, w->parked))
        return w->n_running; /* still waiting for blocks: nothing else joins */
    while (!w->parked) {
        struct gw_job *free_job = NULL;
        for (int i = 0; i < w->n_jobs && !free_job; i++)
            if (!w->jobs[i].busy)
                free_job = &w->jobs[i];
        if (!free_job)
            break;
        if (free_job->guard_gen != w->guard_gen) {
            /* rules reloaded (SIGHUP): a guard holds a request's unpublished
             * text, so it is rebuilt only between requests */
            char err[2048];
            if (gw_guard_reload(&free_job->guard, w->config_path, err, sizeof(err)) != 0)
                gw__wlog(w, "reload refused, keeping the running guard rules: %s", err);
            free_job->guard_gen = w->guard_gen;
        }
        struct gw_slot_ref ref;
        uint64_t vtc;
        int busy;
        while (gw_queue_pop(&w->seg, &ref) == 0)
            ; /* the entries were wake-ups; pick() decides what runs */
        if (!pick(w, &ref, &vtc))
            break;
        uint64_t mx = busy_max(w, &busy);
        if (busy >= w->max_batch && vtc >= mx)
            break; /* a held place only for a tenant served less than one running */
        gw__job_take(w, free_job, ref);
    }
    return w->n_running;
}

static int by_counter(const void *a, const void *b)
{
    const struct gw_job *x = *(struct gw_job *const *)a, *y = *(struct gw_job *const *)b;
    if (x->vtc_now != y->vtc_now)
        return x->vtc_now < y->vtc_now ? -1 : 1;
    return x->req.created_us < y->req.created_us ? -1 : x->req.created_us > y->req.created_us;
}

/* The prompt tokens g still has to feed (0 once it decodes). */
static size_t prompt_left(const gw_gen *g)
{
    return gw_gen_res(g)->n_prompt - gw_gen_prompt_fed(g);
}

int gw__sched_priority(int *priority_only, gw_gen *const *gens, const uint64_t *vtc, uint64_t lead,
                       int n, unsigned char *keep)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    size_t shortest = SIZE_MAX;
    for (int i = 0; i < n; i++) {
        size_t left = prompt_left(gens[i]);
        shortest = left > 0 && left < shortest ? left : shortest;
        if (vtc && vtc[i] != UINT64_MAX) {
            lo = vtc[i] < lo ? vtc[i] : lo;
            hi = vtc[i] > hi ? vtc[i] : hi;
        }
    }
    /* lo + lead < hi: no overflow below */
    int behind = lead > 0 && lo != UINT64_MAX && hi - lo > lead;
    /* the less served must be the fewer: one sequence against one gains
     * a row's time and costs the other a whole step */
    int light = 0, heavy = 0;
    for (int i = 0; behind && i < n; i++) {
        if (prompt_left(gens[i]) > 0)
            continue;
        if (vtc[i] != UINT64_MAX && vtc[i] <= lo + lead)
            light++;
        else
            heavy++;
    }
    behind = behind && light < heavy;
    int p = 0;
    for (int i = 0; i < n; i++) {
        size_t left = prompt_left(gens[i]);
        /* shortest <= left, so 2 * shortest cannot overflow */
        p += keep[i] =
            (unsigned char)(left > 0 ? left <= 2 * shortest
                                     : behind && vtc[i] != UINT64_MAX && vtc[i] <= lo + lead);
    }
    if (*priority_only || p == 0 || p == n) {
        *priority_only = 0;
        memset(keep, 1, (size_t)n);
        return n;
    }
    *priority_only = 1;
    return p;
}

void gw__sched_step(struct gw_worker *w)
{
    struct gw_job *run[GW_MAX_SEQS];
    gw_gen *gens[GW_MAX_SEQS];
    int n = 0, all = 0;
    for (int i = 0; i < w->n_jobs; i++) {
        struct gw_job *j = &w->jobs[i];
        if (!j->busy || !j->gen)
            continue;
        j->vtc_now = j->have_tenant ? gw_vtc_get(&w->seg, j->tenant) : 0;
        run[all++] = j;
    }
    if (all == 0)
        return;
    qsort(run, (size_t)all, sizeof(run[0]), by_counter);
    /* the max_batch of smallest counter, and any held one whose client
     * went away (the engine ends it before computing its row) */
    for (int i = 0; i < all; i++)
        if (i < w->max_batch || gw_run_cancel_word(&w->seg, run[i]->ref.index) != 0)
            run[n++] = run[i];
    unsigned char keep[GW_MAX_SEQS];
    uint64_t vtc[GW_MAX_SEQS] = {0};
    for (int i = 0; i < n; i++) {
        gens[i] = run[i]->gen;
        vtc[i] = run[i]->have_tenant ? run[i]->vtc_now : UINT64_MAX;
    }
    /* the lead in counter units: worker_job.c's count_service for a
     * weight-1 tenant (1000 milli) */
    uint64_t lead = (uint64_t)((double)w->cfg->priority_lead * w->cfg->vtc_weight_output * 1000.0);
    gw__sched_priority(&w->priority_only, gens, vtc, lead, n, keep);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (keep[i])
            run[k] = run[i], gens[k++] = gens[i];
    n = k;
    int rc = gw_batch_step(w->ctx, gens, n, w->step_tokens, &w->step);
    if (rc < 0) {
        if (rc == -EIO && gw_ctx_on_gpu(w->ctx)) {
            /* A CUDA error can leave the context unusable (a fault poisons
             * it for good): fail the batch, then exit so the master starts
             * a fresh worker; only a new process gets a new context. */
            gw__wlog(w, "CUDA: %s; exiting so the master starts a fresh worker",
                     gw_ctx_error(w->ctx));
            w->device_lost = 1;
        }
        for (int i = 0; i < n; i++)
            gw__job_fail_step(w, run[i], rc);
        return;
    }
    /* the node's device time is the sum of the steps' (exactly what the
     * requests were charged, shares of the same microseconds) */
    gw_metrics_add(&w->seg, GW_MC_DEVICE_NS, w->step.device_us * 1000u);
    gw_proc_heartbeat(&w->seg, (int64_t)run[0]->ref.index);
    for (int i = 0; i < n; i++)
        gw__job_after_step(w, run[i]);
}
