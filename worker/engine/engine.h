/* engine.h: declarations shared by the files of the CPU engine. Private to
 * worker/engine/: other directories include gw_engine.h only. */
#ifndef GW_ENGINE_INTERNAL_H
#define GW_ENGINE_INTERNAL_H

#include "gw_engine.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

/* Activations quantized for integer dot products: 32 values, one scale.
 * s = d * sum(qs), kept so that blocks with a minimum (Q4_1, Q5_1, Q4_K)
 * add m * sum(x) without a second pass. Both hold values rounded to half
 * precision, as llama.cpp's block_q8_0/q8_1 store them. */
typedef struct gw_q8 {
    float d;
    float s;
    int32_t sum; /* the sum of qs, exact (the packed kernels' offsets) */
    int8_t qs[32];
} gw_q8;

/* Weight blocks exactly as stored in GGUF (halves as raw u16 bits). */
typedef struct {
    uint16_t d;
    uint8_t qs[16];
} gw_blk_q4_0;
typedef struct {
    uint16_t d, m;
    uint8_t qs[16];
} gw_blk_q4_1;
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[16];
} gw_blk_q5_0;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} gw_blk_q5_1;
typedef struct {
    uint16_t d;
    int8_t qs[32];
} gw_blk_q8_0;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} gw_blk_q4_k;
typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} gw_blk_q6_k;
_Static_assert(sizeof(gw_blk_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(gw_blk_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(gw_blk_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(gw_blk_q5_1) == 24, "Q5_1 block is 24 bytes");
_Static_assert(sizeof(gw_blk_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(gw_blk_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(gw_blk_q6_k) == 210, "Q6_K block is 210 bytes");

extern float gw_fp16_table[65536];
static inline float gw_h2f(uint16_t h)
{
    return gw_fp16_table[h];
}
static inline float gw_bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Dot product of one weight row (n elements of its type) with activations:
 * xq (n/32 Q8 blocks) for quantized types, xf (n floats) for float types. */
typedef float (*gw_dot_fn)(int n, const void *row, const gw_q8 *xq, const float *xf);

/* SIMD levels (gw_simd_set): the default is the best the CPU has, capped by
 * GW_SIMD=0|1|2 in the environment; GW_NO_AVX2=1 means 0 (matvec.c). Each
 * level computes the same bits as level 1 for every kernel that level 1
 * has (test_kernels_avx512), and level 1 the same as level 0 for Q4_0,
 * Q4_1, Q8_0 and the attention kernels (test_quant_avx2). */
enum {
    GW_SIMD_PORTABLE = 0, /* C only: any CPU */
    GW_SIMD_AVX2 = 1,     /* AVX2 + FMA + F16C */
    GW_SIMD_AVX512 = 2,   /* AVX-512 F + BW + VL, with VNNI where the CPU has it */
};

/* The kernel for a weight type under the current SIMD setting; NULL when
 * the type is not supported by the engine. */
gw_dot_fn gw_dot_for(uint32_t type);
/* True when the type's dot product reads Q8 activations (not floats). */
int gw_type_uses_q8(uint32_t type);
/* Portable kernels (matvec.c). */
gw_dot_fn gw_dot_portable_for(uint32_t type);
/* AVX2 kernels (matvec_avx2.c); the portable ones where a type has none,
 * or on a CPU that is not x86. Level 2 has no single-row kernels of its
 * own: it uses these (its own are attention's and the packed products). */
gw_dot_fn gw_dot_avx2_for(uint32_t type);

/* The best level this CPU runs (GW_SIMD and GW_NO_AVX2 aside); *vnni, when
 * not NULL, is set to 1 when it also has AVX512-VNNI. */
int gw_simd_cpu_max(int *vnni);
/* The single-row kernel of a level whatever gw_simd_get() says, for tests
 * and benchmarks: the caller checks gw_simd_cpu_max() first. Q4_0, Q4_1
 * and Q8_0 rows (one row, not packed) take the portable kernel at every
 * level. */
gw_dot_fn gw_dot_at(int level, uint32_t type);

/* Attention on halves (matvec.c), in llama.cpp's summation order (see
 * there). dot_hh: x . y over n halves. attn_v: out[d] = sum over t < n_pos
 * of a[t] * v[t * v_stride + d] for d < hd; lanes is scratch of 64 * hd
 * floats. f16_row: n floats rounded to halves (nearest even). */
typedef float (*gw_dot_hh_fn)(int n, const uint16_t *x, const uint16_t *y);
typedef void (*gw_attn_v_fn)(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                             size_t v_stride, float *lanes, float *out);
typedef void (*gw_f16_row_fn)(const float *x, uint16_t *y, int n);
/* softmax_h: llama.cpp's soft_max of n >= 1 scores, rounded to halves:
 * x[i] becomes e_i = expf(x[i] - max x) (x[i] > max in order: a NaN past
 * x[0] is never the max), the e_i are summed in double in order of i, and
 * y[i] = half(e_i * (float)(1 / sum)). silu_mul: h[i] = h[i] / (1 +
 * expf(-h[i])) * u[i] (SwiGLU). Every level gives the bits of the C
 * library's expf: level 2 computes glibc's expf 16 lanes at a time
 * (matvec_avx512.c); the others call it (gw_softmax_h_libm,
 * gw_silu_mul_libm). */
typedef void (*gw_softmax_h_fn)(float *x, int n, uint16_t *y);
typedef void (*gw_silu_mul_fn)(float *h, const float *u, int n);
void gw_softmax_h_libm(float *x, int n, uint16_t *y);
void gw_silu_mul_libm(float *h, const float *u, int n);
/* batched: the kernels llama.cpp uses for a batch of two or more tokens
 * (tinyBLAS, 16 lanes); otherwise those of a single token (vec_dot, 64). */
gw_dot_hh_fn gw_dot_hh_for(int batched);
gw_attn_v_fn gw_attn_v_for(int batched);
gw_f16_row_fn gw_f32_to_f16_row_for(void);
gw_softmax_h_fn gw_softmax_h_for(void);
gw_silu_mul_fn gw_silu_mul_for(void);
/* Those of one level: [0] one token, [1] a batch. Every level gives the
 * portable kernels' bits. gw_attn_avx2 and gw_attn_avx512 return the level
 * below's where the compiler or the CPU family has no such code; the
 * caller checks gw_simd_cpu_max() before calling what they hold. */
typedef struct gw_attn_kernels {
    gw_dot_hh_fn dot_hh[2];
    gw_attn_v_fn attn_v[2];
    gw_f16_row_fn f32_to_f16;
    gw_softmax_h_fn softmax_h;
    gw_silu_mul_fn silu_mul;
} gw_attn_kernels;
extern const gw_attn_kernels gw_attn_portable;
/* out[j] = dot_hh[batched](n, k + j * k_stride, q) * scale for j < n_keys:
 * the scores of a row against a run of keys, bit for bit what the kernel
 * one key at a time gives (batched: the batch kernel, for the rows of an
 * item of two or more tokens). `readable` keys (>= n_keys) may be read at
 * k: a run's last partial group of 16 is then scored with the 16 (a KV
 * block's unwritten slots: their scores are dropped). pf, when not NULL:
 * two runs of rows laid out as the keys (pf[p] + j * k_stride, n halves;
 * NULL for none) that the caller reads next (the values of these
 * positions, the next block's keys); level 2 asks the caches for row j of
 * each as it scores key j. gw_dot_keys at the level in force (level 2: 16
 * keys at a time); _at with the kernels of ks; _avx512 on level 2 CPUs
 * only. */
void gw_dot_keys(int batched, int n, const uint16_t *k, size_t k_stride, int n_keys, int readable,
                 const uint16_t *q, const uint16_t *const pf[2], float scale, float *out);
void gw_dot_keys_at(const gw_attn_kernels *ks, int batched, int n, const uint16_t *k,
                    size_t k_stride, int n_keys, const uint16_t *q, float scale, float *out);
void gw_dot_keys_avx512(int batched, int n, const uint16_t *k, size_t k_stride, int n_keys,
                        int readable, const uint16_t *q, const uint16_t *const pf[2], float scale,
                        float *out);
/* Level 2's attn_v[batched] (hd % 16 == 0, level 2 CPUs only) with the
 * values where a paged cache keeps them: position t's at vb[t / blk] +
 * (t % blk) * v_stride; the bits of attn_v over the values gathered. */
void gw_attn_v_paged_avx512(int batched, int hd, int n_pos, const uint16_t *a,
                            const uint16_t *const *vb, int blk, size_t v_stride, float *out);
const gw_attn_kernels *gw_attn_avx2(void);
const gw_attn_kernels *gw_attn_avx512(void);
/* Level 2's softmax_h and silu_mul (expf_avx512.c; level 2 CPUs only),
 * and its expf of x[0, n) into y (y may be x: the sampler, tests). */
void gw_softmax_h_avx512(float *x, int n, uint16_t *y);
void gw_silu_mul_avx512(float *h, const float *u, int n);
void gw__expf_avx512(const float *x, float *y, int n);

/* Quantizes n floats (n % 32 == 0) into n/32 Q8 blocks the way llama.cpp's
 * x86 quantize_row_q8_0/q8_1 do: d and s are rounded to halves. At the
 * SIMD level in force; every level gives the portable one's bits. */
void gw_quantize_q8(const float *x, gw_q8 *y, int n);
void gw_quantize_q8_portable(const float *x, gw_q8 *y, int n);
void gw_quantize_q8_avx512(const float *x, gw_q8 *y, int n); /* level 2 CPUs only */

/* The first index of the largest of n floats (n >= 1), as `if (x[i] >
 * x[best]) best = i` finds it (greedy sampling), at the SIMD level in
 * force; every level gives the portable one's answer. */
int32_t gw_argmax(const float *x, int n);
int32_t gw_argmax_portable(const float *x, int n);
int32_t gw_argmax_avx512(const float *x, int n); /* level 2 CPUs only */

/* A weight matrix: rows x cols, each row cols elements of type, row_bytes
 * bytes, rows contiguous from data. */
typedef struct gw_mat {
    uint32_t type;
    int rows, cols;
    size_t row_bytes;
    const uint8_t *data;
    uint8_t *packed;    /* Q4_0, Q4_1, Q8_0 regrouped (packed.c), or NULL */
    size_t pack_stride; /* bytes per group of GW_PACK_ROWS rows in packed */
} gw_mat;

/* out[b * out_stride + r] = W[r] . x_b for r in [r0, r1), b in [0, nb).
 * x_b is xq + b * xq_stride (Q8 types) or xf + b * xf_stride (float). The
 * batch loop is inside the row loop: a weight row is read from memory once
 * per batch. */
void gw_mat_rows(const gw_mat *W, const gw_q8 *xq, size_t xq_stride, const float *xf,
                 size_t xf_stride, int nb, float *out, size_t out_stride, int r0, int r1);
/* gw_mat_rows with the kernels of a level whatever gw_simd_get() says
 * (tests and benchmarks; see gw_dot_at). */
void gw_mat_rows_at(int level, int vnni, const gw_mat *W, const gw_q8 *xq, size_t xq_stride,
                    const float *xf, size_t xf_stride, int nb, float *out, size_t out_stride,
                    int r0, int r1);

/* Packed weights (packed.c): Q4_0, Q4_1 and Q8_0 matrices regrouped so that
 * one 512-bit vector holds the same 4 bytes of a block of 16 rows. Their
 * products (every level, packed or not) take each block's exact integer
 * sum and one multiply-add of it per output and block; packed.c says why
 * and gives the layout. gw_mat_pack fills W->packed (freed by
 * gw_mat_pack_free); 0, or -ENOMEM. gw_type_packs: 1 for the three types. */
enum { GW_PACK_ROWS = 16 };
/* Drops the whole pages of a mapped file's [p, p + len) from this
 * process's memory (madvise MADV_DONTNEED: the mapping is read-only, so
 * they are clean, and a later read maps them again from the file); nothing
 * for a file read into a buffer (gguf.c). Packing calls it on the matrices
 * it copied, so that a worker holds its weights once. */
void gw_gguf_release(const gw_gguf *g, const void *p, size_t len);
int gw_type_packs(uint32_t type);
int gw_mat_pack(gw_mat *W);
void gw_mat_pack_free(gw_mat *W);
/* What a packed kernel is given: out[c * out_stride + r] for c < nb, r in
 * [r0, r1); the activations' values lie in [-127, 127] (gw_quantize_q8). */
typedef struct gw_pk_args {
    const gw_mat *W;
    const gw_q8 *xq;
    size_t xq_stride;
    int nb;
    float *out;
    size_t out_stride;
    int r0, r1;
} gw_pk_args;
void gw_pk_rows_at(int level, int vnni, const gw_pk_args *a);
void gw_pk_rows_portable(const gw_pk_args *a);
void gw_pk_rows_avx2(const gw_pk_args *a);   /* level 1 and 2 CPUs */
void gw_pk_rows_avx512(const gw_pk_args *a); /* AVX512-VNNI CPUs only */

/* A batch of nb activation rows as the multi-row kernels take it: x_b is
 * xq + b * xq_stride (Q8 types) or xf + b * xf_stride (float types). */
typedef struct gw_batch {
    const gw_q8 *xq;
    size_t xq_stride;
    const float *xf;
    size_t xf_stride;
    int nb;
} gw_batch;
/* out[b * out_stride + r] = W[r] . x_b for r in [r0, r1), b < x->nb: bit
 * for bit what the single-row kernel of the same level gives, each weight
 * block unpacked once for several activation rows. */
typedef void (*gw_rows_fn)(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride,
                           int r0, int r1);
/* The multi-row kernel for a type (Q4_K, Q6_K; every level uses these),
 * NULL where the type has none (gw_mat_rows then calls the single-row
 * kernel per row; packed matrices have packed.c's). */
gw_rows_fn gw_rows_portable_for(uint32_t type);

/* Thread pool (threadpool.c). gw_pool_run calls fn(arg, i, n, t) once
 * for each share i in [0, n) (n: a few per thread) and returns when all
 * are done; t in [0, gw_pool_size()) is the thread running that share (0:
 * the caller), for scratch memory only: which thread runs which share
 * varies from job to job. */
typedef struct gw_pool gw_pool;
typedef void (*gw_pool_fn)(void *arg, int i, int n, int t);
/* cpus: NULL, or the CPU of each thread (cpus[0]: the calling thread,
 * which stays pinned after the pool is freed); -EINVAL for a CPU the
 * thread may not run on. */
int gw_pool_new(int n_threads, const int *cpus, gw_pool **out);
void gw_pool_free(gw_pool *p);
int gw_pool_size(const gw_pool *p);
void gw_pool_run(gw_pool *p, gw_pool_fn fn, void *arg);
/* While wait_ns is set, each gw_pool_run adds to it the time the caller
 * waited for the other threads after its own share (bench_step). */
void gw_pool_prof(gw_pool *p, uint64_t *wait_ns);

#endif
