/* test_routes.c - routes.c and request.c as a specification: which method and path reach
 * which route, which bodies are refused with which exact message and param,
 * what good bodies parse to, and the exact bytes of every response shape. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "gw_supervisor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The config these tests run under: only what request.c and routes.c read. One plan
 * (the default) caps max_tokens at 4096; slots take 32 KiB of prompt. */
static struct gw_config cfg;

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_name, sizeof cfg.model_name, "smollm2");
    cfg.segment.prompt_bytes = 32768;
    cfg.n_plans = 1;
    snprintf(cfg.plans[0].name, sizeof cfg.plans[0].name, "free");
    cfg.plans[0].max_tokens = 4096;
    cfg.default_plan = 0;
    return 0;
}

#define G GW_ROUTE_GENERATE
#define C GW_ROUTE_COMPLETIONS
#define H GW_ROUTE_CHAT

/* Parses body (len bytes) and returns rc; err and param land in the
 * caller's buffers. */
static int parse(enum gw_route r, const char *body, size_t len, struct gw_gen_request *req,
                 char *err, char *param)
{
    return gw_request_parse(r, body, len, &cfg, req, err, 512, param, 64);
}

/* ------------------------------------------------------------ routes */

static void test_routes_match_exact_paths_and_methods(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
        int status;
        enum gw_route route;
        const char *allow;
    } cases[] = {
        {"POST", "/v1/generate", 0, GW_ROUTE_GENERATE, NULL},
        {"POST", "/v1/completions", 0, GW_ROUTE_COMPLETIONS, NULL},
        {"POST", "/v1/chat/completions", 0, GW_ROUTE_CHAT, NULL},
        {"GET", "/healthz", 0, GW_ROUTE_HEALTHZ, NULL},
        {"HEAD", "/healthz", 0, GW_ROUTE_HEALTHZ, NULL},
        {"GET", "/readyz", 0, GW_ROUTE_READYZ, NULL},
        {"HEAD", "/readyz", 0, GW_ROUTE_READYZ, NULL},
        {"GET", "/metrics", 0, GW_ROUTE_METRICS, NULL},
        {"HEAD", "/metrics", 0, GW_ROUTE_METRICS, NULL},
        /* the query string is ignored */
        {"POST", "/v1/completions?api-version=1", 0, GW_ROUTE_COMPLETIONS, NULL},
        {"GET", "/metrics?", 0, GW_ROUTE_METRICS, NULL},
        {"GET", "/healthz?x=/../y", 0, GW_ROUTE_HEALTHZ, NULL},
        /* right path, wrong method: 405 and Allow */
        {"GET", "/v1/generate", 405, 0, "POST"},
        {"HEAD", "/v1/completions", 405, 0, "POST"},
        {"PUT", "/v1/chat/completions", 405, 0, "POST"},
        {"OPTIONS", "/v1/chat/completions", 405, 0, "POST"},
        {"POST", "/healthz", 405, 0, "GET, HEAD"},
        {"DELETE", "/metrics", 405, 0, "GET, HEAD"},
        {"get", "/readyz", 405, 0, "GET, HEAD"},
        /* every other spelling of a path is no path */
        {"GET", "/", 404, 0, NULL},
        {"GET", "", 404, 0, NULL},
        {"POST", "/v1/completions/", 404, 0, NULL},
        {"POST", "/v1//completions", 404, 0, NULL},
        {"POST", "//v1/completions", 404, 0, NULL},
        {"POST", "/v1/chat/../completions", 404, 0, NULL},
        {"POST", "/v1/./completions", 404, 0, NULL},
        {"POST", "/v1/chat%2Fcompletions", 404, 0, NULL},
        {"POST", "/v1/chat%2fcompletions", 404, 0, NULL},
        {"POST", "/v1%2e/completions", 404, 0, NULL},
        {"POST", "/v1/%63ompletions", 404, 0, NULL},
        {"POST", "/v1/completionsX", 404, 0, NULL},
        {"POST", "/v1/completions#frag", 404, 0, NULL},
        {"POST", "/v1/Completions", 404, 0, NULL},
        {"POST", "/v2/completions", 404, 0, NULL},
        {"POST", "http://host/v1/completions", 404, 0, NULL},
        {"GET", "/healthz/", 404, 0, NULL},
        {"GET", "/metrics.txt", 404, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum gw_route r = 0;
        const char *allow = NULL;
        int st = gw_route_match(cases[i].method, cases[i].path, strlen(cases[i].path), &r, &allow);
        if (st != cases[i].status)
            fail_msg("%s %s: status %d, expected %d", cases[i].method, cases[i].path, st,
                     cases[i].status);
        if (st == 0)
            assert_int_equal(r, cases[i].route);
        if (st == 405)
            assert_string_equal(allow, cases[i].allow);
    }
}

static void test_route_path_is_length_delimited(void **state)
{
    (void)state;
    enum gw_route r = 0;
    const char *allow = NULL;
    /* the length, not a NUL, ends the path: a NUL inside is junk */
    assert_int_equal(gw_route_match("GET", "/healthz\0junk", 13, &r, &allow), 404);
    /* and bytes after the length are not part of it */
    assert_int_equal(gw_route_match("GET", "/healthzXYZ", 8, &r, &allow), 0);
    assert_int_equal(r, GW_ROUTE_HEALTHZ);
    assert_int_equal(gw_route_match("GET", NULL, 0, &r, &allow), 404);
}

/* ------------------------------------------------------- bad bodies */

struct bad {
    enum gw_route route;
    const char *body;
    size_t len; /* 0: strlen(body) */
    const char *message;
    const char *param;
};

/* A minimal good prefix for each route, so each case changes one thing. */
#define CP "{\"model\":\"smollm2\",\"prompt\":\"hi\","
#define HP "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
#define GP "{\"prompt\":\"hi\","

