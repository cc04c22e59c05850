#!/usr/bin/env bash
# bench_step_ab.sh - two (or more) bench_step binaries alternated, for a
# before/after comparison on a noisy machine: each round runs every binary
# once (B = 1 and 8, 64 steps), and the end prints per binary the fastest
# and the median step at B = 1 and at B = 8 over the rounds.
#
#   tests/bench/bench_step_ab.sh THREADS ROUNDS BIN_A BIN_B [BIN...]
#
# Build each binary from its commit (e.g. `git worktree add /tmp/a
# <commit>`, configure, `cmake --build ... --target bench_step`, copy
# build/tests/bench/bench_step away). GW_MODEL names the GGUF (default
# models/SmolLM2-135M-Instruct.Q4_1.gguf). A benchmark: it asserts nothing.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 THREADS ROUNDS BIN_A BIN_B [BIN...]" >&2
    exit 2
fi
threads=$1 rounds=$2
shift 2
model=${GW_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
for r in $(seq "$rounds"); do
    for b in "$@"; do
        "$b" "$model" "$threads" 64 1 8 | awk -v b="$b" '/^step total/ { print b, $3, $4 }'
    done
done | python3 -c '
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in sys.stdin:
    b, one, eight = line.split()
    runs[b].append((float(one), float(eight)))
for b, v in runs.items():
    one = [x for x, _ in v]
    eight = [y for _, y in v]
    print(f"{b}: B=1 fastest {min(one):.3f} median {statistics.median(one):.3f} ms, "
          f"B=8 fastest {min(eight):.3f} median {statistics.median(eight):.3f} ms "
          f"({len(v)} rounds)")
'
