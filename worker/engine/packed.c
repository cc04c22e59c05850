/* packed.c: Q4_0, Q4_1 and Q8_0 weight matrices regrouped for the batched
 * products, the order of operations of those products, and their portable
 * kernel.
 *
 * The order. Output r for activation row x is, over the blocks b of the
 * row in order,
 *     acc  = fmaf(d_w[b] * d_x[b], (float)isum[b], acc)
 *     mins = fmaf(m_w[b], s_x[b], mins)            (Q4_1 only)
 *     out  = acc + mins                            (Q4_1; else acc)
 * where isum[b] is the block's exact integer dot product (Q4_0's values
 * less 8). d_w * d_x and m_w * s_x are products of two halves (11-bit
 * significands): exact in a float. |isum| < 2^20: exact too. So each
 * output takes one rounding per block and one at the end, whatever
 * instructions add the integers, and every level gives the same bits.
 *
 * llama.cpp's x86 order (which this engine kept until 2026-12-03) adds
 * 4-element integer sums into 8 float lanes per block and output: 8
 * conversions and multiply-adds where this order has one. Besides the
 * integer multiply-adds (one vpdpbusd per 2 outputs and block either
 * way), AVX-512 took a conversion, a multiply and a fused add per 2
 * outputs and block there, the arithmetic bound of a batched step; here
 * they are per 16 (docs/BENCHMARKS.md, "Packed weights"). This order
 * rounds less often; the outputs differ from llama.cpp's in the last
 * bits.
 *
 * The layout (W->packed, 64-byte aligned). Rows in groups of GW_PACK_ROWS
 * (16), the last padded with zero rows; group g at g * W->pack_stride:
 *   qs  for each block b, V vectors of 64 bytes (V = 4 for Q4_0 and Q4_1,
 *       8 for Q8_0): 4-byte lane r of vector k holds bytes 4k..4k+3 of row
 *       r's qs. Q4: their low nibbles are elements 4k..4k+3 and their high
 *       ones 16+4k..16+4k+3. Q8_0: elements 4k..4k+3, each xor 0x80 (plus
 *       128: unsigned, the operand vpdpbusd takes unsigned);
 *   d   nblk x 16 halves, block b's scale of row r at 16 b + r;
 *   m   (Q4_1) the same for the minimums.
 * A kernel computes isum as (unsigned weights . x) - off * sum(x), off = 8
 * (Q4_0), 128 (Q8_0) or 0 (Q4_1), with gw_q8.sum for sum(x): the activation
 * is the broadcast operand, 4 bytes at a time, so one integer multiply-add
 * takes a 4-element piece of 16 outputs. */
#include "engine.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

int gw_type_packs(uint32_t type)
{
    return type == GW_T_Q4_0 || type == GW_T_Q4_1 || type == GW_T_Q8_0;
}

/* Bytes of qs per block of a group: V vectors of 64. */
static size_t qs_bytes(uint32_t type)
{
    return type == GW_T_Q8_0 ? 8 * 64 : 4 * 64;
}

static void pack_row(gw_mat *W, uint8_t *grp, int r, const uint8_t *src, int nblk)
{
    size_t qb = qs_bytes(W->type);
    uint16_t *dh = (uint16_t *)(grp + (size_t)nblk * qb), *mh = dh + (size_t)nblk * GW_PACK_ROWS;
    for (int b = 0; b < nblk; b++) {
        uint8_t *q = grp + (size_t)b * qb + 4 * (size_t)r;
        if (W->type == GW_T_Q8_0) {
            const gw_blk_q8_0 *x = (const gw_blk_q8_0 *)src + b;
            for (int e = 0; e < 32; e++)
                q[(e / 4) * 64 + e % 4] = (uint8_t)x->qs[e] ^ 0x80;
            dh[b * GW_PACK_ROWS + r] = x->d;
        } else if (W->type == GW_T_Q4_1) {
            const gw_blk_q4_1 *x = (const gw_blk_q4_1 *)src + b;
            for (int e = 0; e < 16; e++)
                q[(e / 4) * 64 + e % 4] = x->qs[e];
            dh[b * GW_PACK_ROWS + r] = x->d;
            mh[b * GW_PACK_ROWS + r] = x->m;
        } else {
            const gw_blk_q4_0 *x = (const gw_blk_q4_0 *)src + b;
            for (int e = 0; e < 16; e++)
                q[(e / 4) * 64 + e % 4] = x->qs[e];
            dh[b * GW_PACK_ROWS + r] = x->d;
        }
    }
}