static const struct bad bad_bodies[] = {
    /* the body as a whole */
    {C, "", 0, "body: empty; expected a JSON object", ""},
    {C, "{\"model\":\"m\",\"prompt\":\"hi\"", 0,
     "body: not valid JSON: '}' expected near end of file at line 1 column 26", ""},
    {C, CP "\"max_tokens\":5,}", 0,
     "body: not valid JSON: string or '}' expected near '}' at line 1 column 49", ""},
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"prompt\":\"b\"}", 0,
     "body: not valid JSON: duplicate object key near '\"prompt\"' at line 1 column 34", ""},
    {C, "{\"model\":\"m\",\"prompt\":\"hi\"} x", 0,
     "body: not valid JSON: end of file expected near 'x' at line 1 column 29", ""},
    {C, "[{\"model\":\"m\"}]", 0, "body: expected a JSON object", ""},
    {G, "\"hello\"", 0, "body: expected a JSON object", ""},
    {H, "null", 0, "body: expected a JSON object", ""},
    {C, "{\"model\":\"m\",\"pro\xffmpt\":\"hi\"}", 0,
     "body: not valid JSON: unable to decode byte 0xff near '\"pro' at line 1 column 17", ""},
    {C, "{\"model\":\"m\",\"prompt\":\"\\ud800\"}", 0,
     "body: not valid JSON: invalid Unicode '\\uD800' near '\"\\ud800\"' at line 1 column 30", ""},
    {C, CP "\"temperature\":1e400}", 0,
     "body: not valid JSON: real number overflow near '1e400' at line 1 column 52", ""},
    {C, CP "\"a\\u0000b\":1}", 0,
     "body: not valid JSON: NUL byte in object key not supported near '\"a\\u0000b\"' at line 1 "
     "column 43",
     ""},
    /* model */
    {C, "{\"prompt\":\"hi\"}", 0, "model: required", "model"},
    {C, "{\"model\":5,\"prompt\":\"hi\"}", 0, "model: expected a string", "model"},
    {H, "{\"model\":null,\"messages\":[]}", 0, "model: expected a string", "model"},
    {C, "{\"model\":\"\",\"prompt\":\"hi\"}", 0, "model: expected 1 to 63 bytes", "model"},
    {G, GP "\"model\":[\"m\"]}", 0, "model: expected a string", "model"},
    /* prompt */
    {C, "{\"model\":\"m\"}", 0, "prompt: required", "prompt"},
    {G, "{}", 0, "prompt: required", "prompt"},
    {C, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", 0,
     "prompt: only a single string is supported", "prompt"},
    {C, "{\"model\":\"m\",\"prompt\":[1,2,3]}", 0, "prompt: only a single string is supported",
     "prompt"},
    {C, "{\"model\":\"m\",\"prompt\":42}", 0, "prompt: expected a string", "prompt"},
    {G, "{\"prompt\":null}", 0, "prompt: expected a string", "prompt"},
    {C, "{\"model\":\"m\",\"prompt\":\"a\xff\"}", 0, "prompt: not valid UTF-8", "prompt"},
    {C, "{\"model\":\"m\",\"prompt\":\"overlong \xc0\xaf\"}", 0, "prompt: not valid UTF-8",
     "prompt"},
    {C, "{\"model\":\"m\",\"prompt\":\"overlong3 \xe0\x80\xaf\"}", 0, "prompt: not valid UTF-8",
     "prompt"},
    {G, "{\"prompt\":\"surrogate \xed\xa0\x80\"}", 0, "prompt: not valid UTF-8", "prompt"},
    {G, "{\"prompt\":\"too high \xf4\x90\x80\x80\"}", 0, "prompt: not valid UTF-8", "prompt"},
    {G, "{\"prompt\":\"cut \xe2\x82\"}", 0, "prompt: not valid UTF-8", "prompt"},
    {G, "{\"prompt\":\"stray \x80\"}", 0, "prompt: not valid UTF-8", "prompt"},
    {C, "{\"model\":\"m\",\"prompt\":\"a\\u0000b\"}", 0, "prompt: contains a NUL byte", "prompt"},
    /* max_tokens */
    {C, CP "\"max_tokens\":0}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {C, CP "\"max_tokens\":4097}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {C, CP "\"max_tokens\":-1}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {C, CP "\"max_tokens\":1.5}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {C, CP "\"max_tokens\":16.0}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {C, CP "\"max_tokens\":1e3}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {C, CP "\"max_tokens\":\"16\"}", 0, "max_tokens: expected an integer in [1, 4096]",
     "max_tokens"},
    {C, CP "\"max_tokens\":true}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {C, CP "\"max_tokens\":99999999999999999999}", 0,
     "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {G, GP "\"max_tokens\":5000}", 0, "max_tokens: expected an integer in [1, 4096]", "max_tokens"},
    {H, HP "\"max_completion_tokens\":0}", 0,
     "max_completion_tokens: expected an integer in [1, 4096]", "max_completion_tokens"},
    {H, HP "\"max_tokens\":10,\"max_completion_tokens\":20}", 0,
     "max_completion_tokens: differs from max_tokens; give one of them", "max_completion_tokens"},
    /* sampling */
    {C, CP "\"temperature\":2.5}", 0, "temperature: expected a number in [0, 2]", "temperature"},
    {C, CP "\"temperature\":-0.1}", 0, "temperature: expected a number in [0, 2]", "temperature"},
    {H, HP "\"temperature\":\"1\"}", 0, "temperature: expected a number in [0, 2]", "temperature"},
    {G, GP "\"temperature\":true}", 0, "temperature: expected a number in [0, 2]", "temperature"},
    {C, CP "\"temperature\":99999999999999999999}", 0, "temperature: expected a number in [0, 2]",
     "temperature"},
    {C, CP "\"top_p\":0}", 0, "top_p: expected a number in (0, 1]", "top_p"},
    {H, HP "\"top_p\":1.01}", 0, "top_p: expected a number in (0, 1]", "top_p"},
    {C, CP "\"top_k\":-1}", 0, "top_k: expected an integer in [0, 4294967295]", "top_k"},
    {G, GP "\"top_k\":1.5}", 0, "top_k: expected an integer in [0, 4294967295]", "top_k"},
    {G, GP "\"top_k\":4294967296}", 0, "top_k: expected an integer in [0, 4294967295]", "top_k"},
    {C, CP "\"seed\":-1}", 0, "seed: expected an integer in [0, 9223372036854775807]", "seed"},
    {G, GP "\"seed\":\"1\"}", 0, "seed: expected an integer in [0, 9223372036854775807]", "seed"},
    {C, CP "\"seed\":99999999999999999999}", 0,
     "seed: expected an integer in [0, 9223372036854775807]", "seed"},
    /* n, stream */
    {C, CP "\"n\":2}", 0, "n: only 1 is supported", "n"},
    {H, HP "\"n\":3}", 0, "n: only 1 is supported", "n"},
    {C, CP "\"n\":\"1\"}", 0, "n: only 1 is supported", "n"},
    {C, CP "\"stream\":\"true\"}", 0, "stream: expected true or false", "stream"},
    {H, HP "\"stream\":1}", 0, "stream: expected true or false", "stream"},
    /* stop */
    {C, CP "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 0, "stop: at most 4 sequences", "stop"},
    {C, CP "\"stop\":\"\"}", 0, "stop: expected 1 to 63 bytes", "stop"},
    {C, CP "\"stop\":[\"a\",5]}", 0, "stop[1]: expected a string", "stop[1]"},
    {H, HP "\"stop\":[\"ok\",\"\"]}", 0, "stop[1]: expected 1 to 63 bytes", "stop[1]"},
    {G, GP "\"stop\":\"0123456789012345678901234567890123456789012345678901234567890123\"}", 0,
     "stop: expected 1 to 63 bytes", "stop"},
    {G, GP "\"stop\":{}}", 0, "stop: expected a string or an array of strings", "stop"},
    {G, GP "\"stop\":[\"ok\",\"\xc3\"]}", 0, "stop[1]: not valid UTF-8", "stop[1]"},
    {C, CP "\"stop\":\"a\\u0000\"}", 0, "stop: contains a NUL byte", "stop"},
    /* OpenAI parameters we do not implement */
    {C, CP "\"echo\":true}", 0, "echo: not supported; omit it or send false", "echo"},
    {C, CP "\"presence_penalty\":0.5}", 0, "presence_penalty: not supported; omit it or send 0",
     "presence_penalty"},
    {H, HP "\"frequency_penalty\":-1}", 0, "frequency_penalty: not supported; omit it or send 0",
     "frequency_penalty"},
    {C, CP "\"logprobs\":5}", 0, "logprobs: not supported; omit it or send 0", "logprobs"},
    {H, HP "\"logprobs\":true}", 0, "logprobs: not supported; omit it or send false", "logprobs"},
    {C, CP "\"best_of\":2}", 0, "best_of: not supported; omit it or send 1", "best_of"},
    {C, CP "\"logit_bias\":{\"50256\":-100}}", 0, "logit_bias: not supported; omit it or send {}",
     "logit_bias"},
    {H, HP "\"tools\":[{\"type\":\"function\"}]}", 0, "tools: not supported; omit it or send []",
     "tools"},
    {H, HP "\"tools\":{}}", 0, "tools: not supported; omit it or send []", "tools"},
    {C, CP "\"suffix\":{}}", 0, "suffix: not supported; omit it or send \"\"", "suffix"},
    {H, HP "\"tool_choice\":\"auto\"}", 0, "tool_choice: not supported; omit it or send \"none\"",
     "tool_choice"},
    {H, HP "\"response_format\":{\"type\":\"json_object\"}}", 0,
     "response_format: not supported; omit it or send {\"type\": \"text\"}", "response_format"},
    {C, CP "\"stream_options\":{\"include_usage\":\"yes\"}}", 0,
     "stream_options.include_usage: expected true or false", "stream_options.include_usage"},
    {H, HP "\"stream_options\":[]}", 0,
     "stream_options: expected an object {\"include_usage\": true|false}", "stream_options"},
    {H, HP "\"stream\":true,\"stream_options\":{\"include_obfuscation\":false}}", 0,
     "stream_options.include_obfuscation: unknown parameter", "stream_options.include_obfuscation"},
    /* unknown fields, and fields of another route */
    {C, CP "\"max_token\":50}", 0, "max_token: unknown parameter", "max_token"},
    {C, CP "\"messages\":[]}", 0, "messages: unknown parameter", "messages"},
    {H, HP "\"prompt\":\"hi\"}", 0, "prompt: unknown parameter", "prompt"},
    {H, HP "\"suffix\":\"x\"}", 0, "suffix: unknown parameter", "suffix"},
    {G, GP "\"n\":1}", 0, "n: unknown parameter", "n"},
    {G, GP "\"user\":\"u\"}", 0, "user: unknown parameter", "user"},
    {G, GP "\"echo\":false}", 0, "echo: unknown parameter", "echo"},
    {C, CP "\"x\":99999999999999999999}", 0, "x: unknown parameter", "x"},
    {C, CP "\"a\\nb\":1}", 0, "a?b: unknown parameter", "a?b"},
    {C, CP "\"user\":5}", 0, "user: expected a string", "user"},
    /* messages */
    {H, "{\"model\":\"m\"}", 0, "messages: required", "messages"},
    {H, "{\"model\":\"m\",\"messages\":[]}", 0, "messages: expected 1 to 256 messages, got 0",
     "messages"},
    {H, "{\"model\":\"m\",\"messages\":\"hi\"}", 0, "messages: expected an array of messages",
     "messages"},
    {H, "{\"model\":\"m\",\"messages\":[5]}", 0,
     "messages[0]: expected an object with role and content", "messages[0]"},
    {H, "{\"model\":\"m\",\"messages\":[{\"content\":\"hi\"}]}", 0, "messages[0].role: required",
     "messages[0].role"},
    {H,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"tool\","
     "\"content\":\"x\"}]}",
     0, "messages[1].role: expected one of system, user, assistant", "messages[1].role"},
    {H, "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"x\"}]}", 0,
     "messages[0].role: expected one of system, user, assistant", "messages[0].role"},
    {H, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", 0, "messages[0].content: required",
     "messages[0].content"},
    {H, "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null}]}", 0,
     "messages[0].content: expected a string or an array of content parts", "messages[0].content"},
    {H,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"a\"},{\"role\":\"user\","
     "\"content\":\"b\"},{\"role\":\"user\",\"content\":\"bad \xe0\x80\"}]}",
     0, "messages[2].content: not valid UTF-8", "messages[2].content"},
    {H, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000\"}]}", 0,
     "messages[0].content: contains a NUL byte", "messages[0].content"},
    {H, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\",\"tool_calls\":[]}]}",
     0, "messages[0].tool_calls: unknown parameter", "messages[0].tool_calls"},
    {H, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\",\"name\":7}]}", 0,
     "messages[0].name: expected a string", "messages[0].name"},
};

