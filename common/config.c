/* config.c - the one JSON file that describes a node, checked completely.
 *
 * Every mistake is reported, not just the first: an operator fixing a config
 * by trial and error should need one run, not one per mistake. Each report
 * is one line "config: <json path>: <problem>" and names what would be
 * accepted. Unknown keys are mistakes (a misspelt limit that silently does
 * nothing is worse than a refusal). Every number has a range, everything
 * optional has a default; docs/CONFIG.md lists both.
 *
 * Relative paths (state_dir, model.path, key files, admin.socket) are used
 * as written, so they resolve against the working directory of the process.
 *
 * This file holds the top level (load, parse, free), the defaults and the
 * node's own sections; plans and tenants, auth and the watchdog have their
 * own files (config_internal.h lists them).
 */
#include "config_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------- the node's sections */

/* "a.b.c.d:port" or "[v6]:port", IP literals only: the master binds them
 * before anything resolves names, and a name would make the bind depend on
 * DNS at start-up. */
static void parse_listen(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    json_t *arr = json_object_get(root, "listen");
    if (!arr)
        return; /* default set by the caller */
    if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > GW_MAX_LISTEN) {
        gw__cfg_bad(c, "listen", "expected an array of 1 to %d \"host:port\" strings",
                    GW_MAX_LISTEN);
        return;
    }
    cfg->n_listen = 0;
    size_t i;
    json_t *v;
    char p[PATH_LEN], q[96];
    json_array_foreach (arr, i, v) {
        gw__cfg_path_idx(p, "listen", i);
        const char *s = json_string_value(v);
        if (!s) {
            gw__cfg_bad(c, p, "expected a string \"host:port\"");
            continue;
        }
        char host[64];
        const char *colon = strrchr(s, ':');
        size_t hl = colon ? (size_t)(colon - s) : 0;
        int v6 = hl >= 2 && s[0] == '[' && s[hl - 1] == ']';
        unsigned char addr[16];
        int okaddr = 0;
        if (colon && hl > 0 && hl < sizeof(host) && strlen(s) < sizeof(cfg->listen[0])) {
            memcpy(host, s + v6, hl - 2 * (size_t)v6);
            host[hl - 2 * (size_t)v6] = 0;
            okaddr = inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) == 1;
        }
        uint64_t port;
        if (!okaddr) {
            gw__cfg_bad(c, p, "\"%s\": expected \"a.b.c.d:port\" or \"[IPv6]:port\"",
                        gw__cfg_shown(s, q));
        } else if (gw__cfg_parse_count(colon + 1, 1, 65535, &port)) {
            gw__cfg_bad(c, p, "\"%s\": port must be an integer in [1, 65535]", gw__cfg_shown(s, q));
        } else {
            int dup = 0;
            for (int j = 0; j < cfg->n_listen; j++)
                dup |= strcmp(cfg->listen[j], s) == 0;
            if (dup)
                gw__cfg_bad(c, p, "\"%s\" is listed twice", gw__cfg_shown(s, q));
            else
                snprintf(cfg->listen[cfg->n_listen++], sizeof(cfg->listen[0]), "%s", s);
        }
    }
}

static void parse_segment(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"accounts",     "budgets",       "slots",
                                       "queue",        "lanes",         "prompt_bytes",
                                       "output_bytes", "resume_tokens", NULL};
    struct gw_seg_config *s = &cfg->segment;
    json_t *o = gw__cfg_get_object(c, root, "", "segment", 0);
    if (o) {
        gw__cfg_check_keys(c, o, "segment", keys);
        if (json_object_get(o, "lanes"))
            gw__cfg_bad(c, "segment.lanes", "not settable: it is fronts + workers + 8");
        gw__cfg_get_u32(c, o, "segment", "accounts", GW_PROBE, 1u << 24, 1, &s->accounts);
        gw__cfg_get_u32(c, o, "segment", "budgets", 1, 1u << 20, 0, &s->budgets);
        gw__cfg_get_u32(c, o, "segment", "slots", 1, 65535, 0, &s->slots);
        gw__cfg_get_u32(c, o, "segment", "queue", 2, 1u << 16, 1, &s->queue);
        gw__cfg_get_u32(c, o, "segment", "prompt_bytes", 256, 16u << 20, 0, &s->prompt_bytes);
        gw__cfg_get_u32(c, o, "segment", "output_bytes", 256, 16u << 20, 0, &s->output_bytes);
        gw__cfg_get_u32(c, o, "segment", "resume_tokens", 0, 1u << 20, 0, &s->resume_tokens);
    }
    s->lanes = (uint32_t)(cfg->fronts + cfg->workers + 8);
    if (s->lanes > 255)
        gw__cfg_bad(c, "segment", "fronts + workers + 8 = %u lanes; at most 255", s->lanes);
}

