/* request.c - from a JSON body to a checked generation request
 * (gw_request_parse), for the routes that take one. Pure functions: no
 * I/O, no globals, safe in any process and any thread.
 *
 * Decisions, in one place (the tests in tests/supervisor/test_routes.c pin
 * each of them):
 *  - Unknown fields are refused ("<name>: unknown parameter"), as OpenAI's
 *    own API does ("Unrecognized request argument supplied"). A silently
 *    ignored typo ("max_token") would change what the client pays for.
 *    Parameters OpenAI defines that we do not implement are accepted only
 *    at their no-op value (presence_penalty 0, echo false, ...); anything
 *    else is refused as "not supported", never silently ignored.
 *  - JSON null for an optional field means "not given" (clients generated
 *    from OpenAI's spec send nulls). Null for a required field is a type
 *    error.
 *  - Integer fields take JSON integers only: 1.0 and 1e3 are refused, since
 *    a fraction or an exponent is not what an integer parameter promises.
 *    One exception keeps messages precise: an integer too large for jansson
 *    (json_int_t) makes the body parse again with integers read as reals,
 *    so the field that holds it gets its range message; in that parse an
 *    integral real is taken as an integer.
 *  - Strings: strict UTF-8 and no NUL. jansson refuses invalid UTF-8 for the
 *    whole body; we parse again with each bad byte marked, to name the field
 *    that holds it ("prompt: not valid UTF-8").
 *  - Chat and native requests may carry top_k (an extension, as in vLLM).
 *  - A chat message's content is a string or an array of content parts, as
 *    current SDKs send it. Text parts are joined in order, with nothing
 *    between them (the client's text, byte for byte); a part of any other
 *    type (image_url, input_audio, file, ...) is refused by its index and
 *    type: this node serves a text model, and dropping the part would
 *    answer a question that was not asked.
 *  - Defaults: max_tokens 16 on /v1/completions (OpenAI's default), 0 = "the
 *    plan's cap" on chat and native; temperature 1 on the OpenAI routes, 0
 *    (greedy) on /v1/generate.
 */
#include "gw_supervisor.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- parsing */

#define MESSAGES_MAX 256
#define PARTS_MAX 256 /* content parts per message */
#define TOKENS_CAP_DEFAULT 4096
#define INT64_LIMIT 9223372036854775808.0 /* 2^63 */

/* Marks a byte of the body that was not valid UTF-8 (see parse_body).
 * U+FFFF is a noncharacter: no client has a reason to send it. */
static const char MARK[] = "\xEF\xBF\xBF";
#define MARK_LEN 3

struct pctx {
    const struct gw_config *cfg;
    struct gw_gen_request *req;
    char *err;
    size_t errlen;
    char *param;
    size_t paramlen;
    uint32_t cap;       /* largest max_tokens accepted */
    int lax_ints;       /* body parsed with integers read as reals */
    int marked;         /* strings may hold MARK where the body had a bad byte */
    json_error_t first; /* jansson's complaint about the body as sent */
    uint64_t given;     /* bit i: fields[i] was given (not absent) */
};

/* Copies at most cap - 1 bytes of src into dst, cut back so that no
 * multi-byte sequence is split, with bytes that are not valid UTF-8 and
 * control characters replaced by '?' (messages echo client bytes and end
 * up in logs and in JSON bodies). */
static void put_clean(char *dst, size_t cap, const char *src)
{
    if (!dst || cap == 0)
        return;
    const unsigned char *u = (const unsigned char *)src;
    size_t n = strlen(src), i = 0, o = 0;
    while (i < n) {
        int k = gw_utf8_seq(u + i, n - i);
        if (k <= 0 || (k == 1 && (u[i] < 0x20 || u[i] == 0x7F))) {
            if (o + 1 >= cap)
                break;
            dst[o++] = '?';
            i++;
            continue;
        }
        if (o + (size_t)k >= cap)
            break;
        memcpy(dst + o, u + i, (size_t)k);
        o += (size_t)k;
        i += (size_t)k;
    }
    dst[o] = '\0';
}

/* Records "<param>: <problem>" and the param; returns -EINVAL. */
static int vfail(struct pctx *p, const char *param, int body, const char *fmt, va_list ap)
{
    char problem[512], msg[768];
    vsnprintf(problem, sizeof problem, fmt, ap);
    snprintf(msg, sizeof msg, "%s: %s", param, problem);
    put_clean(p->err, p->errlen, msg);
    put_clean(p->param, p->paramlen, body ? "" : param);
    return -EINVAL;
}

