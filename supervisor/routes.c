/* routes.c - from method and path to a route, and from results to response
 * bytes (native and OpenAI shapes, whole or as server-sent events). Pure
 * functions: no I/O, no globals, safe in any process and any thread. The
 * request bodies are read in request.c.
 */
#include "gw_supervisor.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------- routes */

static const struct {
    const char *path;
    enum gw_route route;
    int post; /* 1: POST only; 0: GET and HEAD */
} route_table[] = {
    {"/v1/generate", GW_ROUTE_GENERATE, 1},
    {"/v1/completions", GW_ROUTE_COMPLETIONS, 1},
    {"/v1/chat/completions", GW_ROUTE_CHAT, 1},
    {"/healthz", GW_ROUTE_HEALTHZ, 0},
    {"/readyz", GW_ROUTE_READYZ, 0},
    {"/metrics", GW_ROUTE_METRICS, 0},
    {"/v1/models", GW_ROUTE_MODELS, 0},
};

#define MODEL_PREFIX "/v1/models/"
#define MODEL_PREFIX_LEN (sizeof(MODEL_PREFIX) - 1)

/* "/v1/models/" and at least one byte: the one path with a variable part. */
static int is_model_path(const char *path, size_t path_len)
{
    return path_len > MODEL_PREFIX_LEN && memcmp(path, MODEL_PREFIX, MODEL_PREFIX_LEN) == 0;
}

static int get_or_head(const char *method)
{
    return method && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0);
}

