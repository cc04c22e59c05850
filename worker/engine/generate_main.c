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
    fprintf(
        f, "usage: gpuwarden-generate -m MODEL.gguf (-p PROMPT | --ids \"1 2 3\") [-n N] [--chat]\n"
           "         [--seed S] [--threads T] [--temp X] [--top-k K] [--top-p P] [--ctx C]\n"
           "         [--batch B] [--portable] [--print-ids] [--device D] [--no-graph] [-v]\n"
           "  --ids     prompt as token ids (no tokenizer needed)\n"
           "  --portable  portable C kernels instead of AVX2 or AVX-512\n"
           "  --device  auto (default: CUDA device 0 when one works, else the CPU),\n"
           "            cpu, or cuda:N\n"
           "  --no-graph  CUDA: launch the decode step's kernels one by one instead of\n"
           "            replaying a CUDA graph (for comparison)\n");
}

struct out {
    bool print_ids;
    gw_tok_decoder dec;
};

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

/* The command line. */
struct args {
    const char *model_path, *prompt, *ids_arg;
    int n_predict, verbose, chat, portable, print_ids, no_graph;
    gw_ctx_opts co;
    gw_sampler_params sp;
};

/* Each step returns GO_ON, or the exit status to stop with. */
enum { GO_ON = -1 };

/* Long options without a short form. */
enum {
    O_CHAT = 256,
    O_SEED,
    O_THREADS,
    O_TEMP,
    O_TOPK,
    O_TOPP,
    O_IDS,
    O_CTX,
    O_BATCH,
    O_PORTABLE,
    O_PRINT_IDS,
    O_DEVICE,
    O_NO_GRAPH
};

static const struct option opts[] = {
    {"model", required_argument, 0, 'm'},
    {"prompt", required_argument, 0, 'p'},
    {"n-predict", required_argument, 0, 'n'},
    {"chat", no_argument, 0, O_CHAT},
    {"seed", required_argument, 0, O_SEED},
    {"threads", required_argument, 0, O_THREADS},
    {"temp", required_argument, 0, O_TEMP},
    {"top-k", required_argument, 0, O_TOPK},
    {"top-p", required_argument, 0, O_TOPP},
    {"ids", required_argument, 0, O_IDS},
    {"ctx", required_argument, 0, O_CTX},
    {"batch", required_argument, 0, O_BATCH},
    {"portable", no_argument, 0, O_PORTABLE},
    {"print-ids", no_argument, 0, O_PRINT_IDS},
    {"device", required_argument, 0, O_DEVICE},
    {"no-graph", no_argument, 0, O_NO_GRAPH},
    {"verbose", no_argument, 0, 'v'},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

/* Applies option c (getopt_long's return) with its optarg. */
static int apply_option(struct args *a, int c)
{
    switch (c) {
    case 'm':
        a->model_path = optarg;
        break;
    case 'p':
        a->prompt = optarg;
        break;
    case 'n':
        a->n_predict = atoi(optarg);
        break;
    case 'v':
        a->verbose = 1;
        break;
    case O_CHAT:
        a->chat = 1;
        break;
    case O_SEED:
        a->sp.seed = strtoull(optarg, NULL, 10);
        break;
    case O_THREADS:
        a->co.n_threads = atoi(optarg);
        break;
    case O_TEMP:
        a->sp.temperature = strtof(optarg, NULL);
        break;
    case O_TOPK:
        a->sp.top_k = atoi(optarg);
        break;
    case O_TOPP:
        a->sp.top_p = strtof(optarg, NULL);
        break;
    case O_IDS:
        a->ids_arg = optarg;
        break;
    case O_CTX:
        a->co.n_ctx = atoi(optarg);
        break;
    case O_BATCH:
        a->co.n_batch = atoi(optarg);
        break;
    case O_PORTABLE:
        a->portable = 1;
        break;
    case O_PRINT_IDS:
        a->print_ids = 1;
        break;
    case O_DEVICE:
        a->co.device = optarg;
        break;
    case O_NO_GRAPH:
        a->no_graph = 1;
        break;
    case 'h':
        usage(stdout);
        return 0;
    default:
        usage(stderr);
        return 100;
    }
    return GO_ON;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    *a = (struct args){
        .n_predict = 128,
        .co = {.device = "auto"},
        .sp = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 42},
    };
    int c, status;
    while ((c = getopt_long(argc, argv, "m:p:n:vh", opts, NULL)) != -1)
        if ((status = apply_option(a, c)) != GO_ON)
            return status;
    if (!a->model_path || (!a->prompt == !a->ids_arg) || a->n_predict < 1 || a->co.n_threads < 0) {
        usage(stderr);
        return 100;
    }
    return GO_ON;
}

