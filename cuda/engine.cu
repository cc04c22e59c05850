/* engine.cu - the llama forward pass on an NVIDIA GPU.
 *
 * The same computation as worker/engine/model.c, in the same rounding points where
 * they matter for greedy decoding (activations quantized to 8-bit blocks
 * with half-precision scales, the query and the softmax weights rounded to
 * halves, a half KV cache), so the two engines agree to float summation
 * order. Per layer, six kernels:
 *
 *   matvec  q, k, v = Wq|Wk|Wv . rmsnorm(x)     (norm and quantization fused
 *                                               into each block's prologue)
 *   rope_kv rotate q and k, store k and v in the cache at their position
 *   attn    one block per (head, token): scores, softmax, weighted V sum
 *   matvec  x += Wo . attn
 *   matvec  h = silu(Wgate . rmsnorm(x)) * (Wup . rmsnorm(x))
 *   matvec  x += Wdown . h
 *
 * then the output matrix (final norm fused) and, for greedy decoding, an
 * argmax on the device so only one id crosses the bus. A decode step (one
 * token) is captured once as a CUDA graph and replayed: every kernel reads
 * the position and the token from device memory, which the host updates
 * with one copy per step.
 *
 * This file is the host side: upload, the launches of one pass, the
 * decode step's CUDA graph, evaluation. The kernels are in matvec.cu,
 * attention.cu and embed_argmax.cu; kernels.cuh is what they share.
 */
#include "kernels.cuh"
#include "gw_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utility>

struct mat_dev {
    const uint8_t *w;
    int rows, cols;
    unsigned type;
    size_t row_bytes;
};

struct layer_dev {
    const float *attn_norm, *ffn_norm;
    struct mat_dev wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct gw_cuda_engine {
    int dev;
    char name[160];
    int n_layer, dim, n_head, n_head_kv, head_dim, ffn, vocab, kv_dim;
    int n_ctx, n_batch;
    float eps, theta_scale;
    size_t max_smem; /* opt-in shared memory per block */
    int nbt_prefill; /* tokens per block in prompt passes (NBT_PREFILL or 1) */
    void *weights;   /* one allocation for every tensor */
    struct layer_dev *L;
    struct mat_dev tok_embd, output;
    const float *out_norm;
    __half *kc, *vc; /* [layer][n_ctx][kv_dim] */
    float *x, *q, *k, *v, *att, *hb, *hb2, *logits;
    float *part; /* decode attention partials [head][split][2 + head_dim] */
    int n_split; /* ceil(n_ctx / ATT_CH) */
    struct io *io_h, *io_d;
    cudaStream_t stream;
    cudaEvent_t ev0, ev1;
    cudaGraphExec_t graph;
    int use_graph;
    int pdl; /* programmatic dependent launch (compute capability 9+) */
};

/* ---------------------------------------------------------------- errors */

/* "cudaMalloc(&p, n)" -> "cudaMalloc": the call's name, for messages. */
static const char *call_name(const char *expr, char *buf, size_t len)
{
    size_t n = strcspn(expr, "(<");
    if (n >= len)
        n = len - 1;
    memcpy(buf, expr, n);
    buf[n] = '\0';
    return buf;
}

static int cuda_fail(const gw_cuda_engine *e, int dev, const char *expr, cudaError_t rc, char *err,
                     size_t errlen)
{
    char nm[64];
    if (e)
        gw_errf(err, errlen, "%s: %s: %s", e->name, call_name(expr, nm, sizeof nm),
                cudaGetErrorString(rc));
    else
        gw_errf(err, errlen, "cuda:%d: %s: %s", dev, call_name(expr, nm, sizeof nm),
                cudaGetErrorString(rc));
    return rc == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

/* Every CUDA call goes through CK: a failure names the call, the device and
 * CUDA's own error string, and returns from the enclosing function. */
#define CK(expr)                                                                                   \
    do {                                                                                           \
        cudaError_t rc_ = (expr);                                                                  \
        if (rc_ != cudaSuccess)                                                                    \
            return cuda_fail(e, e ? e->dev : dev_, #expr, rc_, err, errlen);                       \
    } while (0)

/* --------------------------------------------------------------- launches */

static const unsigned k_types[] = {GW_CUDA_T_F32, GW_CUDA_T_F16, GW_CUDA_T_Q4_0, GW_CUDA_T_Q4_1,
                                   GW_CUDA_T_Q8_0};

static bool type_ok(unsigned t)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i] == t)
            return true;
    return false;
}

