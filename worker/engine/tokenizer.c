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
 */
#include "gw_engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

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

/* The GPT-2 byte <-> code point map: bytes 0x21-0x7E, 0xA1-0xAC and
 * 0xAE-0xFF stand for themselves; the other 68, in order, for U+0100 + n.
 * Every mapped code point is below U+0144, so it takes 1 or 2 UTF-8 bytes. */

static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

struct bytemap {
    uint8_t enc[256][2]; /* UTF-8 of the code point of each byte */
    uint8_t enc_len[256];
    int16_t dec[0x144]; /* code point -> byte, -1 when unmapped */
};

static size_t utf8_put(uint8_t *o, uint32_t cp);

static void bytemap_build(struct bytemap *m)
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

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------- */
/* UTF-8 */

/* Classifies the bytes at s[0, n), n >= 1: returns the length (1..4) of a
 * complete well-formed character; 0 when the n bytes are a well-formed but
 * incomplete prefix of one; -k when the first k bytes are a maximal
 * ill-formed subpart (to be replaced by one U+FFFD). Ranges from the Unicode
 * standard, table 3-7 (no overlongs, no surrogates, nothing above
 * U+10FFFF). */
static int utf8_step(const uint8_t *s, size_t n)
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
static size_t utf8_invalid_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_step(s + i, n - i);
        if (k <= 0)
            return i;
        i += (size_t)k;
    }
    return (size_t)-1;
}

/* Decodes the code point of a well-formed sequence of length k. */
static uint32_t utf8_cp(const uint8_t *s, int k)
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

static int table_init(struct table *t, uint32_t n)
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

static const char *tok_text(const gw_tokenizer *t, uint32_t id)
{
    return t->arena + t->toks[id].text_off;
}

/* Slot index holding s, or of the empty slot where it would go. */
static uint32_t text_probe(const gw_tokenizer *t, const char *s, size_t n)
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
    uint32_t v = t->by_text.slot[text_probe(t, s, len)];
    return v ? (int32_t)(v - 1) : -1;
}

static uint32_t pair_probe(const gw_tokenizer *t, const char *a, size_t alen, const char *b,
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

/* Rank of the merge (a, b), or UINT32_MAX when there is none. */
static uint32_t merge_rank(const gw_tokenizer *t, const char *a, size_t alen, const char *b,
                           size_t blen)
{
    uint32_t v = t->by_pair.slot[pair_probe(t, a, alen, b, blen)];
    return v ? v - 1 : UINT32_MAX;
}

/* ---------------------------------------------------------------------- */
/* Growable buffers */

struct ids {
    int32_t *v;
    size_t n, cap;
};

static int ids_push(struct ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

/* Grows *p (elements of size sz) to hold at least n. */
static int grow(void **p, size_t *cap, size_t n, size_t sz)
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
/* Merge machinery shared by BPE and SPM: symbols in a doubly linked list
 * over a byte buffer, candidate pairs in a binary max-heap. A candidate is
 * stale when either side was merged since it was queued (the sizes no
 * longer add up), as in llama.cpp. */

struct sym {
    uint32_t start, len; /* bytes in the work buffer; len 0: merged away */
    int32_t prev, next;
};

struct cand {
    double prio;   /* higher first: SPM score, BPE -rank */
    uint32_t left; /* symbol index; lower first on equal prio */
    uint32_t right;
    uint32_t size; /* left.len + right.len when queued */
};

struct work {
    char *buf; /* the piece being merged */
    size_t buf_cap;
    struct sym *sym;
    size_t sym_cap;
    struct cand *heap;
    size_t heap_n, heap_cap;
};

static bool cand_before(const struct cand *a, const struct cand *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(struct work *w, struct cand c)
{
    int rc = grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap);
    if (rc)
        return rc;
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &w->heap[p]))
            break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
    return 0;
}

