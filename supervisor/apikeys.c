/* apikeys.c - API keys, the second credential beside JWT (issue 18).
 *
 * A key is "sk-gw-<id>-<secret>": a public id (12 hex digits, 48 random
 * bits) that finds the record without a scan, and a secret of 256 random
 * bits (64 hex digits) from getrandom. The keys file keeps the SHA-256 of
 * the whole key text, never the key: an unkeyed hash suffices because the
 * secret has 256 bits of entropy, so nothing can be guessed from the hash
 * faster than the key itself; the id in the hashed text binds the secret
 * to its record. A check costs one SHA-256 of 83 bytes and one
 * CRYPTO_memcmp; nothing is cached, so a revocation needs no cache flush.
 *
 * The file is JSON (jansson), written only by the master (admin_apikeys.c)
 * through gw_apikeys_write: a temp file in the same directory, fsync,
 * rename over the old one, fsync of the directory. A reader therefore
 * finds the old file or the new one, whole, and so does anyone after a
 * crash: there is never a torn file to repair, at most a stale temp file
 * that the next write truncates.
 *
 * The fronts do not read that file but the master's live copy of it,
 * <state_dir>/api-keys.live.json, which the master writes the same way
 * from a set it has just parsed (at start-up, at each accepted reload,
 * after each change), then moves the segment's generation on
 * (common/apikey_gen.c); each front re-reads the live copy at its next
 * API-key request after the generation moved (gw_apikeys_check). So a hand
 * edit of the keys file reaches the fronts only through a reload or a
 * change that parsed it, and a malformed one reaches no front: the master
 * refuses it and every front, a restarted one too, keeps the set in force.
 *
 * Nothing here logs a key: errors name the file, the record's index and
 * field, or the key's id.
 */
#include "gw_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAX (4u << 20) /* a keys file larger than this is not one */
#define PREFIX_LEN 6        /* "sk-gw-" */

/* ---------------------------------------------------------- small checks */

static int hex_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int gw_apikey_id_ok(const char *s)
{
    return s && strlen(s) == GW_APIKEY_ID_LEN && hex_ok(s, GW_APIKEY_ID_LEN);
}

/* The characters of a tenant id (a JWT sub: auth.c) and of a plan name
 * (config_plans.c), 1..63 bytes. */
static int name_ok(const char *s, const char *extra)
{
    size_t n = strlen(s);
    if (n < 1 || n >= GW_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) &&
            !strchr(extra, ch))
            return 0;
    }
    return 1;
}

/* A key's label: 0..64 bytes, no control characters (it is printed). */
static int label_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > GW_APIKEY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static void from_hex(const char *s, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n / 2; i++) {
        int hi = s[2 * i] <= '9' ? s[2 * i] - '0' : s[2 * i] - 'a' + 10;
        int lo = s[2 * i + 1] <= '9' ? s[2 * i + 1] - '0' : s[2 * i + 1] - 'a' + 10;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
}

static int sha256(const char *text, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    if (EVP_Digest(text, n, out, &len, EVP_sha256(), NULL) != 1 || len != 32)
        return -EIO;
    return 0;
}

/* ------------------------------------------------------------- parsing */

/* Every mistake, one line each, each starting with the file's name. */
struct perr {
    char *buf;
    size_t cap, len;
    const char *name;
    int count;
};

