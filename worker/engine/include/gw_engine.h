/* gw_worker.h: the worker library (GGUF loader, CPU llama engine, sampler,
 * generation loop). One header for everything another directory may call.
 *
 * Conventions: functions return 0 or a negative errno. Functions that can
 * fail because of what an operator gave them (a model file, an option) take
 * a `char *err, size_t errlen` pair and write one line into it that names
 * the file and what is wrong; err may be NULL when errlen is 0.
 */
#ifndef GW_ENGINE_H
#define GW_ENGINE_H

#include "gw_util.h" /* gw_strerror, GW_ECONTEXT, gw_errf */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================
 * GGUF loader (gguf.c)
 *
 * The file is mapped read-only; every pointer handed out below points into
 * the mapping (or into memory owned by the gw_gguf) and lives until
 * gw_gguf_close(). Strings from the file are NOT NUL-terminated: they come
 * as (pointer, length) pairs.
 * ====================================================================== */

/* Metadata value types, numbered as in the GGUF file. */
enum gw_gguf_type {
    GW_GGUF_U8 = 0,
    GW_GGUF_I8 = 1,
    GW_GGUF_U16 = 2,
    GW_GGUF_I16 = 3,
    GW_GGUF_U32 = 4,
    GW_GGUF_I32 = 5,
    GW_GGUF_F32 = 6,
    GW_GGUF_BOOL = 7,
    GW_GGUF_STRING = 8,
    GW_GGUF_ARRAY = 9,
    GW_GGUF_U64 = 10,
    GW_GGUF_I64 = 11,
    GW_GGUF_F64 = 12,
};

/* ggml tensor types the loader knows the block size of (ids as in ggml).
 * The engine computes with F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q4_K and Q6_K; the others load (metadata is readable) but a model that
 * uses them is refused by gw_model_load(). */
enum gw_ggml_type {
    GW_T_F32 = 0,
    GW_T_F16 = 1,
    GW_T_Q4_0 = 2,
    GW_T_Q4_1 = 3,
    GW_T_Q5_0 = 6,
    GW_T_Q5_1 = 7,
    GW_T_Q8_0 = 8,
    GW_T_Q8_1 = 9,
    GW_T_Q2_K = 10,
    GW_T_Q3_K = 11,
    GW_T_Q4_K = 12,
    GW_T_Q5_K = 13,
    GW_T_Q6_K = 14,
    GW_T_Q8_K = 15,
    GW_T_I8 = 24,
    GW_T_I16 = 25,
    GW_T_I32 = 26,
    GW_T_I64 = 27,
    GW_T_F64 = 28,
    GW_T_BF16 = 30,
};

typedef struct gw_gguf gw_gguf;             /* an open file */
typedef struct gw_gguf_value gw_gguf_value; /* one metadata value */

/* One entry of the tensor table, validated at open: data[0, nbytes) lies
 * inside the file, offset is a multiple of the alignment, ne[0] is a
 * multiple of the type's block size and the element count does not
 * overflow. ne[i] for i >= n_dims is 1. */
typedef struct gw_gguf_tensor {
    const char *name; /* not NUL-terminated; name_len bytes */
    size_t name_len;
    uint32_t type;    /* enum gw_ggml_type */
    uint32_t n_dims;  /* 1..4 */
    uint64_t ne[4];   /* ne[0] varies fastest (elements per row) */
    uint64_t offset;  /* relative to the data section */
    uint64_t nbytes;  /* size of the data */
    const void *data; /* points into the mapping */
} gw_gguf_tensor;

/* Opens and validates path (GGUF versions 2 and 3). Every count, length
 * and offset is checked against the file size; nothing is allocated from a
 * size the file states before that check. On success *out owns the mapping.
 * Returns 0, -EINVAL for a malformed file (message in err), -ENOENT/-EACCES
 * etc. from open(2), -ENOMEM when memory runs out. */
int gw_gguf_open(const char *path, gw_gguf **out, char *err, size_t errlen);

/* Same as gw_gguf_open but for bytes already in memory (not copied: buf must
 * outlive the gw_gguf). name is used in error messages. Used by tests and
 * fuzz targets. */
int gw_gguf_open_buffer(const void *buf, size_t len, const char *name, gw_gguf **out, char *err,
                        size_t errlen);

/* Unmaps and frees; NULL is fine. */
void gw_gguf_close(gw_gguf *g);

/* The file name given at open, for messages. */
const char *gw_gguf_name(const gw_gguf *g);

/* GGUF version (2 or 3) and alignment of the data section. */
uint32_t gw_gguf_version(const gw_gguf *g);
uint64_t gw_gguf_alignment(const gw_gguf *g);

/* Metadata enumeration: count, and the key (not NUL-terminated) and value
 * of the i-th pair, i < gw_gguf_kv_count(). */
size_t gw_gguf_kv_count(const gw_gguf *g);
const gw_gguf_value *gw_gguf_kv_at(const gw_gguf *g, size_t i, const char **key, size_t *key_len);

/* The value of key (NUL-terminated), or NULL when absent. */
const gw_gguf_value *gw_gguf_find(const gw_gguf *g, const char *key);

