/* scenario.c - reads a scenario file (the files in dist/scenarios/) into an
 * lt_scenario and checks it. Every mistake names its JSON path, e.g.
 *   smoke.json: classes[2].behaviour: "flod": expected one of legit, ...
 * Targets and sources must be loopback: this tool attacks, so it only ever
 * attacks this machine. */
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const behaviours[] = {"legit",   "tokenless",    "alg_none",  "wrong_key",
                                         "expired", "slow_headers", "slow_body", "disconnect"};

const char *lt_behaviour_name(enum lt_behaviour b)
{
    return (unsigned)b < sizeof(behaviours) / sizeof(behaviours[0]) ? behaviours[b] : "?";
}

int lt_is_loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)a;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

/* "127.0.0.1:8080", "[::1]:8080" (port required) or, with port_ok = 0, a
 * bare address "127.0.0.2" / "::1". */
static int parse_addr(const char *text, int want_port, struct sockaddr_storage *out)
{
    char host[64];
    long port = 0;
    memset(out, 0, sizeof(*out));
    if (want_port) {
        const char *colon = strrchr(text, ':');
        if (!colon || colon == text)
            return -EINVAL;
        size_t hl = (size_t)(colon - text);
        if (text[0] == '[') {
            if (hl < 3 || text[hl - 1] != ']')
                return -EINVAL;
            text++;
            hl -= 2;
        }
        if (hl >= sizeof(host))
            return -EINVAL;
        memcpy(host, text, hl);
        host[hl] = '\0';
        char *end;
        port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535)
            return -EINVAL;
    } else {
        if (strlen(text) >= sizeof(host))
            return -EINVAL;
        snprintf(host, sizeof(host), "%s", text);
    }
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        return 0;
    }
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    return -EINVAL;
}

struct ctx {
    const char *file;
    char *err;
    size_t errlen;
    int failed;
};

#define FAIL(cx, ...)                                                                              \
    do {                                                                                           \
        if (!(cx)->failed) {                                                                       \
            int n_ = snprintf((cx)->err, (cx)->errlen, "%s: ", (cx)->file);                        \
            if (n_ > 0 && (size_t)n_ < (cx)->errlen)                                               \
                snprintf((cx)->err + n_, (cx)->errlen - (size_t)n_, __VA_ARGS__);                  \
        }                                                                                          \
        (cx)->failed = 1;                                                                          \
    } while (0)

/* Optional string field into buf; 0 absent or copied, -1 on a mistake. */
static int get_str(struct ctx *cx, json_t *obj, const char *key, const char *path, char *buf,
                   size_t len)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) >= len) {
        FAIL(cx, "%s%s: expected a string of at most %zu bytes", path, key, len - 1);
        return -1;
    }
    snprintf(buf, len, "%s", json_string_value(v));
    return 0;
}

