/* test_tokenizer.c: the tokenizers, the streaming decoder and the chat
 * templates.
 *
 * One source, two programs (tests/engine/CMakeLists.txt):
 * - test_tokenizer (label unit): tiny vocabs built in memory; the expected
 *   SentencePiece ids are llama.cpp's (llama-cpp-python 0.3.36 on the same
 *   vocab written by gguf-py), the BPE ids follow from the merge ranks by
 *   hand, the chat strings are what jinja2 renders from the real templates.
 * - test_tokenizer_model (label model): SmolLM2-135M-Instruct against the
 *   llama.cpp output in tests/fixtures/; exits 77 (ctest: Skipped) when the
 *   model is missing.
 * The program picks its group from its own name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "gw_engine.h"
#include "skip.h"

/* ---------------------------------------------------------------------- */
/* In-memory GGUF files */

struct kvs {
    gwt_buf b;
    uint64_t n;
};

static void kv_str(struct kvs *k, const char *key, const char *v)
{
    gwt_kv_str(&k->b, key, v);
    k->n++;
}

static void kv_u32(struct kvs *k, const char *key, uint32_t v)
{
    gwt_kv_u32(&k->b, key, v);
    k->n++;
}

static void kv_bool(struct kvs *k, const char *key, bool v)
{
    uint8_t x = v;
    gwt_str(&k->b, key);
    gwt_u32(&k->b, GW_GGUF_BOOL);
    gwt_bytes(&k->b, &x, 1);
    k->n++;
}

static void kv_str_arr(struct kvs *k, const char *key, const char *const *v, size_t n)
{
    gwt_str(&k->b, key);
    gwt_u32(&k->b, GW_GGUF_ARRAY);
    gwt_u32(&k->b, GW_GGUF_STRING);
    gwt_u64(&k->b, n);
    for (size_t i = 0; i < n; i++)
        gwt_str(&k->b, v[i]);
    k->n++;
}

static void kv_f32_arr(struct kvs *k, const char *key, const float *v, size_t n)
{
    gwt_str(&k->b, key);
    gwt_u32(&k->b, GW_GGUF_ARRAY);
    gwt_u32(&k->b, GW_GGUF_F32);
    gwt_u64(&k->b, n);
    for (size_t i = 0; i < n; i++)
        gwt_f32(&k->b, v[i]);
    k->n++;
}

static void kv_i32_arr(struct kvs *k, const char *key, const int32_t *v, size_t n)
{
    gwt_str(&k->b, key);
    gwt_u32(&k->b, GW_GGUF_ARRAY);
    gwt_u32(&k->b, GW_GGUF_I32);
    gwt_u64(&k->b, n);
    for (size_t i = 0; i < n; i++)
        gwt_u32(&k->b, (uint32_t)v[i]);
    k->n++;
}

/* A GGUF v3 file without tensors holding the kv pairs of k (freed). */
static gwt_buf finish_file(struct kvs *k)
{
    gwt_buf f = {0};
    gwt_bytes(&f, "GGUF", 4);
    gwt_u32(&f, 3);
    gwt_u64(&f, 0);
    gwt_u64(&f, k->n);
    gwt_bytes(&f, k->b.p, k->b.len);
    gwt_free(&k->b);
    k->n = 0;
    return f;
}

/* A file loaded as a tokenizer; the buffer must outlive the gw_gguf only
 * until gw_tokenizer_load() returns (the tokenizer copies what it needs). */
static int load_tokenizer(gwt_buf *file, gw_tokenizer **t, char *err, size_t errlen)
{
    gw_gguf *g = NULL;
    int rc = gw_gguf_open_buffer(file->p, file->len, "tiny.gguf", &g, err, errlen);
    if (rc == 0)
        rc = gw_tokenizer_load(g, t, err, errlen);
    gw_gguf_close(g);
    gwt_free(file);
    return rc;
}

/* The SentencePiece vocab the llama.cpp reference ran on (same order,
 * scores and types). */
#define U2581 "\xe2\x96\x81"
static const struct {
    const char *text;
    float score;
    int32_t type;
} SPM_VOCAB[] = {
    {"<unk>", 0, 2},
    {"<s>", 0, 3},
    {"</s>", 0, 3},
    {"<0x0A>", 0, 6},
    {"<0xE2>", 0, 6},
    {"<0x82>", 0, 6},
    {"<0xAC>", 0, 6},
    {U2581, -1, 1},
    {"h", -2, 1},
    {"e", -2, 1},
    {"l", -2, 1},
    {"o", -2, 1},
    {"w", -2, 1},
    {"r", -2, 1},
    {"d", -2, 1},
    {"ll", -3, 1},
    {"he", -4, 1},
    {"llo", -5, 1},
    {"hello", -6, 1},
    {U2581 "hello", -7, 1},
    {U2581 "w", -3, 1},
    {"or", -3.5f, 1},
    {U2581 "wor", -8, 1},
    {"ld", -9, 1},
    {U2581 "world", -10, 1},
    {"<tool>", 0, 4},
    {"lo", -1, 1},
    {"<0xF0>", 0, 6},
    {"<0x9F>", 0, 6},
    {"<0x98>", 0, 6},
    {"<0x80>", 0, 6},
};
#define SPM_N (sizeof SPM_VOCAB / sizeof SPM_VOCAB[0])

