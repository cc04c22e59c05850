/* config_internal.h - what the config's source files share, private to
 * common/: the mistake collector every check reports into, the typed getters
 * and small parsers (config_values.c), and each file's section parsers.
 *
 *   config.c          the top level: load, parse, free; the node's own
 *                     sections (listen, segment, model, http, admin, cost,
 *                     log) and the defaults
 *   config_values.c   JSON-path error reporting, typed getters, names,
 *                     counts, rate windows and GPU-time budgets
 *   config_plans.c    plans, tenants, the ip and global limits, the default
 *                     plan, and the tenant and plan lookups
 *   config_auth.c     auth and its key files
 *   config_jwks.c     auth.jwks_file: public keys as a JSON Web Key Set
 *   config_net.c      the ip section's trusted proxies and IPv6 prefix
 *   config_cluster.c  the farm: Redis, the node's name, leases, fail modes
 *   config_metrics.c  /metrics: its own listener, its bearer token, top-N tenants
 *   config_watchdog.c the watchdog's limits, the output guard's rules and
 *                     the unbounded-request patterns
 *   config_farm.c     a plan's "farming" object (prompt-farming detection)
 *
 * Every check appends "config: <json path>: <problem>" through gw__cfg_bad;
 * the messages are the interface (tests/common/test_config.c asserts them
 * byte for byte).
 */
#ifndef GW_CONFIG_INTERNAL_H
#define GW_CONFIG_INTERNAL_H

#include "gw_common.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SEC_US 1000000ull
#define PATH_LEN 192 /* a JSON path in a message */

/* Collects mistakes. Only whole lines go into err; lines that do not fit are
 * counted but dropped (the caller still gets -EINVAL). */
struct gw_cfg_cx {
    char *err;
    size_t errlen;
    size_t used;
    int mistakes;
    struct gw_config *cfg; /* being filled (plans' own pattern lists go into it) */
};

/* ------------------------------------------------ config_values.c: reporting */

/* One mistake: "config: <path>: <fmt...>". */
void gw__cfg_bad(struct gw_cfg_cx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A value quoted for a message: at most 80 bytes, control bytes as '?'. */
const char *gw__cfg_shown(const char *s, char buf[96]);
/* "base.key" (or "key" at the top) and "base[i]", cut at PATH_LEN. */
void gw__cfg_path_key(char out[PATH_LEN], const char *base, const char *key);
void gw__cfg_path_idx(char out[PATH_LEN], const char *base, size_t i);

/* -------------------------------------------- config_values.c: typed getters */

/* Each getter returns 1 when the key is present and valid (the value is
 * stored), 0 when it is absent (the default stays), -1 when it is present
 * but wrong (reported). */

/* Reports every key of obj that `allowed` (NULL-terminated) does not name. */
void gw__cfg_check_keys(struct gw_cfg_cx *c, json_t *obj, const char *base,
                        const char *const *allowed);
/* obj[key] when it is an object; NULL when absent (a mistake if required) or
 * not an object (a mistake). */
json_t *gw__cfg_get_object(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                           int required);
int gw__cfg_get_u64(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                    uint64_t lo, uint64_t hi, int pow2, uint64_t *out);
int gw__cfg_get_u32(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                    uint32_t lo, uint32_t hi, int pow2, uint32_t *out);
int gw__cfg_get_int(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key, int lo,
                    int hi, int *out);
/* 0 (auto) or an integer in [lo, hi] (lo > 0): "expected 0 (auto) or an
 * integer in [lo, hi]". */
int gw__cfg_get_int_auto(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                         int lo, int hi, int *out);
/* A JSON number (integer or not) in (0, hi]: "expected a number > 0 and <=
 * hi". For weights; counts and sizes stay integers. */
int gw__cfg_get_number(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                       double hi, double *out);
/* A string of 1 .. outlen-1 bytes. */
int gw__cfg_get_string(struct gw_cfg_cx *c, json_t *obj, const char *base, const char *key,
                       int required, char *out, size_t outlen);
/* 1 when s is 1 .. GW_NAME_MAX-1 bytes of [A-Za-z0-9] and `extra`. */
int gw__cfg_name_ok(const char *s, const char *extra);
/* Digits only (no sign, no space), value in [lo, hi]; -EINVAL otherwise. */
int gw__cfg_parse_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* ------------------------------------------------------------ section parsers */

/* config_plans.c */
void gw__cfg_plan_defaults(struct gw_plan *pl, const char *name);
void gw__cfg_parse_limits(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);
void gw__cfg_parse_plans(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);
void gw__cfg_parse_default_plan(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);
void gw__cfg_parse_tenants(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);

/* config_net.c: "ip.trusted_proxies" and "ip.ipv6_prefix" from the "ip" object */
void gw__cfg_net_defaults(struct gw_config *cfg);
void gw__cfg_parse_net(struct gw_cfg_cx *c, json_t *ip, struct gw_config *cfg);

/* config_auth.c */
void gw__cfg_parse_auth(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);
/* Wipes and frees a key's bytes. */
void gw__cfg_free_key(struct gw_key *k);
/* A whole regular file of at most max bytes into a NUL-terminated malloc'd
 * buffer: 0, -EISDIR (not a regular file), -EFBIG (larger than max) or the
 * -errno of open/read. */
int gw__cfg_read_file(const char *path, size_t max, unsigned char **out, size_t *len);

/* config_jwks.c: auth.jwks_file's keys appended to cfg->keys (after
 * auth.keys' own: their kids are checked against them) */
void gw__cfg_parse_jwks(struct gw_cfg_cx *c, const char *path, struct gw_config *cfg);

/* config_watchdog.c */
void gw__cfg_wd_defaults(struct gw_config *cfg);
void gw__cfg_parse_watchdog(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);
/* A plan's or tenant's "watchdog" object o at path p: its limit keys onto l,
 * its own "unbounded_patterns" into cfg->unb_lists. */
/* config_cluster.c: the "cluster" section (after the plans: it names them) */
void gw__cfg_parse_cluster(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);
/* config_metrics.c: the "metrics" section (after "listen": it must differ) */
void gw__cfg_parse_metrics(struct gw_cfg_cx *c, json_t *root, struct gw_config *cfg);

void gw__cfg_plan_watchdog(struct gw_cfg_cx *c, json_t *o, const char *p, struct gw_wd_limits *l);

/* config_farm.c */
void gw__cfg_farm_defaults(struct gw_farm_limits *l);
/* A plan's or tenant's "farming" object o at path p onto l (a tenant's
 * starts from its plan's), its "ignore_prefix" into cfg->farm_prefixes. */
void gw__cfg_plan_farming(struct gw_cfg_cx *c, json_t *o, const char *p, struct gw_farm_limits *l,
                          uint32_t *records);

#endif
