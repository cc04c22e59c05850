/* gguf_writer.c: see gguf_writer.h. Nothing here is shared with worker/. */
#include "gguf_writer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gwt_free(gwt_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void gwt_bytes(gwt_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void gwt_u32(gwt_buf *b, uint32_t v)
{
    gwt_bytes(b, &v, 4);
}
void gwt_u64(gwt_buf *b, uint64_t v)
{
    gwt_bytes(b, &v, 8);
}
void gwt_f32(gwt_buf *b, float v)
{
    gwt_bytes(b, &v, 4);
}

void gwt_str(gwt_buf *b, const char *s)
{
    gwt_u64(b, strlen(s));
    gwt_bytes(b, s, strlen(s));
}

void gwt_pad(gwt_buf *b, size_t align)
{
    static const uint8_t zero[64];
    while (b->len % align)
        gwt_bytes(b, zero, 1);
}

void gwt_kv_u32(gwt_buf *b, const char *key, uint32_t v)
{
    gwt_str(b, key);
    gwt_u32(b, 4);
    gwt_u32(b, v);
}

void gwt_kv_f32(gwt_buf *b, const char *key, float v)
{
    gwt_str(b, key);
    gwt_u32(b, 6);
    gwt_f32(b, v);
}

void gwt_kv_str(gwt_buf *b, const char *key, const char *v)
{
    gwt_str(b, key);
    gwt_u32(b, 8);
    gwt_str(b, v);
}

int gwt_save(const gwt_buf *b, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(b->p, 1, b->len, f);
    return fclose(f) == 0 && n == b->len ? 0 : -1;
}

uint16_t gwt_f2h(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int e = (int)((x >> 23) & 0xff);
    if (e == 0xff)
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int exp = e - 127 + 15;
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp), h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent: still the right rounding */
    return (uint16_t)(sign | h);
}

uint16_t gwt_f2bf(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t r = x + 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(r >> 16);
}

static float h2f(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

size_t gwt_row_bytes(uint32_t type, int n)
{
    switch (type) {
    case 0:
        return (size_t)n * 4;
    case 1:
    case 30:
        return (size_t)n * 2;
    case 2:
        return (size_t)n / 32 * 18;
    case 3:
        return (size_t)n / 32 * 20;
    case 6:
        return (size_t)n / 32 * 22;
    case 7:
        return (size_t)n / 32 * 24;
    case 8:
        return (size_t)n / 32 * 34;
    case 12:
        return (size_t)n / 256 * 144;
    case 14:
        return (size_t)n / 256 * 210;
    default:
        return 0;
    }
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

/* ggml's reference rounding: block scale from the value of largest
 * magnitude (sign kept), so that value maps exactly to -2^(bits-1). */
static void q_sym(const float *x, uint8_t *o, int bits, int with_qh)
{
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    int lvl = 1 << (bits - 1), top = 2 * lvl - 1;
    float d = max / (float)-lvl, id = d ? 1.0f / d : 0.0f;
    put16(o, gwt_f2h(d));
    uint8_t *qs = o + 2 + (with_qh ? 4 : 0);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int a = (int)(x[j] * id + (float)lvl + 0.5f), b = (int)(x[j + 16] * id + (float)lvl + 0.5f);
        a = a > top ? top : a < 0 ? 0 : a;
        b = b > top ? top : b < 0 ? 0 : b;
        qs[j] = (uint8_t)((a & 15) | (b & 15) << 4);
        qh |= (uint32_t)((a >> 4) & 1) << j | (uint32_t)((b >> 4) & 1) << (j + 16);
    }
    if (with_qh)
        memcpy(o + 2, &qh, 4);
}

static void q_asym(const float *x, uint8_t *o, int bits, int with_qh)
{
    float mn = x[0], mx = x[0];
    for (int j = 1; j < 32; j++) {
        mn = x[j] < mn ? x[j] : mn;
        mx = x[j] > mx ? x[j] : mx;
    }
    int top = (1 << bits) - 1;
    float d = (mx - mn) / (float)top, id = d ? 1.0f / d : 0.0f;
    put16(o, gwt_f2h(d));
    put16(o + 2, gwt_f2h(mn));
    uint8_t *qs = o + 4 + (with_qh ? 4 : 0);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int a = (int)((x[j] - mn) * id + 0.5f), b = (int)((x[j + 16] - mn) * id + 0.5f);
        a = a > top ? top : a;
        b = b > top ? top : b;
        qs[j] = (uint8_t)((a & 15) | (b & 15) << 4);
        qh |= (uint32_t)((a >> 4) & 1) << j | (uint32_t)((b >> 4) & 1) << (j + 16);
    }
    if (with_qh)
        memcpy(o + 4, &qh, 4);
}

