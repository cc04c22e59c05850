/* master_internal.h - what the master's two files share: master.c (the
 * main loop, signals, reload, shutdown) and master_children.c (starting,
 * reaping and restarting the children, and the lanes they hold). Private
 * to supervisor/. */
#ifndef GW_MASTER_INTERNAL_H
#define GW_MASTER_INTERNAL_H

#include "gw_supervisor.h"

#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define MS 1000000ull               /* ns per ms */
#define SEC 1000000000ull           /* ns per s */
#define TICK_MS 100                 /* housekeeping period of the loop */
#define BACKOFF_FIRST (100 * MS)    /* first respawn delay */
#define BACKOFF_MAX (30 * SEC)      /* respawn delay cap */
#define STABLE_AFTER (60 * SEC)     /* a child that lived this long resets its backoff */
#define LOOP_WINDOW (60 * SEC)      /* crash-loop window ... */
#define LOOP_EXITS 5                /* ... and the exits in it that make one */
#define EXIT_RING 16                /* exit times remembered per child */
#define WORKER_STOP_GRACE (5 * SEC) /* SIGTERM to SIGKILL for workers */
#define KILL_WAIT (5 * SEC)         /* how long a SIGKILL'd child may take to go */

/* One front or worker, whether running or waiting to be restarted. */
struct child {
    int role;                  /* GW_ROLE_FRONT, GW_ROLE_WORKER or GW_ROLE_CLUSTER */
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
    int has_metrics; /* metrics.listen is open: metrics_fd, passed to every front */
    int metrics_fd;
    int work_efd;
    int n_fronts, n_workers;
    int front_efd[GW_MAX_FRONTS];
    struct child *children; /* workers first, then fronts, then the cluster agent */
    int n_children;
    int sfd; /* signalfd */
    sigset_t old_mask;
    int terms; /* SIGTERM/SIGINT received */
    int last_term_sig;
    int hup; /* SIGHUP pending */
    int stopping;
    int ready_sent;
    uint64_t epoch;       /* config epoch: 1 at start, +1 per accepted reload */
    uint64_t watchdog_ns; /* 0: no systemd watchdog */
    uint64_t watchdog_last_ns;
    char status[512];         /* last STATUS= sent */
    struct gw_admin *admin;   /* the admin socket (admin.c), NULL without one */
    struct gw_watchdog *wdog; /* the anomaly killer (watchdog.c) */
    int usr1;                 /* SIGUSR1 pending: reopen the audit log */
};

/* ------------------------------------------------------------------ logging */

#define say(...) gw_log("master", __VA_ARGS__)
/* Failures that stop the master, and children that died: journald keeps
 * the level (gw_logf prefixes "<3>" / "<4>"). */
#define say_err(...) gw_logf(GW_LOG_ERR, "master", NULL, 0, __VA_ARGS__)
#define say_warn(...) gw_logf(GW_LOG_WARNING, "master", NULL, 0, __VA_ARGS__)

/* Small enough to be each file's own copy. */
static inline const char *role_name(int role)
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
    case GW_ROLE_CLUSTER:
        return "cluster agent";
    default:
        return "process";
    }
}

static inline const char *sig_name(int sig)
{
    const char *s = sigabbrev_np(sig);
    return s ? s : "?";
}

/* ------------------------------------------------------------------ pidfds */

static inline int pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static inline int pidfd_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

/* ------------------------------------------------------- master_children.c */

/* Start-up: repairs the lanes an earlier master left, after taking the
 * master's own lane. 0, or 1 when the master must not start (another
 * master runs on the segment, or no lane is free). */
int gw__master_sweep_lanes(struct master *m);
/* The lane child c holds now, or -1 (not attached yet). */
int gw__master_child_lane(struct master *m, struct child *c);
/* Exit times of c within the crash-loop window before now. */
int gw__master_recent_exits(const struct child *c, uint64_t now);
struct child *gw__master_child_by_pid(struct master *m, pid_t pid);
/* Handles every child that has exited: lane repaired, reaped, respawn
 * scheduled. */
void gw__master_reap(struct master *m);
/* sig through the pidfd of every running child of `role` (0: all). */
void gw__master_signal_role(struct master *m, int role, int sig);
/* Running children of `role` (0: all). */
int gw__master_running(struct master *m, int role);
/* Starts the children whose restart is due at now. */
void gw__master_respawn_due(struct master *m, uint64_t now);
/* Milliseconds until the next tick or the next respawn, whichever is first. */
int gw__master_next_timeout(struct master *m, uint64_t now);
/* Workers whose lane says READY. */
int gw__master_workers_ready(struct master *m);
/* Fronts that run and have attached. */
int gw__master_fronts_running(struct master *m);

#endif
