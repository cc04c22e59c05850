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
 * Matrix-vector products: one warp per output row, four lanes per 32-value
 * block (each lane takes 8 values: one 32-bit word of Q8_0, or the low and
 * high nibbles of one word of Q4_0/Q4_1), __dp4a against the quantized
 * activations in shared memory, warp-shuffle reduction. A prompt goes
 * through the same kernel with NBT = 8 tokens per block, so each weight
 * word read serves eight tokens.
 */
#include "gw_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utility>

#define ATT_THREADS 256
#define NBT_PREFILL 8

enum mv_mode {
    MV_STORE = 0,  /* out = W x */
    MV_ADD = 1,    /* out += W x (residual) */
    MV_SWIGLU = 2, /* out = silu(W0 x) * (W1 x) */
    MV_QKV = 3,    /* q, k, v: RoPE on q and k, k and v into the KV cache */
};

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

/* What the host writes before a pass (pinned on the host, mirrored on the
 * device): the position of the first token and the tokens; the device
 * writes back the greedy id. */
struct io {
    int pos;
    int argmax;
    int tok[1]; /* n_batch */
};

struct gw_cuda_engine {
    int dev;
    char name[160];
    int n_layer, dim, n_head, n_head_kv, head_dim, ffn, vocab, kv_dim;
    int n_ctx, n_batch;
    float eps, theta_scale;
    size_t max_smem;   /* opt-in shared memory per block */
    int nbt_prefill;   /* tokens per block in prompt passes (NBT_PREFILL or 1) */
    void *weights;     /* one allocation for every tensor */
    struct layer_dev *L;
    struct mat_dev tok_embd, output;
    const float *out_norm;
    __half *kc, *vc;   /* [layer][n_ctx][kv_dim] */
    float *x, *q, *k, *v, *att, *hb, *hb2, *logits;
    float *part;       /* decode attention partials [head][split][2 + head_dim] */
    int n_split;       /* ceil(n_ctx / ATT_CH) */
    struct io *io_h, *io_d;
    cudaStream_t stream;
    cudaEvent_t ev0, ev1;
    cudaGraphExec_t graph;
    int use_graph;
    int pdl;           /* programmatic dependent launch (compute capability 9+) */
};

/* ---------------------------------------------------------------- errors */

