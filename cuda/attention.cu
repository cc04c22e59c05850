/* attention.cu - the attention kernels: k_attn_split for a decode step
 * (one token, split over positions; matvec.cu's prologue combines the
 * splits) and k_attn for a prompt (one block per head and token).
 *
 * Apart from the matrix-vector products because they read the KV cache,
 * not weights, and have their own block-wide reductions.
 */
#include "kernels.cuh"

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
