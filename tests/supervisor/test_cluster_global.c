/* test_cluster_global.c - the node's global pool (config `global`: its
 * windows and GPU budget) shared by a farm on loopback (issue 19): one
 * redis-server (its own port and directory, AOF on) and three gpuwarden
 * nodes with cluster.global "farm" (the default), started here.
 *
 *  - "12 per hour" in `global`, Redis killed first: a fail_closed plan's
 *    request answers 503 budget_unavailable, a fail_open plan's are
 *    admitted from the node's third of the pool; Redis restarted: those
 *    are charged to the farm's account, which then grants exactly what is
 *    left across the three nodes;
 *  - "1 GPU-seconds per hour" in `global`: under round-robin load the
 *    GPU-us the nodes charged stay within the budget and the bound;
 *  - a node SIGKILLed holding a lease of the global pool: its record is
 *    reaped after the lease's TTL.
 *
 * Exit 77 without redis-server or the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "farm_test.h"

/* The global pool's groups: the node's `global` limits shared farm-wide
 * (cluster.global "farm", the default). "gopen" and "gclosed" have no
 * limits of their own; "gclosed" fails closed. */
static const char gplans[] =
    " \"plans\": {\"gopen\": {\"max_tokens\": 8}, \"gclosed\": {\"max_tokens\": 1}},\n"
    " \"tenants\": {\"gopen\": {\"plan\": \"gopen\"}, \"gclosed\": {\"plan\": \"gclosed\"}},\n";
static const char gextra[] = "\"wait_ms\": 5000, \"lease_ttl_ms\": 5000, "
                             "\"heartbeat_ms\": 1000, \"plans\": {\"gclosed\": \"fail_closed\"}";

static void node_config(struct svc *s, int i, const char *redis_addr, const char *pass)
{
    farm_node_config(s, i, redis_addr, pass, gplans, gextra);
}

/* The global pool's groups: a farm whose nodes' `global` is g. */
static int global_up(const char *g)
{
    farm_global = g;
    return farm_up(NULL);
}

static int global_rate_up(void **state)
{
    (void)state;
    return global_up("{\"rate\": [\"12 per hour\"]}");
}

static int global_budget_up(void **state)
{
    (void)state;
    return global_up("{\"rate\": [\"1000000 per second burst 100\"], "
                     "\"budget\": \"1 GPU-seconds per hour\"}");
}

/* The global pool of "12 per hour" with Redis killed first: a fail_closed
 * plan's request answers 503 budget_unavailable; a fail_open plan's are
 * admitted from the node's third of the pool (4) and refused after. */