static void msg(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msg(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

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

static int cuda_fail(const gw_cuda_engine *e, int dev, const char *expr, cudaError_t rc,
                     char *err, size_t errlen)
{
    char nm[64];
    if (e)
        msg(err, errlen, "%s: %s: %s", e->name, call_name(expr, nm, sizeof nm),
            cudaGetErrorString(rc));
    else
        msg(err, errlen, "cuda:%d: %s: %s", dev, call_name(expr, nm, sizeof nm),
            cudaGetErrorString(rc));
    return rc == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

/* Every CUDA call goes through CK: a failure names the call, the device and
 * CUDA's own error string, and returns from the enclosing function. */
#define CK(expr)                                                                   \
    do {                                                                           \
        cudaError_t rc_ = (expr);                                                  \
        if (rc_ != cudaSuccess)                                                    \
            return cuda_fail(e, e ? e->dev : dev_, #expr, rc_, err, errlen);       \
    } while (0)

/* ------------------------------------------------------------ device code */

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ int warp_sum_int(int v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum (or max) over the block; red holds one float per warp. Every thread
 * gets the result. */
__device__ float block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < nw; i++)
        s += red[i];
    return s;
}

__device__ float block_max(float v, float *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    float s = -INFINITY;
    for (int i = 0; i < nw; i++)
        s = fmaxf(s, red[i]);
    return s;
}

__device__ __forceinline__ float h2f(const uint8_t *p)
{
    return __half2float(*(const __half *)p);
}

__device__ __forceinline__ float round_half(float f)
{
    return __half2float(__float2half_rn(f));
}

/* Programmatic dependent launch (Hopper and later): a kernel launched with
 * the attribute may start while the previous one finishes; everything
 * before grid_wait() must not read what that one writes (here: only L2
 * prefetches of weights, which nothing writes). A no-op otherwise. */
__device__ __forceinline__ void grid_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* The warp's lanes prefetch n bytes from p into L2, one line each. */
__device__ __forceinline__ void prefetch_row(const uint8_t *p, size_t n)
{
    for (size_t off = (size_t)(threadIdx.x & 31) * 128; off < n; off += 32 * 128)
        prefetch_l2(p + off);
}

/* Adjacent-pair RoPE of (y0, y1), pair pi of its head at position pos: the
 * angle is the position multiplied pi times by theta_scale, in float, as
 * the CPU engine's rope_angles computes it. */
__device__ __forceinline__ void rope_pair(int pos, int pi, float theta_scale, float &y0, float &y1)
{
    float theta = (float)pos;
    for (int s = 0; s < pi; s++)
        theta *= theta_scale;
    float c = cosf(theta), sn = sinf(theta);
    float z0 = y0 * c - y1 * sn, z1 = y0 * sn + y1 * c;
    y0 = z0;
    y1 = z1;
}

/* A 32-bit word from a 2-byte aligned address (Q4_0 and Q8_0 blocks are
 * 18 and 34 bytes, so their quants are only 2-byte aligned). */
__device__ __forceinline__ int load_i32_a2(const uint8_t *p)
{
    const uint16_t *h = (const uint16_t *)p;
    return (int)((uint32_t)h[0] | ((uint32_t)h[1] << 16));
}

/* Element i of a weight row, as a float. */
__device__ float dequant(unsigned type, const uint8_t *row, int i)
{
    int blk = i >> 5, j = i & 31;
    switch (type) {
    case GW_CUDA_T_F32:
        return ((const float *)row)[i];
    case GW_CUDA_T_F16:
        return __half2float(((const __half *)row)[i]);
    case GW_CUDA_T_Q4_0: {
        const uint8_t *b = row + (size_t)blk * 18;
        int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        return (float)(q - 8) * h2f(b);
    }
    case GW_CUDA_T_Q4_1: {
        const uint8_t *b = row + (size_t)blk * 20;
        int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
        return (float)q * h2f(b) + h2f(b + 2);
    }
    case GW_CUDA_T_Q8_0: {
        const uint8_t *b = row + (size_t)blk * 34;
        return (float)(int8_t)b[2 + j] * h2f(b);
    }
    }
    return 0.0f;
}

__global__ void k_embed(const uint8_t *tab, unsigned type, size_t row_bytes, int dim,
                        const struct io *io, float *x)
{
    int b = blockIdx.x;
    grid_wait();
    const uint8_t *row = tab + (size_t)io->tok[b] * row_bytes;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t)b * dim + i] = dequant(type, row, i);
}

/* Matrix-vector products. A block of MV_WARPS warps; each warp computes two
 * consecutive output rows (for SwiGLU: the same two rows of gate and up),
 * so a warp keeps two (four) independent weight streams in flight. */
#define MV_WARPS 8
#define MV_THREADS (MV_WARPS * 32)
#define ATT_CH 128     /* positions per block of the decode attention */
#define MAX_HEADS 128  /* heads the attention combine keeps in shared memory */

enum mv_in {
    IN_PLAIN = 0, /* x: nb rows of cols floats */
    IN_ATTN = 1,  /* the decode attention's partial results, combined here */
};

struct mv_args {
    const uint8_t *w[3];
    float *out[3];
    int rows[3];
    size_t row_bytes[3];
    int n_mats;     /* matrices sharing the input (2 for MV_SWIGLU) */
    int mode;       /* enum mv_mode */
    int total_rows; /* rows over all matrices (of one for MV_SWIGLU) */
    int in;         /* enum mv_in */
    /* MV_QKV: RoPE on q and k, k and v into the cache at their position */
    const struct io *io;
    __half *kc, *vc;
    int hd;
    float theta_scale;
    /* IN_ATTN: partials [head][split][2 + hd] (max, sum, unnormalized sum) */
    const float *part;
    int n_split;
};

/* Shared memory of a matvec block. Quantized weights: one token's input as
 * floats (staging), then NBT rows of int8 activations with their scales.
 * Float weights: NBT rows of floats. */
static size_t mv_smem(unsigned type, int nbt, int cols)
{
    if (type == GW_CUDA_T_F32 || type == GW_CUDA_T_F16)
        return (size_t)nbt * cols * sizeof(float);
    return 2 * (size_t)cols * sizeof(float) + (size_t)nbt * cols +
           2 * (size_t)nbt * (cols / 32) * sizeof(float);
}

__device__ double block_sum_d(double v, double *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    double s = 0;
    for (int i = 0; i < nw; i++)
        s += red[i];
    return s;
}

/* R weight rows (streams) against the NBT activation rows: each lane's
 * part of every dot product; the caller reduces over the warp. The loop
 * over blocks is unrolled so the loads of several blocks and of every
 * stream are in flight together. */
template <unsigned TYPE, int NBT, int R>
__device__ __forceinline__ void rows_dot(const uint8_t *const *row, int cols, const int8_t *xq,
                                         const float *xd, const float *xs, const float *xf,
                                         int nt, float (*acc)[NBT])
{
    int lane = threadIdx.x & 31;
    if (TYPE == GW_CUDA_T_F32) {
#pragma unroll 4
        for (int i = lane; i < cols; i += 32) {
#pragma unroll
            for (int k = 0; k < R; k++) {
                float wv = ((const float *)row[k])[i];
#pragma unroll
                for (int t = 0; t < NBT; t++)
                    if (t < nt)
                        acc[k][t] += wv * xf[t * cols + i];
            }
        }
    } else if (TYPE == GW_CUDA_T_F16) {
#pragma unroll 4
        for (int i = lane; i < cols / 2; i += 32) {
#pragma unroll
            for (int k = 0; k < R; k++) {
                float2 wv = __half22float2(((const __half2 *)row[k])[i]);
#pragma unroll
                for (int t = 0; t < NBT; t++)
                    if (t < nt)
                        acc[k][t] += wv.x * xf[t * cols + 2 * i] + wv.y * xf[t * cols + 2 * i + 1];
            }
        }
    } else {
        int nblk = cols / 32, part = lane & 3;
#pragma unroll 4
        for (int ib = lane >> 2; ib < nblk; ib += 8) {
#pragma unroll
            for (int k = 0; k < R; k++) {
                if (TYPE == GW_CUDA_T_Q4_0) {
                    const uint8_t *b = row[k] + (size_t)ib * 18;
                    float dw = h2f(b);
                    int v = load_i32_a2(b + 2 + part * 4);
                    int lo = v & 0x0F0F0F0F, hi = (v >> 4) & 0x0F0F0F0F;
#pragma unroll
                    for (int t = 0; t < NBT; t++)
                        if (t < nt) {
                            const int8_t *q = xq + t * cols + ib * 32;
                            int xlo = *(const int *)(q + part * 4);
                            int xhi = *(const int *)(q + 16 + part * 4);
                            int dot = __dp4a(hi, xhi, __dp4a(lo, xlo, 0));
                            int sq = __dp4a(0x01010101, xhi, __dp4a(0x01010101, xlo, 0));
                            acc[k][t] += dw * xd[t * nblk + ib] * (float)(dot - 8 * sq);
                        }
                } else if (TYPE == GW_CUDA_T_Q4_1) {
                    const uint8_t *b = row[k] + (size_t)ib * 20;
                    float dw = h2f(b), mw = h2f(b + 2);
                    int v = *(const int *)(b + 4 + part * 4);
                    int lo = v & 0x0F0F0F0F, hi = (v >> 4) & 0x0F0F0F0F;
#pragma unroll
                    for (int t = 0; t < NBT; t++)
                        if (t < nt) {
                            const int8_t *q = xq + t * cols + ib * 32;
                            int xlo = *(const int *)(q + part * 4);
                            int xhi = *(const int *)(q + 16 + part * 4);
                            int dot = __dp4a(hi, xhi, __dp4a(lo, xlo, 0));
                            acc[k][t] += dw * xd[t * nblk + ib] * (float)dot +
                                         (part == 0 ? mw * xs[t * nblk + ib] : 0.0f);
                        }
                } else { /* Q8_0 */
                    const uint8_t *b = row[k] + (size_t)ib * 34;
                    float dw = h2f(b);
                    int v0 = load_i32_a2(b + 2 + part * 8), v1 = load_i32_a2(b + 6 + part * 8);
#pragma unroll
                    for (int t = 0; t < NBT; t++)
                        if (t < nt) {
                            const int8_t *q = xq + t * cols + ib * 32 + part * 8;
                            int dot = __dp4a(v1, *(const int *)(q + 4),
                                             __dp4a(v0, *(const int *)q, 0));
                            acc[k][t] += dw * xd[t * nblk + ib] * (float)dot;
                        }
                }
            }
        }
    }
}

/* Decode (one token) with 8-bit weights: each lane's weight words for the
 * first PRE steps of its dot product are loaded into registers before the
 * kernel waits for its predecessor (programmatic dependent launch), so the
 * fetch overlaps that kernel's tail and this one's prologue. PRE = 6 covers
 * rows of up to 1536 values; longer rows load the rest as they go. */
#define PRE 6
struct wpre {
    int v0[PRE], v1[PRE];
    float d[PRE], m[PRE];
};

template <unsigned TYPE>
__device__ __forceinline__ void wload(const uint8_t *row, int ib, int part, int &v0, int &v1,
                                      float &d, float &m)
{
    if (TYPE == GW_CUDA_T_Q4_0) {
        const uint8_t *b = row + (size_t)ib * 18;
        d = h2f(b);
        v0 = load_i32_a2(b + 2 + part * 4);
    } else if (TYPE == GW_CUDA_T_Q4_1) {
        const uint8_t *b = row + (size_t)ib * 20;
        d = h2f(b);
        m = h2f(b + 2);
        v0 = *(const int *)(b + 4 + part * 4);
    } else {
        const uint8_t *b = row + (size_t)ib * 34;
        d = h2f(b);
        v0 = load_i32_a2(b + 2 + part * 8);
        v1 = load_i32_a2(b + 6 + part * 8);
    }
}

template <unsigned TYPE>
__device__ __forceinline__ void preload(const uint8_t *row, int nblk, struct wpre &p)
{
    int lane = threadIdx.x & 31, part = lane & 3;
#pragma unroll
    for (int it = 0; it < PRE; it++) {
        int ib = (lane >> 2) + 8 * it;
        p.v0[it] = p.v1[it] = 0;
        p.d[it] = p.m[it] = 0.0f;
        if (row && ib < nblk)
            wload<TYPE>(row, ib, part, p.v0[it], p.v1[it], p.d[it], p.m[it]);
    }
}

/* One block's term of a lane's dot product: the same operations, in the
 * same order, as rows_dot's. */
template <unsigned TYPE>
__device__ __forceinline__ float wterm(int v0, int v1, float dw, float mw, int ib, int part,
                                       const int8_t *xq, const float *xd, const float *xs)
{
    if (TYPE == GW_CUDA_T_Q4_0) {
        int lo = v0 & 0x0F0F0F0F, hi = (v0 >> 4) & 0x0F0F0F0F;
        const int8_t *q = xq + ib * 32;
        int xlo = *(const int *)(q + part * 4), xhi = *(const int *)(q + 16 + part * 4);
        int dot = __dp4a(hi, xhi, __dp4a(lo, xlo, 0));
        int sq = __dp4a(0x01010101, xhi, __dp4a(0x01010101, xlo, 0));
        return dw * xd[ib] * (float)(dot - 8 * sq);
    } else if (TYPE == GW_CUDA_T_Q4_1) {
        int lo = v0 & 0x0F0F0F0F, hi = (v0 >> 4) & 0x0F0F0F0F;
        const int8_t *q = xq + ib * 32;
        int xlo = *(const int *)(q + part * 4), xhi = *(const int *)(q + 16 + part * 4);
        int dot = __dp4a(hi, xhi, __dp4a(lo, xlo, 0));
        return dw * xd[ib] * (float)dot + (part == 0 ? mw * xs[ib] : 0.0f);
    } else {
        const int8_t *q = xq + ib * 32 + part * 8;
        int dot = __dp4a(v1, *(const int *)(q + 4), __dp4a(v0, *(const int *)q, 0));
        return dw * xd[ib] * (float)dot;
    }
}

template <unsigned TYPE>
__device__ __forceinline__ float dot_pre(const struct wpre &p, const uint8_t *row, int cols,
                                         const int8_t *xq, const float *xd, const float *xs)
{
    int lane = threadIdx.x & 31, part = lane & 3, nblk = cols / 32;
    float acc = 0.0f;
#pragma unroll
    for (int it = 0; it < PRE; it++) {
        int ib = (lane >> 2) + 8 * it;
        if (ib < nblk)
            acc += wterm<TYPE>(p.v0[it], p.v1[it], p.d[it], p.m[it], ib, part, xq, xd, xs);
    }
    for (int ib = (lane >> 2) + 8 * PRE; ib < nblk; ib += 8) {
        int v0 = 0, v1 = 0;
        float d = 0.0f, m = 0.0f;
        wload<TYPE>(row, ib, part, v0, v1, d, m);
        acc += wterm<TYPE>(v0, v1, d, m, ib, part, xq, xd, xs);
    }
    return acc;
}

/* Element i of the input of token b: a plain row, or the decode
 * attention's partial results for this position combined (flash-decoding:
 * each split's sum rescaled by exp(its max - the overall max)). */
__device__ __forceinline__ float mv_input(const struct mv_args &a, const float *x, int cols, int b,
                                          int i, const float *hmax, const float *hinv)
{
    if (a.in == IN_PLAIN)
        return x[(size_t)b * cols + i];
    int h = i / a.hd, d = i % a.hd, ns = (a.io->pos + ATT_CH) / ATT_CH;
    const float *p = a.part + (size_t)h * a.n_split * (a.hd + 2);
    float v = 0;
    for (int s = 0; s < ns; s++, p += a.hd + 2)
        v += p[2 + d] * expf(p[0] - hmax[h]);
    return v * hinv[h];
}

/* MV_ADD: the residual this warp adds to, read now so its latency
 * hides behind the prologue (the prologue reads the input, never the
 * output) */
template <int NBT>
__device__ __forceinline__ void mv_residual(const struct mv_args &a, const float *om, int rows,
                                            int r, bool live, int b0, int nt, int lane,
                                            float (&res)[NBT])
{
#pragma unroll
    for (int t = 0; t < NBT; t++)
        res[t] = live && a.mode == MV_ADD && t < nt && lane == 0 ? om[(size_t)(b0 + t) * rows + r]
                                                                 : 0.0f;
}

/* IN_ATTN: per head: the largest split max, and 1 / the rescaled sum */
__device__ __forceinline__ void mv_attn_stats(const struct mv_args &a, int cols, float *hmax,
                                              float *hinv)
{
    int ns = (a.io->pos + ATT_CH) / ATT_CH, H = cols / a.hd;
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
        const float *p = a.part + (size_t)h * a.n_split * (a.hd + 2);
        float m = -INFINITY, l = 0;
        for (int s = 0; s < ns; s++)
            m = fmaxf(m, p[(size_t)s * (a.hd + 2)]);
        for (int s = 0; s < ns; s++)
            l += p[(size_t)s * (a.hd + 2) + 1] * expf(p[(size_t)s * (a.hd + 2)] - m);
        hmax[h] = m;
        hinv[h] = 1.0f / l;
    }
    __syncthreads();
}