static void bad(struct perr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(struct perr *e, const char *fmt, ...)
{
    e->count++;
    if (!e->buf || e->len + 1 >= e->cap)
        return;
    int n = snprintf(e->buf + e->len, e->cap - e->len, "%s%s: ", e->len ? "\n" : "", e->name);
    if (n > 0 && (size_t)n < e->cap - e->len) {
        e->len += (size_t)n;
        va_list ap;
        va_start(ap, fmt);
        n = vsnprintf(e->buf + e->len, e->cap - e->len, fmt, ap);
        va_end(ap);
        if (n > 0)
            e->len += (size_t)n < e->cap - e->len ? (size_t)n : e->cap - e->len - 1;
    }
}

/* A name from the file fit for one error line: at most 64 bytes, control
 * characters and quotes as '?'. q holds 68 bytes. */
static const char *shown(const char *s, char *q)
{
    size_t n = strlen(s) > 64 ? 64 : strlen(s);
    for (size_t i = 0; i < n; i++)
        q[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '"' ? '?' : s[i];
    snprintf(q + n, 4, "%s", strlen(s) > 64 ? "..." : "");
    return q;
}

/* A string field: 1 and out, 0 absent (or null when null_ok), -1 when
 * not a string that fits. */
static int str_field(json_t *o, const char *key, int null_ok, char *out, size_t outlen)
{
    json_t *v = json_object_get(o, key);
    if (!v || (null_ok && json_is_null(v)))
        return 0;
    if (!json_is_string(v) || json_string_length(v) >= outlen ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 1;
}

/* Unix seconds: 1 and *out, 0 absent or null (when null_ok), -1 bad. */
static int time_field(json_t *o, const char *key, int null_ok, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || (null_ok && json_is_null(v)))
        return 0;
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 0 || x > (json_int_t)(1ll << 40))
        return -1;
    *out = (uint64_t)x;
    return 1;
}

static void parse_record(struct perr *e, json_t *o, size_t i, struct gw_apikey *k)
{
    static const char *const fields[] = {"id",   "sha256",  "tenant", "plan",
                                         "name", "created", "revoked"};
    char hex[80];
    memset(k, 0, sizeof(*k));
    if (!json_is_object(o)) {
        bad(e, "keys[%zu]: expected an object", i);
        return;
    }
    const char *f;
    json_t *v;
    json_object_foreach (o, f, v) {
        size_t j = 0;
        while (j < sizeof(fields) / sizeof(fields[0]) && strcmp(fields[j], f) != 0)
            j++;
        if (j == sizeof(fields) / sizeof(fields[0]))
            bad(e,
                "keys[%zu].%s: unknown field (expected id, sha256, tenant, plan, name, "
                "created, revoked)",
                i, shown(f, hex));
    }
    int r = str_field(o, "id", 0, k->id, sizeof(k->id));
    if (r == 0)
        bad(e, "keys[%zu].id: missing (required)", i);
    else if (r < 0 || !gw_apikey_id_ok(k->id))
        bad(e, "keys[%zu].id: expected 12 lowercase hex digits", i);
    r = str_field(o, "sha256", 0, hex, sizeof(hex));
    if (r == 0)
        bad(e, "keys[%zu].sha256: missing (required)", i);
    else if (r < 0 || strlen(hex) != 64 || !hex_ok(hex, 64))
        bad(e, "keys[%zu].sha256: expected 64 lowercase hex digits (the SHA-256 of the key)", i);
    else
        from_hex(hex, 64, k->sha256);
    r = str_field(o, "tenant", 0, k->tenant, sizeof(k->tenant));
    if (r == 0)
        bad(e, "keys[%zu].tenant: missing (required)", i);
    else if (r < 0 || !name_ok(k->tenant, "._@:-"))
        bad(e, "keys[%zu].tenant: expected 1 to 63 bytes of [A-Za-z0-9._@:-]", i);
    r = str_field(o, "plan", 1, k->plan, sizeof(k->plan));
    if (r < 0 || (r > 0 && !name_ok(k->plan, "._-")))
        bad(e, "keys[%zu].plan: expected null or 1 to 63 bytes of [A-Za-z0-9._-]", i);
    r = str_field(o, "name", 0, k->name, sizeof(k->name));
    if (r < 0 || !label_ok(k->name))
        bad(e, "keys[%zu].name: expected a string of 0 to %d bytes without control characters", i,
            GW_APIKEY_NAME_MAX);
    r = time_field(o, "created", 0, &k->created_s);
    if (r == 0 && !json_object_get(o, "created"))
        bad(e, "keys[%zu].created: missing (required)", i);
    else if (r <= 0)
        bad(e, "keys[%zu].created: expected Unix seconds (an integer >= 0)", i);
    r = time_field(o, "revoked", 1, &k->revoked_s);
    if (r < 0 || (r > 0 && k->revoked_s == 0))
        bad(e, "keys[%zu].revoked: expected null or Unix seconds (an integer > 0)", i);
}

static int by_id(const void *a, const void *b)
{
    const struct gw_apikey *x = *(const struct gw_apikey *const *)a;
    const struct gw_apikey *y = *(const struct gw_apikey *const *)b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x < y ? -1 : x > y);
}