static void test_global_pool_fail_modes_with_redis_killed(void **state)
{
    (void)state;
    redis_kill();
    for (int i = 0; i < NODES; i++)
        assert_int_equal(wait_state(&nodes[i], GW_CL_DOWN), 0);
    int zero[1] = {0}, ok, r429, r503, other;
    char refusal[512] = "";
    burst("gclosed", 2, zero, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(r503, 2);
    assert_non_null(strstr(refusal, "\"code\":\"budget_unavailable\""));
    refusal[0] = '\0';
    burst("gopen", 10, zero, 1, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    assert_int_equal(ok, 4);
    assert_int_equal(r429, 6);
    assert_non_null(strstr(refusal, "\"code\":\"rate_limited\""));
    assert_non_null(strstr(refusal, "global rate limit"));
    struct gw_cl_status st;
    cluster_status(&nodes[0], &st);
    assert_int_equal(st.counters[GW_CLC_OPEN_ADMITS], 4);
    assert_int_equal(st.counters[GW_CLC_CLOSED_REFUSALS], 2);
}

/* Redis restarted (its AOF): node 0's four fail-open admissions are charged
 * to the farm's global account, which then grants exactly the 8 left: 30
 * requests round-robin to the three nodes are admitted, or refused
 * rate_limited, or their tokens wait unused in a node's lease. */
static void test_global_pool_reconciled_then_shared_exactly(void **state)
{
    (void)state;
    static const char key[] = "gw:global:rate:*:12/3600000000+0";
    assert_int_equal(redis_start(), 0);
    for (int i = 0; i < NODES; i++)
        assert_int_equal(wait_state(&nodes[i], GW_CL_UP), 0);
    struct gw_cl_status st;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(20000)) {
        cluster_status(&nodes[0], &st);
        if (st.counters[GW_CLC_RECONCILED] == 4)
            break;
    }
    assert_int_equal(st.counters[GW_CLC_RECONCILED], 4);
    assert_int_equal(redis_available(key, 12), 8);
    int all[NODES] = {0, 1, 2}, ok, r429, r503, other;
    char refusal[512] = "";
    burst("gopen", 30, all, NODES, &ok, &r429, &r503, &other, refusal, sizeof(refusal));
    long unused = 0;
    for (int i = 0; i < NODES; i++) {
        json_t *r = ctl_cluster(&nodes[i]), *l;
        size_t k;
        json_array_foreach (json_object_get(r, "leases"), k, l)
            if (strcmp(json_string_value(json_object_get(l, "tenant")), "*") == 0)
                unused += (long)json_integer_value(json_object_get(l, "tokens"));
        json_decref(r);
    }
    print_message("global pool: %d admitted, %ld unused in leases, %d refused\n", ok, unused, r429);
    assert_int_equal(ok + unused, 8);
    assert_int_equal(r429, 30 - ok);
    assert_int_equal(r503 + other, 0);
    /* node 0's own ledger may refuse first: its local global window saw
     * the requests of the test before */
    assert_non_null(strstr(refusal, "\"code\":\"rate_limited\""));
    assert_int_equal(redis_available(key, 12), 0);
}

/* The global pool's GPU budget, 1 GPU-second per hour, shared by the three
 * nodes: load round-robin until the farm refuses with budget_exhausted.
 * The GPU-us the nodes charged (one tenant: its use is the pool's) stay
 * within the budget, its refill and each node's overdraft (the tenant
 * budget's bound, docs/ARCHITECTURE.md). */
static void test_global_budget_shared_by_three_nodes_stays_within_bound(void **state)
{
    (void)state;
    static const char gbody[] =
        "{\"model\":\"smollm2\",\"prompt\":\"Count from one to twenty.\",\"max_tokens\":8}";
    int admitted = 0, refused = 0;
    char refusal[512] = "";
    double elapsed_s =
        load_until_refused("gopen", 12, gbody, &admitted, &refused, refusal, sizeof(refusal));
    assert_true(refused > 0);
    assert_non_null(strstr(refusal, "\"code\":\"budget_exhausted\""));
    assert_non_null(strstr(refusal, "global GPU-time budget"));
    long used[NODES], sum = 0;
    for (int i = 0; i < NODES; i++) {
        int settled = 0;
        for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end; usleep(50000))
            if ((used[i] = tenant_used_us(&nodes[i], "gopen", &settled)), settled)
                break;
        assert_true(settled);
        sum += used[i];
        struct gw_cl_status st;
        cluster_status(&nodes[i], &st);
        assert_true(st.counters[GW_CLC_GPU_GRANTS] > 0);
        assert_int_equal(st.counters[GW_CLC_GPU_OPEN_US], 0);
    }
    long bound = 1000000 + (long)(elapsed_s * 1000000.0 / 3600.0) + 1 + NODES * 50000;
    print_message("global budget: %d admitted, %d refused (%.1f s); charged "
                  "%ld + %ld + %ld = %ld GPU-us against a bound of %ld\n",
                  admitted, refused, elapsed_s, used[0], used[1], used[2], sum, bound);
    assert_true(sum <= bound);
    assert_true(admitted > 0);
}

/* Node 2 SIGKILLed holding the global pool's request lease: its record
 * stays in Redis until the lease's TTL (5 s), then the next script any
 * node runs (the others' give-backs at their leases' ends, or a take)
 * reaps it and gives its unused tokens back to the pool. */
static void test_killed_node_global_lease_is_reaped_after_ttl(void **state)
{
    (void)state;
    static const char leases[] = "gw:global:lease:*";
    int two[1] = {2}, zero[1] = {0}, ok, r429, r503, other;
    /* admitted or refused by the exhausted GPU budget: the pool's token is
     * taken first, from node 2's lease */
    burst("gopen", 1, two, 1, &ok, &r429, &r503, &other, NULL, 0);
    assert_int_equal(ok + r429, 1);
    assert_int_equal(redis_hexists(leases, "node-2"), 1);
    kill(nodes[2].master, SIGKILL);
    waitpid(nodes[2].master, NULL, 0);
    nodes[2].master = 0;
    usleep(5500 * 1000); /* past the lease's TTL in Redis */
    int reaped = 0;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end && !reaped;
         usleep(100000)) {
        burst("gopen", 1, zero, 1, &ok, &r429, &r503, &other, NULL, 0);
        reaped = redis_hexists(leases, "node-2") == 0;
    }
    assert_true(reaped);
}

int main(void)
{
    gw_need_model();
    if (!find_redis())
        gw_skip("redis-server is not installed (scripts/install-deps.sh installs it)");
    const struct CMUnitTest global_rate[] = {
        cmocka_unit_test(test_global_pool_fail_modes_with_redis_killed),
        cmocka_unit_test(test_global_pool_reconciled_then_shared_exactly),
    };
    const struct CMUnitTest global_budget[] = {
        cmocka_unit_test(test_global_budget_shared_by_three_nodes_stays_within_bound),
        cmocka_unit_test(test_killed_node_global_lease_is_reaped_after_ttl),
    };
    int failed =
        cmocka_run_group_tests_name("global pool: rate", global_rate, global_rate_up, farm_down);
    failed += cmocka_run_group_tests_name("global pool: budget", global_budget, global_budget_up,
                                          farm_down);
    return failed;
}
