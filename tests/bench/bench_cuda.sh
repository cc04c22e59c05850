#!/usr/bin/env bash
# bench_cuda.sh - the CUDA engine's speed (issue 6): decode tokens/s at
# batch 1 with the decode step replayed as a CUDA graph and with its kernels
# launched one by one, and prefill tokens/s for a 512-token prompt.
#
#   tests/bench/bench_cuda.sh [MODEL] [DEVICE]
#
# MODEL defaults to models/SmolLM2-135M-Instruct.Q4_1.gguf, DEVICE to
# cuda:0; GW_BIN names gpuwarden-generate (default build/worker/...),
# GW_RUNS the repetitions (default 3). Prints gpuwarden-generate's summary
# line for each run: "prompt: N tokens in X ms (R tok/s); decode: ...".
# A benchmark, not a test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
dev=${2:-cuda:0}
bin=${GW_BIN:-build/bin/gpuwarden-generate}
runs=${GW_RUNS:-3}
# 512 prompt ids spread over the vocabulary (deterministic), and a 1-token
# prompt for decoding from an almost empty cache.
ids512=$(seq 512 | awk '{ printf "%d ", 100 + ($1 * 7919) % 48000 }')
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
fi
for r in $(seq "$runs"); do
    for graph in "" "--no-graph"; do
        echo "run $r, prompt 512, decode 256 ${graph:-(graph)}:"
        "$bin" -m "$model" --device "$dev" --ids "$ids512" -n 256 --temp 0 $graph 2>&1 >/dev/null |
            grep -E '^(prompt|gpuwarden-generate)'
        echo "run $r, prompt 1, decode 256 ${graph:-(graph)}:"
        "$bin" -m "$model" --device "$dev" --ids "1" -n 256 --temp 0 $graph 2>&1 >/dev/null |
            grep -E '^(prompt|gpuwarden-generate)'
    done
done
