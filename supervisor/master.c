/* master.c - the gpuwarden master: loads the config, creates the shared
 * segment and the listening sockets, starts the fronts and the workers
 * (fork + exec) and keeps them running; reloads on SIGHUP, drains on
 * SIGTERM. It never parses a request.
 *
 * Shape (nginx's master cycle, with descriptors instead of sigsuspend):
 * every signal the master handles is blocked and read from a signalfd;
 * each child has a pidfd. One poll() over the signalfd and the pidfds,
 * with a ~100 ms tick, is the whole event loop: nothing runs in a signal
 * handler, and a child's exit is seen whichever of SIGCHLD and its pidfd
 * comes first.
 *
 * The children themselves (spawn, reap, restart policy, lanes):
 * master_children.c. */
#include "master_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ logging */

/* Each line of a multi-line message (config errors) as its own log line. */
static void say_lines(int level, const char *text)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        if (n > 0)
            gw_logf(level, "master", NULL, 0, "%.*s", n, p);
        p += n + (nl ? 1 : 0);
    }
}

/* ------------------------------------------------------------ small helpers */

/* mkdir -p with `mode` for the directories it creates. */
static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST)
                return -errno;
            *p = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* ------------------------------------------------------- listening sockets */

/* "host:port" or "[v6]:port" into a listening socket (backlog 1024,
 * SO_REUSEADDR, IPV6_V6ONLY for v6). On failure *err names the address. */
static int open_listener(const char *addr, int *out, char *err, size_t errlen)
{
    char host[64], port[16];
    const char *colon;
    if (addr[0] == '[') {
        const char *close_br = strchr(addr, ']');
        if (!close_br || close_br[1] != ':' || (size_t)(close_br - addr - 1) >= sizeof(host)) {
            snprintf(err, errlen, "listen %s: expected \"host:port\" or \"[v6]:port\"", addr);
            return -EINVAL;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close_br - addr - 1), addr + 1);
        colon = close_br + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
            snprintf(err, errlen, "listen %s: expected \"host:port\" or \"[v6]:port\"", addr);
            return -EINVAL;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    }
    if (snprintf(port, sizeof(port), "%s", colon + 1) >= (int)sizeof(port) || !port[0]) {
        snprintf(err, errlen, "listen %s: bad port", addr);
        return -EINVAL;
    }
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(host[0] && strcmp(host, "*") != 0 ? host : NULL, port, &hints, &ai);
    if (g != 0) {
        snprintf(err, errlen, "listen %s: %s", addr, gai_strerror(g));
        return -EINVAL;
    }
    int rc = 0, one = 1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "listen %s: socket: %s", addr, strerror(-rc));
        goto done;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
        rc = -errno;
        snprintf(err, errlen, "listen %s: setsockopt: %s", addr, strerror(-rc));
        goto done;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        rc = -errno;
        snprintf(err, errlen, "listen %s: cannot bind: %s", addr, strerror(-rc));
        goto done;
    }
    if (listen(fd, 1024) != 0) {
        rc = -errno;
        snprintf(err, errlen, "listen %s: listen: %s", addr, strerror(-rc));
        goto done;
    }
done:
    freeaddrinfo(ai);
    if (rc != 0 && fd >= 0)
        close(fd);
    if (rc == 0)
        *out = fd;
    return rc;
}

/* metrics.listen: /metrics alone on its own address, served by every
 * front (docs/CONFIG.md, "metrics"); opened here even under socket
 * activation. */
static int open_metrics_listener(struct master *m)
{
    char err[256];
    if (!m->cfg->metrics.listen[0])
        return 0;
    if (open_listener(m->cfg->metrics.listen, &m->metrics_fd, err, sizeof(err)) != 0) {
        say_err("metrics.%s", err);
        return 1;
    }
    m->has_metrics = 1;
    say("/metrics on %s", m->cfg->metrics.listen);
    return 0;
}

/* The sockets systemd passed, or one per cfg->listen entry. */
static int open_listeners(struct master *m)
{
    int n = gw_notify_listen_fds();
    if (n < 0) {
        say("socket activation: %s", strerror(-n));
        return 1;
    }
    if (n > 0) {
        if (n > GW_MAX_LISTEN) {
            say("socket activation: %d sockets passed, at most %d are used", n, GW_MAX_LISTEN);
            return 1;
        }
        for (int i = 0; i < n; i++)
            m->listen[m->n_listen++] = GW_LISTEN_FDS_START + i;
        say("socket activation: %d listening socket%s from systemd (the config's \"listen\" is "
            "not used)",
            n, n == 1 ? "" : "s");
        return open_metrics_listener(m);
    }
    for (int i = 0; i < m->cfg->n_listen; i++) {
        char err[256];
        int fd;
        if (open_listener(m->cfg->listen[i], &fd, err, sizeof(err)) != 0) {
            say_err("%s", err);
            return 1;
        }
        m->listen[m->n_listen++] = fd;
        say("listening on %s", m->cfg->listen[i]);
    }
    return open_metrics_listener(m);
}

