/* guard.c - the output guard: configured PCRE2 patterns matched over a
 * worker's output before it is published to the slot (docs/ARCHITECTURE.md,
 * "The watchdog": the one detector that runs in the worker).
 *
 * Text arrives in pieces (tokens). Everything not yet published sits in
 * `pend`; after each piece every rule is matched over it with
 * PCRE2_PARTIAL_HARD, which reports the earliest place where a match starts
 * even when the subject ends before the match could be decided. Text before
 * the earliest such place cannot be part of any match and is published;
 * from there on it is held until more text decides it. A complete match of
 * a redact rule is published as "[REDACTED]"; of a kill rule, ends the
 * stream (nothing from the match on is published). At the end of the
 * stream the held tail is matched without partial matching and published.
 *
 * A few bytes already published are kept in front of `pend` as context
 * for lookbehind (\b), and matching starts after them.
 *
 * Redactions are counted per rule for the request in flight, so that
 * gw_guard_report can make them visible (a counter and audit lines) once
 * the request ends; the guard itself touches neither the segment nor a
 * file while text flows.
 */
#include "gw_worker.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTEXT 16 /* published bytes kept for lookbehind */
#define REDACTED "[REDACTED]"

struct gw_guard {
    int n;
    struct gw_guard_rule rules[GW_GUARD_MAX];
    pcre2_code *re[GW_GUARD_MAX];
    pcre2_match_data *md;
    char *buf;  /* context (ctx bytes, published) then pending text */
    size_t ctx; /* bytes of context at buf[0] */
    size_t len; /* ctx + pending bytes */
    size_t cap;
    int dead;                    /* a kill rule matched: nothing more is published */
    uint64_t redactions;         /* since gw_guard_new */
    uint32_t hits[GW_GUARD_MAX]; /* redactions per rule since the last reset or report */
};

int gw_guard_new(struct gw_guard **out, const struct gw_guard_rule *rules, int n, char *err,
                 size_t errlen)
{
    if (!out || n < 0 || n > GW_GUARD_MAX || (n && !rules))
        return -EINVAL;
    struct gw_guard *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        int code;
        PCRE2_SIZE off;
        g->rules[i] = rules[i];
        g->re[i] = pcre2_compile((PCRE2_SPTR)rules[i].pattern, PCRE2_ZERO_TERMINATED, 0, &code,
                                 &off, NULL);
        if (!g->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof(msg));
            if (err && errlen)
                snprintf(err, errlen, "guard rule %s: %s at offset %zu", rules[i].name,
                         (const char *)msg, (size_t)off);
            rc = -EINVAL;
            goto fail;
        }
        /* JIT where available; the interpreter otherwise (same results) */
        pcre2_jit_compile(g->re[i], PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
        g->n++;
    }
    g->md = pcre2_match_data_create(4, NULL);
    g->cap = 4096;
    g->buf = malloc(g->cap);
    if (!g->md || !g->buf) {
        rc = -ENOMEM;
        goto fail;
    }
    *out = g;
    return 0;
fail:
    gw_guard_free(g);
    return rc;
}

void gw_guard_free(struct gw_guard *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n; i++)
        pcre2_code_free(g->re[i]);
    pcre2_match_data_free(g->md);
    free(g->buf);
    free(g);
}

void gw_guard_reset(struct gw_guard *g)
{
    g->ctx = g->len = 0;
    g->dead = 0;
    memset(g->hits, 0, sizeof(g->hits));
}

const char *gw_guard_rule_name(const struct gw_guard *g, int rule)
{
    return rule >= 0 && rule < g->n ? g->rules[rule].name : "?";
}

uint64_t gw_guard_redactions(const struct gw_guard *g)
{
    return g->redactions;
}

/* Digits of s[0, n) pass the Luhn check (separators skipped). */
static int luhn_ok(const char *s, size_t n)
{
    int sum = 0, dbl = 0, digits = 0;
    for (size_t i = n; i-- > 0;) {
        if (s[i] < '0' || s[i] > '9')
            continue;
        int d = s[i] - '0';
        if (dbl && (d *= 2) > 9)
            d -= 9;
        sum += d;
        dbl = !dbl;
        digits++;
    }
    return digits >= 13 && sum % 10 == 0;
}

/* The earliest event of rule i at or after `from`: 1 full match [*s, *e),
 * 2 partial match from *s, 0 none. Full matches a Luhn rule rejects are
 * skipped. */
static int first_event(struct gw_guard *g, int i, size_t from, int partial, size_t *s, size_t *e)
{
    uint32_t opts = partial ? PCRE2_PARTIAL_HARD : 0;
    for (;;) {
        if (from > g->len)
            return 0;
        int rc = pcre2_match(g->re[i], (PCRE2_SPTR)g->buf, g->len, from, opts, g->md, NULL);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(g->md);
        if (rc == PCRE2_ERROR_PARTIAL) {
            *s = ov[0];
            return 2;
        }
        if (rc < 0)
            return 0;
        *s = ov[0];
        *e = ov[1];
        if (g->rules[i].luhn && !luhn_ok(g->buf + *s, *e - *s)) {
            from = *s + 1;
            continue;
        }
        if (*e == *s) { /* an empty match decides nothing: look further */
            from = *s + 1;
            continue;
        }
        return 1;
    }
}