/* Two records with one id: the later one is reported. */
static void check_unique(struct perr *e, struct gw_apikey_set *s)
{
    if (s->n < 2)
        return;
    struct gw_apikey **v = malloc((size_t)s->n * sizeof(*v));
    if (!v) {
        bad(e, "out of memory");
        return;
    }
    for (int i = 0; i < s->n; i++)
        v[i] = &s->keys[i];
    qsort(v, (size_t)s->n, sizeof(*v), by_id);
    for (int i = 1; i < s->n; i++)
        if (v[i]->id[0] && strcmp(v[i]->id, v[i - 1]->id) == 0)
            bad(e, "keys[%td].id: \"%s\" is also the id of keys[%td]", v[i] - s->keys, v[i]->id,
                v[i - 1] - s->keys);
    free(v);
}

int gw_apikeys_parse(const char *text, size_t len, const char *name, struct gw_apikey_set *out,
                     char *err, size_t errlen)
{
    struct perr e = {.buf = err, .cap = errlen, .name = name ? name : "api keys"};
    if (err && errlen)
        err[0] = '\0';
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        bad(&e, "line %d column %d: %s", je.line, je.column, je.text);
        return -EINVAL;
    }
    json_t *keys = json_object_get(root, "keys"), *ver = json_object_get(root, "version");
    if (!json_is_object(root)) {
        bad(&e, "expected a JSON object {\"version\": 1, \"keys\": [...]}");
        goto done;
    }
    const char *f;
    json_t *v;
    char q[80];
    json_object_foreach (root, f, v) {
        if (strcmp(f, "version") != 0 && strcmp(f, "keys") != 0)
            bad(&e, "%s: unknown field (expected version, keys)", shown(f, q));
    }
    if (!json_is_integer(ver) || json_integer_value(ver) != 1)
        bad(&e, "version: %s", ver ? "expected 1" : "missing (required: 1)");
    if (!keys) {
        bad(&e, "keys: missing (required: an array of at most %d keys)", GW_APIKEYS_MAX);
        goto done;
    }
    if (!json_is_array(keys) || json_array_size(keys) > GW_APIKEYS_MAX) {
        bad(&e, "keys: expected an array of at most %d keys", GW_APIKEYS_MAX);
        goto done;
    }
    size_t n = json_array_size(keys);
    out->keys = calloc(n ? n : 1, sizeof(*out->keys));
    if (!out->keys) {
        bad(&e, "out of memory");
        goto done;
    }
    size_t i;
    json_array_foreach (keys, i, v) {
        parse_record(&e, v, i, &out->keys[i]);
    }
    out->n = (int)n;
    check_unique(&e, out);
done:
    json_decref(root);
    if (e.count) {
        gw_apikeys_free(out);
        return -EINVAL;
    }
    return 0;
}

void gw_apikeys_free(struct gw_apikey_set *set)
{
    if (!set)
        return;
    free(set->keys);
    set->keys = NULL;
    set->n = 0;
}

/* Reads a whole regular file of at most FILE_MAX bytes; -ENOENT when it
 * does not exist. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int rc = -errno;
        if (rc != -ENOENT)
            gw_errf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        gw_errf(err, errlen, "%s: %s", path, strerror(-rc));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        gw_errf(err, errlen, "%s: not a regular file", path);
    } else if ((uint64_t)st.st_size > FILE_MAX) {
        rc = -EFBIG;
        gw_errf(err, errlen, "%s: larger than %u bytes; not an API keys file", path, FILE_MAX);
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        rc = -ENOMEM;
        gw_errf(err, errlen, "%s: out of memory", path);
    }
    size_t got = 0;
    while (!rc && got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            gw_errf(err, errlen, "%s: read: %s", path, strerror(-rc));
        }
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

int gw_apikeys_read(const char *path, struct gw_apikey_set *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (err && errlen)
        err[0] = '\0';
    char *text = NULL;
    size_t len = 0;
    int rc = read_file(path, &text, &len, err, errlen);
    if (rc == -ENOENT)
        return 0; /* no key made yet */
    if (rc)
        return rc;
    rc = gw_apikeys_parse(text, len, path, out, err, errlen);
    free(text);
    return rc;
}