/* Launches kernel k on the engine's stream; with programmatic dependent
 * launch where the device has it, so the kernel's blocks may start (and
 * prefetch) while the previous kernel drains: each kernel calls
 * grid_wait() before it reads what came before. */
template <typename... Params, typename... Args>
static cudaError_t launch(const gw_cuda_engine *e, void (*k)(Params...), dim3 grid, dim3 block,
                          size_t smem, Args &&...args)
{
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = e->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = e->pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, std::forward<Args>(args)...);
}

/* What a matvec reads besides the weights. */
struct mv_src {
    int in;            /* enum mv_in */
    const float *x;    /* IN_PLAIN: nb rows */
    const float *norm; /* RMSNorm weights, or NULL */
    __half *kc, *vc;   /* MV_QKV: this layer's cache */
};

/* Launches out_k = W_k . norm(x) for n matrices of the same input: one
 * launch when their types agree, one each otherwise (then SwiGLU and
 * RoPE run as kernels of their own). */
static int launch_mv(gw_cuda_engine *e, const struct mat_dev *const *W, float *const *out, int n,
                     int mode, const struct mv_src *src, int nb, char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    bool same = true;
    for (int i = 1; i < n; i++)
        same &= W[i]->type == W[0]->type;
    if (!same) {
        int rc = 0;
        for (int i = 0; i < n && !rc; i++)
            rc = launch_mv(e, W + i, i == 1 && mode == MV_SWIGLU ? &e->hb2 : out + i, 1,
                           mode == MV_ADD ? MV_ADD : MV_STORE, src, nb, err, errlen);
        if (rc)
            return rc;
        if (mode == MV_SWIGLU) {
            size_t cnt = (size_t)nb * W[0]->rows;
            CK(launch(e, k_swiglu, dim3((unsigned)((cnt + 255) / 256)), dim3(256), 0, out[0],
                      (const float *)e->hb2, cnt));
        } else if (mode == MV_QKV) {
            CK(launch(e, k_rope_kv, dim3((unsigned)nb), dim3(256), 0, out[0], (const float *)out[1],
                      (const float *)out[2], (const struct io *)e->io_d, src->kc, src->vc,
                      e->n_head, e->n_head_kv, e->head_dim, e->theta_scale));
        }
        return 0;
    }
    struct mv_args a;
    memset(&a, 0, sizeof a);
    a.n_mats = n;
    a.mode = mode;
    for (int i = 0; i < n; i++) {
        a.w[i] = W[i]->w;
        a.out[i] = out[i];
        a.rows[i] = W[i]->rows;
        a.row_bytes[i] = W[i]->row_bytes;
        a.total_rows += W[i]->rows;
    }
    if (mode == MV_SWIGLU)
        a.total_rows = W[0]->rows;
    a.in = src->in;
    a.io = e->io_d;
    a.kc = src->kc;
    a.vc = src->vc;
    a.hd = e->head_dim;
    a.theta_scale = e->theta_scale;
    a.part = e->part;
    a.n_split = e->n_split;
    int nbt = nb == 1 ? 1 : e->nbt_prefill;
    int cols = W[0]->cols;
    mv_kernel k = gw_cuda_mv_pick(W[0]->type, nbt);
    int rows_per_block = (mode == MV_QKV ? 2 : 1) * MV_WARPS;
    dim3 grid((unsigned)((a.total_rows + rows_per_block - 1) / rows_per_block),
              (unsigned)((nb + nbt - 1) / nbt));
    CK(launch(e, k, grid, dim3(MV_THREADS), gw_cuda_mv_smem(W[0]->type, nbt, cols), a, src->x, cols,
              nb, src->norm, e->eps));
    return 0;
}

