/* forward.c: the forward pass over a batch of rows from several
 * sequences.
 *
 * Reads like llama2.c's run.c: embedding, then per layer RMSNorm, Q/K/V
 * projections, RoPE, grouped-query attention over each sequence's own
 * blocks of the KV cache, output projection and residual, RMSNorm, SwiGLU
 * feed-forward and residual; then the final RMSNorm and the output matrix
 * for the rows whose logits are wanted. Every matrix product covers all
 * rows of the pass, so a weight row is read once per pass whatever the
 * number of sequences; everything else is per row, and attention per
 * sequence, so a row's numbers do not depend on the other rows.
 */
#include "ctx.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

/* ---- building blocks ---- */

/* The numerics below follow llama.cpp's CPU ops (ggml-cpu/ops.cpp of the
 * llama.cpp bundled with llama-cpp-python 0.3.36, ggml 0.25.3), rounding
 * point for rounding point, so that greedy decoding picks the same ids.
 *
 * rms_norm: the sum of squares in double, mean and scale in float; the
 * weight is a separate multiply (ggml_mul) after x * scale. */
static void rms_apply(float *o, const float *x, const float *w, int n, double sum, float eps)
{
    float mean = (float)(sum / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int j = 0; j < n; j++)
        o[j] = (x[j] * scale) * w[j];
}

static void rmsnorm(float *o, const float *x, const float *w, int n, float eps)
{
    double sum = 0;
    for (int j = 0; j < n; j++)
        sum += (double)(x[j] * x[j]);
    rms_apply(o, x, w, n, sum, eps);
}

/* rmsnorm of R rows (row r at x + r * n into o + r * n), four at a time:
 * each row's sum is its own chain in the same order, so the same bits,
 * but four chains of double additions overlap instead of waiting on each
 * other (the chain's latency was the cost: 0.3 ms of an 8-row step). */
static void rmsnorm_rows(float *o, const float *x, const float *w, int R, int n, float eps)
{
    int r = 0;
    for (; r + 4 <= R; r += 4) {
        const float *a = x + (size_t)r * n, *b = a + n, *c = b + n, *d = c + n;
        double s[4] = {0, 0, 0, 0};
        for (int j = 0; j < n; j++) {
            s[0] += (double)(a[j] * a[j]);
            s[1] += (double)(b[j] * b[j]);
            s[2] += (double)(c[j] * c[j]);
            s[3] += (double)(d[j] * d[j]);
        }
        for (int k = 0; k < 4; k++)
            rms_apply(o + (size_t)(r + k) * n, x + (size_t)(r + k) * n, w, n, s[k], eps);
    }
    for (; r < R; r++)
        rmsnorm(o + (size_t)r * n, x + (size_t)r * n, w, n, eps);
}

/* soft_max (with the weights rounded to halves) and SwiGLU's SiLU are the
 * level's softmax_h and silu_mul (engine.h): libm's expf and a double sum
 * in order, as llama.cpp's soft_max sums; llama.cpp's exponential is a
 * vectorized approximation (ggml_v_expf) within an ulp or two of expf,
 * which is not reproduced. */

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

/* Profiling (gw__ctx_prof): *t is the time of the last mark; PROF adds
 * the time since to op. Nothing is read or written while prof is NULL. */
static inline uint64_t prof_start(const gw_ctx *x)
{
    return x->prof ? gw_mono_ns() : 0;
}

static inline void prof_mark(gw_ctx *x, int op, uint64_t *t)
{
    if (x->prof) {
        uint64_t now = gw_mono_ns();
        x->prof[op] += now - *t;
        *t = now;
    }
}

