/* budget.c - "no tenant exceeded its budget beyond one step per in-flight
 * request", checked from the admin socket's `tenant.show` read before and
 * after the run.
 *
 * A tenant's budget is a bucket of `amount` device-us per `period`, full
 * when idle (common/gcra.c). Between two readings at t0 and t1 the tenant
 * can take from it at most what was left at t0 plus what refilled since:
 *
 *     spent = (reserved - refunded)(t1) - (reserved - refunded)(t0)
 *     allowed = left(t0) + amount * (t1 - t0) / period
 *             + one step per in-flight request + rounding
 *
 * spent counts what live slots still hold (reserved, not yet used or
 * refunded), so a reservation is counted when it is taken. One step: the
 * ledger lets a charge that the budget cannot cover end the generation, and
 * that last step's device time is not billed (gw_budget_charge); the check
 * allows that much per request the tenant had in flight. Rounding: each
 * reservation or refund moves the cell by a whole number of us of cell
 * time, up to amount / period + 1 device-us each way, per request.
 *
 * Nothing here writes: tenant.show is an operator (read) command. An admin's
 * tenant.reset-budget during the run forgives spending and is not seen
 * here; the report would then understate, never overstate, an overspend. */
#include "load.h"

#include "gw_common.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int lt_admin_query(const char *sock_path, const char *line, char **answer, char *err, size_t errlen)
{
    *answer = NULL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "admin socket %s: path too long", sock_path);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "socket: %s", strerror(e));
        return -e;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        snprintf(err, errlen, "admin socket %s: %s", sock_path, strerror(e));
        close(fd);
        return -e;
    }
    size_t n = strlen(line), off = 0;
    while (off < n) {
        ssize_t w = send(fd, line + off, n - off, MSG_NOSIGNAL);
        if (w < 0) {
            int e = errno;
            snprintf(err, errlen, "admin socket %s: write: %s", sock_path, strerror(e));
            close(fd);
            return -e;
        }
        off += (size_t)w;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) != 1) {
            snprintf(err, errlen, "admin socket %s: no answer within 5 s", sock_path);
            free(buf);
            close(fd);
            return -ETIMEDOUT;
        }
        if (len + 1 >= cap) {
            char *nb = cap < (1u << 22) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                snprintf(err, errlen, "admin socket %s: answer over 4 MiB", sock_path);
                free(buf);
                close(fd);
                return -E2BIG;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0) {
            snprintf(err, errlen, "admin socket %s: closed before a whole line", sock_path);
            free(buf);
            close(fd);
            return -EPIPE;
        }
        len += (size_t)r;
        buf[len] = '\0';
        char *nl = memchr(buf, '\n', len);
        if (nl) {
            *nl = '\0';
            break;
        }
    }
    close(fd);
    *answer = buf;
    return 0;
}

static uint64_t u64_at(json_t *o, const char *k, int *bad)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        *bad = 1;
        return 0;
    }
    return (uint64_t)json_integer_value(v);
}

int lt_budget_fig_parse(const char *answer, struct lt_budget_fig *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    json_error_t je;
    json_t *o = json_loads(answer, 0, &je);
    if (!json_is_object(o)) {
        snprintf(err, errlen, "tenant.show answer is not a JSON object: %.200s", answer);
        json_decref(o);
        return -EPROTO;
    }
    if (!json_is_true(json_object_get(o, "ok"))) {
        json_t *m = json_object_get(json_object_get(o, "error"), "message");
        snprintf(err, errlen, "tenant.show refused: %.300s",
                 json_is_string(m) ? json_string_value(m) : answer);
        json_decref(o);
        return -ENOENT;
    }
    int bad = 0;
    json_t *plan = json_object_get(o, "plan"), *b = json_object_get(o, "budget");
    json_t *pb = json_object_get(plan, "budget");
    f->max_inflight = u64_at(plan, "max_inflight", &bad);
    f->reserved_us = u64_at(b, "reserved_us", &bad);
    f->used_us = u64_at(b, "used_us", &bad);
    f->refunded_us = u64_at(b, "refunded_us", &bad);
    f->in_flight = u64_at(o, "in_flight", &bad);
    if (json_is_string(pb)) {
        struct gw_budget_rate r;
        if (gw_budget_parse(json_string_value(pb), &r) != 0) {
            snprintf(err, errlen, "tenant.show: plan budget \"%.100s\" not understood",
                     json_string_value(pb));
            json_decref(o);
            return -EPROTO;
        }
        f->has_budget = 1;
        f->amount_us = r.amount_us;
        f->period_us = r.period_us;
        f->left_us = u64_at(b, "left_us", &bad);
    } else if (!json_is_null(pb)) {
        bad = 1;
    }
    json_decref(o);
    if (bad) {
        snprintf(err, errlen, "tenant.show answer lacks a plan, budget or in_flight field: %.200s",
                 answer);
        return -EPROTO;
    }
    f->found = 1;
    return 0;
}

