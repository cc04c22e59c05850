/* test_openai_shapes.c - what real OpenAI clients send and read, as pure
 * functions (routes.c, request.c): the /v1/models routes and bodies,
 * messages whose content is an array of parts, stream_options.include_usage
 * and its usage chunk, and the `user` field. Every refusal with its exact
 * message and param, every body byte for byte. test_openai_service.c checks
 * the same through real processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_supervisor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The config request.c reads: the model's name, one plan capping
 * max_tokens at 4096, 32 KiB of prompt per slot. */
static struct gw_config cfg;

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_name, sizeof cfg.model_name, "smollm2");
    cfg.segment.prompt_bytes = 32768;
    cfg.n_plans = 1;
    cfg.plans[0].max_tokens = 4096;
    return 0;
}

#define C GW_ROUTE_COMPLETIONS
#define H GW_ROUTE_CHAT

static int parse(enum gw_route r, const char *body, struct gw_gen_request *req, char *err,
                 char *param)
{
    return gw_request_parse(r, body, strlen(body), &cfg, req, err, 512, param, 64);
}

/* ------------------------------------------------------------ models */

static void test_models_routes_take_get_and_head_only(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
        int status;
        const char *allow;
    } cases[] = {
        {"GET", "/v1/models", 0, NULL},
        {"HEAD", "/v1/models", 0, NULL},
        {"GET", "/v1/models?limit=5", 0, NULL},
        {"GET", "/v1/models/smollm2", 0, NULL},
        {"GET", "/v1/models/HuggingFaceTB/SmolLM2-135M-Instruct", 0, NULL},
        {"GET", "/v1/models/gpt-4o", 0, NULL}, /* a route; the front says 404 model_not_found */
        {"POST", "/v1/models", 405, "GET, HEAD"},
        {"DELETE", "/v1/models/smollm2", 405, "GET, HEAD"},
        {"GET", "/v1/models/", 404, NULL}, /* no id: no path */
        {"GET", "/v1/modelsX", 404, NULL},
        {"GET", "/v1/model", 404, NULL},
        {"GET", "/v1//models", 404, NULL},
        {"GET", "/V1/models", 404, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum gw_route r = 0;
        const char *allow = NULL;
        int st = gw_route_match(cases[i].method, cases[i].path, strlen(cases[i].path), &r, &allow);
        if (st != cases[i].status)
            fail_msg("%s %s: %d, expected %d", cases[i].method, cases[i].path, st, cases[i].status);
        if (st == 0)
            assert_int_equal(r, GW_ROUTE_MODELS);
        if (st == 405)
            assert_string_equal(allow, cases[i].allow);
    }
}

static void test_model_id_is_the_decoded_rest_of_the_path(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        int rc;
        const char *id;
    } cases[] = {
        {"/v1/models", 0, ""},
        {"/v1/models?x=1", 0, ""},
        {"/v1/models/smollm2", 1, "smollm2"},
        {"/v1/models/smollm2?x=/y", 1, "smollm2"},
        {"/v1/models/a/b", 1, "a/b"},
        {"/v1/models/a%2Fb", 1, "a/b"},
        {"/v1/models/%73moll%4D2", 1, "smollM2"},
        {"/v1/models/a%zz", -EINVAL, ""},
        {"/v1/models/a%4", -EINVAL, ""},
        {"/v1/models/a%00b", -EINVAL, ""},
        {"/v1/models/", -EINVAL, ""},
        {"/v1/generate", -EINVAL, ""},
        {"/v1/models/0123456789abcdef", -ENAMETOOLONG, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[16];
        int rc = gw_route_model_id(cases[i].path, strlen(cases[i].path), id, sizeof id);
        if (rc != cases[i].rc)
            fail_msg("%s: %d, expected %d", cases[i].path, rc, cases[i].rc);
        if (rc >= 0)
            assert_string_equal(id, cases[i].id);
    }
    /* the length, not a NUL, ends the path */
    char id[16];
    assert_int_equal(gw_route_model_id("/v1/models/ab\0c", 15, id, sizeof id), -EINVAL);
    assert_int_equal(gw_route_model_id("/v1/models/abXYZ", 13, id, sizeof id), 1);
    assert_string_equal(id, "ab");
}