/* model: tokenizer.ggml.model; bos: -1 leaves the key out. */
static gwt_buf spm_file(const char *model, int64_t bos)
{
    struct kvs k = {0};
    const char *texts[SPM_N];
    float scores[SPM_N];
    int32_t types[SPM_N];
    for (size_t i = 0; i < SPM_N; i++) {
        texts[i] = SPM_VOCAB[i].text;
        scores[i] = SPM_VOCAB[i].score;
        types[i] = SPM_VOCAB[i].type;
    }
    kv_str(&k, "general.architecture", "llama");
    kv_str(&k, "tokenizer.ggml.model", model);
    kv_str_arr(&k, "tokenizer.ggml.tokens", texts, SPM_N);
    kv_f32_arr(&k, "tokenizer.ggml.scores", scores, SPM_N);
    kv_i32_arr(&k, "tokenizer.ggml.token_type", types, SPM_N);
    if (bos >= 0)
        kv_u32(&k, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    kv_u32(&k, "tokenizer.ggml.eos_token_id", 2);
    kv_u32(&k, "tokenizer.ggml.unknown_token_id", 0);
    kv_bool(&k, "tokenizer.ggml.add_bos_token", true);
    return finish_file(&k);
}

static gw_tokenizer *spm_tokenizer(void)
{
    char err[256] = "";
    gw_tokenizer *t = NULL;
    gwt_buf f = spm_file("llama", 1);
    int rc = load_tokenizer(&f, &t, err, sizeof err);
    if (rc)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    return t;
}

/* A gpt2 vocab: the byte-mapped characters it needs (Ġ is U+0120, the
 * space), merges ranked by their order, one control token. */
#define G "\xc4\xa0"
static const char *const BPE_TOKENS[] = {
    "h",
    "e",
    "l",
    "o",
    G,
    "w",
    "r",
    "d",
    "1",
    "2", /* 0-9 */
    "he",
    "ll",
    "llo",
    "hello",
    G "w",
    "or",
    G "wor",
    "ld",
    G "world", /* 10-18 */
    "<|im_start|>",
    "!",
    "<",
    "|", /* 19-22 */
};
static const char *const BPE_MERGES[] = {
    "l l", "h e", "ll o", "he llo", G " w", "o r", G "w or", "l d", G "wor ld",
};

static gwt_buf bpe_file_merges(const char *pre, const char *const *merges, size_t n_merges)
{
    struct kvs k = {0};
    size_t n = sizeof BPE_TOKENS / sizeof BPE_TOKENS[0];
    int32_t types[sizeof BPE_TOKENS / sizeof BPE_TOKENS[0]];
    for (size_t i = 0; i < n; i++)
        types[i] = i == 19 ? 3 : 1;
    kv_str(&k, "tokenizer.ggml.model", "gpt2");
    kv_str(&k, "tokenizer.ggml.pre", pre);
    kv_str_arr(&k, "tokenizer.ggml.tokens", BPE_TOKENS, n);
    kv_i32_arr(&k, "tokenizer.ggml.token_type", types, n);
    kv_str_arr(&k, "tokenizer.ggml.merges", merges, n_merges);
    kv_u32(&k, "tokenizer.ggml.eos_token_id", 19);
    return finish_file(&k);
}

static gwt_buf bpe_file(const char *pre)
{
    return bpe_file_merges(pre, BPE_MERGES, sizeof BPE_MERGES / sizeof BPE_MERGES[0]);
}

/* ---------------------------------------------------------------------- */
/* Helpers */

/* Encodes s and compares with want[0, n_want). */
static void assert_encodes(const gw_tokenizer *t, const char *s, unsigned flags,
                           const int32_t *want, size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256] = "";
    int rc = gw_tokenizer_encode(t, s, strlen(s), flags, &ids, &n, err, sizeof err);
    if (rc)
        print_error("encode \"%s\": %s\n", s, err);
    assert_int_equal(rc, 0);
    bool same = n == n_want;
    for (size_t i = 0; same && i < n; i++)
        same = ids[i] == want[i];
    if (!same) {
        print_error("encode \"%s\": got", s);
        for (size_t i = 0; i < n; i++)
            print_error(" %d", ids[i]);
        print_error(", want");
        for (size_t i = 0; i < n_want; i++)
            print_error(" %d", want[i]);
        print_error("\n");
    }
    free(ids);
    assert_true(same);
}

#define ENCODES(t, s, flags, ...)                                                                  \
    do {                                                                                           \
        static const int32_t want_[] = {__VA_ARGS__};                                              \
        assert_encodes(t, s, flags, want_, sizeof want_ / sizeof want_[0]);                        \
    } while (0)

