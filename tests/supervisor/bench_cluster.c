/* bench_cluster.c - what the farm costs and how far it overspends
 * (issue 19; docs/BENCHMARKS.md, "The farm"). Not a test: figures only.
 *
 *   bench_cluster [FLOOD_SECONDS]      (default 20)
 *
 * Starts a redis-server (loopback, its own directory, AOF on), three
 * nodes with a "cluster" section and one node without (the same config
 * otherwise), all on SmolLM2 on the CPU, and measures in the same run:
 *  A. admission overhead (client latency - Server-Timing device time) of
 *     300 sequential max_tokens=1 requests, cluster on vs off;
 *  B. the refusal path: 500 sequential requests of a tenant over its
 *     limit, cluster on (the cached farm-wide denial) vs off;
 *  C. Redis round trips per request admitted by the farm's rate, 3 x 1000
 *     requests of a "6000 per minute" tenant (leases of 300);
 *  A'. A with a tenant that also has a GPU budget (its requests take a
 *     GPU lease's GPU-us too), and the lease round trips that cost;
 *  D. overspend under a 3-node flood: a "60 per minute" tenant flooded from
 *     three threads (one per node) for FLOOD_SECONDS, against one node's
 *     GCRA (L + B + seconds / T) and the bound's outstanding leases;
 *  E. the latency of a request that waits for a lease: a tenant of "1 per
 *     second burst 1000" is leased one token per waiting request, so each
 *     of its requests takes a Redis round trip and the agent's wake-up;
 *     against the same requests of a tenant whose lease covers them;
 *  F. GPU overspend under a 3-node flood: a "1 GPU-seconds per hour"
 *     tenant generating 8 tokens per request from 4 threads per node
 *     until the farm refuses it for FLOOD_SECONDS / 4, against the bound
 *     (budget + refill + 3 overdrafts of 5 %).
 * C and D send requests naming an unknown model: they pass admission's
 * rate steps (the farm's included) and are answered 404 before a slot is
 * taken, so the flood measures admission, not generation. */
#include "farm.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>

#define NODES 3

static struct svc nodes[NODES + 1]; /* [NODES]: the node alone */

