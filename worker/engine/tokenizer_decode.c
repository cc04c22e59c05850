/* tokenizer_decode.c: token ids -> text. The streaming decoder
 * (gw_tok_decoder) emits each token's decoded piece as soon as its UTF-8
 * characters are complete, replacing ill-formed bytes with U+FFFD; the
 * one-shot gw_tokenizer_decode runs it over a whole array.
 *
 * Separate because it only reads the pieces tokenizer_load.c decoded into
 * the arena, and is what streams text back to clients token by token.
 */
#include "tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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
        int k = gw_tok_utf8_step(s + i, n - i);
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
        gw_errf(err, errlen,
                "tokenizer: token id %" PRId32 " is out of range (vocab has %" PRIu32 " tokens)",
                id, t->n_vocab);
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
        if ((rc = gw_tok_grow((void **)&buf, &cap, m + cl + 1, 1)))
            goto fail;
        memcpy(buf + m, c, cl);
        m += cl;
    }
    if ((rc = gw_tok_grow((void **)&buf, &cap, m + 1, 1)))
        goto fail;
    buf[m] = '\0';
    gw_tok_decoder_free(&d);
    *out = buf;
    *len = m;
    return 0;
fail:
    if (rc == -ENOMEM)
        gw_errf(err, errlen, "tokenizer: out of memory decoding %zu tokens", n);
    free(buf);
    gw_tok_decoder_free(&d);
    return rc;
}