__attribute__((format(printf, 3, 4))) static int fail(struct pctx *p, const char *param,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(p, param, 0, fmt, ap);
    va_end(ap);
    return rc;
}

/* The body as a whole: "body: ..." in the message, "" as param (the body is
 * no parameter; the error body then says param null). */
__attribute__((format(printf, 2, 3))) static int fail_body(struct pctx *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(p, "body", 1, fmt, ap);
    va_end(ap);
    return rc;
}

static int absent(const json_t *v)
{
    return !v || json_is_null(v);
}

/* A string value's bytes, checked: strict UTF-8, no NUL. */
static int text(struct pctx *p, const char *name, const json_t *v, const char **s, size_t *n)
{
    *s = json_string_value(v);
    *n = json_string_length(v);
    if ((p->marked && memmem(*s, *n, MARK, MARK_LEN)) || !gw_utf8_valid(*s, *n))
        return fail(p, name, "not valid UTF-8");
    if (memchr(*s, '\0', *n))
        return fail(p, name, "contains a NUL byte");
    return 0;
}

/* An integer in [lo, hi]. */
static int integer(struct pctx *p, const char *name, const json_t *v, int64_t lo, int64_t hi,
                   int64_t *out)
{
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (p->lax_ints && json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || d < -INT64_LIMIT || d >= INT64_LIMIT)
            goto bad;
        x = (int64_t)d;
    } else {
        goto bad;
    }
    if (x < lo || x > hi)
        goto bad;
    *out = x;
    return 0;
bad:
    return fail(p, name, "expected an integer in [%" PRId64 ", %" PRId64 "]", lo, hi);
}

/* A string of lo to hi bytes (hi 0: any length), checked by text(). */
static int string_value(struct pctx *p, const char *name, const json_t *v, size_t lo, size_t hi,
                        const char **s, size_t *n)
{
    *s = "";
    *n = 0;
    if (!json_is_string(v))
        return fail(p, name, "expected a string");
    if (text(p, name, v, s, n))
        return -EINVAL;
    if (hi && (*n < lo || *n > hi))
        return fail(p, name, "expected %zu to %zu bytes", lo, hi);
    return 0;
}

/* ---------------------------------------------- fields with their own check */

/* The check of a K_OWN field; it gets NULL when the field is absent. */
typedef int (*field_fn)(struct pctx *p, const char *name, const json_t *v);

static int set_prompt(struct pctx *p, const char *name, size_t n, const char *how)
{
    uint32_t lim = p->cfg->segment.prompt_bytes;
    if (n > lim)
        return fail(p, name, "%zu bytes%s, at most %" PRIu32, n, how, lim);
    p->req->prompt = malloc(n + 1);
    if (!p->req->prompt)
        return -ENOMEM;
    p->req->prompt_len = n;
    return 0;
}

static int f_prompt(struct pctx *p, const char *name, const json_t *v)
{
    const char *s;
    size_t n;
    if (!v)
        return fail(p, name, "required");
    if (json_is_array(v))
        return fail(p, name, "only a single string is supported");
    if (string_value(p, name, v, 0, 0, &s, &n))
        return -EINVAL;
    int rc = set_prompt(p, name, n, "");
    if (rc)
        return rc;
    memcpy(p->req->prompt, s, n);
    p->req->prompt[n] = '\0';
    return 0;
}

static int is_role(const char *s, size_t n)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    for (size_t i = 0; i < 3; i++)
        if (strlen(roles[i]) == n && memcmp(roles[i], s, n) == 0)
            return 1;
    return 0;
}

/* A message's content parts: each an object {"type": "text", "text": ...}.
 * On success *n is the bytes of their texts together. */
