/* model.c: llama model loading and the forward pass.
 *
 * Reads like llama2.c's run.c: embedding, then per layer RMSNorm,
 * Q/K/V projections, RoPE, grouped-query attention over the KV cache, output
 * projection and residual, RMSNorm, SwiGLU feed-forward and residual; then
 * the final RMSNorm and the output matrix. A prompt goes through as a batch
 * (every matrix product covers all its tokens, so each weight row is read
 * once per batch); decoding is a batch of one.
 */
#include "engine.h"
#include "gw_cuda.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct layer {
    gw_mat wq, wk, wv, wo;       /* attention projections */
    gw_mat w_gate, w_up, w_down; /* SwiGLU feed-forward */
    float *attn_norm, *ffn_norm; /* RMSNorm weights, dim floats */
};

struct gw_model {
    gw_gguf *g;
    gw_model_config cfg;
    gw_mat tok_embd; /* vocab rows of dim */
    gw_mat output;   /* vocab rows of dim; tok_embd when tied */
    float *out_norm; /* dim floats */
    struct layer *l; /* n_layer */
};

struct gw_ctx {
    const gw_model *m;
    gw_pool *pool;
    int n_ctx, n_batch;
    /* The KV cache holds halves, as llama.cpp's default cache does: the same
     * rounding keeps greedy decoding on the same ids (an f32 cache drifts
     * off llama.cpp's reference within a few tokens where two logits are
     * close), and it halves the cache's memory traffic. */
    uint16_t *key_cache;    /* [layer][pos][kv_dim] */
    uint16_t *value_cache;  /* [layer][pos][kv_dim] */
    uint16_t *qh;           /* [n_threads][head_dim] query as halves */
    uint16_t *atth;         /* [n_threads][n_ctx] softmax weights as halves */
    float *lanes;           /* [n_threads][64 * head_dim] V-sum lanes */
    float *x;               /* [batch][dim] residual stream */
    float *xb, *xb2;        /* [batch][dim] normed input, attention output */
    float *q;               /* [batch][dim] */
    float *k, *v;           /* [batch][kv_dim] */
    float *hb, *hb2;        /* [batch][ffn] */
    gw_q8 *xq;              /* [batch][max(dim, ffn) / 32] quantized activations */
    size_t xq_stride;       /* blocks per batch row */
    float *att;             /* [n_threads][n_ctx] attention scores */
    float rope_theta_scale; /* base^(-2/hd), as llama.cpp's powf gives it */
    float *rope_cs;         /* [head_dim] cos, sin of one position's angles */
    float *logits;          /* [vocab] */

    /* On a GPU (gw_ctx_open with a CUDA device): the engine there holds
     * the weights and the KV cache; none of the CPU buffers above but
     * logits is allocated. */
    gw_cuda_engine *cu;
    char backend[192];       /* "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)" */
    char note[512];          /* why "auto" runs on the CPU, or "" */
    char error[512];         /* the CUDA call that failed in the last eval, or "" */
    uint64_t last_device_ns; /* time of the last eval on the device */
};

/* ---- loading ---- */

static int get_hparam(const gw_gguf *g, const char *key, bool required, int64_t dflt, int64_t max,
                      int *out, char *err, size_t errlen)
{
    const gw_gguf_value *v = gw_gguf_find(g, key);
    int64_t x = dflt;
    if (!v) {
        if (required) {
            gw_errf(err, errlen, "%s: %s missing", gw_gguf_name(g), key);
            return -EINVAL;
        }
    } else if (gw_gguf_value_int(v, &x) < 0) {
        gw_errf(err, errlen, "%s: %s: expected an integer", gw_gguf_name(g), key);
        return -EINVAL;
    }
    if (x < 1 || x > max) {
        gw_errf(err, errlen, "%s: %s %" PRId64 " out of range 1..%" PRId64, gw_gguf_name(g), key, x,
                max);
        return -EINVAL;
    }
    *out = (int)x;
    return 0;
}

static int get_fparam(const gw_gguf *g, const char *key, float dflt, float *out, char *err,
                      size_t errlen)
{
    const gw_gguf_value *v = gw_gguf_find(g, key);
    *out = dflt;
    if (v && gw_gguf_value_f32(v, out) < 0) {
        gw_errf(err, errlen, "%s: %s: expected a float", gw_gguf_name(g), key);
        return -EINVAL;
    }
    if (!(*out > 0) || !isfinite(*out)) {
        gw_errf(err, errlen, "%s: %s %g must be positive", gw_gguf_name(g), key, (double)*out);
        return -EINVAL;
    }
    return 0;
}

