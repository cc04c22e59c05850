/* context.c: evaluation contexts: the CPU one (thread pool, scratch, the
 * paged KV cache of kv.c) or the CUDA engine's (gw_cuda.h), chosen by the
 * device option; and gw_ctx_eval, one sequence of the context's own
 * through the batched pass of forward.c.
 */
#include "ctx.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The sizes every context shares: n_ctx, n_batch, max_seqs, max_rows and
 * the pool, from the options (gpu: one sequence, the CUDA engine's own
 * cache). */
static int ctx_sizes(gw_ctx *x, const gw_ctx_opts *o, int gpu)
{
    const gw_model_config *c = &x->m->cfg;
    x->n_ctx = o->n_ctx ? o->n_ctx : (c->n_ctx_train < 4096 ? c->n_ctx_train : 4096);
    x->n_batch = o->n_batch ? o->n_batch : gpu ? 512 : 64;
    int seqs = gpu || !o->max_seqs ? 1 : o->max_seqs;
    int64_t kv = o->kv_tokens ? o->kv_tokens : (int64_t)x->n_ctx * seqs;
    if (gpu || kv > INT32_MAX / 2)
        kv = gpu ? x->n_ctx : INT32_MAX / 2;
    /* by default every sequence may bring a chunk of prompt */
    int64_t rows = o->max_rows ? o->max_rows : (int64_t)x->n_batch * seqs;
    x->max_rows = rows > 65536 ? 65536 : (int)rows;
    if (x->max_rows < x->n_batch)
        x->max_rows = x->n_batch;
    x->rope_theta_scale = powf(c->rope_base, -2.0f / (float)c->head_dim);
    x->logits = malloc((size_t)seqs * (size_t)c->vocab * sizeof(float));
    x->item_logit = malloc((size_t)seqs * sizeof(int));
    if (!x->logits || !x->item_logit)
        return -ENOMEM;
    return gw__kv_init(x, (int)kv, seqs, !gpu);
}

/* Scratch of a CPU context: per thread (attention) and per row. */
static int ctx_scratch(gw_ctx *x, int nt)
{
    const gw_model_config *c = &x->m->cfg;
    size_t R = (size_t)x->max_rows, dim = (size_t)c->dim, ffn = (size_t)c->ffn;
    size_t kv_dim = (size_t)c->head_dim * (size_t)c->n_head_kv, hd = (size_t)c->head_dim;
    x->xq_stride = (dim > ffn ? dim : ffn) / 32 + 1;
    x->qh = malloc((size_t)nt * hd * sizeof(uint16_t));
    x->atth = malloc((size_t)nt * (size_t)x->n_ctx * sizeof(uint16_t));
    x->lanes = malloc((size_t)nt * 64 * hd * sizeof(float));
    x->att = malloc((size_t)nt * (size_t)x->n_ctx * sizeof(float));
    x->vgather = malloc((size_t)nt * (size_t)x->n_ctx * hd * sizeof(uint16_t));
    x->vptr = malloc((size_t)nt * (size_t)(x->n_ctx / GW_KV_BLOCK + 1) * sizeof *x->vptr);
    x->x = malloc(R * dim * sizeof(float));
    x->xb = malloc(R * dim * sizeof(float));
    x->xb2 = malloc(R * dim * sizeof(float));
    x->q = malloc(R * dim * sizeof(float));
    x->k = malloc(R * kv_dim * sizeof(float));
    x->v = malloc(R * kv_dim * sizeof(float));
    x->hb = malloc(R * ffn * sizeof(float));
    x->hb2 = malloc(R * ffn * sizeof(float));
    x->xq = calloc(R * x->xq_stride, sizeof(gw_q8));
    x->xq2 = calloc(R * x->xq_stride, sizeof(gw_q8));
    x->row_seq = malloc(R * sizeof(int));
    x->row_pos = malloc(R * sizeof(int));
    x->row_multi = malloc(R);
    x->rope_cs = malloc(R * hd * sizeof(float));
    if (!x->qh || !x->atth || !x->lanes || !x->att || !x->vgather || !x->vptr || !x->x || !x->xb ||
        !x->xb2 || !x->q || !x->k || !x->v || !x->hb || !x->hb2 || !x->xq || !x->xq2 ||
        !x->row_seq || !x->row_pos || !x->row_multi || !x->rope_cs)
        return -ENOMEM;
    return 0;
}