static struct cand heap_pop(struct work *w)
{
    struct cand top = w->heap[0];
    struct cand last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const struct cand *bc = &last;
        if (l < n && cand_before(&w->heap[l], bc)) {
            best = l;
            bc = &w->heap[l];
        }
        if (r < n && cand_before(&w->heap[r], bc))
            best = r;
        if (best == i)
            break;
        w->heap[i] = w->heap[best];
        i = best;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

/* Queues the pair (l, r) if the tokenizer merges it. */
static int try_pair(const gw_tokenizer *t, struct work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 0;
    const struct sym *a = &w->sym[l], *b = &w->sym[r];
    const char *as = w->buf + a->start, *bs = w->buf + b->start;
    struct cand c = {.left = (uint32_t)l, .right = (uint32_t)r, .size = a->len + b->len};
    if (t->kind == KIND_BPE) {
        uint32_t rank = merge_rank(t, as, a->len, bs, b->len);
        if (rank == UINT32_MAX)
            return 0;
        c.prio = -(double)rank;
    } else {
        /* SPM: the concatenation must be a token; the symbols are
         * adjacent in buf, so it is as[0, a.len + b.len). */
        int32_t id = gw_tokenizer_find(t, as, c.size);
        if (id < 0)
            return 0;
        c.prio = t->toks[id].score;
    }
    return heap_push(w, c);
}

/* Merges the symbols of w->buf (already split into w->sym[0, n)). */
static int merge_all(const gw_tokenizer *t, struct work *w, size_t n)
{
    int rc;
    w->heap_n = 0;
    for (size_t i = 1; i < n; i++)
        if ((rc = try_pair(t, w, (int32_t)(i - 1), (int32_t)i)))
            return rc;
    while (w->heap_n > 0) {
        struct cand c = heap_pop(w);
        struct sym *l = &w->sym[c.left], *r = &w->sym[c.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != c.size)
            continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = (int32_t)c.left;
        if ((rc = try_pair(t, w, l->prev, (int32_t)c.left)) ||
            (rc = try_pair(t, w, (int32_t)c.left, l->next)))
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* BPE */

struct enc {
    const gw_tokenizer *t;
    struct work w;
    struct ids out;
    pcre2_match_data *md;
    char *err;
    size_t errlen;
};

/* Byte-maps, merges and emits one pre-tokenized piece. */
static int bpe_piece(struct enc *e, const uint8_t *s, size_t n)
{
    const gw_tokenizer *t = e->t;
    const struct bytemap *bm = &t->bm;
    struct work *w = &e->w;
    int rc;
    if ((rc = grow((void **)&w->buf, &w->buf_cap, 2 * n, 1)) ||
        (rc = grow((void **)&w->sym, &w->sym_cap, n, sizeof *w->sym)))
        return rc;
    uint32_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(w->buf + pos, bm->enc[s[i]], bm->enc_len[s[i]]);
        w->sym[i] = (struct sym){.start = pos,
                                 .len = bm->enc_len[s[i]],
                                 .prev = (int32_t)i - 1,
                                 .next = i + 1 < n ? (int32_t)(i + 1) : -1};
        pos += bm->enc_len[s[i]];
    }
    if ((rc = merge_all(t, w, n)))
        return rc;
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const struct sym *y = &w->sym[i];
        int32_t id = gw_tokenizer_find(t, w->buf + y->start, y->len);
        if (id >= 0) {
            if ((rc = ids_push(&e->out, id)))
                return rc;
            continue;
        }
        /* The merged text is not a token (a merge whose result the vocab
         * lacks, or a byte the vocab has no token for, e.g. 0xF1 in
         * SmolLM2): llama.cpp then looks up each byte of the mapped text as
         * a one-byte token and drops the bytes that are none. Do the same,
         * so the ids match; never substitute unk, which for gpt2 vocabs is
         * often <|endoftext|>, an end-of-generation token. */
        for (uint32_t off = y->start; off < y->start + y->len; off++) {
            id = gw_tokenizer_find(t, w->buf + off, 1);
            if (id >= 0 && (rc = ids_push(&e->out, id)))
                return rc;
        }
    }
    return 0;
}

/* Applies pre-tokenizer regex `level` to s[0, n): every match and every
 * stretch between matches is a piece, passed to the next level (as
 * llama.cpp's unicode_regex_split does). The subject is the piece alone, so
 * a look-ahead never sees past it. */
static int pre_split(struct enc *e, int level, const uint8_t *s, size_t n)
{
    if (n == 0)
        return 0;
    if (level == e->t->n_re)
        return bpe_piece(e, s, n);
    size_t off = 0;
    while (off < n) {
        int m = pcre2_match(e->t->re[level], s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(m, msg, sizeof msg);
            seterr(e->err, e->errlen, "tokenizer: pre-tokenizer %s, pattern %d: %s", e->t->pre,
                   level, (const char *)msg);
            return -EINVAL;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {
            /* No pattern here matches the empty string; guard anyway:
             * step one character so the loop always advances. */
            me = ms + 1;
            while (me < n && (s[me] & 0xC0) == 0x80)
                me++;
        }
        int rc;
        if (ms > off && (rc = pre_split(e, level + 1, s + off, ms - off)))
            return rc;
        if ((rc = pre_split(e, level + 1, s + ms, me - ms)))
            return rc;
        off = me;
    }
    return pre_split(e, level + 1, s + off, n - off);
}

/* ---------------------------------------------------------------------- */
/* SentencePiece */

static int spm_fragment(struct enc *e, const uint8_t *s, size_t n, bool space_prefix)
{
    const gw_tokenizer *t = e->t;
    struct work *w = &e->w;
    int rc;
    /* Each space becomes U+2581 (3 bytes), plus the prefix. */
    size_t cap = 3 * n + 3;
    if ((rc = grow((void **)&w->buf, &w->buf_cap, cap, 1)) ||
        (rc = grow((void **)&w->sym, &w->sym_cap, n + 1, sizeof *w->sym)))
        return rc;
    static const char ws[3] = {(char)0xE2, (char)0x96, (char)0x81};
    size_t pos = 0;
    if (space_prefix) {
        memcpy(w->buf, ws, 3);
        pos = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(w->buf + pos, ws, 3);
            pos += 3;
        } else {
            w->buf[pos++] = (char)s[i];
        }
    }
    /* One symbol per character (the text is valid UTF-8). */
    size_t ns = 0;
    for (size_t i = 0; i < pos;) {
        int k = utf8_step((const uint8_t *)w->buf + i, pos - i);
        if (k <= 0)
            k = 1; /* cannot happen: validated at entry */
        w->sym[ns] = (struct sym){.start = (uint32_t)i,
                                  .len = (uint32_t)k,
                                  .prev = (int32_t)ns - 1,
                                  .next = (int32_t)ns + 1};
        ns++;
        i += (size_t)k;
    }
    if (ns == 0)
        return 0;
    w->sym[ns - 1].next = -1;
    if ((rc = merge_all(t, w, ns)))
        return rc;
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const struct sym *y = &w->sym[i];
        int32_t id = gw_tokenizer_find(t, w->buf + y->start, y->len);
        if (id >= 0) {
            if ((rc = ids_push(&e->out, id)))
                return rc;
            continue;
        }
        /* Merged symbols are tokens by construction; this is a single
         * character the vocab lacks: one token per byte. */
        for (uint32_t k = 0; k < y->len; k++) {
            uint8_t b = (uint8_t)w->buf[y->start + k];
            if (t->byte_tok[b] < 0) {
                seterr(e->err, e->errlen,
                       "tokenizer: byte 0x%02x has no token (no <0x%02X>, no single-byte token, "
                       "no unknown token)",
                       b, b);
                return -EINVAL;
            }
            if ((rc = ids_push(&e->out, t->byte_tok[b])))
                return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Encoding */

struct frag {
    size_t off, len; /* raw text, when id < 0 */
    int32_t id;      /* a special token */
};

/* Splits the raw fragments of *f around every occurrence of special token
 * id (leftmost first, non-overlapping). */
static int split_special(const gw_tokenizer *t, const char *text, struct frag **f, size_t *n,
                         size_t *cap, struct frag **tmp, size_t *tmp_cap, int32_t id)
{
    const char *st = tok_text(t, (uint32_t)id);
    size_t sl = t->toks[id].text_len;
    size_t m = 0;
    int rc;
    for (size_t i = 0; i < *n; i++) {
        struct frag g = (*f)[i];
        if (g.id >= 0 || g.len < sl) {
            if ((rc = grow((void **)tmp, tmp_cap, m + 1, sizeof **tmp)))
                return rc;
            (*tmp)[m++] = g;
            continue;
        }
        size_t off = g.off, end = g.off + g.len;
        for (;;) {
            const char *hit = memmem(text + off, end - off, st, sl);
            if ((rc = grow((void **)tmp, tmp_cap, m + 2, sizeof **tmp)))
                return rc;
            if (!hit) {
                if (end > off)
                    (*tmp)[m++] = (struct frag){.off = off, .len = end - off, .id = -1};
                break;
            }
            size_t h = (size_t)(hit - text);
            if (h > off)
                (*tmp)[m++] = (struct frag){.off = off, .len = h - off, .id = -1};
            (*tmp)[m++] = (struct frag){.id = id};
            off = h + sl;
        }
    }
    /* Swap the buffers. */
    struct frag *sw = *f;
    size_t swc = *cap;
    *f = *tmp;
    *cap = *tmp_cap;
    *tmp = sw;
    *tmp_cap = swc;
    *n = m;
    return 0;
}

int gw_tokenizer_encode(const gw_tokenizer *t, const char *text, size_t len, unsigned flags,
                        int32_t **ids, size_t *n, char *err, size_t errlen)
{
    if (!t || !ids || !n || (!text && len))
        return -EINVAL;
    *ids = NULL;
    *n = 0;
    if (len > GW_TOK_MAX_TEXT_BYTES) {
        seterr(err, errlen, "tokenizer: text of %zu bytes is longer than the limit (%u bytes)", len,
               GW_TOK_MAX_TEXT_BYTES);
        return -E2BIG;
    }
    size_t bad = utf8_invalid_at((const uint8_t *)text, len);
    if (bad != (size_t)-1) {
        seterr(err, errlen, "tokenizer: text is not valid UTF-8 (byte 0x%02x at offset %zu)",
               (uint8_t)text[bad], bad);
        return -EILSEQ;
    }

    struct enc e = {.t = t, .err = err, .errlen = errlen};
    struct frag *f = NULL, *tmp = NULL;
    size_t nf = 0, fcap = 0, tcap = 0;
    int rc = 0;

    if (len > 0) {
        if ((rc = grow((void **)&f, &fcap, 1, sizeof *f)))
            goto out;
        f[nf++] = (struct frag){.off = 0, .len = len, .id = -1};
    }
    for (uint32_t i = 0; i < t->n_special && nf > 0; i++) {
        int32_t id = t->special[i];
        if (t->toks[id].type == GW_TOKEN_CONTROL && !(flags & GW_TOK_PARSE_SPECIAL))
            continue;
        if ((rc = split_special(t, text, &f, &nf, &fcap, &tmp, &tcap, id)))
            goto out;
    }

    if ((flags & GW_TOK_ADD_BOS) && t->add_bos && t->bos >= 0 && (rc = ids_push(&e.out, t->bos)))
        goto out;
    if (t->kind == KIND_BPE && t->n_re > 0) {
        e.md = pcre2_match_data_create(1, NULL); /* the patterns capture nothing */
        if (!e.md) {
            rc = -ENOMEM;
            goto out;
        }
    }
    bool prev_special = true; /* SPM: a space prefix starts the text and follows each special */
    for (size_t i = 0; i < nf; i++) {
        if (f[i].id >= 0) {
            if ((rc = ids_push(&e.out, f[i].id)))
                goto out;
            prev_special = true;
            continue;
        }
        const uint8_t *s = (const uint8_t *)text + f[i].off;
        if (t->kind == KIND_BPE)
            rc = pre_split(&e, 0, s, f[i].len);
        else
            rc = spm_fragment(&e, s, f[i].len, t->add_space_prefix && prev_special);
        if (rc)
            goto out;
        prev_special = false;
    }
    *ids = e.out.v;
    *n = e.out.n;
    e.out.v = NULL;
out:
    if (rc == -ENOMEM)
        seterr(err, errlen, "tokenizer: out of memory encoding %zu bytes", len);
    free(e.out.v);
    free(f);
    free(tmp);
    free(e.w.buf);
    free(e.w.sym);
    free(e.w.heap);
    pcre2_match_data_free(e.md);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Loading */

/* Pre-tokenizers, as llama.cpp's llama-vocab.cpp defines them. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

static const struct pre_def {
    const char *name;
    const char *re[MAX_PRE_REGEX];
} PRE_DEFS[] = {
    /* Every digit alone, then GPT-2's pattern. */
    {"smollm", {"\\p{N}", GPT2_PATTERN}},    {"gpt2", {GPT2_PATTERN}},
    {"starcoder", {"\\p{N}", GPT2_PATTERN}}, {"refact", {"\\p{N}", GPT2_PATTERN}},
    {"command-r", {"\\p{N}", GPT2_PATTERN}}, {"codeshell", {"\\p{N}", GPT2_PATTERN}},
    {"exaone", {"\\p{N}", GPT2_PATTERN}},    {"minerva", {"\\p{N}", GPT2_PATTERN}},
};

/* Texts of the control tokens llama.cpp treats as end of generation. */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>",      "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<|end_of_text|>", "<EOT>",   "_<EOT>",
};

/* The loading state: the file, its name for messages, the arrays the steps
 * of gw_tokenizer_load read from it (checked before anything is built),
 * and the arena bytes used so far. */
struct load {
    const gw_gguf *g;
    const char *name;
    char *err;
    size_t errlen;
    const gw_gguf_value *tokens;
    uint64_t n_tokens;
    const int32_t *types;        /* NULL: every token normal */
    const float *scores;         /* NULL: every score 0 */
    const gw_gguf_value *merges; /* BPE only */
    uint64_t n_merges;
    size_t pos; /* arena bytes used */
};

/* Optional id key: -1 when absent; an error when present and not an id of
 * this vocab. */
static int load_id(struct load *L, const char *key, uint32_t n_vocab, int32_t *out)
{
    int64_t v;
    int rc = gw_gguf_get_int(L->g, key, &v);
    *out = -1;
    if (rc == -ENOENT)
        return 0;
    if (rc) {
        seterr(L->err, L->errlen, "%s: %s is not an integer", L->name, key);
        return -EINVAL;
    }
    if (v < 0 || v >= (int64_t)n_vocab) {
        seterr(L->err, L->errlen,
               "%s: %s = %" PRId64 " is out of range (vocab has %" PRIu32 " tokens)", L->name, key,
               v, n_vocab);
        return -EINVAL;
    }
    *out = (int32_t)v;
    return 0;
}

/* Optional bool key with a default. */
static int load_bool(struct load *L, const char *key, bool dflt, bool *out)
{
    int rc = gw_gguf_get_bool(L->g, key, out);
    if (rc == -ENOENT) {
        *out = dflt;
        return 0;
    }
    if (rc) {
        seterr(L->err, L->errlen, "%s: %s is not a bool", L->name, key);
        return -EINVAL;
    }
    return 0;
}

/* A string array of exactly want elements (want 0: any count <= limit). */
static int load_str_array(struct load *L, const char *key, const gw_gguf_value **out,
                          uint64_t *count)
{
    const gw_gguf_value *v = gw_gguf_find(L->g, key);
    if (!v) {
        seterr(L->err, L->errlen, "%s: %s missing", L->name, key);
        return -EINVAL;
    }
    if (gw_gguf_value_type(v) != GW_GGUF_ARRAY || gw_gguf_arr_type(v) != GW_GGUF_STRING) {
        seterr(L->err, L->errlen, "%s: %s is not an array of strings", L->name, key);
        return -EINVAL;
    }
    *out = v;
    *count = gw_gguf_arr_len(v);
    return 0;
}

/* Copies s[0, n) into the arena at *pos. */
static uint32_t arena_put(gw_tokenizer *t, size_t *pos, const void *s, size_t n)
{
    uint32_t off = (uint32_t)*pos;
    if (n)
        memcpy(t->arena + *pos, s, n);
    *pos += n;
    return off;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decoded bytes of token i (appended to the arena), by its type. */
static int make_piece(struct load *L, gw_tokenizer *t, uint32_t i, size_t *pos)
{
    struct tok *k = &t->toks[i];
    const uint8_t *s = (const uint8_t *)tok_text(t, i);
    size_t n = k->text_len;
    uint8_t *o = (uint8_t *)t->arena + *pos;
    size_t m = 0;
    k->piece_off = (uint32_t)*pos;

    if (k->type == GW_TOKEN_UNUSED || k->type == GW_TOKEN_UNDEFINED) {
        m = 0; /* llama.cpp shows nothing for these */
    } else if (k->type == GW_TOKEN_BYTE && t->kind == KIND_BPE) {
        m = 0; /* not a gpt2 type: shown as nothing, as llama.cpp does */
    } else if (k->type == GW_TOKEN_BYTE) {
        int hi = n == 6 ? hexval(s[3]) : -1, lo = n == 6 ? hexval(s[4]) : -1;
        if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || hi < 0 || lo < 0) {
            seterr(L->err, L->errlen,
                   "%s: tokenizer.ggml.tokens[%" PRIu32 "] is a byte token but its text \"%.*s\" "
                   "is not <0xXX>",
                   L->name, i, (int)(n > 32 ? 32 : n), (const char *)s);
            return -EINVAL;
        }
        o[m++] = (uint8_t)(hi << 4 | lo);
    } else if (k->type != GW_TOKEN_NORMAL) {
        /* control, unknown, user-defined: the text as written */
        memcpy(o, s, n);
        m = n;
    } else if (t->kind == KIND_SPM) {
        /* U+2581 back to a space */
        for (size_t j = 0; j < n;) {
            if (j + 3 <= n && s[j] == 0xE2 && s[j + 1] == 0x96 && s[j + 2] == 0x81) {
                o[m++] = ' ';
                j += 3;
            } else {
                o[m++] = s[j++];
            }
        }
    } else {
        /* gpt2: each code point back to its byte; one outside the map (not
         * produced by the converter) is kept as it is. */
        const struct bytemap *bm = &t->bm;
        for (size_t j = 0; j < n;) {
            int c = utf8_step(s + j, n - j);
            if (c <= 0) {
                o[m++] = s[j++];
                continue;
            }
            uint32_t cp = utf8_cp(s + j, c);
            if (cp < 0x144 && bm->dec[cp] >= 0) {
                o[m++] = (uint8_t)bm->dec[cp];
            } else {
                memcpy(o + m, s + j, (size_t)c);
                m += (size_t)c;
            }
            j += (size_t)c;
        }
    }
    k->piece_len = (uint32_t)m;
    *pos += m;
    if (m > t->max_piece)
        t->max_piece = (uint32_t)m;
    return 0;
}

static int cmp_special(const void *a, const void *b, void *arg)
{
    const gw_tokenizer *t = arg;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->toks[x].text_len, ly = t->toks[y].text_len;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

static int compile_pre(struct load *L, gw_tokenizer *t, const char *pre, size_t pre_len)
{
    const struct pre_def *d = NULL;
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; i++)
        if (strlen(PRE_DEFS[i].name) == pre_len && memcmp(PRE_DEFS[i].name, pre, pre_len) == 0)
            d = &PRE_DEFS[i];
    if (!d) {
        char names[256] = "";
        for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", PRE_DEFS[i].name);
        }
        seterr(L->err, L->errlen,
               "%s: tokenizer.ggml.pre \"%.*s\" is not supported (supported: %s)", L->name,
               (int)(pre_len > 64 ? 64 : pre_len), pre, names);
        return -EINVAL;
    }
    snprintf(t->pre, sizeof t->pre, "%s", d->name);
    for (int i = 0; i < MAX_PRE_REGEX && d->re[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        /* UCP: \s, \p{..} by Unicode properties, as llama.cpp's tables. */
        t->re[i] = pcre2_compile((PCRE2_SPTR)d->re[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(ec, msg, sizeof msg);
            seterr(L->err, L->errlen, "%s: pre-tokenizer %s: PCRE2 refuses pattern %d at %zu: %s",
                   L->name, d->name, i, (size_t)eo, (const char *)msg);
            return -EINVAL;
        }
        t->n_re = i + 1;
        /* JIT is an optimisation: where it is unavailable (no JIT support
         * in this build, W^X policy) the interpreter gives the same
         * matches. */
        (void)pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE);
    }
    return 0;
}

/* Model family. */
static int load_kind(struct load *L, gw_tokenizer *t)
{
    const char *s;
    size_t sl;
    int r = gw_gguf_get_str(L->g, "tokenizer.ggml.model", &s, &sl);
    if (r == -ENOENT) {
        seterr(L->err, L->errlen, "%s: tokenizer.ggml.model missing: the file has no tokenizer",
               L->name);
        return -EINVAL;
    }
    if (r) {
        seterr(L->err, L->errlen, "%s: tokenizer.ggml.model is not a string", L->name);
        return -EINVAL;
    }
    if (sl == 4 && memcmp(s, "gpt2", 4) == 0) {
        t->kind = KIND_BPE;
    } else if (sl == 5 && memcmp(s, "llama", 5) == 0) {
        t->kind = KIND_SPM;
    } else {
        seterr(L->err, L->errlen,
               "%s: tokenizer.ggml.model \"%.*s\" is not supported (supported: gpt2, llama)",
               L->name, (int)(sl > 64 ? 64 : sl), s);
        return -EINVAL;
    }
    snprintf(t->model, sizeof t->model, "%s", t->kind == KIND_BPE ? "gpt2" : "llama");
    return 0;
}

/* Vocabulary: the token texts, and their types and scores when present. */
static int load_vocab(struct load *L, gw_tokenizer *t)
{
    int rc;
    if ((rc = load_str_array(L, "tokenizer.ggml.tokens", &L->tokens, &L->n_tokens)))
        return rc;
    uint64_t nv = L->n_tokens;
    if (nv == 0 || nv > GW_TOK_MAX_VOCAB) {
        seterr(L->err, L->errlen,
               "%s: tokenizer.ggml.tokens has %" PRIu64 " entries (1..%u allowed)", L->name, nv,
               GW_TOK_MAX_VOCAB);
        return -EINVAL;
    }
    t->n_vocab = (uint32_t)nv;

    const gw_gguf_value *types = gw_gguf_find(L->g, "tokenizer.ggml.token_type");
    if (types) {
        uint32_t et = gw_gguf_arr_type(types);
        if (gw_gguf_value_type(types) != GW_GGUF_ARRAY ||
            (et != GW_GGUF_I32 && et != GW_GGUF_U32) || gw_gguf_arr_len(types) != nv) {
            seterr(L->err, L->errlen,
                   "%s: tokenizer.ggml.token_type is not an array of %" PRIu64 " int32", L->name,
                   nv);
            return -EINVAL;
        }
        L->types = gw_gguf_arr_data(types);
    }
    const gw_gguf_value *scores = gw_gguf_find(L->g, "tokenizer.ggml.scores");
    if (scores) {
        if (gw_gguf_value_type(scores) != GW_GGUF_ARRAY ||
            gw_gguf_arr_type(scores) != GW_GGUF_F32 || gw_gguf_arr_len(scores) != nv) {
            seterr(L->err, L->errlen,
                   "%s: tokenizer.ggml.scores is not an array of %" PRIu64 " float32", L->name, nv);
            return -EINVAL;
        }
        L->scores = gw_gguf_arr_data(scores);
    }
    return 0;
}

/* BPE: the merges and the pre-tokenizer. */
static int load_bpe(struct load *L, gw_tokenizer *t)
{
    const char *s;
    size_t sl;
    int rc;
    if ((rc = load_str_array(L, "tokenizer.ggml.merges", &L->merges, &L->n_merges)))
        return rc;
    if (L->n_merges >= UINT32_MAX / 2) {
        seterr(L->err, L->errlen, "%s: tokenizer.ggml.merges has %" PRIu64 " entries", L->name,
               L->n_merges);
        return -EINVAL;
    }
    int r = gw_gguf_get_str(L->g, "tokenizer.ggml.pre", &s, &sl);
    if (r == -ENOENT) {
        seterr(L->err, L->errlen,
               "%s: tokenizer.ggml.pre missing: the pre-tokenizer of this gpt2 "
               "tokenizer is unknown",
               L->name);
        return -EINVAL;
    }
    if (r) {
        seterr(L->err, L->errlen, "%s: tokenizer.ggml.pre is not a string", L->name);
        return -EINVAL;
    }
    return compile_pre(L, t, s, sl);
}

/* Arena size: every token text twice (text and decoded piece; a piece
 * is never longer than its text), every merge once. Lengths are
 * checked first, so the sums stay far from overflow. */
static int alloc_arena(struct load *L, gw_tokenizer *t)
{
    const char *s;
    size_t sl;
    size_t total = 0;
    for (uint64_t i = 0; i < L->n_tokens; i++) {
        if (gw_gguf_arr_str(L->tokens, i, &s, &sl)) {
            seterr(L->err, L->errlen, "%s: tokenizer.ggml.tokens[%" PRIu64 "] unreadable", L->name,
                   i);
            return -EINVAL;
        }
        if (sl > GW_TOK_MAX_TOKEN_BYTES) {
            seterr(L->err, L->errlen,
                   "%s: tokenizer.ggml.tokens[%" PRIu64 "] is %zu bytes long (at most %u)", L->name,
                   i, sl, GW_TOK_MAX_TOKEN_BYTES);
            return -EINVAL;
        }
        total += 2 * sl;
    }
    for (uint64_t i = 0; i < L->n_merges; i++) {
        if (gw_gguf_arr_str(L->merges, i, &s, &sl)) {
            seterr(L->err, L->errlen, "%s: tokenizer.ggml.merges[%" PRIu64 "] unreadable", L->name,
                   i);
            return -EINVAL;
        }
        if (sl > 2 * GW_TOK_MAX_TOKEN_BYTES) {
            seterr(L->err, L->errlen, "%s: tokenizer.ggml.merges[%" PRIu64 "] is %zu bytes long",
                   L->name, i, sl);
            return -EINVAL;
        }
        total += sl;
    }
    if (total >= UINT32_MAX) {
        seterr(L->err, L->errlen, "%s: tokenizer texts take %zu bytes (at most 4 GiB)", L->name,
               total);
        return -EINVAL;
    }
    t->arena = malloc(total ? total : 1);
    t->toks = calloc(L->n_tokens, sizeof *t->toks);
    if (!t->arena || !t->toks || table_init(&t->by_text, t->n_vocab))
        return -ENOMEM;
    return 0;
}

/* Token texts, scores and types into the arena and the text table, then
 * the decoded pieces. */
static int fill_tokens(struct load *L, gw_tokenizer *t)
{
    const char *s;
    size_t sl;
    int rc;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        struct tok *k = &t->toks[i];
        (void)gw_gguf_arr_str(L->tokens, i, &s, &sl);
        k->text_len = (uint32_t)sl;
        k->text_off = arena_put(t, &L->pos, s, sl);
        k->score = L->scores ? L->scores[i] : 0.0f;
        int32_t ty = L->types ? L->types[i] : GW_TOKEN_NORMAL;
        if (ty < GW_TOKEN_UNDEFINED || ty > GW_TOKEN_BYTE) {
            seterr(L->err, L->errlen,
                   "%s: tokenizer.ggml.token_type[%" PRIu32 "] = %" PRId32
                   " is not a token type (0..6)",
                   L->name, i, ty);
            return -EINVAL;
        }
        k->type = (uint8_t)ty;
        /* A repeated text maps to its last id, as in llama.cpp. */
        uint32_t slot = text_probe(t, s, sl);
        t->by_text.slot[slot] = i + 1;
    }
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if ((rc = make_piece(L, t, i, &L->pos)))
            return rc;
    return 0;
}

/* BPE merges "A B" into the arena and the pair table; a merge's rank is
 * its index. */
static int fill_merges(struct load *L, gw_tokenizer *t)
{
    const char *s;
    size_t sl;
    uint64_t nm = L->n_merges;
    t->merges = calloc(nm ? nm : 1, sizeof *t->merges);
    if (!t->merges || table_init(&t->by_pair, (uint32_t)nm))
        return -ENOMEM;
    t->n_merges = (uint32_t)nm;
    for (uint32_t i = 0; i < t->n_merges; i++) {
        (void)gw_gguf_arr_str(L->merges, i, &s, &sl);
        /* "A B": the separator is the first space after the first
         * byte (llama.cpp: find(' ', 1)). */
        const char *sp = sl > 1 ? memchr(s + 1, ' ', sl - 1) : NULL;
        if (!sp) {
            seterr(L->err, L->errlen,
                   "%s: tokenizer.ggml.merges[%" PRIu32 "] \"%.*s\" is not \"A B\"", L->name, i,
                   (int)(sl > 64 ? 64 : sl), s);
            return -EINVAL;
        }
        uint32_t off = arena_put(t, &L->pos, s, sl);
        struct merge *m = &t->merges[i];
        m->a_off = off;
        m->a_len = (uint32_t)(sp - s);
        m->b_off = off + m->a_len + 1;
        m->b_len = (uint32_t)(sl - m->a_len - 1);
        uint32_t slot = pair_probe(t, t->arena + m->a_off, m->a_len, t->arena + m->b_off, m->b_len);
        /* A repeated pair keeps its first (lowest) rank. */
        if (t->by_pair.slot[slot] == 0)
            t->by_pair.slot[slot] = i + 1;
    }
    return 0;
}

/* Special ids and flags. */
static int load_special_ids(struct load *L, gw_tokenizer *t)
{
    int rc;
    if ((rc = load_id(L, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos)) ||
        (rc = load_id(L, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos)) ||
        (rc = load_id(L, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk)) ||
        (rc = load_id(L, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot)) ||
        (rc = load_id(L, "tokenizer.ggml.eom_token_id", t->n_vocab, &t->eom)) ||
        (rc = load_id(L, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad)) ||
        (rc = load_bool(L, "tokenizer.ggml.add_bos_token", t->kind == KIND_SPM, &t->add_bos)) ||
        (rc = load_bool(L, "tokenizer.ggml.add_space_prefix", t->kind == KIND_SPM,
                        &t->add_space_prefix)))
        return rc;
    if (t->kind == KIND_BPE)
        t->add_space_prefix = false; /* llama.cpp ignores it for gpt2 */
    return 0;
}

/* Special tokens, longest first. */
static int list_special(gw_tokenizer *t)
{
    t->special = malloc(t->n_vocab * sizeof *t->special);
    if (!t->special)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->toks[i].type;
        if ((ty == GW_TOKEN_CONTROL || ty == GW_TOKEN_USER_DEFINED) && t->toks[i].text_len > 0)
            t->special[t->n_special++] = (int32_t)i;
    }
    qsort_r(t->special, t->n_special, sizeof *t->special, cmp_special, t);
    return 0;
}

