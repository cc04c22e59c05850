#!/usr/bin/env bash
# build-llama-server.sh - builds llama.cpp's llama-server and llama-bench for
# the side-by-side benchmarks (tests/bench/bench_batching.sh), from the
# llama.cpp sources vendored in the llama-cpp-python sdist on PyPI.
# Bench-only: nothing in CMakeLists.txt or scripts/test.sh calls it, and no
# llama.cpp code is copied into this repository.
#
#   tests/bench/build-llama-server.sh [VERSION]
#
# VERSION is a llama-cpp-python release (default: the newest). Everything
# goes under GW_BENCH_CACHE (default $HOME/.cache/gpuwarden-bench): the
# sdist, its unpacked tree and the build. Prints the path of llama-server on
# its last line; running it again reuses what is already there. GW_JOBS sets
# the build's parallelism (default 2).
set -euo pipefail
cache=${GW_BENCH_CACHE:-$HOME/.cache/gpuwarden-bench}
jobs=${GW_JOBS:-2}
spec=llama-cpp-python${1:+==$1}
mkdir -p "$cache/sdist"
sdist=$(ls -t "$cache"/sdist/llama_cpp_python-${1:-*}.tar.gz 2>/dev/null | head -n 1 || true)
if [ -z "$sdist" ]; then
    pip download --no-binary :all: --no-deps -d "$cache/sdist" "$spec" >&2
    sdist=$(ls -t "$cache"/sdist/llama_cpp_python-*.tar.gz | head -n 1)
fi
name=$(basename "$sdist" .tar.gz)
src=$cache/$name
if [ ! -d "$src/vendor/llama.cpp" ]; then
    tar -xzf "$sdist" -C "$cache"
fi
llama=$src/vendor/llama.cpp
[ -f "$llama/CMakeLists.txt" ] || { echo "no vendored llama.cpp in $sdist" >&2; exit 1; }
bdir=$cache/build-$name
cmake -S "$llama" -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON >&2
cmake --build "$bdir" -j"$jobs" --target llama-server llama-bench >&2
"$bdir/bin/llama-server" --version >&2 || true
echo "$bdir/bin/llama-server"
