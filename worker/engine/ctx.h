/* ctx.h: the model and the evaluation context as the engine's files share
 * them (model.c loads, context.c builds contexts, kv.c keeps the paged KV
 * cache, forward.c runs the forward pass). Private to worker/engine/. */
#ifndef GW_ENGINE_CTX_H
#define GW_ENGINE_CTX_H

#include "engine.h"
#include "gw_cuda.h"

struct layer {
    gw_mat wq, wk, wv, wo;       /* attention projections */
    gw_mat w_gate, w_up, w_down; /* SwiGLU feed-forward */
    float *attn_norm, *ffn_norm; /* RMSNorm weights, dim floats */
};

struct gw_model {
    gw_gguf *g;
    gw_model_config cfg;
    gw_mat tok_embd; /* vocab rows of dim */
    gw_mat output;   /* vocab rows of dim; tok_embd when tied */
    float *out_norm; /* dim floats */
    struct layer *l; /* n_layer */
};

/* Packs the model's Q4_0, Q4_1 and Q8_0 products' matrices (packed.c),
 * those not packed yet: 0, or -ENOMEM (model.c; the CPU context calls it). */
int gw__model_pack(gw_model *m);

/* A sequence of the context: the blocks of the KV pool that hold its
 * positions, block i holding positions [i * GW_KV_BLOCK, (i + 1) *
 * GW_KV_BLOCK). It reserved `reserved` blocks when it was opened and takes
 * them from the free list as its positions fill, so a step never finds the
 * pool empty. */
struct gw_seq {
    int open;
    int reserved; /* blocks promised to it */
    int n_blocks; /* blocks taken so far (table[0, n_blocks)) */
    int32_t *table;
};

struct gw_ctx {
    const gw_model *m;
    gw_pool *pool;
    int n_ctx, n_batch;
    int max_rows; /* token rows one forward pass takes (scratch size) */

    /* The paged KV cache (kv.c): n_blocks blocks of GW_KV_BLOCK positions
     * per layer, laid out [layer][block][position in block][kv_dim]. It
     * holds halves, as llama.cpp's default cache does: the same rounding
     * keeps greedy decoding on the same ids (an f32 cache drifts off
     * llama.cpp's reference within a few tokens where two logits are
     * close), and it halves the cache's memory traffic. */
    uint16_t *key_cache, *value_cache;
    int n_blocks;      /* blocks in the pool */
    int n_reserved;    /* blocks promised to open sequences */
    int32_t *free_blk; /* free block ids, n_free of them */
    int n_free;
    int max_seqs;
    struct gw_seq *seqs; /* max_seqs */
    int legacy_seq;      /* the sequence gw_ctx_eval uses, -1 before */

    /* scratch, per thread */
    uint16_t *qh;          /* [n_threads][head_dim] query as halves */
    uint16_t *atth;        /* [n_threads][n_ctx] softmax weights as halves */
    float *lanes;          /* [n_threads][64 * head_dim] V-sum lanes */
    float *att;            /* [n_threads][n_ctx] attention scores */
    uint16_t *vgather;     /* [n_threads][n_ctx][head_dim] one kv head's values */
    const uint16_t **vptr; /* [n_threads][n_ctx / GW_KV_BLOCK + 1] where its blocks are */
    /* scratch, per row of a pass */
    float *x;               /* [rows][dim] residual stream */
    float *xb, *xb2;        /* [rows][dim] normed input, attention output */
    float *q;               /* [rows][dim] */
    float *k, *v;           /* [rows][kv_dim] */
    float *hb, *hb2;        /* [rows][ffn] */
    gw_q8 *xq;              /* [rows][max(dim, ffn) / 32] quantized activations */
    gw_q8 *xq2;             /* the same: what a job quantized for the next product */
    size_t xq_stride;       /* blocks per row */
    int *row_seq;           /* [rows] the sequence of each row */
    int *row_pos;           /* [rows] its position */
    uint8_t *row_multi;     /* [rows] 1 when its item has two or more tokens */
    float rope_theta_scale; /* base^(-2/hd), as llama.cpp's powf gives it */
    float *rope_cs;         /* [rows][head_dim] cos, sin of each row's angles */
    float *logits;          /* [max_seqs][vocab]: the items' logits */
    int *item_logit;        /* [max_seqs] row of logits of item i, -1: none */
    int n_items;            /* items of the last pass */
    uint64_t *prof;         /* where a pass's time goes (gw__ctx_prof), or NULL */