/* SPM byte fallback. */
static void byte_fallback(gw_tokenizer *t)
{
    for (unsigned b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        int32_t id = gw_tokenizer_find(t, hex, 6);
        if (id < 0) {
            char c = (char)b;
            id = gw_tokenizer_find(t, &c, 1);
        }
        t->byte_tok[b] = id >= 0 ? id : t->unk;
    }
}

/* End of generation. */
static int list_eog(gw_tokenizer *t)
{
    t->eog = malloc((3 + sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]) * sizeof *t->eog);
    if (!t->eog)
        return -ENOMEM;
    int32_t fixed[3] = {t->eos, t->eot, t->eom};
    for (int i = 0; i < 3; i++)
        if (fixed[i] >= 0)
            t->eog[t->n_eog++] = fixed[i];
    for (size_t i = 0; i < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; i++) {
        int32_t id = gw_tokenizer_find(t, EOG_TEXTS[i], strlen(EOG_TEXTS[i]));
        if (id >= 0 && t->toks[id].type == GW_TOKEN_CONTROL)
            t->eog[t->n_eog++] = id;
    }
    qsort(t->eog, t->n_eog, sizeof *t->eog, cmp_i32);
    size_t u = 0;
    for (size_t i = 0; i < t->n_eog; i++)
        if (u == 0 || t->eog[u - 1] != t->eog[i])
            t->eog[u++] = t->eog[i];
    t->n_eog = u;
    return 0;
}

