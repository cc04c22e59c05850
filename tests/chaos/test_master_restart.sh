#!/usr/bin/env bash
# tests/chaos/test_master_restart.sh BUILD_DIR - the master SIGKILLed while a
# worker runs a request, then restarted on the same config and ledger, four
# times in a row. After each restart the master must have repaired the dead
# worker's lane (its log says "repaired, 1 slot failed"), no request may be
# left in a slot, the tenant's in-flight count must be back to 0 and the
# ledger conserved; and the fourth restart must still find a free lane
# (the dev config has fronts + workers + 8 = 11 lanes; before the fix every
# crash leaked the dead processes' lanes and the third restart failed).
# The client of the killed request gets a connection error, not a hang.
# Deterministic counterpart of the chaos soak's master kill. Exit 0 pass,
# 1 fail, 77 no model (skipped).
set -uo pipefail
# The listening socket: bound to port 0 once, held as fd 9 for the whole run
# (tests/common/hold-listen-socket runs this script again with it) and
# handed to every master incarnation as fd 3 by socket activation
# (LISTEN_FDS=1, LISTEN_PID), as systemd does. No port is guessed free, and
# a restarted master serves the same socket.
[ -n "${GW_TEST_LISTEN_PORT:-}" ] ||
    exec "$(dirname "$0")/../common/hold-listen-socket" bash "$0" "$@"
port=$GW_TEST_LISTEN_PORT
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
cd "$root"
gw=$build/bin/gpuwarden ctl=$build/bin/gpuwardenctl tok=$build/bin/gpuwarden-token
model=$root/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -r "$model" ] || { echo "skipped: $model missing"; exit 77; }
dir=$(mktemp -d /tmp/gw-mrestart-XXXXXX)
sock=$dir/admin.sock log=$dir/gpuwarden.log
mpid=0 cpid=0
fail() { echo "FAIL: $*"; echo "--- $log"; tail -n 30 "$log"; for f in "$dir"/client.*; do echo "--- $f"; tail -c 600 "$f"; echo; done; exit 1; }
cleanup() {
    [ "$cpid" -gt 0 ] && kill -KILL "$cpid" 2>/dev/null
    if [ "$mpid" -gt 0 ] && kill -0 "$mpid" 2>/dev/null; then
        kill -TERM "$mpid"
        for _ in $(seq 1 100); do kill -0 "$mpid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$mpid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
python3 - "$root" "$dir" "$port" "$model" <<'EOF' || exit 1
import json, sys
root, d, port, model = sys.argv[1:5]
c = json.load(open(f"{root}/dist/gpuwarden.dev.json"))
c["listen"] = [f"127.0.0.1:{port}"]
c["state_dir"] = f"{d}/state"
c["admin"]["socket"] = f"{d}/admin.sock"
c["model"]["path"] = model
c["model"]["device"] = "cpu"
c["auth"]["keys"][0]["secret_file"] = f"{root}/dist/dev-secret.key"
json.dump(c, open(f"{d}/gpuwarden.json", "w"), indent=1)
EOF
jfield() { python3 -c 'import json,sys; o=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
start() {
    # sh execs the master: LISTEN_PID ($$) is the master's own pid
    sh -c 'export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"' sh "$gw" -c "$dir/gpuwarden.json" \
        3<&9 9<&- >>"$log" 2>&1 &
    mpid=$!
    for _ in $(seq 1 300); do
        s=$("$ctl" -s "$sock" --json status 2>/dev/null) &&
            [ "$(jfield "$s" 'o["workers"]["ready"] == 1 and o["fronts"]["running"] == 2')" = True ] && return 0
        kill -0 "$mpid" 2>/dev/null || fail "the master exited at start"
        sleep 0.2
    done
    fail "not ready within 60 s"
}
token=$("$tok" -c "$dir/gpuwarden.json" --tenant acme --ttl 3600) || fail "gpuwarden-token"
start
grep -q 'socket activation: 1 listening socket' "$log" || fail "the master did not take the socket it was given"
for round in 1 2 3 4; do
    # A generation, frozen while it runs: the worker is SIGSTOPped once its
    # slot is RUNNING (a greedy answer may otherwise end before the kill),
    # and the master's death takes it (SIGKILL reaches a stopped process).
    frozen=0
    for try in 1 2 3 4 5; do
        curl -sN --max-time 120 -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
            -d '{"prompt":"Once upon a time, in a land far away,","max_tokens":2000,"stream":true}' \
            "http://127.0.0.1:$port/v1/generate" >"$dir/client.$round" 2>&1 &
        cpid=$!
        wpid=$(jfield "$("$ctl" -s "$sock" --json workers)" 'o["workers"][0]["pid"]')
        for _ in $(seq 1 300); do
            rq=$("$ctl" -s "$sock" --json requests 2>/dev/null)
            [ "$(jfield "$rq" 'sum(1 for r in o["requests"] if r["state"] == "running")')" = 1 ] && break
            sleep 0.02
        done
        kill -STOP "$wpid"
        rq=$("$ctl" -s "$sock" --json requests 2>/dev/null)
        if [ "$(jfield "$rq" 'sum(1 for r in o["requests"] if r["state"] == "running")')" = 1 ]; then
            frozen=1
            break
        fi
        kill -CONT "$wpid" # it finished first: again
        wait "$cpid"
    done
    [ "$frozen" = 1 ] || fail "round $round: could not catch the request running in 5 tries"
    kill -KILL "$mpid"
    wait "$mpid" 2>/dev/null
    sleep 1 # the children follow by PR_SET_PDEATHSIG
    before=$(grep -c 'repaired, 1 slot failed' "$log")
    start
    after=$(grep -c 'repaired, 1 slot failed' "$log")
    [ "$after" -gt "$before" ] || fail "round $round: the restart did not fail the dead worker's slot"
    grep -q 'repair failed' "$log" && fail "round $round: a lane repair failed"
    rq=$("$ctl" -s "$sock" --json requests) || fail "requests"
    [ "$(jfield "$rq" 'len(o["requests"])')" = 0 ] || fail "round $round: requests left: $rq"
    s=$("$ctl" -s "$sock" --json status)
    [ "$(jfield "$s" 'o["in_flight"] == 0 and o["ledger_conserved"]')" = True ] ||
        fail "round $round: status $s"
    t=$("$ctl" -s "$sock" --json tenant show acme)
    [ "$(jfield "$t" 'o["in_flight"]')" = 0 ] || fail "round $round: acme still in flight: $t"
    for _ in $(seq 1 50); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$cpid" 2>/dev/null && fail "round $round: the client of the killed request still hangs"
    wait "$cpid"
    cpid=0
    echo "round $round: master killed mid-generation, restarted: slot failed and freed, in flight 0, conserved"
done
echo "pass"
