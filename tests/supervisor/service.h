/* service.h - integration-test helpers: start a real gpuwarden master with
 * a config written for the test, talk HTTP to it over loopback, read its
 * ledger. Header-only, for tests/supervisor/test_*.c and
 * tests/load/test_load_smoke.c.
 *
 * The port: the test binds 127.0.0.1:0 and listens itself (svc_listen),
 * and hands the socket to the master by socket activation, as systemd
 * does: fd 3, LISTEN_FDS=1, LISTEN_PID = the master's pid. No port is
 * ever chosen, closed and hoped to be free again; the test holds the
 * socket for its whole run, so a restarted master gets the same one.
 *
 * The model: every program that starts a service calls gw_need_model()
 * (skip.h) in main(), so it exits 77 when models/ lacks the file. */
#ifndef GW_TEST_SERVICE_H
#define GW_TEST_SERVICE_H

#include "gw_supervisor.h"
#include "skip.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long a test waits for an event (a response, a state change, a
 * process) before it calls it a hang. Only a hang: no test asserts how
 * fast something happened. */
#define SVC_DEADLINE_MS 60000

static inline uint64_t svc_now_ms(void)
{
    return gw_mono_ns() / 1000000u;
}

/* Device us per token the fronts assume before a worker measured one. */
static long svc_cost_us = 2000;
/* model.max_batch of the config (a test that needs a request to wait in
 * the queue behind a running one sets 1). */
static int svc_max_batch = 4;
/* 1: the test listens on [::1] instead of 127.0.0.1 (svc_listen,
 * svc_connect); the test skips (77) where IPv6 loopback does not work. */
static int svc_ipv6 = 0;
/* Bytes svc_http sends before each request: "" (a test of a PROXY protocol
 * listener sends "PROXY UNKNOWN\r\n"). */
static const char *svc_http_preamble = "";
/* The config's "ip" object (a test of client addresses sets its own). */
static const char *svc_ip_json = "{\"rate\": [\"1000 per second burst 100\"]}";

struct svc {
    char dir[128];
    char config[192];
    char log[192];
    int port; /* of lfd */
    int lfd;  /* the listening socket the master is given as fd 3 */
    pid_t master;
    struct gw_key key; /* the HS256 key the config trusts */
};

/* A socket listening on 127.0.0.1 at a port the kernel picks: s->lfd and
 * s->port. Close-on-exec: only the master gets it (as fd 3). */
static inline void svc_listen(struct svc *s)
{
    if (svc_ipv6) { /* [::1]: a test of IPv6 clients (test_addresses_ipv6) */
        s->lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        socklen_t l6 = sizeof(a6);
        if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a6, sizeof(a6)) != 0 ||
            listen(s->lfd, SOMAXCONN) != 0 || getsockname(s->lfd, (struct sockaddr *)&a6, &l6) != 0)
            abort();
        s->port = ntohs(a6.sin6_port);
        return;
    }
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(s->lfd, SOMAXCONN) != 0 || getsockname(s->lfd, (struct sockaddr *)&a, &l) != 0)
        abort();
    s->port = ntohs(a.sin_port);
}

static inline const char *svc_model_path(void)
{
    return gw_need_model();
}

/* Writes a config (plans for every scenario) with `extra` spliced into the
 * top-level object (e.g. "\"http\":{...},"). */