static const char plans[] =
    " \"plans\": {\n"
    "   \"big\": {\"rate\": [\"6000 per minute\"], \"max_tokens\": 1},\n"
    "   \"small\": {\"rate\": [\"10 per minute\"], \"max_tokens\": 1},\n"
    "   \"flood\": {\"rate\": [\"60 per minute\"], \"max_tokens\": 1},\n"
    "   \"gbig\": {\"rate\": [\"6000 per minute\"], \"budget\": \"3600 GPU-seconds per hour\",\n"
    "     \"max_tokens\": 1},\n"
    "   \"tiny\": {\"rate\": [\"1 per second burst 1000\"], \"max_tokens\": 1},\n"
    "   \"gflood\": {\"budget\": \"1 GPU-seconds per hour\", \"max_tokens\": 8}},\n"
    " \"tenants\": {\"big\": {\"plan\": \"big\"}, \"small\": {\"plan\": \"small\"},\n"
    "   \"flood\": {\"plan\": \"flood\"}, \"gbig\": {\"plan\": \"gbig\"},\n"
    "   \"tiny\": {\"plan\": \"tiny\"}, \"gflood\": {\"plan\": \"gflood\"}},\n";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    int i = (int)ceil(p / 100.0 * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* A: overhead in ms of n admitted requests to s */
static void overhead(struct svc *s, const char *tenant, int n, double *p50, double *p99)
{
    double *v = calloc((size_t)n, sizeof(double));
    char *tok = svc_token(s, tenant, 600);
    int k = 0;
    for (int i = 0; i < n; i++) {
        struct resp r;
        uint64_t t0 = gw_mono_ns();
        if (svc_http(s, "POST", "/v1/completions", tok,
                     "{\"model\":\"smollm2\",\"prompt\":\"Hi\",\"max_tokens\":1}", &r) != 0)
            continue;
        double ms = (double)(gw_mono_ns() - t0) / 1e6;
        char st[128];
        const char *h = resp_header(&r, "Server-Timing", st, sizeof(st));
        const char *d = h ? strstr(h, "dur=") : NULL;
        if (r.status == 200 && d)
            v[k++] = ms - atof(d + 4);
        resp_free(&r);
    }
    *p50 = k ? pct(v, k, 50) : -1;
    *p99 = k ? pct(v, k, 99) : -1;
    free(v);
    free(tok);
}

/* B: latency in ms of n refused requests to s (the tenant exhausted first) */
static void refusals(struct svc *s, const char *tenant, int n, double *p50, double *p99, int *n429)
{
    double *v = calloc((size_t)n, sizeof(double));
    char *tok = svc_token(s, tenant, 600);
    int k = 0;
    *n429 = 0;
    for (int i = 0; i < n + 10; i++) {
        struct resp r;
        uint64_t t0 = gw_mono_ns();
        if (svc_http(s, "POST", "/v1/completions", tok,
                     "{\"model\":\"nope\",\"prompt\":\"Hi\",\"max_tokens\":1}", &r) != 0)
            continue;
        double ms = (double)(gw_mono_ns() - t0) / 1e6;
        if (i >= 10 && k < n) {
            v[k++] = ms;
            *n429 += r.status == 429;
        }
        resp_free(&r);
    }
    *p50 = pct(v, k, 50);
    *p99 = pct(v, k, 99);
    free(v);
    free(tok);
}

/* C and D: one thread per node sending unknown-model requests */
struct flood {
    struct svc *s;
    const char *tenant;
    int max_requests;
    uint64_t until_ns;
    int passed, refused, other;
};

static void *flood_main(void *arg)
{
    struct flood *f = arg;
    char *tok = svc_token(f->s, f->tenant, 600);
    for (int i = 0; i < f->max_requests && gw_mono_ns() < f->until_ns; i++) {
        struct resp r;
        if (svc_http(f->s, "POST", "/v1/completions", tok,
                     "{\"model\":\"nope\",\"prompt\":\"Hi\",\"max_tokens\":1}", &r) != 0) {
            f->other++;
            continue;
        }
        if (r.status == 404)
            f->passed++;
        else if (r.status == 429)
            f->refused++;
        else
            f->other++;
        resp_free(&r);
    }
    free(tok);
    return NULL;
}

static void flood(const char *tenant, int max_requests, double seconds, struct flood *fl)
{
    pthread_t th[NODES];
    for (int i = 0; i < NODES; i++) {
        fl[i] = (struct flood){.s = &nodes[i],
                               .tenant = tenant,
                               .max_requests = max_requests,
                               .until_ns = gw_mono_ns() + (uint64_t)(seconds * 1e9)};
        pthread_create(&th[i], NULL, flood_main, &fl[i]);
    }
    for (int i = 0; i < NODES; i++)
        pthread_join(th[i], NULL);
}

static uint64_t counter_sum(int c);

/* Request tokens the three nodes were granted for `tenant`, ever. */
static uint64_t tenant_granted(const char *tenant)
{
    uint64_t n = 0;
    for (int k = 0; k < NODES; k++) {
        struct gw_segment seg;
        char path[256], err[256];
        snprintf(path, sizeof(path), "%s/state/ledger", nodes[k].dir);
        if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
            continue;
        for (uint32_t i = 0; i < seg.cfg.budgets; i++) {
            struct gw_cl_cell c;
            char id[GW_ID_MAX + 1];
            enum gw_kind kind;
            if (gw_cluster_cell(&seg, i, &c) == 0 &&
                gw_ledger_id(&seg, c.acct, &kind, id, sizeof(id)) > 0 && kind == GW_KIND_TENANT &&
                strcmp(id, tenant) == 0)
                n += c.granted;
        }
        gw_segment_close(&seg);
    }
    return n;
}

/* E: latency in ms of n sequential unknown-model requests of `tenant` to
 * node s (answered 404 after admission's rate steps), and the lease round
 * trips they cost */
static void lease_path(struct svc *s, const char *tenant, int n, double *p50, double *p99,
                       uint64_t *trips)
{
    double *v = calloc((size_t)n, sizeof(double));
    char *tok = svc_token(s, tenant, 600);
    struct gw_cl_status st;
    uint64_t t0 = farm_cluster_status(s, &st) == 0 ? st.counters[GW_CLC_LEASE_CALLS] : 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        struct resp r;
        uint64_t t = gw_mono_ns();
        if (svc_http(s, "POST", "/v1/completions", tok,
                     "{\"model\":\"nope\",\"prompt\":\"Hi\",\"max_tokens\":1}", &r) != 0)
            continue;
        if (r.status == 404)
            v[k++] = (double)(gw_mono_ns() - t) / 1e6;
        resp_free(&r);
    }
    *trips = farm_cluster_status(s, &st) == 0 ? st.counters[GW_CLC_LEASE_CALLS] - t0 : 0;
    *p50 = k ? pct(v, k, 50) : -1;
    *p99 = k ? pct(v, k, 99) : -1;
    free(v);
    free(tok);
}

