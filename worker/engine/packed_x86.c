/* packed_x86.c: the packed products (packed.c: the layout and the order of
 * operations) with AVX2 (levels 1 and 2 without VNNI) and AVX512-VNNI.
 * Both give the portable kernel's bits: their integer sums are exact (see
 * each), and every float operation of an output is the portable one's, in
 * its order. Only the functions carry the target attributes: the object
 * runs on any x86-64 as long as gw_simd_set has checked the CPU.
 *
 * A tile is one group of 16 weight rows (AVX2: one half of 8) against up
 * to 8 (AVX2: 4) activation rows. Per block the group's weights are
 * loaded (and, for Q4, split into nibbles) once, then each activation row
 * takes them with its 4-byte pieces broadcast: 8 integer multiply-adds, one
 * conversion, one multiply (the two scales) and one fused add for all 16
 * outputs. The group's weights (5 KiB for 576 columns, 15 for 1536) stay
 * in L1 while the tiles of a batch of many rows (a prefill) go through
 * them. */
#include "engine.h"

#include <stdbool.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define A2_TARGET "avx2,fma,f16c"
#define V5_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define A2_INLINE __attribute__((target(A2_TARGET), always_inline)) static inline
#define V5_INLINE __attribute__((target(V5_TARGET), always_inline)) static inline
#if defined(__clang__)
#define GW_UNROLL _Pragma("clang loop unroll(full)")
#else
#define GW_UNROLL _Pragma("GCC unroll 8")
#endif

/* Bytes 4k..4k+3 of an activation block (memcpy: no aliasing question). */
static inline int32_t piece(const gw_q8 *y, int k)
{
    int32_t v;
    memcpy(&v, y->qs + 4 * k, 4);
    return v;
}

/* The integer offset of the unsigned weights (packed.c). */
static inline int pk_off(uint32_t type)
{
    return type == GW_T_Q8_0 ? 128 : type == GW_T_Q4_0 ? 8 : 0;
}

/* A decode step streams ~100 MB of weights, and this VM's hardware
 * prefetchers alone reach about half the bandwidth (matvec_avx2.c had the
 * measurement): the first tile of a group asks, per block, for the bytes
 * PREFETCH ahead in the packed matrix, which a later group reads. A
 * prefetch never faults: past the end it only wastes a line. */
enum { PREFETCH = 8192 };

struct pk_tile {
    const uint8_t *grp; /* the group */
    int prefetch;       /* the first tile of its group */
    int nblk;
    uint32_t type;
    const gw_q8 *xq; /* the tile's first activation row */
    size_t xs;
};

/* ---- AVX2: half h of a group (rows 8h..8h+7) ----
 *
 * Q4: vpmaddubsw of the nibbles (0..15) with the activation (|x| <= 127)
 * gives pairs of at most 2 * 15 * 127 = 3810; the 8 pieces' pairs summed
 * in 16 bits stay under 30480, then vpmaddwd adds each lane's two. Q8_0:
 * the weights made signed again (xor 0x80), |w| times x with w's sign
 * (vpsignb), pairs of at most 2 * 128 * 127 = 32512, added in 32 bits. */
A2_INLINE __m256i isum_q4_a2(const __m256i *w, const gw_q8 *y)
{
    __m256i s = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(piece(y, 0)));
    GW_UNROLL
    for (int k = 1; k < 8; k++)
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(piece(y, k))));
    return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
}

A2_INLINE __m256i isum_q8_a2(const uint8_t *q, const gw_q8 *y)
{
    __m256i i = _mm256_setzero_si256();
    GW_UNROLL
    for (int k = 0; k < 8; k++) {
        __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + 64 * k)),
                                     _mm256_set1_epi8((char)0x80));
        __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w),
                                         _mm256_sign_epi8(_mm256_set1_epi32(piece(y, k)), w));
        i = _mm256_add_epi32(i, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    }
    return i;
}

