/* tokenizer_encode.c: text -> token ids. Special tokens split the text
 * first (longest first); each fragment between them then goes through the
 * BPE pre-tokenizer regexes and byte-level BPE merges, or through
 * SentencePiece's space escaping and score-ordered merges.
 *
 * Separate from loading (tokenizer_load.c) because it only reads a built
 * tokenizer and runs on every request; its merge machinery (a linked list
 * of symbols and a heap of candidate pairs) is shared by BPE and SPM and
 * used nowhere else.
 */
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* Output ids: a growable array */

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
    int rc = gw_tok_grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap);
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

/* Rank of the merge (a, b), or UINT32_MAX when there is none. */
static uint32_t merge_rank(const gw_tokenizer *t, const char *a, size_t alen, const char *b,
                           size_t blen)
{
    uint32_t v = t->by_pair.slot[gw_tok_pair_probe(t, a, alen, b, blen)];
    return v ? v - 1 : UINT32_MAX;
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
    if ((rc = gw_tok_grow((void **)&w->buf, &w->buf_cap, 2 * n, 1)) ||
        (rc = gw_tok_grow((void **)&w->sym, &w->sym_cap, n, sizeof *w->sym)))
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
            gw_errf(e->err, e->errlen, "tokenizer: pre-tokenizer %s, pattern %d: %s", e->t->pre,
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
    if ((rc = gw_tok_grow((void **)&w->buf, &w->buf_cap, cap, 1)) ||
        (rc = gw_tok_grow((void **)&w->sym, &w->sym_cap, n + 1, sizeof *w->sym)))
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
        int k = gw_tok_utf8_step((const uint8_t *)w->buf + i, pos - i);
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
                gw_errf(e->err, e->errlen,
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
            if ((rc = gw_tok_grow((void **)tmp, tmp_cap, m + 1, sizeof **tmp)))
                return rc;
            (*tmp)[m++] = g;
            continue;
        }
        size_t off = g.off, end = g.off + g.len;
        for (;;) {
            const char *hit = memmem(text + off, end - off, st, sl);
            if ((rc = gw_tok_grow((void **)tmp, tmp_cap, m + 2, sizeof **tmp)))
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
        gw_errf(err, errlen, "tokenizer: text of %zu bytes is longer than the limit (%u bytes)",
                len, GW_TOK_MAX_TEXT_BYTES);
        return -E2BIG;
    }
    size_t bad = gw_tok_utf8_invalid_at((const uint8_t *)text, len);
    if (bad != (size_t)-1) {
        gw_errf(err, errlen, "tokenizer: text is not valid UTF-8 (byte 0x%02x at offset %zu)",
                (uint8_t)text[bad], bad);
        return -EILSEQ;
    }

    struct enc e = {.t = t, .err = err, .errlen = errlen};
    struct frag *f = NULL, *tmp = NULL;
    size_t nf = 0, fcap = 0, tcap = 0;
    int rc = 0;

    if (len > 0) {
        if ((rc = gw_tok_grow((void **)&f, &fcap, 1, sizeof *f)))
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
        gw_errf(err, errlen, "tokenizer: out of memory encoding %zu bytes", len);
    free(e.out.v);
    free(f);
    free(tmp);
    free(e.w.buf);
    free(e.w.sym);
    free(e.w.heap);
    pcre2_match_data_free(e.md);
    return rc;
}
