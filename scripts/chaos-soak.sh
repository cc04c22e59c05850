#!/usr/bin/env bash
# scripts/chaos-soak.sh [--duration S] [--interval S] [--build DIR] [--rate-scale X]
#                       [--seed N] [--keep]
#
# Chaos soak (issue 9). Starts gpuwarden (the dev config on a free port and a
# fresh state_dir, loopback only) and runs the isolation scenario's load
# against it with gpuwarden-load for --duration seconds (default 600), every
# class for the whole run. Meanwhile it SIGKILLs a random child of the
# master (a front or a worker) every --interval seconds (default 2), and
# once, halfway, SIGKILLs the master itself and restarts it the way systemd
# would (dist/gpuwarden.service: Restart=on-failure, RestartSec=2s,
# KillMode=mixed): the children die with it (PR_SET_PDEATHSIG; anything
# left is SIGKILLed, as systemd does to the unit's cgroup), 2 s later the
# same binary starts on the same config and the same ledger file.
#
# Then it checks, and says for each check what it saw:
#  1. every client request got a response or a connection error: for every
#     class, the outcomes add up to the requests sent, none that was sent
#     went unanswered for its timeout (30 s) and none was still unfinished
#     when the load's drain time ran out (a request whose connect never
#     completed within the timeout counts as a connection error, and the
#     summary gives their number);
#  2. conservation for every budget account, after the load (gpuwarden-load
#     maps the segment and runs gw_ledger_check) and once the node is idle
#     (the admin socket's status.ledger_conserved);
#  3. no slot is owned by a dead process (gpuwarden-load walks the slots
#     after the run), and once idle no request is left at all (admin
#     `requests` is empty, in_flight 0, queue 0);
#  4. budgets spent before the master's death are still spent after it: for
#     every tenant, used_us after the restart >= used_us just before the
#     kill, and the budget left after the restart is at most what was left
#     before plus the refill over the gap plus the reservations then held
#     (which the repair may refund); and over the whole run no tenant spent
#     beyond its budget plus one step per in-flight request
#     (gpuwarden-load's budget check through the admin socket);
#  5. after all that, every front and worker is running again.
#
# Exit: 0 every check held, 1 a check failed (the summary says which), 77
# the model is missing (ctest: skipped), 100 misuse, 111 the service or the
# load could not start. The work directory (/tmp/gw-chaos-*: config, logs,
# report.json, summary.txt) is removed on success unless --keep.
set -uo pipefail
# The listening socket: bound to port 0 once and held as fd 9 for the whole
# run (tests/common/hold-listen-socket runs this script again with it); every
# master incarnation gets it as fd 3 by socket activation, as under systemd.
# No port is guessed free, and a restarted master serves the same socket.
[ -n "${GW_TEST_LISTEN_PORT:-}" ] ||
    exec "$(dirname "$0")/../tests/common/hold-listen-socket" bash "$0" "$@"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

duration=600 interval=2 build=$root/build rate_scale=1 keep=0 seed=${RANDOM}
while [ $# -gt 0 ]; do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --rate-scale) rate_scale=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "chaos-soak: unknown argument $1 (see --help)" >&2; exit 100 ;;
    esac
done
case $duration$interval$seed in *[!0-9]*) echo "chaos-soak: --duration, --interval and --seed take whole numbers" >&2; exit 100 ;; esac
[ "$duration" -ge 10 ] || { echo "chaos-soak: --duration must be at least 10 s" >&2; exit 100; }
[ "$interval" -ge 1 ] || { echo "chaos-soak: --interval must be at least 1 s" >&2; exit 100; }
RANDOM=$seed

gw=$build/bin/gpuwarden
ctl=$build/bin/gpuwardenctl
load=$build/bin/gpuwarden-load
model=$root/models/SmolLM2-135M-Instruct.Q4_1.gguf
for b in "$gw" "$ctl" "$load" "$build/bin/gpuwarden-worker"; do
    [ -x "$b" ] || { echo "chaos-soak: $b missing (build first: cmake --build $build)" >&2; exit 111; }
done
if [ ! -r "$model" ]; then
    echo "chaos-soak: skipped: $model missing (scripts/fetch-model.sh)"
    exit 77
fi

dir=$(mktemp -d /tmp/gw-chaos-XXXXXX)
sock=$dir/admin.sock
state=$dir/state
log=$dir/gpuwarden.log
summary=$dir/summary.txt
tenants=(acme beta mallory sponger quitter)
mpid=0 lpid=0
failures=0