/* The worker's continuous batching (docs/CONFIG.md, "model"): how many
 * sequences, how much KV cache, how many tokens per step, and the weights of
 * its fair scheduler (VTC). The pairs are checked once both values are
 * known to be in range, so one mistake gives one line. */
static void parse_batching(struct gw_cfg_cx *c, json_t *m, struct gw_config *cfg, int context_ok)
{
    gw__cfg_get_int_auto(c, m, "model", "max_batch", 1, 256, &cfg->max_batch);
    int kv =
        gw__cfg_get_int_auto(c, m, "model", "kv_cache_tokens", 64, 4194304, &cfg->kv_cache_tokens);
    int pc = gw__cfg_get_int(c, m, "model", "prefill_chunk", 1, 4096, &cfg->prefill_chunk);
    int st = gw__cfg_get_int(c, m, "model", "step_tokens", 1, 65536, &cfg->step_tokens);
    gw__cfg_get_number(c, m, "model", "vtc_weight_prompt", 100, &cfg->vtc_weight_prompt);
    gw__cfg_get_number(c, m, "model", "vtc_weight_output", 100, &cfg->vtc_weight_output);
    gw__cfg_get_int(c, m, "model", "priority_lead", 0, 65536, &cfg->priority_lead);
    if (kv == 1 && context_ok && cfg->kv_cache_tokens != 0 && cfg->kv_cache_tokens < cfg->context)
        gw__cfg_bad(c, "model.kv_cache_tokens",
                    "%d is less than model.context (%d%s): a single sequence of context tokens "
                    "must fit; raise it, or 0 for auto",
                    cfg->kv_cache_tokens, cfg->context,
                    json_object_get(m, "context") ? "" : ", the default");
    if (pc >= 0 && st >= 0 && cfg->step_tokens < cfg->prefill_chunk)
        gw__cfg_bad(c, "model.step_tokens",
                    "%d%s is less than model.prefill_chunk (%d): one step must hold a whole "
                    "prefill chunk",
                    cfg->step_tokens, st == 1 ? "" : " (the default)", cfg->prefill_chunk);
}

static void parse_model(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"path",
                                       "name",
                                       "device",
                                       "threads",
                                       "context",
                                       "max_batch",
                                       "kv_cache_tokens",
                                       "prefill_chunk",
                                       "step_tokens",
                                       "vtc_weight_prompt",
                                       "vtc_weight_output",
                                       "priority_lead",
                                       "pin_threads",
                                       NULL};
    json_t *m = gw__cfg_get_object(c, root, "", "model", 1);
    if (!m)
        return;
    gw__cfg_check_keys(c, m, "model", keys);
    gw__cfg_get_string(c, m, "model", "path", 1, cfg->model_path, sizeof(cfg->model_path));
    char q[96];
    if (gw__cfg_get_string(c, m, "model", "name", 1, cfg->model_name, sizeof(cfg->model_name)) ==
            1 &&
        !gw__cfg_name_ok(cfg->model_name, "._:/-"))
        gw__cfg_bad(c, "model.name", "\"%s\": expected 1 to %d bytes of [A-Za-z0-9._:/-]",
                    gw__cfg_shown(cfg->model_name, q), GW_NAME_MAX - 1);
    char dev[32];
    if (gw__cfg_get_string(c, m, "model", "device", 0, dev, sizeof(dev)) == 1) {
        uint64_t n;
        if (strcmp(dev, "auto") == 0 || strcmp(dev, "cpu") == 0 ||
            (strncmp(dev, "cuda:", 5) == 0 && gw__cfg_parse_count(dev + 5, 0, 63, &n) == 0 &&
             strlen(dev + 5) <= 2))
            snprintf(cfg->device, sizeof(cfg->device), "%s", dev);
        else
            gw__cfg_bad(c, "model.device",
                        "\"%s\": expected \"auto\", \"cpu\" or \"cuda:N\" (N in [0, 63])",
                        gw__cfg_shown(dev, q));
    }
    gw__cfg_get_int(c, m, "model", "threads", 0, 256, &cfg->threads);
    json_t *pin = json_object_get(m, "pin_threads");
    if (pin && !json_is_boolean(pin))
        gw__cfg_bad(c, "model.pin_threads", "expected true or false");
    else if (pin)
        cfg->pin_threads = json_is_true(pin);
    int ctx = gw__cfg_get_int(c, m, "model", "context", 64, 131072, &cfg->context);
    parse_batching(c, m, cfg, ctx >= 0);
}

