/* master_children.c - the master's children: starting them (fork + exec),
 * noticing when they die, repairing their lanes and restarting them with
 * backoff; at start-up, the lanes an earlier master left.
 *
 * A dead child is found with waitid(WNOWAIT) and its lane repaired while it
 * is still a zombie: its pid cannot be reused before it is reaped, so the
 * lane that carries that pid is certainly the dead child's. Only then is it
 * reaped and its respawn scheduled, with backoff. Every signal to a child
 * goes through its pidfd. */
#include "master_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>

/* ------------------------------------------------------------------ lanes */

/* Repairs every lane that carries `pid` (the dead child is a zombie, so the
 * pid is still its own). Returns how many lanes were repaired. */
static int repair_pid(struct master *m, pid_t pid, const char *who)
{
    int repaired = 0;
    for (int l = 0; l < (int)m->seg.cfg.lanes; l++) {
        if (l == m->seg.lane || gw_lane_pid(&m->seg, l) != pid)
            continue;
        int resumed = 0;
        int failed = gw_lane_repair_resume(&m->seg, l, &resumed);
        say("%s: lane %d repaired, %d slot%s failed, %d put back to be continued", who, l,
            failed < 0 ? 0 : failed, failed == 1 ? "" : "s", resumed);
        if (resumed > 0) {
            uint64_t n = (uint64_t)resumed; /* wake that many workers */
            if (write(m->work_efd, &n, sizeof(n)) < 0)
                say("work eventfd: %s", strerror(errno));
        }
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
int gw__master_sweep_lanes(struct master *m)
{
    pid_t self = getpid();
    for (int l = 0; l < (int)m->seg.cfg.lanes; l++) {
        struct gw_proc_info pi;
        if (gw_proc_get(&m->seg, l, &pi) != 0)
            continue;
        if (pi.role == GW_ROLE_MASTER && pi.pid != self && pid_alive(pi.pid) && is_ours(pi.pid)) {
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
int gw__master_child_lane(struct master *m, struct child *c)
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
    int front = c->role == GW_ROLE_FRONT, agent = c->role == GW_ROLE_CLUSTER;
    char exe[PATH_MAX + 32], idx[16];
    snprintf(exe, sizeof(exe), "%s/%s", m->exe_dir,
             front || agent ? "gpuwarden" : "gpuwarden-worker");
    snprintf(idx, sizeof(idx), "%d", c->index);
    char *argv[] = {exe, front ? "--front" : "--index", idx, "-c", m->config_path, NULL};
    char *agent_argv[] = {exe, "--cluster", "-c", m->config_path, NULL};

    struct gw_fds fds = {.work = m->work_efd, .n_fronts = m->n_fronts, .metrics = -1};
    int inherit[GW_MAX_LISTEN + 2 + GW_MAX_FRONTS], n_inherit = 0;
    if (front) {
        fds.n_listen = m->n_listen;
        for (int i = 0; i < m->n_listen; i++)
            inherit[n_inherit++] = fds.listen[i] = m->listen[i];
        if (m->has_metrics)
            inherit[n_inherit++] = fds.metrics = m->metrics_fd;
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
        child_exec(m, c, self, exe, agent ? agent_argv : argv, fds_text, inherit, n_inherit);

    int pidfd = pidfd_open(pid);
    if (pidfd < 0) {
        /* Not reaped yet, so the pid is still this child's: kill() cannot
         * hit another process here. */
        rc = -errno;
        say("%s %d (pid %d): pidfd_open: %s; stopping it", role_name(c->role), c->index, (int)pid,
            strerror(-rc));
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
int gw__master_recent_exits(const struct child *c, uint64_t now)
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
        int l = gw__master_child_lane(m, c);
        if (l >= 0 && gw_proc_get(&m->seg, l, &pi) == 0 && pi.pid == c->pid)
            was_up = c->role == GW_ROLE_FRONT
                         ? pi.role == GW_ROLE_FRONT
                         : pi.state == GW_PROC_READY || pi.state == GW_PROC_DRAINING;
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
    int recent = gw__master_recent_exits(c, now);
    if (recent >= LOOP_EXITS && !c->looping) {
        c->looping = 1;
        say_warn("%s %d is crash-looping: %d exits in %llu s; next start in %.1f s",
                 role_name(c->role), c->index, recent, (unsigned long long)(LOOP_WINDOW / SEC),
                 (double)c->backoff_ns / SEC);
    } else {
        say("%s %d: restart in %.1f s", role_name(c->role), c->index, (double)c->backoff_ns / SEC);
    }
}

struct child *gw__master_child_by_pid(struct master *m, pid_t pid)
{
    for (int i = 0; i < m->n_children; i++)
        if (m->children[i].pid == pid)
            return &m->children[i];
    return NULL;
}

/* Handles every child that has exited. */
void gw__master_reap(struct master *m)
{
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        /* WNOWAIT: look, do not reap, so the pid stays the dead child's
         * while its lane is repaired. */
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0)
            return;
        struct child *c = gw__master_child_by_pid(m, si.si_pid);
        if (c) {
            child_exited(m, c, &si);
        } else {
            waitpid(si.si_pid, NULL, 0);
            say("reaped pid %d, not one of ours", (int)si.si_pid);
        }
    }
}

void gw__master_signal_role(struct master *m, int role, int sig)
{
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        if (c->pid && (role == 0 || c->role == role) && pidfd_signal(c->pidfd, sig) != 0 &&
            errno != ESRCH)
            say("%s %d (pid %d): pidfd_send_signal %s: %s", role_name(c->role), c->index,
                (int)c->pid, sig_name(sig), strerror(errno));
    }
}

int gw__master_running(struct master *m, int role)
{
    int n = 0;
    for (int i = 0; i < m->n_children; i++)
        if (m->children[i].pid && (role == 0 || m->children[i].role == role))
            n++;
    return n;
}

/* ------------------------------------------------- restarts and readiness */

void gw__master_respawn_due(struct master *m, uint64_t now)
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
int gw__master_next_timeout(struct master *m, uint64_t now)
{
    uint64_t t = TICK_MS * MS;
    for (int i = 0; i < m->n_children; i++) {
        const struct child *c = &m->children[i];
        if (!c->pid && c->next_start_ns)
            t = c->next_start_ns <= now ? 0
                                        : (c->next_start_ns - now < t ? c->next_start_ns - now : t);
    }
    return (int)((t + MS - 1) / MS);
}

/* Workers whose lane says READY. */
int gw__master_workers_ready(struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        struct gw_proc_info pi;
        int l = c->role == GW_ROLE_WORKER ? gw__master_child_lane(m, c) : -1;
        if (l >= 0 && gw_proc_get(&m->seg, l, &pi) == 0 && pi.pid == c->pid &&
            pi.role == GW_ROLE_WORKER && pi.state == GW_PROC_READY)
            n++;
    }
    return n;
}

/* Fronts that run and have attached: their lane carries the front role
 * (they have read the config and mapped the segment; connections to the
 * listening sockets wait in the backlog until they accept). */
int gw__master_fronts_running(struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->n_children; i++) {
        struct child *c = &m->children[i];
        struct gw_proc_info pi;
        int l = c->role == GW_ROLE_FRONT ? gw__master_child_lane(m, c) : -1;
        if (l >= 0 && gw_proc_get(&m->seg, l, &pi) == 0 && pi.pid == c->pid &&
            pi.role == GW_ROLE_FRONT)
            n++;
    }
    return n;
}
