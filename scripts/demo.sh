#!/usr/bin/env bash
# Sets up loracpp and runs its main job on a default that needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
shared=${LORA_SHARED:-../shared}
model="$shared/models/stories260K"
if [ ! -d "$model" ]; then
  echo "demo: $model not found; making a small random model instead (its text is noise)"
  model=out/demo-model
  /usr/bin/python3 scripts/make_random_model.py --arch llama --out "$model"
fi
# A short LoRA fine-tune: TinyStories sentences where a new name (Zorbo) replaces the usual ones.
stories="$shared/datasets/cs336-fixtures/tinystories_sample.txt"
if [ -f "$stories" ]; then
  /usr/bin/python3 scripts/make_name_dataset.py --source "$stories" --name Zorbo --out out/demo-data
  build/lora train --model "$model" --data out/demo-data --adapter-path out/demo-adapter \
    --iters 150 --learning-rate 1e-3 --num-layers 5 --max-seq-length 64 --steps-per-report 25 \
    --steps-per-eval 50 --save-every 50
  echo "demo: loss curve in out/demo-adapter/loss_curve.svg; generating with the adapter:"
  build/lora generate --model "$model" --adapter-path out/demo-adapter \
    --prompt "Once upon a time, there was a little girl named" --max-tokens 60
fi
build/lora generate --model "$model" --prompt "Once upon a time" --max-tokens 120
