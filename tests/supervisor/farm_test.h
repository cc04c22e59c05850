/* farm_test.h - the farm tests' shared steps (issue 19): three nodes on
 * loopback against a redis-server of the test's own (farm.h), bursts of
 * requests sent round-robin, the nodes' cluster state and gpuwardenctl's
 * view, and Redis's farm-wide cells read directly. For test_cluster.c and
 * test_cluster_global.c; include it after cmocka.h. The including file
 * defines node_config (its plans and cluster section). */
#ifndef GW_TEST_FARM_TEST_H
#define GW_TEST_FARM_TEST_H

#include "farm.h"

#include <hiredis/hiredis.h>
#include <jansson.h>

#define NODES 3

static struct svc nodes[NODES];

/* Writes node i's config: Redis at redis_addr (NULL: no cluster). */
static void node_config(struct svc *s, int i, const char *redis_addr, const char *pass);

static inline void cluster_status(const struct svc *s, struct gw_cl_status *st)
{
    assert_int_equal(farm_cluster_status(s, st), 0);
}

static const char body1[] = "{\"model\":\"smollm2\",\"prompt\":\"Hi\",\"max_tokens\":1}";
static const char *body = body1;
/* The completion tokens the admitted answers of every burst reported. */
static long burst_tokens;

/* usage.completion_tokens of an answer's body (0 when it has none). */
static inline long completion_tokens(const char *b)
{
    json_error_t je;
    json_t *r = json_loads(b, 0, &je);
    long n =
        (long)json_integer_value(json_object_get(json_object_get(r, "usage"), "completion_tokens"));
    json_decref(r);
    return n;
}

/* n requests of `tenant`, sent to the nodes in `which` round-robin, all on
 * their own connections before any answer is read (so they arrive within
 * one GCRA interval); counts the statuses. */
static inline void burst(const char *tenant, int n, const int *which, int n_which, int *ok,
                         int *r429, int *r503, int *other, char *first_refusal, size_t frlen)
{
    int fds[64];
    char *tok[NODES];
    for (int i = 0; i < NODES; i++)
        tok[i] = svc_token(&nodes[i], tenant, 300);
    *ok = *r429 = *r503 = *other = 0;
    for (int k = 0; k < n; k++) {
        int i = which[k % n_which];
        fds[k] = svc_connect(&nodes[i]);
        assert_true(fds[k] >= 0);
        char head[1024];
        int len = snprintf(head, sizeof(head),
                           "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                           "Authorization: Bearer %s\r\n\r\n%s",
                           strlen(body), tok[i], body);
        send_all(fds[k], head, (size_t)len);
    }
    for (int k = 0; k < n; k++) {
        struct resp r;
        assert_int_equal(svc_read(fds[k], &r, SVC_DEADLINE_MS), 0);
        close(fds[k]);
        if (r.status == 200) {
            (*ok)++;
            burst_tokens += completion_tokens(r.body);
        } else if (r.status == 429)
            (*r429)++;
        else if (r.status == 503)
            (*r503)++;
        else
            (*other)++;
        if (r.status != 200 && first_refusal && !first_refusal[0])
            snprintf(first_refusal, frlen, "%d %s", r.status, r.body);
        resp_free(&r);
    }
    for (int i = 0; i < NODES; i++)
        free(tok[i]);
}

/* Round-robin load until the farm refuses: bursts of `per_burst` requests
 * of `tenant` with request body b over all nodes, until a burst is refused
 * and one more burst after it (at most 12 bursts); no 503 and no other
 * status. Adds to *admitted and *refused, keeps the first refusal's status
 * and body, and returns the seconds it took. */
static inline double load_until_refused(const char *tenant, int per_burst, const char *b,
                                        int *admitted, int *refused, char *refusal, size_t len)
{
    int all[NODES] = {0, 1, 2}, rounds = 0, after = -1;
    uint64_t t0 = svc_now_ms();
    body = b;
    while (rounds < 12 && after != 0) {
        int ok, r429, r503, other;
        burst(tenant, per_burst, all, NODES, &ok, &r429, &r503, &other, refusal, len);
        assert_int_equal(r503 + other, 0);
        *admitted += ok;
        *refused += r429;
        rounds++;
        if (*refused > 0)
            after = after < 0 ? 1 : after - 1;
    }
    body = body1;
    return (double)(svc_now_ms() - t0) / 1000.0;
}

/* Waits (up to the deadline) for node s to see Redis in `state`. */
static inline int wait_state(const struct svc *s, int state)
{
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        struct gw_cl_status st;
        cluster_status(s, &st);
        if (st.state == state)
            return 0;
    }
    return -1;
}

/* Waits for node s to have seen `n` live nodes at its last heartbeat. */
static inline int wait_live(const struct svc *s, uint64_t n)
{
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        struct gw_cl_status st;
        cluster_status(s, &st);
        if (st.live_nodes == n)
            return 0;
    }
    return -1;
}

