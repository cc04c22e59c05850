/* test_cluster.c - a farm on loopback (issue 19): one redis-server (its own
 * port and directory, AOF on) and three gpuwarden nodes, each a real master
 * with its fronts, worker and cluster agent, all started here.
 *
 *  - a tenant limited to 10 per minute sending round-robin to all three:
 *    exactly 10 admitted farm-wide;
 *  - a GPU-second budget shared by the three under round-robin load: the
 *    GPU-us their ledgers charged stay within the budget and the bound;
 *  - an output_tokens window shared by the three under round-robin load:
 *    the tokens the clients were sent stay within the window and the
 *    bound (each node's debt at most its running requests' tokens beyond
 *    their first), and equal what the nodes charged to their leases;
 *  - a node SIGKILLed holding a request lease, a GPU lease and an output
 *    lease: the capacities return to the farm after the lease TTL;
 *  - Redis killed: the fail_closed plans (request rate, GPU budget) answer
 *    503 budget_unavailable, the fail_open plans admit their share (limit
 *    or budget / live nodes) per node, output windows likewise; no
 *    request waits past its deadline; Redis restarted: leases again, and the
 *    fail-open admissions are charged to Redis (reconciled);
 *  - bad peers: nothing listening, a wrong password, a server answering
 *    garbage, one answering nothing: the exact error in the node's log, and
 *    the node serving each plan per its fail mode.
 *
 * Exit 77 without redis-server or the model. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "farm_test.h"

/* --------------------------------------------------------------- the nodes */

/* The plans and tenants every node of the tests has: "ten" (10 per
 * minute), "shut" (fail_closed), "fair" (30 per hour), "big" (100 per hour
 * and 100 GPU-seconds per hour), "spare" (100 per hour); GPU budgets only:
 * "gpu" (1 GPU-second per hour, the bound's test), "gshut" (fail_closed)
 * and "gfair" (fail_open); output_tokens windows only: "otok" (40 per
 * hour, the bound's test), "oshut" (fail_closed) and "ofair" (fail_open,
 * 30 per hour); "big" has an output window of 100 per hour too. */
static const char plans[] =
    " \"plans\": {\n"
    "   \"ten\": {\"rate\": [\"10 per minute\"], \"max_tokens\": 1},\n"
    "   \"shut\": {\"rate\": [\"100 per minute\"], \"max_tokens\": 1},\n"
    "   \"fair\": {\"rate\": [\"30 per hour\"], \"max_tokens\": 1},\n"
    "   \"big\": {\"rate\": [\"100 per hour\"], \"budget\": \"100 GPU-seconds per hour\",\n"
    "     \"output_tokens\": \"100 per hour\", \"max_tokens\": 1},\n"
    "   \"spare\": {\"rate\": [\"100 per hour\"], \"max_tokens\": 1},\n"
    "   \"gpu\": {\"budget\": \"1 GPU-seconds per hour\", \"max_tokens\": 8},\n"
    "   \"gshut\": {\"budget\": \"30 GPU-seconds per hour\", \"max_tokens\": 1},\n"
    "   \"gfair\": {\"budget\": \"30 GPU-seconds per hour\", \"max_tokens\": 1},\n"
    "   \"otok\": {\"output_tokens\": \"40 per hour\", \"max_tokens\": 8},\n"
    "   \"oshut\": {\"output_tokens\": \"1000 per hour\", \"max_tokens\": 1},\n"
    "   \"ofair\": {\"output_tokens\": \"30 per hour\", \"max_tokens\": 1}},\n"
    " \"tenants\": {\"ten\": {\"plan\": \"ten\"}, \"shut\": {\"plan\": \"shut\"},\n"
    "   \"fair\": {\"plan\": \"fair\"}, \"big\": {\"plan\": \"big\"},\n"
    "   \"spare\": {\"plan\": \"spare\"}, \"gpu\": {\"plan\": \"gpu\"},\n"
    "   \"gshut\": {\"plan\": \"gshut\"}, \"gfair\": {\"plan\": \"gfair\"},\n"
    "   \"otok\": {\"plan\": \"otok\"}, \"oshut\": {\"plan\": \"oshut\"},\n"
    "   \"ofair\": {\"plan\": \"ofair\"}},\n";