/* ------------------------------------------------------------- event loop */

/* Waits up to timeout_ms for a signal or a child's exit, then handles
 * what arrived: exits are repaired and reaped here, SIGTERM/SIGINT and
 * SIGHUP only recorded for the caller. */
static void pump(struct master *m, int timeout_ms)
{
    struct pollfd p[1 + 256 + 32];
    int n = 0;
    p[n++] = (struct pollfd){.fd = m->sfd, .events = POLLIN};
    for (int i = 0; i < m->n_children && n < 1 + 256; i++)
        if (m->children[i].pid)
            p[n++] = (struct pollfd){.fd = m->children[i].pidfd, .events = POLLIN};
    int n_admin = gw_admin_pollfds(m->admin, p + n, 32);
    int r = poll(p, (nfds_t)(n + n_admin), timeout_ms);
    if (r < 0 && errno != EINTR)
        say("poll: %s", strerror(errno));
    struct signalfd_siginfo si;
    while (read(m->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            m->terms++;
            m->last_term_sig = (int)si.ssi_signo;
        } else if (si.ssi_signo == SIGHUP) {
            m->hup = 1;
        } else if (si.ssi_signo == SIGUSR1) {
            m->usr1 = 1;
        }
    }
    /* SIGCHLD or a readable pidfd: either way, look. */
    gw__master_reap(m);
    if (r > 0)
        gw_admin_serve(m->admin, p + n, n_admin);
}

/* The STATUS= line: one place that says how the node is. */
static void status_line(struct master *m, char *buf, size_t len, int fronts_up, int wready)
{
    int ok = fronts_up == m->n_fronts && wready == m->n_workers;
    size_t at = 0;
    int w =
        snprintf(buf, len, "%s; fronts %d/%d running, workers %d/%d ready; config epoch %" PRIu64,
                 m->ready_sent ? (ok ? "ready" : "degraded") : "starting", fronts_up, m->n_fronts,
                 wready, m->n_workers, m->epoch);
    at = w < 0 ? 0 : (size_t)w < len ? (size_t)w : len - 1;
    uint64_t now = gw_mono_ns();
    for (int i = 0; i < m->n_children && at < len; i++) {
        struct child *c = &m->children[i];
        if (!c->looping)
            continue;
        w = snprintf(buf + at, len - at, "; %s %d crash-looping (%d exits in 60 s)",
                     role_name(c->role), c->index, gw__master_recent_exits(c, now));
        at = w < 0 ? at : at + (size_t)w < len ? at + (size_t)w : len - 1;
    }
}

/* Housekeeping each turn of the loop: crash-loop episodes that ended,
 * readiness, STATUS=, the systemd watchdog, our heartbeat. */
static void tick(struct master *m, uint64_t now)
{
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        /* started_ns may be after `now`: a respawn this very turn. */
        if (c->pid && now > c->started_ns && now - c->started_ns >= STABLE_AFTER &&
            (c->looping || c->backoff_ns)) {
            if (c->looping)
                say("%s %d has run for %llu s: crash loop over", role_name(c->role), c->index,
                    (unsigned long long)(STABLE_AFTER / SEC));
            c->looping = 0;
            c->backoff_ns = 0;
        }
    }
    int fronts_up = gw__master_fronts_running(m), wready = gw__master_workers_ready(m);
    if (!m->ready_sent && fronts_up == m->n_fronts && wready == m->n_workers) {
        m->ready_sent = 1;
        gw_proc_set_state(&m->seg, GW_PROC_READY);
        say("ready: %d front%s, %d worker%s", m->n_fronts, m->n_fronts == 1 ? "" : "s",
            m->n_workers, m->n_workers == 1 ? "" : "s");
        char st[512];
        status_line(m, st, sizeof(st), fronts_up, wready);
        snprintf(m->status, sizeof(m->status), "%s", st);
        gw_notify_ready(st);
    }
    char st[512];
    status_line(m, st, sizeof(st), fronts_up, wready);
    if (strcmp(st, m->status) != 0) {
        snprintf(m->status, sizeof(m->status), "%s", st);
        gw_notify_status(st);
    }
    /* Healthy = this loop turns; the watchdog is what notices when it
     * stops. Four pings per interval leave room for a slow turn. */
    if (m->watchdog_ns && now - m->watchdog_last_ns >= m->watchdog_ns / 4) {
        m->watchdog_last_ns = now;
        gw_notify_watchdog();
    }
    gw_proc_heartbeat(&m->seg, -1);
}

