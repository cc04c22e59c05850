/* http.c - the front's HTTP/1.1 connections: libuv streams, http-parser,
 * the limits that keep a slow or hostile client cheap (header bytes, body
 * bytes, time to send headers and body, idle keep-alive), and response
 * writing. What a request means is front.c's business: this file hands it a
 * complete request and offers ways to answer.
 *
 * One request at a time per connection: a pipelined request waits, its
 * bytes kept, until the previous response is complete.
 */
#include "front_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* ------------------------------------------------------------ writing */

struct wreq {
    uv_write_t w;
    uv_buf_t buf;
    char *base; /* what to free: buf may start inside it */
};

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct conn *c = w->handle->data;
    (void)status;
    free(r->base);
    free(r);
    c->writes_pending--;
    /* close once the response is complete and fully written (a stream in
     * progress is still busy) */
    if (c->close_after_write && c->writes_pending == 0 && !c->busy)
        gw__conn_close(c);
}

/* Sends `len` bytes taken over from `data` (malloc'd; freed here): written
 * at once when the socket takes them (the usual case, no epoll change),
 * the rest queued. */
static void write_owned(struct conn *c, char *data, size_t len)
{
    if (c->closing || len == 0) {
        free(data);
        return;
    }
    size_t done = 0;
    if (c->writes_pending == 0) { /* nothing queued ahead of it: try now */
        uv_buf_t b = uv_buf_init(data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n > 0)
            done = (size_t)n;
        else if (n != UV_EAGAIN) {
            free(data);
            gw__conn_close(c);
            return;
        }
        if (done == len) {
            free(data);
            if (c->close_after_write && !c->busy)
                gw__conn_close(c);
            return;
        }
    }
    struct wreq *r = malloc(sizeof(*r));
    if (!r) {
        free(data);
        gw__conn_close(c);
        return;
    }
    r->buf = uv_buf_init(data + done, (unsigned)(len - done));
    r->base = data;
    c->writes_pending++;
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &r->buf, 1, on_written) != 0) {
        c->writes_pending--;
        free(data);
        free(r);
        gw__conn_close(c);
    }
}

void gw__conn_write(struct conn *c, const char *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        gw__conn_close(c);
        return;
    }
    memcpy(copy, data, len);
    write_owned(c, copy, len);
}

/* Status line and headers into buf; `extra` is "" or lines each ending in
 * \r\n. Returns the length. */
static size_t format_head(struct conn *c, char *buf, size_t cap, int status, const char *ctype,
                          long long length, const char *extra)
{
    int n = snprintf(buf, cap, "HTTP/1.1 %d %s\r\nServer: gpuwarden\r\nContent-Type: %s\r\n%s%s%s",
                     status, status_text(status), ctype, extra,
                     c->keep_alive && !c->close_after_write ? "" : "Connection: close\r\n",
                     length >= 0 ? "" : "Cache-Control: no-cache\r\n");
    if (n < 0 || (size_t)n >= cap)
        return 0;
    if (length >= 0)
        n += snprintf(buf + n, cap - (size_t)n, "Content-Length: %lld\r\n", length);
    n += snprintf(buf + n, cap - (size_t)n, "\r\n");
    return (size_t)n < cap ? (size_t)n : 0;
}

/* One access-log line per finished response (log.access): time, request
 * id, tenant, the end user (the body's `user`), ip, route, status, tokens,
 * device ms, duration ms, the API key's id. */
