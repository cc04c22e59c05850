/* gw_common/farm.h - prompt-farming signals and the response ladder, per
 * tenant, in the shared segment (common/farm.c; docs/ARCHITECTURE.md,
 * "Prompt farming"; the thresholds are a plan's "farming" object,
 * docs/CONFIG.md). Part of gw_common.h; include that, not this.
 *
 * What a front does with each authenticated, well-formed request of a plan
 * with farming enabled, before it takes a slot:
 *   1. gw_farm_text: the text to fingerprint (a chat's last message; a
 *      declared template prefix cut off) and whether it is single-turn;
 *   2. gw_farm_simhash: its 64-bit SimHash, O(length), no shared state;
 *   3. gw_farm_observe: records it in the tenant's ring, scores the
 *      window and moves the ladder; the verdict says refuse or not, and
 *      whether this call escalated (then the front writes the audit line,
 *      gw_farm_audit_line).
 *
 * The score (0..100), over the tenant's last `window` prompts:
 *   near_pct  = percent of the window's prompts (the oldest excepted) whose
 *               fingerprint is within `near_bits` bits (Hamming distance) of
 *               an earlier one in the window: templates and rewordings;
 *   cv_pct    = the coefficient of variation of the gaps between their
 *               arrivals (standard deviation / mean, percent; 0 when the
 *               mean is 0): a machine-regular pace is near 0, people near
 *               or above 100;
 *   single_pct= percent of them that were single-turn (no assistant turn);
 *   sweep     = 100 - 100 * cv_pct / sweep_cv_pct when sweep_cv_pct > 0,
 *               single_pct >= sweep_single_pct and cv_pct < sweep_cv_pct;
 *               else 0;
 *   score     = max(near_pct, sweep), and 0 while the window holds fewer
 *               than min_samples prompts.
 * The ladder: a prompt scoring >= flag_score is a strike, any other takes
 * one strike away. 1 strike: flagged (audit + metric); throttle_after:
 * throttled (the plan's `throttle` rate applies on top of its own);
 * refuse_after: refused (429 prompt_farming) for refuse_ttl_s, after which
 * the tenant starts again from no strikes; with ban_ttl_s, the front also
 * bans it (the ledger's ban cell: 403 banned, gpuwardenctl unban) when it
 * reaches refused. gpuwardenctl tenant
 * clear-farming resets the ladder and the evidence at once.
 */
#ifndef GW_COMMON_FARM_H
#define GW_COMMON_FARM_H

#include "gw_common/config.h"

#include <stddef.h>
#include <stdint.h>

#define GW_FARM_RING 64         /* fingerprints kept per tenant (window <= this) */
#define GW_FARM_MAX_BYTES 16384 /* bytes of a text that are fingerprinted */

struct gw_segment;
struct gw_acct;

/* The 64-bit SimHash of text[0, len) (its first GW_FARM_MAX_BYTES bytes).
 * Words are maximal runs of ASCII letters and digits and bytes >= 0x80,
 * ASCII letters folded to lower case, less English function words ("the",
 * "of", "you", ...: farm.c's list); the features are every word and every
 * pair of adjacent words left, each hashed with XXH3-64 (words with seed
 * 0, pairs as their two word hashes with seed 1), weight 1. Bit b of the
 * result is 1 when more features have bit b set than clear. 0 when the
 * text has no word; never 0 otherwise (an all-clear sum gives 1). */
uint64_t gw_farm_simhash(const char *text, size_t len);

/* The part of a request's prompt that is fingerprinted: for a chat prompt
 * (role NUL content NUL ..., gw_gen_request) the last message's content,
 * otherwise the whole prompt; then the first of pfx's strings that the
 * text begins with is cut off (pfx may be NULL). *single gets 1 unless a
 * chat prompt holds an "assistant" message. */
void gw_farm_text(const char *prompt, size_t len, int chat, const struct gw_farm_prefixes *pfx,
                  const char **text, size_t *text_len, int *single);

/* A score and its parts (the file's opening). */
struct gw_farm_score {
    uint32_t n;            /* prompts read (<= window) */
    uint32_t near;         /* of them, near an earlier one */
    uint32_t near_pct;     /* 100 * near / (n - 1), floored; 0 when n < 2 */
    uint32_t cv_pct;       /* inter-arrival CV, percent, rounded, at most 9999 */
    uint32_t single_pct;   /* 100 * single-turn / n, floored */
    uint32_t sweep;        /* 0..100 */
    uint32_t score;        /* 0..100 */
    uint32_t nearest_bits; /* the newest prompt's distance to its nearest earlier one
                              (64 when none) */
    uint64_t fp;           /* the newest prompt's fingerprint */
    uint64_t nearest_fp;   /* its nearest earlier one (0 when none) */
};

/* Scores a window given oldest first: fingerprints (0 entries are
 * skipped), arrival times in us and single-turn flags, n <= GW_FARM_RING.
 * Pure; gw_farm_observe uses it on the tenant's ring. */
void gw_farm_score_window(const uint64_t *fp, const uint64_t *at_us, const uint8_t *single,
                          uint32_t n, const struct gw_farm_limits *l, struct gw_farm_score *out);

enum gw_farm_level { GW_FARM_NONE = 0, GW_FARM_FLAGGED, GW_FARM_THROTTLED, GW_FARM_REFUSED };
/* "none", "flagged", "throttled", "refused". */
const char *gw_farm_level_name(int level);

