#!/usr/bin/env bash
# Fails when a tracked C++ file is not laid out as .clang-format says (CI runs it).
#   scripts/check_format.sh          check
#   scripts/check_format.sh --fix    rewrite the files in place
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cpp' '*.h')
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! report=$(clang-format --dry-run --Werror "${files[@]}" 2>&1); then
  grep -E '^[^ ].*: (error|warning):' <<<"$report" | cut -d: -f1 | sort -u |
    sed 's/^/check_format: not formatted: /'
  echo "check_format: run scripts/check_format.sh --fix"
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