static inline int log_has(const struct svc *s, const char *needle)
{
    for (uint64_t end = svc_now_ms() + 10000;; usleep(50000)) {
        char *t = svc_log_text(s);
        int has = strstr(t, needle) != NULL;
        free(t);
        if (has || svc_now_ms() >= end)
            return has;
    }
}

static inline int farm_up(void **state)
{
    (void)state;
    snprintf(rds.dir, sizeof(rds.dir), "/tmp/gw-redis-%d-%ld", (int)getpid(), random());
    mkdir(rds.dir, 0700);
    if (redis_start() != 0)
        return -1;
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", rds.port);
    for (int i = 0; i < NODES; i++) {
        node_config(&nodes[i], i, addr, NULL);
        if (svc_start_or_dump(&nodes[i]) != 0)
            return -1;
    }
    /* up, and each has seen all three (the fail-open share divides by it) */
    for (int i = 0; i < NODES; i++)
        if (wait_state(&nodes[i], GW_CL_UP) != 0 || wait_live(&nodes[i], NODES) != 0)
            return -1;
    return 0;
}

static inline int farm_down(void **state)
{
    (void)state;
    for (int i = 0; i < NODES; i++)
        svc_stop(&nodes[i]);
    redis_kill();
    return 0;
}

/* gpuwardenctl --json `args` on node s, parsed. */
static inline json_t *ctl_json(const struct svc *s, const char *args)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "%s/gpuwardenctl -s %s/admin.sock --json %s", GW_BIN_DIR, s->dir,
             args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[65536];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    json_error_t je;
    json_t *r = json_loads(out, 0, &je);
    if (!r)
        fail_msg("gpuwardenctl %s: %s: %s", args, je.text, out);
    return r;
}

static inline json_t *ctl_cluster(const struct svc *s)
{
    return ctl_json(s, "cluster");
}

/* A tenant's money on node s (gpuwardenctl tenant show): GPU-us charged,
 * and whether every reservation is settled (reserved = used + refunded). */
static inline long tenant_used_us(const struct svc *s, const char *tenant, int *settled)
{
    char args[128];
    snprintf(args, sizeof(args), "tenant show %s", tenant);
    json_t *r = ctl_json(s, args), *b = json_object_get(r, "budget");
    long used = (long)json_integer_value(json_object_get(b, "used_us"));
    long reserved = (long)json_integer_value(json_object_get(b, "reserved_us"));
    long refunded = (long)json_integer_value(json_object_get(b, "refunded_us"));
    *settled = reserved == used + refunded;
    json_decref(r);
    return used;
}

/* Redis's clock and the farm-wide GCRA cell `key` (its TAT, at least now:
 * an idle cell), in us; 0 or -1 when they cannot be read. */
static inline int redis_tat(const char *key, double *now, double *tat)
{
    redisContext *c = redis_connect();
    if (!c)
        return -1;
    redisReply *t = redisCommand(c, "TIME");
    redisReply *v = redisCommand(c, "GET %s", key);
    int rc = -1;
    if (t && t->type == REDIS_REPLY_ARRAY && t->elements == 2 && v) {
        *now = atof(t->element[0]->str) * 1e6 + atof(t->element[1]->str);
        *tat = v->type == REDIS_REPLY_STRING ? atof(v->str) : 0;
        if (*tat < *now)
            *tat = *now;
        rc = 0;
    }
    if (t)
        freeReplyObject(t);
    if (v)
        freeReplyObject(v);
    redisFree(c);
    return rc;
}

/* What the farm-wide GCRA cell `key` admits now, for a window of `limit`
 * per hour; -1 when it cannot be read. */
static inline long redis_available(const char *key, long limit)
{
    double now, tat;
    if (redis_tat(key, &now, &tat) != 0)
        return -1;
    double T = 3600e6 / (double)limit, tau = (double)(limit - 1) * T;
    double x = (tau - (tat - now)) / T; /* rounded down, below 0 too */
    long f = (long)x;
    return (f > x ? f - 1 : f) + 1;
}

/* GPU-us the farm-wide budget cell `key` grants now, for a budget of
 * `seconds` GPU-seconds per hour; -1 when it cannot be read. */
static inline long redis_gpu_available(const char *key, double seconds)
{
    double now, tat;
    if (redis_tat(key, &now, &tat) != 0)
        return -1;
    return (long)((3600e6 - (tat - now)) * seconds / 3600.0);
}

static inline int redis_hexists(const char *key, const char *field)
{
    redisContext *c = redis_connect();
    redisReply *r = c ? redisCommand(c, "HEXISTS %s %s", key, field) : NULL;
    int v = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return v;
}

#endif