static void access_log(struct conn *c, int status)
{
    const struct front *f = c->front;
    if (!f->cfg->log_access)
        return;
    static const char *const routes[] = {"-",       "generate", "completions", "chat",
                                         "healthz", "readyz",   "metrics",     "models"};
    char who[32], ts[40];
    snprintf(who, sizeof(who), "front %d", f->index);
    uint64_t now = gw_now_us();
    time_t s = (time_t)(now / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03uZ", (unsigned)(now / 1000 % 1000));
    uint64_t dur = c->start_ns ? gw_mono_ns() - c->start_ns : 0;
    struct gw_log_field fl[] = {
        {.key = "time", .str = ts},
        {.key = "id", .str = c->acc_id[0] ? c->acc_id : "-"},
        {.key = "tenant", .str = c->acc_tenant[0] ? c->acc_tenant : "-"},
        {.key = "user", .str = c->acc_user[0] ? c->acc_user : "-"},
        {.key = "ip", .str = c->ip[0] ? c->ip : "-"},
        {.key = "route",
         .str = c->route >= 0 && c->route <= GW_ROUTE_MODELS ? routes[c->route] : "-"},
        {.key = "status", .num = status},
        {.key = "tokens", .num = (int64_t)c->acc_tokens},
        {.key = "device_ms", .real = (double)c->acc_device_ns / 1e6, .is_real = 1},
        {.key = "duration_ms", .real = (double)dur / 1e6, .is_real = 1},
        {.key = "apikey", .str = c->acc_key[0] ? c->acc_key : "-"}, /* the id, never the key */
    };
    /* JSON lines carry their own "time" */
    int json = f->cfg->log_format == GW_LOG_JSON;
    gw_logf(GW_LOG_INFO, who, fl + json, (int)(sizeof(fl) / sizeof(fl[0])) - json, "access");
}

void gw__conn_respond(struct conn *c, int status, const char *ctype, const char *body, size_t len,
                      const char *extra)
{
    if (c->closing)
        return;
    if (!c->keep_alive)
        c->close_after_write = 1;
    /* head and body in one buffer: one write(2) per response */
    size_t cap = 2048 + (c->head_only ? 0 : len);
    char *buf = malloc(cap);
    size_t hl =
        buf ? format_head(c, buf, 2048, status, ctype, (long long)len, extra ? extra : "") : 0;
    if (!hl) {
        free(buf);
        gw__conn_close(c);
        return;
    }
    if (!c->head_only)
        memcpy(buf + hl, body, len);
    write_owned(c, buf, hl + (c->head_only ? 0 : len));
    gw_metrics_request(&c->front->seg, c->route, status);
    access_log(c, status);
    gw__conn_request_done(c);
}

/* Error bodies without a param repeat (a flood gets the same 429 or 401 a
 * million times): the last few are kept, keyed by their text, so a refusal
 * costs a few string compares instead of building JSON. Per process, one
 * thread: no locking. */
#define BODY_CACHE 16
static struct cached_body {
    char key[320]; /* type NUL code NUL message */
    size_t key_len;
    char *body;
    size_t len;
} body_cache[BODY_CACHE];
static unsigned body_cache_next;

static const struct cached_body *error_body_cached(const char *type, const char *code,
                                                   const char *message)
{
    char key[320];
    int n = snprintf(key, sizeof(key), "%s%c%s%c%s", type, 0, code, 0, message);
    if (n < 0 || (size_t)n >= sizeof(key))
        return NULL;
    for (unsigned i = 0; i < BODY_CACHE; i++)
        if (body_cache[i].body && body_cache[i].key_len == (size_t)n &&
            memcmp(body_cache[i].key, key, (size_t)n) == 0)
            return &body_cache[i];
    struct cached_body *e = &body_cache[body_cache_next++ % BODY_CACHE];
    free(e->body);
    e->body = NULL;
    if (gw_error_body(message, type, code, NULL, &e->body, &e->len) != 0)
        return NULL;
    memcpy(e->key, key, (size_t)n);
    e->key_len = (size_t)n;
    return e;
}

void gw__conn_error(struct conn *c, int status, const char *type, const char *code,
                    const char *message, const char *param, const char *extra)
{
    if (status == 400 || status == 408 || status == 413 || status == 431)
        c->close_after_write = 1; /* the byte stream may be out of step: do not reuse it */
    if (!param || !param[0]) {
        const struct cached_body *b = error_body_cached(type, code, message);
        if (b) {
            gw__conn_respond(c, status, "application/json", b->body, b->len, extra);
            return;
        }
    }
    char *body;
    size_t len;
    if (gw_error_body(message, type, code, param, &body, &len) != 0) {
        gw__conn_close(c);
        return;
    }
    gw__conn_respond(c, status, "application/json", body, len, extra);
    free(body);
}

void gw__conn_stream_begin(struct conn *c, const char *extra)
{
    c->close_after_write = 1; /* an event stream ends with the connection */
    c->streaming = 1;
    char head[2048];
    size_t hl =
        format_head(c, head, sizeof(head), 200, "text/event-stream", -1, extra ? extra : "");
    if (hl)
        gw__conn_write(c, head, hl);
    gw_metrics_request(&c->front->seg, c->route, 200);
}

void gw__conn_stream_end(struct conn *c)
{
    c->streaming = 0;
    access_log(c, 200); /* the stream began with 200 (counted then) */
    gw__conn_request_done(c);
}

/* ------------------------------------------------------------ parsing */

static int header_budget(struct conn *c, size_t more)
{
    c->header_bytes += more;
    return c->header_bytes > c->front->cfg->header_bytes;
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->url_len = c->authz_len = c->body_len = 0;
    c->url[0] = c->authz[0] = '\0'; /* NUL after len, as on_url and on_header_value keep it */
    c->xff_len = c->fwd_len = 0;
    c->has_xff = c->has_fwd = c->xff_long = c->fwd_long = 0;
    c->header_bytes = 0;
    c->field = HF_OTHER;
    c->in_value = 0;
    c->got_headers = c->got_message = 0;
    c->too_large = 0;
    c->route = 0;
    c->acc_id[0] = c->acc_tenant[0] = c->acc_user[0] = c->acc_key[0] = '\0';
    c->acc_tokens = c->acc_device_ns = 0;
    if (!c->start_ns)
        c->start_ns = gw_mono_ns();
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (header_budget(c, len) || c->url_len + len >= sizeof(c->url)) {
        c->too_large = 431;
        return -1;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (header_budget(c, len)) {
        c->too_large = 431;
        return -1;
    }
    if (c->in_value || c->field_len == 0) { /* a new field begins */
        c->in_value = 0;
        c->field_len = 0;
    }
    size_t room = sizeof(c->field_name) - 1 - c->field_len;
    size_t n = len < room ? len : room;
    memcpy(c->field_name + c->field_len, at, n);
    c->field_len += n;
    c->field_name[c->field_len] = '\0';
    return 0;
}

/* A new line of X-Forwarded-For or Forwarded: joined to the ones before
 * with ", ", as one list (RFC 9110, 5.3). */
static void fwd_line_begins(struct conn *c)
{
    int x = c->field == HF_XFF;
    uint8_t *has = x ? &c->has_xff : &c->has_fwd;
    if (*has) {
        static const char sep[] = ", ";
        size_t *n = x ? &c->xff_len : &c->fwd_len;
        char *buf = x ? c->xff : c->fwd;
        if (*n + 2 > FWD_HDR_MAX)
            *(x ? &c->xff_long : &c->fwd_long) = 1;
        else {
            memcpy(buf + *n, sep, 2);
            *n += 2;
        }
    }
    *has = 1;
}

static void fwd_append(struct conn *c, const char *at, size_t len)
{
    int x = c->field == HF_XFF;
    size_t *n = x ? &c->xff_len : &c->fwd_len;
    if (*n + len > FWD_HDR_MAX) {
        *(x ? &c->xff_long : &c->fwd_long) = 1;
        return;
    }
    memcpy((x ? c->xff : c->fwd) + *n, at, len);
    *n += len;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (header_budget(c, len)) {
        c->too_large = 431;
        return -1;
    }
    if (!c->in_value) {
        c->in_value = 1;
        c->field = strcasecmp(c->field_name, "authorization") == 0     ? HF_AUTHZ
                   : strcasecmp(c->field_name, "x-forwarded-for") == 0 ? HF_XFF
                   : strcasecmp(c->field_name, "forwarded") == 0       ? HF_FWD
                                                                       : HF_OTHER;
        if (c->field == HF_AUTHZ)
            c->authz_len = 0;
        else if (c->field == HF_XFF || c->field == HF_FWD)
            fwd_line_begins(c);
        c->field_len = 0;
    }
    if (c->field == HF_XFF || c->field == HF_FWD) {
        fwd_append(c, at, len);
        return 0;
    }
    if (c->field == HF_AUTHZ) {
        if (c->authz_len + len >= sizeof(c->authz)) {
            c->too_large = 431;
            return -1;
        }
        memcpy(c->authz + c->authz_len, at, len);
        c->authz_len += len;
        c->authz[c->authz_len] = '\0';
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->got_headers = 1;
    c->keep_alive = http_should_keep_alive(p) && !c->front->draining;
    c->head_only = p->method == HTTP_HEAD;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->front->cfg->body_bytes) {
        c->too_large = 413;
        return -1;
    }
    /* headers are in: the body gets its own clock */
    uv_timer_start(&c->timer, gw__conn_on_timeout, c->front->cfg->body_timeout_ms, 0);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->body_len + len > c->front->cfg->body_bytes) {
        c->too_large = 413;
        return -1;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len)
            cap *= 2;
        char *nb = realloc(c->body, cap);
        if (!nb)
            return -1;
        c->body = nb;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->got_message = 1;
    c->method = p->method;
    http_parser_pause(p, 1); /* one request at a time */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int gw__conn_parse(struct conn *c, const char *data, size_t len, size_t *used)
{
    /* got_message says "this call completed a request". A stale 1 from the
     * previous request, with bytes that fail before on_message_begin (a bad
     * method after a keep-alive request), would unpause a parser in error
     * state: http-parser asserts, and the front dies. */
    c->got_message = 0;
    *used = http_parser_execute(&c->parser, &settings, data, len);
    if (c->got_message) {
        http_parser_pause(&c->parser, 0);
        return 1;
    }
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_OK)
        return 0;
    return c->too_large == 413 || c->too_large == 431 ? c->too_large : 400;
}

/* Feeds bytes to the parser; on a complete request hands it to front.c
 * and keeps what follows for later. */
static void feed(struct conn *c, const char *data, size_t len)
{
    if (c->busy) { /* keep pipelined bytes until the current response is out */
        if (c->pending_len + len > c->front->cfg->body_bytes + c->front->cfg->header_bytes) {
            gw__conn_close(c);
            return;
        }
        char *np = realloc(c->pending, c->pending_len + len);
        if (!np) {
            gw__conn_close(c);
            return;
        }
        memcpy(np + c->pending_len, data, len);
        c->pending = np;
        c->pending_len += len;
        return;
    }
    if (c->idle) { /* first byte of a request starts the header clock */
        c->idle = 0;
        uv_timer_start(&c->timer, gw__conn_on_timeout, c->front->cfg->header_timeout_ms, 0);
    }
    size_t used;
    int st = gw__conn_parse(c, data, len, &used);
    if (st == 1) {
        c->busy = 1;
        uv_timer_stop(&c->timer);
        if (used < len) {
            c->pending = malloc(len - used);
            if (c->pending) {
                memcpy(c->pending, data + used, len - used);
                c->pending_len = len - used;
            }
        }
        gw__front_request(c);
        return;
    }
    if (st != 0) {
        c->busy = 1;
        uv_timer_stop(&c->timer);
        if (st == 413)
            gw__conn_error(c, 413, "invalid_request_error", "body_too_large",
                           "body: larger than the limit of this server", NULL, NULL);
        else if (st == 431)
            gw__conn_error(c, 431, "invalid_request_error", "headers_too_large",
                           "headers: larger than the limit of this server", NULL, NULL);
        else {
            char msg[200];
            snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
                     http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
            gw__conn_error(c, 400, "invalid_request_error", "malformed_request", msg, NULL, NULL);
        }
    }
}

void gw__conn_request_done(struct conn *c)
{
    c->busy = 0;
    c->start_ns = 0; /* the next request's clock starts at its first byte */
    c->idle = 1;
    if (c->close_after_write) {
        if (c->writes_pending == 0)
            gw__conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, gw__conn_on_timeout, c->front->cfg->keepalive_ms, 0);
    if (c->pending_len) {
        char *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        feed(c, p, n);
        free(p);
    }
}

void gw__conn_on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->idle || c->busy) { /* idle keep-alive, or a response in progress */
        if (!c->busy)
            gw__conn_close(c);
        return;
    }
    c->busy = 1;
    gw__conn_error(c, 408, "invalid_request_error", "request_timeout",
                   c->got_headers ? "body: not received in time" : "headers: not received in time",
                   NULL, NULL);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    buf->base = c->rbuf;
    buf->len = sizeof(c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n < 0) {
        gw__conn_close(c);
        return;
    }
    if (n <= 0)
        return;
    const char *data = buf->base;
    size_t len = (size_t)n, used;
    if (c->proxy_buf) { /* a PROXY header comes first (front_addr.c) */
        if (gw__conn_proxy(c, data, len, &used) != 1)
            return;
        data += used;
        len -= used;
    }
    if (len)
        feed(c, data, len);
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    free(c->body);
    free(c->pending);
    free(c->proxy_buf);
    free(c);
}