static void test_bad_bodies_give_exact_message_and_param(void **state)
{
    (void)state;
    size_t n = sizeof bad_bodies / sizeof bad_bodies[0], wrong = 0;
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++) {
        const struct bad *b = &bad_bodies[i];
        struct gw_gen_request req;
        char err[512], param[64];
        size_t len = b->len ? b->len : strlen(b->body);
        int rc = parse(b->route, b->body, len, &req, err, param);
        /* every case is reported, not only the first that is wrong */
        if (rc != -EINVAL || strcmp(err, b->message) != 0 || strcmp(param, b->param) != 0) {
            print_error("case %zu (%s):\n  rc %d\n  got      [%s] param [%s]\n  expected [%s] "
                        "param [%s]\n",
                        i, b->body, rc, err, param, b->message, b->param);
            wrong++;
        }
        /* a refused request holds nothing to free */
        assert_null(req.prompt);
        assert_int_equal(req.prompt_len, 0);
    }
    assert_int_equal(wrong, 0);
}

/* Builds {"model":"m","prompt":"xxxx"} with an n-byte prompt. */
static char *body_with_prompt(size_t n, size_t *len)
{
    char *b = malloc(n + 64);
    assert_non_null(b);
    int k = sprintf(b, "{\"model\":\"m\",\"prompt\":\"");
    memset(b + k, 'x', n);
    *len = (size_t)k + n + (size_t)sprintf(b + k + n, "\"}");
    return b;
}