static int ctx_cpu(const gw_model *m, const gw_ctx_opts *o, gw_ctx **out)
{
    if (o->cpus && !o->n_threads)
        return -EINVAL; /* cpus has n_threads entries */
    /* The CPU engine's products read the packed copies (packed.c); the
     * model is const to its users, and packing adds to it, once. */
    if (gw__model_pack((gw_model *)m) < 0)
        return -ENOMEM;
    gw_ctx *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    x->m = m;
    snprintf(x->backend, sizeof x->backend, "cpu");
    int nt = o->n_threads;
    if (!nt) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nt = n > 0 ? (int)(n > 256 ? 256 : n) : 1;
    }
    int rc = gw_pool_new(nt, o->cpus, &x->pool);
    if (rc == 0)
        rc = ctx_sizes(x, o, 0);
    if (rc == 0)
        rc = ctx_scratch(x, nt);
    if (rc < 0) {
        gw_ctx_free(x);
        return rc;
    }
    *out = x;
    return 0;
}

/* The model as the CUDA engine reads it; names holds the tensor names
 * its messages use (2 + 7 per layer, 48 bytes each). */
static void cuda_desc(const gw_model *m, gw_cuda_model *d, gw_cuda_layer *L, char (*names)[48],
                      float theta_scale)
{
    const gw_model_config *c = &m->cfg;
    *d = (gw_cuda_model){.n_layer = c->n_layer,
                         .dim = c->dim,
                         .n_head = c->n_head,
                         .n_head_kv = c->n_head_kv,
                         .head_dim = c->head_dim,
                         .ffn = c->ffn,
                         .vocab = c->vocab,
                         .rms_eps = c->rms_eps,
                         .rope_theta_scale = theta_scale,
                         .out_norm = m->out_norm,
                         .layers = L};
#define MAT(dst, src, nm)                                                                          \
    (snprintf(*names, sizeof *names, "%s", nm), dst = (gw_cuda_mat){.type = (src).type,            \
                                                                    .rows = (src).rows,            \
                                                                    .cols = (src).cols,            \
                                                                    .row_bytes = (src).row_bytes,  \
                                                                    .data = (src).data,            \
                                                                    .name = *names++})
    MAT(d->tok_embd, m->tok_embd, "token_embd.weight");
    MAT(d->output, m->output, c->tied ? "token_embd.weight" : "output.weight");
    for (int i = 0; i < c->n_layer; i++) {
        const struct layer *S = &m->l[i];
        char nm[48];
        L[i].attn_norm = S->attn_norm;
        L[i].ffn_norm = S->ffn_norm;
#define LM(f, s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", i, s), MAT(L[i].f, S->f, nm))
        LM(wq, "attn_q");
        LM(wk, "attn_k");
        LM(wv, "attn_v");
        LM(wo, "attn_output");
        LM(w_gate, "ffn_gate");
        LM(w_up, "ffn_up");
        LM(w_down, "ffn_down");
#undef LM
    }
#undef MAT
}

/* Every matrix of a type the CUDA kernels take; the message names the
 * first that is not (the engine checks again, without type names). */