/* ----------------------------------------------------------------- reload */

/* The "model" section is read by the workers at start only (they ignore
 * SIGHUP): when nc changes it, nc gets oc's values back and this returns 1
 * so the reload says a restart is needed. */
static int keep_model(struct gw_config *nc, const struct gw_config *oc)
{
    if (strcmp(nc->model_path, oc->model_path) == 0 &&
        strcmp(nc->model_name, oc->model_name) == 0 && strcmp(nc->device, oc->device) == 0 &&
        nc->context == oc->context && nc->threads == oc->threads &&
        nc->max_batch == oc->max_batch && nc->kv_cache_tokens == oc->kv_cache_tokens &&
        nc->prefill_chunk == oc->prefill_chunk && nc->step_tokens == oc->step_tokens &&
        nc->vtc_weight_prompt == oc->vtc_weight_prompt &&
        nc->vtc_weight_output == oc->vtc_weight_output && nc->priority_lead == oc->priority_lead)
        return 0;
    memcpy(nc->model_path, oc->model_path, sizeof(nc->model_path));
    memcpy(nc->model_name, oc->model_name, sizeof(nc->model_name));
    memcpy(nc->device, oc->device, sizeof(nc->device));
    nc->context = oc->context;
    nc->threads = oc->threads;
    nc->max_batch = oc->max_batch;
    nc->kv_cache_tokens = oc->kv_cache_tokens;
    nc->prefill_chunk = oc->prefill_chunk;
    nc->step_tokens = oc->step_tokens;
    nc->vtc_weight_prompt = oc->vtc_weight_prompt;
    nc->vtc_weight_output = oc->vtc_weight_output;
    nc->priority_lead = oc->priority_lead;
    return 1;
}

/* Returns 1 when the new config was taken, 0 when not; `why` (may be NULL)
 * gets the reason it was refused, or the settings that need a restart. */
static int reload(struct master *m, char *why, size_t whylen)
{
    char spare[8];
    if (!why) {
        why = spare;
        whylen = sizeof(spare);
    }
    why[0] = '\0';
    if (m->stopping) {
        snprintf(why, whylen, "the node is stopping");
        return 0;
    }
    int announced = m->ready_sent; /* systemd reloads only an active service */
    if (announced)
        gw_notify_reloading();
    say("SIGHUP: reloading %s", m->config_path);
    struct gw_config *nc = NULL;
    char err[4096] = "";
    if (gw_config_load(&nc, m->config_path, err, sizeof(err)) != 0) {
        say_lines(GW_LOG_WARNING, err);
        say("reload refused; keeping the running config");
        snprintf(why, whylen, "%s", err);
        if (announced)
            gw_notify_ready(m->status);
        return 0;
    }
    struct gw_config *oc = m->cfg;
    char need[256] = "";
#define NEED(what)                                                                                 \
    snprintf(need + strlen(need), sizeof(need) - strlen(need), "%s%s", need[0] ? ", " : "", what)
    int listen_same = nc->n_listen == oc->n_listen;
    for (int i = 0; listen_same && i < nc->n_listen; i++)
        listen_same = strcmp(nc->listen[i], oc->listen[i]) == 0;
    if (!listen_same) {
        NEED("listen");
        nc->n_listen = oc->n_listen;
        memcpy(nc->listen, oc->listen, sizeof(nc->listen));
    }
    if (strcmp(nc->metrics.listen, oc->metrics.listen) != 0) {
        NEED("metrics.listen");
        memcpy(nc->metrics.listen, oc->metrics.listen, sizeof(nc->metrics.listen));
    }
    /* lanes follow fronts + workers: reported as those, not as sizes. */
    struct gw_seg_config ns = nc->segment, os = oc->segment;
    ns.lanes = os.lanes = 0;
    if (memcmp(&ns, &os, sizeof(ns)) != 0)
        NEED("segment sizes");
    nc->segment = oc->segment;
    if (nc->fronts != oc->fronts) {
        NEED("fronts");
        nc->fronts = oc->fronts;
    }
    if (nc->workers != oc->workers) {
        NEED("workers");
        nc->workers = oc->workers;
    }
    if (keep_model(nc, oc))
        NEED("model");
    if (strcmp(nc->state_dir, oc->state_dir) != 0) {
        NEED("state_dir");
        memcpy(nc->state_dir, oc->state_dir, sizeof(nc->state_dir));
    }
#undef NEED
    /* the API keys file parses, and its live copy is written for the
     * fronts (apikeys.c); else the fronts keep the set they have */
    if (gw_apikeys_load_publish(&m->seg, nc, err, sizeof(err)) != 0) {
        say_lines(GW_LOG_WARNING, err);
        say("reload refused; keeping the running config and API keys");
        snprintf(why, whylen, "%s", err);
        gw_config_free(nc);
        if (announced)
            gw_notify_ready(m->status);
        return 0;
    }
    if (need[0]) {
        say("reload: a restart is needed to change %s; keeping the running values", need);
        snprintf(why, whylen, "a restart is needed to change %s; kept the running values", need);
    }
    m->cfg = nc;
    gw_config_free(oc);
    m->epoch++;
    gw_log_set_format(nc->log_format);
    /* set-limit changes last until a reload: the fronts drop them at their
     * next admission (before this SIGHUP reaches them, or after). */
    gw_limits_clear(&m->seg);
    /* The children re-read the file themselves. */
    gw__master_signal_role(m, 0, SIGHUP);
    say("reloaded %s (config epoch %" PRIu64 ")", m->config_path, m->epoch);
    if (announced) {
        char st[512];
        status_line(m, st, sizeof(st), gw__master_fronts_running(m), gw__master_workers_ready(m));
        snprintf(m->status, sizeof(m->status), "%s", st);
        gw_notify_ready(st);
    }
    return 1;
}