static const gw_gguf_tensor *need_tensor(const gw_gguf *g, const char *name, int n_dims,
                                         int64_t ne0, int64_t ne1, char *err, size_t errlen)
{
    const gw_gguf_tensor *t = gw_gguf_find_tensor(g, name);
    if (!t) {
        gw_errf(err, errlen, "%s: tensor \"%s\" missing", gw_gguf_name(g), name);
        return NULL;
    }
    bool ok = t->ne[0] == (uint64_t)ne0 && t->ne[2] == 1 && t->ne[3] == 1 &&
              (n_dims == 1 ? t->ne[1] == 1 : t->ne[1] == (uint64_t)ne1);
    if (!ok) {
        char shape[96], want[48];
        snprintf(shape, sizeof shape, "%" PRIu64, t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), " x %" PRIu64, t->ne[d]);
        if (n_dims == 1)
            snprintf(want, sizeof want, "%" PRId64, ne0);
        else
            snprintf(want, sizeof want, "%" PRId64 " x %" PRId64, ne0, ne1);
        gw_errf(err, errlen, "%s: tensor \"%s\": shape %s, expected %s", gw_gguf_name(g), name,
                shape, want);
        return NULL;
    }
    const char *tn = gw_ggml_type_name(t->type);
    if (gw_type_row_bytes(t->type, t->ne[0]) == 0 || !gw_dot_portable_for(t->type)) {
        gw_errf(err, errlen,
                "%s: tensor \"%s\": type %s not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
                "Q8_0, Q4_K, Q6_K)",
                gw_gguf_name(g), name, tn ? tn : "?");
        return NULL;
    }
    if ((uintptr_t)t->data % 4 != 0) {
        gw_errf(err, errlen,
                "%s: tensor \"%s\": data not 4-byte aligned (general.alignment %" PRIu64 ")",
                gw_gguf_name(g), name, gw_gguf_alignment(g));
        return NULL;
    }
    return t;
}

static int load_mat(const gw_gguf *g, const char *name, int cols, int rows, gw_mat *w, char *err,
                    size_t errlen)
{
    const gw_gguf_tensor *t = need_tensor(g, name, 2, cols, rows, err, errlen);
    if (!t)
        return -EINVAL;
    w->type = t->type;
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = gw_type_row_bytes(t->type, (uint64_t)cols);
    w->data = t->data;
    return 0;
}

static int load_vec(const gw_gguf *g, const char *name, int n, float **out, char *err,
                    size_t errlen)
{
    const gw_gguf_tensor *t = need_tensor(g, name, 1, n, 1, err, errlen);
    if (!t)
        return -EINVAL;
    if (!(*out = malloc((size_t)n * sizeof(float))))
        return -ENOMEM;
    return gw_dequantize_row(t->type, t->data, *out, (uint64_t)n);
}