/* Token t's activations quantized to 8-bit blocks: eight threads per
 * 32-value block, four values each; the block's max and sum over the
 * eight by shuffles (every lane of the warp takes part, idle ones with
 * zeros) */
__device__ __forceinline__ void mv_quantize(const float *xf, const float *nw, const float *norm,
                                            float scale, int nblk, int cols, int t, int8_t *xq,
                                            float *xd, float *xs)
{
    int g8 = threadIdx.x & 7;
    for (int base = 0; base < nblk; base += MV_THREADS / 8) {
        int ib = base + (threadIdx.x >> 3);
        bool on = ib < nblk;
        float v[4], amax = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int i = ib * 32 + g8 * 4 + j;
            v[j] = !on ? 0.0f : norm ? (xf[i] * scale) * nw[i] : xf[i];
            amax = fmaxf(amax, fabsf(v[j]));
        }
#pragma unroll
        for (int o = 4; o > 0; o >>= 1)
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int q0 = __float2int_rn(v[0] * id), q1 = __float2int_rn(v[1] * id);
        int q2 = __float2int_rn(v[2] * id), q3 = __float2int_rn(v[3] * id);
        int sum = q0 + q1 + q2 + q3;
#pragma unroll
        for (int o = 4; o > 0; o >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (on) {
            *(int *)(xq + (size_t)t * cols + ib * 32 + g8 * 4) = (q0 & 0xff) | ((q1 & 0xff) << 8) |
                                                                 ((q2 & 0xff) << 16) |
                                                                 (int)((unsigned)(q3 & 0xff) << 24);
            if (g8 == 0) {
                xd[t * nblk + ib] = round_half(d);
                xs[t * nblk + ib] = round_half(d * (float)sum);
            }
        }
    }
}

