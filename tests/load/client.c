/* client.c - the run: arrival schedules, connections, HTTP/1.1 requests and
 * responses (whole or server-sent events), and what each request measured.
 *
 * One libuv loop drives every class. Open loop: each class has a schedule
 * of intended send times (constant or Poisson gaps at its rate); a timer
 * issues every request that is due, on an idle keep-alive connection from
 * the request's source address, a new connection bound to that address, or
 * the class's backlog when it already has `connections` open. Latency is
 * measured from the intended time, so time spent waiting for a connection
 * counts. Closed loop: `connections` clients each send the next request as
 * soon as the previous one ends; latency from the actual send.
 *
 * A 10 ms tick trickles the bytes of slow clients and expires requests past
 * their timeout. Scheduling stops at the run's duration or request cap;
 * in-flight requests then get drain_s, and what is left counts as
 * unfinished. */
#include "load.h"

#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "gw_common.h"

struct run;
struct conn;
struct rt_class;
static int may_issue(struct run *r);
static void issue(struct rt_class *rc, uint64_t intended_ns);

struct req {
    struct rt_class *rc;
    uint64_t seq;
    uint64_t intended_ns;  /* where the schedule put it (open loop) or its send (closed) */
    uint64_t sent_ns;      /* first byte handed to the socket, 0 before */
    uint64_t first_ns;     /* first response byte */
    uint64_t ttft_ns;      /* first token text (streams) */
    uint64_t last_text_ns; /* the last event with text (streams) */
    uint64_t text_events;  /* events with text (streams) */
    char *data;            /* the whole request */
    size_t len, off;       /* bytes; bytes written so far (trickled requests) */
    size_t head_len;
    int status;
    char *body;
    size_t body_len, body_cap, sse_off;
    int finish; /* enum lt_finish, -1 none */
    uint64_t tokens;
    int retried;
    struct req *next; /* backlog */
};

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct rt_class *rc;
    int source;
    int connected, closing;
    uint64_t served; /* whole responses read on it */
    uint64_t next_trickle_ns;
    struct req *req;
    http_parser parser;
    int message_done, keep_alive;
    struct conn *next_idle;
    struct conn *prev, *next; /* every live connection */
};

struct rt_class {
    struct lt_class *c;
    struct run *run;
    uv_timer_t timer;
    uint64_t start_ns, stop_ns, next_due_ns;
    uint64_t seq;
    char *auth; /* minted once for classes whose token is reused */
    int n_conns;
    int src_rr;
    struct conn *idle[LT_MAX_SOURCES];
    struct req *backlog, *backlog_tail;
    int active, started;
    uint64_t inflight; /* requests issued and not ended (backlog included) */
    uint64_t rng;      /* its arrivals' own stream (class_seed) */
};

struct run {
    uv_loop_t loop;
    struct lt_scenario *sc;
    struct rt_class rc[LT_MAX_CLASSES];
    uint64_t t0_ns, end_ns, hard_end_ns;
    uint64_t total_due;
    int scheduling;
    int hard_stopped;
    uv_timer_t tick, progress;
    int progress_on;
    struct conn *conns;
    http_parser_settings settings;
};

static uint64_t rnd(struct rt_class *rc)
{ /* xorshift64*: reproducible arrivals for a given scenario seed */
    rc->rng ^= rc->rng >> 12;
    rc->rng ^= rc->rng << 25;
    rc->rng ^= rc->rng >> 27;
    return rc->rng * 2685821657736338717ull;
}

static uint64_t mix64(uint64_t x);

/* A class's arrival stream: from the scenario's seed and the class's
 * name (FNV-1a), not its place in the file or the other classes' draws,
 * so a scenario with classes taken out (a control run without the
 * attack) gives the classes left the same arrivals. Never 0. Prompts are
 * still picked by the class's index (build_body): a control keeps the
 * same prompts only for the classes before the first one taken out, as
 * isolation.json's legitimate classes are. */
static uint64_t class_seed(const struct lt_scenario *sc, const struct lt_class *c)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = c->name; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    uint64_t s = (sc->seed * 0x9E3779B97F4A7C15ull + 1) ^ mix64(h);
    return s ? s : 1;
}

