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
 * A dead child is found with waitid(WNOWAIT) and its lane repaired while it
 * is still a zombie: its pid cannot be reused before it is reaped, so the
 * lane that carries that pid is certainly the dead child's. Only then is it
 * reaped and its respawn scheduled, with backoff. Every signal to a child
 * goes through its pidfd. */
#include "gw_supervisor.h"

#include <errno.h>
#include <fcntl.h>
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
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MS 1000000ull                  /* ns per ms */
#define SEC 1000000000ull              /* ns per s */
#define TICK_MS 100                    /* housekeeping period of the loop */
#define BACKOFF_FIRST (100 * MS)       /* first respawn delay */
#define BACKOFF_MAX (30 * SEC)         /* respawn delay cap */
#define STABLE_AFTER (60 * SEC)        /* a child that lived this long resets its backoff */
#define LOOP_WINDOW (60 * SEC)         /* crash-loop window ... */
#define LOOP_EXITS 5                   /* ... and the exits in it that make one */
#define EXIT_RING 16                   /* exit times remembered per child */
#define WORKER_STOP_GRACE (5 * SEC)    /* SIGTERM to SIGKILL for workers */
#define KILL_WAIT (5 * SEC)            /* how long a SIGKILL'd child may take to go */

/* One front or worker, whether running or waiting to be restarted. */
struct child {
    int role;                  /* GW_ROLE_FRONT or GW_ROLE_WORKER */
    int index;                 /* front i / worker i */
    pid_t pid;                 /* 0 when not running */
    int pidfd;                 /* -1 when not running */
    uint64_t started_ns;       /* CLOCK_MONOTONIC at fork */
    uint64_t next_start_ns;    /* when to start it; 0 = running or not due */
    uint64_t backoff_ns;       /* delay used for the last respawn, 0 = none yet */
    uint64_t exits[EXIT_RING]; /* CLOCK_MONOTONIC of recent exits (ring) */
    unsigned n_exits;          /* exits recorded, ever */
    int looping;               /* in a crash-loop episode */
    int lane;                  /* last lane seen with our pid, -1 unknown */
};

struct master {
    char config_path[PATH_MAX]; /* absolute: children run from elsewhere */
    char exe_dir[PATH_MAX];     /* where gpuwarden and gpuwarden-worker live */
    char seg_path[PATH_MAX];
    struct gw_config *cfg;
    struct gw_segment seg;
    int seg_open;
    int n_listen;
    int listen[GW_MAX_LISTEN];
    int work_efd;
    int n_fronts, n_workers;
    int front_efd[GW_MAX_FRONTS];
    struct child *children; /* workers first, then fronts */
    int n_children;
    int sfd;                /* signalfd */
    sigset_t old_mask;
    int terms;              /* SIGTERM/SIGINT received */
    int last_term_sig;
    int hup;                /* SIGHUP pending */
    int stopping;
    int ready_sent;
    uint64_t epoch;         /* config epoch: 1 at start, +1 per accepted reload */
    uint64_t watchdog_ns;   /* 0: no systemd watchdog */
    uint64_t watchdog_last_ns;
    char status[512];       /* last STATUS= sent */
    struct gw_admin *admin; /* the admin socket (admin.c), NULL without one */
    struct gw_watchdog *wdog; /* the anomaly killer (watchdog.c) */
    int usr1;               /* SIGUSR1 pending: reopen the audit log */
};

/* ------------------------------------------------------------------ logging */

#define say(...) gw_log("master", __VA_ARGS__)
/* Failures that stop the master, and children that died: journald keeps
 * the level (gw_logf prefixes "<3>" / "<4>"). */
#define say_err(...) gw_logf(GW_LOG_ERR, "master", NULL, 0, __VA_ARGS__)
#define say_warn(...) gw_logf(GW_LOG_WARNING, "master", NULL, 0, __VA_ARGS__)

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

static const char *role_name(int role)
{
    switch (role) {
    case GW_ROLE_MASTER:
        return "master";
    case GW_ROLE_FRONT:
        return "front";
    case GW_ROLE_WORKER:
        return "worker";
    case GW_ROLE_TOOL:
        return "tool";
    default:
        return "process";
    }
}

