#!/usr/bin/env bash
# check_layout.sh SRC SUPERVISOR-BINARY... -- WORKER-BINARY
# Fails (exit 1, naming the culprit) when supervisor/ includes a worker,
# engine or CUDA header, when a supervisor-side binary carries an engine,
# worker or CUDA symbol or loads a CUDA library, or when the worker binary
# lacks the engine (so the symbol patterns below are known to match).
set -euo pipefail
src=$1; shift
sup=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sup+=("$1"); shift; done
shift
worker=$1
fail=0

# Symbols that only the worker side may carry: the engine's entry points,
# the worker process, the output guard and anything from the CUDA runtime.
forbidden='^(gw_(model|ctx|tokenizer|tok_decoder|gguf|generate|chat|sampler|repeat|quant|matvec|cuda|worker_main|guard)_?[a-z_]*|cuda[A-Z_][A-Za-z_]*|__cuda[A-Za-z_]*)$'

hits=$(grep -rnE '#include[[:space:]]*"(gw_engine|gw_worker|engine|gw_cuda)\.h"' "$src/supervisor" || true)
if [ -n "$hits" ]; then
    echo "layout: supervisor/ includes a worker, engine or CUDA header:"
    echo "$hits"
    fail=1
fi

for bin in "${sup[@]}"; do
    syms=$(nm -g --defined-only "$bin" 2>/dev/null | awk '{print $NF}' | grep -E "$forbidden" || true)
    if [ -n "$syms" ]; then
        echo "layout: $(basename "$bin") carries engine/worker/CUDA symbols:"
        echo "$syms" | head -20
        fail=1
    fi
    case "$bin" in
    *.a) ;;
    *)
        libs=$(ldd "$bin" 2>/dev/null | grep -iE 'libcuda|libcudart|libcublas' || true)
        if [ -n "$libs" ]; then
            echo "layout: $(basename "$bin") loads CUDA: $libs"
            fail=1
        fi
        ;;
    esac
done

# The patterns must be able to fail: the worker has to match them.
# (nm's whole output is read first: grep -q closing the pipe early would
# kill nm with SIGPIPE, which pipefail reports as a failure.)
worker_syms=$(nm -g --defined-only "$worker" | awk '{print $NF}')
for want in gw_model_load gw_tokenizer_load gw_worker_main gw_guard_feed; do
    if ! grep -qx "$want" <<<"$worker_syms"; then
        echo "layout: $(basename "$worker") lacks $want: the check would prove nothing"
        fail=1
    fi
done
if [ "$fail" = 0 ]; then
    echo "layout: ${#sup[@]} supervisor-side files free of engine, worker and CUDA code"
fi
exit $fail
