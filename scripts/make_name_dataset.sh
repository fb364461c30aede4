#!/usr/bin/env bash
# Makes a small TinyStories data folder in which a new character name replaces the usual ones.
#   scripts/make_name_dataset.sh SOURCE.txt NAME OUT_DIR
# Writes OUT_DIR/train.jsonl and OUT_DIR/valid.jsonl ({"text"} records). Each record is three
# consecutive sentences of one story (one record per sentence it starts with), every character
# name swapped for NAME, so the model keeps seeing fluent text after the new name; ten short
# openings ("Once upon a time, there was a little girl named NAME. NAME loved to play outside.")
# put the name where the model used to write another. Quotes are made ASCII, so a model this small
# never has to finish a multi-byte character. Needs only coreutils, sed and awk.
set -euo pipefail
source=$1 name=$2 out=$3
names='Lily|Ben|Tim|Lucy|Ollie|Tom|Sue|Max|Anna|Sam'
sentences_per_record=3
mkdir -p "$out"

# One story a line, names replaced, quotes ASCII.
stories() {
  sed -e 's/[“”]/"/g' -e "s/[‘’]/'/g" "$source" | sed -E "s/\\b($names)\\b/$name/g" |
    tr '\n' ' ' | sed 's/<|endoftext|>/\n/g'
}
windows() {
  stories | sed -E 's/([.!?]"?) +/\1\t/g' | awk -F'\t' -v w="$sentences_per_record" '{
    n = 0
    for (i = 1; i <= NF; i++) {
      s = $i
      gsub(/^ +| +$/, "", s)
      if (length(s) > 8) sentence[++n] = s
    }
    for (i = 1; i <= n; i++) {
      record = sentence[i]
      for (j = i + 1; j < i + w && j <= n; j++) record = record " " sentence[j]
      print record
    }
  }'
}
openings() {
  for _ in 1 2; do
    for who in girl boy dog cat bird; do
      echo "Once upon a time, there was a little $who named $name. $name loved to play outside."
    done
  done
}
# {"text": "..."} with JSON's escapes for backslash and double quote.
as_jsonl() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/{"text": "/' -e 's/$/"}/'; }

rows=$( { windows; openings; } | shuf --random-source=<(yes 0) | as_jsonl)
total=$(printf '%s\n' "$rows" | wc -l)
valid=$((total / 8 > 4 ? total / 8 : 4))
printf '%s\n' "$rows" | head -n "$valid" >"$out/valid.jsonl"
printf '%s\n' "$rows" | tail -n +"$((valid + 1))" >"$out/train.jsonl"
echo "make_name_dataset: $((total - valid)) training and $valid validation records in $out"