/* ------------------------------------------------------------- writing */

static json_t *to_json(const struct gw_apikey_set *s)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < s->n; i++) {
        const struct gw_apikey *k = &s->keys[i];
        char hex[65];
        to_hex(k->sha256, 32, hex);
        json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:s,s:I,s:o}", "id", k->id, "sha256", hex, "tenant",
                              k->tenant, "plan", k->plan[0] ? json_string(k->plan) : json_null(),
                              "name", k->name, "created", (json_int_t)k->created_s, "revoked",
                              k->revoked_s ? json_integer((json_int_t)k->revoked_s) : json_null());
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr ? json_pack("{s:i,s:o}", "version", 1, "keys", arr) : NULL;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync of the directory that holds path: the rename itself is durable. */
static int sync_dir(const char *path, char *err, size_t errlen)
{
    char copy[300];
    snprintf(copy, sizeof(copy), "%s", path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 || fsync(fd) != 0 ? -errno : 0;
    if (fd >= 0)
        close(fd);
    if (rc)
        gw_errf(err, errlen, "%s: fsync of the directory: %s", dir, strerror(-rc));
    return rc;
}

int gw_apikeys_write(const char *path, const struct gw_apikey_set *set, char *err, size_t errlen)
{
    char tmp[300];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        gw_errf(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    json_t *root = to_json(set);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) {
        gw_errf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    /* O_TRUNC: a temp file a killed master left behind is simply reused */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    int rc = 0;
    if (fd < 0) {
        rc = -errno;
        gw_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(-rc));
        free(text);
        return rc;
    }
    if ((rc = write_all(fd, text, strlen(text))) != 0 || (rc = write_all(fd, "\n", 1)) != 0)
        gw_errf(err, errlen, "%s: write: %s", tmp, strerror(-rc));
    else if (fsync(fd) != 0)
        gw_errf(err, errlen, "%s: fsync: %s", tmp, strerror(-(rc = -errno)));
    free(text);
    if (close(fd) != 0 && !rc)
        gw_errf(err, errlen, "%s: close: %s", tmp, strerror(-(rc = -errno)));
    if (!rc && rename(tmp, path) != 0)
        gw_errf(err, errlen, "%s: cannot rename %s over it: %s", path, tmp,
                strerror(-(rc = -errno)));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    return sync_dir(path, err, errlen);
}

/* ------------------------------------------------------------ new keys */

struct gw_apikey *gw_apikeys_find(const struct gw_apikey_set *set, const char *id)
{
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->keys[i].id, id) == 0)
            return &set->keys[i];
    return NULL;
}

