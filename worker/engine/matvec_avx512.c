/* matvec_avx512.c: the AVX-512 kernels, level 2 of gw_simd_set (F + BW +
 * VL): single-row and multi-row kernels for Q4_0, Q4_1 and Q8_0, and the
 * attention kernels. Their bits are level 1's (matvec.c says why that
 * matters): integer sums are exact whichever instruction takes them, and
 * every float operation of an output is level 1's, in its order.
 *
 * Compiled twice: as itself, where the 4-element integer dot products are
 * AVX512BW's vpmaddubsw + vpmaddwd, and from matvec_avx512_vnni.c with
 * GW_AVX512_VNNI 1, where they are VNNI's single vpdpbusd (a function may
 * not inline one with another target, so the choice is per file, not a
 * branch). gw_dot_avx512_for and gw_rows_avx512_for, defined in the first,
 * pick. Only the functions carry the target attributes: the object runs on
 * any x86-64 as long as gw_simd_set has checked the CPU. */
#include "engine.h"

#include <stdlib.h>

#ifndef GW_AVX512_VNNI
#define GW_AVX512_VNNI 0
#endif

/* The kernels of each compilation, for the dispatch in the first one. */
#if GW_AVX512_VNNI
#define L2_NAME(name) name##vnni_for
#else
#define L2_NAME(name) name##bw_for
#endif
gw_dot_fn gw_dot_avx512bw_for(uint32_t type);
gw_rows_fn gw_rows_avx512bw_for(uint32_t type);
gw_dot_fn gw_dot_avx512vnni_for(uint32_t type);
gw_rows_fn gw_rows_avx512vnni_for(uint32_t type);

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#if GW_AVX512_VNNI
#define L2_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#else
#define L2_TARGET "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#endif
#define L2 __attribute__((target(L2_TARGET)))
#define L2_INLINE __attribute__((target(L2_TARGET), always_inline)) static inline
/* The tiles' loops over weight rows and activation rows, fully unrolled
 * so that the accumulators stay in registers (gcc -O2 and clang keep such
 * loops, with the accumulators in memory). */
#if defined(__clang__)
#define GW_UNROLL _Pragma("clang loop unroll(full)")
#define GW_UNROLL16 _Pragma("clang loop unroll(full)")
#else
#define GW_UNROLL _Pragma("GCC unroll 8")
#define GW_UNROLL16 _Pragma("GCC unroll 16")
#endif

/* As matvec_avx2.c's: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). */
L2_INLINE float hsum256(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* Sums of 4 adjacent u8 * i8 products, 8 i32 per 32 bytes: the lanes of
 * matvec_avx2.c's mul_sum_us8 (its 16-bit pair sums cannot saturate with
 * these operands, so both give the same integers). */
L2_INLINE __m256i dot4_256(__m256i u, __m256i s)
{
#if GW_AVX512_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

L2_INLINE __m512i dot4_512(__m512i u, __m512i s)
{
#if GW_AVX512_VNNI
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
#endif
}

/* 16 bytes of nibbles -> 32 bytes, elements 0..15 (low nibbles) then
 * 16..31: one broadcast load, one variable shift (0 for the low 16 bytes,
 * 4 for the high), one mask. */
L2_INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    __m256i sh = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
    return _mm256_and_si256(_mm256_srlv_epi16(t, sh), _mm256_set1_epi8(0x0f));
}

/* ---- single-row kernels: matvec_avx2.c's, one instruction fewer per
 * step here and there ---- */

L2 static float dot_q4_0_l2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_0 *x = row;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        __m256i qx = _mm256_sub_epi8(nibbles32(x[b].qs), _mm256_set1_epi8(8));
        __m256i qy = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        __m256i p = dot4_256(_mm256_abs_epi8(qx), _mm256_sign_epi8(qy, qx));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(gw_h2f(x[b].d) * xq[b].d), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum256(acc);
}

L2 static float dot_q4_1_l2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q4_1 *x = row;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int b = 0; b < n / 32; b++) {
        __m256i qy = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        __m256i p = dot4_256(nibbles32(x[b].qs), qy);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(gw_h2f(x[b].d) * xq[b].d), _mm256_cvtepi32_ps(p), acc);
        mins += gw_h2f(x[b].m) * xq[b].s;
    }
    return hsum256(acc) + mins;
}

L2 static float dot_q8_0_l2(int n, const void *row, const gw_q8 *xq, const float *xf)
{
    (void)xf;
    const gw_blk_q8_0 *x = row;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256i qy = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        __m256i p = dot4_256(_mm256_abs_epi8(qx), _mm256_sign_epi8(qy, qx));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(gw_h2f(x[b].d) * xq[b].d), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum256(acc);
}