/* Type of a value (enum gw_gguf_type). */
uint32_t gw_gguf_value_type(const gw_gguf_value *v);

/* Typed getters on a value. Each returns 0, or -EINVAL when the value has
 * another type, or -ERANGE when it does not fit.
 * - int: any of the 8 integer types (U8..I64); -ERANGE when a U64 value
 *   exceeds INT64_MAX.
 * - f32: F32 or F64 (F64 rounded).
 * - bool: BOOL.
 * - str: STRING; *s points into the mapping, *len bytes, no NUL. */
int gw_gguf_value_int(const gw_gguf_value *v, int64_t *out);
int gw_gguf_value_f32(const gw_gguf_value *v, float *out);
int gw_gguf_value_bool(const gw_gguf_value *v, bool *out);
int gw_gguf_value_str(const gw_gguf_value *v, const char **s, size_t *len);

/* Same, by key: -ENOENT when the key is absent. */
int gw_gguf_get_int(const gw_gguf *g, const char *key, int64_t *out);
int gw_gguf_get_f32(const gw_gguf *g, const char *key, float *out);
int gw_gguf_get_bool(const gw_gguf *g, const char *key, bool *out);
int gw_gguf_get_str(const gw_gguf *g, const char *key, const char **s, size_t *len);

/* Arrays. gw_gguf_arr_len/_type: element count and element type of an
 * ARRAY value (0 and UINT32_MAX for a non-array).
 * gw_gguf_arr_data: direct pointer to the elements of a numeric or BOOL
 * array, correctly aligned for the element type (so scores can be read as
 * const float *, token types as const int32_t *); NULL for arrays of
 * strings or arrays, and for a non-array.
 * gw_gguf_arr_str: the i-th string of a string array in O(1) (an offset
 * index is built at open); -EINVAL for a non-string array, -ERANGE for i
 * out of range.
 * gw_gguf_arr_arr: the i-th element of an array of arrays (nested arrays);
 * NULL when v is not an array of arrays or i is out of range. */
uint64_t gw_gguf_arr_len(const gw_gguf_value *v);
uint32_t gw_gguf_arr_type(const gw_gguf_value *v);
const void *gw_gguf_arr_data(const gw_gguf_value *v);
int gw_gguf_arr_str(const gw_gguf_value *v, uint64_t i, const char **s, size_t *len);
const gw_gguf_value *gw_gguf_arr_arr(const gw_gguf_value *v, uint64_t i);

/* Tensor table: count, i-th entry, lookup by (NUL-terminated) name. */
size_t gw_gguf_tensor_count(const gw_gguf *g);
const gw_gguf_tensor *gw_gguf_tensor_at(const gw_gguf *g, size_t i);
const gw_gguf_tensor *gw_gguf_find_tensor(const gw_gguf *g, const char *name);

/* Name of a ggml tensor type ("Q4_1"), or NULL for an id the loader does
 * not know. */
const char *gw_ggml_type_name(uint32_t type);

/* ======================================================================
 * Weight formats and kernels (quant.c, matvec.c)
 * ====================================================================== */

/* Bytes of a row of n elements of a weight type the engine computes with;
 * 0 for another type or when n is not a multiple of the block size. */
size_t gw_type_row_bytes(uint32_t type, uint64_t n);

/* Expands n elements (a multiple of the block size) of src, stored as type,
 * into dst. Returns 0, or -EINVAL for a type the engine does not read or a
 * bad n. Used for embedding rows and by tests; matrix products never call
 * it. */
int gw_dequantize_row(uint32_t type, const void *src, float *dst, uint64_t n);

/* IEEE half (raw bits) to float, and float to half (nearest even). */
float gw_fp16_to_f32(uint16_t h);
uint16_t gw_f32_to_fp16(float f);

/* SIMD level of the kernels: 0 portable C, 1 AVX2 (+FMA, F16C), 2 AVX-512
 * (F, BW, VL; its integer dot products by VNNI when the CPU has it).
 * gw_simd_set(level) asks for a level (level < 0: the default, the highest
 * the CPU has, capped by GW_SIMD=0|1|2 and forced to 0 by GW_NO_AVX2=1 in
 * the environment) and returns the level in force: a level the CPU lacks
 * is lowered to the highest it has. Call it between generations, not
 * during one. gw_simd_get() returns the level in force. */
int gw_simd_set(int level);
int gw_simd_get(void);

/* ======================================================================
 * llama model (model.c) and evaluation context
 * ====================================================================== */

/* Hyper-parameters read from the file. */
typedef struct gw_model_config {
    int n_layer;     /* llama.block_count */
    int dim;         /* llama.embedding_length */
    int n_head;      /* llama.attention.head_count */
    int n_head_kv;   /* llama.attention.head_count_kv (default n_head) */
    int head_dim;    /* dim / n_head */
    int ffn;         /* llama.feed_forward_length */
    int vocab;       /* rows of token_embd.weight */
    int n_ctx_train; /* llama.context_length */
    float rms_eps;   /* llama.attention.layer_norm_rms_epsilon */
    float rope_base; /* llama.rope.freq_base (default 10000) */
    bool tied;       /* output.weight absent: logits use token_embd.weight */
} gw_model_config;

typedef struct gw_model gw_model;