void gw__conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    struct front *f = c->front;
    f->n_conns--;
    gw__front_conn_uncount(f, c);
    gw__front_conn_gone(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void gw__front_on_connection(uv_stream_t *server, int status)
{
    struct front *f = server->data;
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->front = f;
    uv_tcp_init(f->loop, &c->tcp);
    uv_timer_init(f->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    f->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || f->draining ||
        f->n_conns > f->cfg->connections_per_front) {
        gw__conn_close(c); /* over the limit: closed at once, costs nothing */
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    c->ip[0] = '\0';
    memset(&c->peer, 0, sizeof(c->peer));
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) { /* kept IPv4-mapped (gw_addr) */
            c->peer.b[10] = c->peer.b[11] = 0xff;
            memcpy(c->peer.b + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        } else if (ss.ss_family == AF_INET6) {
            memcpy(c->peer.b, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        }
        gw_addr_format(&c->peer, c->ip);
    }
    if (gw__front_conn_count(f, c) != 0) {
        gw__conn_close(c); /* at ip.connections_per_address: closed at once, costs nothing */
        return;
    }
    c->metrics_conn = f->has_metrics && (uv_tcp_t *)server == &f->metrics_listener;
    int li = c->metrics_conn ? -1 : (int)((uv_tcp_t *)server - f->listeners);
    if (li >= 0 && li < f->n_listeners && f->listener_proxy[li] &&
        !(c->proxy_buf = malloc(GW_PROXY_V2_MAX))) {
        gw__conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->idle = 1;
    uv_timer_start(&c->timer, gw__conn_on_timeout, f->cfg->header_timeout_ms, 0);
    c->idle = 0; /* the header clock runs from accept for the first request */
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}
