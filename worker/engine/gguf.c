/* gguf.c: read-only GGUF loader (versions 2 and 3).
 *
 * The file is untrusted. The parser walks it with one cursor; every read
 * goes through need(), which checks the bytes are there with arithmetic that
 * cannot overflow (n <= size - pos, never pos + n <= size). Every allocation
 * is made only after the count it is sized from has been checked against the
 * bytes left in the file, so memory use is bounded by a small multiple of
 * the file size whatever the file says.
 */
#include "gw_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian fields with memcpy; port it before using a big-endian host"
#endif

#define GGUF_HEADER_BYTES 24
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NESTING 8

struct gw_gguf_value {
    uint32_t type;
    uint32_t elem_type; /* ARRAY: type of the elements */
    uint64_t n;         /* ARRAY: element count */
    const uint8_t *p;   /* scalar: its bytes; STRING: its bytes; ARRAY: first element */
    uint64_t len;       /* STRING: byte length */
    const void *data;   /* numeric ARRAY: aligned elements (p or copy) */
    void *copy;         /* numeric ARRAY: owned aligned copy when p was misaligned */
    uint64_t *str_off;  /* ARRAY of STRING: file offset of each element's u64 length */
    gw_gguf_value *sub; /* ARRAY of ARRAY: the n element values */
};

struct gw_kv {
    const char *key;
    size_t key_len;
    gw_gguf_value v;
};

struct gw_gguf {
    char *name;
    const uint8_t *base;
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_off;
    size_t n_kv;
    struct gw_kv *kv;
    size_t n_tensors;
    gw_gguf_tensor *tensors;
};

/* Parser state: the cursor and the context of the current error message. */
struct cur {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    const char *name;
    char ctx[160]; /* "kv 3 \"general.name\"" or "tensor 2 \"x\"" */
    char *err;
    size_t errlen;
};

static void fail(struct cur *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct cur *c, const char *fmt, ...)
{
    if (!c->err || c->errlen == 0)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->ctx[0])
        snprintf(c->err, c->errlen, "%s: %s: %s", c->name, c->ctx, msg);
    else
        snprintf(c->err, c->errlen, "%s: %s", c->name, msg);
}

/* Sets the message context; a name from the file is cut at 64 bytes and
 * printed as is between quotes. */
static void set_ctx(struct cur *c, const char *what, uint64_t i, const char *nm, size_t nlen)
{
    if (nm)
        snprintf(c->ctx, sizeof c->ctx, "%s %" PRIu64 " \"%.*s\"", what, i,
                 (int)(nlen > 64 ? 64 : nlen), nm);
    else
        snprintf(c->ctx, sizeof c->ctx, "%s %" PRIu64, what, i);
}

/* True when n more bytes are available at the cursor; otherwise writes
 * "<what> at offset P runs past end of file (S bytes)". */
static bool need(struct cur *c, uint64_t n, const char *what)
{
    if (c->pos <= c->size && n <= c->size - c->pos)
        return true;
    fail(c, "%s at offset %" PRIu64 " runs past end of file (%" PRIu64 " bytes)", what, c->pos,
         c->size);
    return false;
}

static uint32_t rd_u32(struct cur *c)
{
    uint32_t v;
    memcpy(&v, c->base + c->pos, 4);
    c->pos += 4;
    return v;
}

static uint64_t rd_u64(struct cur *c)
{
    uint64_t v;
    memcpy(&v, c->base + c->pos, 8);
    c->pos += 8;
    return v;
}

/* Reads a GGUF string (u64 length + bytes). */
static bool rd_str(struct cur *c, const char *what, const uint8_t **s, uint64_t *len)
{
    char w[96];
    snprintf(w, sizeof w, "%s length", what);
    if (!need(c, 8, w))
        return false;
    uint64_t n = rd_u64(c);
    snprintf(w, sizeof w, "%s of %" PRIu64 " bytes", what, n);
    if (!need(c, n, w))
        return false;
    *s = c->base + c->pos;
    *len = n;
    c->pos += n;
    return true;
}

/* Size in bytes of a fixed-size value type, 0 for STRING/ARRAY/unknown. */
static uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case GW_GGUF_U8:
    case GW_GGUF_I8:
    case GW_GGUF_BOOL:
        return 1;
    case GW_GGUF_U16:
    case GW_GGUF_I16:
        return 2;
    case GW_GGUF_U32:
    case GW_GGUF_I32:
    case GW_GGUF_F32:
        return 4;
    case GW_GGUF_U64:
    case GW_GGUF_I64:
    case GW_GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