    /* On a GPU (gw_ctx_open with a CUDA device): the engine there holds
     * the weights and the KV cache of its one sequence; none of the CPU
     * buffers above but logits and the sequence table is allocated. */
    gw_cuda_engine *cu;
    char backend[192];       /* "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)" */
    char note[512];          /* why "auto" runs on the CPU, or "" */
    char error[512];         /* the CUDA call that failed in the last eval, or "" */
    uint64_t last_device_ns; /* time of the last eval on the device */
};

/* kv.c */
int gw__kv_init(gw_ctx *x, int kv_tokens, int max_seqs, int with_cache);
void gw__kv_free(gw_ctx *x);
/* Takes the blocks sequence seq needs to hold positions [0, end): 0, or
 * GW_ECONTEXT when end is past what it reserved. */
int gw__kv_grow(gw_ctx *x, int seq, int end);
/* The first element of kv head kvh at position pos of sequence seq in
 * layer l's keys or values (pos must be below what gw__kv_grow made room
 * for). A block holds each kv head's GW_KV_BLOCK rows of head_dim halves
 * side by side (head-major), so the keys one head's attention reads are
 * one contiguous run per block, which the prefetchers follow (token-major,
 * a head's rows were 128 bytes out of every 384 for SmolLM2). */
static inline size_t gw__kv_at(const gw_ctx *x, int l, int seq, int pos, int kvh)
{
    const gw_model_config *c = &x->m->cfg;
    size_t blk = (size_t)x->seqs[seq].table[pos / GW_KV_BLOCK];
    size_t head = ((size_t)l * (size_t)x->n_blocks + blk) * (size_t)c->n_head_kv + (size_t)kvh;
    return (head * GW_KV_BLOCK + (size_t)(pos % GW_KV_BLOCK)) * (size_t)c->head_dim;
}

/* forward.c: one pass over the items' rows on the CPU. */
void gw__forward(gw_ctx *x, const gw_batch_item *items, int n_items);

/* Where the CPU passes' time goes, for tests/bench/bench_step.c: while
 * prof (GW_PROF_N counters) is set, every pass adds the nanoseconds of
 * each operation (wall time of the calling thread, the wait for the pool's
 * other threads included) to prof[op]; and GW_PROF_WAIT the part of it the
 * calling thread spent waiting for them. NULL stops it. */
enum gw_prof_op {
    GW_PROF_EMBED,   /* embedding rows, RoPE angles */
    GW_PROF_NORM,    /* RMSNorms (attention, feed-forward, final) */
    GW_PROF_QUANT,   /* activations quantized to Q8 */
    GW_PROF_QKV,     /* Q, K, V products */
    GW_PROF_ROPE,    /* RoPE and the KV cache writes */
    GW_PROF_ATTN,    /* attention */
    GW_PROF_WO,      /* output projection */
    GW_PROF_GATE_UP, /* feed-forward gate and up products, SwiGLU, quantization */
    GW_PROF_DOWN,    /* feed-forward down product */
    GW_PROF_RESID,   /* residual adds */
    GW_PROF_LOGITS,  /* the output matrix */
    GW_PROF_WAIT,    /* of the above: the caller waiting for the pool */
    GW_PROF_N
};
void gw__ctx_prof(gw_ctx *x, uint64_t *prof);

#endif