static const char *sig_name(int sig)
{
    const char *s = sigabbrev_np(sig);
    return s ? s : "?";
}

/* ------------------------------------------------------------ small helpers */

static int pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

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
        return 0;
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
    return 0;
}

/* ------------------------------------------------------------------ lanes */

/* Repairs every lane that carries `pid` (the dead child is a zombie, so the
 * pid is still its own). Returns how many lanes were repaired. */
static int repair_pid(struct master *m, pid_t pid, const char *who)
{
    int repaired = 0;
    for (int l = 0; l < (int)m->seg.cfg.lanes; l++) {
        if (l == m->seg.lane || gw_lane_pid(&m->seg, l) != pid)
            continue;
        int failed = gw_lane_repair(&m->seg, l);
        say("%s: lane %d repaired, %d slot%s failed", who, l, failed < 0 ? 0 : failed,
            failed == 1 ? "" : "s");
        repaired++;
    }
    return repaired;
}

/* /proc/<pid>/comm starts with "gpuwarden" (a front, worker or master of
 * ours, not gpuwardenctl). */
static int is_ours(pid_t pid)
{
    char path[64], comm[32] = "";
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    if (!fgets(comm, sizeof(comm), f))
        comm[0] = '\0';
    fclose(f);
    return strncmp(comm, "gpuwarden", 9) == 0 && strncmp(comm, "gpuwardenctl", 12) != 0;
}

static int pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* Waits up to `ns` for the process behind pidfd to exit. 1 when it did. */
static int pidfd_wait(int pidfd, uint64_t ns)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    uint64_t end = gw_mono_ns() + ns;
    for (;;) {
        uint64_t now = gw_mono_ns();
        if (now >= end)
            return 0;
        int r = poll(&p, 1, (int)((end - now) / MS) + 1);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return 0;
    }
}

/* Start-up: lanes left by an earlier master. A lane whose pid is gone (or
 * now belongs to some other program) is repaired. A live gpuwarden master
 * on the segment stops us. A live front or worker of ours is the previous
 * master's child on its way out (PR_SET_PDEATHSIG): it gets a moment, then
 * SIGKILL through a pidfd, then its lane is repaired. Live tools are left
 * alone. */
static int sweep_stale_lanes(struct master *m)
{
    pid_t self = getpid();
    for (int l = 0; l < (int)m->seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&m->seg, l, &pi) != 0)
            continue;
        if (pi.role == GW_ROLE_MASTER && pi.pid != self && pid_alive(pi.pid) &&
            is_ours(pi.pid)) {
            say("%s: another master (pid %d) is running on this segment; stop it first",
                m->seg_path, (int)pi.pid);
            return 1;
        }
    }
    /* The repair settles money through our own lane's columns
     * (gw_lane_repair refuses without one), so take it first: sweeping
     * before this made every repair a no-op (-EINVAL), and a SIGKILLed
     * master's children kept their lanes and slots for good (found by
     * scripts/chaos-soak.sh: a RUNNING slot of a dead worker, its
     * reservation and in-flight unit held, and fewer free lanes after each
     * master crash). */
    int e = gw_lane_acquire(&m->seg);
    if (e != 0) {
        say("%s: no free lane for the master: %s", m->seg_path, gw_strerror(e));
        return 1;
    }
    int repaired = 0;
    for (int l = 0; l < (int)m->seg.cfg.lanes; l++) {
        if (l == m->seg.lane)
            continue;
        struct gw_proc_info pi;
        if (gw_proc_get(&m->seg, l, &pi) != 0)
            continue;
        if (pi.pid != self && pid_alive(pi.pid)) {
            if (pi.role == GW_ROLE_TOOL)
                continue; /* a live gpuwardenctl */
            if (is_ours(pi.pid)) {
                /* A pidfd is readable once the process has exited, zombie
                 * or not (kill(pid, 0) still succeeds on a zombie that
                 * nobody has reaped yet). */
                int fd = pidfd_open(pi.pid), gone = fd < 0 && errno == ESRCH;
                if (fd >= 0) {
                    gone = pidfd_wait(fd, 1 * SEC);
                    if (!gone) {
                        say("lane %d: %s %d (pid %d) of an earlier master is still running: "
                            "SIGKILL",
                            l, role_name(pi.role), pi.index, (int)pi.pid);
                        pidfd_signal(fd, SIGKILL);
                        gone = pidfd_wait(fd, KILL_WAIT);
                    }
                    close(fd);
                }
                if (!gone) {
                    say("lane %d: pid %d does not exit; leaving its lane alone", l, (int)pi.pid);
                    continue;
                }
            }
        }
        int failed = gw_lane_repair(&m->seg, l);
        if (failed < 0) {
            say("lane %d: %s %d (pid %d) of an earlier run is gone; repair failed: %s", l,
                role_name(pi.role), pi.index, (int)pi.pid, gw_strerror(failed));
            continue;
        }
        say("lane %d: %s %d (pid %d) of an earlier run is gone: repaired, %d slot%s failed", l,
            role_name(pi.role), pi.index, (int)pi.pid, failed, failed == 1 ? "" : "s");
        repaired++;
    }
    (void)repaired;
    return 0;
}

