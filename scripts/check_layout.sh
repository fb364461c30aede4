#!/usr/bin/env bash
# Fails when the tree breaks its layout rules (CI runs it):
#   - a function body over 120 lines (the Jinja interpreter's dispatch over statements,
#     expressions and filters excepted), found by counting braces in the clang-formatted sources;
#   - an include against the dependency order: nothing under data/ or autograd/ includes
#     trainer/, data/tokenizer/ and data/jinja/ include nothing of each other, and no library
#     file (outside trainer/cli/) includes CLI11;
#   - library code that prints (std::cout, std::cerr, printf, puts, stdout, stderr outside
#     trainer/cli/, bench/ and tests/);
#   - a test of the __AVX512*__ or __AMX*__ macros outside the per-instruction-set translation
#     units (*_avx2.cpp, *_avx512.cpp, *_avx512bf16.cpp): elsewhere they describe the build
#     machine, not the CPU the binary runs on (autograd/cpu_features.h picks kernels at run time).
#   - library code that names a command-line flag in a string ("--batch-size"): the library names
#     settings (SettingError, AdvisedError) and trainer/cli/ spells them as flags.
#   scripts/check_layout.sh            check everything
#   scripts/check_layout.sh --max N    another function length limit
set -euo pipefail
cd "$(dirname "$0")/.."
max_lines=120
if [ "${1:-}" = "--max" ]; then max_lines="$2"; fi
# Functions allowed to be longer, "file:function": the Jinja interpreter's dispatch over every
# statement, expression and filter kind.
allowed_long="data/jinja/jinja_interpreter.cpp:Interpreter::exec
data/jinja/jinja_interpreter.cpp:Interpreter::eval
data/jinja/jinja_filters.cpp:apply_filter"

failures=0
report() {
  echo "check_layout: $*"
  failures=$((failures + 1))
}

mapfile -t sources < <(git ls-files '*.cpp' '*.h' | grep -v '^tests/jinja_reference/')
mapfile -t library < <(printf '%s\n' "${sources[@]}" | grep -E '^(autograd|data|trainer)/' |
  grep -v '^trainer/cli/')

