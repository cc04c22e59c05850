/* test_forward.c: the engine's forward pass against a naive reference
 * written plainly here (straight loops over the f32 weights, double sums,
 * nothing shared with worker/), and each quantized type against F32. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "gw_engine.h"
#include "tiny_model.h"

static const int32_t prompt[] = {1, 17, 42, 5, 88, 3, 60, 61, 7, 33, 21, 95};
#define NP ((int)(sizeof prompt / sizeof prompt[0]))

static void ref_rmsnorm(double *o, const double *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    ss = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        o[i] = w[i] * x[i] * ss;
}

static void ref_matvec(double *o, const float *W, const double *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += W[(size_t)r * cols + c] * x[c];
        o[r] = s;
    }
}

static void ref_rope(double *v, int heads, int hd, int pos, double base)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double th = pos * pow(base, -2.0 * i / hd);
            double a = v[h * hd + 2 * i], b = v[h * hd + 2 * i + 1];
            v[h * hd + 2 * i] = a * cos(th) - b * sin(th);
            v[h * hd + 2 * i + 1] = a * sin(th) + b * cos(th);
        }
}

/* Rounds to the nearest half float: the engine keeps its KV cache in halves
 * (as llama.cpp does) and rounds the query and the attention weights that
 * meet it to halves; the reference does the same rounding, written here. */
static double r16(double v)
{
    uint16_t h = gwt_f2h((float)v);
    int e = (h >> 10) & 31, m = h & 1023;
    double a = e == 0 ? ldexp(m, -24) : ldexp(m | 1024, e - 25);
    return (h & 0x8000) ? -a : a;
}

/* Logits after tok[n-1], computing every position of every layer. */
static void ref_forward(const gwt_llama *c, const gwt_weights *w, const int32_t *tok, int n,
                        float *logits)
{
    int dim = c->dim, hd = dim / c->n_head, kv = hd * c->n_head_kv, ffn = c->ffn;
    double *x = calloc((size_t)n * dim, sizeof *x), *K = calloc((size_t)n * kv, sizeof *K),
           *V = calloc((size_t)n * kv, sizeof *V);
    double xb[512], q[512], att[512], o[512], hg[1024], hu[1024], sc[256];
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++)
            x[t * dim + i] = w->tok_embd[(size_t)tok[t] * dim + i];
    for (int l = 0; l < c->n_layer; l++) {
        const struct gwt_layer *L = &w->l[l];
        for (int t = 0; t < n; t++) {
            double *xt = x + t * dim;
            ref_rmsnorm(xb, xt, L->attn_norm, dim, c->eps);
            ref_matvec(q, L->wq, xb, dim, dim);
            ref_matvec(K + t * kv, L->wk, xb, kv, dim);
            ref_matvec(V + t * kv, L->wv, xb, kv, dim);
            ref_rope(q, c->n_head, hd, t, c->rope_base);
            ref_rope(K + t * kv, c->n_head_kv, hd, t, c->rope_base);
            for (int i = 0; i < kv; i++)
                K[t * kv + i] = r16(K[t * kv + i]), V[t * kv + i] = r16(V[t * kv + i]);
            for (int i = 0; i < dim; i++)
                q[i] = r16(q[i]);
            for (int h = 0; h < c->n_head; h++) {
                int g = h / (c->n_head / c->n_head_kv);
                double mx = -1e300, sum = 0;
                for (int u = 0; u <= t; u++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += q[h * hd + d] * K[u * kv + g * hd + d];
                    sc[u] = s / sqrt((double)hd);
                    mx = sc[u] > mx ? sc[u] : mx;
                }
                for (int u = 0; u <= t; u++)
                    sum += (sc[u] = exp(sc[u] - mx));
                for (int d = 0; d < hd; d++) {
                    double s = 0;
                    for (int u = 0; u <= t; u++)
                        s += r16(sc[u] / sum) * V[u * kv + g * hd + d];
                    att[h * hd + d] = s;
                }
            }
            ref_matvec(o, L->wo, att, dim, dim);
            for (int i = 0; i < dim; i++)
                xt[i] += o[i];
            ref_rmsnorm(xb, xt, L->ffn_norm, dim, c->eps);
            ref_matvec(hg, L->w_gate, xb, ffn, dim);
            ref_matvec(hu, L->w_up, xb, ffn, dim);
            for (int i = 0; i < ffn; i++)
                hg[i] = hg[i] / (1.0 + exp(-hg[i])) * hu[i];
            ref_matvec(o, L->w_down, hg, dim, ffn);
            for (int i = 0; i < dim; i++)
                xt[i] += o[i];
        }
    }
    ref_rmsnorm(xb, x + (n - 1) * dim, w->out_norm, dim, c->eps);
    const float *out = c->tied ? w->tok_embd : w->output;
    double lg[4096];
    ref_matvec(lg, out, xb, c->vocab, dim);
    for (int i = 0; i < c->vocab; i++)
        logits[i] = (float)lg[i];
    free(x), free(K), free(V);
}