static inline void svc_write_config(struct svc *s, const char *extra)
{
    snprintf(s->dir, sizeof(s->dir), "/tmp/gw-svc-%d-%ld", (int)getpid(), random());
    mkdir(s->dir, 0700);
    /* pids repeat and random() is unseeded: a directory left by an earlier
     * run (perhaps of another build) must not lend us its state */
    char stale[300];
    snprintf(stale, sizeof(stale), "%s/state/ledger", s->dir);
    unlink(stale);
    snprintf(stale, sizeof(stale), "%s/state/audit.log", s->dir);
    unlink(stale);
    snprintf(stale, sizeof(stale), "%s/gpuwarden.log", s->dir);
    unlink(stale);
    char secret_path[256];
    snprintf(secret_path, sizeof(secret_path), "%s/secret.key", s->dir);
    static const char secret[] = "integration-test-secret-0123456789abcdef";
    FILE *f = fopen(secret_path, "w");
    fputs(secret, f);
    fclose(f);
    free(s->key.key); /* a second config for the same svc replaces the key */
    memset(&s->key, 0, sizeof(s->key));
    snprintf(s->key.kid, sizeof(s->key.kid), "test");
    s->key.alg = GW_ALG_HS256;
    s->key.key = (unsigned char *)strdup(secret);
    s->key.key_len = strlen(secret);
    svc_listen(s);
    snprintf(s->config, sizeof(s->config), "%s/gpuwarden.json", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/gpuwarden.log", s->dir);
    f = fopen(s->config, "w");
    fprintf(
        f,
        "{\n"
        " \"listen\": [\"%s:%d\"], \"fronts\": 2, \"workers\": 1,\n"
        " \"state_dir\": \"%s/state\",\n"
        " \"segment\": {\"accounts\": 1024, \"budgets\": 64, \"slots\": 16, \"queue\": 16,\n"
        "   \"prompt_bytes\": 4096, \"output_bytes\": 8192},\n"
        " \"model\": {\"path\": \"%s\", \"name\": \"smollm2\", \"device\": \"cpu\",\n"
        "   \"threads\": 2, \"context\": 512, \"max_batch\": %d},\n"
        " %s\n"
        " \"auth\": {\"keys\": [{\"kid\": \"test\", \"alg\": \"HS256\", \"secret_file\": "
        "\"%s\"}],\n"
        "   \"issuer\": \"gw-test\", \"audience\": \"gpuwarden\", \"leeway_s\": 5},\n"
        " \"ip\": %s,\n"
        " \"global\": {\"rate\": [\"1000 per second burst 100\"],\n"
        "   \"budget\": \"1000 GPU-seconds per second\"},\n"
        " \"plans\": {\n"
        "   \"open\": {\"rate\": [\"1000 per minute burst 100\"], \"budget\": \"1000 GPU-seconds "
        "per day\", \"max_inflight\": 8, \"max_tokens\": 256},\n"
        "   \"five\": {\"rate\": [\"5 per minute\"], \"budget\": \"1000 GPU-seconds per day\", "
        "\"max_tokens\": 64},\n"
        "   \"poor\": {\"rate\": [\"100 per minute burst 10\"], \"budget\": \"0.001 GPU-seconds "
        "per day\", \"max_tokens\": 64, \"on_budget\": \"refuse\"},\n"
        "   \"tight\": {\"rate\": [\"100 per minute burst 10\"], \"budget\": \"0.02 GPU-seconds "
        "per day\", \"max_tokens\": 64, \"on_budget\": \"refuse\"},\n"
        "   \"one\": {\"rate\": [\"100 per minute burst 10\"], \"budget\": \"1000 GPU-seconds "
        "per day\", \"max_inflight\": 1, \"max_tokens\": 256}\n"
        " },\n"
        " \"default_plan\": null,\n"
        " \"tenants\": {\"happy\": {\"plan\": \"open\"}, \"limited\": {\"plan\": \"five\"},\n"
        "   \"poor\": {\"plan\": \"poor\"}, \"single\": {\"plan\": \"one\"},\n"
        "   \"tight\": {\"plan\": \"tight\"}},\n"
        " \"cost\": {\"initial_us_per_token\": %ld}\n"
        "}\n",
        svc_ipv6 ? "[::1]" : "127.0.0.1", s->port, s->dir, svc_model_path(), svc_max_batch,
        extra ? extra : "", secret_path, svc_ip_json, svc_cost_us);
    fclose(f);
}

static inline char *svc_token(struct svc *s, const char *tenant, long ttl)
{
    char *tok = NULL;
    uint64_t now = gw_now_us() / 1000000;
    uint64_t iat = ttl > 0 ? now : now + (uint64_t)(2 * ttl); /* expired tokens: issued before */
    if (gw_auth_issue(&s->key, tenant, NULL, "gw-test", "gpuwarden", iat,
                      (uint64_t)((long)now + ttl), &tok) != 0)
        abort();
    return tok;
}

struct resp {
    int status;
    char head[8192];
    char *body;
    size_t len;
};

#ifdef cmocka_unit_test /* the tests, not bench_cluster: it asserts */
/* A connection to s's port from loopback address src ("127.0.0.x"),
 * bound first so that the node sees that client address. */
static inline int svc_connect_from(const struct svc *s, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in me = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, src, &me.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&me, sizeof(me)), 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}
#endif