static void test_prompt_size_is_bounded_by_the_slot(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    size_t len;
    char *b = body_with_prompt(32768, &len);
    assert_int_equal(parse(C, b, len, &req, err, param), 0);
    assert_int_equal(req.prompt_len, 32768);
    assert_int_equal(req.prompt[32768], '\0');
    gw_request_free(&req);
    free(b);

    b = body_with_prompt(40000, &len);
    assert_int_equal(parse(C, b, len, &req, err, param), -EINVAL);
    assert_string_equal(err, "prompt: 40000 bytes, at most 32768");
    assert_string_equal(param, "prompt");
    free(b);
}

/* A chat body with `count` messages "user"/"xxxx" (n bytes each). */
static char *chat_body(size_t count, size_t n, size_t *len)
{
    size_t cap = 64 + count * (n + 40);
    char *b = malloc(cap);
    assert_non_null(b);
    size_t o = (size_t)sprintf(b, "{\"model\":\"m\",\"messages\":[");
    for (size_t i = 0; i < count; i++) {
        o += (size_t)sprintf(b + o, "%s{\"role\":\"user\",\"content\":\"", i ? "," : "");
        memset(b + o, 'x', n);
        o += n;
        o += (size_t)sprintf(b + o, "\"}");
    }
    o += (size_t)sprintf(b + o, "]}");
    *len = o;
    return b;
}

static void test_chat_size_counts_the_serialised_form(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    size_t len;
    /* 4 messages of "user" NUL content NUL: 4 * (5 + n + 1) bytes. With
     * n = 8186 that is 32768 exactly; one more byte is over. */
    char *b = chat_body(4, 8186, &len);
    assert_int_equal(parse(H, b, len, &req, err, param), 0);
    assert_int_equal(req.prompt_len, 32768);
    gw_request_free(&req);
    free(b);

    b = chat_body(4, 8187, &len);
    assert_int_equal(parse(H, b, len, &req, err, param), -EINVAL);
    assert_string_equal(err, "messages: 32772 bytes serialised, at most 32768");
    assert_string_equal(param, "messages");
    free(b);
}

static void test_chat_takes_at_most_256_messages(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    size_t len;
    char *b = chat_body(256, 1, &len);
    assert_int_equal(parse(H, b, len, &req, err, param), 0);
    assert_int_equal(req.prompt_len, 256 * 7);
    gw_request_free(&req);
    free(b);

    b = chat_body(257, 1, &len);
    assert_int_equal(parse(H, b, len, &req, err, param), -EINVAL);
    assert_string_equal(err, "messages: expected 1 to 256 messages, got 257");
    assert_string_equal(param, "messages");
    free(b);
}

static void test_misuse_is_not_a_bad_request(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    req.prompt = (char *)"garbage";
    assert_int_equal(parse(GW_ROUTE_METRICS, "{}", 2, &req, err, param), -EFAULT);
    assert_null(req.prompt);
    assert_int_equal(parse(C, NULL, 5, &req, err, param), -EFAULT);
    assert_int_equal(gw_request_parse(C, "{}", 2, NULL, &req, err, 512, param, 64), -EFAULT);
    assert_int_equal(gw_request_parse(C, "{}", 2, &cfg, NULL, err, 512, param, 64), -EFAULT);
    /* no buffers for the message: the verdict alone */
    assert_int_equal(gw_request_parse(C, "{}", 2, &cfg, &req, NULL, 0, NULL, 0), -EINVAL);
}

static void test_tokens_cap_is_the_largest_plan_cap_or_4096(void **state)
{
    (void)state;
    struct gw_config c;
    memset(&c, 0, sizeof c);
    c.segment.prompt_bytes = 1024;
    assert_int_equal(gw_request_tokens_cap(&c), 4096);
    c.n_plans = 2;
    c.plans[0].max_tokens = 1000;
    c.plans[1].max_tokens = 8192;
    assert_int_equal(gw_request_tokens_cap(&c), 8192);
    struct gw_tenant t;
    memset(&t, 0, sizeof t);
    t.plan.max_tokens = 16384;
    c.tenants = &t;
    c.n_tenants = 1;
    assert_int_equal(gw_request_tokens_cap(&c), 16384);

    struct gw_gen_request req;
    char err[512], param[64];
    static const char body[] = "{\"prompt\":\"hi\",\"max_tokens\":16385}";
    assert_int_equal(
        gw_request_parse(G, body, strlen(body), &c, &req, err, sizeof err, param, sizeof param),
        -EINVAL);
    assert_string_equal(err, "max_tokens: expected an integer in [1, 16384]");
}

/* ------------------------------------------------------- good bodies */

static void test_completions_defaults_follow_openai(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const char body[] = "{\"model\":\"smollm2\",\"prompt\":\"Once upon\"}";
    assert_int_equal(parse(C, body, strlen(body), &req, err, param), 0);
    assert_string_equal(err, "");
    assert_int_equal(req.route, GW_ROUTE_COMPLETIONS);
    assert_string_equal(req.model, "smollm2");
    assert_int_equal(req.prompt_len, 9);
    assert_memory_equal(req.prompt, "Once upon", 10);
    assert_int_equal(req.chat, 0);
    assert_int_equal(req.max_tokens, 16);
    assert_true(req.temperature == 1.0f);
    assert_true(req.top_p == 1.0f);
    assert_int_equal(req.top_k, 0);
    assert_int_equal(req.has_seed, 0);
    assert_int_equal(req.n_stops, 0);
    assert_int_equal(req.stream, 0);
    gw_request_free(&req);
    gw_request_free(&req); /* twice is harmless */
}

