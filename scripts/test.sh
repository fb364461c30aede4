#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite: the layout checks (clang-format, function
# length, include graph), then the tests.
#   scripts/test.sh              Release build
#   scripts/test.sh --sanitize   the same tests under ASan+UBSan
# Reference data is read from $LORA_SHARED (default: ../shared beside the repository); tests that
# need it skip with a message when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test "$@"
scripts/check_format.sh
scripts/check_layout.sh
build_dir=build
[ "${1:-}" = "--sanitize" ] && build_dir=build-sanitize
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 900
