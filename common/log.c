/* log.c - one line per event on stderr, each written with a single
 * write(2) so that the lines of different processes never cut into each
 * other. journald (or the terminal) adds the time. */
#include "gw_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

void gw_vlog(const char *who, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "gpuwarden[%s]: ", who);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere left to report a failed log write */
}

void gw_log(const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_vlog(who, fmt, ap);
    va_end(ap);
}