static void q8_0(const float *x, uint8_t *o)
{
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
    put16(o, gwt_f2h(d));
    for (int j = 0; j < 32; j++)
        o[2 + j] = (uint8_t)(int8_t)lroundf(x[j] * id);
}

/* Q4_K: per 32-element sub-block a scale and a min (both 6-bit, relative
 * to the block's d and dmin); value = d*sc*q - dmin*m. */
static void q4_k(const float *x, uint8_t *o)
{
    float scale[8], minv[8], dmax = 0, mmax = 0;
    for (int s = 0; s < 8; s++) {
        float mn = 0, mx = 0; /* the range always includes 0: min >= 0 */
        for (int l = 0; l < 32; l++) {
            mn = fminf(mn, x[32 * s + l]);
            mx = fmaxf(mx, x[32 * s + l]);
        }
        scale[s] = (mx - mn) / 15.0f;
        minv[s] = -mn;
        dmax = fmaxf(dmax, scale[s]);
        mmax = fmaxf(mmax, minv[s]);
    }
    float d = dmax / 63.0f, dmin = mmax / 63.0f;
    uint16_t dh = gwt_f2h(d), mh = gwt_f2h(dmin);
    d = h2f(dh);
    dmin = h2f(mh);
    uint8_t sc[8], m[8];
    for (int s = 0; s < 8; s++) {
        int a = d ? (int)lroundf(scale[s] / d) : 0, b = dmin ? (int)lroundf(minv[s] / dmin) : 0;
        sc[s] = (uint8_t)(a > 63 ? 63 : a);
        m[s] = (uint8_t)(b > 63 ? 63 : b);
    }
    put16(o, dh);
    put16(o + 2, mh);
    uint8_t *scales = o + 4, *qs = o + 16;
    memset(scales, 0, 12);
    for (int j = 0; j < 4; j++) {
        scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        scales[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            int q[2];
            for (int h = 0; h < 2; h++) {
                int s = 2 * j + h;
                float ds = d * sc[s], v = x[32 * s + l] + dmin * m[s];
                int qq = ds ? (int)lroundf(v / ds) : 0;
                q[h] = qq < 0 ? 0 : qq > 15 ? 15 : qq;
            }
            qs[32 * j + l] = (uint8_t)(q[0] | q[1] << 4);
        }
}

/* Q6_K: 16 sub-blocks of 16 with an int8 scale each; q in -32..31. */
static void q6_k(const float *x, uint8_t *o)
{
    float scale[16], smax = 0;
    for (int s = 0; s < 16; s++) {
        float amax = 0;
        for (int l = 0; l < 16; l++)
            amax = fmaxf(amax, fabsf(x[16 * s + l]));
        scale[s] = amax / 31.0f;
        smax = fmaxf(smax, scale[s]);
    }
    float d = smax / 127.0f;
    uint16_t dh = gwt_f2h(d);
    d = h2f(dh);
    uint8_t *ql = o, *qh = o + 128;
    int8_t *sc = (int8_t *)(o + 192);
    memset(o, 0, 208);
    put16(o + 208, dh);
    int q[256];
    for (int s = 0; s < 16; s++) {
        int a = d ? (int)lroundf(scale[s] / d) : 0;
        sc[s] = (int8_t)(a > 127 ? 127 : a);
        float ds = d * sc[s];
        for (int l = 0; l < 16; l++) {
            int qq = ds ? (int)lroundf(x[16 * s + l] / ds) : 0;
            q[16 * s + l] = (qq < -32 ? -32 : qq > 31 ? 31 : qq) + 32;
        }
    }
    /* Element 128h + 32k + l (k = 0..3) has low nibble in ql[64h + l + 32(k&1)]
     * (high nibble when k >= 2) and its 2 high bits at 2k in qh[32h + l]. */
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int v = q[128 * h + 32 * k + l];
                uint8_t *lp = &ql[64 * h + l + 32 * (k & 1)];
                *lp |= (uint8_t)((v & 15) << (k >= 2 ? 4 : 0));
                qh[32 * h + l] |= (uint8_t)((v >> 4) << (2 * k));
            }
}