static const char *value_type_name(uint32_t t)
{
    static const char *const names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static void value_free(gw_gguf_value *v)
{
    if (v->type != GW_GGUF_ARRAY)
        return;
    free(v->copy);
    free(v->str_off);
    if (v->sub) {
        for (uint64_t i = 0; i < v->n; i++)
            value_free(&v->sub[i]);
        free(v->sub);
    }
    memset(v, 0, sizeof *v);
}

static int parse_value(struct cur *c, uint32_t type, gw_gguf_value *v, int depth);

/* Elements of an array whose header (type, count) has been read. */
static int parse_array_body(struct cur *c, gw_gguf_value *v, int depth)
{
    char w[96];
    uint32_t et = v->elem_type;
    uint64_t n = v->n;
    uint64_t left = c->pos <= c->size ? c->size - c->pos : 0;
    v->p = c->base + c->pos;

    uint64_t es = scalar_size(et);
    if (es) {
        if (n > left / es) {
            fail(c,
                 "array of %" PRIu64 " %s at offset %" PRIu64 " runs past end of file (%" PRIu64
                 " bytes)",
                 n, value_type_name(et), c->pos, c->size);
            return -EINVAL;
        }
        v->data = v->p;
        if (n && ((uintptr_t)v->p % es) != 0) {
            /* Unaligned in the file: an aligned copy lets callers read
             * const float * / const int32_t * without undefined behaviour. */
            v->copy = malloc(n * es);
            if (!v->copy) {
                fail(c, "out of memory");
                return -ENOMEM;
            }
            memcpy(v->copy, v->p, n * es);
            v->data = v->copy;
        }
        c->pos += n * es;
        return 0;
    }
    if (et == GW_GGUF_STRING) {
        if (n > left / 8) { /* each string has at least its 8-byte length */
            fail(c,
                 "array of %" PRIu64 " strings at offset %" PRIu64
                 " runs past end of file (%" PRIu64 " bytes)",
                 n, c->pos, c->size);
            return -EINVAL;
        }
        v->str_off = malloc((n ? n : 1) * sizeof *v->str_off);
        if (!v->str_off) {
            fail(c, "out of memory");
            return -ENOMEM;
        }
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *s;
            uint64_t len;
            v->str_off[i] = c->pos;
            snprintf(w, sizeof w, "element %" PRIu64 ": string", i);
            if (!rd_str(c, w, &s, &len))
                return -EINVAL;
        }
        return 0;
    }
    if (et == GW_GGUF_ARRAY) {
        if (depth + 1 > GGUF_MAX_NESTING) {
            fail(c, "arrays nested deeper than %d", GGUF_MAX_NESTING);
            return -EINVAL;
        }
        if (n > left / 12) { /* each element has at least its type and count */
            fail(c,
                 "array of %" PRIu64 " arrays at offset %" PRIu64 " runs past end of file (%" PRIu64
                 " bytes)",
                 n, c->pos, c->size);
            return -EINVAL;
        }
        v->sub = calloc(n ? n : 1, sizeof *v->sub);
        if (!v->sub) {
            fail(c, "out of memory");
            return -ENOMEM;
        }
        for (uint64_t i = 0; i < n; i++) {
            int rc = parse_value(c, GW_GGUF_ARRAY, &v->sub[i], depth + 1);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    fail(c, "unknown array element type %" PRIu32, et);
    return -EINVAL;
}

/* Parses one value of the given type at the cursor into v. */
static int parse_value(struct cur *c, uint32_t type, gw_gguf_value *v, int depth)
{
    char w[96];
    memset(v, 0, sizeof *v);
    v->type = type;
    uint64_t es = scalar_size(type);
    if (es) {
        snprintf(w, sizeof w, "%s value", value_type_name(type));
        if (!need(c, es, w))
            return -EINVAL;
        v->p = c->base + c->pos;
        c->pos += es;
        return 0;
    }
    if (type == GW_GGUF_STRING)
        return rd_str(c, "string", &v->p, &v->len) ? 0 : -EINVAL;
    if (type == GW_GGUF_ARRAY) {
        if (!need(c, 12, "array header"))
            return -EINVAL;
        v->elem_type = rd_u32(c);
        v->n = rd_u64(c);
        return parse_array_body(c, v, depth);
    }
    fail(c, "unknown value type %" PRIu32, type);
    return -EINVAL;
}

/* Block size (elements) and block bytes of the ggml types we know. */
static bool type_block(uint32_t t, uint64_t *blck, uint64_t *bytes)
{
    static const struct {
        uint32_t t;
        uint16_t blck, bytes;
    } tab[] = {
        {GW_T_F32, 1, 4},      {GW_T_F16, 1, 2},      {GW_T_Q4_0, 32, 18},   {GW_T_Q4_1, 32, 20},
        {GW_T_Q5_0, 32, 22},   {GW_T_Q5_1, 32, 24},   {GW_T_Q8_0, 32, 34},   {GW_T_Q8_1, 32, 36},
        {GW_T_Q2_K, 256, 84},  {GW_T_Q3_K, 256, 110}, {GW_T_Q4_K, 256, 144}, {GW_T_Q5_K, 256, 176},
        {GW_T_Q6_K, 256, 210}, {GW_T_Q8_K, 256, 292}, {GW_T_I8, 1, 1},       {GW_T_I16, 1, 2},
        {GW_T_I32, 1, 4},      {GW_T_I64, 1, 8},      {GW_T_F64, 1, 8},      {GW_T_BF16, 1, 2},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (tab[i].t == t) {
            *blck = tab[i].blck;
            *bytes = tab[i].bytes;
            return true;
        }
    }
    return false;
}

const char *gw_ggml_type_name(uint32_t type)
{
    switch (type) {
    case GW_T_F32:
        return "F32";
    case GW_T_F16:
        return "F16";
    case GW_T_Q4_0:
        return "Q4_0";
    case GW_T_Q4_1:
        return "Q4_1";
    case GW_T_Q5_0:
        return "Q5_0";
    case GW_T_Q5_1:
        return "Q5_1";
    case GW_T_Q8_0:
        return "Q8_0";
    case GW_T_Q8_1:
        return "Q8_1";
    case GW_T_Q2_K:
        return "Q2_K";
    case GW_T_Q3_K:
        return "Q3_K";
    case GW_T_Q4_K:
        return "Q4_K";
    case GW_T_Q5_K:
        return "Q5_K";
    case GW_T_Q6_K:
        return "Q6_K";
    case GW_T_Q8_K:
        return "Q8_K";
    case GW_T_I8:
        return "I8";
    case GW_T_I16:
        return "I16";
    case GW_T_I32:
        return "I32";
    case GW_T_I64:
        return "I64";
    case GW_T_F64:
        return "F64";
    case GW_T_BF16:
        return "BF16";
    default:
        return NULL;
    }
}

static int parse_tensor(struct cur *c, gw_gguf_tensor *t, uint64_t i)
{
    const uint8_t *nm;
    uint64_t nlen;
    set_ctx(c, "tensor", i, NULL, 0);
    if (!rd_str(c, "name", &nm, &nlen))
        return -EINVAL;
    t->name = (const char *)nm;
    t->name_len = nlen;
    set_ctx(c, "tensor", i, t->name, nlen);
    if (!need(c, 4, "n_dims"))
        return -EINVAL;
    t->n_dims = rd_u32(c);
    if (t->n_dims < 1 || t->n_dims > 4) {
        fail(c, "n_dims %" PRIu32 " not in 1..4", t->n_dims);
        return -EINVAL;
    }
    if (!need(c, 8ull * t->n_dims, "shape"))
        return -EINVAL;
    for (int d = 0; d < 4; d++)
        t->ne[d] = d < (int)t->n_dims ? rd_u64(c) : 1;
    if (!need(c, 12, "type and offset"))
        return -EINVAL;
    t->type = rd_u32(c);
    t->offset = rd_u64(c);
    return 0;
}

/* Checks a tensor's type, shape and data range once the data section is
 * known, and sets nbytes and data. */
static int check_tensor(struct cur *c, const gw_gguf *g, gw_gguf_tensor *t, uint64_t i)
{
    uint64_t blck, bb;
    set_ctx(c, "tensor", i, t->name, t->name_len);
    if (!type_block(t->type, &blck, &bb)) {
        fail(c, "unknown type %" PRIu32, t->type);
        return -EINVAL;
    }
    if (t->ne[0] % blck != 0) {
        fail(c, "ne[0] %" PRIu64 " is not a multiple of the block size %" PRIu64 " of %s", t->ne[0],
             blck, gw_ggml_type_name(t->type));
        return -EINVAL;
    }
    uint64_t nelem = 1;
    for (int d = 0; d < 4; d++) {
        if (t->ne[d] != 0 && nelem > UINT64_MAX / t->ne[d]) {
            fail(c, "element count overflows 64 bits");
            return -EINVAL;
        }
        nelem *= t->ne[d];
    }
    uint64_t nblocks = nelem / blck;
    if (nblocks > UINT64_MAX / bb) {
        fail(c, "byte size overflows 64 bits");
        return -EINVAL;
    }
    t->nbytes = nblocks * bb;
    if (t->offset % g->alignment != 0) {
        fail(c, "offset %" PRIu64 " is not a multiple of the alignment %" PRIu64, t->offset,
             g->alignment);
        return -EINVAL;
    }
    uint64_t room = g->data_off <= g->size ? g->size - g->data_off : 0;
    if (t->offset > room || t->nbytes > room - t->offset) {
        uint64_t abs_off =
            t->offset > UINT64_MAX - g->data_off ? UINT64_MAX : g->data_off + t->offset;
        fail(c,
             "data [offset %" PRIu64 ", %" PRIu64 " bytes) runs past end of file (%" PRIu64
             " bytes)",
             abs_off, t->nbytes, g->size);
        return -EINVAL;
    }
    t->data = g->base + g->data_off + t->offset;
    return 0;
}

static int parse(gw_gguf *g, char *err, size_t errlen)
{
    struct cur c = {
        .base = g->base, .size = g->size, .name = g->name, .err = err, .errlen = errlen};
    int rc;
    if (g->size < GGUF_HEADER_BYTES) {
        fail(&c, "truncated header: %" PRIu64 " bytes, a GGUF header has %d", g->size,
             GGUF_HEADER_BYTES);
        return -EINVAL;
    }
    if (memcmp(g->base, "GGUF", 4) != 0) {
        fail(&c, "not a GGUF file (magic %02x %02x %02x %02x)", g->base[0], g->base[1], g->base[2],
             g->base[3]);
        return -EINVAL;
    }
    c.pos = 4;
    g->version = rd_u32(&c);
    if (g->version != 2 && g->version != 3) {
        fail(&c, "GGUF version %" PRIu32 " not supported (only 2 and 3)", g->version);
        return -EINVAL;
    }
    uint64_t n_tensors = rd_u64(&c);
    uint64_t n_kv = rd_u64(&c);
    uint64_t left = g->size - c.pos;
    /* A kv pair takes at least 13 bytes (key length, type, one value byte). */
    if (n_kv > left / 13) {
        fail(&c, "kv count %" PRIu64 " cannot fit in the file (%" PRIu64 " bytes)", n_kv, g->size);
        return -EINVAL;
    }
    if (!(g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv))) {
        fail(&c, "out of memory");
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gw_kv *kv = &g->kv[i];
        const uint8_t *key;
        uint64_t klen;
        set_ctx(&c, "kv", i, NULL, 0);
        if (!rd_str(&c, "key", &key, &klen))
            return -EINVAL;
        kv->key = (const char *)key;
        kv->key_len = klen;
        set_ctx(&c, "kv", i, kv->key, klen);
        if (!need(&c, 4, "value type"))
            return -EINVAL;
        uint32_t type = rd_u32(&c);
        g->n_kv = i + 1; /* from here on kv->v is freed by close */
        if ((rc = parse_value(&c, type, &kv->v, 0)) < 0)
            return rc;
    }
    /* A tensor info takes at least 32 bytes (name length, n_dims, one
     * dimension, type, offset). */
    c.ctx[0] = 0;
    if (n_tensors > (g->size - c.pos) / 32) {
        fail(&c, "tensor count %" PRIu64 " cannot fit in the file (%" PRIu64 " bytes)", n_tensors,
             g->size);
        return -EINVAL;
    }
    if (!(g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors))) {
        fail(&c, "out of memory");
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((rc = parse_tensor(&c, &g->tensors[i], i)) < 0)
            return rc;
    }
    g->n_tensors = n_tensors;
    c.ctx[0] = 0;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gw_gguf_value *al = gw_gguf_find(g, "general.alignment");
    if (al) {
        int64_t a;
        if (gw_gguf_value_int(al, &a) < 0) {
            fail(&c, "general.alignment has type %s, expected an integer",
                 value_type_name(al->type));
            return -EINVAL;
        }
        if (a <= 0 || (a & (a - 1)) != 0) {
            fail(&c, "general.alignment %" PRId64 " is not a power of two", a);
            return -EINVAL;
        }
        g->alignment = (uint64_t)a;
    }
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_off = c.pos + pad; /* c.pos <= size < 2^63, no overflow */
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((rc = check_tensor(&c, g, &g->tensors[i], i)) < 0)
            return rc;
    }
    return 0;
}

