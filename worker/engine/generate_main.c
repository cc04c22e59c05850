/* gpuwarden-generate: runs the engine (CPU or CUDA) on a prompt from the command line.
 * Exit status: 0 ok, 100 misuse, 111 model or runtime failure. */
#include "gw_engine.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpuwarden-generate -m MODEL.gguf (-p PROMPT | --ids \"1 2 3\") [-n N] [--chat]\n"
            "         [--seed S] [--threads T] [--temp X] [--top-k K] [--top-p P] [--ctx C]\n"
            "         [--batch B] [--portable] [--print-ids] [--device D] [--no-graph] [-v]\n"
            "  --ids     prompt as token ids (no tokenizer needed)\n"
            "  --portable  portable C kernels instead of AVX2\n"
            "  --device  auto (default: CUDA device 0 when one works, else the CPU),\n"
            "            cpu, or cuda:N\n"
            "  --no-graph  CUDA: launch the decode step's kernels one by one instead of\n"
            "            replaying a CUDA graph (for comparison)\n");
}

struct out {
    bool print_ids;
#ifdef GW_HAVE_TOKENIZER
    gw_tok_decoder dec;
#endif
};

#ifdef GW_HAVE_TOKENIZER
static int piece(void *user, int32_t tok, char *buf, size_t cap)
{
    struct out *o = user;
    const char *chunk;
    size_t len;
    if (gw_tok_decoder_push(&o->dec, tok, &chunk, &len, NULL, 0) < 0)
        return -1;
    if (len > cap)
        len = cap;
    memcpy(buf, chunk, len);
    return (int)len;
}
#endif

static void on_text(void *user, const char *text, size_t len)
{
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void on_step(void *user, const gw_gen_step *st)
{
    struct out *o = user;
    if (o->print_ids) {
        printf("%d ", st->token);
        fflush(stdout);
    }
}

static int parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = strlen(s) / 2 + 1;
    *ids = malloc(cap * sizeof **ids);
    *n = 0;
    if (!*ids)
        return -ENOMEM;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX)
            return -EINVAL;
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        while (*s == ' ' || *s == ',')
            s++;
    }
    return *n ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *ids_arg = NULL;
    int n_predict = 128, verbose = 0, chat = 0, portable = 0, print_ids = 0, no_graph = 0;
    gw_ctx_opts co = {.device = "auto"};
    gw_sampler_params sp = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 42};
    enum { O_CHAT = 256, O_SEED, O_THREADS, O_TEMP, O_TOPK, O_TOPP, O_IDS, O_CTX, O_BATCH,
           O_PORTABLE, O_PRINT_IDS, O_DEVICE, O_NO_GRAPH };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
        {"n-predict", required_argument, 0, 'n'}, {"chat", no_argument, 0, O_CHAT},
        {"seed", required_argument, 0, O_SEED}, {"threads", required_argument, 0, O_THREADS},
        {"temp", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP}, {"ids", required_argument, 0, O_IDS},
        {"ctx", required_argument, 0, O_CTX},   {"batch", required_argument, 0, O_BATCH},
        {"portable", no_argument, 0, O_PORTABLE}, {"print-ids", no_argument, 0, O_PRINT_IDS},
        {"device", required_argument, 0, O_DEVICE}, {"no-graph", no_argument, 0, O_NO_GRAPH},
        {"verbose", no_argument, 0, 'v'},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "m:p:n:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n': n_predict = atoi(optarg); break;
        case 'v': verbose = 1; break;
        case O_CHAT: chat = 1; break;
        case O_SEED: sp.seed = strtoull(optarg, NULL, 10); break;
        case O_THREADS: co.n_threads = atoi(optarg); break;
        case O_TEMP: sp.temperature = strtof(optarg, NULL); break;
        case O_TOPK: sp.top_k = atoi(optarg); break;
        case O_TOPP: sp.top_p = strtof(optarg, NULL); break;
        case O_IDS: ids_arg = optarg; break;
        case O_CTX: co.n_ctx = atoi(optarg); break;
        case O_BATCH: co.n_batch = atoi(optarg); break;
        case O_PORTABLE: portable = 1; break;
        case O_PRINT_IDS: print_ids = 1; break;
        case O_DEVICE: co.device = optarg; break;
        case O_NO_GRAPH: no_graph = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 100;
        }
    }
    if (!model_path || (!prompt == !ids_arg) || n_predict < 1 || co.n_threads < 0) {
        usage(stderr);
        return 100;
    }
    gw_simd_set(portable ? 0 : -1);

    char err[512];
    gw_model *m = NULL;
    gw_ctx *ctx = NULL;
    int32_t *ids = NULL, *gen = NULL;
    size_t n_ids = 0;
    const int32_t *eog = NULL;
    size_t n_eog = 0;
    int status = 111, rc;
    struct out o = {.print_ids = print_ids};
    gw_gen_params gp = {.max_tokens = n_predict, .sampling = sp, .user = &o, .on_step = on_step,
                        .on_text = on_text};
#ifdef GW_HAVE_TOKENIZER
    gw_tokenizer *tok = NULL;
    char *text = NULL;