/* ---- multi-row kernels ----
 *
 * Weight rows in pairs, one per 256-bit half of a 512-bit vector, each
 * half accumulating exactly what the single-row kernel's 256-bit
 * accumulator would: tile_w for one activation row (decode of one
 * sequence), tile_pc for several (a batch), where each pair is unpacked
 * once per block for up to 8 activation rows. Rows past the end of a
 * range repeat the last one, computed and dropped. */

/* As in matvec_avx2.c: each block step of a tile also prefetches the
 * bytes that a tile PREFETCH bytes further reads (several weight rows read
 * side by side are streams the hardware prefetchers follow badly). */
enum { PREFETCH = 8192 };

L2_INLINE size_t blk_bytes(uint32_t type)
{
    return type == GW_T_Q4_1   ? sizeof(gw_blk_q4_1)
           : type == GW_T_Q4_0 ? sizeof(gw_blk_q4_0)
                               : sizeof(gw_blk_q8_0);
}

L2_INLINE void prefetch_step(const uint8_t *tile, size_t step, int k)
{
    uintptr_t p = (uintptr_t)tile + PREFETCH + (uintptr_t)k * step;
    for (size_t i = 0; i < (step + 63) / 64; i++) /* step is a constant */
        _mm_prefetch((const char *)(p + 64 * i), _MM_HINT_T0);
}

/* The upper half of a 512-bit vector. */
L2_INLINE __m256 hi256(__m512 v)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

/* One activation row (a decode step of one sequence): weight rows in
 * pairs instead, rows r + 2p and r + 2p + 1 in the halves of acc[p],
 * against the activation block in both halves. The pair's scales are
 * converted together (F16C: exact, as the table gw_h2f reads) and
 * multiplied with the activation's d and s at once: lanes
 * [d_a * d_y, m_a * s_y, d_b * d_y, m_b * s_y], the products the
 * single-row kernel takes (a product of two halves is exact in a float).
 * NPW pairs (4: eight accumulators); rows past nr repeat the last one,
 * computed and dropped. */
L2_INLINE void tile_w(uint32_t type, int NPW, const gw_mat *W, const gw_q8 *y, int r, int nr,
                      float *out)
{
    int nblk = W->cols / 32;
    const uint8_t *rows[8];
    __m512 acc[4];
    __m128 mins[4]; /* lanes 1 and 3: the minimum's terms of the pair's rows */
    const __m512i idx = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
    GW_UNROLL
    for (int j = 0; j < 2 * NPW; j++)
        rows[j] = W->data + (size_t)(r + (j < nr ? j : nr - 1)) * W->row_bytes;
    GW_UNROLL
    for (int p = 0; p < NPW; p++)
        acc[p] = _mm512_setzero_ps(), mins[p] = _mm_setzero_ps();
    size_t bs = blk_bytes(type);
    for (int k = 0; k < nblk; k++) {
        prefetch_step(rows[0], 2 * (size_t)NPW * bs, k);
        __m128 ds = _mm_castpd_ps(_mm_loaddup_pd((const double *)&y[k].d)); /* d s d s */
        __m512i qy = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)y[k].qs));
        GW_UNROLL
        for (int p = 0; p < NPW; p++) {
            const uint8_t *a = rows[2 * p] + (size_t)k * bs, *b = rows[2 * p + 1] + (size_t)k * bs;
            /* d (and m) of each block: its first 4 bytes as two halves */
            uint32_t ha, hb;
            memcpy(&ha, a, 4), memcpy(&hb, b, 4);
            __m128 sc = _mm_mul_ps(
                _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128((int)ha), (int)hb, 1)), ds);
            __m512 dd = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(sc));
            __m512i u, sy = qy;
            if (type == GW_T_Q8_0) {
                __m512i q = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 2))),
                    _mm256_loadu_si256((const __m256i *)(b + 2)), 1);
                u = _mm512_abs_epi8(q);
                sy = _mm512_mask_sub_epi8(qy, _mm512_movepi8_mask(q), _mm512_setzero_si512(), qy);
            } else {
                size_t off = type == GW_T_Q4_1 ? 4 : 2;
                __m256i t = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(a + off))),
                    _mm_loadu_si128((const __m128i *)(b + off)), 1);
                __m512i z = _mm512_castsi256_si512(t);
                z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0)); /* a a b b */
                __m512i sh = _mm512_maskz_mov_epi16(0xff00ff00u, _mm512_set1_epi16(4));
                u = _mm512_and_si512(_mm512_srlv_epi16(z, sh), _mm512_set1_epi8(0x0f));
                if (type == GW_T_Q4_0) {
                    __m512i q = _mm512_sub_epi8(u, _mm512_set1_epi8(8));
                    u = _mm512_abs_epi8(q);
                    sy = _mm512_mask_sub_epi8(qy, _mm512_movepi8_mask(q), _mm512_setzero_si512(),
                                              qy);
                } else {
                    mins[p] = _mm_add_ps(mins[p], sc);
                }
            }
            acc[p] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(dot4_512(u, sy)), acc[p]);
        }
    }
    GW_UNROLL
    for (int p = 0; p < NPW; p++) {
        float ms[4];
        _mm_storeu_ps(ms, mins[p]);
        GW_UNROLL
        for (int h = 0; h < 2; h++) {
            float s = hsum256(h ? hi256(acc[p]) : _mm512_castps512_ps256(acc[p]));
            if (2 * p + h < nr)
                out[r + 2 * p + h] = type == GW_T_Q4_1 ? s + ms[1 + 2 * h] : s;
        }
    }
}

