#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, build-fuzz/) and runs each for a given time,
# one after another, starting from its seed corpus in fuzz/corpus/<target>/ (new inputs go to
# out/fuzz/<target>/, so the committed corpus stays small). An input that takes over a second
# (-timeout=1) or more than 2 GiB (-rss_limit_mb=2048) fails the run as a crash does. Prints and
# writes (out/fuzz/summary.json) per target: executions, exec/s, coverage (cov/ft of the final
# line), crashes, timeouts, out-of-memory inputs and sanitizer reports (LORA_FUZZ_SUMMARY=FILE
# writes them elsewhere).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
# Installs Debian's clang 14 and its libFuzzer runtime when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(safetensors gguf tokenizer_json chat_template jsonl train_config adapter_config
    model_config)
fi

if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  apt-get install -y clang-14 libclang-rt-14-dev llvm-14 >/dev/null
  command -v clang++ >/dev/null || ln -s /usr/bin/clang++-14 /usr/local/bin/clang++
fi

# LORA_FUZZ_NO_BUILD=1: run the binaries already in build-fuzz/.
if [ -z "${LORA_FUZZ_NO_BUILD:-}" ]; then
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLORA_FUZZ=ON -DLORA_BENCH=OFF \
    -DCMAKE_CXX_COMPILER=clang++ -DLORA_NATIVE=ON >/dev/null
  cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
mkdir -p out/fuzz
summary=${LORA_FUZZ_SUMMARY:-out/fuzz/summary.json}
echo "{\"seconds_per_target\": $seconds, \"commit\": \"$(git rev-parse --short HEAD)\", \"targets\": [" >"$summary"
printf '%-15s %12s %8s %6s %7s %7s %5s %5s %5s %s\n' target executions exec/s cov ft crashes \
  hangs oom sanit result
first=1
for t in "${targets[@]}"; do
  mkdir -p "out/fuzz/$t" "out/fuzz/$t-crashes"
  log="out/fuzz/$t.log"
  rc=0
  "build-fuzz/fuzz/fuzz_$t" "out/fuzz/$t" "fuzz/corpus/$t" -max_total_time="$seconds" \
    -timeout=1 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="out/fuzz/$t-crashes/" >"$log" 2>&1 || rc=$?
  stat() { grep -o "stat::$1: *[0-9]*" "$log" | grep -o '[0-9]*$' || echo 0; }
  execs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  artifacts() { find "out/fuzz/$t-crashes" -name "$1-*" | wc -l; }
  crashes=$(($(artifacts crash) + $(artifacts leak)))
  hangs=$(artifacts timeout)
  ooms=$(artifacts oom)
  sanitizer=$(grep -cE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log" || true)
  result=ok
  if ((rc != 0 || crashes + hangs + ooms + sanitizer > 0)); then
    result="FAILED (exit $rc; see $log and out/fuzz/$t-crashes/)"
    status=1
  fi
  printf '%-15s %12s %8s %6s %7s %7s %5s %5s %5s %s\n' "$t" "$execs" "$rate" "$cov" "$ft" \
    "$crashes" "$hangs" "$ooms" "$sanitizer" "$result"
  ((first)) || echo "," >>"$summary"
  first=0
  printf '  {"target": "%s", "executions": %s, "exec_per_s": %s, "cov": %s, "ft": %s, "crashes": %s, "timeouts": %s, "ooms": %s, "sanitizer_reports": %s, "exit": %s}' \
    "$t" "$execs" "$rate" "$cov" "$ft" "$crashes" "$hangs" "$ooms" "$sanitizer" "$rc" >>"$summary"
done
echo "]}" >>"$summary"
echo "summary: $summary"
exit $status