/* F: one thread's generations of the GPU flood */
struct gflood {
    struct svc *s;
    uint64_t until_ns;
    int ok, refused, other;
};

static void *gflood_main(void *arg)
{
    struct gflood *g = arg;
    char *tok = svc_token(g->s, "gflood", 600);
    while (gw_mono_ns() < g->until_ns) {
        struct resp r;
        if (svc_http(g->s, "POST", "/v1/completions", tok,
                     "{\"model\":\"smollm2\",\"prompt\":\"Count from one to twenty.\","
                     "\"max_tokens\":8}",
                     &r) != 0) {
            g->other++;
            continue;
        }
        if (r.status == 200)
            g->ok++;
        else if (r.status == 429)
            g->refused++;
        else
            g->other++;
        resp_free(&r);
    }
    free(tok);
    return NULL;
}

/* GPU-us node s's ledger charged tenant `tenant` (-1: none) */
static long used_us(const struct svc *s, const char *tenant)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", s->dir);
    if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
        return -1;
    struct gw_acct a;
    struct gw_money m = {0};
    long v = -1;
    if (gw_ledger_get(&seg, GW_KIND_TENANT, tenant, strlen(tenant), 0, gw_now_us(), &a) == 0 &&
        gw_ledger_money(&seg, a, &m) == 0)
        v = (long)m.used_us;
    gw_segment_close(&seg);
    return v;
}

static void gpu_flood(double seconds)
{
    enum { PER_NODE = 4 };
    pthread_t th[NODES * PER_NODE];
    struct gflood g[NODES * PER_NODE];
    uint64_t t0 = gw_mono_ns();
    for (int i = 0; i < NODES * PER_NODE; i++) {
        g[i] = (struct gflood){.s = &nodes[i % NODES], .until_ns = t0 + (uint64_t)(seconds * 1e9)};
        pthread_create(&th[i], NULL, gflood_main, &g[i]);
    }
    int ok = 0, refused = 0, other = 0;
    for (int i = 0; i < NODES * PER_NODE; i++) {
        pthread_join(th[i], NULL);
        ok += g[i].ok;
        refused += g[i].refused;
        other += g[i].other;
    }
    double el = (double)(gw_mono_ns() - t0) / 1e9;
    usleep(500 * 1000); /* the last settlements */
    long used[NODES], sum = 0;
    for (int i = 0; i < NODES; i++)
        sum += (used[i] = used_us(&nodes[i], "gflood"));
    long bound = 1000000 + (long)(el * 1e6 / 3600.0) + 1 + NODES * 50000;
    printf("F. 3-node GPU flood of \"1 GPU-seconds per hour\" for %.1f s (4 threads per node, 8 "
           "tokens each): %d admitted, %d refused, %d other; charged %ld + %ld + %ld = %ld GPU-us "
           "= %.3f of the budget; bound %ld (budget + refill + 3 overdrafts of 5 %%); overdrawn "
           "%" PRIu64 " GPU-us, %" PRIu64 " extensions refused\n",
           el, ok, refused, other, used[0], used[1], used[2], sum, (double)sum / 1e6, bound,
           counter_sum(GW_CLC_GPU_OVERDRAWN), counter_sum(GW_CLC_GPU_SHORT));
}

static uint64_t counter_sum(int c)
{
    uint64_t n = 0;
    for (int i = 0; i < NODES; i++) {
        struct gw_cl_status st;
        if (farm_cluster_status(&nodes[i], &st) == 0)
            n += st.counters[c];
    }
    return n;
}