static void test_models_bodies_are_openai_shaped(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(gw_openai_models_body("smollm2", 1700000000, "gpuwarden", 1, &out, &len), 0);
    assert_string_equal(out, "{\"object\":\"list\",\"data\":[{\"id\":\"smollm2\",\"object\":"
                             "\"model\",\"created\":1700000000,\"owned_by\":\"gpuwarden\"}]}");
    assert_int_equal(len, strlen(out));
    free(out);
    assert_int_equal(gw_openai_models_body("smollm2", 1700000000, "gpuwarden", 0, &out, &len), 0);
    assert_string_equal(out, "{\"id\":\"smollm2\",\"object\":\"model\",\"created\":1700000000,"
                             "\"owned_by\":\"gpuwarden\"}");
    free(out);
    assert_int_equal(gw_openai_models_body(NULL, 0, "x", 0, &out, &len), -EINVAL);
    assert_int_equal(gw_openai_models_body("m", (uint64_t)INT64_MAX + 1, "x", 0, &out, &len),
                     -EINVAL);
}

/* ----------------------------------------------------- content parts */

#define MSG(content)                                                                               \
    "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":" content "}]}"

static void test_text_parts_are_joined_in_order(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const char body[] =
        "{\"model\":\"smollm2\",\"messages\":["
        "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"Be brief.\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello, \"},"
        "{\"text\":\"caf\\u00e9\",\"type\":\"text\"},{\"type\":\"text\",\"text\":\"\"},"
        "{\"type\":\"text\",\"text\":\"!\\n\"}]},"
        "{\"role\":\"assistant\",\"content\":\"Hi.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"More\"}],\"name\":\"ann\"}]"
        "}";
    static const char want[] = "system\0Be brief.\0"
                               "user\0Hello, caf\xc3\xa9!\n\0"
                               "assistant\0Hi.\0"
                               "user\0More\0";
    assert_int_equal(parse(H, body, &req, err, param), 0);
    assert_int_equal(req.chat, 1);
    assert_int_equal(req.prompt_len, sizeof want - 1);
    assert_memory_equal(req.prompt, want, sizeof want); /* with the final terminator */
    gw_request_free(&req);
}

/* Parts count against prompt_bytes as their text, as a string would. */
static void test_parts_are_bounded_by_the_slot(void **state)
{
    (void)state;
    cfg.segment.prompt_bytes = 16; /* "user" NUL + 10 bytes + NUL = 16 */
    struct gw_gen_request req;
    char err[512], param[64];
    assert_int_equal(parse(H,
                           MSG("[{\"type\":\"text\",\"text\":\"01234\"},"
                               "{\"type\":\"text\",\"text\":\"56789\"}]"),
                           &req, err, param),
                     0);
    assert_int_equal(req.prompt_len, 16);
    gw_request_free(&req);
    assert_int_equal(parse(H,
                           MSG("[{\"type\":\"text\",\"text\":\"01234\"},"
                               "{\"type\":\"text\",\"text\":\"56789A\"}]"),
                           &req, err, param),
                     -EINVAL);
    assert_string_equal(err, "messages: 17 bytes serialised, at most 16");
    assert_string_equal(param, "messages");
}

/* A body with one user message of `count` parts `part`, joined by ','. */
static char *parts_body(size_t count, const char *part)
{
    size_t n = strlen(part) + 1;
    char *b = malloc(count * n + 128);
    assert_non_null(b);
    size_t at = (size_t)sprintf(b, "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\","
                                   "\"content\":[");
    for (size_t i = 0; i < count; i++)
        at += (size_t)sprintf(b + at, "%s%s", i ? "," : "", part);
    sprintf(b + at, "]}]}");
    return b;
}

static void test_parts_per_message_are_at_most_256(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    char *b = parts_body(256, "{\"type\":\"text\",\"text\":\"a\"}");
    assert_int_equal(parse(H, b, &req, err, param), 0);
    assert_int_equal(req.prompt_len, 5 + 256 + 1);
    gw_request_free(&req);
    free(b);
    b = parts_body(257, "{\"type\":\"text\",\"text\":\"a\"}");
    assert_int_equal(parse(H, b, &req, err, param), -EINVAL);
    assert_string_equal(err, "messages[0].content: expected 1 to 256 content parts, got 257");
    free(b);
    /* 10,000 parts: refused by their count, before any part is looked at */
    b = parts_body(10000, "{\"type\":\"image_url\"}");
    assert_int_equal(parse(H, b, &req, err, param), -EINVAL);
    assert_string_equal(err, "messages[0].content: expected 1 to 256 content parts, got 10000");
    assert_string_equal(param, "messages[0].content");
    assert_null(req.prompt);
    free(b);
}