/* The prologue for token t of the block's tile: its input row (combined
 * from the attention partials for IN_ATTN) staged in shared memory,
 * RMS-normed when norm is set, then quantized (quantized weights) or
 * scaled in place (float weights). */
template <unsigned TYPE>
__device__ __forceinline__ void
mv_prologue(const struct mv_args &a, const float *x, int cols, int b0, int t, const float *norm,
            float eps, float *stage, float *nw, int8_t *xq, float *xd, float *xs, double *red,
            const float *hmax, const float *hinv)
{
    const bool is_float = TYPE == GW_CUDA_T_F32 || TYPE == GW_CUDA_T_F16;
    int nblk = cols / 32;
    float *xf = is_float ? stage + (size_t)t * cols : stage;
    double ss = 0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = mv_input(a, x, cols, b0 + t, i, hmax, hinv);
        xf[i] = v;
        ss += (double)(v * v);
        if (!is_float && norm && t == 0)
            nw[i] = norm[i];
    }
    float scale = 1.0f;
    if (norm) {
        /* as the CPU engine: the sum of squares in double, the mean and
         * the scale in float, then (x * scale) * w */
        ss = block_sum_d(ss, red);
        scale = 1.0f / sqrtf((float)(ss / cols) + eps);
    } else {
        __syncthreads();
    }
    if (is_float) {
        if (norm)
            for (int i = threadIdx.x; i < cols; i += blockDim.x)
                xf[i] = (xf[i] * scale) * norm[i];
    } else {
        mv_quantize(xf, nw, norm, scale, nblk, cols, t, xq, xd, xs);
    }
    __syncthreads();
}

/* The dot products of the warp's R weight streams with the tile's
 * tokens, reduced over the warp: acc[k][t] for stream k, token t. The
 * decode path (PRE_LOAD) starts from the words preloaded into p0, p1. */