static int check_parts(struct pctx *p, const char *name, const json_t *v, size_t *n)
{
    char at[160];
    size_t count = json_array_size(v);
    *n = 0;
    if (count < 1 || count > PARTS_MAX)
        return fail(p, name, "expected 1 to %d content parts, got %zu", PARTS_MAX, count);
    for (size_t k = 0; k < count; k++) {
        const json_t *part = json_array_get(v, k);
        const char *s;
        size_t len;
        snprintf(at, sizeof at, "%s[%zu]", name, k);
        if (!json_is_object(part))
            return fail(p, at, "expected an object with type and text");
        const json_t *type = json_object_get(part, "type");
        snprintf(at, sizeof at, "%s[%zu].type", name, k);
        if (!type)
            return fail(p, at, "required");
        if (string_value(p, at, type, 0, 0, &s, &len))
            return -EINVAL;
        if (strcmp(s, "text") != 0) {
            static const char *const media[] = {"image_url", "input_audio", "input_image", "image",
                                                "audio",     "file",        "video_url"};
            for (size_t i = 0; i < sizeof media / sizeof media[0]; i++)
                if (strcmp(s, media[i]) == 0)
                    return fail(p, at, "\"%s\" parts are not supported: this model reads text only",
                                s);
            return fail(p, at, "unknown content part type \"%.32s%s\"; expected \"text\"", s,
                        len > 32 ? "..." : "");
        }
        const char *key;
        const json_t *x;
        json_object_foreach ((json_t *)part, key, x) {
            snprintf(at, sizeof at, "%s[%zu].%.32s", name, k, key);
            if (strcmp(key, "type") != 0 && strcmp(key, "text") != 0)
                return fail(p, at, "unknown parameter");
        }
        const json_t *t = json_object_get(part, "text");
        snprintf(at, sizeof at, "%s[%zu].text", name, k);
        if (!t)
            return fail(p, at, "required");
        if (string_value(p, at, t, 0, 0, &s, &len))
            return -EINVAL;
        *n += len;
    }
    return 0;
}

/* Copies a message's content (a string, or its text parts in order) to o;
 * returns the end. Checked before. */
static char *put_content(char *o, const json_t *content)
{
    if (json_is_string(content)) {
        size_t n = json_string_length(content);
        memcpy(o, json_string_value(content), n);
        return o + n;
    }
    for (size_t k = 0; k < json_array_size(content); k++) {
        const json_t *t = json_object_get(json_array_get(content, k), "text");
        size_t n = json_string_length(t);
        memcpy(o, json_string_value(t), n);
        o += n;
    }
    return o;
}

/* One message: role, content (a string or content parts), and `name` (a
 * string, ignored: the templates have no place for it); anything else is
 * refused. *bytes gets what it adds to the serialised prompt. */
static int check_message(struct pctx *p, size_t i, const json_t *m, size_t *bytes)
{
    char at[64];
    const char *s;
    size_t n;
    if (!json_is_object(m)) {
        snprintf(at, sizeof at, "messages[%zu]", i);
        return fail(p, at, "expected an object with role and content");
    }
    const json_t *role = json_object_get(m, "role");
    snprintf(at, sizeof at, "messages[%zu].role", i);
    if (!role)
        return fail(p, at, "required");
    if (!json_is_string(role) || !is_role(json_string_value(role), json_string_length(role)))
        return fail(p, at, "expected one of system, user, assistant");
    const json_t *content = json_object_get(m, "content");
    snprintf(at, sizeof at, "messages[%zu].content", i);
    if (!content)
        return fail(p, at, "required");
    if (json_is_array(content)) {
        if (check_parts(p, at, content, &n))
            return -EINVAL;
    } else if (!json_is_string(content)) {
        return fail(p, at, "expected a string or an array of content parts");
    } else if (string_value(p, at, content, 0, 0, &s, &n)) {
        return -EINVAL;
    }
    *bytes = json_string_length(role) + 1 + n + 1;
    const char *key;
    const json_t *x;
    json_object_foreach ((json_t *)m, key, x) {
        if (strcmp(key, "role") == 0 || strcmp(key, "content") == 0)
            continue;
        snprintf(at, sizeof at, "messages[%zu].%.32s", i, key);
        if (strcmp(key, "name") != 0)
            return fail(p, at, "unknown parameter");
        if (string_value(p, at, x, 0, 0, &s, &n))
            return -EINVAL;
    }
    return 0;
}