say() { echo "chaos-soak: $*" | tee -a "$summary"; }
check() { # name, 0|1 (held), detail
    if [ "$2" = 1 ]; then say "ok    $1: $3"; else say "FAIL  $1: $3"; failures=$((failures + 1)); fi
}
cleanup() {
    [ "$lpid" -gt 0 ] && kill -0 "$lpid" 2>/dev/null && kill -KILL "$lpid" 2>/dev/null
    if [ "$mpid" -gt 0 ] && kill -0 "$mpid" 2>/dev/null; then
        kill -TERM "$mpid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$mpid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$mpid" 2>/dev/null && kill -KILL "$mpid" 2>/dev/null
    fi
}
trap cleanup EXIT

port=$GW_TEST_LISTEN_PORT

# The dev config with this run's port, state_dir, socket and absolute paths;
# the isolation scenario with every class on for the whole run and no
# latency thresholds (what this run checks is below, not latency).
python3 - "$root" "$dir" "$port" "$model" <<'EOF' || { echo "chaos-soak: cannot write the config" >&2; exit 111; }
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
s = json.load(open(f"{root}/dist/scenarios/isolation.json"))
s["name"] = "chaos-soak"
s["description"] = "isolation.json with every class for the whole run (scripts/chaos-soak.sh)"
s["auth"]["secret_file"] = f"{root}/dist/dev-secret.key"
s["max_requests"] = 1000000
s["drain_s"] = 45  # the slow-body class's timeout_s is 40: let its last requests end
s["classes"] = [k for k in s["classes"] if not k["name"].endswith("-calm")]
for k in s["classes"]:
    k.pop("start_s", None); k.pop("stop_s", None)
    k["name"] = k["name"].replace("-attacked", "")
s["thresholds"] = [{"metric": "ledger_conserved", "min": 1}, {"metric": "budgets_kept", "min": 1}]
json.dump(s, open(f"{d}/scenario.json", "w"), indent=1)
EOF

# jq is not a dependency: python3 reads the admin socket's JSON.
status_json() { "$ctl" -s "$sock" --json status 2>/dev/null; }
jfield() { # json-text, python expression over `o`
    python3 -c 'import json,sys; o=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null
}

start_master() {
    # sh execs the master: LISTEN_PID ($$) is the master's own pid
    sh -c 'export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"' sh "$gw" -c "$dir/gpuwarden.json" \
        3<&9 9<&- >>"$log" 2>&1 &
    mpid=$!
    local s
    for _ in $(seq 1 300); do
        s=$(status_json) && [ "$(jfield "$s" 'o["workers"]["ready"] >= o["workers"]["configured"] and o["fronts"]["running"] >= o["fronts"]["configured"]')" = True ] && return 0
        kill -0 "$mpid" 2>/dev/null || { echo "chaos-soak: the master exited; $log:" >&2; tail -n 20 "$log" >&2; return 1; }
        sleep 0.2
    done
    echo "chaos-soak: the master was not ready within 60 s; $log:" >&2
    tail -n 20 "$log" >&2
    return 1
}

children() { cat /proc/"$mpid"/task/*/children 2>/dev/null; }

# tenant.show figures: "used reserved refunded left in_flight asked_us
# answered_us refill_us_per_s" (the wall clock around the question, and the
# plan's budget refill rate in us per second).
tenant_figs() {
    local j t0 t1
    t0=$(date +%s%6N)
    j=$("$ctl" -s "$sock" --json tenant show "$1" 2>/dev/null) || { echo "0 0 0 0 0 0 0 0"; return; }
    t1=$(date +%s%6N)
    jfield "$j" '"%d %d %d %d %d %s %s %d" % (o["budget"]["used_us"], o["budget"]["reserved_us"], o["budget"]["refunded_us"], o["budget"]["left_us"] or 0, o["in_flight"], "'"$t0"'", "'"$t1"'", int(float(o["plan"]["budget"].split()[0]) * 1e6 / {"second":1,"minute":60,"hour":3600,"day":86400}[o["plan"]["budget"].split()[3]]) + 1)'
}

say "work dir $dir, port $port, ${duration} s, a child every ${interval} s, seed $seed"
start_master || exit 111
"$load" --target "127.0.0.1:$port" --ledger "$state/ledger" --admin "$sock" --json "$dir/report.json" \
    --timeline "$dir/timeline.csv" --duration "$duration" --rate-scale "$rate_scale" --quiet \
    "$dir/scenario.json" >"$dir/load.out" 2>&1 &
lpid=$!
# Fronts running, sampled twice a second (s from the load's start; -1 while
# the admin socket does not answer: the master is down), so unanswered
# requests can be set against the times no front was there to answer.
(
    ts=$(date +%s%N)
    while kill -0 "$lpid" 2>/dev/null; do
        f=$("$ctl" -s "$sock" --json status 2>/dev/null | sed -n 's/.*"fronts":{"running":\([0-9]*\).*/\1/p')
        echo "$((($(date +%s%N) - ts) / 1000000)),${f:--1}"
        sleep 0.5
    done
) >"$dir/fronts.csv" &
spid=$!

