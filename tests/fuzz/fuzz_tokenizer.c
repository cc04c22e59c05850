/* fuzz_tokenizer.c - arbitrary bytes into gw_tokenizer_encode with the
 * SmolLM2 tokenizer (models/SmolLM2-135M-Instruct.Q4_1.gguf, loaded once;
 * without it the target says so and does nothing).
 *
 * Input: byte 0 holds the flags (bit 0 GW_TOK_PARSE_SPECIAL, bit 1
 * GW_TOK_ADD_BOS), the rest is the text. The contract: invalid UTF-8 is
 * refused with -EILSEQ exactly when gw_utf8_valid says so; otherwise every
 * id is in the vocab, and decoding the ids (specials shown) gives back the
 * text: byte-level BPE loses nothing. */
#include "fuzz.h"
#include "gw_supervisor.h"
#include "gw_worker.h"

#include <errno.h>
#include <string.h>

static gw_tokenizer *tok;
static int tried;

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
    GW_FUZZ_CHECK((len == 0) == (n == 0) || (flags & GW_TOK_ADD_BOS));
    if (n == 0)
        return 0;
    char *out = NULL;
    size_t olen = 0;
    int32_t bos = gw_tokenizer_bos(tok);
    size_t skip = (n > 0 && (flags & GW_TOK_ADD_BOS) && gw_tokenizer_add_bos(tok) && ids[0] == bos);
    GW_FUZZ_CHECK(gw_tokenizer_decode(tok, ids + skip, n - skip, GW_TOK_DEC_SPECIAL, &out, &olen,
                                      err, sizeof(err)) == 0);
    GW_FUZZ_CHECK(olen == len && memcmp(out, text, len) == 0);
    free(out);
    free(ids);
    return 0;
}
