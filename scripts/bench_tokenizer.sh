#!/usr/bin/env bash
# Tokenizer encoding throughput (MB/s, one thread): loracpp next to Hugging Face's own
# `tokenizers` (npm package, the Rust library), on the same text, tokenizers and machine,
# in the same run.
#   scripts/bench_tokenizer.sh [BUILD_DIR]    (default build; needs build/bench/tokenizer_throughput)
# The npm package is installed once into out/node (ignored by git). Data: ../shared (or $LORA_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shared=${LORA_SHARED:-../shared}
bench="$build/bench/tokenizer_throughput"
[ -x "$bench" ] || { echo "missing $bench: build the tokenizer_throughput target" >&2; exit 1; }

node_dir=out/node
if [ ! -d "$node_dir/node_modules/tokenizers" ]; then
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" tokenizers@0.23.2 >&2
fi

corpus=("$shared/datasets/cs336-fixtures/corpus.en" "$shared/datasets/cs336-fixtures/tinystories_sample.txt"
        "$shared/datasets/mlx-examples-wikisql/valid.jsonl" "$shared/datasets/alpaca-subset/seed_tasks.jsonl")
export OMP_NUM_THREADS=1 UV_THREADPOOL_SIZE=1 RAYON_NUM_THREADS=1 HF_TOKENIZERS_DIR="$PWD/$node_dir"
for name in llama3 qwen3 smollm2-135m llama2-tinyllama gemma3; do
  dir="$shared/tokenizers/$name"
  for mode in "" --whole; do
    ours=$(taskset -c 0 "$bench" "$dir" "${corpus[@]}" $mode)
    theirs=$(taskset -c 0 node scripts/bench_tokenizer_hf.js "$dir/tokenizer.json" "${corpus[@]}" $mode)
    echo "{\"tokenizer\": \"$name\", \"loracpp\": $ours, \"hf\": $theirs}"
  done
done