static size_t attn_smem(const gw_cuda_engine *e)
{
    int groups = ATT_THREADS / e->head_dim;
    return ((size_t)e->n_ctx + (size_t)e->head_dim + (size_t)groups * e->head_dim) * sizeof(float);
}

/* Enqueues the forward pass of nb tokens (ids and first position already
 * in io_d) and, when logits, the output matrix and the argmax for the last
 * one. A decode step (nb == 1) splits attention over positions and
 * combines the splits in the output projection's prologue; a prompt runs
 * one attention block per (head, token). */
static int enqueue_pass(gw_cuda_engine *e, int nb, bool logits, char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    int rc;
    k_embed<<<nb, 256, 0, e->stream>>>(e->tok_embd.w, e->tok_embd.type, e->tok_embd.row_bytes,
                                       e->dim, e->io_d, e->x);
    CK(cudaGetLastError());
    float scale = 1.0f / sqrtf((float)e->head_dim);
    for (int l = 0; l < e->n_layer; l++) {
        const struct layer_dev *L = &e->L[l];
        size_t loff = (size_t)l * e->n_ctx * e->kv_dim;
        const struct mat_dev *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[3] = {e->q, e->k, e->v};
        struct mv_src in = {IN_PLAIN, e->x, L->attn_norm, e->kc + loff, e->vc + loff};
        if ((rc = launch_mv(e, qkv, qkv_out, 3, MV_QKV, &in, nb, err, errlen)))
            return rc;
        struct mv_src att = {IN_PLAIN, e->att, NULL, NULL, NULL};
        if (nb == 1) {
            CK(launch(e, k_attn_split, dim3((unsigned)e->n_head, (unsigned)e->n_split),
                      dim3(ATT_CH), 0, (const float *)e->q, (const __half *)(e->kc + loff),
                      (const __half *)(e->vc + loff), e->part, (const struct io *)e->io_d,
                      e->n_head, e->n_head_kv, e->head_dim, e->n_split, scale));
            att.in = IN_ATTN;
        } else {
            CK(launch(e, k_attn, dim3((unsigned)e->n_head, (unsigned)nb), dim3(ATT_THREADS),
                      attn_smem(e), (const float *)e->q, (const __half *)(e->kc + loff),
                      (const __half *)(e->vc + loff), e->att, (const struct io *)e->io_d, e->n_head,
                      e->n_head_kv, e->head_dim, e->n_ctx, scale));
        }
        const struct mat_dev *wo[1] = {&L->wo};
        if ((rc = launch_mv(e, wo, &e->x, 1, MV_ADD, &att, nb, err, errlen)))
            return rc;
        const struct mat_dev *gu[2] = {&L->w_gate, &L->w_up};
        struct mv_src ffn = {IN_PLAIN, e->x, L->ffn_norm, NULL, NULL};
        if ((rc = launch_mv(e, gu, &e->hb, 2, MV_SWIGLU, &ffn, nb, err, errlen)))
            return rc;
        const struct mat_dev *wd[1] = {&L->w_down};
        struct mv_src h = {IN_PLAIN, e->hb, NULL, NULL, NULL};
        if ((rc = launch_mv(e, wd, &e->x, 1, MV_ADD, &h, nb, err, errlen)))
            return rc;
    }
    if (logits) {
        const struct mat_dev *wout[1] = {&e->output};
        struct mv_src last = {IN_PLAIN, e->x + (size_t)(nb - 1) * e->dim, e->out_norm, NULL, NULL};
        if ((rc = launch_mv(e, wout, &e->logits, 1, MV_STORE, &last, 1, err, errlen)))
            return rc;
        CK(launch(e, k_argmax, dim3(1), dim3(1024), 0, (const float *)e->logits, e->vocab,
                  e->io_d));
    }
    return 0;
}

/* ----------------------------------------------------------- construction */

