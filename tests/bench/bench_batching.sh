#!/usr/bin/env bash
# bench_batching.sh - gpuwarden side by side with llama.cpp's llama-server
# (continuous batching, --parallel N) on the same GGUF, the same thread
# count and the same run (issue 14). Two modes:
#
#   tests/bench/bench_batching.sh [batching] [OUT_DIR]
#     For each N in GW_STREAMS (default "1 2 4 8 16"): start gpuwarden
#     (1 front, 1 worker, model.threads 2, model.max_batch N when the binary
#     accepts the key), run N closed-loop streams of GW_MAX_TOKENS (128)
#     greedy tokens each until GW_REQUESTS requests (default max(8, 2N))
#     have been answered, stop it; then the same against llama-server
#     -t 2 --parallel N -c N*512. Prints per run and, at the end, one table:
#     aggregate decode tok/s, TPOT p50/p99, TTFT p50/p99 (client:
#     gpuwarden-load, one closed-loop class; tests/bench/batching_table.py
#     turns its reports into the table).
#
#   tests/bench/bench_batching.sh light [OUT_DIR]
#     dist/scenarios/light-among-heavy.json (a light tenant's 8-token
#     requests, alone for 20 s, then beside a heavy tenant's 8 closed-loop
#     streams) against gpuwarden only (llama-server has no tenants), once
#     per model.priority_lead in GW_LEADS (default "8 0"), GW_ROUNDS times
#     (default 2), alternated; prints each run's classes.
#
#   tests/bench/bench_batching.sh isolation [OUT_DIR]
#     dist/scenarios/isolation.json (legitimate tenants calm for 20 s, then
#     under every attack for 20 s) with gpuwarden-load, against gpuwarden
#     (dev config: its limits are what the scenario is written for; 1 worker,
#     2 threads, max_batch GW_ISO_BATCH when accepted) and then against
#     llama-server -t 2 --parallel GW_ISO_BATCH (default 4), GW_ROUNDS times
#     (default 1), alternated, each round a fresh server. llama-server
#     has no tenants or JWTs: it ignores the Authorization header, so the
#     attackers and the legitimate clients are just different connections
#     and every attack request is served. Prints the legitimate classes of
#     both side by side, per round and pooled over the rounds
#     (tests/bench/isolation_summary.py: a p99 of one round's 20-40 answers
#     is its maximum; pooled rounds give it a few hundred).
#
# Environment: GW_BUILD (build dir, default build), GW_LLAMA_SERVER (the
# binary; default the newest under $HOME/.cache/gpuwarden-bench, as built by
# tests/bench/build-llama-server.sh), GW_MODEL (default
# models/SmolLM2-135M-Instruct.Q4_1.gguf), GW_THREADS (2), GW_STREAMS,
# GW_REQUESTS, GW_MAX_TOKENS, GW_MAX_BATCH (a number for every N, "n" for N
# itself (default), "off" to leave the key out), GW_ISO_BATCH,
# GW_SERVERS ("gpuwarden llama-server", either may be left out),
# GW_PRIORITY_LEAD (isolation: gpuwarden's model.priority_lead; 0 = no
# priority steps for less served tenants), GW_ISO_ATTACK (isolation: 0 runs
# the control, the legitimate classes alone on the same seeded schedules),
# GW_PIN_THREADS (gpuwarden's model.pin_threads, true or false; unset:
# the default), GW_LLAMA_ARGS (more llama-server options,
# e.g. "--poll 0").
# OUT_DIR (default a fresh /tmp/gw-bench-batching.XXXXXX) keeps the logs and
# JSON reports. Loopback only; every process started here is stopped by the
# EXIT trap. A benchmark, not a test: it asserts nothing.
set -euo pipefail
[ -n "${GW_TEST_LISTEN_PORT:-}" ] ||
    exec "$(dirname "$0")/../common/hold-listen-socket" bash "$0" "$@"
cd "$(dirname "$0")/../.."
mode=batching
case "${1:-}" in
batching | isolation | light) mode=$1; shift ;;
-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 0 ;;
esac
out=${1:-$(mktemp -d /tmp/gw-bench-batching.XXXXXX)}
mkdir -p "$out"
build=${GW_BUILD:-build}
model=${GW_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=${GW_THREADS:-2}
streams=${GW_STREAMS:-1 2 4 8 16}
max_tokens=${GW_MAX_TOKENS:-128}
max_batch=${GW_MAX_BATCH:-n}
iso_batch=${GW_ISO_BATCH:-4}
servers=${GW_SERVERS:-gpuwarden llama-server}
[ "$mode" != light ] || servers=gpuwarden # llama-server has no tenants
llama=${GW_LLAMA_SERVER:-$(ls -t "$HOME"/.cache/gpuwarden-bench/build-*/bin/llama-server 2>/dev/null |
    head -n 1 || true)}
gw_port=$GW_TEST_LISTEN_PORT
tmp=$(mktemp -d /tmp/gw-bench-batching-run.XXXXXX)
pid=
stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
trap 'stop; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

case " $servers " in *" llama-server "*)
    [ -x "$llama" ] || { echo "bench_batching: no llama-server (run tests/bench/build-llama-server.sh" \
        "or set GW_LLAMA_SERVER)" >&2; exit 1; } ;;
