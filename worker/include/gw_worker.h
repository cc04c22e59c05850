/* gw_worker.h - the worker process (worker/): the loop that takes queued
 * requests from the segment and runs them on the engine (worker_proc.c),
 * and the output guard its text goes through before it is published
 * (guard.c). The engine itself is worker/engine/ (gw_engine.h); the master
 * and the fronts link neither (docs/ARCHITECTURE.md, "Who links whom").
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include "gw_common.h"

#include <stddef.h>
#include <stdint.h>

/* A worker process: loads the model, then runs queued requests until
 * SIGTERM. worker_proc.c */
int gw_worker_main(const char *config_path, int index, const struct gw_fds *fds);

/* Output guard (guard.c): the worker's text goes through it before it is
 * published. Every rule is matched with PCRE2_PARTIAL_HARD over the text not
 * yet published, so a tail that could still become a match is held back
 * until it cannot: a match is never published, even split across tokens.
 * Patterns match bytes (no UTF mode). */
struct gw_guard;
int gw_guard_new(struct gw_guard **out, const struct gw_guard_rule *rules, int n, char *err,
                 size_t errlen);
void gw_guard_free(struct gw_guard *g);
/* Forgets any held text and the per-request redaction counts (a new
 * request). */
void gw_guard_reset(struct gw_guard *g);
/* What may be published goes to emit (in order). Returns 0, or 1 + the
 * index of a kill rule that matched (nothing from the match on is emitted;
 * further feeding emits nothing). A redact rule's match is emitted as
 * "[REDACTED]". With final = 1 the stream ends: no tail is held back. */
int gw_guard_feed(struct gw_guard *g, const char *text, size_t len, int final,
                  void (*emit)(void *user, const char *text, size_t len), void *user);
/* Rule names and counts, for logs and tests. gw_guard_redactions counts
 * every redaction since gw_guard_new. */
const char *gw_guard_rule_name(const struct gw_guard *g, int rule);
uint64_t gw_guard_redactions(const struct gw_guard *g);

/* Makes the request's redactions (those since gw_guard_reset) visible, once
 * the request's text has been fed to the end: adds them to the node's
 * counter (GW_MC_GUARD_REDACTIONS, /metrics gpuwarden_guard_redactions_total)
 * when seg is not NULL, and appends one audit line per rule that redacted,
 *   {"time":..,"request_id":..,"tenant":..,"ip":..,"event":"redaction",
 *    "rule":"openai_api_key","count":2}
 * to audit_path when it and req are not NULL (the matched text is never in
 * it). Then forgets them: a second call reports nothing. Returns the number
 * of redactions reported (0 for g NULL, a worker without rules), or the
 * first negative errno of an audit append (the counter is added all the
 * same). The worker calls it right after the final gw_guard_feed. */
int gw_guard_report(struct gw_guard *g, struct gw_segment *seg, const struct gw_slot_req *req,
                    const char *audit_path);

/* SIGHUP: loads config_path again and builds a guard from its rules. On
 * success 0, the old *g freed and replaced (by NULL when the new config has
 * no rules: "guard": []). Otherwise *g is left as it was, and a negative
 * errno returned with err naming the problem ("config: watchdog.guard[0]...",
 * or gw_guard_new's "guard rule NAME: ..."). Between requests only: a guard
 * holds the unpublished text of the request in flight. */
int gw_guard_reload(struct gw_guard **g, const char *config_path, char *err, size_t errlen);

#endif /* GW_WORKER_H */