static int check_mat(const gw_cuda_engine *e, const gw_cuda_mat *m, char *err, size_t errlen)
{
    if (!type_ok(m->type)) {
        gw_errf(
            err, errlen,
            "%s: tensor \"%s\": type %u not supported by the CUDA engine (F32, F16, Q4_0, Q4_1, "
            "Q8_0)",
            e->name, m->name ? m->name : "?", m->type);
        return -ENOTSUP;
    }
    if (m->cols % 32 != 0 || m->rows < 1) {
        gw_errf(err, errlen, "%s: tensor \"%s\": %d columns is not a multiple of 32", e->name,
                m->name ? m->name : "?", m->cols);
        return -ENOTSUP;
    }
    return 0;
}

static size_t align256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

/* Size of one uploaded tensor, or of a norm vector. */
static size_t mat_bytes(const gw_cuda_mat *m)
{
    return align256((size_t)m->rows * m->row_bytes);
}

struct upload {
    uint8_t *base;
    size_t off;
};

static int put_mat(gw_cuda_engine *e, struct upload *u, const gw_cuda_mat *m, struct mat_dev *d,
                   char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    size_t n = (size_t)m->rows * m->row_bytes;
    d->w = u->base + u->off;
    d->rows = m->rows;
    d->cols = m->cols;
    d->type = m->type;
    d->row_bytes = m->row_bytes;
    CK(cudaMemcpy(u->base + u->off, m->data, n, cudaMemcpyHostToDevice));
    u->off += align256(n);
    return 0;
}

static int put_vec(gw_cuda_engine *e, struct upload *u, const float *v, int n, const float **d,
                   char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    *d = (const float *)(u->base + u->off);
    CK(cudaMemcpy(u->base + u->off, v, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    u->off += align256((size_t)n * sizeof(float));
    return 0;
}

static int set_smem_limits(gw_cuda_engine *e, const gw_cuda_model *m, char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    int widest = m->dim > m->ffn ? m->dim : m->ffn;
    size_t need1 = 0, need8 = 0;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++) {
        size_t s1 = gw_cuda_mv_smem(k_types[i], 1, widest),
               s8 = gw_cuda_mv_smem(k_types[i], NBT_PREFILL, widest);
        need1 = s1 > need1 ? s1 : need1;
        need8 = s8 > need8 ? s8 : need8;
    }
    if (need1 > e->max_smem) {
        gw_errf(err, errlen, "%s: rows of %d values need %zu bytes of shared memory (device: %zu)",
                e->name, widest, need1, e->max_smem);
        return -ENOTSUP;
    }
    e->nbt_prefill = need8 <= e->max_smem ? NBT_PREFILL : 1;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++) {
        CK(cudaFuncSetAttribute(gw_cuda_mv_pick(k_types[i], 1),
                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need1));
        if (e->nbt_prefill == NBT_PREFILL)
            CK(cudaFuncSetAttribute(gw_cuda_mv_pick(k_types[i], NBT_PREFILL),
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need8));
    }
    size_t as = attn_smem(e);
    if (as > e->max_smem) {
        gw_errf(err, errlen,
                "%s: a context of %d positions needs %zu bytes of shared memory for attention "
                "(device: %zu); use a shorter context",
                e->name, e->n_ctx, as, e->max_smem);
        return -ENOTSUP;
    }
    CK(cudaFuncSetAttribute(k_attn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)as));
    return 0;
}

/* The model's shapes and weight types against what the kernels take. */
static int check_model(const gw_cuda_engine *e, const gw_cuda_model *m, char *err, size_t errlen)
{
    int rc;
    if (m->head_dim > 256 || m->head_dim % 8 || m->n_head % m->n_head_kv || m->n_head > MAX_HEADS) {
        gw_errf(
            err, errlen,
            "%s: %d heads of %d not supported by the CUDA engine (a multiple of 8, at most 256; "
            "at most %d heads)",
            e->name, m->n_head, m->head_dim, MAX_HEADS);
        return -ENOTSUP;
    }
    /* every matrix must be of a type the kernels take */
    if ((rc = check_mat(e, &m->tok_embd, err, errlen)) ||
        (rc = check_mat(e, &m->output, err, errlen)))
        return rc;
    for (int l = 0; l < m->n_layer; l++) {
        const gw_cuda_layer *L = &m->layers[l];
        const gw_cuda_mat *ms[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                   &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < 7; i++)
            if ((rc = check_mat(e, ms[i], err, errlen)))
                return rc;
    }
    return 0;
}

