/* tokenizer.h: what the tokenizer's files share. Private to
 * worker/engine/: other directories see gw_tokenizer through gw_engine.h
 * only.
 *
 * The tokenizer is four files: tokenizer.c (UTF-8, the lookup tables, the
 * accessors), tokenizer_load.c (building it from GGUF metadata),
 * tokenizer_encode.c (the pre-tokenizer, BPE and SentencePiece encoding)
 * and tokenizer_decode.c (the streaming decoder). This header holds the
 * tokenizer's layout and the helpers more than one of them calls.
 */
#ifndef GW_TOKENIZER_INTERNAL_H
#define GW_TOKENIZER_INTERNAL_H

#include "gw_engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define MAX_PRE_REGEX 4

enum { KIND_BPE = 1, KIND_SPM = 2 };

/* One token. Texts live in the tokenizer's arena. */
struct tok {
    uint32_t text_off, text_len;   /* as stored in the file */
    uint32_t piece_off, piece_len; /* decoded bytes (what the user sees) */
    float score;                   /* SPM merge priority */
    uint8_t type;                  /* enum gw_token_type */
};

/* One BPE merge "A B", its rank is its index. */
struct merge {
    uint32_t a_off, a_len, b_off, b_len;
};

/* Open-addressing table of uint32 values (0 = empty slot, else value + 1),
 * keyed by whatever the caller hashes and compares; capacity a power of
 * two, at most half full, so probes stay short and always end. */
struct table {
    uint32_t *slot;
    uint32_t mask;
};

/* The GPT-2 byte <-> code point map (tokenizer.c builds it). */
struct bytemap {
    uint8_t enc[256][2]; /* UTF-8 of the code point of each byte */
    uint8_t enc_len[256];
    int16_t dec[0x144]; /* code point -> byte, -1 when unmapped */
};

/* The tokenizer (opaque in gw_engine.h). Built by tokenizer_load.c, read-only
 * afterwards. */
struct gw_tokenizer {
    int kind;
    char model[8];
    char pre[24];
    uint32_t n_vocab;
    struct tok *toks;
    char *arena;
    size_t arena_len;
    struct table by_text; /* token text -> id */

    struct merge *merges; /* BPE */
    uint32_t n_merges;
    struct table by_pair; /* merge (A, B) -> rank */

    pcre2_code *re[MAX_PRE_REGEX]; /* BPE pre-tokenizer, applied in order */
    int n_re;

    int32_t *special; /* control and user-defined ids, longest text first */
    uint32_t n_special;

    int32_t byte_tok[256]; /* SPM byte fallback: <0xXX>, else the 1-byte token, else unk, else -1 */

    int32_t bos, eos, unk, eot, eom, pad;
    bool add_bos, add_space_prefix;
    int32_t *eog;
    size_t n_eog;
    uint32_t max_piece; /* longest decoded piece */
    struct bytemap bm;  /* gpt2 byte <-> code point */
};

/* UTF-8 (tokenizer.c). */
int gw_tok_utf8_step(const uint8_t *s, size_t n);
size_t gw_tok_utf8_invalid_at(const uint8_t *s, size_t n);
uint32_t gw_tok_utf8_cp(const uint8_t *s, int k);
void gw_tok_bytemap_build(struct bytemap *m);

/* Lookup tables (tokenizer.c). */
int gw_tok_table_init(struct table *t, uint32_t n);
uint32_t gw_tok_text_probe(const gw_tokenizer *t, const char *s, size_t n);
uint32_t gw_tok_pair_probe(const gw_tokenizer *t, const char *a, size_t alen, const char *b,
                           size_t blen);

/* Grows *p (elements of size sz) to hold at least n (tokenizer.c). */
int gw_tok_grow(void **p, size_t *cap, size_t n, size_t sz);

static inline const char *tok_text(const gw_tokenizer *t, uint32_t id)
{
    return t->arena + t->toks[id].text_off;
}

static inline int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

#endif