/* Chat messages, serialised as role NUL content NUL ... into the prompt. */
static int f_messages(struct pctx *p, const char *name, const json_t *v)
{
    size_t total = 0;
    if (!v)
        return fail(p, name, "required");
    if (!json_is_array(v))
        return fail(p, name, "expected an array of messages");
    size_t count = json_array_size(v);
    if (count < 1 || count > MESSAGES_MAX)
        return fail(p, name, "expected 1 to %d messages, got %zu", MESSAGES_MAX, count);
    for (size_t i = 0; i < count; i++) {
        size_t bytes = 0;
        if (check_message(p, i, json_array_get(v, i), &bytes))
            return -EINVAL;
        total += bytes;
    }
    int rc = set_prompt(p, name, total, " serialised");
    if (rc)
        return rc;
    char *o = p->req->prompt;
    for (size_t i = 0; i < count; i++) {
        const json_t *m = json_array_get(v, i);
        const json_t *role = json_object_get(m, "role");
        size_t n = json_string_length(role);
        memcpy(o, json_string_value(role), n);
        o += n;
        *o++ = '\0';
        o = put_content(o, json_object_get(m, "content"));
        *o++ = '\0';
    }
    *o = '\0'; /* the terminator beyond prompt_len */
    p->req->chat = 1;
    return 0;
}

static int one_stop(struct pctx *p, const char *name, const json_t *v)
{
    const char *s;
    size_t n;
    if (string_value(p, name, v, 1, GW_STOP_LEN - 1, &s, &n))
        return -EINVAL;
    memcpy(p->req->stops[p->req->n_stops], s, n);
    p->req->stops[p->req->n_stops][n] = '\0';
    p->req->n_stops++;
    return 0;
}

/* stream_options: {"include_usage": true|false}. With include_usage a
 * stream ends with a chunk of its own for the usage, before [DONE], and no
 * other chunk carries it; without, the usage stays on the final chunk (an
 * extension OpenAI does not have). A whole response always has its usage,
 * so without "stream": true either value is already honoured. */
static int f_stream_options(struct pctx *p, const char *name, const json_t *v)
{
    if (absent(v))
        return 0;
    if (!json_is_object(v))
        return fail(p, name, "expected an object {\"include_usage\": true|false}");
    const char *key;
    const json_t *x;
    json_object_foreach ((json_t *)v, key, x) {
        char at[80];
        snprintf(at, sizeof at, "%s.%.32s", name, key);
        if (strcmp(key, "include_usage") != 0)
            return fail(p, at, "unknown parameter");
        if (!absent(x) && !json_is_boolean(x))
            return fail(p, at, "expected true or false");
        p->req->include_usage = json_is_true(x);
    }
    return 0;
}