static inline int svc_connect(struct svc *s)
{
    if (svc_ipv6) {
        int fd6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons((uint16_t)s->port),
                                  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        if (connect(fd6, (struct sockaddr *)&a6, sizeof(a6)) != 0) {
            close(fd6);
            return -1;
        }
        return fd6;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Reads until EOF (or timeout_ms of silence) and splits the response. */
static inline int svc_read(int fd, struct resp *r, int timeout_ms)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0)
            break;
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    memset(r, 0, sizeof(*r));
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.1 %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    size_t hl = (size_t)(sep - buf);
    if (hl >= sizeof(r->head))
        hl = sizeof(r->head) - 1;
    memcpy(r->head, buf, hl);
    r->head[hl] = '\0';
    r->len = len - (size_t)(sep + 4 - buf);
    r->body = malloc(r->len + 1);
    memcpy(r->body, sep + 4, r->len);
    r->body[r->len] = '\0';
    free(buf);
    return 0;
}

/* One request on its own connection (Connection: close). */
static inline int svc_http(struct svc *s, const char *method, const char *path, const char *token,
                           const char *body, struct resp *r)
{
    int fd = svc_connect(s);
    if (fd < 0)
        return -1;
    char head[8192];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                     method, path, body ? strlen(body) : 0);
    if (token)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Authorization: Bearer %s\r\n", token);
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    send_all(fd, svc_http_preamble, strlen(svc_http_preamble));
    send_all(fd, head, (size_t)n);
    if (body)
        send_all(fd, body, strlen(body));
    int rc = svc_read(fd, r, SVC_DEADLINE_MS);
    close(fd);
    return rc;
}

/* Appends what fd sends until EOF or timeout_ms of silence to buf (which
 * holds *len bytes already), NUL-terminates it, and closes fd. */
static inline void svc_read_rest(int fd, char *buf, size_t cap, size_t *len, int timeout_ms)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) != 1)
            break;
        ssize_t n = recv(fd, buf + *len, cap - *len - 1, 0);
        if (n <= 0)
            break;
        *len += (size_t)n;
    }
    buf[*len] = '\0';
    close(fd);
}

static inline void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* The value of header `name` in r (case-insensitive), or NULL. */
static inline const char *resp_header(struct resp *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
            const char *v = p + 3 + nl;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r");
            if (n >= len)
                n = len - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return buf;
        }
    }
    return NULL;
}

/* Starts the master on s->config with s->lfd as its socket (socket
 * activation) and waits for /readyz to answer 200: 0, or -1 when the
 * master exited or was not ready within SVC_DEADLINE_MS (a hang, not a
 * slow start). */
