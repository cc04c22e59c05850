#!/usr/bin/env bash
# Checks that every C and CUDA source in the repository is formatted as
# .clang-format says (clang-format 14, Debian 12's). Exit 0 when all are, 1
# with the offending files and the first differences otherwise. Fix with:
#   git ls-files '*.c' '*.h' '*.cu' '*.cuh' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh')
bad=()
for f in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        bad+=("$f")
    fi
done
if [ ${#bad[@]} -ne 0 ]; then
    echo "check-format: ${#bad[@]} of ${#files[@]} files are not formatted as .clang-format says:"
    printf '  %s\n' "${bad[@]}"
    clang-format --dry-run "${bad[0]}" 2>&1 | head -20
    exit 1
fi
echo "check-format: ${#files[@]} files formatted"