/* Every weight and norm vector to the device, in one allocation. */
static int upload_weights(gw_cuda_engine *e, const gw_cuda_model *m, char *err, size_t errlen)
{
    int rc;
    bool tied = m->output.data == m->tok_embd.data;
    size_t vec = align256((size_t)m->dim * sizeof(float));
    size_t total = mat_bytes(&m->tok_embd) + (tied ? 0 : mat_bytes(&m->output)) + vec;
    for (int l = 0; l < m->n_layer; l++) {
        const gw_cuda_layer *L = &m->layers[l];
        total += 2 * vec + mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) +
                 mat_bytes(&L->wo) + mat_bytes(&L->w_gate) + mat_bytes(&L->w_up) +
                 mat_bytes(&L->w_down);
    }
    cudaError_t crc = cudaMalloc(&e->weights, total);
    if (crc != cudaSuccess) {
        gw_errf(err, errlen, "%s: cudaMalloc(%.1f MB of weights): %s", e->name, (double)total / 1e6,
                cudaGetErrorString(crc));
        return crc == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
    }
    struct upload u = {(uint8_t *)e->weights, 0};
    if ((rc = put_mat(e, &u, &m->tok_embd, &e->tok_embd, err, errlen)))
        return rc;
    if (tied)
        e->output = e->tok_embd;
    else if ((rc = put_mat(e, &u, &m->output, &e->output, err, errlen)))
        return rc;
    if ((rc = put_vec(e, &u, m->out_norm, m->dim, &e->out_norm, err, errlen)))
        return rc;
    e->L = (struct layer_dev *)calloc((size_t)m->n_layer, sizeof *e->L);
    if (!e->L) {
        gw_errf(err, errlen, "%s: out of host memory", e->name);
        return -ENOMEM;
    }
    for (int l = 0; l < m->n_layer; l++) {
        const gw_cuda_layer *S = &m->layers[l];
        struct layer_dev *D = &e->L[l];
        if ((rc = put_vec(e, &u, S->attn_norm, m->dim, &D->attn_norm, err, errlen)) ||
            (rc = put_vec(e, &u, S->ffn_norm, m->dim, &D->ffn_norm, err, errlen)) ||
            (rc = put_mat(e, &u, &S->wq, &D->wq, err, errlen)) ||
            (rc = put_mat(e, &u, &S->wk, &D->wk, err, errlen)) ||
            (rc = put_mat(e, &u, &S->wv, &D->wv, err, errlen)) ||
            (rc = put_mat(e, &u, &S->wo, &D->wo, err, errlen)) ||
            (rc = put_mat(e, &u, &S->w_gate, &D->w_gate, err, errlen)) ||
            (rc = put_mat(e, &u, &S->w_up, &D->w_up, err, errlen)) ||
            (rc = put_mat(e, &u, &S->w_down, &D->w_down, err, errlen)))
            return rc;
    }
    return 0;
}

/* The KV cache, the activations, the host <-> device io block, the stream
 * and the events. */