template <unsigned TYPE, int NBT, int R, bool PRE_LOAD>
__device__ __forceinline__ void mv_dots(const uint8_t *const *rp, const struct wpre &p0,
                                        const struct wpre &p1, int cols, const int8_t *xq,
                                        const float *xd, const float *xs, const float *xf, int nt,
                                        float (&acc)[R][NBT])
{
#pragma unroll
    for (int k = 0; k < R; k++)
#pragma unroll
        for (int t = 0; t < NBT; t++)
            acc[k][t] = 0.0f;
    if (PRE_LOAD) {
        acc[0][0] = dot_pre<TYPE>(p0, rp[0], cols, xq, xd, xs);
        if (R == 2) /* (R - 1: an index that exists when R is 1) */
            acc[R - 1][0] = dot_pre<TYPE>(p1, rp[R - 1], cols, xq, xd, xs);
    } else {
        rows_dot<TYPE, NBT, R>(rp, cols, xq, xd, xs, xf, nt, acc);
    }
#pragma unroll
    for (int k = 0; k < R; k++)
#pragma unroll
        for (int t = 0; t < NBT; t++)
            acc[k][t] = warp_sum(acc[k][t]);
}

/* Epilogue of one stream (MV_STORE, MV_ADD), on lane 0. */
template <int NBT>
__device__ __forceinline__ void mv_store(const struct mv_args &a, float *om, int rows, int r,
                                         int b0, int nt, const float (&res)[NBT],
                                         const float (&acc)[1][NBT])
{
    for (int t = 0; t < nt; t++) {
        float *o = om + (size_t)(b0 + t) * rows + r;
        *o = a.mode == MV_STORE ? acc[0][t] : res[t] + acc[0][t];
    }
}

/* Epilogue of MV_SWIGLU (gate and up of row r), on lane 0. */
template <int NBT>
__device__ __forceinline__ void mv_swiglu(float *om, int rows, int r, int b0, int nt,
                                          const float (&acc)[2][NBT])
{
    for (int t = 0; t < nt; t++) {
        float g = acc[0][t];
        om[(size_t)(b0 + t) * rows + r] = g / (1.0f + expf(-g)) * acc[1][t];
    }
}

/* Epilogue of MV_QKV, on lane 0: q out, k and v into the KV cache at
 * their position. */
template <int NBT>
__device__ __forceinline__ void mv_qkv(const struct mv_args &a, float *om, int rows, int r, int m,
                                       int b0, int nt, const float (&acc)[2][NBT])
{
    for (int t = 0; t < nt; t++) {
        /* rows r, r + 1 are a RoPE pair of q (m 0) or k (m 1); v (m 2) is
         * stored as is */
        float y0 = acc[0][t], y1 = acc[1][t];
        int pos = a.io->pos + b0 + t;
        if (m < 2)
            rope_pair(pos, (r / 2) % (a.hd / 2), a.theta_scale, y0, y1);
        if (m == 0) {
            float *o = om + (size_t)(b0 + t) * rows + r;
            o[0] = y0;
            o[1] = y1;
        } else {
            __half *cache = m == 1 ? a.kc : a.vc;
            __half *o = cache + (size_t)pos * rows + r;
            o[0] = __float2half_rn(y0);
            o[1] = __float2half_rn(y1);
        }
    }
}

/* out_k[b][r] (=, +=, SwiGLU, or RoPE and the KV cache) W_k[r] . norm(in[b])
 * for the rows of every matrix in a (grid.x covers them, two rows per
 * warp) and the tokens b of this block's tile (grid.y, NBT per block).
 * norm may be NULL: the input is used as is. The prologue puts this
 * block's activations, normed and quantized the way the CPU engine
 * quantizes them, in shared memory: every block does it, from L2. */
