/* generate.c: generations stepped together. A generation prefills its
 * prompt in chunks of n_batch tokens, then takes one token per step:
 * sample, update the repetition statistic, turn the token into text, look
 * for stop sequences, report progress, check for cancellation. gw_gen_step
 * runs one forward pass for every generation it is given (iteration-level
 * scheduling: who joins or leaves does so between passes) and splits the
 * pass's measured time among them (gw_share_split). gw_generate is one
 * generation stepped alone.
 */
#include "ctx.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

long gw_stop_find(const char *text, size_t len, const char *const *stops, size_t n_stops)
{
    long best = -1;
    for (size_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        if (sl == 0 || sl > len)
            continue;
        const char *hit = memmem(text, len, stops[i], sl);
        if (hit && (best < 0 || hit - text < best))
            best = hit - text;
    }
    return best;
}

/* Length of the longest suffix of text that is a proper prefix of a stop
 * sequence: text that must be held back because it may still become one. */
static size_t stop_holdback(const char *text, size_t len, const char *const *stops, size_t n)
{
    size_t hold = 0;
    for (size_t i = 0; i < n; i++) {
        size_t sl = strlen(stops[i]);
        for (size_t k = sl > 0 ? sl - 1 : 0; k > hold; k--)
            if (k <= len && memcmp(text + len - k, stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

static bool cancelled(const gw_gen_params *p)
{
    /* relaxed: the flag is a request to stop; nothing is read through it. */
    if (p->cancel_flag && atomic_load_explicit(p->cancel_flag, memory_order_relaxed))
        return true;
    return p->cancel_cb && p->cancel_cb(p->user);
}

struct text {
    char *buf;
    size_t len, cap, emitted;
};

static int text_append(struct text *t, const char *s, size_t n)
{
    if (n > t->cap - t->len) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap - t->len < n)
            cap *= 2;
        char *nb = realloc(t->buf, cap);
        if (!nb)
            return -ENOMEM;
        t->buf = nb;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    return 0;
}

static void text_emit(struct text *t, const gw_gen_params *p, size_t upto)
{
    if (upto > t->emitted && p->on_text)
        p->on_text(p->user, t->buf + t->emitted, upto - t->emitted);
    if (upto > t->emitted)
        t->emitted = upto;
}

struct gw_gen {
    gw_ctx *c;
    int seq;
    gw_gen_params p;
    int32_t *prompt; /* a copy */
    size_t n_prompt, fed;
    int pos;      /* next position to fill */
    int32_t last; /* the last token, fed at the next step; -1 before */
    int32_t *out; /* the caller's, may be NULL */
    size_t out_cap;
    gw_sampler *smp;
    gw_loopwatch rep; /* the repetition detectors, this sequence's own */
    float top1;       /* the last sample's top-1 probability, -1 greedy */
    struct text txt;
    gw_gen_result res;
    int done, err;
    uint64_t dev_us;       /* the shares of every pass it took part in */
    uint64_t pending_us;   /* shares not reported by on_step yet */
    int item_n, item_want; /* this step's rows, and whether it samples */
    size_t maxstop;
};

int gw_gen_new(gw_ctx *c, const int32_t *prompt, size_t n_prompt, const gw_gen_params *p,
               int32_t *out, size_t out_cap, gw_gen **out_gen)
{
    if (!c || !prompt || n_prompt == 0 || !p || !out_gen || p->max_tokens < 1 ||
        (p->n_eog && !p->eog_ids) || (p->n_stops && !p->stops) || (p->n_forced && !p->forced) ||
        p->n_forced >= (size_t)p->max_tokens)
        return -EINVAL;
    int n_ctx = gw_ctx_n_ctx(c);
    if (n_prompt > (size_t)n_ctx)
        return GW_ECONTEXT;
    int want = (int)n_prompt + p->max_tokens;
    if (want > n_ctx || want < 0)
        want = n_ctx;
    int seq = gw_seq_open(c, want);
    if (seq == -EAGAIN && c->legacy_seq >= 0) {
        /* gw_ctx_eval's own sequence is only kept for its next call */
        gw_seq_close(c, c->legacy_seq);
        seq = gw_seq_open(c, want);
    }
    if (seq < 0)
        return seq;
    gw_gen *g = calloc(1, sizeof *g);
    int rc = -ENOMEM;
    if (!g || !(g->prompt = malloc(n_prompt * sizeof(int32_t))))
        goto fail;
    if ((rc = gw_loopwatch_init(&g->rep,
                                p->repeat_max_period ? p->repeat_max_period : GW_REPEAT_MAX_PERIOD,
                                p->digit_ids)) < 0 ||
        (rc = gw_sampler_new(&p->sampling, gw_model_cfg(gw_ctx_model(c))->vocab, &g->smp)) < 0)
        goto fail;
    memcpy(g->prompt, prompt, n_prompt * sizeof(int32_t));
    g->c = c;
    g->seq = seq;
    g->p = *p;
    g->n_prompt = n_prompt;
    g->last = -1;
    g->out = out;
    g->out_cap = out_cap;
    g->res.n_prompt = n_prompt;
    for (size_t i = 0; i < p->n_stops; i++)
        if (strlen(p->stops[i]) > g->maxstop)
            g->maxstop = strlen(p->stops[i]);
    *out_gen = g;
    return 0;
fail:
    gw_seq_close(c, seq);
    gw_gen_free(g);
    return rc;
}

void gw_gen_free(gw_gen *g)
{
    if (!g)
        return;
    if (g->c)
        gw_seq_close(g->c, g->seq);
    free(g->prompt);
    free(g->txt.buf);
    gw_sampler_free(g->smp);
    free(g);
}

int gw_gen_done(const gw_gen *g)
{
    return g->done;
}

const gw_gen_result *gw_gen_res(const gw_gen *g)
{
    return &g->res;
}

uint64_t gw_gen_device_us(const gw_gen *g)
{
    return g->dev_us;
}

size_t gw_gen_prompt_fed(const gw_gen *g)
{
    return g->fed;
}

static void finish(gw_gen *g, int why)
{
    g->res.finish = why;
    g->done = 1;
    if (why != GW_FINISH_STOP)
        text_emit(&g->txt, &g->p, g->txt.len);
    /* the blocks go back to the pool now, not when the owner frees it */
    gw_seq_close(g->c, g->seq);
    g->c = NULL;
}

/* Before a step: whether the generation may take part (the checks the
 * loop made before each token), else it finishes here. */
static int may_run(gw_gen *g)
{
    if (g->done)
        return 0;
    if (g->fed == g->n_prompt) {
        if (g->res.n_tokens >= (uint64_t)g->p.max_tokens) {
            finish(g, GW_FINISH_LENGTH);
            return 0;
        }
        if (cancelled(&g->p)) {
            finish(g, GW_FINISH_CANCEL);
            return 0;
        }
        if (g->pos >= gw_ctx_n_ctx(g->c)) {
            finish(g, GW_FINISH_CONTEXT);
            return 0;
        }
    } else if (cancelled(&g->p)) {
        finish(g, GW_FINISH_CANCEL);
        return 0;
    }
    return 1;
}

/* The item of the generation for this pass: its last token, or its next
 * chunk of prompt (chunks at multiples of n_batch from position 0, as a
 * solo gw_ctx_eval cuts them, so the numbers are the same). */
static gw_batch_item item_of(gw_gen *g)
{
    if (g->fed == g->n_prompt) {
        g->item_n = 1;
        g->item_want = 1;
        return (gw_batch_item){
            .seq = g->seq, .tokens = &g->last, .n = 1, .pos = g->pos, .logits = 1};
    }
    size_t nb = (size_t)g->c->n_batch, n = g->n_prompt - g->fed < nb ? g->n_prompt - g->fed : nb;
    g->item_n = (int)n;
    g->item_want = g->fed + n == g->n_prompt;
    return (gw_batch_item){.seq = g->seq,
                           .tokens = g->prompt + g->fed,
                           .n = (int)n,
                           .pos = g->pos,
                           .logits = g->item_want};
}

/* The text of a new token: accumulated, searched for stop sequences and
 * handed out except what may still become one. -1 or the stop's offset. */
static long token_text(gw_gen *g, int32_t tok)
{
    const gw_gen_params *p = &g->p;
    if (!p->piece)
        return -1;
    char piece[256];
    long stop_at = -1;
    int n = p->piece(p->user, tok, piece, sizeof piece);
    if (n > 0) {
        size_t from = g->txt.len;
        if (text_append(&g->txt, piece, (size_t)n < sizeof piece ? (size_t)n : sizeof piece) < 0)
            return -2;
        /* A new match must end in the new piece. */
        size_t start = from > g->maxstop ? from - g->maxstop : 0;
        long hit = gw_stop_find(g->txt.buf + start, g->txt.len - start, p->stops, p->n_stops);
        if (hit >= 0)
            stop_at = (long)start + hit;
    }
    if (stop_at >= 0)
        text_emit(&g->txt, p, (size_t)stop_at);
    else
        text_emit(&g->txt, p,
                  g->txt.len - stop_holdback(g->txt.buf, g->txt.len, p->stops, p->n_stops));
    return stop_at;
}

/* After the pass: the generation's new token from its logits. */
static int32_t sample(gw_gen *g, float *logits)
{
    if (g->p.sampling.temperature > 0) {
        int32_t tok = gw_sampler_sample(g->smp, logits);
        g->top1 = gw_sampler_top1(g->smp);
        return tok;
    }
    g->top1 = -1;
    return gw_argmax(logits, gw_model_cfg(gw_ctx_model(g->c))->vocab);
}

/* The new token: end of generation, or recorded, turned into text and
 * reported. */
static void take_token(gw_gen *g, int32_t tok, uint64_t step_ns)
{
    const gw_gen_params *p = &g->p;
    int replay = g->res.n_tokens < p->n_forced;
    if (replay)
        tok = p->forced[g->res.n_tokens];
    if (g->res.n_tokens == 0 && cancelled(p)) {
        finish(g, GW_FINISH_CANCEL); /* cancelled during its prefill */
        return;
    }
    g->res.decode_ns += step_ns;
    for (size_t i = 0; i < p->n_eog; i++)
        if (tok == p->eog_ids[i]) {
            finish(g, GW_FINISH_EOG);
            return;
        }
    if (g->out && g->res.n_tokens < g->out_cap)
        g->out[g->res.n_tokens] = tok;
    g->res.n_tokens++;
    g->last = tok;
    gw_loopwatch_push(&g->rep, tok, replay ? -1 : g->top1);
    long stop_at = token_text(g, tok);
    if (stop_at == -2) {
        g->err = -ENOMEM;
        finish(g, GW_FINISH_CANCEL);
        return;
    }
    if (p->on_step && !replay) {
        gw_gen_step st = {.n_tokens = g->res.n_tokens,
                          .token = tok,
                          .step_ns = step_ns,
                          .device_ns = g->pending_us * 1000u,
                          .rep_period = g->rep.exact.period,
                          .rep_count = g->rep.exact.count};
        gw_loopwatch_stat(&g->rep, &st.loop);
        p->on_step(p->user, &st);
    }
    if (!replay)
        g->pending_us = 0;
    if (stop_at >= 0)
        finish(g, GW_FINISH_STOP);
    else if (g->res.n_tokens >= (uint64_t)p->max_tokens)
        finish(g, GW_FINISH_LENGTH); /* leaves at the end of this step */
}

int gw_gen_error(const gw_gen *g)
{
    return g->err;
}

void gw_share_split(uint64_t total, const uint64_t *units, int n, uint64_t *out)
{
    unsigned __int128 sum = 0;
    for (int i = 0; i < n; i++)
        sum += units[i];
    if (n <= 0)
        return;
    if (sum == 0) { /* no cost model: equal shares */
        for (int i = 0; i < n; i++)
            out[i] = total / (uint64_t)n + ((uint64_t)i < total % (uint64_t)n);
        return;
    }
    uint64_t given = 0;
    for (int i = 0; i < n; i++) {
        out[i] = (uint64_t)((unsigned __int128)total * units[i] / sum);
        given += out[i];
    }
    /* largest remainder: the rest, one each, to the largest fractions
     * (the earlier on a tie), so the shares add up to total exactly */
    for (uint64_t left = total - given; left > 0; left--) {
        int best = -1;
        unsigned __int128 best_frac = 0;
        for (int i = 0; i < n; i++) {
            unsigned __int128 frac = (unsigned __int128)total * units[i] % sum;
            if (out[i] != (uint64_t)((unsigned __int128)total * units[i] / sum))
                continue; /* took one already */
            if (best < 0 || frac > best_frac) {
                best = i;
                best_frac = frac;
            }
        }
        out[best]++;
    }
}

uint64_t gw_row_cost(const gw_model_config *c, int pos, int logits)
{
    uint64_t dim = (uint64_t)c->dim, kv = (uint64_t)c->head_dim * (uint64_t)c->n_head_kv;
    uint64_t mm =
        (uint64_t)c->n_layer * (2 * dim * dim + 2 * dim * kv + 3 * dim * (uint64_t)c->ffn);
    uint64_t att = (uint64_t)c->n_layer * (uint64_t)c->n_head * (uint64_t)c->head_dim * 2 *
                   ((uint64_t)pos + 1);
    return mm + att + (logits ? (uint64_t)c->vocab * dim : 0);
}

/* What item i's rows cost in the cost model: their multiply-adds. */
static uint64_t item_cost(const gw_ctx *c, const gw_batch_item *it)
{
    const gw_model_config *mc = gw_model_cfg(gw_ctx_model(c));
    uint64_t u = 0;
    for (int k = 0; k < it->n; k++)
        u += gw_row_cost(mc, it->pos + k, it->logits && k == it->n - 1);
    return u;
}

/* Picks this step's items: every decoding generation (one row each), then
 * prompt chunks in the given order while the budget lasts (at least one
 * item per step). */
static int pick_items(gw_ctx *c, gw_gen *const *gens, int n, int budget, gw_gen **part,
                      gw_batch_item *items)
{
    int k = 0, rows = 0, cap = gw_ctx_max_rows(c);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            gw_gen *g = gens[i];
            if (g->done || (g->fed == g->n_prompt) != (pass == 0) || k >= gw_ctx_max_seqs(c))
                continue;
            gw_batch_item it = item_of(g);
            if (rows + it.n > cap || (k > 0 && rows + it.n > budget))
                continue;
            rows += it.n;
            part[k] = g;
            items[k++] = it;
        }
    return k;
}

/* The step's cost split among its generations (gw_share_split of the
 * cost model's units), added to each. */
static void charge(gw_ctx *c, gw_gen **part, const gw_batch_item *items, int k, uint64_t cost_ns,
                   gw_step_info *info)
{
    uint64_t units[GW_MAX_SEQS] = {0}, share[GW_MAX_SEQS] = {0};
    for (int i = 0; i < k; i++)
        units[i] = item_cost(c, &items[i]);
    info->pass_ns = cost_ns;
    info->device_us = (info->carry_ns + cost_ns) / 1000u;
    info->carry_ns = (info->carry_ns + cost_ns) % 1000u;
    gw_share_split(info->device_us, units, k, share);
    for (int i = 0; i < k; i++) {
        part[i]->dev_us += share[i];
        part[i]->pending_us += share[i];
        part[i]->res.device_ns += share[i] * 1000u;
    }
}

/* A step's sampling, its generations cut into the pool's shares: each has
 * its own logits, sampler and PRNG, so which thread samples it, and in
 * what order, changes no choice. On the CPU a temperature sample is a
 * softmax over the vocabulary (~0.14 ms for 49152 logits), which a batch
 * of 8 would otherwise pay on the calling thread alone while the others
 * wait. */
struct sample_job {
    gw_ctx *c;
    gw_gen **part;
    int32_t *tok;
    int k;
};

static void sample_share(void *arg, int i, int n, int t)
{
    (void)t;
    struct sample_job *j = arg;
    for (int s = j->k * i / n; s < j->k * (i + 1) / n; s++) {
        float *lg = gw_ctx_batch_logits(j->c, s);
        j->tok[s] = lg ? sample(j->part[s], lg) : -1;
    }
}

int gw_batch_step(gw_ctx *c, gw_gen *const *gens, int n, int budget, gw_step_info *info)
{
    if (!c || (!gens && n) || n < 0 || !info)
        return -EINVAL;
    gw_gen *part[GW_MAX_SEQS];
    gw_batch_item items[GW_MAX_SEQS];
    int32_t tok[GW_MAX_SEQS];
    uint64_t t0 = gw_mono_ns();
    for (int i = 0; i < n; i++)
        may_run(gens[i]);
    int k = pick_items(c, gens, n, budget, part, items);
    info->n_gens = k;
    info->rows = 0;
    info->device_us = 0;
    if (k == 0)
        return 0;
    int rc = gw_ctx_eval_batch(c, items, k);
    if (rc < 0)
        return rc;
    struct sample_job sj = {.c = c, .part = part, .tok = tok, .k = k};
    if (k > 1 && c->pool)
        gw_pool_run(c->pool, sample_share, &sj);
    else
        sample_share(&sj, 0, 1, 0);
    for (int i = 0; i < k; i++) {
        info->rows += items[i].n;
        part[i]->pos += items[i].n;
        if (part[i]->fed < part[i]->n_prompt)
            part[i]->fed += (size_t)items[i].n;
    }
    /* The pass's cost: device time on a GPU; on the CPU (the device, held
     * all that time) the step's wall time up to the last sample. */
    uint64_t step_ns = gw_mono_ns() - t0;
    charge(c, part, items, k, gw_ctx_on_gpu(c) ? gw_ctx_device_ns(c) : step_ns, info);
    for (int i = 0; i < k; i++) {
        gw_gen *g = part[i];
        if (g->res.prompt_ns == 0 && g->fed == g->n_prompt)
            g->res.prompt_ns = step_ns;
        if (tok[i] >= 0)
            take_token(g, tok[i], step_ns);
    }
    return 0;
}

int gw_generate(gw_ctx *c, const int32_t *prompt, size_t n_prompt, const gw_gen_params *p,
                int32_t *out, size_t out_cap, gw_gen_result *res)
{
    if (!res)
        return -EINVAL;
    gw_gen *g;
    int rc = gw_gen_new(c, prompt, n_prompt, p, out, out_cap, &g);
    if (rc < 0)
        return rc == -EAGAIN ? -EBUSY : rc;
    gw_step_info info = {0};
    while (!g->done && (rc = gw_batch_step(c, &g, 1, gw_ctx_max_rows(c), &info)) == 0)
        ;
    if (rc == 0)
        rc = g->err;
    *res = g->res;
    gw_gen_free(g);
    return rc;
}
