/* tokenizer.c: byte-level BPE ("gpt2") and SentencePiece ("llama")
 * tokenizers built from GGUF metadata, and the streaming UTF-8 decoder.
 *
 * The reference is llama.cpp's llama-vocab.cpp: same special-token
 * partition (longest first), same pre-tokenizer splits, same merge order
 * (BPE: lowest rank, leftmost on ties; SPM: highest score, leftmost on
 * ties), same decoding of each token type. tests/fixtures/ holds its output.
 *
 * Everything from the file is checked before use: array lengths against the
 * vocab size, token ids against it, text lengths against
 * GW_TOK_MAX_TOKEN_BYTES. Lookups (token text -> id, merge pair -> rank) go
 * through open-addressing tables hashed with XXH3, never a linear search.
 *
 * This file holds what every stage uses: UTF-8, the GPT-2 byte map, the
 * lookup tables, growable buffers, and the accessors. Loading is in
 * tokenizer_load.c, encoding in tokenizer_encode.c, decoding in
 * tokenizer_decode.c; tokenizer.h is what they share.
 */
#include "tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* ---------------------------------------------------------------------- */
/* UTF-8 */

/* Classifies the bytes at s[0, n), n >= 1: returns the length (1..4) of a
 * complete well-formed character; 0 when the n bytes are a well-formed but
 * incomplete prefix of one; -k when the first k bytes are a maximal
 * ill-formed subpart (to be replaced by one U+FFFD). Ranges from the Unicode
 * standard, table 3-7 (no overlongs, no surrogates, nothing above
 * U+10FFFF). */
int gw_tok_utf8_step(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c == 0xE0) {
        need = 3;
        lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
        need = 3;
    } else if (c == 0xED) {
        need = 3;
        hi = 0x9F;
    } else if (c == 0xF0) {
        need = 4;
        lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
        need = 4;
    } else if (c == 0xF4) {
        need = 4;
        hi = 0x8F;
    } else {
        return -1;
    }
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n)
            return 0;
        if (s[i] < lo || s[i] > hi)
            return -i;
        lo = 0x80;
        hi = 0xBF;
    }
    return need;
}

/* Offset of the first byte that is not part of well-formed UTF-8, or
 * (size_t)-1 when s[0, n) is valid. */
size_t gw_tok_utf8_invalid_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = gw_tok_utf8_step(s + i, n - i);
        if (k <= 0)
            return i;
        i += (size_t)k;
    }
    return (size_t)-1;
}

/* Decodes the code point of a well-formed sequence of length k. */
uint32_t gw_tok_utf8_cp(const uint8_t *s, int k)
{
    switch (k) {
    case 1:
        return s[0];
    case 2:
        return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

static size_t utf8_put(uint8_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    o[0] = (uint8_t)(0xE0 | (cp >> 12));
    o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
}

/* The GPT-2 byte <-> code point map: bytes 0x21-0x7E, 0xA1-0xAC and
 * 0xAE-0xFF stand for themselves; the other 68, in order, for U+0100 + n.
 * Every mapped code point is below U+0144, so it takes 1 or 2 UTF-8 bytes. */

static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

void gw_tok_bytemap_build(struct bytemap *m)
{
    unsigned n = 0;
    for (unsigned cp = 0; cp < 0x144; cp++)
        m->dec[cp] = -1;
    for (unsigned b = 0; b < 256; b++) {
        unsigned cp = byte_is_printable(b) ? b : 0x100 + n++;
        m->enc_len[b] = (uint8_t)utf8_put(m->enc[b], cp);
        m->dec[cp] = (int16_t)b;
    }
}

/* ---------------------------------------------------------------------- */
/* Hash tables */

static uint64_t hash_bytes(const char *s, size_t n)
{
    return XXH3_64bits(s, n);
}

static uint64_t hash_pair(const char *a, size_t alen, const char *b, size_t blen)
{
    return XXH3_64bits_withSeed(b, blen, XXH3_64bits(a, alen));
}

int gw_tok_table_init(struct table *t, uint32_t n)
{
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n)
        cap *= 2;
    t->slot = calloc((size_t)cap, sizeof *t->slot);
    if (!t->slot)
        return -ENOMEM;
    t->mask = (uint32_t)(cap - 1);
    return 0;
}

/* Slot index holding s, or of the empty slot where it would go. */
uint32_t gw_tok_text_probe(const gw_tokenizer *t, const char *s, size_t n)
{
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->by_text.mask;
    for (;;) {
        uint32_t v = t->by_text.slot[i];
        if (v == 0)
            return i;
        const struct tok *k = &t->toks[v - 1];
        if (k->text_len == n && memcmp(tok_text(t, v - 1), s, n) == 0)
            return i;
        i = (i + 1) & t->by_text.mask;
    }
}

int32_t gw_tokenizer_find(const gw_tokenizer *t, const char *s, size_t len)
{
    if (!t || (!s && len))
        return -1;
    if (!s)
        s = "";
    uint32_t v = t->by_text.slot[gw_tok_text_probe(t, s, len)];
    return v ? (int32_t)(v - 1) : -1;
}

uint32_t gw_tok_pair_probe(const gw_tokenizer *t, const char *a, size_t alen, const char *b,
                           size_t blen)
{
    uint32_t i = (uint32_t)hash_pair(a, alen, b, blen) & t->by_pair.mask;
    for (;;) {
        uint32_t v = t->by_pair.slot[i];
        if (v == 0)
            return i;
        const struct merge *m = &t->merges[v - 1];
        if (m->a_len == alen && m->b_len == blen && memcmp(t->arena + m->a_off, a, alen) == 0 &&
            memcmp(t->arena + m->b_off, b, blen) == 0)
            return i;
        i = (i + 1) & t->by_pair.mask;
    }
}

/* ---------------------------------------------------------------------- */
/* Growable buffers */

/* Grows *p (elements of size sz) to hold at least n. */
int gw_tok_grow(void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n)
        c *= 2;
    void *q = realloc(*p, c * sz);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Accessors */

uint32_t gw_tokenizer_n_vocab(const gw_tokenizer *t)
{
    return t->n_vocab;
}

const char *gw_tokenizer_model(const gw_tokenizer *t)
{
    return t->model;
}

const char *gw_tokenizer_pre(const gw_tokenizer *t)
{
    return t->pre;
}

int32_t gw_tokenizer_bos(const gw_tokenizer *t)
{
    return t->bos;
}

int32_t gw_tokenizer_eos(const gw_tokenizer *t)
{
    return t->eos;
}

bool gw_tokenizer_add_bos(const gw_tokenizer *t)
{
    return t->add_bos;
}

bool gw_tokenizer_is_eog(const gw_tokenizer *t, int32_t id)
{
    return bsearch(&id, t->eog, t->n_eog, sizeof *t->eog, cmp_i32) != NULL;
}

void gw_tokenizer_eog_ids(const gw_tokenizer *t, const int32_t **ids, size_t *n)
{
    *ids = t->eog;
    *n = t->n_eog;
}

int gw_tokenizer_token_text(const gw_tokenizer *t, int32_t id, const char **s, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return -ERANGE;
    *s = tok_text(t, (uint32_t)id);
    *len = t->toks[id].text_len;
    return 0;
}

int gw_tokenizer_token_type(const gw_tokenizer *t, int32_t id)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return -ERANGE;
    return t->toks[id].type;
}
