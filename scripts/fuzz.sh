#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, build-fuzz/) and runs each for a given time,
# starting from its seed corpus in fuzz/corpus/<target>/ (new inputs go to out/fuzz/<target>/, so
# the committed corpus stays small). Prints executions, coverage and crashes per target.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(safetensors tokenizer_json chat_template jsonl train_config adapter_config model_config)
fi

cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLORA_FUZZ=ON -DLORA_BENCH=OFF \
  -DCMAKE_CXX_COMPILER=clang++ -DLORA_NATIVE=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
printf '%-16s %12s %8s %8s %s\n' target executions cov ft result
for t in "${targets[@]}"; do
  mkdir -p "out/fuzz/$t" "out/fuzz/$t-crashes"
  log="out/fuzz/$t.log"
  rc=0
  # -timeout=1: an input that takes over a second is a failure (a hang), as a crash is.
  "build-fuzz/fuzz/fuzz_$t" "out/fuzz/$t" "fuzz/corpus/$t" -max_total_time="$seconds" \
    -timeout=1 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="out/fuzz/$t-crashes/" >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  result=ok
  if ((rc != 0)); then
    result="FAILED (exit $rc; see $log and out/fuzz/$t-crashes/)"
    status=1
  fi
  printf '%-16s %12s %8s %8s %s\n' "$t" "$execs" "$cov" "$ft" "$result"
done
exit $status