static const char cluster_extra[] =
    "\"wait_ms\": 5000, \"lease_ttl_ms\": 5000, "
    "\"heartbeat_ms\": 1000, \"fail_mode\": \"fail_open\", "
    "\"plans\": {\"shut\": \"fail_closed\", \"gshut\": \"fail_closed\", "
    "\"oshut\": \"fail_closed\"}, \"global\": \"node\"";

static void node_config(struct svc *s, int i, const char *redis_addr, const char *pass)
{
    farm_node_config(s, i, redis_addr, pass, plans, cluster_extra);
}

/* ------------------------------------------------------------------- tests */

static void test_ten_per_minute_round_robin_admits_exactly_ten(void **state)
{
    (void)state;
    int all[NODES] = {0, 1, 2}, ok, r429, r503, other;
    char refusal[512] = "";
    burst("ten", 30, all, NODES, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(ok, 10);
    assert_int_equal(r429, 20);
    assert_int_equal(r503 + other, 0);
    assert_non_null(strstr(refusal, "\"code\":\"rate_limited\""));
    /* every node's fronts took their units from leases the agent got */
    uint64_t tokens = 0;
    for (int i = 0; i < NODES; i++) {
        struct gw_cl_status st;
        cluster_status(&nodes[i], &st);
        tokens += st.counters[GW_CLC_TOKENS];
    }
    assert_int_equal(tokens, 10);
}

/* One GPU-second per hour for tenant "gpu", shared by the three nodes: load
 * round-robin on all three (12 requests at a time, 8 tokens each) until the
 * farm refuses with budget_exhausted, and one round more. Farm-wide use,
 * the sum of what the three ledgers charged, stays within the budget plus
 * what it refilled meanwhile plus each node's overdraft: the bound of
 * docs/ARCHITECTURE.md with no lease outstanding when the load starts and
 * no node dead. Every node took GPU leases; nothing was admitted
 * fail-open. */
static void test_gpu_budget_shared_by_three_nodes_stays_within_bound(void **state)
{
    (void)state;
    static const char gbody[] =
        "{\"model\":\"smollm2\",\"prompt\":\"Count from one to twenty.\",\"max_tokens\":8}";
    int admitted = 0, refused = 0;
    char refusal[512] = "";
    double elapsed_s =
        load_until_refused("gpu", 12, gbody, &admitted, &refused, refusal, sizeof(refusal));
    assert_true(refused > 0);
    assert_non_null(strstr(refusal, "\"code\":\"budget_exhausted\""));
    long used[NODES], sum = 0;
    for (int i = 0; i < NODES; i++) {
        int settled = 0;
        for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(50000))
            if ((used[i] = tenant_used_us(&nodes[i], "gpu", &settled)), settled)
                break;
        assert_true(settled);
        sum += used[i];
        struct gw_cl_status st;
        cluster_status(&nodes[i], &st);
        assert_true(st.counters[GW_CLC_GPU_GRANTS] > 0);
        assert_int_equal(st.counters[GW_CLC_GPU_OPEN_US], 0);
        /* gpuwardenctl cluster shows the tenant's GPU lease: all the GPU-us
         * this node was granted so far were granted to "gpu" (a renewal may
         * land while we read: between the counter before and after) */
        json_t *r = ctl_cluster(&nodes[i]), *l;
        struct gw_cl_status st2;
        cluster_status(&nodes[i], &st2);
        size_t k;
        int seen = 0;
        json_array_foreach (json_object_get(r, "leases"), k, l) {
            if (strcmp(json_string_value(json_object_get(l, "tenant")), "gpu") != 0)
                continue;
            json_t *g = json_object_get(l, "gpu");
            uint64_t granted = (uint64_t)json_integer_value(json_object_get(g, "granted_us"));
            assert_true(granted >= st.counters[GW_CLC_GPU_US] &&
                        granted <= st2.counters[GW_CLC_GPU_US]);
            assert_int_equal(json_integer_value(json_object_get(g, "waiting_us")), 0);
            seen = 1;
        }
        assert_int_equal(seen, 1);
        json_decref(r);
    }
    /* 1 GPU-second, plus the refill over the run (1 s per hour), plus what
     * running requests may overdraw per node (the in-flight overrun: the
     * smallest lease, 5 % of the budget) */
    long bound = 1000000 + (long)(elapsed_s * 1000000.0 / 3600.0) + 1 + NODES * 50000;
    print_message("gpu budget: %d admitted, %d refused (%.1f s); charged "
                  "%ld + %ld + %ld = %ld GPU-us against a bound of %ld\n",
                  admitted, refused, elapsed_s, used[0], used[1], used[2], sum, bound);
    assert_true(sum <= bound);
    assert_true(admitted > 0);
}