/* Logits after the prompt, evaluated in batches of n_batch tokens (or one
 * eval call per token when stepwise). */
static void engine_logits(const gw_model *m, int n_threads, int n_batch, bool stepwise, float *out)
{
    gw_ctx *x;
    gw_ctx_opts o = {.n_ctx = 64, .n_threads = n_threads, .n_batch = n_batch};
    assert_int_equal(gw_ctx_new(m, &o, &x), 0);
    float *lg = NULL;
    if (stepwise)
        for (int i = 0; i < NP; i++)
            assert_int_equal(gw_ctx_eval(x, &prompt[i], 1, i, &lg), 0);
    else
        assert_int_equal(gw_ctx_eval(x, prompt, NP, 0, &lg), 0);
    memcpy(out, lg, (size_t)gw_model_cfg(m)->vocab * sizeof *out);
    gw_ctx_free(x);
}

static double max_rel(const float *a, const float *b, int n)
{
    double mx = 0, d = 0;
    for (int i = 0; i < n; i++) {
        mx = fmax(mx, fabs(b[i]));
        d = fmax(d, fabs((double)a[i] - b[i]));
    }
    return d / mx;
}

static double rms_rel(const float *a, const float *b, int n)
{
    double e = 0, s = 0;
    for (int i = 0; i < n; i++) {
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(e / s);
}

/* F32 weights: the engine equals the reference to 1e-4 of the largest
 * logit (float sums against double sums), with both kernel sets, batched
 * and stepwise, 1 and 3 threads, separate and tied output. */
static void test_f32_forward_matches_naive_reference(void **state)
{
    (void)state;
    for (int tied = 0; tied < 2; tied++) {
        gwt_llama c = gwt_llama_default();
        c.tied = tied;
        struct fixture f;
        load(&f, c, GW_T_F32);
        float ref[96], got[96];
        ref_forward(&f.c, &f.w, prompt, NP, ref);
        for (int level = 0; level < 2; level++) {
            gw_simd_set(level);
            engine_logits(f.m, 1, 64, false, got);
            assert_true(max_rel(got, ref, 96) < 1e-4);
            engine_logits(f.m, 3, 5, false, got);
            assert_true(max_rel(got, ref, 96) < 1e-4);
            engine_logits(f.m, 2, 64, true, got);
            assert_true(max_rel(got, ref, 96) < 1e-4);
        }
        gw_simd_set(-1);
        unload(&f);
    }
}

/* Quantized weights against the engine's F32 logits, relative RMS error
 * ||l_q - l_f32|| / ||l_f32||. A b-bit block quantizer leaves each weight
 * off by about step / sqrt(12); over a dot product of independent errors the
 * relative error of the sum is of the same order as the weights' own, and
 * the Q8 activations add ~0.5 %. Two layers plus the output matrix compound
 * it, and the random tiny model has small logits, so the measured errors
 * (seed 1: F16 0.0007, BF16 0.005, Q8_0 0.021, Q6_K 0.030, Q5_1 0.10,
 * Q5_0 0.12, Q4_K 0.14, Q4_1 0.17, Q4_0 0.21) scale roughly as 2^-bits.
 * Each bound is about 1.7-3 times the measured error: loose enough for
 * another seed, tight enough that a wrong kernel (a swapped nibble order, a
 * lost minimum: errors near 100 %) fails. */
static void test_quantized_forward_close_to_f32(void **state)
{
    (void)state;
    static const struct {
        uint32_t type;
        double tol;
    } cases[] = {
        {GW_T_F16, 0.002}, {GW_T_BF16, 0.02}, {GW_T_Q8_0, 0.04}, {GW_T_Q5_0, 0.2},
        {GW_T_Q5_1, 0.2},  {GW_T_Q4_0, 0.35}, {GW_T_Q4_1, 0.35},
    };
    struct fixture f32;
    load(&f32, gwt_llama_default(), GW_T_F32);
    float ref[96], got[96], port[96];
    engine_logits(f32.m, 1, 64, false, ref);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fixture f;
        load(&f, gwt_llama_default(), cases[i].type);
        gw_simd_set(1);
        engine_logits(f.m, 2, 64, false, got);
        gw_simd_set(0);
        engine_logits(f.m, 2, 64, false, port);
        gw_simd_set(-1);
        double e = rms_rel(got, ref, 96);
        print_message("%s: relative RMS error of logits vs F32 %.4f (bound %.3f)\n",
                      gw_ggml_type_name(cases[i].type), e, cases[i].tol);
        assert_true(e < cases[i].tol);
        /* AVX2 and portable kernels differ only in float summation order */
        assert_true(max_rel(got, port, 96) < 1e-4);
        unload(&f);
    }
    unload(&f32);
}