int gw_route_match(const char *method, const char *path, size_t path_len, enum gw_route *out,
                   const char **allow)
{
    if (!path)
        return 404;
    const char *q = memchr(path, '?', path_len);
    if (q)
        path_len = (size_t)(q - path);
    /* Exact comparison is the whole normalisation: "..", "//", "%2F",
     * "%2e", a trailing "/" or any other spelling is simply not one of
     * these paths, so it is a 404, never a second way in. */
    for (size_t i = 0; i < sizeof route_table / sizeof route_table[0]; i++) {
        const char *p = route_table[i].path;
        if (strlen(p) != path_len || memcmp(p, path, path_len) != 0)
            continue;
        int ok =
            route_table[i].post ? (method && strcmp(method, "POST") == 0) : get_or_head(method);
        if (!ok) {
            if (allow)
                *allow = route_table[i].post ? "POST" : "GET, HEAD";
            return 405;
        }
        if (out)
            *out = route_table[i].route;
        return 0;
    }
    if (is_model_path(path, path_len)) {
        if (!get_or_head(method)) {
            if (allow)
                *allow = "GET, HEAD";
            return 405;
        }
        if (out)
            *out = GW_ROUTE_MODELS;
        return 0;
    }
    return 404;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int gw_route_model_id(const char *path, size_t path_len, char *id, size_t idlen)
{
    if (!path || !id || idlen == 0)
        return -EINVAL;
    id[0] = '\0';
    const char *q = memchr(path, '?', path_len);
    if (q)
        path_len = (size_t)(q - path);
    if (path_len == MODEL_PREFIX_LEN - 1 && memcmp(path, MODEL_PREFIX, path_len) == 0)
        return 0;
    if (!is_model_path(path, path_len))
        return -EINVAL;
    size_t o = 0;
    for (size_t i = MODEL_PREFIX_LEN; i < path_len; i++) {
        char c = path[i];
        if (c == '%') {
            int hi = i + 2 < path_len ? hexval(path[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(path[i + 2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0))
                return -EINVAL;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '\0') {
            return -EINVAL;
        }
        if (o + 1 >= idlen)
            return -ENAMETOOLONG;
        id[o++] = c;
    }
    id[o] = '\0';
    return 1;
}

/* s as a JSON string; bytes that are not valid UTF-8 become U+FFFD, one per
 * byte (json_stringn would refuse them, and a response must still go out:
 * a model can emit any bytes). NULL only when out of memory. */
static json_t *jtext(const char *s, size_t n)
{
    if (!s)
        return n ? NULL : json_string("");
    if (gw_utf8_valid(s, n))
        return json_stringn(s, n);
    if (n > (SIZE_MAX - 1) / 3)
        return NULL;
    char *b = malloc(n * 3 + 1);
    if (!b)
        return NULL;
    json_t *j = json_stringn(b, gw_utf8_replace(b, s, n, "\xEF\xBF\xBD", 3));
    free(b);
    return j;
}

/* ----------------------------------------------------------- responses */

struct sbuf {
    char *p;
    size_t len, cap;
};

static int sbuf_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int dump_cb(const char *s, size_t n, void *data)
{
    return sbuf_put(data, s, n);
}

/* Serialises j (compact, keys in insertion order) between prefix and
 * suffix into a malloc'd string; consumes j. */
static int emit(json_t *j, const char *prefix, const char *suffix, char **out, size_t *len)
{
    struct sbuf b = {0};
    int rc = -ENOMEM;
    if (!j)
        return -ENOMEM;
    if (sbuf_put(&b, prefix, strlen(prefix)) || json_dump_callback(j, dump_cb, &b, JSON_COMPACT) ||
        sbuf_put(&b, suffix, strlen(suffix)))
        goto done;
    *out = b.p;
    if (len)
        *len = b.len;
    b.p = NULL;
    rc = 0;
done:
    free(b.p);
    json_decref(j);
    return rc;
}

/* Builder helpers: each returns 0, or -1 once anything failed (a NULL value
 * from an allocation is a failure; set_new consumes it either way). */
static int put(json_t *o, const char *k, json_t *v)
{
    return json_object_set_new(o, k, v);
}

static json_t *jstr_or_null(const char *s)
{
    return s ? jtext(s, strlen(s)) : json_null();
}

static json_t *usage(const struct gw_completion *c)
{
    uint64_t total = c->prompt_tokens + c->completion_tokens; /* checked by bad_args */
    json_t *u = json_object();
    if (!u)
        return NULL;
    /* One statement per key: the order of the keys is the order of the
     * calls, which `|` between them would leave unspecified. */
    int rc = put(u, "prompt_tokens", json_integer((json_int_t)c->prompt_tokens));
    rc |= put(u, "completion_tokens", json_integer((json_int_t)c->completion_tokens));
    rc |= put(u, "total_tokens", json_integer((json_int_t)total));
    if (rc) {
        json_decref(u);
        return NULL;
    }
    return u;
}

/* finish_reason, and killed_reason right after it when the run was
 * killed (null when the caller did not say which detector). */
static int put_finish(json_t *o, const struct gw_completion *c)
{
    int rc = put(o, "finish_reason", jstr_or_null(c->finish_reason));
    if (c->finish_reason && strcmp(c->finish_reason, "killed") == 0)
        rc |= put(o, "killed_reason", jstr_or_null(c->killed_reason));
    return rc;
}

/* The OpenAI envelope: id, object, created, model, choices: [choice]. */
static json_t *envelope(const struct gw_completion *c, const char *object, json_t *choice)
{
    json_t *o = json_object(), *arr = json_array();
    int rc = !o || !arr || !choice;
    if (!rc) {
        rc |= put(o, "id", jstr_or_null(c->id));
        rc |= put(o, "object", json_string(object));
        rc |= put(o, "created", json_integer((json_int_t)c->created_s));
        rc |= put(o, "model", jstr_or_null(c->model));
        rc |= json_array_append(arr, choice);
        rc |= put(o, "choices", arr);
        arr = NULL;
    }
    json_decref(arr);
    json_decref(choice);
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *cmpl_choice(const struct gw_completion *c, int with_finish)
{
    json_t *ch = json_object();
    if (!ch)
        return NULL;
    int rc = put(ch, "text", jtext(c->text, c->text_len));
    rc |= put(ch, "index", json_integer(0));
    rc |= put(ch, "logprobs", json_null());
    rc |= with_finish ? put_finish(ch, c) : put(ch, "finish_reason", json_null());
    if (rc) {
        json_decref(ch);
        return NULL;
    }
    return ch;
}

/* kind: 0 whole (message), 1 delta chunk, 2 final chunk. */
static json_t *chat_choice(const struct gw_completion *c, int kind)
{
    json_t *ch = json_object(), *m = json_object();
    int rc = !ch || !m;
    if (!rc) {
        rc |= put(ch, "index", json_integer(0));
        if (kind == 0) {
            rc |= put(m, "role", json_string("assistant"));
            rc |= put(m, "content", jtext(c->text, c->text_len));
        } else if (kind == 1 && c->text_len == 0) {
            /* The opening chunk, as OpenAI sends it. */
            rc |= put(m, "role", json_string("assistant"));
            rc |= put(m, "content", json_string(""));
        } else if (c->text_len > 0) {
            rc |= put(m, "content", jtext(c->text, c->text_len));
        }
        rc |= put(ch, kind == 0 ? "message" : "delta", m);
        m = NULL;
        rc |= put(ch, "logprobs", json_null());
        rc |= kind == 1 ? put(ch, "finish_reason", json_null()) : put_finish(ch, c);
    }
    json_decref(m);
    if (rc) {
        json_decref(ch);
        return NULL;
    }
    return ch;
}

static json_t *native(const struct gw_completion *c)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int rc = put(o, "id", jstr_or_null(c->id));
    rc |= put(o, "model", jstr_or_null(c->model));
    rc |= put(o, "text", jtext(c->text, c->text_len));
    rc |= put_finish(o, c);
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int with_usage(json_t *o, const struct gw_completion *c)
{
    return o ? put(o, "usage", usage(c)) : -1;
}

static int bad_args(const struct gw_completion *c, char **out)
{
    if (!c || !out || (!c->text && c->text_len))
        return -EINVAL;
    if (c->created_s > INT64_MAX || c->prompt_tokens > INT64_MAX ||
        c->completion_tokens > INT64_MAX - c->prompt_tokens)
        return -EOVERFLOW;
    return 0;
}

int gw_response_body(enum gw_route route, const struct gw_completion *c, char **out, size_t *len)
{
    json_t *o = NULL;
    int rc = bad_args(c, out);
    if (rc)
        return rc;
    switch (route) {
    case GW_ROUTE_COMPLETIONS:
        o = envelope(c, "text_completion", cmpl_choice(c, 1));
        break;
    case GW_ROUTE_CHAT:
        o = envelope(c, "chat.completion", chat_choice(c, 0));
        break;
    case GW_ROUTE_GENERATE:
        o = native(c);
        break;
    default:
        return -EINVAL;
    }
    if (with_usage(o, c)) {
        json_decref(o);
        return -ENOMEM;
    }
    return emit(o, "", "", out, len);
}

/* With include_usage every chunk says "usage": null, as OpenAI's do. */
static int usage_null(json_t *o, const struct gw_completion *c)
{
    return o && c->include_usage ? put(o, "usage", json_null()) : 0;
}

int gw_sse_chunk(enum gw_route route, const struct gw_completion *c, int final, char **out,
                 size_t *len)
{
    json_t *o = NULL;
    int rc = bad_args(c, out);
    if (rc)
        return rc;
    switch (route) {
    case GW_ROUTE_COMPLETIONS:
        o = envelope(c, "text_completion", cmpl_choice(c, final));
        break;
    case GW_ROUTE_CHAT:
        o = envelope(c, "chat.completion.chunk", chat_choice(c, final ? 2 : 1));
        break;
    case GW_ROUTE_GENERATE:
        o = json_object();
        if (o && (!final || c->text_len > 0) && put(o, "text", jtext(c->text, c->text_len))) {
            json_decref(o);
            o = NULL;
        }
        if (o && final && put_finish(o, c)) {
            json_decref(o);
            o = NULL;
        }
        break;
    default:
        return -EINVAL;
    }
    int with = final && !(c->include_usage && route != GW_ROUTE_GENERATE);
    if (with ? with_usage(o, c) : route != GW_ROUTE_GENERATE && usage_null(o, c)) {
        json_decref(o);
        return -ENOMEM;
    }
    return emit(o, "data: ", "\n\n", out, len);
}

int gw_sse_usage(enum gw_route route, const struct gw_completion *c, char **out, size_t *len)
{
    int rc = bad_args(c, out);
    if (rc)
        return rc;
    if (route != GW_ROUTE_COMPLETIONS && route != GW_ROUTE_CHAT)
        return -EINVAL;
    json_t *o = json_object(), *choices = json_array();
    rc = !o || !choices;
    if (!rc) {
        rc |= put(o, "id", jstr_or_null(c->id));
        rc |=
            put(o, "object",
                json_string(route == GW_ROUTE_CHAT ? "chat.completion.chunk" : "text_completion"));
        rc |= put(o, "created", json_integer((json_int_t)c->created_s));
        rc |= put(o, "model", jstr_or_null(c->model));
        rc |= put(o, "choices", choices);
        choices = NULL;
        rc |= with_usage(o, c);
    }
    json_decref(choices);
    if (rc) {
        json_decref(o);
        return -ENOMEM;
    }
    return emit(o, "data: ", "\n\n", out, len);
}

int gw_openai_models_body(const char *id, uint64_t created_s, const char *owned_by, int list,
                          char **out, size_t *len)
{
    if (!id || !out || created_s > INT64_MAX)
        return -EINVAL;
    json_t *m = json_object();
    int rc = !m;
    if (!rc) {
        rc |= put(m, "id", jtext(id, strlen(id)));
        rc |= put(m, "object", json_string("model"));
        rc |= put(m, "created", json_integer((json_int_t)created_s));
        rc |= put(m, "owned_by", jstr_or_null(owned_by));
    }
    if (rc) {
        json_decref(m);
        return -ENOMEM;
    }
    if (!list)
        return emit(m, "", "", out, len);
    json_t *o = json_object(), *data = json_array();
    rc = !o || !data;
    if (!rc) {
        rc |= put(o, "object", json_string("list"));
        rc |= json_array_append(data, m);
        rc |= put(o, "data", data);
        data = NULL;
    }
    json_decref(m);
    json_decref(data);
    if (rc) {
        json_decref(o);
        return -ENOMEM;
    }
    return emit(o, "", "", out, len);
}

const char *gw_sse_done(void)
{
    return "data: [DONE]\n\n";
}

int gw_error_body(const char *message, const char *type, const char *code, const char *param,
                  char **out, size_t *len)
{
    if (!out)
        return -EINVAL;
    json_t *o = json_object(), *e = json_object();
    int rc = !o || !e;
    if (!rc) {
        rc |= put(e, "message", jtext(message ? message : "", message ? strlen(message) : 0));
        rc |= put(e, "type", jstr_or_null(type));
        rc |= put(e, "param", param && *param ? jtext(param, strlen(param)) : json_null());
        rc |= put(e, "code", jstr_or_null(code));
        rc |= put(o, "error", e);
        e = NULL;
    }
    json_decref(e);
    if (rc) {
        json_decref(o);
        return -ENOMEM;
    }
    return emit(o, "", "", out, len);
}