static int cuda_type_ok(const gw_cuda_mat *t, int dev, char *err, size_t errlen)
{
    switch (t->type) {
    case GW_T_F32:
    case GW_T_F16:
    case GW_T_Q4_0:
    case GW_T_Q4_1:
    case GW_T_Q8_0:
        return 0;
    }
    const char *tn = gw_ggml_type_name(t->type);
    gw_errf(err, errlen,
            "cuda:%d: tensor \"%s\": type %s not supported by the CUDA engine (F32, F16, "
            "Q4_0, Q4_1, Q8_0)",
            dev, t->name, tn ? tn : "?");
    return -ENOTSUP;
}

static int cuda_types_ok(const gw_cuda_model *d, int dev, char *err, size_t errlen)
{
    int rc;
    if ((rc = cuda_type_ok(&d->tok_embd, dev, err, errlen)) ||
        (rc = cuda_type_ok(&d->output, dev, err, errlen)))
        return rc;
    for (int i = 0; i < d->n_layer; i++) {
        const gw_cuda_layer *L = &d->layers[i];
        const gw_cuda_mat *ms[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                   &L->w_gate, &L->w_up, &L->w_down};
        for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++)
            if ((rc = cuda_type_ok(ms[k], dev, err, errlen)))
                return rc;
    }
    return 0;
}

/* A context whose forward pass runs on CUDA device dev. */
static int ctx_cuda(const gw_model *m, const gw_ctx_opts *o, int dev, gw_ctx **out, char *err,
                    size_t errlen)
{
    const gw_model_config *c = &m->cfg;
    gw_ctx *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    x->m = m;
    int rc = ctx_sizes(x, o, 1);
    gw_cuda_layer *L = calloc((size_t)c->n_layer, sizeof *L);
    char(*names)[48] = calloc(2 + 7 * (size_t)c->n_layer, sizeof *names);
    if (rc == 0 && (!L || !names))
        rc = -ENOMEM;
    if (rc == 0) {
        gw_cuda_model d;
        cuda_desc(m, &d, L, names, x->rope_theta_scale);
        rc = cuda_types_ok(&d, dev, err, errlen);
        if (rc == 0)
            rc = gw_cuda_engine_new(dev, &d, x->n_ctx, x->n_batch, &x->cu, err, errlen);
    } else {
        gw_errf(err, errlen, "cuda:%d: out of host memory", dev);
    }
    free(L);
    free(names);
    if (rc < 0) {
        gw_ctx_free(x);
        return rc;
    }
    snprintf(x->backend, sizeof x->backend, "%s", gw_cuda_engine_name(x->cu));
    *out = x;
    return 0;
}

int gw_ctx_open(const gw_model *m, const gw_ctx_opts *o, gw_ctx **out, char *err, size_t errlen)
{
    gw_ctx_opts d = {0};
    if (!o)
        o = &d;
    if (!m || !out || o->n_ctx < 0 || o->n_threads < 0 || o->n_batch < 0 || o->max_seqs < 0 ||
        o->max_seqs > GW_MAX_SEQS || o->kv_tokens < 0 || o->max_rows < 0) {
        gw_errf(err, errlen, "context: bad options");
        return -EINVAL;
    }
    *out = NULL;
    const char *dev = o->device ? o->device : "cpu";
    int n;
    if (strcmp(dev, "cpu") == 0)
        return ctx_cpu(m, o, out);
    if (gw_cuda_parse_device(dev, &n) == 0)
        return ctx_cuda(m, o, n, out, err, errlen);
    if (strcmp(dev, "auto") != 0) {
        gw_errf(err, errlen, "device \"%.40s\": expected \"auto\", \"cpu\" or \"cuda:N\"", dev);
        return -EINVAL;
    }
    /* auto: the first CUDA device when one works, else the CPU, saying why */
    char why[400] = "";
    int count = 0, rc = gw_cuda_device_count(&count, why, sizeof why);
    int idx = o->auto_index > 0 && count > 0 ? o->auto_index % count : 0;
    if (rc == 0 && (rc = ctx_cuda(m, o, idx, out, why, sizeof why)) == 0)
        return 0;
    if ((rc = ctx_cpu(m, o, out)) < 0)
        return rc;
    snprintf((*out)->note, sizeof(*out)->note,
             "device auto: no usable CUDA device (%s); running on the CPU", why);
    return 0;
}