static int f_stop(struct pctx *p, const char *name, const json_t *v)
{
    char at[32];
    if (absent(v))
        return 0;
    if (json_is_string(v))
        return one_stop(p, name, v);
    if (!json_is_array(v))
        return fail(p, name, "expected a string or an array of strings");
    if (json_array_size(v) > GW_STOP_MAX)
        return fail(p, name, "at most %d sequences", GW_STOP_MAX);
    for (size_t i = 0; i < json_array_size(v); i++) {
        snprintf(at, sizeof at, "stop[%zu]", i);
        if (one_stop(p, at, json_array_get(v, i)))
            return -EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------ no-op values */

/* The one value a K_ONLY or K_NOOP field accepts (OpenAI parameters we do
 * not implement, accepted at their no-op value only). Each row of fields[]
 * names that value for the message. */
static int noop_zero(const struct pctx *p, const json_t *v)
{
    (void)p;
    return json_is_number(v) && json_number_value(v) == 0;
}
static int noop_false(const struct pctx *p, const json_t *v)
{
    (void)p;
    return json_is_false(v);
}
/* The value 1 as an integer field: what n and best_of accept. */
static int noop_one(const struct pctx *p, const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) == 1;
    return p->lax_ints && json_is_real(v) && json_real_value(v) == 1.0;
}
static int noop_empty_object(const struct pctx *p, const json_t *v)
{
    (void)p;
    return json_is_object(v) && json_object_size(v) == 0;
}
static int noop_empty_array(const struct pctx *p, const json_t *v)
{
    (void)p;
    return json_is_array(v) && json_array_size(v) == 0;
}
static int noop_empty_string(const struct pctx *p, const json_t *v)
{
    (void)p;
    return json_is_string(v) && json_string_length(v) == 0;
}
static int noop_none(const struct pctx *p, const json_t *v)
{
    (void)p;
    return json_is_string(v) && strcmp(json_string_value(v), "none") == 0;
}
static int noop_bool(const struct pctx *p, const json_t *v)
{
    (void)p;
    return json_is_boolean(v);
}
static int noop_text_format(const struct pctx *p, const json_t *v)
{
    (void)p;
    const json_t *t = json_object_get(v, "type");
    return json_is_object(v) && json_object_size(v) == 1 && json_is_string(t) &&
           strcmp(json_string_value(t), "text") == 0;
}
/* ------------------------------------------------------------- the fields */

#define R_GEN (1u << GW_ROUTE_GENERATE)
#define R_CMPL (1u << GW_ROUTE_COMPLETIONS)
#define R_CHAT (1u << GW_ROUTE_CHAT)
#define R_ALL (R_GEN | R_CMPL | R_CHAT)

/* What a field holds, and so how it is checked and where it goes. */
enum kind {
    K_OWN,    /* its own check (own) */
    K_STRING, /* a string of [lo, hi] bytes (hi 0: any length), copied to `to` */
    K_INT,    /* a JSON integer in [lo, hi], to a uint32_t or uint64_t */
    K_NUMBER, /* a JSON number in [min, max] ((min, max] with open_min), to a float */
    K_BOOL,   /* true or false, to an int */
    K_ONLY,   /* accepted at its no-op value only: "only <value> is supported" */
    K_NOOP,   /* an OpenAI parameter we lack: its no-op value only ("not supported; ...") */
};

/* One parameter of a request body. */
struct field {
    const char *name;
    unsigned routes; /* R_* of the routes that take it */
    enum kind kind;
    unsigned required; /* K_STRING: R_* of the routes where it must be given */
    int64_t lo, hi;    /* K_INT: its range; K_STRING: its length in bytes */
    int hi_cap;        /* K_INT: hi is the largest max_tokens of any plan (pctx.cap) */
    double min, max;   /* K_NUMBER: its range */
    int open_min;      /* K_NUMBER: min itself is out */
    size_t to, size;   /* where the value goes in struct gw_gen_request (size 0: nowhere) */
    size_t given;      /* an int there set to 1 when the field is given (0: none) */
    field_fn own;      /* K_OWN */
    int (*ok)(const struct pctx *p, const json_t *v); /* K_ONLY, K_NOOP: the no-op value */
    const char *value;                                /* K_ONLY, K_NOOP: it, for the message */
};

#define TO(m)                                                                                      \
    .to = offsetof(struct gw_gen_request, m), .size = sizeof(((struct gw_gen_request *)0)->m)
#define GIVEN(m) .given = offsetof(struct gw_gen_request, m)
/* route is no flag: offset 0 can mean "none" */
_Static_assert(offsetof(struct gw_gen_request, route) == 0, "GIVEN(): 0 is none");

/* Every parameter of every route. The fields are checked in this order,
 * absent or not: the first bad one is the one reported. Then the body's
 * keys, in the body's order: an unknown one is refused, and a K_NOOP one is
 * checked against its no-op value. Where two fields go to the same place
 * (chat's max_tokens, deprecated by OpenAI, and max_completion_tokens) both
 * are fine when they agree. */
static const struct field fields[] = {
    {"model", R_ALL, K_STRING, .required = R_CMPL | R_CHAT, .lo = 1, .hi = GW_NAME_MAX - 1,
     TO(model)},
    {"prompt", R_GEN | R_CMPL, K_OWN, .own = f_prompt},
    {"messages", R_CHAT, K_OWN, .own = f_messages},
    {"max_tokens", R_ALL, K_INT, .lo = 1, .hi_cap = 1, TO(max_tokens)},
    {"max_completion_tokens", R_CHAT, K_INT, .lo = 1, .hi_cap = 1, TO(max_tokens)},
    {"temperature", R_ALL, K_NUMBER, .min = 0, .max = 2, TO(temperature)},
    {"top_p", R_ALL, K_NUMBER, .min = 0, .max = 1, .open_min = 1, TO(top_p)},
    {"top_k", R_ALL, K_INT, .lo = 0, .hi = UINT32_MAX, TO(top_k)},
    {"n", R_CMPL | R_CHAT, K_ONLY, .ok = noop_one, .value = "1"},
    {"seed", R_ALL, K_INT, .lo = 0, .hi = INT64_MAX, TO(seed), GIVEN(has_seed)},
    {"stop", R_ALL, K_OWN, .own = f_stop},
    {"stream", R_ALL, K_BOOL, TO(stream)},
    {"stream_options", R_CMPL | R_CHAT, K_OWN, .own = f_stream_options},
    {"user", R_CMPL | R_CHAT, K_STRING, .lo = 0, .hi = GW_USER_MAX - 1, TO(user)},
    /* OpenAI's successor of `user` (2025): the same end-user id */
    {"safety_identifier", R_CMPL | R_CHAT, K_STRING, .lo = 0, .hi = GW_USER_MAX - 1, TO(user)},
    {"logprobs", R_CMPL, K_NOOP, .ok = noop_zero, .value = "0"},
    {"logprobs", R_CHAT, K_NOOP, .ok = noop_false, .value = "false"},
    {"top_logprobs", R_CHAT, K_NOOP, .ok = noop_zero, .value = "0"},
    {"echo", R_CMPL, K_NOOP, .ok = noop_false, .value = "false"},
    {"best_of", R_CMPL, K_NOOP, .ok = noop_one, .value = "1"},
    {"suffix", R_CMPL, K_NOOP, .ok = noop_empty_string, .value = "\"\""},
    {"presence_penalty", R_CMPL | R_CHAT, K_NOOP, .ok = noop_zero, .value = "0"},
    {"frequency_penalty", R_CMPL | R_CHAT, K_NOOP, .ok = noop_zero, .value = "0"},
    {"logit_bias", R_CMPL | R_CHAT, K_NOOP, .ok = noop_empty_object, .value = "{}"},
    {"response_format", R_CHAT, K_NOOP, .ok = noop_text_format, .value = "{\"type\": \"text\"}"},
    {"tools", R_CHAT, K_NOOP, .ok = noop_empty_array, .value = "[]"},
    {"functions", R_CHAT, K_NOOP, .ok = noop_empty_array, .value = "[]"},
    {"tool_choice", R_CHAT, K_NOOP, .ok = noop_none, .value = "\"none\""},
    {"function_call", R_CHAT, K_NOOP, .ok = noop_none, .value = "\"none\""},
    {"parallel_tool_calls", R_CHAT, K_NOOP, .ok = noop_bool, .value = "true or false"},
    {"store", R_CHAT, K_NOOP, .ok = noop_false, .value = "false"},
    {"metadata", R_CHAT, K_NOOP, .ok = noop_empty_object, .value = "{}"},
};

#define N_FIELDS (sizeof fields / sizeof fields[0])
_Static_assert(N_FIELDS <= 64, "pctx.given has a bit per field");

static void *at(struct pctx *p, size_t off)
{
    return (char *)p->req + off;
}

static uint64_t get_uint(struct pctx *p, const struct field *f)
{
    uint32_t u32;
    uint64_t u64;
    if (f->size == sizeof u32) {
        memcpy(&u32, at(p, f->to), sizeof u32);
        return u32;
    }
    memcpy(&u64, at(p, f->to), sizeof u64);
    return u64;
}

static void put_uint(struct pctx *p, const struct field *f, uint64_t x)
{
    uint32_t u32 = (uint32_t)x;
    if (f->size == sizeof u32)
        memcpy(at(p, f->to), &u32, sizeof u32);
    else
        memcpy(at(p, f->to), &x, sizeof x);
}

/* fields[i] as a K_STRING; a field given earlier to the same place must
 * agree (`user` and its successor `safety_identifier`). */
static int check_string(struct pctx *p, size_t i, const json_t *v)
{
    const struct field *f = &fields[i];
    const char *s;
    size_t n;
    if (string_value(p, f->name, v, (size_t)f->lo, (size_t)f->hi, &s, &n))
        return -EINVAL;
    for (size_t j = 0; f->size && j < i; j++) {
        const struct field *e = &fields[j];
        const char *had = at(p, e->to);
        if ((p->given >> j & 1) && e->to == f->to && (strlen(had) != n || memcmp(had, s, n)))
            return fail(p, f->name, "differs from %s; give one of them", e->name);
    }
    if (f->size) {
        memcpy(at(p, f->to), s, n);
        ((char *)at(p, f->to))[n] = '\0';
    }
    return 0;
}

/* fields[i] as a K_INT; a field given earlier to the same place must
 * agree. */
static int check_int(struct pctx *p, size_t i, const json_t *v)
{
    const struct field *f = &fields[i];
    int64_t x = 0; /* set by integer() when it returns 0 */
    if (integer(p, f->name, v, f->lo, f->hi_cap ? p->cap : f->hi, &x))
        return -EINVAL;
    uint64_t u = f->size == sizeof(uint32_t) ? (uint32_t)x : (uint64_t)x;
    for (size_t j = 0; j < i; j++) {
        const struct field *e = &fields[j];
        if ((p->given >> j & 1) && e->to == f->to && get_uint(p, e) != u)
            return fail(p, f->name, "differs from %s; give one of them", e->name);
    }
    put_uint(p, f, u);
    return 0;
}

static int check_number(struct pctx *p, const struct field *f, const json_t *v)
{
    double d = json_number_value(v);
    if (!json_is_number(v) || !((f->open_min ? d > f->min : d >= f->min) && d <= f->max))
        return fail(p, f->name, "expected a number in %s%g, %g]", f->open_min ? "(" : "[", f->min,
                    f->max);
    *(float *)at(p, f->to) = (float)d;
    return 0;
}

static int check_bool(struct pctx *p, const struct field *f, const json_t *v)
{
    if (!json_is_boolean(v))
        return fail(p, f->name, "expected true or false");
    *(int *)at(p, f->to) = json_is_true(v);
    return 0;
}

/* fields[i] (not a K_NOOP) with its value v, NULL when absent: checked and
 * stored. */
static int check_field(struct pctx *p, size_t i, const json_t *v)
{
    const struct field *f = &fields[i];
    int rc = 0;
    if (f->kind == K_OWN)
        return f->own(p, f->name, v);
    if (absent(v)) {
        /* Only strings are required; null for one is a type error. */
        if (!(f->required & (1u << p->req->route)))
            return 0;
        return v ? fail(p, f->name, "expected a string") : fail(p, f->name, "required");
    }
    switch (f->kind) {
    case K_STRING:
        rc = check_string(p, i, v);
        break;
    case K_INT:
        rc = check_int(p, i, v);
        break;
    case K_NUMBER:
        rc = check_number(p, f, v);
        break;
    case K_BOOL:
        rc = check_bool(p, f, v);
        break;
    case K_ONLY:
        rc = f->ok(p, v) ? 0 : fail(p, f->name, "only %s is supported", f->value);
        break;
    default:
        break;
    }
    if (rc)
        return rc;
    p->given |= 1ull << i;
    if (f->given)
        *(int *)at(p, f->given) = 1;
    return 0;
}

/* The field `key` names on the route (bit: its R_*), or NULL. */
static const struct field *field_named(const char *key, unsigned bit)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if ((fields[i].routes & bit) && strcmp(fields[i].name, key) == 0)
            return &fields[i];
    return NULL;
}