int lt_budget_read(const char *sock_path, const char *tenant, struct lt_budget_fig *f, char *err,
                   size_t errlen)
{
    memset(f, 0, sizeof(*f));
    json_t *q = json_pack("{s:s,s:s}", "cmd", "tenant.show", "tenant", tenant);
    char *line = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    if (!line)
        return -ENOMEM;
    size_t n = strlen(line);
    char *withnl = malloc(n + 2);
    if (!withnl) {
        free(line);
        return -ENOMEM;
    }
    memcpy(withnl, line, n);
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    free(line);
    /* The clock is read before the question for `before` and after the
     * answer for `after` (the caller keeps the right one): both widen the
     * refill window, so the bound can only be generous, never unfair. */
    uint64_t t0 = gw_now_us();
    char *ans = NULL;
    int rc = lt_admin_query(sock_path, withnl, &ans, err, errlen);
    free(withnl);
    if (rc != 0)
        return rc;
    uint64_t t1 = gw_now_us();
    rc = lt_budget_fig_parse(ans, f, err, errlen);
    free(ans);
    f->asked_us = t0;
    f->answered_us = t1;
    return rc;
}

int lt_budget_judge(const struct lt_budget_fig *before, const struct lt_budget_fig *after,
                    uint64_t inflight, uint64_t step_us, uint64_t requests,
                    struct lt_budget_verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (!before->found || !after->found) {
        snprintf(v->why, sizeof(v->why), "tenant.show not read %s the run",
                 before->found ? "after" : "before");
        return -ENOENT;
    }
    if (!after->has_budget) {
        snprintf(v->why, sizeof(v->why), "the tenant's plan has no budget");
        return -ENOENT;
    }
    if (!before->has_budget || before->amount_us != after->amount_us ||
        before->period_us != after->period_us) {
        snprintf(v->why, sizeof(v->why), "the plan's budget changed during the run (reload?)");
        return -ESTALE;
    }
    if (after->reserved_us < before->reserved_us || after->refunded_us < before->refunded_us ||
        after->used_us < before->used_us) {
        snprintf(v->why, sizeof(v->why),
                 "ledger history went backwards (reserved %llu -> %llu, used %llu -> %llu, "
                 "refunded %llu -> %llu us): a new segment?",
                 (unsigned long long)before->reserved_us, (unsigned long long)after->reserved_us,
                 (unsigned long long)before->used_us, (unsigned long long)after->used_us,
                 (unsigned long long)before->refunded_us, (unsigned long long)after->refunded_us);
        v->checked = 1;
        v->ok = 0;
        return 0;
    }
    v->checked = 1;
    /* net = reserved - refunded can fall across the run (refunds of what was
     * reserved before it), so spent is signed. */
    v->spent_us = ((int64_t)after->reserved_us - (int64_t)after->refunded_us) -
                  ((int64_t)before->reserved_us - (int64_t)before->refunded_us);
    uint64_t dt = after->answered_us > before->asked_us ? after->answered_us - before->asked_us : 0;
    unsigned __int128 refill = (unsigned __int128)after->amount_us * dt / after->period_us;
    v->refill_us = refill > UINT64_MAX / 4 ? UINT64_MAX / 4 : (uint64_t)refill;
    v->left_before_us = before->left_us;
    v->inflight = inflight;
    v->slack_us = inflight * step_us;
    v->rounding_us = requests * 2 * (after->amount_us / after->period_us + 1);
    v->allowed_us = v->left_before_us + v->refill_us + v->slack_us + v->rounding_us;
    v->ok = v->spent_us <= 0 || (uint64_t)v->spent_us <= v->allowed_us;
    if (!v->ok)
        snprintf(v->why, sizeof(v->why),
                 "spent %.6f s of device time in %.3f s, allowed %.6f s (left %.6f + refill "
                 "%.6f + %llu in flight x step %.6f + rounding %.6f): over by %.6f s",
                 (double)v->spent_us / 1e6, (double)dt / 1e6, (double)v->allowed_us / 1e6,
                 (double)v->left_before_us / 1e6, (double)v->refill_us / 1e6,
                 (unsigned long long)inflight, (double)step_us / 1e6, (double)v->rounding_us / 1e6,
                 (double)((uint64_t)v->spent_us - v->allowed_us) / 1e6);
    return 0;
}