/* What the steps after parsing share; freed by session_free. */
struct session {
    gw_model *m;
    gw_ctx *ctx;
    int32_t *ids, *gen;
    size_t n_ids;
    struct out o;
    gw_gen_params gp;
    gw_tokenizer *tok;
    char *text;
};

/* Loads the model and opens a context on the chosen device. */
static int open_engine(const struct args *a, struct session *s)
{
    char err[512];
    int rc;
    if ((rc = gw_model_load(a->model_path, &s->m, err, sizeof err)) < 0) {
        fprintf(stderr, "gpuwarden-generate: %s\n", err);
        return 111;
    }
    const gw_model_config *cfg = gw_model_cfg(s->m);
    if (a->verbose) {
        char hist[512];
        gw_model_type_histogram(s->m, hist, sizeof hist);
        fprintf(stderr,
                "%s: %d layers, dim %d, heads %d/%d, ffn %d, vocab %d, rope base %g, %s\n"
                "tensor types: %s\nkernels: %s\n",
                a->model_path, cfg->n_layer, cfg->dim, cfg->n_head, cfg->n_head_kv, cfg->ffn,
                cfg->vocab, (double)cfg->rope_base, cfg->tied ? "tied output" : "separate output",
                hist,
                gw_simd_get() == 2 ? "avx512"
                : gw_simd_get()    ? "avx2"
                                   : "portable");
    }
    if ((rc = gw_ctx_open(s->m, &a->co, &s->ctx, err, sizeof err)) < 0) {
        fprintf(stderr, "gpuwarden-generate: %s\n", err);
        return rc == -EINVAL ? 100 : 111;
    }
    if (gw_ctx_note(s->ctx)[0])
        fprintf(stderr, "gpuwarden-generate: %s\n", gw_ctx_note(s->ctx));
    if (a->verbose)
        fprintf(stderr, "device: %s%s\n", gw_ctx_backend(s->ctx),
                gw_ctx_on_gpu(s->ctx)
                    ? (a->no_graph ? ", decode without a CUDA graph" : ", decode as a CUDA graph")
                    : "");
    gw_ctx_use_graph(s->ctx, !a->no_graph);
    return GO_ON;
}

/* The prompt as token ids: --ids as given, or the text encoded (in the
 * model's chat template with --chat); the text goes to stdout. */
