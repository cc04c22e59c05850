/* cluster_lua.h - the three Lua scripts the cluster agent runs in Redis
 * (supervisor/cluster.c; docs/ARCHITECTURE.md, "The farm"). Each runs
 * atomically in Redis, with Redis's clock (TIME), so nodes' clocks never
 * meet. Times are microseconds; a double holds them exactly (< 2^53).
 * Private to supervisor/. */
#ifndef GW_CLUSTER_LUA_H
#define GW_CLUSTER_LUA_H

/* Expired leases of any node give their unused tokens back (the part a
 * node reported unused at its last round trip). Shared by take. */
#define GW_LUA_REAP                                                                                \
    "local function giveback(u, now)\n"                                                            \
    "  for w = 1, nw do\n"                                                                         \
    "    local T = tonumber(ARGV[4 + 2 * w])\n"                                                    \
    "    local tat = tonumber(redis.call('GET', KEYS[w]) or '0')\n"                                \
    "    if tat > now then\n"                                                                      \
    "      local nt = tat - u * T\n"                                                               \
    "      if nt < now then nt = now end\n"                                                        \
    "      redis.call('SET', KEYS[w], string.format('%.0f', nt), 'PX',\n"                          \
    "                 math.floor((nt - now) / 1000) + 1000)\n"                                     \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"

/* KEYS: one GCRA cell per window, then the tenant's lease hash. A GPU
 * budget is one such cell too: T = period / amount us of time per GPU-us
 * (fractional) and tau = period - T, so a full cell grants `amount`.
 * ARGV: node, k (tokens wanted), lease ttl ms, force (1: charge k whatever
 * is left: reconciling fail-open admissions), unused tokens the node holds,
 * then per window its interval T and tolerance tau (us).
 * Returns {granted, retry_us}. A lease record is "unused:end_us" per node. */
#define GW_LUA_TAKE                                                                                \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                                      \
    "local nw = #KEYS - 1\n"                                                                       \
    "local lk = KEYS[nw + 1]\n"                                                                    \
    "local k, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])\n"                                        \
    "local force, held = tonumber(ARGV[4]), tonumber(ARGV[5])\n" GW_LUA_REAP                       \
    "local all = redis.call('HGETALL', lk)\n"                                                      \
    "for i = 1, #all, 2 do\n"                                                                      \
    "  local u, e = string.match(all[i + 1], '^(%d+):(%d+)$')\n"                                   \
    "  if not u or tonumber(e) <= now then\n"                                                      \
    "    redis.call('HDEL', lk, all[i])\n"                                                         \
    "    if u then giveback(tonumber(u), now) end\n"                                               \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local fit, retry = k, 0\n"                                                                    \
    "for w = 1, nw do\n"                                                                           \
    "  local T, tau = tonumber(ARGV[4 + 2 * w]), tonumber(ARGV[5 + 2 * w])\n"                      \
    "  local tat = tonumber(redis.call('GET', KEYS[w]) or '0')\n"                                  \
    "  if tat < now then tat = now end\n"                                                          \
    "  local f = math.floor((tau - (tat - now)) / T) + 1\n"                                        \
    "  if f < 0 then f = 0 end\n"                                                                  \
    "  if f == 0 and tat - now - tau > retry then retry = tat - now - tau end\n"                   \
    "  if f < fit then fit = f end\n"                                                              \
    "end\n"                                                                                        \
    "if force == 1 then fit = k end\n"                                                             \
    "if fit > 0 then\n"                                                                            \
    "  for w = 1, nw do\n"                                                                         \
    "    local T = tonumber(ARGV[4 + 2 * w])\n"                                                    \
    "    local tat = tonumber(redis.call('GET', KEYS[w]) or '0')\n"                                \
    "    if tat < now then tat = now end\n"                                                        \
    "    tat = tat + fit * T\n"                                                                    \
    "    redis.call('SET', KEYS[w], string.format('%.0f', tat), 'PX',\n"                           \
    "               math.floor((tat - now) / 1000) + 1000)\n"                                      \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "if force == 0 and held + fit > 0 then\n"                                                      \
    "  redis.call('HSET', lk, ARGV[1], string.format('%.0f:%.0f', held + fit, now + ttl * "        \
    "1000))\n"                                                                                     \
    "  redis.call('PEXPIRE', lk, ttl * 2)\n"                                                       \
    "end\n"                                                                                        \
    "return {fit, retry}\n"

/* Gives back r unused tokens of this node's lease: at most what its record
 * holds (a record Redis already reaped gives nothing: never twice).
 * KEYS and ARGV[4..] as take; ARGV: node, r. Returns what it gave back. */
#define GW_LUA_GIVE                                                                                \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                                      \
    "local nw = #KEYS - 1\n"                                                                       \
    "local lk = KEYS[nw + 1]\n" GW_LUA_REAP "local rec = redis.call('HGET', lk, ARGV[1])\n"        \
    "if not rec then return 0 end\n"                                                               \
    "local u = tonumber(string.match(rec, '^(%d+):') or '0')\n"                                    \
    "local r = tonumber(ARGV[2])\n"                                                                \
    "if r > u then r = u end\n"                                                                    \
    "redis.call('HDEL', lk, ARGV[1])\n"                                                            \
    "if r > 0 then giveback(r, now) end\n"                                                         \
    "return r\n"

/* KEYS: the live-node sorted set (score: heartbeat end, ms), this node's
 * heartbeat key. ARGV: node, ttl ms, the key's value, the prefix of the
 * heartbeat keys. Returns the live nodes' names: those in the set whose
 * heartbeat key has not expired (a node whose key is gone is dropped). */
#define GW_LUA_BEAT                                                                                \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                      \
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"                              \
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"                                       \
    "redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])\n"                                         \
    "local live = {}\n"                                                                            \
    "for _, n in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"                                \
    "  if redis.call('EXISTS', ARGV[4] .. n) == 1 then live[#live + 1] = n\n"                      \
    "  else redis.call('ZREM', KEYS[1], n) end\n"                                                  \
    "end\n"                                                                                        \
    "return live\n"

#endif