static int open_common(gw_gguf *g, char *err, size_t errlen, gw_gguf **out)
{
    int rc = parse(g, err, errlen);
    if (rc < 0) {
        gw_gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int gw_gguf_open_buffer(const void *buf, size_t len, const char *name, gw_gguf **out, char *err,
                        size_t errlen)
{
    if (!out || (!buf && len) || !name)
        return -EINVAL;
    *out = NULL;
    gw_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name))) {
        free(g);
        if (errlen)
            snprintf(err, errlen, "%s: out of memory", name);
        return -ENOMEM;
    }
    g->base = buf;
    g->size = len;
    return open_common(g, err, errlen, out);
}

int gw_gguf_open(const char *path, gw_gguf **out, char *err, size_t errlen)
{
    if (!out || !path)
        return -EINVAL;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        if (errlen)
            snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        if (errlen)
            snprintf(err, errlen, "%s: not a regular file", path);
        return -EINVAL;
    }
    gw_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(path))) {
        free(g);
        close(fd);
        if (errlen)
            snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    g->size = (uint64_t)st.st_size;
    if (g->size > 0) {
        void *m = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(g->name);
            free(g);
            if (errlen)
                snprintf(err, errlen, "%s: cannot map: %s", path, strerror(e));
            return -e;
        }
        g->base = m;
        g->mapped = true;
    } else {
        g->base = (const uint8_t *)"";
    }
    close(fd);
    return open_common(g, err, errlen, out);
}