A2_INLINE void tile_a2(const struct pk_tile *t, bool q8, int h, int nc, __m256 *acc)
{
    size_t qb = q8 ? 512 : 256;
    const uint16_t *dh = (const uint16_t *)(t->grp + (size_t)t->nblk * qb) + 8 * h;
    int off = pk_off(t->type);
    GW_UNROLL
    for (int c = 0; c < nc; c++)
        acc[c] = _mm256_setzero_ps();
    for (int b = 0; b < t->nblk; b++) {
        const uint8_t *q = t->grp + (size_t)b * qb + 32 * (size_t)h;
        if (t->prefetch)
            for (size_t i = 0; i < qb / 128; i++) /* half h: the block's lines h, h + 2, ... */
                _mm_prefetch(
                    (const char *)(t->grp + (size_t)b * qb + PREFETCH + 64 * (size_t)h + 128 * i),
                    _MM_HINT_T0);
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dh + 16 * b)));
        __m256i w[8];
        if (!q8)
            GW_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(q + 64 * k));
            w[k] = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
            w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f));
        }
        GW_UNROLL
        for (int c = 0; c < nc; c++) {
            const gw_q8 *y = t->xq + (size_t)c * t->xs + b;
            __m256i i = q8 ? isum_q8_a2(q, y)
                           : _mm256_add_epi32(isum_q4_a2(w, y), _mm256_set1_epi32(-off * y->sum));
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(y->d)), _mm256_cvtepi32_ps(i),
                                     acc[c]);
        }
    }
    if (t->type != GW_T_Q4_1)
        return;
    const uint16_t *mh = dh + (size_t)t->nblk * GW_PACK_ROWS;
    __m256 mins[4];
    GW_UNROLL
    for (int c = 0; c < nc; c++)
        mins[c] = _mm256_setzero_ps();
    for (int b = 0; b < t->nblk; b++) {
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mh + 16 * b)));
        GW_UNROLL
        for (int c = 0; c < nc; c++)
            mins[c] = _mm256_fmadd_ps(m, _mm256_set1_ps(t->xq[(size_t)c * t->xs + b].s), mins[c]);
    }
    GW_UNROLL
    for (int c = 0; c < nc; c++)
        acc[c] = _mm256_add_ps(acc[c], mins[c]);
}

/* Rows [lo, hi) of the 8 in v to out (lo, hi relative to the half). */
A2_INLINE void store_a2(float *out, __m256 v, int lo, int hi)
{
    if (lo == 0 && hi == 8) {
        _mm256_storeu_ps(out, v);
        return;
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (int r = lo; r < hi; r++)
        out[r] = tmp[r];
}

__attribute__((target(A2_TARGET))) void gw_pk_rows_avx2(const gw_pk_args *a)
{
    const gw_mat *W = a->W;
    struct pk_tile t = {.nblk = W->cols / 32, .type = W->type, .xs = a->xq_stride};
    for (int g = a->r0 / GW_PACK_ROWS; g * GW_PACK_ROWS < a->r1; g++) {
        t.grp = W->packed + (size_t)g * W->pack_stride;
        for (int h = 0; h < 2; h++) {
            int base = g * GW_PACK_ROWS + 8 * h;
            int lo = a->r0 > base ? a->r0 - base : 0, hi = a->r1 - base < 8 ? a->r1 - base : 8;
            if (lo >= hi)
                continue;
            for (int c0 = 0; c0 < a->nb;) {
                int nc = a->nb - c0 >= 4 ? 4 : a->nb - c0 >= 2 ? 2 : 1;
                __m256 acc[4];
                t.xq = a->xq + (size_t)c0 * a->xq_stride, t.prefetch = c0 == 0;
                bool q8 = t.type == GW_T_Q8_0;
                if (nc == 4)
                    q8 ? tile_a2(&t, true, h, 4, acc) : tile_a2(&t, false, h, 4, acc);
                else if (nc == 2)
                    q8 ? tile_a2(&t, true, h, 2, acc) : tile_a2(&t, false, h, 2, acc);
                else
                    q8 ? tile_a2(&t, true, h, 1, acc) : tile_a2(&t, false, h, 1, acc);
                for (int c = 0; c < nc; c++)
                    store_a2(a->out + (size_t)(c0 + c) * a->out_stride + (size_t)base, acc[c], lo,
                             hi);
                c0 += nc;
            }
        }
    }
}

/* ---- AVX512-VNNI: a whole group ----
 *
 * vpdpbusd takes the unsigned weights (Q4 nibbles, Q8_0 plus 128) and the
 * signed activation piece broadcast: 4 products per lane added to the
 * 32-bit lane, exact; the offset (packed.c) starts the sum. Two chains of
 * four (pieces 0-3 and 4-7) halve the latency a lone activation row waits
 * on. */
V5_INLINE __m512i isum_v5(const __m512i *w, const gw_q8 *y, int off)
{
    __m512i i0 = _mm512_set1_epi32(-off * y->sum), i1 = _mm512_setzero_si512();
    GW_UNROLL
    for (int k = 0; k < 4; k++) {
        i0 = _mm512_dpbusd_epi32(i0, w[k], _mm512_set1_epi32(piece(y, k)));
        i1 = _mm512_dpbusd_epi32(i1, w[k + 4], _mm512_set1_epi32(piece(y, k + 4)));
    }
    return _mm512_add_epi32(i0, i1);
}

V5_INLINE void tile_v5(const struct pk_tile *t, bool q8, int nc, __m512 *acc)
{
    size_t qb = q8 ? 512 : 256;
    const uint16_t *dh = (const uint16_t *)(t->grp + (size_t)t->nblk * qb);
    int off = pk_off(t->type);
    GW_UNROLL
    for (int c = 0; c < nc; c++)
        acc[c] = _mm512_setzero_ps();
    for (int b = 0; b < t->nblk; b++) {
        const uint8_t *q = t->grp + (size_t)b * qb;
        if (t->prefetch)
            for (size_t i = 0; i < qb / 64; i++)
                _mm_prefetch((const char *)(q + PREFETCH + 64 * i), _MM_HINT_T0);
        __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(dh + 16 * b)));
        __m512i w[8];
        if (q8) {
            GW_UNROLL
            for (int k = 0; k < 8; k++)
                w[k] = _mm512_load_si512((const void *)(q + 64 * k));
        } else {
            GW_UNROLL
            for (int k = 0; k < 4; k++) {
                __m512i v = _mm512_load_si512((const void *)(q + 64 * k));
                w[k] = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
                w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
            }
        }
        GW_UNROLL
        for (int c = 0; c < nc; c++) {
            const gw_q8 *y = t->xq + (size_t)c * t->xs + b;
            acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(y->d)),
                                     _mm512_cvtepi32_ps(isum_v5(w, y, off)), acc[c]);
        }
    }
    if (t->type != GW_T_Q4_1)
        return;
    const uint16_t *mh = dh + (size_t)t->nblk * GW_PACK_ROWS;
    __m512 mins[8];
    GW_UNROLL
    for (int c = 0; c < nc; c++)
        mins[c] = _mm512_setzero_ps();
    for (int b = 0; b < t->nblk; b++) {
        __m512 m = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(mh + 16 * b)));
        GW_UNROLL
        for (int c = 0; c < nc; c++)
            mins[c] = _mm512_fmadd_ps(m, _mm512_set1_ps(t->xq[(size_t)c * t->xs + b].s), mins[c]);
    }
    GW_UNROLL
    for (int c = 0; c < nc; c++)
        acc[c] = _mm512_add_ps(acc[c], mins[c]);
}