/* Several activation rows, weight rows in pairs (tile_w's layout): rows
 * r + 2p and r + 2p + 1 in the halves of acc[p][c], each half against
 * activation row c0 + c's block, broadcast to both halves. Each weight
 * pair is unpacked once per block for all C activation rows, each
 * activation block loaded once for all NPW pairs, and an output costs
 * per block half of: the integer product, its conversion, the scale
 * (the pair's d by the row's d, a broadcast operand) and the multiply-add
 * into its lanes, as the single-row kernel does them (the product of two
 * halves is exact in a float, so where it is formed does not change it).
 * The minimum's terms (Q4_1) of pair p collect in mins[p]: lane c of
 * each half is that weight row's against activation row c, added block
 * after block as the single-row kernel adds them.
 *
 * Q4_0 and Q8_0 weights are signed: with VNNI, whose vpdpbusd takes an
 * unsigned operand and a signed one, the activation is made unsigned
 * (y + 128, an xor) and the sum starts at -128 times the sum of the 4
 * weights of its lane, the same integer as the single-row kernel's
 * |w| . sign(y, w); without VNNI the activation is negated where the
 * weight is negative for each pair (vpmaddubsw's 16-bit sums would
 * saturate with y + 128). Rows past nr repeat the last one, computed and
 * dropped. */
L2_INLINE void tile_pc(uint32_t type, int NPW, int C, const gw_mat *W, const gw_batch *x, int r,
                       int nr, int c0, bool prefetch, float *out, size_t out_stride)
{
    int nblk = W->cols / 32;
    size_t ts = (size_t)x->tab_stride, bs = blk_bytes(type);
    const float *tab = x->tab + c0;
    const uint8_t *rows[8];
    const gw_q8 *ys[8];
    __m512 acc[4][8], mins[4];
    const __m512i idx_d = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
    const __m512i idx_m = _mm512_inserti64x4(_mm512_set1_epi32(1), _mm256_set1_epi32(3), 1);
    const __m512i sh = _mm512_maskz_mov_epi16(0xff00ff00u, _mm512_set1_epi16(4));
    const bool is_signed = type != GW_T_Q4_1;
    GW_UNROLL
    for (int j = 0; j < 2 * NPW; j++)
        rows[j] = W->data + (size_t)(r + (j < nr ? j : nr - 1)) * W->row_bytes;
    GW_UNROLL
    for (int c = 0; c < C; c++)
        ys[c] = x->xq + (size_t)(c0 + c) * x->xq_stride;
    GW_UNROLL
    for (int p = 0; p < NPW; p++) {
        mins[p] = _mm512_setzero_ps();
        GW_UNROLL
        for (int c = 0; c < C; c++)
            acc[p][c] = _mm512_setzero_ps();
    }
    for (int k = 0; k < nblk; k++, tab += 2 * ts) {
        if (prefetch)
            prefetch_step(rows[0], 2 * (size_t)NPW * bs, k);
        __m512i u[4];
        __m512 wd[4];
#if GW_AVX512_VNNI
        __m512i base[4]; /* -128 x the sum of a lane's 4 signed weights */
#else
        __mmask64 neg[4]; /* the signed weights' negative bytes */
#endif
        GW_UNROLL
        for (int p = 0; p < NPW; p++) {
            const uint8_t *a = rows[2 * p] + (size_t)k * bs, *b = rows[2 * p + 1] + (size_t)k * bs;
            uint32_t ha, hb; /* d (and m) of each block: its first 4 bytes as two halves */
            memcpy(&ha, a, 4), memcpy(&hb, b, 4);
            __m512 sc = _mm512_castps128_ps512(
                _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128((int)ha), (int)hb, 1)));
            wd[p] = _mm512_permutexvar_ps(idx_d, sc); /* d_a x 8, d_b x 8 */
            if (type == GW_T_Q4_1) {
                __m512 s2 = _mm512_castpd_ps(
                    _mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)(tab + ts))));
                mins[p] =
                    _mm512_add_ps(mins[p], _mm512_mul_ps(_mm512_permutexvar_ps(idx_m, sc), s2));
            }
            __m512i q;
            if (type == GW_T_Q8_0) {
                q = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 2))),
                    _mm256_loadu_si256((const __m256i *)(b + 2)), 1);
            } else {
                size_t off = type == GW_T_Q4_1 ? 4 : 2;
                __m256i t = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(a + off))),
                    _mm_loadu_si128((const __m128i *)(b + off)), 1);
                __m512i z = _mm512_castsi256_si512(t);
                z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0)); /* a a b b */
                q = _mm512_and_si512(_mm512_srlv_epi16(z, sh), _mm512_set1_epi8(0x0f));
                if (type == GW_T_Q4_0)
                    q = _mm512_sub_epi8(q, _mm512_set1_epi8(8));
            }
            u[p] = q;