void gw_gguf_close(gw_gguf *g)
{
    if (!g)
        return;
    if (g->kv)
        for (size_t i = 0; i < g->n_kv; i++)
            value_free(&g->kv[i].v);
    free(g->kv);
    free(g->tensors);
    if (g->mapped)
        munmap((void *)g->base, (size_t)g->size);
    free(g->name);
    free(g);
}

void gw_gguf_release(const gw_gguf *g, const void *p, size_t len)
{
    if (!g->mapped || len == 0)
        return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1), e = ((uintptr_t)p + len) & ~(pg - 1);
    if (a < e) /* clean pages of a read-only mapping: dropping them loses nothing */
        madvise((void *)a, e - a, MADV_DONTNEED);
}

const char *gw_gguf_name(const gw_gguf *g)
{
    return g->name;
}

uint32_t gw_gguf_version(const gw_gguf *g)
{
    return g->version;
}

uint64_t gw_gguf_alignment(const gw_gguf *g)
{
    return g->alignment;
}

size_t gw_gguf_kv_count(const gw_gguf *g)
{
    return g->n_kv;
}

const gw_gguf_value *gw_gguf_kv_at(const gw_gguf *g, size_t i, const char **key, size_t *key_len)
{
    if (i >= g->n_kv)
        return NULL;
    if (key)
        *key = g->kv[i].key;
    if (key_len)
        *key_len = g->kv[i].key_len;
    return &g->kv[i].v;
}

