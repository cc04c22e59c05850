/* embed_argmax.cu - the two ends of the forward pass: k_embed turns the
 * token ids into rows of the embedding matrix (dequantized), k_argmax
 * turns the logits into the greedy id, so that only one id crosses the
 * bus. Each is one small kernel that reads struct io.
 */
#include "kernels.cuh"

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