struct gw_farm_verdict {
    struct gw_farm_score s;
    int level;        /* enum gw_farm_level after this prompt */
    int prev_level;   /* before it: level > prev_level means this call escalated */
    uint32_t strikes; /* after this prompt */
    uint64_t until_s; /* with GW_FARM_REFUSED: refused until (unix seconds) */
    int refuse;       /* 1: answer 429 prompt_farming, Retry-After retry_us */
    int throttled;    /* 1: the throttle rate refused it (429 rate_limited) */
    uint64_t retry_us;
    uint64_t banned_until_s; /* set by the caller when it banned the tenant (ban_ttl_s) */
};

/* Records fingerprint fp (0: nothing recorded, the ladder still judged)
 * of a prompt that arrived at now_us in tenant's ring, scores the window
 * under l and moves the ladder. No lock: a fetch_add, two stores, one CAS
 * on the ladder word, one on the throttle word when throttled. -ENOENT
 * when the account has no budget record, GW_ESTALE for a stale reference;
 * -EINVAL for bad arguments. */
int gw_farm_observe(struct gw_segment *seg, struct gw_acct tenant, uint64_t fp, int single,
                    uint64_t now_us, const struct gw_farm_limits *l, struct gw_farm_verdict *v);

/* A tenant's farming state, for gpuwardenctl tenant show. */
struct gw_farm_state {
    uint64_t seen;    /* prompts ever recorded */
    int level;        /* enum gw_farm_level, as of now_us (an expired refusal reads none) */
    uint32_t strikes; /* current */
    uint64_t until_s; /* refused until */
    uint32_t score, near_pct, sweep, cv_pct, single_pct, n; /* of the last prompt */
    uint64_t last_fp;
    uint64_t strikes_total; /* prompts ever at or over flag_score */
    uint64_t refused_total; /* requests ever refused by the ladder */
};
int gw_farm_get(const struct gw_segment *seg, struct gw_acct tenant, uint64_t now_us,
                struct gw_farm_state *out);
/* Resets the tenant's ladder, throttle and ring (the evidence); the totals
 * stay. Same errors as gw_farm_observe. */
int gw_farm_clear(struct gw_segment *seg, struct gw_acct tenant);

/* The audit log's line for an escalation (JSON, newline-terminated):
 * {"time","event":"farming","tenant","level","strikes","score","near_pct",
 *  "near","n","cv_pct","single_pct","sweep","fp","nearest_fp",
 *  "nearest_bits"[,"until"][,"banned_until"]}. The tenant id is escaped. Returns its
 * length (cut to len - 1 at most). */
size_t gw_farm_audit_line(char *buf, size_t len, uint64_t now_us, const char *tenant,
                          const struct gw_farm_verdict *v);

/* ------------------------------------------------------------ per address */

/* The same signals and ladder per client address (common/farm_ip.c), for
 * a farm of tenants behind one address: the node's "ip.farming" object
 * (docs/CONFIG.md) is the limits, the fingerprint is the one computed for
 * the tenant step. The records are a table of seg_config.ip_farm_recs
 * entries ("ip.farming.records"), each tagged with the ip account it
 * belongs to (index, generation, key bits): a reclaimed and reused account
 * starts clean. The ladder's refusal and ban refuse the address whatever
 * tenant it authenticates as. */

/* As gw_farm_observe, on ip's record (claimed at its first prompt).
 * -ENOENT when the segment has no address records; GW_EFULL when every
 * entry of the address's probe window belongs to another live address
 * (the front then does not judge it); GW_ESTALE for a stale reference. */
int gw_farm_ip_observe(struct gw_segment *seg, struct gw_acct ip, uint64_t fp, int single,
                       uint64_t now_us, const struct gw_farm_limits *l, struct gw_farm_verdict *v);
/* As gw_farm_get / gw_farm_clear on ip's record; -ENOENT when it has none
 * (no prompt judged since its account was created). */
int gw_farm_ip_get(const struct gw_segment *seg, struct gw_acct ip, uint64_t now_us,
                   struct gw_farm_state *out);
int gw_farm_ip_clear(struct gw_segment *seg, struct gw_acct ip);
/* gw_farm_audit_line's line with "address" in place of "tenant" (the
 * address key: bytes other than [A-Za-z0-9.:/] shown as '?'). */
size_t gw_farm_ip_audit_line(char *buf, size_t len, uint64_t now_us, const char *address,
                             const struct gw_farm_verdict *v);

/* ------------------------------------------------- output_tokens quota */

/* A plan's "output_tokens" window (docs/CONFIG.md): generated tokens per
 * tenant per window, kept as a GCRA cell in the tenant's farming record.
 * A token costs period / limit us of the cell (rounded up); the cell
 * holds (limit + burst) tokens' worth when idle. Admission asks
 * gw_outq_check before the request runs (at least one token left); the
 * front charges the tokens the request really generated when it settles
 * (gw_outq_charge), so one request may overshoot the window by its own
 * length, and the next ones wait for it. */

/* 0 when the tenant has at least one token left at now_us; GW_EREFUSED
 * with *retry_us the wait until it has; -ENOENT / GW_ESTALE as
 * gw_farm_observe; -EINVAL for a window with limit 0. *left (may be NULL)
 * gets the tokens left. */
int gw_outq_check(const struct gw_segment *seg, struct gw_acct tenant, const struct gw_window *w,
                  uint64_t now_us, uint64_t *left, uint64_t *retry_us);
/* Charges `tokens` generated tokens at now_us (one CAS). Same errors. */
int gw_outq_charge(struct gw_segment *seg, struct gw_acct tenant, const struct gw_window *w,
                   uint64_t tokens, uint64_t now_us);

#endif /* GW_COMMON_FARM_H */