int gw_ctx_new(const gw_model *m, const gw_ctx_opts *o, gw_ctx **out)
{
    return gw_ctx_open(m, o, out, NULL, 0);
}

const char *gw_ctx_backend(const gw_ctx *x)
{
    return x->backend;
}

const char *gw_ctx_note(const gw_ctx *x)
{
    return x->note;
}

int gw_ctx_on_gpu(const gw_ctx *x)
{
    return x->cu != NULL;
}

void gw_ctx_use_graph(gw_ctx *x, int on)
{
    if (x->cu)
        gw_cuda_engine_use_graph(x->cu, on);
}

uint64_t gw_ctx_device_ns(const gw_ctx *x)
{
    return x->last_device_ns;
}

void gw_ctx_free(gw_ctx *x)
{
    if (!x)
        return;
    gw_cuda_engine_free(x->cu);
    gw_pool_free(x->pool);
    gw__kv_free(x);
    free(x->qh);
    free(x->atth);
    free(x->lanes);
    free(x->x);
    free(x->xb);
    free(x->xb2);
    free(x->q);
    free(x->k);
    free(x->v);
    free(x->hb);
    free(x->hb2);
    free(x->xq);
    free(x->xq2);
    free(x->att);
    free(x->rope_cs);
    free(x->row_seq);
    free(x->row_pos);
    free(x->row_multi);
    free(x->vgather);
    free((void *)x->vptr);
    free(x->item_logit);
    free(x->logits);
    free(x);
}

int gw_ctx_n_ctx(const gw_ctx *x)
{
    return x->n_ctx;
}

int gw_ctx_n_threads(const gw_ctx *x)
{
    return x->pool ? gw_pool_size(x->pool) : 0;
}

/* ---- evaluation ---- */

/* Whether the items make a pass: open sequences, each once, tokens in
 * range, rows within max_rows. GW_ECONTEXT for an item past its
 * reservation (checked by gw__kv_grow, which also takes its blocks). */