int gw_mat_pack(gw_mat *W)
{
    if (!gw_type_packs(W->type) || W->packed || W->cols % 32 != 0)
        return 0;
    int nblk = W->cols / 32, groups = (W->rows + GW_PACK_ROWS - 1) / GW_PACK_ROWS;
    size_t scales = (size_t)nblk * GW_PACK_ROWS * 2 * (W->type == GW_T_Q4_1 ? 2 : 1);
    size_t stride = ((size_t)nblk * qs_bytes(W->type) + scales + 63) / 64 * 64;
    uint8_t *p = aligned_alloc(64, stride * (size_t)groups);
    if (!p)
        return -ENOMEM;
    memset(p, 0, stride * (size_t)groups); /* padding rows: zero scales, zero outputs */
    W->packed = p, W->pack_stride = stride;
    for (int r = 0; r < W->rows; r++)
        pack_row(W, p + (size_t)(r / GW_PACK_ROWS) * stride, r % GW_PACK_ROWS,
                 W->data + (size_t)r * W->row_bytes, nblk);
    return 0;
}

void gw_mat_pack_free(gw_mat *W)
{
    free(W->packed);
    W->packed = NULL, W->pack_stride = 0;
}

/* The weight of row r, element 4k + j (k < 8) of block b, unsigned. */
static inline int pk_weight(const uint8_t *grp, bool q8, int b, int k, int r, int j)
{
    if (q8)
        return grp[((size_t)b * 8 + (size_t)k) * 64 + 4 * (size_t)r + (size_t)j];
    uint8_t v = grp[((size_t)b * 4 + (size_t)(k & 3)) * 64 + 4 * (size_t)r + (size_t)j];
    return k < 4 ? v & 15 : v >> 4;
}

/* One activation row against one group: the 16 outputs in acc. */
static void pk_group_row(const gw_mat *W, const uint8_t *grp, const gw_q8 *y, float acc[16])
{
    int nblk = W->cols / 32, off = W->type == GW_T_Q8_0 ? 128 : W->type == GW_T_Q4_0 ? 8 : 0;
    bool q8 = W->type == GW_T_Q8_0;
    const uint16_t *dh = (const uint16_t *)(grp + (size_t)nblk * qs_bytes(W->type));
    const uint16_t *mh = dh + (size_t)nblk * GW_PACK_ROWS;
    float mins[16] = {0};
    for (int r = 0; r < 16; r++)
        acc[r] = 0;
    for (int b = 0; b < nblk; b++) {
        for (int r = 0; r < 16; r++) {
            int32_t isum = -off * y[b].sum;
            for (int k = 0; k < 8; k++)
                for (int j = 0; j < 4; j++)
                    isum += pk_weight(grp, q8, b, k, r, j) * y[b].qs[4 * k + j];
            acc[r] = fmaf(gw_h2f(dh[b * 16 + r]) * y[b].d, (float)isum, acc[r]);
        }
    }
    if (W->type != GW_T_Q4_1)
        return;
    for (int b = 0; b < nblk; b++)
        for (int r = 0; r < 16; r++)
            mins[r] = fmaf(gw_h2f(mh[b * 16 + r]), y[b].s, mins[r]);
    for (int r = 0; r < 16; r++)
        acc[r] += mins[r];
}

void gw_pk_rows_portable(const gw_pk_args *a)
{
    const gw_mat *W = a->W;
    for (int g = a->r0 / GW_PACK_ROWS; g * GW_PACK_ROWS < a->r1; g++) {
        const uint8_t *grp = W->packed + (size_t)g * W->pack_stride;
        int base = g * GW_PACK_ROWS;
        int lo = a->r0 > base ? a->r0 - base : 0;
        int hi = a->r1 - base < GW_PACK_ROWS ? a->r1 - base : GW_PACK_ROWS;
        for (int c = 0; c < a->nb; c++) {
            float acc[16];
            pk_group_row(W, grp, a->xq + (size_t)c * a->xq_stride, acc);
            for (int r = lo; r < hi; r++)
                a->out[(size_t)c * a->out_stride + (size_t)(base + r)] = acc[r];
        }
    }
}

void gw_pk_rows_at(int level, int vnni, const gw_pk_args *a)
{
    if (a->nb <= 0 || a->r0 >= a->r1)
        return;
    if (level >= GW_SIMD_AVX512 && vnni)
        gw_pk_rows_avx512(a);
    else if (level >= GW_SIMD_AVX2)
        gw_pk_rows_avx2(a);
    else
        gw_pk_rows_portable(a);
}
