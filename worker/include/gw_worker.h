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
/* Forgets any held text (a new request). */
void gw_guard_reset(struct gw_guard *g);
/* What may be published goes to emit (in order). Returns 0, or 1 + the
 * index of a kill rule that matched (nothing from the match on is emitted;
 * further feeding emits nothing). A redact rule's match is emitted as
 * "[REDACTED]". With final = 1 the stream ends: no tail is held back. */
int gw_guard_feed(struct gw_guard *g, const char *text, size_t len, int final,
                  void (*emit)(void *user, const char *text, size_t len), void *user);
/* Rule names and counts, for logs and tests. */
const char *gw_guard_rule_name(const struct gw_guard *g, int rule);
uint64_t gw_guard_redactions(const struct gw_guard *g);

#endif /* GW_WORKER_H */
