#!/usr/bin/env bash
# The one command that installs, builds and tests gpuwarden on a fresh Debian 12
# machine (as root, or a user with sudo):
#   1. installs missing Debian packages (scripts/install-deps.sh);
#   2. checks that every C and CUDA source is formatted as .clang-format says
#      (scripts/check-format.sh);
#   3. fetches the default model into models/ when it is missing
#      (scripts/fetch-model.sh; skipped with GW_NO_MODEL=1);
#   4. builds in build/ (gcc, RelWithDebInfo, CUDA when nvcc is there,
#      warnings as errors) and runs the whole ctest suite (with the engine
#      tests under valgrind memcheck, label "valgrind", and the 60 s chaos
#      soak, label "chaos");
#   5. builds again in build-asan/ with clang, ASan+UBSan, and runs the suite
#      there (skipped with GW_NO_ASAN=1), all but the tests labelled "slow":
#      those that run SmolLM2 for minutes to check numerics, loop labels or
#      fairness figures (tiny-model and functional tests cover the same code
#      under the sanitizers);
#   6. builds everything in build-release/ as a packager would (gcc,
#      Release, warnings as errors) without running it: every standard build
#      type must build (skipped with GW_NO_RELEASE=1);
#   7. builds the libFuzzer targets (clang) and runs each on its committed
#      corpus, one target per CPU at a time, for GW_FUZZ_SECONDS, by default
#      an even share of GW_FUZZ_BUDGET (200 s for the step, at most 60 s a
#      target: nine targets on two CPUs get 40 s each), so that CI stays
#      under 15 minutes; skipped with GW_NO_FUZZ=1; their corpora are also
#      replayed by ctest in steps 3-4.
# Exit status: 0 when every step passed, the failing step's status otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
# Each step's wall time, to see where CI's minutes go.
mark() { echo "test.sh: [${SECONDS} s] $*"; }

./scripts/install-deps.sh
./scripts/check-format.sh
if [ "${GW_NO_MODEL:-0}" != 1 ] && [ -x scripts/fetch-model.sh ]; then
    ./scripts/fetch-model.sh
fi

build_tree() {  # build-dir, extra cmake args...   (CC: the compiler)
    local dir=$1; shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGW_WERROR=ON "$@" \
        >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; return 1; }
    grep -E '^-- gpuwarden:' "$dir.configure.log" || true
    cmake --build "$dir" -j "$jobs"
    mark "built $dir"
}

run_suite() {  # build-dir, extra cmake args...   (CTEST_EXTRA: extra ctest args)
    local dir=$1
    build_tree "$@"
    # One job more than CPUs: the CPU slots (tests/CMakeLists.txt) keep
    # the CPU-bound tests at one per CPU; the extra job is for a test
    # labelled "asleep".
    ctest --test-dir "$dir" --output-on-failure -j "$((jobs + 1))" --timeout 300 ${CTEST_EXTRA:-}
    mark "tested $dir"
}

mark "dependencies, format and model checked"
mkdir -p build build-asan build-release
run_suite build
if [ "${GW_NO_ASAN:-0}" != 1 ]; then
    # The sanitizer pass is the clang build, and leaves nvcc out: CUDA code
    # is compiled (and linked) by the first pass; sanitizers instrument the
    # C code, which is where the untrusted input is parsed.
    CC=clang ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        CTEST_EXTRA="-LE slow" run_suite build-asan -DGW_SANITIZE=ON -DGW_CUDA=OFF
fi
if [ "${GW_NO_RELEASE:-0}" != 1 ]; then
    # -O3 finds warnings -O2 does not; CUDA was built by the first pass.
    build_tree build-release -DCMAKE_BUILD_TYPE=Release -DGW_CUDA=OFF
fi
if [ "${GW_NO_FUZZ:-0}" != 1 ]; then
    GW_FUZZ_JOBS=$jobs tests/fuzz/run.sh "${GW_FUZZ_SECONDS:-0}"
    mark "fuzzed"
fi
echo "test.sh: all suites passed"