/* K-quants need rows that are a multiple of 256. */
static void test_k_quant_forward_close_to_f32(void **state)
{
    (void)state;
    gwt_llama c = gwt_llama_default();
    c.dim = 256, c.ffn = 512, c.n_layer = 1;
    struct fixture f32, fk;
    load(&f32, c, GW_T_F32);
    float ref[96], got[96];
    engine_logits(f32.m, 2, 64, false, ref);
    const uint32_t types[] = {GW_T_Q6_K, GW_T_Q4_K};
    const double tol[] = {0.08, 0.25};
    for (int i = 0; i < 2; i++) {
        load(&fk, c, types[i]);
        engine_logits(fk.m, 2, 64, false, got);
        double e = rms_rel(got, ref, 96);
        print_message("%s: relative RMS error of logits vs F32 %.4f (bound %.3f)\n",
                      gw_ggml_type_name(types[i]), e, tol[i]);
        assert_true(e < tol[i]);
        unload(&fk);
    }
    unload(&f32);
}

/* A batched prefill computes exactly what one token at a time computes,
 * whatever the thread count: same kernels, rows only split differently. */
static void test_batched_prefill_equals_stepwise_bit_for_bit(void **state)
{
    (void)state;
    struct fixture f;
    load(&f, gwt_llama_default(), GW_T_Q4_1);
    float a[96], b[96], c3[96];
    engine_logits(f.m, 1, 64, false, a);
    engine_logits(f.m, 2, 1, true, b);
    engine_logits(f.m, 3, 4, false, c3);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(a, c3, sizeof a);
    unload(&f);
}

