/* gw_cuda.h - the CUDA backend behind a plain C interface.
 *
 * Nothing outside cuda/ includes a CUDA header. Every function returns 0 or a
 * negative errno and, on failure, writes one line for the operator into err
 * (naming the CUDA call, the device and CUDA's own error string).
 */
#ifndef GW_CUDA_H
#define GW_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this binary was built with nvcc, 0 otherwise. */
int gw_cuda_built(void);

/* Number of usable CUDA devices in *count. Without a driver or a device this
 * returns -ENODEV and says why in err (e.g. "cudaGetDeviceCount: no CUDA-capable
 * device is detected"); a build without CUDA says "built without CUDA". */
int gw_cuda_device_count(int *count, char *err, size_t errlen);

/* Name and total memory of device `dev`. -ENODEV if it does not exist. */
int gw_cuda_device_info(int dev, char *name, size_t namelen, size_t *total_mem, char *err,
                        size_t errlen);

/* ======================================================================
 * The forward pass on a GPU (engine.cu; its kernels in matvec.cu,
 * attention.cu, embed_argmax.cu)
 *
 * The worker library (worker/engine/model.c) describes its model with the plain
 * structs below; gw_cuda_engine_new copies every weight to the device once,
 * in its GGUF block format (no expansion to floats), and keeps the KV cache
 * there (halves, as the CPU engine's). Weight types: F32, F16, Q4_0, Q4_1,
 * Q8_0. Quantized matrices meet activations quantized to 8-bit blocks on
 * the device (integer dot products, __dp4a), float ones meet floats.
 * ====================================================================== */

/* ggml type ids the CUDA engine computes with. */
enum {
    GW_CUDA_T_F32 = 0,
    GW_CUDA_T_F16 = 1,
    GW_CUDA_T_Q4_0 = 2,
    GW_CUDA_T_Q4_1 = 3,
    GW_CUDA_T_Q8_0 = 8,
};

/* A weight matrix in host memory, rows x cols of type, row_bytes per row. */
typedef struct gw_cuda_mat {
    unsigned type;
    int rows, cols;
    size_t row_bytes;
    const void *data;
    const char *name; /* the tensor's name, for messages */
} gw_cuda_mat;

typedef struct gw_cuda_layer {
    const float *attn_norm, *ffn_norm; /* dim floats each */
    gw_cuda_mat wq, wk, wv, wo, w_gate, w_up, w_down;
} gw_cuda_layer;

typedef struct gw_cuda_model {
    int n_layer, dim, n_head, n_head_kv, head_dim, ffn, vocab;
    float rms_eps;
    float rope_theta_scale; /* base^(-2/head_dim), as the CPU engine computes it */
    gw_cuda_mat tok_embd;
    gw_cuda_mat output; /* may be tok_embd (tied): uploaded once */
    const float *out_norm;
    const gw_cuda_layer *layers; /* n_layer */
} gw_cuda_model;

typedef struct gw_cuda_engine gw_cuda_engine;

/* Parses "cuda:N" (N in 0..63) into *dev. Returns 0 or -EINVAL. */
int gw_cuda_parse_device(const char *spec, int *dev);

/* Uploads m to device dev and allocates a KV cache of n_ctx positions and
 * buffers for prompts of n_batch tokens per pass. Errors (-ENODEV no such
 * device or no driver, -ENOMEM out of device memory, -ENOTSUP a weight
 * type or shape the kernels do not take, -EIO any other CUDA error) say
 * which, e.g. `cuda:0 (NVIDIA H100 80GB HBM3): cudaMalloc(98.4 MB of
 * weights): out of memory` or `cuda:0: tensor "blk.0.attn_q.weight": type
 * 12 not supported by the CUDA engine (F32, F16, Q4_0, Q4_1, Q8_0)`. The
 * host memory m points at may be released after this returns. */
int gw_cuda_engine_new(int dev, const gw_cuda_model *m, int n_ctx, int n_batch,
                       gw_cuda_engine **out, char *err, size_t errlen);
void gw_cuda_engine_free(gw_cuda_engine *e);

/* "cuda:0 (NVIDIA H100 80GB HBM3)". */
const char *gw_cuda_engine_name(const gw_cuda_engine *e);

/* Decode steps (one token) replay a captured CUDA graph when on (the
 * default); off launches every kernel each step. For benchmarks. */
void gw_cuda_engine_use_graph(gw_cuda_engine *e, int on);

/* Runs tokens[0, n) at positions pos.. (the caller has checked ids and
 * bounds). After the last token: when logits is not NULL the vocab logits
 * are copied there; when argmax is not NULL the greedy token (highest
 * logit, lowest id on ties) is computed on the device and only it is
 * copied. *device_ns (when not NULL): GPU time of the pass, from CUDA
 * events. Returns 0 or -EIO with the failing call in err. */
int gw_cuda_engine_eval(gw_cuda_engine *e, const int *tokens, int n, int pos, float *logits,
                        int *argmax, unsigned long long *device_ns, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