const gw_gguf_value *gw_gguf_find(const gw_gguf *g, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0)
            return &g->kv[i].v;
    return NULL;
}

uint32_t gw_gguf_value_type(const gw_gguf_value *v)
{
    return v->type;
}

int gw_gguf_value_int(const gw_gguf_value *v, int64_t *out)
{
    const uint8_t *p = v->p;
    switch (v->type) {
    case GW_GGUF_U8:
        *out = p[0];
        return 0;
    case GW_GGUF_I8:
        *out = (int8_t)p[0];
        return 0;
    case GW_GGUF_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        *out = x;
        return 0;
    }
    case GW_GGUF_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        *out = x;
        return 0;
    }
    case GW_GGUF_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        *out = x;
        return 0;
    }
    case GW_GGUF_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        *out = x;
        return 0;
    }
    case GW_GGUF_I64: {
        int64_t x;
        memcpy(&x, p, 8);
        *out = x;
        return 0;
    }
    case GW_GGUF_U64: {
        uint64_t x;
        memcpy(&x, p, 8);
        if (x > INT64_MAX)
            return -ERANGE;
        *out = (int64_t)x;
        return 0;
    }
    default:
        return -EINVAL;
    }
}

int gw_gguf_value_f32(const gw_gguf_value *v, float *out)
{
    if (v->type == GW_GGUF_F32) {
        memcpy(out, v->p, 4);
        return 0;
    }
    if (v->type == GW_GGUF_F64) {
        double d;
        memcpy(&d, v->p, 8);
        *out = (float)d;
        return 0;
    }
    return -EINVAL;
}

