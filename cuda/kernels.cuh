/* kernels.cuh - what the CUDA engine's files share: the launch
 * parameters (struct io, struct mv_args) and constants the host sets up
 * and the kernels read, the small device helpers more than one kernel
 * uses, and the kernels' declarations. Private to cuda/: gw_cuda.h is the
 * interface.
 *
 * The kernels live in matvec.cu (the matrix-vector products with their
 * fused norm, quantization and epilogues), attention.cu and
 * embed_argmax.cu (the two ends of the pass); engine.cu is the host side.
 * Without relocatable device code every helper here is
 * __forceinline__, so each file gets its own inlined copy.
 */
#ifndef GW_CUDA_KERNELS_CUH
#define GW_CUDA_KERNELS_CUH

#include "gw_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define ATT_THREADS 256
#define NBT_PREFILL 8

enum mv_mode {
    MV_STORE = 0,  /* out = W x */
    MV_ADD = 1,    /* out += W x (residual) */
    MV_SWIGLU = 2, /* out = silu(W0 x) * (W1 x) */
    MV_QKV = 3,    /* q, k, v: RoPE on q and k, k and v into the KV cache */
};

/* What the host writes before a pass (pinned on the host, mirrored on the
 * device): the position of the first token and the tokens; the device
 * writes back the greedy id. */
struct io {
    int pos;
    int argmax;
    int tok[1]; /* n_batch */
};

/* Matrix-vector products. A block of MV_WARPS warps; each warp computes two
 * consecutive output rows (for SwiGLU: the same two rows of gate and up),
 * so a warp keeps two (four) independent weight streams in flight. */
#define MV_WARPS 8
#define MV_THREADS (MV_WARPS * 32)
#define ATT_CH 128    /* positions per block of the decode attention */
#define MAX_HEADS 128 /* heads the attention combine keeps in shared memory */

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

/* ---------------------------------------------------------------- kernels */

/* matvec.cu */
template <unsigned TYPE, int NBT>
__global__ void __launch_bounds__(MV_THREADS)
    k_matvec(struct mv_args a, const float *x, int cols, int nb, const float *norm, float eps);
__global__ void k_swiglu(float *g, const float *u, size_t n);
__global__ void k_rope_kv(float *q, const float *k, const float *v, const struct io *io, __half *kc,
                          __half *vc, int n_head, int n_kv, int hd, float theta_scale);

/* attention.cu */
__global__ void __launch_bounds__(ATT_CH)
    k_attn_split(const float *q, const __half *kc, const __half *vc, float *part,
                 const struct io *io, int n_head, int n_kv, int hd, int n_split, float scale);
__global__ void __launch_bounds__(ATT_THREADS)
    k_attn(const float *q, const __half *kc, const __half *vc, float *out, const struct io *io,
           int n_head, int n_kv, int hd, int n_ctx, float scale);

/* embed_argmax.cu */
__global__ void k_embed(const uint8_t *tab, unsigned type, size_t row_bytes, int dim,
                        const struct io *io, float *x);
__global__ void k_argmax(const float *lg, int n, struct io *io);

/* The matvec kernel for a weight type and a tile of nbt tokens (1 or
 * NBT_PREFILL), or NULL for a type the kernels do not take; and the
 * shared memory one of its blocks needs (matvec.cu). */
typedef void (*mv_kernel)(struct mv_args, const float *, int, int, const float *, float);
mv_kernel gw_cuda_mv_pick(unsigned type, int nbt);
size_t gw_cuda_mv_smem(unsigned type, int nbt, int cols);

#endif