/* Opens path and checks it is a llama model the engine can run: the
 * architecture, every hyper-parameter, the presence, shape and type of every
 * tensor. Messages name the file and the key or tensor, e.g.
 * `m.gguf: tensor "blk.0.attn_q.weight": type Q2_K not supported (F32, F16,
 * BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K)`. Returns 0, -EINVAL
 * (message in err), or what gw_gguf_open returns. */
int gw_model_load(const char *path, gw_model **out, char *err, size_t errlen);

/* Same over an open gw_gguf, which the model takes over (closed by
 * gw_model_free, or here on failure). */
int gw_model_from_gguf(gw_gguf *g, gw_model **out, char *err, size_t errlen);

void gw_model_free(gw_model *m);
const gw_model_config *gw_model_cfg(const gw_model *m);
/* The underlying file, for the tokenizer's metadata. */
const gw_gguf *gw_model_gguf(const gw_model *m);

/* Writes the tensor type histogram, e.g. "F32 61, Q4_1 210, Q8_0 1", into
 * buf (always NUL-terminated). */
void gw_model_type_histogram(const gw_model *m, char *buf, size_t len);

/* An evaluation context: a KV cache of half-precision keys and values
 * shared by up to max_seqs sequences as a pool of GW_KV_BLOCK-position
 * blocks (paged: a sequence takes blocks as its positions fill, from what it
 * reserved when it was opened), scratch buffers and the thread pool. */
typedef struct gw_ctx gw_ctx;

#define GW_KV_BLOCK 32  /* positions per block of the KV pool */
#define GW_MAX_SEQS 256 /* sequences a context may hold */

typedef struct gw_ctx_opts {
    int n_ctx;          /* positions in the KV cache; 0: min(n_ctx_train, 4096) */
    int n_threads;      /* 0: number of online CPUs (CPU engine) */
    int n_batch;        /* prompt tokens per batched step; 0: 64 (CPU), 512 (CUDA) */
    const char *device; /* "cpu" (NULL), "cuda:N", or "auto": the first CUDA
                           device when one works, else the CPU (gw_ctx_note
                           then says why) */
    int auto_index;     /* "auto" on a node with several GPUs takes device
                           auto_index % count (a worker passes its index) */
    int max_seqs;       /* sequences open at once (1..GW_MAX_SEQS); 0: 1. A GPU context takes 1
                           (its kernels run one sequence) */
    int kv_tokens;      /* positions in the KV pool; 0: n_ctx * max_seqs.
                           Rounded up to whole blocks */
    int max_rows;       /* token rows one gw_ctx_eval_batch may carry; 0:
                           n_batch * max_seqs (at least n_batch) */
    const int *cpus;    /* CPU engine: NULL, or the CPU each of the n_threads
                           threads is pinned to (cpus[0]: the calling thread);
                           n_threads must then be given */
} gw_ctx_opts;

/* Returns 0, -EINVAL for bad options, -ENOMEM. The model must outlive the
 * context. The CPU engine only (o->device is ignored). */
int gw_ctx_new(const gw_model *m, const gw_ctx_opts *o, gw_ctx **out);

/* Same, on o->device. Errors are written into err: `device "gpu": expected
 * "auto", "cpu" or "cuda:N"` (-EINVAL), and the CUDA engine's (gw_cuda.h):
 * -ENODEV `cuda:0: cudaGetDeviceCount: no CUDA-capable device is detected`
 * or `cuda:0: built without CUDA (...)`, -ENOMEM out of device memory,
 * -ENOTSUP a weight type it does not compute with, -EIO. "auto" never
 * fails for want of a device. */
int gw_ctx_open(const gw_model *m, const gw_ctx_opts *o, gw_ctx **out, char *err, size_t errlen);

/* Where the forward pass runs: "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)". */
const char *gw_ctx_backend(const gw_ctx *c);
/* Nonzero when it runs on a GPU. */
int gw_ctx_on_gpu(const gw_ctx *c);
/* Why "auto" chose the CPU (a line for the log), or "". */
const char *gw_ctx_note(const gw_ctx *c);
/* The last failed CUDA call of an eval that returned -EIO, or "". */
const char *gw_ctx_error(const gw_ctx *c);
/* CUDA only: replay the decode step as a CUDA graph (on, the default) or
 * launch its kernels one by one (for benchmarks). */
void gw_ctx_use_graph(gw_ctx *c, int on);
/* Time the last gw_ctx_eval* call took on its device: CUDA events on a
 * GPU, the pass's wall time on the CPU. What budgets charge. */
uint64_t gw_ctx_device_ns(const gw_ctx *c);
void gw_ctx_free(gw_ctx *c);
int gw_ctx_n_ctx(const gw_ctx *c);
int gw_ctx_n_threads(const gw_ctx *c);
const gw_model *gw_ctx_model(const gw_ctx *c);

/* Runs tokens[0, n) at positions pos, pos+1, ... through the model (in
 * batches of n_batch; each weight row is read once per batch) and stores
 * them in the KV cache. On return *logits (when not NULL) points at the
 * vocab logits after the last token, valid until the next call. Returns 0,
 * -EINVAL (token id out of range, n == 0), GW_ECONTEXT (pos + n > n_ctx). */