/* Four steps: what the file says (family, vocabulary, BPE merges and
 * pre-tokenizer), checked before anything is built; the arena and the
 * lookup tables; the special ids and flags; the lists derived from them
 * (special tokens, byte fallback, end of generation). */
int gw_tokenizer_load(const gw_gguf *g, gw_tokenizer **out, char *err, size_t errlen)
{
    if (!g || !out)
        return -EINVAL;
    *out = NULL;
    struct load L = {.g = g, .name = gw_gguf_name(g), .err = err, .errlen = errlen};
    if (!L.name)
        L.name = "(gguf)";
    gw_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    bytemap_build(&t->bm);
    int rc;

    if ((rc = load_kind(&L, t)) || (rc = load_vocab(&L, t)) ||
        (t->kind == KIND_BPE && (rc = load_bpe(&L, t))))
        goto fail;
    if ((rc = alloc_arena(&L, t)) || (rc = fill_tokens(&L, t)) ||
        (t->kind == KIND_BPE && (rc = fill_merges(&L, t))))
        goto fail;
    t->arena_len = L.pos;
    if ((rc = load_special_ids(&L, t)))
        goto fail;
    if ((rc = list_special(t)))
        goto fail;
    byte_fallback(t);
    if ((rc = list_eog(t)))
        goto fail;

    *out = t;
    return 0;
fail:
    if (rc == -ENOMEM)
        seterr(err, errlen, "%s: out of memory building the tokenizer", L.name);
    gw_tokenizer_free(t);
    return rc;
}