/* Tenant s's output lease on node s as gpuwardenctl cluster shows it:
 * tokens left (below 0: a debt) and tokens charged to it, ever. */
static void out_lease_of(const struct svc *s, const char *tenant, long *tokens, long *charged)
{
    json_t *r = ctl_cluster(s), *l;
    size_t k;
    *tokens = *charged = -1;
    json_array_foreach (json_object_get(r, "leases"), k, l) {
        if (strcmp(json_string_value(json_object_get(l, "tenant")), tenant) != 0)
            continue;
        json_t *o = json_object_get(l, "output");
        *tokens = (long)json_integer_value(json_object_get(o, "tokens"));
        *charged = (long)json_integer_value(json_object_get(o, "charged"));
    }
    json_decref(r);
}

/* 40 output tokens per hour for tenant "otok", shared by the three nodes:
 * rounds of 6 requests of 8 tokens, round-robin (2 at a time per node),
 * until the farm refuses with output_tokens_exhausted, and one round more.
 * The tokens the clients were sent equal what the three nodes charged to
 * their output leases, and stay within the window plus its refill plus
 * each node's debt: at most the tokens beyond the first of the 2 requests
 * running there when its pool was last positive, 2 x 7 (docs/
 * ARCHITECTURE.md, no lease outstanding at the start, no node dead). */
static void test_output_tokens_shared_by_three_nodes_stay_within_bound(void **state)
{
    (void)state;
    static const char obody[] =
        "{\"model\":\"smollm2\",\"prompt\":\"Count from one to twenty.\",\"max_tokens\":8}";
    burst_tokens = 0;
    int admitted = 0, refused = 0;
    char refusal[512] = "";
    double elapsed_s =
        load_until_refused("otok", 6, obody, &admitted, &refused, refusal, sizeof(refusal));
    assert_true(refused > 0);
    assert_non_null(strstr(refusal, "\"code\":\"output_tokens_exhausted\""));
    long charged = 0, debt = 0;
    for (int i = 0; i < NODES; i++) {
        long t, c;
        out_lease_of(&nodes[i], "otok", &t, &c);
        assert_true(c >= 0);
        charged += c;
        debt += t < 0 ? -t : 0;
        assert_true(t >= -2 * 7); /* a node's debt: 2 requests' 7 tokens at most */
        struct gw_cl_status st;
        cluster_status(&nodes[i], &st);
        assert_true(st.counters[GW_CLC_OUT_GRANTS] > 0);
        assert_int_equal(st.counters[GW_CLC_OUT_OPEN], 0);
    }
    assert_int_equal(charged, burst_tokens);
    long bound = 40 + (long)(elapsed_s * 40.0 / 3600.0) + 1 + NODES * 2 * 7;
    print_message("output tokens: %d admitted, %d refused (%.1f s); %ld tokens "
                  "sent, %ld charged, %ld in the nodes' debts, against a bound of %ld\n",
                  admitted, refused, elapsed_s, burst_tokens, charged, debt, bound);
    assert_true(burst_tokens <= bound);
    assert_true(admitted > 0);
}

/* After the burst of the test before: node 0 sees Redis up, three live
 * nodes, the tenant "ten" with what its leases brought, and the round
 * trips that cost. */