# 1. Function lengths. A block opened at brace depth zero, or directly inside a namespace, class,
# struct or extern block, by a line holding a ')' is a function body; its length runs from the
# line of its opening brace to the line of its closing one. Strings, characters and comments are
# blanked first so their braces do not count.
long_functions=$(awk -v max="$max_lines" '
  FNR == 1 { depth = 0; nscope = 0; in_fn = 0; in_comment = 0; header = "" }
  /^\s*#/ { next }
  {
    line = $0
    if (in_comment) {
      if (index(line, "*/") == 0) next
      line = substr(line, index(line, "*/") + 2); in_comment = 0
    }
    gsub(/\\\\/, "", line); gsub(/\\"/, "", line); gsub(/\\'"'"'/, "", line)
    gsub(/"[^"]*"/, "\"\"", line); gsub(/'"'"'[^'"'"']*'"'"'/, "0", line)
    sub(/\/\/.*/, "", line); gsub(/\/\*[^*]*\*\//, "", line)
    if (index(line, "/*")) { line = substr(line, 1, index(line, "/*") - 1); in_comment = 1 }
    n = length(line)
    for (i = 1; i <= n; i++) {
      c = substr(line, i, 1)
      if (c == "{") {
        if (!in_fn && depth == nscope) {
          if (header ~ /(^|[^A-Za-z_])(namespace|class|struct|union|enum|extern)([^A-Za-z_]|$)/ ||
              header !~ /\)/) {
            nscope++
          } else {
            in_fn = 1; fn_depth = depth; fn_start = FNR
            name = header; sub(/\(.*/, "", name); sub(/.*[ \t*&]/, "", name)
          }
        }
        depth++; header = ""
      } else if (c == "}") {
        depth--; header = ""
        if (in_fn && depth == fn_depth) {
          len = FNR - fn_start + 1
          if (len > max) printf "%s\t%d\t%s\t%d\n", FILENAME, fn_start, name, len
          in_fn = 0
        } else if (!in_fn && depth < nscope) {
          nscope = depth
        }
      } else if (c == ";") {
        header = ""
      } else if (!in_fn) {
        header = header c
      }
    }
    if (!in_fn) header = header " "
  }' "${sources[@]}")
while IFS= read -r hit; do
  [ -z "$hit" ] && continue
  IFS=$'\t' read -r file line name length <<<"$hit"
  if grep -qxF "$file:$name" <<<"$allowed_long"; then continue; fi
  report "$file:$line: $name is $length lines (limit $max_lines)"
done <<<"$long_functions"

# 2. The include graph.
includes() { grep -HnE '^\s*#\s*include\s*[<"]'"$1" "${@:2}" 2>/dev/null || true; }
mapfile -t lower < <(printf '%s\n' "${sources[@]}" | grep -E '^(autograd|data)/')
while IFS= read -r hit; do
  [ -n "$hit" ] && report "$hit: data/ and autograd/ do not include trainer/"
done < <(includes 'trainer/' "${lower[@]}")
mapfile -t tokenizer < <(printf '%s\n' "${sources[@]}" | grep '^data/tokenizer/')
mapfile -t jinja < <(printf '%s\n' "${sources[@]}" | grep '^data/jinja/')
while IFS= read -r hit; do
  [ -n "$hit" ] && report "$hit: data/tokenizer/ does not include data/jinja/"
done < <(includes 'data/jinja/' "${tokenizer[@]}")
while IFS= read -r hit; do
  [ -n "$hit" ] && report "$hit: data/jinja/ does not include data/tokenizer/"
done < <(includes 'data/tokenizer/' "${jinja[@]}")
while IFS= read -r hit; do
  [ -n "$hit" ] && report "$hit: CLI11 belongs to trainer/cli/, not the library"
done < <(includes 'CLI/' "${library[@]}")

# 3. Library code does not print: it returns text, and the CLI decides where it goes.
while IFS= read -r hit; do
  [ -n "$hit" ] && report "$hit: the library does not print (return it; trainer/cli/ prints)"
done < <(grep -HnE 'std::(cout|cerr|clog)|\b(std::)?(printf|fprintf|puts|fputs|putchar)\s*\(|\b(stdout|stderr)\b' \
  "${library[@]}" | grep -vE '^[^:]+:[0-9]+:\s*//' || true)

# 4. Kernels are chosen at run time: only the files compiled with an instruction set's own flags
# (autograd/CMakeLists.txt) may ask the preprocessor about AVX-512 or AMX.
while IFS= read -r hit; do
  [ -n "$hit" ] && report "$hit: AVX-512/AMX code belongs in a *_avx512*.cpp file picked by active_cpu_features()"
done < <(grep -HnE '__(AVX512|AMX)[A-Z0-9_]*__' "${sources[@]}" |
  grep -vE '^[^:]*_(avx2|avx512|avx512bf16)\.cpp:' || true)

# 5. Library code names settings, not flags. The model card quotes another program's command line.
allowed_flag_text="trainer/io/model_card.cpp"
while IFS= read -r hit; do
  [ -z "$hit" ] && continue
  grep -qxF "${hit%%:*}" <<<"$allowed_flag_text" && continue
  report "$hit: the library names settings, not flags (SettingError, AdvisedError; trainer/cli/ spells flags)"
done < <(grep -HnP '"(?:[^"\\]|\\.)*--[A-Za-z](?:[^"\\]|\\.)*"' "${library[@]}" |
  grep -vE '^[^:]+:[0-9]+:\s*//' || true)

if [ "$failures" -gt 0 ]; then
  echo "check_layout: $failures problem(s)"
  exit 1
fi
echo "check_layout: ${#sources[@]} files: functions within $max_lines lines, includes in order, no printing or flag-naming library code, no build-time ISA tests"