static void parse_http(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"header_bytes",      "body_bytes",
                                       "header_timeout_ms", "body_timeout_ms",
                                       "keepalive_ms",      "connections_per_front",
                                       "drain_timeout_ms",  NULL};
    json_t *h = gw__cfg_get_object(c, root, "", "http", 0);
    if (!h)
        return;
    gw__cfg_check_keys(c, h, "http", keys);
    gw__cfg_get_u32(c, h, "http", "header_bytes", 1024, 1u << 20, 0, &cfg->header_bytes);
    gw__cfg_get_u32(c, h, "http", "body_bytes", 1024, 64u << 20, 0, &cfg->body_bytes);
    gw__cfg_get_u32(c, h, "http", "header_timeout_ms", 100, 600000, 0, &cfg->header_timeout_ms);
    gw__cfg_get_u32(c, h, "http", "body_timeout_ms", 100, 600000, 0, &cfg->body_timeout_ms);
    gw__cfg_get_u32(c, h, "http", "keepalive_ms", 0, 3600000, 0, &cfg->keepalive_ms);
    gw__cfg_get_u32(c, h, "http", "connections_per_front", 1, 1000000, 0,
                    &cfg->connections_per_front);
    gw__cfg_get_u32(c, h, "http", "drain_timeout_ms", 0, 3600000, 0, &cfg->drain_timeout_ms);
}

/* admin.operators / admin.admins: ["user:NAME" | "uid:N" | "group:NAME" |
 * "gid:N", ...]. Names are resolved when a client connects (the accounts
 * database may change while the node runs). */
