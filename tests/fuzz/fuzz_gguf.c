/* fuzz_gguf.c - bytes as a GGUF file: gw_gguf_open_buffer must refuse
 * what is malformed with a message, and what it accepts must be safe to
 * walk in full (every key, value, array element and tensor) and to build a
 * tokenizer from. Run with -rss_limit_mb=512 -malloc_limit_mb=256: the
 * loader allocates nothing from a size the file states before checking it
 * against the file's size. */
#include "fuzz.h"
#include "gw_engine.h"

#include <errno.h>
#include <string.h>

static volatile unsigned sink; /* keeps the reads below from being optimised away */

/* Reads everything v holds (strings byte by byte, so ASan sees them). */
static unsigned walk_value(const gw_gguf_value *v, int depth)
{
    unsigned h = 0;
    int64_t i64;
    float f;
    bool b;
    const char *s;
    size_t n;
    if (gw_gguf_value_int(v, &i64) == 0)
        h += (unsigned)i64;
    if (gw_gguf_value_f32(v, &f) == 0)
        h += f == f;
    if (gw_gguf_value_bool(v, &b) == 0)
        h += b;
    if (gw_gguf_value_str(v, &s, &n) == 0)
        for (size_t k = 0; k < n; k++)
            h += (unsigned char)s[k];
    uint32_t et = gw_gguf_arr_type(v);
    uint64_t len = gw_gguf_arr_len(v);
    if (gw_gguf_value_type(v) != GW_GGUF_ARRAY) {
        GW_FUZZ_CHECK(len == 0 && et == UINT32_MAX);
        return h;
    }
    uint64_t lim = len < 4096 ? len : 4096;
    if (et == GW_GGUF_STRING) {
        for (uint64_t i = 0; i < lim; i++) {
            GW_FUZZ_CHECK(gw_gguf_arr_str(v, i, &s, &n) == 0);
            for (size_t k = 0; k < n; k++)
                h += (unsigned char)s[k];
        }
        GW_FUZZ_CHECK(gw_gguf_arr_str(v, len, &s, &n) == -ERANGE);
    } else if (et == GW_GGUF_ARRAY) {
        for (uint64_t i = 0; i < lim && depth < 8; i++) {
            const gw_gguf_value *e = gw_gguf_arr_arr(v, i);
            GW_FUZZ_CHECK(e != NULL);
            h += walk_value(e, depth + 1);
        }
        GW_FUZZ_CHECK(gw_gguf_arr_arr(v, len) == NULL);
    } else {
        const unsigned char *p = gw_gguf_arr_data(v);
        GW_FUZZ_CHECK(p != NULL || len == 0);
        static const size_t esize[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        GW_FUZZ_CHECK(et < sizeof(esize) / sizeof(esize[0]) && esize[et] > 0);
        if (len)
            h += p[0] + p[len * esize[et] - 1]; /* first and last byte in bounds */
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_gguf *g = NULL;
    char err[512];
    err[0] = '\0';
    int rc = gw_gguf_open_buffer(data, size, "fuzz.gguf", &g, err, sizeof(err));
    if (rc != 0) {
        GW_FUZZ_CHECK(g == NULL && (rc == -EINVAL || rc == -ENOMEM));
        GW_FUZZ_CHECK(rc != -EINVAL || err[0] != '\0');
        return 0;
    }
    GW_FUZZ_CHECK(g != NULL);
    GW_FUZZ_CHECK(gw_gguf_version(g) == 2 || gw_gguf_version(g) == 3);
    uint64_t align = gw_gguf_alignment(g);
    GW_FUZZ_CHECK(align > 0);
    unsigned h = 0;
    for (size_t i = 0; i < gw_gguf_kv_count(g); i++) {
        const char *key;
        size_t klen;
        const gw_gguf_value *v = gw_gguf_kv_at(g, i, &key, &klen);
        GW_FUZZ_CHECK(v != NULL);
        for (size_t k = 0; k < klen; k++)
            h += (unsigned char)key[k];
        h += walk_value(v, 0);
    }
    const unsigned char *lo = data, *hi = data + size;
    for (size_t i = 0; i < gw_gguf_tensor_count(g); i++) {
        const gw_gguf_tensor *t = gw_gguf_tensor_at(g, i);
        GW_FUZZ_CHECK(t != NULL && t->n_dims >= 1 && t->n_dims <= 4);
        GW_FUZZ_CHECK(t->offset % align == 0);
        const unsigned char *p = t->data;
        GW_FUZZ_CHECK(t->nbytes == 0 || (p >= lo && t->nbytes <= (size_t)(hi - p)));
        for (size_t k = 0; k < t->name_len; k++)
            h += (unsigned char)t->name[k];
    }
    gw_tokenizer *tok = NULL;
    char terr[512];
    int trc = gw_tokenizer_load(g, &tok, terr, sizeof(terr));
    GW_FUZZ_CHECK(trc == 0 || trc == -EINVAL || trc == -ENOMEM);
    if (trc == 0) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (gw_tokenizer_encode(tok, "Hello, world!", 13, GW_TOK_PARSE_SPECIAL, &ids, &n, terr,
                                sizeof(terr)) == 0)
            for (size_t i = 0; i < n; i++)
                GW_FUZZ_CHECK(ids[i] >= 0 && (uint32_t)ids[i] < gw_tokenizer_n_vocab(tok));
        free(ids);
        gw_tokenizer_free(tok);
    }
    gw_gguf_close(g);
    sink = h;
    return 0;
}