int gw_ctx_eval(gw_ctx *c, const int32_t *tokens, size_t n, int pos, float **logits);

/* Same, but only the greedy id after the last token (highest logit, lowest
 * id on ties: what a sampler with temperature <= 0 picks) is produced; on a
 * GPU the logits stay on the device. -EIO: a CUDA error (gw_ctx_error). */
int gw_ctx_eval_greedy(gw_ctx *c, const int32_t *tokens, size_t n, int pos, int32_t *token);

/* ---- sequences and batched steps ----
 * gw_ctx_eval above runs one sequence of its own; these run several. A
 * sequence is opened for the positions it may grow to; one pass
 * (gw_ctx_eval_batch) carries tokens of several sequences, each weight row
 * read once for all of them, attention per sequence over its own blocks.
 * What a pass computes for an item is bit-identical to what the same item
 * gives alone (each row is normed, quantized and multiplied on its own; the
 * attention kernels are chosen per item, by its token count, as a solo
 * pass chooses them). */

/* Opens a sequence that may grow to n_tokens positions, reserving that
 * many (rounded up to blocks) from the pool. Returns its id (>= 0);
 * GW_ECONTEXT when n_tokens exceeds n_ctx or the whole pool (it can never
 * fit); -EAGAIN when the pool's unreserved blocks or the sequence table
 * cannot take it now (it fits once others close); -EINVAL. */
int gw_seq_open(gw_ctx *c, int n_tokens);
/* Closes the sequence: its blocks and its reservation go back to the pool.
 * A closed or out-of-range id is ignored. */
void gw_seq_close(gw_ctx *c, int seq);
/* The pool: positions in all, positions not reserved, sequences open. */
int gw_ctx_kv_tokens(const gw_ctx *c);
int gw_ctx_kv_unreserved(const gw_ctx *c);
int gw_ctx_max_seqs(const gw_ctx *c);
int gw_ctx_max_rows(const gw_ctx *c);

typedef struct gw_batch_item {
    int seq;               /* an open sequence, at most once per pass */
    const int32_t *tokens; /* n tokens at positions pos, pos + 1, ... */
    int n;                 /* >= 1 */
    int pos;               /* the sequence's positions below pos are cached */
    int logits;            /* nonzero: the logits after its last token */
} gw_batch_item;

/* One forward pass over every item (their tokens together at most
 * max_rows). Returns 0; -EINVAL (a bad item, a token id out of range, a
 * sequence twice, too many rows); GW_ECONTEXT (an item past what its
 * sequence reserved); -EIO (CUDA; gw_ctx_error). gw_ctx_device_ns gives the
 * pass's time. */
int gw_ctx_eval_batch(gw_ctx *c, const gw_batch_item *items, int n_items);
/* The logits (vocab floats) after item i of the last gw_ctx_eval_batch, or
 * NULL when it did not ask for them. Valid until the next eval. */
float *gw_ctx_batch_logits(gw_ctx *c, int i);

/* ======================================================================
 * Sampling (sampler.c)
 * ====================================================================== */

typedef struct gw_sampler_params {
    float temperature; /* <= 0: greedy (argmax, lowest id on ties) */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1 or <= 0: off */
    uint64_t seed;     /* same seed, same logits: same choices */
} gw_sampler_params;

typedef struct gw_sampler gw_sampler;

/* vocab: number of logits each call gets. Returns 0, -EINVAL, -ENOMEM. */
int gw_sampler_new(const gw_sampler_params *p, int vocab, gw_sampler **out);
void gw_sampler_free(gw_sampler *s);
/* Picks a token from logits[0, vocab) (the array is modified: scaled and
 * turned into probabilities). */
int32_t gw_sampler_sample(gw_sampler *s, float *logits);
/* The top-1 probability of the distribution the last gw_sampler_sample
 * drew from (after temperature, before top-k/top-p): what the collapsed
 * sampling detector averages. */
float gw_sampler_top1(const gw_sampler *s);

/* ======================================================================
 * Repetition statistic (repeat.c)
 *
 * After each token: the period p (1 <= p <= max_period) of a cycle that
 * the most recent tokens repeat, run = how many of the most recent tokens
 * equal the token p before them (the part after the first cycle), and
 * count = (run + p) / p; "a b a b a b" gives p = 2, run 4, count 3. A
 * cycle is seen once GW_REPEAT_NGRAM of its tokens have repeated: a rolling
 * hash of the last GW_REPEAT_NGRAM tokens is looked up in a small table of
 * the positions where each recent n-gram ended, so the period offered is
 * the distance to the n-gram's latest earlier occurrence (the shortest),
 * checked token by token against a ring of recent tokens. O(1) per token:
 * one comparison while a cycle holds, one lookup and at most
 * GW_REPEAT_NGRAM + GW_REPEAT_BACK comparisons when none does. With no
 * repeated cycle, period, run and count are 0.
 *
 * The near statistic is the same over a stream where every maximal run of
 * digit tokens (gw_repeat_digit_map) stands as one symbol: "94. Texas"
 * then "95. Texas" is a cycle there. Its run counts every token, digits
 * included; its count counts cycles (symbols), so that "1, 2, ... 100, "
 * is 100 cycles however many digit tokens the numbers took.
 * ====================================================================== */