int gw_apikeys_add(struct gw_apikey_set *set, const char *tenant, const char *plan,
                   const char *name, uint64_t now_s, char *key)
{
    if (!name_ok(tenant, "._@:-") || (plan[0] && !name_ok(plan, "._-")) || !label_ok(name))
        return -EINVAL;
    if (set->n >= GW_APIKEYS_MAX)
        return GW_EFULL;
    unsigned char rnd[GW_APIKEY_ID_LEN / 2 + GW_APIKEY_SECRET_LEN / 2];
    char id[GW_APIKEY_ID_LEN + 1];
    int tries = 0;
    do { /* 48 random bits: a clash with 4096 ids is a 2^-36 chance; redraw */
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
            return errno ? -errno : -EIO;
        to_hex(rnd, GW_APIKEY_ID_LEN / 2, id);
    } while (gw_apikeys_find(set, id) && ++tries < 16);
    if (gw_apikeys_find(set, id))
        return -EEXIST;
    struct gw_apikey *nk = realloc(set->keys, (size_t)(set->n + 1) * sizeof(*nk));
    if (!nk)
        return -ENOMEM;
    set->keys = nk;
    struct gw_apikey *k = &nk[set->n];
    memset(k, 0, sizeof(*k));
    memcpy(k->id, id, sizeof(k->id));
    char secret[GW_APIKEY_SECRET_LEN + 1];
    to_hex(rnd + GW_APIKEY_ID_LEN / 2, GW_APIKEY_SECRET_LEN / 2, secret);
    snprintf(key, GW_APIKEY_LEN + 1, GW_APIKEY_PREFIX "%s-%s", id, secret);
    explicit_bzero(secret, sizeof(secret));
    explicit_bzero(rnd, sizeof(rnd));
    if (sha256(key, GW_APIKEY_LEN, k->sha256) != 0) {
        explicit_bzero(key, GW_APIKEY_LEN + 1);
        return -EIO;
    }
    snprintf(k->tenant, sizeof(k->tenant), "%s", tenant);
    snprintf(k->plan, sizeof(k->plan), "%s", plan);
    snprintf(k->name, sizeof(k->name), "%s", name);
    k->created_s = now_s;
    set->n++;
    return 0;
}

/* ---------------------------------------------- the master's live copy */