struct bad {
    enum gw_route route;
    const char *body;
    const char *message;
    const char *param;
};

static const struct bad bad_parts[] = {
    {H, MSG("[]"), "messages[0].content: expected 1 to 256 content parts, got 0",
     "messages[0].content"},
    {H, MSG("[{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}}]"),
     "messages[0].content[0].type: \"image_url\" parts are not supported: this model reads text "
     "only",
     "messages[0].content[0].type"},
    {H,
     MSG("[{\"type\":\"text\",\"text\":\"what is in\"},{\"type\":\"input_audio\","
         "\"input_audio\":{\"data\":\"AAAA\",\"format\":\"wav\"}}]"),
     "messages[0].content[1].type: \"input_audio\" parts are not supported: this model reads text "
     "only",
     "messages[0].content[1].type"},
    {H, MSG("[{\"type\":\"file\",\"file\":{}}]"),
     "messages[0].content[0].type: \"file\" parts are not supported: this model reads text only",
     "messages[0].content[0].type"},
    {H, MSG("[{\"type\":\"hologram\",\"text\":\"x\"}]"),
     "messages[0].content[0].type: unknown content part type \"hologram\"; expected \"text\"",
     "messages[0].content[0].type"},
    {H, MSG("[{\"type\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}]"),
     "messages[0].content[0].type: unknown content part type "
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\"; expected \"text\"",
     "messages[0].content[0].type"},
    {H, MSG("[{\"type\":\"\"}]"),
     "messages[0].content[0].type: unknown content part type \"\"; expected \"text\"",
     "messages[0].content[0].type"},
    {H, MSG("[{\"text\":\"hi\"}]"), "messages[0].content[0].type: required",
     "messages[0].content[0].type"},
    {H, MSG("[{\"type\":7,\"text\":\"hi\"}]"), "messages[0].content[0].type: expected a string",
     "messages[0].content[0].type"},
    {H, MSG("[{\"type\":\"text\"}]"), "messages[0].content[0].text: required",
     "messages[0].content[0].text"},
    {H, MSG("[{\"type\":\"text\",\"text\":null}]"),
     "messages[0].content[0].text: expected a string", "messages[0].content[0].text"},
    {H, MSG("[{\"type\":\"text\",\"text\":[\"a\"]}]"),
     "messages[0].content[0].text: expected a string", "messages[0].content[0].text"},
    {H, MSG("[{\"type\":\"text\",\"text\":\"ok\"},{\"type\":\"text\",\"text\":\"a\\u0000\"}]"),
     "messages[0].content[1].text: contains a NUL byte", "messages[0].content[1].text"},
    {H, MSG("[{\"type\":\"text\",\"text\":\"bad \xff\"}]"),
     "messages[0].content[0].text: not valid UTF-8", "messages[0].content[0].text"},
    {H, MSG("[{\"type\":\"text\",\"text\":\"hi\",\"cache_control\":{}}]"),
     "messages[0].content[0].cache_control: unknown parameter",
     "messages[0].content[0].cache_control"},
    {H, MSG("[\"hi\"]"), "messages[0].content[0]: expected an object with type and text",
     "messages[0].content[0]"},
    {H, MSG("[[]]"), "messages[0].content[0]: expected an object with type and text",
     "messages[0].content[0]"},
    {H, MSG("{\"type\":\"text\",\"text\":\"hi\"}"),
     "messages[0].content: expected a string or an array of content parts", "messages[0].content"},
    {H, MSG("7"), "messages[0].content: expected a string or an array of content parts",
     "messages[0].content"},
    /* stream_options */
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"stream\":true,\"stream_options\":\"yes\"}",
     "stream_options: expected an object {\"include_usage\": true|false}", "stream_options"},
    {C,
     "{\"model\":\"m\",\"prompt\":\"a\",\"stream\":true,\"stream_options\":{\"include_usage\":1}}",
     "stream_options.include_usage: expected true or false", "stream_options.include_usage"},
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"stream\":true,\"stream_options\":{\"usage\":true}}",
     "stream_options.usage: unknown parameter", "stream_options.usage"},
    {GW_ROUTE_GENERATE, "{\"prompt\":\"a\",\"stream_options\":{}}",
     "stream_options: unknown parameter", "stream_options"},
    /* user */
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"user\":[\"u\"]}", "user: expected a string", "user"},
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"user\":\"u\\u0000\"}", "user: contains a NUL byte",
     "user"},
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"safety_identifier\":7}",
     "safety_identifier: expected a string", "safety_identifier"},
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"user\":\"u1\",\"safety_identifier\":\"u2\"}",
     "safety_identifier: differs from user; give one of them", "safety_identifier"},
    {C, "{\"model\":\"m\",\"prompt\":\"a\",\"user\":\"u1\",\"safety_identifier\":\"u1x\"}",
     "safety_identifier: differs from user; give one of them", "safety_identifier"},
};