int gw_model_from_gguf(gw_gguf *g, gw_model **out, char *err, size_t errlen)
{
    if (!g || !out)
        return -EINVAL;
    *out = NULL;
    const char *fn = gw_gguf_name(g);
    int rc = -EINVAL;
    gw_model *m = calloc(1, sizeof *m);
    if (!m) {
        gw_gguf_close(g);
        return -ENOMEM;
    }
    m->g = g;
    gw_model_config *c = &m->cfg;

    const char *arch;
    size_t arch_len;
    if (gw_gguf_get_str(g, "general.architecture", &arch, &arch_len) < 0) {
        gw_errf(err, errlen, "%s: general.architecture missing or not a string", fn);
        goto fail;
    }
    if (arch_len != 5 || memcmp(arch, "llama", 5) != 0) {
        gw_errf(err, errlen, "%s: architecture \"%.*s\" not supported (only llama)", fn,
                (int)(arch_len > 64 ? 64 : arch_len), arch);
        goto fail;
    }
    if ((rc = get_hparam(g, "llama.block_count", true, 0, 4096, &c->n_layer, err, errlen)) < 0 ||
        (rc = get_hparam(g, "llama.embedding_length", true, 0, 1 << 16, &c->dim, err, errlen)) <
            0 ||
        (rc = get_hparam(g, "llama.feed_forward_length", true, 0, 1 << 18, &c->ffn, err, errlen)) <
            0 ||
        (rc = get_hparam(g, "llama.attention.head_count", true, 0, 1024, &c->n_head, err, errlen)) <
            0 ||
        (rc = get_hparam(g, "llama.attention.head_count_kv", false, c->n_head, 1024, &c->n_head_kv,
                         err, errlen)) < 0 ||
        (rc = get_hparam(g, "llama.context_length", false, 2048, 1 << 24, &c->n_ctx_train, err,
                         errlen)) < 0 ||
        (rc = get_fparam(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &c->rms_eps, err,
                         errlen)) < 0 ||
        (rc = get_fparam(g, "llama.rope.freq_base", 10000.0f, &c->rope_base, err, errlen)) < 0)
        goto fail;
    rc = -EINVAL;
    if (c->dim % c->n_head != 0 || (c->dim / c->n_head) % 2 != 0) {
        gw_errf(err, errlen,
                "%s: llama.embedding_length %d is not an even multiple of head_count %d", fn,
                c->dim, c->n_head);
        goto fail;
    }
    if (c->n_head % c->n_head_kv != 0) {
        gw_errf(err, errlen,
                "%s: llama.attention.head_count %d is not a multiple of head_count_kv %d", fn,
                c->n_head, c->n_head_kv);
        goto fail;
    }
    c->head_dim = c->dim / c->n_head;
    int rope_dims = c->head_dim;
    if ((rc = get_hparam(g, "llama.rope.dimension_count", false, c->head_dim, 1 << 16, &rope_dims,
                         err, errlen)) < 0)
        goto fail;
    rc = -EINVAL;
    if (rope_dims != c->head_dim) {
        gw_errf(err, errlen,
                "%s: llama.rope.dimension_count %d differs from the head size %d (partial "
                "RoPE not supported)",
                fn, rope_dims, c->head_dim);
        goto fail;
    }

    const gw_gguf_tensor *te = gw_gguf_find_tensor(g, "token_embd.weight");
    if (!te) {
        gw_errf(err, errlen, "%s: tensor \"token_embd.weight\" missing", fn);
        goto fail;
    }
    if (te->ne[1] < 1 || te->ne[1] > INT32_MAX) {
        gw_errf(err, errlen, "%s: tensor \"token_embd.weight\": %" PRIu64 " rows out of range", fn,
                te->ne[1]);
        goto fail;
    }
    c->vocab = (int)te->ne[1];
    int kv_dim = c->head_dim * c->n_head_kv;
    if ((rc = load_mat(g, "token_embd.weight", c->dim, c->vocab, &m->tok_embd, err, errlen)) < 0 ||
        (rc = load_vec(g, "output_norm.weight", c->dim, &m->out_norm, err, errlen)) < 0)
        goto fail;
    c->tied = gw_gguf_find_tensor(g, "output.weight") == NULL;
    if (c->tied)
        m->output = m->tok_embd;
    else if ((rc = load_mat(g, "output.weight", c->dim, c->vocab, &m->output, err, errlen)) < 0)
        goto fail;

    if (!(m->l = calloc((size_t)c->n_layer, sizeof *m->l))) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < c->n_layer; i++) {
        struct layer *L = &m->l[i];
        char nm[64];
#define NM(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", i, s), nm)
        if ((rc = load_vec(g, NM("attn_norm"), c->dim, &L->attn_norm, err, errlen)) < 0 ||
            (rc = load_vec(g, NM("ffn_norm"), c->dim, &L->ffn_norm, err, errlen)) < 0 ||
            (rc = load_mat(g, NM("attn_q"), c->dim, c->dim, &L->wq, err, errlen)) < 0 ||
            (rc = load_mat(g, NM("attn_k"), c->dim, kv_dim, &L->wk, err, errlen)) < 0 ||
            (rc = load_mat(g, NM("attn_v"), c->dim, kv_dim, &L->wv, err, errlen)) < 0 ||
            (rc = load_mat(g, NM("attn_output"), c->dim, c->dim, &L->wo, err, errlen)) < 0 ||
            (rc = load_mat(g, NM("ffn_gate"), c->dim, c->ffn, &L->w_gate, err, errlen)) < 0 ||
            (rc = load_mat(g, NM("ffn_up"), c->dim, c->ffn, &L->w_up, err, errlen)) < 0 ||
            (rc = load_mat(g, NM("ffn_down"), c->ffn, c->dim, &L->w_down, err, errlen)) < 0)
            goto fail;
#undef NM
    }
    *out = m;
    return 0;