static void test_ctl_cluster_shows_redis_nodes_and_leases(void **state)
{
    (void)state;
    json_t *r = ctl_cluster(&nodes[0]);
    assert_true(json_is_true(json_object_get(r, "enabled")));
    assert_string_equal(json_string_value(json_object_get(r, "node")), "node-0");
    assert_string_equal(json_string_value(json_object_get(r, "redis_state")), "up");
    assert_int_equal(json_integer_value(json_object_get(r, "live_nodes")), 3);
    /* the live nodes by name, from their heartbeat keys (in any order) */
    json_t *names = json_object_get(r, "nodes");
    assert_int_equal(json_array_size(names), 3);
    int named[NODES] = {0};
    for (size_t k = 0; k < json_array_size(names); k++) {
        const char *n = json_string_value(json_array_get(names, k));
        assert_non_null(n);
        assert_int_equal(strncmp(n, "node-", 5), 0);
        assert_true(n[5] >= '0' && n[5] < '0' + NODES && n[6] == '\0');
        named[n[5] - '0']++;
    }
    for (int i = 0; i < NODES; i++)
        assert_int_equal(named[i], 1);
    json_t *c = json_object_get(r, "counters");
    struct gw_cl_status st;
    cluster_status(&nodes[0], &st);
    assert_int_equal(json_integer_value(json_object_get(c, "lease_tokens")),
                     st.counters[GW_CLC_TOKENS]);
    assert_true(json_integer_value(json_object_get(c, "redis_round_trips")) > 0);
    json_t *leases = json_object_get(r, "leases"), *l;
    size_t k;
    int seen = 0;
    json_array_foreach (leases, k, l) {
        if (strcmp(json_string_value(json_object_get(l, "tenant")), "ten") != 0)
            continue;
        seen = 1;
        assert_int_equal(json_integer_value(json_object_get(l, "granted")),
                         st.counters[GW_CLC_TOKENS]);
        assert_int_equal(json_integer_value(json_object_get(l, "waiting")), 0);
        assert_int_equal(json_integer_value(json_object_get(l, "tokens")), 0); /* all used */
    }
    assert_int_equal(seen, 1); /* node 0 had 10 of the 30: they asked for leases */
    json_decref(r);
}

/* Pid of node s's cluster agent from its lanes, -1 if none is attached. */
static pid_t agent_pid(const struct svc *s)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", s->dir);
    if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
        return -1;
    pid_t pid = -1;
    for (uint32_t l = 0; l < seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&seg, (int)l, &pi) == 0 && pi.role == GW_ROLE_CLUSTER &&
            pi.state == GW_PROC_READY && kill(pi.pid, 0) == 0)
            pid = pi.pid;
    }
    gw_segment_close(&seg);
    return pid;
}

/* Node 1's agent stopped (SIGSTOP) with Redis up: a request whose lease is
 * empty waits cluster.wait_ms, then its plan decides (fail_closed: 503
 * budget_unavailable; fail_open: admitted); none hangs. Continued, the
 * agent charges the fail-open admission to Redis. */
static void test_stalled_agent_requests_follow_fail_mode_after_wait(void **state)
{
    (void)state;
    pid_t agent = agent_pid(&nodes[1]);
    assert_true(agent > 0);
    assert_int_equal(kill(agent, SIGSTOP), 0);
    int one[1] = {1}, ok, r429, r503, other;
    char refusal[512] = "";
    burst("shut", 1, one, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(r503, 1);
    assert_non_null(strstr(refusal, "\"code\":\"budget_unavailable\""));
    burst("spare", 1, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(kill(agent, SIGCONT), 0);
    struct gw_cl_status st;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        cluster_status(&nodes[1], &st);
        if (st.counters[GW_CLC_RECONCILED] == 1)
            break;
    }
    assert_int_equal(st.counters[GW_CLC_RECONCILED], 1);
    assert_int_equal(st.counters[GW_CLC_OPEN_ADMITS], 1);
    assert_int_equal(st.counters[GW_CLC_CLOSED_REFUSALS], 1);
}

/* Node 1's agent SIGKILLed: the master starts another, which takes leases
 * again. */
static void test_killed_agent_is_restarted_and_leases_resume(void **state)
{
    (void)state;
    pid_t agent = agent_pid(&nodes[1]);
    assert_true(agent > 0);
    assert_int_equal(kill(agent, SIGKILL), 0);
    pid_t next = -1;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000))
        if ((next = agent_pid(&nodes[1])) > 0 && next != agent)
            break;
    assert_true(next > 0 && next != agent);
    assert_int_equal(wait_state(&nodes[1], GW_CL_UP), 0);
    int one[1] = {1}, ok, r429, r503, other;
    burst("shut", 2, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 2);
}

/* Node s's cell of `tenant` (-1 when it has none). */
static int tenant_cell(const struct svc *s, const char *tenant, struct gw_cl_cell *out)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", s->dir);
    if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
        return -1;
    int rc = -1;
    for (uint32_t i = 0; i < seg.cfg.budgets && rc != 0; i++) {
        char id[GW_ID_MAX + 1];
        enum gw_kind kind;
        if (gw_cluster_cell(&seg, i, out) == 0 &&
            gw_ledger_id(&seg, out->acct, &kind, id, sizeof(id)) > 0 && strcmp(id, tenant) == 0)
            rc = 0;
    }
    gw_segment_close(&seg);
    return rc;
}