static uint64_t gap_ns(struct rt_class *rc)
{
    double mean = 1e9 / rc->c->rate;
    if (!rc->c->poisson)
        return (uint64_t)mean;
    double u = ((double)(rnd(rc) >> 11) + 1.0) / 9007199254740993.0; /* (0,1] */
    return (uint64_t)(-log(u) * mean);
}

/* ------------------------------------------------------------ accounting */

static void count_code(struct lt_class *c, const char *code)
{
    for (int i = 0; i < c->n_codes; i++)
        if (strcmp(c->codes[i].code, code) == 0) {
            c->codes[i].n++;
            return;
        }
    if (c->n_codes < LT_MAX_CODES) {
        snprintf(c->codes[c->n_codes].code, sizeof(c->codes[0].code), "%s", code);
        c->codes[c->n_codes++].n = 1;
    }
}

static int finish_of(const char *s)
{
    static const char *const names[] = {"stop", "length", "budget", "killed", "cancelled"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return LT_F_OTHER;
}

/* finish_reason and usage from a response object or stream event, and
 * whether it carried text. */
static void read_result(struct req *q, json_t *o, int *has_text)
{
    json_t *choice = json_array_get(json_object_get(o, "choices"), 0);
    json_t *src = choice ? choice : o;
    json_t *text = json_object_get(src, "text");
    if (!text && choice)
        text = json_object_get(json_object_get(choice, "delta"), "content");
    if (!text && choice)
        text = json_object_get(json_object_get(choice, "message"), "content");
    if (has_text)
        *has_text = json_is_string(text) && json_string_length(text) > 0;
    json_t *fr = json_object_get(src, "finish_reason");
    if (json_is_string(fr))
        q->finish = finish_of(json_string_value(fr));
    json_t *ct = json_object_get(json_object_get(o, "usage"), "completion_tokens");
    if (json_is_integer(ct))
        q->tokens = (uint64_t)json_integer_value(ct);
}

static void req_free(struct req *q)
{
    free(q->data);
    free(q->body);
    free(q);
}

/* --timeline: intended send time (s from the run's start), class, outcome,
 * HTTP status (0 none), TTFT (200s; empty otherwise) and total latency in
 * ms, both from the same base as the report's (intended time in open loop),
 * and whether any byte of it was sent (1/0). */
static void timeline_line(const struct req *q, int outcome, uint64_t base, uint64_t now)
{
    const struct rt_class *rc = q->rc;
    char ttft[32] = "";
    if (outcome == LT_O_200 || outcome == LT_O_DISCONNECT) {
        uint64_t first = q->ttft_ns ? q->ttft_ns : (rc->c->stream ? now : q->first_ns);
        if (!first)
            first = now;
        snprintf(ttft, sizeof(ttft), "%.3f", (double)(first - base) / 1e6);
    }
    fprintf(rc->run->sc->timeline, "%.6f,%s,%s,%d,%s,%.3f,%d\n",
            (double)((int64_t)q->intended_ns - (int64_t)rc->run->t0_ns) / 1e9, rc->c->name,
            lt_outcome_name(outcome), q->status, ttft, (double)(now - base) / 1e6, q->sent_ns != 0);
}

/* Records the request's outcome in its class and frees it. */
static void req_end(struct req *q, int outcome)
{
    struct rt_class *rc = q->rc;
    struct lt_class *c = rc->c;
    uint64_t now = uv_hrtime();
    uint64_t base = c->closed && q->sent_ns ? q->sent_ns : q->intended_ns;
    c->outcome[outcome]++;
    if (q->sent_ns) { /* the class's span: its first send to its last end */
        if (!c->first_send_ns || q->sent_ns < c->first_send_ns)
            c->first_send_ns = q->sent_ns;
        c->last_end_ns = now;
    }
    if (outcome == LT_O_200 || outcome == LT_O_DISCONNECT) {
        uint64_t first = q->ttft_ns ? q->ttft_ns : (c->stream ? now : q->first_ns);
        if (!first)
            first = now;
        lt_samples_add(&c->ttft_ok, (first - base) / 1000);
        if (outcome == LT_O_200) {
            lt_samples_add(&c->total_ok, (now - base) / 1000);
            if (q->finish >= 0)
                c->finish[q->finish]++;
            c->completion_tokens += q->tokens;
            /* the tokens the usage counts, else one per event with text */
            uint64_t n = q->tokens ? q->tokens : q->text_events;
            if (c->stream && n >= 2 && q->ttft_ns)
                lt_samples_add(&c->tpot_ok, lt_tpot_us(q->ttft_ns, q->last_text_ns, n));
        }
    } else if (outcome >= LT_O_401 && outcome <= LT_O_OTHER) {
        lt_samples_add(&c->total_refused, (now - base) / 1000);
        json_t *o = json_loadb(q->body ? q->body : "", q->body_len, 0, NULL);
        json_t *code = json_object_get(json_object_get(o, "error"), "code");
        count_code(c, json_is_string(code) ? json_string_value(code) : "(no error.code)");
        if (json_is_string(code) && strcmp(json_string_value(code), "prompt_farming") == 0 &&
            (!c->farming_first || q->seq + 1 < c->farming_first))
            c->farming_first = q->seq + 1;
        json_decref(o);
    }
    if (rc->run->sc->timeline)
        timeline_line(q, outcome, base, now);
    rc->inflight--;
    req_free(q);
    if (c->closed && rc->active && may_issue(rc->run))
        issue(rc, now); /* closed loop: this client sends its next request */
}

static int outcome_of_status(int st)
{
    switch (st) {
    case 200:
        return LT_O_200;
    case 401:
        return LT_O_401;
    case 408:
        return LT_O_408;
    case 429:
        return LT_O_429;
    case 503:
        return LT_O_503;
    default:
        return LT_O_OTHER;
    }
}

/* ------------------------------------------------------------ requests */

/* splitmix64: the composed prompts' picks, a pure function of its input
 * so a scenario's prompts are the same in every run. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Request seq's prompt into buf: the class's prompt set in turn, or one
 * string of each "compose" set picked by (seed, class, seq). */
static const char *prompt_of(const struct lt_class *c, uint64_t seed, uint64_t seq, char *buf,
                             size_t len)
{
    if (!c->n_compose)
        return c->prompts[seq % (uint64_t)c->n_prompts];
    size_t at = 0;
    buf[0] = '\0';
    uint64_t h = mix64(seed ^ mix64(seq));
    for (int k = 0; k < c->n_compose; k++) {
        h = mix64(h + (uint64_t)k);
        const char *s = c->compose[k][h % (uint64_t)c->compose_n[k]];
        int n = snprintf(buf + at, len - at, "%s%s", at ? " " : "", s);
        if (n < 0 || (size_t)n >= len - at)
            break;
        at += (size_t)n;
    }
    return buf;
}

static char *build_body(struct rt_class *rc, uint64_t seq, size_t *len)
{
    struct lt_class *c = rc->c;
    struct lt_scenario *sc = rc->run->sc;
    char composed[4096];
    uint64_t seed = sc->seed ^ mix64((uint64_t)(c - sc->classes));
    const char *prompt = prompt_of(c, seed, seq, composed, sizeof(composed));
    json_t *o = json_object();
    if (strcmp(c->route, "/v1/generate") != 0)
        json_object_set_new(o, "model", json_string(sc->model));
    if (strcmp(c->route, "/v1/chat/completions") == 0) {
        /* a conversation: `turns` earlier questions of the class (their
         * own prompts) with short answers, then this one */
        json_t *m = json_array();
        for (int t = c->turns; t > 0; t--) {
            char earlier[4096];
            const char *q =
                prompt_of(c, seed, seq + 1000003ull * (uint64_t)t, earlier, sizeof(earlier));
            json_array_append_new(m, json_pack("{s:s,s:s}", "role", "user", "content", q));
            json_array_append_new(
                m, json_pack("{s:s,s:s}", "role", "assistant", "content", "Sure, here it is."));
        }
        json_array_append_new(m, json_pack("{s:s,s:s}", "role", "user", "content", prompt));
        json_object_set_new(o, "messages", m);
    } else {
        json_object_set_new(o, "prompt", json_string(prompt));
    }
    if (c->max_tokens > 0)
        json_object_set_new(o, "max_tokens", json_integer(c->max_tokens));
    json_object_set_new(o, "temperature", json_real(0));
    if (c->stream) { /* the usage, for the tokens a stream generated (tok/s, TPOT) */
        json_object_set_new(o, "stream", json_true());
        json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    *len = s ? strlen(s) : 0;
    return s;
}

static struct req *req_new(struct rt_class *rc, uint64_t intended_ns)
{
    struct lt_class *c = rc->c;
    struct req *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->rc = rc;
    q->seq = rc->seq++;
    q->intended_ns = intended_ns;
    q->finish = -1;
    char *auth = NULL;
    if (rc->auth)
        auth = rc->auth;
    else if (lt_token_for(rc->run->sc, c, q->seq, gw_now_us() / 1000000, &auth) != 0)
        auth = NULL;
    size_t blen = 0;
    char *body = build_body(rc, q->seq, &blen);
    int close = !c->keepalive || c->behaviour >= LT_SLOW_HEADERS;
    size_t cap = blen + (auth ? strlen(auth) : 0) + 512;
    q->data = malloc(cap);
    if (!q->data || !body) {
        free(body);
        if (auth != rc->auth)
            free(auth);
        req_free(q);
        return NULL;
    }
    int n = snprintf(q->data, cap,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gpuwarden-load\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s%s\r\n",
                     c->route, rc->run->sc->target, blen, auth ? "Authorization: " : "",
                     auth ? auth : "", auth ? "\r\n" : "", close ? "Connection: close\r\n" : "");
    q->head_len = (size_t)n;
    memcpy(q->data + n, body, blen);
    q->len = (size_t)n + blen;
    free(body);
    if (auth != rc->auth)
        free(auth);
    rc->inflight++;
    if (rc->inflight > rc->c->peak_inflight)
        rc->c->peak_inflight = rc->inflight;
    return q;
}

/* ------------------------------------------------------------ connections */

static void conn_start(struct conn *k);
static void dispatch(struct rt_class *rc, struct req *q);

static void on_closed(uv_handle_t *h)
{
    struct conn *k = h->data;
    free(k);
}

static void conn_unidle(struct conn *k)
{
    struct rt_class *rc = k->rc;
    for (struct conn **p = &rc->idle[k->source]; *p; p = &(*p)->next_idle)
        if (*p == k) {
            *p = k->next_idle;
            break;
        }
    k->next_idle = NULL;
}

/* Closes the connection; its request (if any) must have been ended or
 * handed on. A slot freed in the class lets the backlog move. */
static void conn_close(struct conn *k)
{
    if (k->closing)
        return;
    k->closing = 1;
    conn_unidle(k);
    struct run *r = k->rc->run;
    if (k->prev)
        k->prev->next = k->next;
    else
        r->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->rc->n_conns--;
    uv_close((uv_handle_t *)&k->tcp, on_closed);
    struct rt_class *rc = k->rc;
    if (rc->backlog && !r->hard_stopped) {
        struct req *q = rc->backlog;
        rc->backlog = q->next;
        if (!rc->backlog)
            rc->backlog_tail = NULL;
        q->next = NULL;
        dispatch(rc, q);
    }
}

/* The request on k failed at the transport: retry once on a fresh
 * connection when a reused keep-alive connection was closed under it
 * before any response (the server's idle timeout), else a conn error. */
static void conn_fail(struct conn *k)
{
    struct req *q = k->req;
    k->req = NULL;
    if (q) {
        if (k->served > 0 && !q->first_ns && !q->retried) {
            q->retried = 1;
            q->off = 0;
            q->sent_ns = 0;
            conn_close(k);
            dispatch(q->rc, q);
            return;
        }
        req_end(q, LT_O_CONN_ERROR);
    }
    conn_close(k);
}

static void on_written(uv_write_t *w, int status)
{
    struct conn *k = w->data;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !k->closing && k->req)
        conn_fail(k);
}

/* The write owns a copy of its bytes: a request can end (a timeout, an
 * early 401 or 408) while its bytes still wait in the socket's queue. */
static void write_bytes(struct conn *k, const char *p, size_t n)
{
    uv_write_t *w = malloc(sizeof(*w) + n);
    if (!w) {
        conn_fail(k);
        return;
    }
    w->data = k;
    memcpy(w + 1, p, n);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
    if (uv_write(w, (uv_stream_t *)&k->tcp, &b, 1, on_written) != 0) {
        free(w);
        conn_fail(k);
    }
}

/* Sends what the request's behaviour sends now: all of it, or the first
 * trickle (all headers at once for slow_body). */
static void send_req(struct conn *k)
{
    struct req *q = k->req;
    struct lt_class *c = k->rc->c;
    if (!q->sent_ns) {
        q->sent_ns = uv_hrtime();
        if (!c->closed)
            lt_samples_add(&c->send_lag, (q->sent_ns - q->intended_ns) / 1000);
    }
    http_parser_init(&k->parser, HTTP_RESPONSE);
    k->parser.data = k;
    k->message_done = 0;
    size_t n = q->len;
    if (c->behaviour == LT_SLOW_HEADERS)
        n = (size_t)c->trickle_bytes;
    else if (c->behaviour == LT_SLOW_BODY)
        n = q->head_len + (size_t)c->trickle_bytes;
    if (n > q->len)
        n = q->len;
    size_t from = q->off;
    q->off = n;
    k->next_trickle_ns = q->sent_ns + (uint64_t)c->trickle_ms * 1000000ull;
    write_bytes(k, q->data + from, n - from);
}

static void trickle(struct conn *k, uint64_t now)
{
    struct req *q = k->req;
    if (!q || !k->connected || q->off >= q->len || now < k->next_trickle_ns || q->first_ns)
        return;
    size_t n = q->off + (size_t)k->rc->c->trickle_bytes;
    if (n > q->len)
        n = q->len;
    size_t from = q->off;
    q->off = n;
    k->next_trickle_ns = now + (uint64_t)k->rc->c->trickle_ms * 1000000ull;
    write_bytes(k, q->data + from, n - from);
}

/* A whole response was read: account for it, then reuse or close. */
static void conn_message_done(struct conn *k)
{
    struct req *q = k->req;
    k->req = NULL;
    k->served++;
    int keep = k->keep_alive && k->rc->c->keepalive && q->off >= q->len;
    if (q->status == 200 && !q->rc->c->stream) {
        json_t *o = json_loadb(q->body ? q->body : "", q->body_len, 0, NULL);
        if (o)
            read_result(q, o, NULL);
        json_decref(o);
    }
    struct rt_class *rc = k->rc;
    req_end(q, outcome_of_status(q->status));
    if (!keep || rc->run->hard_stopped) {
        conn_close(k);
        return;
    }
    if (rc->backlog) {
        struct req *b = rc->backlog;
        rc->backlog = b->next;
        if (!rc->backlog)
            rc->backlog_tail = NULL;
        b->next = NULL;
        k->req = b;
        send_req(k);
        return;
    }
    k->next_idle = rc->idle[k->source];
    rc->idle[k->source] = k;
}

/* Server-sent events: every complete "data: ..." event in the body so far. */
static int sse_scan(struct conn *k)
{
    struct req *q = k->req;
    for (;;) {
        char *start = q->body + q->sse_off;
        char *end = memmem(start, q->body_len - q->sse_off, "\n\n", 2);
        if (!end)
            return 0;
        q->sse_off = (size_t)(end + 2 - q->body);
        if (strncmp(start, "data: ", 6) != 0 || strncmp(start + 6, "[DONE]", 6) == 0)
            continue;
        json_t *o = json_loadb(start + 6, (size_t)(end - start - 6), 0, NULL);
        int has_text = 0;
        if (o)
            read_result(q, o, &has_text);
        json_decref(o);
        if (!has_text)
            continue;
        q->last_text_ns = uv_hrtime();
        q->text_events++;
        if (!q->ttft_ns) {
            q->ttft_ns = q->last_text_ns;
            if (k->rc->c->behaviour == LT_DISCONNECT) {
                /* Hang up mid-stream: the node must cancel and refund. */
                k->req = NULL;
                req_end(q, LT_O_DISCONNECT);
                conn_close(k);
                return 1;
            }
        }
    }
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *k = p->data;
    struct req *q = k->req;
    if (!q)
        return 1;
    if (q->body_len + len + 1 > q->body_cap) {
        size_t cap = q->body_cap ? q->body_cap : 4096;
        while (cap < q->body_len + len + 1)
            cap *= 2;
        char *b = realloc(q->body, cap);
        if (!b)
            return 1;
        q->body = b;
        q->body_cap = cap;
    }
    memcpy(q->body + q->body_len, at, len);
    q->body_len += len;
    q->body[q->body_len] = '\0';
    if (q->status == 200 && k->rc->c->stream)
        return sse_scan(k);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *k = p->data;
    if (k->req)
        k->req->status = (int)p->status_code;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *k = p->data;
    k->message_done = 1;
    k->keep_alive = http_should_keep_alive(p);
    return 1; /* pause: the caller accounts for it before reading on */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char slab[65536]; /* one loop, one read at a time */
    *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *k = s->data;
    if (k->closing)
        return;
    if (n == UV_EOF && k->req && k->req->first_ns) {
        /* a response delimited by the end of the connection */
        http_parser_execute(&k->parser, &k->rc->run->settings, NULL, 0);
        if (k->message_done && !k->closing) {
            conn_message_done(k);
            if (!k->closing)
                conn_close(k);
            return;
        }
    }
    if (n < 0) {
        if (k->req)
            conn_fail(k);
        else
            conn_close(k);
        return;
    }
    if (n == 0)
        return;
    if (!k->req) { /* bytes nobody asked for: the server is confused or closing */
        conn_close(k);
        return;
    }
    if (!k->req->first_ns)
        k->req->first_ns = uv_hrtime();
    size_t used = http_parser_execute(&k->parser, &k->rc->run->settings, buf->base, (size_t)n);
    if (k->closing)
        return; /* a disconnect behaviour hung up inside on_body */
    if (k->message_done) {
        conn_message_done(k);
        return;
    }
    if (used != (size_t)n)
        conn_fail(k);
}

static void on_connect(uv_connect_t *cr, int status)
{
    struct conn *k = cr->data;
    if (k->closing)
        return;
    if (status < 0) {
        conn_fail(k);
        return;
    }
    k->connected = 1;
    uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    send_req(k);
}

static void conn_start(struct conn *k)
{
    struct run *r = k->rc->run;
    struct lt_class *c = k->rc->c;
    uv_tcp_init(&r->loop, &k->tcp);
    k->tcp.data = k;
    k->creq.data = k;
    k->next = r->conns;
    if (r->conns)
        r->conns->prev = k;
    r->conns = k;
    k->rc->n_conns++;
    uv_tcp_nodelay(&k->tcp, 1);
    /* bind() before connect(): the node sees this class's source address. */
    int rc = uv_tcp_bind(&k->tcp, (const struct sockaddr *)&c->sources[k->source], 0);
    if (rc == 0)
        rc = uv_tcp_connect(&k->creq, &k->tcp, (const struct sockaddr *)&r->sc->target_addr,
                            on_connect);
    if (rc != 0)
        conn_fail(k);
}

/* Puts q on a connection: an idle one from its source, a new one, or the
 * backlog when the class has all its connections open. */
static void dispatch(struct rt_class *rc, struct req *q)
{
    struct lt_class *c = rc->c;
    int src = rc->src_rr++ % c->n_sources;
    struct conn *k = rc->idle[src];
    if (k) {
        rc->idle[src] = k->next_idle;
        k->next_idle = NULL;
        k->req = q;
        send_req(k);
        return;
    }
    for (int s = 0; s < c->n_sources && c->behaviour < LT_SLOW_HEADERS; s++) {
        if (rc->idle[s]) { /* any idle one beats a new connection when at the cap */
            if (rc->n_conns < c->connections)
                break;
            k = rc->idle[s];
            rc->idle[s] = k->next_idle;
            k->next_idle = NULL;
            k->req = q;
            send_req(k);
            return;
        }
    }
    if (rc->n_conns >= c->connections) {
        if (rc->backlog_tail)
            rc->backlog_tail->next = q;
        else
            rc->backlog = q;
        rc->backlog_tail = q;
        return;
    }
    k = calloc(1, sizeof(*k));
    if (!k) {
        req_end(q, LT_O_CONN_ERROR);
        return;
    }
    k->rc = rc;
    k->source = src;
    k->req = q;
    conn_start(k);
}

/* ------------------------------------------------------------ schedule */

static int may_issue(struct run *r)
{
    return r->scheduling && r->total_due < r->sc->max_requests;
}

static void issue(struct rt_class *rc, uint64_t intended_ns)
{
    struct req *q = req_new(rc, intended_ns);
    rc->c->due++;
    rc->c->sent++;
    rc->run->total_due++;
    if (!q) {
        rc->c->outcome[LT_O_CONN_ERROR]++;
        return;
    }
    dispatch(rc, q);
}

static void class_stop(struct rt_class *rc)
{
    if (!rc->active)
        return;
    rc->active = 0;
    uint64_t now = uv_hrtime();
    uint64_t end = now < rc->stop_ns ? now : rc->stop_ns;
    rc->c->active_s = end > rc->start_ns ? (double)(end - rc->start_ns) / 1e9 : 0;
    uv_timer_stop(&rc->timer);
}

static void on_arrival(uv_timer_t *t)
{
    struct rt_class *rc = t->data;
    struct run *r = rc->run;
    uint64_t now = uv_hrtime();
    if (!rc->started) {
        rc->started = 1;
        rc->active = 1;
        rc->start_ns = now;
        /* A Poisson stream's first arrival comes one exponential gap after
         * the class starts, as each later one after the one before (the
         * wait from any instant to the next arrival is exponential): sent
         * at the start itself, every class that starts at the same second
         * would send in the same millisecond, a legitimate client's first
         * request always in the middle of an attack's first wave. A
         * constant stream sends at its start. */
        rc->next_due_ns = now + (rc->c->poisson ? gap_ns(rc) : 0);
        if (rc->c->closed) {
            for (int i = 0; i < rc->c->connections && may_issue(r); i++)
                issue(rc, now);
            uv_timer_start(&rc->timer, on_arrival, 100, 100); /* only to notice the stop */
            return;
        }
    }
    if (rc->c->closed) {
        if (now >= rc->stop_ns || !may_issue(r))
            class_stop(rc);
        return;
    }
    while (rc->next_due_ns <= now) {
        if (rc->next_due_ns >= rc->stop_ns || !may_issue(r)) {
            class_stop(rc);
            return;
        }
        issue(rc, rc->next_due_ns);
        rc->next_due_ns += gap_ns(rc);
    }
    uint64_t wait_ms = (rc->next_due_ns - now + 999999) / 1000000;
    uv_timer_start(&rc->timer, on_arrival, wait_ms, 0);
}

/* ------------------------------------------------------------ the run */

static uint64_t inflight(struct run *r)
{
    uint64_t n = 0;
    for (int i = 0; i < r->sc->n_classes; i++)
        n += r->rc[i].inflight;
    return n;
}

/* Ends everything still in flight as unfinished and closes every handle. */
static void hard_stop(struct run *r)
{
    if (r->hard_stopped)
        return;
    r->hard_stopped = 1;
    for (int i = 0; i < r->sc->n_classes; i++) {
        struct rt_class *rc = &r->rc[i];
        class_stop(rc);
        while (rc->backlog) {
            struct req *q = rc->backlog;
            rc->backlog = q->next;
            req_end(q, LT_O_UNFINISHED);
        }
        rc->backlog_tail = NULL;
        uv_close((uv_handle_t *)&rc->timer, NULL);
    }
    while (r->conns) {
        struct conn *k = r->conns;
        if (k->req) {
            req_end(k->req, LT_O_UNFINISHED);
            k->req = NULL;
        }
        conn_close(k);
    }
    uv_close((uv_handle_t *)&r->tick, NULL);
    if (r->progress_on)
        uv_close((uv_handle_t *)&r->progress, NULL);
}

static void on_tick(uv_timer_t *t)
{
    struct run *r = t->data;
    uint64_t now = uv_hrtime();
    for (struct conn *k = r->conns, *next; k; k = next) {
        next = k->next;
        struct req *q = k->req;
        if (!q)
            continue;
        struct lt_class *c = k->rc->c;
        uint64_t from = c->closed ? (q->sent_ns ? q->sent_ns : now) : q->intended_ns;
        if (now - from > (uint64_t)(c->timeout_s * 1e9)) {
            k->req = NULL;
            /* not a byte sent: the connect is still pending */
            req_end(q, q->sent_ns ? LT_O_TIMEOUT : LT_O_NOT_SENT);
            conn_close(k);
            continue;
        }
        trickle(k, now);
    }
    for (int i = 0; i < r->sc->n_classes; i++) { /* requests that never got a connection */
        struct rt_class *rc = &r->rc[i];
        while (rc->backlog && now - rc->backlog->intended_ns > (uint64_t)(rc->c->timeout_s * 1e9)) {
            struct req *q = rc->backlog;
            rc->backlog = q->next;
            if (!rc->backlog)
                rc->backlog_tail = NULL;
            req_end(q, LT_O_NOT_SENT);
        }
    }
    if (r->scheduling && (now >= r->end_ns || r->total_due >= r->sc->max_requests)) {
        r->scheduling = 0;
        for (int i = 0; i < r->sc->n_classes; i++)
            class_stop(&r->rc[i]);
        if (now < r->end_ns) /* the cap stopped it: drain from now */
            r->hard_end_ns = now + (uint64_t)(r->sc->drain_s * 1e9);
    }
    if (!r->scheduling && (inflight(r) == 0 || now >= r->hard_end_ns))
        hard_stop(r);
}

static void on_progress(uv_timer_t *t)
{
    struct run *r = t->data;
    char line[512];
    int n = snprintf(line, sizeof(line), "\r%6.1fs sent %llu",
                     (double)(uv_hrtime() - r->t0_ns) / 1e9, (unsigned long long)r->total_due);
    for (int i = 0; i < r->sc->n_classes && n < (int)sizeof(line) - 80; i++) {
        struct lt_class *c = r->rc[i].c;
        n += snprintf(line + n, sizeof(line) - (size_t)n, " | %.12s %llu/%llu/%llu/%llu", c->name,
                      (unsigned long long)c->outcome[LT_O_200],
                      (unsigned long long)c->outcome[LT_O_401],
                      (unsigned long long)c->outcome[LT_O_429],
                      (unsigned long long)(c->outcome[LT_O_408] + c->outcome[LT_O_503] +
                                           c->outcome[LT_O_OTHER] + c->outcome[LT_O_CONN_ERROR] +
                                           c->outcome[LT_O_TIMEOUT] + c->outcome[LT_O_NOT_SENT]));
    }
    fprintf(stderr, "%s\033[K", line);
    fflush(stderr);
}

int lt_run(struct lt_scenario *sc, int progress, double *elapsed_s, char *err, size_t errlen)
{
    struct run *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = uv_loop_init(&r->loop);
    if (rc != 0) {
        snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(rc));
        free(r);
        return rc;
    }
    r->sc = sc;
    r->settings.on_body = on_body;
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_message_complete = on_message_complete;
    r->scheduling = 1;
    for (int i = 0; i < sc->n_classes; i++) {
        struct rt_class *k = &r->rc[i];
        k->c = &sc->classes[i];
        k->run = r;
        k->rng = class_seed(sc, k->c);
        enum lt_behaviour b = k->c->behaviour;
        if (b == LT_LEGIT || b >= LT_SLOW_HEADERS) { /* one token per client, as real ones do */
            rc = lt_token_for(sc, k->c, 0, gw_now_us() / 1000000, &k->auth);
            if (rc != 0) {
                snprintf(err, errlen, "classes[%d] (%s): cannot mint a token for tenant \"%s\": %s",
                         i, k->c->name, k->c->tenant, gw_strerror(rc));
                goto fail;
            }
        }
    }
    r->t0_ns = uv_hrtime();
    r->end_ns = r->t0_ns + (uint64_t)(sc->duration_s * 1e9);
    r->hard_end_ns = r->end_ns + (uint64_t)(sc->drain_s * 1e9);
    for (int i = 0; i < sc->n_classes; i++) {
        struct rt_class *k = &r->rc[i];
        k->c->rt = k;
        k->stop_ns = r->t0_ns + (uint64_t)(k->c->stop_s * 1e9);
        uv_timer_init(&r->loop, &k->timer);
        k->timer.data = k;
        uv_timer_start(&k->timer, on_arrival, (uint64_t)(k->c->start_s * 1000), 0);
    }
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, 10, 10);
    if (progress) {
        r->progress_on = 1;
        uv_timer_init(&r->loop, &r->progress);
        r->progress.data = r;
        uv_timer_start(&r->progress, on_progress, 1000, 1000);
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (progress)
        fprintf(stderr, "\r\033[K");
    *elapsed_s = (double)(uv_hrtime() - r->t0_ns) / 1e9;
    for (int i = 0; i < sc->n_classes; i++) {
        free(r->rc[i].auth);
        sc->classes[i].rt = NULL;
    }
    uv_loop_close(&r->loop);
    free(r);
    return 0;
fail:
    for (int i = 0; i < sc->n_classes; i++)
        free(r->rc[i].auth);
    uv_loop_close(&r->loop);
    free(r);
    return rc;
}