#define GW_REPEAT_MAX_PERIOD 256
#define GW_REPEAT_NGRAM 6    /* tokens that must repeat before a cycle is offered */
#define GW_REPEAT_BACK 32    /* how far a newly offered cycle's run is traced back */
#define GW_REPEAT_RING 512   /* recent tokens kept: >= max period + GW_REPEAT_BACK */
#define GW_REPEAT_TABLE 1024 /* n-gram table slots (power of two) */

typedef struct gw_repeat {
    int max_period;               /* P */
    uint64_t n;                   /* tokens seen */
    uint64_t hash;                /* rolling hash of the last GW_REPEAT_NGRAM tokens */
    int32_t ring[GW_REPEAT_RING]; /* token t at t % GW_REPEAT_RING */
    struct {
        uint64_t hash; /* the n-gram's hash */
        uint64_t end;  /* 1 + the index of its last token; 0: empty */
    } table[GW_REPEAT_TABLE];
    int period; /* result after the last token */
    uint64_t run;
    uint64_t srun;  /* run in symbols: without the tokens gw_repeat_extend folded in */
    uint64_t count; /* (srun + period) / period: cycles, whatever their digits */
} gw_repeat;

/* max_period in 1..GW_REPEAT_MAX_PERIOD; returns -EINVAL otherwise. */
int gw_repeat_init(gw_repeat *r, int max_period);
void gw_repeat_push(gw_repeat *r, int32_t token);
/* A token that the near stream folds into the previous symbol (a digit
 * after a digit): it extends the current run without being a symbol. */
void gw_repeat_extend(gw_repeat *r);

/* The vocabulary's digit tokens: (*out)[id] = 1 when the token's text is
 * ASCII digits, with at most one leading space (GPT-2's "Ġ" counts).
 * *out is malloc'd, vocab bytes. */
struct gw_tokenizer;
int gw_repeat_digit_map(const struct gw_tokenizer *t, int vocab, uint8_t **out);

/* All of a sequence's detectors: the exact and near statistics and the
 * sampler's recent top-1 probabilities (temperature > 0 only). */
#define GW_TOP1_WINDOW 32
typedef struct gw_loopwatch {
    gw_repeat exact, near;
    const uint8_t *digits;        /* gw_repeat_digit_map, NULL: near off */
    int32_t prev_digit;           /* the last token was a digit */
    uint8_t top1[GW_TOP1_WINDOW]; /* percent, at i % GW_TOP1_WINDOW */
    uint32_t top1_sum, n_top1;
} gw_loopwatch;

int gw_loopwatch_init(gw_loopwatch *w, int max_period, const uint8_t *digits);
/* After each token; top1 is the sampled distribution's top-1 probability,
 * negative for a greedy pick. */
void gw_loopwatch_push(gw_loopwatch *w, int32_t token, float top1);
/* What the detectors say after a token: the exact statistic, or the near
 * one (near = 1) when its run is the longer; top1 = 1 + the window's mean
 * top-1 probability in percent once it holds GW_TOP1_WINDOW samples, else
 * 0. The worker publishes it as one word (gw_wd_rep_word, gw_common.h). */
typedef struct gw_loop_stat {
    int period;
    uint64_t run, count;
    int near;
    int top1;
} gw_loop_stat;
void gw_loopwatch_stat(const gw_loopwatch *w, gw_loop_stat *out);

/* ======================================================================
 * Generation loop (generate.c)
 * ====================================================================== */

/* Index in text[0, len) of the first occurrence of any of the stop
 * sequences, or -1. Empty stop strings are ignored. */
long gw_stop_find(const char *text, size_t len, const char *const *stops, size_t n_stops);

enum gw_finish {
    GW_FINISH_LENGTH = 1, /* max_tokens reached */
    GW_FINISH_EOG,        /* an end-of-generation token (not counted, not shown) */
    GW_FINISH_STOP,       /* a stop sequence appeared in the text (not shown) */
    GW_FINISH_CANCEL,     /* the cancel hook fired */
    GW_FINISH_CONTEXT,    /* the KV cache is full */
};

/* What the progress hook sees after each generated token. */
typedef struct gw_gen_step {
    uint64_t n_tokens; /* tokens generated so far, this one included */
    int32_t token;
    uint64_t step_ns;   /* CLOCK_MONOTONIC wall time of this step (forward + sampling) */
    uint64_t device_ns; /* device time of the forward passes behind this token
                           (the first token's includes the prompt) */
    int rep_period;     /* exact repetition statistic after this token */
    uint64_t rep_count;
    gw_loop_stat loop; /* all detectors after this token (gw_loopwatch_stat) */
} gw_gen_step;