static int start_all(void)
{
    snprintf(rds.dir, sizeof(rds.dir), "/tmp/gw-bench-redis-%d", (int)getpid());
    mkdir(rds.dir, 0700);
    if (redis_start() != 0)
        return -1;
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", rds.port);
    for (int i = 0; i <= NODES; i++) {
        farm_node_config(&nodes[i], i, i < NODES ? addr : NULL, NULL, plans, "\"wait_ms\": 2000");
        if (svc_start_or_dump(&nodes[i]) != 0)
            return -1;
    }
    for (int i = 0; i < NODES; i++) {
        struct gw_cl_status st;
        for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(50000))
            if (farm_cluster_status(&nodes[i], &st) == 0 && st.state == GW_CL_UP &&
                st.live_nodes == NODES)
                break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 20;
    gw_need_model();
    if (!find_redis())
        gw_skip("redis-server is not installed");
    if (start_all() != 0) {
        fprintf(stderr, "bench_cluster: the farm did not start\n");
        return 1;
    }
    double a50, a99, b50, b99;
    overhead(&nodes[0], "big", 300, &a50, &a99);
    overhead(&nodes[NODES], "big", 300, &b50, &b99);
    printf("A. admission overhead, ms (300 x max_tokens=1)   cluster on: p50 %.3f p99 %.3f"
           "   off: p50 %.3f p99 %.3f\n",
           a50, a99, b50, b99);
    /* the same with a GPU budget: a request lease and a GPU lease */
    uint64_t e0 = 0, e1 = 0;
    struct gw_cl_status st;
    if (farm_cluster_status(&nodes[0], &st) == 0)
        e0 = st.counters[GW_CLC_LEASE_CALLS];
    overhead(&nodes[0], "gbig", 300, &a50, &a99);
    if (farm_cluster_status(&nodes[0], &st) == 0)
        e1 = st.counters[GW_CLC_LEASE_CALLS];
    overhead(&nodes[NODES], "gbig", 300, &b50, &b99);
    printf("A'. the same with a GPU budget (\"3600 GPU-seconds per hour\")   cluster on: p50 %.3f "
           "p99 %.3f   off: p50 %.3f p99 %.3f; lease round trips (both kinds) %" PRIu64
           " = %.4f per request, GPU leases %" PRIu64 " (%.0f GPU-ms each on average)\n",
           a50, a99, b50, b99, e1 - e0, (double)(e1 - e0) / 300, st.counters[GW_CLC_GPU_GRANTS],
           st.counters[GW_CLC_GPU_GRANTS]
               ? (double)st.counters[GW_CLC_GPU_US] / st.counters[GW_CLC_GPU_GRANTS] / 1000
               : 0.0);
    int n1, n2;
    refusals(&nodes[0], "small", 500, &a50, &a99, &n1);
    refusals(&nodes[NODES], "small", 500, &b50, &b99, &n2);
    printf("B. refusal path, ms (500 over the limit)          cluster on: p50 %.3f p99 %.3f"
           " (%d x 429)   off: p50 %.3f p99 %.3f (%d x 429)\n",
           a50, a99, n1, b50, b99, n2);
    struct flood fl[NODES];
    uint64_t rt0 = counter_sum(GW_CLC_LEASE_CALLS), all0 = counter_sum(GW_CLC_ROUND_TRIPS);
    flood("big", 1000, 600, fl);
    uint64_t rt = counter_sum(GW_CLC_LEASE_CALLS) - rt0,
             all = counter_sum(GW_CLC_ROUND_TRIPS) - all0;
    int passed = fl[0].passed + fl[1].passed + fl[2].passed;
    printf("C. round trips per admitted request (\"6000 per minute\", 3 x 1000): %d admitted, "
           "%" PRIu64 " lease round trips = %.4f per request (%" PRIu64 " with heartbeats)\n",
           passed, rt, passed ? (double)rt / passed : 0.0, all);
    uint64_t k0 = tenant_granted("flood");
    uint64_t t0 = gw_mono_ns();
    flood("flood", 1 << 30, secs, fl);
    double el = (double)(gw_mono_ns() - t0) / 1e9;
    passed = fl[0].passed + fl[1].passed + fl[2].passed;
    int refused = fl[0].refused + fl[1].refused + fl[2].refused;
    int one_node = 60 + (int)floor(el / 1.0);
    printf(
        "D. 3-node flood of \"60 per minute\" for %.1f s: %d admitted (%d / %d / %d), %d "
        "refused, %d other; one node's GCRA: %d; overspend %d; tokens leased to the tenant %" PRIu64
        " (bound's outstanding-lease term <= 3 nodes x 12 (20 %% "
        "of 60) = 36 plus waiting requests); a fixed window of 60 admits up to 120 across "
        "each window edge\n",
        el, passed, fl[0].passed, fl[1].passed, fl[2].passed, refused,
        fl[0].other + fl[1].other + fl[2].other, one_node, passed - one_node,
        tenant_granted("flood") - k0);
    uint64_t w_trips, c_trips;
    lease_path(&nodes[0], "tiny", 200, &a50, &a99, &w_trips);
    lease_path(&nodes[0], "big", 200, &b50, &b99, &c_trips);
    printf("E. a request that waits for a lease, ms (200 sequential, admitted, answered 404): "
           "waits (\"1 per second burst 1000\", 1-token leases): p50 %.3f p99 %.3f, %" PRIu64
           " lease round trips   covered (\"6000 per minute\"): p50 %.3f p99 %.3f, %" PRIu64
           " lease round trips\n",
           a50, a99, w_trips, b50, b99, c_trips);
    gpu_flood(secs / 4);
    for (int i = 0; i <= NODES; i++)
        svc_stop(&nodes[i]);
    redis_kill();
    return 0;
}
