/* worker_internal.h: what the worker process's files share. Private to
 * worker/. worker_proc.c: loading and the main loop; worker_sched.c: which
 * queued request joins the batch (fair by tenant) and the engine steps;
 * worker_job.c: one request from taking its slot to DONE. */
#ifndef GW_WORKER_INTERNAL_H
#define GW_WORKER_INTERNAL_H

#include "gw_engine.h"
#include "gw_worker.h"

/* Charge the ledger every this many tokens of a request (and at its end):
 * overspend past the budget is bounded by this many steps. */
#define GW_CHARGE_EVERY 4

/* The request's stop sequences, NUL-terminated (the slot's are not). */
struct gw_stops {
    const char *s[GW_STOP_MAX];
    size_t n;
    char buf[GW_STOP_MAX][GW_STOP_LEN + 1];
};

/* One request in the batch. Jobs are a fixed pool of max_batch entries,
 * each with its own output guard (a guard holds back text per stream). */
struct gw_job {
    struct gw_worker *w;
    int busy;
    struct gw_guard *guard;
    struct gw_slot_ref ref;
    struct gw_slot_req req; /* a copy: the slot's request does not change while it runs */
    struct gw_acct tenant;  /* for the fairness counter; have_tenant 0: none */
    int have_tenant;
    char *out;
    size_t cap;
    size_t written;
    gw_tok_decoder dec;
    int have_dec;
    int32_t *ids; /* the prompt's ids */
    size_t n_ids;
    struct gw_stops stops;
    gw_gen_params gp;
    gw_gen *gen; /* NULL while parked (waiting for KV blocks) */
    uint64_t started_ns;
    uint64_t tokens;
    uint64_t charged_at; /* tokens at the last charge */
    size_t vtc_fed;      /* prompt tokens and tokens the fairness counter has seen */
    uint64_t vtc_tokens;
    int stop_budget;   /* the ledger refused to extend the reservation */
    int stop_full;     /* the output area is full */
    int guard_kill;    /* 1 + the output-guard rule that ended it, 0 none */
    uint64_t first_ns; /* CLOCK_MONOTONIC of the first token, 0 before */
    uint64_t first_us; /* its device time then (the prompt's share included) */
    uint64_t rep_max;  /* longest repetition so far (gw_wd_rep_fold) */
    uint64_t vtc_now;  /* its tenant's counter, for this step's order */
    /* Continuing a request whose worker died (gw_slot_resumed): the ids it
     * had generated (replayed, not sampled), the bytes its client already
     * has (not published again) and the device time already charged. */
    int resumed;
    int32_t *forced;
    size_t n_forced;
    size_t skip;
    uint64_t base_us;
    uint64_t ids_pushed; /* ids recorded in the slot's resume area */
    unsigned guard_gen;  /* the rules' generation its guard was built from */
};

struct gw_worker {
    struct gw_config *cfg;
    struct gw_segment seg;
    const struct gw_fds *fds;
    int index;
    gw_model *model;
    gw_tokenizer *tok;
    uint8_t *digit_ids; /* gw_repeat_digit_map: the near-repetition statistic's */
    gw_chat_template ct;
    int have_ct;
    gw_ctx *ctx;
    uint64_t ewma_us_per_token; /* measured cost, published in our lane */
    char audit_path[256];       /* where an output-guard kill is audited */
    int device_lost;            /* a CUDA call failed: this context is not trusted again */
    int max_batch;              /* sequences one step runs at most */
    int n_jobs;                 /* jobs at once: max_batch and the held places */
    int step_tokens;            /* rows of one engine step */
    struct gw_job *jobs;        /* n_jobs */
    const char *config_path;
    unsigned guard_gen;    /* bumped by SIGHUP: free jobs rebuild their guards */
    int n_running;         /* busy jobs with a generation */
    struct gw_job *parked; /* taken and tokenized, waiting for KV blocks */
    gw_step_info step;     /* the engine's carry across steps */
    int priority_only;     /* the last step ran only priority sequences (worker_sched.c) */
    uint64_t *seen_ns;     /* [accounts] when a tenant was last seen active */
    struct cand *cands;    /* [slots] scratch of pick() */
    int cpus[256];         /* model.pin_threads: the CPU of each engine thread */
    char pin_note[160];    /* how they were placed, for the ready line */
};

void gw__wlog(const struct gw_worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* worker_job.c */
/* Takes the QUEUED slot ref into a free job: 1 when it runs (or waits for
 * KV blocks), 0 when it ended at once (cancelled, a bad prompt: already
 * DONE) or another worker took it first. */
int gw__job_take(struct gw_worker *w, struct gw_job *j, struct gw_slot_ref ref);
/* A parked job's second try at the KV pool: 1 placed, 0 still waiting. */
int gw__job_place(struct gw_worker *w, struct gw_job *j);
/* After an engine step: charges, fairness counter, and the end of a
 * finished job. */
void gw__job_after_step(struct gw_worker *w, struct gw_job *j);
/* The engine step failed under the job: fail it and end it. */
void gw__job_fail_step(struct gw_worker *w, struct gw_job *j, int rc);
/* Fails the job waiting for KV blocks (the worker stops). */
void gw__job_fail_parked(struct gw_worker *w, const char *why);

/* worker_sched.c */
int gw__sched_init(struct gw_worker *w);
void gw__sched_free(struct gw_worker *w);
/* Fills the batch from the queue (fair by tenant); returns jobs running. */
int gw__sched_admit(struct gw_worker *w);
/* One engine step over the running jobs. */
void gw__sched_step(struct gw_worker *w);
/* Which of a step's generations gens[0, n) run (worker_sched.c's opening,
 * "Priority steps"): keep[i] gets 1 for those that do. vtc[i]: the
 * counter of gens[i]'s tenant (UINT64_MAX: none; vtc may be NULL); lead:
 * in counter units (0: prompts only). The priority ones: those still
 * prefilling with at most twice the prompt tokens left of the prefilling
 * one with fewest, and, when two counters differ by more than lead, the
 * decoding ones within lead of the smallest, if they are fewer than the
 * other decoding ones. When some but not all have priority and
 * *priority_only is 0, only those run, and *priority_only becomes 1;
 * otherwise all, and it becomes 0. Returns how many run. */
int gw__sched_priority(int *priority_only, gw_gen *const *gens, const uint64_t *vtc, uint64_t lead,
                       int n, unsigned char *keep);

/* model.pin_threads (worker_pin.c): the CPUs worker index of workers pins
 * its threads to, one per CPU: the index-th run of threads CPUs among
 * allowed[0, n_allowed) (ascending), into cpus[0, threads). Returns
 * threads, or 0 when they are not pinned: fewer than two threads, or the
 * workers' threads do not fit in the allowed CPUs. */
int gw__pin_plan(const int *allowed, int n_allowed, int workers, int threads, int index, int *cpus);
/* Resolves co->n_threads 0 (the allowed CPUs / workers) and, with
 * model.pin_threads, points co->cpus at w->cpus per gw__pin_plan; says
 * what it did in w->pin_note. */
void gw__pin_threads(struct gw_worker *w, gw_ctx_opts *co);

#endif
