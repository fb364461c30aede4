#!/usr/bin/env bash
# One training run killed with SIGKILL N times (default 20) and resumed each time: between steps,
# in the middle of a checkpoint write, during validation, in the middle of the final adapter write
# (the trainer's LORA_FAULT_SIGNAL_AT_STEP hook), and at random moments from outside. After every
# kill no checkpoint folder is half-written (each one a reader would take is complete and parses);
# every run that reaches its end (the kills are spread over as many runs as it takes: a run killed
# after its last checkpoint is done) writes an adapter bit-identical to an uninterrupted run's.
#   scripts/crash_loop.sh [N] [SEED]     (LORA_BIN: the CLI, default build/lora;
#                                         LORA_SHARED: the shared folder, default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
kills_wanted=${1:-20}
RANDOM=${2:-1}
lora=${LORA_BIN:-build/lora}
model=${LORA_SHARED:-../shared}/models/stories260K
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

iters=24
save_every=3
eval_every=4
/usr/bin/python3 scripts/make_toy_dataset.py --out "$work/data" --train 40 --valid 8 >/dev/null
args=(--threads 1 --quiet train --model "$model" --data "$work/data" --batch-size 4
  --max-seq-length 64 --num-layers 5 --learning-rate 2e-3 --iters $iters --save-every $save_every
  --keep-checkpoints 2 --steps-per-eval $eval_every --val-batches 2 --steps-per-report 2 --seed 3)

start=$(date +%s%N)
"$lora" "${args[@]}" --adapter-path "$work/straight" >/dev/null
straight_ms=$((($(date +%s%N) - start) / 1000000))

out="$work/crashed"
# Checks what a reader sees after a kill: every checkpoint folder (names without a leading '.')
# holds all its files and its tensors parse; the adapter at the top, if there, parses.
check_folders() {
  local dir
  for dir in "$out"/checkpoints/step-*; do
    [ -e "$dir" ] || continue
    for f in adapters.safetensors adapter_config.json state.safetensors state.json metrics.jsonl; do
      [ -s "$dir/$f" ] || { echo "crash_loop: $dir lacks $f" >&2; exit 1; }
    done
    "$lora" --quiet inspect "$dir/adapters.safetensors" >/dev/null
    "$lora" --quiet inspect "$dir/state.safetensors" >/dev/null
  done
  if [ -e "$out/adapters.safetensors" ]; then
    "$lora" --quiet inspect "$out/adapters.safetensors" >/dev/null
  fi
}

# A run that reached its end: its adapter is compared with the uninterrupted run's, then it goes
# (the next kills go to a new run).
finished_runs=0
check_finished() {
  check_folders
  if ! cmp -s "$work/straight/adapters.safetensors" "$out/adapters.safetensors"; then
    echo "crash_loop: the final adapter differs from the uninterrupted run's (run $((finished_runs + 1)))" >&2
    exit 1
  fi
  finished_runs=$((finished_runs + 1))
  echo "run $finished_runs finished: its adapter is bit-identical"
  rm -rf "$out"
}

# The step of the newest checkpoint (0 when none).
latest_step() {
  local last
  last=$(ls "$out/checkpoints" 2>/dev/null | grep '^step-' | sort | tail -1 || true)
  [ -n "$last" ] && echo $((10#${last#step-})) || echo 0
}

# The command of the next attempt: resume from the newest checkpoint, or start over without one.
next_command() {
  if (($(latest_step) > 0)); then
    cmd=("$lora" --threads 1 --quiet train --resume "$out")
  else
    cmd=("$lora" "${args[@]}" --adapter-path "$out")
  fi
}

# A step in (from, iters] that is a multiple of k, or nothing when there is none.
multiple_after() {
  local from=$1 k=$2 first count
  first=$(((from / k + 1) * k))
  ((first <= iters)) || return 0
  count=$(((iters - first) / k + 1))
  echo $((first + (RANDOM % count) * k))
}

# The shell reports each SIGKILL it sees ("... Killed ..."); those are the point, not news.
exec 2> >(grep -v --line-buffered ' Killed ' >&2)
kills=0
phases=(step checkpoint validation adapter outside)
last_from=-1
kills_from_here=0
while ((kills < kills_wanted)); do
  # A run killed after its final checkpoint is complete: start another to kill.
  if (($(latest_step) >= iters)); then check_finished; fi
  from=$(latest_step)
  # Near the end most phases aim at the last step: after two kills from the same checkpoint the
  # run is let finish, so the kills spread over the steps (and over runs).
  if ((from == last_from)); then kills_from_here=$((kills_from_here + 1)); else kills_from_here=0; fi
  last_from=$from
  if ((from > 0 && kills_from_here >= 2)); then
    next_command
    "${cmd[@]}" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    check_finished
    last_from=-1
    continue
  fi
  phase=${phases[$((RANDOM % ${#phases[@]}))]}
  case $phase in
    step) at=$((from + 1 + RANDOM % (iters - from))) ;;
    checkpoint) at=$(multiple_after "$from" $save_every) ;;
    validation) at=$(multiple_after "$from" $eval_every) ;;
    adapter) at=$iters ;;
  esac
  if [ "$phase" != outside ] && [ -z "$at" ]; then
    phase=step
    at=$iters
  fi
  next_command
  rc=0
  if [ "$phase" = outside ]; then
    delay_ms=$((RANDOM % (straight_ms + 1)))
    "${cmd[@]}" >/dev/null 2>"$work/err" &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" || rc=$?
    what="at ${delay_ms} ms"
  else
    LORA_FAULT_SIGNAL_AT_STEP="$at:9:$phase" "${cmd[@]}" >/dev/null 2>"$work/err" || rc=$?
    what="at step $at ($phase)"
  fi
  if ((rc == 0)); then
    check_finished  # it finished before the kill came: use the kill on another run
    continue
  fi
  if ((rc != 137)); then
    echo "crash_loop: the run failed (exit $rc) instead of being killed $what:" >&2
    cat "$work/err" >&2
    exit 1
  fi
  kills=$((kills + 1))
  check_folders
  echo "kill $kills: $what, newest checkpoint step $(latest_step)"
done

# Finish the run (one killed after its final checkpoint is complete already).
if (($(latest_step) < iters)); then
  next_command
  "${cmd[@]}" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
fi
check_finished
echo "crash_loop: $kills kills, $kills resumes over $finished_runs runs; every final adapter is bit-identical, no checkpoint folder was ever half-written"