t0=$(date +%s)
half=$((duration / 2))
kills_front=0 kills_worker=0 master_killed=0
declare -A before_used before_left before_held before_at
budget_ok=1 budget_detail=""
while :; do
    sleep "$interval"
    now=$(date +%s)
    [ $((now - t0)) -ge "$duration" ] && break
    kill -0 "$lpid" 2>/dev/null || break
    if [ "$master_killed" = 0 ] && [ $((now - t0)) -ge "$half" ]; then
        for t in "${tenants[@]}"; do
            read -r u r f l _ ta _ _ < <(tenant_figs "$t")
            before_used[$t]=$u before_left[$t]=$l before_held[$t]=$((r - u - f)) before_at[$t]=$ta
        done
        kids=$(children)
        tk=$(date +%s%N)
        kill -KILL "$mpid"
        wait "$mpid" 2>/dev/null
        # PR_SET_PDEATHSIG takes the children; what is left after 1 s gets
        # SIGKILL, as systemd's KillMode=mixed does to the cgroup.
        sleep 1
        for k in $kids; do kill -0 "$k" 2>/dev/null && kill -KILL "$k" 2>/dev/null; done
        sleep 2 # RestartSec=2s
        say "master $mpid SIGKILLed at $((now - t0)) s (children: $(echo $kids | wc -w)); restarting"
        start_master || { say "FAIL  master restart: not ready"; exit 1; }
        tr=$(date +%s%N)
        master_killed=1
        gap_us=$(((tr - tk) / 1000))
        for t in "${tenants[@]}"; do
            read -r u r f l _ _ tb rate < <(tenant_figs "$t")
            # left may grow by the refill between the two readings (the
            # plan's rate) and by the refunds of what was held at the first
            # reading; anything more would mean the restart forgot spending.
            refill=$(((tb - before_at[$t]) * rate / 1000000 + 1))
            max_left=$((before_left[$t] + refill + before_held[$t] + 2))
            if [ "$u" -lt "${before_used[$t]}" ] || [ "$l" -gt "$max_left" ]; then
                budget_ok=0
            fi
            budget_detail+="$t used ${before_used[$t]} -> $u us, left ${before_left[$t]} -> $l us (at most $max_left); "
        done
        say "master restarted (pid $mpid) $((gap_us / 1000)) ms after the kill"
        continue
    fi
    kids=($(children))
    [ ${#kids[@]} -gt 0 ] || continue
    v=${kids[$((RANDOM % ${#kids[@]}))]}
    what=worker
    tr '\0' ' ' <"/proc/$v/cmdline" 2>/dev/null | grep -q -- '--front' && what=front
    if kill -KILL "$v" 2>/dev/null; then
        if [ "$what" = front ]; then kills_front=$((kills_front + 1)); else kills_worker=$((kills_worker + 1)); fi
    fi
done
say "chaos over after $(($(date +%s) - t0)) s: $kills_front fronts and $kills_worker workers SIGKILLed, master killed $master_killed time(s)"

# The load stops by itself (its duration, then its drain time); give it that
# and a margin, or it hung.
for _ in $(seq 1 $(((40 + 60) * 5))); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$lpid" 2>/dev/null; then
    kill -KILL "$lpid"
    check "load finished" 0 "gpuwarden-load did not stop within its drain time + 60 s"
fi
wait "$lpid"
lrc=$?
lpid=0
wait "$spid" 2>/dev/null
cat "$dir/load.out" >>"$summary"
[ -s "$dir/report.json" ] || { check "load report" 0 "no $dir/report.json (gpuwarden-load exit $lrc)"; exit 1; }

# 1. every request answered or refused at the connection. gpuwarden-load
# tells apart a request sent and never answered within its class's timeout
# (30 s; "timeout": a hung client, must not happen) from one it could not
# send within that time because its connect never completed or every
# connection of its class was pending ("not_sent": what a client sees as a
# connect timeout, a connection error; it happens while no front accepts,
# during the master's restart or a front's respawn backoff).
res=$(python3 - "$dir/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
bad, sent, answered, conn, ns = [], 0, 0, 0, 0
for c in r["classes"]:
    o = c["outcomes"]
    total = sum(o.values())
    sent += c["sent"]
    conn += o["conn_error"]
    ns += o["not_sent"]
    answered += total - o["conn_error"] - o["not_sent"] - o["timeout"] - o["unfinished"]
    if total != c["sent"] or o["timeout"] or o["unfinished"]:
        bad.append("%s: sent %d, outcomes %d, timeout %d, unfinished %d" % (c["name"], c["sent"], total, o["timeout"], o["unfinished"]))
print(1 if not bad else 0, "%d requests: %d answered, %d connection errors, %d never connected within 30 s%s" % (sent, answered, conn, ns, ("; " + "; ".join(bad)) if bad else "; none sent and left unanswered, none unfinished"))
EOF
)
check "every request answered or a connection error" "${res%% *}" "${res#* }"
# Where the unanswered ones were: a request sent and left unanswered whose
# wait (intended time to intended + 30 s) saw a moment with no front running.
say "fronts: $(python3 - "$dir/timeline.csv" "$dir/fronts.csv" <<'EOF'
import csv, sys
fr = [(int(t) / 1000.0, int(n)) for t, n in (l.strip().split(",") for l in open(sys.argv[2]) if l.strip())]
down = sum(1 for _, n in fr if n == 0)
mdown = sum(1 for _, n in fr if n < 0)
tot = nofront = 0
for r in csv.DictReader(open(sys.argv[1])):
    if r["outcome"] != "timeout":
        continue
    tot += 1
    t = float(r["intended_s"])
    if any(n <= 0 for ts, n in fr if t <= ts <= t + 30):
        nofront += 1
print("%d of %d samples (every 0.5 s) saw no front running and %d no master; %d of the %d requests sent and left unanswered for 30 s waited through such a moment" % (down, len(fr), mdown, nofront, tot))
EOF
)"

# 2-3. ledger, slots and budgets as gpuwarden-load saw them after the run
res=$(python3 - "$dir/report.json" <<'EOF'
import json, sys
l = json.load(open(sys.argv[1]))["ledger"]
print(1 if l["checked"] and l["conserved"] else 0, "conserved" if l["conserved"] else "NOT conserved: " + l["detail"])
print(1 if l["slots_checked"] and l["slots_dead_owner"] == 0 else 0, "%d of %d slots in use, %d owned by a dead process %s" % (l["slots_busy"], l["slots"], l["slots_dead_owner"], l["slots_detail"]))
print(1 if l["budgets_checked"] == 5 and l["budgets_over"] == 0 else 0, "%d tenants judged, %d over (step %g ms) %s" % (l["budgets_checked"], l["budgets_over"], l["budget_step_ms"], l["budget_detail"]))
EOF
)
{
    read -r ok rest; check "ledger conserved after the load (segment)" "$ok" "$rest"
    read -r ok rest; check "no slot owned by a dead process after the load" "$ok" "$rest"
    read -r ok rest; check "no tenant over its budget over the run" "$ok" "$rest"
} <<<"$res"

# 4. the master's death
if [ "$master_killed" = 1 ]; then
    check "budgets spent before the master's death still spent after it" "$budget_ok" "$budget_detail"
else
    check "master killed and restarted" 0 "the load ended before halfway"
fi

# Idle: nothing in flight, nothing queued, every slot free, conserved.
idle=0
for _ in $(seq 1 200); do
    s=$(status_json) && [ "$(jfield "$s" 'o["in_flight"] == 0 and o["queue_depth"] == 0 and o["running"] == 0')" = True ] && { idle=1; break; }
    sleep 0.2
done
s=$(status_json)
rq=$("$ctl" -s "$sock" --json requests 2>/dev/null)
nreq=$(jfield "$rq" 'len(o["requests"])')
check "idle afterwards: no request left in any slot" "$([ "$idle" = 1 ] && [ "$nreq" = 0 ] && echo 1 || echo 0)" \
    "in_flight $(jfield "$s" 'o["in_flight"]'), queue $(jfield "$s" 'o["queue_depth"]'), requests listed $nreq"
check "ledger conserved once idle (admin status)" "$([ "$(jfield "$s" 'o["ledger_conserved"]')" = True ] && echo 1 || echo 0)" \
    "totals $(jfield "$s" 'o["totals"]'), restarts $(jfield "$s" 'o["restarts"]')"
check "every front and worker running again" \
    "$([ "$(jfield "$s" 'o["fronts"]["running"] == o["fronts"]["configured"] and o["workers"]["ready"] == o["workers"]["configured"]')" = True ] && echo 1 || echo 0)" \
    "fronts $(jfield "$s" 'o["fronts"]'), workers $(jfield "$s" 'o["workers"]')"
if [ "$lrc" -ne 0 ]; then
    check "gpuwarden-load's own checks" 0 "exit $lrc (see $dir/load.out)"
fi

if [ "$failures" -gt 0 ]; then
    say "$failures check(s) FAILED; kept $dir (gpuwarden.log, load.out, report.json)"
    exit 1
fi
say "all checks held"
cleanup
mpid=0
[ "$keep" = 1 ] && say "kept $dir" || rm -rf "$dir"
exit 0
