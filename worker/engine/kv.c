/* kv.c: the paged KV cache. The pool is n_blocks blocks of GW_KV_BLOCK
 * positions (every layer has the same blocks at the same indices). A
 * sequence reserves the blocks it may ever need when it is opened, so a
 * request that cannot be placed waits before it starts instead of failing
 * in the middle, and takes them from the free list only as its positions
 * fill, so short answers leave the memory of long max_tokens to others.
 * Blocks are all the same size: sequences of any length share the pool
 * without fragmentation. Single-threaded: the context's owner calls these
 * between passes.
 */
#include "ctx.h"

#include <errno.h>
#include <stdlib.h>

static int blocks_for(int n_tokens)
{
    return (n_tokens + GW_KV_BLOCK - 1) / GW_KV_BLOCK;
}

int gw__kv_init(gw_ctx *x, int kv_tokens, int max_seqs, int with_cache)
{
    const gw_model_config *c = &x->m->cfg;
    x->max_seqs = max_seqs;
    x->n_blocks = blocks_for(kv_tokens);
    x->legacy_seq = -1;
    x->seqs = calloc((size_t)max_seqs, sizeof *x->seqs);
    x->free_blk = malloc((size_t)x->n_blocks * sizeof *x->free_blk);
    if (!x->seqs || !x->free_blk)
        return -ENOMEM;
    int per_seq = blocks_for(x->n_ctx);
    for (int s = 0; s < max_seqs; s++)
        if (!(x->seqs[s].table = malloc((size_t)per_seq * sizeof(int32_t))))
            return -ENOMEM;
    /* handed out lowest first: a lightly used pool touches few pages */
    for (int b = 0; b < x->n_blocks; b++)
        x->free_blk[b] = x->n_blocks - 1 - b;
    x->n_free = x->n_blocks;
    if (!with_cache)
        return 0;
    size_t kv_dim = (size_t)c->head_dim * (size_t)c->n_head_kv;
    size_t n = (size_t)c->n_layer * (size_t)x->n_blocks * GW_KV_BLOCK * kv_dim;
    /* calloc: the pages are only touched as blocks fill. */
    x->key_cache = calloc(n, sizeof(uint16_t));
    x->value_cache = calloc(n, sizeof(uint16_t));
    return x->key_cache && x->value_cache ? 0 : -ENOMEM;
}

void gw__kv_free(gw_ctx *x)
{
    if (x->seqs)
        for (int s = 0; s < x->max_seqs; s++)
            free(x->seqs[s].table);
    free(x->seqs);
    free(x->free_blk);
    free(x->key_cache);
    free(x->value_cache);
}

int gw_seq_open(gw_ctx *x, int n_tokens)
{
    if (!x || n_tokens < 1)
        return -EINVAL;
    int need = blocks_for(n_tokens);
    if (n_tokens > x->n_ctx || need > x->n_blocks)
        return GW_ECONTEXT;
    if (need > x->n_blocks - x->n_reserved)
        return -EAGAIN;
    for (int s = 0; s < x->max_seqs; s++) {
        struct gw_seq *q = &x->seqs[s];
        if (q->open)
            continue;
        q->open = 1;
        q->reserved = need;
        q->n_blocks = 0;
        x->n_reserved += need;
        return s;
    }
    return -EAGAIN;
}

void gw_seq_close(gw_ctx *x, int seq)
{
    if (!x || seq < 0 || seq >= x->max_seqs || !x->seqs[seq].open)
        return;
    struct gw_seq *q = &x->seqs[seq];
    for (int i = q->n_blocks - 1; i >= 0; i--)
        x->free_blk[x->n_free++] = q->table[i];
    x->n_reserved -= q->reserved;
    *q = (struct gw_seq){.table = q->table};
    if (seq == x->legacy_seq)
        x->legacy_seq = -1;
}

int gw__kv_grow(gw_ctx *x, int seq, int end)
{
    struct gw_seq *q = &x->seqs[seq];
    int need = blocks_for(end);
    if (need > q->reserved)
        return GW_ECONTEXT;
    /* never empty: every open sequence's reservation is still free */
    while (q->n_blocks < need)
        q->table[q->n_blocks++] = x->free_blk[--x->n_free];
    return 0;
}

int gw_ctx_kv_tokens(const gw_ctx *x)
{
    return x->n_blocks * GW_KV_BLOCK;
}

int gw_ctx_kv_unreserved(const gw_ctx *x)
{
    return (x->n_blocks - x->n_reserved) * GW_KV_BLOCK;
}

int gw_ctx_max_seqs(const gw_ctx *x)
{
    return x->max_seqs;
}

int gw_ctx_max_rows(const gw_ctx *x)
{
    return x->max_rows;
}
