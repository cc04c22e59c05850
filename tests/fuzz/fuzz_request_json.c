/* fuzz_request_json.c - request bodies into gw_request_parse, for every
 * route that takes one, under the repo's dev config (its plans' max_tokens
 * and prompt_bytes are the limits checked).
 *
 * Input: byte 0 picks the route (% 3: generate, completions, chat), the
 * rest is the body. */
#include "fuzz.h"
#include "gw_supervisor.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

static struct gw_config *cfg;

static void init(void)
{
    char err[2048];
    GW_FUZZ_CHECK(chdir(GW_FUZZ_SOURCE_DIR) == 0);
    if (gw_config_load(&cfg, "dist/gpuwarden.dev.json", err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_request_json: %s\n", err);
        abort();
    }
}

/* A message meant for a client: bounded, UTF-8, no control bytes. */
static void check_text(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    GW_FUZZ_CHECK(n < cap);
    GW_FUZZ_CHECK(gw_utf8_valid(s, n));
    for (size_t i = 0; i < n; i++)
        GW_FUZZ_CHECK((unsigned char)s[i] >= 0x20 && s[i] != 0x7F);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum gw_route routes[] = {GW_ROUTE_GENERATE, GW_ROUTE_COMPLETIONS, GW_ROUTE_CHAT};
    if (!cfg)
        init();
    if (size < 1)
        return 0;
    enum gw_route route = routes[data[0] % 3];
    struct gw_gen_request req;
    char err[512], param[128];
    int rc = gw_request_parse(route, (const char *)data + 1, size - 1, cfg, &req, err, sizeof(err),
                              param, sizeof(param));
    GW_FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
    if (rc != 0) {
        GW_FUZZ_CHECK(req.prompt == NULL);
        if (rc == -EINVAL) {
            GW_FUZZ_CHECK(err[0] != '\0');
            check_text(err, sizeof(err));
            check_text(param, sizeof(param));
        }
        return 0;
    }
    GW_FUZZ_CHECK(err[0] == '\0' && param[0] == '\0');
    GW_FUZZ_CHECK(req.route == route && req.chat == (route == GW_ROUTE_CHAT));
    GW_FUZZ_CHECK(req.prompt != NULL && req.prompt[req.prompt_len] == '\0');
    if (!req.chat) {
        GW_FUZZ_CHECK(req.prompt_len <= cfg->segment.prompt_bytes);
        GW_FUZZ_CHECK(strlen(req.prompt) == req.prompt_len); /* no NUL inside */
        GW_FUZZ_CHECK(gw_utf8_valid(req.prompt, req.prompt_len));
    }
    size_t ml = strnlen(req.model, sizeof(req.model));
    GW_FUZZ_CHECK(ml < sizeof(req.model) && gw_utf8_valid(req.model, ml));
    GW_FUZZ_CHECK(route == GW_ROUTE_GENERATE || ml > 0);
    GW_FUZZ_CHECK(req.max_tokens <= gw_request_tokens_cap(cfg));
    GW_FUZZ_CHECK(isfinite(req.temperature) && req.temperature >= 0.0f);
    GW_FUZZ_CHECK(isfinite(req.top_p) && req.top_p >= 0.0f && req.top_p <= 1.0f);
    GW_FUZZ_CHECK(req.n_stops >= 0 && req.n_stops <= GW_STOP_MAX);
    for (int i = 0; i < req.n_stops; i++)
        GW_FUZZ_CHECK(strnlen(req.stops[i], GW_STOP_LEN) < GW_STOP_LEN);
    gw_request_free(&req);
    GW_FUZZ_CHECK(req.prompt == NULL);
    return 0;
}
