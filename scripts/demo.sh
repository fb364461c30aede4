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
build/lora generate --model "$model" --prompt "Once upon a time" --max-tokens 120
