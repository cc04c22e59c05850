/* matvec.cu - the matrix-vector products (k_matvec) and the two kernels
 * that stand in for its fused epilogues when the matrices of one launch do
 * not share a weight type (k_swiglu, k_rope_kv).
 *
 * Matrix-vector products: one warp per output row, four lanes per 32-value
 * block (each lane takes 8 values: one 32-bit word of Q8_0, or the low and
 * high nibbles of one word of Q4_0/Q4_1), __dp4a against the quantized
 * activations in shared memory, warp-shuffle reduction. A prompt goes
 * through the same kernel with NBT = 8 tokens per block, so each weight
 * word read serves eight tokens.
 *
 * Each block's prologue RMS-norms and quantizes its activations the way the
 * CPU engine does (worker/engine/model.c, quant.c), so this file holds
 * most of what decides the numbers; it is apart from the attention and
 * the host side so that it can be read, and compared with the CPU engine,
 * on its own.
 */
#include "kernels.cuh"

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

/* A 32-bit word from a 2-byte aligned address (Q4_0 and Q8_0 blocks are
 * 18 and 34 bytes, so their quants are only 2-byte aligned). */
__device__ __forceinline__ int load_i32_a2(const uint8_t *p)
{
    const uint16_t *h = (const uint16_t *)p;
    return (int)((uint32_t)h[0] | ((uint32_t)h[1] << 16));
}

/* Shared memory of a matvec block. Quantized weights: one token's input as
 * floats (staging), then NBT rows of int8 activations with their scales.
 * Float weights: NBT rows of floats. */
size_t gw_cuda_mv_smem(unsigned type, int nbt, int cols)
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
                                         const float *xd, const float *xs, const float *xf, int nt,
                                         float (*acc)[NBT])
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
                            int dot =
                                __dp4a(v1, *(const int *)(q + 4), __dp4a(v0, *(const int *)q, 0));
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
__global__ void k_rope_kv(float *q, const float *k, const float *v, const struct io *io, __half *kc,
                          __half *vc, int n_head, int n_kv, int hd, float theta_scale)
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

mv_kernel gw_cuda_mv_pick(unsigned type, int nbt)
{
#define PICK(T)                                                                                    \
    case T:                                                                                        \
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