void gw__ctx_prof(gw_ctx *x, uint64_t *prof)
{
    x->prof = prof;
    gw_pool_prof(x->pool, prof ? &prof[GW_PROF_WAIT] : NULL);
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

static void mm_share(void *arg, int i, int n, int t)
{
    (void)t;
    struct mm_job *j = arg;
    long total = 0;
    bool whole = true; /* every matrix a whole number of packed groups */
    for (int k = 0; k < j->n_mats; k++) {
        total += j->w[k]->rows;
        whole = whole && j->w[k]->rows % GW_PACK_ROWS == 0;
    }
    /* cut at group boundaries, so that no group of 16 packed rows is
     * computed by two shares (each stores only its rows) */
    long unit = whole ? GW_PACK_ROWS : 1, units = total / unit;
    long lo = units * i / n * unit, hi = i == n - 1 ? total : units * (i + 1) / n * unit, base = 0;
    for (int k = 0; k < j->n_mats; k++) {
        long rows = j->w[k]->rows;
        long a = lo > base ? lo - base : 0, b = hi - base < rows ? hi - base : rows;
        if (a < b)
            gw_mat_rows(j->w[k], j->xq, j->xq_stride, j->xf, j->xf_stride, j->nb, j->out[k],
                        (size_t)rows, (int)a, (int)b);
        base += rows;
    }
}

/* out_k[b][:] = W_k . in[b] for the nb batch rows of in (cols floats
 * each). in is quantized into x->xq first, unless pre holds it quantized
 * already (by the job that computed it). */
static void matmul_q(gw_ctx *x, const gw_mat *w0, float *o0, const gw_mat *w1, float *o1,
                     const gw_mat *w2, float *o2, const float *in, const gw_q8 *pre, int nb, int op,
                     uint64_t *t)
{
    int cols = w0->cols;
    if (!pre) {
        for (int b = 0; b < nb; b++)
            gw_quantize_q8(in + (size_t)b * cols, x->xq + (size_t)b * x->xq_stride, cols);
        prof_mark(x, GW_PROF_QUANT, t);
    }
    struct mm_job j = {.w = {w0, w1, w2},
                       .out = {o0, o1, o2},
                       .n_mats = w2   ? 3
                                 : w1 ? 2
                                      : 1,
                       .xq = pre ? pre : x->xq,
                       .xq_stride = x->xq_stride,
                       .xf = in,
                       .xf_stride = (size_t)cols,
                       .nb = nb};
    gw_pool_run(x->pool, mm_share, &j);
    prof_mark(x, op, t);
}

static void matmul(gw_ctx *x, const gw_mat *w0, float *o0, const gw_mat *w1, float *o1,
                   const gw_mat *w2, float *o2, const float *in, int nb, int op, uint64_t *t)
{
    matmul_q(x, w0, o0, w1, o1, w2, o2, in, NULL, nb, op, t);
}

/* The feed-forward's gate and up products and SwiGLU as one job: each
 * share takes the same rows of both matrices (whole Q8 blocks of hb), so
 * it finishes its part of hb = silu(gate) * up and quantizes it into
 * x->xq2 for w_down itself, with no serial step between the products. */
struct ffn_job {
    gw_ctx *x;
    const struct layer *L;
    int rows, quant;
};

static void ffn_share(void *arg, int i, int n, int t)
{
    (void)t;
    struct ffn_job *j = arg;
    gw_ctx *x = j->x;
    int dim = x->m->cfg.dim, ffn = x->m->cfg.ffn, unit = j->quant ? 32 : 1;
    int a = ffn / unit * i / n * unit, b = ffn / unit * (i + 1) / n * unit;
    if (i == n - 1)
        b = ffn;
    if (a >= b)
        return;
    gw_mat_rows(&j->L->w_gate, x->xq, x->xq_stride, x->xb, (size_t)dim, j->rows, x->hb, (size_t)ffn,
                a, b);
    gw_mat_rows(&j->L->w_up, x->xq, x->xq_stride, x->xb, (size_t)dim, j->rows, x->hb2, (size_t)ffn,
                a, b);
    gw_silu_mul_fn silu_mul = gw_silu_mul_for();
    for (int r = 0; r < j->rows; r++) {
        float *h = x->hb + (size_t)r * ffn, *u = x->hb2 + (size_t)r * ffn;
        silu_mul(h + a, u + a, b - a);
        if (j->quant)
            gw_quantize_q8(h + a, x->xq2 + (size_t)r * x->xq_stride + a / 32, b - a);
    }
}

struct att_job {
    gw_ctx *x;
    int layer, rows;
};

/* The values of kv head kvh at positions [0, n) of a sequence, gathered
 * from its blocks into consecutive rows of hd halves, as the V-sum kernel
 * reads them. */
static void gather_v(const gw_ctx *x, int l, int seq, int kvh, int n, uint16_t *dst)
{
    int hd = x->m->cfg.head_dim;
    for (int t0 = 0; t0 < n; t0 += GW_KV_BLOCK) {
        int m = n - t0 < GW_KV_BLOCK ? n - t0 : GW_KV_BLOCK; /* a head's rows: one run */
        memcpy(dst + (size_t)t0 * hd, x->value_cache + gw__kv_at(x, l, seq, t0, kvh),
               (size_t)m * hd * 2);
    }
}

/* Asks the caches for the keys and values of kv head kvh of row r's
 * sequence, positions 0 to the row's: a kv head's rows of a block are one
 * run of GW_KV_BLOCK * head_dim halves, but the blocks lie anywhere in the
 * pool, where the hardware prefetchers do not follow. Not for a
 * single-token row at level 2: there the key scoring asks for each value
 * row and the next block's key row as it scores a key (gw_dot_keys' pf);
 * a burst of a whole group's lines ahead of its compute stalled on the
 * line fill buffers instead (docs/BENCHMARKS.md). */
static void prefetch_kv(const gw_ctx *x, int l, int r, int kvh)
{
    int hd = x->m->cfg.head_dim, seq = x->row_seq[r], n = x->row_pos[r] + 1;
    if (!x->row_multi[r] && gw_simd_get() >= GW_SIMD_AVX512)
        return;
    for (int t0 = 0; t0 < n; t0 += GW_KV_BLOCK) {
        size_t off = gw__kv_at(x, l, seq, t0, kvh);
        size_t bytes = (size_t)(n - t0 < GW_KV_BLOCK ? n - t0 : GW_KV_BLOCK) * (size_t)hd * 2;
        for (size_t o = 0; o < bytes; o += 64) {
            __builtin_prefetch((const char *)(x->key_cache + off) + o);
            __builtin_prefetch((const char *)(x->value_cache + off) + o);
        }
    }
}

/* Attention for (row, head) pairs split across the pool, as llama.cpp
 * computes it with flash attention off: q rounded to halves, K.q against
 * every cached key of the row's sequence up to its own position, times
 * 1/sqrt(hd), softmax, the weights rounded to halves, and each output
 * dimension the dot of the weights with V's column (gw_dot_keys and
 * gw_attn_v_for keep llama.cpp's summation order; the kernels of a batch
 * are used for rows whose item has two or more tokens, as a solo pass of
 * that item would). Consecutive heads share a kv head: its values are
 * gathered once for them. */
static void att_share(void *arg, int i, int n, int th)
{
    struct att_job *j = arg;
    gw_ctx *x = j->x;
    const gw_model_config *c = &x->m->cfg;
    int hd = c->head_dim, group = c->n_head / c->n_head_kv, items = j->rows * c->n_head;
    /* thread th's scratch */
    float *att = x->att + (size_t)th * x->n_ctx;
    uint16_t *ah = x->atth + (size_t)th * x->n_ctx;
    uint16_t *q = x->qh + (size_t)th * hd;
    uint16_t *vg = x->vgather + (size_t)th * x->n_ctx * hd;
    float *lanes = x->lanes + (size_t)th * 64 * hd;
    float scale = 1.0f / sqrtf((float)hd);
    gw_f16_row_fn to_half = gw_f32_to_f16_row_for();
    gw_softmax_h_fn softmax_h = gw_softmax_h_for();
    int have_r = -1, have_kvh = -1;
    /* level 2 reads the values in place, block by block */
    int paged = gw_simd_get() >= GW_SIMD_AVX512 && hd % 16 == 0;
    const uint16_t **vb = x->vptr + (size_t)th * (size_t)(x->n_ctx / GW_KV_BLOCK + 1);
    /* items split by their cost (the positions they attend to), so rows
     * of long and short sequences share the threads evenly */
    int64_t total = 0, acc = 0;
    for (int r = 0; r < j->rows; r++)
        total += (int64_t)(x->row_pos[r] + 1) * c->n_head;
    int from = items, to = items;
    for (int it = 0; it < items; it++) {
        if (from == items && acc >= total * i / n)
            from = it;
        if (acc >= total * (i + 1) / n) {
            to = it;
            break;
        }
        acc += x->row_pos[it / c->n_head] + 1;
    }
    if (from < to)
        prefetch_kv(x, j->layer, from / c->n_head, from % c->n_head / group);
    for (int it = from; it < to; it++) {
        int r = it / c->n_head, h = it % c->n_head, kvh = h / group;
        int seq = x->row_seq[r], pos = x->row_pos[r];
        /* the first head of a kv head's group: the next group's keys and
         * values on their way while this one computes (prefetch_kv says
         * when) */
        if (h % group == 0 && it + group < to)
            prefetch_kv(x, j->layer, (it + group) / c->n_head, (it + group) % c->n_head / group);
        float *qf = x->q + (size_t)r * c->dim + h * hd;
        rope(qf, 1, hd, x->rope_cs + (size_t)r * hd); /* this head's q, here in parallel */
        to_half(qf, q, hd);
        /* the keys of each block side by side */
        for (int t0 = 0; t0 <= pos; t0 += GW_KV_BLOCK) {
            /* the group's first head asks for the block's values and the
             * next block's keys as it goes (the others find them) */
            const uint16_t *pf[2] = {NULL, NULL};
            if (h % group == 0) {
                pf[0] = x->value_cache + gw__kv_at(x, j->layer, seq, t0, kvh);
                if (t0 + GW_KV_BLOCK <= pos)
                    pf[1] = x->key_cache + gw__kv_at(x, j->layer, seq, t0 + GW_KV_BLOCK, kvh);
            }
            gw_dot_keys(x->row_multi[r], hd, x->key_cache + gw__kv_at(x, j->layer, seq, t0, kvh),
                        (size_t)hd, pos + 1 - t0 < GW_KV_BLOCK ? pos + 1 - t0 : GW_KV_BLOCK,
                        GW_KV_BLOCK, q, pf, scale, att + t0);
        }
        softmax_h(att, pos + 1, ah);
        if (r != have_r || kvh != have_kvh) {
            if (paged)
                for (int t0 = 0, b = 0; t0 <= pos; t0 += GW_KV_BLOCK, b++)
                    vb[b] = x->value_cache + gw__kv_at(x, j->layer, seq, t0, kvh);
            else
                gather_v(x, j->layer, seq, kvh, pos + 1, vg);
            have_r = r;
            have_kvh = kvh;
        }
        float *o = x->xb2 + (size_t)r * c->dim + h * hd;
        if (paged)
            gw_attn_v_paged_avx512(x->row_multi[r], hd, pos + 1, ah, vb, GW_KV_BLOCK, (size_t)hd,
                                   o);
        else
            gw_attn_v_for(x->row_multi[r])(hd, pos + 1, ah, vg, (size_t)hd, lanes, o);
        if (hd % 32 == 0) /* its blocks of attn_output's input */
            gw_quantize_q8(o, x->xq2 + (size_t)r * x->xq_stride + h * hd / 32, hd);
    }
}

/* RoPE on rows [r0, r1)'s k, then k and v into their sequences' blocks. */
static void rope_store(gw_ctx *x, int l, int r0, int r1)
{
    const gw_model_config *c = &x->m->cfg;
    int hd = c->head_dim, kv_dim = hd * c->n_head_kv;
    gw_f16_row_fn to_half = gw_f32_to_f16_row_for();
    for (int r = r0; r < r1; r++) {
        const float *cs = x->rope_cs + (size_t)r * hd;
        rope(x->k + (size_t)r * kv_dim, c->n_head_kv, hd, cs); /* q's: in att_share */
        for (int h = 0; h < c->n_head_kv; h++) {
            size_t off = gw__kv_at(x, l, x->row_seq[r], x->row_pos[r], h);
            to_half(x->k + (size_t)r * kv_dim + h * hd, x->key_cache + off, hd);
            to_half(x->v + (size_t)r * kv_dim + h * hd, x->value_cache + off, hd);
        }
    }
}

/* Per-row work of a pass as one pool job, rows split across the shares
 * (a row's result does not depend on which thread computes it): with
 * `add`, x += add first (the residual); then o = RMSNorm(x) and its Q8
 * blocks into xq (norm_share); or RoPE and the KV store (rope_share). */
struct row_job {
    gw_ctx *x;
    int layer, rows;
    const float *add, *w;
};

/* Share i of n: whole groups of 4 rows (rmsnorm_rows runs 4 rows' sums
 * side by side, each a chain of dependent additions in double: one row
 * alone waits on its chain), the groups split across the shares. Fewer
 * groups than shares: one group each to the first shares. The threads
 * claim shares in order, so each thread's first claim finds work; spread
 * out (2 groups of an 8-row step in shares 3 and 7 of 8), the caller ran
 * through the empty shares and took both groups before the other thread
 * woke, and the norm of an 8-row step took as long on two threads as on
 * one. */
static void row_range(const struct row_job *j, int i, int n, int *a, int *b)
{
    int g = (j->rows + 3) / 4;
    if (g < n)
        *a = 4 * (i < g ? i : g), *b = 4 * (i < g ? i + 1 : g);
    else
        *a = 4 * (g * i / n), *b = 4 * (g * (i + 1) / n);
    *a = *a < j->rows ? *a : j->rows;
    *b = *b < j->rows ? *b : j->rows;
}

static void norm_share(void *arg, int i, int n, int t)
{
    (void)t;
    const struct row_job *j = arg;
    gw_ctx *x = j->x;
    int dim = x->m->cfg.dim, a, b;
    row_range(j, i, n, &a, &b);
    for (int r = a; j->add && r < b; r++) {
        float *xr = x->x + (size_t)r * dim;
        for (int k = 0; k < dim; k++)
            xr[k] += j->add[(size_t)r * dim + (size_t)k];
    }
    if (a < b)
        rmsnorm_rows(x->xb + (size_t)a * dim, x->x + (size_t)a * dim, j->w, b - a, dim,
                     x->m->cfg.rms_eps);
    for (int r = a; r < b; r++)
        gw_quantize_q8(x->xb + (size_t)r * dim, x->xq + (size_t)r * x->xq_stride, dim);
}

static void rope_share(void *arg, int i, int n, int t)
{
    (void)t;
    const struct row_job *j = arg;
    int a, b;
    row_range(j, i, n, &a, &b);
    rope_store(j->x, j->layer, a, b);
}

/* A few rows are less work than waking the pool: the caller does them. */
static void rows_run(gw_ctx *x, gw_pool_fn fn, struct row_job *j)
{
    if (j->rows < 4)
        fn(j, 0, 1, 0);
    else
        gw_pool_run(x->pool, fn, j);
}

/* One layer over the R rows of the pass. */
static void layer_pass(gw_ctx *x, int l, int R)
{
    const gw_model_config *c = &x->m->cfg;
    const struct layer *L = &x->m->l[l];
    int ffn = c->ffn;
    uint64_t t = prof_start(x);

    /* attention: q, k, v of the normed input (norm_share quantizes it),
     * after the last layer's feed-forward residual (its output in xb) */
    struct row_job nj = {
        .x = x, .layer = l, .rows = R, .add = l > 0 ? x->xb : NULL, .w = L->attn_norm};
    rows_run(x, norm_share, &nj);
    prof_mark(x, GW_PROF_NORM, &t);
    matmul_q(x, &L->wq, x->q, &L->wk, x->k, &L->wv, x->v, x->xb, x->xq, R, GW_PROF_QKV, &t);
    rows_run(x, rope_share, &nj);
    prof_mark(x, GW_PROF_ROPE, &t);
    struct att_job aj = {.x = x, .layer = l, .rows = R};
    gw_pool_run(x->pool, att_share, &aj);
    prof_mark(x, GW_PROF_ATTN, &t);

    /* output projection; its residual with the feed-forward's RMSNorm */
    matmul_q(x, &L->wo, x->xb, NULL, NULL, NULL, NULL, x->xb2, c->head_dim % 32 ? NULL : x->xq2, R,
             GW_PROF_WO, &t);
    struct row_job fn = {.x = x, .layer = l, .rows = R, .add = x->xb, .w = L->ffn_norm};
    rows_run(x, norm_share, &fn);
    prof_mark(x, GW_PROF_NORM, &t);

    /* SwiGLU feed-forward: w_down(silu(w_gate x) * w_up x) into xb; its
     * residual is added by the next layer's norm job (or gw__forward) */
    struct ffn_job fj = {.x = x, .L = L, .rows = R, .quant = ffn % 32 == 0};
    gw_pool_run(x->pool, ffn_share, &fj);
    prof_mark(x, GW_PROF_GATE_UP, &t); /* SwiGLU and quantization included */
    matmul_q(x, &L->w_down, x->xb, NULL, NULL, NULL, NULL, x->hb, fj.quant ? x->xq2 : NULL, R,
             GW_PROF_DOWN, &t);
}

/* The rows of the items: embeddings, sequence, position, kernel choice and
 * RoPE angles. Returns the row count. */
static int rows_in(gw_ctx *x, const gw_batch_item *items, int n_items)
{
    const gw_model *m = x->m;
    int dim = m->cfg.dim, hd = m->cfg.head_dim, R = 0;
    for (int i = 0; i < n_items; i++)
        for (int k = 0; k < items[i].n; k++, R++) {
            int32_t tok = items[i].tokens[k];
            gw_dequantize_row(m->tok_embd.type,
                              m->tok_embd.data + (size_t)tok * m->tok_embd.row_bytes,
                              x->x + (size_t)R * dim, (uint64_t)dim);
            x->row_seq[R] = items[i].seq;
            x->row_pos[R] = items[i].pos + k;
            x->row_multi[R] = items[i].n > 1;
            rope_angles(x->rope_cs + (size_t)R * hd, hd, x->row_pos[R], x->rope_theta_scale);
        }
    return R;
}

void gw__forward(gw_ctx *x, const gw_batch_item *items, int n_items)
{
    const gw_model *m = x->m;
    int dim = m->cfg.dim;
    uint64_t t = prof_start(x);
    int R = rows_in(x, items, n_items);
    prof_mark(x, GW_PROF_EMBED, &t);
    for (int l = 0; l < m->cfg.n_layer; l++)
        layer_pass(x, l, R);
    t = prof_start(x);
    for (size_t i = 0; i < (size_t)R * dim; i++) /* the last layer's residual */
        x->x[i] += x->xb[i];
    prof_mark(x, GW_PROF_RESID, &t);

    /* final norm and output matrix for the last row of each item that asks */
    int nl = 0, last = -1;
    t = prof_start(x);
    for (int i = 0; i < n_items; i++) {
        last += items[i].n;
        x->item_logit[i] = -1;
        if (!items[i].logits)
            continue;
        rmsnorm(x->xb + (size_t)nl * dim, x->x + (size_t)last * dim, m->out_norm, dim,
                m->cfg.rms_eps);
        x->item_logit[i] = nl++;
    }
    prof_mark(x, GW_PROF_NORM, &t);
    if (nl)
        matmul(x, &m->output, x->logits, NULL, NULL, NULL, NULL, x->xb, nl, GW_PROF_LOGITS, &t);
}