template <unsigned TYPE, int NBT>
__global__ void __launch_bounds__(MV_THREADS)
    k_matvec(struct mv_args a, const float *x, int cols, int nb, const float *norm, float eps)
{
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ double red[MV_WARPS];
    __shared__ float hmax[MAX_HEADS], hinv[MAX_HEADS];
    const bool is_float = TYPE == GW_CUDA_T_F32 || TYPE == GW_CUDA_T_F16;
    int b0 = blockIdx.y * NBT, nt = min(NBT, nb - b0);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int nblk = cols / 32;
    float *stage = (float *)smem; /* is_float: NBT rows; else one row and the norm */
    float *nw = stage + cols;
    int8_t *xq = (int8_t *)(smem + 2 * (size_t)cols * sizeof(float));
    float *xd = (float *)(xq + (size_t)NBT * cols);
    float *xs = xd + NBT * nblk;

    /* This warp's rows (they depend on the parameters only): prefetch
     * their weights into L2 before waiting for the previous kernel, so the
     * fetch from memory overlaps its tail and our prologue. */
    /* one row per warp; two (a RoPE pair) for q, k, v */
    int rpw = a.mode == MV_QKV ? 2 : 1;
    int r = (blockIdx.x * MV_WARPS + wid) * rpw, m = 0;
    bool live = r < a.total_rows;
    if (a.mode != MV_SWIGLU && a.n_mats > 1 && r >= a.rows[0]) {
        r -= a.rows[0];
        m = 1;
        if (a.n_mats > 2 && r >= a.rows[1]) {
            r -= a.rows[1];
            m = 2;
        }
    }
    /* select by value, not a.w[m]: an indexed kernel parameter would be
     * copied to local memory */
    const uint8_t *wm = m == 0 ? a.w[0] : m == 1 ? a.w[1] : a.w[2];
    size_t rb = m == 0 ? a.row_bytes[0] : m == 1 ? a.row_bytes[1] : a.row_bytes[2];
    float *om = m == 0 ? a.out[0] : m == 1 ? a.out[1] : a.out[2];
    int rows = m == 0 ? a.rows[0] : m == 1 ? a.rows[1] : a.rows[2];
    bool two = rpw == 2 && r + 1 < rows;
    /* the warp's one or two weight streams */
    const uint8_t *s0 = wm + (size_t)r * rb;
    const uint8_t *s1 = a.mode == MV_SWIGLU ? a.w[1] + (size_t)r * a.row_bytes[1]
                        : rpw == 2          ? wm + (size_t)(two ? r + 1 : r) * rb
                                            : NULL;
    constexpr bool pre = NBT == 1 && !is_float;
    struct wpre p0, p1;
    if (pre) {
        preload<TYPE>(live ? s0 : NULL, nblk, p0);
        preload<TYPE>(live ? s1 : NULL, nblk, p1);
    } else if (live) {
        prefetch_row(wm + (size_t)r * rb, two ? 2 * rb : rb);
        if (a.mode == MV_SWIGLU)
            prefetch_row(a.w[1] + (size_t)r * a.row_bytes[1],
                         two ? 2 * a.row_bytes[1] : a.row_bytes[1]);
    }
    grid_wait();
    float res[NBT];
    mv_residual<NBT>(a, om, rows, r, live, b0, nt, lane, res);

    if (a.in == IN_ATTN)
        mv_attn_stats(a, cols, hmax, hinv);
    for (int t = 0; t < nt; t++)
        mv_prologue<TYPE>(a, x, cols, b0, t, norm, eps, stage, nw, xq, xd, xs, red, hmax, hinv);

    if (!live)
        return;
    const float *xf = stage;
    if (rpw == 1 && a.mode != MV_SWIGLU) {
        const uint8_t *rp[1] = {s0};
        float acc[1][NBT];
        mv_dots<TYPE, NBT, 1, pre>(rp, p0, p1, cols, xq, xd, xs, xf, nt, acc);
        if (lane != 0)
            return;
        mv_store<NBT>(a, om, rows, r, b0, nt, res, acc);
        return;
    }
    /* two streams: gate and up of row r (SwiGLU), or rows r and r + 1 (a
     * RoPE pair of q or k, or two values of v) */
    const uint8_t *rp[2] = {s0, s1};
    float acc[2][NBT];
    mv_dots<TYPE, NBT, 2, pre>(rp, p0, p1, cols, xq, xd, xs, xf, nt, acc);
    if (lane != 0)
        return;
    if (a.mode == MV_SWIGLU)
        mv_swiglu<NBT>(om, rows, r, b0, nt, acc);
    else
        mv_qkv<NBT>(a, om, rows, r, m, b0, nt, acc);
}

/* SwiGLU when gate and up have different types (two plain products). */
__global__ void k_swiglu(float *g, const float *u, size_t n)
{
    grid_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* RoPE and the KV cache when q, k and v do not share a weight type (the
 * fused MV_QKV epilogue needs one launch for the three): q, k, v were
 * stored as plain products. */
__global__ void k_rope_kv(float *q, const float *k, const float *v, const struct io *io,
                          __half *kc, __half *vc, int n_head, int n_kv, int hd, float theta_scale)
{
    grid_wait();
    int b = blockIdx.x, pos = io->pos + b;
    int dim = n_head * hd, kv_dim = n_kv * hd;
    int qp = dim / 2, kp = kv_dim / 2;
    for (int it = threadIdx.x; it < qp + kp + kv_dim; it += blockDim.x) {
        if (it < qp + kp) {
            int i = it < qp ? it : it - qp;
            int pi = i % (hd / 2);
            if (it < qp) {
                float *p = q + (size_t)b * dim + 2 * i;
                rope_pair(pos, pi, theta_scale, p[0], p[1]);
            } else {
                const float *p = k + (size_t)b * kv_dim + 2 * i;
                float x0 = p[0], x1 = p[1];
                rope_pair(pos, pi, theta_scale, x0, x1);
                __half *o = kc + (size_t)pos * kv_dim + 2 * i;
                o[0] = __float2half_rn(x0);
                o[1] = __float2half_rn(x1);
            }
        } else {
            int e = it - qp - kp;
            vc[(size_t)pos * kv_dim + e] = __float2half_rn(v[(size_t)b * kv_dim + e]);
        }
    }
}

/* Decode attention, split over positions (flash-decoding): block (h, s)
 * takes positions [s * ATT_CH, (s + 1) * ATT_CH) of head h up to the
 * current one (blocks past it return at once: the grid is fixed so that a
 * CUDA graph can replay it at any position). Each thread scores one
 * position (the query rounded to halves, K.q * scale); the block writes
 * its max, its sum of exp(score - max), and the V rows weighted by those
 * exponentials; the next matvec's prologue combines the splits. */
__global__ void __launch_bounds__(ATT_CH)
k_attn_split(const float *q, const __half *kc, const __half *vc, float *part,
             const struct io *io, int n_head, int n_kv, int hd, int n_split, float scale)
{
    __shared__ float qh[256], w[ATT_CH], red[ATT_CH / 32], accs[ATT_CH * 2];
    grid_wait();
    int h = blockIdx.x, s = blockIdx.y, n = io->pos + 1, t0 = s * ATT_CH;
    if (t0 >= n)
        return;
    int cnt = min(ATT_CH, n - t0);
    int kv_dim = n_kv * hd, kvh = h / (n_head / n_kv);
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qh[d] = round_half(q[h * hd + d]);
    __syncthreads();
    float sc = -INFINITY;
    int t = threadIdx.x;
    if (t < cnt) {
        const uint4 *kr = (const uint4 *)(kc + (size_t)(t0 + t) * kv_dim + kvh * hd);
        float dot = 0;
#pragma unroll 8
        for (int c = 0; c < hd / 8; c++) {
            uint4 u = kr[c];
            unsigned wv[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float lo = __half2float(__ushort_as_half((unsigned short)(wv[j] & 0xffffu)));
                float hi = __half2float(__ushort_as_half((unsigned short)(wv[j] >> 16)));
                dot += qh[c * 8 + 2 * j] * lo + qh[c * 8 + 2 * j + 1] * hi;
            }
        }
        sc = dot * scale;
    }
    float mx = block_max(sc, red);
    float e = t < cnt ? expf(sc - mx) : 0.0f;
    float sum = block_sum(e, red);
    w[t] = e;
    __syncthreads();
    /* V: hd / 2 half2 columns, the positions split over the rest */
    int cols2 = hd / 2, groups = ATT_CH / cols2, c2 = threadIdx.x % cols2, g = threadIdx.x / cols2;
    float2 acc = make_float2(0.0f, 0.0f);
    if (g < groups) {
        const __half2 *vb = (const __half2 *)(vc + (size_t)t0 * kv_dim + kvh * hd) + c2;
#pragma unroll 8
        for (int u = g; u < cnt; u += groups) {
            float2 f = __half22float2(vb[(size_t)u * (kv_dim / 2)]);
            acc.x += w[u] * f.x;
            acc.y += w[u] * f.y;
        }
        accs[g * hd + 2 * c2] = acc.x;
        accs[g * hd + 2 * c2 + 1] = acc.y;
    }
    __syncthreads();
    float *p = part + ((size_t)h * n_split + s) * (hd + 2);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0;
        for (int i = 0; i < groups; i++)
            v += accs[i * hd + d];
        p[2 + d] = v;
    }
    if (threadIdx.x == 0) {
        p[0] = mx;
        p[1] = sum;
    }
}