void gwt_quantize(uint32_t type, const float *x, int n, uint8_t *out)
{
    switch (type) {
    case 0:
        memcpy(out, x, (size_t)n * 4);
        return;
    case 1:
        for (int i = 0; i < n; i++)
            put16(out + 2 * i, gwt_f2h(x[i]));
        return;
    case 30:
        for (int i = 0; i < n; i++)
            put16(out + 2 * i, gwt_f2bf(x[i]));
        return;
    case 2:
        for (int b = 0; b < n / 32; b++)
            q_sym(x + 32 * b, out + 18 * b, 4, 0);
        return;
    case 3:
        for (int b = 0; b < n / 32; b++)
            q_asym(x + 32 * b, out + 20 * b, 4, 0);
        return;
    case 6:
        for (int b = 0; b < n / 32; b++)
            q_sym(x + 32 * b, out + 22 * b, 5, 1);
        return;
    case 7:
        for (int b = 0; b < n / 32; b++)
            q_asym(x + 32 * b, out + 24 * b, 5, 1);
        return;
    case 8:
        for (int b = 0; b < n / 32; b++)
            q8_0(x + 32 * b, out + 34 * b);
        return;
    case 12:
        for (int b = 0; b < n / 256; b++)
            q4_k(x + 256 * b, out + 144 * b);
        return;
    case 14:
        for (int b = 0; b < n / 256; b++)
            q6_k(x + 256 * b, out + 210 * b);
        return;
    default:
        abort();
    }
}

gwt_llama gwt_llama_default(void)
{
    return (gwt_llama){.n_layer = 2,
                       .dim = 64,
                       .n_head = 4,
                       .n_head_kv = 2,
                       .ffn = 128,
                       .vocab = 96,
                       .n_ctx = 64,
                       .rope_base = 10000.0f,
                       .eps = 1e-5f,
                       .tied = false,
                       .seed = 1};
}

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float *rnd(uint64_t *s, size_t n, float scale, float offset)
{
    float *p = malloc(n * sizeof *p);
    if (!p)
        abort();
    for (size_t i = 0; i < n; i++)
        p[i] = offset + scale * ((float)(rng_next(s) >> 40) / 16777216.0f * 2.0f - 1.0f);
    return p;
}

void gwt_weights_random(const gwt_llama *c, gwt_weights *w)
{
    uint64_t s = c->seed;
    size_t dim = (size_t)c->dim, kv = (size_t)(c->dim / c->n_head * c->n_head_kv),
           ffn = (size_t)c->ffn;
    /* Scales keep activations of order 1 through the layers. */
    float ws = 1.0f / sqrtf((float)c->dim), fs = 1.0f / sqrtf((float)c->ffn);
    w->tok_embd = rnd(&s, (size_t)c->vocab * dim, 1.0f, 0);
    w->out_norm = rnd(&s, dim, 0.2f, 1.0f);
    w->output = c->tied ? NULL : rnd(&s, (size_t)c->vocab * dim, 1.0f, 0);
    w->l = calloc((size_t)c->n_layer, sizeof *w->l);
    for (int i = 0; i < c->n_layer; i++) {
        struct gwt_layer *L = &w->l[i];
        L->attn_norm = rnd(&s, dim, 0.2f, 1.0f);
        L->ffn_norm = rnd(&s, dim, 0.2f, 1.0f);
        L->wq = rnd(&s, dim * dim, 2 * ws, 0);
        L->wk = rnd(&s, kv * dim, 2 * ws, 0);
        L->wv = rnd(&s, kv * dim, 2 * ws, 0);
        L->wo = rnd(&s, dim * dim, ws, 0);
        L->w_gate = rnd(&s, ffn * dim, 2 * ws, 0);
        L->w_up = rnd(&s, ffn * dim, 2 * ws, 0);
        L->w_down = rnd(&s, dim * ffn, fs, 0);
    }
}

void gwt_weights_free(const gwt_llama *c, gwt_weights *w)
{
    free(w->tok_embd);
    free(w->out_norm);
    free(w->output);
    for (int i = 0; i < c->n_layer && w->l; i++) {
        struct gwt_layer *L = &w->l[i];
        free(L->attn_norm), free(L->ffn_norm), free(L->wq), free(L->wk), free(L->wv);
        free(L->wo), free(L->w_gate), free(L->w_up), free(L->w_down);
    }
    free(w->l);
}

struct tensor {
    char name[64];
    int rows, cols; /* rows == 0: a 1-D vector of cols */
    uint32_t type;
    const float *data;
};

