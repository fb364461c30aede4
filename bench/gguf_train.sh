#!/usr/bin/env bash
# Training tokens/s on a GGUF Q4_K_M base against the same shape as MLX 4-bit (affine, group 64),
# back to back in one run: bench/train_throughput with --base q4_k_m and --base q4, the same
# random model, LoRA r8 on all 7 projections, the same batch, sequence, steps and threads.
#   bench/gguf_train.sh [SHAPE=smollm2-135m] [BATCH=4] [SEQ=256] [STEPS=2] [THREADS=2] [LAYERS=0]
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-smollm2-135m}
batch=${2:-4}
seq=${3:-256}
steps=${4:-2}
threads=${5:-2}
layers=${6:-0}
declare -A result
for base in q4_k_m q4; do
  result[$base]=$(OMP_NUM_THREADS=$threads build/bench/train_throughput --shape "$shape" \
    --base "$base" --batch "$batch" --seq "$seq" --steps "$steps" --warmup 1 \
    --layers "$layers" | tail -n 1)
done
python3 - "${result[q4_k_m]}" "${result[q4]}" "$shape" "$threads" <<'PY'
import json, sys
kq, mlx = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{sys.argv[3]}, {sys.argv[4]} thread(s), batch {kq['batch']} x {kq['seq']} tokens")
for name, r in (("GGUF Q4_K_M", kq), ("MLX 4-bit", mlx)):
    print(f"  {name:12s} {r['tokens_per_s']:8.1f} training tokens/s, peak RSS {r['peak_rss_mib']:.0f} MiB")
print(f"  ratio Q4_K_M / MLX 4-bit: {kq['tokens_per_s'] / mlx['tokens_per_s']:.3f}")
PY
