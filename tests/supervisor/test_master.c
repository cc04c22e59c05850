/* test_master.c - the gpuwarden master as an operator and systemd see it:
 * the real `gpuwarden` binary is run on configs written into a fresh
 * directory (with a tiny random llama model), and each test asserts the
 * exit status, the exact log lines, what a fake NOTIFY_SOCKET receives and
 * what the segment's lane records say.
 *
 * The master that serves gets its listening socket by socket activation
 * (fd 3, LISTEN_FDS, LISTEN_PID), as from systemd: the test binds port 0
 * and holds the socket, so no port is ever guessed free. Waits end on the
 * event they wait for (a log line, a datagram, a lane record, an exit);
 * their deadline (DEADLINE_MS) only turns a hang into a failure and says
 * nothing about speed.
 *
 * The build makes gpuwarden and gpuwarden-worker before this test
 * (add_dependencies): a missing one is a failure, not a skip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gguf_writer.h"
#include "gw_supervisor.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef GW_BIN_DIR
#error "GW_BIN_DIR: the directory of the gpuwarden binaries"
#endif

/* How long a wait may last before it counts as a hang. */
#define DEADLINE_MS 60000

static char dir[64];         /* fresh per test */
static char cfg_path[128];   /* dir/gpuwarden.json */
static char seg_path[128];   /* dir/state/ledger */
static char model_path[128]; /* dir/tiny.gguf */
static const char *gpuwarden = GW_BIN_DIR "/gpuwarden";
static int cfg_threads = 1; /* model.threads of write_config (setup: 1) */

/* ------------------------------------------------------------- fixtures */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* A socket listening on 127.0.0.1 at a port the kernel picks; *a gets its
 * address. */
static int listen_loopback(struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(*a);
    assert_int_equal(bind(fd, (struct sockaddr *)a, sizeof(*a)), 0);
    assert_int_equal(listen(fd, SOMAXCONN), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)a, &len), 0);
    return fd;
}

/* A socket listening on 127.0.0.1 at a port the kernel picks, for the
 * master by socket activation; addr gets "127.0.0.1:PORT" for the config's
 * "listen" (which the master then does not use, and says so). */
static int activation_socket(char *addr, size_t len)
{
    struct sockaddr_in a;
    int fd = listen_loopback(&a);
    snprintf(addr, len, "127.0.0.1:%d", ntohs(a.sin_port));
    return fd;
}

/* The config the tests run: `workers` workers, one front, on `listen`,
 * model at `model`. */
static void write_config(const char *listen, int workers, const char *model)
{
    char secret[128], text[4096];
    snprintf(secret, sizeof(secret), "%s/secret.key", dir);
    write_file(secret, "0123456789abcdef0123456789abcdef01234567\n");
    snprintf(
        text, sizeof(text),
        "{\n"
        " \"listen\": [\"%s\"],\n"
        " \"fronts\": 1, \"workers\": %d, \"state_dir\": \"%s/state\",\n"
        " \"segment\": {\"accounts\": 256, \"budgets\": 16, \"slots\": 16, \"queue\": 16,\n"
        "               \"prompt_bytes\": 4096, \"output_bytes\": 4096},\n"
        " \"model\": {\"path\": \"%s\", \"name\": \"tiny\", \"device\": \"cpu\",\n"
        "             \"threads\": %d, \"context\": 64},\n"
        " \"http\": {\"drain_timeout_ms\": 1000},\n"
        " \"auth\": {\"keys\": [{\"kid\": \"dev\", \"alg\": \"HS256\", \"secret_file\": "
        "\"%s\"}]},\n"
        " \"global\": {\"rate\": [\"100 per second\"], \"budget\": \"1 GPU-seconds per second\"},\n"
        " \"plans\": {\"free\": {\"rate\": [\"10 per second\"]}},\n"
        " \"default_plan\": \"free\",\n"
        " \"admin\": {\"socket\": \"%s/admin.sock\"}\n"
        "}\n",
        listen, workers, dir, model, cfg_threads, secret, dir);
    write_file(cfg_path, text);
}

/* gwt_write_llama's tokenizer has no merges, which the worker's BPE
 * loader requires: two key/values are spliced in before the tensor infos,
 * an empty tokenizer.ggml.merges and a filler whose length makes the pair
 * 96 bytes, so the data section stays 32-byte aligned. */