__attribute__((target(V5_TARGET))) void gw_pk_rows_avx512(const gw_pk_args *a)
{
    const gw_mat *W = a->W;
    struct pk_tile t = {.nblk = W->cols / 32, .type = W->type, .xs = a->xq_stride};
    for (int g = a->r0 / GW_PACK_ROWS; g * GW_PACK_ROWS < a->r1; g++) {
        int base = g * GW_PACK_ROWS;
        int lo = a->r0 > base ? a->r0 - base : 0;
        int hi = a->r1 - base < GW_PACK_ROWS ? a->r1 - base : GW_PACK_ROWS;
        __mmask16 keep = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
        t.grp = W->packed + (size_t)g * W->pack_stride;
        for (int c0 = 0; c0 < a->nb;) {
            int left = a->nb - c0, nc = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
            __m512 acc[8];
            t.xq = a->xq + (size_t)c0 * a->xq_stride, t.prefetch = c0 == 0;
            bool q8 = t.type == GW_T_Q8_0;
            if (nc == 8)
                q8 ? tile_v5(&t, true, 8, acc) : tile_v5(&t, false, 8, acc);
            else if (nc == 4)
                q8 ? tile_v5(&t, true, 4, acc) : tile_v5(&t, false, 4, acc);
            else if (nc == 2)
                q8 ? tile_v5(&t, true, 2, acc) : tile_v5(&t, false, 2, acc);
            else
                q8 ? tile_v5(&t, true, 1, acc) : tile_v5(&t, false, 1, acc);
            for (int c = 0; c < nc; c++)
                _mm512_mask_storeu_ps(a->out + (size_t)(c0 + c) * a->out_stride + (size_t)base,
                                      keep, acc[c]);
            c0 += nc;
        }
    }
}

#else /* not x86: the portable kernel stands in (gw_simd_set never picks 1 or 2) */

void gw_pk_rows_avx2(const gw_pk_args *a)
{
    gw_pk_rows_portable(a);
}

void gw_pk_rows_avx512(const gw_pk_args *a)
{
    gw_pk_rows_portable(a);
}
#endif
