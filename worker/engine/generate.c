/* generate.c: the generation loop. Prefill, then one token per step:
 * forward, sample, update the repetition statistic, turn the token into
 * text, look for stop sequences, report progress, check for cancellation.
 */
#include "engine.h"

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

int gw_generate(gw_ctx *c, const int32_t *prompt, size_t n_prompt, const gw_gen_params *p,
                int32_t *out, size_t out_cap, gw_gen_result *res)
{
    if (!c || !prompt || n_prompt == 0 || !p || !res || p->max_tokens < 1 ||
        (p->n_eog && !p->eog_ids) || (p->n_stops && !p->stops))
        return -EINVAL;
    memset(res, 0, sizeof *res);
    res->n_prompt = n_prompt;
    const gw_model_config *cfg = gw_model_cfg(gw_ctx_model(c));
    gw_sampler *smp = NULL;
    struct text txt = {0};
    gw_repeat rep;
    int rc =
        gw_repeat_init(&rep, p->repeat_max_period ? p->repeat_max_period : GW_REPEAT_MAX_PERIOD);
    if (rc < 0)
        return rc;
    if ((rc = gw_sampler_new(&p->sampling, cfg->vocab, &smp)) < 0)
        return rc;

    /* Greedy decoding asks the context for the argmax only (on a GPU the
     * logits then never leave the device); otherwise the sampler picks. */
    bool greedy = p->sampling.temperature <= 0;
    float *logits = NULL;
    int32_t next = -1;
    uint64_t t0 = gw_mono_ns();
    if ((rc = greedy ? gw_ctx_eval_greedy(c, prompt, n_prompt, 0, &next)
                     : gw_ctx_eval(c, prompt, n_prompt, 0, &logits)) < 0)
        goto out;
    res->prompt_ns = gw_mono_ns() - t0;
    uint64_t dev_ns = gw_ctx_device_ns(c);
    res->device_ns = dev_ns;

    int pos = (int)n_prompt;
    int32_t last = -1;
    for (;;) {
        if (res->n_tokens >= (uint64_t)p->max_tokens) {
            res->finish = GW_FINISH_LENGTH;
            break;
        }
        if (cancelled(p)) {
            res->finish = GW_FINISH_CANCEL;
            break;
        }
        uint64_t ts = gw_mono_ns();
        if (last >= 0) {
            if (pos >= gw_ctx_n_ctx(c)) {
                res->finish = GW_FINISH_CONTEXT;
                break;
            }
            if ((rc = greedy ? gw_ctx_eval_greedy(c, &last, 1, pos, &next)
                             : gw_ctx_eval(c, &last, 1, pos, &logits)) < 0)
                goto out;
            pos++;
            dev_ns += gw_ctx_device_ns(c);
            res->device_ns += gw_ctx_device_ns(c);
        }
        int32_t tok = greedy ? next : gw_sampler_sample(smp, logits);
        uint64_t step = gw_mono_ns() - ts;
        res->decode_ns += step;
        bool eog = false;
        for (size_t i = 0; i < p->n_eog; i++)
            eog |= tok == p->eog_ids[i];
        if (eog) {
            res->finish = GW_FINISH_EOG;
            break;
        }
        if (out && res->n_tokens < out_cap)
            out[res->n_tokens] = tok;
        res->n_tokens++;
        last = tok;
        gw_repeat_push(&rep, tok);

        long stop_at = -1;
        if (p->piece) {
            char piece[256];
            int n = p->piece(p->user, tok, piece, sizeof piece);
            if (n > 0) {
                size_t from = txt.len;
                if ((rc = text_append(&txt, piece,
                                      (size_t)n < sizeof piece ? (size_t)n : sizeof piece)) < 0)
                    goto out;
                /* A new match must end in the new piece. */
                size_t maxstop = 0;
                for (size_t i = 0; i < p->n_stops; i++)
                    if (strlen(p->stops[i]) > maxstop)
                        maxstop = strlen(p->stops[i]);
                size_t start = from > maxstop ? from - maxstop : 0;
                long hit = gw_stop_find(txt.buf + start, txt.len - start, p->stops, p->n_stops);
                if (hit >= 0)
                    stop_at = (long)start + hit;
            }
            if (stop_at >= 0)
                text_emit(&txt, p, (size_t)stop_at);
            else
                text_emit(&txt, p, txt.len - stop_holdback(txt.buf, txt.len, p->stops, p->n_stops));
        }
        if (p->on_step) {
            gw_gen_step st = {.n_tokens = res->n_tokens,
                              .token = tok,
                              .step_ns = step,
                              .device_ns = dev_ns,
                              .rep_period = rep.period,
                              .rep_count = rep.count};
            p->on_step(p->user, &st);
        }
        dev_ns = 0;
        if (stop_at >= 0) {
            res->finish = GW_FINISH_STOP;
            break;
        }
    }
    if (res->finish != GW_FINISH_STOP)
        text_emit(&txt, p, txt.len);
    rc = 0;
out:
    free(txt.buf);
    gw_sampler_free(smp);
    return rc;
}