/* A front SIGKILLed with a request parked for a lease leaves the cell's
 * waiting count behind. The agent takes a lease for it that nobody uses;
 * when that lease ends unused, it gives the tokens back and drops the
 * count, instead of leasing for nobody every TTL. */
static void test_dead_fronts_waiting_count_is_dropped(void **state)
{
    (void)state;
    struct svc *s = &nodes[1];
    pid_t agent = agent_pid(s);
    assert_true(agent > 0);
    struct gw_cl_cell c0;
    assert_int_equal(tenant_cell(s, "spare", &c0), 0); /* from the stalled-agent test */
    assert_int_equal(kill(agent, SIGSTOP), 0);
    int fd = svc_connect(s);
    assert_true(fd >= 0);
    char *tok = svc_token(s, "spare", 300), head[1024];
    int len = snprintf(head, sizeof(head),
                       "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       "application/json\r\nContent-Length: %zu\r\nAuthorization: Bearer "
                       "%s\r\n\r\n%s",
                       strlen(body), tok, body);
    free(tok);
    send_all(fd, head, (size_t)len);
    struct gw_cl_cell c = {0};
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(10000))
        if (tenant_cell(s, "spare", &c) == 0 && c.want == 1)
            break;
    assert_int_equal(c.want, 1);
    /* both fronts: whichever holds the request dies with it parked */
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", s->dir);
    assert_int_equal(gw_segment_attach(&seg, path, err, sizeof(err)), 0);
    for (uint32_t l = 0; l < seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&seg, (int)l, &pi) == 0 && pi.role == GW_ROLE_FRONT)
            kill(pi.pid, SIGKILL);
    }
    gw_segment_close(&seg);
    close(fd);
    assert_int_equal(kill(agent, SIGCONT), 0);
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(50000))
        if (tenant_cell(s, "spare", &c) == 0 && c.want == 0)
            break;
    assert_int_equal(c.want, 0);
    assert_int_equal(c.tokens, 0);
    /* one lease of 5 (5% of 100) for nobody, given back whole, and no other */
    usleep(6000 * 1000); /* another lease's life */
    assert_int_equal(tenant_cell(s, "spare", &c), 0);
    assert_int_equal(c.granted - c0.granted, 5);
    assert_int_equal(c.want, 0);
}