esac
[ -x "$build/bin/gpuwarden" ] || { echo "bench_batching: no $build/bin/gpuwarden" >&2; exit 1; }

# A free loopback port for llama-server (it cannot take a socket by
# activation; the kernel picks one, we release it, llama-server binds it).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() { # URL: up to 60 s for a 200, while $pid lives
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "bench_batching: the server exited" >&2; return 1; }
        sleep 0.2
    done
    echo "bench_batching: $1 not ready after 60 s" >&2
    return 1
}

# gpuwarden's config: the bench tenant has no effective limits; the
# repetition and divergence watchdogs are off (a greedy 135M model loops,
# and a kill would end the stream before its 128 tokens; llama-server has
# no such watchdog). $1: max_batch or "" to leave the key out.
gw_config() {
    local mb="" pin=""
    [ -n "$1" ] && mb=", \"max_batch\": $1"
    [ -n "${GW_PIN_THREADS:-}" ] && pin=", \"pin_threads\": $GW_PIN_THREADS"
    cat <<JSON
{
 "listen": ["127.0.0.1:$gw_port"], "fronts": 1, "workers": 1, "state_dir": "$tmp/state",
 "segment": {"accounts": 4096, "budgets": 64, "slots": 64, "queue": 64,
             "prompt_bytes": 4096, "output_bytes": 16384},
 "model": {"path": "$model", "name": "smollm2", "threads": $threads, "context": 512$mb$pin},
 "auth": {"keys": [{"kid": "b", "alg": "HS256", "secret_file": "$tmp/secret.key"}]},
 "ip": {"rate": ["1000000 per second burst 1000"]},
 "global": {"rate": ["1000000 per second burst 1000"], "budget": "1000 GPU-seconds per second"},
 "plans": {"bench": {"rate": ["1000000 per second burst 1000"],
                     "budget": "1000 GPU-seconds per second", "max_tokens": 1024}},
 "default_plan": null, "tenants": {"bench": {"plan": "bench"}},
 "watchdog": {"repetition": {"min_count": 1048576, "min_tokens": 1048576, "min_match": 0},
              "near_repetition": {"min_match": 0}, "divergence": {"min_tokens": 1048576}}
}
JSON
}

# Does this gpuwarden take model.max_batch? (--check-config refuses unknown keys)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/secret.key"
gw_config 2 >"$tmp/probe.json"
if "$build/bin/gpuwarden" --check-config "$tmp/probe.json" >/dev/null 2>"$tmp/probe.err"; then
    has_batch=1
else
    has_batch=0
    gw_config "" >"$tmp/probe.json"
    "$build/bin/gpuwarden" --check-config "$tmp/probe.json" >/dev/null ||
        { echo "bench_batching: the bench config is refused:" >&2; cat "$tmp/probe.err" >&2; exit 1; }
fi
batch_for() { # N -> the max_batch value for the config, or ""
    [ "$has_batch" = 1 ] || { echo ""; return; }
    case "$max_batch" in n) echo "$1" ;; off) echo "" ;; *) echo "$max_batch" ;; esac
}

start_gw() { # CONFIG
    # sh execs the master: LISTEN_PID ($$) is its own pid
    sh -c 'export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"' sh "$build/bin/gpuwarden" -c "$1" \
        3<&9 9<&- 2>>"$out/gpuwarden.log" &
    pid=$!
    wait_ready "http://127.0.0.1:$gw_port/readyz"
}