static void test_completions_every_field(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const char body[] =
        "{\"model\":\"smollm2\",\"prompt\":\"caf\xc3\xa9 \\\"q\\\"\\n\",\"max_tokens\":4096,"
        "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"n\":1,\"seed\":9223372036854775807,"
        "\"stop\":\"\\n\\n\",\"stream\":true,\"user\":\"u-1\",\"logprobs\":null,\"echo\":false,"
        "\"presence_penalty\":0,\"frequency_penalty\":0.0,\"best_of\":1,\"logit_bias\":{},"
        "\"suffix\":null,\"stream_options\":{\"include_usage\":true}}";
    assert_int_equal(parse(C, body, strlen(body), &req, err, param), 0);
    assert_int_equal(req.prompt_len, 10);
    assert_memory_equal(req.prompt, "caf\xc3\xa9 \"q\"\n", 11);
    assert_int_equal(req.max_tokens, 4096);
    assert_true(req.temperature == 0.5f);
    assert_true(req.top_p == 0.9f);
    assert_int_equal(req.top_k, 40);
    assert_int_equal(req.has_seed, 1);
    assert_true(req.seed == 9223372036854775807ull);
    assert_int_equal(req.n_stops, 1);
    assert_string_equal(req.stops[0], "\n\n");
    assert_int_equal(req.stream, 1);
    gw_request_free(&req);
}

static void test_null_means_not_given(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const char body[] =
        "{\"model\":\"m\",\"prompt\":\"\",\"max_tokens\":null,\"temperature\":null,"
        "\"top_p\":null,\"top_k\":null,\"n\":null,\"seed\":null,\"stop\":null,\"stream\":null,"
        "\"user\":null}";
    assert_int_equal(parse(C, body, strlen(body), &req, err, param), 0);
    assert_int_equal(req.prompt_len, 0);
    assert_non_null(req.prompt);
    assert_int_equal(req.prompt[0], '\0');
    assert_int_equal(req.max_tokens, 16);
    assert_true(req.temperature == 1.0f);
    assert_int_equal(req.has_seed, 0);
    assert_int_equal(req.n_stops, 0);
    assert_int_equal(req.stream, 0);
    gw_request_free(&req);
}

static void test_chat_serialises_role_nul_content_nul(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const char body[] =
        "{\"model\":\"smollm2\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":\"Hi \xc3\xa9\\n\",\"name\":\"ann\"},"
        "{\"role\":\"assistant\",\"content\":\"\"},"
        "{\"role\":\"user\",\"content\":\"\\u00e9\\t\\\"x\\\"\"}],"
        "\"max_completion_tokens\":100,\"max_tokens\":100,\"stop\":[\"User:\",\"\\n\\n\"],"
        "\"seed\":7,\"stream\":false,\"top_k\":5,\"tools\":[],\"tool_choice\":\"none\","
        "\"response_format\":{\"type\":\"text\"},\"parallel_tool_calls\":true,"
        "\"logprobs\":false,\"top_logprobs\":0,\"store\":false,\"stream_options\":{}}";
    static const char want[] = "system\0Be brief.\0"
                               "user\0Hi \xc3\xa9\n\0"
                               "assistant\0\0"
                               "user\0\xc3\xa9\t\"x\"\0";
    assert_int_equal(parse(H, body, strlen(body), &req, err, param), 0);
    assert_int_equal(req.chat, 1);
    assert_string_equal(req.model, "smollm2");
    assert_int_equal(req.prompt_len, sizeof want - 1);
    assert_memory_equal(req.prompt, want, sizeof want); /* with the final terminator */
    assert_int_equal(req.max_tokens, 100);
    assert_true(req.temperature == 1.0f);
    assert_int_equal(req.top_k, 5);
    assert_int_equal(req.has_seed, 1);
    assert_true(req.seed == 7);
    assert_int_equal(req.n_stops, 2);
    assert_string_equal(req.stops[0], "User:");
    assert_string_equal(req.stops[1], "\n\n");
    assert_int_equal(req.stream, 0);
    gw_request_free(&req);
}

static void test_chat_max_tokens_defaults_to_plan_cap(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const char a[] = HP "\"max_tokens\":33}";
    static const char b[] = HP "\"stream\":true}";
    assert_int_equal(parse(H, a, strlen(a), &req, err, param), 0);
    assert_int_equal(req.max_tokens, 33);
    gw_request_free(&req);
    assert_int_equal(parse(H, b, strlen(b), &req, err, param), 0);
    assert_int_equal(req.max_tokens, 0);
    assert_int_equal(req.stream, 1);
    assert_int_equal(req.prompt_len, 8);
    assert_memory_equal(req.prompt, "user\0hi\0", 9);
    gw_request_free(&req);
}

static void test_generate_defaults_are_greedy_and_plan_capped(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const char a[] = "{\"prompt\":\"The sky is\"}";
    assert_int_equal(parse(G, a, strlen(a), &req, err, param), 0);
    assert_int_equal(req.route, GW_ROUTE_GENERATE);
    assert_string_equal(req.model, "");
    assert_memory_equal(req.prompt, "The sky is", 11);
    assert_int_equal(req.max_tokens, 0);
    assert_true(req.temperature == 0.0f);
    assert_true(req.top_p == 1.0f);
    assert_int_equal(req.chat, 0);
    gw_request_free(&req);

    static const char b[] = "{\"model\":\"smollm2\",\"prompt\":\"x\",\"max_tokens\":1,"
                            "\"temperature\":2,\"top_p\":1,\"top_k\":4294967295,\"seed\":0,"
                            "\"stop\":[\"a\",\"b\",\"c\",\"012345678901234567890123456789012345678"
                            "901234567890123456789012\"],\"stream\":true}";
    assert_int_equal(parse(G, b, strlen(b), &req, err, param), 0);
    assert_string_equal(req.model, "smollm2");
    assert_int_equal(req.max_tokens, 1);
    assert_true(req.temperature == 2.0f);
    assert_int_equal(req.top_k, 4294967295u);
    assert_int_equal(req.has_seed, 1);
    assert_true(req.seed == 0);
    assert_int_equal(req.n_stops, 4);
    assert_int_equal(strlen(req.stops[3]), 63);
    assert_int_equal(req.stream, 1);
    gw_request_free(&req);
}

