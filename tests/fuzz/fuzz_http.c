/* fuzz_http.c - raw bytes into the front's request reading: http-parser
 * with the front's own callbacks and limits (gw__conn_parse in
 * supervisor/http.c), then routing (gw_route_match), as a connection that
 * keeps reading pipelined requests until one is refused or asks to close.
 *
 * Input: byte 0 is the read size (0: the whole stream in one read; else
 * that many bytes per read, so callbacks see fields split across reads),
 * the rest is what the client sent. Limits are the config's minimums (1024
 * header bytes, 1024 body bytes), so 413 and 431 are within reach. */
#include "fuzz.h"
#include "front_internal.h"

#include <string.h>

static struct gw_config cfg;
static struct front front;
static uv_loop_t loop;

static void init(void)
{
    cfg.header_bytes = 1024;
    cfg.body_bytes = 1024;
    cfg.body_timeout_ms = 30000;
    GW_FUZZ_CHECK(uv_loop_init(&loop) == 0);
    front.cfg = &cfg;
    front.loop = &loop;
}

/* What must hold after every read, whatever the bytes. */
static void check_state(const struct conn *c)
{
    GW_FUZZ_CHECK(c->url_len < sizeof(c->url) && c->url[c->url_len] == '\0');
    GW_FUZZ_CHECK(c->authz_len < sizeof(c->authz) && c->authz[c->authz_len] == '\0');
    GW_FUZZ_CHECK(c->field_len < sizeof(c->field_name));
    GW_FUZZ_CHECK(c->body_len <= cfg.body_bytes && c->body_len <= c->body_cap);
}

/* The front's answer to a complete request, as far as the bytes decide it. */
static void check_request(const struct conn *c)
{
    const char *method = http_method_str((enum http_method)c->method);
    GW_FUZZ_CHECK(method != NULL);
    GW_FUZZ_CHECK(c->header_bytes <= cfg.header_bytes);
    enum gw_route route = 0;
    const char *allow = NULL;
    int st = gw_route_match(method, c->url, c->url_len, &route, &allow);
    GW_FUZZ_CHECK(st == 0 || st == 404 || st == 405);
    if (st == 405)
        GW_FUZZ_CHECK(allow && (!strcmp(allow, "POST") || !strcmp(allow, "GET, HEAD")));
    if (st == 0) {
        GW_FUZZ_CHECK(route >= GW_ROUTE_GENERATE && route <= GW_ROUTE_MODELS);
        /* exact paths only: no second spelling of a route gets in (what
         * follows "/v1/models/" is a model's name, compared, never a path) */
        size_t plen = strcspn(c->url, "?");
        GW_FUZZ_CHECK(plen == c->url_len || c->url[plen] == '?');
        size_t fixed = route == GW_ROUTE_MODELS ? strlen("/v1/models") : plen;
        GW_FUZZ_CHECK(plen >= fixed &&
                      (route != GW_ROUTE_MODELS || (memcmp(c->url, "/v1/models", fixed) == 0 &&
                                                    (plen == fixed || c->url[fixed] == '/'))));
        GW_FUZZ_CHECK(c->url[0] == '/' && !memchr(c->url, '%', fixed) &&
                      !memmem(c->url, fixed, "..", 2) && !memmem(c->url, fixed, "//", 2));
        int post = route <= GW_ROUTE_CHAT;
        GW_FUZZ_CHECK(post ? !strcmp(method, "POST")
                           : (!strcmp(method, "GET") || !strcmp(method, "HEAD")));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size < 1)
        return 0;
    size_t step = data[0] ? data[0] : size;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;

    struct conn *c = calloc(1, sizeof(*c));
    GW_FUZZ_CHECK(c != NULL);
    c->front = &front;
    GW_FUZZ_CHECK(uv_timer_init(&loop, &c->timer) == 0);
    c->timer.data = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;

    size_t off = 0;
    while (off < n) {
        size_t len = n - off < step ? n - off : step;
        size_t used = 0;
        int st = gw__conn_parse(c, in + off, len, &used);
        GW_FUZZ_CHECK(used <= len);
        check_state(c);
        if (st == 0) { /* wants more: took the whole read */
            GW_FUZZ_CHECK(used == len && c->too_large == 0);
            off += len;
            continue;
        }
        if (st == 1) { /* answered; pipelined bytes wait for the next one */
            GW_FUZZ_CHECK(c->got_message && c->too_large == 0);
            check_request(c);
            if (!c->keep_alive)
                break;
            off += used;
            continue;
        }
        GW_FUZZ_CHECK(st == 400 || st == 413 || st == 431);
        GW_FUZZ_CHECK(st == 400 ? c->too_large == 0 : c->too_large == st);
        break; /* a refusal closes the connection */
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    free(c->body);
    free(c);
    return 0;
}