void gwt_write_llama(const gwt_llama *c, const gwt_weights *w, uint32_t type, gwt_buf *b)
{
    int kv = c->dim / c->n_head * c->n_head_kv;
    struct tensor t[3 + 9 * 16];
    int nt = 0;
#define T(nm, r, cl, ty, d)                                                                        \
    (snprintf(t[nt].name, sizeof t[nt].name, "%s", nm), t[nt].rows = r, t[nt].cols = cl,           \
     t[nt].type = ty, t[nt].data = d, nt++)
    T("token_embd.weight", c->vocab, c->dim, type, w->tok_embd);
    T("output_norm.weight", 0, c->dim, 0, w->out_norm);
    if (!c->tied)
        T("output.weight", c->vocab, c->dim, type, w->output);
    for (int i = 0; i < c->n_layer; i++) {
        char nm[64];
        const struct gwt_layer *L = &w->l[i];
#define N(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", i, s), nm)
        T(N("attn_norm"), 0, c->dim, 0, L->attn_norm);
        T(N("attn_q"), c->dim, c->dim, type, L->wq);
        T(N("attn_k"), kv, c->dim, type, L->wk);
        T(N("attn_v"), kv, c->dim, type, L->wv);
        T(N("attn_output"), c->dim, c->dim, type, L->wo);
        T(N("ffn_norm"), 0, c->dim, 0, L->ffn_norm);
        T(N("ffn_gate"), c->ffn, c->dim, type, L->w_gate);
        T(N("ffn_up"), c->ffn, c->dim, type, L->w_up);
        T(N("ffn_down"), c->dim, c->ffn, type, L->w_down);
#undef N
    }
#undef T
    gwt_bytes(b, "GGUF", 4);
    gwt_u32(b, 3);
    gwt_u64(b, (uint64_t)nt);
    gwt_u64(b, 17);
    gwt_kv_str(b, "general.architecture", "llama");
    gwt_kv_u32(b, "llama.block_count", (uint32_t)c->n_layer);
    gwt_kv_u32(b, "llama.context_length", (uint32_t)c->n_ctx);
    gwt_kv_u32(b, "llama.embedding_length", (uint32_t)c->dim);
    gwt_kv_u32(b, "llama.feed_forward_length", (uint32_t)c->ffn);
    gwt_kv_u32(b, "llama.attention.head_count", (uint32_t)c->n_head);
    gwt_kv_u32(b, "llama.attention.head_count_kv", (uint32_t)c->n_head_kv);
    gwt_kv_f32(b, "llama.rope.freq_base", c->rope_base);
    gwt_kv_f32(b, "llama.attention.layer_norm_rms_epsilon", c->eps);
    gwt_kv_u32(b, "llama.rope.dimension_count", (uint32_t)(c->dim / c->n_head));
    gwt_kv_u32(b, "general.alignment", 32);
    gwt_kv_str(b, "tokenizer.ggml.model", "gpt2");
    gwt_kv_str(b, "tokenizer.ggml.pre", "smollm");
    gwt_str(b, "tokenizer.ggml.tokens");
    gwt_u32(b, 9);
    gwt_u32(b, 8);
    gwt_u64(b, (uint64_t)c->vocab);
    for (int i = 0; i < c->vocab; i++) {
        char s[16];
        snprintf(s, sizeof s, "t%d", i);
        gwt_str(b, s);
    }
    gwt_str(b, "tokenizer.ggml.token_type");
    gwt_u32(b, 9);
    gwt_u32(b, 5);
    gwt_u64(b, (uint64_t)c->vocab);
    for (int i = 0; i < c->vocab; i++)
        gwt_u32(b, i < 3 ? 3 : 1);
    gwt_kv_u32(b, "tokenizer.ggml.bos_token_id", 1);
    gwt_kv_u32(b, "tokenizer.ggml.eos_token_id", 2);

    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        gwt_str(b, t[i].name);
        gwt_u32(b, t[i].rows ? 2 : 1);
        gwt_u64(b, (uint64_t)t[i].cols);
        if (t[i].rows)
            gwt_u64(b, (uint64_t)t[i].rows);
        gwt_u32(b, t[i].type);
        gwt_u64(b, off);
        size_t sz = gwt_row_bytes(t[i].type, t[i].cols) * (size_t)(t[i].rows ? t[i].rows : 1);
        off += (sz + 31) / 32 * 32;
    }
    gwt_pad(b, 32);
    for (int i = 0; i < nt; i++) {
        int rows = t[i].rows ? t[i].rows : 1;
        size_t rb = gwt_row_bytes(t[i].type, t[i].cols);
        uint8_t *tmp = malloc(rb);
        for (int r = 0; r < rows; r++) {
            gwt_quantize(t[i].type, t[i].data + (size_t)r * t[i].cols, t[i].cols, tmp);
            gwt_bytes(b, tmp, rb);
        }
        free(tmp);
        gwt_pad(b, 32);
    }
}