/* ------------------------------------------------------------ admin host */

static struct gw_config *admin_config(void *ctx)
{
    return ((struct master *)ctx)->cfg;
}

static uint64_t admin_epoch(void *ctx)
{
    return ((struct master *)ctx)->epoch;
}

static int admin_children(void *ctx, struct gw_admin_child *out, int max)
{
    struct master *m = ctx;
    int n = 0;
    for (int i = 0; i < m->n_children && n < max; i++) {
        struct child *c = &m->children[i];
        out[n++] = (struct gw_admin_child){.role = c->role,
                                           .index = c->index,
                                           .pid = c->pid,
                                           .lane = gw__master_child_lane(m, c),
                                           .restarts = c->n_exits,
                                           .looping = c->looping};
    }
    return n;
}

static int admin_reload(void *ctx, char *why, size_t whylen)
{
    return reload(ctx, why, whylen);
}

/* The watchdog's second step: SIGKILL through the child's pidfd. */
static int watchdog_kill(void *ctx, pid_t pid)
{
    struct child *c = gw__master_child_by_pid(ctx, pid);
    if (!c || c->pidfd < 0)
        return -ESRCH;
    return pidfd_signal(c->pidfd, SIGKILL) == 0 ? 0 : -errno;
}

/* --------------------------------------------------------------- shutdown */

/* Runs the loop until no child of `role` runs, `deadline` passes or
 * another SIGTERM/SIGINT asks to hurry. 1 when none is left. */
static int wait_role(struct master *m, int role, uint64_t deadline, int hurry_at)
{
    for (;;) {
        if (!gw__master_running(m, role))
            return 1;
        uint64_t now = gw_mono_ns();
        if (now >= deadline || m->terms >= hurry_at)
            return 0;
        uint64_t left = (deadline - now + MS - 1) / MS;
        pump(m, left < TICK_MS ? (int)left : TICK_MS);
        if (m->watchdog_ns && now - m->watchdog_last_ns >= m->watchdog_ns / 4) {
            m->watchdog_last_ns = now;
            gw_notify_watchdog();
        }
    }
}

/* Stops the children of `role`: SIGTERM, `grace` to go, then SIGKILL. */
static void stop_role(struct master *m, int role, uint64_t grace)
{
    if (!gw__master_running(m, role))
        return;
    gw__master_signal_role(m, role, SIGTERM);
    if (wait_role(m, role, gw_mono_ns() + grace, 2))
        return;
    say("%d %s%s still running: SIGKILL", gw__master_running(m, role), role_name(role),
        gw__master_running(m, role) == 1 ? "" : "s");
    gw__master_signal_role(m, role, SIGKILL);
    if (!wait_role(m, role, gw_mono_ns() + KILL_WAIT, INT_MAX))
        say("%d %s%s did not exit after SIGKILL", gw__master_running(m, role), role_name(role),
            gw__master_running(m, role) == 1 ? "" : "s");
}