/* The lane child c holds now, or -1 (not attached yet). */
static int child_lane(struct master *m, struct child *c)
{
    if (!c->pid)
        return -1;
    if (c->lane >= 0 && gw_lane_pid(&m->seg, c->lane) == c->pid)
        return c->lane;
    c->lane = -1;
    for (int l = 0; l < (int)m->seg.cfg.lanes; l++)
        if (gw_lane_pid(&m->seg, l) == c->pid) {
            c->lane = l;
            break;
        }
    return c->lane;
}

/* --------------------------------------------------------------- children */

/* In the child, between fork and exec: the master is single-threaded, so
 * the usual libc calls are safe here. Never returns. */
static void child_exec(struct master *m, struct child *c, pid_t master_pid, const char *exe,
                       char *const argv[], const char *fds_text, const int *inherit, int n_inherit)
{
    /* Die with the master; if it died before prctl took effect, the
     * parent is already someone else. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != master_pid)
        _exit(111);
    /* exec keeps ignored dispositions and the mask: give the child the
     * defaults. */
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL); /* fails harmlessly for the reserved ones */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Everything the master opens is close-on-exec; exactly these cross. */
    for (int i = 0; i < n_inherit; i++)
        if (fcntl(inherit[i], F_SETFD, 0) != 0)
            _exit(111);
    if (setenv("GW_FDS", fds_text, 1) != 0)
        _exit(111);
    gw_notify_unset_env();
    execv(exe, argv);
    say("%s %d: cannot exec %s: %s", role_name(c->role), c->index, exe, strerror(errno));
    (void)m;
    _exit(127);
}

static int spawn(struct master *m, struct child *c)
{
    int front = c->role == GW_ROLE_FRONT;
    char exe[PATH_MAX + 32], idx[16];
    snprintf(exe, sizeof(exe), "%s/%s", m->exe_dir, front ? "gpuwarden" : "gpuwarden-worker");
    snprintf(idx, sizeof(idx), "%d", c->index);
    char *argv[] = {exe, front ? "--front" : "--index", idx, "-c", m->config_path, NULL};

    struct gw_fds fds = {.work = m->work_efd, .n_fronts = m->n_fronts};
    int inherit[GW_MAX_LISTEN + 1 + GW_MAX_FRONTS], n_inherit = 0;
    if (front) {
        fds.n_listen = m->n_listen;
        for (int i = 0; i < m->n_listen; i++)
            inherit[n_inherit++] = fds.listen[i] = m->listen[i];
    }
    inherit[n_inherit++] = m->work_efd;
    for (int i = 0; i < m->n_fronts; i++)
        inherit[n_inherit++] = fds.fronts[i] = m->front_efd[i];
    char fds_text[1024];
    int rc = gw_fds_format(&fds, fds_text, sizeof(fds_text));
    if (rc != 0) {
        say("%s %d: GW_FDS: %s", role_name(c->role), c->index, gw_strerror(rc));
        return rc;
    }

    pid_t self = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        say("%s %d: cannot fork: %s", role_name(c->role), c->index, strerror(-rc));
        return rc;
    }
    if (pid == 0)
        child_exec(m, c, self, exe, argv, fds_text, inherit, n_inherit);

    int pidfd = pidfd_open(pid);
    if (pidfd < 0) {
        /* Not reaped yet, so the pid is still this child's: kill() cannot
         * hit another process here. */
        rc = -errno;
        say("%s %d (pid %d): pidfd_open: %s; stopping it", role_name(c->role), c->index,
            (int)pid, strerror(-rc));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return rc;
    }
    c->pid = pid;
    c->pidfd = pidfd;
    c->lane = -1;
    c->started_ns = gw_mono_ns();
    c->next_start_ns = 0;
    say("%s %d started (pid %d)", role_name(c->role), c->index, (int)pid);
    return 0;
}

