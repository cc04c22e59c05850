/* tokenizer_load.c: builds a tokenizer from GGUF metadata
 * (tokenizer.ggml.*): the vocabulary, its types and scores, the BPE merges
 * and pre-tokenizer, the special ids, and the lists derived from them.
 *
 * Separate from encoding and decoding because it is where the file is
 * checked: every array length, id and text length is validated here,
 * before the tokenizer exists; the other files trust what it built.
 */
#include "tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        gw_errf(L->err, L->errlen, "%s: %s is not an integer", L->name, key);
        return -EINVAL;
    }
    if (v < 0 || v >= (int64_t)n_vocab) {
        gw_errf(L->err, L->errlen,
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
        gw_errf(L->err, L->errlen, "%s: %s is not a bool", L->name, key);
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
        gw_errf(L->err, L->errlen, "%s: %s missing", L->name, key);
        return -EINVAL;
    }
    if (gw_gguf_value_type(v) != GW_GGUF_ARRAY || gw_gguf_arr_type(v) != GW_GGUF_STRING) {
        gw_errf(L->err, L->errlen, "%s: %s is not an array of strings", L->name, key);
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
            gw_errf(L->err, L->errlen,
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
            int c = gw_tok_utf8_step(s + j, n - j);
            if (c <= 0) {
                o[m++] = s[j++];
                continue;
            }
            uint32_t cp = gw_tok_utf8_cp(s + j, c);
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
        gw_errf(L->err, L->errlen,
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
            gw_errf(L->err, L->errlen, "%s: pre-tokenizer %s: PCRE2 refuses pattern %d at %zu: %s",
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
        gw_errf(L->err, L->errlen, "%s: tokenizer.ggml.model missing: the file has no tokenizer",
                L->name);
        return -EINVAL;
    }
    if (r) {
        gw_errf(L->err, L->errlen, "%s: tokenizer.ggml.model is not a string", L->name);
        return -EINVAL;
    }
    if (sl == 4 && memcmp(s, "gpt2", 4) == 0) {
        t->kind = KIND_BPE;
    } else if (sl == 5 && memcmp(s, "llama", 5) == 0) {
        t->kind = KIND_SPM;
    } else {
        gw_errf(L->err, L->errlen,
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
        gw_errf(L->err, L->errlen,
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
            gw_errf(L->err, L->errlen,
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
            gw_errf(L->err, L->errlen,
                    "%s: tokenizer.ggml.scores is not an array of %" PRIu64 " float32", L->name,
                    nv);
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
        gw_errf(L->err, L->errlen, "%s: tokenizer.ggml.merges has %" PRIu64 " entries", L->name,
                L->n_merges);
        return -EINVAL;
    }
    int r = gw_gguf_get_str(L->g, "tokenizer.ggml.pre", &s, &sl);
    if (r == -ENOENT) {
        gw_errf(L->err, L->errlen,
                "%s: tokenizer.ggml.pre missing: the pre-tokenizer of this gpt2 "
                "tokenizer is unknown",
                L->name);
        return -EINVAL;
    }
    if (r) {
        gw_errf(L->err, L->errlen, "%s: tokenizer.ggml.pre is not a string", L->name);
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
            gw_errf(L->err, L->errlen, "%s: tokenizer.ggml.tokens[%" PRIu64 "] unreadable", L->name,
                    i);
            return -EINVAL;
        }
        if (sl > GW_TOK_MAX_TOKEN_BYTES) {
            gw_errf(L->err, L->errlen,
                    "%s: tokenizer.ggml.tokens[%" PRIu64 "] is %zu bytes long (at most %u)",
                    L->name, i, sl, GW_TOK_MAX_TOKEN_BYTES);
            return -EINVAL;
        }
        total += 2 * sl;
    }
    for (uint64_t i = 0; i < L->n_merges; i++) {
        if (gw_gguf_arr_str(L->merges, i, &s, &sl)) {
            gw_errf(L->err, L->errlen, "%s: tokenizer.ggml.merges[%" PRIu64 "] unreadable", L->name,
                    i);
            return -EINVAL;
        }
        if (sl > 2 * GW_TOK_MAX_TOKEN_BYTES) {
            gw_errf(L->err, L->errlen, "%s: tokenizer.ggml.merges[%" PRIu64 "] is %zu bytes long",
                    L->name, i, sl);
            return -EINVAL;
        }
        total += sl;
    }
    if (total >= UINT32_MAX) {
        gw_errf(L->err, L->errlen, "%s: tokenizer texts take %zu bytes (at most 4 GiB)", L->name,
                total);
        return -EINVAL;
    }
    t->arena = malloc(total ? total : 1);
    t->toks = calloc(L->n_tokens, sizeof *t->toks);
    if (!t->arena || !t->toks || gw_tok_table_init(&t->by_text, t->n_vocab))
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
            gw_errf(L->err, L->errlen,
                    "%s: tokenizer.ggml.token_type[%" PRIu32 "] = %" PRId32
                    " is not a token type (0..6)",
                    L->name, i, ty);
            return -EINVAL;
        }
        k->type = (uint8_t)ty;
        /* A repeated text maps to its last id, as in llama.cpp. */
        uint32_t slot = gw_tok_text_probe(t, s, sl);
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
    if (!t->merges || gw_tok_table_init(&t->by_pair, (uint32_t)nm))
        return -ENOMEM;
    t->n_merges = (uint32_t)nm;
    for (uint32_t i = 0; i < t->n_merges; i++) {
        (void)gw_gguf_arr_str(L->merges, i, &s, &sl);
        /* "A B": the separator is the first space after the first
         * byte (llama.cpp: find(' ', 1)). */
        const char *sp = sl > 1 ? memchr(s + 1, ' ', sl - 1) : NULL;
        if (!sp) {
            gw_errf(L->err, L->errlen,
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
        uint32_t slot =
            gw_tok_pair_probe(t, t->arena + m->a_off, m->a_len, t->arena + m->b_off, m->b_len);
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
    gw_tok_bytemap_build(&t->bm);
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
        gw_errf(err, errlen, "%s: out of memory building the tokenizer", L.name);
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