static void test_huge_integer_elsewhere_keeps_integers_exact(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    /* A number beyond json_int_t only makes the integers be read as reals
     * for the second parse; a field that is fine stays fine. */
    static const char body[] = CP "\"max_tokens\":5,\"temperature\":18446744073709551616}";
    assert_int_equal(parse(C, body, strlen(body), &req, err, param), -EINVAL);
    assert_string_equal(err, "temperature: expected a number in [0, 2]");
    static const char ok[] = CP "\"max_tokens\":5,\"seed\":9223372036854775807}";
    assert_int_equal(parse(C, ok, strlen(ok), &req, err, param), 0);
    assert_int_equal(req.max_tokens, 5);
    assert_true(req.seed == 9223372036854775807ull);
    gw_request_free(&req);
}

static void test_bad_byte_in_a_key_is_the_bodys_fault(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    /* a bad byte in a value is that field's fault, whatever the field */
    static const char body[] = CP "\"stream_options\":{\"include_usage\":true},"
                                  "\"user\":null,\"logit_bias\":{},\"suffix\":\"\xff\"}";
    assert_int_equal(parse(C, body, strlen(body), &req, err, param), -EINVAL);
    assert_string_equal(err, "suffix: not supported; omit it or send \"\"");
    static const char body2[] = "{\"model\":\"m\",\"prompt\":\"hi\",\"k\xc3\":1}";
    assert_int_equal(parse(C, body2, strlen(body2), &req, err, param), -EINVAL);
    assert_string_equal(err,
                        "body: not valid JSON: unable to decode byte 0xc3 near '\"k' at line 1 "
                        "column 29");
    assert_string_equal(param, "");
}