/* Exit times of c within the crash-loop window before now. */
static int recent_exits(const struct child *c, uint64_t now)
{
    int n = 0;
    unsigned have = c->n_exits < EXIT_RING ? c->n_exits : EXIT_RING;
    for (unsigned i = 0; i < have; i++)
        if (now - c->exits[i] < LOOP_WINDOW)
            n++;
    return n;
}

/* c exited with waitid's `si`; its zombie still holds the pid. */
static void child_exited(struct master *m, struct child *c, const siginfo_t *si)
{
    char who[64];
    snprintf(who, sizeof(who), "%s %d (pid %d)", role_name(c->role), c->index, (int)c->pid);
    if (si->si_code == CLD_EXITED)
        say_warn("%s exited with status %d", who, si->si_status);
    else
        say_warn("%s killed by signal %d (SIG%s)%s", who, si->si_status, sig_name(si->si_status),
            si->si_code == CLD_DUMPED ? ", core dumped" : "");
    int wd_killed = gw_watchdog_reaped(m->wdog, c->pid);
    /* Had it come up (a front attached, a worker loaded its model)? Read
     * before the repair clears its lane. */
    int was_up = 0;
    {
        struct gw_proc_info pi;
        int l = child_lane(m, c);
        if (l >= 0 && gw_proc_get(&m->seg, l, &pi) == 0 && pi.pid == c->pid)
            was_up = c->role == GW_ROLE_FRONT ? pi.role == GW_ROLE_FRONT
                                              : pi.state == GW_PROC_READY ||
                                                    pi.state == GW_PROC_DRAINING;
    }
    repair_pid(m, c->pid, who);
    /* Reap only now: until here the pid could not be reused. */
    waitpid(c->pid, NULL, 0);
    close(c->pidfd);
    c->pidfd = -1;
    c->pid = 0;
    c->lane = -1;
    if (m->stopping)
        return;
    gw_metrics_add(&m->seg, c->role == GW_ROLE_FRONT ? GW_MC_RESTARTS_FRONT : GW_MC_RESTARTS_WORKER,
                   1);
    if (wd_killed) {
        /* The watchdog's kill, not a crash: no backoff, not counted. */
        c->next_start_ns = gw_mono_ns();
        say("%s %d: killed by the watchdog; restarting now", role_name(c->role), c->index);
        return;
    }

    /* SIGKILL or SIGTERM from outside (an operator, the OOM killer, a
     * chaos test) after the child had come up says nothing about the
     * binary or the config: back at once, like nginx's workers, so the
     * node is not left without fronts. Backoff and the crash-loop count
     * are for children that crash (a fault signal, a non-zero exit) or
     * that die before they come up. */
    if (was_up && si->si_code == CLD_KILLED &&
        (si->si_status == SIGKILL || si->si_status == SIGTERM)) {
        c->next_start_ns = gw_mono_ns();
        c->backoff_ns = 0;
        say("%s %d: it was up and was killed from outside: restarting now", role_name(c->role),
            c->index);
        return;
    }

    uint64_t now = gw_mono_ns();
    if (now - c->started_ns >= STABLE_AFTER) {
        c->backoff_ns = 0;
        c->looping = 0;
    }
    c->backoff_ns = c->backoff_ns ? c->backoff_ns * 2 : BACKOFF_FIRST;
    if (c->backoff_ns > BACKOFF_MAX)
        c->backoff_ns = BACKOFF_MAX;
    c->next_start_ns = now + c->backoff_ns;
    c->exits[c->n_exits++ % EXIT_RING] = now;
    int recent = recent_exits(c, now);
    if (recent >= LOOP_EXITS && !c->looping) {
        c->looping = 1;
        say_warn("%s %d is crash-looping: %d exits in %llu s; next start in %.1f s",
            role_name(c->role), c->index, recent, (unsigned long long)(LOOP_WINDOW / SEC),
            (double)c->backoff_ns / SEC);
    } else {
        say("%s %d: restart in %.1f s", role_name(c->role), c->index,
            (double)c->backoff_ns / SEC);
    }
}