static int prompt_ids(const struct args *a, struct session *s)
{
    if (a->ids_arg) {
        if (parse_ids(a->ids_arg, &s->ids, &s->n_ids) < 0) {
            fprintf(stderr, "gpuwarden-generate: --ids \"%s\": expected token ids\n", a->ids_arg);
            return 100;
        }
    } else {
        char err[512];
        int rc;
        if ((rc = gw_tokenizer_load(gw_model_gguf(s->m), &s->tok, err, sizeof err)) < 0) {
            fprintf(stderr, "gpuwarden-generate: %s\n", err);
            return 111;
        }
        const char *p = a->prompt;
        size_t plen = strlen(a->prompt);
        if (a->chat) {
            gw_chat_template ct;
            gw_chat_msg msg = {"user", 4, a->prompt, plen};
            if ((rc = gw_chat_template_from_gguf(&ct, gw_model_gguf(s->m), s->tok, err,
                                                 sizeof err)) < 0 ||
                (rc = gw_chat_format(&ct, &msg, 1, &s->text, &plen, err, sizeof err)) < 0) {
                if (rc == -ENOENT)
                    snprintf(err, sizeof err, "%s: tokenizer.chat_template missing", a->model_path);
                fprintf(stderr, "gpuwarden-generate: %s\n", err);
                if (rc != -ENOENT)
                    gw_chat_template_free(&ct);
                return 111;
            }
            gw_chat_template_free(&ct);
            p = s->text;
        }
        if ((rc = gw_tokenizer_encode(s->tok, p, plen,
                                      GW_TOK_ADD_BOS | (a->chat ? GW_TOK_PARSE_SPECIAL : 0),
                                      &s->ids, &s->n_ids, err, sizeof err)) < 0) {
            fprintf(stderr, "gpuwarden-generate: %s\n", err);
            return 111;
        }
        gw_tokenizer_eog_ids(s->tok, &s->gp.eog_ids, &s->gp.n_eog);
        if (gw_tok_decoder_init(&s->o.dec, s->tok, 0) < 0)
            return 111;
        s->gp.piece = piece;
        if (!a->print_ids)
            fwrite(p, 1, plen, stdout);
    }
    if (s->n_ids == 0) {
        fprintf(stderr, "gpuwarden-generate: the prompt encodes to no tokens\n");
        return 100;
    }
    return GO_ON;
}

/* Generates, then prints the summary line to stderr. */
static int generate(const struct args *a, struct session *s)
{
    int rc;
    if (!(s->gen = malloc((size_t)a->n_predict * sizeof *s->gen)))
        return 111;
    gw_gen_result res;
    rc = gw_generate(s->ctx, s->ids, s->n_ids, &s->gp, s->gen, (size_t)a->n_predict, &res);
    if (rc < 0) {
        fprintf(stderr, "gpuwarden-generate: %s%s%s\n", gw_strerror(rc),
                gw_ctx_error(s->ctx)[0] ? ": " : "", gw_ctx_error(s->ctx));
        return 111;
    }
    printf("\n");
    static const char *const why[] = {"?", "length", "eog", "stop", "cancel", "context"};
    char where[240];
    if (gw_ctx_on_gpu(s->ctx))
        snprintf(where, sizeof where, "%s%s", gw_ctx_backend(s->ctx),
                 a->no_graph ? ", no graph" : "");
    else
        snprintf(where, sizeof where, "cpu, %d threads", gw_ctx_n_threads(s->ctx));
    fprintf(stderr,
            "prompt: %llu tokens in %.1f ms (%.1f tok/s); decode: %llu tokens in %.1f ms "
            "(%.1f tok/s); device time %.1f ms; %s; finish %s\n",
            (unsigned long long)res.n_prompt, res.prompt_ns / 1e6,
            res.prompt_ns ? res.n_prompt * 1e9 / res.prompt_ns : 0.0,
            (unsigned long long)res.n_tokens, res.decode_ns / 1e6,
            res.decode_ns ? res.n_tokens * 1e9 / res.decode_ns : 0.0, res.device_ns / 1e6, where,
            why[res.finish >= 0 && res.finish <= 5 ? res.finish : 0]);
    return 0;
}

static void session_free(struct session *s)
{
    if (s->gp.piece)
        gw_tok_decoder_free(&s->o.dec);
    gw_tokenizer_free(s->tok);
    free(s->text);
    free(s->gen);
    free(s->ids);
    gw_ctx_free(s->ctx);
    gw_model_free(s->m);
}

int main(int argc, char **argv)
{
    struct args a;
    int status = parse_args(argc, argv, &a);
    if (status != GO_ON)
        return status;
    gw_simd_set(a.portable ? 0 : -1);

    struct session s = {.o = {.print_ids = a.print_ids}};
    s.gp = (gw_gen_params){.max_tokens = a.n_predict,
                           .sampling = a.sp,
                           .user = &s.o,
                           .on_step = on_step,
                           .on_text = on_text};
    status = open_engine(&a, &s);
    if (status == GO_ON)
        status = prompt_ids(&a, &s);
    if (status == GO_ON)
        status = generate(&a, &s);
    session_free(&s);
    return status;
}