typedef struct gw_gen_params {
    int max_tokens; /* > 0 */
    gw_sampler_params sampling;
    const int32_t *eog_ids; /* end-of-generation token ids */
    size_t n_eog;
    const char *const *stops; /* stop sequences, matched on the text */
    size_t n_stops;
    int repeat_max_period;    /* 0: GW_REPEAT_MAX_PERIOD */
    const uint8_t *digit_ids; /* gw_repeat_digit_map, NULL: no near statistic */

    /* Cancel: checked before each token (so a flag set from on_step after
     * token k stops the generation with exactly k tokens); either or both.
     * cancel_flag is read with memory_order_relaxed (a flag, it orders
     * nothing); cancel_cb returns nonzero to stop. */
    const _Atomic int *cancel_flag; /* nonzero: stop */
    int (*cancel_cb)(void *user);
    void *user;

    /* Progress, after every generated token. */
    void (*on_step)(void *user, const gw_gen_step *st);

    /* Text: piece(token) writes the token's text (at most cap bytes) and
     * returns its length, or < 0. When set, text is accumulated for stop
     * sequences and on_text receives it; text that could still be the
     * start of a stop sequence is held back until it cannot. */
    int (*piece)(void *user, int32_t token, char *buf, size_t cap);
    void (*on_text)(void *user, const char *text, size_t len);

    /* Continuing a generation another process began (gw_gen_new only): its
     * first n_forced tokens are these instead of the sampled ones (the
     * sampler still draws, so a seeded one continues as it would have).
     * They go through piece and on_text as any token (the caller skips the
     * text it had published) but not on_step. */
    const int32_t *forced;
    size_t n_forced;
} gw_gen_params;

typedef struct gw_gen_result {
    uint64_t n_prompt;
    uint64_t n_tokens;  /* generated tokens (an end-of-generation token not counted) */
    int finish;         /* enum gw_finish */
    uint64_t prompt_ns; /* prefill wall time */
    uint64_t decode_ns; /* sum of step_ns */
    uint64_t device_ns; /* device time of every forward pass, prompt included */
} gw_gen_result;

/* Feeds the prompt from position 0 (the context's cache is overwritten),
 * then samples up to max_tokens tokens, calling the hooks. out (capacity
 * out_cap, may be NULL) receives the generated ids. Returns 0 (the reason
 * in res->finish), -EINVAL, GW_ECONTEXT (prompt longer than the context),
 * -ENOMEM. */
int gw_generate(gw_ctx *c, const int32_t *prompt, size_t n_prompt, const gw_gen_params *p,
                int32_t *out, size_t out_cap, gw_gen_result *res);

/* ---- generations stepped together (continuous batching) ----
 * A gw_gen is one generation: its sequence in the context, sampler, text
 * and hooks, as gw_generate runs them. gw_batch_step advances every
 * unfinished generation it is given by one forward pass: each decoding
 * generation by one token, each prefilling one by its next chunk of n_batch
 * prompt tokens while the step's token budget lasts. A generation joins at
 * the next step after gw_gen_new and leaves at the end of the step that
 * finishes it (its sequence closed at once). Its ids equal those of
 * gw_generate alone with the same parameters (greedy: exactly). */
typedef struct gw_gen gw_gen;

/* Opens a sequence for n_prompt + max_tokens positions (at most n_ctx).
 * Returns 0; -EAGAIN when the KV pool cannot place it now (it can once
 * other generations end); GW_ECONTEXT when the prompt is longer than the
 * context or it could never be placed; -EINVAL; -ENOMEM. The hooks of p
 * are called with p->user; out (may be NULL) gets the ids. */
int gw_gen_new(gw_ctx *c, const int32_t *prompt, size_t n_prompt, const gw_gen_params *p,
               int32_t *out, size_t out_cap, gw_gen **g);
void gw_gen_free(gw_gen *g);
int gw_gen_done(const gw_gen *g);
/* How it ended (valid once done) and its counts so far. */
const gw_gen_result *gw_gen_res(const gw_gen *g);
/* 0, or -ENOMEM when it ended for want of memory. */
int gw_gen_error(const gw_gen *g);
/* Its share of the device time of every pass it took part in, in us. */
uint64_t gw_gen_device_us(const gw_gen *g);
/* Prompt tokens evaluated so far. */
size_t gw_gen_prompt_fed(const gw_gen *g);

/* One step. Keep one gw_step_info per context across steps, zeroed at
 * first: carry_ns holds the sub-microsecond rest of the passes' time, so
 * the shares of all steps add up to the passes' total to the microsecond. */
typedef struct gw_step_info {
    int n_gens;         /* generations in the pass */
    int rows;           /* token rows of the pass */
    uint64_t pass_ns;   /* its measured cost: CUDA events, or the CPU's wall
                           time from the step's start to the last sample */
    uint64_t device_us; /* what the step split among them */
    uint64_t carry_ns;
} gw_step_info;

/* gens[0, n) in the order prompt chunks should be served (decoding
 * generations always take part). budget: rows for the pass (at least one
 * item is taken). Returns 0, or what gw_ctx_eval_batch returned (the
 * generations are then as before the step). */
int gw_batch_step(gw_ctx *c, gw_gen *const *gens, int n, int budget, gw_step_info *info);

/* The cost model of the split: a token row's multiply-adds (every matrix
 * of every layer, attention over pos + 1 positions, the output matrix when
 * its logits are computed). */
uint64_t gw_row_cost(const gw_model_config *c, int pos, int logits);
/* Splits total among n parts in proportion to units (equal parts when all
 * are 0): floor of each proportional share, then the rest one by one to the
 * largest remainders (the earlier on a tie). The parts add up to total
 * exactly. */
