/* notify.c - the master's conversation with systemd: readiness, status,
 * reload, stop and watchdog notifications (sd_notify), and the listening
 * sockets of socket activation. Only the master calls these; children have
 * the protocol's variables removed before exec (gw_notify_unset_env). */
#include "gw_supervisor.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <time.h>

_Static_assert(GW_LISTEN_FDS_START == SD_LISTEN_FDS_START, "systemd passes sockets from 3 on");

int gw_notify_enabled(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    return s && *s;
}

int gw_notify(const char *state)
{
    if (!gw_notify_enabled())
        return 0;
    /* sd_notify: > 0 sent, 0 no socket, < 0 -errno. unset_environment = 0:
     * the master notifies for its whole life. */
    int rc = sd_notify(0, state);
    return rc < 0 ? rc : 0;
}

int gw_notifyf(const char *fmt, ...)
{
    if (!gw_notify_enabled())
        return 0;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    return gw_notify(buf);
}

int gw_notify_ready(const char *status)
{
    if (status)
        return gw_notifyf("READY=1\nSTATUS=%s", status);
    return gw_notify("READY=1");
}

int gw_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long us =
        (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull;
    return gw_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu", us);
}

int gw_notify_stopping(const char *status)
{
    if (status)
        return gw_notifyf("STOPPING=1\nSTATUS=%s", status);
    return gw_notify("STOPPING=1");
}

int gw_notify_status(const char *status)
{
    return gw_notifyf("STATUS=%s", status);
}

int gw_notify_watchdog(void)
{
    return gw_notify("WATCHDOG=1");
}

uint64_t gw_notify_watchdog_usec(void)
{
    uint64_t us = 0;
    /* > 0 when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is us. */
    if (sd_watchdog_enabled(0, &us) <= 0)
        return 0;
    return us;
}

void gw_notify_unset_env(void)
{
    static const char *const names[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                        "LISTEN_FDS",    "LISTEN_PID",    "LISTEN_FDNAMES"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
}

int gw_notify_listen_fds(void)
{
    /* unset_environment = 1: the LISTEN_* variables name the master's pid
     * and must not reach the children; the descriptors get FD_CLOEXEC, and
     * the master clears it in each child for exactly the ones it passes. */
    return sd_listen_fds(1);
}
