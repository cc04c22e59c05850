#!/usr/bin/env bash
# Refusal path: how many requests/s a tenant over its limit costs us.
# gpuwarden answers 429 after the ip cells, a JWT check (cached) and the
# tenant + global cells; nginx (limit_req) answers 429 after one ip lookup.
# Same machine, same wrk command, one after the other.
#
#   tests/bench/bench_refusal.sh [build-dir] [seconds]
#
# Needs wrk and nginx (Debian packages wrk, nginx-light; this script
# installs them: benchmark-only, not dependencies of gpuwarden). Loopback
# only; both servers are stopped at the end.
set -euo pipefail
# gpuwarden's listening socket: bound to port 0 and held as fd 9
# (tests/common/hold-listen-socket), handed to the master by socket
# activation; no fixed port to collide with whatever else runs here.
[ -n "${GW_TEST_LISTEN_PORT:-}" ] ||
    exec "$(dirname "$0")/../common/hold-listen-socket" bash "$0" "$@"
cd "$(dirname "$0")/../.."
build=${1:-build}
secs=${2:-10}
perf_front=${GW_PERF:-0}
for p in wrk nginx; do
    command -v $p >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
done
tmp=$(mktemp -d /tmp/gw-bench-refusal.XXXXXX)
gwport=$GW_TEST_LISTEN_PORT
ngport=18081
cleanup() {
    [ -n "${gw:-}" ] && kill -TERM "$gw" 2>/dev/null && wait "$gw" 2>/dev/null
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/secret.key"
cat >"$tmp/gw.json" <<JSON
{
 "listen": ["127.0.0.1:$gwport"], "fronts": 2, "workers": 1, "state_dir": "$tmp/state",
 "segment": {"accounts": 4096, "budgets": 64, "slots": 16, "queue": 16,
             "prompt_bytes": 4096, "output_bytes": 4096},
 "model": {"path": "models/SmolLM2-135M-Instruct.Q4_1.gguf", "name": "smollm2", "threads": 1,
           "context": 256},
 "auth": {"keys": [{"kid": "b", "alg": "HS256", "secret_file": "$tmp/secret.key"}]},
 "ip": {"rate": ["1000000 per second burst 1000"]},
 "global": {"rate": ["1000000 per second burst 1000"], "budget": "1000 GPU-seconds per second"},
 "plans": {"flood": {"rate": ["1 per hour"], "budget": "10 GPU-seconds per day", "max_tokens": 1}},
 "default_plan": null,
 "tenants": {"flood": {"plan": "flood"}}
}
JSON
# sh execs the master: LISTEN_PID ($$) is its own pid
sh -c 'export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"' sh "$build/bin/gpuwarden" -c "$tmp/gw.json" \
    3<&9 9<&- 2>"$tmp/gw.log" &
gw=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$gwport/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
token=$("$build/bin/gpuwarden-token" -c "$tmp/gw.json" --tenant flood --ttl 3600)
cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"prompt":"hi","max_tokens":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA
# the one request the hour allows
curl -sS -o /dev/null -w "first request: %{http_code}\n" "http://127.0.0.1:$gwport/v1/generate" \
    -H "Authorization: Bearer $token" -d '{"prompt":"hi","max_tokens":1}'
curl -sS -o /dev/null -w "second request: %{http_code} (refused from here on)\n" \
    "http://127.0.0.1:$gwport/v1/generate" -H "Authorization: Bearer $token" \
    -d '{"prompt":"hi","max_tokens":1}'

cat >"$tmp/nginx.conf" <<NGX
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  limit_req_zone \$binary_remote_addr zone=one:10m rate=1r/m;
  limit_req_status 429;
  server {
    listen 127.0.0.1:$ngport;
    location / { limit_req zone=one; return 200 "ok\n"; }
  }
}
NGX
nginx -c "$tmp/nginx.conf"
sleep 0.5
curl -sS -o /dev/null -w "nginx first: %{http_code}\n" "http://127.0.0.1:$ngport/v1/generate"

echo "== gpuwarden: POST /v1/generate, tenant over its limit (wrk -t2 -c32 -d${secs}s)"
wrk -t2 -c32 -d"${secs}s" -s "$tmp/post.lua" "http://127.0.0.1:$gwport/v1/generate"
echo "== nginx limit_req: same wrk command"
wrk -t2 -c32 -d"${secs}s" -s "$tmp/post.lua" "http://127.0.0.1:$ngport/v1/generate"