void gw_share_split(uint64_t total, const uint64_t *units, int n, uint64_t *out);

/* Every value returned by this library reads as text through gw_strerror
 * (gw_util.h), and its error lines are written with gw_errf. */

/* ---- tokenizer ---- */
/* ======================================================================
 * Tokenizer (tokenizer*.c) and chat templates (chat.c)
 *
 * Built from a file's tokenizer.* metadata: "gpt2" byte-level BPE (with the
 * pre-tokenizer named by tokenizer.ggml.pre, run by PCRE2) and "llama"
 * SentencePiece (scores, <0xXX> byte fallback). Encoding and decoding give
 * the same ids and bytes as llama.cpp (tests/fixtures/ holds its output).
 * A gw_tokenizer copies what it needs: the gw_gguf may be closed after
 * gw_tokenizer_load(). It is immutable after load, so threads may share it.
 * ====================================================================== */

typedef struct gw_tokenizer gw_tokenizer;

/* Token types, numbered as in tokenizer.ggml.token_type. */
enum gw_token_type {
    GW_TOKEN_UNDEFINED = 0,
    GW_TOKEN_NORMAL = 1,
    GW_TOKEN_UNKNOWN = 2,
    GW_TOKEN_CONTROL = 3,      /* <|im_start|>, <s>: matched in raw text when parsing specials */
    GW_TOKEN_USER_DEFINED = 4, /* always matched in raw text, decoded as written */
    GW_TOKEN_UNUSED = 5,
    GW_TOKEN_BYTE = 6, /* SentencePiece <0xXX> */
};

/* Longest token text accepted from a file, and the largest vocab. */
#define GW_TOK_MAX_TOKEN_BYTES 65536
#define GW_TOK_MAX_VOCAB (1u << 24)
/* Longest text gw_tokenizer_encode() takes. */
#define GW_TOK_MAX_TEXT_BYTES (64u << 20)

/* Builds the tokenizer of an open file. Checks every array length against
 * the vocab size and every token id the file names (bos, eos, unk, eot,
 * eom, pad) against it. Errors name the file and the key, e.g.
 * `m.gguf: tokenizer.ggml.pre "qwen2" is not supported (supported: smollm,
 * gpt2, starcoder, refact, command-r, codeshell, exaone, minerva)`.
 * Returns 0, -EINVAL (message in err), -ENOMEM. */
int gw_tokenizer_load(const gw_gguf *g, gw_tokenizer **out, char *err, size_t errlen);

/* Frees; NULL is fine. */
void gw_tokenizer_free(gw_tokenizer *t);

/* Number of tokens. */
uint32_t gw_tokenizer_n_vocab(const gw_tokenizer *t);

/* "gpt2" or "llama" (tokenizer.ggml.model), and the pre-tokenizer name
 * ("" for llama). */
const char *gw_tokenizer_model(const gw_tokenizer *t);
const char *gw_tokenizer_pre(const gw_tokenizer *t);

/* Special ids from the file, -1 when the file names none. */
int32_t gw_tokenizer_bos(const gw_tokenizer *t);
int32_t gw_tokenizer_eos(const gw_tokenizer *t);

/* tokenizer.ggml.add_bos_token (default: true for llama, false for gpt2). */
bool gw_tokenizer_add_bos(const gw_tokenizer *t);

/* End-of-generation tokens: eos, eot, eom and the control tokens whose text
 * marks the end of a turn (<|im_end|>, <|endoftext|>, <|eot_id|>, ... as
 * llama.cpp lists them). gw_tokenizer_eog_ids: sorted, owned by t. */
bool gw_tokenizer_is_eog(const gw_tokenizer *t, int32_t id);
void gw_tokenizer_eog_ids(const gw_tokenizer *t, const int32_t **ids, size_t *n);

/* The token's text as stored in the file (byte-mapped for gpt2, with U+2581
 * for llama) and its type. -ERANGE for an id out of range. */
int gw_tokenizer_token_text(const gw_tokenizer *t, int32_t id, const char **s, size_t *len);
int gw_tokenizer_token_type(const gw_tokenizer *t, int32_t id);

/* The id of the token whose stored text is exactly s[0, len), or -1. */
int32_t gw_tokenizer_find(const gw_tokenizer *t, const char *s, size_t len);

/* Flags of gw_tokenizer_encode. */
#define GW_TOK_PARSE_SPECIAL 1u /* control tokens written in the text become their id */
#define GW_TOK_ADD_BOS 2u       /* prepend BOS when the model asks for it (add_bos_token) */

/* Encodes text[0, len) (UTF-8). User-defined tokens are always matched in
 * the raw text, control tokens only with GW_TOK_PARSE_SPECIAL; longest
 * first, then left to right, exactly as llama.cpp. A byte the vocab has
 * no token for is dropped (gpt2, as llama.cpp) or becomes <0xXX>, its
 * one-byte token, or unk (llama). On success *ids is a malloc'd array of
 * *n ids (the caller frees it; NULL when *n is 0). Returns 0; -EILSEQ for
 * text that is not UTF-8, message `tokenizer: text is not valid UTF-8
 * (byte 0xff at offset 5)`; -E2BIG beyond GW_TOK_MAX_TEXT_BYTES; -EINVAL
 * when a llama byte has none of those tokens; -ENOMEM. */