start_llama() { # PORT PARALLEL
    # shellcheck disable=SC2086 # GW_LLAMA_ARGS: several options
    "$llama" -m "$model" --host 127.0.0.1 --port "$1" -t "$threads" -tb "$threads" \
        --parallel "$2" -c $(($2 * 512)) --cont-batching --no-cache-prompt --cache-ram 0 \
        --no-webui ${GW_LLAMA_ARGS:-} >>"$out/llama-server.log" 2>&1 9<&- &
    pid=$!
    wait_ready "http://127.0.0.1:$1/health"
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "bench_batching: mode $mode, gpuwarden $commit ($build), model $model, threads $threads"
echo "  llama-server: ${llama:-none} ($("$llama" --version 2>&1 | grep -m1 -i version || true))"
echo "  host: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); logs and JSON in $out"
if [ "$has_batch" = 1 ]; then
    echo "  gpuwarden accepts model.max_batch: set to ${max_batch/#n/N (the stream count)}"
else
    echo "  gpuwarden does not accept model.max_batch (--check-config: $(head -n 1 "$tmp/probe.err"))"
    echo "  -> gpuwarden runs as today: one generation per worker at a time"
fi

# One closed-loop run with gpuwarden-load: $1 target, $2 token (a JWT, or
# anything for llama-server, which ignores it), $3 streams, $4 requests,
# $5 max_tokens, $6 label ("" for a warm-up: nothing recorded), $7 the
# JSONL file. Each stream sends the next request as soon as the last
# ended, until $4 have been sent; the same prompt every time.
load_run() {
    python3 -c '
import json, sys
target, token, n, reqs, max_tokens = sys.argv[1:6]
print(json.dumps({
    "name": "batching", "target": target, "model": "smollm2", "seed": 1,
    "duration_s": 3600, "drain_s": 600, "max_requests": int(reqs),
    "prompts": {"animals": ["Here is a long numbered list of one hundred animals, one per "
                            "line, each with a short description:\n1."]},
    "classes": [{"name": "streams", "mode": "closed", "connections": int(n), "token": token,
                 "prompts": "animals", "max_tokens": int(max_tokens), "stream": True,
                 "timeout_s": 300}]}))' "$1" "$2" "$3" "$4" "$5" >"$tmp/batching.json"
    "$build/bin/gpuwarden-load" --quiet --json "$tmp/report.json" "$tmp/batching.json" \
        >"$tmp/load.out" 2>&1 || { cat "$tmp/load.out" >&2; return 1; }
    [ -z "$6" ] || python3 tests/bench/batching_table.py record "$tmp/report.json" "$6" "$3" "$7"
}

if [ "$mode" = batching ]; then
    json=$out/batching.jsonl
    : >"$json"
    for n in $streams; do
        reqs=${GW_REQUESTS:-$((2 * n > 8 ? 2 * n : 8))}
        for s in $servers; do
            if [ "$s" = gpuwarden ]; then
                mb=$(batch_for "$n")
                gw_config "$mb" >"$tmp/gw.json"
                start_gw "$tmp/gw.json"
                tok=$("$build/bin/gpuwarden-token" -c "$tmp/gw.json" --tenant bench --ttl 86400)
                target=127.0.0.1:$gw_port
                label=gpuwarden
            else
                port=$(free_port)
                start_llama "$port" "$n"
                tok=none
                target=127.0.0.1:$port
                label="llama-server"
            fi
            # one short request first: page in the model, warm the caches
            load_run "$target" "$tok" 1 1 8 "" "" || true
            load_run "$target" "$tok" "$n" "$reqs" "$max_tokens" "$label" "$json" || true
            stop
        done
    done
    echo
    python3 tests/bench/batching_table.py table "$json"
    exit 0
fi

# The dev config (its limits are what the scenarios are written for) for
# one worker of $threads threads, as DIR/gpuwarden.json. $1 DIR, $2
# max_batch and $3 priority_lead ("" leaves either out), $4 "light": the
# light-among-heavy tenants, on a plan without effective limits, and no
# watchdog kills (a greedy 135M model loops; a kill would end a stream).
dev_config() {
    GW_PORT=$gw_port GW_DIR=$1 GW_THREADS=$threads GW_MB=$2 GW_LEAD=$3 GW_LIGHT=${4:-} \
        GW_PIN=${GW_PIN_THREADS:-} python3 -c '
import json, os
e = os.environ
c = json.load(open("dist/gpuwarden.dev.json"))
c["listen"] = ["127.0.0.1:" + e["GW_PORT"]]
c["state_dir"] = e["GW_DIR"] + "/state"
c["admin"]["socket"] = e["GW_DIR"] + "/admin.sock"
c["workers"] = 1
c["model"]["threads"] = int(e["GW_THREADS"])
if e["GW_MB"]:
    c["model"]["max_batch"] = int(e["GW_MB"])
if e["GW_LEAD"]:
    c["model"]["priority_lead"] = int(e["GW_LEAD"])
if e["GW_PIN"]:
    c["model"]["pin_threads"] = e["GW_PIN"] == "true"
if e["GW_LIGHT"]:
    big = ["100000 per second burst 1000"]
    c["ip"]["rate"] = big
    c["global"] = {"rate": big, "budget": "1000 GPU-seconds per second", "max_inflight": 64}
    c["plans"]["batch"] = {"rate": big, "budget": "1000 GPU-seconds per second",
                           "max_inflight": 64, "max_tokens": 2048}
    c["tenants"] = {"heavy": {"plan": "batch"}, "light": {"plan": "batch"}}
    c["watchdog"] = {"repetition": {"min_count": 1048576, "min_tokens": 1048576, "min_match": 0},
                     "near_repetition": {"min_match": 0}, "divergence": {"min_tokens": 1048576}}
json.dump(c, open(e["GW_DIR"] + "/gpuwarden.json", "w"), indent=1)'
}

if [ "$mode" = light ]; then
    mkdir -p "$tmp/light"
    for round in $(seq "${GW_ROUNDS:-2}"); do
        for lead in ${GW_LEADS:-8 0}; do
            dev_config "$tmp/light" 8 "$lead" light
            rm -rf "$tmp/light/state"
            start_gw "$tmp/light/gpuwarden.json"
            json=$out/light-lead$lead-round$round.json
            "$build/bin/gpuwarden-load" --quiet --target "127.0.0.1:$gw_port" --ledger "" \
                --json "$json" dist/scenarios/light-among-heavy.json >/dev/null || true
            stop
            echo "== priority_lead $lead, round $round"
            python3 - "$json" <<'PY'
import json, sys
for c in json.load(open(sys.argv[1]))["classes"]:
    t = c["ttft_ok"]
    print(f"  {c['name']:13} sent {c['sent']:4} 200 {c['outcomes']['200']:4} "
          f"{c['tokens_per_s']:7.1f} tok/s  TTFT p50 {t.get('p50_ms', 0):6.1f} "
          f"p90 {t.get('p90_ms', 0):6.1f} p99 {t.get('p99_ms', 0):6.1f} ms")
PY
        done
    done
    exit 0
fi

# isolation: the scenario as docs/BENCHMARKS.md runs it, then llama-server;
# GW_ROUNDS rounds of each, alternated, every round a fresh server
scen=dist/scenarios/isolation.json
if [ "${GW_ISO_ATTACK:-1}" = 0 ]; then
    # the control: the same seeded schedules of the legitimate classes,
    # without the attack, so their refusals and latencies are their own
    scen=$tmp/isolation-control.json
    python3 - dist/scenarios/isolation.json "$scen" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
s["classes"] = [c for c in s["classes"] if c["name"].startswith("legit-")]
s["thresholds"] = [t for t in s["thresholds"] if t.get("class", "legit-").startswith("legit-")]
s["name"] += "-control"
json.dump(s, open(sys.argv[2], "w"), indent=1)
PY
fi
for round in $(seq "${GW_ROUNDS:-1}"); do
    for s in $servers; do
        tag=$s-r$round
        if [ "$s" = gpuwarden ]; then
            mb=$(batch_for "$iso_batch")
            rm -rf "$tmp/iso"
            mkdir -p "$tmp/iso"
            dev_config "$tmp/iso" "$mb" "${GW_PRIORITY_LEAD:-}"
            start_gw "$tmp/iso/gpuwarden.json"
            echo
            echo "== round $round: gpuwarden (dev config, 1 worker, $threads threads${mb:+, max_batch $mb})"
            "$build/bin/gpuwarden-load" --quiet --target "127.0.0.1:$gw_port" \
                --ledger "$tmp/iso/state/ledger" --admin "$tmp/iso/admin.sock" \
                --timeline "$out/isolation-$tag.csv" --json "$out/isolation-$tag.json" "$scen" |
                tee "$out/isolation-$tag.txt" ||
                echo "(gpuwarden-load exit status $?: thresholds, as in docs/BENCHMARKS.md)"
            stop
        else
            port=$(free_port)
            start_llama "$port" "$iso_batch"
            echo
            echo "== round $round: llama-server (-t $threads --parallel $iso_batch -c $((iso_batch * 512)); no auth: tokens ignored)"
            "$build/bin/gpuwarden-load" --quiet --target "127.0.0.1:$port" --ledger "" \
                --timeline "$out/isolation-$tag.csv" --json "$out/isolation-$tag.json" "$scen" |
                tee "$out/isolation-$tag.txt" || echo "(gpuwarden-load exit status $?: thresholds)"
            stop
        fi
    done
done
echo
# shellcheck disable=SC2086 # one argument per server
python3 tests/bench/isolation_summary.py "$out" "${GW_ROUNDS:-1}" $servers