static void test_messages_are_cut_to_the_buffers(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[16], param[8];
    static const char body[] = CP "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\":1}";
    assert_int_equal(
        gw_request_parse(C, body, strlen(body), &cfg, &req, err, sizeof err, param, sizeof param),
        -EINVAL);
    /* "ééééé: unknown parameter" cut to 15 bytes, never inside a character */
    assert_string_equal(err, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9: unk");
    assert_string_equal(param, "\xc3\xa9\xc3\xa9\xc3\xa9");
    /* a key longer than 64 bytes is echoed in part */
    char big[200];
    snprintf(big, sizeof big, CP "\"%s\":1}",
             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
    char err2[512], param2[128];
    assert_int_equal(
        gw_request_parse(C, big, strlen(big), &cfg, &req, err2, sizeof err2, param2, sizeof param2),
        -EINVAL);
    assert_string_equal(err2,
                        "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...: "
                        "unknown parameter");
}

/* --------------------------------------------------------------- UTF-8 */

static void test_utf8_validator_is_strict(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int valid;
    } cases[] = {
        {"", 1},
        {"ascii", 1},
        {"\xc2\x80", 1},         /* U+0080 */
        {"\xdf\xbf", 1},         /* U+07FF */
        {"\xe0\xa0\x80", 1},     /* U+0800 */
        {"\xed\x9f\xbf", 1},     /* U+D7FF */
        {"\xee\x80\x80", 1},     /* U+E000 */
        {"\xef\xbf\xbf", 1},     /* U+FFFF */
        {"\xf0\x90\x80\x80", 1}, /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 1}, /* U+10FFFF */
        {"\xc0\x80", 0},         /* overlong NUL */
        {"\xc1\xbf", 0},         /* overlong */
        {"\xe0\x9f\xbf", 0},     /* overlong */
        {"\xf0\x8f\xbf\xbf", 0}, /* overlong */
        {"\xed\xa0\x80", 0},     /* U+D800 */
        {"\xed\xbf\xbf", 0},     /* U+DFFF */
        {"\xf4\x90\x80\x80", 0}, /* U+110000 */
        {"\xf5\x80\x80\x80", 0},
        {"\xff", 0},
        {"\x80", 0}, /* stray continuation */
        {"\xc3", 0}, /* cut short */
        {"\xe2\x82", 0},
        {"\xe2\x28\xa1", 0},
        {"a\xc3\xa9z\xf0\x9f\x98\x80", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (gw_utf8_valid(cases[i].s, strlen(cases[i].s)) != cases[i].valid)
            fail_msg("case %zu: expected %d", i, cases[i].valid);
    assert_int_equal(gw_utf8_valid("a\0b", 3), 1);
}

static void test_utf8_complete_holds_back_an_unfinished_tail(void **state)
{
    (void)state;
    assert_int_equal(gw_utf8_complete("abc", 3), 3);
    assert_int_equal(gw_utf8_complete("ab\xc3", 3), 2);
    assert_int_equal(gw_utf8_complete("ab\xc3\xa9", 4), 4);
    assert_int_equal(gw_utf8_complete("a\xe2\x82", 3), 1);
    assert_int_equal(gw_utf8_complete("a\xe2\x82\xac", 4), 4);
    assert_int_equal(gw_utf8_complete("a\xf0\x9f\x98", 4), 1);
    assert_int_equal(gw_utf8_complete("\xf0\x9f\x98\x80", 4), 4);
    /* bytes that can never become valid are not held back */
    assert_int_equal(gw_utf8_complete("a\xff", 2), 2);
    assert_int_equal(gw_utf8_complete("a\xed\xa0", 3), 3);
    assert_int_equal(gw_utf8_complete("a\x80\x80\x80", 4), 4);
    assert_int_equal(gw_utf8_complete("", 0), 0);
}

/* Every byte outside a valid sequence becomes the mark, one mark per byte;
 * valid sequences (and NUL) pass unchanged. */
static void test_utf8_replace_marks_each_bad_byte(void **state)
{
    (void)state;
    char out[64];
    /* caf\xc3\xa9, a lone continuation, an overlong, a cut-off euro, NUL */
    const char in[] = "caf\xc3\xa9\x80x\xc0\xaf\0\xe2\x82";
    size_t n = gw_utf8_replace(out, in, sizeof(in) - 1, "?", 1);
    assert_int_equal(n, 12);
    assert_memory_equal(out, "caf\xc3\xa9?x??\0??", 12);
    n = gw_utf8_replace(out, "\xff", 1, "\xef\xbf\xbd", 3);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(gw_utf8_replace(out, "", 0, "?", 1), 0);
}

/* ----------------------------------------------------------- responses */

/* "He said "hi"\n then café ✓ \ 😀" with a tab, a control byte and NUL. */
#define TEXT "He said \"hi\"\nthen caf\xc3\xa9 \xe2\x9c\x93 \\ \xf0\x9f\x98\x80\t\x01"
#define TEXT_JSON                                                                                  \
    "He said \\\"hi\\\"\\nthen caf\xc3\xa9 \xe2\x9c\x93 \\\\ \xf0\x9f\x98\x80\\t\\u0001"

static struct gw_completion completion(const char *id, const char *text, const char *finish,
                                       const char *killed)
{
    struct gw_completion c = {
        .id = id,
        .created_s = 1700000000,
        .model = "smollm2",
        .text = text,
        .text_len = text ? strlen(text) : 0,
        .finish_reason = finish,
        .killed_reason = killed,
        .prompt_tokens = 5,
        .completion_tokens = 7,
    };
    return c;
}

static void expect_body(enum gw_route r, const struct gw_completion *c, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(gw_response_body(r, c, &out, &len), 0);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

static void expect_chunk(enum gw_route r, const struct gw_completion *c, int final,
                         const char *want)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(gw_sse_chunk(r, c, final, &out, &len), 0);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

static void test_completions_whole_body(void **state)
{
    (void)state;
    struct gw_completion c = completion("cmpl-abc", TEXT, "stop", NULL);
    expect_body(C, &c,
                "{\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
                "\"model\":\"smollm2\",\"choices\":[{\"text\":\"" TEXT_JSON "\",\"index\":0,"
                "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,"
                "\"completion_tokens\":7,\"total_tokens\":12}}");
    c = completion("cmpl-abc", "la la la", "killed", "repetition");
    expect_body(C, &c,
                "{\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
                "\"model\":\"smollm2\",\"choices\":[{\"text\":\"la la la\",\"index\":0,"
                "\"logprobs\":null,\"finish_reason\":\"killed\",\"killed_reason\":\"repetition\"}],"
                "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}");
}

static void test_chat_whole_body(void **state)
{
    (void)state;
    struct gw_completion c = completion("chatcmpl-abc", TEXT, "length", NULL);
    expect_body(H, &c,
                "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1700000000,"
                "\"model\":\"smollm2\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                "\"assistant\",\"content\":\"" TEXT_JSON "\"},\"logprobs\":null,"
                "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,"
                "\"completion_tokens\":7,\"total_tokens\":12}}");
    c = completion("chatcmpl-abc", "", "killed", "sponge");
    expect_body(H, &c,
                "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1700000000,"
                "\"model\":\"smollm2\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                "\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":\"killed\","
                "\"killed_reason\":\"sponge\"}],\"usage\":{\"prompt_tokens\":5,"
                "\"completion_tokens\":7,\"total_tokens\":12}}");
}

static void test_generate_whole_body(void **state)
{
    (void)state;
    struct gw_completion c = completion("gen-abc", TEXT, "budget", NULL);
    expect_body(G, &c,
                "{\"id\":\"gen-abc\",\"model\":\"smollm2\",\"text\":\"" TEXT_JSON "\","
                "\"finish_reason\":\"budget\",\"usage\":{\"prompt_tokens\":5,"
                "\"completion_tokens\":7,\"total_tokens\":12}}");
    c = completion("gen-abc", "x", "killed", "output_guard");
    expect_body(G, &c,
                "{\"id\":\"gen-abc\",\"model\":\"smollm2\",\"text\":\"x\","
                "\"finish_reason\":\"killed\",\"killed_reason\":\"output_guard\","
                "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}");
    /* killed with no detector named: killed_reason null, still present */
    c = completion("gen-abc", "x", "killed", NULL);
    expect_body(G, &c,
                "{\"id\":\"gen-abc\",\"model\":\"smollm2\",\"text\":\"x\","
                "\"finish_reason\":\"killed\",\"killed_reason\":null,"
                "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}");
    /* killed_reason only goes with killed */
    c = completion("gen-abc", "x", "stop", "repetition");
    expect_body(G, &c,
                "{\"id\":\"gen-abc\",\"model\":\"smollm2\",\"text\":\"x\","
                "\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":5,"
                "\"completion_tokens\":7,\"total_tokens\":12}}");
}

static void test_completions_stream(void **state)
{
    (void)state;
    struct gw_completion c = completion("cmpl-abc", TEXT, NULL, NULL);
    expect_chunk(C, &c, 0,
                 "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
                 "\"model\":\"smollm2\",\"choices\":[{\"text\":\"" TEXT_JSON "\",\"index\":0,"
                 "\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    c = completion("cmpl-abc", "", "stop", NULL);
    expect_chunk(C, &c, 1,
                 "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
                 "\"model\":\"smollm2\",\"choices\":[{\"text\":\"\",\"index\":0,"
                 "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,"
                 "\"completion_tokens\":7,\"total_tokens\":12}}\n\n");
    c = completion("cmpl-abc", NULL, "killed", "stall");
    expect_chunk(
        C, &c, 1,
        "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
        "\"model\":\"smollm2\",\"choices\":[{\"text\":\"\",\"index\":0,"
        "\"logprobs\":null,\"finish_reason\":\"killed\",\"killed_reason\":\"stall\"}],"
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n");
    assert_string_equal(gw_sse_done(), "data: [DONE]\n\n");
}

static void test_chat_stream_opens_with_the_role(void **state)
{
    (void)state;
    struct gw_completion c = completion("chatcmpl-abc", NULL, NULL, NULL);
    expect_chunk(H, &c, 0,
                 "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[{\"index\":0,"
                 "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                 "\"finish_reason\":null}]}\n\n");
    c = completion("chatcmpl-abc", TEXT, NULL, NULL);
    expect_chunk(H, &c, 0,
                 "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[{\"index\":0,"
                 "\"delta\":{\"content\":\"" TEXT_JSON "\"},\"logprobs\":null,"
                 "\"finish_reason\":null}]}\n\n");
    c = completion("chatcmpl-abc", NULL, "length", NULL);
    expect_chunk(
        H, &c, 1,
        "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
        "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[{\"index\":0,"
        "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}],"
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n");
    c = completion("chatcmpl-abc", "tail", "killed", "entropy");
    expect_chunk(H, &c, 1,
                 "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[{\"index\":0,"
                 "\"delta\":{\"content\":\"tail\"},\"logprobs\":null,\"finish_reason\":\"killed\","
                 "\"killed_reason\":\"entropy\"}],\"usage\":{\"prompt_tokens\":5,"
                 "\"completion_tokens\":7,\"total_tokens\":12}}\n\n");
}

static void test_generate_stream(void **state)
{
    (void)state;
    struct gw_completion c = completion("gen-abc", TEXT, NULL, NULL);
    expect_chunk(G, &c, 0, "data: {\"text\":\"" TEXT_JSON "\"}\n\n");
    c = completion("gen-abc", NULL, "cancelled", NULL);
    expect_chunk(G, &c, 1,
                 "data: {\"finish_reason\":\"cancelled\",\"usage\":{\"prompt_tokens\":5,"
                 "\"completion_tokens\":7,\"total_tokens\":12}}\n\n");
    c = completion("gen-abc", "end", "killed", "wall_time");
    expect_chunk(G, &c, 1,
                 "data: {\"text\":\"end\",\"finish_reason\":\"killed\",\"killed_reason\":"
                 "\"wall_time\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
                 "\"total_tokens\":12}}\n\n");
}

static void test_text_that_is_not_utf8_becomes_replacement_characters(void **state)
{
    (void)state;
    static const char raw[] = "a\xff"
                              "b\xc3"
                              "\0c";
    struct gw_completion c = completion("gen-abc", raw, NULL, NULL);
    c.text_len = sizeof raw - 1;
    expect_chunk(G, &c, 0,
                 "data: {\"text\":\"a\xef\xbf\xbd"
                 "b\xef\xbf\xbd\\u0000c\"}\n\n");
}

static void test_response_refuses_bad_arguments(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len;
    struct gw_completion c = completion("x", NULL, "stop", NULL);
    c.text_len = 3; /* NULL text with a length */
    assert_int_equal(gw_response_body(C, &c, &out, &len), -EINVAL);
    c = completion("x", "t", "stop", NULL);
    assert_int_equal(gw_response_body(GW_ROUTE_METRICS, &c, &out, &len), -EINVAL);
    assert_int_equal(gw_sse_chunk(GW_ROUTE_HEALTHZ, &c, 0, &out, &len), -EINVAL);
    c.completion_tokens = UINT64_MAX;
    assert_int_equal(gw_response_body(C, &c, &out, &len), -EOVERFLOW);
    assert_null(out);
}

static void test_error_body_is_openai_shaped(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(gw_error_body("max_tokens: expected an integer in [1, 4096]",
                                   "invalid_request_error", NULL, "max_tokens", &out, &len),
                     0);
    assert_string_equal(out, "{\"error\":{\"message\":\"max_tokens: expected an integer in [1, "
                             "4096]\",\"type\":\"invalid_request_error\",\"param\":"
                             "\"max_tokens\",\"code\":null}}");
    assert_int_equal(len, strlen(out));
    free(out);
    assert_int_equal(
        gw_error_body("quota \"exceeded\"", "rate_limit_error", "rate_limited", "", &out, &len), 0);
    assert_string_equal(out, "{\"error\":{\"message\":\"quota \\\"exceeded\\\"\",\"type\":"
                             "\"rate_limit_error\",\"param\":null,\"code\":\"rate_limited\"}}");
    free(out);
    assert_int_equal(gw_error_body("bad \xff", NULL, NULL, NULL, &out, &len), 0);
    assert_string_equal(out, "{\"error\":{\"message\":\"bad \xef\xbf\xbd\",\"type\":null,"
                             "\"param\":null,\"code\":null}}");
    free(out);
}

/* The message of every refusal goes into an error body unchanged. */
static void test_every_refusal_message_fits_an_error_body(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_bodies / sizeof bad_bodies[0]; i++) {
        const struct bad *b = &bad_bodies[i];
        struct gw_gen_request req;
        char err[512], param[64], *out = NULL;
        size_t len = b->len ? b->len : strlen(b->body);
        assert_int_equal(parse(b->route, b->body, len, &req, err, param), -EINVAL);
        assert_int_equal(gw_utf8_valid(err, strlen(err)), 1);
        assert_int_equal(gw_error_body(err, "invalid_request_error", NULL, param, &out, &len), 0);
        assert_non_null(strstr(out, "\"type\":\"invalid_request_error\""));
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_match_exact_paths_and_methods),
        cmocka_unit_test(test_route_path_is_length_delimited),
        cmocka_unit_test_setup(test_bad_bodies_give_exact_message_and_param, setup),
        cmocka_unit_test_setup(test_prompt_size_is_bounded_by_the_slot, setup),
        cmocka_unit_test_setup(test_chat_size_counts_the_serialised_form, setup),
        cmocka_unit_test_setup(test_chat_takes_at_most_256_messages, setup),
        cmocka_unit_test_setup(test_misuse_is_not_a_bad_request, setup),
        cmocka_unit_test_setup(test_tokens_cap_is_the_largest_plan_cap_or_4096, setup),
        cmocka_unit_test_setup(test_completions_defaults_follow_openai, setup),
        cmocka_unit_test_setup(test_completions_every_field, setup),
        cmocka_unit_test_setup(test_null_means_not_given, setup),
        cmocka_unit_test_setup(test_chat_serialises_role_nul_content_nul, setup),
        cmocka_unit_test_setup(test_chat_max_tokens_defaults_to_plan_cap, setup),
        cmocka_unit_test_setup(test_generate_defaults_are_greedy_and_plan_capped, setup),
        cmocka_unit_test_setup(test_huge_integer_elsewhere_keeps_integers_exact, setup),
        cmocka_unit_test_setup(test_bad_byte_in_a_key_is_the_bodys_fault, setup),
        cmocka_unit_test_setup(test_messages_are_cut_to_the_buffers, setup),
        cmocka_unit_test(test_utf8_validator_is_strict),
        cmocka_unit_test(test_utf8_complete_holds_back_an_unfinished_tail),
        cmocka_unit_test(test_utf8_replace_marks_each_bad_byte),
        cmocka_unit_test(test_completions_whole_body),
        cmocka_unit_test(test_chat_whole_body),
        cmocka_unit_test(test_generate_whole_body),
        cmocka_unit_test(test_completions_stream),
        cmocka_unit_test(test_chat_stream_opens_with_the_role),
        cmocka_unit_test(test_generate_stream),
        cmocka_unit_test(test_text_that_is_not_utf8_becomes_replacement_characters),
        cmocka_unit_test(test_response_refuses_bad_arguments),
        cmocka_unit_test(test_error_body_is_openai_shaped),
        cmocka_unit_test_setup(test_every_refusal_message_fits_an_error_body, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