/* Parses the body into *root. jansson refuses the whole document for an
 * integer beyond json_int_t or a byte that is not UTF-8; rather than say
 * "body" for those, parse again (integers as reals; bad bytes replaced by
 * MARK) and let the field checks name the field. Where the second parse
 * fails too, jansson's first complaint is the one reported. */
/* Whether a key anywhere in j holds MARK: a bad byte in a key has no field
 * to blame, so it stays the body's fault. */
static int marked_key(json_t *j)
{
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_object(j)) {
        json_object_foreach (j, key, v) {
            if (strstr(key, MARK) || marked_key(v))
                return 1;
        }
    } else if (json_is_array(j)) {
        json_array_foreach (j, i, v) {
            if (marked_key(v))
                return 1;
        }
    }
    return 0;
}

static int fail_json(struct pctx *p)
{
    return fail_body(p, "not valid JSON: %s at line %d column %d", p->first.text, p->first.line,
                     p->first.column);
}

static int parse_body(struct pctx *p, const char *body, size_t len, json_t **root)
{
    json_error_t *first = &p->first, again;
    size_t flags = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL;
    char *copy = NULL;
    if (len == 0)
        return fail_body(p, "empty; expected a JSON object");
    *root = json_loadb(body, len, flags, first);
    if (*root)
        return 0;
    enum json_error_code code = json_error_code(first);
    if (code == json_error_numeric_overflow) {
        p->lax_ints = 1;
        *root = json_loadb(body, len, flags | JSON_DECODE_INT_AS_REAL, &again);
    } else if (code == json_error_invalid_utf8 && !memmem(body, len, MARK, MARK_LEN) &&
               len <= (SIZE_MAX - 1) / MARK_LEN) {
        copy = malloc(len * MARK_LEN + 1);
        if (!copy)
            return -ENOMEM;
        size_t o = gw_utf8_replace(copy, body, len, MARK, MARK_LEN);
        p->marked = 1;
        *root = json_loadb(copy, o, flags, &again);
        /* Both at once: the marked copy may still hold a huge integer. */
        if (!*root && json_error_code(&again) == json_error_numeric_overflow) {
            p->lax_ints = 1;
            *root = json_loadb(copy, o, flags | JSON_DECODE_INT_AS_REAL, &again);
        }
        free(copy);
    }
    if (*root && !(p->marked && marked_key(*root)))
        return 0;
    json_decref(*root);
    *root = NULL;
    return fail_json(p);
}