static void assert_decodes(const gw_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                           const char *want)
{
    char *s = NULL;
    size_t len = 0;
    char err[256] = "";
    assert_int_equal(gw_tokenizer_decode(t, ids, n, flags, &s, &len, err, sizeof err), 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
    assert_int_equal(s[len], '\0');
    free(s);
}

/* Pushes id and asserts the exact chunk that comes out. */
static void assert_chunk(gw_tok_decoder *d, int32_t id, const char *want)
{
    const char *c;
    size_t n;
    char err[128] = "";
    assert_int_equal(gw_tok_decoder_push(d, id, &c, &n, err, sizeof err), 0);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(c, want, n);
}

static void assert_flush(gw_tok_decoder *d, const char *want)
{
    const char *c;
    size_t n;
    gw_tok_decoder_flush(d, &c, &n);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(c, want, n);
}

/* ---------------------------------------------------------------------- */
/* SentencePiece */

static void test_spm_encodes_tiny_vocab_exactly_as_llama_cpp(void **state)
{
    (void)state;
    gw_tokenizer *t = spm_tokenizer();
    const unsigned P = GW_TOK_PARSE_SPECIAL;
    ENCODES(t, "hello world", P, 19, 24);
    ENCODES(t, "hello\nworld", P, 19, 3, 12, 21, 23); /* \n: <0x0A>; "world" has no prefix */
    ENCODES(t, "hello\xe2\x82\xac", P, 19, 4, 5, 6);  /* the euro sign: byte fallback */
    ENCODES(t, "<s>hello</s>", P, 1, 19, 2);          /* prefix space after a special */
    ENCODES(t, "hello<tool>world", P, 19, 25, 24);
    ENCODES(t, " hello", P, 7, 19);
    ENCODES(t, "hello  world", P, 19, 7, 24);
    ENCODES(t, "world hello", P, 24, 19);
    ENCODES(t, "\xf0\x9f\x98\x80", P, 7, 27, 28, 29, 30); /* U+1F600 as four byte tokens */
    ENCODES(t, "hello \xf0\x9f\x98\x80", P, 19, 7, 27, 28, 29, 30);
    ENCODES(t, "<tool><tool>hello", P, 25, 25, 19);
    int32_t *ids = (int32_t *)1;
    size_t n = 99;
    assert_int_equal(gw_tokenizer_encode(t, "", 0, P, &ids, &n, NULL, 0), 0);
    assert_int_equal(n, 0);
    assert_null(ids);
    gw_tokenizer_free(t);
}

static void test_spm_specials_and_bos_follow_the_flags(void **state)
{
    (void)state;
    gw_tokenizer *t = spm_tokenizer();
    /* Without PARSE_SPECIAL "<s>" is text: ▁ < s > are no tokens and have
     * no byte token either, so each byte is <unk>; user-defined <tool>
     * is matched anyway. */
    ENCODES(t, "<s>", 0, 7, 0, 0, 0);
    ENCODES(t, "hello<tool>", 0, 19, 25);
    /* add_bos_token is true in this file. */
    ENCODES(t, "hello", GW_TOK_ADD_BOS, 1, 19);
    assert_true(gw_tokenizer_add_bos(t));
    assert_int_equal(gw_tokenizer_bos(t), 1);
    assert_int_equal(gw_tokenizer_eos(t), 2);
    assert_string_equal(gw_tokenizer_model(t), "llama");
    gw_tokenizer_free(t);
}

static void test_spm_decode_shows_space_prefix_unless_lstrip(void **state)
{
    (void)state;
    gw_tokenizer *t = spm_tokenizer();
    static const int32_t hw[] = {19, 24}, sp[] = {1, 19, 2}, nl[] = {19, 3, 12, 21, 23};
    assert_decodes(t, hw, 2, GW_TOK_DEC_SPECIAL, " hello world");
    assert_decodes(t, hw, 2, GW_TOK_DEC_LSTRIP, "hello world");
    assert_decodes(t, sp, 3, GW_TOK_DEC_SPECIAL, "<s> hello</s>");
    assert_decodes(t, sp, 3, 0, " hello");
    assert_decodes(t, nl, 5, GW_TOK_DEC_SPECIAL, " hello\nworld");
    gw_tokenizer_free(t);
}

/* ---------------------------------------------------------------------- */
/* Byte-level BPE */

static gw_tokenizer *bpe_tokenizer(void)
{
    char err[256] = "";
    gw_tokenizer *t = NULL;
    gwt_buf f = bpe_file("smollm");
    int rc = load_tokenizer(&f, &t, err, sizeof err);
    if (rc)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    return t;
}

static void test_bpe_merges_lowest_rank_first_and_leftmost_on_ties(void **state)
{
    (void)state;
    gw_tokenizer *t = bpe_tokenizer();
    /* "hello": l l (rank 0), h e (1), ll o (2), he llo (3). " world":
     * Ġ w (4), o r (5), Ġw or (6), l d (7), Ġwor ld (8). The digits are
     * split one by one before the GPT-2 pattern, the trailing space before
     * them is a piece of its own. */
    ENCODES(t, "hello world 12", GW_TOK_PARSE_SPECIAL, 13, 18, 4, 8, 9);
    /* "lll": both pairs have rank 0; the left one merges. */
    ENCODES(t, "lll", 0, 11, 2);
    /* A control token in the text is its id with PARSE_SPECIAL; without
     * it the text goes through BPE: pieces "<|" "im" "_" "start" "|>"
     * "hello"; the bytes this vocab has no token for (i m _ s t a >) are
     * dropped, as llama.cpp drops them, and the "r" of "start" stays. */
    ENCODES(t, "<|im_start|>hello", GW_TOK_PARSE_SPECIAL, 19, 13);
    ENCODES(t, "<|im_start|>hello", 0, 21, 22, 6, 22, 13);
    assert_string_equal(gw_tokenizer_model(t), "gpt2");
    assert_string_equal(gw_tokenizer_pre(t), "smollm");
    /* eos and the control token <|im_start|> are the same id here; no
     * other end-of-generation text is in the vocab. */
    assert_true(gw_tokenizer_is_eog(t, 19));
    assert_false(gw_tokenizer_is_eog(t, 13));
    static const int32_t ids[] = {19, 13, 18, 20};
    assert_decodes(t, ids, 4, GW_TOK_DEC_SPECIAL, "<|im_start|>hello world!");
    assert_decodes(t, ids, 4, 0, "hello world!");
    gw_tokenizer_free(t);
}

/* ---------------------------------------------------------------------- */
/* Streaming decoder */

static void test_decoder_holds_back_emoji_bytes_until_the_character_is_complete(void **state)
{
    (void)state;
    gw_tokenizer *t = spm_tokenizer();
    gw_tok_decoder d;
    assert_int_equal(gw_tok_decoder_init(&d, t, 0), 0);
    /* U+1F600 = F0 9F 98 80, one byte token each (27..30). */
    assert_chunk(&d, 27, "");
    assert_chunk(&d, 28, "");
    assert_chunk(&d, 29, "");
    assert_chunk(&d, 30, "\xf0\x9f\x98\x80");
    assert_flush(&d, "");
    /* Text around it comes out as soon as it is complete. */
    assert_chunk(&d, 19, " hello");
    assert_chunk(&d, 7, " ");
    assert_chunk(&d, 27, "");
    assert_chunk(&d, 28, "");
    assert_chunk(&d, 29, "");
    assert_chunk(&d, 30, "\xf0\x9f\x98\x80");
    assert_chunk(&d, 24, " world");
    assert_flush(&d, "");
    gw_tok_decoder_free(&d);
    gw_tokenizer_free(t);
}

static void test_decoder_replaces_ill_formed_bytes_with_u_fffd(void **state)
{
    (void)state;
    gw_tokenizer *t = spm_tokenizer();
    gw_tok_decoder d;
    assert_int_equal(gw_tok_decoder_init(&d, t, 0), 0);
    /* F0 then "h": the held-back F0 can no longer complete. */
    assert_chunk(&d, 27, "");
    assert_chunk(&d, 8, "\xef\xbf\xbdh");
    /* F0 F0: the first is ill-formed at once, the second waits. */
    assert_chunk(&d, 27, "");
    assert_chunk(&d, 27, "\xef\xbf\xbd");
    /* F0 9F then the end: one U+FFFD for the truncated sequence. */
    assert_chunk(&d, 28, "");
    assert_flush(&d, "\xef\xbf\xbd");
    /* A lone continuation byte. */
    assert_chunk(&d, 30, "\xef\xbf\xbd");
    /* E2 82 AC is the euro sign: complete on the third. */
    assert_chunk(&d, 4, "");
    assert_chunk(&d, 5, "");
    assert_chunk(&d, 6, "\xe2\x82\xac");
    assert_flush(&d, "");
    gw_tok_decoder_free(&d);
    gw_tokenizer_free(t);
}

/* ---------------------------------------------------------------------- */
/* Bad input */

static void test_encode_rejects_invalid_utf8_naming_byte_and_offset(void **state)
{
    (void)state;
    gw_tokenizer *t = spm_tokenizer();
    static const struct {
        const char *s;
        const char *err;
    } cases[] = {
        {"ab\xff", "tokenizer: text is not valid UTF-8 (byte 0xff at offset 2)"},
        {"\xc0\xaf", "tokenizer: text is not valid UTF-8 (byte 0xc0 at offset 0)"},  /* overlong */
        {"a\xe2\x82", "tokenizer: text is not valid UTF-8 (byte 0xe2 at offset 1)"}, /* truncated */
        {"x\xed\xa0\x80",
         "tokenizer: text is not valid UTF-8 (byte 0xed at offset 1)"}, /* surrogate */
        {"hello\x80", "tokenizer: text is not valid UTF-8 (byte 0x80 at offset 5)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        char err[256] = "";
        assert_int_equal(gw_tokenizer_encode(t, cases[i].s, strlen(cases[i].s),
                                             GW_TOK_PARSE_SPECIAL, &ids, &n, err, sizeof err),
                         -EILSEQ);
        assert_string_equal(err, cases[i].err);
        assert_null(ids);
        assert_int_equal(n, 0);
    }
    gw_tokenizer_free(t);
}

static void test_decode_rejects_out_of_range_id_with_exact_message(void **state)
{
    (void)state;
    gw_tokenizer *t = spm_tokenizer();
    gw_tok_decoder d;
    assert_int_equal(gw_tok_decoder_init(&d, t, 0), 0);
    const char *c;
    size_t n;
    char err[128] = "";
    assert_chunk(&d, 27, "");
    assert_int_equal(gw_tok_decoder_push(&d, 31, &c, &n, err, sizeof err), -ERANGE);
    assert_string_equal(err, "tokenizer: token id 31 is out of range (vocab has 31 tokens)");
    assert_int_equal(n, 0);
    assert_int_equal(gw_tok_decoder_push(&d, -1, &c, &n, err, sizeof err), -ERANGE);
    assert_string_equal(err, "tokenizer: token id -1 is out of range (vocab has 31 tokens)");
    /* The stream is intact: the held-back F0 still completes. */
    assert_chunk(&d, 28, "");
    assert_chunk(&d, 29, "");
    assert_chunk(&d, 30, "\xf0\x9f\x98\x80");
    gw_tok_decoder_free(&d);

    static const int32_t ids[] = {19, 40000};
    char *s = (char *)1;
    size_t len = 7;
    assert_int_equal(gw_tokenizer_decode(t, ids, 2, 0, &s, &len, err, sizeof err), -ERANGE);
    assert_string_equal(err, "tokenizer: token id 40000 is out of range (vocab has 31 tokens)");
    assert_null(s);
    gw_tokenizer_free(t);
}

static void test_load_names_unknown_model_pre_tokenizer_and_bad_ids(void **state)
{
    (void)state;
    char err[256] = "";
    gw_tokenizer *t = NULL;
    gwt_buf f = spm_file("bert", 1);
    assert_int_equal(load_tokenizer(&f, &t, err, sizeof err), -EINVAL);
    assert_string_equal(err,
                        "tiny.gguf: tokenizer.ggml.model \"bert\" is not supported (supported: "
                        "gpt2, llama)");
    assert_null(t);

    f = bpe_file("qwen2");
    assert_int_equal(load_tokenizer(&f, &t, err, sizeof err), -EINVAL);
    assert_string_equal(err, "tiny.gguf: tokenizer.ggml.pre \"qwen2\" is not supported (supported: "
                             "smollm, gpt2, starcoder, refact, command-r, codeshell, exaone, "
                             "minerva)");
    assert_null(t);

    f = spm_file("llama", 31);
    assert_int_equal(load_tokenizer(&f, &t, err, sizeof err), -EINVAL);
    assert_string_equal(err, "tiny.gguf: tokenizer.ggml.bos_token_id = 31 is out of range "
                             "(vocab has 31 tokens)");
    assert_null(t);

    static const char *const bad_merges[] = {"l l", "he"};
    f = bpe_file_merges("smollm", bad_merges, 2);
    assert_int_equal(load_tokenizer(&f, &t, err, sizeof err), -EINVAL);
    assert_string_equal(err, "tiny.gguf: tokenizer.ggml.merges[1] \"he\" is not \"A B\"");
    assert_null(t);
}

/* ---------------------------------------------------------------------- */
/* Chat templates */

/* SmolLM2-135M-Instruct's tokenizer.chat_template, as in the file. */
static const char SMOLLM2_TEMPLATE[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

/* The Hugging Face Llama-2 chat template. */
static const char LLAMA2_TEMPLATE[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
    "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 "
    "and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
    "%}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";

#define MSG(r, c)                                                                                  \
    {                                                                                              \
        r, sizeof r - 1, c, sizeof c - 1                                                           \
    }

static void assert_renders(const gw_chat_template *ct, const gw_chat_msg *m, size_t n,
                           const char *want)
{
    char *s = NULL;
    size_t len = 0;
    char err[256] = "";
    int rc = gw_chat_format(ct, m, n, &s, &len, err, sizeof err);
    if (rc)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(s, want);
    assert_int_equal(len, strlen(want));
    free(s);
}

static void test_chatml_renders_smollm2_conversation_exactly(void **state)
{
    (void)state;
    gw_chat_template ct;
    assert_int_equal(
        gw_chat_template_init(&ct, SMOLLM2_TEMPLATE, strlen(SMOLLM2_TEMPLATE), NULL, NULL, 0), 0);
    assert_int_equal(ct.kind, GW_CHAT_CHATML);
    static const gw_chat_msg conv[] = {
        MSG("user", "Hi"),
        MSG("assistant", "Hello! How can I help?"),
        MSG("user", "What is 2+2?"),
    };
    /* Expected strings: jinja2 rendering of the template above with
     * add_generation_prompt=True. */
    assert_renders(&ct, conv, 3,
                   "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                   "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                   "Hello! How can I help?<|im_end|>\n<|im_start|>user\nWhat is "
                   "2+2?<|im_end|>\n<|im_start|>assistant\n");
    static const gw_chat_msg with_sys[] = {
        MSG("system", "Be brief."),
        MSG("user", "Hi"),
    };
    assert_renders(&ct, with_sys, 2,
                   "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                   "<|im_start|>assistant\n");
    gw_chat_template_free(&ct);
}

static void test_llama2_renders_system_and_turns_exactly(void **state)
{
    (void)state;
    gw_chat_template ct;
    assert_int_equal(
        gw_chat_template_init(&ct, LLAMA2_TEMPLATE, strlen(LLAMA2_TEMPLATE), NULL, NULL, 0), 0);
    assert_int_equal(ct.kind, GW_CHAT_LLAMA2);
    static const gw_chat_msg conv[] = {
        MSG("system", "Be brief."),
        MSG("user", "  Hi\n"),
        MSG("assistant", " Hello! "),
        MSG("user", "What is 2+2?"),
    };
    /* jinja2 renders "<s>" first; that BOS is the tokenizer's. */
    assert_renders(
        &ct, conv, 4,
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n  Hi [/INST] Hello! </s><s>[INST] What is "
        "2+2? [/INST]");
    assert_renders(&ct, conv + 1, 3, "[INST] Hi [/INST] Hello! </s><s>[INST] What is 2+2? [/INST]");

    char *s = NULL;
    size_t len = 0;
    char err[256] = "";
    static const gw_chat_msg bad[] = {MSG("user", "a"), MSG("user", "b")};
    assert_int_equal(gw_chat_format(&ct, bad, 2, &s, &len, err, sizeof err), -EINVAL);
    assert_string_equal(err, "chat: llama-2 template: messages[1] has role \"user\", expected "
                             "\"assistant\" (roles alternate user/assistant after an optional "
                             "first system message)");
    assert_null(s);
    gw_chat_template_free(&ct);
}

static void test_unknown_template_is_refused_naming_its_first_60_chars(void **state)
{
    (void)state;
    static const char tmpl[] = "{% for message in messages %}{{ message['role'] + ': ' + "
                               "message['content'] + '\n' }}{% endfor %}";
    gw_chat_template ct;
    char err[512] = "";
    assert_int_equal(gw_chat_template_init(&ct, tmpl, strlen(tmpl), NULL, err, sizeof err),
                     -EINVAL);
    assert_string_equal(err, "chat: unsupported chat template \"{% for message in messages %}{{ "
                             "message['role'] + ': ' + mes...\" (supported: ChatML, llama-2)");
    gw_chat_template_free(&ct);

    assert_int_equal(gw_chat_template_init(&ct, "", 0, NULL, err, sizeof err), -EINVAL);
    assert_string_equal(err, "chat: unsupported chat template \"\" (supported: ChatML, llama-2)");
}

static void test_chat_rejects_unknown_role_and_empty_conversation(void **state)
{
    (void)state;
    gw_chat_template ct;
    assert_int_equal(
        gw_chat_template_init(&ct, SMOLLM2_TEMPLATE, strlen(SMOLLM2_TEMPLATE), NULL, NULL, 0), 0);
    char *s = NULL;
    size_t len = 0;
    char err[256] = "";
    static const gw_chat_msg m[] = {MSG("user", "hi"), MSG("tool", "42")};
    assert_int_equal(gw_chat_format(&ct, m, 2, &s, &len, err, sizeof err), -EINVAL);
    assert_string_equal(
        err, "chat: messages[1].role \"tool\" is not supported (system, user, assistant)");
    assert_int_equal(gw_chat_format(&ct, m, 0, &s, &len, err, sizeof err), -EINVAL);
    assert_string_equal(err, "chat: the conversation has no messages");
    assert_null(s);
    gw_chat_template_free(&ct);
}

/* ---------------------------------------------------------------------- */
/* SmolLM2 (label model) */

struct model_state {
    gw_gguf *g;
    gw_tokenizer *t;
    json_t *tokens; /* tests/fixtures/smollm2_tokens.json */
    json_t *greedy; /* tests/fixtures/smollm2_greedy.json */
};

static json_t *load_fixture(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", gw_source_dir(), name);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        print_error("%s: %s (line %d)\n", path, je.text, je.line);
    return j;
}

static int model_setup(void **state)
{
    struct model_state *m = calloc(1, sizeof *m);
    if (!m)
        return -1;
    *state = m;
    m->tokens = load_fixture("smollm2_tokens.json");
    m->greedy = load_fixture("smollm2_greedy.json");
    if (!m->tokens || !m->greedy)
        return -1;
    char err[512] = "";
    /* main() made sure the file is there (exit 77 otherwise) */
    int rc = gw_gguf_open(gw_need_model(), &m->g, err, sizeof err);
    if (rc == 0)
        rc = gw_tokenizer_load(m->g, &m->t, err, sizeof err);
    if (rc) {
        print_error("%s\n", err);
        return -1;
    }
    return 0;
}

static int model_teardown(void **state)
{
    struct model_state *m = *state;
    if (m) {
        gw_tokenizer_free(m->t);
        gw_gguf_close(m->g);
        json_decref(m->tokens);
        json_decref(m->greedy);
        free(m);
    }
    return 0;
}

static void assert_encodes_json(const gw_tokenizer *t, const char *s, size_t len,
                                const json_t *want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256] = "";
    int rc = gw_tokenizer_encode(t, s, len, GW_TOK_PARSE_SPECIAL, &ids, &n, err, sizeof err);
    if (rc)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    bool same = n == json_array_size(want);
    for (size_t i = 0; same && i < n; i++)
        same = ids[i] == json_integer_value(json_array_get(want, i));
    if (!same) {
        print_error("encode \"%.*s\": got", (int)len, s);
        for (size_t i = 0; i < n; i++)
            print_error(" %d", ids[i]);
        print_error("\n");
    }
    free(ids);
    assert_true(same);
}

static void test_smollm2_metadata_and_end_of_generation_ids(void **state)
{
    struct model_state *m = *state;
    assert_int_equal(gw_tokenizer_n_vocab(m->t), 49152);
    assert_string_equal(gw_tokenizer_model(m->t), "gpt2");
    assert_string_equal(gw_tokenizer_pre(m->t), "smollm");
    assert_int_equal(gw_tokenizer_bos(m->t), 1);
    assert_int_equal(gw_tokenizer_eos(m->t), 2);
    assert_false(gw_tokenizer_add_bos(m->t));
    const int32_t *eog;
    size_t n;
    gw_tokenizer_eog_ids(m->t, &eog, &n);
    assert_int_equal(n, 2);
    assert_int_equal(eog[0], 0); /* <|endoftext|> */
    assert_int_equal(eog[1], 2); /* <|im_end|> */
}

static void test_smollm2_encodes_every_fixture_string_to_reference_ids(void **state)
{
    struct model_state *m = *state;
    json_t *cases = json_object_get(m->tokens, "cases");
    assert_true(json_array_size(cases) >= 30);
    size_t i;
    json_t *c;
    json_array_foreach (cases, i, c) {
        json_t *text = json_object_get(c, "text");
        assert_encodes_json(m->t, json_string_value(text), json_string_length(text),
                            json_object_get(c, "ids"));
    }
}

static void test_smollm2_decode_of_encode_is_identity(void **state)
{
    struct model_state *m = *state;
    json_t *cases = json_object_get(m->tokens, "cases");
    size_t i;
    json_t *c;
    json_array_foreach (cases, i, c) {
        json_t *text = json_object_get(c, "text");
        const char *s = json_string_value(text);
        size_t len = json_string_length(text);
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(gw_tokenizer_encode(m->t, s, len, GW_TOK_PARSE_SPECIAL, &ids, &n, NULL, 0),
                         0);
        char *back = NULL;
        size_t blen = 0;
        assert_int_equal(
            gw_tokenizer_decode(m->t, ids, n, GW_TOK_DEC_SPECIAL, &back, &blen, NULL, 0), 0);
        assert_int_equal(blen, len);
        assert_memory_equal(back, s, len);
        free(back);
        free(ids);
    }
}

static void test_smollm2_decoder_streams_emoji_byte_tokens_whole(void **state)
{
    struct model_state *m = *state;
    gw_tok_decoder d;
    assert_int_equal(gw_tok_decoder_init(&d, m->t, 0), 0);
    /* U+1F600 as byte tokens: F0 "ð" 187, 9F "Ł" 249, 98 "ĺ" 242, 80 "Ģ" 218. */
    assert_chunk(&d, 187, "");
    assert_chunk(&d, 249, "");
    assert_chunk(&d, 242, "");
    assert_chunk(&d, 218, "\xf0\x9f\x98\x80");
    /* As the encoder splits it: "ðŁ" 10813, then 242, 218. */
    assert_chunk(&d, 10813, "");
    assert_chunk(&d, 242, "");
    assert_chunk(&d, 218, "\xf0\x9f\x98\x80");
    /* Control tokens show nothing without GW_TOK_DEC_SPECIAL. */
    assert_chunk(&d, 2, "");
    assert_flush(&d, "");
    gw_tok_decoder_free(&d);
}

static void test_smollm2_prompts_match_the_greedy_fixture(void **state)
{
    struct model_state *m = *state;
    gw_chat_template ct;
    char err[256] = "";
    assert_int_equal(gw_chat_template_from_gguf(&ct, m->g, m->t, err, sizeof err), 0);
    assert_int_equal(ct.kind, GW_CHAT_CHATML);
    assert_string_equal(ct.default_system,
                        "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    json_t *cases = json_object_get(m->greedy, "cases");
    assert_int_equal(json_array_size(cases), 6);
    size_t i, n_chat = 0;
    json_t *c;
    json_array_foreach (cases, i, c) {
        json_t *prompt = json_object_get(c, "prompt");
        if (json_is_true(json_object_get(c, "chat"))) {
            /* The chat prompt renders from the messages to the fixture's
             * prompt (llama.cpp's side used jinja2 on the same template). */
            json_t *msgs = json_object_get(c, "messages");
            gw_chat_msg mm[8];
            size_t k;
            json_t *x;
            assert_true(json_array_size(msgs) <= 8);
            json_array_foreach (msgs, k, x) {
                json_t *r = json_object_get(x, "role"), *ct_ = json_object_get(x, "content");
                mm[k] = (gw_chat_msg){json_string_value(r), json_string_length(r),
                                      json_string_value(ct_), json_string_length(ct_)};
            }
            char *s = NULL;
            size_t len = 0;
            assert_int_equal(
                gw_chat_format(&ct, mm, json_array_size(msgs), &s, &len, err, sizeof err), 0);
            assert_string_equal(s, json_string_value(prompt));
            free(s);
            n_chat++;
        }
        assert_encodes_json(m->t, json_string_value(prompt), json_string_length(prompt),
                            json_object_get(c, "prompt_ids"));
    }
    assert_int_equal(n_chat, 3);
    gw_chat_template_free(&ct);
}

static void test_smollm2_decodes_greedy_ids_to_reference_text(void **state)
{
    struct model_state *m = *state;
    json_t *cases = json_object_get(m->greedy, "cases");
    size_t i;
    json_t *c;
    json_array_foreach (cases, i, c) {
        json_t *ids = json_object_get(c, "greedy_ids");
        json_t *text = json_object_get(c, "text");
        int32_t v[64];
        size_t n = json_array_size(ids);
        assert_true(n > 0 && n <= 64);
        for (size_t k = 0; k < n; k++)
            v[k] = (int32_t)json_integer_value(json_array_get(ids, k));
        /* llama.cpp's detokenize(special=True). */
        assert_decodes(m->t, v, n, GW_TOK_DEC_SPECIAL, json_string_value(text));
    }
}

static void test_smollm2_decode_rejects_out_of_range_id(void **state)
{
    struct model_state *m = *state;
    static const int32_t ids[] = {19556, 49152};
    char *s = NULL;
    size_t len = 0;
    char err[128] = "";
    assert_int_equal(gw_tokenizer_decode(m->t, ids, 2, 0, &s, &len, err, sizeof err), -ERANGE);
    assert_string_equal(err, "tokenizer: token id 49152 is out of range (vocab has 49152 tokens)");
}

/* ---------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    (void)argc;
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_spm_encodes_tiny_vocab_exactly_as_llama_cpp),
        cmocka_unit_test(test_spm_specials_and_bos_follow_the_flags),
        cmocka_unit_test(test_spm_decode_shows_space_prefix_unless_lstrip),
        cmocka_unit_test(test_bpe_merges_lowest_rank_first_and_leftmost_on_ties),
        cmocka_unit_test(test_decoder_holds_back_emoji_bytes_until_the_character_is_complete),
        cmocka_unit_test(test_decoder_replaces_ill_formed_bytes_with_u_fffd),
        cmocka_unit_test(test_encode_rejects_invalid_utf8_naming_byte_and_offset),
        cmocka_unit_test(test_decode_rejects_out_of_range_id_with_exact_message),
        cmocka_unit_test(test_load_names_unknown_model_pre_tokenizer_and_bad_ids),
        cmocka_unit_test(test_chatml_renders_smollm2_conversation_exactly),
        cmocka_unit_test(test_llama2_renders_system_and_turns_exactly),
        cmocka_unit_test(test_unknown_template_is_refused_naming_its_first_60_chars),
        cmocka_unit_test(test_chat_rejects_unknown_role_and_empty_conversation),
    };
    const struct CMUnitTest model[] = {
        cmocka_unit_test(test_smollm2_metadata_and_end_of_generation_ids),
        cmocka_unit_test(test_smollm2_encodes_every_fixture_string_to_reference_ids),
        cmocka_unit_test(test_smollm2_decode_of_encode_is_identity),
        cmocka_unit_test(test_smollm2_decoder_streams_emoji_byte_tokens_whole),
        cmocka_unit_test(test_smollm2_prompts_match_the_greedy_fixture),
        cmocka_unit_test(test_smollm2_decodes_greedy_ids_to_reference_text),
        cmocka_unit_test(test_smollm2_decode_rejects_out_of_range_id),
    };
    if (gw_prog_is(argv[0], "test_tokenizer_model")) {
        gw_need_model(); /* exit 77 without it */
        return cmocka_run_group_tests_name("tokenizer_model", model, model_setup, model_teardown);
    }
    return cmocka_run_group_tests_name("tokenizer", unit, NULL, NULL);
}
