/* admin_apikeys.c - the admin socket's API key commands (issue 18):
 *   apikey.create {"tenant":T,"plan":P?,"name":N?}   (admin)  the key, once
 *   apikey.list                                       (operator) no secrets
 *   apikey.revoke {"id":ID}                           (admin)
 * The master is the one writer of the keys file (auth.api_keys_file). Each
 * change reads the file afresh (so a hand edit is neither lost nor taken
 * unchecked: a file that does not parse refuses the change and says
 * why), rewrites it atomically (apikeys.c: temp file, fsync, rename, fsync
 * of the directory), writes the fronts' live copy the same way and moves
 * the segment's generation on, all before the answer: every front re-reads
 * the live copy at its next API-key request, so a key revoked by a command
 * that returned is refused from then on.
 *
 * The key is in the create answer only: never in the master's log (which
 * names the key's id), never in the file (its SHA-256 is). */
#include "admin_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static json_t *kfail(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *kfail(const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return gw__admin_error(code, msg);
}

/* The keys file of the running config, or NULL and *err when API keys
 * are off. */
static const char *keys_path(struct gw_admin *a, json_t **err)
{
    const char *p = a->host.config(a->host.ctx)->api_keys_file;
    if (!p[0]) {
        *err = kfail("failed", "API keys are off: set auth.api_keys_file in the config and "
                               "run gpuwardenctl reload");
        return NULL;
    }
    return p;
}

/* The file's records into *set; NULL, or the error to answer. */
static json_t *load(const char *path, struct gw_apikey_set *set)
{
    char err[1024];
    if (gw_apikeys_read(path, set, err, sizeof(err)) != 0)
        return kfail("failed", "%s", err);
    return NULL;
}

/* Writes set to the keys file, then publishes it to the fronts (the live
 * copy, and the generation moved on); NULL, or the error to answer. */
static json_t *store(struct gw_admin *a, const char *path, const struct gw_apikey_set *set)
{
    char err[512];
    if (gw_apikeys_write(path, set, err, sizeof(err)) != 0 ||
        gw_apikeys_publish(a->seg, a->host.config(a->host.ctx), set, err, sizeof(err)) != 0) {
        say("api keys: %s", err);
        return kfail("failed", "%s", err);
    }
    return NULL;
}

/* An optional string argument of at most max bytes (0 allowed when
 * empty_ok); "" when absent. -1 and *err when wrong. */
static int opt_str(json_t *req, const char *key, size_t max, int empty_ok, const char **out,
                   json_t **err)
{
    json_t *v = json_object_get(req, key);
    *out = "";
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > max ||
        (!empty_ok && json_string_length(v) == 0) ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        *err = kfail("bad_argument", "\"%s\": expected a string of %d to %zu bytes", key,
                     empty_ok ? 0 : 1, max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* A record's public fields (never its hash) added to o, which is returned. */
static json_t *record_json(json_t *o, const struct gw_apikey *k)
{
    json_t *r = json_pack("{s:s,s:s,s:o,s:s,s:I,s:o}", "id", k->id, "tenant", k->tenant, "plan",
                          k->plan[0] ? json_string(k->plan) : json_null(), "name", k->name,
                          "created", (json_int_t)k->created_s, "revoked",
                          k->revoked_s ? json_integer((json_int_t)k->revoked_s) : json_null());
    json_object_update(o, r);
    json_decref(r);
    return o;
}

/* The tenant and plan must be admitted by the running config, as a JWT
 * with that sub and plan claim would be; NULL, or the error to answer. */
static json_t *check_binding(struct gw_admin *a, const char *tenant, const char *plan)
{
    const char *why = NULL;
    for (const char *p = tenant; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("._@:-", *p)))
            return kfail("bad_argument", "\"tenant\": expected 1 to 63 bytes of [A-Za-z0-9._@:-]");
    for (const char *p = plan; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("._-", *p)))
            return kfail("bad_argument", "\"plan\": expected 1 to 63 bytes of [A-Za-z0-9._-]");
    if (!gw_config_plan_for(a->host.config(a->host.ctx), tenant, plan[0] ? plan : NULL, &why))
        return plan[0] ? kfail("bad_argument", "tenant %s, plan %s: %s", tenant, plan,
                               why ? why : "refused")
                       : kfail("bad_argument", "tenant %s: %s", tenant, why ? why : "refused");
    return NULL;
}