static int check_items(gw_ctx *x, const gw_batch_item *items, int n_items)
{
    if (!x || !items || n_items < 1 || n_items > x->max_seqs)
        return -EINVAL;
    long rows = 0;
    for (int i = 0; i < n_items; i++) {
        const gw_batch_item *it = &items[i];
        if (it->seq < 0 || it->seq >= x->max_seqs || !x->seqs[it->seq].open || !it->tokens ||
            it->n < 1 || it->pos < 0)
            return -EINVAL;
        for (int k = 0; k < i; k++)
            if (items[k].seq == it->seq)
                return -EINVAL;
        for (int k = 0; k < it->n; k++)
            if (it->tokens[k] < 0 || it->tokens[k] >= x->m->cfg.vocab)
                return -EINVAL;
        if ((long)it->pos + it->n > x->n_ctx)
            return GW_ECONTEXT;
        rows += it->n;
    }
    if (rows > x->max_rows)
        return -EINVAL;
    for (int i = 0; i < n_items; i++) {
        int rc = gw__kv_grow(x, items[i].seq, items[i].pos + items[i].n);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int gw_ctx_eval_batch(gw_ctx *x, const gw_batch_item *items, int n_items)
{
    int rc = check_items(x, items, n_items);
    if (rc < 0)
        return rc;
    x->n_items = n_items;
    if (x->cu) {
        /* one sequence (max_seqs is 1): the engine's own cache */
        unsigned long long ns = 0;
        _Static_assert(sizeof(int32_t) == sizeof(int), "token ids are ints on the device");
        rc = gw_cuda_engine_eval(x->cu, (const int *)items[0].tokens, items[0].n, items[0].pos,
                                 items[0].logits ? x->logits : NULL, NULL, &ns, x->error,
                                 sizeof x->error);
        x->item_logit[0] = items[0].logits ? 0 : -1;
        x->last_device_ns = ns;
        return rc;
    }
    uint64_t t0 = gw_mono_ns();
    gw__forward(x, items, n_items);
    x->last_device_ns = gw_mono_ns() - t0;
    return 0;
}

float *gw_ctx_batch_logits(gw_ctx *x, int i)
{
    if (!x || i < 0 || i >= x->n_items || x->item_logit[i] < 0)
        return NULL;
    return x->logits + (size_t)x->item_logit[i] * (size_t)x->m->cfg.vocab;
}

/* gw_ctx_eval's sequence: opened at position 0 for the whole context (or
 * what the pool holds), reopened at the next position 0. */
static int legacy_seq(gw_ctx *x, int pos)
{
    if (pos == 0 && x->legacy_seq >= 0)
        gw_seq_close(x, x->legacy_seq);
    if (x->legacy_seq < 0) {
        int n = x->n_ctx < gw_ctx_kv_tokens(x) ? x->n_ctx : gw_ctx_kv_tokens(x);
        int s = gw_seq_open(x, n);
        if (s < 0)
            return s == -EAGAIN ? -EBUSY : s;
        x->legacy_seq = s;
    }
    return x->legacy_seq;
}

/* Runs the tokens as chunks of n_batch in the legacy sequence; logits
 * and/or the greedy id after the last one. The device time is the sum of
 * the chunks'. */
static int eval(gw_ctx *x, const int32_t *tokens, size_t n, int pos, bool want_logits,
                int32_t *greedy)
{
    if (!x || !tokens || n == 0 || pos < 0)
        return -EINVAL;
    if (n > (size_t)x->n_ctx || (size_t)pos > (size_t)x->n_ctx - n)
        return GW_ECONTEXT;
    int seq = legacy_seq(x, pos);
    if (seq < 0)
        return seq;
    if (x->cu && greedy && !want_logits) {
        /* the argmax on the device: the logits never leave it */
        unsigned long long ns = 0;
        int am = 0;
        if (gw__kv_grow(x, seq, pos + (int)n) < 0)
            return GW_ECONTEXT;
        int rc = gw_cuda_engine_eval(x->cu, (const int *)tokens, (int)n, pos, NULL, &am, &ns,
                                     x->error, sizeof x->error);
        x->last_device_ns = ns;
        *greedy = am;
        return rc;
    }
    uint64_t dev = 0;
    for (size_t done = 0; done < n;) {
        int nb = n - done < (size_t)x->n_batch ? (int)(n - done) : x->n_batch;
        gw_batch_item it = {.seq = seq,
                            .tokens = tokens + done,
                            .n = nb,
                            .pos = pos + (int)done,
                            .logits = done + (size_t)nb == n};
        int rc = gw_ctx_eval_batch(x, &it, 1);
        if (rc < 0)
            return rc;
        dev += x->last_device_ns;
        done += (size_t)nb;
    }
    x->last_device_ns = dev;
    if (greedy)
        *greedy = gw_argmax(x->logits, x->m->cfg.vocab);
    return 0;
}

int gw_ctx_eval(gw_ctx *x, const int32_t *tokens, size_t n, int pos, float **logits)
{
    int rc = eval(x, tokens, n, pos, true, NULL);
    if (rc == 0 && logits)
        *logits = x->logits;
    return rc;
}

int gw_ctx_eval_greedy(gw_ctx *x, const int32_t *tokens, size_t n, int pos, int32_t *token)
{
    if (!token)
        return -EINVAL;
    return eval(x, tokens, n, pos, false, token);
}

const char *gw_ctx_error(const gw_ctx *x)
{
    return x->error;
}

const gw_model *gw_ctx_model(const gw_ctx *x)
{
    return x->m;
}