#if GW_AVX512_VNNI
            base[p] = _mm512_setzero_si512();
#else
            neg[p] = 0;
#endif
            if (is_signed) {
#if GW_AVX512_VNNI
                __m512i s4 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), q);
                base[p] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(s4, 7));
#else
                u[p] = _mm512_abs_epi8(q);
                neg[p] = _mm512_movepi8_mask(q);
#endif
            }
        }
        GW_UNROLL
        for (int c = 0; c < C; c++) {
            __m512i qy = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)ys[c][k].qs));
#if GW_AVX512_VNNI
            if (is_signed)
                qy = _mm512_xor_si512(qy, _mm512_set1_epi8((char)0x80));
#endif
            __m512 dy = _mm512_set1_ps(tab[c]);
            GW_UNROLL
            for (int p = 0; p < NPW; p++) {
                __m512i prod;
#if GW_AVX512_VNNI
                prod = is_signed ? _mm512_dpbusd_epi32(base[p], qy, u[p])
                                 : _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[p], qy);
#else
                __m512i sy =
                    is_signed ? _mm512_mask_sub_epi8(qy, neg[p], _mm512_setzero_si512(), qy) : qy;
                prod = dot4_512(u[p], sy);
#endif
                acc[p][c] =
                    _mm512_fmadd_ps(_mm512_mul_ps(wd[p], dy), _mm512_cvtepi32_ps(prod), acc[p][c]);
            }
        }
    }
    GW_UNROLL
    for (int p = 0; p < NPW; p++) {
        float ms[16];
        _mm512_storeu_ps(ms, mins[p]);
        GW_UNROLL
        for (int c = 0; c < C; c++)
            GW_UNROLL
        for (int h = 0; h < 2; h++) {
            float s = hsum256(h ? hi256(acc[p][c]) : _mm512_castps512_ps256(acc[p][c]));
            if (2 * p + h < nr)
                out[(size_t)(c0 + c) * out_stride + (size_t)(r + 2 * p + h)] =
                    type == GW_T_Q4_1 ? s + ms[8 * h + c] : s;
        }
    }
}