void gw_tokenizer_free(gw_tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    free(t->toks);
    free(t->arena);
    free(t->by_text.slot);
    free(t->merges);
    free(t->by_pair.slot);
    free(t->special);
    free(t->eog);
    free(t);
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

/* ---------------------------------------------------------------------- */
/* Streaming decoder */

int gw_tok_decoder_init(gw_tok_decoder *d, const gw_tokenizer *t, unsigned flags)
{
    if (!d || !t)
        return -EINVAL;
    memset(d, 0, sizeof *d);
    size_t in_cap = (size_t)t->max_piece + 4;
    d->in = malloc(in_cap);
    d->out = malloc(3 * in_cap);
    if (!d->in || !d->out) {
        gw_tok_decoder_free(d);
        return -ENOMEM;
    }
    d->tok = t;
    d->flags = flags;
    return 0;
}

void gw_tok_decoder_free(gw_tok_decoder *d)
{
    if (!d)
        return;
    free(d->in);
    free(d->out);
    d->in = d->out = NULL;
}

/* Copies the complete characters of s[0, n) to d->out, U+FFFD for each
 * maximal ill-formed subpart; an incomplete tail goes to d->tail unless
 * final. Returns the bytes written. */
static size_t emit_utf8(gw_tok_decoder *d, const uint8_t *s, size_t n, bool final)
{
    uint8_t *o = (uint8_t *)d->out;
    size_t m = 0, i = 0;
    d->n_tail = 0;
    while (i < n) {
        int k = utf8_step(s + i, n - i);
        if (k > 0) {
            memcpy(o + m, s + i, (size_t)k);
            m += (size_t)k;
            i += (size_t)k;
        } else if (k < 0 || final) {
            o[m++] = 0xEF;
            o[m++] = 0xBF;
            o[m++] = 0xBD;
            i += k < 0 ? (size_t)-k : n - i;
        } else {
            memcpy(d->tail, s + i, n - i); /* < 4 bytes: a valid prefix */
            d->n_tail = n - i;
            break;
        }
    }
    return m;
}

int gw_tok_decoder_push(gw_tok_decoder *d, int32_t id, const char **chunk, size_t *len, char *err,
                        size_t errlen)
{
    const gw_tokenizer *t = d->tok;
    *chunk = d->out;
    *len = 0;
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        seterr(err, errlen,
               "tokenizer: token id %" PRId32 " is out of range (vocab has %" PRIu32 " tokens)", id,
               t->n_vocab);
        return -ERANGE;
    }
    const struct tok *k = &t->toks[id];
    const uint8_t *p = (const uint8_t *)t->arena + k->piece_off;
    size_t n = k->piece_len;
    if ((k->type == GW_TOKEN_CONTROL || k->type == GW_TOKEN_UNKNOWN) &&
        !(d->flags & GW_TOK_DEC_SPECIAL))
        n = 0;
    if (!d->started && (d->flags & GW_TOK_DEC_LSTRIP) && t->add_space_prefix && n > 0 &&
        p[0] == ' ') {
        p++;
        n--;
    }
    d->started = true;
    memcpy(d->in, d->tail, d->n_tail);
    memcpy(d->in + d->n_tail, p, n);
    *len = emit_utf8(d, (const uint8_t *)d->in, d->n_tail + n, false);
    return 0;
}