int gw_gguf_value_bool(const gw_gguf_value *v, bool *out)
{
    if (v->type != GW_GGUF_BOOL)
        return -EINVAL;
    *out = v->p[0] != 0;
    return 0;
}

int gw_gguf_value_str(const gw_gguf_value *v, const char **s, size_t *len)
{
    if (v->type != GW_GGUF_STRING)
        return -EINVAL;
    *s = (const char *)v->p;
    *len = (size_t)v->len;
    return 0;
}

int gw_gguf_get_int(const gw_gguf *g, const char *key, int64_t *out)
{
    const gw_gguf_value *v = gw_gguf_find(g, key);
    return v ? gw_gguf_value_int(v, out) : -ENOENT;
}

int gw_gguf_get_f32(const gw_gguf *g, const char *key, float *out)
{
    const gw_gguf_value *v = gw_gguf_find(g, key);
    return v ? gw_gguf_value_f32(v, out) : -ENOENT;
}

int gw_gguf_get_bool(const gw_gguf *g, const char *key, bool *out)
{
    const gw_gguf_value *v = gw_gguf_find(g, key);
    return v ? gw_gguf_value_bool(v, out) : -ENOENT;
}

int gw_gguf_get_str(const gw_gguf *g, const char *key, const char **s, size_t *len)
{
    const gw_gguf_value *v = gw_gguf_find(g, key);
    return v ? gw_gguf_value_str(v, s, len) : -ENOENT;
}

uint64_t gw_gguf_arr_len(const gw_gguf_value *v)
{
    return v->type == GW_GGUF_ARRAY ? v->n : 0;
}

uint32_t gw_gguf_arr_type(const gw_gguf_value *v)
{
    return v->type == GW_GGUF_ARRAY ? v->elem_type : UINT32_MAX;
}

const void *gw_gguf_arr_data(const gw_gguf_value *v)
{
    return v->type == GW_GGUF_ARRAY ? v->data : NULL;
}

int gw_gguf_arr_str(const gw_gguf_value *v, uint64_t i, const char **s, size_t *len)
{
    if (v->type != GW_GGUF_ARRAY || v->elem_type != GW_GGUF_STRING)
        return -EINVAL;
    if (i >= v->n)
        return -ERANGE;
    /* The offset was validated at open: 8 length bytes then len bytes. */
    const uint8_t *p = v->p + (v->str_off[i] - v->str_off[0]);
    uint64_t n;
    memcpy(&n, p, 8);
    *s = (const char *)(p + 8);
    *len = (size_t)n;
    return 0;
}

const gw_gguf_value *gw_gguf_arr_arr(const gw_gguf_value *v, uint64_t i)
{
    if (v->type != GW_GGUF_ARRAY || v->elem_type != GW_GGUF_ARRAY || i >= v->n)
        return NULL;
    return &v->sub[i];
}

size_t gw_gguf_tensor_count(const gw_gguf *g)
{
    return g->n_tensors;
}

const gw_gguf_tensor *gw_gguf_tensor_at(const gw_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const gw_gguf_tensor *gw_gguf_find_tensor(const gw_gguf *g, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name_len == n && memcmp(g->tensors[i].name, name, n) == 0)
            return &g->tensors[i];
    return NULL;
}
