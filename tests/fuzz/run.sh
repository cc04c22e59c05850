#!/usr/bin/env bash
# tests/fuzz/run.sh [seconds] [target ...] - builds the libFuzzer targets
# (clang, GW_FUZZ=ON, in $GW_FUZZ_BUILD, default build-fuzz/) and runs each
# for `seconds` on its committed corpus, $GW_FUZZ_JOBS (default 2) targets
# at a time, each libFuzzer process on one core: the nine targets take
# 5 x `seconds` on two cores. Without `seconds` (or with 0), each gets
# $GW_FUZZ_BUDGET (default 200, what CI gives the whole step) divided by
# the number of rounds, at most 60: 40 s for nine targets on two cores.
# Each target's
# line is printed as it finishes. New inputs go to a scratch corpus, not
# into the tree.
# A crash or broken contract leaves its input in
# $GW_FUZZ_OUT/<target>/crash-* (default build-fuzz/fuzz-out); copy it to
# tests/fuzz/crashes/<target>/ once fixed, so the replay test keeps it fixed.
# Exit: 0 every target ran clean, 1 a target found something, 100 misuse,
# 111 the build failed.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-0}
[ $# -gt 0 ] && shift
budget=${GW_FUZZ_BUDGET:-200}
jobs=${GW_FUZZ_JOBS:-2}
case $secs$budget$jobs in *[!0-9]*) echo "usage: $0 [seconds] [target ...]" >&2; exit 100 ;; esac
[ "$jobs" -ge 1 ] || { echo "$0: GW_FUZZ_JOBS must be at least 1" >&2; exit 100; }
targets=${*:-http request_json jwt asked config gguf tokenizer fwd jwks}
if [ "$secs" -eq 0 ]; then
    n=$(echo $targets | wc -w)
    secs=$((budget / ((n + jobs - 1) / jobs)))
    [ "$secs" -le 60 ] || secs=60
    [ "$secs" -ge 1 ] || secs=1
fi
build=${GW_FUZZ_BUILD:-$root/build-fuzz}
out=${GW_FUZZ_OUT:-$build/fuzz-out}

if [ ! -f "$build/CMakeCache.txt" ]; then
    CC=clang cmake -S "$root" -B "$build" -DGW_CUDA=OFF -DGW_FUZZ=ON >/dev/null || exit 111
fi
for t in $targets; do
    cmake --build "$build" -j "$jobs" --target "fuzz_$t" >/dev/null || exit 111
done

run_one() { # target: runs it, prints its line, exits 0 clean / 1 found something
    local t=$1
    mkdir -p "$out/$t/corpus"
    # the GGUF loader must refuse without over-allocating: tight limits
    local limits="-rss_limit_mb=2048"
    [ "$t" = gguf ] && limits="-rss_limit_mb=512 -malloc_limit_mb=256"
    local log="$out/$t/log"
    "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 $limits \
        -artifact_prefix="$out/$t/" "$out/$t/corpus" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1
    local rc=$?
    local execs cov
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1 ft \2/p')
    if [ $rc -eq 0 ]; then
        echo "fuzz_$t: ${secs}s, ${execs:-?} execs, ${cov:-?}: clean"
        return 0
    fi
    echo "fuzz_$t: FOUND SOMETHING (exit $rc): see $log and $out/$t/" >&2
    return 1
}

status=0 running=0
start=$(date +%s)
for t in $targets; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
echo "fuzz: $(echo $targets | wc -w) targets, ${secs}s each, $jobs at a time: $(($(date +%s) - start)) s"
exit $status