static int alloc_buffers(gw_cuda_engine *e, const gw_cuda_model *m, char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    size_t cache = (size_t)m->n_layer * e->n_ctx * e->kv_dim * sizeof(__half);
    size_t B = (size_t)e->n_batch;
    cudaError_t crc = cudaMalloc(&e->kc, cache);
    if (crc == cudaSuccess)
        crc = cudaMalloc(&e->vc, cache);
    if (crc != cudaSuccess) {
        gw_errf(err, errlen, "%s: cudaMalloc(%.1f MB of KV cache for %d positions): %s", e->name,
                2.0 * (double)cache / 1e6, e->n_ctx, cudaGetErrorString(crc));
        return crc == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
    }
    CK(cudaMemset(e->kc, 0, cache));
    CK(cudaMemset(e->vc, 0, cache));
    CK(cudaMalloc(&e->x, B * m->dim * sizeof(float)));
    CK(cudaMalloc(&e->q, B * m->dim * sizeof(float)));
    CK(cudaMalloc(&e->att, B * m->dim * sizeof(float)));
    CK(cudaMalloc(&e->k, B * e->kv_dim * sizeof(float)));
    CK(cudaMalloc(&e->v, B * e->kv_dim * sizeof(float)));
    CK(cudaMalloc(&e->hb, B * m->ffn * sizeof(float)));
    CK(cudaMalloc(&e->hb2, B * m->ffn * sizeof(float)));
    CK(cudaMalloc(&e->logits, (size_t)m->vocab * sizeof(float)));
    e->n_split = (e->n_ctx + ATT_CH - 1) / ATT_CH;
    CK(cudaMalloc(&e->part, (size_t)m->n_head * e->n_split * (m->head_dim + 2) * sizeof(float)));
    size_t io_bytes = sizeof(struct io) + B * sizeof(int);
    CK(cudaMallocHost(&e->io_h, io_bytes));
    CK(cudaMalloc(&e->io_d, io_bytes));
    CK(cudaMemset(e->io_d, 0, io_bytes));
    CK(cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking));
    CK(cudaEventCreate(&e->ev0));
    CK(cudaEventCreate(&e->ev1));
    return 0;
}

static int engine_init(gw_cuda_engine *e, const gw_cuda_model *m, char *err, size_t errlen)
{
    int rc;
    if ((rc = check_model(e, m, err, errlen)) || (rc = set_smem_limits(e, m, err, errlen)) ||
        (rc = upload_weights(e, m, err, errlen)) || (rc = alloc_buffers(e, m, err, errlen)))
        return rc;
    return 0;
}