/* Publishes buf[ctx, upto) and keeps the last CONTEXT published bytes. */
static void publish(struct gw_guard *g, size_t upto, void (*emit)(void *, const char *, size_t),
                    void *user)
{
    if (upto > g->ctx)
        emit(user, g->buf + g->ctx, upto - g->ctx);
    size_t keep_from = upto > CONTEXT ? upto - CONTEXT : 0;
    memmove(g->buf, g->buf + keep_from, g->len - keep_from);
    g->len -= keep_from;
    g->ctx = upto - keep_from;
}

int gw_guard_feed(struct gw_guard *g, const char *text, size_t len, int final,
                  void (*emit)(void *user, const char *text, size_t len), void *user)
{
    if (g->dead)
        return 0;
    if (g->n == 0) {
        if (len)
            emit(user, text, len);
        return 0;
    }
    if (g->len + len > g->cap) {
        size_t cap = g->cap;
        while (cap < g->len + len)
            cap *= 2;
        char *nb = realloc(g->buf, cap);
        if (!nb)
            return -ENOMEM;
        g->buf = nb;
        g->cap = cap;
    }
    memcpy(g->buf + g->len, text, len);
    g->len += len;
    for (;;) {
        /* the earliest complete match of a kill rule (K), of a redact rule
         * (R), and the earliest place a match may still start (hold) */
        size_t k_s = SIZE_MAX, r_s = SIZE_MAX, r_e = 0, hold = g->len;
        int k_rule = -1, r_rule = -1;
        for (int i = 0; i < g->n; i++) {
            size_t s = 0, e = 0;
            int ev = first_event(g, i, g->ctx, !final, &s, &e);
            if (ev == 2 && s < hold) {
                hold = s;
            } else if (ev == 1 && g->rules[i].action == GW_GUARD_KILL && s < k_s) {
                k_s = s;
                k_rule = i;
            } else if (ev == 1 && g->rules[i].action != GW_GUARD_KILL && s < r_s) {
                r_s = s;
                r_e = e;
                r_rule = i;
            }
        }
        if (r_s < hold && r_s < k_s) {
            /* a redaction decided before anything else: publish up to it,
             * the marker for it, and go on after it */
            publish(g, r_s, emit, user);
            emit(user, REDACTED, sizeof(REDACTED) - 1);
            g->redactions++;
            g->hits[r_rule]++;
            /* drop the match; the context before what follows is now the
             * marker's last byte (a non-word character, as for \b) */
            size_t rest = g->len - (g->ctx + (r_e - r_s));
            memmove(g->buf + 1, g->buf + g->ctx + (r_e - r_s), rest);
            g->buf[0] = ']';
            g->ctx = 1;
            g->len = 1 + rest;
            continue;
        }
        if (k_rule >= 0) {
            /* the stream ends: what cannot be part of any match goes out,
             * nothing from the match (or an undecided tail) on */
            publish(g, k_s < hold ? k_s : hold, emit, user);
            g->dead = 1;
            g->len = g->ctx;
            return 1 + k_rule;
        }
        publish(g, hold, emit, user);
        return 0;
    }
}

int gw_guard_report(struct gw_guard *g, struct gw_segment *seg, const struct gw_slot_req *req,
                    const char *audit_path)
{
    if (!g)
        return 0;
    int total = 0, rc = 0;
    for (int i = 0; i < g->n; i++) {
        if (!g->hits[i])
            continue;
        total += (int)g->hits[i];
        if (audit_path && req) {
            /* request_id, tenant and ip as the slot carries them (bounded,
             * NUL-terminated by gw_slot_get_req) */
            struct gw_audit_event ev = {.request_id = req->id,
                                        .tenant = req->tenant,
                                        .ip = req->ip,
                                        .event = "redaction",
                                        .rule = g->rules[i].name,
                                        .count = g->hits[i]};
            char line[1024];
            size_t n = gw_audit_format_event(line, sizeof(line), gw_now_us(), &ev);
            int arc = gw_audit_append(audit_path, line, n);
            if (arc < 0 && rc == 0)
                rc = arc;
        }
        g->hits[i] = 0;
    }
    if (seg && total > 0)
        gw_metrics_add(seg, GW_MC_GUARD_REDACTIONS, (uint64_t)total);
    return rc < 0 ? rc : total;
}

int gw_guard_reload(struct gw_guard **g, const char *config_path, char *err, size_t errlen)
{
    if (!g || !config_path)
        return -EINVAL;
    struct gw_config *cfg = NULL;
    int rc = gw_config_load(&cfg, config_path, err, errlen);
    if (rc != 0)
        return rc < 0 ? rc : -EINVAL;
    struct gw_guard *ng = NULL;
    if (cfg->n_guard > 0)
        rc = gw_guard_new(&ng, cfg->guard, cfg->n_guard, err, errlen);
    gw_config_free(cfg);
    if (rc != 0)
        return rc;
    gw_guard_free(*g);
    *g = ng;
    return 0;
}