uint32_t gw_request_tokens_cap(const struct gw_config *cfg)
{
    uint32_t cap = 0;
    for (int i = 0; cfg && i < cfg->n_plans && i < GW_MAX_PLANS; i++)
        if (cfg->plans[i].max_tokens > cap)
            cap = cfg->plans[i].max_tokens;
    for (int i = 0; cfg && cfg->tenants && i < cfg->n_tenants; i++)
        if (cfg->tenants[i].plan.max_tokens > cap)
            cap = cfg->tenants[i].plan.max_tokens;
    return cap ? cap : TOKENS_CAP_DEFAULT;
}

/* The body's object against fields[]: first each field the route takes, in
 * the table's order; then the body's keys in its order, for unknown ones
 * and the no-op values. */
static int check_object(struct pctx *p, enum gw_route route, json_t *root)
{
    unsigned bit = 1u << route;
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (!(fields[i].routes & bit) || fields[i].kind == K_NOOP)
            continue;
        int rc = check_field(p, i, json_object_get(root, fields[i].name));
        if (rc)
            return rc;
    }
    const char *key;
    json_t *v;
    json_object_foreach (root, key, v) {
        const struct field *f = field_named(key, bit);
        if (!f) {
            char name[80];
            /* The key is the client's: echo a bounded piece of it. */
            snprintf(name, sizeof name, "%.64s%s", key, strlen(key) > 64 ? "..." : "");
            return fail(p, name, "unknown parameter");
        }
        if (f->kind == K_NOOP && !absent(v) && !f->ok(p, v))
            return fail(p, key, "not supported; omit it or send %s", f->value);
    }
    return 0;
}