static inline int svc_start(struct svc *s)
{
    const char *bin = GW_BIN_DIR "/gpuwarden";
    s->master = fork();
    if (s->master == 0) {
        /* fd 3 first: the log's descriptor must not land there */
        if (s->lfd != 3 && dup2(s->lfd, 3) != 3)
            _exit(127);
        fcntl(3, F_SETFD, 0); /* dup2 clears FD_CLOEXEC, but lfd may be 3 itself */
        char pid[32];
        snprintf(pid, sizeof(pid), "%d", (int)getpid());
        setenv("LISTEN_FDS", "1", 1);
        setenv("LISTEN_PID", pid, 1);
        unsetenv("LISTEN_FDNAMES");
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        /* appended: a restarted master's lines follow the first one's */
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        dup2(fd, 2);
        dup2(fd, 1);
        execl(bin, bin, "-c", s->config, (char *)NULL);
        _exit(127);
    }
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end;) {
        int status;
        if (waitpid(s->master, &status, WNOHANG) == s->master) {
            s->master = 0;
            return -1;
        }
        struct resp r;
        if (svc_http(s, "GET", "/readyz", NULL, NULL, &r) == 0) {
            int st = r.status;
            resp_free(&r);
            if (st == 200)
                return 0;
        }
        usleep(100000);
    }
    return -1;
}

/* SIGTERM, and the master's exit status (-1 if it had to be killed). */
static inline int svc_stop(struct svc *s)
{
    if (s->master <= 0)
        return -1;
    kill(s->master, SIGTERM);
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; svc_now_ms() < end;) {
        int status;
        if (waitpid(s->master, &status, WNOHANG) == s->master) {
            s->master = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(20000);
    }
    kill(s->master, SIGKILL);
    waitpid(s->master, NULL, 0);
    s->master = 0;
    return -1;
}

/* Pid of a worker that reports ready in the node's lanes, -1 if none. */
static inline pid_t svc_worker_pid(const struct svc *s)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", s->dir);
    if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
        return -1;
    pid_t pid = -1;
    for (uint32_t l = 0; l < seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&seg, (int)l, &pi) == 0 && pi.role == GW_ROLE_WORKER &&
            pi.state == GW_PROC_READY)
            pid = pi.pid;
    }
    gw_segment_close(&seg);
    return pid;
}

/* Waits (up to SVC_DEADLINE_MS) for every slot of the segment to be free;
 * how many were still in use. */
static inline int svc_wait_slots_free(const struct svc *s)
{
    struct gw_segment seg;
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/state/ledger", s->dir);
    if (gw_segment_attach(&seg, path, err, sizeof(err)) != 0)
        return -1;
    int in_use = 0;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS;;) {
        in_use = 0;
        for (uint32_t i = 0; i < seg.cfg.slots; i++) {
            struct gw_slot_ref ref;
            if (gw_slot_peek(&seg, i, &ref) != GW_SLOT_FREE)
                in_use++;
        }
        if (in_use == 0 || svc_now_ms() >= end)
            break;
        usleep(10000);
    }
    gw_segment_close(&seg);
    return in_use;
}

/* The master's log (its children's lines too) so far; malloc'd. */
static inline char *svc_log_text(const struct svc *s)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = fread(buf, 1, (size_t)(n > 0 ? n : 0), f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static inline void svc_dump_log(struct svc *s)
{
    FILE *f = fopen(s->log, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f))
        fprintf(stderr, "  | %s", line);
    if (f)
        fclose(f);
}

/* Connects to the admin socket at `sock`, sends `line` verbatim, returns
 * the first response line (malloc'd, without its newline) or NULL. */
static inline char *svc_admin_line(const char *sock, const char *line)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return NULL;
    }
    send_all(fd, line, strlen(line));
    char buf[65536];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, SVC_DEADLINE_MS) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, sizeof(buf) - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *nl = strchr(buf, '\n');
        if (nl) {
            *nl = '\0';
            close(fd);
            return strdup(buf);
        }
    }
    close(fd);
    return NULL;
}

/* For group setups and teardowns: svc_start or svc_stop, and on failure
 * the service's log on stderr; 0 or -1. */
static inline int svc_start_or_dump(struct svc *s)
{
    if (svc_start(s) == 0)
        return 0;
    fprintf(stderr, "gpuwarden did not become ready; its log:\n");
    svc_dump_log(s);
    return -1;
}

static inline int svc_stop_or_dump(struct svc *s)
{
    if (svc_stop(s) == 0)
        return 0;
    svc_dump_log(s);
    return -1;
}

#endif