/* Activation rows in chunks of at most 8, as even as they come. */
L2_INLINE void rows_l2(uint32_t type, const gw_mat *W, const gw_batch *x, float *out,
                       size_t out_stride, int r0, int r1)
{
    int nb = x->nb, n_ch = (nb + 7) / 8;
    if (nb == 1) {
        int r = r0;
        for (; r + 8 <= r1; r += 8)
            tile_w(type, 4, W, x->xq, r, 8, out);
        int nr = r1 - r;
        if (nr > 4)
            tile_w(type, 4, W, x->xq, r, nr, out);
        else if (nr > 2)
            tile_w(type, 2, W, x->xq, r, nr, out);
        else if (nr > 0)
            tile_w(type, 1, W, x->xq, r, nr, out);
        return;
    }
    /* each group of weight rows goes through every chunk while it is in
     * L1 (chunks in the outer loop read the matrix once per chunk: with
     * the output matrix, 16 rows took 5x the time of 8); 2 to 4 pairs of
     * weight rows (8 to 16 accumulators) as the largest chunk allows, 1
     * pair for the last one or two weight rows */
    int c_max = nb / n_ch + (nb % n_ch != 0), NPW = c_max <= 4 ? 4 : 2;
    for (int r = r0; r < r1; r += 2 * NPW) {
        int nr = r1 - r < 2 * NPW ? r1 - r : 2 * NPW;
        for (int ch = 0, c0 = 0; ch < n_ch; ch++) {
            int C = nb / n_ch + (ch < nb % n_ch);
#define TPC(CC)                                                                                    \
    (nr <= 2 ? tile_pc(type, 1, CC, W, x, r, nr, c0, ch == 0, out, out_stride)                     \
             : tile_pc(type, CC <= 4 ? 4 : 2, CC, W, x, r, nr, c0, ch == 0, out, out_stride))
            switch (C) {
            case 1:
                TPC(1);
                break;
            case 2:
                TPC(2);
                break;
            case 3:
                TPC(3);
                break;
            case 4:
                TPC(4);
                break;
            case 5:
                TPC(5);
                break;
            case 6:
                TPC(6);
                break;
            case 7:
                TPC(7);
                break;
            default:
                TPC(8);
            }
#undef TPC
            c0 += C;
        }
    }
}

L2 static void rows_q4_0_l2(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride,
                            int r0, int r1)
{
    rows_l2(GW_T_Q4_0, W, x, out, out_stride, r0, r1);
}

L2 static void rows_q4_1_l2(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride,
                            int r0, int r1)
{
    rows_l2(GW_T_Q4_1, W, x, out, out_stride, r0, r1);
}

L2 static void rows_q8_0_l2(const gw_mat *W, const gw_batch *x, float *out, size_t out_stride,
                            int r0, int r1)
{
    rows_l2(GW_T_Q8_0, W, x, out, out_stride, r0, r1);
}

gw_dot_fn L2_NAME(gw_dot_avx512)(uint32_t type)
{
    switch (type) {
    case GW_T_Q4_0:
        return dot_q4_0_l2;
    case GW_T_Q4_1:
        return dot_q4_1_l2;
    case GW_T_Q8_0:
        return dot_q8_0_l2;
    default:
        return gw_dot_avx2_for(type);
    }
}

gw_rows_fn L2_NAME(gw_rows_avx512)(uint32_t type)
{
    switch (type) {
    case GW_T_Q4_0:
        return rows_q4_0_l2;
    case GW_T_Q4_1:
        return rows_q4_1_l2;
    case GW_T_Q8_0:
        return rows_q8_0_l2;
    default:
        return gw_rows_avx2_for(type);
    }
}

#if !GW_AVX512_VNNI
/* ---- attention on halves: the portable kernels' lanes (matvec.c), 16
 * at a time; the operations of each lane and the pairing of the
 * reductions are matvec_avx2.c's ---- */

#define LDH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))

/* r16 of the 16 lanes of v: halves of 8, then hsum256. */
L2_INLINE float r16_l2(__m512 v)
{
    return hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), hi256(v)));
}

L2 static float dot_hh_l2(int n, const uint16_t *x, const uint16_t *y)
{
    __m512 a[4]; /* lane 16r + j of the 64 is a[r][j] */
    for (int r = 0; r < 4; r++)
        a[r] = _mm512_setzero_ps();
    int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int r = 0; r < 4; r++)
            a[r] = _mm512_fmadd_ps(LDH(x + i + 16 * r), LDH(y + i + 16 * r), a[r]);
    /* lane k of 16: (k + 32 k) + (16 + k + 48 + k), as r64 folds them */
    double s = r16_l2(_mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3])));
    for (int i = np; i < n; i++)
        s += (double)(gw_h2f(x[i]) * gw_h2f(y[i]));
    return (float)s;
}

L2 static float dot_hh16_l2(int n, const uint16_t *x, const uint16_t *y)
{
    if (n % 16)
        return dot_hh_l2(n, x, y);
    __m512 a = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16)
        a = _mm512_fmadd_ps(LDH(x + i), LDH(y + i), a);
    return r16_l2(a);
}

/* dot_hh_l2 of 16 keys (n % 64 == 0) with one query, times scale: each
 * key's 64 lanes folded as dot_hh_l2 folds them (lanes r and r + 32,
 * r + 16 and r + 48, then the two), and then the 16-lane sum that r16_l2
 * takes (distances 8, 4, 2, 1) done for the 16 keys together, each
 * addition the one r16_l2 makes: the bits of dot_hh_l2(n, key, q) *
 * scale. out[j] for key j, at k + j * k_stride. */