int gw_request_parse(enum gw_route route, const char *body, size_t len, const struct gw_config *cfg,
                     struct gw_gen_request *req, char *err, size_t errlen, char *param,
                     size_t paramlen)
{
    struct pctx p = {
        .cfg = cfg, .req = req, .err = err, .errlen = errlen, .param = param, .paramlen = paramlen};
    json_t *root = NULL;
    int rc;
    if (err && errlen)
        err[0] = '\0';
    if (param && paramlen)
        param[0] = '\0';
    if (req)
        memset(req, 0, sizeof *req);
    if (!req || !cfg || (!body && len) ||
        (route != GW_ROUTE_GENERATE && route != GW_ROUTE_COMPLETIONS && route != GW_ROUTE_CHAT))
        return -EFAULT;
    req->route = route;
    req->temperature = route == GW_ROUTE_GENERATE ? 0.0f : 1.0f;
    req->top_p = 1.0f;
    req->max_tokens = route == GW_ROUTE_COMPLETIONS ? 16 : 0;
    p.cap = gw_request_tokens_cap(cfg);

    rc = parse_body(&p, body ? body : "", len, &root);
    if (rc)
        goto fail;
    if (!json_is_object(root)) {
        rc = fail_body(&p, "expected a JSON object");
        goto fail;
    }
    rc = check_object(&p, route, root);
    /* A bad byte the field checks did not meet is still a bad body. */
    if (rc == 0 && p.marked)
        rc = fail_json(&p);
    if (rc)
        goto fail;
    json_decref(root);
    return 0;
fail:
    json_decref(root);
    gw_request_free(req);
    return rc;
}

void gw_request_free(struct gw_gen_request *req)
{
    if (!req)
        return;
    free(req->prompt);
    req->prompt = NULL;
    req->prompt_len = 0;
}