static int get_num(struct ctx *cx, json_t *obj, const char *key, const char *path, double lo,
                   double hi, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi) {
        FAIL(cx, "%s%s: expected a number in [%g, %g]", path, key, lo, hi);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int get_bool(struct ctx *cx, json_t *obj, const char *key, const char *path, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        FAIL(cx, "%s%s: expected true or false", path, key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static void check_keys(struct ctx *cx, json_t *obj, const char *path, const char *const *known)
{
    const char *k;
    json_t *v;
    json_object_foreach (obj, k, v) {
        int ok = 0;
        for (const char *const *p = known; *p && !ok; p++)
            ok = strcmp(*p, k) == 0;
        if (!ok)
            FAIL(cx, "%s%s: unknown key", path, k);
    }
}

static int read_file(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--; /* as the node reads it: a trailing newline is not part of the secret */
    if (n == 0)
        return -ENODATA;
    *out = malloc(n);
    if (!*out)
        return -ENOMEM;
    memcpy(*out, buf, n);
    *len = n;
    return 0;
}

/* "compose": an array of 1..LT_MAX_COMPOSE prompt set names; "turns":
 * earlier chat pairs, 0..8, chat route only. */
static void parse_compose(struct ctx *cx, struct lt_scenario *sc, json_t *o, const char *path,
                          struct lt_class *c)
{
    json_t *a = json_object_get(o, "compose");
    if (a) {
        if (!json_is_array(a) || json_array_size(a) < 1 || json_array_size(a) > LT_MAX_COMPOSE) {
            FAIL(cx, "%scompose: expected an array of 1..%d prompt set names", path,
                 LT_MAX_COMPOSE);
        } else {
            size_t i;
            json_t *v;
            json_array_foreach (a, i, v) {
                const char *name = json_string_value(v);
                int k = 0;
                while (name && k < sc->n_sets && strcmp(sc->sets[k].name, name) != 0)
                    k++;
                if (!name || k == sc->n_sets) {
                    FAIL(cx, "%scompose[%zu]: no such prompt set in prompts", path, i);
                    continue;
                }
                c->compose[c->n_compose] = sc->sets[k].v;
                c->compose_n[c->n_compose++] = sc->sets[k].n;
            }
        }
    }
    double t = 0;
    get_num(cx, o, "turns", path, 0, 8, &t);
    c->turns = (int)t;
    if (c->turns && strcmp(c->route, "/v1/chat/completions") != 0)
        FAIL(cx, "%sturns: only with route /v1/chat/completions", path);
}

static void parse_class(struct ctx *cx, struct lt_scenario *sc, json_t *o, int i)
{
    static const char *const known[] = {
        "name",          "behaviour",   "mode",        "arrival",   "rate",      "start_s",
        "stop_s",        "tenant",      "token",       "sources",   "route",     "prompts",
        "max_tokens",    "stream",      "connections", "keepalive", "timeout_s", "trickle_ms",
        "trickle_bytes", "description", "compose",     "turns",     NULL};
    struct lt_class *c = &sc->classes[i];
    char path[48];
    snprintf(path, sizeof(path), "classes[%d].", i);
    if (!json_is_object(o)) {
        FAIL(cx, "classes[%d]: expected an object", i);
        return;
    }
    check_keys(cx, o, path, known);
    snprintf(c->name, sizeof(c->name), "class%d", i);
    get_str(cx, o, "name", path, c->name, sizeof(c->name));
    char b[32] = "legit";
    get_str(cx, o, "behaviour", path, b, sizeof(b));
    int found = 0;
    for (unsigned k = 0; k < sizeof(behaviours) / sizeof(behaviours[0]); k++)
        if (strcmp(b, behaviours[k]) == 0) {
            c->behaviour = (enum lt_behaviour)k;
            found = 1;
        }
    if (!found)
        FAIL(cx,
             "%sbehaviour: \"%s\": expected one of legit, tokenless, alg_none, wrong_key, "
             "expired, slow_headers, slow_body, disconnect",
             path, b);
    char mode[16] = "open", arrival[16] = "poisson";
    get_str(cx, o, "mode", path, mode, sizeof(mode));
    get_str(cx, o, "arrival", path, arrival, sizeof(arrival));
    if (strcmp(mode, "open") != 0 && strcmp(mode, "closed") != 0)
        FAIL(cx, "%smode: \"%s\": expected open or closed", path, mode);
    if (strcmp(arrival, "poisson") != 0 && strcmp(arrival, "constant") != 0)
        FAIL(cx, "%sarrival: \"%s\": expected poisson or constant", path, arrival);
    c->closed = strcmp(mode, "closed") == 0;
    c->poisson = strcmp(arrival, "poisson") == 0;
    c->rate = 1;
    get_num(cx, o, "rate", path, 0.001, 100000, &c->rate);
    get_num(cx, o, "start_s", path, 0, 86400, &c->start_s);
    get_num(cx, o, "stop_s", path, 0, 86400, &c->stop_s);
    if (c->stop_s > 0 && c->stop_s <= c->start_s)
        FAIL(cx, "%sstop_s: must be after start_s (%g)", path, c->start_s);
    get_str(cx, o, "tenant", path, c->tenant, sizeof(c->tenant));
    json_t *tok = json_object_get(o, "token");
    if (tok && !json_is_null(tok)) {
        if (!json_is_string(tok) || json_string_length(tok) > 8000)
            FAIL(cx, "%stoken: expected a string (a JWT)", path);
        else
            c->token = strdup(json_string_value(tok));
    }
    int mints = c->behaviour != LT_TOKENLESS && c->behaviour != LT_ALG_NONE &&
                c->behaviour != LT_WRONG_KEY && !c->token;
    if (mints && !c->tenant[0])
        FAIL(cx, "%stenant: required for behaviour %s (or give a fixed token)", path, b);
    json_t *src = json_object_get(o, "sources");
    if (!src || json_is_null(src)) {
        c->n_sources = 1;
        parse_addr("127.0.0.1", 0, &c->sources[0]);
        snprintf(c->source_text[0], sizeof(c->source_text[0]), "127.0.0.1");
    } else if (!json_is_array(src) || json_array_size(src) < 1 ||
               json_array_size(src) > LT_MAX_SOURCES) {
        FAIL(cx, "%ssources: expected an array of 1..%d loopback addresses", path, LT_MAX_SOURCES);
    } else {
        for (size_t k = 0; k < json_array_size(src); k++) {
            json_t *s = json_array_get(src, k);
            struct sockaddr_storage *a = &c->sources[c->n_sources];
            if (!json_is_string(s) || parse_addr(json_string_value(s), 0, a) != 0) {
                FAIL(cx, "%ssources[%zu]: expected an address such as \"127.0.0.2\"", path, k);
                continue;
            }
            if (!lt_is_loopback(a)) {
                FAIL(cx, "%ssources[%zu]: \"%s\" is not a loopback address (127.0.0.0/8, ::1)",
                     path, k, json_string_value(s));
                continue;
            }
            snprintf(c->source_text[c->n_sources], sizeof(c->source_text[0]), "%s",
                     json_string_value(s));
            c->n_sources++;
        }
    }
    snprintf(c->route, sizeof(c->route), "/v1/completions");
    get_str(cx, o, "route", path, c->route, sizeof(c->route));
    if (strcmp(c->route, "/v1/completions") != 0 && strcmp(c->route, "/v1/chat/completions") != 0 &&
        strcmp(c->route, "/v1/generate") != 0)
        FAIL(cx,
             "%sroute: \"%s\": expected /v1/completions, /v1/chat/completions or "
             "/v1/generate",
             path, c->route);
    /* without "prompts": the set named default, else the scenario's first */
    snprintf(c->prompt_set, sizeof(c->prompt_set), "%s", sc->sets[0].name);
    for (int k = 0; k < sc->n_sets; k++)
        if (strcmp(sc->sets[k].name, "default") == 0)
            snprintf(c->prompt_set, sizeof(c->prompt_set), "default");
    get_str(cx, o, "prompts", path, c->prompt_set, sizeof(c->prompt_set));
    for (int k = 0; k < sc->n_sets; k++)
        if (strcmp(sc->sets[k].name, c->prompt_set) == 0) {
            c->prompts = sc->sets[k].v;
            c->n_prompts = sc->sets[k].n;
        }
    if (!c->prompts)
        FAIL(cx, "%sprompts: \"%s\": no such prompt set in prompts", path, c->prompt_set);
    parse_compose(cx, sc, o, path, c);
    double d = 8;
    get_num(cx, o, "max_tokens", path, 0, 1 << 20, &d);
    c->max_tokens = (int)d;
    c->stream = c->behaviour == LT_DISCONNECT;
    get_bool(cx, o, "stream", path, &c->stream);
    if (c->behaviour == LT_DISCONNECT && !c->stream)
        FAIL(cx, "%sstream: behaviour disconnect needs a streamed response", path);
    d = 64;
    get_num(cx, o, "connections", path, 1, 10000, &d);
    c->connections = (int)d;
    c->keepalive = 1;
    get_bool(cx, o, "keepalive", path, &c->keepalive);
    c->timeout_s = 30;
    get_num(cx, o, "timeout_s", path, 0.1, 3600, &c->timeout_s);
    d = 500;
    get_num(cx, o, "trickle_ms", path, 1, 60000, &d);
    c->trickle_ms = (int)d;
    d = 1;
    get_num(cx, o, "trickle_bytes", path, 1, 65536, &d);
    c->trickle_bytes = (int)d;
    for (int k = 0; k < i; k++)
        if (strcmp(sc->classes[k].name, c->name) == 0)
            FAIL(cx, "%sname: \"%s\" is already the name of classes[%d]", path, c->name, k);
}

static void parse_threshold(struct ctx *cx, struct lt_scenario *sc, json_t *o, int i)
{
    static const char *const known[] = {"class", "metric", "min", "max", "relative_to", NULL};
    struct lt_threshold *t = &sc->thresholds[i];
    char path[48];
    snprintf(path, sizeof(path), "thresholds[%d].", i);
    if (!json_is_object(o)) {
        FAIL(cx, "thresholds[%d]: expected an object", i);
        return;
    }
    check_keys(cx, o, path, known);
    get_str(cx, o, "class", path, t->cls, sizeof(t->cls));
    get_str(cx, o, "metric", path, t->metric, sizeof(t->metric));
    get_str(cx, o, "relative_to", path, t->relative_to, sizeof(t->relative_to));
    t->has_min = json_object_get(o, "min") != NULL;
    t->has_max = json_object_get(o, "max") != NULL;
    get_num(cx, o, "min", path, -1e18, 1e18, &t->min);
    get_num(cx, o, "max", path, -1e18, 1e18, &t->max);
    if (!t->metric[0])
        FAIL(cx, "%smetric: required", path);
    if (!t->has_min && !t->has_max)
        FAIL(cx, "%s: give min, max or both", path);
    if (strcmp(t->metric, "ledger_conserved") == 0 || strcmp(t->metric, "budgets_kept") == 0)
        return;
    int have = 0, have_rel = !t->relative_to[0];
    for (int k = 0; k < sc->n_classes; k++) {
        have |= strcmp(sc->classes[k].name, t->cls) == 0;
        have_rel |= strcmp(sc->classes[k].name, t->relative_to) == 0;
    }
    if (!have)
        FAIL(cx, "%sclass: \"%s\": no such class", path, t->cls);
    if (!have_rel)
        FAIL(cx, "%srelative_to: \"%s\": no such class", path, t->relative_to);
    double dummy;
    if (have && lt_metric(&sc->classes[0], t->metric, &dummy) == -ENOENT)
        FAIL(cx,
             "%smetric: \"%s\": unknown (success_rate, farming_refused_at, count_prompt_farming, "
             "rate_200, rate_401, rate_408, "
             "rate_429, rate_503, rate_other, rate_conn_error, rate_timeout, sent, "
             "achieved_ratio, tokens_per_s, ttft_p50_ms .. ttft_max_ms, tpot_p50_ms .. "
             "tpot_max_ms, total_p50_ms .. total_max_ms, ledger_conserved, budgets_kept)",
             path, t->metric);
}

static void parse_prompts(struct ctx *cx, struct lt_scenario *sc, json_t *p)
{
    if (!p) {
        static const char *deflt = "Say hello.";
        sc->n_sets = 1;
        snprintf(sc->sets[0].name, sizeof(sc->sets[0].name), "default");
        sc->sets[0].v = calloc(1, sizeof(char *));
        sc->sets[0].v[0] = strdup(deflt);
        sc->sets[0].n = 1;
        return;
    }
    if (!json_is_object(p) || json_object_size(p) == 0 || json_object_size(p) > LT_MAX_SETS) {
        FAIL(cx, "prompts: expected an object of 1..%d named arrays of strings", LT_MAX_SETS);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach (p, k, v) {
        if (!json_is_array(v) || json_array_size(v) == 0 || strlen(k) >= 64) {
            FAIL(cx, "prompts.%s: expected a non-empty array of strings", k);
            continue;
        }
        int s = sc->n_sets++;
        snprintf(sc->sets[s].name, sizeof(sc->sets[s].name), "%s", k);
        sc->sets[s].v = calloc(json_array_size(v), sizeof(char *));
        for (size_t j = 0; j < json_array_size(v); j++) {
            json_t *e = json_array_get(v, j);
            if (!json_is_string(e)) {
                FAIL(cx, "prompts.%s[%zu]: expected a string", k, j);
                continue;
            }
            sc->sets[s].v[sc->sets[s].n++] = strdup(json_string_value(e));
        }
    }
}

int lt_scenario_load(struct lt_scenario *sc, const char *path, const struct lt_overrides *ov,
                     char *err, size_t errlen)
{
    static const char *const known[] = {"name",       "description", "target",         "model",
                                        "duration_s", "drain_s",     "max_requests",   "seed",
                                        "auth",       "ledger",      "prompts",        "classes",
                                        "thresholds", "admin",       "budget_step_ms", NULL};
    static const char *const known_auth[] = {"secret_file", "kid", "issuer", "audience", NULL};
    memset(sc, 0, sizeof(*sc));
    struct ctx cx = {.file = path, .err = err, .errlen = errlen};
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
        return -EINVAL;
    }
    if (!json_is_object(root)) {
        FAIL(&cx, "expected an object");
        goto out;
    }
    check_keys(&cx, root, "", known);
    snprintf(sc->name, sizeof(sc->name), "scenario");
    get_str(&cx, root, "name", "", sc->name, sizeof(sc->name));
    get_str(&cx, root, "description", "", sc->description, sizeof(sc->description));
    snprintf(sc->target, sizeof(sc->target), "127.0.0.1:8080");
    get_str(&cx, root, "target", "", sc->target, sizeof(sc->target));
    snprintf(sc->model, sizeof(sc->model), "smollm2-135m-instruct");
    get_str(&cx, root, "model", "", sc->model, sizeof(sc->model));
    sc->duration_s = 10;
    get_num(&cx, root, "duration_s", "", 0.1, 86400, &sc->duration_s);
    sc->drain_s = 10;
    get_num(&cx, root, "drain_s", "", 0, 3600, &sc->drain_s);
    double cap = 100000, seed = 1;
    get_num(&cx, root, "max_requests", "", 1, 1e9, &cap);
    get_num(&cx, root, "seed", "", 0, 1e15, &seed);
    sc->max_requests = (uint64_t)cap;
    sc->seed = (uint64_t)seed;
    get_str(&cx, root, "ledger", "", sc->ledger, sizeof(sc->ledger));
    get_str(&cx, root, "admin", "", sc->admin, sizeof(sc->admin));
    sc->budget_step_ms = 250;
    get_num(&cx, root, "budget_step_ms", "", 0, 60000, &sc->budget_step_ms);
    json_t *auth = json_object_get(root, "auth");
    if (auth && json_is_object(auth)) {
        check_keys(&cx, auth, "auth.", known_auth);
        get_str(&cx, auth, "secret_file", "auth.", sc->auth.secret_file,
                sizeof(sc->auth.secret_file));
        get_str(&cx, auth, "kid", "auth.", sc->auth.kid, sizeof(sc->auth.kid));
        get_str(&cx, auth, "issuer", "auth.", sc->auth.issuer, sizeof(sc->auth.issuer));
        get_str(&cx, auth, "audience", "auth.", sc->auth.audience, sizeof(sc->auth.audience));
    } else if (auth) {
        FAIL(&cx, "auth: expected an object");
    }
    if (ov) {
        if (ov->target)
            snprintf(sc->target, sizeof(sc->target), "%s", ov->target);
        if (ov->ledger)
            snprintf(sc->ledger, sizeof(sc->ledger), "%s", ov->ledger);
        if (ov->admin)
            snprintf(sc->admin, sizeof(sc->admin), "%s", ov->admin);
        if (ov->secret_file)
            snprintf(sc->auth.secret_file, sizeof(sc->auth.secret_file), "%s", ov->secret_file);
        if (ov->duration_s > 0)
            sc->duration_s = ov->duration_s;
        if (ov->max_requests)
            sc->max_requests = ov->max_requests;
    }
    if (parse_addr(sc->target, 1, &sc->target_addr) != 0)
        FAIL(&cx,
             "target: \"%s\": expected HOST:PORT with a numeric address, e.g. "
             "127.0.0.1:8080 or [::1]:8080",
             sc->target);
    else if (!lt_is_loopback(&sc->target_addr))
        FAIL(&cx,
             "target: \"%s\": not a loopback address; gpuwarden-load only targets "
             "127.0.0.0/8 and ::1",
             sc->target);
    parse_prompts(&cx, sc, json_object_get(root, "prompts"));
    json_t *classes = json_object_get(root, "classes");
    if (!json_is_array(classes) || json_array_size(classes) < 1 ||
        json_array_size(classes) > LT_MAX_CLASSES) {
        FAIL(&cx, "classes: expected an array of 1..%d classes", LT_MAX_CLASSES);
        goto out;
    }
    sc->n_classes = (int)json_array_size(classes);
    int mints = 0;
    for (int i = 0; i < sc->n_classes; i++) {
        parse_class(&cx, sc, json_array_get(classes, (size_t)i), i);
        struct lt_class *c = &sc->classes[i];
        mints |= !c->token && (c->behaviour == LT_LEGIT || c->behaviour == LT_EXPIRED ||
                               c->behaviour >= LT_SLOW_HEADERS);
        if (ov && ov->rate_scale > 0)
            c->rate *= ov->rate_scale;
        if (c->stop_s == 0 || c->stop_s > sc->duration_s)
            c->stop_s = sc->duration_s;
        if (c->start_s >= sc->duration_s)
            FAIL(&cx, "classes[%d].start_s: %g is not before the end of the run (%g s)", i,
                 c->start_s, sc->duration_s);
        if (c->closed && c->connections > 1000)
            FAIL(&cx, "classes[%d].connections: closed loop takes at most 1000 clients", i);
    }
    json_t *th = json_object_get(root, "thresholds");
    if (th && (!json_is_array(th) || json_array_size(th) > LT_MAX_THRESHOLDS)) {
        FAIL(&cx, "thresholds: expected an array of at most %d thresholds", LT_MAX_THRESHOLDS);
    } else if (th) {
        sc->n_thresholds = (int)json_array_size(th);
        for (int i = 0; i < sc->n_thresholds; i++)
            parse_threshold(&cx, sc, json_array_get(th, (size_t)i), i);
    }
    if (!cx.failed && mints) {
        if (!sc->auth.secret_file[0]) {
            FAIL(&cx, "auth.secret_file: required to mint tokens (or --secret-file FILE)");
        } else {
            int rc = read_file(sc->auth.secret_file, &sc->auth.secret, &sc->auth.secret_len);
            if (rc != 0)
                FAIL(&cx, "auth.secret_file: %s: %s", sc->auth.secret_file,
                     rc == -ENODATA ? "empty" : strerror(-rc));
        }
    }
out:
    json_decref(root);
    if (cx.failed) {
        lt_scenario_free(sc);
        return -EINVAL;
    }
    return 0;
}

void lt_scenario_free(struct lt_scenario *sc)
{
    for (int i = 0; i < sc->n_classes; i++) {
        struct lt_class *c = &sc->classes[i];
        free(c->token);
        lt_samples_free(&c->ttft_ok);
        lt_samples_free(&c->tpot_ok);
        lt_samples_free(&c->total_ok);
        lt_samples_free(&c->total_refused);
        lt_samples_free(&c->send_lag);
    }
    for (int s = 0; s < sc->n_sets; s++) {
        for (int j = 0; j < sc->sets[s].n; j++)
            free(sc->sets[s].v[j]);
        free(sc->sets[s].v);
    }
    free(sc->auth.secret);
    memset(sc, 0, sizeof(*sc));
}
