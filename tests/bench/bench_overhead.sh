#!/usr/bin/env bash
# Overhead on top of the engine: starts gpuwarden (1 front, 1 worker with 1
# thread) with a tenant that has no effective limits, then runs
# bench_overhead (N sequential max_tokens=1 requests on one keep-alive
# connection; latency minus the Server-Timing device time).
#   tests/bench/bench_overhead.sh [build-dir] [requests]
# GW_BENCH_FARMING=1 turns the bench plan's prompt-farming detection on
# (every request fingerprinted, scored and judged; the ladder's steps set
# out of reach so that none is refused): detectors on vs off.
set -euo pipefail
# gpuwarden's listening socket: bound to port 0 and held as fd 9
# (tests/common/hold-listen-socket), handed to the master by socket
# activation; no fixed port to collide with whatever else runs here.
[ -n "${GW_TEST_LISTEN_PORT:-}" ] ||
    exec "$(dirname "$0")/../common/hold-listen-socket" bash "$0" "$@"
cd "$(dirname "$0")/../.."
build=${1:-build}
n=${2:-500}
tmp=$(mktemp -d /tmp/gw-bench-overhead.XXXXXX)
port=$GW_TEST_LISTEN_PORT
trap '[ -n "${gw:-}" ] && kill -TERM "$gw" 2>/dev/null && wait "$gw" 2>/dev/null; rm -rf "$tmp"' EXIT
farming=""
[ "${GW_BENCH_FARMING:-0}" = 1 ] &&
    farming=', "farming": {"enabled": true, "throttle_after": 100000, "refuse_after": 100000}'
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/secret.key"
cat >"$tmp/gw.json" <<JSON
{
 "listen": ["127.0.0.1:$port"], "fronts": 1, "workers": 1, "state_dir": "$tmp/state",
 "segment": {"accounts": 4096, "budgets": 64, "slots": 16, "queue": 16,
             "prompt_bytes": 4096, "output_bytes": 4096},
 "model": {"path": "models/SmolLM2-135M-Instruct.Q4_1.gguf", "name": "smollm2", "threads": 1,
           "context": 256},
 "auth": {"keys": [{"kid": "b", "alg": "HS256", "secret_file": "$tmp/secret.key"}]},
 "ip": {"rate": ["1000000 per second burst 1000"]},
 "global": {"rate": ["1000000 per second burst 1000"], "budget": "1000 GPU-seconds per second"},
 "plans": {"bench": {"rate": ["1000000 per second burst 1000"],
                     "budget": "1000 GPU-seconds per second", "max_tokens": 1$farming}},
 "default_plan": null, "tenants": {"bench": {"plan": "bench"}}
}
JSON
# sh execs the master: LISTEN_PID ($$) is its own pid
sh -c 'export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"' sh "$build/bin/gpuwarden" -c "$tmp/gw.json" \
    3<&9 9<&- 2>"$tmp/gw.log" &
gw=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
"$build/tests/bench/bench_overhead" $port "$("$build/bin/gpuwarden-token" -c "$tmp/gw.json" --tenant bench)" "$n"