static struct child *child_by_pid(struct master *m, pid_t pid)
{
    for (int i = 0; i < m->n_children; i++)
        if (m->children[i].pid == pid)
            return &m->children[i];
    return NULL;
}

/* Handles every child that has exited. */
static void reap(struct master *m)
{
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        /* WNOWAIT: look, do not reap, so the pid stays the dead child's
         * while its lane is repaired. */
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0)
            return;
        struct child *c = child_by_pid(m, si.si_pid);
        if (c) {
            child_exited(m, c, &si);
        } else {
            waitpid(si.si_pid, NULL, 0);
            say("reaped pid %d, not one of ours", (int)si.si_pid);
        }
    }
}

static void signal_role(struct master *m, int role, int sig)
{
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        if (c->pid && (role == 0 || c->role == role) && pidfd_signal(c->pidfd, sig) != 0 &&
            errno != ESRCH)
            say("%s %d (pid %d): pidfd_send_signal %s: %s", role_name(c->role), c->index,
                (int)c->pid, sig_name(sig), strerror(errno));
    }
}

static int running(struct master *m, int role)
{
    int n = 0;
    for (int i = 0; i < m->n_children; i++)
        if (m->children[i].pid && (role == 0 || m->children[i].role == role))
            n++;
    return n;
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
    reap(m);
    if (r > 0)
        gw_admin_serve(m->admin, p + n, n_admin);
}

static void respawn_due(struct master *m, uint64_t now)
{
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        if (!c->pid && c->next_start_ns && now >= c->next_start_ns && spawn(m, c) != 0) {
            /* fork or exec preparation failed: try again with backoff. */
            c->backoff_ns = c->backoff_ns ? c->backoff_ns * 2 : BACKOFF_FIRST;
            if (c->backoff_ns > BACKOFF_MAX)
                c->backoff_ns = BACKOFF_MAX;
            c->next_start_ns = now + c->backoff_ns;
        }
    }
}

/* Milliseconds until the next tick or the next respawn, whichever is first. */
static int next_timeout(struct master *m, uint64_t now)
{
    uint64_t t = TICK_MS * MS;
    for (int i = 0; i < m->n_children; i++) {
        const struct child *c = &m->children[i];
        if (!c->pid && c->next_start_ns)
            t = c->next_start_ns <= now ? 0 : (c->next_start_ns - now < t ? c->next_start_ns - now : t);
    }
    return (int)((t + MS - 1) / MS);
}

/* Workers whose lane says READY. */
static int workers_ready(struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        struct gw_proc_info pi;
        int l = c->role == GW_ROLE_WORKER ? child_lane(m, c) : -1;
        if (l >= 0 && gw_proc_get(&m->seg, l, &pi) == 0 && pi.pid == c->pid &&
            pi.role == GW_ROLE_WORKER && pi.state == GW_PROC_READY)
            n++;
    }
    return n;
}

/* Fronts that run and have attached: their lane carries the front role
 * (they have read the config and mapped the segment; connections to the
 * listening sockets wait in the backlog until they accept). */
static int fronts_running(struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        struct gw_proc_info pi;
        int l = c->role == GW_ROLE_FRONT ? child_lane(m, c) : -1;
        if (l >= 0 && gw_proc_get(&m->seg, l, &pi) == 0 && pi.pid == c->pid &&
            pi.role == GW_ROLE_FRONT)
            n++;
    }
    return n;
}

