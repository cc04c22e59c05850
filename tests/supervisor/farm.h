/* farm.h - a farm on loopback for tests and benchmarks (issue 19): a
 * redis-server of the program's own (a free loopback port, its own
 * directory, AOF on) and nodes whose config has a "cluster" section.
 * Header-only, beside service.h; for tests/supervisor/test_cluster.c and
 * bench_cluster.c. */
#ifndef GW_TEST_FARM_H
#define GW_TEST_FARM_H

#include "service.h"

#include <hiredis/hiredis.h>

static char redis_bin[512];
static struct {
    char dir[160];
    int port;
    pid_t pid;
    char password[64];
} rds;

/* ------------------------------------------------------------ redis-server */

static inline const char *find_redis(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/bin:/usr/sbin");
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(redis_bin, sizeof(redis_bin), "%s/redis-server", d);
        if (access(redis_bin, X_OK) == 0)
            return redis_bin;
    }
    return NULL;
}

/* A loopback port nobody listens on now (redis-server takes no socket
 * from us; a clash makes redis_start try another). */
static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

static inline redisContext *redis_connect(void)
{
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rds.port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    if (rds.password[0]) {
        redisReply *r = redisCommand(c, "AUTH %s", rds.password);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

/* Starts redis-server on rds.port (a new one when 0) in rds.dir, AOF on;
 * waits for PING. 0 or -1. */
static inline int redis_start(void)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if (!rds.port || attempt)
            rds.port = free_port();
        char port[16];
        snprintf(port, sizeof(port), "%d", rds.port);
        rds.pid = fork();
        if (rds.pid == 0) {
            char log[256];
            snprintf(log, sizeof(log), "%s/redis.log", rds.dir);
            const char *argv[] = {
                redis_bin,    "--port",      port,    "--bind",
                "127.0.0.1",  "--dir",       rds.dir, "--appendonly",
                "yes",        "--save",      "",      "--logfile",
                log,          "--daemonize", "no",    rds.password[0] ? "--requirepass" : NULL,
                rds.password, NULL};
            execv(redis_bin, (char *const *)argv);
            _exit(127);
        }
        for (uint64_t end = svc_now_ms() + 10000; svc_now_ms() < end;) {
            int st;
            if (waitpid(rds.pid, &st, WNOHANG) == rds.pid)
                break; /* the port was taken: another */
            redisContext *c = redis_connect();
            redisReply *r = c ? redisCommand(c, "PING") : NULL;
            int ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
            if (r)
                freeReplyObject(r);
            if (c)
                redisFree(c);
            if (ok)
                return 0;
            usleep(50000);
        }
        kill(rds.pid, SIGKILL);
        waitpid(rds.pid, NULL, 0);
        rds.pid = 0;
    }
    return -1;
}

static inline void redis_kill(void)
{
    if (rds.pid > 0) {
        kill(rds.pid, SIGKILL);
        waitpid(rds.pid, NULL, 0);
        rds.pid = 0;
    }
}

/* Node i's config: 2 fronts, 1 worker (SmolLM2 on the CPU), an admin
 * socket in its directory, `plans_json` (the "plans" and "tenants" members,
 * each followed by a comma) and a "cluster" section pointing at redis_addr
 * with node name "node-<i>", timeout_ms 200, password_file when pass is not
 * NULL, and `cluster_json`'s members. redis_addr NULL: no cluster section
 * (a node alone). */
/* The nodes' "global" section (a test may set another before it writes
 * their configs). */
static const char *farm_global = "{\"rate\": [\"1000000 per second burst 100\"]}";

static inline void farm_node_config(struct svc *s, int i, const char *redis_addr, const char *pass,
                                    const char *plans_json, const char *cluster_json)
{
    svc_write_config(s, NULL); /* its directory, key and socket; the file we write again */
    char pw[300] = "", cl[1024] = "";
    if (pass) {
        char path[256];
        snprintf(path, sizeof(path), "%s/redis.pass", s->dir);
        FILE *f = fopen(path, "w");
        fprintf(f, "%s\n", pass);
        fclose(f);
        snprintf(pw, sizeof(pw), "\"password_file\": \"%s\", ", path);
    }
    if (redis_addr)
        snprintf(cl, sizeof(cl),
                 ",\n \"cluster\": {\"redis\": \"%s\", \"node\": \"node-%d\", %s"
                 "\"timeout_ms\": 200, %s}",
                 redis_addr, i, pw, cluster_json);
    FILE *f = fopen(s->config, "w");
    fprintf(f,
            "{\"listen\": [\"127.0.0.1:%d\"], \"fronts\": 2, \"workers\": 1,\n"
            " \"state_dir\": \"%s/state\",\n"
            " \"segment\": {\"accounts\": 1024, \"budgets\": 64, \"slots\": 32, \"queue\": 32,\n"
            "   \"prompt_bytes\": 4096, \"output_bytes\": 8192},\n"
            " \"model\": {\"path\": \"%s\", \"name\": \"smollm2\", \"device\": \"cpu\",\n"
            "   \"threads\": 1, \"context\": 256, \"max_batch\": 8},\n"
            " \"auth\": {\"keys\": [{\"kid\": \"test\", \"alg\": \"HS256\", \"secret_file\": "
            "\"%s/secret.key\"}],\n"
            "   \"issuer\": \"gw-test\", \"audience\": \"gpuwarden\", \"leeway_s\": 5},\n"
            " \"ip\": {\"rate\": [\"1000000 per second burst 100\"]},\n"
            " \"global\": %s,\n"
            "%s"
            " \"cost\": {\"initial_us_per_token\": 1000},\n"
            " \"admin\": {\"socket\": \"%s/admin.sock\"}%s\n"
            "}\n",
            s->port, s->dir, svc_model_path(), s->dir, farm_global, plans_json, s->dir, cl);
    fclose(f);
}

/* The cluster region of node s as the agent last wrote it; 0 or -1. */
static inline int farm_cluster_status(const struct svc *s, struct gw_cl_status *st)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", s->dir);
    if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
        return -1;
    gw_cluster_status(&seg, st);
    gw_segment_close(&seg);
    return 0;
}

#endif
