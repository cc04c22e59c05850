/* gw_util.h - errors, logs, clocks and UTF-8: what every process, tool and
 * library of gpuwarden uses (the engine and the CUDA code included), and
 * that knows nothing of the segment or the config. The public header of
 * gw_util (common/util/); gw_common.h includes it.
 *
 * Conventions (as in libuv): functions return 0 or a negative errno, or a
 * GW_E* code below; gw_strerror() is the one function that turns any of
 * them into text. A failure an operator must act on also writes one line
 * into a caller's `char *err, size_t errlen` through gw_errf(), naming the
 * thing, the place and the problem. Nothing here calls exit(). */
#ifndef GW_UTIL_H
#define GW_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */

/* Error codes beyond errno; all negative, all below -GW_ERRBASE. */
#define GW_ERRBASE 10000
enum {
    GW_EREFUSED = -(GW_ERRBASE + 1), /* a rate or budget cell said no (429) */
    GW_ESTALE = -(GW_ERRBASE + 2),   /* account reference outlived its account */
    GW_EFULL = -(GW_ERRBASE + 3),    /* a fixed-size region has no room */
    GW_EEMPTY = -(GW_ERRBASE + 4),   /* queue empty */
    GW_ESTATE = -(GW_ERRBASE + 5),   /* illegal slot transition */
    GW_ELAYOUT = -(GW_ERRBASE + 6),  /* segment file is not ours / not this layout */
    GW_ECONTEXT = -(GW_ERRBASE + 7), /* tokens do not fit the model's context */
};

/* Text for a value returned by any gw_ function (negative errno or GW_E*). */
const char *gw_strerror(int err);
/* Writes one printf-style line into err (when err and errlen are non-zero),
 * cut to fit: how every gw_ function fills its caller's error buffer. */
void gw_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --------------------------------------------------------------------- log */

/* One line per event on stderr, written with one write(2) so the lines of
 * different processes never interleave; lines are cut at 4 KiB. Each line
 * starts with its syslog priority, sd-daemon style ("<6>"), so journald
 * keeps the level. Text format:
 *   <6>gpuwarden[front 0]: reloaded /etc/gpuwarden.json
 *   <6>gpuwarden[front 0]: access id=gen-0ab tenant=acme ... (fields)
 * JSON format (log.format "json"), one object per line:
 *   <6>{"time":"2026-11-25T23:59:01.123Z","level":"info","role":"front",
 *       "index":0,"pid":42,"msg":"reloaded /etc/gpuwarden.json"}
 * with "part" for a sub-system ("master: watchdog" -> "part":"watchdog")
 * and the event's fields after "msg". */
enum gw_log_level {
    GW_LOG_ERR = 3,
    GW_LOG_WARNING = 4,
    GW_LOG_NOTICE = 5,
    GW_LOG_INFO = 6,
    GW_LOG_DEBUG = 7,
};
enum gw_log_format { GW_LOG_TEXT = 0, GW_LOG_JSON = 1 };
/* The process's format (default text); set once the config is read. */
void gw_log_set_format(int format);
/* One field of an event: a string (str != NULL), else an integer, or with
 * is_real a number with 3 decimals. */
struct gw_log_field {
    const char *key;
    const char *str;
    int64_t num;
    double real;
    int is_real;
};
/* Formats one line into buf (no write); returns its length, newline
 * included. For tests. */
size_t gw_log_format(char *buf, size_t cap, int format, int level, const char *who, uint64_t now_us,
                     int pid, const struct gw_log_field *fields, int n_fields, const char *msg);
void gw_logf(int level, const char *who, const struct gw_log_field *fields, int n_fields,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Level info, no fields. */
void gw_log(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gw_vlog(const char *who, const char *fmt, va_list ap);
void gw_vlogl(int level, const char *who, const struct gw_log_field *fields, int n_fields,
              const char *fmt, va_list ap);

/* ------------------------------------------------------------------ clocks */

/* Wall clock (CLOCK_REALTIME) in microseconds since the Unix epoch: the unit
 * of every time stored in the segment, so budgets mean the same after a
 * reboot. */
uint64_t gw_now_us(void);
/* CLOCK_MONOTONIC in nanoseconds: timeouts and the watchdog. */
uint64_t gw_mono_ns(void);

/* ------------------------------------------------------------------ UTF-8 */

/* The sequence at s (n > 0 bytes available), per Unicode table 3-7: its
 * length when valid; 0 when s[0] cannot start a sequence or a later byte is
 * wrong; -1 when the bytes present are a valid start that n cut short. */
int gw_utf8_seq(const unsigned char *s, size_t n);
/* Copies s[0, n) into out with every byte that does not belong to a valid
 * sequence (gw_utf8_seq) replaced by mark[0, mark_len) (1 <= mark_len; out
 * holds n * mark_len bytes). Returns the bytes written. */
size_t gw_utf8_replace(char *out, const char *s, size_t n, const char *mark, size_t mark_len);
/* Strict UTF-8 (RFC 3629, Unicode table 3-7): 1 when s[0..len) is valid,
 * i.e. no overlong form, no surrogate (U+D800..DFFF), nothing above
 * U+10FFFF, no stray continuation byte; else 0. NUL is valid UTF-8 here. */
int gw_utf8_valid(const char *s, size_t len);
/* The bytes of s that may be sent now: len, less an unfinished but so far
 * valid sequence at the very end (at most 3 bytes) that the next token may
 * complete. A streaming front sends that prefix and keeps the rest, so a
 * character split between two tokens is never sent in halves (a response
 * turns bytes that are not UTF-8 into U+FFFD). */
size_t gw_utf8_complete(const char *s, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* GW_UTIL_H */
