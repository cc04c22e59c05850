/* fuzz_tokenizer.c - arbitrary bytes into gw_tokenizer_encode with the
 * SmolLM2 tokenizer (models/SmolLM2-135M-Instruct.Q4_1.gguf, loaded once;
 * without it the target says so and does nothing).
 *
 * Input: byte 0 holds the flags (bit 0 GW_TOK_PARSE_SPECIAL, bit 1
 * GW_TOK_ADD_BOS), the rest is the text. The contract: invalid UTF-8 is
 * refused with -EILSEQ exactly when gw_utf8_valid says so; otherwise every
 * id is in the vocab, and decoding the ids (specials shown) gives back the
 * text, less the bytes the vocab has no token for (dropped, as llama.cpp
 * does: SmolLM2 lacks 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, and the lead
 * bytes 0xf1, 0xf2; a text with one of those decodes to U+FFFD where the
 * rest of its character was, so it gets no round-trip check). */
#include "fuzz.h"
#include "gw_common.h"
#include "gw_engine.h"

#include <errno.h>
#include <string.h>

static gw_tokenizer *tok;
static int tried;
static unsigned char dropped[256]; /* bytes the vocab has no token for */

/* Byte b as GPT-2's byte-level BPE writes it (bytes_to_unicode), UTF-8. */
static size_t gpt2_byte(unsigned b, char out[2])
{
    unsigned cp = b, k = 0;
    if (!((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae))) {
        for (unsigned x = 0; x < b; x++)
            k += !((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae));
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static void init(void)
{
    char path[1024], err[512];
    snprintf(path, sizeof(path), "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", GW_FUZZ_SOURCE_DIR);
    gw_gguf *g = NULL;
    if (gw_gguf_open(path, &g, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s: no model (scripts/fetch-model.sh); nothing to do\n",
                path);
        return;
    }
    if (gw_tokenizer_load(g, &tok, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort();
    }
    gw_gguf_close(g);
    for (int b = 0; b < 128; b++) {
        char c = (char)b;
        int32_t *ids = NULL;
        size_t n = 0;
        GW_FUZZ_CHECK(gw_tokenizer_encode(tok, &c, 1, 0, &ids, &n, err, sizeof(err)) == 0);
        dropped[b] = n == 0;
        free(ids);
    }
    for (unsigned b = 0; b < 256; b++) {
        char m[2];
        size_t ml = gpt2_byte(b, m);
        int none = gw_tokenizer_find(tok, m, ml) < 0;
        if (b < 128)
            GW_FUZZ_CHECK(none == dropped[b]); /* encode drops exactly these */
        dropped[b] = (unsigned char)none;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tried) {
        tried = 1;
        init();
    }
    if (!tok || size < 1)
        return 0;
    unsigned flags = data[0] & (GW_TOK_PARSE_SPECIAL | GW_TOK_ADD_BOS);
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids = NULL;
    size_t n = 0;
    char err[512];
    int rc = gw_tokenizer_encode(tok, text, len, flags, &ids, &n, err, sizeof(err));
    GW_FUZZ_CHECK(rc == 0 || rc == -EILSEQ || rc == -ENOMEM);
    GW_FUZZ_CHECK((rc == -EILSEQ) == !gw_utf8_valid(text, len));
    if (rc != 0) {
        free(ids);
        return 0;
    }
    uint32_t nv = gw_tokenizer_n_vocab(tok);
    for (size_t i = 0; i < n; i++)
        GW_FUZZ_CHECK(ids[i] >= 0 && (uint32_t)ids[i] < nv);
    char *want = malloc(len + 1);
    GW_FUZZ_CHECK(want != NULL);
    size_t wlen = 0;
    int lossy = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)text[i];
        if (!dropped[b])
            want[wlen++] = text[i];
        else if (b >= 128)
            lossy = 1;
    }
    GW_FUZZ_CHECK((wlen == 0) == (n == 0) || (flags & GW_TOK_ADD_BOS));
    if (n == 0) {
        free(want);
        return 0;
    }
    char *out = NULL;
    size_t olen = 0;
    int32_t bos = gw_tokenizer_bos(tok);
    size_t skip = (n > 0 && (flags & GW_TOK_ADD_BOS) && gw_tokenizer_add_bos(tok) && ids[0] == bos);
    GW_FUZZ_CHECK(gw_tokenizer_decode(tok, ids + skip, n - skip, GW_TOK_DEC_SPECIAL, &out, &olen,
                                      err, sizeof(err)) == 0);
    GW_FUZZ_CHECK(lossy || (olen == wlen && memcmp(out, want, wlen) == 0));
    free(want);
    free(out);
    free(ids);
    return 0;
}
