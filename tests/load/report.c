/* report.c - what a run measured, per class: a table for people, JSON for
 * machines (every field name carries its unit: _ms, _s, _per_s, _us), and
 * the scenario's thresholds. Percentiles are exact (nearest rank over every
 * sample; the request cap bounds their number). */
#include "load.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const outcome_names[LT_O_COUNT] = {
    "200",        "401",     "408",      "429",          "503",       "other",
    "conn_error", "timeout", "not_sent", "disconnected", "unfinished"};
static const char *const finish_names[LT_F_COUNT] = {"stop",   "length",    "budget",
                                                     "killed", "cancelled", "other"};

const char *lt_outcome_name(int o)
{
    return o >= 0 && o < LT_O_COUNT ? outcome_names[o] : "?";
}

const char *lt_finish_name(int f)
{
    return f >= 0 && f < LT_F_COUNT ? finish_names[f] : "?";
}

int lt_samples_add(struct lt_samples *s, uint64_t us)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        uint64_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = us;
    return 0;
}

uint64_t lt_tpot_us(uint64_t first_ns, uint64_t last_ns, uint64_t tokens)
{
    if (tokens < 2 || last_ns < first_ns)
        return 0;
    return (last_ns - first_ns) / 1000 / (tokens - 1);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t lt_samples_quantile(struct lt_samples *s, double q)
{
    if (s->n == 0)
        return 0;
    qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
    /* nearest rank: the smallest sample with at least q of them at or below */
    double rank = q * (double)s->n;
    size_t i = (size_t)rank;
    if ((double)i < rank)
        i++;
    if (i > 0)
        i--;
    if (i >= s->n)
        i = s->n - 1;
    return s->v[i];
}

void lt_samples_free(struct lt_samples *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* Requests that ended with an answer or a failure: what rates divide by.
 * Deliberate disconnects and requests cut by the end of the run are not
 * the node's answer, so they are left out. */
static uint64_t ended(const struct lt_class *c)
{
    uint64_t n = 0;
    for (int o = 0; o < LT_O_COUNT; o++)
        if (o != LT_O_DISCONNECT && o != LT_O_UNFINISHED)
            n += c->outcome[o];
    return n;
}

static const struct {
    const char *name;
    double q;
} quantiles[] = {{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p999", 0.999}, {"max", 1.0}};

int lt_metric(struct lt_class *c, const char *m, double *out)
{
    uint64_t n = ended(c);
    if (strcmp(m, "success_rate") == 0) {
        *out = n ? (double)c->outcome[LT_O_200] / (double)n : 0;
        return 0;
    }
    /* prompt farming: the request number of the first 429 prompt_farming
     * (0: never refused), and how many there were (a benign class's false
     * positives) */
    if (strcmp(m, "farming_refused_at") == 0) {
        *out = (double)c->farming_first;
        return 0;
    }
    if (strcmp(m, "count_prompt_farming") == 0) {
        *out = 0;
        for (int k = 0; k < c->n_codes; k++)
            if (strcmp(c->codes[k].code, "prompt_farming") == 0)
                *out = (double)c->codes[k].n;
        return 0;
    }
    if (strncmp(m, "rate_", 5) == 0) {
        for (int o = 0; o < LT_O_COUNT; o++)
            if (strcmp(m + 5, outcome_names[o]) == 0) {
                *out = n ? (double)c->outcome[o] / (double)n : 0;
                return 0;
            }
        return -ENOENT;
    }
    if (strncmp(m, "count_", 6) == 0) {
        for (int o = 0; o < LT_O_COUNT; o++)
            if (strcmp(m + 6, outcome_names[o]) == 0) {
                *out = (double)c->outcome[o];
                return 0;
            }
        return -ENOENT;
    }
    if (strcmp(m, "sent") == 0) {
        *out = (double)c->sent;
        return 0;
    }
    if (strcmp(m, "achieved_ratio") == 0) { /* achieved / intended arrival rate */
        double want = c->rate * c->active_s;
        *out = c->closed ? 1 : (want > 0 ? (double)c->sent / want : 0);
        return 0;
    }
    if (strcmp(m, "tokens_per_s") == 0) {
        *out = c->active_s > 0 ? (double)c->completion_tokens / c->active_s : 0;
        return 0;
    }
    struct lt_samples *s = NULL;
    const char *rest = NULL;
    if (strncmp(m, "ttft_", 5) == 0) {
        s = &c->ttft_ok;
        rest = m + 5;
    } else if (strncmp(m, "tpot_", 5) == 0) {
        s = &c->tpot_ok;
        rest = m + 5;
    } else if (strncmp(m, "total_", 6) == 0) {
        s = &c->total_ok;
        rest = m + 6;
    } else if (strncmp(m, "refused_", 8) == 0) {
        s = &c->total_refused;
        rest = m + 8;
    }
    if (!s)
        return -ENOENT;
    for (size_t i = 0; i < sizeof(quantiles) / sizeof(quantiles[0]); i++) {
        size_t l = strlen(quantiles[i].name);
        if (strncmp(rest, quantiles[i].name, l) == 0 && strcmp(rest + l, "_ms") == 0) {
            *out = (double)lt_samples_quantile(s, quantiles[i].q) / 1000.0;
            return 0;
        }
    }
    return -ENOENT;
}

static struct lt_class *find_class(struct lt_scenario *sc, const char *name)
{
    for (int i = 0; i < sc->n_classes; i++)
        if (strcmp(sc->classes[i].name, name) == 0)
            return &sc->classes[i];
    return NULL;
}

int lt_thresholds_eval(struct lt_scenario *sc, const struct lt_ledger_result *lr)
{
    int failed = 0;
    for (int i = 0; i < sc->n_thresholds; i++) {
        struct lt_threshold *t = &sc->thresholds[i];
        t->evaluated = 1;
        double v = 0;
        if (strcmp(t->metric, "ledger_conserved") == 0) {
            if (!lr->checked) {
                t->passed = 0;
                snprintf(t->why, sizeof(t->why), "ledger not checked: %.120s", lr->detail);
                failed++;
                continue;
            }
            v = lr->conserved;
        } else if (strcmp(t->metric, "budgets_kept") == 0) {
            /* 1: every tenant with a budget was judged within it */
            if (!lr->budget_checked) {
                t->passed = 0;
                snprintf(t->why, sizeof(t->why), "budgets not checked: %.120s", lr->budget_detail);
                failed++;
                continue;
            }
            v = lr->budget_over == 0;
        } else {
            struct lt_class *c = find_class(sc, t->cls);
            if (!c || lt_metric(c, t->metric, &v) != 0) {
                t->passed = 0;
                snprintf(t->why, sizeof(t->why), "no such class or metric");
                failed++;
                continue;
            }
            if (t->relative_to[0]) {
                double base = 0;
                struct lt_class *b = find_class(sc, t->relative_to);
                if (b)
                    lt_metric(b, t->metric, &base);
                v = base > 0 ? v / base : (v > 0 ? 1e9 : 1);
            }
        }
        t->value = v;
        t->passed = (!t->has_min || v >= t->min) && (!t->has_max || v <= t->max);
        if (!t->passed) {
            failed++;
            snprintf(t->why, sizeof(t->why), "%g is %s %g", v,
                     t->has_min && v < t->min ? "below the minimum" : "above the maximum",
                     t->has_min && v < t->min ? t->min : t->max);
        }
    }
    return failed;
}

static double ms(struct lt_samples *s, double q)
{
    return (double)lt_samples_quantile(s, q) / 1000.0;
}

/* Time per output token of the streaming classes that have some. */
static void print_tpot(struct lt_scenario *sc)
{
    int any = 0;
    for (int i = 0; i < sc->n_classes; i++) {
        struct lt_class *c = &sc->classes[i];
        if (!c->tpot_ok.n)
            continue;
        if (!any++)
            printf("\ntime per output token in ms (200 streams of 2+ tokens)\n%-16s %9s %9s %9s "
                   "%9s %9s\n",
                   "class", "streams", "tpot p50", "p90", "p99", "max");
        printf("%-16.16s %9zu %9.2f %9.2f %9.2f %9.2f\n", c->name, c->tpot_ok.n,
               ms(&c->tpot_ok, .5), ms(&c->tpot_ok, .9), ms(&c->tpot_ok, .99), ms(&c->tpot_ok, 1));
    }
}

void lt_report_table(struct lt_scenario *sc, const struct lt_ledger_result *lr, double elapsed_s)
{
    printf(
        "gpuwarden-load: scenario %s against %s, %.1f s (duration %.1f s, drain up to %.1f s)\n\n",
        sc->name, sc->target, elapsed_s, sc->duration_s, sc->drain_s);
    printf("%-16s %-12s %7s %7s %6s %6s %6s %6s %6s %6s %6s %7s %8s\n", "class", "behaviour",
           "sent", "rate/s", "200", "401", "408", "429", "503", "other", "err", "success", "tok/s");
    for (int i = 0; i < sc->n_classes; i++) {
        struct lt_class *c = &sc->classes[i];
        double sr = 0, tps = 0;
        lt_metric(c, "success_rate", &sr);
        lt_metric(c, "tokens_per_s", &tps);
        char rate[32];
        if (c->closed)
            snprintf(rate, sizeof(rate), "%.1f",
                     c->active_s > 0 ? (double)c->sent / c->active_s : 0);
        else
            snprintf(rate, sizeof(rate), "%.1f/%g",
                     c->active_s > 0 ? (double)c->sent / c->active_s : 0, c->rate);
        printf("%-16.16s %-12s %7llu %7s %6llu %6llu %6llu %6llu %6llu %6llu %6llu %6.2f%% %8.1f\n",
               c->name, lt_behaviour_name(c->behaviour), (unsigned long long)c->sent, rate,
               (unsigned long long)c->outcome[LT_O_200], (unsigned long long)c->outcome[LT_O_401],
               (unsigned long long)c->outcome[LT_O_408], (unsigned long long)c->outcome[LT_O_429],
               (unsigned long long)c->outcome[LT_O_503], (unsigned long long)c->outcome[LT_O_OTHER],
               (unsigned long long)(c->outcome[LT_O_CONN_ERROR] + c->outcome[LT_O_TIMEOUT] +
                                    c->outcome[LT_O_NOT_SENT]),
               sr * 100, tps);
    }
    printf("\nlatency in ms from the intended send time (200s; refusals separately)\n");
    printf("%-16s %9s %9s %9s %9s %9s | %9s %9s %9s %9s | %9s %9s\n", "class", "ttft p50", "p90",
           "p99", "p99.9", "max", "total p50", "p99", "p99.9", "max", "refused p50", "p99");
    for (int i = 0; i < sc->n_classes; i++) {
        struct lt_class *c = &sc->classes[i];
        printf("%-16.16s %9.1f %9.1f %9.1f %9.1f %9.1f | %9.1f %9.1f %9.1f %9.1f | %11.1f %9.1f\n",
               c->name, ms(&c->ttft_ok, .5), ms(&c->ttft_ok, .9), ms(&c->ttft_ok, .99),
               ms(&c->ttft_ok, .999), ms(&c->ttft_ok, 1), ms(&c->total_ok, .5),
               ms(&c->total_ok, .99), ms(&c->total_ok, .999), ms(&c->total_ok, 1),
               ms(&c->total_refused, .5), ms(&c->total_refused, .99));
    }
    print_tpot(sc);
    printf("\nfinish reasons, refusal codes and the rest\n");
    for (int i = 0; i < sc->n_classes; i++) {
        struct lt_class *c = &sc->classes[i];
        printf("%-16.16s", c->name);
        for (int f = 0; f < LT_F_COUNT; f++)
            if (c->finish[f])
                printf(" %s=%llu", finish_names[f], (unsigned long long)c->finish[f]);
        for (int k = 0; k < c->n_codes; k++)
            printf(" %s=%llu", c->codes[k].code, (unsigned long long)c->codes[k].n);
        for (int o = LT_O_CONN_ERROR; o < LT_O_COUNT; o++)
            if (c->outcome[o])
                printf(" %s=%llu", outcome_names[o], (unsigned long long)c->outcome[o]);
        if (!c->closed)
            printf(" send-lag-p99=%.1fms", ms(&c->send_lag, .99));
        if (c->farming_first)
            printf(" prompt_farming-from-request=%llu", (unsigned long long)c->farming_first);
        printf("\n");
    }
    printf("\nledger: ");
    if (!lr->checked)
        printf("not checked (%s)\n", lr->detail);
    else
        printf("%s after %d read%s; %s%s%s\n", lr->conserved ? "conserved" : "NOT CONSERVED",
               lr->attempts, lr->attempts == 1 ? "" : "s", lr->method, lr->conserved ? "" : ": ",
               lr->conserved ? "" : lr->detail);
    for (int i = 0; i < lr->n_tenants; i++) {
        if (!lr->tenants[i].found) {
            printf("  tenant %-16s no account in the ledger\n", lr->tenants[i].tenant);
            continue;
        }
        printf("  tenant %-16s reserved %.3f s, used %.3f s, refunded %.3f s, in flight %llu\n",
               lr->tenants[i].tenant, (double)lr->tenants[i].reserved_us / 1e6,
               (double)lr->tenants[i].used_us / 1e6, (double)lr->tenants[i].refunded_us / 1e6,
               (unsigned long long)lr->tenants[i].inflight);
    }
    if (lr->slots_checked)
        printf("slots: %u of %u in use, %u owned by a dead process%s%s\n", lr->slots_busy,
               lr->slots, lr->slots_dead_owner, lr->slots_dead_owner ? ": " : "", lr->slots_detail);
    printf("budgets: ");
    if (!lr->budget_checked)
        printf("not checked (%s)\n",
               lr->budget_detail[0] ? lr->budget_detail : "no tenant has a budget");
    else if (!lr->budget_over)
        printf("no tenant exceeded its budget beyond one step (%.0f ms) per in-flight request "
               "(%d tenant%s judged from admin tenant.show before and after the run)\n",
               sc->budget_step_ms, lr->budget_checked, lr->budget_checked == 1 ? "" : "s");
    else
        printf("%d TENANT%s OVER BUDGET: %s\n", lr->budget_over, lr->budget_over == 1 ? "" : "S",
               lr->budget_detail);
    for (int i = 0; i < lr->n_tenants; i++) {
        const struct lt_budget_verdict *v = &lr->tenants[i].budget;
        if (!v->checked) {
            if (v->why[0])
                printf("  tenant %-16s not judged: %s\n", lr->tenants[i].tenant, v->why);
            continue;
        }
        printf("  tenant %-16s %s: spent %.3f s <= allowed %.3f s (left %.3f + refill %.3f + "
               "%llu x step + rounding)\n",
               lr->tenants[i].tenant, v->ok ? "ok" : "OVER", (double)v->spent_us / 1e6,
               (double)v->allowed_us / 1e6, (double)v->left_before_us / 1e6,
               (double)v->refill_us / 1e6, (unsigned long long)v->inflight);
    }
    if (sc->n_thresholds)
        printf("\nthresholds\n");
    for (int i = 0; i < sc->n_thresholds; i++) {
        struct lt_threshold *t = &sc->thresholds[i];
        printf("  %-4s %s%s%s%s%s", t->passed ? "ok" : "FAIL", t->cls, t->cls[0] ? "." : "",
               t->metric, t->relative_to[0] ? " / " : "", t->relative_to);
        if (t->has_min)
            printf(" >= %g", t->min);
        if (t->has_max)
            printf(" <= %g", t->max);
        printf(": %g%s%s\n", t->value, t->passed ? "" : ": ", t->passed ? "" : t->why);
    }
}

static json_t *lat_json(struct lt_samples *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "samples", json_integer((json_int_t)s->n));
    for (size_t i = 0; i < sizeof(quantiles) / sizeof(quantiles[0]); i++) {
        char k[16];
        snprintf(k, sizeof(k), "%s_ms", quantiles[i].name);
        json_object_set_new(o, k, json_real(ms(s, quantiles[i].q)));
    }
    return o;
}

int lt_report_json(struct lt_scenario *sc, const struct lt_ledger_result *lr, double elapsed_s,
                   const char *path, char *err, size_t errlen)
{
    json_t *root = json_object();
    json_object_set_new(root, "scenario", json_string(sc->name));
    json_object_set_new(root, "target", json_string(sc->target));
    json_object_set_new(root, "duration_s", json_real(sc->duration_s));
    json_object_set_new(root, "elapsed_s", json_real(elapsed_s));
    json_object_set_new(root, "max_requests", json_integer((json_int_t)sc->max_requests));
    json_object_set_new(root, "latency_origin",
                        json_string("open loop: intended send time; closed loop: actual send"));
    json_t *classes = json_array();
    for (int i = 0; i < sc->n_classes; i++) {
        struct lt_class *c = &sc->classes[i];
        json_t *o = json_object();
        double v;
        json_object_set_new(o, "name", json_string(c->name));
        json_object_set_new(o, "behaviour", json_string(lt_behaviour_name(c->behaviour)));
        json_object_set_new(o, "mode", json_string(c->closed ? "closed" : "open"));
        json_object_set_new(o, "tenant", json_string(c->tenant));
        json_object_set_new(o, "sent", json_integer((json_int_t)c->sent));
        json_object_set_new(o, "farming_refused_at", json_integer((json_int_t)c->farming_first));
        json_object_set_new(o, "scheduled", json_integer((json_int_t)c->due));
        json_object_set_new(o, "active_s", json_real(c->active_s));
        json_object_set_new(o, "intended_rate_per_s", c->closed ? json_null() : json_real(c->rate));
        json_object_set_new(o, "achieved_rate_per_s",
                            json_real(c->active_s > 0 ? (double)c->sent / c->active_s : 0));
        json_t *st = json_object();
        for (int k = 0; k < LT_O_COUNT; k++)
            json_object_set_new(st, outcome_names[k], json_integer((json_int_t)c->outcome[k]));
        json_object_set_new(o, "outcomes", st);
        json_t *codes = json_object();
        for (int k = 0; k < c->n_codes; k++)
            json_object_set_new(codes, c->codes[k].code, json_integer((json_int_t)c->codes[k].n));
        json_object_set_new(o, "error_codes", codes);
        json_t *fin = json_object();
        for (int k = 0; k < LT_F_COUNT; k++)
            json_object_set_new(fin, finish_names[k], json_integer((json_int_t)c->finish[k]));
        json_object_set_new(o, "finish_reasons", fin);
        lt_metric(c, "success_rate", &v);
        json_object_set_new(o, "success_ratio", json_real(v));
        json_object_set_new(o, "completion_tokens", json_integer((json_int_t)c->completion_tokens));
        lt_metric(c, "tokens_per_s", &v);
        json_object_set_new(o, "tokens_per_s", json_real(v));
        json_object_set_new(o, "ttft_ok", lat_json(&c->ttft_ok));
        json_object_set_new(o, "tpot_ok", lat_json(&c->tpot_ok));
        json_object_set_new(o, "span_s",
                            json_real(c->last_end_ns > c->first_send_ns && c->first_send_ns
                                          ? (double)(c->last_end_ns - c->first_send_ns) / 1e9
                                          : 0));
        json_object_set_new(o, "total_ok", lat_json(&c->total_ok));
        json_object_set_new(o, "total_refused", lat_json(&c->total_refused));
        json_object_set_new(o, "send_lag", lat_json(&c->send_lag));
        json_array_append_new(classes, o);
    }
    json_object_set_new(root, "classes", classes);
    json_t *led = json_object();
    json_object_set_new(led, "checked", json_boolean(lr->checked));
    json_object_set_new(led, "conserved", lr->checked ? json_boolean(lr->conserved) : json_null());
    json_object_set_new(led, "violations", json_integer(lr->violations));
    json_object_set_new(led, "reads", json_integer(lr->attempts));
    json_object_set_new(led, "method", json_string(lr->method));
    json_object_set_new(led, "detail", json_string(lr->detail));
    json_t *ten = json_array();
    for (int i = 0; i < lr->n_tenants; i++) {
        json_t *t = json_object();
        json_object_set_new(t, "tenant", json_string(lr->tenants[i].tenant));
        json_object_set_new(t, "found", json_boolean(lr->tenants[i].found));
        json_object_set_new(t, "reserved_us", json_integer((json_int_t)lr->tenants[i].reserved_us));
        json_object_set_new(t, "used_us", json_integer((json_int_t)lr->tenants[i].used_us));
        json_object_set_new(t, "refunded_us", json_integer((json_int_t)lr->tenants[i].refunded_us));
        json_object_set_new(t, "inflight", json_integer((json_int_t)lr->tenants[i].inflight));
        const struct lt_budget_verdict *v = &lr->tenants[i].budget;
        json_t *b = json_object();
        json_object_set_new(b, "checked", json_boolean(v->checked));
        json_object_set_new(b, "within", v->checked ? json_boolean(v->ok) : json_null());
        json_object_set_new(b, "spent_us", json_integer((json_int_t)v->spent_us));
        json_object_set_new(b, "allowed_us", json_integer((json_int_t)v->allowed_us));
        json_object_set_new(b, "left_before_us", json_integer((json_int_t)v->left_before_us));
        json_object_set_new(b, "refill_us", json_integer((json_int_t)v->refill_us));
        json_object_set_new(b, "step_slack_us", json_integer((json_int_t)v->slack_us));
        json_object_set_new(b, "rounding_us", json_integer((json_int_t)v->rounding_us));
        json_object_set_new(b, "inflight_counted", json_integer((json_int_t)v->inflight));
        json_object_set_new(b, "detail", json_string(v->why));
        json_object_set_new(t, "budget", b);
        json_array_append_new(ten, t);
    }
    json_object_set_new(led, "tenants", ten);
    json_object_set_new(led, "slots_checked", json_boolean(lr->slots_checked));
    json_object_set_new(led, "slots", json_integer(lr->slots));
    json_object_set_new(led, "slots_busy", json_integer(lr->slots_busy));
    json_object_set_new(led, "slots_dead_owner", json_integer(lr->slots_dead_owner));
    json_object_set_new(led, "slots_detail", json_string(lr->slots_detail));
    json_object_set_new(led, "budgets_checked", json_integer(lr->budget_checked));
    json_object_set_new(led, "budgets_over", json_integer(lr->budget_over));
    json_object_set_new(led, "budget_step_ms", json_real(sc->budget_step_ms));
    json_object_set_new(led, "budget_detail", json_string(lr->budget_detail));
    json_object_set_new(root, "ledger", led);
    json_t *th = json_array();
    int failed = 0;
    for (int i = 0; i < sc->n_thresholds; i++) {
        struct lt_threshold *t = &sc->thresholds[i];
        json_t *o = json_object();
        json_object_set_new(o, "class", json_string(t->cls));
        json_object_set_new(o, "metric", json_string(t->metric));
        if (t->relative_to[0])
            json_object_set_new(o, "relative_to", json_string(t->relative_to));
        if (t->has_min)
            json_object_set_new(o, "min", json_real(t->min));
        if (t->has_max)
            json_object_set_new(o, "max", json_real(t->max));
        json_object_set_new(o, "value", json_real(t->value));
        json_object_set_new(o, "passed", json_boolean(t->passed));
        failed += !t->passed;
        json_array_append_new(th, o);
    }
    json_object_set_new(root, "thresholds", th);
    json_object_set_new(root, "thresholds_failed", json_integer(failed));
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (rc != 0) {
        snprintf(err, errlen, "--json %s: cannot write the report", path);
        return -EIO;
    }
    return 0;
}