static void write_model(void)
{
    gwt_llama c = gwt_llama_default();
    gwt_weights w;
    gwt_weights_random(&c, &w);
    gwt_buf b = {0}, extra = {0}, out = {0};
    gwt_write_llama(&c, &w, 0 /* F32 */, &b);
    gwt_buf first = {0};
    gwt_str(&first, "token_embd.weight");
    size_t at = 0;
    while (at + first.len <= b.len && memcmp(b.p + at, first.p, first.len) != 0)
        at++;
    assert_true(at + first.len <= b.len);
    gwt_str(&extra, "tokenizer.ggml.merges");
    gwt_u32(&extra, 9); /* array */
    gwt_u32(&extra, 8); /* of strings */
    gwt_u64(&extra, 0);
    gwt_kv_str(&extra, "general.name", "tiny-master-test-xx");
    assert_int_equal(extra.len % 32, 0);
    uint64_t kvs;
    memcpy(&kvs, b.p + 16, 8);
    kvs += 2;
    gwt_bytes(&out, b.p, at);
    memcpy(out.p + 16, &kvs, 8);
    gwt_bytes(&out, extra.p, extra.len);
    gwt_bytes(&out, b.p + at, b.len - at);
    assert_int_equal(gwt_save(&out, model_path), 0);
    gwt_free(&b);
    gwt_free(&extra);
    gwt_free(&out);
    gwt_free(&first);
    gwt_weights_free(&c, &w);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/gw-master-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(cfg_path, sizeof(cfg_path), "%s/gpuwarden.json", dir);
    snprintf(seg_path, sizeof(seg_path), "%s/state/ledger", dir);
    snprintf(model_path, sizeof(model_path), "%s/tiny.gguf", dir);
    cfg_threads = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------ running commands */

/* Runs argv to completion; stdout and stderr land in *out and *err
 * (malloc'd). Returns the exit status, or 128 + signal. */
static int run_cmd(char *const argv[], char **out, char **err)
{
    char po[PATH_MAX + 8], pe[PATH_MAX + 8];
    snprintf(po, sizeof(po), "%s/out", dir);
    snprintf(pe, sizeof(pe), "%s/err", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(o, 1);
        dup2(e, 2);
        unsetenv("NOTIFY_SOCKET");
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    char *bufs[2] = {NULL, NULL};
    const char *paths[2] = {po, pe};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "r");
        assert_non_null(f);
        bufs[i] = calloc(1, 65536);
        size_t n = fread(bufs[i], 1, 65535, f);
        bufs[i][n] = '\0';
        fclose(f);
    }
    *out = bufs[0];
    *err = bufs[1];
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A running master, its stderr (with its children's) collected. */
struct master {
    pid_t pid;
    int fd;
    char log[1 << 18];
    size_t len;
};

/* Starts the master as systemd would with socket activation and a
 * watchdog: listen_fd becomes fd 3 with LISTEN_FDS=1 and LISTEN_PID = the
 * master's pid, and WATCHDOG_USEC is set (when > 0). */
static void master_start_env(struct master *m, const char *notify, int listen_fd,
                             unsigned long watchdog_usec);

static void master_start(struct master *m, const char *notify)
{
    master_start_env(m, notify, -1, 0);
}

static void master_start_env(struct master *m, const char *notify, int listen_fd,
                             unsigned long watchdog_usec)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    m->len = 0;
    m->log[0] = '\0';
    m->pid = fork();
    assert_true(m->pid >= 0);
    if (m->pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        if (notify)
            setenv("NOTIFY_SOCKET", notify, 1);
        else
            unsetenv("NOTIFY_SOCKET");
        char num[32];
        if (listen_fd >= 0) {
            if (listen_fd != 3 && dup2(listen_fd, 3) != 3)
                _exit(127);
            fcntl(3, F_SETFD, 0); /* dup2 clears FD_CLOEXEC; fd 3 itself may have it */
            snprintf(num, sizeof(num), "%d", (int)getpid());
            setenv("LISTEN_PID", num, 1);
            setenv("LISTEN_FDS", "1", 1);
        }
        if (watchdog_usec) {
            snprintf(num, sizeof(num), "%lu", watchdog_usec);
            setenv("WATCHDOG_USEC", num, 1);
        }
        if (chdir(dir) != 0)
            _exit(127);
        execl(gpuwarden, gpuwarden, "-c", cfg_path, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    m->fd = p[0];
    fcntl(m->fd, F_SETFL, O_NONBLOCK);
}

/* Reads what the master has logged, waiting up to ms for something. */
static void master_read(struct master *m, int ms)
{
    struct pollfd p = {.fd = m->fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return;
    for (;;) {
        ssize_t n = read(m->fd, m->log + m->len, sizeof(m->log) - 1 - m->len);
        if (n <= 0)
            break;
        m->len += (size_t)n;
        m->log[m->len] = '\0';
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 1 when `needle` shows up in the log within ms. */
static int master_expect(struct master *m, const char *needle, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (!strstr(m->log, needle)) {
        if (now_ms() >= end) {
            fprintf(stderr, "--- expected \"%s\" in the master's log:\n%s---\n", needle, m->log);
            return 0;
        }
        master_read(m, 50);
    }
    return 1;
}

/* Waits up to ms for the master to exit; its exit status. */
static int master_exit(struct master *m, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    for (;;) {
        int st;
        pid_t r = waitpid(m->pid, &st, WNOHANG);
        if (r == m->pid) {
            master_read(m, 0);
            if (getenv("GW_TEST_VERBOSE")) /* the whole log, for a human */
                fprintf(stderr, "--- master log:\n%s---\n", m->log);
            close(m->fd);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (now_ms() >= end) {
            kill(m->pid, SIGKILL);
            waitpid(m->pid, &st, 0);
            fprintf(stderr, "--- master did not exit; log:\n%s---\n", m->log);
            close(m->fd);
            return -1;
        }
        master_read(m, 50);
    }
}

/* ----------------------------------------------------- fake systemd socket */

struct notify {
    int fd;
    char path[96];
    char all[1 << 16]; /* every datagram so far, each followed by "\n--\n" */
    size_t len;
};

static void notify_open(struct notify *n)
{
    snprintf(n->path, sizeof(n->path), "%s/notify", dir);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(n->fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", dir);
    assert_int_equal(bind(n->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    n->len = 0;
    n->all[0] = '\0';
}

/* Waits up to ms for a datagram containing `needle` (from the ones that
 * came after the last match). 1 when it came. */
static int notify_expect(struct notify *n, struct master *m, const char *needle, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    for (;;) {
        char d[4096];
        ssize_t r = recv(n->fd, d, sizeof(d) - 1, 0);
        if (r > 0) {
            d[r] = '\0';
            int room = (int)(sizeof(n->all) - n->len);
            int w = snprintf(n->all + n->len, (size_t)room, "%s\n--\n", d);
            if (w > 0 && w < room)
                n->len += (size_t)w;
            if (strstr(d, needle))
                return 1;
            continue;
        }
        if (now_ms() >= end) {
            fprintf(stderr, "--- expected \"%s\" from sd_notify; got:\n%s--- log:\n%s---\n", needle,
                    n->all, m->log);
            return 0;
        }
        master_read(m, 20); /* keep the pipe drained meanwhile */
    }
}

/* ---------------------------------------------------------- lane records */

/* Pid of the live process with role/index in the segment's lanes, 0 when
 * none; *ready tells whether its record says READY. */
static pid_t lane_pid(int role, int index, int *ready)
{
    struct gw_segment seg;
    char err[256];
    if (gw_segment_attach(&seg, seg_path, err, sizeof(err)) != 0)
        return 0;
    pid_t pid = 0;
    for (int l = 0; l < (int)seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&seg, l, &pi) == 0 && pi.role == role && pi.index == index) {
            pid = pi.pid;
            if (ready)
                *ready = pi.state == GW_PROC_READY;
        }
    }
    gw_segment_close(&seg);
    return pid;
}

/* 1 when pid holds any lane. */
static int pid_in_lanes(pid_t pid)
{
    struct gw_segment seg;
    char err[256];
    if (gw_segment_attach(&seg, seg_path, err, sizeof(err)) != 0)
        return 0;
    int found = 0;
    for (int l = 0; l < (int)seg.cfg.lanes; l++)
        found |= gw_lane_pid(&seg, l) == pid;
    gw_segment_close(&seg);
    return found;
}

/* Waits up to ms for role/index to be held by a READY process other than
 * `old`; its pid, or 0. */
static pid_t wait_new_ready(int role, int index, pid_t old, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end) {
        int ready = 0;
        pid_t p = lane_pid(role, index, &ready);
        if (p && p != old && (ready || role == GW_ROLE_FRONT))
            return p;
        usleep(20000);
    }
    return 0;
}

/* ----------------------------------------------------------------- tests */

static void test_check_config_accepts_good_and_names_every_mistake(void **state)
{
    (void)state;
    char *out, *err;
    write_config("127.0.0.1:8080", 1, "/nonexistent/model.gguf");
    char *good[] = {(char *)gpuwarden, "--check-config", cfg_path, NULL};
    assert_int_equal(run_cmd(good, &out, &err), 0);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "config OK: %s\n", cfg_path);
    assert_string_equal(out, want);
    assert_string_equal(err, "");
    free(out);
    free(err);

    char bad_path[PATH_MAX + 16];
    snprintf(bad_path, sizeof(bad_path), "%s/bad.json", dir);
    write_file(bad_path, "{\"listen\": [\"127.0.0.1:8080\"], \"fronts\": 0, \"workers\": 1,"
                         " \"colour\": \"blue\", \"cluster\": {\"redis\": \"127.0.0.1:6379\","
                         " \"node\": \"n1\", \"lease_max_percent\": 3, \"global\": \"pool\"}}");
    char *bad[] = {(char *)gpuwarden, "--check-config", bad_path, NULL};
    assert_int_equal(run_cmd(bad, &out, &err), 1);
    assert_string_equal(out, "");
    /* every mistake, one per line */
    assert_non_null(strstr(err, "config: colour: unknown key\n"));
    assert_non_null(strstr(err, "config: fronts: expected an integer in [1, 64]\n"));
    assert_non_null(strstr(err, "config: model: missing (required)\n"));
    assert_non_null(strstr(err, "config: auth: missing (required)\n"));
    assert_non_null(
        strstr(err, "config: cluster.lease_max_percent: 3: must be at least lease_percent (5)\n"));
    assert_non_null(
        strstr(err, "config: cluster.global: \"pool\": expected \"farm\" or \"node\"\n"));
    free(out);
    free(err);

    char *usage[] = {(char *)gpuwarden, "--bogus", NULL};
    assert_int_equal(run_cmd(usage, &out, &err), 100);
    assert_string_equal(out, "");
    assert_string_equal(err, "usage: gpuwarden -c CONFIG\n"
                             "       gpuwarden --check-config CONFIG\n"
                             "       gpuwarden --version\n");
    free(out);
    free(err);

    char *none[] = {(char *)gpuwarden, NULL};
    assert_int_equal(run_cmd(none, &out, &err), 100);
    free(out);
    free(err);

    char *version[] = {(char *)gpuwarden, "--version", NULL};
    assert_int_equal(run_cmd(version, &out, &err), 0);
    assert_string_equal(out, "gpuwarden " GW_VERSION "\n");
    free(out);
    free(err);
}

static void test_master_refuses_segment_of_another_layout(void **state)
{
    (void)state;
    write_config("127.0.0.1:1", 1, "/nonexistent/model.gguf");
    char state_dir[PATH_MAX + 8];
    snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
    assert_int_equal(mkdir(state_dir, 0700), 0);
    /* Same sizes as the config but slots (config: 16; lanes = 1 + 1 + 8). */
    struct gw_seg_config other = {.accounts = 256,
                                  .budgets = 16,
                                  .slots = 32,
                                  .queue = 16,
                                  .lanes = 10,
                                  .prompt_bytes = 4096,
                                  .output_bytes = 4096};
    struct gw_segment seg;
    char err[256];
    assert_int_equal(gw_segment_open(&seg, seg_path, &other, err, sizeof(err)), 0);
    gw_segment_close(&seg);

    struct master *m = calloc(1, sizeof(*m));
    master_start(m, NULL);
    assert_int_equal(master_exit(m, DEADLINE_MS), 1);
    char want[PATH_MAX * 2];
    snprintf(want, sizeof(want),
             "<3>gpuwarden[master]: %s: created with slots=32, config asks for 16 (move the file "
             "away to start over with new sizes)\n",
             seg_path);
    assert_string_equal(m->log, want);

    /* Not a segment at all. */
    write_file(seg_path, "this is not a ledger, but it is long enough to hold a header. "
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         "................................................................."
                         ".................................................................");
    master_start(m, NULL);
    assert_int_equal(master_exit(m, DEADLINE_MS), 1);
    snprintf(want, sizeof(want), "<3>gpuwarden[master]: %s: not a gpuwarden segment (bad magic)\n",
             seg_path);
    assert_string_equal(m->log, want);
    free(m);
}

static void test_master_names_the_address_it_cannot_bind(void **state)
{
    (void)state;
    /* Hold the port so the master's bind fails. */
    struct sockaddr_in a;
    int fd = listen_loopback(&a);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(a.sin_port));
    write_config(addr, 1, "/nonexistent/model.gguf");

    struct master *m = calloc(1, sizeof(*m));
    master_start(m, NULL);
    assert_int_equal(master_exit(m, DEADLINE_MS), 1);
    char want[256];
    snprintf(want, sizeof(want),
             "<3>gpuwarden[master]: listen %s: cannot bind: Address already in use\n", addr);
    assert_non_null(strstr(m->log, want));
    assert_null(strstr(m->log, "started"));
    free(m);
    close(fd);

    /* An address this host does not have. */
    write_config("192.0.2.1:8080", 1, "/nonexistent/model.gguf");
    m = calloc(1, sizeof(*m));
    master_start(m, NULL);
    assert_int_equal(master_exit(m, DEADLINE_MS), 1);
    assert_non_null(strstr(m->log, "<3>gpuwarden[master]: listen 192.0.2.1:8080: cannot bind: "
                                   "Cannot assign requested address\n"));
    free(m);
}

/* READY=1 once the worker is ready and the front runs; STOPPING=1 on
 * SIGTERM, then exit 0 with every child gone and every lane but none
 * left held. */
static void test_master_notifies_ready_and_stopping(void **state)
{
    (void)state;
    char addr[64];
    int lfd = activation_socket(addr, sizeof(addr));
    write_model();
    write_config(addr, 1, model_path);
    struct notify *n = calloc(1, sizeof(*n));
    notify_open(n);
    struct master *m = calloc(1, sizeof(*m));
    master_start_env(m, n->path, lfd, 0);
    close(lfd);
    assert_true(notify_expect(n, m, "READY=1", DEADLINE_MS));
    assert_non_null(
        strstr(n->all, "STATUS=ready; fronts 1/1 running, workers 1/1 ready; config epoch 1"));
    assert_true(master_expect(m, "<6>gpuwarden[master]: ready: 1 front, 1 worker\n", DEADLINE_MS));
    pid_t w = lane_pid(GW_ROLE_WORKER, 0, NULL), f = lane_pid(GW_ROLE_FRONT, 0, NULL);
    assert_true(w > 0);
    assert_true(f > 0);

    /* SIGHUP: RELOADING=1, then READY=1 again, epoch 2. */
    kill(m->pid, SIGHUP);
    assert_true(notify_expect(n, m, "RELOADING=1\nMONOTONIC_USEC=", DEADLINE_MS));
    assert_true(notify_expect(n, m, "READY=1", DEADLINE_MS));
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "gpuwarden[master]: reloaded %s (config epoch 2)\n", cfg_path);
    assert_true(master_expect(m, want, DEADLINE_MS));

    /* What needs a restart is named and kept; the rest still applies. */
    write_config(addr, 2, model_path);
    kill(m->pid, SIGHUP);
    assert_true(notify_expect(n, m, "RELOADING=1", DEADLINE_MS));
    assert_true(notify_expect(n, m, "READY=1", DEADLINE_MS));
    assert_true(master_expect(m,
                              "gpuwarden[master]: reload: a restart is needed to change workers; "
                              "keeping the running values\n",
                              DEADLINE_MS));
    snprintf(want, sizeof(want), "gpuwarden[master]: reloaded %s (config epoch 3)\n", cfg_path);
    assert_true(master_expect(m, want, DEADLINE_MS));
    assert_null(strstr(m->log, "worker 1 started"));

    /* A broken file is refused, and the node keeps going. */
    write_file(cfg_path, "{\"fronts\": ");
    kill(m->pid, SIGHUP);
    assert_true(notify_expect(n, m, "RELOADING=1", DEADLINE_MS));
    assert_true(notify_expect(n, m, "READY=1", DEADLINE_MS));
    assert_true(master_expect(m, "gpuwarden[master]: reload refused; keeping the running config\n",
                              DEADLINE_MS));

    kill(m->pid, SIGTERM);
    assert_true(notify_expect(n, m, "STOPPING=1", DEADLINE_MS));
    assert_int_equal(master_exit(m, DEADLINE_MS), 0);
    assert_non_null(
        strstr(m->log, "gpuwarden[master]: SIGTERM: stopping; fronts drain for up to 1000 ms\n"));
    assert_non_null(strstr(m->log, "gpuwarden[master]: stopped\n"));
    assert_int_equal(kill(w, 0), -1);
    assert_int_equal(kill(f, 0), -1);
    assert_false(pid_in_lanes(w));
    assert_false(pid_in_lanes(f));
    assert_false(pid_in_lanes(m->pid));
    /* no WATCHDOG_USEC was given: no watchdog ping was ever sent */
    assert_null(strstr(n->all, "WATCHDOG=1"));
    close(n->fd);
    free(n);
    free(m);
}

/* model.pin_threads (default): a worker of two threads pins them, one per
 * CPU, to the first two CPUs the process may use, and its ready line says
 * so. Skipped with fewer than two CPUs. */
static void test_worker_pins_its_threads(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int cpu[2] = {-1, -1}, k = 0;
    for (int c = 0; c < CPU_SETSIZE && k < 2; c++)
        if (CPU_ISSET(c, &set))
            cpu[k++] = c;
    if (k < 2)
        skip();
    char addr[64];
    int lfd = activation_socket(addr, sizeof(addr));
    write_model();
    cfg_threads = 2;
    write_config(addr, 1, model_path);
    struct master *m = calloc(1, sizeof(*m));
    master_start_env(m, NULL, lfd, 0);
    close(lfd);
    char want[256];
    snprintf(want, sizeof want,
             cpu[1] == cpu[0] + 1 ? ", 2 threads pinned to CPUs %d-%d, cpu engine\n"
                                  : ", 2 threads pinned to CPUs %d,%d, cpu engine\n",
             cpu[0], cpu[1]);
    assert_true(master_expect(m, want, DEADLINE_MS));
    pid_t w = lane_pid(GW_ROLE_WORKER, 0, NULL);
    assert_true(w > 0);
    /* the worker's threads: the two of the pool, each on its own CPU */
    int on[2] = {0, 0};
    char path[384], line[256];
    snprintf(path, sizeof path, "/proc/%d/task", (int)w);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "/proc/%d/task/%s/status", (int)w, e->d_name);
            FILE *f = fopen(path, "r");
            while (f && fgets(line, sizeof line, f))
                if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
                    int c = atoi(line + 18);
                    char one[32];
                    snprintf(one, sizeof one, "%d\n", c);
                    int pinned = strcmp(line + 18 + strspn(line + 18, " \t"), one) == 0;
                    on[0] += pinned && c == cpu[0];
                    on[1] += pinned && c == cpu[1];
                }
            if (f)
                fclose(f);
        }
    closedir(d);
    assert_int_equal(on[0], 1);
    assert_int_equal(on[1], 1);
    kill(m->pid, SIGTERM);
    assert_int_equal(master_exit(m, DEADLINE_MS), 0);
    free(m);
}

/* Socket activation and the systemd watchdog: the master serves on the
 * socket it was given as fd 3 (LISTEN_FDS=1, LISTEN_PID its own) instead of
 * the config's address, says so, and sends WATCHDOG=1 again and again while
 * it is healthy (how often is the master's loop's business: a test cannot
 * time it without a clock it controls); the LISTEN_* and WATCHDOG_*
 * variables do not reach the children. */
static void test_master_socket_activation_and_watchdog(void **state)
{
    (void)state;
    struct sockaddr_in a;
    int lfd = listen_loopback(&a);
    /* the config names another port, which must stay unused: one this
     * test holds bound but not listening, so a connection there is refused
     * (and a master that tried to bind it would fail to start) */
    char addr[64];
    struct sockaddr_in o = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t olen = sizeof(o);
    int held = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(held, (struct sockaddr *)&o, sizeof(o)), 0);
    assert_int_equal(getsockname(held, (struct sockaddr *)&o, &olen), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(o.sin_port));
    write_model();
    write_config(addr, 1, model_path);
    struct notify *n = calloc(1, sizeof(*n));
    notify_open(n);
    struct master *m = calloc(1, sizeof(*m));
    master_start_env(m, n->path, lfd, 400000);
    close(lfd);
    assert_true(notify_expect(n, m, "READY=1", DEADLINE_MS));
    assert_true(master_expect(m,
                              "<6>gpuwarden[master]: socket activation: 1 listening socket from "
                              "systemd (the config's \"listen\" is not used)\n",
                              DEADLINE_MS));
    /* pings, one after another, as long as it is healthy */
    for (int i = 0; i < 3; i++)
        assert_true(notify_expect(n, m, "WATCHDOG=1", DEADLINE_MS));

    /* the activated socket answers; the config's port does not */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    const char *get = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(write(c, get, strlen(get)), (ssize_t)strlen(get));
    char buf[2048];
    size_t got = 0;
    struct pollfd p = {.fd = c, .events = POLLIN};
    while (got < sizeof(buf) - 1 && poll(&p, 1, DEADLINE_MS) == 1) {
        ssize_t r = read(c, buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    close(c);
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    c = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&o, sizeof(o)), -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(c);
    close(held);

    /* the children did not inherit the variables meant for the master */
    pid_t w = lane_pid(GW_ROLE_WORKER, 0, NULL);
    assert_true(w > 0);
    char path[64], env[16384];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)w);
    int ef = open(path, O_RDONLY);
    assert_true(ef >= 0);
    ssize_t el = read(ef, env, sizeof(env) - 1);
    close(ef);
    assert_true(el > 0);
    for (ssize_t i = 0; i < el; i++)
        if (env[i] == '\0')
            env[i] = '\n';
    env[el] = '\0';
    assert_null(strstr(env, "LISTEN_FDS="));
    assert_null(strstr(env, "LISTEN_PID="));
    assert_null(strstr(env, "WATCHDOG_USEC="));
    assert_null(strstr(env, "NOTIFY_SOCKET="));

    kill(m->pid, SIGTERM);
    assert_true(notify_expect(n, m, "STOPPING=1", DEADLINE_MS));
    assert_int_equal(master_exit(m, DEADLINE_MS), 0);
    close(n->fd);
    free(n);
    free(m);
}