static void parse_principals(struct gw_cfg_cx *c, json_t *o, const char *key,
                             char out[GW_ADMIN_PRINCIPALS][GW_NAME_MAX], int *n)
{
    char p[PATH_LEN], q[96];
    gw__cfg_path_key(p, "admin", key);
    json_t *arr = json_object_get(o, key);
    if (!arr)
        return;
    if (!json_is_array(arr) || json_array_size(arr) > GW_ADMIN_PRINCIPALS) {
        gw__cfg_bad(c, p, "expected an array of at most %d strings", GW_ADMIN_PRINCIPALS);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach (arr, i, v) {
        char pi[PATH_LEN];
        gw__cfg_path_idx(pi, p, i);
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        const char *colon = s ? strchr(s, ':') : NULL;
        int ok = colon && strlen(s) < GW_NAME_MAX && gw__cfg_name_ok(colon + 1, "._-");
        if (ok && (strncmp(s, "uid:", 4) == 0 || strncmp(s, "gid:", 4) == 0)) {
            uint64_t x;
            ok = gw__cfg_parse_count(colon + 1, 0, UINT32_MAX - 1, &x) == 0;
        } else if (ok) {
            ok = strncmp(s, "user:", 5) == 0 || strncmp(s, "group:", 6) == 0;
        }
        if (!ok) {
            gw__cfg_bad(c, pi, "%s: expected \"user:NAME\", \"uid:N\", \"group:NAME\" or \"gid:N\"",
                        s ? gw__cfg_shown(s, q) : "not a string");
            continue;
        }
        snprintf(out[*n], GW_NAME_MAX, "%s", s);
        (*n)++;
    }
}

static void parse_admin_cost(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const admin_keys[] = {"socket", "group", "operators", "admins", NULL};
    static const char *const cost_keys[] = {"initial_us_per_token", NULL};
    json_t *o;
    if ((o = gw__cfg_get_object(c, root, "", "admin", 0))) {
        gw__cfg_check_keys(c, o, "admin", admin_keys);
        /* sun_path holds 108 bytes with its NUL */
        char sock[108];
        if (gw__cfg_get_string(c, o, "admin", "socket", 0, sock, sizeof(sock)) == 1)
            snprintf(cfg->admin_socket, sizeof(cfg->admin_socket), "%s", sock);
        char grp[GW_NAME_MAX];
        if (gw__cfg_get_string(c, o, "admin", "group", 0, grp, sizeof(grp)) == 1) {
            if (!gw__cfg_name_ok(grp, "._-"))
                gw__cfg_bad(c, "admin.group", "expected a group name or number");
            else
                memcpy(cfg->admin_group, grp, sizeof(grp));
        }
        parse_principals(c, o, "operators", cfg->admin_operators, &cfg->n_admin_operators);
        parse_principals(c, o, "admins", cfg->admin_admins, &cfg->n_admin_admins);
    }
    if ((o = gw__cfg_get_object(c, root, "", "cost", 0))) {
        gw__cfg_check_keys(c, o, "cost", cost_keys);
        gw__cfg_get_u64(c, o, "cost", "initial_us_per_token", 1, 10 * SEC_US, 0,
                        &cfg->initial_us_per_token);
    }
}

/* "log": the line format on stderr and the optional access log. */
static void parse_log(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {"format", "access", NULL};
    json_t *o = gw__cfg_get_object(c, root, "", "log", 0);
    if (!o)
        return;
    gw__cfg_check_keys(c, o, "log", keys);
    json_t *v = json_object_get(o, "format");
    if (v) {
        const char *f = json_is_string(v) ? json_string_value(v) : NULL;
        if (f && strcmp(f, "text") == 0)
            cfg->log_format = GW_LOG_TEXT;
        else if (f && strcmp(f, "json") == 0)
            cfg->log_format = GW_LOG_JSON;
        else if (f) {
            char b[96];
            gw__cfg_bad(c, "log.format", "\"%s\": expected \"text\" or \"json\"",
                        gw__cfg_shown(f, b));
        } else
            gw__cfg_bad(c, "log.format", "expected \"text\" or \"json\"");
    }
    v = json_object_get(o, "access");
    if (v) {
        if (json_is_boolean(v))
            cfg->log_access = json_is_true(v);
        else
            gw__cfg_bad(c, "log.access", "expected true or false");
    }
}

static void set_defaults(struct gw_config *cfg, const char *name)
{
    snprintf(cfg->path, sizeof(cfg->path), "%s", name ? name : "(config)");
    cfg->n_listen = 1;
    snprintf(cfg->listen[0], sizeof(cfg->listen[0]), "127.0.0.1:8080");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->fronts = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
    cfg->workers = 1;
    snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/var/lib/gpuwarden");
    cfg->segment = (struct gw_seg_config){
        .accounts = 65536,
        .budgets = 4096,
        .slots = 256,
        .queue = 256,
        .prompt_bytes = 65536,
        .output_bytes = 65536,
        .resume_tokens = 4096,
        .ip_farm_recs = 4096, /* ip.farming.records */
    };
    snprintf(cfg->device, sizeof(cfg->device), "auto");
    cfg->threads = 0;
    cfg->context = 2048;
    cfg->max_batch = 0;       /* auto: the worker decides */
    cfg->kv_cache_tokens = 0; /* auto */
    cfg->prefill_chunk = 64;
    cfg->step_tokens = 256;
    cfg->vtc_weight_prompt = 1.0;
    cfg->vtc_weight_output = 2.0;
    cfg->priority_lead = 8;
    cfg->pin_threads = 1;
    cfg->header_bytes = 8192;
    cfg->body_bytes = 1048576;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 30000;
    cfg->keepalive_ms = 60000;
    cfg->connections_per_front = 1024;
    cfg->drain_timeout_ms = 30000;
    cfg->leeway_s = 30;
    gw__cfg_plan_defaults(&cfg->ip, "ip");
    gw__cfg_net_defaults(cfg);
    gw__cfg_plan_defaults(&cfg->global, "global");
    cfg->default_plan = -1;
    snprintf(cfg->admin_socket, sizeof(cfg->admin_socket), "/run/gpuwarden/admin.sock");
    cfg->initial_us_per_token = 20000;
    gw__cfg_wd_defaults(cfg);
}

static void check_all(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg)
{
    static const char *const keys[] = {
        "listen", "fronts",   "workers", "state_dir", "segment",      "model",   "http",
        "auth",   "ip",       "global",  "plans",     "default_plan", "tenants", "admin",
        "cost",   "watchdog", "log",     "cluster",   "metrics",      NULL};
    gw__cfg_check_keys(c, root, "", keys);
    parse_listen(c, root, cfg);
    gw__cfg_get_int(c, root, "", "fronts", 1, 64, &cfg->fronts);
    gw__cfg_get_int(c, root, "", "workers", 1, 64, &cfg->workers);
    /* room for "/ledger" after it in a 256-byte segment path */
    char dir[240];
    if (gw__cfg_get_string(c, root, "", "state_dir", 0, dir, sizeof(dir)) == 1)
        snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s", dir);
    parse_segment(c, root, cfg);
    parse_model(c, root, cfg);
    parse_http(c, root, cfg);
    gw__cfg_parse_auth(c, root, cfg);
    gw__cfg_parse_limits(c, root, cfg);
    gw__cfg_parse_plans(c, root, cfg);
    gw__cfg_parse_default_plan(c, root, cfg);
    gw__cfg_parse_tenants(c, root, cfg);
    parse_admin_cost(c, root, cfg);
    gw__cfg_parse_watchdog(c, root, cfg);
    parse_log(c, root, cfg);
    gw__cfg_parse_cluster(c, root, cfg);
    gw__cfg_parse_metrics(c, root, cfg);

    /* Every configured tenant and the global account hold a budget record
     * from their first request on; unknown tenants on the default plan need
     * more. */
    if (cfg->segment.budgets < (uint32_t)cfg->n_tenants + 1)
        gw__cfg_bad(c, "segment.budgets",
                    "expected at least %d (one per tenant and one for the node)",
                    cfg->n_tenants + 1);
    /* The segment is one file mapped by every process: slots times
     * (prompt + output) adds up fast, so keep it below 64 GiB. */
    char serr[160];
    size_t bytes = c->mistakes ? 1 : gw_segment_size(&cfg->segment, serr, sizeof(serr));
    if (bytes == 0)
        gw__cfg_bad(c, "segment", "%s", serr);
    else if ((uint64_t)bytes > (64ull << 30))
        gw__cfg_bad(c, "segment",
                    "%zu bytes with these sizes; at most 64 GiB (lower slots, "
                    "prompt_bytes or output_bytes)",
                    bytes);
}

/* ------------------------------------------------------------ public API */

int gw_config_parse(struct gw_config **out, const char *json, size_t len, const char *name,
                    char *err, size_t errlen)
{
    struct gw_cfg_cx c = {.err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = 0;
    if (!out || (!json && len))
        return -EINVAL;
    *out = NULL;
    if (!name)
        name = "(config)";
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        gw__cfg_bad(&c, name, "not valid JSON: %s at line %d column %d", je.text, je.line,
                    je.column);
        return -EINVAL;
    }
    struct gw_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        json_decref(root);
        return -ENOMEM;
    }
    set_defaults(cfg, name);
    c.cfg = cfg;
    if (!json_is_object(root))
        gw__cfg_bad(&c, name, "expected a JSON object at the top level");
    else
        check_all(&c, root, cfg);
    json_decref(root);
    if (c.mistakes) {
        gw_config_free(cfg);
        return -EINVAL;
    }
    *out = cfg;
    return 0;
}