static void shutdown_children(struct master *m)
{
    m->stopping = 1;
    uint32_t drain = m->cfg->drain_timeout_ms;
    char st[128];
    snprintf(st, sizeof(st), "stopping: draining fronts (up to %u ms)", drain);
    gw_notify_stopping(st);
    say("SIG%s: stopping; fronts drain for up to %u ms", sig_name(m->last_term_sig), drain);
    for (int i = 0; i < m->n_children; i++)
        m->children[i].next_start_ns = 0;
    stop_role(m, GW_ROLE_FRONT, (uint64_t)drain * MS + 1 * SEC);
    stop_role(m, GW_ROLE_WORKER, WORKER_STOP_GRACE);
    stop_role(m, GW_ROLE_CLUSTER, WORKER_STOP_GRACE);
}

/* ------------------------------------------------------------------- main */

/* The directory of our own executable; the children's programs live there. */
static int find_exe_dir(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return -errno;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash)
        return -EINVAL;
    *slash = '\0';
    return 0;
}

static int setup_signals(struct master *m)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1); /* the watchdog's audit log is reopened */
    if (sigprocmask(SIG_BLOCK, &set, &m->old_mask) != 0)
        return -errno;
    m->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sfd < 0)
        return -errno;
    signal(SIGPIPE, SIG_IGN); /* children get SIG_DFL back before exec */
    return 0;
}

static int setup_children(struct master *m)
{
    m->n_fronts = m->cfg->fronts;
    m->n_workers = m->cfg->workers;
    if (m->n_fronts < 1 || m->n_fronts > GW_MAX_FRONTS || m->n_workers < 1) {
        say("%s: need 1..%d fronts and at least 1 worker (have %d, %d)", m->config_path,
            GW_MAX_FRONTS, m->n_fronts, m->n_workers);
        return 1;
    }
    m->work_efd = eventfd(0, EFD_SEMAPHORE | EFD_CLOEXEC);
    if (m->work_efd < 0) {
        say("eventfd: %s", strerror(errno));
        return 111;
    }
    for (int i = 0; i < m->n_fronts; i++) {
        m->front_efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (m->front_efd[i] < 0) {
            say("eventfd: %s", strerror(errno));
            return 111;
        }
    }
    /* the cluster agent, when the node is part of a farm */
    m->n_children = m->n_workers + m->n_fronts + (m->cfg->cluster.enabled ? 1 : 0);
    m->children = calloc((size_t)m->n_children, sizeof(*m->children));
    if (!m->children) {
        say("out of memory");
        return 111;
    }
    /* Workers first: loading the model takes longest. */
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        c->role = i < m->n_workers                 ? GW_ROLE_WORKER
                  : i < m->n_workers + m->n_fronts ? GW_ROLE_FRONT
                                                   : GW_ROLE_CLUSTER;
        c->index = i < m->n_workers ? i : i < m->n_workers + m->n_fronts ? i - m->n_workers : 0;
        c->pidfd = -1;
        c->lane = -1;
        c->next_start_ns = 1; /* due now */
    }
    return 0;
}

static void teardown(struct master *m)
{
    gw_admin_close(m->admin);
    gw_watchdog_free(m->wdog);
    if (m->seg_open) {
        /* Any lane still carrying a child's pid (a child that would not
         * die) is left as it is: the next master's sweep handles it. */
        gw_segment_close(&m->seg);
    }
    for (int i = 0; i < m->n_children; i++)
        if (m->children[i].pidfd >= 0)
            close(m->children[i].pidfd);
    free(m->children);
    for (int i = 0; i < m->n_listen; i++)
        close(m->listen[i]);
    if (m->has_metrics)
        close(m->metrics_fd);
    if (m->work_efd >= 0)
        close(m->work_efd);
    for (int i = 0; i < m->n_fronts; i++)
        if (m->front_efd[i] >= 0)
            close(m->front_efd[i]);
    if (m->sfd >= 0) {
        close(m->sfd);
        sigprocmask(SIG_SETMASK, &m->old_mask, NULL);
    }
    gw_config_free(m->cfg);
}