int gw_apikeys_live_path(const struct gw_config *cfg, char *out, size_t len)
{
    if (!cfg->api_keys_file[0]) {
        snprintf(out, len, "%s", "");
        return 0;
    }
    int n = snprintf(out, len, "%s/api-keys.live.json", cfg->state_dir[0] ? cfg->state_dir : ".");
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int gw_apikeys_publish(struct gw_segment *seg, const struct gw_config *cfg,
                       const struct gw_apikey_set *set, char *err, size_t errlen)
{
    char live[300];
    if (gw_apikeys_live_path(cfg, live, sizeof(live)) != 0) {
        gw_errf(err, errlen, "state_dir %s: path too long", cfg->state_dir);
        return -ENAMETOOLONG;
    }
    if (!live[0])
        return 0; /* API keys off: nothing to publish */
    int rc = gw_apikeys_write(live, set, err, errlen);
    if (rc == 0)
        gw_apikey_gen_bump(seg); /* after the rename: a front that sees it reads the new copy */
    return rc;
}

int gw_apikeys_load_publish(struct gw_segment *seg, const struct gw_config *cfg, char *err,
                            size_t errlen)
{
    struct gw_apikey_set set = {0};
    if (!cfg->api_keys_file[0])
        return 0;
    int rc = gw_apikeys_read(cfg->api_keys_file, &set, err, errlen);
    if (rc == 0)
        rc = gw_apikeys_publish(seg, cfg, &set, err, errlen);
    gw_apikeys_free(&set);
    return rc;
}

/* ------------------------------------------------------ a front's check */

struct gw_apikeys {
    int loaded;
    uint64_t gen;   /* the segment's generation the copy was read at */
    char path[300]; /* the file it was read from */
    struct gw_apikey_set set;
    struct gw_apikey **by_id; /* set's records sorted by id */
};

int gw_apikeys_new(struct gw_apikeys **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : -ENOMEM;
}

static void unload(struct gw_apikeys *v)
{
    gw_apikeys_free(&v->set);
    free(v->by_id);
    v->by_id = NULL;
    v->loaded = 0;
}

void gw_apikeys_drop(struct gw_apikeys *v)
{
    if (!v)
        return;
    unload(v);
    free(v);
}

/* Re-reads the file when the generation moved or the path changed. The
 * generation is read before the file, so a rewrite that lands between the
 * two only makes the next check read the file again. */
static int refresh(struct gw_apikeys *v, const struct gw_segment *seg, const char *path, char *why,
                   size_t whylen)
{
    uint64_t g = gw_apikey_gen(seg);
    if (v->loaded && g == v->gen && strcmp(v->path, path) == 0)
        return 0;
    unload(v);
    char err[512];
    int rc = gw_apikeys_read(path, &v->set, err, sizeof(err));
    if (rc == 0 && v->set.n > 0 && !(v->by_id = malloc((size_t)v->set.n * sizeof(*v->by_id)))) {
        gw_apikeys_free(&v->set);
        snprintf(err, sizeof(err), "%s: out of memory", path);
        rc = -ENOMEM;
    }
    if (rc) {
        char *nl = strchr(err, '\n'); /* the first mistake is enough for the log */
        if (nl)
            *nl = '\0';
        snprintf(why, whylen, "%s", err);
        return -EAGAIN;
    }
    for (int i = 0; i < v->set.n; i++)
        v->by_id[i] = &v->set.keys[i];
    if (v->set.n > 1)
        qsort(v->by_id, (size_t)v->set.n, sizeof(*v->by_id), by_id);
    v->gen = g;
    snprintf(v->path, sizeof(v->path), "%s", path);
    v->loaded = 1;
    return 0;
}

static const struct gw_apikey *lookup(const struct gw_apikeys *v, const char *id)
{
    size_t lo = 0, hi = (size_t)v->set.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v->by_id[mid]->id, id);
        if (c == 0)
            return v->by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int refuse(char *why, size_t whylen, const char *text)
{
    snprintf(why, whylen, "%s", text);
    return -EACCES;
}

int gw_apikeys_check(struct gw_apikeys *v, const struct gw_segment *seg,
                     const struct gw_config *cfg, const char *authz, size_t len,
                     struct gw_principal *who, char *key_id, char *why, size_t whylen)
{
    key_id[0] = why[0] = '\0';
    /* "Bearer" is case-insensitive (RFC 7235), then spaces, as auth.c reads it */
    if (!authz || len < 7 || strncasecmp(authz, "Bearer ", 7) != 0)
        return 1;
    const char *t = authz + 7;
    size_t n = len - 7;
    while (n && (*t == ' ' || *t == '\t'))
        t++, n--;
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n < 3 || memcmp(t, "sk-", 3) != 0)
        return 1;
    char path[300];
    if (!cfg->api_keys_file[0])
        return refuse(why, whylen, "api keys are not enabled on this node");
    if (gw_apikeys_live_path(cfg, path, sizeof(path)) != 0) {
        snprintf(why, whylen, "state_dir %s: path too long", cfg->state_dir);
        return -EAGAIN;
    }
    if (n != GW_APIKEY_LEN || memcmp(t, GW_APIKEY_PREFIX, PREFIX_LEN) != 0 ||
        !hex_ok(t + PREFIX_LEN, GW_APIKEY_ID_LEN) || t[PREFIX_LEN + GW_APIKEY_ID_LEN] != '-' ||
        !hex_ok(t + PREFIX_LEN + GW_APIKEY_ID_LEN + 1, GW_APIKEY_SECRET_LEN))
        return refuse(why, whylen, "malformed api key");
    memcpy(key_id, t + PREFIX_LEN, GW_APIKEY_ID_LEN);
    key_id[GW_APIKEY_ID_LEN] = '\0';
    int rc = refresh(v, seg, path, why, whylen);
    if (rc)
        return rc;
    const struct gw_apikey *k = lookup(v, key_id);
    unsigned char d[32];
    if (sha256(t, n, d) != 0) {
        snprintf(why, whylen, "SHA-256 failed (OpenSSL)");
        return -EAGAIN;
    }
    /* the secret decides, in constant time; an unknown id and a wrong
     * secret read the same to the caller */
    if (!k || CRYPTO_memcmp(d, k->sha256, sizeof(d)) != 0)
        return refuse(why, whylen, "unknown api key");
    if (k->revoked_s)
        return refuse(why, whylen, "revoked api key");
    memset(who, 0, sizeof(*who));
    snprintf(who->tenant, sizeof(who->tenant), "%s", k->tenant);
    snprintf(who->plan, sizeof(who->plan), "%s", k->plan);
    snprintf(who->kid, sizeof(who->kid), "apikey");
    return 0;
}
