#!/usr/bin/env bash
# Decode speed of `lora generate` and of llama.cpp (node-llama-cpp 3.21.1, scripts/llama_cpp) on
# the same GGUF file, greedy, the same number of threads and tokens.
#   bench/gguf_generate.sh FILE.gguf [THREADS=1] [TOKENS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/gguf_generate.sh FILE.gguf [THREADS] [TOKENS]}
threads=${2:-1}
tokens=${3:-200}
ours=$(OMP_NUM_THREADS=$threads build/lora --threads "$threads" --json generate --model "$model" \
  --prompt "Once upon a time" --max-tokens "$tokens" --temp 0)
theirs=$(node scripts/llama_cpp/oracle.mjs --model "$model" --prompt "Once upon a time" \
  --greedy "$tokens" --threads "$threads")
python3 - "$ours" "$theirs" "$model" "$threads" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{sys.argv[3]}: {sys.argv[4]} thread(s), {ours['generated_tokens']} tokens")
print(f"  lora generate  {ours['tokens_per_s']:10.1f} tokens/s")
print(f"  llama.cpp      {theirs['tokens_per_second']:10.1f} tokens/s")
PY
