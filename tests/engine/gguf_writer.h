/* gguf_writer.h: test helper that builds GGUF files in memory: a byte-level
 * builder (for malformed files) and a writer of tiny random-weight llama
 * models in every weight type, quantized here from the same f32 weights by
 * quantizers written independently of the engine's code. */
#ifndef GWT_GGUF_WRITER_H
#define GWT_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gwt_buf {
    uint8_t *p;
    size_t len, cap;
} gwt_buf;

void gwt_free(gwt_buf *b);
void gwt_bytes(gwt_buf *b, const void *p, size_t n);
void gwt_u32(gwt_buf *b, uint32_t v);
void gwt_u64(gwt_buf *b, uint64_t v);
void gwt_f32(gwt_buf *b, float v);
void gwt_str(gwt_buf *b, const char *s); /* u64 length + bytes */
void gwt_pad(gwt_buf *b, size_t align);  /* zero bytes up to a multiple of align */
/* Key + type + value helpers. */
void gwt_kv_u32(gwt_buf *b, const char *key, uint32_t v);
void gwt_kv_f32(gwt_buf *b, const char *key, float v);
void gwt_kv_str(gwt_buf *b, const char *key, const char *v);
int gwt_save(const gwt_buf *b, const char *path);

/* Half and bfloat16 from float, rounding to nearest even. */
uint16_t gwt_f2h(float f);
uint16_t gwt_f2bf(float f);

/* Bytes of n elements of type (ggml ids), 0 when unsupported. */
size_t gwt_row_bytes(uint32_t type, int n);
/* Quantizes n floats (a multiple of the block size) into out. */
void gwt_quantize(uint32_t type, const float *x, int n, uint8_t *out);

/* A tiny llama model. */
typedef struct gwt_llama {
    int n_layer, dim, n_head, n_head_kv, ffn, vocab, n_ctx;
    float rope_base, eps;
    bool tied;
    uint64_t seed;
} gwt_llama;

/* Default test shape: 2 layers, dim 64, 4 heads, 2 kv heads, ffn 128,
 * vocab 96, context 64, rope base 10000, eps 1e-5, separate output. */
gwt_llama gwt_llama_default(void);

/* The f32 weights, PyTorch layout: a matrix [out][in] row-major. */
typedef struct gwt_weights {
    float *tok_embd; /* [vocab][dim] */
    float *out_norm; /* [dim] */
    float *output;   /* [vocab][dim], NULL when tied */
    struct gwt_layer {
        float *attn_norm, *ffn_norm;   /* [dim] */
        float *wq, *wk, *wv, *wo;      /* [dim][dim], [kv][dim], [kv][dim], [dim][dim] */
        float *w_gate, *w_up, *w_down; /* [ffn][dim], [ffn][dim], [dim][ffn] */
    } * l;
} gwt_weights;

void gwt_weights_random(const gwt_llama *c, gwt_weights *w);
void gwt_weights_free(const gwt_llama *c, gwt_weights *w);

/* Writes a GGUF v3 file: llama metadata, a minimal gpt2 tokenizer (tokens
 * "t0".."tN", types, no merges, bos 1, eos 2), norms in F32 and every
 * matrix (embedding and output included) in type. */
void gwt_write_llama(const gwt_llama *c, const gwt_weights *w, uint32_t type, gwt_buf *out);

#endif