/* Attention of head blockIdx.x for token blockIdx.y over positions
 * 0..pos: the query rounded to halves, K.q * scale, softmax, the weights
 * rounded to halves, then the weighted sum of V. Shared memory: n_ctx
 * scores, the query, and the partial V sums. */
__global__ void __launch_bounds__(ATT_THREADS)
k_attn(const float *q, const __half *kc, const __half *vc, float *out, const struct io *io,
       int n_head, int n_kv, int hd, int n_ctx, float scale)
{
    extern __shared__ __align__(16) float sh[];
    __shared__ float red[ATT_THREADS / 32];
    grid_wait();
    int h = blockIdx.x, b = blockIdx.y, pos = io->pos + b, n = pos + 1;
    int dim = n_head * hd, kv_dim = n_kv * hd, kvh = h / (n_head / n_kv);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float *sc = sh, *qh = sh + n_ctx, *part = qh + hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qh[d] = round_half(q[(size_t)b * dim + h * hd + d]);
    __syncthreads();
    const __half *kb = kc + kvh * hd;
    for (int t = wid; t < n; t += nw) {
        const __half *kr = kb + (size_t)t * kv_dim;
        float s = 0;
        for (int d = lane; d < hd; d += 32)
            s += qh[d] * __half2float(kr[d]);
        s = warp_sum(s);
        if (lane == 0)
            sc[t] = s * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int t = threadIdx.x; t < n; t += blockDim.x)
        mx = fmaxf(mx, sc[t]);
    mx = block_max(mx, red);
    float sum = 0;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        float e = expf(sc[t] - mx);
        sc[t] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    float inv = 1.0f / sum;
    for (int t = threadIdx.x; t < n; t += blockDim.x)
        sc[t] = round_half(sc[t] * inv);
    __syncthreads();
    int groups = blockDim.x / hd, d = threadIdx.x % hd, g = threadIdx.x / hd;
    const __half *vb = vc + kvh * hd;
    if (g < groups) {
        float acc = 0;
        for (int t = g; t < n; t += groups)
            acc += sc[t] * __half2float(vb[(size_t)t * kv_dim + d]);
        part[g * hd + d] = acc;
    }
    __syncthreads();
    if (threadIdx.x < hd) {
        float acc = 0;
        for (int i = 0; i < groups; i++)
            acc += part[i * hd + threadIdx.x];
        out[(size_t)b * dim + h * hd + threadIdx.x] = acc;
    }
}

/* The greedy id: highest logit, lowest id on ties. One block. */
__global__ void k_argmax(const float *lg, int n, struct io *io)
{
    __shared__ float bv[32];
    __shared__ int bi[32];
    grid_wait();
    float v = -INFINITY;
    int idx = 0x7fffffff;
#pragma unroll 8
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (lg[i] > v) {
            v = lg[i];
            idx = i;
        }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > v || (ov == v && oi < idx)) {
            v = ov;
            idx = oi;
        }
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) {
        bv[w] = v;
        bi[w] = idx;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int i = 1; i < (int)(blockDim.x >> 5); i++)
            if (bv[i] > v || (bv[i] == v && bi[i] < idx)) {
                v = bv[i];
                idx = bi[i];
            }
        io->argmax = idx == 0x7fffffff ? 0 : idx;
    }
}

/* -------------------------------------------------------------- host side */

typedef void (*mv_kernel)(struct mv_args, const float *, int, int, const float *, float);