static void test_bad_parts_and_options_give_exact_message_and_param(void **state)
{
    (void)state;
    size_t wrong = 0;
    for (size_t i = 0; i < sizeof bad_parts / sizeof bad_parts[0]; i++) {
        const struct bad *b = &bad_parts[i];
        struct gw_gen_request req;
        char err[512], param[64];
        int rc = parse(b->route, b->body, &req, err, param);
        if (rc != -EINVAL || strcmp(err, b->message) != 0 || strcmp(param, b->param) != 0) {
            print_error("case %zu (%s):\n  rc %d\n  got      [%s] param [%s]\n  expected [%s] "
                        "param [%s]\n",
                        i, b->body, rc, err, param, b->message, b->param);
            wrong++;
        }
        assert_null(req.prompt);
    }
    assert_int_equal(wrong, 0);
}

/* ---------------------------------------------- stream_options, user */

static void test_include_usage_and_user_are_kept(void **state)
{
    (void)state;
    struct gw_gen_request req;
    char err[512], param[64];
    static const struct {
        const char *options;
        int stream, include_usage;
    } cases[] = {
        {"\"stream\":true,\"stream_options\":{\"include_usage\":true}", 1, 1},
        {"\"stream\":true,\"stream_options\":{\"include_usage\":false}", 1, 0},
        {"\"stream\":true,\"stream_options\":{\"include_usage\":null}", 1, 0},
        {"\"stream\":true,\"stream_options\":{}", 1, 0},
        {"\"stream\":true,\"stream_options\":null", 1, 0},
        {"\"stream\":true", 1, 0},
        /* no stream to shape: a whole response always has its usage */
        {"\"stream_options\":{\"include_usage\":true}", 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"model\":\"m\",\"prompt\":\"a\",%s}", cases[i].options);
        if (parse(C, body, &req, err, param) != 0)
            fail_msg("%s: %s", body, err);
        assert_int_equal(req.stream, cases[i].stream);
        assert_int_equal(req.include_usage, cases[i].include_usage);
        assert_string_equal(req.user, "");
        gw_request_free(&req);
    }
    static const char with_user[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"user\":\"end-user-42 \\\"x\\\"\"}";
    assert_int_equal(parse(H, with_user, &req, err, param), 0);
    assert_string_equal(req.user, "end-user-42 \"x\"");
    gw_request_free(&req);
    /* OpenAI's successor field names the same end user; both may be given
     * when they agree */
    static const char with_safety[] =
        "{\"model\":\"m\",\"prompt\":\"a\",\"safety_identifier\":\"hashed-7\"}";
    assert_int_equal(parse(C, with_safety, &req, err, param), 0);
    assert_string_equal(req.user, "hashed-7");
    gw_request_free(&req);
    static const char with_both[] =
        "{\"model\":\"m\",\"prompt\":\"a\",\"user\":\"u1\",\"safety_identifier\":\"u1\"}";
    assert_int_equal(parse(C, with_both, &req, err, param), 0);
    assert_string_equal(req.user, "u1");
    gw_request_free(&req);
    /* up to 256 bytes */
    char body[600];
    int n = snprintf(body, sizeof body, "{\"model\":\"m\",\"prompt\":\"a\",\"user\":\"");
    memset(body + n, 'u', 256);
    snprintf(body + n + 256, sizeof body - (size_t)n - 256, "\"}");
    assert_int_equal(parse(C, body, &req, err, param), 0);
    assert_int_equal(strlen(req.user), 256);
    gw_request_free(&req);
    memset(body + n, 'u', 257);
    snprintf(body + n + 257, sizeof body - (size_t)n - 257, "\"}");
    assert_int_equal(parse(C, body, &req, err, param), -EINVAL);
    assert_string_equal(err, "user: expected 0 to 256 bytes");
    assert_string_equal(param, "user");
}

/* ------------------------------------------------ the usage chunk */

static struct gw_completion completion(const char *id, const char *text, const char *finish)
{
    struct gw_completion c = {
        .id = id,
        .created_s = 1700000000,
        .model = "smollm2",
        .text = text,
        .text_len = text ? strlen(text) : 0,
        .finish_reason = finish,
        .prompt_tokens = 5,
        .completion_tokens = 7,
        .include_usage = 1,
    };
    return c;
}

/* rc and the body a call wrote to *out (read after the call: the
 * arguments are evaluated before it). */
static void expect(int rc, char **out, const size_t *len, const char *want)
{
    assert_int_equal(rc, 0);
    assert_string_equal(*out, want);
    assert_int_equal(*len, strlen(want));
    free(*out);
    *out = NULL;
}

/* OpenAI's stream with include_usage: "usage": null on every chunk, none
 * on the final one, then one chunk with "choices": [] and the usage. */
static void test_chat_stream_with_include_usage_ends_with_a_usage_chunk(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0;
    struct gw_completion c = completion("chatcmpl-abc", NULL, NULL);
    expect(gw_sse_chunk(H, &c, 0, &out, &len), &out, &len,
           "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
           "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[{\"index\":0,"
           "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
           "\"finish_reason\":null}],\"usage\":null}\n\n");
    c = completion("chatcmpl-abc", "Hi", NULL);
    expect(gw_sse_chunk(H, &c, 0, &out, &len), &out, &len,
           "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
           "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[{\"index\":0,"
           "\"delta\":{\"content\":\"Hi\"},\"logprobs\":null,\"finish_reason\":null}],"
           "\"usage\":null}\n\n");
    c = completion("chatcmpl-abc", NULL, "stop");
    expect(gw_sse_chunk(H, &c, 1, &out, &len), &out, &len,
           "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
           "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[{\"index\":0,"
           "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n");
    expect(gw_sse_usage(H, &c, &out, &len), &out, &len,
           "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\","
           "\"created\":1700000000,\"model\":\"smollm2\",\"choices\":[],\"usage\":"
           "{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n");
}

static void test_completions_stream_with_include_usage_ends_with_a_usage_chunk(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0;
    struct gw_completion c = completion("cmpl-abc", "Hi", NULL);
    expect(gw_sse_chunk(C, &c, 0, &out, &len), &out, &len,
           "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
           "\"model\":\"smollm2\",\"choices\":[{\"text\":\"Hi\",\"index\":0,\"logprobs\":null,"
           "\"finish_reason\":null}],\"usage\":null}\n\n");
    c = completion("cmpl-abc", NULL, "length");
    expect(gw_sse_chunk(C, &c, 1, &out, &len), &out, &len,
           "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
           "\"model\":\"smollm2\",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
           "\"finish_reason\":\"length\"}],\"usage\":null}\n\n");
    expect(gw_sse_usage(C, &c, &out, &len), &out, &len,
           "data: {\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":1700000000,"
           "\"model\":\"smollm2\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
           "\"completion_tokens\":7,\"total_tokens\":12}}\n\n");
    /* the native route has no usage chunk: its final event carries usage */
    assert_int_equal(gw_sse_usage(GW_ROUTE_GENERATE, &c, &out, &len), -EINVAL);
    c.completion_tokens = UINT64_MAX;
    assert_int_equal(gw_sse_usage(C, &c, &out, &len), -EOVERFLOW);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_routes_take_get_and_head_only),
        cmocka_unit_test(test_model_id_is_the_decoded_rest_of_the_path),
        cmocka_unit_test(test_models_bodies_are_openai_shaped),
        cmocka_unit_test_setup(test_text_parts_are_joined_in_order, setup),
        cmocka_unit_test_setup(test_parts_are_bounded_by_the_slot, setup),
        cmocka_unit_test_setup(test_parts_per_message_are_at_most_256, setup),
        cmocka_unit_test_setup(test_bad_parts_and_options_give_exact_message_and_param, setup),
        cmocka_unit_test_setup(test_include_usage_and_user_are_kept, setup),
        cmocka_unit_test(test_chat_stream_with_include_usage_ends_with_a_usage_chunk),
        cmocka_unit_test(test_completions_stream_with_include_usage_ends_with_a_usage_chunk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