int gw_master_main(const char *config_path)
{
    struct master *m = calloc(1, sizeof(*m));
    if (!m) {
        say_err("out of memory");
        return 111;
    }
    m->sfd = m->work_efd = -1;
    for (int i = 0; i < GW_MAX_FRONTS; i++)
        m->front_efd[i] = -1;
    m->epoch = 1;
    int rc = 1;
    char err[4096] = "";
    if (gw_config_load(&m->cfg, config_path, err, sizeof(err)) != 0) {
        say_lines(GW_LOG_ERR, err[0] ? err : "config: cannot load");
        goto out;
    }
    gw_log_set_format(m->cfg->log_format);
    if (!realpath(config_path, m->config_path)) {
        say_err("%s: %s", config_path, strerror(errno));
        goto out;
    }
    int e = find_exe_dir(m->exe_dir, sizeof(m->exe_dir));
    if (e != 0) {
        say_err("/proc/self/exe: %s", strerror(-e));
        rc = 111;
        goto out;
    }
    const char *dir = m->cfg->state_dir[0] ? m->cfg->state_dir : ".";
    if ((e = mkdir_p(dir, 0700)) != 0) {
        say_err("state_dir %s: cannot create: %s", dir, strerror(-e));
        goto out;
    }
    if (gw_segment_path(m->cfg, m->seg_path, sizeof(m->seg_path)) != 0) {
        say_err("state_dir %s: path too long", dir);
        goto out;
    }
    if (gw_segment_open(&m->seg, m->seg_path, &m->cfg->segment, err, sizeof(err)) != 0) {
        say_err("%s", err);
        goto out;
    }
    m->seg_open = 1;
    if (gw__master_sweep_lanes(m) != 0) /* takes the master's lane */
        goto out;
    gw_proc_set_role(&m->seg, GW_ROLE_MASTER, 0);
    /* Run-time limits die with the master that set them: the config file
     * is what runs now (this also repairs a cell a killed master left
     * half-written). */
    gw_limits_clear(&m->seg);
    /* Address-range rules stay (bans outlive a restart); a rule a killed
     * master left half written is cleared (common/netrules.c). */
    gw_net_repair(&m->seg);
    gw_jti_repair(&m->seg); /* revocations stay too (common/jti.c) */
    /* the fronts' live copy of the API keys, from the file as it is now
     * (a change a killed master wrote but did not publish included) */
    if (gw_apikeys_load_publish(&m->seg, m->cfg, err, sizeof(err)) != 0) {
        say_lines(GW_LOG_ERR, err);
        goto out;
    }
    if ((e = setup_signals(m)) != 0) {
        say_err("signals: %s", strerror(-e));
        rc = 111;
        goto out;
    }
    if ((rc = open_listeners(m)) != 0 || (rc = setup_children(m)) != 0)
        goto out;
    uint64_t wd = gw_notify_watchdog_usec();
    m->watchdog_ns = wd * 1000ull;
    say("started (pid %d): %d front%s, %d worker%s, segment %s, config %s", (int)getpid(),
        m->n_fronts, m->n_fronts == 1 ? "" : "s", m->n_workers, m->n_workers == 1 ? "" : "s",
        m->seg_path, m->config_path);
    gw_notify_status("starting");
    struct gw_admin_host host = {.ctx = m,
                                 .config = admin_config,
                                 .epoch = admin_epoch,
                                 .children = admin_children,
                                 .reload = admin_reload};
    if ((e = gw_admin_open(&m->admin, &host, &m->seg, err, sizeof(err))) != 0)
        say("%s; running without the admin socket (gpuwardenctl cannot reach this node)", err);
    struct gw_wd_host wdh = {.ctx = m, .kill_pid = watchdog_kill};
    if ((e = gw_watchdog_new(&m->wdog, &m->seg, m->cfg, &wdh)) != 0) {
        say("watchdog: %s", strerror(-e));
        rc = 111;
        goto out;
    }

    for (;;) {
        uint64_t now = gw_mono_ns();
        gw__master_respawn_due(m, now);
        tick(m, now);
        int wait_ms = gw__master_next_timeout(m, gw_mono_ns());
        int wd_ms = gw_watchdog_tick(m->wdog, m->cfg, gw_mono_ns());
        pump(m, wd_ms < wait_ms ? wd_ms : wait_ms);
        if (m->usr1) {
            m->usr1 = 0;
            gw_watchdog_reopen(m->wdog, m->cfg);
        }
        if (m->terms)
            break;
        if (m->hup) {
            m->hup = 0;
            reload(m, NULL, 0);
        }
    }
    shutdown_children(m);
    say("stopped");
    rc = 0;
out:
    teardown(m);
    free(m);
    return rc;
}