fail:
    if (rc == -ENOMEM)
        gw_errf(err, errlen, "%s: out of memory", fn);
    gw_model_free(m);
    return rc;
}

int gw_model_load(const char *path, gw_model **out, char *err, size_t errlen)
{
    gw_gguf *g;
    int rc = gw_gguf_open(path, &g, err, errlen);
    if (rc < 0)
        return rc;
    return gw_model_from_gguf(g, out, err, errlen);
}

void gw_model_free(gw_model *m)
{
    if (!m)
        return;
    if (m->l)
        for (int i = 0; i < m->cfg.n_layer; i++) {
            free(m->l[i].attn_norm);
            free(m->l[i].ffn_norm);
        }
    free(m->l);
    free(m->out_norm);
    gw_gguf_close(m->g);
    free(m);
}

const gw_model_config *gw_model_cfg(const gw_model *m)
{
    return &m->cfg;
}

const gw_gguf *gw_model_gguf(const gw_model *m)
{
    return m->g;
}

void gw_model_type_histogram(const gw_model *m, char *buf, size_t len)
{
    size_t counts[64] = {0}, other = 0;
    for (size_t i = 0; i < gw_gguf_tensor_count(m->g); i++) {
        uint32_t t = gw_gguf_tensor_at(m->g, i)->type;
        if (t < 64)
            counts[t]++;
        else
            other++;
    }
    size_t off = 0;
    if (len)
        buf[0] = 0;
    for (uint32_t t = 0; t < 64 && off < len; t++) {
        if (!counts[t])
            continue;
        int w = snprintf(buf + off, len - off, "%s%s %zu", off ? ", " : "", gw_ggml_type_name(t),
                         counts[t]);
        off += w > 0 ? (size_t)w : 0;
    }
    if (other && off < len)
        snprintf(buf + off, len - off, "%sother %zu", off ? ", " : "", other);
}

/* ---- context ---- */