json_t *gw__admin_cmd_apikey_create(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL;
    const char *tenant, *plan, *name;
    if (!json_object_get(req, "tenant"))
        return kfail("missing_argument", "\"tenant\": missing (a string)");
    if (opt_str(req, "tenant", GW_NAME_MAX - 1, 0, &tenant, &err) != 0 ||
        opt_str(req, "plan", GW_NAME_MAX - 1, 0, &plan, &err) != 0 ||
        opt_str(req, "name", GW_APIKEY_NAME_MAX, 1, &name, &err) != 0)
        return err;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return kfail("bad_argument", "\"name\": control characters are not allowed");
    if ((err = check_binding(a, tenant, plan)) != NULL)
        return err;
    const char *path = keys_path(a, &err);
    if (!path)
        return err;
    struct gw_apikey_set set;
    if ((err = load(path, &set)) != NULL)
        return err;
    char key[GW_APIKEY_LEN + 1];
    uint64_t now_s = gw_now_us() / 1000000u;
    int rc = gw_apikeys_add(&set, tenant, plan, name, now_s, key);
    if (rc == GW_EFULL)
        err = kfail("failed", "%s holds %d keys (revoked ones included), the most", path,
                    GW_APIKEYS_MAX);
    else if (rc != 0)
        err = kfail("failed", "cannot make a key: %s", gw_strerror(rc));
    else
        err = store(a, path, &set);
    if (err) {
        gw_apikeys_free(&set);
        return err;
    }
    const struct gw_apikey *k = &set.keys[set.n - 1];
    say("uid %u: api key %s created for tenant %s%s%s", (unsigned)uid, k->id, k->tenant,
        k->plan[0] ? ", plan " : "", k->plan);
    json_t *r = record_json(json_pack("{s:b}", "ok", 1), k);
    json_object_set_new(r, "key", json_string(key));
    json_object_set_new(r, "note",
                        json_string("the key is shown only now; gpuwarden keeps "
                                    "only its SHA-256"));
    explicit_bzero(key, sizeof(key));
    gw_apikeys_free(&set);
    return r;
}

json_t *gw__admin_cmd_apikey_list(struct gw_admin *a, json_t *req, uid_t uid)
{
    (void)req;
    (void)uid;
    json_t *err = NULL;
    const char *path = keys_path(a, &err);
    if (!path)
        return err;
    struct gw_apikey_set set;
    if ((err = load(path, &set)) != NULL)
        return err;
    json_t *arr = json_array();
    for (int i = 0; arr && i < set.n; i++)
        json_array_append_new(arr, record_json(json_object(), &set.keys[i]));
    gw_apikeys_free(&set);
    return arr ? json_pack("{s:b,s:o}", "ok", 1, "keys", arr) : NULL;
}

json_t *gw__admin_cmd_apikey_revoke(struct gw_admin *a, json_t *req, uid_t uid)
{
    json_t *err = NULL, *v = json_object_get(req, "id");
    if (!v)
        return kfail("missing_argument",
                     "\"id\": missing (a key id from gpuwardenctl apikey list)");
    if (!json_is_string(v) || !gw_apikey_id_ok(json_string_value(v)))
        return kfail("bad_argument", "\"id\": expected 12 lowercase hex digits (a key id from "
                                     "gpuwardenctl apikey list)");
    const char *id = json_string_value(v);
    const char *path = keys_path(a, &err);
    if (!path)
        return err;
    struct gw_apikey_set set;
    if ((err = load(path, &set)) != NULL)
        return err;
    struct gw_apikey *k = gw_apikeys_find(&set, id);
    if (!k) {
        gw_apikeys_free(&set);
        return kfail("not_found", "no api key with id %s", id);
    }
    /* revoking again keeps the first time; the file is rewritten and the
     * generation moved on all the same, so the answer always means "every
     * front refuses it now" */
    if (!k->revoked_s)
        k->revoked_s = gw_now_us() / 1000000u;
    if ((err = store(a, path, &set)) != NULL) {
        gw_apikeys_free(&set);
        return err;
    }
    say("uid %u: api key %s (tenant %s) revoked", (unsigned)uid, k->id, k->tenant);
    json_t *r = record_json(json_pack("{s:b}", "ok", 1), k);
    gw_apikeys_free(&set);
    return r;
}