L2_INLINE void dot_keys16_n(int n, const uint16_t *k, size_t k_stride, const uint16_t *q, __m512 *c)
{
    __m512 qv[4];
    GW_UNROLL
    for (int r = 0; r < 4; r++)
        qv[r] = LDH(q + 16 * r);
    GW_UNROLL16
    for (int j = 0; j < 16; j++) {
        const uint16_t *x = k + (size_t)j * k_stride;
        __m512 a[4];
        GW_UNROLL
        for (int r = 0; r < 4; r++)
            a[r] = _mm512_fmadd_ps(LDH(x + 16 * r), qv[r], _mm512_setzero_ps());
        for (int i = 64; i < n; i += 64)
            GW_UNROLL
        for (int r = 0; r < 4; r++)
            a[r] = _mm512_fmadd_ps(LDH(x + i + 16 * r), LDH(q + i + 16 * r), a[r]);
        c[j] = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
    }
}

L2 static void dot_keys16_l2(int n, const uint16_t *k, size_t k_stride, const uint16_t *q,
                             float scale, float *out)
{
    __m512 c[16];
    dot_keys16_n(n, k, k_stride, q, c);
    /* distance 8: key j in lanes 0..7, key j + 8 in lanes 8..15 */
    __m512 p[8], t4[4], t2[2];
    GW_UNROLL
    for (int j = 0; j < 8; j++)
        p[j] = _mm512_add_ps(_mm512_shuffle_f32x4(c[j], c[j + 8], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(c[j], c[j + 8], _MM_SHUFFLE(3, 2, 3, 2)));
    /* distance 4: 128-bit lanes hold keys j, j + 8, j + 4, j + 12 */
    GW_UNROLL
    for (int j = 0; j < 4; j++)
        t4[j] = _mm512_add_ps(_mm512_shuffle_f32x4(p[j], p[j + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(p[j], p[j + 4], _MM_SHUFFLE(3, 1, 3, 1)));
    /* distance 2, then 1, inside the 128-bit lanes */
    GW_UNROLL
    for (int j = 0; j < 2; j++)
        t2[j] = _mm512_add_ps(_mm512_shuffle_ps(t4[j], t4[j + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(t4[j], t4[j + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 sum = _mm512_add_ps(_mm512_shuffle_ps(t2[0], t2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_ps(t2[0], t2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* lane 4L + e holds key {0, 2, 1, 3}[e] + {0, 8, 4, 12}[L] */
    const __m512i order = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, _mm512_mul_ps(sum, _mm512_set1_ps(scale))));
}

L2 void gw_dot_keys_avx512(int n, const uint16_t *k, size_t k_stride, int n_keys, int readable,
                           const uint16_t *q, float scale, float *out)
{
    int j = 0;
    if (n % 64 == 0) {
        for (; j + 16 <= n_keys; j += 16)
            dot_keys16_l2(n, k + (size_t)j * k_stride, k_stride, q, scale, out + j);
        if (j < n_keys && j + 16 <= readable) {
            float all[16];
            dot_keys16_l2(n, k + (size_t)j * k_stride, k_stride, q, scale, all);
            memcpy(out + j, all, (size_t)(n_keys - j) * sizeof(float));
            return;
        }
    }
    for (; j < n_keys; j++)
        out[j] = dot_hh_l2(n, k + (size_t)j * k_stride, q) * scale;
}

/* attn_v with nl lanes (64 or 16), 16 output dimensions at a time (hd %
 * 16 == 0), position t's values at vb[t / blk] + (t % blk) * v_stride;
 * rows never written (fewer positions than lanes) count as zeros. A lane's
 * first term is its product added to zero, as the lanes' zeroing and an
 * addition give it. */
L2_INLINE void attn_v_blocks_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *const *vb,
                                int blk, size_t v_stride, float *lanes, float *out, int nl)
{
    int used = n_pos < nl ? n_pos : nl;
    const __m512 z = _mm512_setzero_ps();
    float wf[16]; /* the weights of positions t & ~15 to (t & ~15) + 15 */
    for (int t = 0, b = 0; t < n_pos; b++) {
        const uint16_t *vt = vb[b];
        for (int e = t + (n_pos - t < blk ? n_pos - t : blk); t < e; t++, vt += v_stride) {
            if (t % 16 == 0) {
                __mmask16 m = n_pos - t >= 16 ? 0xffff : (__mmask16)((1u << (n_pos - t)) - 1);
                _mm512_storeu_ps(wf, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, a + t)));
            }
            __m512 w = _mm512_set1_ps(wf[t % 16]);
            float *l = lanes + (size_t)(t % nl) * (size_t)hd;
            if (t < nl) {
                for (int d = 0; d < hd; d += 16)
                    _mm512_storeu_ps(l + d, _mm512_fmadd_ps(LDH(vt + d), w, z));
            } else {
                for (int d = 0; d < hd; d += 16)
                    _mm512_storeu_ps(l + d,
                                     _mm512_fmadd_ps(LDH(vt + d), w, _mm512_loadu_ps(l + d)));
            }
        }
    }
    for (int d = 0; d < hd; d += 16) {
#define L(k) ((k) < used ? _mm512_loadu_ps(lanes + (size_t)(k) * (size_t)hd + d) : z)
        __m512 c[16], t3[8];
        for (int k = 0; k < 16; k++)
            c[k] = nl == 64 ? _mm512_add_ps(_mm512_add_ps(L(k), L(32 + k)),
                                            _mm512_add_ps(L(16 + k), L(48 + k)))
                            : L(k);
#undef L
        for (int k = 0; k < 8; k++)
            t3[k] = _mm512_add_ps(c[k], c[k + 8]);
        __m512 t60 = _mm512_add_ps(t3[0], t3[4]), t61 = _mm512_add_ps(t3[1], t3[5]);
        __m512 t62 = _mm512_add_ps(t3[2], t3[6]), t63 = _mm512_add_ps(t3[3], t3[7]);
        _mm512_storeu_ps(out + d, _mm512_add_ps(_mm512_add_ps(t60, t62), _mm512_add_ps(t61, t63)));
    }
}

L2_INLINE void attn_v_lanes_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *v,
                               size_t v_stride, float *lanes, float *out, int nl)
{
    if (hd % 16) {
        gw_attn_avx2()->attn_v[nl == 16](hd, n_pos, a, v, v_stride, lanes, out);
        return;
    }
    attn_v_blocks_l2(hd, n_pos, a, &v, n_pos > 0 ? n_pos : 1, v_stride, lanes, out, nl);
}

L2 void gw_attn_v_paged_avx512(int batched, int hd, int n_pos, const uint16_t *a,
                               const uint16_t *const *vb, int blk, size_t v_stride, float *lanes,
                               float *out)
{
    if (batched) /* nl a constant in each: t % nl is a mask */
        attn_v_blocks_l2(hd, n_pos, a, vb, blk, v_stride, lanes, out, 16);
    else if (hd == 64)
        attn_v_blocks_l2(64, n_pos, a, vb, blk, v_stride, lanes, out, 64);
    else
        attn_v_blocks_l2(hd, n_pos, a, vb, blk, v_stride, lanes, out, 64);
}
#undef LDH

L2 static void attn_v_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *v, size_t v_stride,
                         float *lanes, float *out)
{
    attn_v_lanes_l2(hd, n_pos, a, v, v_stride, lanes, out, 64);
}

L2 static void attn_v16_l2(int hd, int n_pos, const uint16_t *a, const uint16_t *v, size_t v_stride,
                           float *lanes, float *out)
{
    attn_v_lanes_l2(hd, n_pos, a, v, v_stride, lanes, out, 16);
}

L2 static void f32_to_f16_l2(const float *x, uint16_t *y, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = gw_f32_to_fp16(x[i]);
}

/* The first index of the largest value, as the scalar loop `if (x[i] >
 * x[best]) best = i` finds it: each of 16 lanes keeps its largest value
 * (x[0] to start with) and the first index that had it, by ordered
 * greater-than (a NaN never wins, and nothing beats a NaN x[0]); then the
 * lanes holding the overall largest give the smallest of their indices. */
L2 int32_t gw_argmax_avx512(const float *x, int n)
{
    if (n < 32) {
        int32_t best = 0;
        for (int i = 1; i < n; i++)
            if (x[i] > x[best])
                best = i;
        return best;
    }
    __m512 m = _mm512_set1_ps(x[0]);
    __m512i idx = _mm512_setzero_si512(),
            cur = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    int i = 0;
    for (; i + 16 <= n; i += 16, cur = _mm512_add_epi32(cur, step)) {
        __m512 v = _mm512_loadu_ps(x + i);
        __mmask16 gt = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, gt, v);
        idx = _mm512_mask_mov_epi32(idx, gt, cur);
    }
    float mv[16];
    int32_t iv[16];
    _mm512_storeu_ps(mv, m);
    _mm512_storeu_si512(iv, idx);
    int32_t best = iv[0];
    float bv = mv[0];
    for (int l = 1; l < 16; l++)
        if (mv[l] > bv || (mv[l] == bv && iv[l] < best))
            bv = mv[l], best = iv[l];
    for (; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* gw_quantize_q8, 16 values at a time: the same operations on each value
 * (|x|, the maximum that passes NaNs over, x * (127 / amax) rounded by the
 * 1.5 * 2^23 addition), so the same bits (test_kernels). */
L2 void gw_quantize_q8_avx512(const float *x, gw_q8 *y, int n)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    for (int b = 0; b < n / 32; b++, x += 32) {
        __m512 a = _mm512_loadu_ps(x), c = _mm512_loadu_ps(x + 16);
        /* vmaxps(v, amax): amax where v is a NaN, as the scalar loop */
        __m512 am = _mm512_max_ps(_mm512_abs_ps(a), _mm512_setzero_ps());
        am = _mm512_max_ps(_mm512_abs_ps(c), am);
        __m256 h = _mm256_max_ps(_mm512_castps512_ps256(am), hi256(am));
        __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        q = _mm_max_ps(q, _mm_movehl_ps(q, q));
        q = _mm_max_ss(q, _mm_movehdup_ps(q));
        float amax = _mm_cvtss_f32(q);
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i qa =
            _mm512_cvttps_epi32(_mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(a, vid), magic), magic));
        __m512i qc =
            _mm512_cvttps_epi32(_mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(c, vid), magic), magic));
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtepi32_epi8(qc));
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qc));
        /* d and d * sum through halves, both at once (F16C rounds to
         * nearest even, as gw_f32_to_fp16) */
        __m128 ds = _mm_cvtph_ps(
            _mm_cvtps_ph(_mm_setr_ps(d, d * (float)sum, 0, 0), _MM_FROUND_TO_NEAREST_INT));
        y[b].d = _mm_cvtss_f32(ds);
        y[b].s = _mm_cvtss_f32(_mm_movehdup_ps(ds));
    }
}