int gw_tokenizer_encode(const gw_tokenizer *t, const char *text, size_t len, unsigned flags,
                        int32_t **ids, size_t *n, char *err, size_t errlen);

/* Flags of the decoder. */
#define GW_TOK_DEC_SPECIAL 1u /* control/unknown tokens show their text (else nothing) */
#define GW_TOK_DEC_LSTRIP                                                                          \
    2u /* drop one leading space of the first token (llama models                                  \
          that add a space prefix; no effect for gpt2) */

/* Streaming decoder: takes ids one by one and hands out only complete UTF-8
 * characters. A trailing incomplete sequence is held back until the next
 * token completes it; a byte that cannot start or continue a character
 * becomes U+FFFD (one per maximal ill-formed subpart, as Python and ICU
 * replace). The fields are private. */
typedef struct gw_tok_decoder {
    const gw_tokenizer *tok;
    unsigned flags;
    bool started;    /* a token was pushed (GW_TOK_DEC_LSTRIP) */
    uint8_t tail[4]; /* held-back prefix of a character, n_tail < 4 */
    size_t n_tail;
    char *in;  /* tail + piece, capacity max_piece + 4 */
    char *out; /* the chunk handed out, capacity 3 * (max_piece + 4) */
} gw_tok_decoder;

/* Returns 0 or -ENOMEM. */
int gw_tok_decoder_init(gw_tok_decoder *d, const gw_tokenizer *t, unsigned flags);
void gw_tok_decoder_free(gw_tok_decoder *d);

/* Adds token id. *chunk and *len: the complete characters now available (may be
 * empty), valid until the next call on d. Returns 0, or -ERANGE with
 * `tokenizer: token id 49152 is out of range (vocab has 49152 tokens)`
 * (d is unchanged). */
int gw_tok_decoder_push(gw_tok_decoder *d, int32_t id, const char **chunk, size_t *len, char *err,
                        size_t errlen);

/* Ends the stream: what is held back comes out as U+FFFD. The decoder is
 * ready for a new stream afterwards. */
void gw_tok_decoder_flush(gw_tok_decoder *d, const char **chunk, size_t *len);

/* Whole-sequence decode through a decoder (flushed at the end). *out is
 * malloc'd and NUL-terminated, *len bytes without the NUL. Returns 0,
 * -ERANGE (message as gw_tok_decoder_push), -ENOMEM. */
int gw_tokenizer_decode(const gw_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *len, char *err, size_t errlen);

/* Chat templates. The family is detected from tokenizer.chat_template:
 * ChatML when it contains "<|im_start|>", llama-2 when it contains "[INST]".
 * ChatML: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, the
 * template's default system message (when it has one) before a conversation
 * that does not start with one, then `<|im_start|>assistant\n`.
 * llama-2 (as the Hugging Face Llama-2 template): `[INST] <<SYS>>\n{system}
 * \n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]`,
 * contents stripped of surrounding whitespace, roles alternating user /
 * assistant after an optional system message and ending with user; the
 * first BOS is not written (encode with GW_TOK_ADD_BOS). */
enum gw_chat_kind {
    GW_CHAT_CHATML = 1,
    GW_CHAT_LLAMA2 = 2,
};

typedef struct gw_chat_template {
    int kind;             /* enum gw_chat_kind */
    char *default_system; /* ChatML: the template's default system message, or NULL */
    size_t default_system_len;
    char bos[64], eos[64]; /* llama-2: BOS/EOS texts (from the tokenizer, or <s> </s>) */
} gw_chat_template;

/* One message; strings need no NUL. role: "system", "user" or "assistant". */
typedef struct gw_chat_msg {
    const char *role;
    size_t role_len;
    const char *content;
    size_t content_len;
} gw_chat_msg;

/* Detects the family of tmpl[0, len). tok (may be NULL) gives llama-2's
 * BOS/EOS texts. Returns 0, -EINVAL with `chat: unsupported chat template
 * "{% for m in messages %}..." (supported: ChatML, llama-2)` naming its
 * first 60 characters, -ENOMEM. */
int gw_chat_template_init(gw_chat_template *ct, const char *tmpl, size_t len,
                          const gw_tokenizer *tok, char *err, size_t errlen);

/* Same, from the file's tokenizer.chat_template (-ENOENT when absent). */
int gw_chat_template_from_gguf(gw_chat_template *ct, const gw_gguf *g, const gw_tokenizer *tok,
                               char *err, size_t errlen);

void gw_chat_template_free(gw_chat_template *ct);

/* Renders msgs[0, n) and the start of the assistant's reply. *out is
 * malloc'd and NUL-terminated, *len bytes without the NUL. Returns 0,
 * -EINVAL (no messages, unknown role, llama-2 order broken; the message
 * names the message index), -ENOMEM. */
int gw_chat_format(const gw_chat_template *ct, const gw_chat_msg *msgs, size_t n, char **out,
                   size_t *len, char *err, size_t errlen);
/* ---- end tokenizer ---- */

#ifdef __cplusplus
}
#endif
#endif /* GW_ENGINE_H */
