#!/usr/bin/env bash
# Starts gpuwarden on 127.0.0.1:8080 with the development config, from a
# fresh Debian 12 machine: installs what is missing, fetches the default
# model, builds, starts the master in the foreground, and once the node is
# ready prints a demo token and a curl line that works as printed.
# Ctrl-C (SIGINT) or SIGTERM drains and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

config=${GW_CONFIG:-dist/gpuwarden.dev.json}
./scripts/install-deps.sh
./scripts/fetch-model.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >build.configure.log 2>&1 ||
    { cat build.configure.log; exit 1; }
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target gpuwarden gpuwarden-worker gpuwarden-token
build/bin/gpuwarden --check-config "$config"

build/bin/gpuwarden -c "$config" &
master=$!
trap 'kill -TERM $master 2>/dev/null; wait $master' INT TERM

for _ in $(seq 1 120); do
    if curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1; then
        break
    fi
    kill -0 $master 2>/dev/null || { echo "run-dev: gpuwarden exited; see the lines above" >&2; exit 1; }
    sleep 0.5
done

token=$(build/bin/gpuwarden-token -c "$config" --tenant acme --ttl 86400)
cat <<MSG

gpuwarden is ready on http://127.0.0.1:8080 (config $config).
A development token for tenant "acme" (valid 24 h):

  $token

Try:

  curl -sS http://127.0.0.1:8080/v1/chat/completions \\
    -H "Authorization: Bearer $token" -H "Content-Type: application/json" \\
    -d '{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":32,"temperature":0}'

Ctrl-C stops it (in-flight requests are drained first).
MSG
wait $master
