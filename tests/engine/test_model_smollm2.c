/* test_model_smollm2.c (label "model"): greedy decoding of the real
 * SmolLM2-135M-Instruct Q4_1 file reproduces llama.cpp's ids from
 * tests/fixtures/smollm2_greedy.json (prompt_ids -> greedy_ids, written by
 * llama-cpp-python; 3 plain and 3 chat cases, 48 ids each) for at least
 * the first MIN_MATCH = 32 tokens of every case, on both the AVX2 and the
 * portable kernels (which give the same bits). Every case must pass on
 * both paths; all are run and reported before the test fails.
 *
 * What is matched: the llama.cpp bundled with llama-cpp-python 0.3.36
 * (ggml 0.25.3), flash attention off, f16 KV cache, built with
 * -march=native on an AVX-512 x86 machine. Matched rounding point for
 * rounding point (worker/engine/quant.c, matvec.c, model.c): Q8_1/Q8_0
 * activations with 127/amax, ties to even, d and s as halves; the AVX2
 * 8-lane FMA order of ggml_vec_dot_q4_1_q8_1 / q8_0_q8_0; RMSNorm in
 * double; RoPE angles by repeated float multiplication; q and the softmax
 * weights as halves, K.q and the V sums in ggml_vec_dot_f16's (one token)
 * or tinyBLAS's (batch) AVX-512 lane order; softmax with a double sum.
 * Layer by layer, every tensor then equals llama.cpp's bit for bit except
 * where an exponential is taken: llama.cpp uses its own vectorized expf
 * approximation (ggml_v_expf, in the softmax and in SiLU), which differs
 * from libm's expf by an ulp now and then. Such an ulp can move an
 * activation across a Q8 rounding boundary and shift a layer's output by
 * ~1e-2, so at a near-tie the greedy choice is decided by rounding noise.
 * That approximation is not reproduced here (it would mean copying
 * llama.cpp's code); see docs/BENCHMARKS.md "Engine (CPU)".
 *
 * So the fixture holds only cases whose top1-top2 logit gap (recorded per
 * step in top1_minus_top2_logit) stays >= 0.5 logits over the first 40
 * steps: there a one-ulp difference in exp() cannot decide a token, and a
 * mismatch in the first 32 ids means the forward pass, the prompt ids or
 * the greedy selection disagree with llama.cpp. The fixture's "source"
 * lists the settings, the rule and the rejected candidates (the earlier
 * cases had gaps down to 0.033 within their first 32 steps and matched
 * only 9, 8 and 33 ids). Measured (x86-64 with AVX2): all six cases
 * match all 48 ids on both the AVX2 and the portable path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "gw_engine.h"

#define MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define FIXTURE "tests/fixtures/smollm2_greedy.json"
#define MIN_MATCH 32

static const char *src_dir(void)
{
    const char *d = getenv("GW_SOURCE_DIR");
    return d && *d ? d : ".";
}

static size_t ids(json_t *arr, int32_t *out, size_t cap)
{
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(arr, i, v) if (n < cap) out[n++] = (int32_t)json_integer_value(v);
    return n;
}

/* Returns the number of cases below MIN_MATCH (all are run and reported). */
static int check_level(gw_model *m, json_t *cases, int level)
{
    int short_cases = 0;
    gw_simd_set(level);
    gw_ctx *x;
    gw_ctx_opts o = {.n_ctx = 512, .n_threads = 2};
    assert_int_equal(gw_ctx_new(m, &o, &x), 0);
    size_t ci;
    json_t *c;
    json_array_foreach(cases, ci, c)
    {
        int32_t prompt[512], want[128], got[128];
        size_t np = ids(json_object_get(c, "prompt_ids"), prompt, 512);
        size_t nw = ids(json_object_get(c, "greedy_ids"), want, 128);
        assert_true(np > 0 && nw >= MIN_MATCH);
        gw_gen_params p = {.max_tokens = (int)nw, .sampling = {.temperature = 0}};
        gw_gen_result r;
        assert_int_equal(gw_generate(x, prompt, np, &p, got, 128, &r), 0);
        size_t same = 0;
        while (same < r.n_tokens && same < nw && got[same] == want[same])
            same++;
        print_message("%s (%s): %zu of %zu greedy ids match\n",
                      json_string_value(json_object_get(c, "name")), level ? "avx2" : "portable",
                      same, nw);
        if (same < MIN_MATCH) {
            print_message("  case %s (%s): id %zu is %d, llama.cpp has %d\n",
                          json_string_value(json_object_get(c, "name")), level ? "avx2" : "portable",
                          same, got[same], want[same]);
            short_cases++;
        }
    }
    gw_ctx_free(x);
    gw_simd_set(-1);
    return short_cases;
}

static void test_smollm2_greedy_matches_llama_cpp(void **state)
{
    (void)state;
    char path[4096], fx[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", src_dir(), MODEL);
    snprintf(fx, sizeof fx, "%s/%s", src_dir(), FIXTURE);
    if (access(path, R_OK) != 0) {
        print_message("skipped: " MODEL " missing (run scripts/fetch-model.sh)\n");
        skip();
    }
    json_error_t je;
    json_t *root = json_load_file(fx, 0, &je);
    if (!root)
        fail_msg("%s: %s", fx, je.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_is_array(cases) && json_array_size(cases) > 0);
    gw_model *m;
    if (gw_model_load(path, &m, err, sizeof err) != 0)
        fail_msg("%s", err);
    int short_avx2 = check_level(m, cases, 1);
    int short_portable = check_level(m, cases, 0);
    gw_model_free(m);
    json_decref(root);
    if (short_avx2 || short_portable)
        fail_msg("%d avx2 and %d portable case(s) below %d matching ids", short_avx2,
                 short_portable, MIN_MATCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smollm2_greedy_matches_llama_cpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
