/* model.c: llama model loading: the architecture, every hyper-parameter
 * and the presence, shape and type of every tensor. The forward pass is in
 * forward.c, the context (KV cache, scratch, threads) in context.c and
 * kv.c.
 */
#include "ctx.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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

/* Packs (or, with drop, frees the packed copies of) the matrices the
 * forward pass multiplies by: not tok_embd, whose rows are looked up (the
 * output, when it is tok_embd, is packed as the output). */
static int pack_one(const gw_model *m, gw_mat *w, bool drop)
{
    if (drop) {
        gw_mat_pack_free(w);
        return 0;
    }
    bool had = w->packed != NULL;
    int rc = gw_mat_pack(w);
    if (rc == 0 && !had && w->packed) /* the file's copy is read no more */
        gw_gguf_release(m->g, w->data, (size_t)w->rows * w->row_bytes);
    return rc;
}

static int pack_mats(gw_model *m, bool drop)
{
    int rc = pack_one(m, &m->output, drop);
    for (int i = 0; m->l && i < m->cfg.n_layer && rc == 0; i++) {
        struct layer *L = &m->l[i];
        gw_mat *ls[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 7 && rc == 0; k++)
            rc = pack_one(m, ls[k], drop);
    }
    return rc;
}

/* Packed once, by the first CPU context; the lock keeps two contexts
 * opened at once from packing the same matrix twice. */
static pthread_mutex_t pack_lock = PTHREAD_MUTEX_INITIALIZER;

int gw__model_pack(gw_model *m)
{
    pthread_mutex_lock(&pack_lock);
    int rc = pack_mats(m, false);
    pthread_mutex_unlock(&pack_lock);
    return rc;
}

void gw_model_free(gw_model *m)
{
    if (!m)
        return;
    pack_mats(m, true);
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