/* kill -9 of a worker and of a front: the master logs the death, repairs
 * the lane and starts a new process that takes a lane of its own. */
static void test_master_repairs_and_respawns_a_killed_child(void **state)
{
    (void)state;
    char addr[64];
    int lfd = activation_socket(addr, sizeof(addr));
    write_model();
    write_config(addr, 1, model_path);
    struct notify *n = calloc(1, sizeof(*n));
    notify_open(n);
    struct master *m = calloc(1, sizeof(*m));
    master_start_env(m, n->path, lfd, 0);
    close(lfd);
    assert_true(notify_expect(n, m, "READY=1", DEADLINE_MS));

    int roles[2] = {GW_ROLE_WORKER, GW_ROLE_FRONT};
    const char *names[2] = {"worker", "front"};
    for (int i = 0; i < 2; i++) {
        pid_t old = lane_pid(roles[i], 0, NULL);
        assert_true(old > 0);
        assert_int_equal(kill(old, SIGKILL), 0);
        char want[256];
        snprintf(want, sizeof(want),
                 "<4>gpuwarden[master]: %s 0 (pid %d) killed by signal 9 (SIGKILL)\n", names[i],
                 (int)old);
        assert_true(master_expect(m, want, DEADLINE_MS));
        snprintf(want, sizeof(want), "gpuwarden[master]: %s 0 (pid %d): lane ", names[i], (int)old);
        assert_true(master_expect(m, want, DEADLINE_MS));
        /* it was up: killed from outside, it comes back at once */
        snprintf(want, sizeof(want),
                 "<6>gpuwarden[master]: %s 0: it was up and was killed from outside: restarting "
                 "now\n",
                 names[i]);
        assert_true(master_expect(m, want, DEADLINE_MS));
        pid_t fresh = wait_new_ready(roles[i], 0, old, DEADLINE_MS);
        assert_true(fresh > 0);
        assert_true(fresh != old);
        assert_false(pid_in_lanes(old));
        snprintf(want, sizeof(want), "gpuwarden[master]: %s 0 started (pid %d)\n", names[i],
                 (int)fresh);
        assert_true(master_expect(m, want, DEADLINE_MS));
    }
    /* Killed from outside again and again (as a chaos test does): every
     * time it is back at once, and it is not taken for a crash loop. (We
     * are its systemd: read the notifications meanwhile, or the master
     * blocks on a full notify socket, as it would on a stuck systemd.) */
    for (int k = 0; k < 6; k++) {
        pid_t old = lane_pid(GW_ROLE_FRONT, 0, NULL), fresh = 0;
        assert_true(old > 0);
        assert_int_equal(kill(old, SIGKILL), 0);
        for (uint64_t end = now_ms() + DEADLINE_MS;
             now_ms() < end && (fresh <= 0 || fresh == old);) {
            char d[4096];
            while (recv(n->fd, d, sizeof(d), MSG_DONTWAIT) > 0)
                ;
            fresh = lane_pid(GW_ROLE_FRONT, 0, NULL);
            usleep(20000);
        }
        if (fresh <= 0 || fresh == old) {
            master_read(m, 100);
            fprintf(stderr, "%s", m->log);
            fail_msg("front not back after kill %d of pid %d", k, (int)old);
        }
    }
    master_read(m, 100);
    assert_null(strstr(m->log, "crash-looping"));
    assert_null(strstr(m->log, "restart in"));
    kill(m->pid, SIGTERM);
    assert_int_equal(master_exit(m, DEADLINE_MS), 0);
    close(n->fd);
    free(n);
    free(m);
}