static void test_eval_rejects_bad_tokens_and_full_context(void **state)
{
    (void)state;
    struct fixture f;
    load(&f, gwt_llama_default(), GW_T_Q8_0);
    gw_ctx *x;
    gw_ctx_opts o = {.n_ctx = 8, .n_threads = 1};
    assert_int_equal(gw_ctx_new(f.m, &o, &x), 0);
    int32_t bad = 96;
    assert_int_equal(gw_ctx_eval(x, &bad, 1, 0, NULL), -EINVAL);
    assert_int_equal(gw_ctx_eval(x, prompt, 9, 0, NULL), GW_ECONTEXT);
    assert_int_equal(gw_ctx_eval(x, prompt, 2, 7, NULL), GW_ECONTEXT);
    assert_int_equal(gw_ctx_eval(x, prompt, 8, 0, NULL), 0);
    gw_ctx_free(x);
    unload(&f);
}

/* Model-level errors: architecture, missing tensor, wrong shape, a type the
 * engine does not compute with. The file is patched in place. */
static void patch(gwt_buf *b, const char *find, size_t skip, const void *with, size_t n)
{
    size_t fl = strlen(find);
    for (size_t i = 0; i + fl <= b->len; i++)
        if (memcmp(b->p + i, find, fl) == 0) {
            memcpy(b->p + i + fl + skip, with, n);
            return;
        }
    fail_msg("%s not found", find);
}

static const char *model_err(gwt_buf *b)
{
    static char err[512];
    gw_gguf *g;
    gw_model *m = NULL;
    assert_int_equal(gw_gguf_open_buffer(b->p, b->len, "tiny.gguf", &g, err, sizeof err), 0);
    assert_int_equal(gw_model_from_gguf(g, &m, err, sizeof err), -EINVAL);
    assert_null(m);
    return err;
}

static void test_model_load_errors_name_the_problem(void **state)
{
    (void)state;
    gwt_llama c = gwt_llama_default();
    gwt_weights w;
    gwt_weights_random(&c, &w);
    gwt_buf b = {0};

    gwt_write_llama(&c, &w, GW_T_F32, &b);
    patch(&b, "general.architecture", 12, "mamba", 5); /* type (4) + length (8), then bytes */
    assert_string_equal(model_err(&b),
                        "tiny.gguf: architecture \"mamba\" not supported (only llama)");
    gwt_free(&b);

    gwt_write_llama(&c, &w, GW_T_F32, &b);
    patch(&b, "blk.1.ffn_up.weigh", 0, "T", 1); /* rename: blk.1.ffn_up.weighT */
    assert_string_equal(model_err(&b), "tiny.gguf: tensor \"blk.1.ffn_up.weight\" missing");
    gwt_free(&b);

    gwt_write_llama(&c, &w, GW_T_F32, &b);
    uint64_t ne1 = 32; /* attn_q rows 64 -> 32 (n_dims 4 bytes, ne0 8 bytes, then ne1) */
    patch(&b, "blk.0.attn_q.weight", 12, &ne1, 8);
    assert_string_equal(
        model_err(&b),
        "tiny.gguf: tensor \"blk.0.attn_q.weight\": shape 64 x 32, expected 64 x 64");
    gwt_free(&b);

    gwt_write_llama(&c, &w, GW_T_F32, &b);
    uint32_t i8 = GW_T_I8; /* fits in the F32 tensor's bytes: the loader accepts it */
    patch(&b, "blk.0.attn_k.weight", 20, &i8, 4);
    assert_string_equal(model_err(&b),
                        "tiny.gguf: tensor \"blk.0.attn_k.weight\": type I8 not supported (F32, "
                        "F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K)");
    gwt_free(&b);
    gwt_weights_free(&c, &w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32_forward_matches_naive_reference),
        cmocka_unit_test(test_quantized_forward_close_to_f32),
        cmocka_unit_test(test_k_quant_forward_close_to_f32),
        cmocka_unit_test(test_batched_prefill_equals_stepwise_bit_for_bit),
        cmocka_unit_test(test_eval_rejects_bad_tokens_and_full_context),
        cmocka_unit_test(test_model_load_errors_name_the_problem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