static void test_redis_killed_plans_follow_their_fail_mode(void **state)
{
    (void)state;
    /* the share divides by the live nodes each last saw: all three, after
     * the tests before stalled and restarted node 1's agent */
    for (int i = 0; i < NODES; i++)
        assert_int_equal(wait_live(&nodes[i], NODES), 0);
    redis_kill();
    for (int i = 0; i < NODES; i++)
        assert_int_equal(wait_state(&nodes[i], GW_CL_DOWN), 0);
    int one[1] = {0}, ok, r429, r503, other;
    char refusal[512] = "";
    uint64_t t0 = svc_now_ms();
    burst("shut", 5, one, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(r503, 5);
    assert_int_equal(ok + r429 + other, 0);
    assert_non_null(strstr(refusal, "\"code\":\"budget_unavailable\""));
    /* never a hang: answered long before the test's own deadline */
    assert_true(svc_now_ms() - t0 < SVC_DEADLINE_MS);
    /* fail_open: 30 per hour over the 3 live nodes last seen = 10 here */
    refusal[0] = '\0';
    burst("fair", 15, one, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(ok, 10);
    assert_int_equal(r429, 5);
    assert_int_equal(r503 + other, 0);
    /* the GPU lease's fail modes: gshut fails closed, gfair reserves from
     * this node's third of its 30 GPU-seconds */
    refusal[0] = '\0';
    burst("gshut", 2, one, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(r503, 2);
    assert_non_null(strstr(refusal, "\"code\":\"budget_unavailable\""));
    burst("gfair", 3, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 3);
    /* the output lease's: oshut fails closed; ofair takes a token per
     * request from this node's third of its 30 per hour */
    refusal[0] = '\0';
    burst("oshut", 2, one, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(r503, 2);
    assert_non_null(strstr(refusal, "\"code\":\"budget_unavailable\""));
    refusal[0] = '\0';
    burst("ofair", 12, one, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(ok, 10);
    assert_int_equal(r429, 2);
    assert_non_null(strstr(refusal, "\"code\":\"output_tokens_exhausted\""));
    struct gw_cl_status st;
    cluster_status(&nodes[0], &st);
    assert_int_equal(st.counters[GW_CLC_OPEN_ADMITS], 10);
    assert_int_equal(st.counters[GW_CLC_CLOSED_REFUSALS], 9);
    assert_true(st.counters[GW_CLC_OUT_OPEN] > 0);
    assert_int_equal(st.counters[GW_CLC_OUT_RECONCILED], 0);
    assert_true(st.counters[GW_CLC_GPU_OPEN_US] > 0);
    assert_int_equal(st.counters[GW_CLC_GPU_RECONCILED], 0);
    assert_true(log_has(&nodes[0], "connect: Connection refused; requests that need a lease "
                                   "follow their plan's fail mode"));
}

static void test_redis_restarted_nodes_resume_and_reconcile(void **state)
{
    (void)state;
    assert_int_equal(redis_start(), 0); /* same port, same directory: the AOF */
    for (int i = 0; i < NODES; i++)
        assert_int_equal(wait_state(&nodes[i], GW_CL_UP), 0);
    int one[1] = {1}, ok, r429, r503, other;
    burst("shut", 3, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 3);
    /* node 0's ten fail-open admissions are charged to the farm */
    struct gw_cl_status st;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        cluster_status(&nodes[0], &st);
        if (st.counters[GW_CLC_RECONCILED] == 10)
            break;
    }
    assert_int_equal(st.counters[GW_CLC_RECONCILED], 10);
    /* and gfair's fail-open reservations, charged to its farm-wide budget */
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        cluster_status(&nodes[0], &st);
        if (st.counters[GW_CLC_GPU_RECONCILED] == st.counters[GW_CLC_GPU_OPEN_US])
            break;
    }
    assert_int_equal(st.counters[GW_CLC_GPU_RECONCILED], st.counters[GW_CLC_GPU_OPEN_US]);
    long g = redis_gpu_available("gw:gpu:gfair:30000000/3600000000", 30);
    assert_true(g >= 30000000 - (long)st.counters[GW_CLC_GPU_OPEN_US] &&
                g < 30000000 - (long)st.counters[GW_CLC_GPU_OPEN_US] + 10000);
    /* and ofair's fail-open output tokens, charged to its farm-wide window */
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        cluster_status(&nodes[0], &st);
        if (st.counters[GW_CLC_OUT_RECONCILED] == st.counters[GW_CLC_OUT_OPEN])
            break;
    }
    assert_int_equal(st.counters[GW_CLC_OUT_RECONCILED], st.counters[GW_CLC_OUT_OPEN]);
    assert_int_equal(redis_available("gw:out:ofair:30/3600000000+0", 30),
                     30 - (long)st.counters[GW_CLC_OUT_OPEN]);
    /* and the farm-wide account saw them: 30 per hour, 10 spent there:
     * the farm grants exactly the 20 left; what a node was granted beyond
     * its own requests (a lease sized by its recent demand) is still in
     * its lease, unused, and the others were refused meanwhile */
    int all[NODES] = {0, 1, 2};
    burst("fair", 30, all, NODES, &ok, &r429, &r503, &other, NULL, 0);
    long unused = 0;
    for (int i = 0; i < NODES; i++) {
        struct gw_cl_cell c;
        if (tenant_cell(&nodes[i], "fair", &c) == 0 && c.expires_us > gw_now_us())
            unused += (long)c.tokens;
    }
    assert_int_equal(ok + unused, 20);
    assert_int_equal(r429, 30 - ok);
    assert_true(log_has(&nodes[0], ": back"));
}

/* "spare" first: node 1 uses a whole lease, whose record must go when the
 * lease ends. Then "big": 100 per hour, leases of 5% = 5 tokens; 100 GPU-seconds per
 * hour, GPU leases of 5% = 5 GPU-seconds. Node 2 takes one lease of each
 * for one request and is SIGKILLed (master and, by PDEATHSIG, its
 * children) holding them. Its lease records stay in Redis until their TTL
 * (5 s); the next lease anyone takes after that reaps them, and their
 * capacity is back in the pool: node 0's leases then leave 95 tokens and
 * 95 GPU-seconds available, not 90, and the same for its output window
 * (100 tokens per hour, leases of 5). (Node 2 had used one token and some
 * GPU time: the over-return the bound in docs/ARCHITECTURE.md counts.) */
static void test_killed_node_lease_returns_after_ttl(void **state)
{
    (void)state;
    static const char key[] = "gw:rate:big:100/3600000000+0", leases[] = "gw:lease:big";
    static const char gkey[] = "gw:gpu:big:100000000/3600000000", gleases[] = "gw:gpulease:big";
    static const char okey[] = "gw:out:big:100/3600000000+0", oleases[] = "gw:outlease:big";
    int two[1] = {2}, zero[1] = {0}, one[1] = {1}, ok, r429, r503, other;
    /* node 1 uses a whole lease of "spare" (5 tokens for 5 requests) */
    burst("spare", 5, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 5);
    assert_int_equal(redis_hexists("gw:lease:spare", "node-1"), 1);
    burst("big", 1, two, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(redis_available(key, 100), 95);
    assert_int_equal(redis_hexists(leases, "node-2"), 1);
    /* 95 GPU-seconds, and what refilled since (28 GPU-us per ms) */
    long g = redis_gpu_available(gkey, 100);
    assert_true(g >= 95000000 && g < 95000000 + 28 * 2000);
    assert_int_equal(redis_hexists(gleases, "node-2"), 1);
    assert_int_equal(redis_available(okey, 100), 95); /* an output lease of 5 */
    assert_int_equal(redis_hexists(oleases, "node-2"), 1);
    kill(nodes[2].master, SIGKILL);
    waitpid(nodes[2].master, NULL, 0);
    nodes[2].master = 0;
    usleep(5500 * 1000);                                  /* past the lease's TTL in Redis */
    assert_int_equal(redis_hexists(leases, "node-2"), 1); /* nobody asked since */
    /* a live node's lease that ended used up: its record is deleted at its
     * end (a record left behind would be reaped and give back 5 tokens
     * that were used) */
    assert_int_equal(redis_hexists("gw:lease:spare", "node-1"), 0);
    assert_int_equal(redis_hexists(gleases, "node-2"), 1);
    assert_int_equal(redis_hexists(oleases, "node-2"), 1);
    burst("big", 1, zero, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(redis_hexists(leases, "node-2"), 0);
    assert_int_equal(redis_available(key, 100), 95);
    assert_int_equal(redis_hexists(gleases, "node-2"), 0);
    g = redis_gpu_available(gkey, 100);
    assert_true(g >= 95000000 && g < 95000000 + 28 * 2000);
    assert_int_equal(redis_hexists(oleases, "node-2"), 0);
    assert_int_equal(redis_available(okey, 100), 95);
}

/* ------------------------------------------------------------- bad peers */

/* A fake Redis on loopback: accepts, reads, and answers `reply` to every
 * read (NULL: never answers). */
static struct {
    int lfd, port;
    const char *reply;
    pthread_t th;
} fake;

static void *fake_serve(void *arg)
{
    (void)arg;
    int conns[64], n = 0;
    for (;;) {
        struct pollfd p[65];
        p[0] = (struct pollfd){.fd = fake.lfd, .events = POLLIN};
        for (int i = 0; i < n; i++)
            p[1 + i] = (struct pollfd){.fd = conns[i], .events = POLLIN};
        if (poll(p, (nfds_t)(1 + n), 100) < 0)
            break;
        if (fake.lfd < 0)
            break;
        if (p[0].revents & POLLIN) {
            int c = accept4(fake.lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0 && n < 64)
                conns[n++] = c;
            else if (c >= 0)
                close(c);
        }
        for (int i = 0; i < n; i++) {
            if (!(p[1 + i].revents & (POLLIN | POLLHUP)))
                continue;
            char buf[4096];
            ssize_t r = recv(conns[i], buf, sizeof(buf), 0);
            if (r <= 0) {
                close(conns[i]);
                conns[i--] = conns[--n];
                p[1 + i + 1].revents = 0;
                continue;
            }
            if (fake.reply)
                send_all(conns[i], fake.reply, strlen(fake.reply));
        }
    }
    for (int i = 0; i < n; i++)
        close(conns[i]);
    return NULL;
}

static void fake_start(const char *reply)
{
    fake.reply = reply;
    fake.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(fake.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fake.lfd, 16), 0);
    assert_int_equal(getsockname(fake.lfd, (struct sockaddr *)&a, &l), 0);
    fake.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&fake.th, NULL, fake_serve, NULL), 0);
}

static void fake_stop(void)
{
    int fd = fake.lfd;
    fake.lfd = -1;
    pthread_join(fake.th, NULL);
    close(fd);
}

/* One node against a bad peer at `addr`: its log names the problem
 * (`expect`), and it serves each plan per its fail mode: fail_closed 503
 * budget_unavailable, fail_open admitted. */
static void node_against(const char *addr, const char *pass, const char *expect)
{
    struct svc *s = &nodes[0];
    node_config(s, 0, addr, pass);
    assert_int_equal(svc_start_or_dump(s), 0);
    assert_int_equal(wait_state(s, GW_CL_DOWN), 0);
    assert_true(log_has(s, expect));
    int one[1] = {0}, ok, r429, r503, other;
    char refusal[512] = "";
    burst("shut", 2, one, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(r503, 2);
    assert_non_null(strstr(refusal, "\"code\":\"budget_unavailable\""));
    burst("fair", 2, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 2);
    burst("gshut", 1, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(r503, 1);
    burst("gfair", 1, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 1);
    burst("oshut", 1, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(r503, 1);
    burst("ofair", 1, one, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(svc_stop_or_dump(s), 0);
}

static void test_unreachable_redis_at_start(void **state)
{
    (void)state;
    char addr[64], expect[160];
    int port = free_port();
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    snprintf(expect, sizeof(expect),
             "redis 127.0.0.1:%d: connect: Connection refused; requests that need a lease "
             "follow their plan's fail mode",
             port);
    node_against(addr, NULL, expect);
}

static void test_wrong_password(void **state)
{
    (void)state;
    snprintf(rds.password, sizeof(rds.password), "right-password");
    rds.port = 0;
    assert_int_equal(redis_start(), 0);
    char addr[64], expect[200];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", rds.port);
    snprintf(expect, sizeof(expect),
             "redis 127.0.0.1:%d: AUTH: WRONGPASS invalid username-password pair", rds.port);
    node_against(addr, "wrong-password", expect);
    redis_kill();
}

static void test_redis_answering_garbage(void **state)
{
    (void)state;
    fake_start("hello, I am not Redis\r\n");
    char addr[64], expect[200];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fake.port);
    snprintf(expect, sizeof(expect),
             "redis 127.0.0.1:%d: SCRIPT LOAD: Protocol error, got \"h\" as reply type byte",
             fake.port);
    node_against(addr, NULL, expect);
    fake_stop();
}

static void test_redis_answering_nothing(void **state)
{
    (void)state;
    fake_start(NULL);
    char addr[64], expect[200];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fake.port);
    snprintf(expect, sizeof(expect), "redis 127.0.0.1:%d: SCRIPT LOAD: no answer within 200 ms",
             fake.port);
    node_against(addr, NULL, expect);
    fake_stop();
}

int main(void)
{
    gw_need_model();
    if (!find_redis())
        gw_skip("redis-server is not installed (scripts/install-deps.sh installs it)");
    const struct CMUnitTest farm[] = {
        cmocka_unit_test(test_ten_per_minute_round_robin_admits_exactly_ten),
        cmocka_unit_test(test_ctl_cluster_shows_redis_nodes_and_leases),
        cmocka_unit_test(test_gpu_budget_shared_by_three_nodes_stays_within_bound),
        cmocka_unit_test(test_output_tokens_shared_by_three_nodes_stay_within_bound),
        cmocka_unit_test(test_stalled_agent_requests_follow_fail_mode_after_wait),
        cmocka_unit_test(test_killed_agent_is_restarted_and_leases_resume),
        cmocka_unit_test(test_dead_fronts_waiting_count_is_dropped),
        cmocka_unit_test(test_redis_killed_plans_follow_their_fail_mode),
        cmocka_unit_test(test_redis_restarted_nodes_resume_and_reconcile),
        cmocka_unit_test(test_killed_node_lease_returns_after_ttl),
    };
    const struct CMUnitTest bad[] = {
        cmocka_unit_test(test_unreachable_redis_at_start),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_redis_answering_garbage),
        cmocka_unit_test(test_redis_answering_nothing),
    };
    int failed = cmocka_run_group_tests_name("farm", farm, farm_up, farm_down);
    failed += cmocka_run_group_tests_name("bad peers", bad, NULL, NULL);
    return failed;
}