static int ctx_cpu(const gw_model *m, const gw_ctx_opts *o, gw_ctx **out)
{
    const gw_model_config *c = &m->cfg;
    gw_ctx *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    x->m = m;
    snprintf(x->backend, sizeof x->backend, "cpu");
    x->n_ctx = o->n_ctx ? o->n_ctx : (c->n_ctx_train < 4096 ? c->n_ctx_train : 4096);
    x->n_batch = o->n_batch ? o->n_batch : 64;
    int nt = o->n_threads;
    if (!nt) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nt = n > 0 ? (int)(n > 256 ? 256 : n) : 1;
    }
    int rc = gw_pool_new(nt, &x->pool);
    if (rc < 0) {
        free(x);
        return rc;
    }
    size_t B = (size_t)x->n_batch, dim = (size_t)c->dim, ffn = (size_t)c->ffn;
    size_t kv_dim = (size_t)c->head_dim * (size_t)c->n_head_kv;
    size_t cache = (size_t)c->n_layer * (size_t)x->n_ctx * kv_dim;
    x->xq_stride = (dim > ffn ? dim : ffn) / 32 + 1;
    /* calloc: the cache's pages are only touched as positions fill. */
    x->key_cache = calloc(cache, sizeof(uint16_t));
    x->value_cache = calloc(cache, sizeof(uint16_t));
    x->qh = malloc((size_t)nt * (size_t)c->head_dim * sizeof(uint16_t));
    x->atth = malloc((size_t)nt * (size_t)x->n_ctx * sizeof(uint16_t));
    x->lanes = malloc((size_t)nt * 64 * (size_t)c->head_dim * sizeof(float));
    x->x = malloc(B * dim * sizeof(float));
    x->xb = malloc(B * dim * sizeof(float));
    x->xb2 = malloc(B * dim * sizeof(float));
    x->q = malloc(B * dim * sizeof(float));
    x->k = malloc(B * kv_dim * sizeof(float));
    x->v = malloc(B * kv_dim * sizeof(float));
    x->hb = malloc(B * ffn * sizeof(float));
    x->hb2 = malloc(B * ffn * sizeof(float));
    x->xq = calloc(B * x->xq_stride, sizeof(gw_q8));
    x->att = malloc((size_t)nt * (size_t)x->n_ctx * sizeof(float));
    x->rope_cs = malloc((size_t)c->head_dim * sizeof(float));
    x->logits = malloc((size_t)c->vocab * sizeof(float));
    if (!x->key_cache || !x->value_cache || !x->qh || !x->atth || !x->lanes || !x->x || !x->xb ||
        !x->xb2 || !x->q || !x->k || !x->v || !x->hb || !x->hb2 || !x->xq || !x->att ||
        !x->rope_cs || !x->logits) {
        gw_ctx_free(x);
        return -ENOMEM;
    }
    x->rope_theta_scale = powf(c->rope_base, -2.0f / (float)c->head_dim);
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
    x->n_ctx = o->n_ctx ? o->n_ctx : (c->n_ctx_train < 4096 ? c->n_ctx_train : 4096);
    x->n_batch = o->n_batch ? o->n_batch : 512;
    x->rope_theta_scale = powf(c->rope_base, -2.0f / (float)c->head_dim);
    x->logits = malloc((size_t)c->vocab * sizeof(float));
    gw_cuda_layer *L = calloc((size_t)c->n_layer, sizeof *L);
    char(*names)[48] = calloc(2 + 7 * (size_t)c->n_layer, sizeof *names);
    int rc = -ENOMEM;
    if (x->logits && L && names) {
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
    if (!m || !out || o->n_ctx < 0 || o->n_threads < 0 || o->n_batch < 0) {
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
    free(x->key_cache);
    free(x->value_cache);
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
    free(x->att);
    free(x->rope_cs);
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

/* ---- building blocks ---- */

/* The numerics below follow llama.cpp's CPU ops (ggml-cpu/ops.cpp of the
 * llama.cpp bundled with llama-cpp-python 0.3.36, ggml 0.25.3), rounding
 * point for rounding point, so that greedy decoding picks the same ids.
 *
 * rms_norm: the sum of squares in double, mean and scale in float; the
 * weight is a separate multiply (ggml_mul) after x * scale. */
static void rmsnorm(float *o, const float *x, const float *w, int n, float eps)
{
    double sum = 0;
    for (int j = 0; j < n; j++)
        sum += (double)(x[j] * x[j]);
    float mean = (float)(sum / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int j = 0; j < n; j++)
        o[j] = (x[j] * scale) * w[j];
}

/* soft_max: max subtracted, exponentials summed in double, then every
 * value multiplied by (float)(1 / sum). llama.cpp's exp is a vectorized
 * approximation (ggml_v_expf) within an ulp or two of expf; that part is
 * not reproduced. */
static void softmax(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

/* The cos/sin pairs of one position, as ggml_rope_cache_init makes them:
 * the angle starts at pos and is multiplied by theta_scale (float) from one
 * pair to the next. */
static void rope_angles(float *cs, int hd, int pos, float theta_scale)
{
    float theta = (float)pos;
    for (int i = 0; i < hd; i += 2) {
        cs[i] = cosf(theta);
        cs[i + 1] = sinf(theta);
        theta *= theta_scale;
    }
}

/* Adjacent-pair RoPE (ENGINE.md): pair (2i, 2i+1) of each head turns by
 * the angle in cs[2i], cs[2i+1]. */
static void rope(float *v, int n_heads, int hd, const float *cs)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd; i += 2) {
            float *p = v + h * hd + i;
            float a = p[0], b = p[1];
            p[0] = a * cs[i] - b * cs[i + 1];
            p[1] = a * cs[i + 1] + b * cs[i];
        }
}

/* A batched product over up to three matrices with the same input: the
 * rows of all of them are split evenly across the pool. */
struct mm_job {
    const gw_mat *w[3];
    float *out[3];
    int n_mats;
    const gw_q8 *xq;
    size_t xq_stride;
    const float *xf;
    size_t xf_stride;
    int nb;
};

static void mm_share(void *arg, int i, int n)
{
    struct mm_job *j = arg;
    long total = 0;
    for (int k = 0; k < j->n_mats; k++)
        total += j->w[k]->rows;
    long lo = total * i / n, hi = total * (i + 1) / n, base = 0;
    for (int k = 0; k < j->n_mats; k++) {
        long rows = j->w[k]->rows;
        long a = lo > base ? lo - base : 0, b = hi - base < rows ? hi - base : rows;
        if (a < b)
            gw_mat_rows(j->w[k], j->xq, j->xq_stride, j->xf, j->xf_stride, j->nb, j->out[k],
                        (size_t)rows, (int)a, (int)b);
        base += rows;
    }
}

/* out_k[b][:] = W_k . in[b] for the nb batch rows of in (cols floats each). */
static void matmul(gw_ctx *x, const gw_mat *w0, float *o0, const gw_mat *w1, float *o1,
                   const gw_mat *w2, float *o2, const float *in, int nb)
{
    int cols = w0->cols;
    for (int b = 0; b < nb; b++)
        gw_quantize_q8(in + (size_t)b * cols, x->xq + (size_t)b * x->xq_stride, cols);
    struct mm_job j = {.w = {w0, w1, w2},
                       .out = {o0, o1, o2},
                       .n_mats = w2   ? 3
                                 : w1 ? 2
                                      : 1,
                       .xq = x->xq,
                       .xq_stride = x->xq_stride,
                       .xf = in,
                       .xf_stride = (size_t)cols,
                       .nb = nb};
    gw_pool_run(x->pool, mm_share, &j);
}

struct att_job {
    gw_ctx *x;
    int layer, pos, nb;
};

/* Attention for (token b, head h) pairs split across the pool, as
 * llama.cpp computes it with flash attention off: q rounded to halves,
 * K.q against every cached key up to the token's own position, times
 * 1/sqrt(hd), softmax, the weights rounded to halves, and each output
 * dimension the dot of the weights with V's column (gw_dot_hh_for and
 * gw_attn_v_for keep llama.cpp's summation order). */
static void att_share(void *arg, int i, int n)
{
    struct att_job *j = arg;
    gw_ctx *x = j->x;
    const gw_model_config *c = &x->m->cfg;
    int hd = c->head_dim, kv_dim = hd * c->n_head_kv, group = c->n_head / c->n_head_kv;
    int items = j->nb * c->n_head;
    float *att = x->att + (size_t)i * x->n_ctx;
    uint16_t *ah = x->atth + (size_t)i * x->n_ctx;
    uint16_t *q = x->qh + (size_t)i * hd;
    float *lanes = x->lanes + (size_t)i * 64 * hd;
    float scale = 1.0f / sqrtf((float)hd);
    size_t loff = (size_t)j->layer * x->n_ctx * kv_dim;
    gw_dot_hh_fn dot = gw_dot_hh_for(j->nb > 1);
    gw_attn_v_fn vsum = gw_attn_v_for(j->nb > 1);
    gw_f16_row_fn to_half = gw_f32_to_f16_row_for();
    for (int it = items * i / n; it < items * (i + 1) / n; it++) {
        int b = it / c->n_head, h = it % c->n_head, pos = j->pos + b;
        int kvh = h / group;
        to_half(x->q + (size_t)b * c->dim + h * hd, q, hd);
        const uint16_t *k = x->key_cache + loff + kvh * hd;
        for (int t = 0; t <= pos; t++)
            att[t] = dot(hd, k + (size_t)t * kv_dim, q) * scale;
        softmax(att, pos + 1);
        to_half(att, ah, pos + 1);
        vsum(hd, pos + 1, ah, x->value_cache + loff + kvh * hd, (size_t)kv_dim, lanes,
             x->xb2 + (size_t)b * c->dim + h * hd);
    }
}

/* One batch of nb tokens at positions pos.. through every layer. */
static void forward_batch(gw_ctx *x, const int32_t *tok, int nb, int pos, bool want_logits)
{
    const gw_model *m = x->m;
    const gw_model_config *c = &m->cfg;
    int dim = c->dim, ffn = c->ffn, hd = c->head_dim;
    int kv_dim = hd * c->n_head_kv;
    gw_f16_row_fn to_half = gw_f32_to_f16_row_for();

    for (int b = 0; b < nb; b++)
        gw_dequantize_row(m->tok_embd.type,
                          m->tok_embd.data + (size_t)tok[b] * m->tok_embd.row_bytes,
                          x->x + (size_t)b * dim, (uint64_t)dim);

    for (int l = 0; l < c->n_layer; l++) {
        const struct layer *L = &m->l[l];
        size_t loff = (size_t)l * x->n_ctx * kv_dim;

        /* attention: q, k, v of the normed input */
        for (int b = 0; b < nb; b++)
            rmsnorm(x->xb + (size_t)b * dim, x->x + (size_t)b * dim, L->attn_norm, dim, c->rms_eps);
        matmul(x, &L->wq, x->q, &L->wk, x->k, &L->wv, x->v, x->xb, nb);

        /* RoPE on q and k, then k and v into the cache at their position */
        for (int b = 0; b < nb; b++) {
            rope_angles(x->rope_cs, hd, pos + b, x->rope_theta_scale);
            rope(x->q + (size_t)b * dim, c->n_head, hd, x->rope_cs);
            rope(x->k + (size_t)b * kv_dim, c->n_head_kv, hd, x->rope_cs);
            to_half(x->k + (size_t)b * kv_dim, x->key_cache + loff + (size_t)(pos + b) * kv_dim,
                    kv_dim);
            to_half(x->v + (size_t)b * kv_dim, x->value_cache + loff + (size_t)(pos + b) * kv_dim,
                    kv_dim);
        }
        struct att_job aj = {.x = x, .layer = l, .pos = pos, .nb = nb};
        gw_pool_run(x->pool, att_share, &aj);

        /* output projection and residual */
        matmul(x, &L->wo, x->xb, NULL, NULL, NULL, NULL, x->xb2, nb);
        for (size_t i = 0; i < (size_t)nb * dim; i++)
            x->x[i] += x->xb[i];

        /* SwiGLU feed-forward: w_down(silu(w_gate x) * w_up x), and residual */
        for (int b = 0; b < nb; b++)
            rmsnorm(x->xb + (size_t)b * dim, x->x + (size_t)b * dim, L->ffn_norm, dim, c->rms_eps);
        matmul(x, &L->w_gate, x->hb, &L->w_up, x->hb2, NULL, NULL, x->xb, nb);
        for (size_t i = 0; i < (size_t)nb * ffn; i++) {
            float g = x->hb[i];
            x->hb[i] = g / (1.0f + expf(-g)) * x->hb2[i];
        }
        matmul(x, &L->w_down, x->xb, NULL, NULL, NULL, NULL, x->hb, nb);
        for (size_t i = 0; i < (size_t)nb * dim; i++)
            x->x[i] += x->xb[i];
    }

    if (want_logits) {
        /* final norm and output matrix, for the last token only */
        rmsnorm(x->xb, x->x + (size_t)(nb - 1) * dim, m->out_norm, dim, c->rms_eps);
        matmul(x, &m->output, x->logits, NULL, NULL, NULL, NULL, x->xb, 1);
    }
}

/* Runs the tokens; logits (vocab floats) and/or the greedy id after the
 * last one. On the CPU the device time is the pass's wall time. */
static int eval(gw_ctx *x, const int32_t *tokens, size_t n, int pos, bool want_logits,
                int32_t *greedy)
{
    if (!x || !tokens || n == 0 || pos < 0)
        return -EINVAL;
    if (n > (size_t)x->n_ctx || (size_t)pos > (size_t)x->n_ctx - n)
        return GW_ECONTEXT;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= x->m->cfg.vocab)
            return -EINVAL;
    if (x->cu) {
        unsigned long long ns = 0;
        int am = 0;
        _Static_assert(sizeof(int32_t) == sizeof(int), "token ids are ints on the device");
        int rc = gw_cuda_engine_eval(x->cu, (const int *)tokens, (int)n, pos,
                                     want_logits ? x->logits : NULL, greedy ? &am : NULL, &ns,
                                     x->error, sizeof x->error);
        if (rc < 0)
            return rc;
        x->last_device_ns = ns;
        if (greedy)
            *greedy = am;
        return 0;
    }
    uint64_t t0 = gw_mono_ns();
    for (size_t done = 0; done < n;) {
        int nb = n - done < (size_t)x->n_batch ? (int)(n - done) : x->n_batch;
        forward_batch(x, tokens + done, nb, pos + (int)done, done + (size_t)nb == n);
        done += (size_t)nb;
    }
    if (greedy) {
        int32_t best = 0;
        for (int i = 1; i < x->m->cfg.vocab; i++)
            if (x->logits[i] > x->logits[best])
                best = i;
        *greedy = best;
    }
    x->last_device_ns = gw_mono_ns() - t0;
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