static mv_kernel mv_pick(unsigned type, int nbt)
{
#define PICK(T)                                                                \
    case T:                                                                    \
        return nbt == 1 ? k_matvec<T, 1> : k_matvec<T, NBT_PREFILL>;
    switch (type) {
        PICK(GW_CUDA_T_F32)
        PICK(GW_CUDA_T_F16)
        PICK(GW_CUDA_T_Q4_0)
        PICK(GW_CUDA_T_Q4_1)
        PICK(GW_CUDA_T_Q8_0)
    }
#undef PICK
    return NULL;
}

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
            CK(launch(e, k_rope_kv, dim3((unsigned)nb), dim3(256), 0, out[0],
                      (const float *)out[1], (const float *)out[2], (const struct io *)e->io_d,
                      src->kc, src->vc, e->n_head, e->n_head_kv, e->head_dim, e->theta_scale));
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
    mv_kernel k = mv_pick(W[0]->type, nbt);
    int rows_per_block = (mode == MV_QKV ? 2 : 1) * MV_WARPS;
    dim3 grid((unsigned)((a.total_rows + rows_per_block - 1) / rows_per_block),
              (unsigned)((nb + nbt - 1) / nbt));
    CK(launch(e, k, grid, dim3(MV_THREADS), mv_smem(W[0]->type, nbt, cols), a, src->x, cols, nb,
              src->norm, e->eps));
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
                      (const __half *)(e->vc + loff), e->att, (const struct io *)e->io_d,
                      e->n_head, e->n_head_kv, e->head_dim, e->n_ctx, scale));
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
        msg(err, errlen,
            "%s: tensor \"%s\": type %u not supported by the CUDA engine (F32, F16, Q4_0, Q4_1, "
            "Q8_0)",
            e->name, m->name ? m->name : "?", m->type);
        return -ENOTSUP;
    }
    if (m->cols % 32 != 0 || m->rows < 1) {
        msg(err, errlen, "%s: tensor \"%s\": %d columns is not a multiple of 32", e->name,
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
        size_t s1 = mv_smem(k_types[i], 1, widest), s8 = mv_smem(k_types[i], NBT_PREFILL, widest);
        need1 = s1 > need1 ? s1 : need1;
        need8 = s8 > need8 ? s8 : need8;
    }
    if (need1 > e->max_smem) {
        msg(err, errlen, "%s: rows of %d values need %zu bytes of shared memory (device: %zu)",
            e->name, widest, need1, e->max_smem);
        return -ENOTSUP;
    }
    e->nbt_prefill = need8 <= e->max_smem ? NBT_PREFILL : 1;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++) {
        CK(cudaFuncSetAttribute(mv_pick(k_types[i], 1), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)need1));
        if (e->nbt_prefill == NBT_PREFILL)
            CK(cudaFuncSetAttribute(mv_pick(k_types[i], NBT_PREFILL),
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need8));
    }
    size_t as = attn_smem(e);
    if (as > e->max_smem) {
        msg(err, errlen,
            "%s: a context of %d positions needs %zu bytes of shared memory for attention "
            "(device: %zu); use a shorter context",
            e->name, e->n_ctx, as, e->max_smem);
        return -ENOTSUP;
    }
    CK(cudaFuncSetAttribute(k_attn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)as));
    return 0;
}

static int engine_init(gw_cuda_engine *e, const gw_cuda_model *m, char *err, size_t errlen)
{
    const int dev_ = e->dev;
    (void)dev_;
    int rc;
    if (m->head_dim > 256 || m->head_dim % 8 || m->n_head % m->n_head_kv ||
        m->n_head > MAX_HEADS) {
        msg(err, errlen,
            "%s: %d heads of %d not supported by the CUDA engine (a multiple of 8, at most 256; "
            "at most %d heads)",
            e->name, m->n_head, m->head_dim, MAX_HEADS);
        return -ENOTSUP;
    }
    /* every matrix must be of a type the kernels take */
    if ((rc = check_mat(e, &m->tok_embd, err, errlen)) || (rc = check_mat(e, &m->output, err, errlen)))
        return rc;
    for (int l = 0; l < m->n_layer; l++) {
        const gw_cuda_layer *L = &m->layers[l];
        const gw_cuda_mat *ms[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < 7; i++)
            if ((rc = check_mat(e, ms[i], err, errlen)))
                return rc;
    }
    if ((rc = set_smem_limits(e, m, err, errlen)))
        return rc;

    /* weights: one allocation */
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
        msg(err, errlen, "%s: cudaMalloc(%.1f MB of weights): %s", e->name, (double)total / 1e6,
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
        msg(err, errlen, "%s: out of host memory", e->name);
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

    /* KV cache and activations */
    size_t cache = (size_t)m->n_layer * e->n_ctx * e->kv_dim * sizeof(__half);
    size_t B = (size_t)e->n_batch;
    crc = cudaMalloc(&e->kc, cache);
    if (crc == cudaSuccess)
        crc = cudaMalloc(&e->vc, cache);
    if (crc != cudaSuccess) {
        msg(err, errlen, "%s: cudaMalloc(%.1f MB of KV cache for %d positions): %s", e->name,
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

extern "C" int gw_cuda_engine_new(int dev, const gw_cuda_model *m, int n_ctx, int n_batch,
                                  gw_cuda_engine **out, char *err, size_t errlen)
{
    gw_cuda_engine *e = NULL;
    const int dev_ = dev;
    *out = NULL;
    int count = 0;
    cudaError_t crc = cudaGetDeviceCount(&count);
    if (crc != cudaSuccess) {
        msg(err, errlen, "cuda:%d: cudaGetDeviceCount: %s", dev, cudaGetErrorString(crc));
        return -ENODEV;
    }
    if (dev < 0 || dev >= count) {
        msg(err, errlen, "cuda:%d: no such device (%d present)", dev, count);
        return -ENODEV;
    }
    if (!m || n_ctx < 1 || n_batch < 1) {
        msg(err, errlen, "cuda:%d: bad engine parameters", dev);
        return -EINVAL;
    }
    CK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    if (prop.major < 6 || (prop.major == 6 && prop.minor < 1)) {
        msg(err, errlen, "cuda:%d (%s): compute capability %d.%d; the CUDA engine needs 6.1 "
                         "(__dp4a)", dev, prop.name, prop.major, prop.minor);
        return -ENOTSUP;
    }
    e = (gw_cuda_engine *)calloc(1, sizeof *e);
    if (!e) {
        msg(err, errlen, "cuda:%d: out of host memory", dev);
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