extern "C" int gw_cuda_engine_new(int dev, const gw_cuda_model *m, int n_ctx, int n_batch,
                                  gw_cuda_engine **out, char *err, size_t errlen)
{
    gw_cuda_engine *e = NULL;
    const int dev_ = dev;
    *out = NULL;
    int count = 0;
    cudaError_t crc = cudaGetDeviceCount(&count);
    if (crc != cudaSuccess) {
        gw_errf(err, errlen, "cuda:%d: cudaGetDeviceCount: %s", dev, cudaGetErrorString(crc));
        return -ENODEV;
    }
    if (dev < 0 || dev >= count) {
        gw_errf(err, errlen, "cuda:%d: no such device (%d present)", dev, count);
        return -ENODEV;
    }
    if (!m || n_ctx < 1 || n_batch < 1) {
        gw_errf(err, errlen, "cuda:%d: bad engine parameters", dev);
        return -EINVAL;
    }
    CK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    if (prop.major < 6 || (prop.major == 6 && prop.minor < 1)) {
        gw_errf(err, errlen,
                "cuda:%d (%s): compute capability %d.%d; the CUDA engine needs 6.1 "
                "(__dp4a)",
                dev, prop.name, prop.major, prop.minor);
        return -ENOTSUP;
    }
    e = (gw_cuda_engine *)calloc(1, sizeof *e);
    if (!e) {
        gw_errf(err, errlen, "cuda:%d: out of host memory", dev);
        return -ENOMEM;
    }
    e->dev = dev;
    snprintf(e->name, sizeof e->name, "cuda:%d (%s)", dev, prop.name);
    /* less what the kernels declare statically (at most 2 KB) */
    e->max_smem = prop.sharedMemPerBlockOptin - 2048;
    e->n_layer = m->n_layer;
    e->dim = m->dim;
    e->n_head = m->n_head;
    e->n_head_kv = m->n_head_kv;
    e->head_dim = m->head_dim;
    e->ffn = m->ffn;
    e->vocab = m->vocab;
    e->kv_dim = m->head_dim * m->n_head_kv;
    e->n_ctx = n_ctx;
    e->n_batch = n_batch;
    e->eps = m->rms_eps;
    e->theta_scale = m->rope_theta_scale;
    e->use_graph = 1;
    /* GW_CUDA_PDL=0 turns programmatic dependent launch off (benchmarks) */
    const char *pdl = getenv("GW_CUDA_PDL");
    e->pdl = prop.major >= 9 && !(pdl && strcmp(pdl, "0") == 0);
    int rc = engine_init(e, m, err, errlen);
    if (rc) {
        gw_cuda_engine_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

extern "C" void gw_cuda_engine_free(gw_cuda_engine *e)
{
    if (!e)
        return;
    cudaSetDevice(e->dev);
    if (e->graph)
        cudaGraphExecDestroy(e->graph);
    if (e->stream)
        cudaStreamDestroy(e->stream);
    if (e->ev0)
        cudaEventDestroy(e->ev0);
    if (e->ev1)
        cudaEventDestroy(e->ev1);
    cudaFree(e->weights);
    cudaFree(e->kc);
    cudaFree(e->vc);
    cudaFree(e->x);
    cudaFree(e->q);
    cudaFree(e->att);
    cudaFree(e->k);
    cudaFree(e->v);
    cudaFree(e->hb);
    cudaFree(e->hb2);
    cudaFree(e->logits);
    cudaFree(e->part);
    cudaFree(e->io_d);
    if (e->io_h)
        cudaFreeHost(e->io_h);
    free(e->L);
    free(e);
}

extern "C" const char *gw_cuda_engine_name(const gw_cuda_engine *e)
{
    return e->name;
}

extern "C" void gw_cuda_engine_use_graph(gw_cuda_engine *e, int on)
{
    e->use_graph = on != 0;
}

/* The decode step as a graph, captured on first use. */
static int decode_graph(gw_cuda_engine *e, char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    if (e->graph)
        return 0;
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(e->stream, cudaStreamCaptureModeThreadLocal));
    int rc = enqueue_pass(e, 1, true, err, errlen);
    cudaError_t crc = cudaStreamEndCapture(e->stream, &g);
    if (rc)
        return rc;
    if (crc != cudaSuccess)
        return cuda_fail(e, dev_, "cudaStreamEndCapture", crc, err, errlen);
    crc = cudaGraphInstantiate(&e->graph, g, 0);
    cudaGraphDestroy(g);
    if (crc != cudaSuccess) {
        e->graph = NULL;
        return cuda_fail(e, dev_, "cudaGraphInstantiate", crc, err, errlen);
    }
    return 0;
}

extern "C" int gw_cuda_engine_eval(gw_cuda_engine *e, const int *tokens, int n, int pos,
                                   float *logits, int *argmax, unsigned long long *device_ns,
                                   char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    int rc;
    float total_ms = 0;
    CK(cudaSetDevice(e->dev));
    for (int done = 0; done < n;) {
        int nb = n - done < e->n_batch ? n - done : e->n_batch;
        bool last = done + nb == n;
        e->io_h->pos = pos + done;
        memcpy(e->io_h->tok, tokens + done, (size_t)nb * sizeof(int));
        CK(cudaMemcpyAsync(e->io_d, e->io_h, sizeof(struct io) + (size_t)nb * sizeof(int),
                           cudaMemcpyHostToDevice, e->stream));
        CK(cudaEventRecord(e->ev0, e->stream));
        if (nb == 1 && last && e->use_graph) {
            if ((rc = decode_graph(e, err, errlen)))
                return rc;
            CK(cudaGraphLaunch(e->graph, e->stream));
        } else if ((rc = enqueue_pass(e, nb, last, err, errlen))) {
            return rc;
        }
        CK(cudaEventRecord(e->ev1, e->stream));
        if (last && argmax)
            CK(cudaMemcpyAsync(&e->io_h->argmax, &e->io_d->argmax, sizeof(int),
                               cudaMemcpyDeviceToHost, e->stream));
        if (last && logits)
            CK(cudaMemcpyAsync(logits, e->logits, (size_t)e->vocab * sizeof(float),
                               cudaMemcpyDeviceToHost, e->stream));
        CK(cudaStreamSynchronize(e->stream));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e->ev0, e->ev1));
        total_ms += ms;
        done += nb;
    }
    if (argmax)
        *argmax = e->io_h->argmax;
    if (device_ns)
        *device_ns = (unsigned long long)((double)total_ms * 1e6);
    return 0;
}