void gw_tok_decoder_flush(gw_tok_decoder *d, const char **chunk, size_t *len)
{
    memcpy(d->in, d->tail, d->n_tail);
    *chunk = d->out;
    *len = emit_utf8(d, (const uint8_t *)d->in, d->n_tail, true);
    d->n_tail = 0;
    d->started = false;
}

int gw_tokenizer_decode(const gw_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *len, char *err, size_t errlen)
{
    if (!t || !out || !len || (!ids && n))
        return -EINVAL;
    *out = NULL;
    *len = 0;
    gw_tok_decoder d;
    int rc = gw_tok_decoder_init(&d, t, flags);
    if (rc)
        return rc;
    char *buf = NULL;
    size_t m = 0, cap = 0;
    const char *c;
    size_t cl;
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            if ((rc = gw_tok_decoder_push(&d, ids[i], &c, &cl, err, errlen)))
                goto fail;
        } else {
            gw_tok_decoder_flush(&d, &c, &cl);
        }
        if ((rc = grow((void **)&buf, &cap, m + cl + 1, 1)))
            goto fail;
        memcpy(buf + m, c, cl);
        m += cl;
    }
    if ((rc = grow((void **)&buf, &cap, m + 1, 1)))
        goto fail;
    buf[m] = '\0';
    gw_tok_decoder_free(&d);
    *out = buf;
    *len = m;
    return 0;
fail:
    if (rc == -ENOMEM)
        seterr(err, errlen, "tokenizer: out of memory decoding %zu tokens", n);
    free(buf);
    gw_tok_decoder_free(&d);
    return rc;
}