/* A worker that cannot start (its model file is not a model) exits again
 * and again: backoff doubles from 0.1 s, and the fifth exit within 60 s is
 * reported once as a crash loop, in the log and in STATUS=. */
static void test_master_reports_a_crash_loop(void **state)
{
    (void)state;
    char addr[64], bogus[PATH_MAX + 16];
    int lfd = activation_socket(addr, sizeof(addr));
    snprintf(bogus, sizeof(bogus), "%s/not-a-model.gguf", dir);
    write_file(bogus, "not a model\n");
    write_config(addr, 1, bogus);
    struct notify *n = calloc(1, sizeof(*n));
    notify_open(n);
    struct master *m = calloc(1, sizeof(*m));
    master_start_env(m, n->path, lfd, 0);
    close(lfd);
    assert_true(master_expect(m, "gpuwarden[master]: worker 0: restart in 0.1 s\n", DEADLINE_MS));
    assert_true(master_expect(m, "gpuwarden[master]: worker 0: restart in 0.2 s\n", DEADLINE_MS));
    assert_true(master_expect(m, "gpuwarden[master]: worker 0: restart in 0.4 s\n", DEADLINE_MS));
    assert_true(master_expect(m, "gpuwarden[master]: worker 0: restart in 0.8 s\n", DEADLINE_MS));
    assert_true(master_expect(
        m,
        "<4>gpuwarden[master]: worker 0 is crash-looping: 5 exits in 60 s; next start in 1.6 s\n",
        DEADLINE_MS));
    assert_true(notify_expect(n, m, "worker 0 crash-looping (5 exits in 60 s)", DEADLINE_MS));
    /* once per episode: the sixth exit is a plain restart line */
    assert_true(master_expect(m, "gpuwarden[master]: worker 0: restart in 3.2 s\n", DEADLINE_MS));
    const char *first = strstr(m->log, "crash-looping");
    assert_null(strstr(first + 1, "crash-looping"));
    assert_null(strstr(n->all, "READY=1"));
    kill(m->pid, SIGTERM);
    assert_int_equal(master_exit(m, DEADLINE_MS), 0);
    close(n->fd);
    free(n);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_config_accepts_good_and_names_every_mistake,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_master_refuses_segment_of_another_layout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_master_names_the_address_it_cannot_bind, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_master_notifies_ready_and_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_pins_its_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_master_socket_activation_and_watchdog, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_master_repairs_and_respawns_a_killed_child, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_master_reports_a_crash_loop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