#endif

    if ((rc = gw_model_load(model_path, &m, err, sizeof err)) < 0) {
        fprintf(stderr, "gpuwarden-generate: %s\n", err);
        return 111;
    }
    const gw_model_config *cfg = gw_model_cfg(m);
    if (verbose) {
        char hist[512];
        gw_model_type_histogram(m, hist, sizeof hist);
        fprintf(stderr,
                "%s: %d layers, dim %d, heads %d/%d, ffn %d, vocab %d, rope base %g, %s\n"
                "tensor types: %s\nkernels: %s\n",
                model_path, cfg->n_layer, cfg->dim, cfg->n_head, cfg->n_head_kv, cfg->ffn,
                cfg->vocab, (double)cfg->rope_base, cfg->tied ? "tied output" : "separate output",
                hist, gw_simd_get() ? "avx2" : "portable");
    }
    if ((rc = gw_ctx_open(m, &co, &ctx, err, sizeof err)) < 0) {
        fprintf(stderr, "gpuwarden-generate: %s\n", err);
        status = rc == -EINVAL ? 100 : 111;
        goto out;
    }
    if (gw_ctx_note(ctx)[0])
        fprintf(stderr, "gpuwarden-generate: %s\n", gw_ctx_note(ctx));
    if (verbose)
        fprintf(stderr, "device: %s%s\n", gw_ctx_backend(ctx),
                gw_ctx_on_gpu(ctx) ? (no_graph ? ", decode without a CUDA graph" : ", decode as a CUDA graph") : "");
    gw_ctx_use_graph(ctx, !no_graph);

    if (ids_arg) {
        if (parse_ids(ids_arg, &ids, &n_ids) < 0) {
            fprintf(stderr, "gpuwarden-generate: --ids \"%s\": expected token ids\n", ids_arg);
            status = 100;
            goto out;
        }
    } else {
#ifdef GW_HAVE_TOKENIZER
        if ((rc = gw_tokenizer_load(gw_model_gguf(m), &tok, err, sizeof err)) < 0) {
            fprintf(stderr, "gpuwarden-generate: %s\n", err);
            goto out;
        }
        const char *p = prompt;
        size_t plen = strlen(prompt);
        if (chat) {
            gw_chat_template ct;
            gw_chat_msg msg = {"user", 4, prompt, plen};
            if ((rc = gw_chat_template_from_gguf(&ct, gw_model_gguf(m), tok, err, sizeof err)) < 0 ||
                (rc = gw_chat_format(&ct, &msg, 1, &text, &plen, err, sizeof err)) < 0) {
                if (rc == -ENOENT)
                    snprintf(err, sizeof err, "%s: tokenizer.chat_template missing", model_path);
                fprintf(stderr, "gpuwarden-generate: %s\n", err);
                if (rc != -ENOENT)
                    gw_chat_template_free(&ct);
                goto out;
            }
            gw_chat_template_free(&ct);
            p = text;
        }
        if ((rc = gw_tokenizer_encode(tok, p, plen, GW_TOK_ADD_BOS | (chat ? GW_TOK_PARSE_SPECIAL : 0),
                                      &ids, &n_ids, err, sizeof err)) < 0) {
            fprintf(stderr, "gpuwarden-generate: %s\n", err);
            goto out;
        }
        gw_tokenizer_eog_ids(tok, &eog, &n_eog);
        if (gw_tok_decoder_init(&o.dec, tok, 0) < 0)
            goto out;
        gp.piece = piece;
        if (!print_ids)
            fwrite(p, 1, plen, stdout);
#else
        (void)chat;
        fprintf(stderr, "gpuwarden-generate: this build has no tokenizer yet; use --ids\n");
        status = 100;
        goto out;
#endif
    }
    if (n_ids == 0) {
        fprintf(stderr, "gpuwarden-generate: the prompt encodes to no tokens\n");
        status = 100;
        goto out;
    }
    gp.eog_ids = eog;
    gp.n_eog = n_eog;
    if (!(gen = malloc((size_t)n_predict * sizeof *gen)))
        goto out;
    gw_gen_result res;
    if ((rc = gw_generate(ctx, ids, n_ids, &gp, gen, (size_t)n_predict, &res)) < 0) {
        fprintf(stderr, "gpuwarden-generate: %s%s%s\n", gw_worker_strerror(rc),
                gw_ctx_error(ctx)[0] ? ": " : "", gw_ctx_error(ctx));
        goto out;
    }
    printf("\n");
    static const char *const why[] = {"?", "length", "eog", "stop", "cancel", "context"};
    char where[240];
    if (gw_ctx_on_gpu(ctx))
        snprintf(where, sizeof where, "%s%s", gw_ctx_backend(ctx), no_graph ? ", no graph" : "");
    else
        snprintf(where, sizeof where, "cpu, %d threads", gw_ctx_n_threads(ctx));
    fprintf(stderr,
            "prompt: %" "llu tokens in %.1f ms (%.1f tok/s); decode: %llu tokens in %.1f ms "
            "(%.1f tok/s); device time %.1f ms; %s; finish %s\n",
            (unsigned long long)res.n_prompt, res.prompt_ns / 1e6,
            res.prompt_ns ? res.n_prompt * 1e9 / res.prompt_ns : 0.0,
            (unsigned long long)res.n_tokens, res.decode_ns / 1e6,
            res.decode_ns ? res.n_tokens * 1e9 / res.decode_ns : 0.0, res.device_ns / 1e6, where,
            why[res.finish >= 0 && res.finish <= 5 ? res.finish : 0]);
    status = 0;
out:
#ifdef GW_HAVE_TOKENIZER
    if (gp.piece)
        gw_tok_decoder_free(&o.dec);
    gw_tokenizer_free(tok);
    free(text);
#endif
    free(gen);
    free(ids);
    gw_ctx_free(ctx);
    gw_model_free(m);
    return status;
}