int gw_config_load(struct gw_config **out, const char *path, char *err, size_t errlen)
{
    struct gw_cfg_cx c = {.err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = 0;
    if (!out || !path)
        return -EINVAL;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        gw__cfg_bad(&c, path, "%s", strerror(e));
        return -e;
    }
    /* A config is kilobytes; 16 MiB leaves room for many tenants and keeps
     * a wrong path (a device, a huge log) from being read whole. */
    size_t cap = 16u << 20, n = 0, size = 65536;
    char *buf = malloc(size);
    int rc = 0;
    if (!buf) {
        rc = -ENOMEM;
        goto done;
    }
    for (;;) {
        if (n == size) {
            if (size >= cap) {
                gw__cfg_bad(&c, path, "larger than %zu bytes", cap);
                rc = -EFBIG;
                goto done;
            }
            char *nb = realloc(buf, size * 2);
            if (!nb) {
                rc = -ENOMEM;
                goto done;
            }
            buf = nb;
            size *= 2;
        }
        ssize_t r = read(fd, buf + n, size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            gw__cfg_bad(&c, path, "%s", strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    rc = gw_config_parse(out, buf, n, path, err, errlen);
done:
    free(buf);
    close(fd);
    return rc;
}

void gw_config_free(struct gw_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < cfg->n_keys; i++)
        gw__cfg_free_key(&cfg->keys[i]);
    free(cfg->tenants);
    free(cfg->unb_lists);
    free(cfg->farm_prefixes);
    free(cfg);
}