static const gw_attn_kernels attn_l2 = {
    .dot_hh = {dot_hh_l2, dot_hh16_l2},
    .attn_v = {attn_v_l2, attn_v16_l2},
    .f32_to_f16 = f32_to_f16_l2,
    .softmax_h = gw_softmax_h_avx512, /* expf_avx512.c */
    .silu_mul = gw_silu_mul_avx512,
};

const gw_attn_kernels *gw_attn_avx512(void)
{
    return &attn_l2;
}
#endif

#else /* not x86: level 1's stand in (gw_simd_set never picks 2) */

gw_dot_fn L2_NAME(gw_dot_avx512)(uint32_t type)
{
    return gw_dot_avx2_for(type);
}

gw_rows_fn L2_NAME(gw_rows_avx512)(uint32_t type)
{
    return gw_rows_avx2_for(type);
}

#if !GW_AVX512_VNNI
const gw_attn_kernels *gw_attn_avx512(void)
{
    return gw_attn_avx2();
}

int32_t gw_argmax_avx512(const float *x, int n)
{
    return gw_argmax_portable(x, n);
}

void gw_dot_keys_avx512(int n, const uint16_t *k, size_t k_stride, int n_keys, int readable,
                        const uint16_t *q, float scale, float *out)
{
    (void)readable;
    gw_dot_keys_at(gw_attn_avx2(), n, k, k_stride, n_keys, q, scale, out);
}

void gw_attn_v_paged_avx512(int batched, int hd, int n_pos, const uint16_t *a,
                            const uint16_t *const *vb, int blk, size_t v_stride, float *lanes,
                            float *out)
{
    (void)batched, (void)hd, (void)n_pos, (void)a, (void)vb, (void)blk, (void)v_stride;
    (void)lanes, (void)out;
    abort(); /* gw_simd_set never picks level 2 off x86 */
}

void gw_quantize_q8_avx512(const float *x, gw_q8 *y, int n)
{
    gw_quantize_q8_portable(x, y, n);
}
#endif
#endif

#if !GW_AVX512_VNNI
gw_dot_fn gw_dot_avx512_for(uint32_t type, int vnni)
{
    return vnni ? gw_dot_avx512vnni_for(type) : gw_dot_avx512bw_for(type);
}

gw_rows_fn gw_rows_avx512_for(uint32_t type, int vnni)
{
    return vnni ? gw_rows_avx512vnni_for(type) : gw_rows_avx512bw_for(type);
}
#endif