/* The STATUS= line: one place that says how the node is. */
static void status_line(struct master *m, char *buf, size_t len, int fronts_up, int wready)
{
    int ok = fronts_up == m->n_fronts && wready == m->n_workers;
    size_t at = 0;
    int w = snprintf(buf, len, "%s; fronts %d/%d running, workers %d/%d ready; config epoch %" PRIu64,
                     m->ready_sent ? (ok ? "ready" : "degraded") : "starting", fronts_up,
                     m->n_fronts, wready, m->n_workers, m->epoch);
    at = w < 0 ? 0 : (size_t)w < len ? (size_t)w : len - 1;
    uint64_t now = gw_mono_ns();
    for (int i = 0; i < m->n_children && at < len; i++) {
        struct child *c = &m->children[i];
        if (!c->looping)
            continue;
        w = snprintf(buf + at, len - at, "; %s %d crash-looping (%d exits in 60 s)",
                     role_name(c->role), c->index, recent_exits(c, now));
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
    int fronts_up = fronts_running(m), wready = workers_ready(m);
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
    if (strcmp(nc->model_path, oc->model_path) != 0 || strcmp(nc->model_name, oc->model_name) != 0 ||
        strcmp(nc->device, oc->device) != 0 || nc->context != oc->context ||
        nc->threads != oc->threads) {
        NEED("model");
        memcpy(nc->model_path, oc->model_path, sizeof(nc->model_path));
        memcpy(nc->model_name, oc->model_name, sizeof(nc->model_name));
        memcpy(nc->device, oc->device, sizeof(nc->device));
        nc->context = oc->context;
        nc->threads = oc->threads;
    }
    if (strcmp(nc->state_dir, oc->state_dir) != 0) {
        NEED("state_dir");
        memcpy(nc->state_dir, oc->state_dir, sizeof(nc->state_dir));
    }
#undef NEED
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
    signal_role(m, 0, SIGHUP);
    say("reloaded %s (config epoch %" PRIu64 ")", m->config_path, m->epoch);
    if (announced) {
        char st[512];
        status_line(m, st, sizeof(st), fronts_running(m), workers_ready(m));
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
        out[n++] = (struct gw_admin_child){.role = c->role, .index = c->index, .pid = c->pid,
                                           .lane = child_lane(m, c), .restarts = c->n_exits,
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
    struct child *c = child_by_pid(ctx, pid);
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
        if (!running(m, role))
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
    if (!running(m, role))
        return;
    signal_role(m, role, SIGTERM);
    if (wait_role(m, role, gw_mono_ns() + grace, 2))
        return;
    say("%d %s%s still running: SIGKILL", running(m, role), role_name(role),
        running(m, role) == 1 ? "" : "s");
    signal_role(m, role, SIGKILL);
    if (!wait_role(m, role, gw_mono_ns() + KILL_WAIT, INT_MAX))
        say("%d %s%s did not exit after SIGKILL", running(m, role), role_name(role),
            running(m, role) == 1 ? "" : "s");
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
    m->n_children = m->n_workers + m->n_fronts;
    m->children = calloc((size_t)m->n_children, sizeof(*m->children));
    if (!m->children) {
        say("out of memory");
        return 111;
    }
    /* Workers first: loading the model takes longest. */
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        c->role = i < m->n_workers ? GW_ROLE_WORKER : GW_ROLE_FRONT;
        c->index = i < m->n_workers ? i : i - m->n_workers;
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
    if (sweep_stale_lanes(m) != 0) /* takes the master's lane */
        goto out;
    gw_proc_set_role(&m->seg, GW_ROLE_MASTER, 0);
    /* Run-time limits die with the master that set them: the config file
     * is what runs now (this also repairs a cell a killed master left
     * half-written). */
    gw_limits_clear(&m->seg);
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
    struct gw_admin_host host = {.ctx = m, .config = admin_config, .epoch = admin_epoch,
                                 .children = admin_children, .reload = admin_reload};
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
        respawn_due(m, now);
        tick(m, now);
        int wait_ms = next_timeout(m, gw_mono_ns());
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
