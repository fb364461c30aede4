#!/usr/bin/env bash
# Sets up loracpp (only what `lora` needs) and runs its main job: a short LoRA fine-tune that
# teaches stories260K a new name, then the same story from the base model and with the adapter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
shared=${LORA_SHARED:-../shared}
model="$shared/models/stories260K"
stories="$shared/datasets/cs336-fixtures/tinystories_sample.txt"
if [ -d "$model" ] && [ -f "$stories" ]; then
  # TinyStories passages where a new name (Zorbo) replaces the usual ones. The settings were
  # measured: 150 steps at 5e-4 over all 5 blocks write the name in clean text for seeds 0-2
  # (1e-3 or 300 steps start to garble the text after the name; single sentences, the older data,
  # garbled it at every setting). 56 tokens end the adapted story on a full sentence.
  scripts/make_name_dataset.sh "$stories" Zorbo out/demo-data
  prompt="Once upon a time, there was a little girl named"
  train_args=(--iters 150 --learning-rate 5e-4 --num-layers 5 --max-seq-length 128)
else
  echo "demo: $model not found (set LORA_SHARED); using a small random model and a synthetic data"
  echo "demo: set made here instead, so the text is only as good as 200 steps on a random model"
  scripts/setup.sh --python # the random model is written by a numpy script
  model=out/demo-model
  /usr/bin/python3 scripts/make_random_model.py "$model" --arch llama --vocab 259 --hidden 128 \
    --layers 4 --heads 4 --kv-heads 2 --intermediate 256 --byte-tokenizer
  /usr/bin/python3 scripts/make_toy_dataset.py --out out/demo-data
  prompt="Tom has"
  train_args=(--iters 200 --learning-rate 3e-3 --num-layers 4 --max-seq-length 96 --batch-size 8)
fi
build/lora train --model "$model" --data out/demo-data --adapter-path out/demo-adapter \
  "${train_args[@]}" --steps-per-report 25 --steps-per-eval 50 --save-every 50
echo "demo: loss curve in out/demo-adapter/loss_curve.svg"
echo
echo "demo: the base model alone:"
build/lora -q generate --model "$model" --prompt "$prompt" --max-tokens 56
echo
echo "demo: with the adapter:"
build/lora generate --model "$model" --adapter-path out/demo-adapter --prompt "$prompt" \
  --max-tokens 56
